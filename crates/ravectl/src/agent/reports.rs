//! Job reports go to disk first, one file each, before the task's result
//! is sent, and leave it once agent-reporter has taken them: neither a
//! reporter outage nor the agent's own crash loses one (the next agent on
//! the same state directory sends what it finds). Reports are idempotent
//! (agent, task, start), so one sent twice counts once. The buffer is
//! bounded in bytes; past the bound the oldest reports go, with a line on
//! stderr each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug)]
pub(super) struct ReportBuffer {
    dir: PathBuf,
    max_bytes: u64,
}

/// What became of one attempt to send a report.
enum Sent {
    Taken,
    /// Refused for what it is (4xx but 429): sending it again will not help.
    Refused(String),
    /// Not now (a transport error, 429, 5xx): keep it.
    Later(String),
}

impl ReportBuffer {
    pub(super) fn new(dir: PathBuf, max_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, max_bytes })
    }

    /// Sends what waits, oldest first, until agent-reporter cannot take
    /// more now; what it refuses outright is dropped (sending it again will
    /// not help).
    pub(super) async fn flush(&self, http: &reqwest::Client, reporter: &str, token: &str) {
        for path in self.waiting() {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(kept) = serde_json::from_str::<Value>(&text) else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let traceparent = kept["traceparent"].as_str();
            match post(http, reporter, token, &kept["report"], traceparent).await {
                Sent::Taken => {
                    let _ = std::fs::remove_file(&path);
                }
                Sent::Refused(why) => {
                    eprintln!("the reporter refused a job report: {why}");
                    let _ = std::fs::remove_file(&path);
                }
                Sent::Later(why) => {
                    eprintln!("the reporter cannot take reports now ({why}); keeping them");
                    return;
                }
            }
        }
    }

    /// Whether reports wait.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting().is_empty()
    }

    /// Waiting report files, oldest first (names sort by time).
    fn waiting(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Writes `report` durably, to be sent by the next [`Self::flush`].
    pub(super) fn keep(&self, report: &Value, traceparent: Option<&str>) -> anyhow::Result<()> {
        let text = serde_json::to_vec(&serde_json::json!({
            "report": report,
            "traceparent": traceparent,
        }))?;
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{nanos:024}-{}.json", std::process::id());
        write_atomically(&self.dir, &name, &text)?;
        // Within the bound: the oldest go first.
        let mut files = self.waiting();
        let mut total: u64 = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        while total > self.max_bytes && files.len() > 1 {
            let oldest = files.remove(0);
            total -= std::fs::metadata(&oldest).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(&oldest);
            eprintln!(
                "the report buffer is full ({} bytes): dropped the oldest report, {}",
                self.max_bytes,
                oldest.display()
            );
        }
        Ok(())
    }
}

async fn post(
    http: &reqwest::Client,
    reporter: &str,
    token: &str,
    report: &Value,
    traceparent: Option<&str>,
) -> Sent {
    let mut request = http
        .post(format!("{reporter}/v1/reports"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .json(report);
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => Sent::Taken,
        Ok(r) if r.status().is_client_error() && r.status() != 429 => {
            let status = r.status();
            Sent::Refused(format!("{status}: {}", r.text().await.unwrap_or_default()))
        }
        Ok(r) => Sent::Later(format!("it answered {}", r.status())),
        Err(e) => Sent::Later(e.to_string()),
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}
