//! The bench's measurements, one function per mode.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::http::{Conn, Response, Target, request};
use super::load::{self, Pace, Verdict, histogram};
use super::{Ctx, Percentiles, RAVE_SERVICES, Step};
use crate::cli::BenchScheme;

// ------------------------------------------------------------- ceilings

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// nginx answering `return 204` over TLS, same concurrency and body.
    pub nginx_204: Step,
    /// pgbench: one `INSERT ... ON CONFLICT DO NOTHING` per transaction.
    pub pg_single_row_per_sec: f64,
    /// pgbench: 50 rows per statement, rows per second.
    pub pg_50_rows_per_sec: f64,
    pub pg_clients: usize,
    /// The ceiling nginx's port, free again once the step ends.
    pub nginx_port: u16,
}

/// The ceiling nginx, stopped the way nginx stops: SIGQUIT to the master,
/// which waits for its workers before it exits. A SIGKILLed master leaves
/// its workers listening on the port. Also stopped so when a step fails.
#[derive(Debug)]
struct CeilingNginx(Option<std::process::Child>);

impl CeilingNginx {
    fn start(conf: &std::path::Path, error_log: &std::path::Path) -> anyhow::Result<Self> {
        let child = std::process::Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(error_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the ceiling nginx")?;
        Ok(Self(Some(child)))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.quit()
    }

    fn quit(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::process::Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status()
            .context("kill -QUIT the ceiling nginx")?;
        // Workers finish their connections and exit; the master goes last.
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                // A stuck worker: TERM makes the master stop its workers now.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                child.wait()?;
                break;
            }
            // Waiting on another process's exit; std has no timed wait.
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for CeilingNginx {
    fn drop(&mut self) {
        let _ = self.quit();
    }
}

pub async fn ceilings(ctx: &Ctx) -> anyhow::Result<Ceilings> {
    let p = &ctx.params;
    // nginx on a spare port with the stack's certificate and worker count.
    let dir = tempfile::Builder::new().prefix("rave-bench-").tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cert = ctx.stack.tls_cert.clone().context("no TLS certificate")?;
    let key = cert.with_file_name("tls.key");
    let d = dir.path().display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:SSL:1m;\n    client_max_body_size 25m;\n\
             location / {{ return 204; }}\n  }}\n}}\n",
        cert.display(),
        key.display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf)?;
    let nginx = CeilingNginx::start(
        &dir.path().join("nginx.conf"),
        &dir.path().join("error.log"),
    )?;
    let url = format!("https://127.0.0.1:{port}");
    let target = Target::new(&url, Some(&cert)).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.connect().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the ceiling nginx did not start");
        // Polling a process just started; there is nothing to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let host = target.host().to_owned();
    let body = vec![b'x'; p.body_bytes];
    let (result, usage) = ctx
        .measured(load::run(
            &target,
            p.concurrency,
            p.duration(),
            Pace::Closed,
            move |_, _| {
                request(
                    "POST",
                    &host,
                    "/hooks/github",
                    &[("content-type", "application/json")],
                    &body,
                )
            },
            |r: &Response| {
                if r.status == 204 {
                    ("no_content", true)
                } else {
                    ("other", false)
                }
            },
        ))
        .await?;
    nginx.stop()?;
    let nginx_204 = Step::new("nginx return 204", None, p.concurrency, &result, usage);

    // PostgreSQL's own insert rates on the stack's cluster, same clients.
    let pg_port: u16 = ctx
        .stack
        .postgres
        .rsplit(':')
        .next()
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .context("the stack's PostgreSQL port")?;
    let pg = crate::postgres::LocalPostgres::new(&ctx.state_dir, pg_port)?;
    let db = "rave_bench_ceiling";
    if pg
        .psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"))?
        .trim()
        != "1"
    {
        pg.psql(&format!("CREATE DATABASE {db}"))?;
    }
    // The events table's shape: a unique (source, event_uuid) and the body.
    pg.psql_in(
        db,
        "DROP TABLE IF EXISTS ceiling; CREATE TABLE ceiling (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         source text NOT NULL, event_uuid text NOT NULL, body bytea NOT NULL, UNIQUE (source, event_uuid))",
    )?;
    let scripts = tempfile::Builder::new().prefix("rave-pgbench-").tempdir()?;
    std::fs::set_permissions(
        scripts.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let body_sql = format!("convert_to(repeat('x', {}), 'UTF8')", p.body_bytes);
    let single = scripts.path().join("single.sql");
    std::fs::write(
        &single,
        format!(
            "INSERT INTO ceiling (source, event_uuid, body) VALUES ('github', md5(random()::text || clock_timestamp()::text), {body_sql}) ON CONFLICT DO NOTHING;\n"
        ),
    )?;
    let batch = scripts.path().join("batch.sql");
    std::fs::write(
        &batch,
        format!(
            "INSERT INTO ceiling (source, event_uuid, body) SELECT 'github', md5(random()::text || g::text || clock_timestamp()::text), {body_sql} FROM generate_series(1, 50) g ON CONFLICT DO NOTHING;\n"
        ),
    )?;
    for f in [&single, &batch] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    }
    let tps = |script: &std::path::Path| -> anyhow::Result<f64> {
        let out = pg.pgbench(
            db,
            &[
                "-n".into(),
                "-c".into(),
                p.concurrency.to_string(),
                "-j".into(),
                p.concurrency.min(2).to_string(),
                "-T".into(),
                p.duration_secs.to_string(),
                "-f".into(),
                script.display().to_string(),
            ],
        )?;
        out.lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .with_context(|| format!("no tps in pgbench's output: {out}"))
    };
    let pg_single_row_per_sec = tps(&single)?;
    let pg_50_rows_per_sec = tps(&batch)? * 50.0;
    pg.psql(&format!("DROP DATABASE {db}"))?;
    Ok(Ceilings {
        nginx_204,
        pg_single_row_per_sec,
        pg_50_rows_per_sec,
        pg_clients: p.concurrency,
        nginx_port: port,
    })
}

