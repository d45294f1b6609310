//! `ravectl`: RAVE's operator CLI.
//!
//! - `ravectl up`: the whole stack on one machine, in a private state
//!   directory (default `.rave/`), until Ctrl-C;
//! - `ravectl send`: a correctly signed webhook to a running stack;
//! - `ravectl agent`: the reference agent;
//! - `ravectl agents create`: a new agent and its token;
//! - `ravectl verify`: end-to-end checks of a running stack.

#![allow(clippy::print_stdout, reason = "a CLI's output is its interface")]

pub mod agent;
pub mod agents;
pub mod bench;
pub mod cli;
pub mod control;
pub mod packages;
pub mod postgres;
pub mod release;
pub mod secrets;
pub mod send;
pub mod stack;
pub mod tls;
pub mod up;
pub mod verify;
