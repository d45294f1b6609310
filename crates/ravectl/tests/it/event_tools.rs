//! `ravectl events list|show|replay` and `ravectl routes diff` on a real
//! stack: an operator finds stored events, sees what a routing change would
//! do to them, and replays them once.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{eventually, free_port, ravectl, up_with};

fn run(state: &Path, args: &[&str]) -> (i32, String) {
    let out = ravectl()
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn an_operator_finds_events_sees_a_rule_change_on_them_and_replays_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 16].map(|_| free_port());
    // With the operators' API through nginx, as an operator away from the
    // machine would use it.
    let _stack = up_with(&state, ports, &["--operator-api"]);
    for (delivery, branch) in [("tools-1", "main"), ("tools-2", "dev"), ("tools-3", "main")] {
        let body = format!(r#"{{"ref":"refs/heads/{branch}"}}"#);
        let (code, out) = run(
            &state,
            &["send", "github", "--delivery", delivery, "--body", &body],
        );
        assert_eq!(code, 0, "{out}");
    }
    let operator = std::fs::read_to_string(state.join("secrets/operator.token")).unwrap();
    let tasks_url = format!("http://127.0.0.1:{}/v1/tasks?limit=100", ports[3]);
    let http = reqwest::Client::new();
    let tasks = async || -> usize {
        let answer: Value = match http
            .get(&tasks_url)
            .bearer_auth(operator.trim())
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        answer["tasks"].as_array().map_or(0, Vec::len)
    };
    eventually("three tasks", Duration::from_secs(30), async || {
        tasks().await == 3
    })
    .await;

    let (code, listed) = run(
        &state,
        &[
            "events",
            "list",
            "--source",
            "github",
            "--where",
            "/ref=refs/heads/main",
        ],
    );
    assert_eq!(code, 0, "{listed}");
    assert!(
        listed.contains("tools-1") && listed.contains("tools-3") && !listed.contains("tools-2"),
        "{listed}"
    );
    let (code, shown) = run(&state, &["events", "show", "github", "tools-2"]);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("body (JSON)") && shown.contains("refs/heads/dev"),
        "{shown}"
    );

    // Proposed: main-branch pushes become `release` tasks; the rest stays.
    let proposed = dir.path().join("proposed.toml");
    std::fs::write(
        &proposed,
        "[[routes]]\nwhen = [{ pointer = \"/ref\", equals = \"refs/heads/main\" }]\nkind = \"release\"\n\n[[routes]]\nkind = \"webhook\"\n",
    )
    .unwrap();
    let config = proposed.to_str().unwrap();
    let (code, diff) = run(
        &state,
        &["routes", "diff", "--config", config, "--since", "1h"],
    );
    assert_eq!(code, 0, "{diff}");
    assert!(
        diff.contains("3 stored event(s) read; 2 routed differently"),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.starts_with("kind") && l.contains("webhook") && l.contains("release")),
        "{diff}"
    );
    let (code, _) = run(
        &state,
        &["routes", "diff", "--config", config, "--fail-on-change"],
    );
    assert_eq!(code, 3, "a deploy check fails on a change");
    assert_eq!(tasks().await, 3, "a diff writes nothing");

    let (code, dry) = run(&state, &["events", "replay", "--type", "push"]);
    assert_eq!(code, 0, "{dry}");
    assert!(
        dry.contains("dry run: 3 event(s) would be replayed"),
        "{dry}"
    );
    assert_eq!(tasks().await, 3, "a dry run writes nothing");
    // One command, run twice.
    const APPLY: [&str; 9] = [
        "events",
        "replay",
        "--type",
        "push",
        "--since",
        "1h",
        "--request-id",
        "tools",
        "--apply",
    ];
    let (code, done) = run(&state, &APPLY);
    assert_eq!(code, 0, "{done}");
    assert!(
        done.contains("request tools: matched 3, created 3"),
        "{done}"
    );
    assert_eq!(tasks().await, 6);
    let (code, again) = run(&state, &APPLY);
    assert_eq!(code, 0, "{again}");
    // The same command later: `--since 1h` is another instant now, and
    // still the same replay.
    assert!(again.contains("request tools ran before"), "{again}");
    assert_eq!(tasks().await, 6, "the same request creates nothing twice");

    // Through nginx: the operators' routes with a token, and without one.
    let through_nginx = |path: &str, token: Option<&str>| {
        let mut curl = std::process::Command::new("curl");
        curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(state.join("secrets/tls.crt"))
            .args([
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                "{}",
            ])
            .arg(format!("https://localhost:{}{path}", ports[6]));
        if let Some(token) = token {
            curl.args(["-H", &format!("authorization: Bearer {token}")]);
        }
        String::from_utf8_lossy(&curl.output().unwrap().stdout).into_owned()
    };
    let token = operator.trim();
    assert_eq!(through_nginx("/v1/events/search", Some(token)), "200");
    assert_eq!(
        through_nginx("/v1/routes/diff", Some(token)),
        "400",
        "served: the body lacks routes_toml"
    );
    assert_eq!(through_nginx("/v1/events/search", None), "401");
    // Event inserts (ingest's) and internal routes stay closed.
    assert_eq!(through_nginx("/v1/events", Some(token)), "404");
    assert_eq!(through_nginx("/v1/internal/events", Some(token)), "404");
    let (code, verified) = run(&state, &["verify"]);
    assert!(
        verified
            .lines()
            .any(|l| l.contains("exposure") && l.contains("served, 401 without a token")),
        "{code}: {verified}"
    );
}
