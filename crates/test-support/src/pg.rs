//! A throwaway PostgreSQL cluster on a free loopback port.
//!
//! The cluster is started once per test process by [`PgCluster::shared`] with
//! `initdb` + `postgres` from Debian's packages (`RAVE_PG_BINDIR` overrides the
//! search). PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` user. A supervisor shell owns the server; it holds the read end
//! of a pipe whose write end lives in this process, so when the test process
//! exits — normally, by panic or by SIGKILL — the supervisor sees EOF, stops
//! the server and deletes the cluster's files.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running cluster. Dropping it does nothing: the supervisor cleans up
/// when this process exits.
#[derive(Debug)]
pub struct PgCluster {
    pub host: String,
    pub port: u16,
    pub superuser: String,
    /// The server's self-signed certificate (it also accepts TLS): the
    /// `sslrootcert` that verifies it.
    pub tls_cert: std::path::PathBuf,
    _supervisor: Child,
    _lifeline: ChildStdin,
}

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub host: String,
    pub port: u16,
    /// The database's owner: an ordinary role, not a superuser.
    pub user: String,
    pub name: String,
    pub superuser: String,
}

impl TestDatabase {
    /// A libpq-style connection string.
    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.host, self.port, self.user, self.name
        )
    }

    /// `[database]` settings for a service using this database as its owner.
    pub fn settings(&self) -> rave_pg::DatabaseSettings {
        rave_pg::DatabaseSettings {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: None,
            dbname: self.name.clone(),
            pool_size: 16,
            connect_timeout_ms: 2000,
            sslmode: rave_pg::SslMode::Disable,
            sslrootcert: None,
            timeouts: Default::default(),
        }
    }

    /// A fresh connection as the owner (its driver runs on the current runtime).
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.connection_string()).await
    }

    /// The one number `sql` selects (a count, say), read on a fresh connection.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.connect()
            .await
            .expect("a connection")
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// A fresh superuser connection to this database.
    pub async fn connect_as_superuser(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&format!(
            "host={} port={} user={} dbname={}",
            self.host, self.port, self.superuser, self.name
        ))
        .await
    }

    /// Simulates losing the database: the owner may no longer log in and its
    /// sessions are ended.
    pub async fn cut_off(&self) -> anyhow::Result<()> {
        let admin = self.connect_as_superuser().await?;
        admin
            .batch_execute(&format!("ALTER ROLE \"{}\" NOLOGIN", self.user))
            .await?;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&self.user],
            )
            .await?;
        Ok(())
    }

    /// Undoes [`TestDatabase::cut_off`].
    pub async fn restore(&self) -> anyhow::Result<()> {
        let admin = self.connect_as_superuser().await?;
        admin
            .batch_execute(&format!("ALTER ROLE \"{}\" LOGIN", self.user))
            .await?;
        Ok(())
    }
}

const SUPERVISOR: &str = r#"
set -u
base="$1"; bindir="$2"; port="$3"; cert="$4"; key="$5"
if ! "$bindir/initdb" -D "$base/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >"$base/initdb.log" 2>&1; then
  echo "initdb-failed"; exit 1
fi
# fsync is off: these tests check visibility and concurrency, not power loss.
"$bindir/postgres" -D "$base/data" -p "$port" -k "$base" \
  -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB \
  -c ssl=on -c ssl_cert_file="$cert" -c ssl_key_file="$key" \
  >"$base/postgres.log" 2>&1 &
pid=$!
echo "started"
read -r _ || true
kill -INT "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$base"
"#;

