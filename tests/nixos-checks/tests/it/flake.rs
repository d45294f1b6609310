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
             tests = names out.legacyPackages.x86_64-linux.tests;
             formatter = names out.formatter;
             inputs = flake.inputs;
           }"#,
    );
    let names = |v: &[&str]| Value::from(v.to_vec());
    assert_eq!(
        listed["packages"],
        names(&[
            "default",
            "p0",
            "p1-production",
            "p2-production",
            "p2-trial",
            "rave"
        ])
    );
    assert_eq!(
        listed["nixosModules"],
        names(&[
            "rave",
            "rave-backups",
            "rave-dev-secrets",
            "rave-observability",
            "rave-security"
        ])
    );
    assert_eq!(
        listed["nixosConfigurations"],
        names(&["p0", "p1-production", "p2-production", "p2-trial"])
    );
    assert_eq!(
        listed["apps"],
        names(&["p1-production", "p2-production", "p2-trial", "qemu"])
    );
    assert_eq!(listed["checks"], names(&["clippy", "fmt", "tests", "vm"]));
    // `nix run .#tests.rave-vm`, the seed's spelling.
    assert_eq!(listed["tests"], names(&["rave-vm"]));
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

/// The files `nixos/package.nix` gives the build: its `lib.fileset.unions`.
fn package_fileset() -> Vec<std::path::PathBuf> {
    use rowan::ast::AstNode;
    let file = crate::helpers::repo().join("nixos/package.nix");
    let root = nixos_checks::modules::parse(&file);
    let list = root
        .syntax()
        .descendants()
        .filter_map(rnix::ast::Apply::cast)
        .find(|a| {
            a.lambda()
                .is_some_and(|f| f.syntax().text() == "lib.fileset.unions")
        })
        .and_then(|a| a.argument())
        .expect("package.nix builds its source with lib.fileset.unions [ ... ]");
    list.syntax()
        .children()
        .filter_map(rnix::ast::PathRel::cast)
        .map(|p| {
            let path = file.parent().unwrap().join(p.syntax().text().to_string());
            path.canonicalize()
                .unwrap_or_else(|_| panic!("{} is in the fileset but missing", path.display()))
        })
        .collect()
}

#[test]
fn the_package_source_holds_every_file_the_code_embeds() {
    let fileset = package_fileset();
    assert!(fileset.len() >= 5, "{fileset:?}");
    let root = crate::helpers::repo();
    let mut embedded = Vec::new();
    let mut stack = vec![
        root.join("crates"),
        root.join("services"),
        root.join("tests"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_ in ["include_str!(\"", "include_bytes!(\""] {
                    for (at, _) in text.match_indices(macro_) {
                        let rest = &text[at + macro_.len()..];
                        let target = &rest[..rest.find('"').unwrap()];
                        let full = path.parent().unwrap().join(target);
                        embedded.push((path.clone(), full.canonicalize().unwrap_or(full)));
                    }
                }
            }
        }
    }
    assert!(embedded.len() >= 10, "{embedded:?}");
    for (by, file) in embedded {
        assert!(
            fileset.iter().any(|f| file.starts_with(f)),
            "{} embeds {}, which nixos/package.nix leaves out of the build's source",
            by.display(),
            file.display()
        );
    }
}

