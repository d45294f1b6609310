//! Routes, agents and tokens reloaded while the dispatcher runs: a new rule,
//! a new agent or a removed one needs no restart, and a bad configuration
//! changes nothing.

use serde_json::json;
use task_dispatcher::auth::token_digest;
use task_dispatcher::settings::{AgentSettings, RouteSettings, Settings};

use crate::helpers::{TestDispatcher, agent_token, event, sample, spawn_dispatcher};

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn rule(toml_rule: &str) -> RouteSettings {
    toml::from_str(toml_rule).unwrap()
}

fn with(d: &TestDispatcher, adjust: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = d.settings.clone();
    adjust(&mut settings);
    settings
}

#[tokio::test]
async fn an_agent_added_by_a_reload_claims_at_once_and_a_removed_one_is_refused() {
    let d = spawn_dispatcher().await;
    d.push_task().await;
    let (status, _) = d.claim("newcomer", json!({"wait_secs": 0})).await;
    assert_eq!(status, 401, "not configured yet");

    let settings = with(&d, |s| {
        s.agents.retain(|a| a.name != "agent-0");
        s.agents.push(AgentSettings {
            name: "newcomer".into(),
            token_sha256: hex(token_digest(&agent_token("newcomer"))),
            kinds: vec!["build".into()],
        });
    });
    d.reloader.apply(&settings).unwrap();

    assert_eq!(d.claim_now("newcomer", 1).await.len(), 1);
    let (status, _) = d.claim("agent-0", json!({"wait_secs": 0})).await;
    assert_eq!(status, 401, "removed agents' tokens stop working");
}

#[tokio::test]
async fn a_rule_added_by_a_reload_routes_later_events_and_leaves_earlier_tasks_as_they_were() {
    let d = spawn_dispatcher().await;
    let before = event("github", "deployment", json!({"id": 1}));
    let taken = d.handoff(std::slice::from_ref(&before)).await;
    assert_eq!(taken["ignored"], 1, "{taken}");

    let settings = with(&d, |s| {
        s.routes.insert(
            0,
            rule("event_types = [\"deployment\"]\nkind = \"deploy\"\npriority = 2"),
        );
        s.agents.push(AgentSettings {
            name: "deployer".into(),
            token_sha256: hex(token_digest(&agent_token("deployer"))),
            kinds: vec!["deploy".into()],
        });
    });
    let summary = d.reloader.apply(&settings).unwrap();
    assert!(summary.contains("5 routing rules"), "{summary}");

    let after = event("github", "deployment", json!({"id": 2}));
    let taken = d.handoff(std::slice::from_ref(&after)).await;
    assert_eq!(taken["created_count"], 1, "{taken}");
    let task = d.task(after["task_id"].as_str().unwrap()).await;
    assert_eq!(
        (task["kind"].as_str(), task["priority"].as_i64()),
        (Some("deploy"), Some(2))
    );
    assert_eq!(d.claim_now("deployer", 5).await.len(), 1);
    // The new kind is counted from the reload on.
    let metrics = d.metrics().await;
    assert_eq!(
        sample(&metrics, "dispatcher_tasks_created_total{kind=\"deploy\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_reload_with_an_invalid_rule_is_refused_whole_and_the_running_rules_and_agents_stay() {
    let d = spawn_dispatcher().await;
    let settings = with(&d, |s| {
        s.routes
            .insert(0, rule("event_types = [\"push\"]\nkind = \"NOT A KIND!\""));
        s.agents.clear();
    });
    let refused = d.reloader.apply(&settings);
    assert!(refused.is_err(), "an invalid kind is refused");

    let task = d.push_task().await;
    assert_eq!(d.task(&task).await["kind"], "build", "the old rules route");
    assert_eq!(
        d.claim_now("builder", 1).await.len(),
        1,
        "the old agents claim"
    );
}
