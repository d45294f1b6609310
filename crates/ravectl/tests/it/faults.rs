//! Faults under load, counted. A load generator sends signed webhooks
//! through nginx and retries anything not 2xx, as senders do; meanwhile each
//! RAVE service is killed with SIGKILL in turn (`ravectl up` restarts it, as
//! systemd does on a host), PostgreSQL is restarted, and the Pushgateway
//! stops answering for a while. With two replicas of each service, one
//! replica of every service is killed at once, then the other. Afterwards
//! every acknowledged delivery must be stored exactly once, have exactly one
//! task, and that task must have completed exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ravectl::bench::http::{Conn, Target, request};
use ravectl::stack::StackFile;
use serde_json::Value;

use super::{
    eventually, family_total, free_port, ravectl, replica_ports, up_with, webhook_requests,
};

const SENDERS: usize = 4;
/// Acknowledged deliveries between one fault and the next.
const BETWEEN_FAULTS: usize = 40;
const SERVICES: [&str; 4] = ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"];

/// The reference agent, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn secret(state: &Path, name: &str) -> String {
    std::fs::read_to_string(state.join("secrets").join(name))
        .unwrap()
        .trim()
        .to_owned()
}

fn pid_of(state: &Path, name: &str) -> u32 {
    StackFile::read(state).unwrap().components[name].0
}

#[derive(Default)]
struct Load {
    acknowledged: BTreeMap<String, u16>,
    attempts: usize,
    refused: usize,
}

/// Sends deliveries `sender`, `sender + SENDERS`, ... through nginx until
/// `stop`, each retried until a 2xx, as GitHub's redelivery or a Standard
/// Webhooks sender would; returns how many it started.
async fn send_all(
    nginx: Target,
    secret: String,
    sender: usize,
    load: Arc<Mutex<Load>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut conn: Option<Conn> = None;
    let mut started = 0;
    for i in (sender..).step_by(SENDERS) {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return started;
        }
        started += 1;
        // A steady rate rather than a burst, so the faults land mid-load.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let delivery = format!("fault-{i:04}");
        let body = format!("{{\"n\":{i}}}");
        let signature = rave_service::sign::github(&secret, body.as_bytes());
        let raw = request(
            "POST",
            nginx.host(),
            "/hooks/github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "push"),
                ("x-github-delivery", &delivery),
                ("x-hub-signature-256", &signature),
            ],
            body.as_bytes(),
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let sent = tokio::time::timeout(Duration::from_secs(15), async {
                if conn.is_none() {
                    conn = Some(nginx.connect().await?);
                }
                conn.as_mut().expect("connected").send(&raw).await
            })
            .await;
            let status = match sent {
                Ok(Ok(response)) => {
                    if response.close {
                        conn = None;
                    }
                    response.status
                }
                // A broken connection or no answer: reconnect and resend.
                _ => {
                    conn = None;
                    0
                }
            };
            let done = {
                let mut load = load.lock().unwrap();
                load.attempts += 1;
                if (200..300).contains(&status) {
                    load.acknowledged.insert(delivery.clone(), status);
                    true
                } else {
                    load.refused += 1;
                    false
                }
            };
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "{delivery} never acknowledged");
            // A sender's retry delay.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started
}

