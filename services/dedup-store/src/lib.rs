//! dedup-store: RAVE's durable, exactly-once event store.
//!
//! `POST /v1/events` answers only after the event's transaction has
//! committed; concurrent inserts share one transaction ([`store::GroupCommitter`]),
//! and ingest sends small events many per call ([`batch`]).
//! Each new event gets a `task_id` and an outbox row in that same transaction;
//! the [`relay`] delivers outbox rows to task-dispatcher. Old events go by
//! [`retention`]; an operator erases one on request ([`erase`]). The
//! [`reconcile`]r asks senders to redeliver what their logs show RAVE missed.
//! Operators find stored events with [`search`].

pub mod batch;
pub mod erase;
pub mod error;
pub mod metrics;
pub mod reconcile;
pub mod relay;
pub mod retention;
pub mod routes;
pub mod search;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::Application;
