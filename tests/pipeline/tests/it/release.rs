//! The release job's manifest, built from a fake artifact set and verified,
//! and refused once anything in the set changes.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::binary;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn manifest(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("ravectl"))
        .arg("release-manifest")
        .arg("--dir")
        .arg(dir)
        .arg("--manifest")
        .arg(dir.join("manifest.json"))
        .args(args)
        .output()
        .unwrap()
}

fn fake_release(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for bin in [
        "ingest",
        "dedup-store",
        "task-dispatcher",
        "agent-reporter",
        "ravectl",
    ] {
        std::fs::write(dir.join("bin").join(bin), format!("\x7fELF fake {bin}")).unwrap();
    }
    for phase in ["p0", "p1", "p2"] {
        std::fs::write(
            dir.join(format!("images/rave-{phase}.qcow2")),
            vec![phase.as_bytes()[1]; 3000],
        )
        .unwrap();
    }
}

#[test]
fn a_release_manifest_lists_every_artifact_with_its_sha256_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    fake_release(dir.path());
    let out = manifest(dir.path(), &["--version", "v1.2.3", "--commit", COMMIT]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["version"], "v1.2.3");
    assert_eq!(m["commit"], COMMIT);
    assert_eq!(m["rave_version"], env!("CARGO_PKG_VERSION"));
    let artifacts = m["artifacts"].as_object().unwrap();
    assert_eq!(artifacts.len(), 8, "{artifacts:?}");
    // sha256 of "\x7fELF fake ingest", computed independently.
    let expected = Command::new("sha256sum")
        .arg(dir.path().join("bin/ingest"))
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&expected.stdout);
    assert_eq!(
        artifacts["bin/ingest"]["sha256"].as_str().unwrap(),
        expected.split_whitespace().next().unwrap()
    );
    assert_eq!(artifacts["images/rave-p2.qcow2"]["bytes"], 3000);
    let verified = manifest(dir.path(), &["--verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[test]
fn verification_refuses_a_changed_missing_or_extra_artifact() {
    for (what, change) in [
        (
            "changed",
            (|d: &Path| std::fs::write(d.join("bin/ingest"), "tampered").unwrap()) as fn(&Path),
        ),
        ("missing", |d: &Path| {
            std::fs::remove_file(d.join("images/rave-p1.qcow2")).unwrap()
        }),
        ("not in the manifest", |d: &Path| {
            std::fs::write(d.join("bin/extra"), "x").unwrap()
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fake_release(dir.path());
        assert!(
            manifest(dir.path(), &["--version", "v1.2.3", "--commit", COMMIT])
                .status
                .success()
        );
        change(dir.path());
        let out = manifest(dir.path(), &["--verify"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: verified anyway");
        let expected = match what {
            "changed" => "bin/ingest: sha256",
            "missing" => "images/rave-p1.qcow2: missing",
            _ => "bin/extra: not in the manifest",
        };
        assert!(err.contains(expected), "{what}: {err}");
    }
}

#[test]
fn a_manifest_needs_a_full_commit_id() {
    let dir = tempfile::tempdir().unwrap();
    fake_release(dir.path());
    let out = manifest(dir.path(), &["--version", "v1.2.3", "--commit", "abc123"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("40-hex-digit"));
}
