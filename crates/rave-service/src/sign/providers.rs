//! Deliveries as the providers with an HMAC preset send them (ingest's
//! `verify/presets.rs`), written from the providers' documentation, not
//! from ingest's code; the tests check the ones whose providers publish a
//! library (Stripe, Slack) against that library.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// Every provider this module signs for, as ingest's `kind` names it.
pub const PROVIDERS: [&str; 10] = [
    "gitea",
    "forgejo",
    "bitbucket",
    "stripe",
    "slack",
    "shopify",
    "linear",
    "sentry",
    "pagerduty",
    "jira",
];

/// A signed delivery: its headers (with `content-type`) and body.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// What a delivery is about.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The provider's delivery or event id.
    pub id: &'a str,
    /// `None`: the provider's typical one.
    pub event_type: Option<&'a str>,
    /// Unix seconds, for the providers that send a time.
    pub now: i64,
    /// `None`: a small body of the provider's shape holding `id`, the type
    /// and the time where the provider puts them. A given body is sent as
    /// is (and must hold them itself).
    pub body: Option<&'a [u8]>,
}

fn mac(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    context.sign().as_ref().to_vec()
}

/// The provider's typical event type.
pub fn default_event_type(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "gitea" | "forgejo" => "push",
        "bitbucket" => "repo:push",
        "stripe" => "invoice.paid",
        "slack" => "app_mention",
        "shopify" => "orders/create",
        "linear" => "Issue",
        "sentry" => "issue",
        "pagerduty" => "incident.triggered",
        "jira" => "jira:issue_created",
        _ => return None,
    })
}

/// `provider`'s delivery of `event`, signed with `secret`; `None` for a
/// provider not in [`PROVIDERS`].
pub fn delivery(provider: &str, secret: &str, event: Event<'_>) -> Option<Delivery> {
    let kind = event
        .event_type
        .or_else(|| default_event_type(provider))?
        .to_owned();
    let Event { id, now, .. } = event;
    let json = |value: serde_json::Value| value.to_string().into_bytes();
    let body = match event.body {
        Some(body) => body.to_vec(),
        None => match provider {
            "stripe" => json(serde_json::json!({
                "id": id, "object": "event", "type": kind, "created": now,
                "api_version": "2024-06-20", "livemode": false,
                "data": { "object": { "object": "invoice" } }
            })),
            "slack" => json(serde_json::json!({
                "token": "unused", "team_id": "T0RAVE", "api_app_id": "A0RAVE",
                "type": "event_callback", "event_id": id, "event_time": now,
                "event": { "type": kind, "text": "hello", "user": "U0RAVE" }
            })),
            "linear" => json(serde_json::json!({
                "action": "create", "type": kind, "webhookTimestamp": now * 1000,
                "data": { "id": "rave", "title": "a test issue" }
            })),
            "pagerduty" => json(serde_json::json!({
                "event": {
                    "id": id, "event_type": kind, "resource_type": "incident",
                    "occurred_at": "2026-12-02T00:00:00Z", "data": { "type": "incident" }
                }
            })),
            "jira" => json(serde_json::json!({
                "webhookEvent": kind, "timestamp": now * 1000,
                "issue": { "key": "RAVE-1" }
            })),
            _ => json(serde_json::json!({ "rave": "test delivery" })),
        },
    };
    let hex_body = || hex::encode(mac(secret, &[&body]));
    let mut headers: Vec<(&'static str, String)> =
        vec![("content-type", "application/json".to_owned())];
    match provider {
        "gitea" => headers.extend([
            ("x-gitea-signature", hex_body()),
            ("x-gitea-delivery", id.to_owned()),
            ("x-gitea-event", kind),
        ]),
        "forgejo" => {
            let signature = hex_body();
            headers.extend([
                ("x-forgejo-signature", signature.clone()),
                ("x-gitea-signature", signature),
                ("x-forgejo-delivery", id.to_owned()),
                ("x-gitea-delivery", id.to_owned()),
                ("x-forgejo-event", kind.clone()),
                ("x-gitea-event", kind),
            ])
        }
        "bitbucket" => headers.extend([
            // GitHub's form, in the header GitHub once used for SHA-1.
            ("x-hub-signature", super::github(secret, &body)),
            ("x-request-uuid", id.to_owned()),
            ("x-event-key", kind),
        ]),
        "stripe" => {
            let t = now.to_string();
            let signature = hex::encode(mac(secret, &[t.as_bytes(), b".", &body]));
            headers.push(("stripe-signature", format!("t={t},v1={signature}")));
        }
        "slack" => {
            let t = now.to_string();
            let signature = hex::encode(mac(secret, &[b"v0:", t.as_bytes(), b":", &body]));
            headers.extend([
                ("x-slack-request-timestamp", t),
                ("x-slack-signature", format!("v0={signature}")),
            ]);
        }
        "shopify" => headers.extend([
            (
                "x-shopify-hmac-sha256",
                STANDARD.encode(mac(secret, &[&body])),
            ),
            ("x-shopify-webhook-id", id.to_owned()),
            ("x-shopify-topic", kind),
            (
                "x-shopify-shop-domain",
                "rave-test.myshopify.com".to_owned(),
            ),
        ]),
        "linear" => headers.extend([
            ("linear-signature", hex_body()),
            ("linear-delivery", id.to_owned()),
            ("linear-event", kind),
        ]),
        "sentry" => headers.extend([
            ("sentry-hook-signature", hex_body()),
            ("request-id", id.to_owned()),
            ("sentry-hook-resource", kind),
            ("sentry-hook-timestamp", now.to_string()),
        ]),
        "pagerduty" => headers.push(("x-pagerduty-signature", format!("v1={}", hex_body()))),
        "jira" => headers.extend([
            ("x-hub-signature", super::github(secret, &body)),
            ("x-atlassian-webhook-identifier", id.to_owned()),
        ]),
        _ => return None,
    }
    Some(Delivery { headers, body })
}
