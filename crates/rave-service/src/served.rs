//! A running service: its HTTP server and the background tasks that share
//! its life (relays, pushers, maintenance), stopped together, and all of it
//! within `server.shutdown_timeout_secs` of the stop signal.

use std::future::Future;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::InboundTrace;
use crate::settings::ServerSettings;

pub struct Served {
    port: u16,
    server: Server,
    handle: StopHandle,
    stop: watch::Sender<bool>,
    shutdown_timeout: Duration,
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

/// Stops a service: it stops accepting, tells whatever waits on the
/// [`Served::draining`] signal (parked long polls answer at once), and lets
/// requests in flight finish.
#[derive(Debug, Clone)]
pub struct StopHandle {
    server: ServerHandle,
    draining: Arc<watch::Sender<bool>>,
    /// When the stop began: the shutdown timeout counts from here.
    started: Arc<OnceLock<Instant>>,
}

impl StopHandle {
    /// The stop, as a future that owns what it needs (it can be spawned).
    pub fn stop(&self, graceful: bool) -> impl Future<Output = ()> + Send + 'static {
        if self.started.get().is_none() {
            crate::systemd::notify("STOPPING=1");
        }
        self.started.get_or_init(Instant::now);
        let _ = self.draining.send(true);
        let server = self.server.clone();
        async move { server.stop(graceful).await }
    }
}

impl Served {
    /// Serves `routes` on `listener` (see [`crate::http::serve`]); SIGTERM
    /// and SIGINT stop it through its [`StopHandle`].
    pub fn new<T: Send + Sync + 'static>(
        listener: TcpListener,
        settings: &ServerSettings,
        state: web::Data<T>,
        routes: fn(&mut web::ServiceConfig),
    ) -> std::io::Result<Self> {
        Self::with_inbound_trace(listener, settings, state, routes, InboundTrace::Trusted)
    }

    /// [`Served::new`], continuing callers' trace context or not.
    pub fn with_inbound_trace<T: Send + Sync + 'static>(
        listener: TcpListener,
        settings: &ServerSettings,
        state: web::Data<T>,
        routes: fn(&mut web::ServiceConfig),
        inbound: InboundTrace,
    ) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let draining = Arc::new(watch::channel(false).0);
        let server = crate::http::serve(
            listener,
            settings,
            state,
            routes,
            inbound,
            draining.subscribe(),
        )?;
        let handle = StopHandle {
            server: server.handle(),
            draining,
            started: Arc::new(OnceLock::new()),
        };
        let on_signal = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = terminated().await {
                tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGKILL only");
                return;
            }
            tracing::info!("stop signal received: draining");
            on_signal.stop(true).await;
        });
        Ok(Self {
            port,
            server,
            handle,
            stop: watch::channel(false).0,
            shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_secs),
            background: Vec::new(),
        })
    }

    /// Runs `task` until the service stops; it is given the stop signal,
    /// sent once the server has stopped and its requests' work is flushed.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push(tokio::spawn(task(self.stop.subscribe())));
    }

    /// True from the moment a stop begins, before requests in flight end:
    /// for requests that would otherwise keep the stop waiting.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.handle.draining.subscribe()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the service gracefully (SIGTERM and SIGINT do the same).
    pub fn handle(&self) -> StopHandle {
        self.handle.clone()
    }

    /// Serves until stopped; in-flight requests finish. The background
    /// tasks keep running: call [`Stopped::finish`] to flush what the
    /// requests left behind and stop them.
    pub async fn until_stopped(self) -> anyhow::Result<Stopped> {
        // Built and listening: whoever restarts replicas in turn may go on.
        crate::systemd::notify("READY=1");
        self.server.await?;
        let started = *self.handle.started.get_or_init(Instant::now);
        Ok(Stopped {
            stop: self.stop,
            background: self.background,
            deadline: started + self.shutdown_timeout,
        })
    }
}

async fn terminated() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// A service whose server has stopped.
#[derive(Debug)]
pub struct Stopped {
    stop: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
    deadline: Instant,
}

impl Stopped {
    /// Signals the background tasks and waits for them to finish.
    pub async fn stop_background(self) {
        self.finish(async {}).await;
    }

    /// Runs `flush` (committing what requests queued), then signals the
    /// background tasks and waits for them, all until the shutdown
    /// deadline; whatever is still running then is abandoned, which is
    /// safe by design: claims and leases run out, spools and outboxes are
    /// replayed by the next process.
    pub async fn finish(self, flush: impl Future<Output = ()>) {
        if tokio::time::timeout_at(self.deadline, flush).await.is_err() {
            tracing::warn!("flushing queued work did not end within the shutdown timeout");
        }
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self
            .background
            .iter()
            .map(JoinHandle::abort_handle)
            .collect();
        let all = futures_util::future::join_all(self.background);
        if tokio::time::timeout_at(self.deadline, all).await.is_err() {
            let left = aborts.iter().filter(|a| !a.is_finished()).count();
            tracing::warn!(
                tasks = left,
                "background tasks did not stop within the shutdown timeout; abandoning them"
            );
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn background_work_that_ignores_the_stop_is_abandoned_at_the_deadline() {
        struct Dropped(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let stuck = tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        let began = Instant::now();
        let stopped = Stopped {
            stop: watch::channel(false).0,
            background: vec![stuck],
            deadline: began + Duration::from_secs(30),
        };
        // A flush that never ends either: both give up at the deadline.
        stopped.finish(std::future::pending::<()>()).await;
        tokio::task::yield_now().await;
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        // On the paused clock: the flush and the tasks shared one deadline.
        assert_eq!(began.elapsed().as_secs(), 30);
    }
}