// ---------------------------------------------------------------- intake

/// Builds signed webhooks for the chosen scheme.
#[derive(Clone)]
struct Webhooks {
    scheme: BenchScheme,
    secret: String,
    host: String,
    run: String,
    pad: String,
    duplicates: f64,
}

impl Webhooks {
    fn new(ctx: &Ctx, host: &str) -> anyhow::Result<Self> {
        let p = &ctx.params;
        let secret = match p.scheme {
            BenchScheme::Github => ctx.secret("github.secret")?,
            BenchScheme::Standard => ctx.secret("standard.secret")?,
            BenchScheme::Gitlab => ctx.secret("gitlab-signing.secret")?,
        };
        Ok(Self {
            scheme: p.scheme,
            secret,
            host: host.to_owned(),
            run: format!("{}-{}", ctx.run_id, crate::secrets::hex_token(2)),
            pad: "x".repeat(p.body_bytes.saturating_sub(60)),
            duplicates: p.duplicates,
        })
    }

    /// The `seq`-th delivery of `worker`: a repeat of its previous one with
    /// probability `duplicates` (chosen by a hash, so runs are repeatable).
    fn make(&self, worker: usize, seq: u64) -> Vec<u8> {
        let mixed = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ worker as u64)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            >> 40;
        let repeat = seq > 0 && (mixed as f64 / (1u64 << 24) as f64) < self.duplicates;
        let n = if repeat { seq - 1 } else { seq };
        let id = format!("{}-{worker}-{n}", self.run);
        let body = format!("{{\"n\":{n},\"worker\":{worker},\"pad\":\"{}\"}}", self.pad);
        self.signed(&id, body.as_bytes())
    }

    fn signed(&self, id: &str, body: &[u8]) -> Vec<u8> {
        let now = rave_service::sign::now_unix();
        let json = ("content-type", "application/json");
        match self.scheme {
            BenchScheme::Github => {
                let sig = rave_service::sign::github(&self.secret, body);
                request(
                    "POST",
                    &self.host,
                    "/hooks/github",
                    &[
                        json,
                        ("x-github-event", "push"),
                        ("x-github-delivery", id),
                        ("x-hub-signature-256", &sig),
                    ],
                    body,
                )
            }
            BenchScheme::Standard => {
                let sig = rave_service::sign::standard(&self.secret, id, now, body);
                let ts = now.to_string();
                request(
                    "POST",
                    &self.host,
                    "/hooks/standard",
                    &[
                        json,
                        ("webhook-id", id),
                        ("webhook-timestamp", &ts),
                        ("webhook-signature", &sig),
                    ],
                    body,
                )
            }
            BenchScheme::Gitlab => {
                let sig = rave_service::sign::standard(&self.secret, id, now, body);
                let ts = now.to_string();
                request(
                    "POST",
                    &self.host,
                    "/hooks/gitlab",
                    &[
                        json,
                        ("x-gitlab-event", "Push Hook"),
                        ("idempotency-key", id),
                        ("webhook-id", id),
                        ("webhook-timestamp", &ts),
                        ("webhook-signature", &sig),
                    ],
                    body,
                )
            }
        }
    }
}

