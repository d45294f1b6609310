//! RAVE's NixOS modules read with a Nix parser, for the checks in `tests/it`:
//! which options they declare and set, and which definitions collide.

pub mod hosts;
pub mod modules;
pub mod options;
