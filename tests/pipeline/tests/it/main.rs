//! The GitLab pipeline (`.gitlab-ci.yml`) checked where GitLab is not:
//! against GitLab's own CI schema, every script line against what exists in
//! the repository (scripts, `test-vm.sh` commands, flake outputs, workspace
//! packages, ravectl subcommands), its memory discipline and rules, and the
//! release manifest built from a fake artifact set.

mod helpers;
mod pipeline;
mod release;
mod scripts;
