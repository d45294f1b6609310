//! Search at scale (ADR 19): N stored events with JSON bodies (1 million by
//! default) loaded with PostgreSQL's bulk path, then each kind of operator
//! query timed through dedup-store's `POST /v1/events/search` — by id, type,
//! time, body pointers (indexed and not), deep pages, the worst case — and a
//! what-if evaluation through task-dispatcher. Also: what the searchable
//! copy costs in storage, and per event at intake (serde_json in dedup-store
//! and PostgreSQL's insert with the GIN index, each with and without it).

use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::bench::Ctx;

/// The loaded events' source: only they are in it.
const SOURCE: &str = "search";
/// Rows per statement: progress shows, and no transaction grows huge.
const CHUNK: u64 = 250_000;

#[derive(Debug, Clone, Serialize)]
pub struct QueryFigure {
    pub name: String,
    /// Events on the first page (of at most 100).
    pub found: usize,
    pub runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchRun {
    pub events: u64,
    pub load_secs: f64,
    pub queries: Vec<QueryFigure>,
    /// `POST /v1/routes/diff` over one repository's events...
    pub diff_events: u64,
    pub diff_ms: f64,
    /// ...and over the last day's.
    pub diff_day_events: u64,
    pub diff_day_ms: f64,
    /// The events table's size with TOAST, its GIN index, and its other
    /// indexes (MB); and the mean stored size of a body and of its copy.
    pub table_mb: f64,
    pub gin_index_mb: f64,
    pub other_indexes_mb: f64,
    pub mean_body_bytes: f64,
    pub mean_copy_bytes: f64,
    /// The copy's cost per event at intake: dedup-store's serde_json work
    /// (µs, on a 1 KiB GitHub-like body), and PostgreSQL's insert with and
    /// without it (µs per row, 20,000 rows in one statement).
    pub copy_rust_us: f64,
    pub insert_with_copy_us: f64,
    pub insert_without_copy_us: f64,
}

/// A body like a pull-request delivery's, of about `pad` + 300 bytes.
fn body_sql(pad: usize) -> String {
    format!(
        "json_build_object(
            'action', (ARRAY['opened','closed','synchronize','labeled','edited'])[g % 5 + 1],
            'number', g,
            'ref', CASE WHEN g % 10 = 0 THEN 'refs/heads/main' ELSE 'refs/heads/feature-' || (g % 1000) END,
            'repository', json_build_object('id', g % 500, 'full_name', 'org/repo-' || (g % 500)),
            'sender', json_build_object('login', 'user-' || (g % 5000)),
            'labels', json_build_array(json_build_object('name', 'bug'), json_build_object('name', 'p' || (g % 3))),
            'pad', repeat('x', {pad}))::text"
    )
}

fn load(ctx: &Ctx, n: u64) -> anyhow::Result<f64> {
    let pg = crate::bench::tables::postgres(ctx)?;
    let started = Instant::now();
    let run = &ctx.run_id;
    let body = body_sql(400);
    let mut done = 0;
    while done < n {
        let (from, to) = (done + 1, (done + CHUNK).min(n));
        // Spread over 30 days, one event a second, newest first.
        pg.psql_in(
            "rave_events",
            &format!(
                "INSERT INTO events (source, event_uuid, event_type, task_id, received_at, stored_at,
                                     headers, body, body_json)
                 SELECT '{SOURCE}', '{run}-s-' || g, (ARRAY['push','pull_request','issues'])[g % 3 + 1],
                        substr(md5('{run}-s-' || g), 1, 16),
                        now() - make_interval(secs => g % 2592000), now() - make_interval(secs => g % 2592000),
                        '{{}}'::jsonb, convert_to(b.text, 'UTF8'), b.text::jsonb
                 FROM generate_series({from}, {to}) g, LATERAL (SELECT {body} AS text) b
                 ON CONFLICT DO NOTHING"
            ),
        )?;
        done = to;
        println!("  {done} of {n} ({:.0} s)", started.elapsed().as_secs_f64());
    }
    pg.psql_in("rave_events", "VACUUM ANALYZE events")?;
    Ok(started.elapsed().as_secs_f64())
}

/// Times `request` `runs` times (sequentially, one operator).
async fn timed(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    request: Value,
    runs: usize,
) -> anyhow::Result<QueryFigure> {
    let mut latency = crate::bench::load::histogram();
    let mut found = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let response = http
            .post(url)
            .bearer_auth(token)
            .json(&request)
            .send()
            .await?;
        let status = response.status();
        let page: Value = response.json().await?;
        latency.saturating_record(started.elapsed().as_micros() as u64);
        anyhow::ensure!(status.is_success(), "{name}: {status} {page}");
        found = page["events"].as_array().map_or(0, Vec::len);
    }
    let ms = crate::bench::Percentiles::of(&latency);
    let figure = QueryFigure {
        name: name.to_owned(),
        found,
        runs,
        p50_ms: ms.p50,
        p99_ms: ms.p99,
        max_ms: ms.max,
    };
    println!(
        "  {name}: {found} found, p50 {:.1} ms, p99 {:.1} ms",
        figure.p50_ms, figure.p99_ms
    );
    Ok(figure)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// dedup-store's own work for the copy, on a GitHub-like 1 KiB body.
