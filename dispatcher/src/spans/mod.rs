//! Span export: the spans of each message's trace (receive, route, invoke attempt, record write).
//! Each [`Span`] is encoded as an OTLP protobuf `Span` message when it ends, straight into the
//! [`Queue`] the broker's OTLP exporter sends from (`broker/src/otlp.rs`).
//!
//! Why not `tracing` spans (through `tracing-opentelemetry`, or a `tracing` layer of our own, as until
//! session 12), nor the OpenTelemetry SDK's `SpanData` and batch processor: every `tracing` span goes
//! through `tracing-subscriber`'s registry (a slab slot, an extension map, reference counts, per-layer
//! filter state) and records its fields through a visitor, and every `SpanData` is a few hundred
//! bytes of owned strings and vectors, moved through a channel and freed on another thread. Counted
//! with callgrind on the trace-export bench's path, those cost about 40,000 instructions per event.
//! Here a span is one boxed record whose attributes are written in protobuf as they are set; when it
//! ends, its encoding is appended to the queue. With export off no tracer is installed, every span
//! is `None`, and nothing is built (see BENCHMARKS.md, "Trace export cost").
//!
//! A span's parent is the span it is made from ([`Span::child`], [`Parent::child`]), else the remote
//! context given with [`Span::set_remote_parent`] (a message's `traceparent`), else none: a new trace,
//! sampled by the configured sampler (the SDK's samplers are used as they are). Children follow their
//! parent's sampling decision. A span that is not sampled still has ids (they are propagated to the
//! function and stored in the record), but its name and attributes are never written and it is not
//! exported.
//!
//! `tracing` stays the log pipeline: its spans (sources, the records writer) give logs their context
//! and are not exported.

mod queue;
pub mod wire;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SamplingDecision, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{Sampler, ShouldSample as _};

pub use queue::{Batch, Queue, Taken};
pub use wire::Scalar;

/// The instrumentation scope Switchyard's spans are exported under.
pub const SCOPE: &str = "switchyard";

/// Where finished spans go, and how new traces are sampled.
pub struct Tracer {
    queue: Arc<Queue>,
    sampler: Sampler,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("sampler", &self.sampler).finish_non_exhaustive()
    }
}

static INSTALLED: OnceLock<Arc<Tracer>> = OnceLock::new();

/// Makes `tracer` the process's: spans made with [`Span::root`] are exported through it from now on.
/// Once per process (`serve` calls it at start when export is configured).
///
/// # Errors
/// When a tracer is already installed.
pub fn install(tracer: Tracer) -> Result<(), &'static str> {
    INSTALLED.set(Arc::new(tracer)).map_err(|_| "a span tracer is already installed")
}

/// The installed tracer; `None` when export is off.
pub fn installed() -> Option<&'static Arc<Tracer>> {
    INSTALLED.get()
}

impl Tracer {
    /// Spans go to `queue` once they end; `sampler` decides for each new trace.
    pub fn new(queue: Arc<Queue>, sampler: Sampler) -> Self {
        Self { queue, sampler }
    }

    /// A new span starting a new trace, sampled by the tracer's sampler.
    pub fn root(self: &Arc<Self>, name: &'static str, kind: SpanKind) -> Span {
        let trace_id = TraceId::from(rand::random::<u128>().max(1));
        let sampled = self.sampler.should_sample(None, trace_id, name, &kind, &[], &[]).decision
            == SamplingDecision::RecordAndSample;
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        Span::open(
            Arc::clone(self),
            SpanContext::new(trace_id, new_span_id(), flags, false, TraceState::NONE),
            SpanId::INVALID,
            name,
            kind,
        )
    }
}

