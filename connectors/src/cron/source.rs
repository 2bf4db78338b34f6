//! The cron source's tick loop: sleep until the next scheduled instant, claim it in the store
//! (exactly one replica wins each tick), apply the concurrency policy, dispatch the tick, record it
//! as the last fired tick. At start, and whenever the loop falls behind, missed ticks are handled by
//! the `catch_up` policy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use switchyard_schemas::sources::cron::{CatchUp, ConcurrencyPolicy, CronSourceConfig};
use switchyard_schemas::CloudEvent;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::binding::{manual_id, tick_event, tick_id};
use super::clock::{Clock, SystemClock};
use super::handle::{Command, CronHandle, CronOpError, CronStatus, FiredTick};
use super::schedule::{Schedule, ScheduleError};
use crate::{Delivery, Outcome, Source, SourceContext, SourceError, StateError};

/// The reason recorded on a tick skipped under `concurrency_policy: forbid`.
pub const SKIP_REASON: &str = "previous invocation still running";

/// State key: the last fired scheduled instant (RFC 3339, UTC).
pub const KEY_LAST_FIRED: &str = "last_fired";
/// State key: `true` while the schedule is paused.
pub const KEY_PAUSED: &str = "paused";

/// Commands queued from handles before the loop takes them.
const COMMANDS: usize = 16;
/// How long before its scheduled instant a tick is claimed, so the store's latency is not part
/// of the tick's lateness. A pause takes effect from the next tick not yet claimed.
const CLAIM_AHEAD: TimeDelta = TimeDelta::milliseconds(500);
/// Attempts to claim a tick when the store fails.
const CLAIM_ATTEMPTS: u32 = 3;
/// Cron sources reading their state from the store at start, at once. Thousands of schedules start
/// together; unbounded, every one of them holds a pending store query (a few KiB each) at the same
/// moment, and the allocator keeps that peak as resident memory long after (about 3 KiB per
/// schedule). A small gate makes the start a queue instead of a burst.
static STARTING: Semaphore = Semaphore::const_new(32);

/// The claim key of the tick scheduled at `at`.
pub fn claim_key(at: DateTime<Utc>) -> String {
    format!("tick:{}", rfc3339(at))
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A cron source: one schedule from the configuration.
pub struct CronSource {
    config: CronSourceConfig,
    schedule: Result<Arc<Schedule>, ScheduleError>,
    clock: Arc<dyn Clock>,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<CronStatus>,
    handle: CronHandle,
}

impl CronSource {
    /// A source on the system clock. The configuration is expected to be validated; an invalid
    /// schedule makes [`Source::run`] fail at once.
    pub fn new(config: CronSourceConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A source on `clock` (tests use [`super::TokioClock`]).
    pub fn with_clock(config: CronSourceConfig, clock: Arc<dyn Clock>) -> Self {
        let schedule = Schedule::new(&config.schedule, &config.timezone).map(Arc::new);
        let (tx, commands) = mpsc::channel(COMMANDS);
        let (status, status_rx) = watch::channel(CronStatus::default());
        let handle =
            CronHandle::new(config.clone(), schedule.as_ref().ok().cloned(), Arc::clone(&clock), tx, status_rx);
        Self { config, schedule, clock, commands, status, handle }
    }

    /// A handle for listing, pausing, resuming and firing this source while it runs.
    pub fn handle(&self) -> CronHandle {
        self.handle.clone()
    }
}

/// The ack of the last dispatched tick: resolved means its invocations finished.
struct InFlight {
    ack: Pin<Box<dyn Future<Output = Outcome> + Send>>,
    cancel: Option<CancellationToken>,
    done: bool,
}

impl InFlight {
    fn finished(&mut self) -> bool {
        if !self.done {
            self.done = self.ack.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready();
        }
        self.done
    }
}

/// What became of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    Dispatched,
    Skipped,
    LostClaim,
    Late,
    NotClaimed,
}

impl Fired {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Dispatched => "dispatched",
            Self::Skipped => "skipped",
            Self::LostClaim => "lost_claim",
            Self::Late => "late",
            Self::NotClaimed => "not_claimed",
        }
    }
}

struct Ticker {
    config: CronSourceConfig,
    schedule: Arc<Schedule>,
    clock: Arc<dyn Clock>,
    ctx: SourceContext,
    status: watch::Sender<CronStatus>,
    in_flight: Option<InFlight>,
    paused: bool,
}

enum Wake {
    Shutdown,
    Command(Option<Command>),
    Due,
}

#[async_trait::async_trait]
impl Source for CronSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let Self { config, schedule, clock, mut commands, status, handle } = *self;
        drop(handle);
        let schedule =
            schedule.map_err(|e| SourceError::Connection { source_name: ctx.name.clone(), message: e.to_string() })?;
        let mut t = Ticker { config, schedule, clock, ctx, status, in_flight: None, paused: false };
        let result = t.run(&mut commands).await;
        t.status.send_modify(|s| s.running = false);
        result
    }
}

