//! The HMAC presets over HTTP, in front of a real dedup-store: deliveries
//! signed by Stripe's and Slack's own libraries (tests/providers/sdk.py),
//! and every preset's forged, tampered, stale and header-less deliveries.

use std::io::Write as _;
use std::process::{Command, Stdio};

use ingest::settings::{SourceKind, SourceSettings};
use rave_service::sign::providers::{self, Event, PROVIDERS};
use serde_json::{Value, json};

use crate::helpers::{TestStack, sample, send, source, spawn_stack_with};

const SECRET: &str = "whsec_a-providers-signing-secret";

/// One source per preset, named after its provider.
async fn stack_with_every_preset() -> TestStack {
    spawn_stack_with(|settings| {
        // These tests send many refused deliveries from one address on
        // purpose; the guard against that has tests of its own (edges.rs).
        settings.limits.failed_verifications_per_minute = 0;
        for (name, kind) in SourceKind::ALL {
            if PROVIDERS.contains(&name) {
                settings.sources.insert(name.to_owned(), preset(kind));
            }
        }
    })
    .await
}

fn preset(kind: SourceKind) -> SourceSettings {
    source(kind, vec![SECRET], vec![])
}

/// Asks the providers' libraries (tests/providers/sdk.py).
fn sdk(request: Value) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/providers/sdk.py");
    let mut child = Command::new(test_support::tools::venv_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sdk.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sdk.py answers JSON")
}

fn post(
    stack: &TestStack,
    source: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> reqwest::RequestBuilder {
    let mut request = stack
        .http
        .post(format!("{}/hooks/{source}", stack.ingest))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request
}

fn sdk_headers(answer: &Value) -> Vec<(String, String)> {
    answer["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

async fn stored(stack: &TestStack, source: &str) -> Vec<(String, String, Value)> {
    let db = stack.db.connect().await.unwrap();
    db.query(
        "SELECT event_uuid, event_type, headers FROM events WHERE source = $1 ORDER BY id",
        &[&source],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn a_delivery_signed_by_stripes_own_library_is_stored_once_under_its_signed_event_id() {
    let stack = stack_with_every_preset().await;
    let body = json!({
        "id": "evt_1RaveTest", "object": "event", "type": "invoice.paid",
        "created": rave_service::sign::now_unix(), "data": { "object": { "object": "invoice" } }
    })
    .to_string();
    let signed = sdk(json!({ "op": "sign", "provider": "stripe", "secret": SECRET, "body": body }));
    let headers = sdk_headers(&signed);
    let (status, receipt) = send(post(&stack, "stripe", &headers, body.as_bytes())).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["delivery_id"], "evt_1RaveTest");
    // Stripe retries the same event signed again, at a later time.
    let again = sdk(json!({
        "op": "sign", "provider": "stripe", "secret": SECRET, "body": body,
        "timestamp": rave_service::sign::now_unix() + 5,
    }));
    let (status, duplicate) = send(post(
        &stack,
        "stripe",
        &sdk_headers(&again),
        body.as_bytes(),
    ))
    .await;
    assert_eq!((status, &duplicate["status"]), (200, &json!("duplicate")));
    assert_eq!(duplicate["task_id"], receipt["task_id"]);
    let rows = stored(&stack, "stripe").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("evt_1RaveTest", "invoice.paid")
    );
    assert!(rows[0].2.get("stripe-signature").is_none(), "{}", rows[0].2);
    // The library's signature over another body does not carry over.
    let (status, refused) = send(post(&stack, "stripe", &headers, b"{\"id\":\"evt_2\"}")).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (401, &json!("invalid_signature"))
    );
}

#[tokio::test]
async fn slacks_own_library_signs_events_retries_and_the_url_verification_handshake() {
    let stack = stack_with_every_preset().await;
    let sign = |body: &str, at: i64| {
        sdk_headers(&sdk(json!({
            "op": "sign", "provider": "slack", "secret": SECRET, "body": body, "timestamp": at,
        })))
    };
    let now = rave_service::sign::now_unix();

    // Slack checks the endpoint before it delivers anything.
    let handshake = r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, answer) = send(post(
        &stack,
        "slack",
        &sign(handshake, now),
        handshake.as_bytes(),
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert!(
        stored(&stack, "slack").await.is_empty(),
        "a handshake is not an event"
    );

    let body = json!({
        "token": "t", "team_id": "T0RAVE", "type": "event_callback", "event_id": "Ev0RAVE1",
        "event_time": now, "event": { "type": "app_mention", "text": "hi" }
    })
    .to_string();
    let (status, receipt) = send(post(&stack, "slack", &sign(&body, now), body.as_bytes())).await;
    assert_eq!(status, 202, "{receipt}");
    // A retry: signed anew, with Slack's retry headers; the same event.
    let mut retry = sign(&body, now + 3);
    retry.push(("x-slack-retry-num".into(), "1".into()));
    retry.push(("x-slack-retry-reason".into(), "http_timeout".into()));
    let (status, duplicate) = send(post(&stack, "slack", &retry, body.as_bytes())).await;
    assert_eq!((status, &duplicate["task_id"]), (200, &receipt["task_id"]));
    let rows = stored(&stack, "slack").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("Ev0RAVE1", "app_mention")
    );

    // A capture replayed after Slack's five minutes.
    let stale = sign(&body, now - 301);
    let (status, refused) = send(post(&stack, "slack", &stale, body.as_bytes())).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (401, &json!("stale_timestamp"))
    );

    let metrics = stack.metrics().await;
    let challenge = r#"webhook_requests_total{source="slack",outcome="challenge"}"#;
    assert_eq!(sample(&metrics, challenge), 1.0, "{metrics}");
}

#[tokio::test]
async fn stripes_and_slacks_libraries_accept_what_ravectl_send_signs_and_refuse_it_tampered() {
    let now = rave_service::sign::now_unix();
    for provider in ["stripe", "slack"] {
        let delivery = providers::delivery(
            provider,
            SECRET,
            Event {
                id: "evt_ravectl",
                event_type: None,
                now,
                body: None,
            },
        )
        .unwrap();
        let headers: serde_json::Map<String, Value> = delivery
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str())))
            .collect();
        let body = String::from_utf8(delivery.body).unwrap();
        let check = |body: &str| {
            sdk(json!({
                "op": "verify", "provider": provider, "secret": SECRET,
                "body": body, "headers": headers, "now": now,
            }))
        };
        assert_eq!(check(&body)["valid"], true, "{provider}: {}", check(&body));
        let tampered = body.replace("evt_ravectl", "evt_forged");
        assert_eq!(check(&tampered)["valid"], false, "{provider}");
    }
}

