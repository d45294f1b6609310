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

#[test]
fn the_vm_test_script_compiles() {
    let script = repo().join("tests/rave-vm.py");
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("python3")
        .args(["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)"])
        .arg(&script)
        .arg(dir.path().join("rave-vm.pyc")));
    // Twelve subtests, as docs/deploy.md lists them.
    let text = std::fs::read_to_string(&script).unwrap();
    assert_eq!(text.matches("with subtest(").count(), 12);
    // The Nix side feeds it to the driver.
    let nix = std::fs::read_to_string(repo().join("tests/rave-vm.nix")).unwrap();
    assert!(nix.contains("builtins.readFile ./rave-vm.py"));
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
    assert!(err.contains("--phase must be p0, p1 or p2"), "{err}");
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
