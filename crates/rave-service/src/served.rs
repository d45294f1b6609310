//! A running service: its HTTP server and the background tasks that share
//! its life (relays, pushers, maintenance), stopped together.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settings::ServerSettings;

pub struct Served {
    port: u16,
    server: Server,
    stop: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("port", &self.port)
            .field("background", &self.background.len())
            .finish_non_exhaustive()
    }
}

/// Resolves once the service is stopping.
pub async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Served {
    /// Serves `routes` on `listener` (see [`crate::http::serve`]).
    pub fn new<T: Send + Sync + 'static>(
        listener: TcpListener,
        settings: &ServerSettings,
        state: web::Data<T>,
        routes: fn(&mut web::ServiceConfig),
    ) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        Ok(Self {
            port,
            server: crate::http::serve(listener, settings, state, routes)?,
            stop: watch::channel(false).0,
            background: Vec::new(),
        })
    }

    /// Runs `task` until the service stops; it is given the stop signal.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push(tokio::spawn(task(self.stop.subscribe())));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully (SIGTERM and SIGINT do the same).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped; in-flight requests finish. The background
    /// tasks keep running: call [`Stopped::stop_background`] when the
    /// service has flushed what its requests left behind.
    pub async fn until_stopped(self) -> anyhow::Result<Stopped> {
        self.server.await?;
        Ok(Stopped {
            stop: self.stop,
            background: self.background,
        })
    }
}

/// A service whose server has stopped.
#[derive(Debug)]
pub struct Stopped {
    stop: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

impl Stopped {
    /// Signals the background tasks and waits for them to finish.
    pub async fn stop_background(self) {
        let _ = self.stop.send(true);
        for task in self.background {
            let _ = task.await;
        }
    }
}
