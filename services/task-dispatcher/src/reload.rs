//! What a reload changes in task-dispatcher: routing rules, agents (inline
//! and `agents_file`) and the operators' and relay's tokens. Every other
//! setting — the database, limits, leases, retries — applies at the next
//! restart. Tasks already created keep the kind, priority and policy they
//! were routed with; only events that arrive afterwards meet the new rules.

use actix_web::web;

use crate::auth::TokenSet;
use crate::routes::{AppState, LiveSettings};
use crate::routing::Router;
use crate::settings::Settings;

/// Builds everything a reload swaps in, or refuses the settings whole.
/// `kinds` are the kinds routed so far: they stay counted.
pub fn live_settings(settings: &Settings, kinds: &[String]) -> anyhow::Result<LiveSettings> {
    let router = Router::from_settings(&settings.routes).map_err(anyhow::Error::msg)?;
    let agents = crate::auth::agents(settings)?;
    let operators = TokenSet::from_hex(&settings.operator_tokens_sha256)
        .map_err(anyhow::Error::msg)?
        .with_tokens(settings.operator_tokens.iter().map(|t| t.expose()));
    let relays = TokenSet::from_hex(&settings.relay_tokens_sha256)
        .map_err(anyhow::Error::msg)?
        .with_tokens(settings.relay_tokens.iter().map(|t| t.expose()));
    let mut all_kinds = kinds.to_vec();
    for kind in router.kinds() {
        let kind = kind.to_string();
        if !all_kinds.contains(&kind) {
            all_kinds.push(kind);
        }
    }
    Ok(LiveSettings {
        router,
        agents,
        operators,
        relays,
        kinds: all_kinds,
    })
}

#[derive(Debug, Clone)]
pub struct Reloader {
    pub(crate) state: web::Data<AppState>,
}

impl Reloader {
    /// Swaps in the routes, agents and tokens of `settings`, or changes
    /// nothing when any of them is invalid.
    pub fn apply(&self, settings: &Settings) -> anyhow::Result<String> {
        let before = self.state.live.current();
        let live = live_settings(settings, &before.kinds)?;
        self.state
            .metrics
            .initialise_kinds(live.kinds.iter().map(String::as_str));
        let summary = format!(
            "{} routing rules, {} agents (before: {} rules, {} agents), operator and relay tokens",
            settings.routes.len(),
            live.agents.len(),
            before.router.len(),
            before.agents.len(),
        );
        self.state.live.replace(live);
        Ok(summary)
    }
}
