//! A private PostgreSQL cluster in the state directory.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the
//! `postgres` user. The Unix socket lives in a 0700 directory; local socket
//! connections are trusted, TCP connections need a password (SCRAM).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

#[derive(Debug)]
pub struct LocalPostgres {
    bindir: PathBuf,
    dir: PathBuf,
    pub port: u16,
    as_postgres_user: bool,
    /// pg_stat_statements loaded at each start ([`Self::with_statement_stats`]).
    statement_stats: bool,
}

impl LocalPostgres {
    pub fn new(state_dir: &Path, port: u16) -> anyhow::Result<Self> {
        Ok(Self {
            bindir: find_bindir()?,
            // Absolute: psql reads a relative socket directory as a host name.
            dir: std::path::absolute(state_dir)?.join("pg"),
            port,
            as_postgres_user: crate::packages::is_root(),
            statement_stats: false,
        })
    }

    /// Starts the server with pg_stat_statements loaded and planning times
    /// tracked (on the command line, so the cluster's own configuration is
    /// unchanged and a start without it has none).
    pub fn with_statement_stats(mut self, on: bool) -> Self {
        self.statement_stats = on;
        self
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    /// An empty data directory, owned by the cluster's user, for a restore.
    pub fn prepare_data_dir(&self) -> anyhow::Result<()> {
        crate::secrets::private_dir(&self.data())?;
        if self.as_postgres_user {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&self.dir)
                .arg(self.data())
                .status()?;
            anyhow::ensure!(
                status.success(),
                "chown postgres {} failed",
                self.data().display()
            );
        }
        Ok(())
    }

