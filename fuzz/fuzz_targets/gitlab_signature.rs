//! GitLab: `X-Gitlab-Token` comparison and, from GitLab 19, Standard
//! Webhooks signing. Never a panic; an accepted delivery has the token or
//! the true signature.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("common.rs");

fuzz_target!(|data: &[u8]| {
    thread_local!(static SOURCES: ingest::sources::Sources = sources());
    let (f, body) = fields(data, 6);
    let map = headers(&[
        ("x-gitlab-token", f[0]),
        ("x-gitlab-event", f[1]),
        ("idempotency-key", f[2]),
        ("webhook-signature", f[3]),
        ("webhook-id", f[4]),
        ("webhook-timestamp", f[5]),
    ]);
    SOURCES.with(|sources| {
        let verifier = &sources.get("gitlab").unwrap().verifier;
        if verifier.verify(&map, body, NOW).is_ok() {
            let token_ok = map
                .get("x-gitlab-token")
                .is_some_and(|t| t.as_bytes() == GITLAB_TOKEN.as_bytes());
            let signed = match (
                map.get("webhook-id"),
                map.get("webhook-timestamp"),
                map.get("webhook-signature"),
            ) {
                (Some(id), Some(ts), Some(sig)) => {
                    let ts: i64 = ts.to_str().unwrap().parse().unwrap_or(i64::MIN);
                    let expected = rave_service::sign::standard(
                        STANDARD_SECRET,
                        id.to_str().unwrap(),
                        ts,
                        body,
                    );
                    sig.to_str().unwrap().split(' ').any(|s| s == expected)
                }
                _ => false,
            };
            assert!(
                token_ok || signed,
                "accepted without the token or a true signature"
            );
        }
    });
});
