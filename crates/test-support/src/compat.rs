//! Expand, then contract (ARCHITECTURE.md, invariant 25): the previous
//! release's statements must still work against the current migrations, so
//! that during a rolling restart the replicas not yet replaced keep running.

use crate::pg::PgCluster;

/// Migrates a fresh database with `migrate` and prepares every statement of
/// `snapshot` (a service's `compat/release-statements.sql`) there; panics
/// naming each one PostgreSQL refuses and why. Returns how many prepared.
pub async fn previous_release_statements_prepare<F, Fut>(snapshot: &str, migrate: F) -> usize
where
    F: FnOnce(rave_pg::Pool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let db = PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    let pool = rave_pg::pool(&db.settings(), "compat").expect("pool");
    migrate(pool).await.expect("the current migrations apply");
    let client = db.connect().await.expect("connect");
    let statements = rave_pg::compat::statements(snapshot);
    let mut refused = Vec::new();
    for sql in &statements {
        if let Err(e) = client.prepare(sql).await {
            let reason = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            refused.push(format!("{reason}:\n{sql}"));
        }
    }
    assert!(
        refused.is_empty(),
        "{} of the previous release's statements no longer prepare against the current \
         schema; a rolling restart from that release would fail (expand first, contract \
         one release later):\n\n{}",
        refused.len(),
        refused.join("\n\n")
    );
    statements.len()
}
