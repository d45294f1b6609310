//! Standard Webhooks: `webhook-signature` lists (versions, base64, many
//! entries), `webhook-timestamp` and `webhook-id`. Never a panic; an accepted
//! message was signed with the secret and is inside the tolerance.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("common.rs");

fuzz_target!(|data: &[u8]| {
    thread_local!(static SOURCES: ingest::sources::Sources = sources());
    let (f, body) = fields(data, 3);
    let map = headers(&[
        ("webhook-signature", f[0]),
        ("webhook-id", f[1]),
        ("webhook-timestamp", f[2]),
    ]);
    SOURCES.with(|sources| {
        let verifier = &sources.get("billing").unwrap().verifier;
        if verifier.verify(&map, body, NOW).is_ok() {
            let id = map.get("webhook-id").unwrap().to_str().unwrap();
            let ts: i64 = map
                .get("webhook-timestamp")
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (ts - NOW).abs() <= 300,
                "accepted a timestamp outside the tolerance"
            );
            let expected = rave_service::sign::standard(STANDARD_SECRET, id, ts, body);
            let given = map.get("webhook-signature").unwrap().to_str().unwrap();
            assert!(
                given.split(' ').any(|s| s == expected),
                "accepted without the true signature"
            );
        }
    });
});
