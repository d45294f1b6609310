//! Backups of the local stack's PostgreSQL cluster with pgBackRest: WAL
//! archiving, full, differential and incremental backups, point-in-time
//! restore, and each backup's result as metrics on the Pushgateway
//! (docs/adr/0016-backups-with-pgbackrest.md).
//!
//! The same metrics code serves the NixOS hosts, where nixpkgs'
//! `services.pgbackrest` runs the backups and `ravectl backup-report` pushes
//! each one's result after it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Deserialize;

mod commands;
mod metrics;

pub use commands::{backup, report, restore};
pub use metrics::{exposition, push};

/// The local stack's stanza (pgBackRest's name for one cluster).
pub const STANZA: &str = "rave";

/// pgBackRest for one cluster: its configuration file and stanza.
#[derive(Debug, Clone)]
pub struct PgBackRest {
    pub config: PathBuf,
    pub stanza: String,
    /// Run as `postgres` (the cluster's owner) when ravectl runs as root.
    as_postgres_user: bool,
}

/// What a backup run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub kind: String,
    pub duration_secs: f64,
    /// The newest backup in the repository after the run, if any.
    pub newest: Option<BackupInfo>,
    /// Why it failed (pgBackRest's own words).
    pub error: Option<String>,
}

/// One backup as `pgbackrest info` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    pub label: String,
    pub kind: String,
    pub started: i64,
    pub stopped: i64,
    /// Bytes of the database it covers, and bytes it added to the repository.
    pub size: u64,
    pub repo_size: u64,
}

impl PgBackRest {
    pub fn new(config: PathBuf, stanza: &str) -> Self {
        Self {
            config,
            stanza: stanza.to_owned(),
            as_postgres_user: crate::packages::is_root(),
        }
    }

    /// The local stack's, if `ravectl up --backups` set it up.
    pub fn local(state_dir: &Path) -> Option<Self> {
        let config = local_config(state_dir);
        config.exists().then(|| Self::new(config, STANZA))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "pgbackrest"]);
            c
        } else {
            Command::new("pgbackrest")
        };
        command
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(args)
            .output()
            .context("running pgbackrest (is the pgbackrest package installed?)")?;
        if !out.status.success() {
            bail!(
                "pgbackrest {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// PostgreSQL's `archive_command` for this stanza.
    pub fn archive_command(&self) -> String {
        format!(
            "pgbackrest --config={} --stanza={} archive-push %p",
            self.config.display(),
            self.stanza
        )
    }

    /// Creates the stanza (idempotent) and checks that archiving works.
    pub fn stanza_create(&self) -> anyhow::Result<()> {
        self.run(&["stanza-create"])?;
        self.run(&["check"])?;
        Ok(())
    }

    /// Takes a backup of `kind` (`full`, `diff` or `incr`; pgBackRest makes
    /// the first one full whatever is asked).
    pub fn backup(&self, kind: &str) -> Outcome {
        let started = Instant::now();
        let result = self.run(&["backup", &format!("--type={kind}")]);
        let duration_secs = started.elapsed().as_secs_f64();
        Outcome {
            ok: result.is_ok(),
            kind: kind.to_owned(),
            duration_secs,
            newest: self.info().ok().and_then(|all| all.into_iter().last()),
            error: result.err().map(|e| format!("{e:#}")),
        }
    }

    /// Every backup in the repository, oldest first.
    pub fn info(&self) -> anyhow::Result<Vec<BackupInfo>> {
        let json = self.run(&["info", "--output=json"])?;
        parse_info(&json)
    }

    /// Restores the cluster into `data` (which must not be running): to
    /// `target` (a PostgreSQL timestamp) or, without one, to the end of the
    /// archived WAL. PostgreSQL replays to the target when it next starts,
    /// then promotes.
    pub fn restore(&self, data: &Path, target: Option<&str>) -> anyhow::Result<()> {
        let mut args = vec!["restore".to_owned()];
        if data.join("PG_VERSION").exists() {
            // Over an existing cluster: only the files that differ.
            args.push("--delta".to_owned());
        }
        if let Some(target) = target {
            args.push("--type=time".to_owned());
            args.push(format!("--target={target}"));
            args.push("--target-action=promote".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)?;
        Ok(())
    }
}

/// Where `ravectl up --backups` keeps pgBackRest's configuration.
pub fn local_config(state_dir: &Path) -> PathBuf {
    state_dir.join("pg/pgbackrest.conf")
}

/// Writes the local stack's pgBackRest configuration: the repository at
/// `repo`, the cluster in `state_dir/pg` on `port`.
pub fn write_local_config(state_dir: &Path, repo: &Path, port: u16) -> anyhow::Result<PgBackRest> {
    let pg = state_dir.join("pg");
    for path in [repo, &pg] {
        let text = path.to_string_lossy();
        if text.contains(['"', '\'', ' ', '\n', '%']) {
            bail!(
                "{} holds a quote, space or %, which PostgreSQL's archive_command cannot carry; choose another directory",
                path.display()
            );
        }
    }
    let work = pg.join("pgbackrest");
    let dirs = [
        repo.to_path_buf(),
        work.clone(),
        work.join("log"),
        work.join("lock"),
        work.join("spool"),
    ];
    for dir in dirs {
        crate::secrets::private_dir(&dir)?;
        if crate::packages::is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown postgres {} failed", dir.display());
        }
    }
    let config = format!(
        "# Written by `ravectl up --backups`; rewritten at every start.\n\
         [global]\n\
         repo1-path={repo}\n\
         repo1-retention-full=2\n\
         log-path={work}/log\n\
         lock-path={work}/lock\n\
         spool-path={work}/spool\n\
         log-level-console=warn\n\
         log-level-file=info\n\
         compress-type=zst\n\
         start-fast=y\n\
         \n\
         [{STANZA}]\n\
         pg1-path={pg}/data\n\
         pg1-port={port}\n\
         pg1-socket-path={pg}/run\n\
         pg1-user=postgres\n",
        repo = repo.display(),
        work = work.display(),
        pg = pg.display(),
    );
    let path = local_config(state_dir);
    std::fs::write(&path, config)?;
    if crate::packages::is_root() {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&path)
            .status()?;
        anyhow::ensure!(status.success(), "chown postgres {} failed", path.display());
    }
    Ok(PgBackRest::new(path, STANZA))
}

