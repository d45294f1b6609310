//! Suite 9, alerts: the alerting rules are loaded and healthy, and nothing fires.

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use super::Ctx;

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