/// Only answers that mean "durably stored" count.
fn intake_verdict(r: &Response) -> Verdict {
    match r.status {
        202 if r.body.windows(9).any(|w| w == b"\"spooled\"") => ("spooled", true),
        202 => ("accepted", true),
        200 => ("duplicate", true),
        429 => ("rate_limited", false),
        503 => ("unavailable", false),
        _ => ("error", false),
    }
}

pub async fn intake(ctx: &Ctx) -> anyhow::Result<Vec<Step>> {
    let p = &ctx.params;
    let hooks = Webhooks::new(ctx, ctx.public.host())?;
    let mut steps = Vec::new();
    let make = {
        let hooks = hooks.clone();
        move |w, s| hooks.make(w, s)
    };
    let (saturation, usage) = ctx
        .measured(load::run(
            &ctx.public,
            p.concurrency,
            p.duration(),
            Pace::Closed,
            make,
            intake_verdict,
        ))
        .await?;
    warn_rate_limited(&saturation);
    let rate = saturation.ok_per_sec();
    println!(
        "  saturation: {rate:.0} stored/s, p99 {:.1} ms",
        saturation.percentile_ms(0.99)
    );
    steps.push(Step::new(
        "intake saturation",
        None,
        p.concurrency,
        &saturation,
        usage,
    ));
    let rates = if p.rates.is_empty() {
        vec![rate * 0.25, rate * 0.5, rate * 0.75]
    } else {
        p.rates.clone()
    };
    for (step, target_rate) in rates.into_iter().enumerate() {
        // Each step sends deliveries of its own (only --duplicates repeat).
        let offset = (step as u64 + 1) * 1_000_000_000;
        if target_rate < 1.0 {
            continue;
        }
        ctx.settle().await;
        let hooks = hooks.clone();
        let (result, usage) = ctx
            .measured(load::run(
                &ctx.public,
                p.concurrency,
                p.duration(),
                Pace::Rate(target_rate),
                move |w, s| hooks.make(w, s + offset),
                intake_verdict,
            ))
            .await?;
        println!(
            "  {target_rate:.0}/s: {:.0} stored/s, p50 {:.2} ms, p99 {:.2} ms",
            result.ok_per_sec(),
            result.percentile_ms(0.5),
            result.percentile_ms(0.99)
        );
        steps.push(Step::new(
            &format!("intake at {target_rate:.0}/s"),
            Some(target_rate),
            p.concurrency,
            &result,
            usage,
        ));
    }
    Ok(steps)
}

fn warn_rate_limited(result: &load::RunResult) {
    if result.counts.get("rate_limited").copied().unwrap_or(0) > 0 {
        eprintln!(
            "warning: nginx rate-limited the load generator (429); start the stack with \
             `ravectl up --hooks-rate-limit 0 --agents-rate-limit 0` to measure RAVE rather than the limit"
        );
    }
}

// ------------------------------------------------------------- dispatch

#[derive(Debug, Clone, Serialize)]
pub struct Dispatch {
    pub agents: usize,
    pub batch: usize,
    pub tasks_queued: u64,
    pub completed: u64,
    pub heartbeats: u64,
    pub claims: u64,
    pub elapsed_secs: f64,
    pub cycles_per_sec: f64,
    /// Each claim, heartbeat and completion call.
    pub call_latency_ms: Percentiles,
    pub usage: BTreeMap<String, super::procs::Usage>,
}

