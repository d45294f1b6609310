//! W3C Trace Context helpers.

/// A random, valid 32-hex-character trace id.
pub fn random_trace_id() -> String {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).expect("rng");
    id[0] |= 1; // never all zeros
    hex::encode(id)
}

/// A sampled `traceparent` header for `trace_id`.
pub fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-00f067aa0ba902b7-01")
}

/// A `traceparent` for `trace_id` that says "not sampled".
pub fn unsampled_traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-00f067aa0ba902b7-00")
}
