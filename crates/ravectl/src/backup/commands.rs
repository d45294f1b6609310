//! `ravectl backup` (take one, or list them), `ravectl restore` (to a point
//! in time, into a stopped stack) and `ravectl backup-report` (a NixOS
//! host's backup job's result, for its alerts).

use std::time::Instant;

use anyhow::bail;

use super::{Outcome, PgBackRest};
use crate::cli::{BackupArgs, BackupReportArgs, RestoreArgs};
use crate::postgres::LocalPostgres;

fn local(state_dir: &std::path::Path) -> anyhow::Result<PgBackRest> {
    PgBackRest::local(state_dir).ok_or_else(|| {
        anyhow::anyhow!(
            "no backups are set up in {}: start the stack with `ravectl up --backups`",
            state_dir.display()
        )
    })
}

/// Takes one backup of the running stack (or lists them with `--list`),
/// and pushes its result to the stack's Pushgateway.
pub async fn backup(args: BackupArgs) -> anyhow::Result<i32> {
    let pgbackrest = local(&args.state_dir)?;
    if args.list {
        let all = pgbackrest.info()?;
        if all.is_empty() {
            println!("no backups yet");
        }
        println!(
            "{:<36} {:<5} {:<20} {:>8} {:>12} {:>12}",
            "LABEL", "TYPE", "FINISHED (UTC)", "SECONDS", "DB BYTES", "ADDED BYTES"
        );
        for b in all {
            println!(
                "{:<36} {:<5} {:<20} {:>8} {:>12} {:>12}",
                b.label,
                b.kind,
                utc(b.stopped),
                b.stopped - b.started,
                b.size,
                b.repo_size
            );
        }
        return Ok(0);
    }
    let Some(stack) = crate::control::running(&args.state_dir) else {
        bail!(
            "RAVE is not running in {}: a backup needs its PostgreSQL (ravectl up --backups)",
            args.state_dir.display()
        );
    };
    let kind = args.kind.clone();
    let runner = pgbackrest.clone();
    let outcome = tokio::task::spawn_blocking(move || runner.backup(&kind)).await?;
    if let Some(url) = &stack.pushgateway_url
        && let Err(e) = super::push(url, "local", &outcome).await
    {
        eprintln!("{e:#}");
    }
    Ok(print_outcome(&outcome))
}

fn print_outcome(outcome: &Outcome) -> i32 {
    match (&outcome.error, &outcome.newest) {
        (None, Some(newest)) => {
            println!(
                "backup {} ({}) finished in {:.1} s: {} database bytes, {} added to the repository",
                newest.label, newest.kind, outcome.duration_secs, newest.size, newest.repo_size
            );
            0
        }
        (None, None) => {
            println!("backup finished, but pgbackrest info lists none");
            1
        }
        (Some(error), _) => {
            println!(
                "backup failed after {:.1} s: {error}",
                outcome.duration_secs
            );
            1
        }
    }
}

fn utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| unix.to_string())
}

/// Restores the stopped stack's cluster from its backups, to `--to` or to
/// the end of the archived WAL. Replacing an existing cluster needs `--yes`.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<i32> {
    if crate::control::running(&args.state_dir).is_some() {
        bail!(
            "RAVE is running in {}: stop it first (ravectl down)",
            args.state_dir.display()
        );
    }
    let pgbackrest = local(&args.state_dir)?;
    let postgres = LocalPostgres::new(&args.state_dir, 0)?;
    if postgres.is_running() {
        bail!(
            "PostgreSQL is still running in {}: stop it first (ravectl down)",
            args.state_dir.display()
        );
    }
    let data = postgres.data_dir();
    if data.join("PG_VERSION").exists() && !args.yes {
        println!(
            "{} holds a cluster: restoring replaces it with the backup's state at {}. Run again with --yes to do it.",
            data.display(),
            args.to.as_deref().unwrap_or("the end of the archived WAL")
        );
        return Ok(1);
    }
    postgres.prepare_data_dir()?;
    let started = Instant::now();
    let target = args.to.clone();
    let runner = pgbackrest.clone();
    tokio::task::spawn_blocking(move || runner.restore(&data, target.as_deref())).await??;
    println!(
        "restored in {:.1} s to {}; start the stack (ravectl up --backups): PostgreSQL replays the archived WAL to that point, then takes writes again",
        started.elapsed().as_secs_f64(),
        args.to.as_deref().unwrap_or("the end of the archived WAL")
    );
    Ok(0)
}

/// Pushes the result of a backup job that ran outside ravectl (a NixOS
/// host's `pgbackrest-<stanza>-<job>` unit, from its `ExecStopPost`).
pub async fn report(args: BackupReportArgs) -> anyhow::Result<i32> {
    let pgbackrest = PgBackRest::new(args.pgbackrest_config.clone(), &args.stanza);
    let newest = pgbackrest.info()?.into_iter().last();
    let ok = args.result == "success";
    let outcome = Outcome {
        ok,
        kind: newest.as_ref().map(|b| b.kind.clone()).unwrap_or_default(),
        duration_secs: newest
            .as_ref()
            .filter(|_| ok)
            .map(|b| (b.stopped - b.started) as f64)
            .unwrap_or(0.0),
        newest,
        error: (!ok).then(|| format!("the backup job ended with {}", args.result)),
    };
    super::push(&args.pushgateway, &args.instance, &outcome).await?;
    Ok(0)
}
