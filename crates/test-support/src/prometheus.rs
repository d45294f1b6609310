//! A real Prometheus (Debian's `prometheus`) on a free loopback port with
//! exemplar storage on, scraping what the test configures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::process::Supervised;

#[derive(Debug)]
pub struct Prometheus {
    pub url: String,
    _dir: tempfile::TempDir,
    _process: Supervised,
}

impl Prometheus {
    /// Starts Prometheus with `scrape_configs` (YAML, indented as a list
    /// under `scrape_configs:`), scraping every second.
    pub async fn start(scrape_configs: &str) -> anyhow::Result<Self> {
        let bin = std::env::var_os("RAVE_PROMETHEUS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
        anyhow::ensure!(
            bin.exists(),
            "{} not found (apt-get install prometheus)",
            bin.display()
        );
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nstorage:\n  exemplars:\n    max_exemplars: 10000\nscrape_configs:\n{scrape_configs}"
            ),
        )?;
        let port = crate::free_port();
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--enable-feature=exemplar-storage".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        let process = Supervised::spawn(&bin, &args, &dir.path().join("prometheus.log"))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
                anyhow::bail!("Prometheus did not become ready:\n{log}");
            }
            // Waiting for an external server to start; nothing to drive step by step.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            url,
            _dir: dir,
            _process: process,
        })
    }

    /// Runs `GET path` until `found` accepts the JSON answer or `timeout`
    /// passes (scrapes happen on Prometheus' schedule, not ours).
    pub async fn poll(
        &self,
        path: &str,
        timeout: Duration,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer: serde_json::Value = reqwest::get(format!("{}{path}", self.url))
                .await?
                .json()
                .await?;
            if found(&answer) {
                return Ok(answer);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{path} never matched; last answer: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
