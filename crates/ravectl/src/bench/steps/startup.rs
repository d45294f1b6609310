//! Startup: exec to `/readyz` for each service, on a spare port.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bench::{Ctx, RAVE_SERVICES};

/// Time from exec to `/readyz` answering 200, for each service, started a
/// second time with its real config on a spare port.
pub async fn startup(ctx: &Ctx) -> anyhow::Result<BTreeMap<String, f64>> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("ravectl's directory")?
        .to_path_buf();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let mut out = BTreeMap::new();
    let spool = tempfile::tempdir()?;
    for name in RAVE_SERVICES {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let prefix = format!("RAVE_{}", name.to_ascii_uppercase().replace('-', "_"));
        let mut cmd = tokio::process::Command::new(bin_dir.join(name));
        // With replicas, replica 1's config.
        let config = ctx.state_dir.join("config");
        let config = [format!("{name}.toml"), format!("{name}@1.toml")]
            .into_iter()
            .map(|file| config.join(file))
            .find(|path| path.exists())
            .with_context(|| format!("no config for {name} in {}", config.display()))?;
        cmd.arg("--config")
            .arg(config)
            .env(format!("{prefix}__SERVER__PORT"), port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if name == "ingest" {
            cmd.env("RAVE_INGEST__SPOOL__DIR", spool.path());
        }
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let url = format!("http://127.0.0.1:{port}/readyz");
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{name} was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        println!("  {name}: ready in {ms:.0} ms");
        out.insert(name.to_owned(), ms);
        child.kill().await?;
    }
    Ok(out)
}
