//! A task's trace as a tree: each span under its parent, in start order,
//! with its service, offset from the trace's start, duration and status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::log::SpanRecord;

/// The spans of every trace that has a span with this `task_id`, by trace
/// id, each trace's spans in start order.
pub fn traces_of_task<'a>(
    spans: &'a [SpanRecord],
    task_id: &str,
) -> BTreeMap<&'a str, Vec<&'a SpanRecord>> {
    let ids: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.task_id() == Some(task_id))
        .map(|s| s.trace_id.as_str())
        .collect();
    let mut traces: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for span in spans {
        // An exporter that retried may have sent a span twice.
        if ids.contains(span.trace_id.as_str()) && seen.insert((&span.trace_id, &span.span_id)) {
            traces.entry(&span.trace_id).or_default().push(span);
        }
    }
    for spans in traces.values_mut() {
        spans.sort_by_key(|s| (s.start_unix_nano, s.end_unix_nano));
    }
    traces
}

/// What a trace of a task is: the one that created the task (webhook →
/// store → task → claims → completion → report), or one of a repeated
/// delivery of its event, which the store answered as a duplicate.
pub fn role(spans: &[&SpanRecord]) -> &'static str {
    if spans.iter().any(|s| s.name == "task.create") {
        "task"
    } else {
        "repeated delivery"
    }
}

/// A task's traces, the task's own first, then repeats by start time.
pub fn ordered<'a>(
    traces: BTreeMap<&'a str, Vec<&'a SpanRecord>>,
) -> Vec<(&'a str, Vec<&'a SpanRecord>)> {
    let mut out: Vec<_> = traces.into_iter().collect();
    out.sort_by_key(|(_, spans)| {
        (
            role(spans) != "task",
            spans.first().map_or(0, |s| s.start_unix_nano),
        )
    });
    out
}

/// One trace, rendered as a tree.
pub fn render(trace_id: &str, spans: &[&SpanRecord]) -> String {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start);
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    let mut out = format!(
        "trace {trace_id} ({}): {} spans, {} services ({}), {}\n",
        role(spans),
        spans.len(),
        services.len(),
        services.into_iter().collect::<Vec<_>>().join(", "),
        millis(end - start)
    );
    let _ = writeln!(
        out,
        "{:>10} {:>10}  {:<16} {:<7} span",
        "start", "duration", "service", "status"
    );
    let children = |parent: Option<&str>| -> Vec<&SpanRecord> {
        spans
            .iter()
            .copied()
            .filter(|s| match parent {
                Some(p) => s.parent_span_id.as_deref() == Some(p),
                // Roots: no parent, or a parent this log never received.
                None => s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)),
            })
            .collect()
    };
    fn walk<'a>(
        out: &mut String,
        span: &'a SpanRecord,
        prefix: &str,
        last: bool,
        root: bool,
        start: u64,
        children: &dyn Fn(Option<&str>) -> Vec<&'a SpanRecord>,
    ) {
        let branch = if root {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let mut status = span.status.clone();
        if let Some(code) = span.attributes.get("http.status_code") {
            status = format!("{status} {code}");
        }
        let mut line = format!(
            "{:>10} {:>10}  {:<16} {:<7} {prefix}{branch}{}",
            format!("+{}", millis(span.start_unix_nano.saturating_sub(start))),
            millis(span.duration_nanos()),
            span.service,
            status,
            span.name,
        );
        if let Some(task) = span.task_id() {
            let _ = write!(line, "  task_id={task}");
        }
        if root && span.parent_span_id.is_some() {
            line.push_str("  (its parent span was not received)");
        }
        if !span.status_message.is_empty() {
            let _ = write!(line, "  \"{}\"", span.status_message);
        }
        out.push_str(line.trim_end());
        out.push('\n');
        let next_prefix = if root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "   " } else { "│  " })
        };
        let kids = children(Some(&span.span_id));
        for (i, child) in kids.iter().enumerate() {
            walk(
                out,
                child,
                &next_prefix,
                i + 1 == kids.len(),
                false,
                start,
                children,
            );
        }
    }
    for root in children(None) {
        walk(&mut out, root, "", true, true, start, &children);
    }
    out
}

fn millis(nanos: u64) -> String {
    format!("{:.1} ms", nanos as f64 / 1e6)
}
