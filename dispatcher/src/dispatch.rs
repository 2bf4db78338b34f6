//! The dispatcher: admission (bounded queue per function), fan-out to matched triggers, the
//! invocation task that writes PENDING then the terminal record, and graceful shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use opentelemetry::trace::SpanKind;
use serde::Serialize;
use switchyard_connectors::dead_letter::{dead_letter_event, DeadLetterInfo, DeadLetterPublisher};
use switchyard_connectors::{Delivery, Outcome};
use switchyard_schemas::config::{
    Config, DeadLetterSink, DeliveryPolicy, FunctionConfig, RecordsConfig, TriggerConfig,
};
use switchyard_schemas::record::Captured;
use switchyard_schemas::{CloudEvent, ErrorKind, EventRecord, ExtensionValue, Status};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use uuid::Uuid;

use crate::lanes::{LaneId, Lanes, Turn};
use crate::metrics::{self, Metrics};
use crate::records::{RecordStore, RecordWriter, WriteError};
use crate::router;
use crate::runtime::{self, DeployError, Invocation, InvokeError, Progress, Response, Runtime};
use crate::spans::Span;
use crate::stack::{self, FunctionService};

/// Why an event was not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DispatchError {
    /// The function's queue is full: try again after `retry_after`.
    #[error("function {function} is saturated (max_concurrency and queue full)")]
    Saturated {
        /// The function.
        function: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// No such function.
    #[error("no function named {0:?}")]
    UnknownFunction(String),
    /// The function exists but has no version that can run yet (first deployment running or failed).
    #[error("function {function:?} is not ready (state {state}){}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotReady {
        /// The function.
        function: String,
        /// Its state.
        state: FunctionState,
        /// Why its deployment failed, in state `Error`.
        error: Option<String>,
    },
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The record could not be made durable.
    #[error(transparent)]
    Record(#[from] WriteError),
    /// The record cannot be replayed.
    #[error("record {record}: {reason}")]
    NotReplayable {
        /// The record.
        record: Uuid,
        /// Why.
        reason: String,
    },
}

/// The outcome of a synchronous invocation.
#[derive(Debug)]
pub struct InvokeResult {
    /// The terminal record (durable).
    pub record: EventRecord,
    /// The function's response, or why it failed.
    pub response: Result<Response, InvokeError>,
}

/// Counters since start.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Events taken for routing.
    pub received: AtomicU64,
    /// Events no trigger matched.
    pub unmatched: AtomicU64,
    /// Events refused because a function was saturated.
    pub saturated: AtomicU64,
    /// Invocations dead-lettered (retries exhausted or permanent failure).
    pub dead_lettered: AtomicU64,
    /// Dead letters that could not be published to their sink (their records say so).
    pub dead_letter_sink_failures: AtomicU64,
    /// Invocations skipped as duplicates (idempotency).
    pub duplicates: AtomicU64,
    /// Invocations whose SUCCESS record is durable.
    pub succeeded: AtomicU64,
}

/// What a delivery asks of each trigger it matched, besides the event.
struct Part<'a> {
    /// Record SKIPPED with this reason instead of invoking.
    skip: Option<String>,
    /// The message could not be decoded: FAILURE (`decode`) with this error instead of invoking.
    undecodable: Option<String>,
    /// Cancels the running invocation.
    cancel: &'a CancellationToken,
    /// The S3 client of the source the event came from, for the trigger's object access.
    object_client: Option<&'a switchyard_connectors::s3::object::ObjectClient>,
    /// The delivery's place in the trigger's ordered lane, held until the invocation has returned.
    turn: Option<Turn>,
    /// The delivery's route span: the parent of the invocation's spans.
    span: &'a Span,
}

/// How one invocation is made: through which trigger, with which policy, and where it dead-letters.
struct RunSpec<'a> {
    trigger: &'a str,
    policy: &'a DeliveryPolicy,
    dead_letter: Option<&'a DeadLetterSink>,
    replay_of: Option<Uuid>,
    /// A place in an ordered lane: passed on as soon as the function has returned (retries
    /// included), before the record is durable, so the next invocation of the lane does not wait
    /// for a records batch.
    turn: Option<Turn>,
    /// The span the invocation's attempt and record-write spans are children of.
    parent: &'a Span,
}

impl<'a> RunSpec<'a> {
    fn of(trigger: &'a TriggerConfig, parent: &'a Span) -> Self {
        Self {
            trigger: &trigger.name,
            policy: &trigger.delivery,
            dead_letter: trigger.dead_letter.as_ref(),
            replay_of: None,
            turn: None,
            parent,
        }
    }
}

/// Where a function's latest deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FunctionState {
    /// First deployment in progress: nothing of it runs yet.
    Creating,
    /// A new configuration is being deployed; the previous one still serves.
    Deploying,
    /// The latest configuration is deployed and serves.
    Ready,
    /// The latest deployment failed (see `error`); a previous version, if any, still serves.
    Error,
}

impl std::fmt::Display for FunctionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Creating => "Creating",
            Self::Deploying => "Deploying",
            Self::Ready => "Ready",
            Self::Error => "Error",
        })
    }
}

