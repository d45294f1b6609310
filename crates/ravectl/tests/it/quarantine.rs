//! `ravectl quarantine` on a real stack: an event the dispatcher could not
//! take in is listed with its reason, and a retry says why it is still set
//! aside.

use super::{free_port, ravectl, send, up};

#[tokio::test]
async fn quarantine_lists_a_set_aside_event_with_its_reason_and_a_retry_says_why_it_stays() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 16].map(|_| free_port());
    let _stack = up(&state, ports);
    let out = send(&state, "github", "ordinary");
    assert!(out.status.success());

    // What the relay would hand over if a header held NUL: set aside, and
    // the hand-off still answers 200 (so the relay moves on).
    let relay_token = std::fs::read_to_string(state.join("secrets/relay.token")).unwrap();
    let task_id = "0123456789abcdef";
    let event = serde_json::json!({
        "task_id": task_id,
        "source": "github",
        "event_uuid": "poisoned-1",
        "event_type": "push",
        "received_at": "2026-12-01T10:00:00Z",
        "trace_id": null,
        "headers": {"user-agent": "a\u{0}b"},
        "body_base64": "e30=", // "{}"
    });
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/internal/events", ports[3]))
        .bearer_auth(relay_token.trim())
        .json(&serde_json::json!({ "events": [event] }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let list = ravectl()
        .args(["quarantine", "list", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{listing}");
    let line = listing
        .lines()
        .find(|l| l.contains(task_id))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        line.contains("github/poisoned-1") && line.contains("NUL"),
        "{line}"
    );
    let id = line.split_whitespace().next().unwrap();

    let retry = ravectl()
        .args(["quarantine", "retry", id, "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&retry.stdout);
    assert_eq!(retry.status.code(), Some(1), "{said}");
    assert!(
        said.contains("still quarantined") && said.contains("NUL"),
        "{said}"
    );
}
