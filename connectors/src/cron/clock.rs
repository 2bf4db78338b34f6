//! The clock a cron source reads and sleeps on. [`SystemClock`] is the wall clock; [`TokioClock`]
//! follows tokio's clock from a chosen start, so tests run schedules under
//! `tokio::time::pause()` deterministically and fast.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest single sleep: the wall clock is re-read at least this often, so a clock step (NTP,
/// suspend) delays a tick by at most this much.
const MAX_NAP: Duration = Duration::from_secs(30);

/// Wall-clock time for schedules.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Completes at or after `at`.
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// The system's wall clock, slept on with tokio timers (1 ms resolution).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        loop {
            let Ok(left) = (at - Utc::now()).to_std() else { return };
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(MAX_NAP)).await;
        }
    }
}

/// A clock that starts at a chosen wall-clock time and advances with tokio's clock: under
/// `tokio::time::pause()` a test controls it with `tokio::time::advance` (or auto-advance).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `wall` now.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self { wall, start: tokio::time::Instant::now() }
    }
}

#[async_trait::async_trait]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start.elapsed();
        self.wall + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        if let Ok(d) = (at - self.wall).to_std() {
            tokio::time::sleep_until(self.start + d).await;
        }
    }
}
