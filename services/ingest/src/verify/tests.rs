use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use test_support::sign;

use super::*;

const NOW: i64 = 1_800_000_000;

/// The event a verdict holds; a test that gets a challenge fails.
pub(super) fn event(result: Result<Verdict, VerifyError>) -> Result<Verified, VerifyError> {
    result.map(|v| match v {
        Verdict::Event(e) => e,
        Verdict::Challenge(c) => panic!("a challenge {c:?}, not an event"),
    })
}

impl Verifier {
    fn verify_event(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyError> {
        event(self.verify(headers, body, now_unix))
    }
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn github(secrets: &[&str]) -> Verifier {
    Verifier::Github {
        keys: secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()))
            .collect(),
    }
}

fn standard_keys(secrets: &[&str]) -> StandardKeys {
    let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
    StandardKeys::new(&secrets, 300).unwrap()
}

fn standard(secrets: &[&str]) -> Verifier {
    Verifier::Standard {
        keys: standard_keys(secrets),
    }
}

fn gitlab(signing: &[&str], tokens: &[&str], require_signature: bool) -> Verifier {
    Verifier::Gitlab {
        signing: (!signing.is_empty()).then(|| standard_keys(signing)),
        tokens: tokens.iter().map(|t| Secret::new(*t)).collect(),
        require_signature,
    }
}

fn github_headers(signature: &str) -> Vec<(&str, &str)> {
    vec![
        ("x-hub-signature-256", signature),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-github-event", "push"),
    ]
}

// --- GitHub -----------------------------------------------------------------

#[test]
fn github_accepts_the_example_from_its_documentation() {
    // docs.github.com, "Validating webhook deliveries": test values.
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let verified = github(&["It's a Secret to Everybody"])
        .verify_event(&headers(&github_headers(signature)), b"Hello, World!", NOW)
        .unwrap();
    assert_eq!(
        verified.event_uuid.as_str(),
        "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    );
    assert_eq!(verified.event_type.as_str(), "push");
}

#[test]
fn github_refuses_a_tampered_body() {
    let signature = sign::github("s3cret", b"{\"ref\":\"main\"}");
    let result = github(&["s3cret"]).verify_event(
        &headers(&github_headers(&signature)),
        b"{\"ref\":\"evil\"}",
        NOW,
    );
    assert_eq!(result, Err(VerifyError::InvalidSignature));
}

#[test]
fn github_refuses_the_wrong_secret() {
    let signature = sign::github("other", b"{}");
    let result =
        github(&["s3cret"]).verify_event(&headers(&github_headers(&signature)), b"{}", NOW);
    assert_eq!(result, Err(VerifyError::InvalidSignature));
}

#[test]
fn github_accepts_either_of_two_secrets_during_rotation() {
    let verifier = github(&["old-secret", "new-secret"]);
    for secret in ["old-secret", "new-secret"] {
        let signature = sign::github(secret, b"{}");
        assert!(
            verifier
                .verify_event(&headers(&github_headers(&signature)), b"{}", NOW)
                .is_ok()
        );
    }
}

#[test]
fn github_reports_missing_and_malformed_headers() {
    let verifier = github(&["s3cret"]);
    let signature = sign::github("s3cret", b"{}");
    let no_signature = headers(&[("x-github-delivery", "d"), ("x-github-event", "push")]);
    assert_eq!(
        verifier.verify_event(&no_signature, b"{}", NOW),
        Err(VerifyError::MissingHeader("x-hub-signature-256".into()))
    );
    for bad in ["sha1=abcd", "sha256=zz", "sha256=abcd", "757107ea"] {
        let err = verifier
            .verify_event(&headers(&github_headers(bad)), b"{}", NOW)
            .unwrap_err();
        assert_eq!(err.code(), "malformed_header", "{bad}");
    }
    let no_delivery = headers(&[
        ("x-hub-signature-256", &signature),
        ("x-github-event", "push"),
    ]);
    assert_eq!(
        verifier.verify_event(&no_delivery, b"{}", NOW),
        Err(VerifyError::MissingHeader("x-github-delivery".into()))
    );
    let no_event = headers(&[
        ("x-hub-signature-256", &signature),
        ("x-github-delivery", "d"),
    ]);
    assert_eq!(
        verifier.verify_event(&no_event, b"{}", NOW),
        Err(VerifyError::MissingHeader("x-github-event".into()))
    );
}

// --- Standard Webhooks ----------------------------------------------------------

const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn standard_accepts_the_reference_libraries_test_vector() {
    // The Standard Webhooks / Svix libraries' shared test vector.
    let body = br#"{"test": 2432232314}"#;
    let h = headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ]);
    let verified = standard(&[SPEC_SECRET])
        .verify_event(&h, body, 1614265330)
        .unwrap();
    assert_eq!(verified.event_uuid.as_str(), "msg_p5jXN8AQM9LWM0D4loKWxJek");
    assert_eq!(
        verified.event_type.as_str(),
        "unknown",
        "the body has no type field"
    );
}

