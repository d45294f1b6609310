//! Each backup run's result as Pushgateway gauges (job `rave_backup`),
//! which the alerts RaveBackupFailed and RaveBackupTooOld read.

use anyhow::Context as _;

use super::Outcome;

/// The Pushgateway group every backup's result is pushed to.
pub const METRICS_JOB: &str = "rave_backup";

/// The Pushgateway exposition of a backup run. A failed run leaves the last
/// success's time and size as they were (only these gauges are replaced).
pub fn exposition(outcome: &Outcome, now: i64) -> String {
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "rave_backup_last_attempt_timestamp_seconds",
        "When the last backup run ended",
        now.to_string(),
    );
    gauge(
        "rave_backup_last_ok",
        "1 if the last backup run succeeded, 0 if it failed",
        u8::from(outcome.ok).to_string(),
    );
    gauge(
        "rave_backup_last_duration_seconds",
        "How long the last backup run took",
        format!("{:.3}", outcome.duration_secs),
    );
    if outcome.ok
        && let Some(newest) = &outcome.newest
    {
        gauge(
            "rave_backup_last_success_timestamp_seconds",
            "When the newest backup in the repository finished",
            newest.stopped.to_string(),
        );
        gauge(
            "rave_backup_last_size_bytes",
            "Database bytes the newest backup covers",
            newest.size.to_string(),
        );
        gauge(
            "rave_backup_last_repository_bytes",
            "Bytes the newest backup added to the repository",
            newest.repo_size.to_string(),
        );
    }
    text
}

/// Pushes a backup run's result to the Pushgateway at `url` (POST: it
/// replaces only the gauges it names, so a failure keeps the last success).
pub async fn push(url: &str, instance: &str, outcome: &Outcome) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let target = format!(
        "{}/metrics/job/{METRICS_JOB}/instance/{instance}",
        url.trim_end_matches('/')
    );
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?
        .post(&target)
        .header("content-type", "text/plain; version=0.0.4")
        .body(exposition(outcome, now))
        .send()
        .await
        .with_context(|| format!("pushing the backup's result to {target}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "the Pushgateway answered {} to the backup's result",
        response.status()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::parse_info;

    const INFO: &str = r#"[{"backup":[
        {"label":"20261202-010000F","type":"full","timestamp":{"start":1764640800,"stop":1764640802},
         "info":{"size":31557280,"delta":100000,"repository":{"size":4204304,"delta":10000}}}]}]"#;

    #[test]
    fn a_failed_backup_pushes_no_success_time_so_the_last_one_stays() {
        let newest = parse_info(INFO).unwrap().pop();
        let failed = Outcome {
            ok: false,
            kind: "incr".into(),
            duration_secs: 1.5,
            newest: newest.clone(),
            error: Some("disk full".into()),
        };
        let text = exposition(&failed, 1764644400);
        assert!(text.contains("rave_backup_last_ok 0"));
        assert!(!text.contains("rave_backup_last_success_timestamp_seconds"));
        let ok = Outcome {
            ok: true,
            error: None,
            ..failed
        };
        let text = exposition(&ok, 1764644400);
        assert!(text.contains("rave_backup_last_success_timestamp_seconds 1764640802\n"));
        assert!(text.contains("rave_backup_last_attempt_timestamp_seconds 1764644400\n"));
    }
}
