//! GitHub: `X-Hub-Signature-256` parsing and HMAC verification. Never a
//! panic; an accepted delivery always carries the body's true signature.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("common.rs");

fuzz_target!(|data: &[u8]| {
    thread_local!(static SOURCES: ingest::sources::Sources = sources());
    let (f, body) = fields(data, 3);
    let map = headers(&[
        ("x-hub-signature-256", f[0]),
        ("x-github-delivery", f[1]),
        ("x-github-event", f[2]),
    ]);
    SOURCES.with(|sources| {
        let verifier = &sources.get("github").unwrap().verifier;
        if verifier.verify(&map, body, NOW).is_ok() {
            let expected = rave_service::sign::github(GITHUB_SECRET, body);
            let given = map.get("x-hub-signature-256").unwrap().to_str().unwrap();
            assert!(
                given.eq_ignore_ascii_case(&expected),
                "accepted a wrong signature"
            );
        }
    });
});
