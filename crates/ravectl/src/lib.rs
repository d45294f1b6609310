//! `ravectl`: RAVE's operator CLI.
//!
//! - `ravectl up`: the whole stack on one machine, in a private state
//!   directory (default `.rave/`), until Ctrl-C;
//! - `ravectl send`: a correctly signed webhook to a running stack.

#![allow(clippy::print_stdout, reason = "a CLI's output is its interface")]

pub mod cli;
pub mod packages;
pub mod postgres;
pub mod secrets;
pub mod send;
pub mod stack;
pub mod up;
