//! Malformed and hostile requests, table-driven, against the three services
//! facing the outside (ingest, the agents' API, the reporter), sent as raw
//! bytes so that broken framing, control characters and invalid UTF-8 reach
//! the server as written. Each gets its expected status; every refusal the
//! services handle has a JSON error body and is counted in a metric; and no
//! stored row in any database changes.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use rave_service::settings::Secret;
use serde_json::{Value, json};
use test_support::pg::{PgCluster, TestDatabase};
use test_support::sign;

use crate::helpers::*;

const OTHER_AGENT_TOKEN: &str = "token-of-the-other-agent";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Ingest,
    Dispatcher,
    Reporter,
}

struct Case {
    name: &'static str,
    target: Target,
    /// The request as sent, head and body.
    raw: Vec<u8>,
    status: u16,
    /// The JSON error code, or None where the HTTP parser refuses the
    /// request before any RAVE code runs (no JSON body then).
    code: Option<&'static str>,
}

/// A request with `Content-Length` set from the body; headers as raw bytes.
fn request(method: &str, path: &str, headers: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n")
        .into_bytes();
    for (name, value) in headers {
        raw.extend_from_slice(name);
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    raw.extend_from_slice(body);
    raw
}

/// Sends raw bytes; (status, body). A server that closes without an answer
/// after refusing oversized input counts as its status line if any.
fn send_raw(port: u16, raw: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // The server may answer and close before reading everything (413, 431).
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_request(method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Vec<u8> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"content-type", b"application/json")];
    if let Some(auth) = &auth {
        headers.push((b"authorization", auth.as_bytes()));
    }
    request(method, path, &headers, body)
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = "[".repeat(depth);
    s.push_str(&"]".repeat(depth));
    s.into_bytes()
}

