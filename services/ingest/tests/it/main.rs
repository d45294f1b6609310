//! ingest in front of a real dedup-store on a real PostgreSQL.

mod alertmanager;
mod bad_input;
mod batching;
mod check_config;
mod delivery;
mod edges;
mod exactly_once;
mod helpers;
mod observability;
mod reload;
mod senders;
mod spool;
