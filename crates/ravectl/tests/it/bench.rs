//! `ravectl bench all --smoke`: every mode runs for a few seconds against a
//! real stack and writes its report, so the bench never rots. No targets
//! apply to a smoke run; the measured run is in docs/performance.md.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{free_port, ravectl, up_with};

/// `ravectl bench <mode> --smoke` on the stack, writing under `out`; it must
/// succeed. It names the state directory relative to its working directory,
/// as a user in the checkout does (`--state-dir .rave`). Returns the
/// report's directory and its report.json.
pub fn bench_smoke(state: &Path, mode: &str, out: &Path, extra: &[&str]) -> (PathBuf, Value) {
    let run = ravectl()
        .current_dir(state.parent().unwrap())
        .args(["bench", mode, "--smoke", "--state-dir"])
        .arg(state.file_name().unwrap())
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let day = std::fs::read_dir(out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let report =
        serde_json::from_str(&std::fs::read_to_string(day.join("report.json")).unwrap()).unwrap();
    (day, report)
}

#[test]
fn a_smoke_run_of_every_bench_mode_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports: [u16; 16] = std::array::from_fn(|_| free_port());
    let _stack = up_with(
        &state,
        ports,
        &[
            "--hooks-rate-limit",
            "0",
            "--agents-rate-limit",
            "0",
            "--statement-stats",
        ],
    );
    // Prefilled first, as the measured prefilled run is (a thousand rows here).
    let (day, report) = bench_smoke(
        &state,
        "all",
        &dir.path().join("results"),
        &["--prefill", "1000"],
    );
    assert!(report["prefill_secs"].as_f64().is_some(), "{report}");

    let ceilings = &report["ceilings"];
    assert!(ceilings["nginx_204"]["ok_per_sec"].as_f64().unwrap() > 0.0);
    // Nothing the bench started is left: no ceiling nginx master, and no
    // orphaned worker still listening on its port.
    let port = u16::try_from(ceilings["nginx_port"].as_u64().unwrap()).unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the ceiling nginx's port {port}"
    );
    assert_eq!(
        processes_whose_command_line_has("rave-bench-"),
        Vec::<String>::new()
    );
    assert!(ceilings["pg_single_row_per_sec"].as_f64().unwrap() > 0.0);
    assert!(ceilings["pg_50_rows_per_sec"].as_f64().unwrap() > 0.0);
    // Retention deleted part of its backlog while intake stored.
    let retention = &report["retention"];
    assert_eq!(retention["backlog"], 20_000, "{retention}");
    assert!(
        retention["intake"]["ok"].as_u64().unwrap() > 0,
        "{retention}"
    );
    assert!(retention["deleted"].as_u64().unwrap() > 0, "{retention}");
    assert!(
        retention["intake_ratio"].as_f64().unwrap() > 0.0,
        "{retention}"
    );
    // An operator's bulk erasure too, through the API.
    let erasure = &report["erasure"];
    assert!(erasure["erased"].as_u64().unwrap() > 0, "{erasure}");
    assert!(erasure["intake"]["ok"].as_u64().unwrap() > 0, "{erasure}");
    // Search: each query answered, the pointer queries finding what was
    // loaded, and what-if read one repository's events.
    let search = &report["search"];
    assert_eq!(search["events"], 2_000, "{search}");
    let found = |name: &str| {
        search["queries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("no query {name} in {search}"))["found"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(found("one delivery id"), 1);
    assert_eq!(found("body pointer, 1 in 500 (GIN)"), 4);
    assert_eq!(found("body pointer with no match"), 0);
    assert_eq!(search["diff_events"], 4, "{search}");
    assert!(search["gin_index_mb"].as_f64().unwrap() > 0.0, "{search}");
    let intake = report["intake"].as_array().unwrap();
    assert!(intake.len() >= 2, "saturation and at least one fixed rate");
    for step in intake {
        assert!(step["ok"].as_u64().unwrap() > 0, "{step}");
        assert!(step["counts"].get("connection_error").is_none(), "{step}");
        assert!(step["counts"].get("rate_limited").is_none(), "{step}");
        assert!(step["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
        // ingest sent the events to dedup-store in batch calls.
        assert!(
            step["events_per_store_call"].as_f64().unwrap() >= 1.0,
            "{step}"
        );
        // Every RAVE service was sampled while it ran.
        for service in [
            "ingest",
            "dedup-store",
            "task-dispatcher",
            "agent-reporter",
            "postgres",
            "nginx",
            // `ravectl up` itself (its trace receiver), without its children.
            "ravectl-up",
        ] {
            assert!(
                step["usage"][service]["peak_rss_mb"].as_f64().unwrap() > 0.0,
                "{service} in {step}"
            );
        }
    }
    // The agents claimed in batches and ended each batch in their next
    // claim (or one /v1/agents/results call): every task they took was
    // answered as completed.
    assert!(report["dispatch"]["completed"].as_u64().unwrap() > 0);
    assert!(
        report["dispatch"]["completed"].as_u64().unwrap()
            <= report["dispatch"]["claims"].as_u64().unwrap() * 5,
        "at most a batch (5 in a smoke run) per claim"
    );
    // CPU per item for each mode, for the stack and per component.
    let cpu: Vec<&str> = report["cpu_per_item"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["total_us"].as_f64().unwrap() > 0.0, "{c}");
            assert!(
                c["by_component_us"]["postgres"].as_f64().unwrap() > 0.0,
                "{c}"
            );
            c["step"].as_str().unwrap()
        })
        .collect();
    assert_eq!(cpu, ["intake", "dispatch", "reports"]);
    // Table sizes and dead tuples after each step; the prefill's rows are there.
    let tables = report["tables"].as_array().unwrap();
    let after: Vec<&str> = tables
        .iter()
        .map(|t| t["after"].as_str().unwrap())
        .collect();
    assert_eq!(
        after,
        [
            "prefill",
            "latency",
            "intake",
            "dispatch",
            "reports",
            "retention",
            "erasure",
            "search"
        ]
    );
    for table in [
        "rave_events.events",
        "rave_tasks.tasks",
        "rave_tasks.task_payloads",
    ] {
        let live = tables[0]["tables"][table]["live_tuples"].as_i64().unwrap();
        assert!(live >= 1000, "{table} after the prefill: {live} rows");
    }
    assert!(
        tables[4]["tables"]["rave_reports.series"]["total_bytes"]
            .as_i64()
            .unwrap()
            > 0,
        "every database's tables are listed"
    );
    // PostgreSQL's statements, counted over each of the main modes.
    let statements = report["statements"].as_array().unwrap();
    let modes: Vec<&str> = statements
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["latency", "intake", "dispatch", "reports"]);
    for mode in statements {
        let list = mode["statements"].as_array().unwrap();
        assert!(
            list.iter().any(|s| s["rows"].as_i64().unwrap() > 0)
                && list.iter().all(|s| s["calls"].as_i64().unwrap() > 0),
            "{mode}"
        );
    }
    assert!(report["dispatch"]["heartbeats"].as_u64().unwrap() > 0);
    assert!(report["latency"]["matched"].as_u64().unwrap() > 0);
    assert!(report["reports"]["ok"].as_u64().unwrap() > 0);
    // Reports went in batches through nginx (`/v1/reports/batch`), each
    // call answering more than one accepted report.
    assert_eq!(report["params"]["report_batch"], 5);
    let calls = report["reports"]["counts"]["batch"].as_u64().unwrap();
    assert!(
        report["reports"]["ok"].as_u64().unwrap() > calls,
        "{}",
        report["reports"]
    );
    assert_eq!(report["ready_ms"].as_object().unwrap().len(), 4);
    assert!(!report["targets"].as_array().unwrap().is_empty());
    let summary = std::fs::read_to_string(day.join("summary.md")).unwrap();
    assert!(
        summary.contains("n/a (smoke)")
            && summary.contains("÷ PG single-row")
            && summary.contains("## CPU per item")
            && summary.contains("## Retention under load")
            && summary.contains("## Erasure under load")
            && summary.contains("## Tables after each step")
            && summary.contains("## PostgreSQL by statement"),
        "{summary}"
    );
    let plot = std::fs::read_to_string(day.join("plot.svg")).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("p99"),
        "the plot has its series"
    );
}

/// The command lines of running processes that contain `needle`.
fn processes_whose_command_line_has(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}
