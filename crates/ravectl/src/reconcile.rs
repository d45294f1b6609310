//! `ravectl reconcile SOURCE --since 6h [--apply]`: dedup-store lists the
//! sender's delivery log and, with `--apply`, asks the sender to redeliver
//! what RAVE has not stored (docs/deploy.md, "Never miss a delivery").

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::cli::ReconcileArgs;
use crate::stack::StackFile;

pub async fn run(args: ReconcileArgs) -> anyhow::Result<i32> {
    let stack = StackFile::read(&args.state_dir)?;
    let token = stack.secret("operator.token")?;
    // A run pauses between redeliveries (GitLab allows 5 a minute): it can
    // take minutes, so no short timeout.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3600))
        .build()?;
    let url = format!("{}/v1/reconcile/{}", stack.store_url, args.source);
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({ "since_secs": args.since, "dry_run": !args.apply }))
        .send()
        .await
        .with_context(|| format!("dedup-store at {} (is the stack up?)", stack.store_url))?;
    let status = response.status().as_u16();
    let report: Value = response.json().await.unwrap_or(Value::Null);
    if status != 200 {
        println!(
            "dedup-store refused ({status}): {}",
            report["error"]["message"].as_str().unwrap_or("no message")
        );
        return Ok(1);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    let ended_well = report["result"] == "ok" && report["failed"].as_u64() == Some(0);
    Ok(if ended_well { 0 } else { 1 })
}

/// The report for people: one line per missing delivery, then the counts.
pub fn table(report: &Value) -> String {
    let mut out = String::new();
    let n = |key: &str| report[key].as_u64().unwrap_or(0);
    let missing = report["missing"].as_array().cloned().unwrap_or_default();
    if !missing.is_empty() {
        out.push_str(&format!(
            "{:<38} {:<14} {:<20} {:>6}  {}\n",
            "DELIVERY", "SENDER'S ID", "EVENT", "STATUS", "ACTION"
        ));
    }
    for m in &missing {
        out.push_str(&format!(
            "{:<38} {:<14} {:<20} {:>6}  {}{}\n",
            m["event_uuid"].as_str().unwrap_or("?"),
            m["delivery_id"].as_str().unwrap_or("?"),
            m["event_type"].as_str().unwrap_or("?"),
            m["status_code"],
            m["action"].as_str().unwrap_or("?").replace('_', " "),
            m["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
        ));
    }
    out.push_str(&format!(
        "{} ({}){}: {} deliveries listed in {} page(s), {} events, {} stored, {} missing, {} redelivered, {} failed, {} too young to judge; {} earlier requests not recovered\n",
        report["source"].as_str().unwrap_or("?"),
        report["provider"].as_str().unwrap_or("?"),
        if report["dry_run"] == true { ", dry run" } else { "" },
        n("listed"),
        n("pages"),
        n("events"),
        n("stored"),
        missing.len(),
        n("redelivered"),
        n("failed"),
        n("too_young"),
        n("unrecovered"),
    ));
    if report["truncated"] == true {
        out.push_str("the log has more than reconcile.max_pages pages: the oldest deliveries were not read\n");
    }
    if report["dry_run"] == true && !missing.is_empty() {
        out.push_str("dry run: nothing was asked; run again with --apply\n");
    }
    if report["result"] != "ok" {
        out.push_str(&format!(
            "the run ended {}: {}\n",
            report["result"].as_str().unwrap_or("?"),
            report["error"]
                .as_str()
                .unwrap_or("another run holds this source")
        ));
    }
    out
}
