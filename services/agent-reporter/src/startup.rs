//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use std::sync::Arc;

use actix_web::web;
use rave_service::auth::Agents;
use rave_service::clock::{Clock, SystemClock};
use rave_service::served::Served;
use rave_service::served::StopHandle;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::push::Pusher;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::store;

#[derive(Debug)]
pub struct Application {
    served: Served,
    pusher: Option<Pusher>,
    writers: rave_service::batch::Writers,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Arc::new(SystemClock), true).await
    }

    /// With an injected clock; `background: false` leaves pushing to the
    /// caller (tests step it with [`Application::pusher`]).
    pub async fn build_with(
        settings: Settings,
        clock: Arc<dyn Clock>,
        background: bool,
    ) -> anyhow::Result<Self> {
        let agents = Agents::load(&settings.agents, settings.agents_file.as_deref())?;
        let pool = rave_pg::pool(&settings.database, "agent-reporter")?;
        store::migrate(&pool).await?;
        let metrics = Arc::new(Metrics::new());
        let reported = Arc::new(Notify::new());
        let pusher = Pusher::new(pool.clone(), &settings, metrics.clone(), clock.clone())?;
        if pusher.is_none() {
            tracing::warn!("pushgateway.url is not set: reports are aggregated but not pushed");
        }
        let (recorder, writers) = crate::record::start(
            pool.clone(),
            &settings.reports,
            settings.limits.max_series_per_agent,
            rave_service::batch::BatchMetrics {
                batch_size: Some(metrics.report_batch_size.clone()),
                in_flight: None,
            },
        );
        let listener = rave_service::http::bind(&settings.server)?;
        let state = web::Data::new(AppState {
            pool,
            agents,
            metrics,
            limits: settings.limits.clone(),
            agent_limit: rave_service::limit::KeyedLimit::new(settings.limits.agent_requests),
            started_at: clock.now(),
            clock,
            reported: reported.clone(),
            recorder,
        });
        let mut served = Served::new(listener, &settings.server, state, routes::configure)?;
        if let Some(p) = pusher.clone().filter(|_| background) {
            served.spawn(move |stop| p.run(reported, stop));
        }
        Ok(Self {
            served,
            pusher,
            writers,
        })
    }

    pub fn port(&self) -> u16 {
        self.served.port()
    }

    pub fn handle(&self) -> StopHandle {
        self.served.handle()
    }

    pub fn pusher(&self) -> Option<Pusher> {
        self.pusher.clone()
    }

    /// Serves until SIGTERM/SIGINT, commits queued reports, then pushes
    /// once more and stops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let stopped = self.served.until_stopped().await?;
        stopped.finish(self.writers.shutdown()).await;
        if let Some(pusher) = self.pusher
            && let Err(e) = pusher.push_once().await
        {
            tracing::warn!(error = %format!("{e:#}"), "final push failed; aggregates are kept for the next start");
        }
        Ok(())
    }
}
