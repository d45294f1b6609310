//! Providers' schemes, each a named `kind` that expands to the declared form
//! (docs/adr/0020-declarative-hmac-senders.md has the table and sources;
//! docs/security.md what each signature covers).

use super::declared::{Challenge, Encoding, HmacSettings, SignatureList, TimestampUnit};
use crate::settings::SourceKind;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A body HMAC-SHA256 in hex with no timestamp: the common case.
fn body_hex(signature: &[&str], delivery_id: &[&str], event_type: &[&str]) -> HmacSettings {
    HmacSettings {
        algorithm: Default::default(),
        encoding: Encoding::Hex,
        signature_headers: strings(signature),
        signature_prefix: None,
        signature_list: None,
        signed: "{body}".to_owned(),
        timestamp: None,
        timestamp_unit: TimestampUnit::S,
        delivery_id: strings(delivery_id),
        event_type: strings(event_type),
        keep_headers: Vec::new(),
    }
}

/// The declared form of a preset kind, and the handshake it answers;
/// `None` for the kinds with code of their own.
pub fn expand(kind: SourceKind) -> Option<(HmacSettings, Option<Challenge>)> {
    let settings = match kind {
        SourceKind::Github
        | SourceKind::Gitlab
        | SourceKind::Standard
        | SourceKind::Alertmanager
        | SourceKind::Hmac => return None,
        // Gitea signs the body (X-Gitea-Signature, bare hex); its delivery
        // id is an unsigned UUID header.
        SourceKind::Gitea => HmacSettings {
            keep_headers: strings(&["x-gitea-hook-id"]),
            ..body_hex(
                &["x-gitea-signature"],
                &["header:x-gitea-delivery"],
                &["header:x-gitea-event"],
            )
        },
        // Forgejo sends its own headers and Gitea's, with the same values.
        SourceKind::Forgejo => HmacSettings {
            keep_headers: strings(&["x-forgejo-hook-id"]),
            ..body_hex(
                &["x-forgejo-signature", "x-gitea-signature"],
                &["header:x-forgejo-delivery", "header:x-gitea-delivery"],
                &["header:x-forgejo-event", "header:x-gitea-event"],
            )
        },
        // Bitbucket Cloud: `X-Hub-Signature: sha256=<hex>` over the body.
        SourceKind::Bitbucket => HmacSettings {
            signature_prefix: Some("sha256=".to_owned()),
            keep_headers: strings(&["x-hook-uuid", "x-attempt-number"]),
            ..body_hex(
                &["x-hub-signature"],
                &["header:x-request-uuid"],
                &["header:x-event-key"],
            )
        },
        // Stripe: `t=<unix>,v1=<hex>[,v1=…]` over `{t}.{body}`; the event id
        // is in the signed body.
        SourceKind::Stripe => HmacSettings {
            signature_list: Some(SignatureList {
                separator: ",".to_owned(),
                key: "v1".to_owned(),
            }),
            signed: "{timestamp}.{body}".to_owned(),
            timestamp: Some("signature:t".to_owned()),
            ..body_hex(&["stripe-signature"], &["body:/id"], &["body:/type"])
        },
        // Slack's Events API: `v0=<hex>` over `v0:{timestamp}:{body}`; the
        // event id is in the signed body, so its retries are duplicates.
        SourceKind::Slack => HmacSettings {
            signature_prefix: Some("v0=".to_owned()),
            signed: "v0:{timestamp}:{body}".to_owned(),
            timestamp: Some("header:x-slack-request-timestamp".to_owned()),
            keep_headers: strings(&["x-slack-retry-num", "x-slack-retry-reason"]),
            ..body_hex(
                &["x-slack-signature"],
                &["body:/event_id"],
                &["body:/event/type", "body:/type"],
            )
        },
        // Shopify: base64 HMAC-SHA256 of the body; nothing else is signed.
        SourceKind::Shopify => HmacSettings {
            encoding: Encoding::Base64,
            keep_headers: strings(&[
                "x-shopify-shop-domain",
                "x-shopify-api-version",
                "x-shopify-triggered-at",
                "x-shopify-event-id",
            ]),
            ..body_hex(
                &["x-shopify-hmac-sha256"],
                &["header:x-shopify-webhook-id"],
                &["header:x-shopify-topic"],
            )
        },
        // Linear: hex over the body, whose `webhookTimestamp` (milliseconds)
        // is therefore signed.
        SourceKind::Linear => HmacSettings {
            timestamp: Some("body:/webhookTimestamp".to_owned()),
            timestamp_unit: TimestampUnit::Ms,
            ..body_hex(
                &["linear-signature"],
                &["header:linear-delivery"],
                &["header:linear-event", "body:/type"],
            )
        },
        // Sentry's integration platform: hex over the body with the client
        // secret; `Sentry-Hook-Timestamp` is not signed, so not checked.
        SourceKind::Sentry => HmacSettings {
            keep_headers: strings(&["sentry-hook-timestamp"]),
            ..body_hex(
                &["sentry-hook-signature"],
                &["header:request-id"],
                &["header:sentry-hook-resource"],
            )
        },
        // PagerDuty v3: `v1=<hex>[,v1=…]`, one per active secret, over the
        // body, which holds the event id.
        SourceKind::Pagerduty => HmacSettings {
            signature_list: Some(SignatureList {
                separator: ",".to_owned(),
                key: "v1".to_owned(),
            }),
            keep_headers: strings(&["x-webhook-id", "x-webhook-subscription"]),
            ..body_hex(
                &["x-pagerduty-signature"],
                &["body:/event/id"],
                &["body:/event/event_type"],
            )
        },
        // Jira Cloud admin webhooks with a secret (WebSub): `sha256=<hex>`.
        SourceKind::Jira => HmacSettings {
            signature_prefix: Some("sha256=".to_owned()),
            keep_headers: strings(&["x-atlassian-webhook-retry"]),
            ..body_hex(
                &["x-hub-signature"],
                &["header:x-atlassian-webhook-identifier"],
                &["body:/webhookEvent"],
            )
        },
    };
    let challenge = (kind == SourceKind::Slack).then_some(Challenge {
        when: "/type",
        equals: "url_verification",
        echo: "/challenge",
    });
    Some((settings, challenge))
}
