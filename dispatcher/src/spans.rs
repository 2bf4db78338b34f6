//! Span export: the spans of each message's trace (receive, route, invoke attempt, record write),
//! built directly as OpenTelemetry [`SpanData`] and handed to an OpenTelemetry SDK span processor when
//! they end (the batch processor and Switchyard's OTLP exporter in `serve`, an in-memory exporter in
//! tests).
//!
//! Why not `tracing` spans (through `tracing-opentelemetry`, or a `tracing` layer of our own, as until
//! session 12): every `tracing` span goes through `tracing-subscriber`'s registry (a slab slot, an
//! extension map, reference counts, per-layer filter state) and has its fields recorded through a
//! visitor. Counted with callgrind on the trace-export bench's path, that was about 26,000 instructions
//! per event on the tokio workers with export on, over 15% of the path's CPU. A [`Span`] here is one
//! boxed record that is turned into `SpanData` when it is dropped; with export off it is `None` and
//! costs nothing (see BENCHMARKS.md, "Trace export cost").
//!
//! A span's parent is the span it is made from ([`Span::child`], [`Parent::child`]), else the remote
//! context given with [`Span::set_remote_parent`] (a message's `traceparent`), else none: a new trace,
//! sampled by the configured sampler. Children follow their parent's sampling decision. A span that is
//! not sampled still has ids (they are propagated to the function and stored in the record), but its
//! name and attributes are never filled in and it is not exported.
//!
//! `tracing` stays the log pipeline: its spans (sources, the records writer) give logs their context
//! and are not exported.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::{
    SamplingDecision, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{Sampler, ShouldSample as _, SpanData, SpanEvents, SpanLinks, SpanProcessor};

/// Where finished spans go, and how new traces are sampled.
pub struct Tracer {
    processor: Arc<dyn SpanProcessor>,
    sampler: Sampler,
    scope: InstrumentationScope,
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
    /// Spans go to `processor` once they end; `sampler` decides for each new trace.
    pub fn new(processor: Arc<dyn SpanProcessor>, sampler: Sampler) -> Self {
        Self { processor, sampler, scope: InstrumentationScope::builder("switchyard").build() }
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

fn new_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

/// What is kept of an open span.
struct Open {
    tracer: Arc<Tracer>,
    context: SpanContext,
    parent: SpanId,
    parent_is_remote: bool,
    name: Cow<'static, str>,
    kind: SpanKind,
    status: Status,
    start: SystemTime,
    attributes: Vec<KeyValue>,
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
            name: Cow::Borrowed(name),
            kind,
            status: Status::Unset,
            start: SystemTime::now(),
            attributes: Vec::new(),
        })))
    }

    /// A child of this span (in its trace, with its sampling decision); none when this one is none.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Self {
        self.parent().child(name, kind)
    }

    /// A handle to make children of this span with, from another task or after this span has ended.
    pub fn parent(&self) -> Parent {
        Parent(self.0.as_ref().map(|o| (Arc::clone(&o.tracer), o.context.clone())))
    }

    /// This span's context (trace id, span id, sampled flag); `None` when it is not exported.
    pub fn context(&self) -> Option<&SpanContext> {
        self.0.as_ref().map(|o| &o.context)
    }

    /// Whether the span will be exported: name, attributes and status are worth filling in.
    pub fn is_sampled(&self) -> bool {
        self.0.as_ref().is_some_and(|o| o.context.is_sampled())
    }

    /// Runs `f` to name the span and add its attributes and status, only when it is sampled: with
    /// export off or for a trace that is not sampled, nothing is built.
    pub fn fill(&mut self, f: impl FnOnce(&mut Fill<'_>)) {
        if let Some(open) = self.0.as_deref_mut().filter(|o| o.context.is_sampled()) {
            f(&mut Fill(open));
        }
    }

    /// Makes `parent` (a context carried by a message, remote to this process) the parent of this span,
    /// which must have no children yet: the span joins that trace. Whether it is sampled is the
    /// parent's decision under a parent-based sampler (the default), else the tracer's sampler's, for
    /// that trace.
    pub fn set_remote_parent(&mut self, parent: &SpanContext) {
        let Some(open) = self.0.as_deref_mut() else { return };
        if !parent.is_valid() {
            return;
        }
        let flags = match &open.tracer.sampler {
            Sampler::ParentBased(_) => parent.trace_flags(),
            sampler => {
                let cx = opentelemetry::Context::new().with_remote_span_context(parent.clone());
                let decision = sampler.should_sample(Some(&cx), parent.trace_id(), &open.name, &open.kind, &[], &[]);
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

impl Drop for Span {
    fn drop(&mut self) {
        let Some(open) = self.0.take() else { return };
        if !open.context.is_sampled() {
            return;
        }
        let Open { tracer, context, parent, parent_is_remote, name, kind, status, start, attributes } = *open;
        tracer.processor.on_end(SpanData {
            span_context: context,
            parent_span_id: parent,
            parent_span_is_remote: parent_is_remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: tracer.scope.clone(),
        });
    }
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
            Some((tracer, cx)) => Span::open(
                Arc::clone(tracer),
                SpanContext::new(cx.trace_id(), new_span_id(), cx.trace_flags(), false, cx.trace_state().clone()),
                cx.span_id(),
                name,
                kind,
            ),
            None => Span::none(),
        }
    }

    /// The parent's context; `None` when spans are not exported.
    pub fn context(&self) -> Option<&SpanContext> {
        self.0.as_ref().map(|(_, cx)| cx)
    }
}

/// A sampled span being filled in ([`Span::fill`]).
pub struct Fill<'a>(&'a mut Open);

impl Fill<'_> {
    /// Names the span (else it keeps the name it was made with).
    pub fn name(&mut self, name: impl Into<Cow<'static, str>>) -> &mut Self {
        self.0.name = name.into();
        self
    }

    /// Sets attribute `key`, replacing an earlier value.
    pub fn attr(&mut self, key: &'static str, value: impl Into<Value>) -> &mut Self {
        let key = Key::from_static_str(key);
        let value = value.into();
        let attributes = &mut self.0.attributes;
        if attributes.capacity() == 0 {
            attributes.reserve_exact(8); // the most any of Switchyard's spans has
        }
        match attributes.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => attributes.push(KeyValue::new(key, value)),
        }
        self
    }

    /// Sets the span's status.
    pub fn status(&mut self, status: Status) -> &mut Self {
        self.0.status = status;
        self
    }
}

