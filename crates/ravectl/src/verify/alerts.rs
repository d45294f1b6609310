//! Suite 9, alerts: the alerting rules are loaded and healthy, nothing
//! fires, and an alert sent through Alertmanager is delivered.

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
    let delivered = match &ctx.stack.alertmanager_url {
        Some(alertmanager) => delivery(ctx, &prometheus, alertmanager).await?,
        None => "no Alertmanager in this stack".to_owned(),
    };
    Ok(format!(
        "{} alerting rules in {} groups loaded; none firing; {delivered}",
        all.len(),
        groups.len()
    ))
}

/// A webhook notification count of Alertmanager's (`alertmanager_notifications*_total`).
async fn notifications(ctx: &Ctx, alertmanager: &str, name: &str) -> anyhow::Result<f64> {
    let text = ctx
        .http
        .get(format!("{alertmanager}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains("integration=\"webhook\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Prometheus sends to Alertmanager, and an alert posted to it reaches its
/// receivers (and the local stack's inbox) without a failed notification.
async fn delivery(ctx: &Ctx, prometheus: &str, alertmanager: &str) -> anyhow::Result<String> {
    let targets = ctx
        .get_json(&format!("{prometheus}/api/v1/alertmanagers"))
        .await?;
    let active: Vec<&str> = targets["data"]["activeAlertmanagers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["url"].as_str())
        .collect();
    ensure!(
        active.iter().any(|u| u.starts_with(alertmanager)),
        "Prometheus does not send to {alertmanager} (it sends to {active:?})"
    );
    const SENT: &str = "alertmanager_notifications_total";
    const FAILED: &str = "alertmanager_notifications_failed_total";
    let (sent, failed) = (
        notifications(ctx, alertmanager, SENT).await?,
        notifications(ctx, alertmanager, FAILED).await?,
    );
    let now = time::OffsetDateTime::now_utc();
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("a formattable time")
    };
    let alert = serde_json::json!([{
        "labels": {
            "alertname": "RaveVerifyDelivery",
            "severity": "info",
            "service": "observability",
            "verify_run": ctx.run,
        },
        "annotations": { "summary": "ravectl verify checks that alerts are delivered." },
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + time::Duration::minutes(2)),
    }]);
    let answer = ctx
        .http
        .post(format!("{alertmanager}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await?;
    ensure!(
        answer.status().is_success(),
        "Alertmanager refused the test alert: {}",
        answer.status()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let in_inbox = match &ctx.stack.alert_inbox_log {
            Some(log) => std::fs::read_to_string(log).is_ok_and(|t| t.contains(&ctx.run)),
            None => true,
        };
        if notifications(ctx, alertmanager, FAILED).await? > failed {
            bail!("Alertmanager failed to deliver the test alert (see its log)");
        }
        if in_inbox && notifications(ctx, alertmanager, SENT).await? > sent {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the test alert was not delivered within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Ok(match &ctx.stack.alert_inbox_log {
        Some(log) => format!(
            "a test alert was delivered through Alertmanager to {}",
            log.display()
        ),
        None => "a test alert was delivered through Alertmanager".to_owned(),
    })
}
