//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use std::sync::Arc;

use actix_web::web;
use rave_service::batch::Writers;
use rave_service::served::Served;
use rave_service::served::StopHandle;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::relay::Relay;
use crate::retention::Retention;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::store;

#[derive(Debug)]
pub struct Application {
    served: Served,
    writers: Writers,
    relay: Option<Relay>,
    retention: Retention,
    reconciler: Option<Reconciler>,
}

impl Application {
    /// The service as deployed, with the relay running in the background.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, true).await
    }

    /// Connects to PostgreSQL, applies migrations, starts the group-commit
    /// writers and binds the listener. With `background: false` the relay
    /// does not run by itself: tests step it with [`Application::relay`].
    pub async fn build_with(settings: Settings, background: bool) -> anyhow::Result<Self> {
        let pool = rave_pg::pool(&settings.database, "dedup-store")?;
        store::migrate(&pool).await?;
        let metrics = Arc::new(Metrics::new());
        let committed = Arc::new(Notify::new());
        let (committer, writers) = store::start_group_commit(
            pool.clone(),
            &settings.group_commit,
            metrics.clone(),
            committed.clone(),
        );
        let relay = Relay::new(pool.clone(), &settings.relay, metrics.clone())?;
        if settings.writers().is_empty() {
            tracing::warn!("no ingest token is configured: every write will get 401");
        }
        if relay.is_none() {
            tracing::warn!("relay.dispatcher_url is not set: stored events wait in the outbox");
        }
        let reconciler = Reconciler::new(pool.clone(), &settings.reconcile, metrics.clone())?;
        let pool_for_retention = pool.clone();
        let metrics_for_state = metrics.clone();
        let state = web::Data::new(AppState {
            pool,
            committer,
            metrics: metrics_for_state,
            limits: settings.limits.clone(),
            writers: settings.writers(),
            readers: settings.readers(),
            relay: relay.clone(),
            reconciler: reconciler.clone(),
        });
        let listener = rave_service::http::bind(&settings.server)?;
        let mut served = Served::new(listener, &settings.server, state, routes::configure)?;
        if let Some(relay) = relay.clone().filter(|_| background) {
            served.spawn(|stop| relay.run(committed, stop));
        }
        let retention = Retention::new(pool_for_retention, settings.retention.clone(), metrics);
        if background {
            let retention = retention.clone();
            served.spawn(|stop| retention.run(stop));
        }
        if let Some(reconciler) = reconciler.clone().filter(|_| background) {
            served.spawn(|stop| reconciler.run(stop));
        }
        Ok(Self {
            served,
            writers,
            relay,
            retention,
            reconciler,
        })
    }

    pub fn port(&self) -> u16 {
        self.served.port()
    }

    /// A handle to stop the server gracefully (tests; SIGTERM does the same).
    pub fn handle(&self) -> StopHandle {
        self.served.handle()
    }

    /// The retention step (tests step it; it runs by itself in `build`).
    pub fn retention(&self) -> Retention {
        self.retention.clone()
    }

    /// The reconciler, when a source is configured (tests step it).
    pub fn reconciler(&self) -> Option<Reconciler> {
        self.reconciler.clone()
    }

    /// The outbox relay, when a dispatcher is configured.
    pub fn relay(&self) -> Option<Relay> {
        self.relay.clone()
    }

    /// Serves until SIGTERM/SIGINT (or [`StopHandle::stop`]), lets in-flight
    /// requests finish, commits what the writers hold, then stops the relay.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let stopped = self.served.until_stopped().await?;
        stopped.finish(self.writers.shutdown()).await;
        Ok(())
    }
}