/// The assertions a production host evaluates (nixos/lib/production-checks.nix).
fn production_failures(keys: &str, sops: bool, dev: bool, trial: bool) -> Vec<String> {
    let v = crate::helpers::nix_eval(&format!(
        "map (a: a.message) (builtins.filter (a: !a.assertion) (import ./nixos/lib/production-checks.nix {{
           sshAuthorizedKeys = {keys}; sopsEnabled = {sops}; devSecretsEnabled = {dev}; trialImage = {trial};
         }}))"
    ));
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_production_image_without_keys_or_managed_secrets_does_not_evaluate_unless_it_is_a_trial() {
    let key = r#"[ "ssh-ed25519 AAAA operator" ]"#;
    // The tree as committed: no keys, no secrets/rave.yaml (so dev secrets).
    let seed = production_failures("import ./secrets/authorized-keys.nix", false, true, false);
    assert_eq!(seed.len(), 2, "{seed:?}");
    assert!(
        seed[0].contains("secrets/authorized-keys.nix"),
        "{}",
        seed[0]
    );
    assert!(
        seed[1].contains("secrets/rave.yaml") && seed[1].contains("git add"),
        "{}",
        seed[1]
    );
    assert!(seed.iter().all(|m| m.contains("trialImage = true")));
    // Keys and sops: production.
    assert!(production_failures(key, true, false, false).is_empty());
    // The named way out, for a throwaway image.
    assert!(production_failures("[ ]", false, true, true).is_empty());
    // Never both sources of secrets.
    assert_eq!(production_failures(key, true, true, false).len(), 1);
    // And the production baseline asserts exactly these.
    let repo = nixos_checks::hosts::load(&crate::helpers::repo());
    let asserted: Vec<_> = repo
        .definitions
        .iter()
        .filter(|d| d.path == "assertions" && d.module == "nixos/modules/security.nix")
        .collect();
    assert_eq!(asserted.len(), 1, "{asserted:?}");
    assert!(
        asserted[0]
            .value
            .starts_with("import ../lib/production-checks.nix"),
        "{}",
        asserted[0].value
    );
    for arg in [
        "sshAuthorizedKeys",
        "trialImage",
        "sopsEnabled = cfg.sops.enable",
        "devSecretsEnabled",
    ] {
        assert!(
            asserted[0].value.contains(arg),
            "{arg}: {}",
            asserted[0].value
        );
    }
}

#[test]
fn the_lock_pins_each_input_to_a_revision_and_hash_of_the_branch_the_flake_names() {
    let root = crate::helpers::repo();
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("flake.lock")).unwrap()).unwrap();
    assert_eq!(lock["version"], 7);
    let inputs = flake_outputs("flake.inputs");
    let nodes = &lock["nodes"];
    assert_eq!(
        nodes["root"]["inputs"],
        json!({ "nixpkgs": "nixpkgs", "sops-nix": "sops-nix" })
    );
    for name in ["nixpkgs", "sops-nix"] {
        let node = &nodes[name];
        let locked = &node["locked"];
        let rev = locked["rev"].as_str().unwrap();
        assert!(
            rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}: rev {rev}"
        );
        let hash = locked["narHash"].as_str().unwrap();
        assert!(
            hash.starts_with("sha256-") && hash.len() == 51 && hash.ends_with('='),
            "{name}: {hash}"
        );
        assert_eq!(locked["type"], "github");
        assert!(
            locked["lastModified"].as_u64().unwrap() > 1_767_225_600,
            "{name}: older than 2026"
        );
        // The locked node is what flake.nix asks for.
        let original = &node["original"];
        let url = inputs[name]["url"].as_str().unwrap();
        let spelled = match original["ref"].as_str() {
            Some(r) => format!(
                "github:{}/{}/{r}",
                original["owner"].as_str().unwrap(),
                original["repo"].as_str().unwrap()
            ),
            None => format!(
                "github:{}/{}",
                original["owner"].as_str().unwrap(),
                original["repo"].as_str().unwrap()
            ),
        };
        assert_eq!(url, spelled, "{name}");
        assert_eq!(locked["owner"], original["owner"]);
    }
    assert_eq!(
        nodes["sops-nix"]["inputs"],
        json!({ "nixpkgs": ["nixpkgs"] })
    );
    // The options were read at the pinned revision's branch.
    let options = std::fs::read_to_string(root.join("nixos/options.toml")).unwrap();
    assert!(options.contains(nodes["nixpkgs"]["locked"]["rev"].as_str().unwrap()));
}
