//! Every script line of every job names a command or a target that exists:
//! repository scripts, `test-vm.sh` subcommands, flake outputs, workspace
//! packages and test modules, ravectl subcommands, files.

use std::collections::BTreeSet;
use std::process::Command;

use crate::helpers::{binary, flake_targets, jobs, key, lines, pipeline, repo};

/// Tools the job images provide (rust, nixos/nix, prom/prometheus, trivy).
const EXTERNAL: [&str; 19] = [
    "cargo",
    "rustup",
    "nix",
    "promtool",
    "trivy",
    "apt-get",
    "mkdir",
    "cp",
    "export",
    "qemu-img",
    "&&",
    "if",
    "for",
    "git",
    "curl",
    "rm",
    "echo",
    "cd",
    "sha256sum",
];

fn words(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|w| {
            w.trim_matches(|c| c == '"' || c == '\'' || c == ')' || c == '(')
                .to_owned()
        })
        .collect()
}

fn test_vm_commands() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("test-vm.sh")).unwrap();
    text.lines()
        .filter_map(|l| {
            l.trim()
                .split_once(") shift; cmd_")
                .map(|(name, _)| name.to_owned())
        })
        .collect()
}

fn ravectl_commands() -> String {
    let out = Command::new(binary("ravectl"))
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn workspace_packages() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = text
        .split("members = [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    members
        .split(',')
        .filter_map(|m| {
            m.trim()
                .trim_matches('"')
                .rsplit('/')
                .next()
                .map(str::to_owned)
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// What the repository offers, read once: `check` runs per script line.
struct Known {
    test_vm: BTreeSet<String>,
    ravectl_help: String,
    packages: BTreeSet<String>,
    flake_targets: Vec<String>,
}

impl Known {
    fn read() -> Self {
        Self {
            test_vm: test_vm_commands(),
            ravectl_help: ravectl_commands(),
            packages: workspace_packages(),
            flake_targets: flake_targets(),
        }
    }
}

/// What is wrong with one line (empty when it checks out).
fn check(known: &Known, line: &str, problems: &mut Vec<String>) {
    let w = words(line);
    // `out=$(cmd ...)`: check the command substituted.
    let w: Vec<String> = match w.first() {
        Some(first) if first.contains("=$") => {
            let mut rest = vec![
                first
                    .split("=$")
                    .nth(1)
                    .unwrap()
                    .trim_start_matches('(')
                    .to_owned(),
            ];
            rest.extend(w[1..].iter().cloned());
            rest
        }
        _ => w,
    };
    let Some(cmd) = w.first() else { return };
    let at = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    match cmd.as_str() {
        "scripts/ci/with-memory-limit" => {
            assert_exists("scripts/ci/with-memory-limit", problems);
            check(known, &w[2..].join(" "), problems);
        }
        "./test-vm.sh" => {
            let commands = &known.test_vm;
            if !commands.contains(at(1)) {
                problems.push(format!(
                    "`{line}`: test-vm.sh has no `{}` ({commands:?})",
                    at(1)
                ));
            }
            if let Some(i) = w.iter().position(|x| x == "--phase") {
                let phase = at(i + 1);
                if !["p0", "p1", "p2", "$PHASE"].contains(&phase) {
                    problems.push(format!("`{line}`: no phase {phase}"));
                }
            }
        }
        "dist/bin/ravectl" => {
            if !known.ravectl_help.contains(&format!("  {}", at(1))) {
                problems.push(format!("`{line}`: ravectl has no `{}`", at(1)));
            }
        }
        c if c.starts_with("scripts/") || c.starts_with("./") => {
            assert_exists(c.trim_start_matches("./"), problems)
        }
        c if EXTERNAL.contains(&c) => {}
        c => problems.push(format!(
            "`{line}`: `{c}` is neither a repository script nor a known tool"
        )),
    }
    // Targets named anywhere on the line.
    let targets = &known.flake_targets;
    for word in &w {
        if let Some(target) = word.strip_prefix(".#")
            && !targets.iter().any(|t| t == target)
        {
            problems.push(format!("`{line}`: the flake has no output .#{target}"));
        }
        if word.starts_with("prometheus/") {
            assert_exists(word, problems);
        }
    }
    if cmd == "cargo"
        && let Some(i) = w.iter().position(|x| x == "-p")
    {
        let package = at(i + 1);
        if !known.packages.contains(package) {
            problems.push(format!("`{line}`: no workspace package {package}"));
        }
        // `-- filter`: a test module of that package.
        if let Some(j) = w.iter().position(|x| x == "--") {
            let filter = at(j + 1);
            let module = repo().join(format!("tests/{package}/tests/it/{filter}.rs"));
            if !module.is_file() {
                problems.push(format!("`{line}`: no test module {}", module.display()));
            }
        }
    }
}

fn assert_exists(path: &str, problems: &mut Vec<String>) {
    if !repo().join(path).exists() {
        problems.push(format!("{path} does not exist"));
    }
}

#[test]
fn every_script_line_names_a_command_or_target_that_exists() {
    let p = pipeline();
    let known = Known::read();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, job) in jobs(&p) {
        for field in ["before_script", "script"] {
            for line in lines(key(&p, &job, field)) {
                let mut found = Vec::new();
                check(&known, &line, &mut found);
                problems.extend(found.into_iter().map(|f| format!("{name}: {f}")));
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} lines checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cross_check_catches_what_does_not_exist() {
    let known = Known::read();
    for line in [
        "./test-vm.sh launch",
        "nix build .#p3-production",
        "scripts/deploy",
        "cargo test --locked -p no-such-crate",
        "dist/bin/ravectl frobnicate",
        "make all",
    ] {
        let mut problems = Vec::new();
        check(&known, line, &mut problems);
        assert!(!problems.is_empty(), "`{line}` passed the cross-check");
    }
}

#[test]
fn the_test_stage_runs_the_readme_test_command_as_ci_does() {
    let p = pipeline();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("scripts/test    #"),
        "the README's test command is scripts/test"
    );
    let ci_run = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(ci_run.contains("exec scripts/test"));
    let script = lines(key(&p, &p["test:workspace"], "script"));
    // Exactly the test command: an install step added here would hide one
    // the test command lacks on a fresh machine.
    assert_eq!(script, vec!["scripts/test".to_owned()]);
    let vm = lines(key(&p, &p["test:vm"], "script"));
    assert!(vm.iter().any(|l| l.contains("./test-vm.sh test")), "{vm:?}");
}
