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
    /// Refused for what it is (4xx but 401 and 429): sending it again will
    /// not help.
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
    /// not help). Several waiting go together (`/v1/reports/batch`), each
    /// with its own trace context; one alone, or a reporter without the
    /// batch route, goes one call each.
    pub(super) async fn flush(&self, http: &reqwest::Client, reporter: &str, token: &str) {
        let kept: Vec<Kept> = self
            .waiting()
            .into_iter()
            .filter_map(|path| {
                let text = std::fs::read_to_string(&path).ok()?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(kept) => Some(Kept {
                        path,
                        bytes: text.len(),
                        kept,
                    }),
                    Err(_) => {
                        let _ = std::fs::remove_file(&path);
                        None
                    }
                }
            })
            .collect();
        for chunk in chunks(&kept) {
            let outcome = if chunk.len() > 1 {
                post_batch(http, reporter, token, chunk).await
            } else {
                None
            };
            let sent = match outcome {
                Some(sent) => sent,
                None => {
                    let mut sent = Vec::new();
                    for Kept { kept, .. } in chunk {
                        let traceparent = kept["traceparent"].as_str();
                        let one = post(http, reporter, token, &kept["report"], traceparent).await;
                        let later = matches!(one, Sent::Later(_));
                        sent.push(one);
                        if later {
                            break;
                        }
                    }
                    sent
                }
            };
            for (Kept { path, .. }, sent) in chunk.iter().zip(sent) {
                match sent {
                    Sent::Taken => {
                        let _ = std::fs::remove_file(path);
                    }
                    Sent::Refused(why) => {
                        eprintln!("the reporter refused a job report: {why}");
                        let _ = std::fs::remove_file(path);
                    }
                    Sent::Later(why) => {
                        eprintln!("the reporter cannot take reports now ({why}); keeping them");
                        return;
                    }
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
        Ok(r) => {
            let status = r.status().as_u16();
            let detail = if (400..500).contains(&status) {
                r.text().await.unwrap_or_default()
            } else {
                String::new()
            };
            sent(status, &detail)
        }
        Err(e) => Sent::Later(e.to_string()),
    }
}

/// What the reporter's answer for one report means: a call's status, or a
/// batch item's.
fn sent(status: u16, detail: &str) -> Sent {
    match status {
        200..=299 => Sent::Taken,
        // 401 is this agent's token, not the report: kept for a fixed token.
        401 | 429 => Sent::Later(format!("it answered {status}")),
        400..=499 => Sent::Refused(format!("{status}: {detail}")),
        _ => Sent::Later(format!("it answered {status}")),
    }
}

/// At most this many reports, and about this many bytes, per batch call:
/// within agent-reporter's default `limits.max_reports_per_call` and
/// `limits.max_batch_bytes`.
const BATCH_REPORTS: usize = 100;
const BATCH_BYTES: usize = 3 << 20;

/// A waiting report: its file, the file's size, and what it holds
/// (`report`, `traceparent`).
struct Kept {
    path: PathBuf,
    bytes: usize,
    kept: Value,
}

/// `kept` cut into batches, in order (sized by the files, a little above
/// the reports they hold).
fn chunks(kept: &[Kept]) -> Vec<&[Kept]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, Kept { bytes: size, .. }) in kept.iter().enumerate() {
        if i > start && (i - start == BATCH_REPORTS || bytes + size > BATCH_BYTES) {
            out.push(&kept[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < kept.len() {
        out.push(&kept[start..]);
    }
    out
}

/// One `/v1/reports/batch` call for `chunk`: what became of each report,
/// in order; `None` when the reporter refused the call itself for what it
/// is (no batch route, 404; a limit it has lower), so each goes alone.
async fn post_batch(
    http: &reqwest::Client,
    reporter: &str,
    token: &str,
    chunk: &[Kept],
) -> Option<Vec<Sent>> {
    let reports: Vec<Value> = chunk
        .iter()
        .map(|Kept { kept, .. }| {
            let mut report = kept["report"].clone();
            if let (Some(object), Some(tp)) = (report.as_object_mut(), kept["traceparent"].as_str())
            {
                object.insert("traceparent".into(), tp.into());
            }
            report
        })
        .collect();
    let answer = http
        .post(format!("{reporter}/v1/reports/batch"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .json(&serde_json::json!({ "reports": reports }))
        .send()
        .await;
    let later = |why: String| Some(chunk.iter().map(|_| Sent::Later(why.clone())).collect());
    let response = match answer {
        Ok(r) => r,
        Err(e) => return later(e.to_string()),
    };
    let status = response.status();
    if status.is_client_error() && status != 429 && status != 401 {
        return None;
    }
    if !status.is_success() {
        return later(format!("it answered {status}"));
    }
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(e) => return later(e.to_string()),
    };
    let items = body["results"].as_array()?;
    Some(
        (0..chunk.len())
            .map(|n| match items.get(n) {
                Some(item) => sent(
                    item["status"].as_u64().unwrap_or(0) as u16,
                    &item["error"].to_string(),
                ),
                None => Sent::Later("no answer for it".into()),
            })
            .collect(),
    )
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}
