//! Suite 12, resources: every RAVE service within its memory limit.

use anyhow::{Context as _, ensure};

use super::Ctx;

pub(super) fn resources(ctx: &Ctx) -> anyhow::Result<String> {
    let mut seen = Vec::new();
    for (name, (pid, _)) in &ctx.stack.components {
        if !crate::stack::is_rave_service(name) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")?;
        let mib = kib / 1024;
        ensure!(
            mib < ctx.memory_limit_mb,
            "{name} uses {mib} MiB, over the {} MiB limit",
            ctx.memory_limit_mb
        );
        seen.push(format!("{name} {mib} MiB"));
    }
    ensure!(!seen.is_empty(), "no RAVE service pids in the stack file");
    Ok(format!(
        "{} (limit {} MiB)",
        seen.join(", "),
        ctx.memory_limit_mb
    ))
}