/// A function as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionInfo {
    /// Its configuration: the latest one asked for (being deployed, or failed, when not `Ready`).
    #[serde(flatten)]
    pub config: FunctionConfig,
    /// `Creating`, `Deploying`, `Ready` or `Error`.
    pub state: FunctionState,
    /// Why the latest deployment failed (state `Error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a deployed version serves invocations (false while `Creating`, or in `Error` after a
    /// failed first deployment).
    pub serving: bool,
    /// Invocations admitted and not yet finished (running or queued).
    pub in_flight: usize,
    /// Live instances (process runtimes): idle and busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
}

struct FunctionEntry {
    config: FunctionConfig,
    runtime: Arc<dyn Runtime>,
    service: FunctionService,
    admission: Arc<Semaphore>,
    /// Attempts running in the runtime now.
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// The function's own series of the metrics every invocation touches, looked up once.
    meters: metrics::FunctionMeters,
}

impl FunctionEntry {
    fn capacity(&self) -> usize {
        self.config.max_concurrency + self.config.queue_size
    }
}

#[derive(Default)]
struct Registry {
    /// The versions that serve.
    functions: BTreeMap<String, Arc<FunctionEntry>>,
    /// Deployments not (yet) serving: in progress, or failed. Absent when the serving version is the
    /// latest one asked for.
    pending: BTreeMap<String, Pending>,
    /// Tells deployments of one name apart, so an older one finishing late never wins.
    deployments: u64,
    triggers: Vec<Arc<TriggerConfig>>,
}

struct Pending {
    config: FunctionConfig,
    state: FunctionState,
    error: Option<String>,
    deployment: u64,
}

struct Inner {
    registry: RwLock<Registry>,
    writer: RecordWriter,
    store: RecordStore,
    http: reqwest::Client,
    records: RecordsConfig,
    dead_letters: DeadLetterPublisher,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    abandon: CancellationToken,
    /// Stops background work (retention) at shutdown.
    background: CancellationToken,
    closing: AtomicBool,
    stats: Stats,
    /// Per-trigger ordering of deliveries from ordered sources.
    lanes: Arc<Lanes>,
    /// The triggers' object access (`triggers[].object`) and their S3 clients.
    objects: crate::object::ObjectAccess,
}

/// The dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

type Matched = Vec<(Arc<TriggerConfig>, Arc<FunctionEntry>)>;

