//! ingest at its edges: bytes in flight, floods of forged deliveries, and
//! bursts of genuine ones.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{GITHUB_SECRET, send, spawn_stack, spawn_stack_with};
use test_support::sign;

/// A GitHub delivery over a raw connection, its body held back after
/// `sent` bytes until [`Held::finish`].
struct Held {
    stream: TcpStream,
    rest: Vec<u8>,
}

async fn held_delivery(ingest: &str, delivery: &str, body: &[u8], sent: usize) -> Held {
    let address = ingest.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         x-github-event: push\r\nx-github-delivery: {delivery}\r\nx-hub-signature-256: {}\r\n\
         content-length: {}\r\n\r\n",
        sign::github(GITHUB_SECRET, body),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    Held {
        stream,
        rest: body[sent..].to_vec(),
    }
}

impl Held {
    /// Sends the rest of the body; the answer's status line.
    async fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).await.unwrap();
        let mut answer = vec![0; 4096];
        let n = self.stream.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test]
async fn a_body_flood_past_the_in_flight_bound_gets_503_with_retry_after_and_what_fit_is_stored() {
    const BODY: usize = 100_000;
    let stack = spawn_stack_with(|s| {
        s.limits.max_body_bytes = BODY;
        s.limits.max_in_flight_bytes = 2 * BODY;
        s.limits.in_flight_wait_ms = 100;
    })
    .await;
    let body = vec![b' '; BODY];
    // Two slow senders fill the room: their bodies are still arriving.
    let first = held_delivery(&stack.ingest, "slow-1", &body, 10).await;
    let second = held_delivery(&stack.ingest, "slow-2", &body, 10).await;
    while test_support::metrics::sample(&stack.metrics().await, "ingest_in_flight_body_bytes")
        < (2 * BODY) as f64
    {
        tokio::task::yield_now().await;
    }

    let response = stack.github("one-too-many", &body).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "overloaded");

    assert!(first.finish().await.contains("202"));
    assert!(second.finish().await.contains("202"));
    assert_eq!(stack.stored_count().await, 2);
    let metrics = stack.metrics().await;
    assert_eq!(
        test_support::metrics::sample(
            &metrics,
            "webhook_errors_total{source=\"github\",reason=\"overloaded\"}"
        ),
        1.0
    );
    assert_eq!(
        test_support::metrics::sample(&metrics, "ingest_in_flight_body_bytes"),
        0.0
    );
}

/// A delivery from `address` (as nginx names it in `X-Real-IP`).
fn from(request: reqwest::RequestBuilder, address: &str) -> reqwest::RequestBuilder {
    request.header("x-real-ip", address)
}

#[tokio::test]
async fn a_forged_flood_is_refused_cheaply_past_its_failure_budget_and_no_one_else_is() {
    let stack = spawn_stack_with(|s| {
        s.limits.failed_verifications_per_minute = 1;
        s.limits.failed_verifications_burst = 5;
    })
    .await;
    let forged = |i: usize| {
        stack
            .http
            .post(format!("{}/hooks/github", stack.ingest))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("forged-{i}"))
            .header("x-hub-signature-256", sign::github("not-the-secret", b"{}"))
            .body("{}")
    };
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(send(from(forged(i), "203.0.113.9")).await.0);
    }
    // Five in the budget, the sixth spends it; then refused before reading.
    assert_eq!(statuses[..6], [401; 6]);
    assert!(statuses[6..].iter().all(|s| *s == 429), "{statuses:?}");

    // Refused before its body is read: this one never sends its body.
    let address = stack.ingest.trim_start_matches("http://");
    let mut raw = TcpStream::connect(address).await.unwrap();
    raw.write_all(
        format!(
            "POST /hooks/github HTTP/1.1\r\nhost: {address}\r\nx-real-ip: 203.0.113.9\r\n\
             content-length: 1000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0; 4096];
    let n = raw.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after:"), "{answer}");

    // Another address, and genuine deliveries from it, are untouched.
    let (status, _) = send(from(forged(99), "198.51.100.7")).await;
    assert_eq!(status, 401);
    let (status, receipt) = send(from(stack.github("genuine", b"{}"), "198.51.100.7")).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(
        test_support::metrics::sample(
            &stack.metrics().await,
            "webhook_errors_total{source=\"github\",reason=\"too_many_failed_verifications\"}"
        ),
        15.0
    );
}

#[tokio::test]
async fn a_burst_of_a_thousand_genuine_deliveries_from_one_address_is_all_accepted() {
    let stack = spawn_stack().await;
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let request = from(
            stack.github(&format!("burst-{i}"), format!("{{\"n\":{i}}}").as_bytes()),
            "192.0.2.1",
        );
        burst.spawn(async move { send(request).await.0 });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = burst.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(202, 1000)].into());
    assert_eq!(stack.stored_count().await, 1000);
}
