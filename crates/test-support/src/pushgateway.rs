//! A real Prometheus Pushgateway (Debian's `prometheus-pushgateway`) on a
//! free loopback port, without persistence, that a test can stop and start
//! again on the same port.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::process::Supervised;

#[derive(Debug)]
pub struct Pushgateway {
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    process: Option<Supervised>,
}

fn binary() -> PathBuf {
    std::env::var_os("RAVE_PUSHGATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus-pushgateway"))
}

impl Pushgateway {
    pub async fn start() -> anyhow::Result<Self> {
        let port = crate::free_port();
        let mut gateway = Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir()?,
            process: None,
        };
        gateway.resume().await?;
        Ok(gateway)
    }

    /// Starts it again on the same port (with nothing stored: no persistence).
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let bin = binary();
        anyhow::ensure!(
            bin.exists(),
            "{} not found (apt-get install prometheus-pushgateway)",
            bin.display()
        );
        let args = vec![
            format!("--web.listen-address=127.0.0.1:{}", self.port),
            "--persistence.file=".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        self.process = Some(Supervised::spawn(
            &bin,
            &args,
            &self.dir.path().join("pushgateway.log"),
        )?);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/-/ready", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the Pushgateway did not become ready on port {}",
                self.port
            );
            // Waiting for an external server to start; nothing to drive step by step.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it; its port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// Its `/metrics` exposition (pushed groups included).
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("the Pushgateway answers")
            .text()
            .await
            .expect("a body")
    }
}

/// The value of the first sample of `name` whose labels include all of
/// `labels` (order-independent), in Prometheus text.
pub fn find_sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_part, value) = if let Some(rest) = rest.strip_prefix('{') {
            let (labels, value) = rest.split_once("} ")?;
            (labels, value)
        } else {
            ("", rest.strip_prefix(' ')?)
        };
        let present = |(k, v): &(&str, &str)| {
            label_part
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        };
        labels
            .iter()
            .all(present)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
