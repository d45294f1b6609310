//! The local stack's span log: every span the receiver takes, one JSON per
//! line, in two files at most (`spans.jsonl`, then `spans.1.jsonl` once
//! the first passes half the bound), so it never holds more than
//! `max_bytes` (ADR 15).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One span as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub name: String,
    /// The resource's `service.name`.
    pub service: String,
    /// `server`, `client`, `internal`, `producer`, `consumer`, `unspecified`.
    pub kind: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    /// Spans this one is linked to (not its parent): for ingest's request
    /// span, the sender's own `traceparent` (docs/security.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<SpanLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
}

impl SpanRecord {
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// The `task_id` attribute, if the span carries one.
    pub fn task_id(&self) -> Option<&str> {
        self.attributes.get("task_id").and_then(Value::as_str)
    }
}

/// Every span of an OTLP export request.
pub fn records_of(request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map_or_else(|| "unknown".to_owned(), text_of);
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            let status = span.status.as_ref();
            out.push(SpanRecord {
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: (!span.parent_span_id.is_empty())
                    .then(|| hex::encode(&span.parent_span_id)),
                name: span.name.clone(),
                service: service.clone(),
                kind: match span.kind {
                    1 => "internal",
                    2 => "server",
                    3 => "client",
                    4 => "producer",
                    5 => "consumer",
                    _ => "unspecified",
                }
                .to_owned(),
                start_unix_nano: span.start_time_unix_nano,
                end_unix_nano: span.end_time_unix_nano,
                status: match status.map_or(0, |s| s.code) {
                    1 => "ok",
                    2 => "error",
                    _ => "unset",
                }
                .to_owned(),
                status_message: status.map(|s| s.message.clone()).unwrap_or_default(),
                attributes: span
                    .attributes
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), json_of(kv.value.as_ref()?))))
                    .collect(),
                links: span
                    .links
                    .iter()
                    .map(|l| SpanLink {
                        trace_id: hex::encode(&l.trace_id),
                        span_id: hex::encode(&l.span_id),
                    })
                    .collect(),
            });
        }
    }
    out
}

fn text_of(value: &AnyValue) -> String {
    match json_of(value) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn json_of(value: &AnyValue) -> Value {
    use any_value::Value as V;
    match &value.value {
        Some(V::StringValue(s)) => Value::from(s.as_str()),
        Some(V::BoolValue(b)) => Value::from(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => Value::from(*d),
        Some(V::BytesValue(b)) => Value::from(hex::encode(b)),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(json_of).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), json_of(kv.value.as_ref()?))))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The span log in `dir`, bounded to `max_bytes`.
#[derive(Debug, Clone)]
pub struct SpanLog {
    dir: PathBuf,
    max_bytes: u64,
}

impl SpanLog {
    pub const CURRENT: &'static str = "spans.jsonl";
    pub const PREVIOUS: &'static str = "spans.1.jsonl";

    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `records`; when the current file would pass half the bound,
    /// it becomes the previous one (replacing it) first. One caller at a
    /// time (the receiver holds a lock).
    pub fn append(&self, records: &[SpanRecord]) -> std::io::Result<()> {
        let mut text = Vec::new();
        for record in records {
            serde_json::to_writer(&mut text, record)?;
            text.push(b'\n');
        }
        std::fs::create_dir_all(&self.dir)?;
        let current = self.dir.join(Self::CURRENT);
        let size = std::fs::metadata(&current).map_or(0, |m| m.len());
        if size > 0 && size + text.len() as u64 > self.max_bytes / 2 {
            std::fs::rename(&current, self.dir.join(Self::PREVIOUS))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)?;
        file.write_all(&text)
    }

    /// Every span kept, oldest file first. A line that does not parse (one
    /// cut by a crash) is skipped.
    pub fn read(&self) -> std::io::Result<Vec<SpanRecord>> {
        let mut out = Vec::new();
        for name in [Self::PREVIOUS, Self::CURRENT] {
            let file = match std::fs::File::open(self.dir.join(name)) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in std::io::BufReader::new(file).lines() {
                if let Ok(record) = serde_json::from_str(&line?) {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }
}
