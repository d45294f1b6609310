//! What `ravectl up` and `send` refuse before they start anything, and how
//! they say so.

use std::process::Command;

use super::{free_port, ravectl, send};

#[test]
fn up_names_the_component_whose_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = ravectl()
        .arg("up")
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--ingest-port", &port.to_string(), "--no-install"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port} (ingest) is already in use")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn send_without_a_running_stack_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = send(dir.path(), "github", "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the stack up"));
}

#[test]
fn up_under_a_directory_postgres_cannot_enter_says_which_and_starts_nothing() {
    // Only as root does the cluster run as another user (`postgres`).
    if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout != b"0\n")
    {
        eprintln!("not root: PostgreSQL runs as this user, nothing to check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What `mktemp -d` makes: a directory only its owner may enter.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let state = private.join("state");
    let mut up = ravectl();
    up.arg("up")
        .arg("--state-dir")
        .arg(&state)
        .arg("--no-install");
    for flag in [
        "--ingest-port",
        "--store-port",
        "--dispatcher-port",
        "--reporter-port",
        "--pushgateway-port",
        "--nginx-port",
        "--nginx-status-port",
        "--pg-port",
    ] {
        up.args([flag, &free_port().to_string()]);
    }
    let out = up.output().unwrap();

    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "`postgres` user, which cannot enter {} (mode 0700",
            private.display()
        )) && stderr.contains(&format!("chmod o+x {}", private.display())),
        "{stderr}"
    );
    assert!(!state.exists(), "nothing was created, so nothing started");
}
