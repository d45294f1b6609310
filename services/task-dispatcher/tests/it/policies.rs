use serde_json::{Value, json};

use crate::helpers::event;
use crate::helpers::spawn_dispatcher;

fn merge_request(iid: u64) -> Value {
    event(
        "gitlab",
        "Merge Request Hook",
        json!({"project": {"id": 9}, "object_attributes": {"iid": iid}}),
    )
}

fn pull_request(number: u64) -> Value {
    event("github", "pull_request", json!({"number": number}))
}

#[tokio::test]
async fn a_newer_task_supersedes_queued_ones_and_asks_the_running_one_to_stop() {
    let d = spawn_dispatcher().await;
    let first = merge_request(1);
    d.handoff(std::slice::from_ref(&first)).await;
    let running = d.claim_now("agent-1", 1).await.remove(0);
    assert_eq!(running["task_id"], first["task_id"]);

    let (second, third, other) = (merge_request(1), merge_request(1), merge_request(2));
    d.handoff(&[second.clone(), third.clone(), other.clone()])
        .await;

    let state = |id: &Value| {
        let id = id.as_str().unwrap().to_owned();
        let d = &d;
        async move { d.task(&id).await }
    };
    let second_task = state(&second["task_id"]).await;
    assert_eq!(second_task["state"], "cancelled");
    assert_eq!(second_task["cancel_reason"], "superseded");
    assert_eq!(state(&third["task_id"]).await["state"], "queued");
    assert_eq!(
        state(&other["task_id"]).await["state"],
        "queued",
        "another merge request is not affected"
    );

    let (_, beat) = d
        .lease_call("agent-1", &running, "heartbeat", json!({}))
        .await;
    assert_eq!(beat["cancel_requested"], true);
    assert_eq!(beat["cancel_reason"], "superseded");

    let claimed: Vec<Value> = d
        .claim_now("agent-2", 10)
        .await
        .iter()
        .map(|t| t["task_id"].clone())
        .collect();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.contains(&third["task_id"]) && claimed.contains(&other["task_id"]));
}

#[tokio::test]
async fn serialize_runs_one_task_per_entity_at_a_time_in_order() {
    let d = spawn_dispatcher().await;
    let (a1, a2, a3, b1) = (
        pull_request(1),
        pull_request(1),
        pull_request(1),
        pull_request(2),
    );
    d.handoff(&[a1.clone(), a2.clone(), a3.clone(), b1.clone()])
        .await;

    let first: Vec<Value> = d.claim_now("agent-1", 10).await;
    let ids: Vec<&Value> = first.iter().map(|t| &t["task_id"]).collect();
    assert_eq!(ids.len(), 2, "one per entity: {ids:?}");
    assert!(ids.contains(&&a1["task_id"]) && ids.contains(&&b1["task_id"]));
    assert!(
        d.claim_now("agent-2", 10).await.is_empty(),
        "entity 1 is busy, entity 2 has nothing else"
    );

    let a1_task = first
        .iter()
        .find(|t| t["task_id"] == a1["task_id"])
        .unwrap();
    d.lease_call("agent-1", a1_task, "complete", json!({}))
        .await;
    let next = d.claim_now("agent-2", 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0]["task_id"], a2["task_id"],
        "creation order within the entity"
    );
    // A retry keeps its place: a2 failing does not let a3 jump ahead.
    d.lease_call("agent-2", &next[0], "fail", json!({"error": "flaky"}))
        .await;
    assert!(d.claim_now("agent-3", 10).await.is_empty());
    d.advance(60);
    let again = d.claim_now("agent-3", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["task_id"], a2["task_id"]);
}

#[tokio::test]
async fn concurrent_claims_on_two_replicas_never_lease_two_tasks_of_a_serialized_entity() {
    use std::sync::{Arc, Mutex};
    let a = spawn_dispatcher().await;
    let b = crate::helpers::spawn_dispatcher_on(a.db.clone()).await;
    // Ten entities, twenty tasks each, handed over interleaved.
    let events: Vec<Value> = (0..20).flat_map(|_| (1..=10).map(pull_request)).collect();
    a.handoff(&events).await;

    // Twenty agents over both replicas claim as fast as they can. Each
    // logs a task when it holds it, before completing it: a task of an
    // entity can only be claimed after the one before it is completed, so
    // the log is in claim order per entity.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut agents = tokio::task::JoinSet::new();
    for n in 0..20 {
        let url = if n % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let (http, log) = (a.http.clone(), log.clone());
        let agent = format!("agent-{n}");
        agents.spawn(async move {
            let mut idle = 0;
            while idle < 20 {
                let response = http
                    .post(format!("{url}/v1/agents/claim"))
                    .bearer_auth(crate::helpers::agent_token(&agent))
                    .json(&json!({"max_tasks": 5, "wait_secs": 0, "kinds": ["serial"]}))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    204 => {
                        idle += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    200 => idle = 0,
                    other => panic!(
                        "a claim answered {other}: {}",
                        response.text().await.unwrap()
                    ),
                }
                let body: Value = response.json().await.unwrap();
                for task in body["tasks"].as_array().unwrap() {
                    let id = task["task_id"].as_str().unwrap().to_owned();
                    log.lock().unwrap().push(id.clone());
                    let done = http
                        .post(format!("{url}/v1/tasks/{id}/complete"))
                        .bearer_auth(crate::helpers::agent_token(&agent))
                        .json(&json!({"lease_token": task["lease_token"]}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(done.status(), 200);
                }
            }
        });
    }
    while let Some(agent) = agents.join_next().await {
        agent.unwrap();
    }
    // Whatever the agents left (all idle at once) is drained here.
    loop {
        let rest = a.claim_now("agent-0", 10).await;
        if rest.is_empty() {
            break;
        }
        for task in &rest {
            log.lock()
                .unwrap()
                .push(task["task_id"].as_str().unwrap().to_owned());
            a.lease_call("agent-0", task, "complete", json!({})).await;
        }
    }

    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 200, "every task claimed once");
    let db = a.db.connect().await.unwrap();
    for entity in 1..=10 {
        let by_seq: Vec<String> = db
            .query(
                "SELECT task_id FROM tasks WHERE kind = 'serial' AND entity_key = (
                     SELECT entity_key FROM tasks WHERE kind = 'serial' AND (SELECT body FROM task_payloads p
                         WHERE p.task_id = tasks.task_id) = convert_to($1, 'UTF8') LIMIT 1)
                 ORDER BY seq",
                &[&json!({"number": entity}).to_string()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(by_seq.len(), 20, "entity {entity}");
        let claimed: Vec<&String> = log.iter().filter(|id| by_seq.contains(id)).collect();
        assert_eq!(
            claimed,
            by_seq.iter().collect::<Vec<_>>(),
            "entity {entity} ran one at a time, in order"
        );
    }
}
