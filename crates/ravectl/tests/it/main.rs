//! `ravectl up` and `ravectl send` as a newcomer runs them: the real
//! binaries, a private PostgreSQL cluster, loopback ports picked here.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn ravectl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ravectl"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `ravectl up` and waits for its "RAVE is up" line.
fn up(state_dir: &Path, ports: [u16; 8]) -> Child {
    let mut child = ravectl()
        .arg("up")
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--ingest-port", &ports[0].to_string()])
        .args(["--store-port", &ports[1].to_string()])
        .args(["--pg-port", &ports[2].to_string()])
        .args(["--dispatcher-port", &ports[3].to_string()])
        .args(["--reporter-port", &ports[4].to_string()])
        .args(["--pushgateway-port", &ports[5].to_string()])
        .args(["--nginx-port", &ports[6].to_string()])
        .args(["--nginx-status-port", &ports[7].to_string()])
        .arg("--no-install")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line.starts_with("RAVE is up") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(90)).is_err() {
        let _ = child.kill();
        panic!(
            "ravectl up did not come up; logs in {}",
            state_dir.join("logs").display()
        );
    }
    child
}

fn send(state_dir: &Path, source: &str, delivery: &str) -> Output {
    ravectl()
        .args(["send", source, "--delivery", delivery, "--state-dir"])
        .arg(state_dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn up_turns_each_signed_webhook_into_one_task_the_reference_agent_completes_and_stops_cleanly()
 {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 8].map(|_| free_port());
    let mut stack = up(&state, ports);

    for source in ["github", "gitlab", "gitlab-token", "standard"] {
        let out = send(&state, source, &format!("d-{source}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{source}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("202 Accepted"), "{source}: {stdout}");
    }
    let again = send(&state, "github", "d-github");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("200 OK") && stdout.contains("duplicate"),
        "{stdout}"
    );

    let listing: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/v1/events", ports[1]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let mut stored: Vec<String> = listing["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["source"].as_str().unwrap(),
                e["event_uuid"].as_str().unwrap()
            )
        })
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            "github/d-github",
            "gitlab/d-gitlab",
            "gitlab/d-gitlab-token",
            "standard/d-standard"
        ]
    );

    let status = Command::new("kill")
        .args(["-TERM", &stack.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = stack.wait().unwrap();
    assert!(exit.success(), "ravectl up exits 0 on SIGTERM: {exit}");
    assert!(!state.join("stack.json").exists());
    assert!(
        !state.join("pg/data/postmaster.pid").exists(),
        "PostgreSQL was stopped"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.join("secrets/github.secret"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

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
