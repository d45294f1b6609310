//! `ravectl`: RAVE's operator CLI.
//!
//! - `ravectl up`: the whole stack on one machine, in a private state
//!   directory (default `.rave/`), until Ctrl-C;
//! - `ravectl send`: a correctly signed webhook to a running stack;
//! - `ravectl agent`: the reference agent;
//! - `ravectl agents create`: a new agent and its token;
//! - `ravectl backup`, `ravectl restore`: pgBackRest backups and
//!   point-in-time restore of the local stack's cluster;
//! - `ravectl events erase`: events deleted for good, on request;
//! - `ravectl events list|show|replay`, `ravectl routes diff`: search,
//!   replay and what-if routing over stored events;
//! - `ravectl verify`: end-to-end checks of a running stack;
//! - `ravectl trace TASK_ID`: a task's whole trace, as a tree.

#![allow(clippy::print_stdout, reason = "a CLI's output is its interface")]

pub mod agent;
pub mod agents;
pub mod backup;
pub mod bench;
pub mod changes;
pub mod cli;
pub mod control;
pub mod event_tools;
pub mod events;
pub mod grafana;
pub mod packages;
pub mod postgres;
pub mod quarantine;
pub mod reconcile;
pub mod release;
pub mod runbook;
pub mod secrets;
pub mod send;
pub mod stack;
pub mod tls;
pub mod traces;
pub mod up;
pub mod verify;

/// Runs one command; its exit code.
pub async fn run(command: cli::Command) -> anyhow::Result<i32> {
    use cli::{AgentsCommand, Command, EventsCommand, QuarantineCommand, RoutesCommand};
    match command {
        Command::Up(args) => crate::up::run(*args).await,
        Command::Send(args) => crate::send::run(args).await,
        Command::Agent(args) => crate::agent::run(args).await,
        Command::Agents(AgentsCommand::Create(args)) => crate::agents::run(args),
        Command::Quarantine(QuarantineCommand::List(args)) => {
            crate::quarantine::list(&args.state_dir).await
        }
        Command::Quarantine(QuarantineCommand::Retry(args)) => {
            crate::quarantine::retry(&args.state_dir, args.id).await
        }
        Command::Events(EventsCommand::Erase(args)) => crate::events::erase(args).await,
        Command::Events(EventsCommand::List(args)) => crate::event_tools::list(args).await,
        Command::Events(EventsCommand::Show(args)) => crate::event_tools::show(args).await,
        Command::Events(EventsCommand::Replay(args)) => crate::event_tools::replay(args).await,
        Command::Routes(RoutesCommand::Diff(args)) => crate::event_tools::diff(args).await,
        Command::Backup(args) => crate::backup::backup(args).await,
        Command::Restore(args) => crate::backup::restore(args).await,
        Command::BackupReport(args) => crate::backup::report(args).await,
        Command::Verify(args) => crate::verify::run(args).await,
        Command::Status(args) => crate::control::status(&args.state_dir),
        Command::Down(args) => crate::control::down(&args.state_dir),
        Command::Restart(args) => crate::changes::restart(&args.state_dir, &args.services).await,
        Command::Reload(args) => crate::changes::reload(&args.state_dir).await,
        Command::Reconcile(args) => crate::reconcile::run(args).await,
        Command::Logs(args) => {
            crate::control::logs(&args.state_dir, args.component.as_deref(), args.lines)
        }
        Command::ReleaseManifest(args) => crate::release::run(&args),
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Trace(args) => crate::traces::run(args).await,
        Command::AlertInbox(args) => {
            let listener = std::net::TcpListener::bind(("127.0.0.1", args.port))?;
            println!(
                "alert inbox on 127.0.0.1:{}, writing {}",
                args.port,
                args.log.display()
            );
            crate::up::alerting::inbox(listener, args.log)?.await?;
            Ok(0)
        }
    }
}