    /// Archives WAL with `command` (pgBackRest's archive-push), at most a
    /// minute late (`archive_timeout`, the bound on what a lost disk loses
    /// since the last archived segment); restarts if archiving was off.
    pub fn ensure_archiving(&self, command: &str) -> anyhow::Result<()> {
        let was_on = self.psql("SHOW archive_mode")?.trim() == "on";
        self.psql(&format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            command.replace('\'', "''")
        ))?;
        self.psql("ALTER SYSTEM SET archive_timeout = '60s'")?;
        if was_on {
            self.psql("SELECT pg_reload_conf()")?;
            return Ok(());
        }
        self.psql("ALTER SYSTEM SET archive_mode = 'on'")?;
        self.stop()?;
        self.start()
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, mut command: Command, what: &str) -> anyhow::Result<String> {
        let out = command
            .output()
            .with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates the cluster unless it exists.
    pub fn init(&self) -> anyhow::Result<()> {
        if self.data().join("PG_VERSION").exists() {
            return Ok(());
        }
        crate::secrets::private_dir(&self.dir)?;
        crate::secrets::private_dir(&self.socket_dir())?;
        if self.as_postgres_user {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&self.dir)
                .status()?;
            anyhow::ensure!(
                status.success(),
                "chown postgres {} failed",
                self.dir.display()
            );
        }
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(self.data()).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        self.run(initdb, "initdb")?;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        let mut status = self.command("pg_ctl");
        status.arg("status").arg("-D").arg(self.data());
        status.output().is_ok_and(|o| o.status.success())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.socket_dir().display()
        );
        if self.statement_stats {
            options.push_str(
                " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on",
            );
        }
        let mut start = self.command("pg_ctl");
        start
            .arg("start")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options]);
        self.run(start, "pg_ctl start")
            .with_context(|| format!("see {}", self.log_file().display()))?;
        self.wait_for_writes()?;
        if self.statement_stats {
            // Its view, in the superuser's database; it counts every database.
            self.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
        }
        Ok(())
    }

    /// After a restore, PostgreSQL first replays the archived WAL (and takes
    /// only reads meanwhile); the services need writes, so wait for the end.
    fn wait_for_writes(&self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            // Refused connections are part of it (before a consistent state).
            if self
                .psql("SELECT pg_is_in_recovery()")
                .is_ok_and(|r| r.trim() == "f")
            {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "PostgreSQL is still replaying WAL after 10 minutes; see {}",
                    self.log_file().display()
                );
            }
            // A server replaying WAL has no event to wait on.
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w"]);
        self.run(stop, "pg_ctl stop")?;
        Ok(())
    }

    /// A connection string for prometheus-postgres-exporter: the superuser
    /// over the private socket (trusted; only this machine's root can use it).
    pub fn exporter_dsn(&self) -> String {
        format!(
            "postgresql://postgres@:{}/postgres?host={}&sslmode=disable",
            self.port,
            self.socket_dir().display()
        )
    }

    /// Runs SQL as the superuser over the private socket.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let mut psql = self.command("psql");
        psql.arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql]);
        self.run(psql, "psql")
    }

    /// Runs SQL as the superuser in database `db`.
    /// Raises `max_connections` to at least `n` (kept in the cluster's
    /// postgresql.auto.conf, so later starts keep it); restarts if needed.
    pub fn ensure_max_connections(&self, n: u32) -> anyhow::Result<()> {
        let current: u32 = self.psql("SHOW max_connections")?.trim().parse()?;
        if current >= n {
            return Ok(());
        }
        self.psql(&format!("ALTER SYSTEM SET max_connections = {n}"))?;
        self.stop()?;
        self.start()
    }

    pub fn psql_in(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let mut psql = self.command("psql");
        psql.arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql]);
        self.run(psql, "psql")
    }

    /// Runs pgbench as the superuser against database `db`; its output.
    pub fn pgbench(&self, db: &str, args: &[String]) -> anyhow::Result<String> {
        let mut pgbench = self.command("pgbench");
        pgbench
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg(db);
        self.run(pgbench, "pgbench")
    }

    /// Makes `role` (with `password`) own database `db`, creating both if needed.
    pub fn ensure_database(&self, role: &str, password: &str, db: &str) -> anyhow::Result<()> {
        let safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        anyhow::ensure!(
            safe(role) && safe(db) && safe(password),
            "role, database and password must be [A-Za-z0-9_]"
        );
        let role_exists = self.psql(&format!("SELECT 1 FROM pg_roles WHERE rolname = '{role}'"))?;
        if role_exists.trim().is_empty() {
            self.psql(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))?;
        } else {
            self.psql(&format!("ALTER ROLE {role} LOGIN PASSWORD '{password}'"))?;
        }
        let db_exists = self.psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"))?;
        if db_exists.trim().is_empty() {
            self.psql(&format!("CREATE DATABASE {db} OWNER {role}"))?;
        }
        Ok(())
    }
}

/// As root the cluster belongs to the `postgres` user, which must be able
/// to pass through every directory above the state directory. Checked before
/// anything starts: otherwise initdb fails deep inside with only
/// "Permission denied" (a state directory under `mktemp -d`, mode 0700).
pub fn check_reachable_by_postgres(state_dir: &Path) -> anyhow::Result<()> {
    if !crate::packages::is_root() {
        return Ok(());
    }
    let state_dir = std::path::absolute(state_dir)?;
    let mut above: Vec<&Path> = state_dir.ancestors().filter(|d| d.is_dir()).collect();
    above.reverse();
    for dir in above {
        let enters = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-x"])
            .arg(dir)
            .status()
            .context("runuser -u postgres (is the postgresql package installed?)")?
            .success();
        if !enters {
            use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
            let meta = std::fs::metadata(dir)?;
            let owner = match meta.uid() {
                0 => "root".to_owned(),
                uid => format!("uid {uid}"),
            };
            bail!(
                "PostgreSQL runs as the `postgres` user, which cannot enter {} (mode {:04o}, owner {owner}) \
                 on the way to the state directory {}. Choose a --state-dir it can reach, \
                 or let it pass through with: chmod o+x {}",
                dir.display(),
                meta.permissions().mode() & 0o7777,
                state_dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// The newest PostgreSQL server's `bin` directory (`RAVE_PG_BINDIR` overrides).
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("RAVE_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)")
}
