//! `ravectl up` and `ravectl send` as a newcomer runs them: the real
//! binaries, a private PostgreSQL cluster, loopback ports picked here.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod alerting;
mod bench;
mod changes;
mod event_tools;
mod events;
mod faults;
mod limits;
mod preflight;
mod quarantine;
mod replicas;
mod restore;
mod traces;

fn ravectl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ravectl"))
}

// test-support depends on ravectl, so ravectl's tests share only its port
// picker, a file with no dependencies.
#[path = "../../../test-support/src/ports.rs"]
mod ports;
use ports::free_port;

/// Ports for `up_with(.., ["--replicas", "2"])`: the four RAVE services'
/// (indexes 0, 1, 3 and 4) also need their port + 100 free for replica 2.
fn replica_ports() -> [u16; 16] {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    std::array::from_fn(|i| {
        loop {
            let port = free_port();
            if ![0, 1, 3, 4].contains(&i) || port.checked_add(100).is_some_and(free) {
                return port;
            }
        }
    })
}

/// A running `ravectl up`, stopped with SIGTERM when dropped, so a failed
/// assertion leaves no process behind.
struct Stack(Child);

impl Stack {
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

/// Polls `check` until it holds; these are external processes, so there is
/// no event to wait on.
pub(crate) async fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `ravectl up` and waits for its "RAVE is up" line.
fn up(state_dir: &Path, ports: [u16; 16]) -> Stack {
    up_with(state_dir, ports, &[])
}

/// [`up`] with extra arguments.
fn up_with(state_dir: &Path, ports: [u16; 16], extra: &[&str]) -> Stack {
    let mut child = ravectl()
        .arg("up")
        .args(extra)
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
        .args(["--prometheus-port", &ports[8].to_string()])
        .args(["--node-exporter-port", &ports[9].to_string()])
        .args(["--nginx-exporter-port", &ports[10].to_string()])
        .args(["--postgres-exporter-port", &ports[11].to_string()])
        .args(["--alertmanager-port", &ports[12].to_string()])
        .args(["--blackbox-port", &ports[13].to_string()])
        .args(["--alert-inbox-port", &ports[14].to_string()])
        .args(["--otlp-port", &ports[15].to_string()])
        .args(["--scrape-interval", "1s"])
        .arg("--no-install")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let (grafana, grafana_line) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line.starts_with("Grafana: ") {
                let _ = grafana.send(line.clone());
            }
            if line.starts_with("RAVE is up") {
                let _ = tx.send(());
            }
        }
    });
    let stack = Stack(child);
    // A stack that did not come up says so first, not as a missing line.
    if rx.recv_timeout(Duration::from_secs(90)).is_err() {
        panic!(
            "ravectl up did not come up; logs in {}",
            state_dir.join("logs").display()
        );
    }
    // Without a Grafana server (Debian has none) `up` says it skipped it.
    if std::path::Path::new("/usr/sbin/grafana-server").exists() {
        assert!(
            grafana_line
                .try_recv()
                .is_ok_and(|l| l.contains("not started"))
        );
    } else {
        assert!(
            grafana_line.try_recv().is_ok_and(|l| l.contains("skipped")),
            "no Grafana line"
        );
    }
    stack
}

