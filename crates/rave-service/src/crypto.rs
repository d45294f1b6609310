//! Constant-time comparison of secrets.
//!
//! `ring` deprecated its `constant_time` module, so equality is checked with
//! the double-HMAC construction: both sides are MACed under a per-process
//! random key and the tags compared by `ring::hmac::verify`, which is
//! constant-time. Timing then reveals nothing about either input, not even
//! its length.

use std::sync::OnceLock;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

fn comparison_key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .expect("the operating system's random number generator failed");
        hmac::Key::new(hmac::HMAC_SHA256, &raw)
    })
}

/// Returns whether `a == b`, taking time independent of their contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let key = comparison_key();
    let tag = hmac::sign(key, b);
    hmac::verify(key, a, tag.as_ref()).is_ok()
}

/// Fills a buffer of `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random number generator failed");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_slices_compare_equal() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn different_slices_compare_unequal() {
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret "));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
