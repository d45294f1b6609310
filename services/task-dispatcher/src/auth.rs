//! Who may call what: agents, operators and dedup-store's relay, by bearer
//! token (see [`rave_service::auth`]).

pub use rave_service::auth::*;

use rave_service::settings::SettingsError;

use crate::settings::Settings;

/// The dispatcher's agents: inline `[[agents]]` plus `agents_file`.
pub fn agents(settings: &Settings) -> Result<Agents, SettingsError> {
    Agents::load(&settings.agents, settings.agents_file.as_deref())
}
