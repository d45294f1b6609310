//! Reconciling with the senders' delivery logs (ADR 18): list what GitHub
//! or GitLab says it delivered, find the deliveries RAVE has not stored,
//! and ask the sender to deliver them again.
//!
//! A run takes its source's advisory lock, so replicas never run one source
//! twice at once; each redelivery is claimed in `redelivery_requests` before
//! it is asked for, so none is asked for twice, whichever replica ran.
//! Deliveries younger than `min_age_secs` are left alone (they may be in
//! ingest's spool). A dry run asks nothing and records nothing.

pub mod app;
pub mod client;
pub mod github;
pub mod gitlab;
pub mod route;
pub mod settings;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rave_pg::Pool;
use rave_service::ids::SourceName;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::metrics::Metrics;
use client::{Api, ApiError, Auth, Pauses};
pub use settings::{Provider, ReconcileSettings, ReconcileSource};
use store::{Asked, Store};

/// One delivery in a provider's log.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The provider's id of this attempt (what a redelivery names).
    pub delivery_id: String,
    /// The id ingest stores the event under (`X-GitHub-Delivery`,
    /// GitLab's `Idempotency-Key`).
    pub event_uuid: String,
    pub event_type: String,
    /// GitLab does not say.
    pub delivered_at: Option<OffsetDateTime>,
    /// What the receiver answered; 0 when nothing did.
    pub status_code: u16,
    pub redelivery: bool,
}

/// What a provider listed.
#[derive(Debug, Default)]
pub struct Listing {
    pub deliveries: Vec<Delivery>,
    pub pages: u32,
    /// `max_pages` were read and there was more.
    pub truncated: bool,
    /// Deliveries without an id ingest would have stored them under.
    pub unmatched: u64,
}

/// What a run did (or, dry, would do) about one missing delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    WouldRedeliver,
    Redelivered,
    AlreadyRequested,
    Failed,
    /// Past `max_redeliveries_per_run`: the next run takes it.
    Deferred,
}

#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub event_uuid: String,
    pub delivery_id: String,
    pub event_type: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    pub status_code: u16,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub provider: &'static str,
    pub dry_run: bool,
    /// Another run of this source held its lock: nothing was done.
    pub busy: bool,
    /// How the run ended: `ok`, `busy`, `rate_limited` or `failed`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pages: u32,
    pub truncated: bool,
    /// Deliveries listed in the window (several per event when redelivered).
    pub listed: usize,
    /// Events in the window, and of those, stored (or erased) in RAVE.
    pub events: usize,
    pub stored: usize,
    /// Younger than `min_age_secs`: not looked at this time.
    pub too_young: usize,
    pub unmatched: u64,
    pub missing: Vec<Missing>,
    pub redelivered: usize,
    pub failed: usize,
    pub rate_limit_waits: u64,
    /// Requests of this source still waiting for their event (all runs).
    pub unrecovered: i64,
}

/// What a run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub since: OffsetDateTime,
    pub now: OffsetDateTime,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct Reconciler {
    store: Store,
    settings: Arc<ReconcileSettings>,
    metrics: Arc<Metrics>,
    http: client::Https,
    pauses: Arc<dyn Pauses>,
}

