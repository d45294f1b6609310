//! Helpers for the test crates that check the repository's own files
//! (tests/nixos-checks, tests/pipeline): its root, the workspace's binaries,
//! tools on PATH, and Nix evaluation without nixpkgs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A tool from PATH or cargo's bin directory, or a failure naming the fix.
pub fn tool(name: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: {install} (scripts/test does this)"))
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `nix-instantiate` for evaluation only, in the repository's root.
pub fn nix_instantiate() -> Command {
    let mut cmd = Command::new(tool("nix-instantiate", "apt-get install nix-bin"));
    // Evaluation only: no daemon, no build users, no store writes.
    cmd.env(
        "NIX_CONFIG",
        "build-users-group =\nexperimental-features = nix-command",
    )
    .env("NIX_REMOTE", "")
    .current_dir(repo());
    cmd
}

/// `expr` evaluated strictly, as JSON.
pub fn nix_eval(expr: &str) -> serde_json::Value {
    let out = run(nix_instantiate().args(["--eval", "--strict", "--json", "-E", expr]));
    serde_json::from_slice(&out.stdout).expect("nix-instantiate prints JSON")
}

/// `nix-instantiate --parse FILE`: whether it parses.
pub fn nix_parse(file: &Path) -> Output {
    nix_instantiate()
        .arg("--parse")
        .arg(file)
        .output()
        .expect("nix-instantiate runs")
}

/// Every `.nix` file of the repository, outside build and state directories.
pub fn nix_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("readable directory")
            .flatten()
        {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "result" {
                    walk(&path, out);
                }
            } else if name.ends_with(".nix") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo(), &mut out);
    out.sort();
    out
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

/// `body` evaluated with the flake's outputs as `out` (and `flake`, `names`
/// = builtins.attrNames) in scope, without nixpkgs: its inputs are stubs that
/// fail if anything is built, and Nix is lazy, so only names are read.
pub fn flake_outputs(body: &str) -> serde_json::Value {
    nix_eval(&format!(
        r#"let
             flake = import ./flake.nix;
             stub = name: {{ outPath = throw "${{name}} is not available here"; }};
             out = flake.outputs {{ self = out; nixpkgs = stub "nixpkgs"; sops-nix = stub "sops-nix"; }};
             names = builtins.attrNames;
           in {body}"#
    ))
}
