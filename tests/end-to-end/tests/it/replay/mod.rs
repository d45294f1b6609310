//! Operators' event tools across the whole pipeline (ADR 19): ingest,
//! dedup-store (whose search the replays read) and task-dispatcher (which
//! routes and replays), each on its own real database. An operator fixes a
//! rule, sees which stored events it changes, and replays them; replays
//! race new intake and each other; hostile content is replayed like any.

use futures_util::StreamExt as _;
use rave_service::settings::Secret;
use serde_json::Value;
use test_support::pg::{PgCluster, TestDatabase};
use test_support::sign;

use crate::helpers::*;

const OPERATOR_TOKEN: &str = "e2e-dispatcher-operator";

/// Only pushes are routed; issues are ignored until a rule is fixed.
const LIVE_ROUTES: &str = r#"
[[routes]]
event_types = ["push"]
kind = "webhook"
"#;

/// The fix: issues become triage tasks, and main-branch pushes go first.
const FIXED_ROUTES: &str = r#"
[[routes]]
event_types = ["push"]
when = [{ pointer = "/ref", equals = "refs/heads/main" }]
kind = "webhook"
priority = 1

[[routes]]
event_types = ["push"]
kind = "webhook"

[[routes]]
event_types = ["issues"]
kind = "triage"
entity_key = ["/issue/number"]
policy = "serialize"
"#;

struct Pipeline {
    ingest_url: String,
    dispatcher_url: String,
    relay: dedup_store::relay::Relay,
    reloader: task_dispatcher::reload::Reloader,
    dispatcher: task_dispatcher::Settings,
    events_db: TestDatabase,
    tasks_db: TestDatabase,
    http: reqwest::Client,
}

fn routes(text: &str) -> Vec<task_dispatcher::settings::RouteSettings> {
    toml::from_str::<toml::Table>(text).unwrap()["routes"]
        .clone()
        .try_into()
        .unwrap()
}

async fn pipeline() -> Pipeline {
    let cluster = PgCluster::shared();
    let tasks_db = cluster.create_database().await.unwrap();
    let events_db = cluster.create_database().await.unwrap();
    // The dispatcher reads dedup-store's search, and dedup-store's relay
    // feeds the dispatcher: the store's port is chosen first.
    let store_port = test_support::free_port();

    let mut dispatcher: task_dispatcher::Settings = defaults();
    dispatcher.server.port = 0;
    dispatcher.database = tasks_db.settings();
    dispatcher.routes = routes(LIVE_ROUTES);
    dispatcher.agents = vec![agent()];
    dispatcher.relay_tokens = vec![Secret::new(RELAY_TOKEN)];
    dispatcher.operator_tokens = vec![Secret::new(OPERATOR_TOKEN)];
    dispatcher.events_store.url = Some(format!("http://127.0.0.1:{store_port}"));
    dispatcher.events_store.token = Some(Secret::new(test_support::STORE_OPERATOR_TOKEN));
    dispatcher.replay.page_size = 50;
    let app = task_dispatcher::Application::build(dispatcher.clone())
        .await
        .unwrap();
    let reloader = app.reloader();
    let dispatcher_url = serve(app.port(), app.run_until_stopped()).await;

    let (relay, store_url) = stepped_store(&events_db, store_port, &dispatcher_url).await;
    let (_, ingest_url) = github_ingest(store_url).await;
    Pipeline {
        ingest_url,
        dispatcher_url,
        relay,
        reloader,
        dispatcher,
        events_db,
        tasks_db,
        http: reqwest::Client::new(),
    }
}

impl Pipeline {
    /// Sends correctly signed deliveries (16 at a time); their statuses.
    async fn send(&self, deliveries: Vec<(String, &'static str, Vec<u8>)>) -> Vec<u16> {
        futures_util::stream::iter(deliveries.into_iter().map(|(id, event_type, body)| {
            self.http
                .post(format!("{}/hooks/github", self.ingest_url))
                .header("x-github-event", event_type)
                .header("x-github-delivery", id)
                .header("x-hub-signature-256", sign::github(GITHUB_SECRET, &body))
                .body(body)
                .send()
        }))
        .buffered(16)
        .map(|r| r.expect("ingest answers").status().as_u16())
        .collect()
        .await
    }

    async fn drain(&self) {
        while self.relay.relay_once().await.expect("the relay step") > 0 {}
    }

    /// Sends the deliveries, each accepted, and relays them all.
    async fn stored(&self, deliveries: Vec<(String, &'static str, Vec<u8>)>) {
        let statuses = self.send(deliveries).await;
        assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
        self.drain().await;
    }

    async fn operator(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.dispatcher_url))
            .bearer_auth(OPERATOR_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn replay(&self, body: Value) -> (u16, Value) {
        self.operator("/v1/replays", &body).await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.tasks_db.scalar(sql).await
    }
}

async fn json_of_response(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

fn push(n: usize, branch: &str) -> (String, &'static str, Vec<u8>) {
    (
        format!("push-{branch}-{n}"),
        "push",
        format!(r#"{{"ref":"refs/heads/{branch}","n":{n}}}"#).into_bytes(),
    )
}

fn issue(n: usize) -> (String, &'static str, Vec<u8>) {
    (
        format!("issue-{n}"),
        "issues",
        format!(r#"{{"action":"opened","issue":{{"number":{n}}}}}"#).into_bytes(),
    )
}

mod flows;
mod races;