fn copy_cost_us() -> f64 {
    let body = json!({
        "action": "opened", "number": 42,
        "pull_request": {"title": "Fix the thing", "draft": false, "head": {"ref": "fix", "sha": "0123456789abcdef0123456789abcdef01234567"},
                         "base": {"ref": "main"}, "labels": [{"name": "bug"}, {"name": "p1"}], "body": "x".repeat(400)},
        "repository": {"id": 7, "full_name": "org/repo", "private": false, "owner": {"login": "org", "id": 1}},
        "sender": {"login": "alice", "id": 2, "type": "User"}
    })
    .to_string();
    let runs = 20_000;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(rave_service::content::searchable_copy(
            std::hint::black_box(body.as_bytes()),
        ));
    }
    started.elapsed().as_secs_f64() * 1e6 / runs as f64
}

/// PostgreSQL's insert of 20,000 events, with and without the copy.
fn insert_cost_us(ctx: &Ctx) -> anyhow::Result<(f64, f64)> {
    let pg = crate::bench::tables::postgres(ctx)?;
    let rows = 20_000;
    let body = body_sql(400);
    let mut per_row = Vec::new();
    for (tag, copy) in [("with", "b.text::jsonb"), ("without", "NULL")] {
        let prefix = format!("{}-ab-{tag}-", ctx.run_id);
        let started = Instant::now();
        pg.psql_in(
            "rave_events",
            &format!(
                "INSERT INTO events (source, event_uuid, event_type, task_id, received_at, headers, body, body_json)
                 SELECT 'search-ab', '{prefix}' || g, 'pull_request', substr(md5('{prefix}' || g), 1, 16),
                        now(), '{{}}'::jsonb, convert_to(b.text, 'UTF8'), {copy}
                 FROM generate_series(1, {rows}) g, LATERAL (SELECT {body} AS text) b"
            ),
        )?;
        per_row.push(started.elapsed().as_secs_f64() * 1e6 / rows as f64);
    }
    pg.psql_in(
        "rave_events",
        "DELETE FROM events WHERE source = 'search-ab'",
    )?;
    Ok((per_row[0], per_row[1]))
}

