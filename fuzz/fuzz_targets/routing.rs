//! Routing rules over arbitrary payloads: JSON pointers, conditions, entity
//! keys. Never a panic; the same event always routes the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use task_dispatcher::routing::Router;
use task_dispatcher::settings::RouteSettings;

const RULES: &str = r#"
[[routes]]
source = "gitlab"
event_types = ["Merge Request Hook"]
when = [{ pointer = "/object_attributes/action", in = ["open", "reopen"] }, { pointer = "/draft", exists = false }]
kind = "review"
entity_key = ["/project/id", "/object_attributes/iid"]
policy = "supersede"

[[routes]]
when = [{ pointer = "/a~1b/~0c/0", equals = 1 }]
kind = "escaped"
entity_key = [""]

[[routes]]
source = "github"
kind = "webhook"
entity_key = ["/repository/full_name", "/ref"]
policy = "serialize"
"#;

#[derive(serde::Deserialize)]
struct Routes {
    routes: Vec<RouteSettings>,
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static ROUTER: Router =
        Router::from_settings(&toml::from_str::<Routes>(RULES).unwrap().routes).unwrap());
    let (source, rest) = match data.first() {
        Some(b) if b % 3 == 0 => ("gitlab", &data[1..]),
        Some(b) if b % 3 == 1 => ("github", &data[1..]),
        _ => ("other", data),
    };
    let body: Option<serde_json::Value> = serde_json::from_slice(rest).ok();
    ROUTER.with(|router| {
        let first = router.route(source, "Merge Request Hook", body.as_ref());
        let again = router.route(source, "Merge Request Hook", body.as_ref());
        assert_eq!(first, again);
        if let Some(routed) = first.and_then(|r| r.entity_key) {
            assert!(routed.starts_with(source), "an entity key names its source");
        }
    });
});
