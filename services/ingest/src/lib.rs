//! ingest: the only RAVE service webhook senders reach.
//!
//! For `POST /hooks/{source}` it enforces the limits, verifies the sender's
//! signature on the raw bytes ([`verify`]), and hands the event to
//! dedup-store; it answers 2xx only after the store has committed.

pub mod error;
pub mod guard;
pub mod metrics;
pub mod reload;
pub mod routes;
pub mod settings;
pub mod sources;
pub mod spool;
pub mod startup;
pub mod store_client;
pub mod verify;

pub use settings::Settings;
pub use startup::Application;
