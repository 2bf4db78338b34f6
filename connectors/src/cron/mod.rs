//! The cron source (`type: cron`): fires a `dev.switchyard.cron.tick` CloudEvent at each instant
//! of a cron schedule in an IANA timezone, exactly once across replicas sharing a store, with
//! explicit DST rules, catch-up after downtime and a Kubernetes-style concurrency policy.
//!
//! - [`schedule`]: wall-clock matching (croner) and the DST mapping to instants.
//! - [`binding`]: the tick as a CloudEvent (deterministic ids).
//! - [`source`]: the tick loop (claims, catch-up, concurrency policy).
//! - [`handle`]: list / pause / resume / fire-now from the broker's API.
//! - [`clock`]: the wall clock, or tokio's paused clock in tests.

pub mod binding;
pub mod clock;
pub mod handle;
pub mod schedule;
pub mod source;

pub use clock::{Clock, SystemClock, TokioClock};
pub use handle::{CronHandle, CronOpError, CronStatus, FiredTick};
pub use schedule::{Schedule, ScheduleError};
pub use source::CronSource;