#[derive(Debug, Deserialize)]
struct StanzaInfo {
    #[serde(default)]
    backup: Vec<RawBackup>,
}

#[derive(Debug, Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: RawTimes,
    info: RawSizes,
}

#[derive(Debug, Deserialize)]
struct RawTimes {
    start: i64,
    stop: i64,
}

#[derive(Debug, Deserialize)]
struct RawSizes {
    size: u64,
    repository: RawRepoSize,
}

#[derive(Debug, Deserialize)]
struct RawRepoSize {
    delta: u64,
}

/// Reads `pgbackrest info --output=json` (one stanza).
pub fn parse_info(json: &str) -> anyhow::Result<Vec<BackupInfo>> {
    let stanzas: Vec<StanzaInfo> =
        serde_json::from_str(json).context("reading pgbackrest info's JSON")?;
    Ok(stanzas
        .into_iter()
        .flat_map(|s| s.backup)
        .map(|b| BackupInfo {
            label: b.label,
            kind: b.kind,
            started: b.timestamp.start,
            stopped: b.timestamp.stop,
            size: b.info.size,
            repo_size: b.info.repository.delta,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const INFO: &str = r#"[{"archive":[],"backup":[
        {"label":"20261202-010000F","type":"full","timestamp":{"start":1764637200,"stop":1764637205},
         "info":{"size":31457280,"delta":31457280,"repository":{"size":4194304,"delta":4194304}}},
        {"label":"20261202-010000F_20261202-020000I","type":"incr","timestamp":{"start":1764640800,"stop":1764640802},
         "info":{"size":31557280,"delta":100000,"repository":{"size":4204304,"delta":10000}}}],
        "name":"rave","status":{"code":0,"message":"ok"}}]"#;

    #[test]
    fn pgbackrest_info_lists_each_backup_oldest_first() {
        let all = parse_info(INFO).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].kind, "incr");
        assert_eq!((all[1].stopped, all[1].repo_size), (1764640802, 10000));
    }
}