impl Tracer {
    /// A first span for `event` here: in the trace its `traceparent` extension names ([`parent_of`]),
    /// else in a new one.
    pub fn continuing(
        self: &Arc<Self>,
        name: &'static str,
        kind: SpanKind,
        event: &switchyard_schemas::CloudEvent,
    ) -> Span {
        let mut span = self.root(name, kind);
        if let Some(parent) = parent_of(event) {
            span.set_remote_parent(&parent);
        }
        span
    }
}

fn new_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

/// What is kept of an open span.
struct Open {
    tracer: Arc<Tracer>,
    context: SpanContext,
    parent: SpanId,
    parent_is_remote: bool,
    /// The name it was made with; replaced by a `name` field in `fields` when [`Fill::name`] is used.
    name: &'static str,
    named: bool,
    kind: SpanKind,
    /// Set when the span failed: the status message.
    error: Option<String>,
    start: SystemTime,
    /// The span's attributes (and its name, once set), already encoded as `Span` fields.
    fields: Vec<u8>,
}

/// One span of a message's trace; exported when dropped (if sampled). [`Span::none`] (export off) is
/// inert: every method on it does nothing.
#[derive(Default)]
pub struct Span(Option<Box<Open>>);

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(o) => f.debug_struct("Span").field("name", &o.name).field("context", &o.context).finish(),
            None => f.write_str("Span(none)"),
        }
    }
}

impl Span {
    /// A span that is not exported.
    pub const fn none() -> Self {
        Self(None)
    }

    /// A new trace's first span through the installed tracer; [`Span::none`] when export is off.
    pub fn root(name: &'static str, kind: SpanKind) -> Self {
        installed().map_or(Self(None), |t| t.root(name, kind))
    }

    fn open(tracer: Arc<Tracer>, context: SpanContext, parent: SpanId, name: &'static str, kind: SpanKind) -> Self {
        Self(Some(Box::new(Open {
            tracer,
            context,
            parent,
            parent_is_remote: false,
            name,
            named: false,
            kind,
            error: None,
            start: SystemTime::now(),
            fields: Vec::new(),
        })))
    }

    /// A child of this span (in its trace, with its sampling decision); none when this one is none.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Self {
        match &self.0 {
            Some(o) => child_of(&o.tracer, &o.context, name, kind),
            None => Self::none(),
        }
    }

    /// A handle to make children of this span with, from another task or after this span has ended.
    pub fn parent(&self) -> Parent {
        Parent(self.0.as_ref().map(|o| (Arc::clone(&o.tracer), o.context.clone())))
    }

    /// This span's context (trace id, span id, sampled flag); `None` when it is not exported.
    pub fn context(&self) -> Option<&SpanContext> {
        self.0.as_ref().map(|o| &o.context)
    }

    /// Runs `f` to name the span and add its attributes and status, only when it is sampled: with
    /// export off or for a trace that is not sampled, nothing is built.
    pub fn fill(&mut self, f: impl FnOnce(&mut Fill<'_>)) {
        if let Some(open) = self.0.as_deref_mut().filter(|o| o.context.is_sampled()) {
            if open.fields.capacity() == 0 {
                open.fields.reserve(256); // enough for any of Switchyard's spans
            }
            f(&mut Fill(open));
        }
    }

    /// Makes `parent` (a context carried by a message, remote to this process) the parent of this span,
    /// which must have no children and no attributes yet: the span joins that trace. Whether it is
    /// sampled is the parent's decision under a parent-based sampler (the default), else the tracer's
    /// sampler's, for that trace.
    pub fn set_remote_parent(&mut self, parent: &SpanContext) {
        let Some(open) = self.0.as_deref_mut() else { return };
        if !parent.is_valid() {
            return;
        }
        let flags = match &open.tracer.sampler {
            Sampler::ParentBased(_) => parent.trace_flags(),
            sampler => {
                let cx = opentelemetry::Context::new().with_remote_span_context(parent.clone());
                let decision = sampler.should_sample(Some(&cx), parent.trace_id(), open.name, &open.kind, &[], &[]);
                if decision.decision == SamplingDecision::RecordAndSample {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                }
            }
        };
        open.context =
            SpanContext::new(parent.trace_id(), open.context.span_id(), flags, false, parent.trace_state().clone());
        open.parent = parent.span_id();
        open.parent_is_remote = true;
    }
}

