//! The restore drill: a stack under load is backed up, its cluster is
//! destroyed and restored to a point in time, and then counted. Every event
//! acknowledged before that point is there once with its task, and the
//! senders' retries afterwards store the rest without one duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use super::{eventually, free_port, ravectl, up_with};

/// Each delivery's acknowledgement time, by delivery id.
type Acked = Arc<Mutex<BTreeMap<String, OffsetDateTime>>>;

const SENDERS: usize = 4;

/// Sends `drill-<n>` deliveries to ingest, each until a 2xx, until `stop`.
async fn send_until(
    ingest: String,
    secret: String,
    first: usize,
    acked: Acked,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::new();
    for n in (first..).step_by(SENDERS) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let delivery = format!("drill-{n:05}");
        deliver(&http, &ingest, &secret, &delivery).await;
        acked
            .lock()
            .unwrap()
            .insert(delivery, OffsetDateTime::now_utc());
    }
}

/// One signed GitHub delivery, retried until a 2xx; its status.
async fn deliver(http: &reqwest::Client, ingest: &str, secret: &str, delivery: &str) -> u16 {
    let body = format!("{{\"delivery\":\"{delivery}\"}}");
    let signature = rave_service::sign::github(secret, body.as_bytes());
    for _ in 0..100 {
        let sent = http
            .post(format!("{ingest}/hooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .send()
            .await;
        if let Ok(r) = sent
            && r.status().is_success()
        {
            return r.status().as_u16();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{delivery} was never acknowledged");
}

/// Every row of a paged listing (`events` or `tasks`).
async fn all(http: &reqwest::Client, url: &str, key: &str, token: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let sep = if url.contains('?') { '&' } else { '?' };
        let page: Value = http
            .get(format!("{url}{sep}limit=500&after={after}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        rows.extend(page[key].as_array().unwrap().iter().cloned());
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => return rows,
        }
    }
}

/// Delivery id → how many events, and the set of task ids they name.
async fn stored(
    http: &reqwest::Client,
    store: &str,
    token: &str,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut counts = BTreeMap::new();
    let mut tasks = Vec::new();
    for e in all(
        http,
        &format!("{store}/v1/events?source=github"),
        "events",
        token,
    )
    .await
    {
        *counts
            .entry(e["event_uuid"].as_str().unwrap().to_owned())
            .or_default() += 1;
        tasks.push(e["task_id"].as_str().unwrap().to_owned());
    }
    (counts, tasks)
}

async fn tasks(http: &reqwest::Client, dispatcher: &str, token: &str) -> BTreeSet<String> {
    all(http, &format!("{dispatcher}/v1/tasks"), "tasks", token)
        .await
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn outbox_drained(http: &reqwest::Client, store: &str) -> bool {
    let Ok(r) = http.get(format!("{store}/metrics")).send().await else {
        return false;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines().any(|l| l == "dedup_outbox_depth 0")
}

fn run(args: &[&str], state: &std::path::Path) -> String {
    let out = ravectl()
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ravectl {args:?}: {printed}");
    printed
}

#[tokio::test]
async fn a_point_in_time_restore_under_load_keeps_every_event_acknowledged_before_it_once_with_its_task()
 {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 16].map(|_| free_port());
    let stack = up_with(&state, ports, &["--backups"]);
    let secret = std::fs::read_to_string(state.join("secrets/github.secret")).unwrap();
    let operator = std::fs::read_to_string(state.join("secrets/operator.token")).unwrap();
    let (secret, operator) = (secret.trim().to_owned(), operator.trim().to_owned());
    let ingest = format!("http://127.0.0.1:{}", ports[0]);
    let store = format!("http://127.0.0.1:{}", ports[1]);
    let dispatcher = format!("http://127.0.0.1:{}", ports[3]);
    let http = reqwest::Client::new();

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|first| {
            tokio::spawn(send_until(
                ingest.clone(),
                secret.clone(),
                first,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let count = || acked.lock().unwrap().len();
    eventually("load", Duration::from_secs(60), async || count() >= 100).await;
    let backup = run(&["backup", "--type", "full"], &state);
    assert!(backup.contains("(full) finished"), "{backup}");
    let at_backup = count();
    eventually(
        "load after the backup",
        Duration::from_secs(60),
        async || count() >= at_backup + 100,
    )
    .await;
    let target = OffsetDateTime::now_utc();
    let at_target = count();
    eventually(
        "load after the target",
        Duration::from_secs(60),
        async || count() >= at_target + 100,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    // The next scheduled backup archives the WAL past the target.
    run(&["backup", "--type", "incr"], &state);
    // Deliveries after it are in WAL that is never archived: lost with the disk.
    for n in 0..20 {
        let delivery = format!("drill-late-{n:02}");
        deliver(&http, &ingest, &secret, &delivery).await;
        acked
            .lock()
            .unwrap()
            .insert(delivery, OffsetDateTime::now_utc());
    }

    drop(stack);
    std::fs::remove_dir_all(state.join("pg/data")).unwrap();
    let to = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        target.year(),
        u8::from(target.month()),
        target.day(),
        target.hour(),
        target.minute(),
        target.second(),
        target.microsecond()
    );
    let restoring = Instant::now();
    run(&["restore", "--to", &to], &state);
    let restore_secs = restoring.elapsed().as_secs_f64();
    let starting = Instant::now();
    let _stack = up_with(&state, ports, &["--backups"]);
    let start_secs = starting.elapsed().as_secs_f64();
    eventually("the outbox to drain", Duration::from_secs(60), async || {
        outbox_drained(&http, &store).await
    })
    .await;

    let acked = acked.lock().unwrap().clone();
    let (events, event_tasks) = stored(&http, &store, &operator).await;
    let task_ids = tasks(&http, &dispatcher, &operator).await;
    let before: Vec<&String> = acked
        .iter()
        .filter(|(_, at)| **at < target)
        .map(|(d, _)| d)
        .collect();
    for delivery in &before {
        assert_eq!(
            events.get(*delivery),
            Some(&1),
            "{delivery}, acknowledged before the restore point"
        );
    }
    assert!(events.values().all(|n| *n == 1), "no delivery stored twice");
    assert!(
        event_tasks.iter().all(|t| task_ids.contains(t)),
        "every restored event has its task"
    );
    let after = acked.len() - before.len();
    let survived = acked.keys().filter(|d| events.contains_key(*d)).count() - before.len();
    assert!(
        !events.keys().any(|d| d.starts_with("drill-late-")),
        "nothing after the last archived WAL survives"
    );

    // The senders retry what they have not seen answered since (GitHub's
    // redelivery, a reconcile): every delivery once, nothing twice.
    let mut answers = BTreeMap::<u16, usize>::new();
    for delivery in acked.keys() {
        *answers
            .entry(deliver(&http, &ingest, &secret, delivery).await)
            .or_default() += 1;
    }
    eventually("the outbox to drain", Duration::from_secs(60), async || {
        outbox_drained(&http, &store).await
    })
    .await;
    let (events, event_tasks) = stored(&http, &store, &operator).await;
    let task_ids = tasks(&http, &dispatcher, &operator).await;
    assert_eq!(
        events.len(),
        acked.len(),
        "every acknowledged delivery is stored"
    );
    assert!(events.values().all(|n| *n == 1), "none twice");
    assert_eq!(
        event_tasks.iter().collect::<BTreeSet<_>>().len(),
        events.len()
    );
    assert!(
        event_tasks.iter().all(|t| task_ids.contains(t)),
        "each with its task"
    );
    assert_eq!(task_ids.len(), events.len(), "and one task per event");
    eprintln!(
        "restore drill: {} deliveries acknowledged before the restore point, all {} present once with their task; \
         {after} after it: {survived} survived, {} stored again from the senders' retries; \
         retries answered {answers:?}; 0 duplicates; restore {restore_secs:.1} s, start with WAL replay {start_secs:.1} s",
        before.len(),
        before.len(),
        after - survived,
    );
}