impl Dispatcher {
    /// Deploys every function of `config` and starts the records writer on `store`.
    ///
    /// # Errors
    /// [`DeployError`] for the first function that cannot run.
    pub async fn start(config: &Config, store: RecordStore) -> Result<Self, DeployError> {
        let http = runtime::http::client()
            .map_err(|e| DeployError { function: "(http client)".to_owned(), message: e.to_string() })?;
        let metrics = Arc::new(Metrics::new());
        let (writer, _task) = RecordWriter::spawn(store.clone(), Arc::clone(&metrics));
        let mut registry = Registry::default();
        for f in &config.functions {
            registry.functions.insert(f.name.clone(), Arc::new(deploy(f, &http, &metrics).await?));
        }
        registry.triggers = config.triggers.iter().cloned().map(Arc::new).collect();
        let background = CancellationToken::new();
        if let Some(age) = config.records.retention {
            crate::records::retention::spawn(store.clone(), age, background.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                registry: RwLock::new(registry),
                writer,
                store,
                dead_letters: DeadLetterPublisher::new(http.clone()),
                metrics,
                http,
                records: config.records.clone(),
                tracker: TaskTracker::new(),
                abandon: CancellationToken::new(),
                background,
                closing: AtomicBool::new(false),
                stats: Stats::default(),
                lanes: Arc::default(),
                objects: crate::object::ObjectAccess::default(),
            }),
        })
    }

    /// The records store.
    pub fn store(&self) -> &RecordStore {
        &self.inner.store
    }

    /// The Prometheus metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The metrics in the OpenMetrics text format, with the per-function gauges read now.
    pub fn encode_metrics(&self) -> String {
        let m = &self.inner.metrics;
        {
            let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            for f in reg.functions.values() {
                let label = metrics::function(&f.config.name);
                let admitted = f.capacity() - f.admission.available_permits();
                let running = f.running.load(Ordering::Relaxed);
                m.in_flight.get_or_create(&label).set(i64::try_from(running).unwrap_or(i64::MAX));
                m.queued.get_or_create(&label).set(i64::try_from(admitted.saturating_sub(running)).unwrap_or(i64::MAX));
            }
        }
        m.encode()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Whether shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    fn route(&self, event: &CloudEvent) -> Matched {
        let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.triggers
            .iter()
            .filter(|t| router::matches_all(&t.filters, event))
            .filter_map(|t| reg.functions.get(&t.function).map(|f| (Arc::clone(t), Arc::clone(f))))
            .collect()
    }

    /// Takes a delivery if every function it goes to has room, else refuses it at once (the HTTP
    /// ingress answers 429). An event no trigger matches is counted and its ack resolved `Unmatched`.
    ///
    /// # Errors
    /// [`DispatchError::Saturated`] naming the full function, or `ShuttingDown`.
    pub fn try_dispatch(&self, delivery: Delivery) -> Result<(), DispatchError> {
        self.try_dispatch_traced(delivery, Span::none())
    }

    /// [`Dispatcher::try_dispatch`], with the message's receive span: the parent of the delivery's
    /// route span (see `crate::spans`).
    ///
    /// # Errors
    /// As [`Dispatcher::try_dispatch`].
    pub fn try_dispatch_traced(&self, delivery: Delivery, receive: Span) -> Result<(), DispatchError> {
        if self.is_closing() {
            return Err(DispatchError::ShuttingDown);
        }
        let matched = self.route(&delivery.event);
        let mut permits = Vec::with_capacity(matched.len());
        for (_, f) in &matched {
            match Arc::clone(&f.admission).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => {
                    self.inner.stats.saturated.fetch_add(1, Ordering::Relaxed);
                    return Err(DispatchError::Saturated {
                        function: f.config.name.clone(),
                        retry_after: Duration::from_secs(1),
                    });
                }
            }
        }
        self.spawn_delivery(delivery, matched, permits, &receive);
        Ok(())
    }

    /// Takes a delivery, waiting for room in each function's queue (backpressure for sources).
    ///
    /// # Errors
    /// `ShuttingDown`.
    pub async fn dispatch(&self, delivery: Delivery) -> Result<(), DispatchError> {
        self.dispatch_traced(delivery, Span::none()).await
    }

    /// [`Dispatcher::dispatch`], with the message's receive span: the parent of the delivery's route
    /// span (see `crate::spans`).
    ///
    /// # Errors
    /// `ShuttingDown`.
    pub async fn dispatch_traced(&self, delivery: Delivery, receive: Span) -> Result<(), DispatchError> {
        if self.is_closing() {
            return Err(DispatchError::ShuttingDown);
        }
        let matched = self.route(&delivery.event);
        let mut permits = Vec::with_capacity(matched.len());
        for (_, f) in &matched {
            let permit = tokio::select! {
                p = Arc::clone(&f.admission).acquire_owned() => p.map_err(|_| DispatchError::ShuttingDown)?,
                () = self.inner.abandon.cancelled() => return Err(DispatchError::ShuttingDown),
            };
            permits.push(permit);
        }
        self.spawn_delivery(delivery, matched, permits, &receive);
        Ok(())
    }

    fn spawn_delivery(
        &self,
        mut delivery: Delivery,
        matched: Matched,
        permits: Vec<OwnedSemaphorePermit>,
        receive: &Span,
    ) {
        self.inner.stats.received.fetch_add(1, Ordering::Relaxed);
        if matched.is_empty() {
            self.inner.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            self.inner.metrics.events_unmatched.inc();
            tracing::debug!(event_id = %delivery.event.id, event_type = %delivery.event.ty, "no trigger matched");
            delivery.ack.resolve(Outcome::Unmatched);
            return;
        }
        self.inner.metrics.events_routed.inc();
        let this = self.clone();
        let mut span = match receive.context() {
            Some(_) => receive.child("route", SpanKind::Internal),
            None => root_for("route", &delivery.event),
        };
        span.fill(|f| {
            f.attr("event_type", delivery.event.ty.as_str())
                .attr("triggers", i64::try_from(matched.len()).unwrap_or(i64::MAX));
        });
        // Places in the triggers' ordered lanes are taken now, in the order deliveries arrive.
        let turns: Vec<Option<Turn>> = match &delivery.order {
            Some(order) => matched
                .iter()
                .map(|(trigger, _)| LaneId::of(trigger, order).map(|lane| self.inner.lanes.enter(lane)))
                .collect(),
            None => matched.iter().map(|_| None).collect(),
        };
        self.inner.tracker.spawn(async move {
            let event = Arc::new(delivery.event);
            let received_at = Utc::now();
            let skip = delivery.skip.clone();
            let undecodable = delivery.undecodable.clone();
            let cancel = delivery.cancel.clone().unwrap_or_default();
            let withdraw = delivery.withdraw.clone().unwrap_or_default();
            let object_client = delivery.object_client.clone();
            // Borrowed by every run: `join_all` finishes them before the span is dropped below.
            let route = &span;
            let runs = matched.into_iter().zip(permits).zip(turns).map(|(((trigger, function), permit), turn)| {
                let this = this.clone();
                let event = Arc::clone(&event);
                let skip = skip.clone();
                let undecodable = undecodable.clone();
                let cancel = cancel.clone();
                let withdraw = withdraw.clone();
                let object_client = object_client.clone();
                async move {
                    let mut turn = turn;
                    // Not started yet: withdrawn (its partition was revoked), or shut down while
                    // waiting for its turn: no record, and the message is redelivered.
                    let started = match turn.as_mut() {
                        Some(turn) => tokio::select! {
                            biased;
                            () = withdraw.cancelled() => false,
                            () = this.inner.abandon.cancelled() => false,
                            () = turn.ready() => true,
                        },
                        None => !withdraw.is_cancelled(),
                    };
                    if !started {
                        return Err(DispatchError::ShuttingDown);
                    }
                    let part = Part {
                        skip,
                        undecodable,
                        cancel: &cancel,
                        object_client: object_client.as_ref(),
                        turn,
                        span: route,
                    };
                    let r = this.deliver_one(&trigger, &function, event, received_at, part).await;
                    drop(permit);
                    r
                }
            });
            let results = futures::future::join_all(runs).await;
            let invocations = results.len();
            let mut failed = 0;
            let mut abandoned = false;
            for r in &results {
                match r {
                    Ok(res) if res.record.status == Status::Failure => {
                        failed += 1;
                        abandoned |= res.record.error_kind == Some(ErrorKind::Shutdown);
                    }
                    Ok(_) => {}
                    Err(_) => abandoned = true,
                }
            }
            delivery.ack.resolve(if abandoned {
                Outcome::Abandoned
            } else {
                Outcome::Completed { invocations, failed }
            });
            drop(span); // the route is done: every invocation is terminal and recorded
        });
    }

    /// One matched trigger's part of a delivery: SKIPPED or `decode` FAILURE without an invocation,
    /// or the invocation (with the trigger's object access applied); returns once its terminal
    /// record is durable.
    async fn deliver_one(
        &self,
        trigger: &TriggerConfig,
        function: &FunctionEntry,
        event: Arc<CloudEvent>,
        received_at: chrono::DateTime<Utc>,
        part: Part<'_>,
    ) -> Result<InvokeResult, DispatchError> {
        let Part { skip, undecodable, cancel, object_client, turn, span } = part;
        // Boxed, like every rarely taken path holding a large future (store lookups, S3 calls,
        // dead-letter publishes): inline, they would make every invocation's future as large as the
        // largest of them (12 KB), allocated and moved once per event.
        let skip = match (&undecodable, skip) {
            (_, Some(reason)) => Some(reason),
            (None, None) if trigger.idempotency_window.is_some() => Box::pin(self.duplicate_of(trigger, &event)).await,
            _ => None,
        };
        match (undecodable, skip) {
            (Some(error), _) => {
                Box::pin(self.not_invoked(function, trigger, event, received_at, span, NotRun::Undecodable(error)))
                    .await
            }
            (None, Some(reason)) => {
                Box::pin(self.not_invoked(function, trigger, event, received_at, span, NotRun::Skipped(reason))).await
            }
            (None, None) => {
                let event = if trigger.object.is_some() {
                    Box::pin(self.inner.objects.apply(trigger, object_client, event)).await
                } else {
                    event
                };
                self.run(function, RunSpec { turn, ..RunSpec::of(trigger, span) }, event, received_at, cancel).await
            }
        }
    }

    /// Invokes a function directly (no trigger, no retries) and waits for its terminal record.
    ///
    /// # Errors
    /// `UnknownFunction`, `Saturated`, `ShuttingDown`, or `Record` when the record could not be written.
    pub async fn invoke(&self, function: &str, event: CloudEvent) -> Result<InvokeResult, DispatchError> {
        if self.is_closing() {
            return Err(DispatchError::ShuttingDown);
        }
        let entry = {
            let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            match (reg.functions.get(function), reg.pending.get(function)) {
                (Some(f), _) => Arc::clone(f),
                (None, Some(p)) => {
                    return Err(DispatchError::NotReady {
                        function: function.to_owned(),
                        state: p.state,
                        error: p.error.clone(),
                    })
                }
                (None, None) => return Err(DispatchError::UnknownFunction(function.to_owned())),
            }
        };
        let permit = Arc::clone(&entry.admission).try_acquire_owned().map_err(|_| {
            self.inner.stats.saturated.fetch_add(1, Ordering::Relaxed);
            DispatchError::Saturated { function: function.to_owned(), retry_after: Duration::from_secs(1) }
        })?;
        self.inner.stats.received.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let policy = DeliveryPolicy { retries: 0, ..DeliveryPolicy::default() };
        let mut span = root_for("invoke", &event);
        span.fill(|f| {
            f.attr("function", function).attr("event_id", event.id.as_str());
        });
        // Run on the tracker so a client that hangs up does not cancel the invocation mid-way.
        let handle = self.inner.tracker.spawn(async move {
            let spec = RunSpec {
                trigger: "invoke",
                policy: &policy,
                dead_letter: None,
                replay_of: None,
                turn: None,
                parent: &span,
            };
            let r = this.run(&entry, spec, Arc::new(event), Utc::now(), &CancellationToken::new()).await;
            drop(permit);
            r
        });
        handle.await.map_err(|_| DispatchError::ShuttingDown)?
    }

    /// Replays a recorded event: invokes the record's function again through the record's trigger
    /// (its delivery policy and dead-letter sink, when the trigger still exists), waiting for room in
    /// the function's queue, and returns the new terminal record (linked by `replay_of`).
    ///
    /// # Errors
    /// `NotReplayable` (event not kept, function gone), `ShuttingDown`, or `Record`.
    pub async fn replay(&self, original: &EventRecord) -> Result<InvokeResult, DispatchError> {
        let not = |reason: String| DispatchError::NotReplayable { record: original.id, reason };
        if self.is_closing() {
            return Err(DispatchError::ShuttingDown);
        }
        let json = original.replayable_event().ok_or_else(|| {
            not(format!(
                "the event ({} bytes) was over records.replay_bytes when it was recorded, so it was not kept",
                original.request.size
            ))
        })?;
        let event = CloudEvent::from_json_slice(json.as_bytes()).map_err(|e| not(format!("stored event: {e}")))?;
        let (entry, trigger) = {
            let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = reg.functions.get(&original.function).cloned();
            let trigger =
                reg.triggers.iter().find(|t| t.name == original.trigger && t.function == original.function).cloned();
            (entry, trigger)
        };
        let entry = entry.ok_or_else(|| not(format!("function {:?} no longer exists", original.function)))?;
        let permit = tokio::select! {
            p = Arc::clone(&entry.admission).acquire_owned() => p.map_err(|_| DispatchError::ShuttingDown)?,
            () = self.inner.abandon.cancelled() => return Err(DispatchError::ShuttingDown),
        };
        self.inner.stats.received.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let original_id = original.id;
        let original_trigger = original.trigger.clone();
        let mut span = root_for("replay", &event);
        span.fill(|f| {
            let mut id = Uuid::encode_buffer();
            f.attr("record", &*original_id.hyphenated().encode_lower(&mut id)).attr("function", &entry.config.name);
        });
        let handle = self.inner.tracker.spawn(async move {
            let direct = DeliveryPolicy { retries: 0, ..DeliveryPolicy::default() };
            let spec = match &trigger {
                Some(t) => RunSpec { replay_of: Some(original_id), ..RunSpec::of(t, &span) },
                None => RunSpec {
                    trigger: &original_trigger,
                    policy: &direct,
                    dead_letter: None,
                    replay_of: Some(original_id),
                    turn: None,
                    parent: &span,
                },
            };
            let r = this.run(&entry, spec, Arc::new(event), Utc::now(), &CancellationToken::new()).await;
            drop(permit);
            r
        });
        handle.await.map_err(|_| DispatchError::ShuttingDown)?
    }

    /// When the trigger is idempotent and the event already succeeded through it within the window,
    /// the reason to skip it. A store error is logged and the event runs (at least once, not at most).
    async fn duplicate_of(&self, trigger: &TriggerConfig, event: &CloudEvent) -> Option<String> {
        let window = trigger.idempotency_window?;
        let since = Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        match self.inner.store.find_success(&event.source, &event.id, &trigger.name, since).await {
            Ok(Some(id)) => {
                self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                Some(format!(
                    "duplicate: event {:?} from {:?} already succeeded (record {id}) within idempotency_window",
                    event.id, event.source
                ))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(trigger = %trigger.name, error = %e, "idempotency lookup failed; invoking anyway");
                None
            }
        }
    }

    /// One invocation: PENDING record, the stack, the dead-letter sink on failure, the terminal record
    /// (awaited until durable).
    async fn run(
        &self,
        function: &FunctionEntry,
        spec: RunSpec<'_>,
        event: Arc<CloudEvent>,
        received_at: chrono::DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<InvokeResult, DispatchError> {
        let RunSpec { trigger, policy, dead_letter, replay_of, turn, parent } = spec;
        let mut record = self.new_record(function, trigger, &event, received_at, parent);
        record.replay_of = replay_of;
        // The PENDING row is written only for an invocation still running after `pending_after`
        // (at once when that is zero): a quick invocation costs one row, its terminal one.
        let pending_after = self.inner.records.pending_after;
        let mut pending_written = pending_after.is_zero();
        if pending_written {
            self.inner.writer.queue(record.clone()).await?;
        }
        let trace_id = record.trace_id.clone().unwrap_or_default();
        let caps = &self.inner.records;
        let progress = Arc::new(Progress::default());
        let invocation = Invocation {
            event: Arc::clone(&event),
            function: Arc::from(function.config.name.as_str()),
            trigger: Arc::from(trigger),
            record_id: record.id,
            attempt: 0,
            attempt_timeout: policy.attempt_timeout.unwrap_or(function.config.timeout),
            deadline: None,
            traceparent: format!("00-{trace_id}-{:016x}-01", rand::random::<u64>() | 1),
            progress: Arc::clone(&progress),
            parent: parent.parent(),
        };
        let svc = stack::with_retry(function.service.clone(), policy);
        let call = svc.oneshot(invocation);
        let still_running = tokio::time::sleep(pending_after);
        tokio::pin!(call, still_running);
        let response = loop {
            tokio::select! {
                r = &mut call => break r,
                () = &mut still_running, if !pending_written => {
                    pending_written = true;
                    // Only the writer's shutdown refuses it; the terminal record then says so.
                    if let Err(e) = self.inner.writer.queue(record.clone()).await {
                        tracing::debug!(record = %record.id, error = %e, "PENDING row not queued");
                    }
                }
                () = self.inner.abandon.cancelled() => break Err(InvokeError::shutdown()),
                () = cancel.cancelled() => break Err(InvokeError::cancelled()),
            }
        };
        drop(turn); // the lane's next invocation may start: this one has returned
        let finished = Utc::now();
        record.attempts = progress.attempts();
        record.started_at = progress.started();
        if let Some(init) = progress.cold_start() {
            record.cold_start = true;
            record.init_ms = i64::try_from(init.as_millis()).ok();
        }
        record.finished_at = Some(finished);
        record.duration_ms = Some((finished - received_at).num_milliseconds());
        match &response {
            Ok(r) => {
                record.status = Status::Success;
                record.response_status = Some(r.status);
                record.response = Some(Captured::new(&r.body, caps.capture_bytes));
                record.logs = non_empty(&r.logs, caps.log_bytes);
            }
            Err(e) => {
                record.status = Status::Failure;
                record.error_kind = Some(e.kind);
                record.error_message = Some(e.message.clone());
                record.response_status = e.status;
                record.response = e.body.as_ref().map(|b| Captured::new(b, caps.capture_bytes));
                record.logs = non_empty(&e.logs, caps.log_bytes);
                record.dead_lettered = !matches!(e.kind, ErrorKind::Shutdown | ErrorKind::Cancelled);
                tracing::debug!(function = %record.function, kind = %e.kind, attempts = record.attempts, "invocation failed");
            }
        }
        self.observe(function, &record);
        if record.dead_lettered {
            self.inner.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            if let Some(sink) = dead_letter {
                Box::pin(self.send_dead_letter(sink, &event, &mut record)).await;
            }
        }
        let mut span = parent.child("record", SpanKind::Internal);
        span.fill(|f| {
            let mut id = Uuid::encode_buffer();
            f.name(&["record write"])
                .attr("record_id", &*record.id.hyphenated().encode_lower(&mut id))
                .attr("status", record.status.as_str());
        });
        let written = self.inner.writer.write(record).await;
        drop(span); // the record is durable (or could not be made so)
        let record = written?;
        if record.status == Status::Success {
            self.inner.stats.succeeded.fetch_add(1, Ordering::Relaxed);
        }
        Ok(InvokeResult { record, response })
    }

    /// Publishes a dead letter; when the sink fails, the record says so (the event stays replayable
    /// from the record).
    async fn send_dead_letter(&self, sink: &DeadLetterSink, event: &CloudEvent, record: &mut EventRecord) {
        let why = DeadLetterInfo {
            error_kind: record.error_kind.map_or("unknown", ErrorKind::as_str),
            error: record.error_message.as_deref().unwrap_or(""),
            attempts: record.attempts,
            trigger: &record.trigger,
            function: &record.function,
            record_id: record.id.to_string(),
        };
        let letter = dead_letter_event(event, &why);
        if let Err(e) = self.inner.dead_letters.publish(sink, &letter).await {
            self.inner.stats.dead_letter_sink_failures.fetch_add(1, Ordering::Relaxed);
            self.inner.metrics.dead_letter_sink_failures.get_or_create(&metrics::function(&record.function)).inc();
            tracing::error!(record = %record.id, error = %e, "dead letter not published; it stays in the records");
            let msg = record.error_message.get_or_insert_with(String::new);
            msg.push_str(&format!("\n[{e}]"));
        }
    }

    /// Counts a terminal invocation in the metrics.
    fn observe(&self, function: &FunctionEntry, record: &EventRecord) {
        let m = &self.inner.metrics;
        let label = || metrics::function(&record.function);
        if record.status == Status::Success {
            function.meters.succeeded.inc();
        } else {
            m.invocations
                .get_or_create(&metrics::StatusLabel {
                    function: record.function.clone(),
                    status: record.status.as_str().to_owned(),
                })
                .inc();
        }
        if let Some(ms) = record.duration_ms {
            function.meters.duration.observe(ms.max(0) as f64 / 1000.0);
        }
        if record.attempts > 1 {
            m.retries.get_or_create(&label()).inc_by(u64::from(record.attempts - 1));
        }
        if record.cold_start {
            m.cold_starts.get_or_create(&label()).inc();
        }
        if record.dead_lettered {
            m.dead_letters.get_or_create(&label()).inc();
        }
    }

    fn new_record(
        &self,
        function: &FunctionEntry,
        trigger: &str,
        event: &CloudEvent,
        received_at: chrono::DateTime<Utc>,
        span: &Span,
    ) -> EventRecord {
        let json = event.to_json_vec();
        let request = Captured::new(&json, self.inner.records.capture_bytes);
        // Kept whole for replay when the capture cut it (and it is under replay_bytes).
        let whole = (request.truncated && json.len() <= self.inner.records.replay_bytes)
            .then(|| String::from_utf8(json).ok())
            .flatten();
        EventRecord {
            id: Uuid::now_v7(),
            event_id: event.id.clone(),
            event_source: event.source.clone(),
            event_type: event.ty.clone(),
            event_subject: event.subject.clone(),
            trigger: trigger.to_owned(),
            function: function.config.name.clone(),
            status: Status::Pending,
            attempts: 0,
            received_at,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            request,
            response_status: None,
            response: None,
            error_kind: None,
            error_message: None,
            dead_lettered: false,
            trace_id: Some(trace_id_of(event, span)),
            logs: None,
            cold_start: false,
            init_ms: None,
            replay_of: None,
            event: whole,
        }
    }

    /// An invocation that does not run ([`NotRun`]), with one terminal record durable before
    /// returning: SKIPPED (deliberately skipped), or, for a message that could not be decoded,
    /// FAILURE dead-lettered with error kind `decode`.
    async fn not_invoked(
        &self,
        function: &FunctionEntry,
        trigger: &TriggerConfig,
        event: Arc<CloudEvent>,
        received_at: chrono::DateTime<Utc>,
        span: &Span,
        why: NotRun,
    ) -> Result<InvokeResult, DispatchError> {
        let (reason, undecodable) = match why {
            NotRun::Undecodable(error) => (error, true),
            NotRun::Skipped(reason) => (reason, false),
        };
        let mut record = self.new_record(function, &trigger.name, &event, received_at, span);
        record.finished_at = Some(received_at);
        record.duration_ms = Some(0);
        record.error_message = Some(reason.clone());
        if undecodable {
            record.status = Status::Failure;
            record.error_kind = Some(ErrorKind::Decode);
            record.dead_lettered = true;
            self.inner.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            if let Some(sink) = &trigger.dead_letter {
                Box::pin(self.send_dead_letter(sink, &event, &mut record)).await;
            }
        } else {
            record.status = Status::Skipped;
        }
        self.observe(function, &record);
        let record = self.inner.writer.write(record).await?;
        Ok(InvokeResult { record, response: Err(InvokeError::cancelled().with_logs(reason)) })
    }

    /// The functions, by name, with their deployment state.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names: Vec<&String> = reg.functions.keys().chain(reg.pending.keys()).collect();
        names.sort();
        names.dedup();
        names.into_iter().filter_map(|n| info(&reg, n)).collect()
    }

    /// One function.
    pub fn function(&self, name: &str) -> Option<FunctionInfo> {
        let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        info(&reg, name)
    }

    /// Validates a function's configuration and marks its deployment started: state `Creating` for a
    /// new name, `Deploying` when a version already serves (it keeps serving meanwhile). Finish with
    /// [`Dispatcher::finish_deploy`]; [`Dispatcher::upsert_function`] does both.
    ///
    /// # Errors
    /// [`DeployError`] when the configuration is invalid; nothing changes then.
    pub fn begin_deploy(&self, config: FunctionConfig) -> Result<Deployment, DeployError> {
        config
            .validate("function")
            .map_err(|e| DeployError { function: config.name.clone(), message: e.to_string() })?;
        let mut reg = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.deployments += 1;
        let deployment = reg.deployments;
        let created = !reg.functions.contains_key(&config.name);
        let state = if created { FunctionState::Creating } else { FunctionState::Deploying };
        reg.pending.insert(config.name.clone(), Pending { config: config.clone(), state, error: None, deployment });
        Ok(Deployment { config, deployment, created })
    }

    /// Builds the runtime of a deployment begun with [`Dispatcher::begin_deploy`] (Python and Node
    /// handlers are loaded, wasm compiled) and, on success, swaps it in (in-flight invocations
    /// finish on the old version): state `Ready`. On failure the state is `Error` with the message,
    /// and the previous version, if any, keeps serving. A deployment overtaken by a newer one of the
    /// same name (or by removal) is discarded. Returns whether the function was new.
    ///
    /// # Errors
    /// [`DeployError`] when the function cannot run.
    pub async fn finish_deploy(&self, deployment: Deployment) -> Result<bool, DeployError> {
        let Deployment { config, deployment, created } = deployment;
        let name = config.name.clone();
        let built = deploy(&config, &self.inner.http, &self.inner.metrics).await;
        let current = |reg: &Registry| reg.pending.get(&name).is_some_and(|p| p.deployment == deployment);
        match built {
            Ok(entry) => {
                let entry = Arc::new(entry);
                let old = {
                    let mut reg = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if current(&reg) {
                        reg.pending.remove(&name);
                        reg.functions.insert(name.clone(), Arc::clone(&entry))
                    } else {
                        Some(entry) // overtaken: this version never serves
                    }
                };
                if let Some(old) = old {
                    old.runtime.shutdown().await;
                }
                Ok(created)
            }
            Err(e) => {
                let mut reg = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                if current(&reg) {
                    if let Some(p) = reg.pending.get_mut(&name) {
                        p.state = FunctionState::Error;
                        p.error = Some(e.message.clone());
                    }
                }
                Err(e)
            }
        }
    }

    /// Deploys a function, replacing one of the same name (in-flight invocations finish on the old
    /// one), and waits for the outcome. Returns whether it was new.
    ///
    /// # Errors
    /// [`DeployError`] when it fails validation (nothing changes) or cannot run (state `Error`).
    pub async fn upsert_function(&self, config: FunctionConfig) -> Result<bool, DeployError> {
        let deployment = self.begin_deploy(config)?;
        self.finish_deploy(deployment).await
    }

    /// Removes a function that no trigger uses (a deployment of it still running is discarded).
    ///
    /// # Errors
    /// `UnknownFunction`, or a message naming the triggers that still use it.
    pub async fn remove_function(&self, name: &str) -> Result<(), RemoveError> {
        let old = {
            let mut reg = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let users: Vec<String> =
                reg.triggers.iter().filter(|t| t.function == name).map(|t| t.name.clone()).collect();
            if !users.is_empty() {
                return Err(RemoveError::InUse { function: name.to_owned(), triggers: users });
            }
            let pending = reg.pending.remove(name);
            match reg.functions.remove(name) {
                Some(old) => old,
                None if pending.is_some() => return Ok(()),
                None => return Err(RemoveError::Unknown(name.to_owned())),
            }
        };
        old.runtime.shutdown().await;
        Ok(())
    }

    /// The triggers, in routing order.
    pub fn triggers(&self) -> Vec<TriggerConfig> {
        let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.triggers.iter().map(|t| (**t).clone()).collect()
    }

    /// One trigger.
    pub fn trigger(&self, name: &str) -> Option<TriggerConfig> {
        let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.triggers.iter().find(|t| t.name == name).map(|t| (**t).clone())
    }

    /// Adds a trigger or replaces the one of the same name (in place, keeping its routing position).
    /// Returns whether it was new. Deliveries already routed keep the old version.
    ///
    /// # Errors
    /// The first problem with it, with the field path (e.g. a function that does not exist).
    pub fn upsert_trigger(&self, trigger: TriggerConfig) -> Result<bool, switchyard_schemas::config::FieldError> {
        let mut reg = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let function = reg.functions.get(&trigger.function).map(|f| f.config.clone());
        trigger.validate("trigger", function.as_ref())?;
        let trigger = Arc::new(trigger);
        match reg.triggers.iter_mut().find(|t| t.name == trigger.name) {
            Some(slot) => {
                *slot = trigger;
                Ok(false)
            }
            None => {
                reg.triggers.push(trigger);
                Ok(true)
            }
        }
    }

    /// Removes a trigger; returns whether it existed.
    pub fn remove_trigger(&self, name: &str) -> bool {
        let mut reg = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = reg.triggers.len();
        reg.triggers.retain(|t| t.name != name);
        reg.triggers.len() != before
    }

    /// Stops taking events, lets in-flight invocations finish for up to `grace`, then gives up on the
    /// rest (their records say FAILURE/shutdown and their deliveries are not acked). Every record is
    /// durable when this returns. Returns whether everything finished within the grace period.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.background.cancel();
        self.inner.tracker.close();
        let in_time = tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_ok();
        if !in_time {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "shutdown grace period ran out; abandoning in-flight invocations"
            );
            self.inner.abandon.cancel();
            self.inner.tracker.wait().await;
        }
        let functions: Vec<Arc<FunctionEntry>> = {
            let reg = self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            reg.functions.values().cloned().collect()
        };
        for f in functions {
            f.runtime.shutdown().await;
        }
        self.inner.store.close().await;
        in_time
    }
}

