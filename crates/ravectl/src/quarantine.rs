//! `ravectl quarantine`: the events task-dispatcher set aside because they
//! could not become a task, with their reasons; and their retry.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::stack::StackFile;

async fn call(
    state_dir: &Path,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<(u16, Value)> {
    let stack = StackFile::read(state_dir)?;
    let token = stack.secret("operator.token")?;
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", stack.dispatcher_url))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| {
            format!(
                "task-dispatcher at {} (is the stack up?)",
                stack.dispatcher_url
            )
        })?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// One line per record: id, task, source and delivery, attempts, reason.
pub async fn list(state_dir: &Path) -> anyhow::Result<i32> {
    let (status, body) = call(state_dir, reqwest::Method::GET, "/v1/quarantined-events").await?;
    anyhow::ensure!(status == 200, "task-dispatcher answered {status}: {body}");
    let events = body["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        println!("no events in quarantine");
        return Ok(0);
    }
    println!(
        "{:<6} {:<17} {:<28} {:>8}  REASON",
        "ID", "TASK", "SOURCE/DELIVERY", "ATTEMPTS"
    );
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    for e in events {
        println!(
            "{:<6} {:<17} {:<28} {:>8}  {}",
            e["id"],
            text(&e["task_id"]),
            format!("{}/{}", text(&e["source"]), text(&e["event_uuid"])),
            e["attempts"],
            text(&e["reason"])
        );
    }
    Ok(0)
}

/// Exit 0 when the event became a task or an ignore record; 1 with the
/// reason when it is still quarantined.
pub async fn retry(state_dir: &Path, id: i64) -> anyhow::Result<i32> {
    let path = format!("/v1/quarantined-events/{id}/retry");
    let (status, body) = call(state_dir, reqwest::Method::POST, &path).await?;
    match status {
        200 => {
            println!(
                "record {id} taken in: {} task(s) created, {} ignored, {} already there",
                body["created_count"], body["ignored"], body["duplicates"]
            );
            Ok(0)
        }
        _ => {
            println!(
                "record {id} not taken in ({status}): {}",
                body["error"]["message"].as_str().unwrap_or("no message")
            );
            Ok(1)
        }
    }
}
