//! PostgreSQL plumbing every RAVE service with a database shares: its
//! settings, a connection pool, and migrations applied one replica at a time.

use std::time::Duration;

use anyhow::Context as _;
pub use deadpool_postgres::{GenericClient, Pool};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use rave_service::settings::{Secret, SettingsError};
use serde::Deserialize;

/// `[database]` in a service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    /// Connections in the pool at most.
    pub pool_size: usize,
    /// How long a caller waits for a connection, or for a new one to open.
    pub connect_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn validate(&self, key: &str) -> Result<(), SettingsError> {
        if self.dbname.is_empty() || self.user.is_empty() || self.host.is_empty() {
            return Err(SettingsError::invalid(
                key,
                "host, user and dbname must be set",
            ));
        }
        if self.pool_size == 0 || self.connect_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                key,
                "pool_size and connect_timeout_ms must be positive",
            ));
        }
        Ok(())
    }

    /// A `tokio_postgres` configuration (for connections outside the pool).
    pub fn config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(application_name)
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms));
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        config
    }
}

/// A pool that opens connections lazily (a database down at start is
/// reported by `/readyz`, not by a crash).
pub fn pool(settings: &DatabaseSettings, application_name: &str) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        settings.config(application_name),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(Duration::from_millis(settings.connect_timeout_ms));
    Ok(Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .build()?)
}

/// Applies `runner`'s embedded migrations under a session advisory lock, so
/// replicas starting together apply them once.
pub async fn migrate(pool: &Pool, runner: refinery::Runner, lock_id: i64) -> anyhow::Result<()> {
    let mut client = pool.get().await.context("connecting to PostgreSQL")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&lock_id])
        .await?;
    let result = runner.run_async(&mut **client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_id])
        .await?;
    let report = result.context("applying migrations")?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    Ok(())
}

/// Whether PostgreSQL answers.
pub async fn ping(pool: &Pool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
