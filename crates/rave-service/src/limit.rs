//! Rate limits per key (an agent, a client address), on governor's GCRA.
//! Keys idle long enough to be back at full burst are forgotten by
//! [`KeyedLimit::forget_idle`], so a stream of new keys cannot grow the
//! state without bound.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// A rate and the burst allowed above it; `per_second = 0` turns it off.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub per_second: u32,
    pub burst: u32,
}

impl RateSettings {
    pub fn validate(&self, key: &str) -> Result<(), crate::settings::SettingsError> {
        if self.per_second > 0 && self.burst == 0 {
            return Err(crate::settings::SettingsError::invalid(
                format!("{key}.burst"),
                "must be at least 1 when per_second is set",
            ));
        }
        Ok(())
    }
}

pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedLimit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimit")
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `None` when the rate is 0 (no limit).
    pub fn new(rate: RateSettings) -> Option<Self> {
        let per_second = NonZeroU32::new(rate.per_second)?;
        let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
        Some(Self::with_quota(
            Quota::per_second(per_second).allow_burst(burst),
        ))
    }

    /// `count` events per minute, `burst` at once.
    pub fn per_minute(count: u32, burst: u32) -> Option<Self> {
        let count = NonZeroU32::new(count)?;
        let burst = NonZeroU32::new(burst).unwrap_or(count);
        Some(Self::with_quota(
            Quota::per_minute(count).allow_burst(burst),
        ))
    }

    fn with_quota(quota: Quota) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one event for `key`: `Err(wait)` when it has none left, with
    /// how long until it has.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets the keys back at full burst (call it now and then).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// Takes one event for `key` from `limit`, if there is one: `Err(secs)`,
/// the `Retry-After` to answer, when it has none left.
pub fn admit<K: Hash + Eq + Clone>(limit: Option<&KeyedLimit<K>>, key: &K) -> Result<(), u32> {
    match limit {
        Some(limit) => limit.check(key).map_err(retry_after_secs),
        None => Ok(()),
    }
}

/// Seconds for a `Retry-After` header: at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs_f64().ceil() as u64)
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_burst_waits_and_other_keys_do_not() {
        let limit = KeyedLimit::new(RateSettings {
            per_second: 1,
            burst: 3,
        })
        .unwrap();
        for _ in 0..3 {
            assert!(limit.check(&"a").is_ok());
        }
        let wait = limit.check(&"a").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        assert!(limit.check(&"b").is_ok(), "keys are limited apart");
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        assert!(
            KeyedLimit::<u32>::new(RateSettings {
                per_second: 0,
                burst: 0
            })
            .is_none()
        );
    }
}
