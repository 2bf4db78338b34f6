//! Retries with exponential backoff and full jitter, decided by the error's typed retryability
//! (never by its message). A Retry-After from the function replaces the computed delay.

use std::time::Duration;

use rand::Rng;
use switchyard_schemas::config::DeliveryPolicy;
use tower::retry::Policy;

use crate::runtime::{Invocation, InvokeError, Response};

/// Longest Retry-After honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The retry policy of one trigger, cloned per invocation.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    remaining: u32,
    done: u32,
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: bool,
}

impl RetryPolicy {
    /// From a trigger's delivery policy.
    pub fn new(p: &DeliveryPolicy) -> Self {
        Self {
            remaining: p.retries,
            done: 0,
            initial: p.backoff.initial,
            max: p.backoff.max,
            multiplier: p.backoff.multiplier,
            jitter: p.jitter,
        }
    }

    /// The backoff ceiling before retry `n` (1-based): `min(max, initial * multiplier^(n-1))`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before retry `n`: uniform in `[0, ceiling]` with jitter, the ceiling without.
    pub fn delay(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(n);
        if self.jitter && !ceiling.is_zero() {
            Duration::from_secs_f64(rng.random_range(0.0..=ceiling.as_secs_f64()))
        } else {
            ceiling
        }
    }
}

impl Policy<Invocation, Response, InvokeError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Invocation, result: &mut Result<Response, InvokeError>) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        if !err.is_retryable() || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.done += 1;
        let delay = match err.retry_after {
            Some(after) => after.min(MAX_RETRY_AFTER),
            None => self.delay(self.done, &mut rand::rng()),
        };
        tracing::debug!(retry = self.done, delay_ms = delay.as_millis() as u64, "retrying");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Invocation) -> Option<Invocation> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::config::Backoff;

    fn policy(retries: u32, jitter: bool) -> DeliveryPolicy {
        DeliveryPolicy {
            retries,
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 },
            jitter,
            attempt_timeout: None,
        }
    }

    #[test]
    fn ceiling_grows_exponentially_and_caps() {
        let p = RetryPolicy::new(&policy(10, false));
        let got: Vec<u128> = (1..=6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.ceiling(10_000), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_ceiling_and_varies() {
        let p = RetryPolicy::new(&policy(10, true));
        let mut rng = rand::rng();
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(200)));
    }
}
