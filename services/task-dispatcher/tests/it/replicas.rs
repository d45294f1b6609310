//! Two task-dispatcher replicas over one database: agents may reach either,
//! a task created on one wakes claims waiting on the other, and background
//! work is divided, never done twice.

use std::collections::HashSet;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{
    LEASE_SECS, TestDispatcher, drain_as, event, sample, spawn_dispatcher, spawn_dispatcher_on,
};

/// Both replicas hold their LISTEN connection (it opens in the background).
async fn until_both_listen(d: &TestDispatcher) {
    let db = d.db.connect().await.unwrap();
    loop {
        let listening: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN %'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if listening >= 2 {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_task_created_on_one_replica_wakes_a_claim_waiting_on_the_other() {
    let a = spawn_dispatcher().await;
    let b = spawn_dispatcher_on(a.db.clone()).await;
    until_both_listen(&a).await;
    // Built without background loops, b has no due-task poll: only the
    // notification from a can wake its claim within the wait.
    let waiting = b.parked_claim("agent-3", 60).await;
    let id = a.push_task().await;
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "woken by the other replica's task");
    assert_eq!(body["tasks"][0]["task_id"], id.as_str());
}

#[tokio::test]
async fn agents_spread_over_two_replicas_complete_every_task_exactly_once() {
    let a = spawn_dispatcher().await;
    let b = spawn_dispatcher_on(a.db.clone()).await;
    for replica in [&a, &b] {
        let batch: Vec<Value> = (0..300)
            .map(|i| event("github", "push", json!({"n": i})))
            .collect();
        replica.handoff(&batch).await;
    }
    let mut agents = JoinSet::new();
    for i in 0..8 {
        // Each agent claims on one replica and completes on the other.
        let (claim_at, complete_at) = if i % 2 == 0 {
            (a.url.clone(), b.url.clone())
        } else {
            (b.url.clone(), a.url.clone())
        };
        agents.spawn(drain_as(
            a.http.clone(),
            format!("agent-{i}"),
            claim_at,
            complete_at,
        ));
    }
    let mut claimed = Vec::new();
    while let Some(result) = agents.join_next().await {
        claimed.extend(result.unwrap());
    }
    let distinct: HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), 600, "every task claimed once, none twice");
    assert_eq!(distinct.len(), 600);
    let db = a.db.connect().await.unwrap();
    let succeeded: i64 = db
        .query_one(
            "SELECT count(*) FROM task_attempts WHERE outcome = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(succeeded, 600);
}

#[tokio::test]
async fn two_replicas_expiring_leases_at_once_return_each_lost_lease_once() {
    let a = spawn_dispatcher().await;
    let b = spawn_dispatcher_on(a.db.clone()).await;
    let batch: Vec<Value> = (0..120)
        .map(|i| event("github", "push", json!({"n": i})))
        .collect();
    a.handoff(&batch).await;
    let mut leased = 0;
    while leased < 120 {
        leased += a.claim_now("agent-1", 50).await.len();
    }
    for replica in [&a, &b] {
        replica.advance(LEASE_SECS + 1);
    }
    let (mut from_a, mut from_b) = (0, 0);
    loop {
        let (x, y) = tokio::join!(
            a.maintenance.expire_leases_once(),
            b.maintenance.expire_leases_once()
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        if x + y == 0 {
            break;
        }
        (from_a, from_b) = (from_a + x, from_b + y);
    }
    assert_eq!(from_a + from_b, 120, "each lease lost once, by one replica");
    let losses = |metrics: &str| sample(metrics, "dispatcher_lease_losses_total{kind=\"build\"}");
    assert_eq!(
        losses(&a.metrics().await) + losses(&b.metrics().await),
        120.0
    );
    let db = a.db.connect().await.unwrap();
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'queued'),
                    (SELECT count(*) FROM task_attempts WHERE outcome = 'lease_lost')
             FROM tasks",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (120, 120));
}
