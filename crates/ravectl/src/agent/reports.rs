//! Job reports that agent-reporter could not take yet wait on disk, one
//! file each, and are sent oldest first once it can. Reports are idempotent
//! (agent, task, start), so one sent twice after a crash counts once. The
//! buffer is bounded in bytes; past the bound the oldest reports go, with a
//! line on stderr each.

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

    /// Sends what waits, oldest first, then `report` (if any); whatever
    /// cannot be sent now is kept for the next call.
    pub(super) async fn send(
        &self,
        http: &reqwest::Client,
        reporter: &str,
        token: &str,
        report: Option<(&Value, Option<&str>)>,
    ) {
        let mut waiting = self.waiting();
        let mut blocked = false;
        for path in waiting.drain(..) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(old) = serde_json::from_str::<Value>(&text) else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            match post(http, reporter, token, &old, None).await {
                Sent::Taken => {
                    let _ = std::fs::remove_file(&path);
                }
                Sent::Refused(why) => {
                    eprintln!("the reporter refused a buffered job report: {why}");
                    let _ = std::fs::remove_file(&path);
                }
                Sent::Later(why) => {
                    eprintln!("the reporter cannot take reports yet ({why}); keeping them");
                    blocked = true;
                    break;
                }
            }
        }
        let Some((report, traceparent)) = report else {
            return;
        };
        if !blocked {
            match post(http, reporter, token, report, traceparent).await {
                Sent::Taken => return,
                Sent::Refused(why) => {
                    eprintln!("the reporter refused the job report: {why}");
                    return;
                }
                Sent::Later(why) => eprintln!("reporting failed ({why}); buffering the report"),
            }
        }
        if let Err(e) = self.keep(report) {
            eprintln!("cannot buffer the job report: {e:#}");
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

    fn keep(&self, report: &Value) -> anyhow::Result<()> {
        let text = serde_json::to_vec(report)?;
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
