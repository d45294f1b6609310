//! When a step's tail happened: its slow requests grouped into bursts.
//!
//! A p99 says how slow the slowest requests were, not whether they came
//! evenly or in a few stalls. Slow requests due close together form one
//! burst; a stall of the stack shows as a burst of many requests, and
//! bursts at a regular interval point at a periodic job.

use serde::Serialize;

/// Slow requests due within this many seconds of the previous one belong
/// to its burst.
pub const GAP_SECS: f64 = 0.2;

/// Bursts a step reports at most, the largest first.
const KEPT: usize = 5;

/// Slow requests due close together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Burst {
    /// Seconds from the step's start at which its first and last slow
    /// requests were due.
    pub from_secs: f64,
    pub to_secs: f64,
    pub requests: usize,
    pub max_ms: f64,
}

/// What a step's slow requests looked like in time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tail {
    /// When the step started (UTC): second 0 of `per_second` and of each
    /// burst's times, to line them up with the components' logs.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
    /// Requests at or above the threshold.
    pub slow: usize,
    pub threshold_ms: f64,
    pub bursts: usize,
    /// The largest bursts, by requests, then by when.
    pub largest: Vec<Burst>,
    /// Slow requests due in each second of the step, from its start to its
    /// last slow request: even counts are queueing, a few large ones stalls.
    pub per_second: Vec<usize>,
}

/// The bursts of `slow` ((seconds due, latency µs), in any order); none
/// without a slow request.
pub fn of(
    slow: &[(f64, u64)],
    threshold_us: u64,
    started_at: time::OffsetDateTime,
) -> Option<Tail> {
    let mut per_second = Vec::new();
    for (at, _) in slow {
        let second = at.max(0.0) as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }
    let mut sorted = slow.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bursts: Vec<Burst> = Vec::new();
    for (at, us) in sorted {
        let ms = us as f64 / 1000.0;
        match bursts.last_mut() {
            Some(b) if at - b.to_secs <= GAP_SECS => {
                b.to_secs = at;
                b.requests += 1;
                b.max_ms = b.max_ms.max(ms);
            }
            _ => bursts.push(Burst {
                from_secs: at,
                to_secs: at,
                requests: 1,
                max_ms: ms,
            }),
        }
    }
    if bursts.is_empty() {
        return None;
    }
    let count = bursts.len();
    bursts.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then(a.from_secs.total_cmp(&b.from_secs))
    });
    bursts.truncate(KEPT);
    Some(Tail {
        started_at,
        slow: slow.len(),
        threshold_ms: threshold_us as f64 / 1000.0,
        bursts: count,
        largest: bursts,
        per_second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_requests_due_close_together_are_one_burst_and_the_largest_come_first() {
        let slow = [
            (10.05, 40_000),
            (3.0, 12_000),
            (10.0, 90_000),
            (10.2, 20_000),
            (17.0, 11_000),
            (17.1, 15_000),
        ];
        let tail = of(&slow, 10_000, time::OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(tail.slow, 6);
        assert_eq!(tail.bursts, 3);
        assert_eq!(
            tail.largest[0],
            Burst {
                from_secs: 10.0,
                to_secs: 10.2,
                requests: 3,
                max_ms: 90.0
            }
        );
        assert_eq!(tail.largest[1].requests, 2);
        assert_eq!(tail.largest[1].from_secs, 17.0);
        assert_eq!(tail.largest[2].from_secs, 3.0);
        let mut per_second = vec![0; 18];
        per_second[3] = 1;
        per_second[10] = 3;
        per_second[17] = 2;
        assert_eq!(tail.per_second, per_second);
    }

    #[test]
    fn a_step_without_slow_requests_has_no_tail() {
        assert_eq!(of(&[], 10_000, time::OffsetDateTime::UNIX_EPOCH), None);
    }
}
