use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use rave_service::sign::providers::{self, Event, PROVIDERS};

use super::*;
use crate::settings::SourceKind;
use crate::verify::presets;

const NOW: i64 = 1_800_000_000;
const SECRET: &str = "a-provider-secret";

fn kind(name: &str) -> SourceKind {
    SourceKind::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .unwrap()
}

fn preset(name: &str, secrets: &[&str]) -> Scheme {
    let (settings, challenge) = presets::expand(kind(name)).unwrap();
    let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
    let secrets: Vec<&Secret> = secrets.iter().collect();
    Scheme::compile(&settings, &secrets, 300, challenge).unwrap()
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::verify::tests::headers(&pairs)
}

fn signed(name: &str, secret: &str, now: i64) -> (HeaderMap, Vec<u8>) {
    let delivery = providers::delivery(
        name,
        secret,
        Event {
            id: "delivery-1",
            event_type: None,
            now,
            body: None,
        },
    )
    .unwrap();
    (headers(&delivery.headers), delivery.body)
}

use crate::verify::tests::event;

/// The providers whose presets check a timestamp.
const TIMED: [&str; 3] = ["stripe", "slack", "linear"];

#[test]
fn every_preset_accepts_its_providers_delivery_with_its_id_and_type() {
    for name in PROVIDERS {
        let (headers, body) = signed(name, SECRET, NOW);
        let verified = event(preset(name, &[SECRET]).verify(&headers, &body, NOW))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.event_uuid.as_str(), "delivery-1", "{name}");
        assert_eq!(
            verified.event_type.as_str(),
            providers::default_event_type(name).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn every_preset_refuses_a_tampered_body() {
    for name in PROVIDERS {
        let (headers, mut body) = signed(name, SECRET, NOW);
        let last = body.len() - 2;
        body[last] ^= 1;
        assert_eq!(
            event(preset(name, &[SECRET]).verify(&headers, &body, NOW)),
            Err(VerifyError::InvalidSignature),
            "{name}"
        );
    }
}

#[test]
fn every_preset_refuses_the_wrong_secret() {
    for name in PROVIDERS {
        let (headers, body) = signed(name, "another-secret", NOW);
        assert_eq!(
            event(preset(name, &[SECRET]).verify(&headers, &body, NOW)),
            Err(VerifyError::InvalidSignature),
            "{name}"
        );
    }
}

#[test]
fn every_preset_accepts_either_secret_during_a_rotation() {
    for name in PROVIDERS {
        let scheme = preset(name, &["old-secret", "new-secret"]);
        for secret in ["old-secret", "new-secret"] {
            let (headers, body) = signed(name, secret, NOW);
            assert!(
                event(scheme.verify(&headers, &body, NOW)).is_ok(),
                "{name} with {secret}"
            );
        }
    }
}

#[test]
fn every_preset_refuses_a_delivery_without_its_signature_header() {
    for name in PROVIDERS {
        let (mut headers, body) = signed(name, SECRET, NOW);
        let scheme = preset(name, &[SECRET]);
        let signature_headers = scheme.signature_headers.clone();
        for header in &signature_headers {
            headers.remove(header.as_ref());
        }
        assert_eq!(
            event(scheme.verify(&headers, &body, NOW)),
            Err(VerifyError::MissingHeader(signature_headers[0].clone())),
            "{name}"
        );
    }
}

#[test]
fn every_preset_that_takes_its_id_from_a_header_refuses_a_delivery_without_it() {
    for name in PROVIDERS {
        let scheme = preset(name, &[SECRET]);
        let Location::Header(id_header) = &scheme.delivery_id[0] else {
            continue;
        };
        let (mut headers, body) = signed(name, SECRET, NOW);
        for location in &scheme.delivery_id {
            if let Location::Header(h) = location {
                headers.remove(h.as_ref());
            }
        }
        assert_eq!(
            event(scheme.verify(&headers, &body, NOW)),
            Err(VerifyError::MissingHeader(id_header.clone())),
            "{name}"
        );
    }
}

#[test]
fn the_timed_presets_refuse_stale_and_future_deliveries_and_the_others_do_not_look() {
    for name in PROVIDERS {
        let scheme = preset(name, &[SECRET]);
        let (old_headers, old_body) = signed(name, SECRET, NOW - 301);
        let (new_headers, new_body) = signed(name, SECRET, NOW + 301);
        let stale = event(scheme.verify(&old_headers, &old_body, NOW));
        let future = event(scheme.verify(&new_headers, &new_body, NOW));
        if TIMED.contains(&name) {
            assert_eq!(
                stale,
                Err(VerifyError::StaleTimestamp { tolerance: 300 }),
                "{name}"
            );
            assert_eq!(
                future,
                Err(VerifyError::FutureTimestamp { tolerance: 300 }),
                "{name}"
            );
            let (headers, body) = signed(name, SECRET, NOW - 299);
            assert!(event(scheme.verify(&headers, &body, NOW)).is_ok(), "{name}");
        } else {
            assert!(stale.is_ok() && future.is_ok(), "{name}");
        }
    }
}

#[test]
fn slack_accepts_the_signed_request_from_its_documentation() {
    // api.slack.com, "Verifying requests from Slack": its worked example
    // (a slash command: form-encoded, so only the signature is checked).
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let headers = headers(&[
        ("x-slack-request-timestamp", "1531420618".to_owned()),
        (
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".to_owned(),
        ),
    ]);
    let scheme = preset("slack", &["8f742231b10e8888abcd99yyyzzz85a5"]);
    // Past the signature, the body is read for the event id: not JSON.
    let result = scheme.verify(&headers, body.as_bytes(), 1_531_420_618);
    assert!(
        matches!(&result, Err(VerifyError::MalformedBody(m)) if m.starts_with("not JSON")),
        "{result:?}"
    );
    let mut tampered = body.as_bytes().to_vec();
    tampered[6] = b'X';
    assert_eq!(
        scheme.verify(&headers, &tampered, 1_531_420_618),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn slack_answers_its_url_verification_challenge_only_when_signed() {
    let body = br#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let t = NOW.to_string();
    let mac = |secret: &str| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let mut content = format!("v0:{t}:").into_bytes();
        content.extend_from_slice(body);
        format!("v0={}", hex::encode(hmac::sign(&key, &content).as_ref()))
    };
    let scheme = preset("slack", &[SECRET]);
    let signed = headers(&[
        ("x-slack-request-timestamp", t.clone()),
        ("x-slack-signature", mac(SECRET)),
    ]);
    assert_eq!(
        scheme.verify(&signed, body, NOW),
        Ok(Verdict::Challenge(
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".to_owned()
        ))
    );
    let forged = headers(&[
        ("x-slack-request-timestamp", t.clone()),
        ("x-slack-signature", mac("not-the-secret")),
    ]);
    assert_eq!(
        scheme.verify(&forged, body, NOW),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn stripe_accepts_any_v1_signature_among_several_and_ignores_v0() {
    let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut content = format!("{NOW}.").into_bytes();
    content.extend_from_slice(body);
    let good = hex::encode(hmac::sign(&key, &content).as_ref());
    let scheme = preset("stripe", &[SECRET]);
    let header = format!(
        "t={NOW},v1={},v1={good},v0={}",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    let verified =
        event(scheme.verify(&headers(&[("stripe-signature", header)]), body, NOW)).unwrap();
    assert_eq!(verified.event_uuid.as_str(), "evt_1");
    // A v0 signature alone is not a v1 one, however correct.
    let header = format!("t={NOW},v0={good}");
    let err = scheme
        .verify(&headers(&[("stripe-signature", header)]), body, NOW)
        .unwrap_err();
    assert_eq!(err.code(), "malformed_header");
    // Without t= there is no time to check.
    let header = format!("v1={good}");
    let err = scheme
        .verify(&headers(&[("stripe-signature", header)]), body, NOW)
        .unwrap_err();
    assert_eq!(err.code(), "malformed_header");
}

#[test]
fn pagerduty_accepts_a_header_with_one_signature_per_active_secret() {
    let body = br#"{"event":{"id":"01ABC","event_type":"incident.triggered"}}"#;
    let sign = |secret: &str| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        hex::encode(hmac::sign(&key, body).as_ref())
    };
    let header = format!("v1={}, v1={}", sign("old"), sign("new"));
    for secret in ["old", "new"] {
        let verified = event(preset("pagerduty", &[secret]).verify(
            &headers(&[("x-pagerduty-signature", header.clone())]),
            body,
            NOW,
        ))
        .unwrap();
        assert_eq!(verified.event_uuid.as_str(), "01ABC");
        assert_eq!(verified.event_type.as_str(), "incident.triggered");
    }
}

#[test]
fn linear_reads_its_millisecond_timestamp_from_the_signed_body() {
    let body = format!(
        r#"{{"type":"Issue","webhookTimestamp":{}}}"#,
        (NOW - 400) * 1000
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let signature = hex::encode(hmac::sign(&key, body.as_bytes()).as_ref());
    let headers = headers(&[
        ("linear-signature", signature),
        ("linear-delivery", "d-1".to_owned()),
    ]);
    assert_eq!(
        event(preset("linear", &[SECRET]).verify(&headers, body.as_bytes(), NOW)),
        Err(VerifyError::StaleTimestamp { tolerance: 300 })
    );
}

#[test]
fn a_signed_body_without_its_delivery_id_is_malformed_not_a_server_error() {
    let body = br#"{"type":"invoice.paid"}"#;
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut content = format!("{NOW}.").into_bytes();
    content.extend_from_slice(body);
    let header = format!(
        "t={NOW},v1={}",
        hex::encode(hmac::sign(&key, &content).as_ref())
    );
    let err = preset("stripe", &[SECRET])
        .verify(&headers(&[("stripe-signature", header)]), body, NOW)
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::MalformedBody("no delivery id at /id".to_owned())
    );
}

#[test]
fn a_header_given_twice_is_refused() {
    let (mut headers, body) = signed("gitea", SECRET, NOW);
    headers.append(
        HeaderName::from_static("x-gitea-signature"),
        HeaderValue::from_static("00"),
    );
    let err = preset("gitea", &[SECRET])
        .verify(&headers, &body, NOW)
        .unwrap_err();
    assert_eq!(err.code(), "malformed_header");
}

// --- the declared form ------------------------------------------------------------

fn declared(toml_text: &str) -> Result<Scheme, String> {
    let settings: HmacSettings =
        rave_service::toml::from_str(toml_text).map_err(|e| e.to_string())?;
    let secret = Secret::new(SECRET);
    Scheme::compile(&settings, &[&secret], 300, None)
}

#[test]
fn a_declared_scheme_signs_what_its_template_says() {
    let scheme = declared(
        r#"
        algorithm = "sha512"
        encoding = "base64"
        signature_headers = ["acme-signature"]
        signature_prefix = "sha512="
        signed = "acme:{id}:{timestamp}:{body}"
        timestamp = "header:Acme-Timestamp"
        delivery_id = ["header:acme-id"]
        event_type = ["body:/kind"]
        keep_headers = ["acme-account"]
        "#,
    )
    .unwrap();
    let body = br#"{"kind":"thing.made"}"#;
    let key = hmac::Key::new(hmac::HMAC_SHA512, SECRET.as_bytes());
    let mut content = format!("acme:id-9:{NOW}:").into_bytes();
    content.extend_from_slice(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, &content));
    let headers = headers(&[
        ("acme-signature", format!("sha512={signature}")),
        ("acme-timestamp", NOW.to_string()),
        ("acme-id", "id-9".to_owned()),
    ]);
    let verified = event(scheme.verify(&headers, body, NOW)).unwrap();
    assert_eq!(verified.event_uuid.as_str(), "id-9");
    assert_eq!(verified.event_type.as_str(), "thing.made");
    assert_eq!(
        scheme.kept_headers().collect::<Vec<_>>(),
        ["acme-timestamp", "acme-id", "acme-account"]
    );
    // The id is signed: another id with the same signature does not verify.
    let mut moved = headers.clone();
    moved.insert(
        HeaderName::from_static("acme-id"),
        HeaderValue::from_static("id-10"),
    );
    assert_eq!(
        event(scheme.verify(&moved, body, NOW)),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn a_declared_scheme_is_refused_at_load_when_it_would_protect_less_than_it_seems() {
    let base = r#"signature_headers = ["x-sig"]
        delivery_id = ["header:x-id"]
        "#;
    for (extra, expected) in [
        (
            "timestamp = \"header:x-ts\"",
            "hmac.timestamp: is not signed",
        ),
        (
            "signed = \"{timestamp}.{body}\"",
            "hmac.signed: {timestamp} needs",
        ),
        (
            "signed = \"{timestamp}{body}\"\ntimestamp = \"body:/ts\"",
            "hmac.signed: {timestamp} needs",
        ),
        (
            "signed = \"{id}\"",
            "hmac.signed: must contain {body} exactly once",
        ),
        (
            "signed = \"{body}{body}\"",
            "hmac.signed: must contain {body} exactly once",
        ),
        ("signed = \"{bdy}\"", "unknown placeholder {bdy}"),
        ("signed = \"{body\"", "an unclosed '{'"),
        (
            "timestamp = \"signature:t\"\nsigned = \"{timestamp}.{body}\"",
            "needs a signature_list",
        ),
        (
            "signature_prefix = \"a\"\nsignature_list = { separator = \",\", key = \"v1\" }",
            "not both",
        ),
        ("keep_headers = [\"X-Sig\"]", "holds the signature"),
        ("event_type = [\"query:/x\"]", "hmac.event_type"),
        ("event_type = [\"body:x\"]", "starts with '/'"),
    ] {
        let err = declared(&format!("{base}{extra}")).unwrap_err();
        assert!(err.contains(expected), "{extra}: {err}");
    }
    assert!(
        declared("signature_headers = []\ndelivery_id = [\"header:x\"]")
            .unwrap_err()
            .contains("signature_headers")
    );
    assert!(
        declared("signature_headers = [\"x\"]\ndelivery_id = []")
            .unwrap_err()
            .contains("delivery_id")
    );
    assert!(
        declared("signature_headers = [\"x\"]\ndelivery_id = [\"header:x\"]\nunknown = 1")
            .unwrap_err()
            .contains("unknown")
    );
}

#[test]
fn every_preset_compiles_and_none_stores_its_signature_header() {
    for (name, kind) in SourceKind::ALL {
        let Some((settings, challenge)) = presets::expand(kind) else {
            continue;
        };
        let secret = Secret::new(SECRET);
        let scheme = Scheme::compile(&settings, &[&secret], 300, challenge)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            scheme
                .kept_headers()
                .all(|h| !scheme.signature_headers.iter().any(|s| s == h)),
            "{name}"
        );
        assert!(
            PROVIDERS.contains(&name),
            "{name} has a signer for tests and ravectl send"
        );
    }
}

proptest! {
    #[test]
    fn the_template_parser_never_panics_and_keeps_fixed_text(text in "[a-z{}:. ]{0,24}") {
        if let Ok(parts) = parse_template(&text) {
            let rendered: String = parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => String::from_utf8(t.clone())
                        .unwrap()
                        .replace('{', "{{")
                        .replace('}', "}}"),
                    Part::Body => "{body}".to_owned(),
                    Part::Timestamp => "{timestamp}".to_owned(),
                    Part::Id => "{id}".to_owned(),
                })
                .collect();
            prop_assert_eq!(parse_template(&rendered).unwrap(), parts);
        }
    }

    #[test]
    fn a_declared_scheme_never_panics_on_any_header_or_body(
        signature in "[ -~]{0,80}",
        timestamp in "[ -~]{0,12}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (settings, challenge) = presets::expand(SourceKind::Stripe).unwrap();
        let secret = Secret::new(SECRET);
        let scheme = Scheme::compile(&settings, &[&secret], 300, challenge).unwrap();
        let mut map = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("t={timestamp},{signature}")) {
            map.insert(HeaderName::from_static("stripe-signature"), value);
        }
        // Nothing unsigned verifies.
        prop_assert!(scheme.verify(&map, &body, NOW).is_err());
    }

    #[test]
    fn locations_parse_or_explain(text in "[a-z:/A-Z_-]{0,20}") {
        match Location::parse(&text) {
            Ok(Location::Header(h)) => prop_assert_eq!(h.to_string(), h.to_lowercase()),
            Ok(Location::Body(p)) => prop_assert!(p.starts_with('/')),
            Ok(Location::Signature(k)) => prop_assert!(!k.is_empty()),
            Err(e) => {
                let quoted = format!("{text:?}");
                prop_assert!(e.contains(&quoted) || e.contains("header name"), "{}", e);
            }
        }
    }
}
