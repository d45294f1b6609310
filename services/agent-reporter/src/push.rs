//! Pushing each agent's group to the Pushgateway, and deleting the groups of
//! agents gone silent (the Pushgateway never forgets a series by itself).
//!
//! A group is `job=<job>/agent=<agent>`: bounded, never a task id. The body
//! is Prometheus text 0.0.4 (the Pushgateway refuses OpenMetrics), and a PUT
//! replaces the whole group, so every push carries all of the agent's series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use rave_pg::Pool;
use rave_service::clock::Clock;
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::settings::{PushgatewaySettings, Settings};
use crate::store::{self, SeriesRow};

pub fn valid_label_value(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control)
}

/// `/<name>/<value>`, or `/<name>@base64/<value>` when the value has a `/`
/// or is empty (the Pushgateway's encoding for such values).
fn path_segment(name: &str, value: &str) -> String {
    if value.is_empty() || value.contains('/') {
        format!("/{name}@base64/{}", URL_SAFE.encode(value))
    } else {
        format!("/{name}/{value}")
    }
}

pub fn group_url(base: &str, job: &str, agent: &str) -> String {
    format!(
        "{}/metrics{}{}",
        base.trim_end_matches('/'),
        path_segment("job", job),
        path_segment("agent", agent)
    )
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(name: &str) -> (&str, &'static str, &'static str) {
    const HISTOGRAM: &str = "agent_job_duration_seconds";
    if name.starts_with(HISTOGRAM) {
        return (
            HISTOGRAM,
            "histogram",
            "Duration of the agent's jobs, by task kind",
        );
    }
    match name {
        "agent_jobs_total" => (
            name,
            "counter",
            "Jobs the agent finished, by task kind and status",
        ),
        "agent_tokens_total" => (
            name,
            "counter",
            "Model tokens the agent's jobs used, by type",
        ),
        "agent_cost_total" => (
            name,
            "counter",
            "Cost of the agent's jobs, in the deployment's currency unit",
        ),
        _ => (name, "counter", "A custom counter reported by the agent"),
    }
}

/// Renders one agent's series as Prometheus text 0.0.4 with HELP and TYPE.
pub fn render(series: &[SeriesRow]) -> String {
    let mut by_family: BTreeMap<&str, Vec<&SeriesRow>> = BTreeMap::new();
    for row in series {
        by_family.entry(family(&row.1).0).or_default().push(row);
    }
    let mut out = String::new();
    for (name, rows) in by_family {
        let (_, kind, help) = family(name);
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (task_kind, sample, labels, value) in rows {
            let mut pairs = vec![format!("kind=\"{}\"", escape(task_kind))];
            pairs.extend(labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))));
            let _ = writeln!(out, "{sample}{{{}}} {value}", pairs.join(","));
        }
    }
    out
}

/// What one push step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushSummary {
    pub pushed: usize,
    pub failed: usize,
    pub deleted: usize,
    /// Groups another replica was pushing or had just pushed.
    pub skipped: usize,
}

#[derive(Debug, Clone)]
pub struct Pusher {
    pub(crate) pool: Pool,
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) settings: PushgatewaySettings,
    /// How long reports are remembered to recognise an agent's retries.
    pub(crate) report_retention: Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    /// This pusher's name on its claims (random per process).
    pub(crate) pusher_id: String,
}

