//! Test harness shared by every crate's integration tests.
//!
//! - [`pg`]: a real, throwaway PostgreSQL cluster per test process, one fresh
//!   database per test;
//! - [`sign`]: webhook signers (sender side);
//! - [`trace`]: W3C `traceparent` helpers;
//! - [`metrics`]: reading `/metrics` output;
//! - [`pushgateway`]: a real Prometheus Pushgateway (and [`process`], the
//!   supervision it runs under);
//! - [`prometheus`]: a real Prometheus with exemplar storage;
//! - [`otlp`]: an OTLP/HTTP receiver standing in for a collector;
//! - [`proxy`]: a TCP proxy that can make its connections half-open;
//! - [`senders`]: doubles of GitHub's and GitLab's webhook APIs.
//! - [`tools`]: where scripts/install keeps its tools (the Python venv).

pub mod compat;
pub mod metrics;
pub mod otlp;
pub mod pg;
mod ports;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod pushgateway;
pub mod senders;
pub mod tools;
pub mod trace;

pub use ports::free_port;

/// Webhook signers, as senders compute them.
pub use rave_service::sign;

/// The token tests give ingest (`store.token`) and dedup-store
/// (`ingest_tokens`).
pub const INGEST_TOKEN: &str = "test-ingest-token";

/// The token tests read dedup-store's events with (`operator_tokens`).
pub const STORE_OPERATOR_TOKEN: &str = "test-store-operator-token";

/// The environment tests load service settings with: what every test stack
/// needs and the built-in defaults cannot hold (ingest's store token).
pub fn test_env() -> std::collections::HashMap<String, String> {
    [(
        "RAVE_INGEST__STORE__TOKEN".to_owned(),
        INGEST_TOKEN.to_owned(),
    )]
    .into()
}
