//! `--flamegraph`: the whole machine sampled by `perf record -a -g` while
//! the intake saturates, folded and drawn by inferno (`cargo install
//! inferno`: `inferno-collapse-perf`, `inferno-flamegraph`). Opt-in: it
//! needs perf and the right to sample every process, and sampling costs
//! some of what it measures. Each process is a root of the graph
//! (PostgreSQL's backends, nginx, each service), so the picture answers
//! "whose CPU, doing what".

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

/// Samples per second and CPU: enough for a 10 s step, little overhead.
const FREQUENCY: &str = "199";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Refuses at once, before any load runs, when a tool is missing.
pub fn check_tools() -> anyhow::Result<()> {
    for (tool, how) in [
        ("perf", "apt-get install linux-perf"),
        ("inferno-collapse-perf", "cargo install inferno"),
        ("inferno-flamegraph", "cargo install inferno"),
    ] {
        anyhow::ensure!(on_path(tool), "--flamegraph needs {tool} ({how})");
    }
    Ok(())
}

/// A `perf record` of every CPU for `secs` seconds.
#[derive(Debug)]
pub struct Recording {
    child: Child,
    data: PathBuf,
}

pub fn start(dir: &Path, secs: u64) -> anyhow::Result<Recording> {
    let data = dir.join("perf.data");
    let child = Command::new("perf")
        .args(["record", "-F", FREQUENCY, "-a", "-g", "-o"])
        .arg(&data)
        .args(["--", "sleep", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    Ok(Recording { child, data })
}

impl Recording {
    /// Waits for the recording to end, then writes the flame graph `svg`.
    pub fn finish(mut self, svg: &Path, title: &str) -> anyhow::Result<()> {
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "perf record exited with {status}");
        let script = Command::new("perf")
            .args(["script", "-i"])
            .arg(&self.data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("perf script")?;
        let collapse = Command::new("inferno-collapse-perf")
            .stdin(script.stdout.context("perf script's output")?)
            .stdout(Stdio::piped())
            .spawn()
            .context("inferno-collapse-perf")?;
        let out = std::fs::File::create(svg)?;
        let status = Command::new("inferno-flamegraph")
            .args(["--title", title])
            .stdin(collapse.stdout.context("the collapsed stacks")?)
            .stdout(out)
            .status()
            .context("inferno-flamegraph")?;
        anyhow::ensure!(status.success(), "inferno-flamegraph exited with {status}");
        let _ = std::fs::remove_file(&self.data);
        Ok(())
    }
}
