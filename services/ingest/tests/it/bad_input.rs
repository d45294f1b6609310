use test_support::sign;

use crate::helpers::{GITHUB_SECRET, sample, send, spawn_stack, spawn_stack_with};

#[tokio::test]
async fn every_refusal_has_its_status_and_code_is_counted_and_stores_nothing() {
    let stack = spawn_stack().await;
    let body = b"{}";
    let now = sign::now_unix();
    // An hour outside the 300 s tolerance: the requests are built now and
    // sent later, and a busy machine must not carry them back inside it.
    let stale = now - 3600;
    let future = now + 3600;
    let url = |source: &str| format!("{}/hooks/{source}", stack.ingest);
    let standard_at = |ts: i64| {
        stack
            .http
            .post(url("billing"))
            .header("webhook-id", "msg_t")
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                sign::standard(&stack.standard_secret, "msg_t", ts, body),
            )
            .body(body.to_vec())
    };
    let cases = [
        (
            "unknown source",
            stack.http.post(url("nope")).body("{}"),
            404,
            "unknown_source",
            "_unknown",
        ),
        (
            "no signature",
            stack
                .http
                .post(url("github"))
                .header("x-github-event", "push")
                .header("x-github-delivery", "d1")
                .body("{}"),
            400,
            "missing_header",
            "github",
        ),
        (
            "malformed signature",
            stack
                .http
                .post(url("github"))
                .header("x-hub-signature-256", "md5=00")
                .body("{}"),
            400,
            "malformed_header",
            "github",
        ),
        (
            "tampered body",
            stack.github("d2", body).body(b"{\"x\":1}".to_vec()),
            401,
            "invalid_signature",
            "github",
        ),
        (
            "wrong secret",
            stack
                .http
                .post(url("github"))
                .header("x-github-event", "push")
                .header("x-github-delivery", "d3")
                .header("x-hub-signature-256", sign::github("not-the-secret", body))
                .body(body.to_vec()),
            401,
            "invalid_signature",
            "github",
        ),
        (
            "stale timestamp",
            standard_at(stale),
            401,
            "stale_timestamp",
            "billing",
        ),
        (
            "future timestamp",
            standard_at(future),
            401,
            "future_timestamp",
            "billing",
        ),
    ];
    for (what, request, status, code, source) in cases {
        let (got, answer) = send(request).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(
            !answer.to_string().contains(GITHUB_SECRET),
            "{what}: no secret in errors"
        );
        let metrics = stack.metrics().await;
        assert!(
            sample(
                &metrics,
                &format!("webhook_errors_total{{source=\"{source}\",reason=\"{code}\"}}")
            ) >= 1.0,
            "{what}: counted"
        );
    }
    assert_eq!(stack.stored_count().await, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_before_it_is_stored() {
    let stack = spawn_stack_with(|s| s.limits.max_body_bytes = 1024).await;
    let big = vec![b'x'; 4096];
    let (status, answer) = send(stack.github("big", &big)).await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], "body_too_large");
    // Just at the limit is fine.
    let (status, _) = send(stack.github("fits", &big[..1024])).await;
    assert_eq!(status, 202);
    assert_eq!(stack.stored_count().await, 1);
}

#[tokio::test]
async fn a_request_with_too_many_headers_gets_431() {
    let stack = spawn_stack_with(|s| s.limits.max_headers = 8).await;
    let mut request = stack.github("many", b"{}");
    for i in 0..10 {
        request = request.header(format!("x-extra-{i}"), "1");
    }
    let (status, answer) = send(request).await;
    assert_eq!(status, 431);
    assert_eq!(answer["error"]["code"], "too_many_headers");
}

#[tokio::test]
async fn when_dedup_store_is_down_ingest_answers_503_with_retry_after() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stack = spawn_stack_with(|s| s.store.url = format!("http://127.0.0.1:{closed}")).await;
    let response = stack.github("while-down", b"{}").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "store_unavailable");
    let ready = stack
        .http
        .get(format!("{}/readyz", stack.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let metrics = stack.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "webhook_requests_total{source=\"github\",outcome=\"failed\"}"
        ),
        1.0
    );
}
