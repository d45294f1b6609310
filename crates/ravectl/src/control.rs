//! `ravectl status`, `down` and `logs` for a stack started by `ravectl up`.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stack::StackFile;

/// Whether `pid` runs; a zombie (exited, not yet reaped) does not.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The running stack in `state_dir`, if its supervisor is alive.
pub fn running(state_dir: &Path) -> Option<StackFile> {
    StackFile::read(state_dir)
        .ok()
        .filter(|s| s.supervisor_pid.is_some_and(alive))
}

/// A table: component, pid, port, health, memory. Exit 1 if anything is down.
pub fn status(state_dir: &Path) -> anyhow::Result<i32> {
    let Some(stack) = running(state_dir) else {
        println!("RAVE is not running in {}", state_dir.display());
        return Ok(3);
    };
    println!(
        "{:<18} {:>8} {:>6}  {:<7} {:>8}",
        "COMPONENT", "PID", "PORT", "HEALTH", "MEMORY"
    );
    let mut down = 0;
    for (name, (pid, port)) in &stack.components {
        let listening = *port == 0
            || TcpStream::connect_timeout(&([127, 0, 0, 1], *port).into(), Duration::from_secs(1))
                .is_ok();
        let health = if alive(*pid) && listening {
            "up"
        } else {
            "DOWN"
        };
        if health != "up" {
            down += 1;
        }
        let memory = rss_mib(*pid).map_or("-".to_owned(), |m| format!("{m} MiB"));
        println!("{name:<18} {pid:>8} {port:>6}  {health:<7} {memory:>8}");
    }
    Ok(if down == 0 { 0 } else { 1 })
}

/// Stops the stack (SIGTERM to `ravectl up`) and waits until it is gone.
pub fn down(state_dir: &Path) -> anyhow::Result<i32> {
    let Some(stack) = running(state_dir) else {
        println!("RAVE is not running in {}", state_dir.display());
        return Ok(0);
    };
    let pid = stack.supervisor_pid.unwrap_or_default();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while alive(pid) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "ravectl up (pid {pid}) did not stop within 90 s"
        );
        // Waiting for another process to exit; nothing to be notified by.
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopped");
    Ok(0)
}

/// The last `lines` lines of a component's log, or the list of logs.
pub fn logs(state_dir: &Path, component: Option<&str>, lines: usize) -> anyhow::Result<i32> {
    let dir = state_dir.join("logs");
    let Some(component) = component else {
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".log")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        println!("{}", names.join("\n"));
        return Ok(0);
    };
    let file = dir.join(format!("{component}.log"));
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let all: Vec<&str> = text.lines().collect();
    for line in &all[all.len().saturating_sub(lines)..] {
        println!("{line}");
    }
    Ok(0)
}
