//! Ceilings: nginx's `return 204` and PostgreSQL's own insert rates at the
//! same concurrency, what RAVE's numbers are divided by.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::bench::http::{Response, Target, request};
use crate::bench::load::{self, Pace};
use crate::bench::{Ctx, Step};

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
                    ("no_content", 1)
                } else {
                    ("other", 0)
                }
            },
        ))
        .await?;
    nginx.stop()?;
    let nginx_204 = Step::new("nginx return 204", None, p.concurrency, &result, usage);

    // PostgreSQL's own insert rates on the stack's cluster, same clients.
    let pg = crate::bench::tables::postgres(ctx)?;
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