pub async fn search(ctx: &Ctx, n: u64) -> anyhow::Result<SearchRun> {
    let load_secs = load(ctx, n)?;
    let token = ctx.secret("operator.token")?;
    let url = format!("{}/v1/events/search", ctx.stack.store_url);
    let http = reqwest::Client::new();
    let runs = if ctx.params.smoke { 2 } else { 20 };
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let pointer = |p: &str, v: Value| json!({"pointer": p, "equals": v});
    let repo = pointer("/repository/full_name", json!("org/repo-7"));
    let delivery = format!("{}-s-{}", ctx.run_id, n / 2);
    let cases = [
        (
            "one delivery id",
            json!({"source": SOURCE, "event_uuids": [delivery]}),
        ),
        (
            "one event type, first page",
            json!({"source": SOURCE, "event_types": ["pull_request"]}),
        ),
        (
            "one hour ten days back",
            json!({"source": SOURCE,
            "since": rfc3339(now - day * 10), "until": rfc3339(now - day * 10 + time::Duration::hours(1))}),
        ),
        (
            "the last day",
            json!({"source": SOURCE, "since": rfc3339(now - day)}),
        ),
        (
            "all 30 days (every event)",
            json!({"source": SOURCE, "since": rfc3339(now - day * 31)}),
        ),
        ("body pointer, 1 in 500 (GIN)", json!({"where": [repo]})),
        (
            "body pointer + type + one day",
            json!({"event_types": ["issues"], "where": [repo],
            "since": rfc3339(now - day * 3), "until": rfc3339(now - day * 2)}),
        ),
        (
            "body pointer in 2 values, 1 in 2,500",
            json!({"where": [{"pointer": "/sender/login", "in": ["user-1", "user-2"]}]}),
        ),
        (
            "array-index pointer (no index), 1 in 3",
            json!({"where": [pointer("/labels/1/name", json!("p1"))]}),
        ),
        (
            "body pointer with no match",
            json!({"where": [pointer("/sender/login", json!("nobody"))]}),
        ),
        (
            "with bodies, 100 per page",
            json!({"where": [repo], "include_bodies": true}),
        ),
    ];
    let mut queries = Vec::new();
    for (name, mut request) in cases {
        request["limit"] = json!(100);
        queries.push(timed(&http, &url, &token, name, request, runs).await?);
    }
    // Ten pages deep into one repository's events.
    let mut after = 0;
    for _ in 0..9 {
        let page: Value = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({"where": [repo], "limit": 100, "after": after}))
            .send()
            .await?
            .json()
            .await?;
        after = page["next_after"].as_i64().unwrap_or(after);
    }
    queries.push(
        timed(
            &http,
            &url,
            &token,
            "the tenth page of those",
            json!({"where": [repo], "limit": 100, "after": after}),
            runs,
        )
        .await?,
    );
    // The worst case: a condition no index answers and no event meets, so
    // the whole table is read (statement_timeout bounds it).
    queries.push(
        timed(
            &http,
            &url,
            &token,
            "worst: exists=false on a field every body has",
            json!({"source": SOURCE, "where": [{"pointer": "/number", "exists": false}], "limit": 100}),
            runs.min(3),
        )
        .await?,
    );

    // What-if through the dispatcher: one repository's events, and a day's.
    let what_if = async |filter: Value| -> anyhow::Result<(u64, f64)> {
        let started = Instant::now();
        let diff: Value = http
            .post(format!("{}/v1/routes/diff", ctx.stack.dispatcher_url))
            .bearer_auth(&token)
            .json(&json!({"routes_toml": "[[routes]]\nevent_types = [\"issues\"]\nkind = \"triage\"\n[[routes]]\nkind = \"webhook\"\n",
                          "filter": filter}))
            .send()
            .await?
            .json()
            .await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let scanned = diff["scanned"].as_u64().unwrap_or(0);
        println!("  what-if over {scanned} events: {ms:.0} ms");
        Ok((scanned, ms))
    };
    let (diff_events, diff_ms) = what_if(json!({"where": [repo]})).await?;
    let (diff_day_events, diff_day_ms) =
        what_if(json!({"source": SOURCE, "since": rfc3339(now - day)})).await?;

    let pg = crate::bench::tables::postgres(ctx)?;
    let figures = pg.psql_in(
        "rave_events",
        &format!(
            "SELECT pg_total_relation_size('events') / 1e6,
                    pg_relation_size('events_body_json_idx') / 1e6,
                    (pg_indexes_size('events') - pg_relation_size('events_body_json_idx')) / 1e6,
                    (SELECT avg(pg_column_size(body)) FROM events TABLESAMPLE SYSTEM (1) WHERE source = '{SOURCE}'),
                    (SELECT avg(pg_column_size(body_json)) FROM events TABLESAMPLE SYSTEM (1) WHERE source = '{SOURCE}')"
        ),
    )?;
    let f: Vec<f64> = figures
        .trim()
        .split('|')
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let (insert_with_copy_us, insert_without_copy_us) = insert_cost_us(ctx)?;
    let run = SearchRun {
        events: n,
        load_secs,
        queries,
        diff_events,
        diff_ms,
        diff_day_events,
        diff_day_ms,
        table_mb: f.first().copied().unwrap_or(0.0),
        gin_index_mb: f.get(1).copied().unwrap_or(0.0),
        other_indexes_mb: f.get(2).copied().unwrap_or(0.0),
        mean_body_bytes: f.get(3).copied().unwrap_or(0.0),
        mean_copy_bytes: f.get(4).copied().unwrap_or(0.0),
        copy_rust_us: copy_cost_us(),
        insert_with_copy_us,
        insert_without_copy_us,
    };
    // Leave the database as it was for the steps after this one.
    pg.psql_in(
        "rave_events",
        &format!("DELETE FROM events WHERE source = '{SOURCE}'"),
    )?;
    pg.psql_in("rave_events", "VACUUM ANALYZE events")?;
    Ok(run)
}

impl SearchRun {
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "## Search at {} stored events\n\nLoaded in {:.0} s. Each query through `POST /v1/events/search`, first page of at most 100, one operator:\n\n| query | found | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n",
            self.events, self.load_secs
        );
        for q in &self.queries {
            md.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} |\n",
                q.name, q.found, q.p50_ms, q.p99_ms, q.max_ms
            ));
        }
        md.push_str(&format!(
            "\nWhat-if (`POST /v1/routes/diff`) over one repository's {} events: {:.0} ms; over the last day's {} events: {:.0} ms ({:.0} events/s).\n\nStorage: events table {:.0} MB with TOAST and indexes, of which the GIN index {:.0} MB and the other indexes {:.0} MB; a body is {:.0} bytes stored, its copy {:.0}.\nThe copy per event at intake: dedup-store {:.1} µs (serde_json, 1 KiB body); PostgreSQL's insert {:.1} µs per row with it, {:.1} without.\n\n",
            self.diff_events,
            self.diff_ms,
            self.diff_day_events,
            self.diff_day_ms,
            self.diff_day_events as f64 / (self.diff_day_ms / 1000.0).max(0.001),
            self.table_mb,
            self.gin_index_mb,
            self.other_indexes_mb,
            self.mean_body_bytes,
            self.mean_copy_bytes,
            self.copy_rust_us,
            self.insert_with_copy_us,
            self.insert_without_copy_us
        ));
        md
    }
}
