//! What protects ingest from traffic that is not a sender's: a bound on
//! body bytes in flight, and a cheap refusal for client addresses whose
//! deliveries keep failing verification.
//!
//! Only failures count against an address: a sender whose signatures verify
//! is never refused for its rate (GitHub does not redeliver a refused
//! delivery). An address past its failure budget is refused before its body
//! is read or its signature computed, until the budget refills.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use rave_service::limit::KeyedLimit;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::IngestError;
use crate::settings::Limits;

/// Addresses blocked at once at most; past it the longest-blocked are
/// dropped first (a flood from that many addresses is nginx's to cap).
const MAX_BLOCKED: usize = 100_000;

#[derive(Debug)]
pub struct Guard {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    wait: Duration,
    failures: Option<KeyedLimit<IpAddr>>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl Guard {
    pub fn new(limits: &Limits) -> Self {
        let max_in_flight = limits.max_in_flight_bytes;
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            wait: Duration::from_millis(limits.in_flight_wait_ms),
            failures: KeyedLimit::per_minute(
                limits.failed_verifications_per_minute,
                limits.failed_verifications_burst,
            ),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Room for a body of `bytes` (at most the body limit) among all
    /// requests in flight; waits up to `in_flight_wait_ms` for it, then
    /// refuses with 503. The permit holds the room until dropped.
    pub async fn admit(&self, bytes: usize) -> Result<OwnedSemaphorePermit, IngestError> {
        let wanted = bytes.min(self.max_in_flight).min(u32::MAX as usize) as u32;
        let acquire = self.in_flight.clone().acquire_many_owned(wanted);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(IngestError::Overloaded {
                limit: self.max_in_flight,
                retry_after_secs: 1,
            }),
        }
    }

    /// Body bytes in flight now.
    pub fn in_flight_bytes(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    /// Refuses an address still blocked for its failures.
    pub fn check(&self, client: IpAddr) -> Result<(), IngestError> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match blocked.get(&client) {
            Some(until) if *until > Instant::now() => Err(IngestError::TooManyFailures {
                retry_after_secs: rave_service::limit::retry_after_secs(
                    until.saturating_duration_since(Instant::now()),
                ),
            }),
            Some(_) => {
                blocked.remove(&client);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed verification from `client`, blocking it once its
    /// budget is spent.
    pub fn failed(&self, client: IpAddr) {
        let Some(failures) = &self.failures else {
            return;
        };
        if let Err(wait) = failures.check(&client) {
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if blocked.len() >= MAX_BLOCKED {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < MAX_BLOCKED {
                blocked.insert(client, now + wait.max(Duration::from_secs(1)));
            }
        }
    }

    /// Forgets what no longer matters (call it now and then).
    pub fn forget_idle(&self) {
        if let Some(failures) = &self.failures {
            failures.forget_idle();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

/// The sender's address: nginx's `X-Real-IP` when the request came through
/// it (a loopback peer), else the peer itself. A client cannot choose the
/// header's value: nginx sets it from the connection.
pub fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if peer.is_loopback()
        && let Some(real) = req
            .headers()
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return Some(mask(real));
    }
    Some(mask(peer))
}

/// IPv6 clients count by /64: one host holds a whole /64.
fn mask(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}
