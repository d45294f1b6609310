//! Supervision: components as child processes with their logs, readiness,
//! restarts of crashed services (as systemd does on a host), and the stop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::stack::StackFile;

pub(super) struct Service {
    pub name: String,
    /// Where it listens (0: nowhere).
    pub port: u16,
    pub child: Child,
    /// Its output, `logs/<name>.log`.
    pub log: PathBuf,
    /// Where this run's output starts in it (the log is appended to).
    pub log_start: u64,
    /// How to start it again: program, arguments, state directory.
    pub restart: Option<(PathBuf, Vec<std::ffi::OsString>, PathBuf)>,
    /// RAVE's services: the listening socket this supervisor holds and
    /// hands to each process it starts, so no restart refuses a connection.
    pub listener: Option<Arc<TcpListener>>,
}

impl Service {
    /// A new process of this service, started as this one was: the same
    /// program, arguments and state directory, and the same socket handed
    /// over; with `notify`, it reports `READY=1` there.
    pub(super) fn respawn(&self, notify: Option<&Path>) -> anyhow::Result<Service> {
        let (program, args, dir) = self.restart.as_ref().context("not restartable")?;
        let mut next = match &self.listener {
            Some(listener) => {
                spawn_handed(program, &self.name, self.port, args, dir, listener, notify)?
            }
            None => spawn(program, &self.name, self.port, args, dir)?,
        };
        next.restart = self.restart.clone();
        next.listener = self.listener.clone();
        Ok(next)
    }
}

/// SIGTERM to `pid`: the graceful stop every component handles.
pub(super) fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Crashed RAVE services are restarted, as systemd does on a host; more than
/// this many restarts of one service within a minute stops the stack.
const RESTARTS_PER_MINUTE: usize = 5;

/// Until SIGTERM or SIGINT (0), or a component that cannot be restarted (1):
/// restarts crashed services and keeps the stack file's pids current.
pub(super) async fn until_stopped(
    services: &mut [Service],
    stack: &mut StackFile,
    state_dir: &Path,
) -> anyhow::Result<i32> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let control = super::rolling::listen(state_dir)?;
    let mut restarts: Vec<(String, Instant)> = Vec::new();
    let code = loop {
        let (index, status) = tokio::select! {
            _ = terminate.recv() => break 0,
            _ = interrupt.recv() => break 0,
            exited = first_exit(services) => exited,
            asked = control.accept() => {
                if let Ok((stream, _)) = asked {
                    super::rolling::serve(stream, services, stack, state_dir).await;
                }
                continue;
            }
        };
        let name = services[index].name.clone();
        let log = state_dir.join("logs").join(format!("{name}.log"));
        restarts.retain(|(_, at)| at.elapsed() < Duration::from_secs(60));
        let recent = restarts.iter().filter(|(n, _)| *n == name).count();
        if services[index].restart.is_none() {
            eprintln!(
                "{name} exited unexpectedly ({status}); see {}",
                log.display()
            );
            break 1;
        }
        if recent >= RESTARTS_PER_MINUTE {
            eprintln!(
                "{name} exited ({status}) {RESTARTS_PER_MINUTE} times within a minute; giving up; see {}",
                log.display()
            );
            break 1;
        }
        eprintln!(
            "{name} exited ({status}); restarting it; see {}",
            log.display()
        );
        restarts.push((name.clone(), Instant::now()));
        // A short pause, as systemd's RestartSec, so a crash loop does not spin.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let service = services[index].respawn(None)?;
        if let (Some(pid), Some(entry)) = (service.child.id(), stack.components.get_mut(&name)) {
            entry.0 = pid;
        }
        services[index] = service;
        stack.write(state_dir)?;
    };
    Ok(code)
}

/// Starts `program args...` with its output in `logs/<name>.log`.
pub(super) fn spawn(
    program: &Path,
    name: &str,
    port: u16,
    args: &[std::ffi::OsString],
    state_dir: &Path,
) -> anyhow::Result<Service> {
    spawn_with_env(program, name, port, args, state_dir, &[])
}

