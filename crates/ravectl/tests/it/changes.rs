//! Change without downtime, counted. Senders post signed deliveries through
//! nginx the whole time and count every answer that is not a 2xx and every
//! connection that fails. Meanwhile the test rotates the github source's
//! secret (the new one added and reloaded, senders switch, the old one
//! removed and reloaded), adds a routing rule and an agent (reloaded), and
//! restarts every service in turn and replaces ingest's binary on disk
//! (`ravectl restart`). Afterwards: nothing refused, every delivery stored
//! once and tasked once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ravectl::bench::http::{Conn, Target, request};
use ravectl::stack::StackFile;
use serde_json::{Value, json};

use super::faults::all_pages;
use super::{eventually, free_port, ravectl, replica_ports, up_with};

const SENDERS: usize = 4;
/// Acknowledged deliveries between one change and the next.
const BETWEEN_CHANGES: usize = 40;
const BINARIES: [&str; 4] = ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"];

#[derive(Default)]
struct Counts {
    /// Delivery id → event type, once acknowledged.
    acknowledged: BTreeMap<String, &'static str>,
    /// Answers that were not 2xx, by status.
    refused: BTreeMap<u16, usize>,
    /// Connections that failed or requests that got no answer.
    broken: usize,
}

/// What every sender signs with and sends now.
struct Senders {
    secret: Mutex<String>,
    /// Once the new rule is live, every fifth delivery is a `deployment`.
    deployments: AtomicBool,
    counts: Mutex<Counts>,
    stop: AtomicBool,
}

async fn send_all(nginx: Target, shared: Arc<Senders>, sender: usize) {
    let mut conn: Option<Conn> = None;
    for i in (sender..).step_by(SENDERS) {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // A steady rate rather than a burst, so the changes land mid-load.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let delivery = format!("change-{i:05}");
        let event = if shared.deployments.load(Ordering::Relaxed) && i % 5 == 0 {
            "deployment"
        } else {
            "push"
        };
        let body = format!("{{\"n\":{i}}}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let secret = shared.secret.lock().unwrap().clone();
            let signature = rave_service::sign::github(&secret, body.as_bytes());
            let raw = request(
                "POST",
                nginx.host(),
                "/hooks/github",
                &[
                    ("content-type", "application/json"),
                    ("x-github-event", event),
                    ("x-github-delivery", &delivery),
                    ("x-hub-signature-256", &signature),
                ],
                body.as_bytes(),
            );
            let sent = tokio::time::timeout(Duration::from_secs(15), async {
                if conn.is_none() {
                    conn = Some(nginx.connect().await?);
                }
                conn.as_mut().expect("connected").send(&raw).await
            })
            .await;
            let done = {
                let mut counts = shared.counts.lock().unwrap();
                match sent {
                    Ok(Ok(response)) => {
                        if response.close {
                            conn = None;
                        }
                        if (200..300).contains(&response.status) {
                            counts.acknowledged.insert(delivery.clone(), event);
                            true
                        } else {
                            *counts.refused.entry(response.status).or_default() += 1;
                            false
                        }
                    }
                    _ => {
                        conn = None;
                        counts.broken += 1;
                        false
                    }
                }
            };
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "{delivery} never acknowledged");
            // A sender's retry delay: a refusal is counted, then retried so
            // that the exactly-once counts below still cover every delivery.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `ravectl reload`, which must report every service reloaded.
fn reload(state: &Path) {
    let out = ravectl()
        .arg("reload")
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "reload refused: {report}");
    eprintln!("change: reload: {}", report.trim().replace('\n', "; "));
}

fn restart(state: &Path, services: &[&str]) {
    let out = ravectl()
        .arg("restart")
        .args(services)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restart failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "change: restart {}: {}",
        services.join(" "),
        report.trim().replace('\n', "; ")
    );
}

