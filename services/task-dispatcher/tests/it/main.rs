//! task-dispatcher against a real PostgreSQL, with a manual clock: leases
//! expire and retries fall due when a test advances time, not when it sleeps.

mod claim_plan;
mod claims;
mod compat;
mod erasures;
mod handoff;
mod helpers;
mod leases;
mod listen;
mod policies;
mod quarantine;
mod reload;
mod replicas;
mod results;
mod retries;
