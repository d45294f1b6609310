//! A job report, parsed and checked at the edge. Every refusal names the
//! path of the offending field.

use std::collections::BTreeMap;

use rave_service::ids::{TaskId, TaskKind};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::settings::Limits;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// `POST /v1/reports`. The agent is whoever holds the token, never a field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub task_id: TaskId,
    pub kind: TaskKind,
    pub status: JobStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_seconds: f64,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    /// In the deployment's currency unit.
    pub cost: Option<f64>,
    #[serde(default)]
    pub metrics: Vec<CustomMetric>,
    /// The job's W3C trace context, so that a report sent in a batch joins
    /// its task's trace (a single call may send the header instead).
    pub traceparent: Option<String>,
}

/// A counter the agent adds to: exported as `agent_custom_<name>_total`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomMetric {
    pub name: String,
    pub value: f64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A refused report: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Invalid {
    pub path: String,
    pub reason: String,
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Labels the reporter sets itself; custom labels may not use them.
const RESERVED_LABELS: [&str; 8] = [
    "agent", "kind", "job", "instance", "le", "status", "type", "quantile",
];

fn snake_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && s.len() <= 64
}

impl Report {
    /// Parses JSON; type errors carry the path of the field.
    pub fn parse(body: &[u8]) -> Result<Self, Invalid> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let reason = e.inner().to_string();
            // Drop serde_json's position; the path says where.
            let reason = reason
                .split(" at line ")
                .next()
                .unwrap_or(&reason)
                .to_owned();
            invalid(if path == "." { "(body)".into() } else { path }, reason)
        })
    }

    /// Checks what types cannot: ranges, names and bounds.
    pub fn validate(&self, limits: &Limits) -> Result<(), Invalid> {
        if let Some(tp) = &self.traceparent
            && (tp.len() > 128 || !tp.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "traceparent",
                "must be a W3C traceparent (printable ASCII, at most 128 bytes)",
            ));
        }
        if !self.duration_seconds.is_finite() || self.duration_seconds < 0.0 {
            return Err(invalid("duration_seconds", "must be a finite number >= 0"));
        }
        if self.duration_seconds > limits.max_duration_secs {
            return Err(invalid(
                "duration_seconds",
                format!("at most {} s", limits.max_duration_secs),
            ));
        }
        if let Some(cost) = self.cost
            && (!cost.is_finite() || cost < 0.0)
        {
            return Err(invalid("cost", "must be a finite number >= 0"));
        }
        if self.metrics.len() > limits.max_custom_metrics {
            return Err(invalid(
                "metrics",
                format!("at most {} custom metrics", limits.max_custom_metrics),
            ));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let at = |field: &str| format!("metrics[{i}].{field}");
            if !snake_name(&m.name) {
                return Err(invalid(
                    at("name"),
                    "must match [a-z][a-z0-9_]* (at most 64 characters)",
                ));
            }
            if !m.value.is_finite() || m.value < 0.0 {
                return Err(invalid(
                    at("value"),
                    "must be a finite number >= 0 (custom metrics are counters)",
                ));
            }
            if m.labels.len() > limits.max_labels {
                return Err(invalid(
                    at("labels"),
                    format!("at most {} labels", limits.max_labels),
                ));
            }
            for (name, value) in &m.labels {
                if !snake_name(name) || RESERVED_LABELS.contains(&name.as_str()) {
                    return Err(invalid(
                        at(&format!("labels.{name}")),
                        format!(
                            "label names must match [a-z][a-z0-9_]* and not be one of {RESERVED_LABELS:?}"
                        ),
                    ));
                }
                if value.len() > limits.max_label_value_bytes || value.chars().any(char::is_control)
                {
                    return Err(invalid(
                        at(&format!("labels.{name}")),
                        format!(
                            "at most {} bytes, no control characters",
                            limits.max_label_value_bytes
                        ),
                    ));
                }
            }
        }
        if self.metrics.iter().enumerate().any(|(i, m)| {
            self.metrics[..i]
                .iter()
                .any(|other| other.name == m.name && other.labels == m.labels)
        }) {
            return Err(invalid("metrics", "the same name and labels appear twice"));
        }
        Ok(())
    }
}
