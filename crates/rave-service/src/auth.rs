//! Bearer tokens stored only as SHA-256 digests and compared in constant
//! time: agents (task-dispatcher and agent-reporter accept the same ones),
//! operators, and service-to-service callers.

use std::path::Path;

use actix_web::HttpRequest;
use ring::digest;
use serde::Deserialize;

use crate::crypto::constant_time_eq;
use crate::ids::{AgentId, TaskKind};
use crate::settings::SettingsError;

/// An agent allowed to work on tasks of `kinds`, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    pub name: String,
    /// SHA-256 of the agent's bearer token, lower-case hex.
    pub token_sha256: String,
    pub kinds: Vec<String>,
}

/// An `agents_file`: a TOML file with an `agents = [...]` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    #[serde(default)]
    pub agents: Vec<AgentSettings>,
}

/// SHA-256 of a token. Tokens are random and long, so a fast hash is enough.
pub fn token_digest(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

pub fn parse_digest(hex_digest: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_digest).map_err(|_| "a token digest must be hex".to_owned())?;
    bytes
        .try_into()
        .map_err(|_| "a token digest must be 64 hex characters (SHA-256)".to_owned())
}

/// The bearer token of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A set of token digests; `allows` checks all of them, whatever matches.
#[derive(Debug, Clone, Default)]
pub struct TokenSet(Vec<[u8; 32]>);

impl TokenSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn from_hex(digests: &[String]) -> Result<Self, String> {
        digests
            .iter()
            .map(|d| parse_digest(d))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Adds tokens given in clear (from secret files); only digests are kept.
    pub fn with_tokens<'a>(mut self, tokens: impl IntoIterator<Item = &'a str>) -> Self {
        self.0.extend(tokens.into_iter().map(token_digest));
        self
    }

    pub fn allows(&self, token: &str) -> bool {
        let presented = token_digest(token);
        self.0
            .iter()
            .fold(false, |found, d| constant_time_eq(&presented, d) | found)
    }
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: AgentId,
    pub kinds: Vec<TaskKind>,
    digest: [u8; 32],
}

/// Every configured agent.
#[derive(Debug, Clone, Default)]
pub struct Agents(Vec<Agent>);

impl Agents {
    /// The agents configured inline plus those in `agents_file`.
    pub fn load(
        inline: &[AgentSettings],
        agents_file: Option<&Path>,
    ) -> Result<Self, SettingsError> {
        let mut list = inline.to_vec();
        if let Some(path) = agents_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                SettingsError::invalid(
                    "agents_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let file: AgentsFile = toml::from_str(&text).map_err(|e| {
                SettingsError::invalid("agents_file", format!("{}: {e}", path.display()))
            })?;
            list.extend(file.agents);
        }
        let mut agents = Vec::with_capacity(list.len());
        for (i, agent) in list.into_iter().enumerate() {
            let key = format!("agents[{i}]");
            let id = AgentId::parse(agent.name)
                .map_err(|e| SettingsError::invalid(format!("{key}.name"), e))?;
            if agents.iter().any(|a: &Agent| a.id == id) {
                return Err(SettingsError::invalid(
                    format!("{key}.name"),
                    format!("{id} is configured twice"),
                ));
            }
            let kinds = agent
                .kinds
                .into_iter()
                .map(TaskKind::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SettingsError::invalid(format!("{key}.kinds"), e))?;
            if kinds.is_empty() {
                return Err(SettingsError::invalid(
                    format!("{key}.kinds"),
                    "an agent needs at least one kind",
                ));
            }
            let digest = parse_digest(&agent.token_sha256)
                .map_err(|e| SettingsError::invalid(format!("{key}.token_sha256"), e))?;
            agents.push(Agent { id, kinds, digest });
        }
        Ok(Self(agents))
    }

    /// The agent holding `token`; every digest is compared, whatever matches.
    pub fn authenticate(&self, token: &str) -> Option<&Agent> {
        let presented = token_digest(token);
        self.0.iter().fold(None, |found, a| {
            if constant_time_eq(&presented, &a.digest) {
                Some(a)
            } else {
                found
            }
        })
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_set_allows_exactly_its_tokens() {
        let set = TokenSet::from_hex(&[
            hex::encode(token_digest("op-1")),
            hex::encode(token_digest("op-2")),
        ])
        .unwrap();
        assert!(set.allows("op-1"));
        assert!(set.allows("op-2"));
        assert!(!set.allows("op-3"));
        assert!(!TokenSet::default().allows(""));
    }

    #[test]
    fn tokens_given_in_clear_join_the_digests() {
        let set = TokenSet::from_hex(&[hex::encode(token_digest("op-1"))])
            .unwrap()
            .with_tokens(["op-2"]);
        assert!(set.allows("op-1"));
        assert!(set.allows("op-2"));
        assert!(!set.allows("op-3"));
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        assert!(parse_digest("abc").is_err());
        assert!(parse_digest(&"zz".repeat(32)).is_err());
        assert!(parse_digest(&"ab".repeat(32)).is_ok());
    }
}
