//! What can be checked of the NixOS flake here, where nixpkgs cannot be
//! fetched and no VM can boot: every `.nix` file parses, has no dead code and
//! is formatted; the plain-Nix parts the modules are built from evaluate, and
//! what they produce is checked by the real consumers — `systemd-analyze
//! security` scores each unit, each service's `--check-config` accepts its
//! settings, `nginx -t` accepts the sites; the flake names every output.
//!
//! Needs `nix-instantiate` (Debian's nix-bin), `deadnix` and `nixpkgs-fmt`
//! (crates.io), `systemd-analyze`, `nginx`, `openssl` and `python3`;
//! `scripts/test` installs what is missing.

mod alerting;
mod flake;
mod grafana;
mod helpers;
mod lint;
mod options;
mod rendered;
mod units;
