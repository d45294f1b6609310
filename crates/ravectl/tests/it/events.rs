//! `ravectl events erase` on a real stack: a delivery that carried a secret
//! is gone from both databases, with an audit record, and its retry stores
//! nothing.

use std::time::Duration;

use serde_json::Value;

use super::{eventually, free_port, ravectl, send, up};

fn erase(state: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = ravectl()
        .args([
            "events",
            "erase",
            "--source",
            "github",
            "--delivery",
            "leaky-1",
        ])
        .args([
            "--reason",
            "a token in the payload",
            "--requested-by",
            "alice",
        ])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn an_erased_delivery_is_gone_from_both_databases_and_its_retry_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 16].map(|_| free_port());
    let _stack = up(&state, ports);
    let sent = send(&state, "github", "leaky-1");
    assert!(sent.status.success());
    let printed = String::from_utf8_lossy(&sent.stdout);
    let json = &printed[printed.find('{').expect("the answer")..];
    let answer: Value = serde_json::from_str(json.trim()).unwrap();
    let task_id = answer["task_id"].as_str().unwrap().to_owned();
    let operator = std::fs::read_to_string(state.join("secrets/operator.token")).unwrap();
    let operator = operator.trim();
    let http = reqwest::Client::new();
    let task_url = format!("http://127.0.0.1:{}/v1/tasks/{task_id}", ports[3]);
    let task = async || -> Option<Value> {
        let r = http
            .get(&task_url)
            .bearer_auth(operator)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    };
    eventually("the task", Duration::from_secs(30), async || {
        task().await.is_some_and(|t| t["task_id"] == task_id)
    })
    .await;

    let (ok, dry) = erase(&state, &[]);
    assert!(
        ok && dry.contains("dry run: 1 event(s) would be erased") && dry.contains("github/leaky-1"),
        "{dry}"
    );
    let event_url = format!("http://127.0.0.1:{}/v1/events/github/leaky-1", ports[1]);
    let event = async || {
        http.get(&event_url)
            .bearer_auth(operator)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(event().await, 200, "a dry run erases nothing");

    let (ok, done) = erase(&state, &["--yes"]);
    assert!(ok, "{done}");
    assert!(
        done.contains("erased 1 event(s)")
            && done.contains("task payloads in task-dispatcher: erased"),
        "{done}"
    );
    assert_eq!(event().await, 404);
    let task = task().await.unwrap();
    assert_eq!(task["state"], "cancelled", "{task}");
    assert_eq!(task["cancel_reason"], "erased", "{task}");

    let again = send(&state, "github", "leaky-1");
    let printed = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success() && printed.contains("\"status\":\"duplicate\""),
        "{printed}"
    );
    assert_eq!(event().await, 404, "the retry stored nothing");
}
