//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use rave_service::batch::Writers;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::store;

pub struct Application {
    port: u16,
    server: Server,
    writers: Writers,
    relay: Option<Relay>,
    relay_task: Option<JoinHandle<()>>,
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
        if relay.is_none() {
            tracing::warn!("relay.dispatcher_url is not set: stored events wait in the outbox");
        }
        let (stop, stopped) = watch::channel(false);
        let relay_task = relay
            .clone()
            .filter(|_| background)
            .map(|relay| tokio::spawn(relay.run(committed, stopped)));
        let listener = rave_service::http::bind(&settings.server)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            pool,
            committer,
            metrics,
            limits: settings.limits.clone(),
        });
        Ok(Self {
            port,
            server: rave_service::http::serve(
                listener,
                &settings.server,
                state,
                routes::configure,
            )?,
            writers,
            relay,
            relay_task,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully (tests; SIGTERM does the same).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The outbox relay, when a dispatcher is configured.
    pub fn relay(&self) -> Option<Relay> {
        self.relay.clone()
    }

    /// Serves until SIGTERM/SIGINT (or [`ServerHandle::stop`]), lets in-flight
    /// requests finish, then stops the writers and the relay.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        self.writers.shutdown().await;
        let _ = self.stop.send(true);
        if let Some(task) = self.relay_task {
            let _ = task.await;
        }
        Ok(())
    }
}
