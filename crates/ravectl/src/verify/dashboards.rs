//! Suite 10, dashboards: every panel's Prometheus query returns data.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::Value;

use super::{Ctx, eventually};

/// Every panel query, as Grafana would send it, returns data.
pub(super) async fn dashboards(ctx: &Ctx) -> anyhow::Result<String> {
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    let mut queries = Vec::new();
    for (name, json) in crate::grafana::DASHBOARDS {
        let dashboard: Value = serde_json::from_str(json)?;
        for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                // Prometheus queries only: a trace search needs a task id.
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let expr = expr
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
