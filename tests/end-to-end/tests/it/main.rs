//! Tests that need the whole pipeline in one process.

mod helpers;
mod prometheus;
mod trace;
