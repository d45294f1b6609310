//! What a reload changes in ingest: its sources, with their secrets and
//! tokens (rotation: add the new secret, reload, let senders switch, remove
//! the old one, reload). Every other setting — limits, the store, the
//! spool, the listener — applies at the next restart.

use std::collections::BTreeSet;

use actix_web::web;

use crate::routes::AppState;
use crate::settings::Settings;
use crate::sources::Sources;

#[derive(Debug, Clone)]
pub struct Reloader {
    pub(crate) state: web::Data<AppState>,
}

impl Reloader {
    /// The service's reload metrics, which its SIGHUP handler records.
    pub fn metrics(&self) -> rave_service::reload::ReloadMetrics {
        self.state.metrics.reload.clone()
    }

    /// Builds every source from `settings` and swaps them in together, or
    /// refuses them all (a source whose secret does not parse refuses the
    /// reload: the running sources stay).
    pub fn apply(&self, settings: &Settings) -> anyhow::Result<String> {
        let sources = Sources::from_settings(settings)?;
        let before: BTreeSet<String> = self
            .state
            .sources
            .current()
            .names()
            .map(str::to_owned)
            .collect();
        let after: BTreeSet<String> = sources.names().map(str::to_owned).collect();
        self.state.metrics.initialise_sources(sources.names());
        self.state.sources.replace(sources);
        let list = |names: Vec<&str>| match names.join(", ") {
            none if none.is_empty() => "none".to_owned(),
            some => some,
        };
        Ok(format!(
            "{} sources with their secrets (added: {}; removed: {})",
            after.len(),
            list(after.difference(&before).map(String::as_str).collect()),
            list(before.difference(&after).map(String::as_str).collect()),
        ))
    }
}
