//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use rave_service::auth::Agents;
use rave_service::clock::{Clock, SystemClock};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::push::Pusher;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::store;

pub struct Application {
    port: u16,
    server: Server,
    pusher: Option<Pusher>,
    pusher_task: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
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
        let pusher = Pusher::new(
            pool.clone(),
            &settings.pushgateway,
            metrics.clone(),
            clock.clone(),
        )?;
        if pusher.is_none() {
            tracing::warn!("pushgateway.url is not set: reports are aggregated but not pushed");
        }
        let (stop, stopped) = watch::channel(false);
        let pusher_task = pusher
            .clone()
            .filter(|_| background)
            .map(|p| tokio::spawn(p.run(reported.clone(), stopped)));
        let listener = rave_service::http::bind(&settings.server)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            pool,
            agents,
            metrics,
            limits: settings.limits.clone(),
            clock,
            reported,
        });
        Ok(Self {
            port,
            server: rave_service::http::serve(
                listener,
                &settings.server,
                state,
                routes::configure,
            )?,
            pusher,
            pusher_task,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn pusher(&self) -> Option<Pusher> {
        self.pusher.clone()
    }

    /// Serves until SIGTERM/SIGINT; then pushes once more and stops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        let _ = self.stop.send(true);
        if let Some(task) = self.pusher_task {
            let _ = task.await;
        }
        if let Some(pusher) = self.pusher
            && let Err(e) = pusher.push_once().await
        {
            tracing::warn!(error = %format!("{e:#}"), "final push failed; aggregates are kept for the next start");
        }
        Ok(())
    }
}