/// Why a function could not be removed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoveError {
    /// No such function.
    #[error("no function named {0:?}")]
    Unknown(String),
    /// Triggers still deliver to it.
    #[error("function {function:?} is used by triggers {triggers:?}")]
    InUse {
        /// The function.
        function: String,
        /// The triggers.
        triggers: Vec<String>,
    },
}

/// A function deployment begun with [`Dispatcher::begin_deploy`].
#[derive(Debug)]
pub struct Deployment {
    config: FunctionConfig,
    deployment: u64,
    created: bool,
}

impl Deployment {
    /// Whether the function is new (no version of it serves).
    pub const fn created(&self) -> bool {
        self.created
    }
}

fn info(reg: &Registry, name: &str) -> Option<FunctionInfo> {
    let serving = reg.functions.get(name);
    let pending = reg.pending.get(name);
    let config = pending.map(|p| &p.config).or_else(|| serving.map(|f| &f.config))?.clone();
    Some(FunctionInfo {
        config,
        state: pending.map_or(FunctionState::Ready, |p| p.state),
        error: pending.and_then(|p| p.error.clone()),
        serving: serving.is_some(),
        in_flight: serving.map_or(0, |f| f.capacity() - f.admission.available_permits()),
        instances: serving.and_then(|f| f.runtime.instances()),
    })
}

