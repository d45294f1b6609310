//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use rave_service::batch::{BatchMetrics, Batcher, Handler, Writers};
use rave_service::served::Served;
use rave_service::served::StopHandle;

use crate::clock::{Clock, SystemClock};
use crate::maintenance::Maintenance;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::routes::{self, AppState, Completer};
use crate::settings::Settings;
use crate::store::{self, Completion};
use crate::waker::{self, Waker};

#[derive(Debug)]
pub struct Application {
    served: Served,
    writers: Writers,
    maintenance: Maintenance,
    reloader: Reloader,
}

impl Application {
    /// The service as deployed: system clock, background loops running.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Arc::new(SystemClock), true).await
    }

    /// With an injected clock; `background: false` leaves lease expiry,
    /// pruning and due-task polling to the caller (tests drive them step by
    /// step through [`Application::maintenance`]).
    pub async fn build_with(
        settings: Settings,
        clock: Arc<dyn Clock>,
        background: bool,
    ) -> anyhow::Result<Self> {
        let live = crate::reload::live_settings(&settings, &[])?;
        if live.agents.is_empty() {
            tracing::warn!("no agents configured: every claim will get 401");
        }
        let pool = rave_pg::pool(&settings.database, "task-dispatcher")?;
        store::migrate(&pool).await?;
        let metrics = Arc::new(Metrics::new());
        metrics.initialise_kinds(live.kinds.iter().map(String::as_str));
        let waker = Arc::new(Waker::default());

        let completer_pool = pool.clone();
        let handler: Handler<Completion, Result<store::Finished, store::Refusal>> =
            Arc::new(move |items| {
                let pool = completer_pool.clone();
                Box::pin(async move { store::complete_isolated(&pool, &items).await })
            });
        let (completer, writers): (Completer, Writers) = Batcher::start_sized(
            &settings.completions,
            handler,
            BatchMetrics {
                batch_size: Some(metrics.completion_batch_size.clone()),
                in_flight: None,
            },
            |c: &Completion| c.bytes,
        );

        let maintenance = Maintenance {
            pool: pool.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            waker: waker.clone(),
            settings: settings.maintenance.clone(),
        };
        let listener = rave_service::http::bind(&settings.server)?;
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            clock: clock.clone(),
            metrics,
            waker: waker.clone(),
            completer,
            live: rave_service::reload::Live::new(live),
            claim: settings.claim.clone(),
            retry: settings.retry.clone(),
            limits: settings.limits.clone(),
            gauges_counted_at: tokio::sync::Mutex::new(None),
            gauges_max_age: std::time::Duration::from_millis(
                settings.maintenance.gauges_max_age_ms,
            ),
            agent_limit: rave_service::limit::KeyedLimit::new(settings.limits.agent_requests),
            events_store: crate::replay::client::EventsStore::new(&settings.events_store)?
                .map(Arc::new),
            replay: settings.replay.clone(),
        });
        let reloader = Reloader {
            state: state.clone(),
        };
        let lost = state.metrics.listen_lost.clone();
        let mut served = Served::new(listener, &settings.server, state, routes::configure)?;
        let (mut draining, closing) = (served.draining(), waker.clone());
        tokio::spawn(async move {
            rave_service::served::stopping(&mut draining).await;
            closing.close();
        });
        let (database, listen_waker) = (settings.database.clone(), waker.clone());
        let probe = waker::Probe {
            interval: Duration::from_millis(settings.claim.listen_probe_interval_ms),
            timeout: Duration::from_millis(settings.claim.listen_probe_timeout_ms),
        };
        served.spawn(move |stop| waker::listen(database, probe, listen_waker, lost, stop));
        if background {
            let steps = maintenance.clone();
            served.spawn(move |stop| steps.run(stop));
            let interval = Duration::from_millis(settings.claim.poll_interval_ms);
            served.spawn(move |stop| waker::poll(pool, clock, waker, interval, stop));
        }
        Ok(Self {
            served,
            writers,
            maintenance,
            reloader,
        })
    }

    /// What applies reloaded settings; tests call it directly.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Reloads routes, agents and tokens on SIGHUP, from the `--config`
    /// file and the environment the process started with.
    pub fn reload_on_hangup(&mut self) {
        let reloader = self.reloader.clone();
        let metrics = reloader.state.metrics.reload.clone();
        rave_service::reload::reload_on_hangup::<Settings>(
            &mut self.served,
            metrics,
            Box::new(move |settings| reloader.apply(&settings)),
        );
    }

    pub fn port(&self) -> u16 {
        self.served.port()
    }

    pub fn handle(&self) -> StopHandle {
        self.served.handle()
    }

    /// Lease expiry and pruning, one step at a time.
    pub fn maintenance(&self) -> Maintenance {
        self.maintenance.clone()
    }

    /// Serves until SIGTERM/SIGINT, lets in-flight requests finish, commits
    /// queued completions, then stops the background loops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let stopped = self.served.until_stopped().await?;
        stopped.finish(self.writers.shutdown()).await;
        Ok(())
    }
}
