//! Injected time (see [`rave_service::clock`]).

pub use rave_service::clock::*;
