//! Suite 13, traces: the agents suite's task has one whole trace, from the
//! webhook through the store and the dispatcher to the agent's report,
//! found by its `task_id` where the stack keeps spans (its span log, or
//! Tempo on a NixOS host).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use rave_service::ids::TaskId;

use super::agents::DoneTask;
use super::{Ctx, eventually};
use crate::traces::{Source, tree};

/// The spans a task's trace has, whatever else it has: each service's part.
pub const EXPECTED: [(&str, &str); 6] = [
    ("ingest", "POST /hooks/{source}"),
    // ingest sends small events many per call: each is stored in a span
    // of its own webhook's trace.
    ("dedup-store", "event.store"),
    ("task-dispatcher", "task.create"),
    ("task-dispatcher", "task.claim"),
    ("task-dispatcher", "POST /v1/tasks/{task_id}/complete"),
    ("agent-reporter", "POST /v1/reports"),
];

/// None (SKIP) for a stack that keeps no spans.
pub(super) async fn traces(ctx: &Ctx, task: Option<DoneTask>) -> Option<anyhow::Result<String>> {
    let source = Source::of_stack(&ctx.stack)?;
    Some(check(&source, task).await)
}

async fn check(source: &Source, task: Option<DoneTask>) -> anyhow::Result<String> {
    let task = task.context("no task to look up (the agents suite failed)")?;
    let task_id = TaskId::parse(task.id.clone())?;
    let summary = std::sync::Mutex::new(String::new());
    // Services export in batches every few seconds.
    let (summary, task_id) = (&summary, &task_id);
    eventually(Duration::from_secs(60), || async move {
        let spans = source
            .spans_of_task(task_id, Duration::from_secs(3600))
            .await?;
        // The suite's delivery is sent once: its task has one trace.
        let traces = tree::traces_of_task(&spans, task_id.as_str());
        ensure!(
            traces.len() == 1,
            "task {task_id} has {} traces in {}, not one",
            traces.len(),
            source.describe()
        );
        let (trace_id, spans) = traces.iter().next().context("one trace")?;
        let seen: BTreeSet<(&str, &str)> = spans
            .iter()
            .map(|s| (s.service.as_str(), s.name.as_str()))
            .collect();
        let missing: Vec<String> = EXPECTED
            .iter()
            .filter(|e| !seen.contains(*e))
            .map(|(service, name)| format!("{service}: {name}"))
            .collect();
        ensure!(
            missing.is_empty(),
            "trace {trace_id} of task {task_id} lacks {}",
            missing.join(", ")
        );
        *summary.lock().expect("not poisoned") = format!(
            "task {task_id}: trace {trace_id}, {} spans from the webhook to the report, in {}",
            spans.len(),
            source.describe()
        );
        Ok(())
    })
    .await?;
    Ok(std::mem::take(&mut *summary.lock().expect("not poisoned")))
}
