//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;

use crate::metrics::Metrics;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::sources::Sources;
use crate::store_client::StoreClient;

pub struct Application {
    port: u16,
    server: Server,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds the verifiers and binds the listener. ingest holds no
    /// database credentials: it only talks to dedup-store.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let sources = Sources::from_settings(&settings)?;
        if sources.names().next().is_none() {
            tracing::warn!("no webhook sources configured: every delivery will get 404");
        }
        let store = StoreClient::new(
            &settings.store.url,
            settings.store.timeout(),
            settings.store.retry_after_secs,
        )?;
        let listener = rave_service::http::bind(&settings.server)?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new();
        metrics.initialise_sources(sources.names());
        let state = web::Data::new(AppState {
            sources,
            store,
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
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT, letting in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        Ok(())
    }
}