impl Pusher {
    pub fn new(
        pool: Pool,
        reporter: &Settings,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<Self>> {
        let settings = &reporter.pushgateway;
        let Some(url) = settings.url.clone() else {
            return Ok(None);
        };
        Ok(Some(Self {
            pool,
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.timeout_ms))
                .build()?,
            url,
            settings: settings.clone(),
            report_retention: Duration::from_secs(reporter.limits.report_retention_hours * 3600),
            metrics,
            clock,
            pusher_id: hex::encode(rave_service::crypto::random_bytes::<9>()),
        }))
    }

    /// Pushes every group that changed (or is due for a refresh), then
    /// deletes the groups of agents silent longer than the TTL. Each group
    /// is pushed or deleted under its own claim, so with several replicas
    /// one group has one pusher at a time; groups another replica holds are
    /// skipped (it is pushing them).
    pub async fn push_once(&self) -> anyhow::Result<PushSummary> {
        let now = self.clock.now();
        let mut summary = PushSummary::default();
        let interval = Duration::from_secs(self.settings.interval_secs);
        for agent in store::due_groups(&self.pool, now, interval).await? {
            match self.push_group(&agent, now, interval).await? {
                Some(true) => summary.pushed += 1,
                Some(false) => summary.failed += 1,
                None => summary.skipped += 1,
            }
        }
        let before = now - self.settings.group_ttl();
        for agent in store::silent_groups(&self.pool, before).await? {
            if self.delete_group(&agent, now, before).await? {
                summary.deleted += 1;
            }
        }
        store::prune_reports(&self.pool, now - self.report_retention).await?;
        Ok(summary)
    }

    /// Pushes one group under its claim: `None` when another replica holds
    /// it or already pushed it, else whether the push succeeded.
    async fn push_group(
        &self,
        agent: &str,
        now: time::OffsetDateTime,
        interval: Duration,
    ) -> anyhow::Result<Option<bool>> {
        let Some(version) = store::claim_push(
            &self.pool,
            agent,
            now,
            interval,
            now + self.claim_time(),
            &self.pusher_id,
        )
        .await?
        else {
            return Ok(None);
        };
        // Series read now may include reports newer than `version`: pushing
        // them early is harmless, and the group stays due for the next push.
        let client = self.pool.get().await?;
        let series = store::group_series(&client, agent).await;
        drop(client);
        let body = match series {
            Ok(series) => render(&series),
            Err(e) => {
                store::release_claim(&self.pool, agent, &self.pusher_id).await?;
                return Err(e);
            }
        };
        Ok(Some(match self.put(agent, body).await {
            Ok(()) => {
                store::mark_pushed(&self.pool, agent, version, now, &self.pusher_id).await?;
                self.metrics.pushes.inc();
                true
            }
            Err(e) => {
                self.metrics.push_failures.inc();
                store::mark_push_failed(&self.pool, agent, &e, &self.pusher_id).await?;
                false
            }
        }))
    }

    /// Long enough for one HTTP call to end (it times out after
    /// `timeout_ms`), so one group has one pusher at a time.
    fn claim_time(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms * 2) + Duration::from_secs(1)
    }

    /// Deletes a silent agent's group from the Pushgateway, then forgets
    /// it, under the group's claim; whether it was deleted.
    async fn delete_group(
        &self,
        agent: &str,
        now: time::OffsetDateTime,
        before: time::OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let until = now + self.claim_time();
        if !store::claim_silent(&self.pool, agent, now, before, until, &self.pusher_id).await? {
            return Ok(false);
        }
        let response = self
            .http
            .delete(group_url(&self.url, &self.settings.job, agent))
            .send()
            .await;
        let deleted = match response {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(agent, status = %r.status(), "deleting a silent agent's group failed");
                false
            }
            Err(e) => {
                tracing::warn!(agent, error = %e, "deleting a silent agent's group failed");
                false
            }
        };
        let forgotten =
            deleted && store::forget_group(&self.pool, agent, before, &self.pusher_id).await?;
        if !forgotten {
            // Failed, or the agent reported meanwhile: its group is due again.
            store::release_claim(&self.pool, agent, &self.pusher_id).await?;
            return Ok(false);
        }
        self.metrics.groups_deleted.inc();
        tracing::info!(
            agent,
            "deleted the group of a silent agent from the Pushgateway"
        );
        Ok(true)
    }

    async fn put(&self, agent: &str, body: String) -> Result<(), String> {
        let response = self
            .http
            .put(group_url(&self.url, &self.settings.job, agent))
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("pushing to the Pushgateway failed: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::BAD_REQUEST {
            // Typically a metric whose type clashes with another group's:
            // the Pushgateway names it in the body.
            self.metrics.push_rejected.inc();
            tracing::error!(agent, pushgateway = %text.trim(), "the Pushgateway rejected the push");
        }
        Err(format!(
            "the Pushgateway answered {status}: {}",
            text.trim()
        ))
    }

    /// Pushes `debounce_ms` after reports arrive and every `interval_secs`;
    /// after a failure, retries with backoff. Until `stop`.
    pub async fn run(self, reported: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.settings.interval_secs);
        let debounce = Duration::from_millis(self.settings.debounce_ms);
        let mut backoff = Duration::from_millis(500);
        loop {
            let woken = tokio::select! {
                _ = reported.notified() => true,
                _ = tokio::time::sleep(interval) => false,
                _ = rave_service::served::stopping(&mut stop) => return,
            };
            if woken {
                // Let a burst of reports collect into one push.
                tokio::time::sleep(debounce).await;
            }
            loop {
                match self.push_once().await {
                    Ok(s) if s.failed == 0 => {
                        backoff = Duration::from_millis(500);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "push step failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = rave_service::served::stopping(&mut stop) => return,
                }
                backoff = (backoff * 2).min(interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_urls_use_base64_where_a_value_needs_it() {
        assert_eq!(
            group_url("http://pg:9091/", "rave_agents", "bot"),
            "http://pg:9091/metrics/job/rave_agents/agent/bot"
        );
        assert_eq!(
            group_url("http://pg:9091", "a/b", "bot"),
            format!(
                "http://pg:9091/metrics/job@base64/{}/agent/bot",
                URL_SAFE.encode("a/b")
            )
        );
    }

    #[test]
    fn rendering_groups_families_with_help_type_and_escaped_labels() {
        let rows: Vec<SeriesRow> = vec![
            (
                "review".into(),
                "agent_jobs_total".into(),
                [("status".to_owned(), "succeeded".to_owned())].into(),
                2.0,
            ),
            (
                "review".into(),
                "agent_job_duration_seconds_bucket".into(),
                [("le".to_owned(), "+Inf".to_owned())].into(),
                2.0,
            ),
            (
                "review".into(),
                "agent_job_duration_seconds_sum".into(),
                BTreeMap::new(),
                3.5,
            ),
            (
                "review".into(),
                "agent_custom_files_total".into(),
                [("lang".to_owned(), "a\"b".to_owned())].into(),
                1.0,
            ),
        ];
        let text = render(&rows);
        assert!(text.contains("# TYPE agent_job_duration_seconds histogram\n"));
        assert!(
            text.contains("agent_job_duration_seconds_bucket{kind=\"review\",le=\"+Inf\"} 2\n")
        );
        assert!(text.contains("# TYPE agent_jobs_total counter\n"));
        assert!(text.contains("agent_jobs_total{kind=\"review\",status=\"succeeded\"} 2\n"));
        assert!(text.contains("agent_custom_files_total{kind=\"review\",lang=\"a\\\"b\"} 1\n"));
        assert!(!text.contains("task_id"));
    }
}
