//! Tests that need the whole pipeline in one process.

mod dashboards;
mod helpers;
mod prometheus;
mod rules;
mod trace;
