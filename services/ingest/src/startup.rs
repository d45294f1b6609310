//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use actix_web::web;
use rave_service::served::Served;
use rave_service::served::StopHandle;

use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::sources::Sources;
use crate::spool::{Replayer, Spool};
use crate::store_client::StoreClient;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

#[derive(Debug)]
pub struct Application {
    served: Served,
    replayer: Option<Replayer>,
    reloader: Reloader,
}

impl Application {
    /// Builds the verifiers and binds the listener. ingest holds no
    /// database credentials: it only talks to dedup-store.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, true).await
    }

    /// As [`Application::build`]; `background = false` leaves the spool's
    /// replay to the caller ([`Application::replayer`]).
    pub async fn build_with(settings: Settings, background: bool) -> anyhow::Result<Self> {
        let sources = Sources::from_settings(&settings)?;
        if sources.names().next().is_none() {
            tracing::warn!("no webhook sources configured: every delivery will get 404");
        }
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(StoreClient::new(
            &settings.store,
            metrics.store_batch_size.clone(),
        )?);
        metrics.initialise_sources(sources.names());
        let spool = match &settings.spool.dir {
            Some(dir) => Some(Arc::new(
                Spool::open_any(&Spool::slots(dir), settings.spool.max_bytes)
                    .with_context(|| format!("opening the spool in {}", dir.display()))?,
            )),
            None => None,
        };
        let replayer = spool.as_ref().map(|spool| Replayer {
            spool: spool.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            // The other replicas' spools, and this replica's other slot: what
            // a predecessor left when it handed over (a restart).
            peers: settings
                .spool
                .peer_dirs
                .iter()
                .chain(settings.spool.dir.iter())
                .flat_map(|dir| Spool::slots(dir))
                .filter(|dir| dir != spool.dir())
                .collect(),
        });
        if let Some(spool) = &spool {
            let depth = spool.depth();
            if depth.events > 0 {
                tracing::warn!(
                    waiting = depth.events,
                    "spool: events from before the restart will be replayed"
                );
            }
        }
        let guard = Arc::new(crate::guard::Guard::new(&settings.limits));
        let state = web::Data::new(AppState {
            sources: rave_service::reload::Live::new(sources),
            store,
            metrics,
            limits: settings.limits.clone(),
            spool,
            guard: guard.clone(),
        });
        let reload_state = state.clone();
        let listener = rave_service::http::bind(&settings.server)?;
        // Senders' trace context is not trusted (docs/security.md).
        let mut served = Served::with_inbound_trace(
            listener,
            &settings.server,
            state,
            routes::configure,
            rave_service::http::InboundTrace::Untrusted,
        )?;
        served.spawn(move |mut stop| async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => guard.forget_idle(),
                    _ = rave_service::served::stopping(&mut stop) => return,
                }
            }
        });
        if let (Some(replayer), true) = (&replayer, background) {
            let replayer = replayer.clone();
            let interval = Duration::from_millis(settings.spool.replay_interval_ms);
            served.spawn(move |stop| replayer.run(interval, stop));
        }
        Ok(Self {
            served,
            replayer,
            reloader: Reloader {
                state: reload_state,
            },
        })
    }

    /// What applies reloaded settings; tests call it directly.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Reloads sources and secrets on SIGHUP, from the `--config` file and
    /// the environment the process started with.
    pub fn reload_on_hangup(&mut self) {
        let reloader = self.reloader.clone();
        let metrics = reloader.state.metrics.reload.clone();
        rave_service::reload::reload_on_hangup::<Settings>(
            &mut self.served,
            metrics,
            Box::new(move |settings| reloader.apply(&settings)),
        );
    }

    /// The spool's replayer, for tests that drive it step by step (built
    /// with `background = false`).
    pub fn replayer(&self) -> Option<Replayer> {
        self.replayer.clone()
    }

    pub fn port(&self) -> u16 {
        self.served.port()
    }

    pub fn handle(&self) -> StopHandle {
        self.served.handle()
    }

    /// Serves until SIGTERM/SIGINT, letting in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.served.until_stopped().await?.stop_background().await;
        Ok(())
    }
}