impl PgCluster {
    /// The process-wide cluster, started on first use.
    pub fn shared() -> &'static PgCluster {
        static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| PgCluster::start().expect("starting the test PostgreSQL cluster"))
    }

    /// Starts a new cluster.
    pub fn start() -> anyhow::Result<PgCluster> {
        let bindir = ravectl::postgres::find_bindir()?;
        let port = crate::free_port();
        let base = tempfile::Builder::new()
            .prefix("rave-test-pg-")
            .tempdir()?
            .keep();
        let as_root = ravectl::packages::is_root();
        let (tls_cert, tls_key) = ravectl::tls::ensure_certificate(&base)?;
        let mut command = if as_root {
            let uid = user_id("postgres").context(
                "running as root needs a `postgres` user to run PostgreSQL (apt-get install postgresql)",
            )?;
            for path in [&base, &tls_cert, &tls_key] {
                std::os::unix::fs::chown(path, Some(uid), None)?;
            }
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", SUPERVISOR, "sh"]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", SUPERVISOR, "sh"]);
            c
        };
        command
            .arg(&base)
            .arg(&bindir)
            .arg(port.to_string())
            .arg(&tls_cert)
            .arg(&tls_key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut supervisor = command
            .spawn()
            .context("spawning the PostgreSQL supervisor")?;
        let lifeline = supervisor.stdin.take().expect("piped stdin");
        let mut first_line = String::new();
        BufReader::new(supervisor.stdout.take().expect("piped stdout"))
            .read_line(&mut first_line)?;
        if first_line.trim() != "started" {
            let log = std::fs::read_to_string(base.join("initdb.log")).unwrap_or_default();
            bail!("initdb failed in {}:\n{log}", base.display());
        }
        wait_until_ready(&bindir, port, &base)?;
        Ok(PgCluster {
            host: "127.0.0.1".into(),
            port,
            superuser: "postgres".into(),
            tls_cert,
            _supervisor: supervisor,
            _lifeline: lifeline,
        })
    }

    /// Creates an empty database with a unique name, owned by a new
    /// ordinary role of the same name.
    pub async fn create_database(&self) -> anyhow::Result<TestDatabase> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&format!(
            "host={} port={} user={} dbname=postgres",
            self.host, self.port, self.superuser
        ))
        .await?;
        client
            .batch_execute(&format!("CREATE ROLE \"{name}\" LOGIN"))
            .await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""))
            .await?;
        Ok(TestDatabase {
            host: self.host.clone(),
            port: self.port,
            user: name.clone(),
            name,
            superuser: self.superuser.clone(),
        })
    }
}

async fn connect(conninfo: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn user_id(name: &str) -> anyhow::Result<u32> {
    let out = Command::new("id").args(["-u", name]).output()?;
    if !out.status.success() {
        bail!("no user {name}");
    }
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn wait_until_ready(bindir: &Path, port: u16, base: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = Command::new(bindir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()?;
        if status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(base.join("postgres.log")).unwrap_or_default();
            bail!("PostgreSQL did not become ready on port {port}:\n{log}");
        }
        // Waiting for an external server to start; nothing to drive step by step.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a prepared statement's generic plan (the one PostgreSQL settles on
/// once it costs no more than planning each call) does: `prepare` (a
/// `PREPARE name(types) AS ...`) under `plan_cache_mode =
/// force_generic_plan`, then `EXPLAIN ANALYZE EXECUTE {execute}` in a
/// transaction rolled back, so nothing it changes stays. Returns the tables
/// it read with a whole-table scan and the rows it returned.
pub async fn generic_plan_seq_scans(
    db: &mut tokio_postgres::Client,
    prepare: &str,
    execute: &str,
) -> (Vec<String>, u64) {
    db.batch_execute(&format!(
        "SET plan_cache_mode = force_generic_plan; DEALLOCATE ALL; {prepare}"
    ))
    .await
    .expect("the statement prepares");
    let tx = db.transaction().await.expect("a transaction");
    let row = tx
        .query_one(
            &format!("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {execute}"),
            &[],
        )
        .await
        .expect("the statement runs");
    tx.rollback().await.expect("rolled back");
    let explained: serde_json::Value = row.get(0);
    fn seq_scans(plan: &serde_json::Value, out: &mut Vec<String>) {
        if plan["Node Type"] == "Seq Scan" {
            out.push(
                plan["Relation Name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        for child in plan
            .get("Plans")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            seq_scans(child, out);
        }
    }
    let mut seq = Vec::new();
    seq_scans(&explained[0]["Plan"], &mut seq);
    let rows = explained[0]["Plan"]["Actual Rows"].as_f64().unwrap_or(0.0) as u64;
    (seq, rows)
}
