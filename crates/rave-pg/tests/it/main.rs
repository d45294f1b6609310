//! rave-pg against a real PostgreSQL that also speaks TLS, with its
//! self-signed certificate as the trusted root.

use rave_pg::{DatabaseSettings, SslMode};
use test_support::pg::PgCluster;

async fn settings() -> DatabaseSettings {
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = db.settings();
    settings.sslmode = SslMode::VerifyFull;
    settings.sslrootcert = Some(PgCluster::shared().tls_cert.clone());
    settings
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn verify_full_connects_the_pool_and_a_listen_connection_over_tls() {
    let settings = settings().await;
    settings.validate("database").unwrap();
    let pool = rave_pg::pool(&settings, "tls-test").unwrap();
    let client = pool.get().await.unwrap();
    assert!(uses_tls(&client).await, "pooled connection in the clear");

    let (client, mut messages) = rave_pg::connect(&settings, "tls-listen").await.unwrap();
    let driver = tokio::spawn(async move {
        use futures_util::StreamExt as _;
        while messages.next().await.is_some() {}
    });
    assert!(uses_tls(&client).await, "LISTEN connection in the clear");
    drop(client);
    driver.await.unwrap();
}

#[tokio::test]
async fn disabled_tls_connects_in_the_clear() {
    let mut settings = settings().await;
    settings.sslmode = SslMode::Disable;
    let client = rave_pg::pool(&settings, "plain")
        .unwrap()
        .get()
        .await
        .unwrap();
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn a_server_whose_certificate_is_not_trusted_is_refused() {
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = ravectl::tls::ensure_certificate(other.path()).unwrap();
    let mut settings = settings().await;
    settings.sslrootcert = Some(stranger);
    let pool = rave_pg::pool(&settings, "untrusted").unwrap();
    let error = format!("{:#}", anyhow::Error::new(pool.get().await.unwrap_err()));
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[test]
fn verify_full_without_a_root_certificate_is_refused_at_start() {
    let mut settings = DatabaseSettings {
        host: "db.example.com".into(),
        port: 5432,
        user: "rave_dedup_store".into(),
        password: None,
        dbname: "rave_dedup_store".into(),
        pool_size: 4,
        connect_timeout_ms: 1000,
        sslmode: SslMode::VerifyFull,
        sslrootcert: None,
        timeouts: Default::default(),
    };
    let error = settings.validate("database").unwrap_err().to_string();
    assert!(error.contains("sslrootcert"), "{error}");

    let empty = tempfile::NamedTempFile::new().unwrap();
    settings.sslrootcert = Some(empty.path().to_owned());
    let error = settings.validate("database").unwrap_err().to_string();
    assert!(error.contains("no certificate"), "{error}");
}

async fn plain_settings() -> DatabaseSettings {
    let mut settings = settings().await;
    settings.sslmode = SslMode::Disable;
    settings
}

/// A table `held` with one row, and a session holding that row's lock in
/// a transaction it leaves open.
async fn a_session_holding_a_row_lock(pool: &rave_pg::Pool) -> deadpool_postgres::Object {
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE held (id int PRIMARY KEY); INSERT INTO held VALUES (1)")
        .await
        .unwrap();
    let holder = pool.get().await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT id FROM held WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    holder
}

#[tokio::test]
async fn a_statement_waiting_on_a_stuck_lock_fails_after_the_lock_timeout_instead_of_waiting_forever()
 {
    let mut settings = plain_settings().await;
    settings.timeouts.lock_ms = 200;
    let pool = rave_pg::pool(&settings, "lock-test").unwrap();
    // One session takes the row lock and keeps its transaction open.
    let holder = a_session_holding_a_row_lock(&pool).await;

    let waiter = pool.get().await.unwrap();
    let error = waiter
        .execute("UPDATE held SET id = 2 WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "{error}"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn every_session_carries_the_configured_statement_lock_and_idle_transaction_timeouts() {
    let mut settings = plain_settings().await;
    settings.timeouts.statement_ms = 1234;
    settings.timeouts.lock_ms = 567;
    settings.timeouts.idle_in_transaction_ms = 8900;
    let show = |client: tokio_postgres::Client| async move {
        let row = client
            .query_one(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), \
                 current_setting('idle_in_transaction_session_timeout')",
                &[],
            )
            .await
            .unwrap();
        (0..3).map(|i| row.get::<_, String>(i)).collect::<Vec<_>>()
    };
    let expected = vec!["1234ms".to_owned(), "567ms".to_owned(), "8900ms".to_owned()];

    let pool = rave_pg::pool(&settings, "timeouts").unwrap();
    let pooled = pool.get().await.unwrap();
    let row = pooled
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "1234ms");

    let (client, mut messages) = rave_pg::connect(&settings, "timeouts-listen")
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        use futures_util::StreamExt as _;
        while messages.next().await.is_some() {}
    });
    assert_eq!(show(client).await, expected);
    driver.await.unwrap();
}

#[tokio::test]
async fn a_statement_running_past_the_statement_timeout_is_cancelled() {
    let mut settings = plain_settings().await;
    settings.timeouts.statement_ms = 100;
    let client = rave_pg::pool(&settings, "slow")
        .unwrap()
        .get()
        .await
        .unwrap();
    let error = client
        .execute("SELECT pg_sleep(30)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
}

#[tokio::test]
async fn a_session_left_idle_inside_a_transaction_is_closed_and_its_locks_released() {
    let mut settings = plain_settings().await;
    settings.timeouts.idle_in_transaction_ms = 100;
    settings.timeouts.lock_ms = 0;
    let pool = rave_pg::pool(&settings, "idle").unwrap();
    let holder = a_session_holding_a_row_lock(&pool).await;
    // With no lock timeout, this waits exactly until the server ends the
    // idle transaction above.
    let waiter = pool.get().await.unwrap();
    waiter
        .execute("UPDATE held SET id = 2 WHERE id = 1", &[])
        .await
        .unwrap();
    assert!(
        holder.batch_execute("COMMIT").await.is_err(),
        "the idle session was closed"
    );
}

#[test]
fn keepalives_that_could_never_fire_are_refused_at_start() {
    let mut settings = DatabaseSettings {
        host: "127.0.0.1".into(),
        port: 5432,
        user: "rave".into(),
        password: None,
        dbname: "rave".into(),
        pool_size: 4,
        connect_timeout_ms: 1000,
        sslmode: SslMode::Disable,
        sslrootcert: None,
        timeouts: Default::default(),
    };
    settings.validate("database").unwrap();
    settings.timeouts.keepalive_retries = 0;
    let error = settings.validate("database").unwrap_err().to_string();
    assert!(error.contains("database.timeouts"), "{error}");
}
