//! Operators' event tools (ADR 19), over a running stack's HTTP APIs:
//! - `ravectl events list`: dedup-store's search, as a table or JSON;
//! - `ravectl events show SOURCE DELIVERY`: one event, headers and body;
//! - `ravectl events replay`: task-dispatcher's replays (a dry run unless
//!   `--apply`), continued request by request while more events match;
//! - `ravectl routes diff --config new.toml`: proposed rules against the
//!   live ones, over stored events.

use std::path::PathBuf;

use anyhow::Context as _;
use rave_service::base64::Engine as _;
use serde_json::{Value, json};

use crate::cli::absolute_path;
use crate::stack::StackFile;

/// Where the services are: a local stack's state directory, or (on a
/// NixOS host, or any other) their URLs and an operator token's file.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoint {
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
    /// An operator token's file; with it, the URLs below instead of the
    /// state directory's stack.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[arg(long, default_value = "http://127.0.0.1:3010")]
    pub store_url: String,
    #[arg(long, default_value = "http://127.0.0.1:3020")]
    pub dispatcher_url: String,
}

/// dedup-store's URL, task-dispatcher's, and the operator token.
struct Resolved {
    store_url: String,
    dispatcher_url: String,
    token: String,
}

impl Endpoint {
    fn resolve(&self) -> anyhow::Result<Resolved> {
        if let Some(file) = &self.token_file {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(Resolved {
                store_url: self.store_url.trim_end_matches('/').to_owned(),
                dispatcher_url: self.dispatcher_url.trim_end_matches('/').to_owned(),
                token: token.trim().to_owned(),
            });
        }
        let stack = StackFile::read(&self.state_dir)?;
        Ok(Resolved {
            token: stack.secret("operator.token")?,
            store_url: stack.store_url,
            dispatcher_url: stack.dispatcher_url,
        })
    }
}

/// Which stored events: the search's filter.
#[derive(Debug, Clone, clap::Args)]
pub struct EventFilterArgs {
    /// Only events of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only events of these types (repeat the flag).
    #[arg(long = "type")]
    pub event_types: Vec<String>,
    /// Only these deliveries (their ids, as senders sent them).
    #[arg(long = "delivery")]
    pub deliveries: Vec<String>,
    /// Only events received this far back: `90m`, `24h`, `7d`.
    #[arg(long, value_parser = crate::cli::parse_span)]
    pub since: Option<u64>,
    /// Only events received before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// A body condition `/pointer=value` (the value as JSON, or else as a
    /// string): `--where /ref=refs/heads/main`, `--where /project/id=7`.
    #[arg(long = "where", value_parser = parse_where)]
    pub conditions: Vec<Value>,
    /// The body has something at this pointer.
    #[arg(long)]
    pub exists: Vec<String>,
    /// The body has nothing at this pointer.
    #[arg(long)]
    pub missing: Vec<String>,
    /// Only events stored after this event id (a previous page's end).
    #[arg(long)]
    pub after: Option<i64>,
}