/// [`spawn`] with extra environment variables.
pub(super) fn spawn_with_env(
    program: &Path,
    name: &str,
    port: u16,
    args: &[std::ffi::OsString],
    state_dir: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<Service> {
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    start_command(command, program, name, port, state_dir)
}

const MALLOC_ARENA_MAX: &str = "MALLOC_ARENA_MAX";

/// systemd's socket handover (`LISTEN_FDS`, fd 3, `LISTEN_PID`), done by
/// the shell that becomes the service: it moves the socket given as its
/// standard input to fd 3 and `exec`s the service with its own pid, so no
/// unsafe code runs between fork and exec here.
const HANDOVER: &str = r#"export LISTEN_FDS=1 LISTEN_PID=$$; exec "$0" "$@" 3<&0 0</dev/null"#;

/// [`spawn`], handing `listener` over; with `notify`, the service reports
/// `READY=1` there (`NOTIFY_SOCKET`).
pub(super) fn spawn_handed(
    program: &Path,
    name: &str,
    port: u16,
    args: &[std::ffi::OsString],
    state_dir: &Path,
    listener: &TcpListener,
    notify: Option<&Path>,
) -> anyhow::Result<Service> {
    let socket = std::os::fd::OwnedFd::from(listener.try_clone()?);
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(HANDOVER)
        .arg(program)
        .args(args)
        .stdin(Stdio::from(socket));
    if let Some(notify) = notify {
        command.env("NOTIFY_SOCKET", notify);
    }
    // As the NixOS units run them (nixos/lib/unit.nix): glibc's per-thread
    // arenas otherwise hold freed memory, twice agent-reporter's goal under
    // batched reports. A value already in the environment wins.
    if std::env::var_os(MALLOC_ARENA_MAX).is_none() {
        command.env(MALLOC_ARENA_MAX, "2");
    }
    start_command(command, program, name, port, state_dir)
}

fn start_command(
    mut command: Command,
    program: &Path,
    name: &str,
    port: u16,
    state_dir: &Path,
) -> anyhow::Result<Service> {
    let log: PathBuf = state_dir.join("logs").join(format!("{name}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let start = out.metadata()?.len();
    let child = command
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    Ok(Service {
        name: name.to_owned(),
        port,
        child,
        log,
        log_start: start,
        restart: None,
        listener: None,
    })
}

/// Starts a replica of one of RAVE's services with its config file.
pub(super) fn spawn_service(
    bin_dir: &Path,
    replica: &Replica,
    config: &Path,
    state_dir: &Path,
) -> anyhow::Result<Service> {
    let program = bin_dir.join(replica.service);
    let args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into()];
    let listener = Arc::new(
        TcpListener::bind(("127.0.0.1", replica.port))
            .with_context(|| format!("binding {}'s port {}", replica.name, replica.port))?,
    );
    let mut service = spawn_handed(
        &program,
        &replica.name,
        replica.port,
        &args,
        state_dir,
        &listener,
        None,
    )?;
    service.restart = Some((program, args, state_dir.to_path_buf()));
    service.listener = Some(listener);
    Ok(service)
}

/// Polls `ready_url` until it answers 2xx.
pub(super) async fn wait_ready(
    name: &str,
    ready_url: &str,
    services: &mut [Service],
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(ready_url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        for service in services.iter_mut() {
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "{} exited while starting ({status}); the end of {}:\n{}",
                    service.name,
                    service.log.display(),
                    log_tail(&service.log, service.log_start, LOG_TAIL_LINES)
                );
            }
        }
        if Instant::now() > deadline {
            bail!("{name} did not become ready within 30 s at {ready_url}");
        }
        // Polling a process we just started; there is no event to wait for.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How much of a component's log `up` shows when it failed to start: the
/// cause (a taken port, a bad flag) is nearly always in its last lines.
pub(super) const LOG_TAIL_LINES: usize = 8;

/// The last `lines` lines written to `log` since byte `start`, indented.
pub(super) fn log_tail(log: &Path, start: u64, lines: usize) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let from = usize::try_from(start).unwrap_or(0).min(text.len());
    let text = String::from_utf8_lossy(&text[from..]);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return "  (it wrote nothing)".to_owned();
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first component to exit: its index and status.
async fn first_exit(services: &mut [Service]) -> (usize, std::process::ExitStatus) {
    let waits = services
        .iter_mut()
        .map(|s| Box::pin(async move { s.child.wait().await }));
    let (status, index, _) = futures_util::future::select_all(waits).await;
    (index, status.unwrap_or_default())
}

/// SIGTERM in reverse start order (ingest first), so no request reaches a
/// stopped store; SIGKILL after 35 s.
pub(super) async fn stop_all(services: &mut Vec<Service>) {
    while let Some(mut service) = services.pop() {
        if let Some(pid) = service.child.id() {
            terminate(pid);
        }
        if tokio::time::timeout(Duration::from_secs(35), service.child.wait())
            .await
            .is_err()
        {
            let _ = service.child.kill().await;
        }
    }
}
use super::replicas::Replica;