/// The binaries `up` runs, copied where the test can replace them.
fn bin_dir(dir: &Path) -> PathBuf {
    let built = Path::new(env!("CARGO_BIN_EXE_ravectl")).parent().unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in BINARIES {
        std::fs::copy(built.join(name), bin.join(name)).unwrap();
    }
    bin
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_a_secret_adding_a_rule_and_an_agent_and_restarting_every_service_under_load_refuse_no_delivery()
 {
    changes_under_load(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_replicas_the_same_changes_replica_by_replica_under_load_refuse_no_delivery() {
    changes_under_load(2).await;
}

/// The settings files of every replica of `service` (`ingest.toml`, or
/// `ingest@1.toml`, `ingest@2.toml`, ...).
fn configs_of(config: &Path, service: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(config)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == format!("{service}.toml")
                    || (n.starts_with(&format!("{service}@")) && n.ends_with(".toml"))
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no settings of {service}");
    files
}

/// Replaces `from` by `to` once in each file, which must hold it.
fn edit_each(files: &[PathBuf], from: &str, to: &str) {
    for file in files {
        let text = read(file);
        assert!(text.contains(from), "{}: no {from:?}", file.display());
        std::fs::write(file, text.replacen(from, to, 1)).unwrap();
    }
}

async fn changes_under_load(replicas: u16) {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state");
    let bin = bin_dir(dir.path());
    let ports: [u16; 16] = if replicas == 1 {
        std::array::from_fn(|_| free_port())
    } else {
        replica_ports()
    };
    let bin_arg = bin.display().to_string();
    let replicas_arg = replicas.to_string();
    let _stack = up_with(
        &state,
        ports,
        &[
            "--hooks-rate-limit",
            "0",
            "--bin-dir",
            &bin_arg,
            "--replicas",
            &replicas_arg,
        ],
    );
    let stack = StackFile::read(&state).unwrap();
    let nginx = Target::new(
        stack.public_url.as_deref().unwrap(),
        stack.tls_cert.as_deref(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let secrets = state.join("secrets");
    let config = state.join("config");

    let shared = Arc::new(Senders {
        secret: Mutex::new(read(&secrets.join("github.secret")).trim().to_owned()),
        deployments: AtomicBool::new(false),
        counts: Mutex::new(Counts::default()),
        stop: AtomicBool::new(false),
    });
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(send_all(nginx.clone(), shared.clone(), s)))
        .collect();
    let acknowledged = || shared.counts.lock().unwrap().acknowledged.len();
    let progress = async || {
        let at = acknowledged() + BETWEEN_CHANGES;
        eventually("load progress", Duration::from_secs(60), async || {
            acknowledged() >= at
        })
        .await;
    };

    // 1. Rotate github's secret: the new one beside the old, reload; the
    //    senders switch; the old one removed, reload.
    progress().await;
    let new_secret = "rotated-github-secret-0123456789abcdef";
    let next = secrets.join("github.next.secret");
    std::fs::write(&next, new_secret).unwrap();
    let ingest_tomls = configs_of(&config, "ingest");
    let old_line = format!(
        "secrets = [{{ file = '{}' }}]",
        secrets.join("github.secret").display()
    );
    let both = format!(
        "secrets = [{{ file = '{}' }}, {{ file = '{}' }}]",
        secrets.join("github.secret").display(),
        next.display()
    );
    let only_new = format!("secrets = [{{ file = '{}' }}]", next.display());
    edit_each(&ingest_tomls, &old_line, &both);
    reload(&state);
    progress().await;
    *shared.secret.lock().unwrap() = new_secret.to_owned();
    progress().await;
    edit_each(&ingest_tomls, &both, &only_new);
    reload(&state);
    progress().await;

    // 2. A routing rule and an agent for its kind, in one reload.
    for file in configs_of(&config, "task-dispatcher") {
        let text = read(&file);
        let first_rule = text.find("[[routes]]").expect("a routes section");
        let rule = "[[routes]]\nevent_types = [\"deployment\"]\nkind = \"deploy\"\n\n";
        std::fs::write(
            &file,
            format!("{}{rule}{}", &text[..first_rule], &text[first_rule..]),
        )
        .unwrap();
    }
    let created = ravectl()
        .args([
            "agents",
            "create",
            "deployer",
            "--kinds",
            "deploy",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(created.status.success());
    reload(&state);
    shared.deployments.store(true, Ordering::Relaxed);
    progress().await;
    let deployer = read(&secrets.join("agent-deployer.token"))
        .trim()
        .to_owned();
    let claimed: Value = http
        .post(format!("{}/v1/agents/claim", stack.dispatcher_url))
        .bearer_auth(&deployer)
        .json(&json!({"max_tasks": 5, "wait_secs": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claimed = claimed["tasks"].as_array().cloned().unwrap_or_default();
    assert!(
        !claimed.is_empty() && claimed.iter().all(|t| t["kind"] == "deploy"),
        "the new agent claims the new rule's tasks: {claimed:?}"
    );

    // 3. Every service restarted in turn, callees first.
    restart(
        &state,
        &["task-dispatcher", "agent-reporter", "dedup-store", "ingest"],
    );
    progress().await;

    // 4. A new ingest binary on disk (a new file, as a deploy writes it),
    //    put in place by a restart.
    let first_ingest = if replicas == 1 { "ingest" } else { "ingest@1" };
    let running = StackFile::read(&state).unwrap().components[first_ingest].0;
    let staged = bin.join("ingest.new");
    std::fs::copy(bin.join("ingest"), &staged).unwrap();
    std::fs::rename(&staged, bin.join("ingest")).unwrap();
    assert!(
        exe_of(running).ends_with("(deleted)"),
        "the old binary is gone"
    );
    restart(&state, &["ingest"]);
    let replaced = StackFile::read(&state).unwrap().components[first_ingest].0;
    assert_ne!(replaced, running);
    assert_eq!(exe_of(replaced), bin.join("ingest").display().to_string());
    progress().await;

    shared.stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let counts = std::mem::take(&mut *shared.counts.lock().unwrap());

    // Every acknowledged delivery stored once, and one task for each.
    let operator = read(&secrets.join("operator.token")).trim().to_owned();
    let events = all_pages(
        &http,
        &format!("{}/v1/events?source=github&limit=500", stack.store_url),
        "events",
        Some(&operator),
    )
    .await;
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        *stored
            .entry(e["event_uuid"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let tasks_url = format!("{}/v1/tasks?limit=500", stack.dispatcher_url);
    let mut tasks = Vec::new();
    eventually(
        "a task for every event",
        Duration::from_secs(60),
        async || {
            tasks = all_pages(&http, &tasks_url, "tasks", Some(&operator)).await;
            tasks.len() >= events.len()
        },
    )
    .await;
    let mut task_ids: Vec<&str> = tasks
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    task_ids.sort_unstable();
    task_ids.dedup();
    let deploy_tasks = tasks.iter().filter(|t| t["kind"] == "deploy").count();
    let deployments = counts
        .acknowledged
        .values()
        .filter(|e| **e == "deployment")
        .count();
    let nginx_log = std::fs::read_to_string(state.join("logs/nginx-error.log")).unwrap_or_default();
    // A connection nginx could not open (refused, timed out) or found no
    // replica for. A request sent on a kept-alive connection the old
    // process closed at that moment is logged too ("prematurely closed"),
    // but nginx sends it again on a new connection (hooks are idempotent,
    // `non_idempotent` in the site), so the sender never sees it: counted,
    // not refused.
    let upstream_errors: Vec<&str> = nginx_log
        .lines()
        .filter(|l| {
            l.contains("[error]")
                && (l.contains("connect() failed") || l.contains("no live upstreams"))
        })
        .collect();
    let nginx_refused = upstream_errors.len();
    let resent = nginx_log
        .lines()
        .filter(|l| l.contains("prematurely closed"))
        .count();
    eprintln!(
        "changes under load, {replicas} replica(s) of each service: {} deliveries acknowledged, {} refused ({:?}), {} broken connections; \
         {} stored ({} more than once), {} tasks ({} distinct), {} deployments → {} deploy tasks; \
         nginx refused {nginx_refused} upstream connections and sent {resent} requests again \
         on a new connection",
        counts.acknowledged.len(),
        counts.refused.values().sum::<usize>(),
        counts.refused,
        counts.broken,
        stored.len(),
        stored.values().filter(|n| **n > 1).count(),
        tasks.len(),
        task_ids.len(),
        deployments,
        deploy_tasks,
    );
    assert!(
        counts.refused.is_empty(),
        "answers other than 2xx: {:?}",
        counts.refused
    );
    assert_eq!(counts.broken, 0, "connections that failed");
    assert!(
        upstream_errors.is_empty(),
        "nginx's upstream errors:\n{}",
        upstream_errors.join("\n")
    );
    for delivery in counts.acknowledged.keys() {
        assert_eq!(stored.get(delivery), Some(&1), "{delivery} stored once");
    }
    assert_eq!(
        stored.len(),
        counts.acknowledged.len(),
        "nothing stored unacknowledged"
    );
    assert_eq!(
        (tasks.len(), task_ids.len()),
        (events.len(), events.len()),
        "one task per event"
    );
    assert!(deployments > 0, "deployments were sent");
    assert_eq!(
        deploy_tasks, deployments,
        "the new rule routed every deployment"
    );
}
