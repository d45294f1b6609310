//! `ravectl events erase`: delete events for good, with an audit record, in
//! dedup-store and (through its relay) the tasks' copies in task-dispatcher.
//! A dry run unless `--yes`.

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::cli::EraseArgs;
use crate::stack::StackFile;

pub async fn erase(args: EraseArgs) -> anyhow::Result<i32> {
    let stack = StackFile::read(&args.state_dir)?;
    let token = stack.secret("operator.token")?;
    let requested_by = match args.requested_by.clone() {
        Some(who) => who,
        None => std::env::var("USER").unwrap_or_else(|_| "ravectl".to_owned()),
    };
    let mut request = json!({
        "source": args.source,
        "reason": args.reason,
        "requested_by": requested_by,
        "dry_run": !args.yes,
    });
    for (key, value) in [
        ("event_uuid", &args.delivery),
        ("event_type", &args.event_type),
        ("stored_after", &args.stored_after),
        ("stored_before", &args.stored_before),
        ("request_id", &args.request_id),
    ] {
        if let Some(value) = value {
            request[key] = json!(value);
        }
    }
    if let Some(limit) = args.limit {
        request["limit"] = json!(limit);
    }
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events/erase", stack.store_url);
    loop {
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .json(&request)
            .send()
            .await
            .with_context(|| format!("dedup-store at {} (is the stack up?)", stack.store_url))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            println!(
                "dedup-store refused ({status}): {}",
                body["error"]["message"].as_str().unwrap_or("no message")
            );
            return Ok(1);
        }
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let more = body["more"].as_bool().unwrap_or(false);
        if !args.yes {
            println!(
                "dry run: {} event(s) would be erased{}",
                events.len(),
                if more {
                    " (and more: narrow the filter, or erase in rounds)"
                } else {
                    ""
                }
            );
            print_events(&events);
            println!("run again with --yes to erase them");
            return Ok(0);
        }
        // Rounds of one request id: each answer lists all it erased so far.
        request["request_id"] = body["request_id"].clone();
        if more {
            continue;
        }
        println!(
            "erased {} event(s) (request {}); task payloads in task-dispatcher: {}",
            events.len(),
            body["request_id"].as_str().unwrap_or("?"),
            body["task_payloads"].as_str().unwrap_or("?")
        );
        print_events(&events);
        if body["task_payloads"] == "pending" {
            println!(
                "dedup-store's relay keeps asking task-dispatcher to erase the payloads (dedup_erasures_unforwarded)"
            );
        }
        return Ok(0);
    }
}

fn print_events(events: &[Value]) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    for e in events {
        println!(
            "  {}/{}  {}  task {}  stored {}",
            text(&e["source"]),
            text(&e["event_uuid"]),
            text(&e["event_type"]),
            text(&e["task_id"]),
            text(&e["stored_at"])
        );
    }
}
