//! Loopback ports for servers a test starts (PostgreSQL, Prometheus, a whole
//! `ravectl up`), taken from below the kernel's ephemeral range.
//!
//! Why not `bind(0)`: that port comes from the ephemeral range, and between
//! the pick and the server's own bind any outgoing connection of a parallel
//! test (Prometheus scrapes every second) can take it as its local port; the
//! server then exits with "address already in use". No outgoing connection
//! ever gets a port below the ephemeral range, and the counter keeps this
//! process's tests from picking the same port twice.
//!
//! This file has no dependencies so that ravectl's tests, which cannot depend
//! on this crate, include it with `#[path]`.

use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the ephemeral range are handed out.
const SPAN: u32 = 12_000;

/// A loopback port nothing listens on now (a test starts its server there).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let top = ephemeral_low();
    let bottom = top.saturating_sub(SPAN).max(1024);
    let span = top - bottom;
    // Each process starts elsewhere in the span, so two test binaries run
    // side by side rarely probe the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(bottom + offset).expect("ports below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {bottom}..{top}");
}

/// The ephemeral range's lower bound (Linux's default when unreadable).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|low| (1024 + 1000..=65_535).contains(low))
        .unwrap_or(32_768)
}