async fn deploy(
    config: &FunctionConfig,
    http: &reqwest::Client,
    metrics: &Metrics,
) -> Result<FunctionEntry, DeployError> {
    let runtime = runtime::build(config, http).await?;
    // One invocation per instance: at most max_instances run; the rest wait in the queue.
    let limit = config.max_instances.map_or(config.max_concurrency, |m| m.min(config.max_concurrency));
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = stack::build(Arc::clone(&runtime), limit, Arc::clone(&running));
    let admission = Arc::new(Semaphore::new(config.max_concurrency + config.queue_size));
    let meters = metrics.function_meters(&config.name);
    Ok(FunctionEntry { config: config.clone(), runtime, service, admission, running, meters })
}

fn non_empty(text: &str, cap: usize) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let c = Captured::new(text.as_bytes(), cap);
    Some(if c.truncated { c.body + "\n[logs cut]" } else { c.body })
}

/// The first span of work that has no receive span (`invoke`, `replay`, a delivery dispatched without
/// one): it continues the event's own `traceparent` when it has one, else starts a trace.
fn root_for(name: &'static str, event: &CloudEvent) -> Span {
    crate::spans::installed().map_or(Span::none(), |t| t.continuing(name, SpanKind::Internal, event))
}

/// Why a matched trigger's invocation does not run.
enum NotRun {
    /// The message could not be decoded: the error.
    Undecodable(String),
    /// Deliberately skipped (a duplicate, or the source said so): the reason.
    Skipped(String),
}

