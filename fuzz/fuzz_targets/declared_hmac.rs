//! The declared HMAC form (`kind = "hmac"`): any TOML for `[sources.X.hmac]`
//! either compiles or is refused with a message that never holds the
//! secret; a compiled scheme never panics on any delivery, and one it
//! accepts stops verifying when any byte of its body changes.
//! Input: the TOML, then NUL-separated values of `x-sig`, `x-ts`, `x-id`,
//! `x-event`, then the body.
#![no_main]

use ingest::verify::declared::{HmacSettings, Scheme};
use libfuzzer_sys::fuzz_target;
use rave_service::settings::Secret;

include!("common.rs");

const SECRET: &str = "fuzz-declared-secret";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(config), Some(rest)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(config) = std::str::from_utf8(config) else {
        return;
    };
    let Ok(settings) = rave_service::toml::from_str::<HmacSettings>(config) else {
        return;
    };
    let secret = Secret::new(SECRET);
    let scheme = match Scheme::compile(&settings, &[&secret], 300, None) {
        Ok(scheme) => scheme,
        Err(message) => {
            assert!(!message.contains(SECRET), "{message}");
            return;
        }
    };
    let (values, body) = fields(rest, 4);
    let map = headers(&[
        ("x-sig", values[0]),
        ("x-ts", values[1]),
        ("x-id", values[2]),
        ("x-event", values[3]),
    ]);
    if scheme.verify(&map, body, NOW).is_ok() {
        // The body is always signed: with any one byte changed, the same
        // headers never verify.
        let mut changed = body.to_vec();
        if changed.is_empty() {
            changed.push(b' ');
        } else {
            let i = changed.len() / 2;
            changed[i] ^= 0x01;
        }
        assert!(
            scheme.verify(&map, &changed, NOW).is_err(),
            "verified a body that was not signed"
        );
    }
});