/// An agent's call over its own connection; (status, JSON body).
async fn call(
    conn: &mut Option<Conn>,
    target: &Target,
    raw: &[u8],
) -> anyhow::Result<(u16, Value)> {
    if conn.is_none() {
        *conn = Some(target.connect().await?);
    }
    match conn.as_mut().expect("connected").send(raw).await {
        Ok(r) => {
            if r.close {
                *conn = None;
            }
            Ok((
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

/// `POST /v1/agents/claim` for up to `max_tasks`, waiting `wait_secs`.
fn claim_request(host: &str, token: &str, max_tasks: usize, wait_secs: u64) -> Vec<u8> {
    agent_request(
        host,
        token,
        "/v1/agents/claim",
        &json!({"max_tasks": max_tasks, "wait_secs": wait_secs}),
    )
}

/// `POST /v1/tasks/{id}/complete` for a claimed `task` with `result`.
fn complete_request(host: &str, token: &str, task: &Value, result: Value) -> Vec<u8> {
    let id = task["task_id"].as_str().unwrap_or_default();
    agent_request(
        host,
        token,
        &format!("/v1/tasks/{id}/complete"),
        &json!({"lease_token": task["lease_token"], "result": result}),
    )
}

fn agent_request(host: &str, token: &str, path: &str, body: &Value) -> Vec<u8> {
    let auth = format!("Bearer {token}");
    request(
        "POST",
        host,
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.to_string().as_bytes(),
    )
}

pub async fn dispatch(ctx: &Ctx) -> anyhow::Result<Dispatch> {
    let p = ctx.params.clone();
    // Feed the queue through the intake first (what is there already counts).
    let target_tasks = if p.smoke {
        100
    } else {
        (p.agents * p.batch * 40).max(5000) as u64
    };
    let hooks = Webhooks {
        duplicates: 0.0,
        ..Webhooks::new(ctx, ctx.public.host())?
    };
    let fed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let feeder = {
        let fed = fed.clone();
        move |w: usize, s: u64| {
            fed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            hooks.make(w, s + 20_000_000_000)
        }
    };
    let feed_time = Duration::from_secs_f64((target_tasks as f64 / 500.0).clamp(1.0, 60.0));
    let fed_result = load::run(
        &ctx.public,
        p.concurrency,
        feed_time,
        Pace::Rate(target_tasks as f64 / feed_time.as_secs_f64()),
        feeder,
        intake_verdict,
    )
    .await?;
    let tasks_queued = fed_result.ok;
    ctx.settle().await;

    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let deadline = Instant::now() + p.duration().max(Duration::from_secs(5)) * 3;
    let started = Instant::now();
    let run = async {
        let mut agents = Vec::new();
        for _ in 0..p.agents {
            let (target, token, host) = (ctx.public.clone(), token.clone(), host.clone());
            let batch = p.batch;
            agents.push(tokio::spawn(async move {
                let mut conn = None;
                let mut latency = histogram();
                let (mut completed, mut heartbeats, mut claims) = (0u64, 0u64, 0u64);
                let mut last_done = Instant::now();
                let mut empty = 0;
                while Instant::now() < deadline && empty < 2 {
                    let t = Instant::now();
                    let claim = claim_request(&host, &token, batch, 1);
                    let Ok((status, answer)) = call(&mut conn, &target, &claim).await else {
                        continue;
                    };
                    let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    claims += 1;
                    if status == 204 {
                        empty += 1;
                        continue;
                    }
                    if status != 200 {
                        bail!("claim answered {status}: {answer}");
                    }
                    empty = 0;
                    let tasks = answer["tasks"].as_array().cloned().unwrap_or_default();
                    // One heartbeat per batch, as a working agent sends while busy.
                    if let Some(first) = tasks.first() {
                        let id = first["task_id"].as_str().unwrap_or_default();
                        let hb = agent_request(
                            &host,
                            &token,
                            &format!("/v1/tasks/{id}/heartbeat"),
                            &json!({"lease_token": first["lease_token"]}),
                        );
                        let t = Instant::now();
                        if let Ok((200, _)) = call(&mut conn, &target, &hb).await {
                            heartbeats += 1;
                        }
                        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    for task in &tasks {
                        let done = complete_request(&host, &token, task, json!({"ok": true}));
                        let t = Instant::now();
                        if let Ok((200, _)) = call(&mut conn, &target, &done).await {
                            completed += 1;
                            last_done = Instant::now();
                        }
                        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    }
                }
                Ok((completed, heartbeats, claims, last_done, latency))
            }));
        }
        let mut out = (0u64, 0u64, 0u64, started, histogram());
        for agent in agents {
            let (c, h, n, last, lat) = agent.await??;
            out.0 += c;
            out.1 += h;
            out.2 += n;
            out.3 = out.3.max(last);
            out.4.add(&lat)?;
        }
        Ok(out)
    };
    let ((completed, heartbeats, claims, last_done, latency), usage) = ctx.measured(run).await?;
    let elapsed = last_done.duration_since(started).as_secs_f64().max(1e-3);
    let cycles = completed as f64 / elapsed;
    println!("  {completed} tasks claimed and completed in {elapsed:.1} s: {cycles:.0}/s");
    Ok(Dispatch {
        agents: p.agents,
        batch: p.batch,
        tasks_queued,
        completed,
        heartbeats,
        claims,
        elapsed_secs: elapsed,
        cycles_per_sec: cycles,
        call_latency_ms: Percentiles::of(&latency),
        usage,
    })
}

// -------------------------------------------------------------- latency

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub rate: f64,
    pub waiting_agents: usize,
    pub sent: u64,
    pub matched: u64,
    /// From the webhook's 2xx to the task arriving in a waiting claim.
    pub ack_to_claim_ms: Percentiles,
    pub usage: BTreeMap<String, super::procs::Usage>,
}

pub async fn latency(ctx: &Ctx) -> anyhow::Result<Latency> {
    let p = ctx.params.clone();
    let rate = if p.smoke { 20.0 } else { 200.0 };
    let waiting = p.agents.clamp(1, 8);
    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let claimed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Tasks already queued would be claimed first: complete them before
    // measuring (bounded; the report says if the queue was not empty).
    ctx.settle().await;
    let drained = drain(ctx, &token).await?;
    if drained > 0 {
        println!("  completed {drained} tasks already queued before measuring");
    }
    let run = async {
        let mut agents = Vec::new();
        for _ in 0..waiting {
            let (target, token, host, claimed, stop) = (
                ctx.public.clone(),
                token.clone(),
                host.clone(),
                claimed.clone(),
                stop.clone(),
            );
            agents.push(tokio::spawn(async move {
                let mut conn = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let claim = claim_request(&host, &token, 1, 1);
                    let Ok((200, answer)) = call(&mut conn, &target, &claim).await else {
                        continue;
                    };
                    let now = Instant::now();
                    for task in answer["tasks"].as_array().cloned().unwrap_or_default() {
                        let id = task["task_id"].as_str().unwrap_or_default().to_owned();
                        claimed.lock().expect("lock").insert(id.clone(), now);
                        let done = complete_request(&host, &token, &task, json!(null));
                        let _ = call(&mut conn, &target, &done).await;
                    }
                }
            }));
        }
        // The sender: one webhook at a time per worker, at a fixed rate.
        let hooks = Webhooks {
            duplicates: 0.0,
            ..Webhooks::new(ctx, &host)?
        };
        let sender = {
            let acked = acked.clone();
            let target = ctx.public.clone();
            tokio::spawn(async move {
                let mut conn = None;
                let start = Instant::now();
                let mut sent = 0u64;
                for seq in 0.. {
                    let due = start + Duration::from_secs_f64(seq as f64 / rate);
                    if due > start + p.duration() {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let raw = hooks.make(0, seq + 30_000_000_000);
                    if let Ok((status, answer)) = call(&mut conn, &target, &raw).await {
                        let now = Instant::now();
                        if status == 202
                            && let Some(id) = answer["task_id"].as_str()
                        {
                            acked.lock().expect("lock").insert(id.to_owned(), now);
                        }
                    }
                    sent += 1;
                }
                sent
            })
        };
        let sent = sender.await?;
        // Let the last tasks reach their agents.
        let grace = Instant::now() + Duration::from_secs(5);
        while Instant::now() < grace {
            let done = {
                let a = acked.lock().expect("lock");
                let c = claimed.lock().expect("lock");
                a.keys().all(|k| c.contains_key(k))
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for agent in agents {
            agent.await?;
        }
        anyhow::Ok(sent)
    };
    let (sent, usage) = ctx.measured(run).await?;
    let mut h = histogram();
    let mut matched = 0;
    let acked = acked.lock().expect("lock");
    let claimed = claimed.lock().expect("lock");
    for (id, ack) in acked.iter() {
        if let Some(claim) = claimed.get(id) {
            // A claim can return before the sender has read its 2xx: 0.
            let us = claim.saturating_duration_since(*ack).as_micros().max(1) as u64;
            let _ = h.record(us);
            matched += 1;
        }
    }
    let result = Latency {
        rate,
        waiting_agents: waiting,
        sent,
        matched,
        ack_to_claim_ms: Percentiles::of(&h),
        usage,
    };
    println!(
        "  {matched} of {sent}: p50 {:.2} ms, p99 {:.2} ms",
        result.ack_to_claim_ms.p50, result.ack_to_claim_ms.p99
    );
    Ok(result)
}

/// Claims and completes queued tasks until a claim comes back empty.
async fn drain(ctx: &Ctx, token: &str) -> anyhow::Result<u64> {
    let host = ctx.public.host().to_owned();
    let mut conn = None;
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let claim = claim_request(&host, token, 100, 0);
        let (status, answer) = call(&mut conn, &ctx.public, &claim).await?;
        if status != 200 {
            return Ok(done);
        }
        for task in answer["tasks"].as_array().cloned().unwrap_or_default() {
            let raw = complete_request(&host, token, &task, json!(null));
            call(&mut conn, &ctx.public, &raw).await?;
            done += 1;
        }
    }
    Ok(done)
}

// -------------------------------------------------------------- reports

pub async fn reports(ctx: &Ctx) -> anyhow::Result<Step> {
    let p = &ctx.params;
    ctx.settle().await;
    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let auth = format!("Bearer {token}");
    let run = ctx.run_id.clone();
    let make = move |worker: usize, seq: u64| {
        // A distinct task id per report: reports are idempotent per task.
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{run}-{worker}-{seq}").as_bytes(),
        );
        let task_id = hex::encode(&digest.as_ref()[..8]);
        let body = json!({
            "task_id": task_id, "kind": "webhook", "status": "succeeded",
            "started_at": "2026-11-27T10:00:00Z", "duration_seconds": 1.25,
            "tokens_input": 1200, "tokens_output": 90, "cost": 0.003,
        });
        request(
            "POST",
            &host,
            "/v1/reports",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.to_string().as_bytes(),
        )
    };
    let verdict = |r: &Response| match r.status {
        200..=299 => ("accepted", true),
        429 => ("rate_limited", false),
        _ => ("error", false),
    };
    let (result, usage) = ctx
        .measured(load::run(
            &ctx.public,
            p.concurrency,
            p.duration(),
            Pace::Closed,
            make,
            verdict,
        ))
        .await?;
    warn_rate_limited(&result);
    println!(
        "  {:.0} reports/s accepted, p99 {:.1} ms",
        result.ok_per_sec(),
        result.percentile_ms(0.99)
    );
    Ok(Step::new("reports", None, p.concurrency, &result, usage))
}

// -------------------------------------------------------------- startup

/// Time from exec to `/readyz` answering 200, for each service, started a
/// second time with its real config on a spare port.
pub async fn startup(ctx: &Ctx) -> anyhow::Result<BTreeMap<String, f64>> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("ravectl's directory")?
        .to_path_buf();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let mut out = BTreeMap::new();
    let spool = tempfile::tempdir()?;
    for name in RAVE_SERVICES {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let prefix = format!("RAVE_{}", name.to_ascii_uppercase().replace('-', "_"));
        let mut cmd = tokio::process::Command::new(bin_dir.join(name));
        // With replicas, replica 1's config.
        let config = ctx.state_dir.join("config");
        let config = [format!("{name}.toml"), format!("{name}@1.toml")]
            .into_iter()
            .map(|file| config.join(file))
            .find(|path| path.exists())
            .with_context(|| format!("no config for {name} in {}", config.display()))?;
        cmd.arg("--config")
            .arg(config)
            .env(format!("{prefix}__SERVER__PORT"), port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if name == "ingest" {
            cmd.env("RAVE_INGEST__SPOOL__DIR", spool.path());
        }
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let url = format!("http://127.0.0.1:{port}/readyz");
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{name} was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        println!("  {name}: ready in {ms:.0} ms");
        out.insert(name.to_owned(), ms);
        child.kill().await?;
    }
    Ok(out)
}

// ----------------------------------------------------------------- soak

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub intake: Step,
    pub agents: usize,
    pub completed: u64,
    pub rss_after_warmup_mb: BTreeMap<String, f64>,
    pub rss_at_end_mb: BTreeMap<String, f64>,
    pub rss_max_mb: BTreeMap<String, f64>,
    /// End against after-warm-up, per RAVE service.
    pub rss_growth_percent: BTreeMap<String, f64>,
}

pub async fn soak(ctx: &Ctx) -> anyhow::Result<Soak> {
    let p = ctx.params.clone();
    let rate = *p
        .rates
        .first()
        .context("soak needs --rates R (half of a measured saturation)")?;
    let warmup = (p.duration() / 10).max(Duration::from_secs(1));
    let agents = p.agents.max(1);
    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let completed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut drains = Vec::new();
    for _ in 0..agents {
        let (target, token, host, stop, completed) = (
            ctx.public.clone(),
            token.clone(),
            host.clone(),
            stop.clone(),
            completed.clone(),
        );
        let batch = p.batch;
        drains.push(tokio::spawn(async move {
            let mut conn = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let claim = claim_request(&host, &token, batch, 1);
                let Ok((200, answer)) = call(&mut conn, &target, &claim).await else {
                    continue;
                };
                for task in answer["tasks"].as_array().cloned().unwrap_or_default() {
                    let done = complete_request(&host, &token, &task, json!(null));
                    if let Ok((200, _)) = call(&mut conn, &target, &done).await {
                        completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // RSS of each RAVE service every 5 s.
    let pids: BTreeMap<String, u32> = ctx
        .components
        .iter()
        .filter(|(name, _)| super::is_rave_service(name))
        .map(|(name, pid)| (name.clone(), *pid))
        .collect();
    let watcher = {
        let (pids, stop) = (pids.clone(), stop.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut samples: Vec<(Duration, BTreeMap<String, f64>)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((
                    start.elapsed(),
                    pids.iter()
                        .map(|(n, pid)| (n.clone(), super::procs::rss_mb(*pid)))
                        .collect(),
                ));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            samples.push((
                start.elapsed(),
                pids.iter()
                    .map(|(n, pid)| (n.clone(), super::procs::rss_mb(*pid)))
                    .collect(),
            ));
            samples
        })
    };
    let hooks = Webhooks::new(ctx, ctx.public.host())?;
    let (result, usage) = ctx
        .measured(load::run(
            &ctx.public,
            p.concurrency,
            p.duration(),
            Pace::Rate(rate),
            move |w, s| hooks.make(w, s + 40_000_000_000),
            intake_verdict,
        ))
        .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for d in drains {
        d.await?;
    }
    let samples = watcher.await?;
    let after_warmup = samples
        .iter()
        .find(|(t, _)| *t >= warmup)
        .or(samples.last())
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let at_end = samples.last().map(|(_, s)| s.clone()).unwrap_or_default();
    let mut max: BTreeMap<String, f64> = BTreeMap::new();
    for (_, sample) in &samples {
        for (n, v) in sample {
            let m = max.entry(n.clone()).or_default();
            *m = m.max(*v);
        }
    }
    let growth = pids
        .keys()
        .map(|n| {
            let (a, b) = (
                after_warmup.get(n).copied().unwrap_or(0.0),
                at_end.get(n).copied().unwrap_or(0.0),
            );
            (n.clone(), if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 })
        })
        .collect();
    println!(
        "  {:.0} stored/s for {:.0} s, answers {:?}, p99 {:.2} ms",
        result.ok_per_sec(),
        result.elapsed_secs,
        result.counts,
        result.percentile_ms(0.99)
    );
    Ok(Soak {
        intake: Step::new("soak", Some(rate), p.concurrency, &result, usage),
        agents,
        completed: completed.load(std::sync::atomic::Ordering::Relaxed),
        rss_after_warmup_mb: after_warmup,
        rss_at_end_mb: at_end,
        rss_max_mb: max,
        rss_growth_percent: growth,
    })
}
