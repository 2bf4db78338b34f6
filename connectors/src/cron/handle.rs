//! [`CronHandle`]: how the broker's API reaches a running cron source: its schedule and next fire
//! times, its status, and the pause / resume / fire-now commands (sent to the source's loop, which
//! persists the pause state in the store).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use switchyard_schemas::sources::cron::CronSourceConfig;
use tokio::sync::{mpsc, oneshot, watch};

use super::clock::Clock;
use super::schedule::Schedule;
use crate::StateError;

/// What a cron source reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CronStatus {
    /// Paused: ticks are neither fired nor caught up.
    pub paused: bool,
    /// The last scheduled tick this replica saw fired (from the store at start, then its own).
    pub last_fired: Option<DateTime<Utc>>,
    /// The next tick the loop is waiting for.
    pub next: Option<DateTime<Utc>>,
    /// Whether the source's loop is running.
    pub running: bool,
}

/// What "fire now" did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTick {
    /// The event id (distinct from every scheduled tick's id).
    pub id: String,
    /// The event time (the moment it was fired).
    pub time: DateTime<Utc>,
    /// `dispatched`, or `skipped` when `concurrency_policy: forbid` found an invocation running.
    pub outcome: &'static str,
}

/// Why a cron operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CronOpError {
    /// The source's loop is not running (stopped, failed, or the broker is shutting down).
    #[error("cron source {source_name} is not running")]
    NotRunning {
        /// The source.
        source_name: String,
    },
    /// The store failed.
    #[error("cron source {source_name}: {source}")]
    State {
        /// The source.
        source_name: String,
        /// The store's error.
        #[source]
        source: StateError,
    },
    /// The dispatcher no longer takes deliveries.
    #[error("cron source {source_name}: dispatcher closed")]
    DispatcherClosed {
        /// The source.
        source_name: String,
    },
}

/// A command for the running loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Pause (`true`) or resume (`false`).
    SetPaused(bool, oneshot::Sender<Result<CronStatus, CronOpError>>),
    /// Fire a tick now.
    FireNow(oneshot::Sender<Result<FiredTick, CronOpError>>),
}

/// A handle on one cron source; cheap to clone.
#[derive(Debug, Clone)]
pub struct CronHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CronSourceConfig,
    schedule: Option<Arc<Schedule>>,
    clock: Arc<dyn Clock>,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<CronStatus>,
}

impl CronHandle {
    pub(crate) fn new(
        config: CronSourceConfig,
        schedule: Option<Arc<Schedule>>,
        clock: Arc<dyn Clock>,
        commands: mpsc::Sender<Command>,
        status: watch::Receiver<CronStatus>,
    ) -> Self {
        Self { inner: Arc::new(Inner { config, schedule, clock, commands, status }) }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The source's configuration.
    pub fn config(&self) -> &CronSourceConfig {
        &self.inner.config
    }

    /// The next `n` fire times from now (whether or not the source is paused).
    pub fn next(&self, n: usize) -> Vec<DateTime<Utc>> {
        self.inner.schedule.as_ref().map(|s| s.upcoming(self.inner.clock.now(), n)).unwrap_or_default()
    }

    /// The source's current status.
    pub fn status(&self) -> CronStatus {
        let mut status = self.inner.status.borrow().clone();
        status.running = status.running && !self.inner.commands.is_closed();
        status
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CronOpError>>) -> Command,
    ) -> Result<T, CronOpError> {
        let not_running = || CronOpError::NotRunning { source_name: self.name().to_owned() };
        let (tx, rx) = oneshot::channel();
        self.inner.commands.send(make(tx)).await.map_err(|_| not_running())?;
        rx.await.map_err(|_| not_running())?
    }

    /// Pauses the schedule (persisted in the store, so it survives restarts and every replica
    /// sharing the store honours it).
    ///
    /// # Errors
    /// [`CronOpError`] when the source is not running or the store fails.
    pub async fn pause(&self) -> Result<CronStatus, CronOpError> {
        self.call(|tx| Command::SetPaused(true, tx)).await
    }

    /// Resumes the schedule from the next tick (ticks during the pause are not caught up).
    ///
    /// # Errors
    /// [`CronOpError`] when the source is not running or the store fails.
    pub async fn resume(&self) -> Result<CronStatus, CronOpError> {
        self.call(|tx| Command::SetPaused(false, tx)).await
    }

    /// Fires one tick now, with the current instant as its time and a distinct id. The
    /// concurrency policy applies; pausing does not stop it.
    ///
    /// # Errors
    /// [`CronOpError`] when the source is not running or the dispatcher is closed.
    pub async fn fire_now(&self) -> Result<FiredTick, CronOpError> {
        self.call(Command::FireNow).await
    }
}
