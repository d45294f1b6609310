//! Plumbing shared by every RAVE service.
//!
//! [`batch`] is the group-commit batcher services put in front of their
//! database writes.
//!
//! Each service is a fat library with a thin `main.rs`; this crate holds what
//! they would otherwise write four times: typed settings ([`settings`]),
//! logs and traces ([`telemetry`]), the `/metrics` endpoint ([`metrics`]),
//! the JSON error body and body limits ([`http`]), constant-time comparison
//! ([`crypto`]), the identifiers that cross service boundaries ([`ids`]),
//! and sender-side webhook signing for tools and tests ([`sign`]).

pub mod auth;
pub mod batch;
pub mod cli;
pub mod clock;
pub mod content;
pub mod crypto;
pub mod error;
pub mod http;
pub mod ids;
pub mod isolate;
pub mod limit;
pub mod metrics;
pub mod pointer;
pub mod reload;
pub mod search;
pub mod served;
pub mod settings;
pub mod sign;
pub mod systemd;
pub mod telemetry;

/// The metrics crate the services declare their metrics with, for tools
/// (ravectl's receivers) to declare theirs with the same one.
pub use prometheus_client;

/// The base64 the services' wire formats use (`body_base64`), for tools
/// that read them.
pub use base64;
/// Runs a batch's items side by side (each item's own future, one answer
/// each): the batch routes' way of feeding one group commit.
pub use futures_util::future::join_all;
/// The TOML parser settings are read with, for services' own tests of their
/// settings' parts.
pub use toml;
