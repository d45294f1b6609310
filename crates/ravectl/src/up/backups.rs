//! `ravectl up --backups`: WAL archiving to pgBackRest from the start, a
//! full backup at the first start, then one every `--backup-interval-hours`,
//! each run's result on the Pushgateway. Once on, it stays on: a later `up`
//! without the flag keeps archiving to the same repository.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backup::{self, PgBackRest};
use crate::cli::UpArgs;
use crate::postgres::LocalPostgres;

/// The repository an earlier `up --backups` chose, from its configuration.
fn configured_repo(state_dir: &Path) -> Option<PathBuf> {
    let config = std::fs::read_to_string(backup::local_config(state_dir)).ok()?;
    config
        .lines()
        .find_map(|l| l.strip_prefix("repo1-path="))
        .map(PathBuf::from)
}

/// pgBackRest's configuration for this start, archiving on and the stanza
/// checked; `None` when backups were never turned on here.
pub(super) fn prepare(
    args: &UpArgs,
    state_dir: &Path,
    postgres: &LocalPostgres,
) -> anyhow::Result<Option<PgBackRest>> {
    let earlier = configured_repo(state_dir);
    if !args.backups && earlier.is_none() {
        return Ok(None);
    }
    let repo = args
        .backup_repo
        .clone()
        .or(earlier)
        .unwrap_or_else(|| state_dir.join("backups"));
    let pgbackrest = backup::write_local_config(state_dir, &repo, postgres.port)?;
    postgres.ensure_archiving(&pgbackrest.archive_command())?;
    pgbackrest.stanza_create()?;
    Ok(Some(pgbackrest))
}

/// Takes the first full backup if there is none, then schedules the rest;
/// the returned task runs them until `up` ends.
pub(super) async fn start(
    pgbackrest: PgBackRest,
    args: &UpArgs,
    pushgateway: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let runner = pgbackrest.clone();
    let existing = tokio::task::spawn_blocking(move || runner.info()).await??;
    if existing.is_empty() {
        run_once(&pgbackrest, "full", pushgateway).await?;
    }
    let every = Duration::from_secs(args.backup_interval_hours.max(1) * 3600);
    let pushgateway = pushgateway.to_owned();
    Ok(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(e) = run_once(&pgbackrest, "incr", &pushgateway).await {
                eprintln!("scheduled backup: {e:#}");
            }
        }
    }))
}

async fn run_once(pgbackrest: &PgBackRest, kind: &str, pushgateway: &str) -> anyhow::Result<()> {
    let (runner, kind) = (pgbackrest.clone(), kind.to_owned());
    let outcome = tokio::task::spawn_blocking(move || runner.backup(&kind)).await?;
    if let Err(e) = backup::push(pushgateway, "local", &outcome).await {
        eprintln!("{e:#}");
    }
    match outcome.error {
        Some(error) => anyhow::bail!("{} backup failed: {error}", outcome.kind),
        None => {
            println!(
                "backup: {} backup taken in {:.1} s (ravectl backup --list)",
                outcome.kind, outcome.duration_secs
            );
            Ok(())
        }
    }
}
