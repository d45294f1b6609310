//! Tests that need the whole pipeline in one process.

mod agent;
mod content;
mod dashboards;
mod helpers;
mod hostile;
mod prometheus;
mod reconcile;
mod replay;
mod rules;
mod trace;
