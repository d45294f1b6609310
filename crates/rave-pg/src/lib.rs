//! PostgreSQL plumbing every RAVE service with a database shares: its
//! settings, a connection pool (plain on a local host, TLS to a remote or
//! managed one), and migrations applied one replica at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
pub use deadpool_postgres::{GenericClient, Object, Pool};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use rave_service::settings::{Secret, SettingsError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Row};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Statements prepared once per connection and kept (deadpool caches them
/// per connection, keyed by their text): PostgreSQL parses and plans a
/// statement once instead of on every call, and each call is one round
/// trip instead of two. For the statements a service runs all the time.
pub trait Prepared: GenericClient {
    fn query_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;
    fn query_one_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, tokio_postgres::Error>> + Send;
    fn query_opt_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send;
    fn execute_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send;
}

impl<C: GenericClient> Prepared for C {
    async fn query_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        record(sql);
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }
    async fn query_one_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        record(sql);
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }
    async fn query_opt_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        record(sql);
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }
    async fn execute_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        record(sql);
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }
}

/// With `RAVE_PG_RECORD_STATEMENTS=DIR`, every distinct statement prepared
/// is appended to `DIR/statements-<pid>.sql`, once: how a release's
/// statements are collected (scripts/compat-snapshot), so that the next
/// release's migrations are checked against them (ARCHITECTURE.md,
/// invariant 25). Without the variable it costs one atomic load.
fn record(sql: &str) {
    use std::collections::HashSet;
    use std::io::Write as _;
    use std::sync::{Mutex, OnceLock};
    /// The file, and the statements already in it.
    type Recorder = Mutex<(PathBuf, HashSet<String>)>;
    static SINK: OnceLock<Option<Recorder>> = OnceLock::new();
    let sink = SINK.get_or_init(|| {
        let dir = std::env::var_os("RAVE_PG_RECORD_STATEMENTS")?;
        let path = PathBuf::from(dir).join(format!("statements-{}.sql", std::process::id()));
        Some(Mutex::new((path, HashSet::new())))
    });
    let Some(sink) = sink else { return };
    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
    if sink.1.insert(sql.to_owned())
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&sink.0)
    {
        let _ = write!(file, "{}\n{}\n", compat::SEPARATOR, sql.trim());
    }
}

/// The statements a release prepares, as scripts/compat-snapshot writes
/// them: each after a [`compat::SEPARATOR`] line.
pub mod compat {
    pub const SEPARATOR: &str = "-- statement";

    pub fn statements(snapshot: &str) -> Vec<&str> {
        snapshot
            .split(SEPARATOR)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Whether PostgreSQL refused a statement for what it carried, not because
/// it is unreachable: a data exception (SQLSTATE class 22: NUL, bad
/// encoding, a value out of range), a program limit (54: an index row too
/// large) or a check constraint. Such a statement fails the same way every
/// time, so it must be split, never retried as it is.
pub fn is_content_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|code| {
                let code = code.code();
                code.starts_with("22") || code.starts_with("54") || code == "23514"
            })
    })
}

/// TLS to PostgreSQL, named as libpq names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP or a Unix socket: loopback and the local socket only.
    #[default]
    Disable,
    /// TLS, the server's certificate chained to `sslrootcert` and naming
    /// `host`. (`require` without verification is not offered: it lets
    /// anyone on the path read the traffic.)
    VerifyFull,
}

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
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM certificates to trust for `verify-full` (a managed service's CA
    /// bundle, or your own CA).
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// How long anything may wait on PostgreSQL or on the network to it.
    #[serde(default)]
    pub timeouts: DatabaseTimeouts,
}

/// `[database.timeouts]`: nothing waits on PostgreSQL forever. The first
/// three are set on every session (0 turns one off); the rest detect a
/// connection whose peer vanished (a dead host, a dropped NAT entry) instead
/// of waiting on it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseTimeouts {
    /// A statement running longer is cancelled by the server.
    pub statement_ms: u64,
    /// A statement waiting longer for a lock fails instead (SQLSTATE 55P03).
    pub lock_ms: u64,
    /// A session idle inside a transaction longer is closed by the server,
    /// releasing its locks.
    pub idle_in_transaction_ms: u64,
    /// TCP keepalive probes start after this much silence...
    pub keepalive_idle_secs: u64,
    /// ...are sent this often...
    pub keepalive_interval_secs: u64,
    /// ...and this many unanswered ones close the connection.
    pub keepalive_retries: u32,
    /// Data left unacknowledged this long closes the connection (Linux's
    /// TCP_USER_TIMEOUT); keepalives alone do not cover a peer that
    /// vanishes while a request is outstanding.
    pub tcp_user_timeout_ms: u64,
}

