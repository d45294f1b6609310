//! Settings reloaded without a restart: on SIGHUP (`systemctl reload`,
//! `ravectl reload`) a service reads its settings again — the same file and
//! environment it started with — and swaps in the parts it can change live.
//! A new configuration that does not load or validate is refused whole: the
//! old one stays, the reason is logged and counted.
//!
//! Requests take the live value once, when they start ([`Live::current`]),
//! so a request in flight finishes under the configuration it started with.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::settings::ServiceSettings;

/// A value that a reload replaces whole.
#[derive(Debug)]
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    /// The value now; keep it for the whole request.
    pub fn current(&self) -> Arc<T> {
        // A poisoned lock still holds a whole value: writers only swap Arcs.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `applied` or `refused`.
    pub result: &'static str,
}

/// Every reloading service's reload metrics, registered in its own registry.
#[derive(Debug, Clone, Default)]
pub struct ReloadMetrics {
    pub reloads: Family<ResultLabel, Counter>,
    /// 1 when the last reload was applied (or none was asked for), 0 when
    /// it was refused: the running configuration is not the one on disk.
    pub last_successful: Gauge,
    pub last_success_time: Gauge,
}

impl ReloadMetrics {
    pub fn registered(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "rave_config_reloads",
            "Settings reloads asked for by SIGHUP, by result (applied, refused)",
            metrics.reloads.clone(),
        );
        registry.register(
            "rave_config_last_reload_successful",
            "1 when the last reload was applied or none was asked for, 0 when the last one was refused",
            metrics.last_successful.clone(),
        );
        registry.register(
            "rave_config_last_reload_success_timestamp_seconds",
            "Unix time the running settings were loaded (start or last applied reload)",
            metrics.last_success_time.clone(),
        );
        for result in ["applied", "refused"] {
            metrics.reloads.get_or_create_owned(&ResultLabel { result });
        }
        metrics.succeeded();
        metrics
    }

    fn succeeded(&self) {
        self.last_successful.set(1);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.last_success_time.set(now);
    }

    /// Counts one reload's outcome.
    pub fn record<E>(&self, outcome: &Result<String, E>) {
        let result = if outcome.is_ok() {
            "applied"
        } else {
            "refused"
        };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        match outcome {
            Ok(_) => self.succeeded(),
            Err(_) => {
                self.last_successful.set(0);
            }
        }
    }
}

/// What a service does with newly loaded settings: swap in what can change
/// live and describe it, or refuse them (nothing changed).
pub type Apply<S> = Box<dyn Fn(S) -> anyhow::Result<String> + Send + Sync>;

/// One reload: load `file` (and the environment) as at start, then `apply`.
/// Logged and counted either way.
fn reload_once<S: ServiceSettings>(
    file: Option<&std::path::Path>,
    apply: &Apply<S>,
    metrics: &ReloadMetrics,
) -> Result<String, String> {
    let outcome = crate::settings::load::<S>(file)
        .map_err(|e| e.to_string())
        .and_then(|settings| apply(settings).map_err(|e| format!("{e:#}")));
    metrics.record(&outcome);
    match &outcome {
        Ok(summary) => tracing::info!(%summary, "settings reloaded"),
        Err(reason) => tracing::error!(
            %reason,
            "settings reload refused; the running settings stay"
        ),
    }
    outcome
}

/// Reloads on every SIGHUP while `served` runs, from the `--config` file
/// and the environment the process started with.
pub fn reload_on_hangup<S: ServiceSettings + 'static>(
    served: &mut crate::served::Served,
    metrics: ReloadMetrics,
    apply: Apply<S>,
) {
    let file = crate::cli::config_file();
    served.spawn(move |stop| on_hangup(file, apply, metrics, stop));
}

/// Reloads on every SIGHUP until the service stops.
async fn on_hangup<S: ServiceSettings>(
    file: Option<PathBuf>,
    apply: Apply<S>,
    metrics: ReloadMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP: reloads need a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let _ = reload_once::<S>(file.as_deref(), &apply, &metrics);
            }
            _ = crate::served::stopping(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_taken_before_a_replace_stays_as_it_was() {
        let live = Live::new(1);
        let taken = live.current();
        live.replace(2);
        assert_eq!((*taken, *live.current()), (1, 2));
    }

    #[test]
    fn a_refused_reload_clears_the_success_gauge_and_counts_it() {
        let metrics = ReloadMetrics::registered(&mut Registry::default());
        metrics.record::<()>(&Err(()));
        assert_eq!(metrics.last_successful.get(), 0);
        metrics.record::<()>(&Ok(String::new()));
        assert_eq!(metrics.last_successful.get(), 1);
        let refused = metrics
            .reloads
            .get_or_create(&ResultLabel { result: "refused" })
            .get();
        assert_eq!(refused, 1);
    }
}
