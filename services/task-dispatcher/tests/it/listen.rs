//! The LISTEN connection against a network that fails silently.

use std::sync::Arc;
use std::time::Duration;

use task_dispatcher::store::WAKE_CHANNEL;
use task_dispatcher::waker::{self, Probe, Waker};
use test_support::pg::PgCluster;
use test_support::proxy::TcpProxy;

/// Guards a wait that the code under test must end; a hang is the bug.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting: {what}"))
}

#[tokio::test]
async fn a_half_open_listen_connection_is_detected_and_replaced_and_notifications_flow_again() {
    let db = PgCluster::shared().create_database().await.unwrap();
    let proxy = TcpProxy::start(db.port).await.unwrap();
    let mut settings = db.settings();
    settings.port = proxy.port;
    let waker = Arc::new(Waker::default());
    let lost = prometheus_client::metrics::counter::Counter::default();
    let probe = Probe {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(waker::listen(
        settings,
        probe,
        waker.clone(),
        lost.clone(),
        stopped,
    ));
    let mut listens = waker.listens();
    within("the first LISTEN", listens.wait_for(|n| *n == 1))
        .await
        .unwrap();

    // The network goes quiet: no FIN, no RST, nothing delivered.
    proxy.freeze_open_connections();
    within(
        "a second LISTEN after the probe goes unanswered",
        listens.wait_for(|n| *n == 2),
    )
    .await
    .unwrap();
    assert_eq!(lost.get(), 1, "the lost connection is counted");

    // A notification sent now reaches waiting claims over the new one;
    // one from an older release (no payload) wakes every claim.
    let build = [rave_service::ids::TaskKind::parse("build").unwrap()];
    let ticket = waker.register(&build, 1);
    let notifier = db.connect().await.unwrap();
    notifier
        .execute("SELECT pg_notify($1, '')", &[&WAKE_CHANNEL])
        .await
        .unwrap();
    within("a wake-up from the notification", ticket.woken()).await;

    // Another replica's new task wakes one waiting claim, the oldest; the
    // others wait on.
    let (first, second) = (waker.register(&build, 1), waker.register(&build, 1));
    let payload = waker::payload("another-replica", &[("build".to_owned(), 1)]);
    notifier
        .execute("SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &payload])
        .await
        .unwrap();
    within("the oldest claim woken", first.woken()).await;
    assert_eq!(
        waker.wanted(),
        (vec!["build".to_owned()], 1),
        "the second claim is still waiting"
    );
    drop(second);

    stop.send(true).unwrap();
    listener.await.unwrap();
}