fn standard_headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ])
}

#[test]
fn standard_reads_the_event_type_from_the_verified_body() {
    let body = br#"{"type":"invoice.paid","data":{}}"#;
    let sig = sign::standard(SPEC_SECRET, "msg_1", NOW, body);
    let verified = standard(&[SPEC_SECRET])
        .verify_event(
            &standard_headers("msg_1", &NOW.to_string(), &sig),
            body,
            NOW,
        )
        .unwrap();
    assert_eq!(verified.event_type.as_str(), "invoice.paid");
}

#[test]
fn standard_refuses_a_tampered_body_and_the_wrong_secret() {
    let sig = sign::standard(SPEC_SECRET, "msg_1", NOW, b"{}");
    let h = standard_headers("msg_1", &NOW.to_string(), &sig);
    assert_eq!(
        standard(&[SPEC_SECRET]).verify_event(&h, b"{ }", NOW),
        Err(VerifyError::InvalidSignature)
    );
    let other = sign::new_whsec();
    assert_eq!(
        standard(&[&other]).verify_event(&h, b"{}", NOW),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn standard_signatures_cover_the_id_and_timestamp() {
    let sig = sign::standard(SPEC_SECRET, "msg_1", NOW, b"{}");
    let other_id = standard_headers("msg_2", &NOW.to_string(), &sig);
    assert_eq!(
        standard(&[SPEC_SECRET]).verify_event(&other_id, b"{}", NOW),
        Err(VerifyError::InvalidSignature)
    );
    let other_ts = standard_headers("msg_1", &(NOW - 1).to_string(), &sig);
    assert_eq!(
        standard(&[SPEC_SECRET]).verify_event(&other_ts, b"{}", NOW),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn standard_accepts_either_of_two_secrets_during_rotation() {
    let old = sign::new_whsec();
    let new = sign::new_whsec();
    let verifier = standard(&[&old, &new]);
    for secret in [&old, &new] {
        let sig = sign::standard(secret, "msg_r", NOW, b"{}");
        assert!(
            verifier
                .verify_event(
                    &standard_headers("msg_r", &NOW.to_string(), &sig),
                    b"{}",
                    NOW
                )
                .is_ok()
        );
    }
}

#[test]
fn standard_accepts_a_header_with_several_signatures_when_any_matches() {
    let old = sign::new_whsec();
    let sig = sign::standard(SPEC_SECRET, "msg_m", NOW, b"{}");
    let stale = sign::standard(&old, "msg_m", NOW, b"{}");
    let list = format!("v1a,c29tZXRoaW5n {stale} {sig}");
    let verified = standard(&[SPEC_SECRET]).verify_event(
        &standard_headers("msg_m", &NOW.to_string(), &list),
        b"{}",
        NOW,
    );
    assert!(verified.is_ok());
}

#[test]
fn standard_ignores_unknown_versions_and_does_not_accept_them() {
    let sig = sign::standard(SPEC_SECRET, "msg_v", NOW, b"{}");
    let as_v2 = sig.replacen("v1,", "v2,", 1);
    let result = standard(&[SPEC_SECRET]).verify_event(
        &standard_headers("msg_v", &NOW.to_string(), &as_v2),
        b"{}",
        NOW,
    );
    assert_eq!(result, Err(VerifyError::UnsupportedSignatureVersion));
}

#[test]
fn standard_refuses_stale_and_future_timestamps_with_their_own_codes() {
    let verifier = standard(&[SPEC_SECRET]);
    let at = |ts: i64| {
        let sig = sign::standard(SPEC_SECRET, "msg_t", ts, b"{}");
        verifier.verify_event(
            &standard_headers("msg_t", &ts.to_string(), &sig),
            b"{}",
            NOW,
        )
    };
    assert!(
        at(NOW - 300).is_ok(),
        "exactly at the tolerance is accepted"
    );
    assert!(at(NOW + 300).is_ok());
    assert_eq!(
        at(NOW - 301),
        Err(VerifyError::StaleTimestamp { tolerance: 300 })
    );
    assert_eq!(
        at(NOW + 301),
        Err(VerifyError::FutureTimestamp { tolerance: 300 })
    );
    assert_eq!(at(NOW - 301).unwrap_err().code(), "stale_timestamp");
    assert_eq!(at(NOW + 301).unwrap_err().code(), "future_timestamp");
}

#[test]
fn standard_reports_missing_and_malformed_headers() {
    let verifier = standard(&[SPEC_SECRET]);
    let sig = sign::standard(SPEC_SECRET, "msg_h", NOW, b"{}");
    let ts = NOW.to_string();
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let pairs: Vec<(&str, &str)> = [
            ("webhook-id", "msg_h"),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", sig.as_str()),
        ]
        .into_iter()
        .filter(|(n, _)| *n != missing)
        .collect();
        assert_eq!(
            verifier.verify_event(&headers(&pairs), b"{}", NOW),
            Err(VerifyError::MissingHeader(missing.into()))
        );
    }
    let cases = [
        standard_headers("msg_h", "yesterday", &sig),
        standard_headers("msg_h", &ts, "nocommahere"),
        standard_headers("msg.h", &ts, &sig),
    ];
    for h in cases {
        assert_eq!(
            verifier.verify_event(&h, b"{}", NOW).unwrap_err().code(),
            "malformed_header"
        );
    }
}

#[test]
fn standard_accepts_the_svix_header_aliases() {
    let sig = sign::standard(SPEC_SECRET, "msg_s", NOW, b"{}");
    let ts = NOW.to_string();
    let h = headers(&[
        ("svix-id", "msg_s"),
        ("svix-timestamp", &ts),
        ("svix-signature", &sig),
    ]);
    assert!(
        standard(&[SPEC_SECRET])
            .verify_event(&h, b"{}", NOW)
            .is_ok()
    );
}

#[test]
fn standard_keys_refuse_secrets_that_are_not_base64_or_the_wrong_size() {
    assert!(StandardKeys::new(&[Secret::new("whsec_***")], 300).is_err());
    assert!(StandardKeys::new(&[Secret::new("whsec_c2hvcnQ=")], 300).is_err());
    let err = StandardKeys::new(&[Secret::new("whsec_***")], 300).unwrap_err();
    assert!(!err.contains("***"), "the secret is not echoed: {err}");
}

// --- GitLab ------------------------------------------------------------------------

/// What this checks: the configured token is accepted, a wrong one and a
/// truncated one are refused. That the comparison takes the same time
/// wherever the bytes differ is rave_service::crypto::constant_time_eq's
/// (HMAC both sides, ring's constant-time verify), not measured here.
#[test]
fn gitlab_accepts_a_configured_token_and_refuses_a_wrong_or_truncated_one() {
    let verifier = gitlab(&[], &["tok-1", "tok-2"], false);
    let h = |token: &str| {
        headers(&[
            ("x-gitlab-token", token),
            ("x-gitlab-event", "Push Hook"),
            ("idempotency-key", "0b0f1f4c-2a4e-4e0d-9f0a-1c2d3e4f5a6b"),
        ])
    };
    let verified = verifier.verify_event(&h("tok-2"), b"{}", NOW).unwrap();
    assert_eq!(verified.event_type.as_str(), "Push Hook");
    assert_eq!(
        verified.event_uuid.as_str(),
        "0b0f1f4c-2a4e-4e0d-9f0a-1c2d3e4f5a6b"
    );
    assert_eq!(
        verifier.verify_event(&h("tok-3"), b"{}", NOW),
        Err(VerifyError::InvalidToken)
    );
    assert_eq!(
        verifier.verify_event(&h("tok-"), b"{}", NOW),
        Err(VerifyError::InvalidToken)
    );
}

#[test]
fn gitlab_verifies_the_signing_token_when_a_signature_is_present() {
    let secret = sign::new_whsec();
    let verifier = gitlab(&[&secret], &["legacy"], false);
    let ts = NOW.to_string();
    let sig = sign::standard(&secret, "idem-1", NOW, b"{\"object_kind\":\"push\"}");
    let h = headers(&[
        ("webhook-id", "idem-1"),
        ("idempotency-key", "idem-1"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &sig),
        ("x-gitlab-event", "Push Hook"),
    ]);
    assert!(
        verifier
            .verify_event(&h, b"{\"object_kind\":\"push\"}", NOW)
            .is_ok()
    );
    assert_eq!(
        verifier.verify_event(&h, b"{\"object_kind\":\"tag_push\"}", NOW),
        Err(VerifyError::InvalidSignature),
        "a bad signature is not rescued by the legacy token path"
    );
}

#[test]
fn gitlab_can_require_signatures() {
    let verifier = gitlab(&[&sign::new_whsec()], &["legacy"], true);
    let h = headers(&[
        ("x-gitlab-token", "legacy"),
        ("x-gitlab-event", "Push Hook"),
        ("idempotency-key", "k"),
    ]);
    assert_eq!(
        verifier.verify_event(&h, b"{}", NOW),
        Err(VerifyError::SignatureRequired)
    );
}

#[test]
fn gitlab_falls_back_to_the_event_uuid_for_old_versions_and_needs_some_delivery_id() {
    let verifier = gitlab(&[], &["t"], false);
    let old = headers(&[
        ("x-gitlab-token", "t"),
        ("x-gitlab-event", "Push Hook"),
        ("x-gitlab-event-uuid", "uuid-1"),
    ]);
    assert_eq!(
        verifier
            .verify_event(&old, b"{}", NOW)
            .unwrap()
            .event_uuid
            .as_str(),
        "uuid-1"
    );
    let none = headers(&[("x-gitlab-token", "t"), ("x-gitlab-event", "Push Hook")]);
    assert_eq!(
        verifier.verify_event(&none, b"{}", NOW),
        Err(VerifyError::MissingHeader("idempotency-key".into()))
    );
    let no_token = headers(&[("x-gitlab-event", "Push Hook"), ("idempotency-key", "k")]);
    assert_eq!(
        verifier.verify_event(&no_token, b"{}", NOW),
        Err(VerifyError::MissingHeader("x-gitlab-token".into()))
    );
    let no_event = headers(&[("x-gitlab-token", "t"), ("idempotency-key", "k")]);
    assert_eq!(
        verifier.verify_event(&no_event, b"{}", NOW),
        Err(VerifyError::MissingHeader("x-gitlab-event".into()))
    );
}

// --- Properties ---------------------------------------------------------------------

fn flip(body: &[u8], index: usize, delta: u8) -> Vec<u8> {
    let mut changed = body.to_vec();
    let i = index % changed.len();
    changed[i] = changed[i].wrapping_add(delta);
    changed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_github_body_and_secret_verifies_and_no_single_byte_change_does(
        secret in "[ -~]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        index in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let verifier = github(&[&secret]);
        let signature = sign::github(&secret, &body);
        let h = headers(&github_headers(&signature));
        prop_assert!(verifier.verify_event(&h, &body, NOW).is_ok());
        prop_assert_eq!(verifier.verify_event(&h, &flip(&body, index, delta), NOW), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn any_standard_body_and_key_verifies_and_no_single_byte_change_does(
        key in proptest::collection::vec(any::<u8>(), 24..=64),
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        index in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let secret = format!("whsec_{}", BASE64.encode(&key));
        let verifier = standard(&[&secret]);
        let signature = sign::standard(&secret, "msg_prop", NOW, &body);
        let h = standard_headers("msg_prop", &NOW.to_string(), &signature);
        prop_assert!(verifier.verify_event(&h, &body, NOW).is_ok());
        prop_assert_eq!(verifier.verify_event(&h, &flip(&body, index, delta), NOW), Err(VerifyError::InvalidSignature));
    }
}