/// A content hash of every table of a database: any stored change shows.
async fn fingerprint(db: &TestDatabase) -> Vec<(String, String)> {
    let client = db.connect().await.unwrap();
    let tables: Vec<String> = client
        .query(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for table in tables {
        let row = client
            .query_one(
                &format!("SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM \"{table}\" t"),
                &[],
            )
            .await
            .unwrap();
        out.push((table, row.get(0)));
    }
    out
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_and_more_hostile_requests_get_their_status_are_counted_and_change_nothing_stored() {
    let _exclusive = exclusive().await;
    let cluster = PgCluster::shared();
    let tasks_db = cluster.create_database().await.unwrap();
    let reports_db = cluster.create_database().await.unwrap();
    let events_db = cluster.create_database().await.unwrap();
    let other_agent = AgentSettings {
        name: "other".into(),
        token_sha256: hex::encode(token_digest(OTHER_AGENT_TOKEN)),
        kinds: vec!["webhook".into()],
    };

    let mut dispatcher: task_dispatcher::Settings = defaults();
    dispatcher.server.port = 0;
    dispatcher.database = tasks_db.settings();
    dispatcher.routes = vec![toml::from_str("kind = \"webhook\"").unwrap()];
    dispatcher.agents = vec![agent(), other_agent.clone()];
    dispatcher.relay_tokens = vec![Secret::new(RELAY_TOKEN)];
    dispatcher.limits.max_request_bytes = 1 << 20;
    let app = task_dispatcher::Application::build(dispatcher)
        .await
        .unwrap();
    let dispatcher_port = app.port();
    let dispatcher_url = serve(app.port(), app.run_until_stopped()).await;

    let mut reporter: agent_reporter::Settings = defaults();
    reporter.server.port = 0;
    reporter.database = reports_db.settings();
    reporter.agents = vec![agent(), other_agent];
    let app = agent_reporter::Application::build(reporter).await.unwrap();
    let reporter_port = app.port();
    serve(app.port(), app.run_until_stopped()).await;

    let mut store: dedup_store::Settings = defaults();

    store.ingest_tokens = vec![rave_service::settings::Secret::new(
        test_support::INGEST_TOKEN,
    )];
    store.server.port = 0;
    store.database = events_db.settings();
    store.relay.dispatcher_url = Some(dispatcher_url.clone());
    store.relay.token = Some(Secret::new(RELAY_TOKEN));
    let app = dedup_store::Application::build(store).await.unwrap();
    let store_url = serve(app.port(), app.run_until_stopped()).await;

    let standard_secret = sign::new_whsec();
    let mut ingest: ingest::Settings = defaults();
    ingest.server.port = 0;
    ingest.store.url = store_url.clone();
    ingest.limits.max_body_bytes = 64 * 1024;
    ingest.sources.insert("github".into(), github_source());
    ingest.sources.insert(
        "billing".into(),
        toml::from_str(&format!(
            "kind = \"standard\"\nsecret = \"{standard_secret}\""
        ))
        .unwrap(),
    );
    ingest.sources.insert(
        "gitlab".into(),
        toml::from_str("kind = \"gitlab\"\ntoken = \"gitlab-token\"").unwrap(),
    );
    let app = ingest::Application::build(ingest).await.unwrap();
    let ingest_port = app.port();
    let ingest_url = serve(app.port(), app.run_until_stopped()).await;

    // Something stored to protect: one delivery, its task leased by `e2e`.
    let receipt = json_of(github_webhook(&ingest_url, "kept", None)).await;
    let task_id = receipt["task_id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let mut claimed = Value::Null;
    for _ in 0..50 {
        let response = http
            .post(format!("{dispatcher_url}/v1/agents/claim"))
            .bearer_auth(AGENT_TOKEN)
            .json(&json!({"wait_secs": 1}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            claimed = response.json().await.unwrap();
            break;
        }
    }
    let lease = claimed["tasks"][0]["lease_token"]
        .as_str()
        .expect("the task was claimed")
        .to_owned();
    assert_eq!(claimed["tasks"][0]["task_id"], task_id.as_str());

    let before = (
        fingerprint(&events_db).await,
        fingerprint(&tasks_db).await,
        fingerprint(&reports_db).await,
    );
    let counted_before = (
        metric_sum(&metrics(ingest_port).await, "webhook_errors_total"),
        metric_sum(
            &metrics(dispatcher_port).await,
            "dispatcher_requests_rejected_total",
        ),
        metric_sum(
            &metrics(reporter_port).await,
            "reporter_reports_rejected_total",
        ),
    );

    let cases = cases(&task_id, &lease, &standard_secret);
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let port = match case.target {
            Target::Ingest => ingest_port,
            Target::Dispatcher => dispatcher_port,
            Target::Reporter => reporter_port,
        };
        let (status, body) = send_raw(port, &case.raw);
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        if status != case.status || code.as_deref() != case.code {
            mismatches.push(format!(
                "{}: got {status} {code:?}, expected {} {:?} ({})",
                case.name,
                case.status,
                case.code,
                body.chars().take(160).collect::<String>()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );

    // Nothing stored changed, anywhere.
    let after = (
        fingerprint(&events_db).await,
        fingerprint(&tasks_db).await,
        fingerprint(&reports_db).await,
    );
    assert_eq!(before, after, "stored data changed");

    // Every refusal RAVE's code handled is counted by its service.
    let handled = |t: Target| {
        cases
            .iter()
            .filter(|c| c.target == t && c.code.is_some())
            .count() as f64
    };
    let counted = (
        metric_sum(&metrics(ingest_port).await, "webhook_errors_total") - counted_before.0,
        metric_sum(
            &metrics(dispatcher_port).await,
            "dispatcher_requests_rejected_total",
        ) - counted_before.1,
        metric_sum(
            &metrics(reporter_port).await,
            "reporter_reports_rejected_total",
        ) - counted_before.2,
    );
    assert_eq!(
        counted,
        (
            handled(Target::Ingest),
            handled(Target::Dispatcher),
            handled(Target::Reporter)
        ),
        "refusals counted per service"
    );
    eprintln!(
        "hostile input: {} requests ({} ingest, {} agents' API, {} reporter), {} refused by RAVE with a JSON error and counted, {} by the HTTP parser; stored data unchanged",
        cases.len(),
        cases.iter().filter(|c| c.target == Target::Ingest).count(),
        cases
            .iter()
            .filter(|c| c.target == Target::Dispatcher)
            .count(),
        cases
            .iter()
            .filter(|c| c.target == Target::Reporter)
            .count(),
        cases.iter().filter(|c| c.code.is_some()).count(),
        cases.iter().filter(|c| c.code.is_none()).count(),
    );
}

fn cases(task_id: &str, lease: &str, standard_secret: &str) -> Vec<Case> {
    use Target::*;
    let body = br#"{"ref":"refs/heads/main"}"#;
    let good_sig = sign::github(GITHUB_SECRET, body);
    // A GitHub delivery; `extra` replaces a default header of the same name
    // unless that name is given twice (then both are sent).
    let github = |extra: &[(&[u8], &[u8])], body: &[u8]| {
        let defaults: [(&[u8], &[u8]); 3] = [
            (b"content-type", b"application/json"),
            (b"x-github-event", b"push"),
            (b"x-github-delivery", b"hostile-1"),
        ];
        let mut headers: Vec<(&[u8], &[u8])> = defaults
            .into_iter()
            .filter(|(name, _)| !extra.iter().any(|(n, _)| n == name))
            .collect();
        headers.extend_from_slice(extra);
        request("POST", "/hooks/github", &headers, body)
    };
    let now = sign::now_unix();
    let standard = |id: &str, ts: &str, sig: &str, body: &[u8]| {
        request(
            "POST",
            "/hooks/billing",
            &[
                (b"content-type", b"application/json"),
                (b"webhook-id", id.as_bytes()),
                (b"webhook-timestamp", ts.as_bytes()),
                (b"webhook-signature", sig.as_bytes()),
            ],
            body,
        )
    };
    let signed_at = |ts: i64| sign::standard(standard_secret, "msg-1", ts, body);
    // 2000 well-formed signatures (94 KB), none right: over the header budget.
    let signatures = |n: usize| {
        (0..n)
            .map(|i| sign::standard(standard_secret, &format!("other-{i}"), now, body))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let many_sigs = (0..2000)
        .map(|i| sign::standard(standard_secret, &format!("other-{i}"), now, body))
        .collect::<Vec<_>>()
        .join(" ");
    let claim =
        |token: Option<&str>, body: &[u8]| json_request("POST", "/v1/agents/claim", token, body);
    let results =
        |token: Option<&str>, body: &[u8]| json_request("POST", "/v1/agents/results", token, body);
    let lease_call = |token: &str, what: &str, body: Value| {
        json_request(
            "POST",
            &format!("/v1/tasks/{task_id}/{what}"),
            Some(token),
            body.to_string().as_bytes(),
        )
    };
    let report =
        |token: Option<&str>, body: &[u8]| json_request("POST", "/v1/reports", token, body);
    let good_report = |over: Value| {
        let mut r = json!({
            "task_id": task_id, "kind": "webhook", "status": "succeeded",
            "started_at": "2026-11-27T10:00:00Z", "duration_seconds": 1.5,
        });
        for (k, v) in over.as_object().unwrap() {
            if v.is_null() {
                r.as_object_mut().unwrap().remove(k);
            } else {
                r[k] = v.clone();
            }
        }
        r.to_string().into_bytes()
    };
    let many_headers: Vec<(Vec<u8>, Vec<u8>)> = (0..80)
        .map(|i| (format!("x-pad-{i}").into_bytes(), b"1".to_vec()))
        .collect();
    let many_headers_ref: Vec<(&[u8], &[u8])> = many_headers
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let c = |name, target, raw, status, code| Case {
        name,
        target,
        raw,
        status,
        code,
    };
    vec![
        // --- ingest: routes and source names
        c("unknown source", Ingest, github(&[], body), 404, Some("unknown_source")).with_path("/hooks/nosuch"),
        c("encoded path traversal in the source", Ingest, github(&[], body), 404, Some("unknown_source")).with_path("/hooks/..%2F..%2Fetc%2Fpasswd"),
        c("upper-case source", Ingest, github(&[], body), 404, Some("unknown_source")).with_path("/hooks/GitHub"),
        c("NUL in the source", Ingest, github(&[], body), 404, Some("unknown_source")).with_path("/hooks/github%00"),
        c("overlong source name", Ingest, github(&[], body), 404, Some("unknown_source")).with_path(&format!("/hooks/{}", "a".repeat(300))),
        c("unicode source name", Ingest, github(&[], body), 404, Some("unknown_source")).with_path("/hooks/g%C3%AFthub"),
        // --- ingest: GitHub signatures and headers
        c("github without a signature", Ingest, github(&[], body), 400, Some("missing_header")),
        c("github with a wrong signature", Ingest, github(&[(b"x-hub-signature-256", sign::github("wrong", body).as_bytes())], body), 401, Some("invalid_signature")),
        c("github signature not hex", Ingest, github(&[(b"x-hub-signature-256", format!("sha256={}", "zz".repeat(32)).as_bytes())], body), 400, Some("malformed_header")),
        c("github sha1 signature only", Ingest, github(&[(b"x-hub-signature", b"sha1=0000000000000000000000000000000000000000")], body), 400, Some("missing_header")),
        c("github empty signature", Ingest, github(&[(b"x-hub-signature-256", b"")], body), 400, Some("malformed_header")),
        c("github signature of another body", Ingest, github(&[(b"x-hub-signature-256", good_sig.as_bytes())], br#"{"ref":"refs/heads/evil"}"#), 401, Some("invalid_signature")),
        c("github duplicated signature headers", Ingest, github(&[(b"x-hub-signature-256", good_sig.as_bytes()), (b"x-hub-signature-256", sign::github("wrong", body).as_bytes())], body), 400, Some("malformed_header")),
        c("github without a delivery id", Ingest, request("POST", "/hooks/github", &[(b"x-github-event", b"push"), (b"x-hub-signature-256", good_sig.as_bytes())], body), 400, Some("missing_header")),
        c("github overlong delivery id", Ingest, github(&[(b"x-github-delivery", "d".repeat(300).as_bytes()), (b"x-hub-signature-256", good_sig.as_bytes())], body), 400, Some("malformed_header")),
        c("github delivery id in invalid UTF-8", Ingest, github(&[(b"x-github-delivery", b"\xff\xfe-bad"), (b"x-hub-signature-256", good_sig.as_bytes())], body), 400, Some("malformed_header")),
        c("github without an event type", Ingest, request("POST", "/hooks/github", &[(b"x-github-delivery", b"hostile-2"), (b"x-hub-signature-256", good_sig.as_bytes())], body), 400, Some("missing_header")),
        c("github event type in invalid UTF-8", Ingest, request("POST", "/hooks/github", &[(b"x-github-event", b"pu\xc3\x28sh"), (b"x-github-delivery", b"hostile-3"), (b"x-hub-signature-256", good_sig.as_bytes())], body), 400, Some("malformed_header")),
        c("body over the limit", Ingest, github(&[(b"x-hub-signature-256", good_sig.as_bytes())], &vec![b'x'; 100 * 1024]), 413, Some("body_too_large")),
        c("more header fields than the limit", Ingest, github(&many_headers_ref, body), 431, Some("too_many_headers")),
        c("unsigned non-JSON body", Ingest, github(&[], b"\x00\x01binary"), 400, Some("missing_header")),
        c("github duplicated delivery ids", Ingest, github(&[(b"x-github-delivery", b"a"), (b"x-github-delivery", b"b"), (b"x-hub-signature-256", good_sig.as_bytes())], body), 400, Some("malformed_header")),
        c("GET on a hook", Ingest, request("GET", "/hooks/github", &[], b""), 405, Some("method_not_allowed")),
        // --- ingest: Standard Webhooks
        c("standard without webhook-id", Ingest, request("POST", "/hooks/billing", &[(b"webhook-timestamp", now.to_string().as_bytes()), (b"webhook-signature", signed_at(now).as_bytes())], body), 400, Some("missing_header")),
        c("standard without a timestamp", Ingest, request("POST", "/hooks/billing", &[(b"webhook-id", b"msg-1"), (b"webhook-signature", signed_at(now).as_bytes())], body), 400, Some("missing_header")),
        c("standard timestamp not a number", Ingest, standard("msg-1", "yesterday", &signed_at(now), body), 400, Some("malformed_header")),
        c("standard huge timestamp", Ingest, standard("msg-1", "99999999999999999999999", &signed_at(now), body), 400, Some("malformed_header")),
        c("standard negative timestamp", Ingest, standard("msg-1", "-1", &signed_at(-1), body), 401, Some("stale_timestamp")),
        c("standard replay an hour old", Ingest, standard("msg-1", &(now - 3600).to_string(), &signed_at(now - 3600), body), 401, Some("stale_timestamp")),
        c("standard replay just outside the tolerance", Ingest, standard("msg-1", &(now - 360).to_string(), &signed_at(now - 360), body), 401, Some("stale_timestamp")),
        c("standard timestamp from the future", Ingest, standard("msg-1", &(now + 3600).to_string(), &signed_at(now + 3600), body), 401, Some("future_timestamp")),
        c("standard signature of another message id", Ingest, standard("msg-2", &now.to_string(), &signed_at(now), body), 401, Some("invalid_signature")),
        c("standard invalid base64", Ingest, standard("msg-1", &now.to_string(), "v1,!!!not-base64!!!", body), 401, Some("invalid_signature")),
        c("standard 600 forged signatures", Ingest, standard("msg-1", &now.to_string(), &signatures(600), body), 401, Some("invalid_signature")),
        c("standard thousands of forged signatures", Ingest, standard("msg-1", &now.to_string(), &many_sigs, body), 431, Some("headers_too_large")),
        c("standard only unknown versions", Ingest, standard("msg-1", &now.to_string(), "v9,abcd v2a,efgh", body), 401, Some("unsupported_signature_version")),
        c("standard empty signature", Ingest, standard("msg-1", &now.to_string(), "", body), 400, Some("malformed_header")),
        c("standard overlong message id", Ingest, standard(&"m".repeat(300), &now.to_string(), &sign::standard(standard_secret, &"m".repeat(300), now, body), body), 400, Some("malformed_header")),
        // --- ingest: GitLab tokens
        c("gitlab wrong token", Ingest, request("POST", "/hooks/gitlab", &[(b"x-gitlab-event", b"Push Hook"), (b"idempotency-key", b"k-1"), (b"x-gitlab-token", b"wrong")], body), 401, Some("invalid_token")),
        c("gitlab no token", Ingest, request("POST", "/hooks/gitlab", &[(b"x-gitlab-event", b"Push Hook"), (b"idempotency-key", b"k-1")], body), 400, Some("missing_header")),
        c("gitlab token in another case", Ingest, request("POST", "/hooks/gitlab", &[(b"x-gitlab-event", b"Push Hook"), (b"idempotency-key", b"k-1"), (b"x-gitlab-token", b"GITLAB-TOKEN")], body), 401, Some("invalid_token")),
        // --- the HTTP parser, before any RAVE code
        c("control character in a header value", Ingest, github(&[(b"x-hub-signature-256", b"sha256=\x01\x02")], body), 400, None),
        c("space in a header name", Ingest, github(&[(b"x bad", b"1")], body), 400, None),
        c("garbage request line", Ingest, b"\x16\x03\x01\x02\x00 hello\r\n\r\n".to_vec(), 400, None),
        c("two different content lengths", Ingest, b"POST /hooks/github HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello".to_vec(), 400, None),
        c("chunked and a content length", Ingest, b"POST /hooks/github HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n".to_vec(), 400, None),
        c("a 100 KB header", Ingest, github(&[(b"x-huge", &vec![b'a'; 100 * 1024])], body), 431, Some("headers_too_large")),
        c("a 200 KB header", Ingest, github(&[(b"x-huge", &vec![b'a'; 200 * 1024])], body), 431, None),
        // --- the agents' API
        c("claim without a token", Dispatcher, claim(None, b"{}"), 401, Some("unauthorized")),
        c("claim with an unknown token", Dispatcher, claim(Some("forged-token"), b"{}"), 401, Some("unauthorized")),
        c("claim with basic auth", Dispatcher, request("POST", "/v1/agents/claim", &[(b"authorization", b"Basic ZTJlOnRva2Vu")], b"{}"), 401, Some("unauthorized")),
        c("claim with a non-JSON body", Dispatcher, claim(Some(AGENT_TOKEN), b"max_tasks=1"), 400, Some("invalid_request")),
        c("claim with deeply nested JSON", Dispatcher, claim(Some(AGENT_TOKEN), &nested(20_000)), 400, Some("invalid_request")),
        c("claim with negative max_tasks", Dispatcher, claim(Some(AGENT_TOKEN), br#"{"max_tasks": -1}"#), 400, Some("invalid_request")),
        c("claim with huge max_tasks", Dispatcher, claim(Some(AGENT_TOKEN), br#"{"max_tasks": 1e300}"#), 400, Some("invalid_request")),
        c("claim with an unknown field", Dispatcher, claim(Some(AGENT_TOKEN), br#"{"steal": true}"#), 400, Some("invalid_request")),
        c("claim for a kind the agent lacks", Dispatcher, claim(Some(AGENT_TOKEN), br#"{"kinds": ["admin"]}"#), 403, Some("forbidden")),
        c("claim over the body limit", Dispatcher, claim(Some(AGENT_TOKEN), &vec![b' '; 9 << 20]), 413, Some("body_too_large")),
        c("claim finishing more tasks than one call may", Dispatcher, claim(Some(AGENT_TOKEN), format!(r#"{{"finished": [{}]}}"#, vec!["{}"; 101].join(",")).as_bytes()), 400, Some("invalid_request")),
        c("results without a token", Dispatcher, results(None, br#"{"results": []}"#), 401, Some("unauthorized")),
        c("results without a results list", Dispatcher, results(Some(AGENT_TOKEN), b"{}"), 400, Some("invalid_request")),
        c("results as a non-JSON body", Dispatcher, results(Some(AGENT_TOKEN), b"results=1"), 400, Some("invalid_request")),
        c("results over the body limit", Dispatcher, results(Some(AGENT_TOKEN), &vec![b' '; 9 << 20]), 413, Some("body_too_large")),
        c("heartbeat with another agent's lease token", Dispatcher, lease_call(OTHER_AGENT_TOKEN, "heartbeat", json!({"lease_token": lease})), 409, Some("lease_lost")),
        c("complete with another agent's lease token", Dispatcher, lease_call(OTHER_AGENT_TOKEN, "complete", json!({"lease_token": lease, "result": "stolen"})), 409, Some("lease_lost")),
        c("fail with another agent's lease token", Dispatcher, lease_call(OTHER_AGENT_TOKEN, "fail", json!({"lease_token": lease, "error": "x"})), 409, Some("lease_lost")),
        c("complete with a forged lease token", Dispatcher, lease_call(AGENT_TOKEN, "complete", json!({"lease_token": "0".repeat(32), "result": 1})), 409, Some("lease_lost")),
        c("complete with a malformed lease token", Dispatcher, lease_call(AGENT_TOKEN, "complete", json!({"lease_token": "../../etc", "result": 1})), 400, Some("invalid_request")),
        c("complete without a token", Dispatcher, json_request("POST", &format!("/v1/tasks/{task_id}/complete"), None, json!({"lease_token": lease}).to_string().as_bytes()), 401, Some("unauthorized")),
        c("complete with NUL in a result string", Dispatcher, lease_call(AGENT_TOKEN, "complete", json!({"lease_token": lease, "result": {"summary": "a\u{0}b"}})), 400, Some("unstorable_value")),
        c("complete with NUL in a result key", Dispatcher, lease_call(AGENT_TOKEN, "complete", json!({"lease_token": lease, "result": {"k\u{0}": 1}})), 400, Some("unstorable_value")),
        c("complete with a lone surrogate in the result", Dispatcher, json_request("POST", &format!("/v1/tasks/{task_id}/complete"), Some(AGENT_TOKEN), format!(r#"{{"lease_token":"{lease}","result":"\ud800"}}"#).as_bytes()), 400, Some("invalid_request")),
        c("fail with NUL in the error", Dispatcher, lease_call(AGENT_TOKEN, "fail", json!({"lease_token": lease, "error": "exit\u{0}1"})), 400, Some("unstorable_value")),
        c("fail with retryable not a boolean", Dispatcher, lease_call(AGENT_TOKEN, "fail", json!({"lease_token": lease, "error": "x", "retryable": "yes"})), 400, Some("invalid_request")),
        c("a task id that is not one", Dispatcher, json_request("POST", "/v1/tasks/not-a-task/complete", Some(AGENT_TOKEN), b"{}"), 400, Some("invalid_request")),
        c("operator listing with an agent token", Dispatcher, json_request("GET", "/v1/tasks", Some(AGENT_TOKEN), b""), 401, Some("unauthorized")),
        c("internal hand-off with an agent token", Dispatcher, json_request("POST", "/v1/internal/events", Some(AGENT_TOKEN), br#"{"events": []}"#), 401, Some("unauthorized")),
        // --- the reporter
        c("report without a token", Reporter, report(None, &good_report(json!({}))), 401, Some("unauthorized")),
        c("report with a forged token", Reporter, report(Some("forged"), &good_report(json!({}))), 401, Some("unauthorized")),
        c("report with a non-JSON body", Reporter, report(Some(AGENT_TOKEN), b"status=ok"), 400, Some("invalid_json")),
        c("report with deeply nested JSON", Reporter, report(Some(AGENT_TOKEN), &nested(20_000)), 422, Some("invalid_report")),
        c("report over the body limit", Reporter, report(Some(AGENT_TOKEN), &vec![b' '; 200 * 1024]), 413, Some("body_too_large")),
        c("report with a negative duration", Reporter, report(Some(AGENT_TOKEN), &good_report(json!({"duration_seconds": -5}))), 422, Some("invalid_report")),
        c("report with an overflowing cost", Reporter, report(Some(AGENT_TOKEN), br#"{"task_id":"0123456789abcdef","kind":"webhook","status":"succeeded","started_at":"2026-11-27T10:00:00Z","duration_seconds":1,"cost":1e999}"#), 422, Some("invalid_report")),
        c("report with an invalid task id", Reporter, report(Some(AGENT_TOKEN), &good_report(json!({"task_id": "../../x"}))), 422, Some("invalid_report")),
        c("report with an unknown status", Reporter, report(Some(AGENT_TOKEN), &good_report(json!({"status": "pwned"}))), 422, Some("invalid_report")),
        c("report without started_at", Reporter, report(Some(AGENT_TOKEN), &good_report(json!({"started_at": null}))), 422, Some("invalid_report")),
        c("report with an unknown field", Reporter, report(Some(AGENT_TOKEN), &good_report(json!({"agent": "e2e-admin"}))), 422, Some("invalid_report")),
        c("report with NUL in a label value", Reporter, report(Some(AGENT_TOKEN), &good_report(json!({"metrics": [{"name": "tool_calls", "value": 1, "labels": {"tool": "a\u{0}b"}}]}))), 422, Some("invalid_report")),
        c("report with a control character in a metric name", Reporter, report(Some(AGENT_TOKEN), &good_report(json!({"metrics": [{"name": "a\u{7}b", "value": 1}]}))), 422, Some("invalid_report")),
    ]
}

impl Case {
    /// The same request on another path.
    fn with_path(mut self, path: &str) -> Self {
        let text = self.raw.clone();
        let line_end = text.windows(2).position(|w| w == b"\r\n").unwrap();
        let line = String::from_utf8_lossy(&text[..line_end]).into_owned();
        let mut parts = line.splitn(3, ' ');
        let (method, _, version) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        let mut raw = format!("{method} {path} {version}").into_bytes();
        raw.extend_from_slice(&text[line_end..]);
        self.raw = raw;
        self
    }
}