/// The W3C `traceparent` header that names `cx` (`00-<trace id>-<span id>-<flags>`), written
/// without `fmt`: it is built for every attempt when spans are exported.
pub fn traceparent(cx: &SpanContext) -> String {
    fn hex(out: &mut String, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    hex(&mut out, &cx.trace_id().to_bytes());
    out.push('-');
    hex(&mut out, &cx.span_id().to_bytes());
    out.push('-');
    hex(&mut out, &[cx.trace_flags().to_u8()]);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SimpleSpanProcessor, SpanData};

    use super::{traceparent, Parent, Span, Tracer};

    /// Runs `f` with a tracer exporting through `sampler` into memory; returns the spans.
    fn exported(sampler: Sampler, f: impl FnOnce(&Arc<Tracer>)) -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let tracer = Arc::new(Tracer::new(Arc::new(SimpleSpanProcessor::new(exporter.clone())), sampler));
        f(&tracer);
        exporter.get_finished_spans().unwrap()
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
    }

    #[test]
    fn names_kinds_attributes_and_parents() {
        let spans = exported(Sampler::AlwaysOn, |t| {
            let mut root = t.root("receive", SpanKind::Consumer);
            root.fill(|f| {
                f.name(format!("{} receive", "bus")).attr("messaging.system", "nats").attr("count", 3i64);
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
        assert_eq!(root.span_kind, SpanKind::Consumer);
        assert_eq!(attr(root, "messaging.system").as_deref(), Some("nats"));
        assert_eq!(attr(root, "count").as_deref(), Some("3"));
        assert_eq!(root.parent_span_id, SpanId::INVALID, "a root starts a trace");
        assert_eq!(root.instrumentation_scope.name(), "switchyard");
        assert_eq!(child.name, "attempt");
        assert_eq!(child.span_kind, SpanKind::Client);
        assert_eq!(attr(child, "attempt").as_deref(), Some("2"));
        assert_eq!(attr(child, "ok").as_deref(), Some("true"));
        assert_eq!(child.span_context.trace_id(), root.span_context.trace_id());
        assert_eq!(child.parent_span_id, root.span_context.span_id());
        assert_ne!(child.span_context.span_id(), root.span_context.span_id());
        assert!(child.start_time <= child.end_time && root.start_time <= child.start_time);
    }

    #[test]
    fn later_values_replace_earlier_ones_and_status_is_kept() {
        let spans = exported(Sampler::AlwaysOn, |t| {
            let mut span = t.root("record", SpanKind::Internal);
            span.fill(|f| {
                f.attr("status", "PENDING");
            });
            span.fill(|f| {
                f.attr("status", "SUCCESS").status(Status::error("function returned 500"));
            });
        });
        assert_eq!(spans[0].attributes.len(), 1);
        assert_eq!(attr(&spans[0], "status").as_deref(), Some("SUCCESS"), "a later value replaces the first");
        assert_eq!(spans[0].status, Status::error("function returned 500"));
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
        assert_eq!(spans[1].parent_span_id, spans[0].span_context.span_id());
        assert!(Parent::default().child("attempt", SpanKind::Client).context().is_none());
    }

    #[test]
    fn a_remote_parent_is_continued_with_its_sampling_decision() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let caller = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let mut seen = None;
        let spans = exported(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), |t| {
            let sampled = SpanContext::new(trace, caller, TraceFlags::SAMPLED, true, TraceState::NONE);
            let mut span = t.root("receive", SpanKind::Consumer);
            span.set_remote_parent(&sampled);
            let child = span.child("route", SpanKind::Internal);
            seen = child.context().cloned();
        });
        assert_eq!(spans.len(), 2, "the caller sampled the trace: both spans are exported despite AlwaysOff");
        let receive = spans.iter().find(|s| s.name == "receive").unwrap();
        assert_eq!(receive.span_context.trace_id(), trace);
        assert_eq!(receive.parent_span_id, caller);
        assert!(receive.parent_span_is_remote);
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
        assert_eq!(spans[0].span_context.trace_id(), trace);
        assert_eq!(spans[0].parent_span_id, caller);
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
    fn traceparent_names_the_context() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let sampled = SpanContext::new(trace, span, TraceFlags::SAMPLED, false, TraceState::NONE);
        assert_eq!(traceparent(&sampled), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let not = SpanContext::new(trace, span, TraceFlags::default(), false, TraceState::NONE);
        assert_eq!(traceparent(&not), format!("00-{}-{}-00", not.trace_id(), not.span_id()));
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
