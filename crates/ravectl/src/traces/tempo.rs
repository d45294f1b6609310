//! A task's spans from Grafana Tempo (the NixOS P2 host): a TraceQL search
//! by the `task_id` span attribute, then each trace by id.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rave_service::ids::TaskId;

use super::log::{SpanRecord, records_of};

/// Every span of the traces that carry `task_id`, searched over the last
/// `since`.
pub async fn spans_of_task(
    base: &str,
    task_id: &TaskId,
    since: Duration,
) -> anyhow::Result<Vec<SpanRecord>> {
    let base = base.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let end = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let start = end.saturating_sub(since.as_secs());
    // A task id is 16 lower-case hex digits: nothing in it needs escaping.
    let query = format!("%7Bspan.task_id%3D%22{task_id}%22%7D");
    let found: serde_json::Value = client
        .get(format!(
            "{base}/api/search?q={query}&start={start}&end={end}&limit=20"
        ))
        .send()
        .await
        .context("Tempo's search")?
        .error_for_status()?
        .json()
        .await?;
    let mut spans = Vec::new();
    for trace in found["traces"].as_array().into_iter().flatten() {
        let Some(id) = trace["traceID"].as_str() else {
            continue;
        };
        // `tempopb.Trace` is `repeated ResourceSpans` at field 1, the same
        // wire shape as an export request.
        let body = client
            .get(format!("{base}/api/traces/{id}"))
            .header("accept", "application/protobuf")
            .send()
            .await
            .with_context(|| format!("Tempo's trace {id}"))?
            .error_for_status()?
            .bytes()
            .await?;
        let trace = ExportTraceServiceRequest::decode(body)
            .with_context(|| format!("Tempo's trace {id} is not OTLP protobuf"))?;
        spans.extend(records_of(&trace));
    }
    Ok(spans)
}
