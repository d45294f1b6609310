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
    };
    let error = settings.validate("database").unwrap_err().to_string();
    assert!(error.contains("sslrootcert"), "{error}");

    let empty = tempfile::NamedTempFile::new().unwrap();
    settings.sslrootcert = Some(empty.path().to_owned());
    let error = settings.validate("database").unwrap_err().to_string();
    assert!(error.contains("no certificate"), "{error}");
}
