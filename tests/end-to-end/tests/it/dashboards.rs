//! The Grafana dashboards and provisioning, checked without Grafana: the
//! dashboard-linter rules (grafana/dashboard-linter, reimplemented), every
//! query parsing as PromQL, and every metric existing in some component.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The schema version all dashboards pin (Grafana migrates it up on load).
const SCHEMA_VERSION: u64 = 39;
const UNITS: &[&str] = &[
    "none",
    "short",
    "percent",
    "percentunit",
    "s",
    "ms",
    "bytes",
    "Bps",
    "reqps",
    "ops",
];
const DASHBOARDS: [&str; 3] = ["project-health", "agent-performance", "system-health"];
/// The histograms whose buckets carry a `trace_id` exemplar (the services'
/// `HistogramWithExemplars`); nothing pushed through the Pushgateway does.
const EXEMPLAR_HISTOGRAMS: [&str; 3] = [
    "webhook_duration_seconds",
    "dedup_commit_duration_seconds",
    "task_duration_seconds",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dashboards() -> Vec<(String, Value)> {
    DASHBOARDS
        .iter()
        .map(|name| {
            let text =
                std::fs::read_to_string(repo().join(format!("grafana/dashboards/{name}.json")))
                    .unwrap();
            assert!(
                !text.contains("__inputs")
                    && !text.contains("__requires")
                    && !text.contains("${DS_"),
                "{name}: not a bare model"
            );
            (name.to_string(), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

/// Every Prometheus target as (dashboard, panel title, expression).
fn targets() -> Vec<(String, String, String)> {
    dashboards()
        .into_iter()
        .flat_map(|(name, d)| {
            d["panels"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|p| {
                    let title = p["title"].as_str().unwrap_or_default().to_owned();
                    let name = name.clone();
                    p["targets"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(move |t| {
                            Some((name.clone(), title.clone(), t["expr"].as_str()?.to_owned()))
                        })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The expression as Prometheus would receive it from Grafana.
pub fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("\"$job\"", "\".+\"")
        .replace("\"$instance\"", "\".+\"")
}

/// Metrics pushed through the Pushgateway keep the agent's labels, not the
/// scrape's job/instance; ALERTS is Prometheus' own. Documented exceptions
/// to the job/instance rule.
fn exempt(metric: &str) -> bool {
    metric.starts_with("agent_") || metric.starts_with("push_") || metric == "ALERTS"
}

/// Metric names in an expression: identifiers followed by a selector or range.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            let in_braces = expr[..start].matches('{').count() > expr[..start].matches('}').count();
            let next = expr[i..].trim_start().chars().next();
            let keyword = [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
                "and",
                "or",
                "unless",
                "bool",
                "offset",
            ];
            if !in_braces
                && !keyword.contains(&word)
                && matches!(
                    next,
                    Some('{')
                        | Some('[')
                        | None
                        | Some(')')
                        | Some(' ')
                        | Some('/')
                        | Some('*')
                        | Some('-')
                        | Some('+')
                        | Some('>')
                        | Some('<')
                        | Some('=')
                )
                && next != Some('(')
                && !word.chars().all(|c| c.is_ascii_digit())
            {
                out.insert(word.to_owned());
            }
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out.retain(|w| w.contains('_') || w == "up" || w == "ALERTS");
    out
}

#[test]
fn dashboards_follow_the_lint_rules() {
    let mut uids = HashSet::new();
    let mut titles = HashSet::new();
    for (name, d) in dashboards() {
        assert!(
            d.get("id").is_none_or(Value::is_null),
            "{name}: id must be absent"
        );
        let uid = d["uid"].as_str().unwrap();
        assert!(
            uid.len() <= 40 && uids.insert(uid.to_owned()),
            "{name}: uid {uid}"
        );
        assert!(
            titles.insert(d["title"].as_str().unwrap().to_owned()),
            "{name}: duplicate title"
        );
        assert_eq!(d["schemaVersion"], SCHEMA_VERSION, "{name}: schemaVersion");
        assert_eq!(d["editable"], false, "{name}: editable");

        let vars = d["templating"]["list"].as_array().unwrap();
        // One datasource variable is `datasource`; with several, each is
        // `<type>_datasource` (dashboard-linter's template-datasource-rule).
        let datasources: Vec<&Value> = vars.iter().filter(|v| v["type"] == "datasource").collect();
        let variable_of = |kind: &str| -> String {
            if datasources.len() == 1 {
                "datasource".to_owned()
            } else {
                format!("{kind}_datasource")
            }
        };
        for v in &datasources {
            let kind = v["query"].as_str().unwrap();
            assert!(
                ["prometheus", "tempo"].contains(&kind),
                "{name}: {kind} datasource"
            );
            assert_eq!(v["name"].as_str().unwrap(), variable_of(kind), "{name}");
        }
        assert!(
            datasources.iter().any(|v| v["query"] == "prometheus"),
            "{name}: a Prometheus datasource variable"
        );
        let uid_of = |kind: &str| format!("${{{}}}", variable_of(kind));
        for var in ["job", "instance"] {
            let v = vars
                .iter()
                .find(|v| v["name"] == var)
                .unwrap_or_else(|| panic!("{name}: no {var} variable"));
            assert_eq!(v["type"], "query");
            assert_eq!(v["multi"], true, "{name}.{var}: multi");
            assert_eq!(v["allValue"], ".+", "{name}.{var}: allValue");
            assert_eq!(v["refresh"], 2, "{name}.{var}: refresh on time change");
            assert_eq!(v["datasource"]["uid"], uid_of("prometheus").as_str());
        }

        let mut ids = HashSet::new();
        let mut cells = HashSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: a panel without title");
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}/{title}: description"
            );
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}/{title}: duplicate panel id"
            );
            let unit = p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or_default();
            assert!(UNITS.contains(&unit), "{name}/{title}: unit {unit:?}");
            let kind = p["datasource"]["type"].as_str().unwrap_or_default();
            assert_eq!(
                p["datasource"]["uid"],
                uid_of(kind).as_str(),
                "{name}/{title}: datasource"
            );
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            );
            assert!(x + w <= 24, "{name}/{title}: wider than the grid");
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(
                        cells.insert((cx, cy)),
                        "{name}/{title}: overlaps another panel"
                    );
                }
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{name}/{title}: no targets");
            if p["type"] == "table" && kind == "prometheus" {
                assert!(
                    p["transformations"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t["id"] == "merge")),
                    "{name}/{title}: a table merges its queries into one"
                );
            }
            let mut refs = HashSet::new();
            for t in &targets {
                assert!(
                    refs.insert(t["refId"].as_str().unwrap().to_owned()),
                    "{name}/{title}: duplicate refId"
                );
                assert_eq!(
                    t["datasource"], p["datasource"],
                    "{name}/{title}: target datasource"
                );
                if kind == "tempo" {
                    // A trace search by task id: TraceQL on the span attribute.
                    assert_eq!(t["queryType"], "traceql", "{name}/{title}");
                    assert!(
                        t["query"]
                            .as_str()
                            .is_some_and(|q| q.contains("span.task_id = \"$task_id\"")),
                        "{name}/{title}: {}",
                        t["query"]
                    );
                    assert!(
                        vars.iter()
                            .any(|v| v["name"] == "task_id" && v["type"] == "textbox"),
                        "{name}/{title}: a task_id box"
                    );
                    continue;
                }
                let expr = t["expr"].as_str().unwrap();
                // Exemplars only where the series carries them: the
                // services' own histograms (the Pushgateway keeps none).
                let carries = metric_names(expr)
                    .iter()
                    .any(|m| EXEMPLAR_HISTOGRAMS.contains(&base(m)) && m.ends_with("_bucket"));
                assert_eq!(
                    t["exemplar"].as_bool().unwrap_or(false),
                    carries,
                    "{name}/{title}: exemplars on {expr}"
                );
                if p["type"] == "table" {
                    assert_eq!(
                        (t["instant"].as_bool(), t["format"].as_str()),
                        (Some(true), Some("table")),
                        "{name}/{title}: a table's queries are instant, as tables"
                    );
                    let column = format!("Value #{}", t["refId"].as_str().unwrap());
                    let unit = p["fieldConfig"]["overrides"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|o| o["matcher"]["options"] == column.as_str())
                        .flat_map(|o| o["properties"].as_array().cloned().unwrap_or_default())
                        .find(|p| p["id"] == "unit");
                    assert!(
                        unit.is_some_and(
                            |u| UNITS.contains(&u["value"].as_str().unwrap_or_default())
                        ),
                        "{name}/{title}: {column} has no unit"
                    );
                }
                // Loopback is traffic between local processes; read-only
                // mounts (the Nix store) are always full.
                for at in expr.match_indices("node_network_") {
                    let selector = &expr[at.0..];
                    let selector = &selector[..selector.find('}').unwrap()];
                    assert!(
                        selector.contains("device!=\"lo\""),
                        "{name}/{title}: {expr}"
                    );
                }
                if expr.contains("node_filesystem_avail_bytes") {
                    assert!(
                        expr.contains(
                            "and on (instance, device, mountpoint) node_filesystem_readonly{"
                        ) && expr.ends_with("== 0"),
                        "{name}/{title}: writable filesystems only: {expr}"
                    );
                }
                // Ranges: only $__rate_interval.
                for range in expr.split('[').skip(1) {
                    assert!(
                        range.starts_with("$__rate_interval]"),
                        "{name}/{title}: range [{range} in {expr}"
                    );
                }
                for metric in metric_names(expr) {
                    if metric.ends_with("_total") {
                        let at = expr.find(&metric).unwrap();
                        let before = expr[..at].trim_end();
                        assert!(
                            before.ends_with("rate(") || before.ends_with("increase("),
                            "{name}/{title}: counter {metric} outside rate/increase"
                        );
                    }
                    if !exempt(&metric) {
                        for occurrence in expr.match_indices(&format!("{metric}{{")) {
                            let selector = &expr[occurrence.0..];
                            let selector = &selector[..selector.find('}').unwrap()];
                            assert!(
                                selector.contains("job=~\"$job\"")
                                    && selector.contains("instance=~\"$instance\""),
                                "{name}/{title}: {metric} without job/instance filters"
                            );
                        }
                        assert!(
                            expr.contains(&format!("{metric}{{")),
                            "{name}/{title}: {metric} without a selector"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, _, expr)) in targets().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query:{i}\n        expr: {}\n",
            serde_json::to_string(&substitute(expr)).unwrap()
        ));
    }
    let file = dir.path().join("queries.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names RAVE's services register, as exposed (process_* included).
/// Label families appear only once they have a child, so one is made in each,
/// as a running service would.
fn service_metrics() -> BTreeSet<String> {
    let ingest = ingest::metrics::Metrics::new();
    ingest.initialise_sources(["github"]);
    let _ = ingest
        .errors
        .get_or_create_owned(&ingest::metrics::ErrorLabels {
            source: "github".into(),
            reason: "x",
        });
    let store = dedup_store::metrics::Metrics::new();
    store.reconcile.initialise_sources(["github"]);
    let _ = store
        .reconcile
        .last_success
        .get_or_create(&dedup_store::metrics::SourceLabel {
            source: "github".into(),
        });
    let _ = store
        .rejected
        .get_or_create_owned(&dedup_store::metrics::ReasonLabel { reason: "x" });
    let dispatcher = task_dispatcher::metrics::Metrics::new();
    dispatcher.initialise_kinds(["webhook"]);
    let _ = dispatcher
        .events_ignored
        .get_or_create_owned(&task_dispatcher::metrics::SourceLabel { source: "x".into() });
    let _ = dispatcher
        .events_quarantined
        .get_or_create_owned(&task_dispatcher::metrics::SourceLabel { source: "x".into() });
    let _ = dispatcher
        .rejected
        .get_or_create_owned(&task_dispatcher::metrics::ReasonLabel { reason: "x" });
    let reporter = agent_reporter::metrics::Metrics::new();
    let _ = reporter
        .rejected
        .get_or_create_owned(&agent_reporter::metrics::ReasonLabel { reason: "x" });
    let mut text = String::new();
    for registry in [
        &ingest.registry,
        &store.registry,
        &dispatcher.registry,
        &reporter.registry,
    ] {
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            })
        })
        .collect()
}

fn known_metrics() -> BTreeSet<String> {
    let recorded = std::fs::read_to_string(repo().join("prometheus/exporter-metrics.txt")).unwrap();
    let mut known: BTreeSet<String> = recorded
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    known.extend(service_metrics());
    // Every service's, on cgroup v2 only (this machine may have v1).
    known.extend(rave_service::metrics::CGROUP_METRICS.map(String::from));
    // Synthesized by Prometheus itself for every target, and its alerts.
    known.extend(["up", "ALERTS"].map(String::from));
    // What agent-reporter pushes (its names are fixed in push.rs).
    known.extend(
        [
            "agent_jobs_total",
            "agent_job_duration_seconds",
            "agent_tokens_total",
            "agent_cost_total",
        ]
        .map(String::from),
    );
    // What `ravectl backup` and `ravectl backup-report` push, as they push it.
    let newest = ravectl::backup::BackupInfo {
        label: "20261202-010000F".into(),
        kind: "full".into(),
        started: 0,
        stopped: 1,
        size: 1,
        repo_size: 1,
    };
    let ok = ravectl::backup::Outcome {
        ok: true,
        kind: "full".into(),
        duration_secs: 1.0,
        newest: Some(newest),
        error: None,
    };
    known.extend(
        ravectl::backup::exposition(&ok, 2)
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(String::from),
    );
    known
}

fn base(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn every_metric_a_dashboard_or_rule_uses_exists_in_some_component() {
    let known = known_metrics();
    let text = std::fs::read_to_string(repo().join("prometheus/rules/rave-alerts.yml")).unwrap()
        + &std::fs::read_to_string(repo().join("prometheus/rules/rave-recording.yml")).unwrap();
    let recorded: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect();
    let mut used: Vec<(String, String)> = targets()
        .into_iter()
        .flat_map(|(d, p, e)| {
            metric_names(&e)
                .into_iter()
                .map(move |m| (format!("{d}/{p}"), m))
        })
        .collect();
    for line in text.lines().filter_map(|l| l.trim().strip_prefix("expr: ")) {
        used.extend(
            metric_names(line)
                .into_iter()
                .map(|m| ("rules".to_owned(), m)),
        );
    }
    for (place, metric) in used {
        assert!(
            known.contains(&metric) || known.contains(base(&metric)) || recorded.contains(&metric),
            "{place}: {metric} is exposed by no component"
        );
    }
}

#[test]
fn the_seeds_key_metrics_are_on_their_dashboards() {
    let all: Vec<(String, String, String)> = targets();
    let on = |dashboard: &str, needle: &str| {
        all.iter()
            .any(|(d, _, e)| d == dashboard && e.contains(needle))
    };
    for (dashboard, needle) in [
        ("project-health", "up{"),
        ("project-health", "node_memory_MemAvailable_bytes"),
        ("project-health", "rate(webhook_events_processed_total"),
        ("project-health", "webhook_duration_seconds_sum"),
        ("project-health", "webhook_dispatcher_uptime_seconds"),
        ("system-health", "node_cpu_seconds_total"),
        ("system-health", "node_disk_read_bytes_total"),
        ("system-health", "pg_stat_database_numbackends"),
        ("agent-performance", "task_duration_seconds_bucket"),
        ("agent-performance", "agent_jobs_total"),
    ] {
        assert!(on(dashboard, needle), "{dashboard}: no query with {needle}");
    }
}