fn child_of(tracer: &Arc<Tracer>, cx: &SpanContext, name: &'static str, kind: SpanKind) -> Span {
    Span::open(
        Arc::clone(tracer),
        SpanContext::new(cx.trace_id(), new_span_id(), cx.trace_flags(), false, cx.trace_state().clone()),
        cx.span_id(),
        name,
        kind,
    )
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(open) = self.0.take() else { return };
        if open.context.is_sampled() {
            let end = SystemTime::now();
            open.tracer.queue.push(|buf| encode(buf, &open, end));
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// `span` as a `ScopeSpans.spans` field (field 2): an OTLP `Span` message.
fn encode(buf: &mut Vec<u8>, span: &Open, end: SystemTime) {
    use wire::{bytes_field, fixed32_field, fixed64_field, message, string_field, uint_field};
    // Span.flags: the W3C trace flags, plus whether the parent is remote, with the bit that says that
    // is known.
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    let cx = &span.context;
    // The length prefix's size, from the content's: ids, times, kind, flags and status take under 80
    // bytes, so the content moves only for spans of about 128 bytes.
    let guess = if 80 + span.name.len() + span.fields.len() < 128 { 1 } else { 2 };
    message(buf, 2, guess, |b| {
        bytes_field(b, 1, &cx.trace_id().to_bytes());
        bytes_field(b, 2, &cx.span_id().to_bytes());
        if *cx.trace_state() != TraceState::NONE {
            string_field(b, 3, &cx.trace_state().header());
        }
        if span.parent != SpanId::INVALID {
            bytes_field(b, 4, &span.parent.to_bytes());
        }
        if !span.named {
            string_field(b, 5, span.name);
        }
        let kind = match span.kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        };
        uint_field(b, 6, kind);
        fixed64_field(b, 7, nanos(span.start));
        fixed64_field(b, 8, nanos(end));
        b.extend_from_slice(&span.fields);
        message(b, 15, 1, |b| {
            if let Some(e) = &span.error {
                string_field(b, 2, e);
                uint_field(b, 3, 2); // STATUS_CODE_ERROR
            }
        });
        let remote = if span.parent_is_remote { IS_REMOTE } else { 0 };
        fixed32_field(b, 16, u32::from(cx.trace_flags().to_u8()) | HAS_IS_REMOTE | remote);
    });
}

/// A span's tracer and context, to make children of it with ([`Span::parent`]); cheap to clone.
/// `Parent::default()` makes no spans.
#[derive(Clone, Default)]
pub struct Parent(Option<(Arc<Tracer>, SpanContext)>);

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Parent").field(&self.context()).finish()
    }
}

impl Parent {
    /// A child span (in the parent's trace, with its sampling decision); none when there is no parent.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Span {
        match &self.0 {
            Some((tracer, cx)) => child_of(tracer, cx, name, kind),
            None => Span::none(),
        }
    }

    /// The parent's context; `None` when spans are not exported.
    pub fn context(&self) -> Option<&SpanContext> {
        self.0.as_ref().map(|(_, cx)| cx)
    }
}

/// A sampled span being filled in ([`Span::fill`]). Each attribute is written as it is set: set
/// each key once.
pub struct Fill<'a>(&'a mut Open);