/// `/pointer=value` as a condition.
pub fn parse_where(arg: &str) -> Result<Value, String> {
    let (pointer, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg}: expected /pointer=value"))?;
    if !pointer.starts_with('/') {
        return Err(format!("{pointer}: a JSON pointer starts with '/'"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok(json!({"pointer": pointer, "equals": value}))
}

impl EventFilterArgs {
    /// The filter as the search API takes it.
    pub fn filter(&self) -> anyhow::Result<Value> {
        let mut f = json!({});
        if let Some(source) = &self.source {
            f["source"] = json!(source);
        }
        if !self.event_types.is_empty() {
            f["event_types"] = json!(self.event_types);
        }
        if !self.deliveries.is_empty() {
            f["event_uuids"] = json!(self.deliveries);
        }
        if let Some(secs) = self.since {
            let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs as i64);
            f["since"] = json!(since.format(&time::format_description::well_known::Rfc3339)?);
        }
        if let Some(until) = &self.until {
            f["until"] = json!(until);
        }
        let mut conditions = self.conditions.clone();
        conditions.extend(
            self.exists
                .iter()
                .map(|p| json!({"pointer": p, "exists": true})),
        );
        conditions.extend(
            self.missing
                .iter()
                .map(|p| json!({"pointer": p, "exists": false})),
        );
        if !conditions.is_empty() {
            f["where"] = Value::Array(conditions);
        }
        if let Some(after) = self.after {
            f["after"] = json!(after);
        }
        Ok(f)
    }
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Events per page.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print the page as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    pub source: String,
    /// The delivery id.
    pub delivery: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Replay the events task-dispatcher ignored (`ignored`) or set aside
    /// (`quarantined`) instead of every event the filter matches.
    #[arg(long, value_parser = ["ignored", "quarantined"])]
    pub from: Option<String>,
    /// Names the replay: the same id again creates nothing twice. Each
    /// further request of one replay adds `.2`, `.3`, ...
    #[arg(long)]
    pub request_id: Option<String>,
    /// Events per request (default: task-dispatcher's `replay.max_events`).
    #[arg(long)]
    pub max_events: Option<usize>,
    /// Create the tasks, instead of listing what would be created.
    #[arg(long)]
    pub apply: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The proposed task-dispatcher settings (its `[[routes]]` are read).
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Examples per kind of change.
    #[arg(long)]
    pub examples: Option<usize>,
    /// Events read at most (default: `replay.max_diff_events`).
    #[arg(long)]
    pub max_events: Option<usize>,
    #[arg(long)]
    pub json: bool,
    /// Exit 3 when the proposed rules change anything (a deploy check).
    #[arg(long)]
    pub fail_on_change: bool,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// Posts `body` (or, without one, GETs) with the operator token; status
/// and JSON answer.
async fn call(url: &str, token: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
    let client = reqwest::Client::new();
    let request = match body {
        Some(body) => client.post(url).json(body),
        None => client.get(url),
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("{url} (is the stack up?)"))?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn post(url: &str, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    call(url, token, Some(body)).await
}

fn refused(service: &str, status: u16, body: &Value) -> i32 {
    println!(
        "{service} refused ({status}): {}",
        body["error"]["message"].as_str().unwrap_or("no message")
    );
    1
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn list(args: ListArgs) -> anyhow::Result<i32> {
    let stack = args.endpoint.resolve()?;
    let token = stack.token.clone();
    let mut request = args.filter.filter()?;
    request["limit"] = json!(args.limit);
    let url = format!("{}/v1/events/search", stack.store_url);
    let (status, page) = post(&url, &token, &request).await?;
    if status != 200 {
        return Ok(refused("dedup-store", status, &page));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(0);
    }
    let events = page["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        println!("no stored event matches");
        return Ok(0);
    }
    println!(
        "{:<8} {:<20} {:<12} {:<20} {:<30} {:<17} {:>7}",
        "ID", "RECEIVED", "SOURCE", "TYPE", "DELIVERY", "TASK", "BYTES"
    );
    for e in &events {
        let received = text(&e["received_at"]);
        println!(
            "{:<8} {:<20} {:<12} {:<20} {:<30} {:<17} {:>7}",
            text(&e["id"]),
            received.get(..19).unwrap_or(&received),
            text(&e["source"]),
            text(&e["event_type"]),
            text(&e["event_uuid"]),
            text(&e["task_id"]),
            text(&e["body_bytes"]),
        );
    }
    if let Some(next) = page["next_after"].as_i64() {
        println!("more: add --after {next}");
    }
    Ok(0)
}

pub async fn show(args: ShowArgs) -> anyhow::Result<i32> {
    let stack = args.endpoint.resolve()?;
    let token = stack.token.clone();
    let url = format!(
        "{}/v1/events/{}/{}",
        stack.store_url, args.source, args.delivery
    );
    let (status, event) = call(&url, &token, None).await?;
    if status != 200 {
        return Ok(refused("dedup-store", status, &event));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&event)?);
        return Ok(0);
    }
    for key in [
        "source",
        "event_uuid",
        "event_type",
        "task_id",
        "trace_id",
        "received_at",
        "stored_at",
        "body_bytes",
    ] {
        println!("{key:<12} {}", text(&event[key]));
    }
    if let Some(headers) = event["headers"].as_object() {
        println!("headers");
        for (name, value) in headers {
            println!("  {name}: {}", text(value));
        }
    }
    let body = rave_service::base64::engine::general_purpose::STANDARD
        .decode(event["body_base64"].as_str().unwrap_or_default())
        .unwrap_or_default();
    match std::str::from_utf8(&body) {
        Ok(s) => match serde_json::from_str::<Value>(s) {
            Ok(json) => println!("body (JSON)\n{}", serde_json::to_string_pretty(&json)?),
            Err(_) => println!("body (text)\n{s}"),
        },
        Err(_) => println!("body (not UTF-8, base64)\n{}", text(&event["body_base64"])),
    }
    Ok(0)
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<i32> {
    let stack = args.endpoint.resolve()?;
    let token = stack.token.clone();
    anyhow::ensure!(
        !args.apply || args.request_id.is_some(),
        "--apply needs --request-id: it makes the replay safe to run again"
    );
    let url = format!("{}/v1/replays", stack.dispatcher_url);
    let mut filter = args.filter.filter()?;
    let mut round = 1;
    let mut answers = Vec::new();
    loop {
        let id = args.request_id.as_ref().map(|id| {
            if round == 1 {
                id.clone()
            } else {
                format!("{id}.{round}")
            }
        });
        let mut request = json!({"dry_run": !args.apply, "filter": filter});
        if let Some(from) = &args.from {
            request["from"] = json!(from);
        }
        if let Some(max) = args.max_events {
            request["max_events"] = json!(max);
        }
        // The same command again names the same replay, though `--since`
        // now means another instant: a recorded request is sent as it was
        // recorded (answered from its record, or finished if it stopped).
        if let (Some(id), true) = (&id, args.apply)
            && let Some(recorded) = recorded(&stack, &token, id).await?
        {
            request = recorded;
        }
        if let Some(id) = &id {
            request["request_id"] = json!(id);
        }
        let (status, answer) = post(&url, &token, &request).await?;
        if status != 200 {
            return Ok(refused("task-dispatcher", status, &answer));
        }
        let next = answer["next_after"].as_i64();
        if !args.json {
            print_replay(&answer);
        }
        answers.push(answer);
        // A dry run shows one request's worth; an applied replay goes on.
        match next {
            Some(after) if args.apply => {
                filter["after"] = json!(after);
                round += 1;
            }
            _ => break,
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
    }
    Ok(0)
}

/// The request replay `id` was recorded with, if it was.
async fn recorded(stack: &Resolved, token: &str, id: &str) -> anyhow::Result<Option<Value>> {
    let url = format!("{}/v1/replays/{id}", stack.dispatcher_url);
    let (status, record) = call(&url, token, None).await?;
    if status == 404 {
        return Ok(None);
    }
    let mut request = record["filter"].clone();
    anyhow::ensure!(
        request.is_object(),
        "replay {id}: no recorded request ({status})"
    );
    request["dry_run"] = json!(false);
    Ok(Some(request))
}

fn print_replay(answer: &Value) {
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    if !events.is_empty() {
        println!(
            "{:<17} {:<17} {:<12} {:<20} {:<8} {:<14} {:>4}  ENTITY",
            "ORIGINAL", "NEW TASK", "SOURCE", "TYPE", "OUTCOME", "KIND", "PRIO"
        );
        for e in &events {
            println!(
                "{:<17} {:<17} {:<12} {:<20} {:<8} {:<14} {:>4}  {}",
                text(&e["original_task_id"]),
                text(&e["task_id"]),
                text(&e["source"]),
                text(&e["event_type"]),
                text(&e["outcome"]),
                text(&e["kind"]),
                text(&e["priority"]),
                text(&e["entity_key"]),
            );
        }
    }
    let counts = format!(
        "matched {}, created {}, ignored {}, already there {}, quarantined {}",
        answer["matched"],
        answer["created"],
        answer["ignored"],
        answer["duplicates"],
        answer["quarantined"]
    );
    match (answer["dry_run"].as_bool(), answer["repeated"].as_bool()) {
        (Some(true), _) => println!(
            "dry run: {} event(s) would be replayed; run again with --apply --request-id NAME",
            answer["matched"]
        ),
        (_, Some(true)) => println!(
            "request {} ran before: {counts}",
            text(&answer["request_id"])
        ),
        _ => println!("request {}: {counts}", text(&answer["request_id"])),
    }
    if answer["truncated"].as_bool() == Some(true) && answer["dry_run"].as_bool() == Some(true) {
        println!("more events match than one request takes: --apply goes on request by request");
    }
}

pub async fn diff(args: DiffArgs) -> anyhow::Result<i32> {
    let stack = args.endpoint.resolve()?;
    let token = stack.token.clone();
    let routes_toml = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut request = json!({"routes_toml": routes_toml, "filter": args.filter.filter()?});
    if let Some(n) = args.examples {
        request["examples"] = json!(n);
    }
    if let Some(n) = args.max_events {
        request["max_events"] = json!(n);
    }
    let url = format!("{}/v1/routes/diff", stack.dispatcher_url);
    let (status, report) = post(&url, &token, &request).await?;
    if status != 200 {
        return Ok(refused("task-dispatcher", status, &report));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_diff(&report);
    }
    let changed = report["changed"].as_u64().unwrap_or(0);
    Ok(if args.fail_on_change && changed > 0 {
        3
    } else {
        0
    })
}

fn print_diff(report: &Value) {
    println!(
        "{} stored event(s) read; {} routed differently by the proposed rules ({} rules, live {})",
        report["scanned"], report["changed"], report["proposed_rules"], report["live_rules"]
    );
    let groups = report["groups"].as_array().cloned().unwrap_or_default();
    if !groups.is_empty() {
        println!(
            "{:<15} {:<16} {:<16} {:>7}  EXAMPLES",
            "CHANGE", "FROM", "TO", "EVENTS"
        );
    }
    for g in &groups {
        let examples: Vec<String> = g["examples"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| format!("{}/{}", text(&e["source"]), text(&e["event_uuid"])))
            .collect();
        println!(
            "{:<15} {:<16} {:<16} {:>7}  {}",
            text(&g["change"]),
            text(&g["from"]),
            text(&g["to"]),
            text(&g["count"]),
            examples.join(", ")
        );
    }
    if report["truncated"].as_bool() == Some(true) {
        println!(
            "stopped at the read limit: narrow the window, or add --after {}",
            report["next_after"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_where_flag_reads_its_value_as_json_or_else_as_a_string() {
        assert_eq!(
            parse_where("/project/id=7").unwrap(),
            json!({"pointer": "/project/id", "equals": 7})
        );
        assert_eq!(
            parse_where("/ref=refs/heads/main").unwrap(),
            json!({"pointer": "/ref", "equals": "refs/heads/main"})
        );
        assert!(parse_where("ref=x").is_err());
        assert!(parse_where("/ref").is_err());
    }
}
