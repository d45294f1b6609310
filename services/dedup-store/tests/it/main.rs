//! dedup-store against a real PostgreSQL: one app and one database per test.

mod batch;
mod compat;
mod erasure;
mod helpers;
mod insert;
mod operator_api;
mod outage;
mod reconcile;
mod relay;
mod relay_edges;
mod retention;
mod search;
mod shutdown;
