//! Webhook signers, as the senders compute them: used by `ravectl send`,
//! the benchmarks and the tests. ingest's verifiers are written separately
//! and pinned to the protocols' published test vectors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn github(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Standard Webhooks `v1`: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
/// where the key is the base64 after `whsec_`.
///
/// # Panics
/// If `secret` is not base64 (with or without `whsec_`).
pub fn standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let raw = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .expect("a whsec_ secret is base64");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &raw);
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    format!(
        "v1,{}",
        STANDARD.encode(hmac::sign(&key, &content).as_ref())
    )
}

/// A fresh `whsec_` secret with a 32-byte key, as GitLab and Svix generate.
pub fn new_whsec() -> String {
    format!(
        "whsec_{}",
        STANDARD.encode(crate::crypto::random_bytes::<32>())
    )
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub mod providers;