async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Every item of a paged listing (`next_after`).
pub(crate) async fn all_pages(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    token: Option<&str>,
) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let page_url = match after {
            Some(a) => format!("{url}&after={a}"),
            None => url.to_owned(),
        };
        let page = get_json(http, &page_url, token).await;
        items.extend(page[key].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_each_service_and_restarting_postgresql_under_load_loses_and_duplicates_nothing() {
    faults_under_load(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_each_service_replica_by_replica_under_load_loses_and_duplicates_nothing() {
    faults_under_load(2).await;
}

/// SIGKILLs `name` and waits until `ravectl up` has it back, ready.
async fn kill_and_await_restart(state: &Path, http: &reqwest::Client, name: &str) -> u32 {
    let stack = StackFile::read(state).unwrap();
    let before = pid_of(state, name);
    let killed = Command::new("kill")
        .args(["-KILL", &before.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let ready_url = format!("http://127.0.0.1:{}/readyz", stack.components[name].1);
    eventually(
        &format!("{name} restarted"),
        Duration::from_secs(30),
        async || {
            pid_of(state, name) != before
                && http
                    .get(&ready_url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
    before
}

async fn faults_under_load(replicas: u16) {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().to_path_buf();
    let ports: [u16; 16] = if replicas == 1 {
        std::array::from_fn(|_| free_port())
    } else {
        replica_ports()
    };
    // The load comes from one address: lift nginx's per-address limit.
    let replicas_arg = replicas.to_string();
    let _stack = up_with(
        &state,
        ports,
        &["--hooks-rate-limit", "0", "--replicas", &replicas_arg],
    );
    let stack = StackFile::read(&state).unwrap();
    let nginx = Target::new(
        stack.public_url.as_deref().unwrap(),
        stack.tls_cert.as_deref(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let operator = secret(&state, "operator.token");

    let agent = || {
        Agent(
            ravectl()
                .args([
                    "agent",
                    "--simulate-ms",
                    "5",
                    "--wait-secs",
                    "5",
                    "--state-dir",
                ])
                .arg(&state)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut running_agent = agent();

    let load = Arc::new(Mutex::new(Load::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            tokio::spawn(send_all(
                nginx.clone(),
                secret(&state, "github.secret"),
                s,
                load.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let acknowledged = || load.lock().unwrap().acknowledged.len();

    // The agent dies mid-task (SIGKILL): the tasks it held come back when
    // their leases run out, and its successor completes them.
    eventually("load progress", Duration::from_secs(60), async || {
        acknowledged() >= BETWEEN_FAULTS
    })
    .await;
    let leased_url = format!("{}/v1/tasks?limit=500&state=leased", stack.dispatcher_url);
    let leased = async || -> Vec<String> {
        all_pages(&http, &leased_url, "tasks", Some(&operator))
            .await
            .iter()
            .map(|t| t["task_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let orphaned = loop {
        eventually(
            "the agent holding a lease",
            Duration::from_secs(60),
            async || !leased().await.is_empty(),
        )
        .await;
        let _ = running_agent.0.kill();
        let _ = running_agent.0.wait();
        // Only the dead agent held leases: they are its orphans.
        let orphaned = leased().await;
        running_agent = agent();
        if !orphaned.is_empty() {
            break orphaned;
        }
    };
    eprintln!(
        "fault: killed the agent holding {} leased tasks",
        orphaned.len()
    );

    // One service at a time, SIGKILL, at a point where the load is running;
    // with replicas, one replica of every service at once, then the other.
    let rounds: Vec<Vec<String>> = if replicas == 1 {
        SERVICES.iter().map(|s| vec![s.to_string()]).collect()
    } else {
        (1..=replicas)
            .map(|k| SERVICES.iter().map(|s| format!("{s}@{k}")).collect())
            .collect()
    };
    for names in rounds {
        let progress = acknowledged() + BETWEEN_FAULTS;
        eventually("load progress", Duration::from_secs(60), async || {
            acknowledged() >= progress
        })
        .await;
        if replicas > 1 {
            // nginx balances over every ingest replica again (one restarted
            // in the last round sits out its fail_timeout first).
            eventually(
                "every ingest replica serving",
                Duration::from_secs(60),
                async || {
                    for url in stack.service_urls("ingest") {
                        if webhook_requests(&http, &url).await == 0.0 {
                            return false;
                        }
                    }
                    true
                },
            )
            .await;
        }
        let at = acknowledged();
        let kills = names
            .iter()
            .map(|name| kill_and_await_restart(&state, &http, name));
        let before = futures_util::future::join_all(kills).await;
        eprintln!(
            "fault: killed {} (pids {before:?}) with {at} deliveries acknowledged; \
             {} more acknowledged until all were back",
            names.join(", "),
            acknowledged() - at
        );
        if replicas > 1 {
            assert!(
                acknowledged() > at,
                "the other replicas carried the load while these were down"
            );
        }
    }

    // PostgreSQL restarts under load: ingest spools, services reconnect.
    let progress = acknowledged() + BETWEEN_FAULTS;
    eventually("load progress", Duration::from_secs(60), async || {
        acknowledged() >= progress
    })
    .await;
    let postgres = ravectl::postgres::LocalPostgres::new(&state, ports[2]).unwrap();
    postgres.stop().unwrap();
    let down_at = acknowledged();
    eventually(
        "deliveries acknowledged while PostgreSQL is down",
        Duration::from_secs(30),
        async || acknowledged() >= down_at + 5,
    )
    .await;
    postgres.start().unwrap();
    eprintln!(
        "fault: restarted PostgreSQL; {} deliveries acknowledged while it was down",
        acknowledged() - down_at
    );

    // The Pushgateway stops answering for a while (SIGSTOP), then resumes.
    let pushgateway = pid_of(&state, "pushgateway");
    Command::new("kill")
        .args(["-STOP", &pushgateway.to_string()])
        .status()
        .unwrap();
    let frozen_at = acknowledged();
    eventually("load progress", Duration::from_secs(60), async || {
        acknowledged() >= frozen_at + 10
    })
    .await;
    Command::new("kill")
        .args(["-CONT", &pushgateway.to_string()])
        .status()
        .unwrap();

    let progress = acknowledged() + BETWEEN_FAULTS;
    eventually("load progress", Duration::from_secs(60), async || {
        acknowledged() >= progress
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for sender in senders {
        sent += sender.await.unwrap();
    }
    let load = std::mem::take(&mut *load.lock().unwrap());
    let acked: BTreeSet<String> = load.acknowledged.keys().cloned().collect();
    let spooled_or_accepted = load.acknowledged.values().filter(|s| **s == 202).count();

    // Every acknowledged delivery becomes one completed task.
    let tasks_url = format!("{}/v1/tasks?limit=500", stack.dispatcher_url);
    eventually(
        "every task completed",
        Duration::from_secs(180),
        async || {
            let tasks = all_pages(
                &http,
                &format!("{tasks_url}&state=succeeded"),
                "tasks",
                Some(&operator),
            )
            .await;
            tasks.len() >= acked.len()
        },
    )
    .await;

    let events = all_pages(
        &http,
        &format!("{}/v1/events?source=github&limit=500", stack.store_url),
        "events",
        Some(&operator),
    )
    .await;
    let tasks = all_pages(&http, &tasks_url, "tasks", Some(&operator)).await;
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    let mut event_tasks: BTreeSet<String> = BTreeSet::new();
    for event in &events {
        *stored
            .entry(event["event_uuid"].as_str().unwrap().to_owned())
            .or_default() += 1;
        event_tasks.insert(event["task_id"].as_str().unwrap().to_owned());
    }
    let mut task_ids: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        *task_ids
            .entry(task["task_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut completions = 0;
    let mut completed_twice = 0;
    for id in task_ids.keys() {
        let task = get_json(
            &http,
            &format!("{}/v1/tasks/{id}", stack.dispatcher_url),
            Some(&operator),
        )
        .await;
        let succeeded = task["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "succeeded")
            .count();
        completions += succeeded.min(1);
        completed_twice += usize::from(succeeded > 1);
    }
    // The dead agent's tasks: each succeeded exactly once, after losing its
    // lease; unless the completion the agent sent as it was killed had
    // already reached the dispatcher, which then committed it.
    let mut lease_lost = 0;
    for id in &orphaned {
        let task = get_json(
            &http,
            &format!("{}/v1/tasks/{id}", stack.dispatcher_url),
            Some(&operator),
        )
        .await;
        let outcomes: Vec<&str> = task["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap_or("running"))
            .collect();
        assert_eq!(task["state"], "succeeded", "{id}: {outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|o| **o == "succeeded").count(),
            1,
            "{id}: {outcomes:?}"
        );
        if outcomes.contains(&"lease_lost") {
            lease_lost += 1;
        } else {
            assert_eq!(
                outcomes,
                ["succeeded"],
                "{id}: the dead agent's own completion, or a lost lease"
            );
        }
    }
    eprintln!(
        "fault: of the killed agent's {} tasks, {lease_lost} lost their leases and were completed once by its successor, the rest by its last completion",
        orphaned.len()
    );
    let lost = acked.iter().filter(|d| !stored.contains_key(*d)).count();
    let stored_twice = stored.values().filter(|n| **n > 1).count();
    let tasks_twice = task_ids.values().filter(|n| **n > 1).count();
    let without_task = event_tasks
        .iter()
        .filter(|t| !task_ids.contains_key(*t))
        .count();
    eprintln!(
        "fault counts: sent {sent} deliveries in {} attempts ({} refused or failed, retried); \
         acknowledged {} ({} as 202); stored {}; tasks {}; completions {}; \
         duplicates {} (stored twice {stored_twice}, tasks twice {tasks_twice}, completed twice {completed_twice}); \
         lost {lost}; events without a task {without_task}",
        load.attempts,
        load.refused,
        acked.len(),
        spooled_or_accepted,
        stored.len(),
        task_ids.len(),
        completions,
        stored_twice + tasks_twice + completed_twice,
    );
    assert_eq!(acked.len(), sent, "every delivery started was acknowledged");
    assert_eq!(
        (lost, without_task),
        (0, 0),
        "acknowledged deliveries were lost"
    );
    assert_eq!((stored_twice, tasks_twice, completed_twice), (0, 0, 0));
    assert_eq!(stored.len(), sent);
    assert_eq!(task_ids.len(), sent);
    assert_eq!(completions, sent);

    // Crashes, outages and thousands of requests later, no log holds a secret.
    let mut secrets = Vec::new();
    for entry in std::fs::read_dir(state.join("secrets")).unwrap() {
        let path = entry.unwrap().path();
        let value = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        if value.len() >= 16 {
            secrets.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            ));
        }
    }
    assert!(secrets.len() >= 8, "{} secrets", secrets.len());
    let mut logs_read = 0;
    for entry in std::fs::read_dir(state.join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        logs_read += text.len();
        for (name, value) in &secrets {
            assert!(
                !text.contains(value.as_str()),
                "{} contains the secret {name}",
                path.display()
            );
        }
    }
    eprintln!(
        "fault: {} secrets absent from {} KB of logs",
        secrets.len(),
        logs_read / 1024
    );

    // The Pushgateway, back, holds the agent's job count.
    let jobs_url = format!("{}/metrics", stack.pushgateway_url.clone().unwrap());
    eventually(
        "the agent's reports reach the Pushgateway",
        Duration::from_secs(60),
        async || {
            let text = http
                .get(&jobs_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            family_total(&text, "agent_jobs_total") >= sent as f64
        },
    )
    .await;
    drop(running_agent);
}
