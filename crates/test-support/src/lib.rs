//! Test harness shared by every crate's integration tests.
//!
//! - [`pg`]: a real, throwaway PostgreSQL cluster per test process, one fresh
//!   database per test;
//! - [`sign`]: webhook signers written independently of `ingest`'s verifiers,
//!   so a test that passes proves two implementations agree;
//! - [`trace`]: W3C `traceparent` helpers.

pub mod pg;
pub mod sign;
pub mod trace;