#[tokio::test]
async fn every_preset_stores_its_providers_delivery_and_refuses_forged_tampered_stale_and_unsigned_ones()
 {
    let stack = stack_with_every_preset().await;
    let now = rave_service::sign::now_unix();
    let deliver = |provider: &str, secret: &str, id: &str, at: i64| {
        providers::delivery(
            provider,
            secret,
            Event {
                id,
                event_type: None,
                now: at,
                body: None,
            },
        )
        .unwrap()
    };
    let pairs = |d: &providers::Delivery| -> Vec<(String, String)> {
        d.headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    for provider in PROVIDERS {
        let good = deliver(provider, SECRET, "d-1", now);
        let (status, receipt) = send(post(&stack, provider, &pairs(&good), &good.body)).await;
        assert_eq!(status, 202, "{provider}: {receipt}");
        let (status, _) = send(post(&stack, provider, &pairs(&good), &good.body)).await;
        assert_eq!(status, 200, "{provider}: a repeat is a duplicate");

        let forged = deliver(provider, "not-the-secret", "d-2", now);
        let (status, refused) = send(post(&stack, provider, &pairs(&forged), &forged.body)).await;
        assert_eq!(
            (status, &refused["error"]["code"]),
            (401, &json!("invalid_signature")),
            "{provider}"
        );

        let mut tampered = good.body.clone();
        tampered.extend_from_slice(b" ");
        let (status, refused) = send(post(&stack, provider, &pairs(&good), &tampered)).await;
        assert_eq!(
            (status, &refused["error"]["code"]),
            (401, &json!("invalid_signature")),
            "{provider}"
        );

        let stale = deliver(provider, SECRET, "d-3", now - 3600);
        let (status, refused) = send(post(&stack, provider, &pairs(&stale), &stale.body)).await;
        if ["stripe", "slack", "linear"].contains(&provider) {
            assert_eq!(
                (status, &refused["error"]["code"]),
                (401, &json!("stale_timestamp")),
                "{provider}"
            );
        } else {
            // Nothing signed says when: the delivery id is the only guard.
            assert_eq!(status, 202, "{provider}: {refused}");
        }

        let unsigned: Vec<(String, String)> = pairs(&good)
            .into_iter()
            .filter(|(k, _)| !k.contains("signature") && !k.contains("hmac"))
            .collect();
        let (status, refused) = send(post(&stack, provider, &unsigned, &good.body)).await;
        assert_eq!(
            (status, &refused["error"]["code"]),
            (400, &json!("missing_header")),
            "{provider}"
        );
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("missing header"),
            "{refused}"
        );

        let rows = stored(&stack, provider).await;
        let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let expected: &[&str] = if ["stripe", "slack", "linear"].contains(&provider) {
            &["d-1"]
        } else {
            &["d-1", "d-3"]
        };
        assert_eq!(ids, expected, "{provider}");
        for (_, _, headers) in &rows {
            let names = headers.as_object().unwrap().keys();
            for name in names {
                assert!(
                    !name.contains("signature") && !name.contains("hmac"),
                    "{provider}: {name}"
                );
            }
        }
    }
    let metrics = stack.metrics().await;
    let forged = r#"webhook_errors_total{source="stripe",reason="invalid_signature"}"#;
    assert_eq!(sample(&metrics, forged), 2.0, "{metrics}");
}

#[tokio::test]
async fn signed_deliveries_the_scheme_cannot_read_never_count_against_the_senders_address() {
    // The guard's defaults (burst 30), unlike the other tests here.
    let stack = spawn_stack_with(|settings| {
        settings
            .sources
            .insert("stripe".to_owned(), preset(SourceKind::Stripe));
    })
    .await;
    let now = rave_service::sign::now_unix();
    let signed = |body: &[u8]| {
        let d = providers::delivery(
            "stripe",
            SECRET,
            Event {
                id: "unused",
                event_type: None,
                now,
                body: Some(body),
            },
        )
        .unwrap();
        d.headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<Vec<_>>()
    };
    // Genuine Stripe, but no event id where the preset reads it.
    let unreadable = br#"{"type":"invoice.paid"}"#;
    for _ in 0..40 {
        let (status, refused) = send(
            post(&stack, "stripe", &signed(unreadable), unreadable)
                .header("x-real-ip", "203.0.113.7"),
        )
        .await;
        assert_eq!(
            (status, &refused["error"]["code"]),
            (400, &json!("malformed_body"))
        );
    }
    let good = br#"{"id":"evt_after","type":"invoice.paid"}"#;
    let (status, receipt) =
        send(post(&stack, "stripe", &signed(good), good).header("x-real-ip", "203.0.113.7")).await;
    assert_eq!(status, 202, "{receipt}");
}