impl Fill<'_> {
    /// Names the span the concatenation of `parts` (else it keeps the name it was made with). Once.
    pub fn name(&mut self, parts: &[&str]) -> &mut Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let b = &mut self.0.fields;
        wire::tag(b, 5, wire::LEN);
        wire::varint(b, len as u64);
        for p in parts {
            b.extend_from_slice(p.as_bytes());
        }
        self.0.named = true;
        self
    }

    /// Adds attribute `key`.
    pub fn attr<'v>(&mut self, key: &'static str, value: impl Into<Scalar<'v>>) -> &mut Self {
        wire::key_value(&mut self.0.fields, 9, key, value.into());
        self
    }

    /// Marks the span failed, with `message`.
    pub fn error(&mut self, message: &str) -> &mut Self {
        self.0.error = Some(message.to_owned());
        self
    }
}

/// The context an event's `traceparent` extension (CloudEvents distributed tracing, with its
/// `tracestate`) names: the remote parent of the spans that start with the event.
pub fn parent_of(event: &switchyard_schemas::CloudEvent) -> Option<SpanContext> {
    use switchyard_schemas::ExtensionValue;
    let Some(ExtensionValue::String(tp)) = event.extensions.get("traceparent") else { return None };
    let state = match event.extensions.get("tracestate") {
        Some(ExtensionValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    parse_traceparent(tp, state)
}

/// The span context a W3C `traceparent` value names (and its `tracestate`), remote to this process;
/// `None` when the value is not a valid one (version `ff`, ids of zeros, wrong lengths or characters).
pub fn parse_traceparent(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    fn hex(s: &[u8]) -> Option<u128> {
        let mut v: u128 = 0;
        for &c in s {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            v = v << 4 | u128::from(d);
        }
        Some(v)
    }
    let b = traceparent.trim().as_bytes();
    // version-traceid-spanid-flags; a later version may append fields after another '-'.
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex(&b[..2])?;
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = hex(&b[3..35]).filter(|&t| t != 0)?;
    let span_id = hex(&b[36..52]).filter(|&s| s != 0)?;
    let flags = hex(&b[53..55])?;
    let state = match tracestate.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s.parse::<TraceState>().unwrap_or_default(),
        None => TraceState::NONE,
    };
    Some(SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id as u64),
        TraceFlags::new(flags as u8 & 1),
        true,
        state,
    ))
}

