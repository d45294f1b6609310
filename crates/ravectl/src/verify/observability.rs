//! Observability: every target scraped, the alerting rules loaded and
//! quiet, every dashboard panel returning data.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

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

/// The alerting rules are loaded and healthy, and nothing fires.
pub(super) async fn alerts(ctx: &Ctx) -> anyhow::Result<String> {
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    let rules = ctx
        .get_json(&format!("{prometheus}/api/v1/rules?type=alert"))
        .await?;
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let all: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    ensure!(!all.is_empty(), "no alerting rules are loaded");
    if let Some(bad) = all
        .iter()
        .find(|r| r["health"] != "ok" && r["health"] != "unknown")
    {
        bail!("rule {} is unhealthy: {}", bad["name"], bad["lastError"]);
    }
    let alerts = ctx.get_json(&format!("{prometheus}/api/v1/alerts")).await?;
    let firing: Vec<String> = alerts["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    ensure!(
        firing.is_empty(),
        "firing on a healthy stack: {}",
        firing.join(", ")
    );
    Ok(format!(
        "{} alerting rules in {} groups loaded; none firing",
        all.len(),
        groups.len()
    ))
}

/// The three Grafana dashboards, as shipped.
const DASHBOARDS: [(&str, &str); 3] = [
    (
        "project-health",
        include_str!("../../../../grafana/dashboards/project-health.json"),
    ),
    (
        "agent-performance",
        include_str!("../../../../grafana/dashboards/agent-performance.json"),
    ),
    (
        "system-health",
        include_str!("../../../../grafana/dashboards/system-health.json"),
    ),
];

/// Every panel query, as Grafana would send it, returns data.
pub(super) async fn dashboards(ctx: &Ctx) -> anyhow::Result<String> {
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    let mut queries = Vec::new();
    for (name, json) in DASHBOARDS {
        let dashboard: Value = serde_json::from_str(json)?;
        for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("$__rate_interval", "1m")
                    .replace("\"$job\"", "\".+\"")
                    .replace("\"$instance\"", "\".+\"");
                queries.push((
                    format!("{name}/{}", panel["title"].as_str().unwrap_or_default()),
                    expr,
                ));
            }
        }
    }
    eventually(Duration::from_secs(90), || async {
        for (panel, expr) in &queries {
            let url = reqwest::Url::parse_with_params(
                &format!("{prometheus}/api/v1/query"),
                &[("query", expr)],
            )?;
            let answer: Value = ctx.http.get(url).send().await?.json().await?;
            ensure!(
                answer["status"] == "success",
                "{panel}: {}",
                answer["error"]
            );
            ensure!(
                answer["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()),
                "{panel}: no data for {expr}"
            );
        }
        Ok(())
    })
    .await?;
    Ok(format!(
        "all {} panel queries of 3 dashboards return data",
        queries.len()
    ))
}