/// `ravectl verify` on the stack: it must pass all twelve suites. Returns
/// its report.
fn verify_passes(state_dir: &Path) -> String {
    let verify = ravectl()
        .arg("verify")
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(
        verify.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(
        report.lines().filter(|l| l.starts_with("PASS")).count(),
        13,
        "{report}"
    );
    // An alert went through Alertmanager to the stack's inbox for people.
    assert!(
        report.contains("a test alert was delivered through Alertmanager to"),
        "{report}"
    );
    let inbox = std::fs::read_to_string(state_dir.join("logs/alerts.jsonl")).unwrap();
    assert!(inbox.contains("RaveVerifyDelivery"), "{inbox}");
    report
}

/// The sum of every sample of `family` (`name{...} value` lines).
fn family_total(exposition: &str, family: &str) -> f64 {
    let prefix = format!("{family}{{");
    exposition
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Webhook requests an ingest replica served since it started (0 when it
/// does not answer).
async fn webhook_requests(http: &reqwest::Client, ingest_url: &str) -> f64 {
    let Ok(response) = http.get(format!("{ingest_url}/metrics")).send().await else {
        return 0.0;
    };
    family_total(
        &response.text().await.unwrap_or_default(),
        "webhook_requests_total",
    )
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
    let ports = [0; 16].map(|_| free_port());
    let mut stack = up(&state, ports);

    // A Grafana of one's own finds this stack's Prometheus and the
    // dashboards in the provisioning `up` wrote.
    let provisioned: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("grafana/provisioning/datasources/rave.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        provisioned["datasources"][0]["url"],
        format!("http://127.0.0.1:{}", ports[8])
    );
    for name in ["project-health", "agent-performance", "system-health"] {
        assert!(
            state
                .join(format!("grafana/dashboards/{name}.json"))
                .exists()
        );
    }

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

    let operator = std::fs::read_to_string(state.join("secrets/operator.token")).unwrap();
    let listing: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v1/events", ports[1]))
        .bearer_auth(operator.trim())
        .send()
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

    // Every stored event became a task; the reference agent runs a command
    // per task (task JSON on stdin, stdout as its result), completes the
    // tasks and reports each job.
    let command = r#"kind=$(cat | grep -o '"kind":"[a-z]*"' | cut -d: -f2); printf '{"id":"%s","seen":%s,"metrics":[{"name":"files","value":2}]}' "$RAVE_TASK_ID" "$kind""#;
    let agent = ravectl()
        .args([
            "agent",
            "--max-tasks",
            "4",
            "--wait-secs",
            "20",
            "--command",
            command,
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        agent.status.success(),
        "{}{}",
        String::from_utf8_lossy(&agent.stdout),
        String::from_utf8_lossy(&agent.stderr)
    );
    let operator = std::fs::read_to_string(state.join("secrets/operator.token")).unwrap();
    let tasks: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v1/tasks", ports[3]))
        .bearer_auth(operator.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "one task per stored event: {tasks:?}");
    let event_task_ids: std::collections::HashSet<&str> = listing["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["task_id"].as_str().unwrap())
        .collect();
    for task in tasks {
        assert_eq!(task["state"], "succeeded", "{task}");
        assert!(event_task_ids.contains(task["task_id"].as_str().unwrap()));
        assert_eq!(
            task["result"]["id"], task["task_id"],
            "the command saw its task: {task}"
        );
        assert_eq!(
            task["result"]["seen"], "webhook",
            "the task JSON arrived on stdin: {task}"
        );
    }

    // Every service and the agent exported their spans to up's receiver:
    // `ravectl trace` shows the github delivery's whole life as one tree.
    let github_task = listing["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "github")
        .unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trace = |extra: &[&str]| {
        let out = ravectl()
            .args(["trace", &github_task, "--wait-secs", "30", "--state-dir"])
            .arg(&state)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    const EXPECTED: [(&str, &str); 7] = [
        ("ingest", "POST /hooks/{source}"),
        ("dedup-store", "event.store"),
        ("task-dispatcher", "task.create"),
        ("task-dispatcher", "task.claim"),
        ("ravectl-agent", "agent.job"),
        // The agent ends its batch in one /v1/agents/results call; each
        // item's span joins its own task's trace.
        ("task-dispatcher", "task.complete"),
        ("agent-reporter", "POST /v1/reports"),
    ];
    let seen_in = |trace: &serde_json::Value| -> std::collections::BTreeSet<(String, String)> {
        trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["service"].as_str().unwrap_or_default().to_owned(),
                    s["name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let has_all = |seen: &std::collections::BTreeSet<(String, String)>| {
        EXPECTED
            .iter()
            .all(|(service, name)| seen.contains(&((*service).to_owned(), (*name).to_owned())))
    };
    // Each service exports its batch on its own schedule: wait for all.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let traces: serde_json::Value = loop {
        let traces: serde_json::Value = serde_json::from_str(&trace(&["--json"])).unwrap();
        if has_all(&seen_in(&traces[0])) || std::time::Instant::now() > deadline {
            break traces;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The task's own trace first; the repeated delivery of d-github is a
    // trace of its own that ends at the store's "duplicate".
    let [task_trace, repeat] = traces.as_array().unwrap().as_slice() else {
        panic!("two traces, the task's and the repeat's: {traces:#}");
    };
    assert_eq!(task_trace["role"], "task");
    assert_eq!(repeat["role"], "repeated delivery");
    for span in repeat["spans"].as_array().unwrap() {
        assert!(
            ["ingest", "dedup-store"].contains(&span["service"].as_str().unwrap()),
            "{span}"
        );
    }
    let seen = seen_in(task_trace);
    assert!(
        has_all(&seen),
        "the trace of {github_task} lacks some of {EXPECTED:?}: {seen:?}"
    );
    let tree = trace(&[]);
    assert!(
        tree.starts_with(&format!(
            "trace {} (task): ",
            task_trace["trace_id"].as_str().unwrap()
        )),
        "{tree}"
    );
    for line in ["└─ ", "task_id=", "ingest", "agent-reporter", " ms "] {
        assert!(tree.contains(line), "{line:?} not in the tree:\n{tree}");
    }
    // A task with no spans is an error that says where it looked.
    let none = ravectl()
        .args(["trace", "0123456789abcdef", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no span with task_id 0123456789abcdef"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );

    // The agent reported each job; the reporter pushes the dev agent's group.
    let pushgateway = format!("http://127.0.0.1:{}/metrics", ports[5]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(&pushgateway)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(name)
                        && l.contains("agent=\"dev\"")
                        && l.contains("kind=\"webhook\"")
                })
                .map(str::to_owned)
        };
        let jobs = line("agent_jobs_total{").filter(|l| l.contains("status=\"succeeded\""));
        let files = line("agent_custom_files_total{");
        if jobs.as_deref().is_some_and(|l| l.ends_with(" 4"))
            && files.as_deref().is_some_and(|l| l.ends_with(" 8"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "4 jobs and 8 files never reached the Pushgateway:\n{text}"
        );
        // The reporter pushes on its own schedule (debounced); poll for it.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let created = ravectl()
        .args([
            "agents",
            "create",
            "review-bot",
            "--kinds",
            "review,triage",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let agents = std::fs::read_to_string(state.join("config/agents.toml")).unwrap();
    let token = std::fs::read_to_string(state.join("secrets/agent-review-bot.token")).unwrap();
    assert!(agents.contains("name = \"review-bot\""), "{agents}");
    assert!(!agents.contains(token.trim()), "only the digest is stored");
    assert!(
        String::from_utf8_lossy(&created.stdout).contains(token.trim()),
        "the token is printed once"
    );

    // nginx is the only door: HTTPS with HSTS; signed webhooks pass,
    // internal routes do not; old TLS is refused.
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(state.join("secrets/tls.crt"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let body = r#"{"zen":"through nginx"}"#;
    let secret = std::fs::read_to_string(state.join("secrets/github.secret")).unwrap();
    let public = format!("https://localhost:{}", ports[6]);
    let signature = rave_service::sign::github(secret.trim(), body.as_bytes());
    let answer = curl(&[
        "-D",
        "-",
        "-X",
        "POST",
        &format!("{public}/hooks/github"),
        "-H",
        "x-github-event: ping",
        "-H",
        "x-github-delivery: via-nginx",
        "-H",
        &format!("x-hub-signature-256: {signature}"),
        "-d",
        body,
    ]);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{answer}"
    );
    for path in ravectl::verify::NOT_PUBLIC {
        let code = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("{public}{path}"),
        ]);
        assert_eq!(code, "404", "{path} must not be reachable through nginx");
    }
    // Nor the operators' API, unless `--operator-api` (tests/it/event_tools.rs).
    for (method, path) in ravectl::verify::OPERATORS {
        let code = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
            &format!("{public}{path}"),
        ]);
        assert_eq!(
            code, "404",
            "{method} {path} must not be reachable through nginx"
        );
    }
    let old_tls = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-connect",
            &format!("127.0.0.1:{}", ports[6]),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&old_tls.stdout).contains("Cipher is ECDHE"),
        "TLS 1.1 must be refused"
    );

    // 400 at once from one address stay under nginx's flood ceiling: each
    // gets its own answer (404: no such source), none a 429.
    let mut burst = Command::new("curl");
    burst
        .args([
            "-s",
            "-Z",
            "--parallel-max",
            "100",
            "-w",
            "%{http_code}\n",
            "-X",
            "POST",
            "--cacert",
        ])
        .arg(state.join("secrets/tls.crt"));
    for _ in 0..400 {
        burst.args(["-o", "/dev/null", &format!("{public}/hooks/flood")]);
    }
    let codes = String::from_utf8_lossy(&burst.output().unwrap().stdout).into_owned();
    assert_eq!(codes.lines().count(), 400);
    assert!(codes.lines().all(|c| c == "404"), "{codes}");

    // `ravectl send` signs for every HMAC preset as its provider does, and
    // the stack `up` wrote has a source for each.
    for provider in rave_service::sign::providers::PROVIDERS {
        for expected in ["202 Accepted", "200 OK"] {
            let out = send(&state, provider, &format!("send-{provider}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("POST /hooks/{provider} ")) && stdout.contains(expected),
                "{provider}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // `ravectl verify` passes every suite that exists...
    let report = verify_passes(&state);
    assert!(!report.contains("FAIL"), "{report}");
    assert!(report.contains("and stripe accepted"), "{report}");
    // ...and fails, saying why, when the stack breaks a limit.
    let strict = ravectl()
        .args(["verify", "--memory-limit-mb", "1", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&strict.stdout);
    assert_eq!(strict.status.code(), Some(1), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL  12 resources") && l.contains("over the 1 MiB limit")),
        "{report}"
    );

    // Operating it: a second `up` only says it runs; status, logs, down.
    let again = ravectl()
        .arg("up")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already running"));
    let status = ravectl()
        .arg("status")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    for component in [
        "ingest",
        "dedup-store",
        "task-dispatcher",
        "agent-reporter",
        "nginx",
        "prometheus",
        "pushgateway",
        "alertmanager",
        "blackbox-exporter",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(component) && l.contains(" up ")),
            "{component} in:\n{table}"
        );
    }
    let logs = ravectl()
        .args(["logs", "ingest", "-n", "5", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("\"level\""),
        "JSON log lines"
    );

    let down = ravectl()
        .arg("down")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
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
