//! task-dispatcher: turns stored events into tasks and leases them to agents.
//!
//! Events arrive from dedup-store's relay (`POST /v1/internal/events`),
//! idempotently on `task_id`; [`routing`] rules decide each event's task kind,
//! priority, attempts and entity policy. Agents claim tasks over HTTP with a
//! long poll and hold them by lease ([`store`] has every state transition).
//! Operators replay stored events and try routing changes on them first
//! ([`replay`]).

pub mod auth;
pub mod clock;
pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod reload;
pub mod replay;
pub mod routes;
pub mod routing;
pub mod settings;
pub mod startup;
pub mod store;
pub mod waker;

pub use settings::Settings;
pub use startup::Application;
