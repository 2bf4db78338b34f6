//! Prometheus metrics, named `switchyard_<noun>_<unit>[_total]`, with bounded labels only: source and
//! function names come from the configuration, statuses from a fixed set. One [`Metrics`] per
//! dispatcher; `GET /metrics` encodes it in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `{source="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source's name (`http` for the HTTP ingress).
    pub source: String,
}

/// `{function="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    /// The function's name.
    pub function: String,
}

/// `{function="...", status="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The function's name.
    pub function: String,
    /// SUCCESS, FAILURE or SKIPPED.
    pub status: String,
}

/// `{source="...", partition="..."}` for per-partition lag (Kafka); `partition` is empty elsewhere.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabel {
    /// The source's name.
    pub source: String,
    /// The partition, where the source has partitions.
    pub partition: String,
}

type Counters<L> = Family<L, Counter>;

/// One function's SUCCESS counter and duration histogram (see [`Metrics::function_meters`]).
#[derive(Debug, Clone)]
pub struct FunctionMeters {
    /// `switchyard_invocations_total{function, status="SUCCESS"}`.
    pub succeeded: Counter,
    /// `switchyard_invocation_duration_seconds{function}`.
    pub duration: Histogram,
}

fn seconds() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    /// Events taken from each source (before routing).
    pub events_received: Counters<SourceLabel>,
    /// Events that matched at least one trigger.
    pub events_routed: Counter,
    /// Events no trigger matched.
    pub events_unmatched: Counter,
    /// Terminal invocations by function and status.
    pub invocations: Counters<StatusLabel>,
    /// Invocation duration (received to terminal), by function.
    pub invocation_duration: Family<FunctionLabel, Histogram>,
    /// Attempts after the first, by function.
    pub retries: Counters<FunctionLabel>,
    /// Dead-lettered invocations, by function.
    pub dead_letters: Counters<FunctionLabel>,
    /// Dead letters their sink did not take (they stay in the records).
    pub dead_letter_sink_failures: Counters<FunctionLabel>,
    /// Invocations that started a new instance, by function.
    pub cold_starts: Counters<FunctionLabel>,
    /// Attempts running now, by function (set at scrape time).
    pub in_flight: Family<FunctionLabel, Gauge>,
    /// Invocations admitted and waiting for a slot, by function (set at scrape time).
    pub queued: Family<FunctionLabel, Gauge>,
    /// Records per committed batch.
    pub record_batch_size: Histogram,
    /// Time to commit one batch.
    pub record_batch_duration: Histogram,
    /// Messages waiting at the source (JetStream pending, queue depth, consumer lag).
    pub source_lag: Family<LagLabel, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            events_received: Family::default(),
            events_routed: Counter::default(),
            events_unmatched: Counter::default(),
            invocations: Family::default(),
            invocation_duration: Family::new_with_constructor(seconds),
            retries: Family::default(),
            dead_letters: Family::default(),
            dead_letter_sink_failures: Family::default(),
            cold_starts: Family::default(),
            in_flight: Family::default(),
            queued: Family::default(),
            record_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            record_batch_duration: seconds(),
            source_lag: Family::default(),
        };
        registry.register("switchyard_events_received", "Events taken from each source", m.events_received.clone());
        registry.register(
            "switchyard_events_routed",
            "Events that matched at least one trigger",
            m.events_routed.clone(),
        );
        registry.register("switchyard_events_unmatched", "Events no trigger matched", m.events_unmatched.clone());
        registry.register(
            "switchyard_invocations",
            "Terminal invocations by function and status",
            m.invocations.clone(),
        );
        registry.register(
            "switchyard_invocation_duration_seconds",
            "Invocation duration from receipt to terminal, by function",
            m.invocation_duration.clone(),
        );
        registry.register("switchyard_invocation_retries", "Attempts after the first, by function", m.retries.clone());
        registry.register("switchyard_dead_letters", "Dead-lettered invocations, by function", m.dead_letters.clone());
        registry.register(
            "switchyard_dead_letter_sink_failures",
            "Dead letters the trigger's sink did not take (kept in the records)",
            m.dead_letter_sink_failures.clone(),
        );
        registry.register("switchyard_cold_starts", "Invocations that started a new instance", m.cold_starts.clone());
        registry.register("switchyard_function_in_flight", "Attempts running now, by function", m.in_flight.clone());
        registry.register(
            "switchyard_function_queued",
            "Invocations waiting for a slot, by function",
            m.queued.clone(),
        );
        registry.register(
            "switchyard_record_batch_size_records",
            "Records per committed batch",
            m.record_batch_size.clone(),
        );
        registry.register(
            "switchyard_record_batch_duration_seconds",
            "Time to commit one batch of records",
            m.record_batch_duration.clone(),
        );
        registry.register(
            "switchyard_source_lag_messages",
            "Messages waiting at the source (JetStream pending, queue depth, consumer lag)",
            m.source_lag.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts an event taken from `source`.
    pub fn received(&self, source: &str) {
        self.events_received.get_or_create(&SourceLabel { source: source.to_owned() }).inc();
    }

    /// The series of `function` that every invocation updates, created now and shared with the
    /// registry: counting through them takes no lock and builds no label.
    pub fn function_meters(&self, function: &str) -> FunctionMeters {
        let status = StatusLabel { function: function.to_owned(), status: "SUCCESS".to_owned() };
        FunctionMeters {
            succeeded: self.invocations.get_or_create(&status).clone(),
            duration: self.invocation_duration.get_or_create(&self::function(function)).clone(),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub(crate) fn function(name: &str) -> FunctionLabel {
    FunctionLabel { function: name.to_owned() }
}
