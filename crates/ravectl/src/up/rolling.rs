//! Restarts without downtime, asked for over `up`'s control socket
//! (`ravectl restart`): each replica of each named service in turn, a new
//! process started on the socket the supervisor holds, waited for until it
//! reports ready, and only then the old one stopped (it finishes what it
//! serves). The binary is read again from disk, so this is also how a new
//! build is put in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixDatagram, UnixListener, UnixStream};

use super::supervise::{LOG_TAIL_LINES, Service, log_tail, terminate};
use crate::stack::StackFile;

/// How long a new process may take to report ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long an old process may take to finish its requests (its own
/// `server.shutdown_timeout_secs` is 30 s) before it is killed.
const DRAIN_WITHIN: Duration = Duration::from_secs(35);

/// The control socket's path in a state directory.
pub fn control_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

pub(super) fn listen(state_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = control_socket(state_dir);
    // A socket left by a supervisor that was killed.
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))
}

/// One request: `restart SERVICE...` (`all` for every RAVE service).
/// Answers a line per replica, then `ok` or `error: ...`.
pub(super) async fn serve(
    stream: UnixStream,
    services: &mut [Service],
    stack: &mut StackFile,
    state_dir: &Path,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let outcome = match words.split_first() {
        Some((&"restart", names)) if !names.is_empty() => {
            restart_in_turn(services, names, stack, state_dir, &mut write).await
        }
        _ => Err(anyhow::anyhow!("unknown request {:?}", line.trim())),
    };
    let last = match outcome {
        Ok(()) => "ok\n".to_owned(),
        Err(e) => format!("error: {e:#}\n"),
    };
    let _ = write.write_all(last.as_bytes()).await;
}

/// Whether replica `name` (`ingest`, `ingest@2`) belongs to one of `names`.
fn named(name: &str, names: &[&str]) -> bool {
    let service = name.split('@').next().unwrap_or(name);
    names
        .iter()
        .any(|n| *n == "all" || *n == service || *n == name)
}

async fn restart_in_turn(
    services: &mut [Service],
    names: &[&str],
    stack: &mut StackFile,
    state_dir: &Path,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let chosen: Vec<usize> = services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.listener.is_some() && named(&s.name, names))
        .map(|(i, _)| i)
        .collect();
    if chosen.is_empty() {
        bail!("no RAVE service named {}", names.join(", "));
    }
    for index in chosen {
        let started = Instant::now();
        let (old, new) = replace(&mut services[index], state_dir).await?;
        if let Some(entry) = stack.components.get_mut(&services[index].name) {
            entry.0 = new;
        }
        stack.write(state_dir)?;
        let line = format!(
            "{}: pid {old} replaced by pid {new} in {:.1} s\n",
            services[index].name,
            started.elapsed().as_secs_f64()
        );
        out.write_all(line.as_bytes()).await?;
    }
    Ok(())
}

/// Starts the replacement, waits for it to be ready, then stops `service`:
/// `(old pid, new pid)`. If the replacement does not get ready, it is
/// stopped and the old process keeps serving.
async fn replace(service: &mut Service, state_dir: &Path) -> anyhow::Result<(u32, u32)> {
    anyhow::ensure!(
        service.listener.is_some(),
        "{} holds no socket",
        service.name
    );
    let notify_path = state_dir.join(format!("{}.notify", service.name));
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path)?;
    let mut next = service.respawn(Some(&notify_path))?;
    let ready = ready(&mut next, &notify).await;
    let _ = std::fs::remove_file(&notify_path);
    if let Err(e) = ready {
        let _ = next.child.kill().await;
        return Err(e.context(format!(
            "{}'s replacement did not start; the running process stays",
            service.name
        )));
    }
    let old_pid = service.child.id().unwrap_or_default();
    let new_pid = next.child.id().unwrap_or_default();
    let mut old = std::mem::replace(service, next);
    terminate(old_pid);
    if tokio::time::timeout(DRAIN_WITHIN, old.child.wait())
        .await
        .is_err()
    {
        let _ = old.child.kill().await;
    }
    Ok((old_pid, new_pid))
}

/// Until the new process reports `READY=1`; an error if it exits first or
/// takes longer than [`READY_WITHIN`].
async fn ready(next: &mut Service, notify: &UnixDatagram) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            received = notify.recv(&mut buf) => {
                let n = received?;
                let message = String::from_utf8_lossy(&buf[..n]);
                if message.lines().any(|l| l == "READY=1") {
                    return Ok(());
                }
            }
            status = next.child.wait() => bail!(
                "it exited ({}); the end of {}:\n{}",
                status?,
                next.log.display(),
                log_tail(&next.log, next.log_start, LOG_TAIL_LINES)
            ),
            _ = tokio::time::sleep_until(deadline) => {
                bail!("it did not report ready within {} s", READY_WITHIN.as_secs())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::named;

    #[test]
    fn a_service_name_selects_each_of_its_replicas_and_all_selects_every_one() {
        assert!(named("ingest@2", &["ingest"]));
        assert!(named("ingest", &["ingest"]));
        assert!(named("ingest@2", &["ingest@2"]));
        assert!(!named("ingest@1", &["ingest@2"]));
        assert!(!named("dedup-store", &["ingest"]));
        assert!(named("dedup-store@1", &["all"]));
    }
}
