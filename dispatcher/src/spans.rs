//! Span export: a `tracing` layer that turns Switchyard's own spans into OpenTelemetry spans and hands
//! each finished one to an OpenTelemetry SDK span processor (the batch processor and the OTLP exporter
//! in `serve`, an in-memory exporter in tests).
//!
//! Why not `tracing-opentelemetry`: it keeps an SDK span builder per open span and runs it through the
//! SDK tracer when the span closes. Counted with callgrind on the trace-export bench's path, that cost
//! the tokio workers about 41,000 instructions per event (four spans); this layer, about 26,000. It keeps
//! one small record per open span (ids, start time, name, kind and the attributes named where the span
//! is opened) and builds the exported span from it once, when the span closes.
//!
//! What it reads from a span's fields:
//!
//! - `otel.name`: the span's name (else the `tracing` name);
//! - `otel.kind`: `server`, `client`, `producer`, `consumer` or `internal` (the default);
//! - `otel.status_code` (`ok` or `error`) and `otel.status_message`: the span's status;
//! - every other field: an attribute of the same name.
//!
//! A span's parent is its `tracing` parent (explicit or contextual) when that span is exported too, else
//! the remote context given with [`set_remote_parent`] (a message's `traceparent`), else none: a new
//! trace, sampled by the configured sampler. Children follow their parent's sampling decision.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    SamplingDecision, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{Sampler, ShouldSample as _, SpanData, SpanEvents, SpanLinks, SpanProcessor};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// What the layer keeps of an open span.
struct Open {
    context: SpanContext,
    parent: SpanId,
    parent_is_remote: bool,
    name: Cow<'static, str>,
    kind: SpanKind,
    status: Status,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    /// For a root under a sampler that is not parent-based: that sampler, which also decides when a
    /// remote parent is set later ([`set_remote_parent`]). `None` otherwise: the parent decides.
    sampler: Option<Arc<Sampler>>,
}

/// The layer: install it with a filter that passes the spans to export (see `telemetry::otel_layer`).
pub struct ExportLayer {
    processor: Arc<dyn SpanProcessor>,
    sampler: Arc<Sampler>,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for ExportLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportLayer").field("sampler", &self.sampler).finish_non_exhaustive()
    }
}

impl ExportLayer {
    /// Spans go to `processor` once they close; `sampler` decides for each new trace.
    pub fn new(processor: Arc<dyn SpanProcessor>, sampler: Sampler) -> Self {
        Self { processor, sampler: Arc::new(sampler), scope: InstrumentationScope::builder("switchyard").build() }
    }

    fn root(&self, name: &str, kind: &SpanKind) -> (TraceId, TraceFlags) {
        let trace_id = TraceId::from(rand::random::<u128>().max(1));
        let sampled = self.sampler.should_sample(None, trace_id, name, kind, &[], &[]).decision
            == SamplingDecision::RecordAndSample;
        (trace_id, if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() })
    }
}

fn new_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

impl<S> Layer<S> for ExportLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let meta = attrs.metadata();
        let mut open = Open {
            context: SpanContext::NONE,
            parent: SpanId::INVALID,
            parent_is_remote: false,
            name: Cow::Borrowed(meta.name()),
            kind: SpanKind::Internal,
            status: Status::Unset,
            start: SystemTime::now(),
            attributes: Vec::with_capacity(attrs.fields().len()),
            sampler: None,
        };
        attrs.record(&mut Fields { open: &mut open, recorded: false });
        let parent = span.parent().and_then(|p| p.extensions().get::<Open>().map(|o| o.context.clone()));
        let (trace_id, flags, state) = match parent {
            Some(p) => {
                open.parent = p.span_id();
                (p.trace_id(), p.trace_flags(), p.trace_state().clone())
            }
            None => {
                let (t, f) = self.root(&open.name, &open.kind);
                if !matches!(*self.sampler, Sampler::ParentBased(_)) {
                    open.sampler = Some(Arc::clone(&self.sampler));
                }
                (t, f, TraceState::NONE)
            }
        };
        open.context = SpanContext::new(trace_id, new_span_id(), flags, false, state);
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(open) = ext.get_mut::<Open>() {
            values.record(&mut Fields { open, recorded: true });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else { return };
        if !open.context.is_sampled() {
            return;
        }
        self.processor.on_end(SpanData {
            span_context: open.context,
            parent_span_id: open.parent,
            parent_span_is_remote: open.parent_is_remote,
            span_kind: open.kind,
            name: open.name,
            start_time: open.start,
            end_time: SystemTime::now(),
            attributes: open.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: open.status,
            instrumentation_scope: self.scope.clone(),
        });
    }
}

