//! Changes to a running local stack without downtime: `ravectl reload`
//! (settings re-read in place) and `ravectl restart` (processes replaced in
//! turn by `up`'s supervisor, which holds their sockets).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::control::running;

/// The services a reload reaches: those with settings that change live.
const RELOADING: [&str; 2] = ["ingest", "task-dispatcher"];

/// Asks `up` to restart `services` in turn and prints what it did.
pub async fn restart(state_dir: &Path, services: &[String]) -> anyhow::Result<i32> {
    anyhow::ensure!(
        running(state_dir).is_some(),
        "RAVE is not running in {}",
        state_dir.display()
    );
    let path = crate::up::rolling::control_socket(state_dir);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .with_context(|| format!("connecting to {}", path.display()))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("restart {}\n", services.join(" ")).as_bytes())
        .await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        if line == "ok" {
            println!("restarted without refusing a connection");
            return Ok(0);
        }
        if let Some(error) = line.strip_prefix("error: ") {
            eprintln!("restart stopped: {error}");
            return Ok(1);
        }
        println!("{line}");
    }
    eprintln!("ravectl up closed the control socket without an answer");
    Ok(1)
}

/// Applied and refused reloads so far, from a service's `/metrics`.
async fn reload_counts(http: &reqwest::Client, port: u16) -> anyhow::Result<(f64, f64)> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let count = |result: &str| -> f64 {
        let series = format!("rave_config_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&series)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    Ok((count("applied"), count("refused")))
}

/// SIGHUP to every replica of ingest and task-dispatcher; waits for each to
/// count the reload and says whether it was applied. Exit 1 if any refused.
pub async fn reload(state_dir: &Path) -> anyhow::Result<i32> {
    let stack = running(state_dir)
        .with_context(|| format!("RAVE is not running in {}", state_dir.display()))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut refused = 0;
    for (name, (pid, port)) in &stack.components {
        let service = name.split('@').next().unwrap_or(name);
        if !RELOADING.contains(&service) {
            continue;
        }
        let before = reload_counts(&http, *port).await?;
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "cannot signal {name} (pid {pid})");
        let deadline = Instant::now() + Duration::from_secs(10);
        let after = loop {
            let now = reload_counts(&http, *port).await?;
            if now.0 + now.1 > before.0 + before.1 {
                break now;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} did not count the reload within 10 s"
            );
            // Another process's reaction; there is nothing to be notified by.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if after.1 > before.1 {
            refused += 1;
            let log = state_dir.join("logs").join(format!("{name}.log"));
            let reason = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .find(|l| l.contains("settings reload refused"))
                .map(str::to_owned)
                .unwrap_or_default();
            println!("{name}: REFUSED, the running settings stay; {reason}");
        } else {
            println!("{name}: reloaded");
        }
    }
    Ok(if refused == 0 { 0 } else { 1 })
}