/// The trace id a record names: when spans are exported, the trace of `span` (the span the invocation
/// runs under: a delivery's route span, or the `invoke` or `replay` span), which already continues a
/// valid `traceparent` of the event, so the record and its spans always name one trace. Else the
/// trace id of the event's `traceparent` extension (CloudEvents distributed tracing), read leniently,
/// else a new random one.
fn trace_id_of(event: &CloudEvent, span: &Span) -> String {
    if let Some(cx) = span.context() {
        return cx.trace_id().to_string();
    }
    if let Some(ExtensionValue::String(tp)) = event.extensions.get("traceparent") {
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() == 4 && parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()) {
            let id = parts[1].to_ascii_lowercase();
            if id != "0".repeat(32) {
                return id;
            }
        }
    }
    format!("{:032x}", rand::random::<u128>() | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_taken_from_traceparent() {
        let mut e = CloudEvent::new("1", "/s", "t");
        e.extensions.insert(
            "traceparent".to_owned(),
            ExtensionValue::String("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".to_owned()),
        );
        assert_eq!(trace_id_of(&e, &Span::none()), "4bf92f3577b34da6a3ce929d0e0e4736");
        let fresh = trace_id_of(&CloudEvent::new("1", "/s", "t"), &Span::none());
        assert_eq!(fresh.len(), 32);
    }
}