/// Records a span's fields into its [`Open`] record: those named where the span is opened (each
/// once), or values recorded later (`recorded`), which replace an earlier value of the same field.
struct Fields<'a> {
    open: &'a mut Open,
    recorded: bool,
}

impl Fields<'_> {
    fn text(&mut self, field: &Field, value: Cow<'_, str>) {
        let name = field.name();
        if !name.starts_with("otel.") {
            return self.attribute(name, Value::from(value.into_owned()));
        }
        match name {
            "otel.name" => self.open.name = Cow::Owned(value.into_owned()),
            "otel.kind" => {
                self.open.kind = match value.as_ref() {
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    _ => SpanKind::Internal,
                }
            }
            "otel.status_code" => {
                self.open.status = match value.as_ref() {
                    "ok" | "OK" | "Ok" => Status::Ok,
                    "error" | "ERROR" | "Error" => Status::error(""),
                    _ => Status::Unset,
                }
            }
            "otel.status_message" => {
                if matches!(self.open.status, Status::Error { .. }) {
                    self.open.status = Status::error(value.into_owned());
                }
            }
            name => self.attribute(name, Value::from(value.into_owned())),
        }
    }

    fn attribute(&mut self, name: &'static str, value: Value) {
        let key = Key::from_static_str(name);
        let earlier = if self.recorded { self.open.attributes.iter_mut().find(|kv| kv.key == key) } else { None };
        match earlier {
            Some(kv) => kv.value = value,
            None => self.open.attributes.push(KeyValue::new(key, value)),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, Cow::Borrowed(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attribute(field.name(), Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attribute(field.name(), Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.attribute(field.name(), Value::I64(v)),
            Err(_) => self.attribute(field.name(), Value::from(value.to_string())),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attribute(field.name(), Value::F64(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, Cow::Owned(format!("{value:?}")));
    }
}

/// Runs `f` on the layer's record of `span`; `None` when export is off or the span is not exported.
fn with_open<R>(span: &tracing::Span, f: impl FnOnce(&mut Open) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let mut ext = data.extensions_mut();
        ext.get_mut::<Open>().map(f)
    })
    .flatten()
}

/// The OpenTelemetry context of `span` (its trace id, its own span id and the sampled flag) when it is
/// exported; `None` when export is off or the span is not one of the exported ones.
pub fn context_of(span: &tracing::Span) -> Option<SpanContext> {
    with_open(span, |open| open.context.clone())
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

/// Makes `parent` (a context carried by a message, remote to this process) the parent of `span`, which
/// must have no children yet: the span joins that trace. Whether it is sampled is the parent's
/// decision under a parent-based sampler (the default), else the configured sampler's, for that trace.
pub fn set_remote_parent(span: &tracing::Span, parent: &SpanContext) {
    if !parent.is_valid() {
        return;
    }
    with_open(span, |open| {
        let flags = match &open.sampler {
            None => parent.trace_flags(),
            Some(sampler) => {
                let cx = opentelemetry::Context::new().with_remote_span_context(parent.clone());
                let decision =
                    sampler.should_sample(Some(&cx), parent.trace_id(), &open.name, &open.kind, &open.attributes, &[]);
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
    });
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SimpleSpanProcessor, SpanData};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::{context_of, set_remote_parent, traceparent, ExportLayer};

    /// Runs `f` under a subscriber exporting through `sampler` into memory; returns the spans.
    fn exported(sampler: Sampler, f: impl FnOnce()) -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let layer = ExportLayer::new(std::sync::Arc::new(SimpleSpanProcessor::new(exporter.clone())), sampler);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        exporter.get_finished_spans().unwrap()
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
    }

    #[test]
    fn names_kinds_attributes_and_parents_come_from_the_fields() {
        let spans = exported(Sampler::AlwaysOn, || {
            let root = tracing::info_span!("receive", otel.name = %format_args!("{} receive", "bus"), otel.kind = "consumer", messaging.system = "nats", count = 3u64);
            let child = tracing::info_span!(parent: &root, "attempt", otel.kind = "client", attempt = 2u32, ok = true);
            drop(child);
            drop(root);
        });
        assert_eq!(spans.len(), 2);
        let (child, root) = (&spans[0], &spans[1]);
        assert_eq!(root.name, "bus receive", "otel.name names the span");
        assert_eq!(root.span_kind, SpanKind::Consumer);
        assert_eq!(attr(root, "messaging.system").as_deref(), Some("nats"));
        assert_eq!(attr(root, "count").as_deref(), Some("3"));
        assert!(
            attr(root, "otel.name").is_none() && attr(root, "otel.kind").is_none(),
            "otel.* fields are not attributes"
        );
        assert_eq!(root.parent_span_id, SpanId::INVALID, "a root starts a trace");
        assert_eq!(child.name, "attempt");
        assert_eq!(child.span_kind, SpanKind::Client);
        assert_eq!(attr(child, "attempt").as_deref(), Some("2"));
        assert_eq!(attr(child, "ok").as_deref(), Some("true"));
        assert_eq!(child.span_context.trace_id(), root.span_context.trace_id());
        assert_eq!(child.parent_span_id, root.span_context.span_id());
        assert!(child.start_time <= child.end_time && root.start_time <= child.start_time);
    }

    #[test]
    fn recorded_fields_and_status_are_kept() {
        let spans = exported(Sampler::AlwaysOn, || {
            let span = tracing::info_span!(
                "record",
                status = "PENDING",
                otel.status_code = tracing::field::Empty,
                otel.status_message = tracing::field::Empty
            );
            span.record("status", "SUCCESS");
            span.record("otel.status_code", "error");
            span.record("otel.status_message", "function returned 500");
        });
        assert_eq!(attr(&spans[0], "status").as_deref(), Some("SUCCESS"), "a later record replaces the value");
        assert_eq!(spans[0].status, Status::error("function returned 500"));
    }

    #[test]
    fn a_remote_parent_is_continued_with_its_sampling_decision() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let caller = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let mut seen = None;
        let spans = exported(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), || {
            let sampled = SpanContext::new(trace, caller, TraceFlags::SAMPLED, true, TraceState::NONE);
            let span = tracing::info_span!("receive");
            set_remote_parent(&span, &sampled);
            let child = tracing::info_span!(parent: &span, "route");
            seen = context_of(&child);
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
        let spans = exported(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), || {
            let not_sampled = SpanContext::new(trace, caller, TraceFlags::default(), true, TraceState::NONE);
            let span = tracing::info_span!("receive");
            set_remote_parent(&span, &not_sampled);
            unsampled = context_of(&span);
        });
        assert!(spans.is_empty(), "the caller did not sample the trace");
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
        let spans = exported(Sampler::AlwaysOn, || {
            let span = tracing::info_span!("receive");
            set_remote_parent(&span, &unsampled);
        });
        assert_eq!(spans.len(), 1, "always_on samples whatever the caller decided");
        assert_eq!(spans[0].span_context.trace_id(), trace);
        assert_eq!(spans[0].parent_span_id, caller);
        let spans = exported(Sampler::AlwaysOff, || {
            let span = tracing::info_span!("receive");
            set_remote_parent(&span, &sampled);
        });
        assert!(spans.is_empty(), "always_off drops whatever the caller decided");
    }

    #[test]
    fn an_unsampled_root_has_ids_but_is_not_exported() {
        let mut cx = None;
        let spans = exported(Sampler::TraceIdRatioBased(0.0), || {
            let span = tracing::info_span!("receive");
            cx = context_of(&span);
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
    fn no_context_without_the_layer() {
        let span = tracing::info_span!("receive");
        assert!(context_of(&span).is_none());
    }
}
