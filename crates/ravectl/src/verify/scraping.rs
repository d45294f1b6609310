//! Suite 8, scraping: Prometheus scrapes every target.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, ensure};

use super::{Ctx, eventually};

pub(super) async fn scraping(ctx: &Ctx) -> anyhow::Result<String> {
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    let expected = [
        "prometheus",
        "node",
        "nginx",
        "postgres",
        "pushgateway",
        "ingest",
        "dedup-store",
        "task-dispatcher",
        "agent-reporter",
    ];
    eventually(Duration::from_secs(60), || async {
        let answer = ctx
            .get_json(&format!("{prometheus}/api/v1/query?query=up"))
            .await?;
        // Targets answering, per job: every replica of a RAVE service.
        let mut up: BTreeMap<String, usize> = BTreeMap::new();
        for r in answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let job = r["metric"]["job"].as_str().unwrap_or_default().to_owned();
            let answering = usize::from(r["value"][1].as_str() == Some("1"));
            *up.entry(job).or_default() += answering;
        }
        for job in expected {
            let want = ctx.stack.service_urls(job).len().max(1);
            let got = up.get(job).copied().unwrap_or_default();
            ensure!(got == want, "job {job}: {got} of {want} targets up");
        }
        Ok(())
    })
    .await?;
    let targets: usize = expected
        .iter()
        .map(|job| ctx.stack.service_urls(job).len().max(1))
        .sum();
    Ok(format!(
        "up == 1 for all {} targets of {} jobs",
        targets,
        expected.len()
    ))
}
