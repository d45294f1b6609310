//! Replays racing intake and each other, hostile content replayed, and a
//! replayed task's trace.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn replays_racing_new_intake_and_each_other_make_one_task_per_event_per_request() {
    let p = pipeline().await;
    p.stored((0..150).map(|n| push(n, "main")).collect()).await;
    let originals: Vec<String> = {
        let c = p.tasks_db.connect().await.unwrap();
        c.query("SELECT task_id FROM tasks ORDER BY task_id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let replay = |id: &'static str| {
        let p = &p;
        async move {
            p.replay(
                json!({"request_id": id, "dry_run": false, "filter": {"event_types": ["push"]}}),
            )
            .await
        }
    };
    let intake = async {
        let statuses = p.send((150..250).map(|n| push(n, "dev")).collect()).await;
        p.drain().await;
        statuses
    };
    // Request "a" twice at once (a retried call), "b" beside them, and new
    // deliveries arriving and relayed meanwhile.
    let ((a1, a2, b), statuses) = tokio::join!(
        async { tokio::join!(replay("a"), replay("a"), replay("b")) },
        intake
    );
    assert!(statuses.iter().all(|s| *s == 202));
    for (status, answer) in [&a1, &a2, &b] {
        assert_eq!(*status, 200, "{answer}");
    }
    p.drain().await;

    // New intake: every delivery one task of its own.
    assert_eq!(
        p.count(
            "SELECT count(*) FROM tasks WHERE task_id NOT IN (SELECT task_id FROM replayed_tasks)"
        )
        .await,
        250
    );
    for request in ["a", "b"] {
        let client = p.tasks_db.connect().await.unwrap();
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT original_task_id), count(t.task_id)
                 FROM replayed_tasks r LEFT JOIN tasks t USING (task_id) WHERE r.request_id = $1",
                &[&request],
            )
            .await
            .unwrap();
        let (links, distinct, tasks): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (links, distinct),
            (tasks, tasks),
            "request {request}: one task per event"
        );
        // At least the events stored before it began; never more than all.
        assert!((150..=250).contains(&tasks), "request {request}: {tasks}");
        let matched: i64 = p
            .tasks_db
            .scalar(&format!(
                "SELECT matched::bigint FROM replays WHERE request_id = '{request}'"
            ))
            .await;
        assert!(matched >= 150, "{request}: {matched}");
    }
    // The originals are as they were: queued, unchanged, not replays.
    let c = p.tasks_db.connect().await.unwrap();
    let still: i64 = c
        .query_one(
            "SELECT count(*) FROM tasks WHERE task_id = ANY($1) AND state = 'queued' AND attempt = 0",
            &[&originals],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 150);
}

/// Bodies that are signed correctly but hostile, as the content test sends.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(br#"{"ref":"a\u0000b"}"#.to_vec()),
        Just(br#"{"ref":"\ud800 lone"}"#.to_vec()),
        Just(br#"{"ref":1e999}"#.to_vec()),
        (1usize..=120)
            .prop_map(|d| format!(r#"{{"ref":{}1{}}}"#, "[".repeat(d), "]".repeat(d)).into_bytes()),
        Just(b"not json".to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,40}".prop_map(
            |s| format!(r#"{{"ref":{}}}"#, serde_json::to_string(&s).unwrap()).into_bytes()
        ),
        (0u32..1000).prop_map(|n| format!(r#"{{"ref":"refs/heads/main","n":{n}}}"#).into_bytes()),
    ]
}

#[test]
fn hostile_events_are_searched_and_replayed_like_any_each_once_with_no_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let p = runtime.block_on(pipeline());
    let config = ProptestConfig {
        cases: 4,
        max_shrink_iters: 8,
        ..ProptestConfig::default()
    };
    let case = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(bodies in prop::collection::vec(hostile_body(), 60))| {
        runtime.block_on(async {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let deliveries = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("hostile-{n}-{i}"), "push", b.clone()))
                .collect();
            let statuses = p.send(deliveries).await;
            prop_assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
            p.drain().await;
            // A body condition over hostile bodies: an answer, never a 5xx.
            let (status, diff) = p
                .operator("/v1/routes/diff", &json!({"routes_toml": FIXED_ROUTES,
                    "filter": {"where": [{"pointer": "/ref", "exists": true}]}}))
                .await;
            prop_assert_eq!(status, 200, "{}", diff);
            let request = format!("hostile-{n}");
            let (status, answer) = p
                .replay(json!({"request_id": request, "dry_run": false, "filter": {"source": "github"}}))
                .await;
            prop_assert_eq!(status, 200, "{}", answer);
            let stored = p.events_db.scalar("SELECT count(*) FROM events").await;
            prop_assert_eq!(answer["matched"].as_i64(), Some(stored));
            // Each stored event: one replayed task, ignore or quarantine record.
            let outcomes = p
                .count(&format!(
                    "SELECT (SELECT count(*) FROM replayed_tasks WHERE request_id = '{request}')
                          + (SELECT count(*) FROM quarantined_events q
                             WHERE convert_from(q.event, 'UTF8')::jsonb #>> '{{replay,request_id}}' = '{request}')"
                ))
                .await;
            prop_assert_eq!(outcomes, stored);
            Ok(())
        })?;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_task_has_a_trace_of_its_own_that_links_to_the_original_events() {
    let _exclusive = exclusive().await;
    let (receiver, telemetry) = telemetry();
    let p = pipeline().await;
    p.stored(vec![push(0, "main")]).await;
    let client = p.tasks_db.connect().await.unwrap();
    let original: String = client
        .query_one("SELECT split_part(traceparent, '-', 2) FROM tasks", &[])
        .await
        .unwrap()
        .get(0);
    let (status, answer) = p
        .replay(json!({"request_id": "traced", "dry_run": false}))
        .await;
    assert_eq!(
        (status, answer["created"].as_i64()),
        (200, Some(1)),
        "{answer}"
    );
    let replayed: String = client
        .query_one(
            "SELECT task_id FROM replayed_tasks WHERE request_id = 'traced'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The agent claims it: its claim joins the replay's trace.
    let claimed: Value = p
        .http
        .post(format!("{}/v1/agents/claim", p.dispatcher_url))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"max_tasks": 2, "wait_secs": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claimed["tasks"].as_array().unwrap().len(), 2);

    let spans = flushed_spans(receiver, telemetry, |spans| {
        let names: Vec<&str> = spans
            .iter()
            .filter(|s| s.task_id.as_deref() == Some(replayed.as_str()))
            .map(|s| s.name.as_str())
            .collect();
        names.contains(&"task.replay") && names.contains(&"task.claim")
    })
    .await;
    let of = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.task_id.as_deref() == Some(replayed.as_str()))
            .unwrap_or_else(|| panic!("no {name} span for {replayed}"))
    };
    let replay = of("task.replay");
    assert_ne!(replay.trace_id, original, "a trace of its own");
    assert_eq!(
        replay.links,
        std::slice::from_ref(&original),
        "linked to the original event's trace"
    );
    assert_eq!(of("task.claim").trace_id, replay.trace_id);
    assert!(
        spans
            .iter()
            .filter(|s| s.trace_id == original)
            .all(|s| s.task_id.as_deref() != Some(replayed.as_str())),
        "the original's trace holds nothing of the replay"
    );
}
