//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use rave_service::batch::Writers;

use crate::store;

pub struct Application {
    port: u16,
    server: Server,
    writers: Writers,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to PostgreSQL, applies migrations, starts the group-commit
    /// writers and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = rave_pg::pool(&settings.database, "dedup-store")?;
        store::migrate(&pool).await?;
        let metrics = Arc::new(Metrics::new());
        let (committer, writers) =
            store::start_group_commit(pool.clone(), &settings.group_commit, metrics.clone());
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
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully (tests; SIGTERM does the same).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or [`ServerHandle::stop`]), lets in-flight
    /// requests finish, then stops the writers.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        self.writers.shutdown().await;
        Ok(())
    }
}
