//! The flake's outputs, listed without nixpkgs: its inputs are stubs that
//! fail if anything is built, and only the names are read (Nix is lazy).

use serde_json::{Value, json};

use crate::helpers::flake_outputs;

#[test]
fn the_flake_exposes_every_output_deployments_and_ci_use() {
    let listed = flake_outputs(
        r#"{
             packages = names out.packages.x86_64-linux;
             nixosModules = names out.nixosModules;
             nixosConfigurations = names out.nixosConfigurations;
             apps = names out.apps.x86_64-linux;
             checks = names out.checks.x86_64-linux;
             formatter = names out.formatter;
             inputs = flake.inputs;
           }"#,
    );
    let names = |v: &[&str]| Value::from(v.to_vec());
    assert_eq!(
        listed["packages"],
        names(&["default", "p0", "p1-production", "p2-production", "rave"])
    );
    assert_eq!(
        listed["nixosModules"],
        names(&[
            "rave",
            "rave-dev-secrets",
            "rave-observability",
            "rave-security"
        ])
    );
    assert_eq!(
        listed["nixosConfigurations"],
        names(&["p0", "p1-production", "p2-production"])
    );
    assert_eq!(
        listed["apps"],
        names(&["p1-production", "p2-production", "qemu"])
    );
    assert_eq!(listed["checks"], names(&["clippy", "fmt", "tests", "vm"]));
    assert_eq!(listed["formatter"], names(&["x86_64-linux"]));
    // A pinned release branch, and one nixpkgs for sops-nix too.
    let nixpkgs = listed["inputs"]["nixpkgs"]["url"].as_str().unwrap();
    assert!(
        nixpkgs.starts_with("github:NixOS/nixpkgs/nixos-") && !nixpkgs.ends_with("unstable"),
        "{nixpkgs}"
    );
    assert_eq!(
        listed["inputs"]["sops-nix"]["inputs"],
        json!({ "nixpkgs": { "follows": "nixpkgs" } })
    );
}