impl Reconciler {
    /// `None` when no source is configured.
    pub fn new(
        pool: Pool,
        settings: &ReconcileSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Self>> {
        if settings.sources.is_empty() {
            return Ok(None);
        }
        let http = http_client(settings)?;
        metrics
            .reconcile
            .initialise_sources(settings.sources.keys().map(SourceName::as_str));
        Ok(Some(Self {
            store: Store::new(pool),
            settings: Arc::new(settings.clone()),
            metrics,
            http,
            pauses: Arc::new(client::Sleep),
        }))
    }

    /// The same reconciler, waiting through `pauses` (tests record waits).
    pub fn pausing_with(mut self, pauses: Arc<dyn Pauses>) -> Self {
        self.pauses = pauses;
        self
    }

    pub fn sources(&self) -> impl Iterator<Item = &SourceName> {
        self.settings.sources.keys()
    }

    /// Reconciles `source` once. Errors only for an unknown source; what
    /// went wrong with the provider or the database is in the report.
    pub async fn reconcile(&self, source: &str, run: Run) -> Option<Report> {
        let (name, config) = self
            .settings
            .sources
            .iter()
            .find(|(name, _)| name.as_str() == source)?;
        let mut report = Report {
            source: name.as_str().to_owned(),
            provider: config.provider.as_str(),
            dry_run: run.dry_run,
            busy: false,
            result: "ok",
            error: None,
            pages: 0,
            truncated: false,
            listed: 0,
            events: 0,
            stored: 0,
            too_young: 0,
            unmatched: 0,
            missing: Vec::new(),
            redelivered: 0,
            failed: 0,
            rate_limit_waits: 0,
            unrecovered: 0,
        };
        let outcome = self
            .store
            .exclusively(source, self.run_locked(config, run, &mut report))
            .await;
        match outcome {
            Ok(Some(Ok(()))) => {}
            Ok(None) => {
                report.busy = true;
                report.result = "busy";
            }
            Ok(Some(Err(e))) | Err(e) => {
                report.result = match e.downcast_ref::<ApiError>() {
                    Some(ApiError::RateLimited { .. }) => "rate_limited",
                    _ => "failed",
                };
                report.error = Some(format!("{e:#}"));
                tracing::warn!(source, error = %format!("{e:#}"), "reconciling failed");
            }
        }
        self.count(&report);
        Some(report)
    }

    async fn run_locked(
        &self,
        config: &ReconcileSource,
        run: Run,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let source = report.source.clone();
        let settings = &self.settings;
        let app = match (config.is_github_app(), config.app_id.as_deref()) {
            (true, Some(issuer)) => Some(
                app::AppKey::from_pem(issuer, config.token.expose())
                    .map_err(|e| anyhow::anyhow!("the App's private key: {e}"))?,
            ),
            _ => None,
        };
        let auth = match (config.provider, &app) {
            (Provider::Github, Some(key)) => Auth::App(key),
            (Provider::Github, None) => Auth::Bearer,
            (Provider::Gitlab, _) => Auth::PrivateToken,
        };
        let mut api = Api::new(
            &self.http,
            config.token.expose(),
            auth,
            self.pauses.as_ref(),
            Duration::from_secs(settings.max_wait_secs),
        );
        let listed = match config.provider {
            Provider::Github => {
                github::list(
                    &mut api,
                    config,
                    run.since,
                    settings.page_size,
                    settings.max_pages,
                )
                .await
            }
            Provider::Gitlab => {
                gitlab::list(&mut api, config, settings.page_size, settings.max_pages).await
            }
        };
        report.rate_limit_waits = api.waits;
        let listing = listed?;
        report.pages = listing.pages;
        report.truncated = listing.truncated;
        report.unmatched = listing.unmatched;
        report.listed = listing.deliveries.len();

        // One entry per event: the newest delivery of each (the list is
        // newest first), unless it is too young to judge.
        let youngest = run.now - Duration::from_secs(settings.min_age_secs);
        let mut events: BTreeMap<String, Delivery> = BTreeMap::new();
        let mut young: HashSet<String> = HashSet::new();
        for delivery in listing.deliveries {
            if delivery.delivered_at.is_some_and(|at| at > youngest) {
                young.insert(delivery.event_uuid.clone());
            }
            events
                .entry(delivery.event_uuid.clone())
                .or_insert(delivery);
        }
        events.retain(|uuid, _| !young.contains(uuid));
        report.too_young = young.len();
        report.events = events.len();
        let ids: Vec<String> = events.keys().cloned().collect();
        let stored: HashSet<String> = self
            .store
            .stored(&source, &ids)
            .await?
            .into_iter()
            .collect();
        report.stored = stored.len();
        events.retain(|uuid, _| !stored.contains(uuid));

        let requested: BTreeMap<String, (String, i32)> = self
            .store
            .requested(&source, &events.keys().cloned().collect::<Vec<_>>())
            .await?
            .into_iter()
            .map(|(uuid, state, attempts)| (uuid, (state, attempts)))
            .collect();
        let mut asked = 0u32;
        for delivery in events.into_values() {
            let again = requested
                .get(&delivery.event_uuid)
                .is_none_or(|(state, attempts)| state == "failed" && *attempts < 3);
            let mut missing = Missing {
                event_uuid: delivery.event_uuid.clone(),
                delivery_id: delivery.delivery_id.clone(),
                event_type: delivery.event_type.clone(),
                delivered_at: delivery.delivered_at,
                status_code: delivery.status_code,
                action: Action::AlreadyRequested,
                detail: None,
            };
            if !again {
                report.missing.push(missing);
                continue;
            }
            if run.dry_run {
                missing.action = Action::WouldRedeliver;
                report.missing.push(missing);
                continue;
            }
            if asked >= settings.max_redeliveries_per_run {
                missing.action = Action::Deferred;
                report.missing.push(missing);
                continue;
            }
            if !self
                .store
                .claim(
                    &source,
                    &delivery.event_uuid,
                    &delivery.delivery_id,
                    &delivery.event_type,
                )
                .await?
            {
                report.missing.push(missing); // another replica, just now
                continue;
            }
            if asked > 0 {
                self.pauses.pause(config.pause()).await;
            }
            asked += 1;
            let result = match config.provider {
                Provider::Github => {
                    github::redeliver(&mut api, config, &delivery.delivery_id).await
                }
                Provider::Gitlab => {
                    gitlab::redeliver(&mut api, config, &delivery.delivery_id).await
                }
            };
            report.rate_limit_waits = api.waits;
            match result {
                Ok(()) => {
                    self.store
                        .settle(&source, &delivery.event_uuid, Asked::Requested, None)
                        .await?;
                    missing.action = Action::Redelivered;
                    report.redelivered += 1;
                }
                Err(e) => {
                    let detail = e.to_string();
                    self.store
                        .settle(&source, &delivery.event_uuid, Asked::Failed, Some(&detail))
                        .await?;
                    missing.action = Action::Failed;
                    missing.detail = Some(detail);
                    report.failed += 1;
                    if matches!(e, ApiError::RateLimited { .. }) {
                        report.missing.push(missing);
                        return Err(e.into());
                    }
                }
            }
            report.missing.push(missing);
        }
        let keep = i32::try_from(settings.keep_requests_days).unwrap_or(i32::MAX);
        report.unrecovered = self.store.unrecovered(&source, keep).await?;
        Ok(())
    }

    fn count(&self, report: &Report) {
        let m = &self.metrics.reconcile;
        let source = crate::metrics::SourceLabel {
            source: report.source.clone(),
        };
        m.runs
            .get_or_create(&crate::metrics::RunLabels {
                source: report.source.clone(),
                result: report.result,
            })
            .inc();
        m.rate_limit_waits
            .get_or_create(&source)
            .inc_by(report.rate_limit_waits);
        if report.dry_run || report.busy {
            return;
        }
        m.listed.get_or_create(&source).inc_by(report.listed as u64);
        m.missing
            .get_or_create(&source)
            .inc_by(report.missing.len() as u64);
        m.redelivered
            .get_or_create(&source)
            .inc_by(report.redelivered as u64);
        m.failed.get_or_create(&source).inc_by(report.failed as u64);
        if report.result == "ok" {
            m.unrecovered.get_or_create(&source).set(report.unrecovered);
            m.last_success
                .get_or_create(&source)
                .set(OffsetDateTime::now_utc().unix_timestamp());
        }
    }

    /// Reconciles every source each `interval_secs` until `stop`, looking
    /// back `lookback_secs`. Every replica runs it; the lock picks one.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.settings.interval_secs == 0 {
            return;
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(self.settings.interval_secs));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = rave_service::served::stopping(&mut stop) => return,
            }
            let sources: Vec<SourceName> = self.sources().cloned().collect();
            for source in sources {
                let now = OffsetDateTime::now_utc();
                let run = Run {
                    since: now - Duration::from_secs(self.settings.lookback_secs),
                    now,
                    dry_run: false,
                };
                tokio::select! {
                    _ = self.reconcile(source.as_str(), run) => {}
                    _ = rave_service::served::stopping(&mut stop) => return,
                }
            }
        }
    }
}

/// HTTPS through rustls on ring, trusting `ca_file` only (named, as for
/// PostgreSQL's TLS; read only when an https:// API is configured).
fn http_client(settings: &ReconcileSettings) -> anyhow::Result<client::Https> {
    use anyhow::Context as _;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let needs_tls = settings
        .sources
        .values()
        .any(|s| s.api_url.starts_with("https://"));
    if needs_tls {
        let certs = CertificateDer::pem_file_iter(&settings.ca_file)
            .with_context(|| format!("reconcile.ca_file {}", settings.ca_file.display()))?;
        for cert in certs {
            roots.add(cert.context("reconcile.ca_file")?)?;
        }
    }
    client::Https::new(roots, Duration::from_millis(settings.timeout_ms))
}
