use std::process::Command;

use crate::helpers::{nix_files, nix_parse, repo, run, tool};

#[test]
fn every_nix_file_parses() {
    let files = nix_files();
    assert!(
        files.len() >= 14,
        "expected the flake, its modules, hosts, libs and VM test; found {files:?}"
    );
    for file in &files {
        let out = nix_parse(file);
        assert!(
            out.status.success(),
            "{} does not parse:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn nix_files_have_no_dead_code() {
    let deadnix = tool("deadnix", "cargo install --locked deadnix@1.3.1");
    run(Command::new(deadnix).arg("--fail").args(nix_files()));
}

#[test]
fn nix_files_are_formatted_as_nixpkgs_fmt_formats_them() {
    let fmt = tool("nixpkgs-fmt", "cargo install --locked nixpkgs-fmt@1.3.0");
    run(Command::new(fmt).arg("--check").args(nix_files()));
}

/// The VM test's nodes, which the driver turns into Python globals.
fn vm_nodes() -> Vec<String> {
    let file = repo().join("tests/rave-vm.nix");
    nixos_checks::modules::inline_modules(&file, "tests/rave-vm.nix")
        .into_iter()
        .filter_map(|m| {
            m.name
                .strip_prefix("tests/rave-vm.nix#nodes.")
                .map(str::to_owned)
        })
        .collect()
}

/// The script as tests/rave-vm.nix hands it to the driver.
fn vm_script(body: &str) -> String {
    format!("SNAKEOIL_PRIVATE_KEY = \"\"\"-----BEGIN OPENSSH PRIVATE KEY-----\"\"\"\n{body}")
}

/// pyflakes as the driver runs it: node names and driver symbols as builtins.
fn pyflakes(script: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test-script");
    std::fs::write(&file, script).unwrap();
    let symbols = "start_all,subtest,retry,test_script,machines,vlans,driver,log,run_tests,\
                   join_all,serial_stdout_off,serial_stdout_on,polling_condition";
    Command::new(tool("pyflakes", "pip install pyflakes==4.1.0"))
        .arg(&file)
        .env(
            "PYFLAKES_BUILTINS",
            format!("{},{symbols}", vm_nodes().join(",")),
        )
        .output()
        .unwrap()
}

/// mypy as the driver runs it: the prepended hints, one `name: QemuMachine;`
/// per node, then the script; the driver's API from tests/nixos-driver-stub.
fn mypy(script: &str) -> std::process::Output {
    let stub = repo().join("tests/nixos-driver-stub");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("testScriptWithTypes");
    let hints: Vec<_> = vm_nodes()
        .iter()
        .map(|n| format!("{n}: QemuMachine;"))
        .collect();
    let prepend = std::fs::read_to_string(stub.join("test-script-prepend.py")).unwrap();
    std::fs::write(&file, format!("{prepend}{}\n\n\n{script}", hints.join(" "))).unwrap();
    Command::new(tool("mypy", "pip install mypy==2.4.1"))
        .args([
            "--no-implicit-optional",
            "--pretty",
            "--no-color-output",
            "--cache-dir",
        ])
        .arg(dir.path().join("cache"))
        .arg(&file)
        .env("MYPYPATH", &stub)
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_vm_test_script_passes_the_drivers_pyflakes_and_mypy() {
    let body = std::fs::read_to_string(repo().join("tests/rave-vm.py")).unwrap();
    assert_eq!(vm_nodes(), ["server", "replicas", "client"]);
    let out = pyflakes(&vm_script(&body));
    assert!(out.status.success(), "pyflakes:\n{}", text(&out));
    let out = mypy(&vm_script(&body));
    assert!(out.status.success(), "mypy:\n{}", text(&out));
    // Seventeen subtests, as docs/deploy.md lists them.
    assert_eq!(body.matches("with subtest(").count(), 17);
    // An expected failure names its reason (`fails_because`); a bare
    // `fail` passes on "command not found" too.
    assert!(
        !body.contains(".fail("),
        "use fails_because(machine, command, reason)"
    );
    // The Nix side feeds it to the driver.
    let nix = std::fs::read_to_string(repo().join("tests/rave-vm.nix")).unwrap();
    assert!(nix.contains("builtins.readFile ./rave-vm.py"));
}

#[test]
fn the_script_lints_catch_what_the_driver_would_refuse() {
    // The f-string without placeholders the script once had.
    let out = pyflakes(&vm_script("x = f\"curl -w '%{{http_code}}'\"\n"));
    assert!(
        !out.status.success() && text(&out).contains("f-string is missing placeholders"),
        "{}",
        text(&out)
    );
    // A name the driver does not define.
    let out = pyflakes(&vm_script("machine.succeed('true')\n"));
    assert!(
        text(&out).contains("undefined name 'machine'"),
        "{}",
        text(&out)
    );
    // A call the driver's API does not take.
    let out = mypy(&vm_script("server.wait_for_open_port('3002')\n"));
    assert!(
        !out.status.success() && text(&out).contains("incompatible type"),
        "{}",
        text(&out)
    );
}

#[test]
fn test_vm_sh_says_what_is_missing_or_wrong() {
    let script = repo().join("test-vm.sh");
    // A PATH with the script's tools but no Nix; then with a Nix too old.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["dirname", "sort", "head", "awk", "sed", "id", "printf"] {
        let target = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(target, bin.path().join(tool)).unwrap();
    }
    let run_with = |args: &[&str]| {
        let out = Command::new("/bin/bash")
            .arg(&script)
            .args(args)
            .env("PATH", bin.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run_with(&["build", "--phase", "p2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Nix is not installed"), "{err}");
    let (code, err) = run_with(&["build", "--phase", "p9"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--phase must be p0, p1, p2 or p2-trial"),
        "{err}"
    );
    let (code, err) = run_with(&["launch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown command 'launch'"), "{err}");
    let (code, _) = run_with(&["help"]);
    assert_eq!(code, Some(0));

    let nix = bin.path().join("nix");
    std::fs::write(&nix, "#!/bin/bash\necho 'nix (Nix) 2.8.0'\n").unwrap();
    std::fs::set_permissions(&nix, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, err) = run_with(&["test"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Nix 2.8.0 is older than 2.18"), "{err}");
}

#[test]
fn test_vm_sh_runs_the_seeds_commands() {
    let script = std::fs::read_to_string(repo().join("test-vm.sh")).unwrap();
    for command in [
        "nix run .#qemu",
        "nix run \".#$(phase_output \"$PHASE\")\"",
        "nix run .#tests.rave-vm",
        "nix flake metadata",
    ] {
        assert!(
            script.contains(command),
            "test-vm.sh does not run `{command}`"
        );
    }
    for (phase, app) in [
        ("p1", "p1-production"),
        ("p2", "p2-production"),
        ("p2-trial", "p2-trial"),
    ] {
        assert!(
            script.contains(&format!("{phase}) echo {app} ;;")),
            "{phase}"
        );
    }
}

#[test]
fn the_image_runner_cleans_its_overlay_up_because_qemu_is_not_execd() {
    use rowan::ast::AstNode;
    let flake = nixos_checks::modules::parse(&repo().join("flake.nix"));
    let boot = flake
        .syntax()
        .descendants()
        .filter_map(rnix::ast::AttrpathValue::cast)
        .find(|a| a.attrpath().is_some_and(|p| p.syntax().text() == "boot"))
        .expect("flake.nix binds `boot`");
    let text = boot.value().unwrap().syntax().text().to_string();
    let trap = text
        .find("trap 'rm -rf \"$work\"' EXIT")
        .expect("the runner removes its overlay on exit");
    // exec replaces the shell, and its EXIT trap with it.
    assert!(
        !text[trap..]
            .lines()
            .any(|l| l.trim_start().starts_with("exec ")),
        "the runner execs after setting its EXIT trap:\n{text}"
    );
}
