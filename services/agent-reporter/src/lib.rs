//! agent-reporter: agents' job reports, aggregated per (agent, task kind) in
//! PostgreSQL and pushed to the Prometheus Pushgateway, one group per agent.
//!
//! Reports are validated at the edge ([`report`]); aggregates live in the
//! database ([`store`]), reports arriving together committed together
//! ([`record`]), so an outage or a restart loses nothing; [`push`]
//! renders and pushes groups, and deletes those of silent agents.

pub mod error;
pub mod metrics;
pub mod push;
pub mod record;
pub mod report;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::Application;
