//! `stack.json`: what `ravectl up` started, for `ravectl send` and tests.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// RAVE's own services. Each runs as one component named after it, or as
/// replicas `ingest@1`, `ingest@2`, ...
pub const RAVE_SERVICES: [&str; 4] = ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"];

/// The service a component runs: `ingest` for `ingest` and `ingest@2`.
pub fn service_of(component: &str) -> &str {
    component.split('@').next().unwrap_or(component)
}

/// Whether a component is one of RAVE's services or a replica of one.
pub fn is_rave_service(component: &str) -> bool {
    RAVE_SERVICES.contains(&service_of(component))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StackFile {
    /// nginx, HTTPS: where senders and agents come in.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The public URL's self-signed certificate (`curl --cacert`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    pub ingest_url: String,
    pub store_url: String,
    pub dispatcher_url: String,
    #[serde(default)]
    pub reporter_url: Option<String>,
    #[serde(default)]
    pub pushgateway_url: Option<String>,
    #[serde(default)]
    pub prometheus_url: Option<String>,
    #[serde(default)]
    pub alertmanager_url: Option<String>,
    /// The local stack's alert inbox (logs/alerts.jsonl).
    #[serde(default)]
    pub alert_inbox_log: Option<PathBuf>,
    /// Where the services and agents export spans (OTLP/HTTP).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The local stack's span log (`ravectl trace`).
    #[serde(default)]
    pub trace_dir: Option<PathBuf>,
    /// A NixOS host's Grafana Tempo (`ravectl trace` asks it).
    #[serde(default)]
    pub tempo_url: Option<String>,
    pub postgres: String,
    pub secrets_dir: PathBuf,
    /// `ravectl up` itself.
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// Every component started: name → (pid, port).
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, (u32, u16)>,
    /// Every replica's URL, by RAVE service (`*_url` name replica 1).
    #[serde(default)]
    pub replicas: std::collections::BTreeMap<String, Vec<String>>,
    /// A NixOS host's services: name → (systemd unit, port); their pids come
    /// from systemd when `verify` runs.
    #[serde(default)]
    pub systemd_units: std::collections::BTreeMap<String, (String, u16)>,
    /// Secret files by name where they are not in `secrets_dir` (a NixOS host).
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, PathBuf>,
    /// nginx serves the operators' API too (`up --operator-api`).
    #[serde(default)]
    pub operator_api: bool,
}

impl StackFile {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("stack.json")
    }

    /// Every replica's URL of a RAVE service (one, on a stack without
    /// replicas).
    pub fn service_urls(&self, service: &str) -> Vec<String> {
        if let Some(urls) = self.replicas.get(service) {
            return urls.clone();
        }
        match service {
            "ingest" => vec![self.ingest_url.clone()],
            "dedup-store" => vec![self.store_url.clone()],
            "task-dispatcher" => vec![self.dispatcher_url.clone()],
            "agent-reporter" => self.reporter_url.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// A secret by name: from `secrets` (a NixOS host) or `secrets_dir`.
    pub fn secret(&self, name: &str) -> anyhow::Result<String> {
        let path = match self.secrets.get(name) {
            Some(path) => path.clone(),
            None => self.secrets_dir.join(name),
        };
        Ok(std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("secret {name} ({}): {e}", path.display()))?
            .trim()
            .to_owned())
    }

    /// Replaces the file atomically: readers see the old or the new one.
    pub fn write(&self, state_dir: &Path) -> anyhow::Result<()> {
        let tmp = state_dir.join("stack.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, Self::path(state_dir))?;
        Ok(())
    }

    pub fn read(state_dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(state_dir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}; is the stack up (ravectl up)?",
                path.display()
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }
}