/// The W3C `traceparent` header that names `cx` (`00-<trace id>-<span id>-<flags>`), written
/// without `fmt`: it is built for every attempt when spans are exported.
pub fn traceparent(cx: &SpanContext) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    let mut at = 3;
    let mut put = |bytes: &[u8], out: &mut [u8; 55]| {
        for b in bytes {
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 0xf)];
            at += 2;
        }
        at += 1;
    };
    put(&cx.trace_id().to_bytes(), &mut out);
    put(&cx.span_id().to_bytes(), &mut out);
    put(&[cx.trace_flags().to_u8()], &mut out);
    out[35] = b'-';
    out[52] = b'-';
    // Only ASCII hex digits and dashes were written.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span as ProtoSpan};
    use opentelemetry_sdk::trace::Sampler;
    use prost::Message as _;

    use super::{parse_traceparent, traceparent, Parent, Queue, Span, Tracer};

    /// Runs `f` with a tracer exporting through `sampler` into a queue; returns the spans, decoded.
    fn exported(sampler: Sampler, f: impl FnOnce(&Arc<Tracer>)) -> Vec<ProtoSpan> {
        let queue = Arc::new(Queue::new(1000, 1000));
        let tracer = Arc::new(Tracer::new(Arc::clone(&queue), sampler));
        f(&tracer);
        ScopeSpans::decode(queue.take_all().bytes.as_slice()).expect("a run of spans is a ScopeSpans message").spans
    }

    fn attr(span: &ProtoSpan, key: &str) -> Option<String> {
        let kv = span.attributes.iter().find(|kv| kv.key == key)?;
        Some(match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => s.clone(),
            Any::IntValue(i) => i.to_string(),
            Any::BoolValue(b) => b.to_string(),
            Any::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn names_kinds_attributes_and_parents() {
        let spans = exported(Sampler::AlwaysOn, |t| {
            let mut root = t.root("receive", SpanKind::Consumer);
            root.fill(|f| {
                f.name(&["bus", " receive"]).attr("messaging.system", "nats").attr("count", 3i64).attr("x", 0.5);
            });
            let mut child = root.child("attempt", SpanKind::Client);
            child.fill(|f| {
                f.attr("attempt", 2i64).attr("ok", true);
            });
            drop(child);
            drop(root);
        });
        assert_eq!(spans.len(), 2);
        let (child, root) = (&spans[0], &spans[1]);
        assert_eq!(root.name, "bus receive", "fill names the span");
        assert_eq!(root.kind, 5, "consumer");
        assert_eq!(attr(root, "messaging.system").as_deref(), Some("nats"));
        assert_eq!(attr(root, "count").as_deref(), Some("3"));
        assert_eq!(attr(root, "x").as_deref(), Some("0.5"));
        assert!(root.parent_span_id.is_empty(), "a root starts a trace");
        assert_eq!(root.flags, 0x101, "sampled, parent not remote (and that is known)");
        assert_eq!(child.name, "attempt");
        assert_eq!(child.kind, 3, "client");
        assert_eq!(attr(child, "attempt").as_deref(), Some("2"));
        assert_eq!(attr(child, "ok").as_deref(), Some("true"));
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, root.span_id);
        assert_ne!(child.span_id, root.span_id);
        assert!(child.start_time_unix_nano <= child.end_time_unix_nano);
        assert!(
            root.start_time_unix_nano <= child.start_time_unix_nano
                && child.end_time_unix_nano <= root.end_time_unix_nano
        );
        assert_eq!(root.status.as_ref().map(|s| s.code), Some(0), "unset");
    }

    #[test]
    fn a_failed_span_has_an_error_status_and_long_fields_keep_their_lengths() {
        let long = "x".repeat(20_000);
        let spans = exported(Sampler::AlwaysOn, |t| {
            let mut span = t.root("record", SpanKind::Internal);
            span.fill(|f| {
                f.attr("big", long.as_str()).error("function returned 500");
            });
        });
        let status = spans[0].status.clone().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "function returned 500"));
        assert_eq!(attr(&spans[0], "big").map(|v| v.len()), Some(20_000), "a span over 16 KiB is encoded whole");
    }

    #[test]
    fn a_parent_handle_outlives_its_span() {
        let spans = exported(Sampler::AlwaysOn, |t| {
            let route = t.root("route", SpanKind::Internal);
            let parent = route.parent();
            drop(route);
            drop(parent.child("attempt", SpanKind::Client));
        });
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert!(Parent::default().child("attempt", SpanKind::Client).context().is_none());
    }

    #[test]
    fn a_remote_parent_is_continued_with_its_sampling_decision() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let caller = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let mut seen = None;
        let spans = exported(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), |t| {
            let state: TraceState = "vendor=1".parse().unwrap();
            let sampled = SpanContext::new(trace, caller, TraceFlags::SAMPLED, true, state);
            let mut span = t.root("receive", SpanKind::Consumer);
            span.set_remote_parent(&sampled);
            let child = span.child("route", SpanKind::Internal);
            seen = child.context().cloned();
        });
        assert_eq!(spans.len(), 2, "the caller sampled the trace: both spans are exported despite AlwaysOff");
        let receive = spans.iter().find(|s| s.name == "receive").unwrap();
        assert_eq!(receive.trace_id, trace.to_bytes());
        assert_eq!(receive.parent_span_id, caller.to_bytes());
        assert_eq!(receive.flags, 0x301, "sampled, and the parent is remote");
        assert_eq!(receive.trace_state, "vendor=1");
        let seen = seen.expect("the child's context is readable");
        assert_eq!(seen.trace_id(), trace);
        assert!(seen.is_sampled());

        let mut unsampled = None;
        let mut filled = false;
        let spans = exported(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), |t| {
            let not_sampled = SpanContext::new(trace, caller, TraceFlags::default(), true, TraceState::NONE);
            let mut span = t.root("receive", SpanKind::Consumer);
            span.set_remote_parent(&not_sampled);
            span.fill(|_| filled = true);
            unsampled = span.context().cloned();
        });
        assert!(spans.is_empty(), "the caller did not sample the trace");
        assert!(!filled, "an unsampled span's attributes are not built");
        let unsampled = unsampled.expect("ids exist for propagation");
        assert_eq!(unsampled.trace_id(), trace);
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn a_sampler_that_is_not_parent_based_decides_for_remote_parents_too() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let caller = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let unsampled = SpanContext::new(trace, caller, TraceFlags::default(), true, TraceState::NONE);
        let sampled = SpanContext::new(trace, caller, TraceFlags::SAMPLED, true, TraceState::NONE);
        let spans = exported(Sampler::AlwaysOn, |t| {
            t.root("receive", SpanKind::Consumer).set_remote_parent(&unsampled);
        });
        assert_eq!(spans.len(), 1, "always_on samples whatever the caller decided");
        assert_eq!(spans[0].trace_id, trace.to_bytes());
        assert_eq!(spans[0].parent_span_id, caller.to_bytes());
        let spans = exported(Sampler::AlwaysOff, |t| {
            t.root("receive", SpanKind::Consumer).set_remote_parent(&sampled);
        });
        assert!(spans.is_empty(), "always_off drops whatever the caller decided");
    }

    #[test]
    fn an_unsampled_root_has_ids_but_is_not_exported() {
        let mut cx = None;
        let spans = exported(Sampler::TraceIdRatioBased(0.0), |t| {
            cx = t.root("receive", SpanKind::Consumer).context().cloned();
        });
        assert!(spans.is_empty());
        let cx = cx.unwrap();
        assert!(cx.is_valid() && !cx.is_sampled());
    }

    #[test]
    fn traceparent_is_written_and_read() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let sampled = SpanContext::new(trace, span, TraceFlags::SAMPLED, false, TraceState::NONE);
        assert_eq!(traceparent(&sampled), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let not = SpanContext::new(trace, span, TraceFlags::default(), false, TraceState::NONE);
        assert_eq!(traceparent(&not), format!("00-{}-{}-00", not.trace_id(), not.span_id()));

        let cx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Some("a=1,b=2")).unwrap();
        assert_eq!((cx.trace_id(), cx.span_id(), cx.is_sampled(), cx.is_remote()), (trace, span, true, true));
        assert_eq!(cx.trace_state().get("b"), Some("2"));
        let later = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-more", None).unwrap();
        assert!(later.is_sampled(), "a later version's extra fields are ignored, the sampled bit kept");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad, None).is_none(), "{bad:?} is not a traceparent");
        }
    }

    #[test]
    fn an_events_traceparent_extension_is_its_parent() {
        let mut event = switchyard_schemas::CloudEvent::new("1", "/s", "t");
        assert!(super::parent_of(&event).is_none());
        let ext = |v: &str| switchyard_schemas::ExtensionValue::String(v.to_owned());
        event.extensions.insert("traceparent".into(), ext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        event.extensions.insert("tracestate".into(), ext("k=v"));
        let cx = super::parent_of(&event).expect("a valid traceparent");
        assert_eq!(cx.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        assert_eq!(cx.trace_state().get("k"), Some("v"));
        event.extensions.insert("traceparent".into(), ext("garbage"));
        assert!(super::parent_of(&event).is_none());
    }

    #[test]
    fn none_is_inert() {
        let mut span = Span::none();
        let mut filled = false;
        span.fill(|_| filled = true);
        span.set_remote_parent(&SpanContext::new(
            TraceId::from(1u128),
            SpanId::from(1u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        ));
        assert!(!filled && span.context().is_none() && span.child("c", SpanKind::Internal).context().is_none());
    }
}
