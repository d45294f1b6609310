//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use rave_service::http::TracingLogger;

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
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .configure(routes::configure)
                .default_service(web::to(rave_service::http::not_found))
        })
        .listen(listener)?
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_secs(10));
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Self {
            port,
            server: server.run(),
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
