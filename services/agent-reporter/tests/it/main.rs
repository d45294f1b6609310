//! agent-reporter on a real PostgreSQL, pushing to a real Pushgateway.

mod batch;
mod compat;
mod helpers;
mod pushing;
mod replicas;
mod reports;
