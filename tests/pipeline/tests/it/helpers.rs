use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::Yaml;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

pub fn pipeline() -> Yaml {
    let text = std::fs::read_to_string(repo().join(".gitlab-ci.yml")).expect(".gitlab-ci.yml");
    yaml_rust2::YamlLoader::load_from_str(&text)
        .expect("valid YAML")
        .remove(0)
}

/// Top-level keys that are not jobs.
const GLOBAL: [&str; 6] = [
    "stages",
    "workflow",
    "variables",
    "default",
    "include",
    "image",
];

/// (name, definition) of every job (hidden `.templates` excluded).
pub fn jobs(pipeline: &Yaml) -> Vec<(String, Yaml)> {
    pipeline
        .as_hash()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str()?;
            (!name.starts_with('.') && !GLOBAL.contains(&name))
                .then(|| (name.to_owned(), v.clone()))
        })
        .collect()
}

/// A key of a job, following `extends` into templates.
pub fn key(pipeline: &Yaml, job: &Yaml, key: &str) -> Option<Yaml> {
    if !job[key].is_badvalue() {
        return Some(job[key].clone());
    }
    let parent = job["extends"].as_str()?;
    key_of_template(pipeline, parent, key)
}

fn key_of_template(pipeline: &Yaml, name: &str, k: &str) -> Option<Yaml> {
    let template = &pipeline[name];
    key(pipeline, template, k)
}

pub fn lines(yaml: Option<Yaml>) -> Vec<String> {
    match yaml {
        Some(Yaml::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(Yaml::String(s)) => vec![s],
        _ => Vec::new(),
    }
}

/// The workspace's debug binaries (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    let path = std::env::current_exe()
        .expect("test binary path")
        .parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .join(name);
    assert!(
        path.is_file(),
        "{} missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// The flake's outputs as `.#name` targets, listed without nixpkgs (stub
/// inputs; Nix is lazy, only names are read).
pub fn flake_targets() -> Vec<String> {
    let out = Command::new("nix-instantiate")
        .env("NIX_CONFIG", "build-users-group =")
        .env("NIX_REMOTE", "")
        .current_dir(repo())
        .args(["--eval", "--strict", "--json", "-E"])
        .arg(
            r#"let
                 flake = import ./flake.nix;
                 stub = name: { outPath = throw "${name} is not available here"; };
                 out = flake.outputs { self = out; nixpkgs = stub "nixpkgs"; sops-nix = stub "sops-nix"; };
                 names = builtins.attrNames;
               in
                 names out.packages.x86_64-linux
                 ++ map (n: "checks.x86_64-linux." + n) (names out.checks.x86_64-linux)
                 ++ names out.apps.x86_64-linux"#,
        )
        .output()
        .expect("nix-instantiate (apt-get install nix-bin; scripts/test does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
