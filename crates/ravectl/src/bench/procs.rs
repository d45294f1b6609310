//! CPU and resident memory of each component, sampled from /proc while a
//! bench step runs. A component is its process and all its descendants
//! (nginx's workers, PostgreSQL's backends).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    /// CPU seconds used during the step, over all cores.
    pub cpu_seconds: f64,
    /// CPU used as a share of one core over the step.
    pub cpu_cores: f64,
    pub peak_rss_mb: f64,
}

/// (ppid, cpu ticks, rss pages) of every process.
fn table() -> HashMap<u32, (u32, u64, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which may contain spaces.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 22 {
            continue;
        }
        let ppid = f[1].parse().unwrap_or(0);
        let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        let rss = f[21].parse().unwrap_or(0);
        out.insert(pid, (ppid, ticks, rss));
    }
    out
}

/// Ticks and RSS bytes of `root` and its descendants, except those under
/// `others` (other components' roots: each counted once, as itself).
fn tree(table: &HashMap<u32, (u32, u64, u64)>, root: u32, others: &[u32]) -> (u64, u64) {
    let page = 4096;
    let (mut ticks, mut rss) = (0, 0);
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if pid != root && others.contains(&pid) {
            continue;
        }
        if let Some((_, t, r)) = table.get(&pid) {
            ticks += t;
            rss += r * page;
        }
        stack.extend(
            table
                .iter()
                .filter(|(_, (ppid, _, _))| *ppid == pid)
                .map(|(p, _)| *p),
        );
    }
    (ticks, rss)
}

/// Samples `components` (name → root pid) every 200 ms until `stop`.
pub async fn sample(
    components: BTreeMap<String, u32>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> BTreeMap<String, Usage> {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let started = std::time::Instant::now();
    // A component that started others (`ravectl up`, the supervisor)
    // counts without them.
    let roots: Vec<u32> = components.values().copied().collect();
    let first = table();
    let start_ticks: BTreeMap<String, u64> = components
        .iter()
        .map(|(n, p)| (n.clone(), tree(&first, *p, &roots).0))
        .collect();
    let mut peak: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = first;
    loop {
        for (name, pid) in &components {
            let rss = tree(&last, *pid, &roots).1;
            let p = peak.entry(name.clone()).or_default();
            *p = (*p).max(rss);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => last = table(),
            _ = &mut stop => break,
        }
    }
    let end = table();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    components
        .iter()
        .map(|(name, pid)| {
            let used =
                tree(&end, *pid, &roots).0.saturating_sub(start_ticks[name]) as f64 / ticks_per_sec;
            let rss = peak
                .get(name)
                .copied()
                .unwrap_or(0)
                .max(tree(&end, *pid, &roots).1);
            (
                name.clone(),
                Usage {
                    cpu_seconds: used,
                    cpu_cores: used / secs,
                    peak_rss_mb: rss as f64 / 1_048_576.0,
                },
            )
        })
        .collect()
}

/// Resident memory of one process now, MB.
pub fn rss_mb(pid: u32) -> f64 {
    let t = table();
    tree(&t, pid, &[]).1 as f64 / 1_048_576.0
}