impl Default for DatabaseTimeouts {
    fn default() -> Self {
        Self {
            statement_ms: 30_000,
            lock_ms: 5_000,
            idle_in_transaction_ms: 60_000,
            keepalive_idle_secs: 30,
            keepalive_interval_secs: 10,
            keepalive_retries: 3,
            tcp_user_timeout_ms: 30_000,
        }
    }
}

impl DatabaseTimeouts {
    /// The session settings, as a startup `options` string.
    fn session_options(&self) -> String {
        format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_ms, self.lock_ms, self.idle_in_transaction_ms
        )
    }
}

impl DatabaseSettings {
    pub fn validate(&self, key: &str) -> Result<(), SettingsError> {
        if self.dbname.is_empty() || self.user.is_empty() || self.host.is_empty() {
            return Err(SettingsError::invalid(
                key,
                "host, user and dbname must be set",
            ));
        }
        let t = &self.timeouts;
        if t.keepalive_idle_secs == 0 || t.keepalive_interval_secs == 0 || t.keepalive_retries == 0
        {
            return Err(SettingsError::invalid(
                format!("{key}.timeouts"),
                "keepalive_idle_secs, keepalive_interval_secs and keepalive_retries must be positive",
            ));
        }
        if self.pool_size == 0 || self.connect_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                key,
                "pool_size and connect_timeout_ms must be positive",
            ));
        }
        match (self.sslmode, &self.sslrootcert) {
            (SslMode::VerifyFull, None) => {
                return Err(SettingsError::invalid(
                    key,
                    "sslmode = \"verify-full\" needs sslrootcert, the CA certificates to trust",
                ));
            }
            (SslMode::VerifyFull, Some(_)) => {
                if let Err(e) = self.tls() {
                    return Err(SettingsError::invalid(key, format!("{e:#}")));
                }
            }
            (SslMode::Disable, _) => {}
        }
        Ok(())
    }

    /// The TLS connector for `verify-full` (`None` when TLS is off).
    pub fn tls(&self) -> anyhow::Result<Option<tokio_postgres_rustls::MakeRustlsConnect>> {
        let (SslMode::VerifyFull, Some(file)) = (self.sslmode, &self.sslrootcert) else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(file)
            .with_context(|| format!("reading sslrootcert {}", file.display()))?;
        for certificate in certificates {
            roots.add(certificate.with_context(|| format!("sslrootcert {}", file.display()))?)?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "sslrootcert {} holds no certificate",
            file.display()
        );
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
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
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .options(self.timeouts.session_options())
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(self.timeouts.keepalive_idle_secs))
            .keepalives_interval(Duration::from_secs(self.timeouts.keepalive_interval_secs))
            .keepalives_retries(self.timeouts.keepalive_retries);
        if self.timeouts.tcp_user_timeout_ms > 0 {
            config.tcp_user_timeout(Duration::from_millis(self.timeouts.tcp_user_timeout_ms));
        }
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        if self.sslmode == SslMode::VerifyFull {
            // Refuse to fall back to plain text if the server offers no TLS.
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        config
    }
}

/// A connection's notifications and notices, as a stream.
pub type Messages = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>,
>;

/// One connection outside the pool (a LISTEN connection): its client, and
/// the stream that drives it, which the caller must poll.
pub async fn connect(
    settings: &DatabaseSettings,
    application_name: &str,
) -> anyhow::Result<(tokio_postgres::Client, Messages)> {
    let config = settings.config(application_name);
    Ok(match settings.tls()? {
        None => {
            let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
            let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            (client, Box::pin(messages))
        }
        Some(tls) => {
            let (client, mut connection) = config.connect(tls).await?;
            let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            (client, Box::pin(messages))
        }
    })
}

/// A pool that opens connections lazily (a database down at start is
/// reported by `/readyz`, not by a crash).
pub fn pool(settings: &DatabaseSettings, application_name: &str) -> anyhow::Result<Pool> {
    let config = settings.config(application_name);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match settings.tls()? {
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        Some(tls) => Manager::from_config(config, tls, manager_config),
    };
    let timeout = Some(Duration::from_millis(settings.connect_timeout_ms));
    Ok(Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .build()?)
}

/// Applies `runner`'s embedded migrations under a session advisory lock, so
/// replicas starting together apply them once. The session's statement and
/// lock timeouts are lifted meanwhile: a migration may rightly take long,
/// and a replica waiting for another's migration must not give up.
pub async fn migrate(pool: &Pool, runner: refinery::Runner, lock_id: i64) -> anyhow::Result<()> {
    let mut client = pool.get().await.context("connecting to PostgreSQL")?;
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&lock_id])
        .await?;
    let result = runner.run_async(&mut **client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_id])
        .await?;
    client
        .batch_execute("RESET statement_timeout; RESET lock_timeout")
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
