//! Several reporter replicas over one database: an agent's reports may land
//! on any of them, and each group has one pusher at a time.

use test_support::pushgateway::{Pushgateway, find_sample};

use crate::helpers::{jobs_of, report, spawn_reporter, spawn_reporter_on};

#[tokio::test]
async fn reports_landing_on_two_replicas_add_up_in_one_group() {
    let gateway = Pushgateway::start().await.unwrap();
    let a = spawn_reporter(Some(&gateway.url)).await;
    let b = spawn_reporter_on(a.db.clone(), Some(&gateway.url)).await;
    let retried = report("succeeded", 2.0);
    assert_eq!(a.post("agent-1", &retried).await.0, 202);
    assert_eq!(
        b.post("agent-1", &retried).await.0,
        200,
        "a retry reaching the other replica is still a duplicate"
    );
    for i in 0..6 {
        let replica = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            replica.post("agent-1", &report("succeeded", 1.0)).await.0,
            202
        );
        // Both replicas push at once after every report.
        let (x, y) = tokio::join!(a.pusher().push_once(), b.pusher().push_once());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.failed + y.failed, 0);
        assert_eq!(
            x.pushed + y.pushed,
            1,
            "one push per change, by one replica"
        );
    }
    assert_eq!(
        find_sample(
            &gateway.metrics().await,
            "agent_jobs_total",
            &[("agent", "agent-1"), ("status", "succeeded")]
        ),
        Some(7.0)
    );
}

#[tokio::test]
async fn a_group_another_replica_is_pushing_is_skipped_and_pushed_later() {
    let gateway = Pushgateway::start().await.unwrap();
    let a = spawn_reporter(Some(&gateway.url)).await;
    let b = spawn_reporter_on(a.db.clone(), Some(&gateway.url)).await;
    a.post("agent-1", &report("succeeded", 1.0)).await;
    a.post("agent-2", &report("succeeded", 1.0)).await;

    // Stand in for a replica caught mid-push of agent-1's group: its claim
    // is committed, and no transaction of it is open.
    let other = a.db.connect().await.unwrap();
    other
        .execute(
            "UPDATE agent_groups SET push_claimed_by = 'other',
                    push_claimed_until = now() + interval '1 hour'
             WHERE agent = 'agent-1'",
            &[],
        )
        .await
        .unwrap();
    let open: i64 = other
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'
             AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
    let summary = b.pusher().push_once().await.unwrap();
    assert_eq!((summary.pushed, summary.skipped), (1, 1));
    let text = gateway.metrics().await;
    assert_eq!(jobs_of(&text, "agent-1"), None);
    assert_eq!(jobs_of(&text, "agent-2"), Some(1.0));

    // The holder died without pushing: once its claim runs out, the group
    // is still due.
    other
        .execute(
            "UPDATE agent_groups SET push_claimed_until = now() - interval '1 second'
             WHERE agent = 'agent-1'",
            &[],
        )
        .await
        .unwrap();
    let summary = b.pusher().push_once().await.unwrap();
    assert_eq!((summary.pushed, summary.skipped), (1, 0));
    assert_eq!(jobs_of(&gateway.metrics().await, "agent-1"), Some(1.0));
}
