//! Building and running the service: `Application::build` → `port` →
//! `run_until_stopped`.

use actix_web::dev::ServerHandle;
use actix_web::web;
use rave_service::served::Served;

use crate::metrics::Metrics;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::sources::Sources;
use crate::store_client::StoreClient;

#[derive(Debug)]
pub struct Application {
    served: Served,
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
        let metrics = Metrics::new();
        metrics.initialise_sources(sources.names());
        let state = web::Data::new(AppState {
            sources,
            store,
            metrics,
            limits: settings.limits.clone(),
        });
        let listener = rave_service::http::bind(&settings.server)?;
        Ok(Self {
            served: Served::new(listener, &settings.server, state, routes::configure)?,
        })
    }

    pub fn port(&self) -> u16 {
        self.served.port()
    }

    pub fn handle(&self) -> ServerHandle {
        self.served.handle()
    }

    /// Serves until SIGTERM/SIGINT, letting in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.served.until_stopped().await?.stop_background().await;
        Ok(())
    }
}
