//! Traces without a trace backend: the local stack's OTLP receiver
//! (`receiver`) writes every span to a bounded log (`log`), and
//! `ravectl trace TASK_ID` prints a task's whole trace as a tree (`tree`),
//! from that log or from Tempo on a NixOS host (`tempo`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rave_service::ids::TaskId;

use crate::cli::TraceArgs;
use crate::stack::StackFile;

pub mod log;
pub mod receiver;
pub mod tempo;
pub mod tree;

pub use log::{SpanLog, SpanRecord};

/// Where a stack keeps its spans.
#[derive(Debug, Clone)]
pub enum Source {
    Log(SpanLog),
    Tempo(String),
}

impl Source {
    /// `--tempo-url`, else the stack's own: its Tempo, else its span log.
    pub fn of(args: &TraceArgs) -> Self {
        if let Some(url) = &args.tempo_url {
            return Self::Tempo(url.clone());
        }
        // Without a running stack: the span log `up` left in its state dir.
        StackFile::read(&args.state_dir)
            .ok()
            .and_then(|stack| Self::of_stack(&stack))
            .unwrap_or_else(|| Self::Log(SpanLog::new(args.state_dir.join("traces"), u64::MAX)))
    }

    /// Where `stack` keeps its spans: its Tempo, else its span log; None
    /// for a stack that keeps none.
    pub fn of_stack(stack: &StackFile) -> Option<Self> {
        match (&stack.tempo_url, &stack.trace_dir) {
            (Some(url), _) => Some(Self::Tempo(url.clone())),
            (None, Some(dir)) => Some(Self::Log(SpanLog::new(dir, u64::MAX))),
            (None, None) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Log(log) => format!("the span log in {}", log.dir().display()),
            Self::Tempo(url) => format!("Tempo at {url}"),
        }
    }

    /// Every span of the traces that carry `task_id`.
    pub async fn spans_of_task(
        &self,
        task_id: &TaskId,
        since: Duration,
    ) -> anyhow::Result<Vec<SpanRecord>> {
        match self {
            Self::Log(log) => {
                let all = log.read()?;
                let ids: std::collections::BTreeSet<String> =
                    tree::traces_of_task(&all, task_id.as_str())
                        .keys()
                        .map(|k| (*k).to_owned())
                        .collect();
                Ok(all
                    .into_iter()
                    .filter(|s| ids.contains(&s.trace_id))
                    .collect())
            }
            Self::Tempo(url) => tempo::spans_of_task(url, task_id, since).await,
        }
    }
}

/// `ravectl trace TASK_ID`.
pub async fn run(args: TraceArgs) -> anyhow::Result<i32> {
    let task_id = TaskId::parse(args.task_id.clone())
        .with_context(|| format!("{:?} is not a task id", args.task_id))?;
    let source = Source::of(&args);
    let since = Duration::from_secs(args.since_hours * 3600);
    // Services export in batches, every few seconds: --wait-secs waits for
    // the spans of a task that just finished.
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let spans = loop {
        let spans = source.spans_of_task(&task_id, since).await?;
        if !spans.is_empty() || Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let traces = tree::ordered(tree::traces_of_task(&spans, task_id.as_str()));
    if traces.is_empty() {
        eprintln!(
            "no span with task_id {task_id} in {}: spans are kept for a bounded time \
             (docs/local-stack.md), and a trace may not be sampled",
            source.describe()
        );
        return Ok(1);
    }
    if args.json {
        let out: Vec<serde_json::Value> = traces
            .iter()
            .map(|(id, spans)| {
                serde_json::json!({ "trace_id": id, "role": tree::role(spans), "spans": spans })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (id, spans) in &traces {
            print!("{}", tree::render(id, spans));
        }
    }
    Ok(0)
}
