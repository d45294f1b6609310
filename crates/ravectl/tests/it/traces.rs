//! The local stack's trace receiver on its own: what it refuses, and that
//! its span log stays within its bound.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use ravectl::traces::receiver::{Limits, serve};
use ravectl::traces::{SpanLog, tree};

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One export of `n` spans of the trace `trace`, the first with `task_id`.
fn export(trace: u8, n: u8, task_id: &str) -> Vec<u8> {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![trace; 16],
            span_id: vec![i + 1; 8],
            parent_span_id: if i == 0 { Vec::new() } else { vec![1; 8] },
            name: format!("span {i}"),
            kind: 2,
            start_time_unix_nano: 1_000_000 * u64::from(i),
            end_time_unix_nano: 1_000_000 * u64::from(i) + 500_000,
            attributes: if i == 0 {
                vec![text("task_id", task_id)]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "ingest")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn receiver(dir: &std::path::Path, max_bytes: u64) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let server = serve(
        listener,
        SpanLog::new(dir, max_bytes),
        Limits {
            max_body_bytes: 64 << 10,
        },
    )
    .unwrap();
    tokio::spawn(server);
    url
}

async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (
        status,
        answer.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn the_trace_receiver_refuses_what_is_not_an_otlp_export_with_a_json_error_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = receiver(dir.path(), 1 << 20).await;
    let (status, body) = post(&url, "application/json", b"{}".to_vec()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, body) = post(&url, "application/x-protobuf", vec![0xff; 9]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("malformed_body"))
    );
    let (status, body) = post(&url, "application/x-protobuf", vec![0; 65 << 10]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    assert!(
        SpanLog::new(dir.path(), 1 << 20).read().unwrap().is_empty(),
        "nothing refused was kept"
    );
    let (status, _) = post(
        &url,
        "application/x-protobuf",
        export(7, 3, "00000000000000aa"),
    )
    .await;
    assert_eq!(status, 200);
    let spans = SpanLog::new(dir.path(), 1 << 20).read().unwrap();
    let traces = tree::traces_of_task(&spans, "00000000000000aa");
    let trace = &traces[hex::encode([7u8; 16]).as_str()];
    assert_eq!(trace.len(), 3);
    assert!(trace.iter().all(|s| s.service == "ingest"));
    let rendered = tree::render(&hex::encode([7u8; 16]), trace);
    assert!(
        rendered.contains("├─ span 1") && rendered.contains("└─ span 2"),
        "{rendered}"
    );
    // Each refusal is counted by its code, each kept span too.
    let metrics = reqwest::get(url.replace("/v1/traces", "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "trace_receiver_exports_rejected_total{reason=\"unsupported_media_type\"} 1",
        "trace_receiver_exports_rejected_total{reason=\"malformed_body\"} 1",
        "trace_receiver_exports_rejected_total{reason=\"body_too_large\"} 1",
        "trace_receiver_spans_total 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn the_span_log_keeps_the_newest_spans_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bound = 16 << 10;
    let url = receiver(dir.path(), bound).await;
    for trace in 1..=60u8 {
        let (status, _) = post(
            &url,
            "application/x-protobuf",
            export(trace, 4, &format!("{trace:016x}")),
        )
        .await;
        assert_eq!(status, 200);
        let size: u64 = [SpanLog::CURRENT, SpanLog::PREVIOUS]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
            .map(|m| m.len())
            .sum();
        assert!(size <= bound, "{size} bytes kept, bound {bound}");
    }
    let spans = SpanLog::new(dir.path(), bound).read().unwrap();
    assert!(
        !tree::traces_of_task(&spans, &format!("{:016x}", 60)).is_empty(),
        "the newest trace is kept"
    );
    assert!(
        tree::traces_of_task(&spans, &format!("{:016x}", 1)).is_empty(),
        "the oldest went first"
    );
}