impl Ticker {
    async fn run(&mut self, commands: &mut mpsc::Receiver<Command>) -> Result<(), SourceError> {
        self.start().await?;
        let mut cursor = self.clock.now();
        let mut commands_open = true;
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let next = self.schedule.next_after(cursor);
            self.status.send_modify(|s| s.next = next);
            let clock = Arc::clone(&self.clock);
            let wake = tokio::select! {
                biased;
                () = shutdown.cancelled() => Wake::Shutdown,
                cmd = commands.recv(), if commands_open => Wake::Command(cmd),
                () = async {
                    match next {
                        Some(at) => clock.sleep_until(at - CLAIM_AHEAD).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Due,
            };
            let at = match wake {
                Wake::Shutdown => return Ok(()),
                Wake::Command(None) => {
                    commands_open = false;
                    continue;
                }
                Wake::Command(Some(cmd)) => {
                    if self.command(cmd).await? {
                        cursor = cursor.max(self.clock.now());
                    }
                    continue;
                }
                Wake::Due => match next {
                    Some(at) => at,
                    None => continue,
                },
            };
            cursor = at;
            if self.read_paused().await {
                cursor = cursor.max(self.clock.now());
                continue;
            }
            self.fire_scheduled(at).await?;
            let now = self.clock.now();
            if self.schedule.any_between(cursor, now) {
                self.catch_up(cursor, now, "fell behind").await?;
                cursor = now;
            }
        }
    }

    /// Loads the pause state and the last fired tick, then catches up on ticks missed while no
    /// replica of this source ran.
    async fn start(&mut self) -> Result<(), SourceError> {
        let name = self.ctx.name.clone();
        let gate = tokio::select! {
            permit = STARTING.acquire() => permit.ok(), // never closed
            () = self.ctx.shutdown.cancelled() => return Ok(()), // the loop then stops at once
        };
        self.paused = self.read_paused().await;
        let last = match self.ctx.state.get(&name, KEY_LAST_FIRED).await {
            Ok(v) => v.and_then(|v| DateTime::parse_from_rfc3339(&v).ok()).map(|t| t.with_timezone(&Utc)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last fired tick; no catch-up");
                None
            }
        };
        drop(gate);
        let paused = self.paused;
        self.status.send_modify(|s| {
            s.paused = paused;
            s.last_fired = last;
            s.running = true;
        });
        tracing::info!(
            schedule = %self.config.schedule,
            timezone = %self.config.timezone,
            paused,
            last_fired = ?last,
            "cron source started"
        );
        if let (Some(last), false) = (last, self.paused) {
            let now = self.clock.now();
            self.catch_up(last, now, "downtime").await?;
        }
        Ok(())
    }

    /// Applies the catch-up policy to the ticks in `(after, until]`.
    async fn catch_up(&mut self, after: DateTime<Utc>, until: DateTime<Utc>, why: &str) -> Result<(), SourceError> {
        let floor = match self.config.starting_deadline.and_then(|d| TimeDelta::from_std(d).ok()) {
            Some(d) => after.max(until - d),
            None => after,
        };
        let dropped_by_deadline = floor > after && self.schedule.any_between(after, floor);
        let keep = match self.config.catch_up {
            CatchUp::None => 0,
            CatchUp::Latest => 1,
            CatchUp::All => self.config.max_catch_up as usize,
        };
        let (ticks, older) = self.schedule.last_between(floor, until, keep);
        if ticks.is_empty() && !older && !dropped_by_deadline {
            return Ok(());
        }
        tracing::info!(
            why,
            policy = ?self.config.catch_up,
            firing = ticks.len(),
            more_not_fired = older || dropped_by_deadline,
            missed_since = %rfc3339(after),
            "missed ticks"
        );
        for at in ticks {
            self.fire_scheduled(at).await?;
        }
        Ok(())
    }

    /// The pause state from the store (the source of truth shared by replicas); the last known
    /// value when the store fails.
    async fn read_paused(&mut self) -> bool {
        match self.ctx.state.get(&self.ctx.name, KEY_PAUSED).await {
            Ok(v) => {
                let paused = v.as_deref() == Some("true");
                if paused != self.paused {
                    self.paused = paused;
                    self.status.send_modify(|s| s.paused = paused);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the pause state; keeping the last known"),
        }
        self.paused
    }

    /// Handles a command; `true` when the schedule was resumed.
    async fn command(&mut self, cmd: Command) -> Result<bool, SourceError> {
        match cmd {
            Command::SetPaused(paused, reply) => {
                let r = self.set_paused(paused).await;
                let resumed = r.is_ok() && !paused;
                let _ = reply.send(r);
                Ok(resumed)
            }
            Command::FireNow(reply) => {
                let now = self.clock.now();
                let id = manual_id(&self.ctx.name, now);
                let event = tick_event(&self.config, self.schedule.timezone(), id.clone(), now);
                let fired = self.dispatch(event).await;
                let r = match &fired {
                    Ok(f) => Ok(FiredTick { id, time: now, outcome: f.as_str() }),
                    Err(_) => Err(CronOpError::DispatcherClosed { source_name: self.ctx.name.clone() }),
                };
                tracing::info!(outcome = ?r.as_ref().map(|f| f.outcome), "fired by hand");
                let _ = reply.send(r);
                fired.map(|_| false)
            }
        }
    }

    async fn set_paused(&mut self, paused: bool) -> Result<CronStatus, CronOpError> {
        let value = if paused { "true" } else { "false" };
        self.ctx
            .state
            .put(&self.ctx.name, KEY_PAUSED, value)
            .await
            .map_err(|source| CronOpError::State { source_name: self.ctx.name.clone(), source })?;
        self.paused = paused;
        self.status.send_modify(|s| s.paused = paused);
        tracing::info!(paused, "cron source {}", if paused { "paused" } else { "resumed" });
        Ok(self.status.borrow().clone())
    }

    /// Fires the tick scheduled at `at` if it is within the starting deadline and this replica
    /// wins its claim: claims it (up to [`CLAIM_AHEAD`] early), then dispatches it at `at`.
    async fn fire_scheduled(&mut self, at: DateTime<Utc>) -> Result<Fired, SourceError> {
        let now = self.clock.now();
        if let Some(deadline) = self.config.starting_deadline.and_then(|d| TimeDelta::from_std(d).ok()) {
            if now - at > deadline {
                tracing::warn!(tick = %rfc3339(at), late_ms = (now - at).num_milliseconds(), "tick past its starting deadline; not fired");
                return Ok(Fired::Late);
            }
        }
        match self.claim(at).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(tick = %rfc3339(at), "tick claimed by another replica");
                return Ok(Fired::LostClaim);
            }
            Err(e) => {
                tracing::warn!(tick = %rfc3339(at), error = %e, "cannot claim tick; not fired");
                return Ok(Fired::NotClaimed);
            }
        }
        // Claimed ahead of time: dispatch at the scheduled instant (at once for a missed tick).
        self.clock.sleep_until(at).await;
        let event = tick_event(&self.config, self.schedule.timezone(), tick_id(&self.ctx.name, at), at);
        let fired = self.dispatch(event).await?;
        tracing::debug!(tick = %rfc3339(at), outcome = fired.as_str(), "tick");
        if let Err(e) = self.ctx.state.put(&self.ctx.name, KEY_LAST_FIRED, &rfc3339(at)).await {
            tracing::warn!(tick = %rfc3339(at), error = %e, "cannot record the last fired tick");
        }
        self.status.send_modify(|s| s.last_fired = Some(at));
        Ok(fired)
    }

    async fn claim(&mut self, at: DateTime<Utc>) -> Result<bool, StateError> {
        let key = claim_key(at);
        let mut attempt = 1;
        loop {
            match self.ctx.state.claim(&self.ctx.name, &key).await {
                Ok(won) => return Ok(won),
                Err(e) if attempt >= CLAIM_ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "claim failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Hands the tick to the dispatcher under the concurrency policy.
    async fn dispatch(&mut self, event: CloudEvent) -> Result<Fired, SourceError> {
        let running = self.in_flight.as_mut().is_some_and(|f| !f.finished());
        let (delivery, in_flight, fired) = match self.config.concurrency_policy {
            ConcurrencyPolicy::Forbid if running => {
                let (d, _ack) = Delivery::skipped(event, SKIP_REASON);
                (d, None, Fired::Skipped)
            }
            ConcurrencyPolicy::Replace => {
                if running {
                    if let Some(cancel) = self.in_flight.as_ref().and_then(|f| f.cancel.as_ref()) {
                        tracing::debug!("cancelling the previous invocation (concurrency_policy: replace)");
                        cancel.cancel();
                    }
                }
                let token = CancellationToken::new();
                let (d, ack) = Delivery::new(event);
                let f = InFlight { ack: Box::pin(ack.outcome()), cancel: Some(token.clone()), done: false };
                (d.with_cancel(token), Some(f), Fired::Dispatched)
            }
            ConcurrencyPolicy::Allow | ConcurrencyPolicy::Forbid => {
                let (d, ack) = Delivery::new(event);
                (d, Some(InFlight { ack: Box::pin(ack.outcome()), cancel: None, done: false }), Fired::Dispatched)
            }
        };
        self.ctx
            .deliveries
            .send(delivery)
            .await
            .map_err(|_| SourceError::DispatcherClosed { source_name: self.ctx.name.clone() })?;
        if in_flight.is_some() {
            self.in_flight = in_flight;
        }
        Ok(fired)
    }
}
