//! Logs and traces: the `tracing` subscriber (text or JSON logs on stderr, filtered by `RUST_LOG`) and,
//! when an OTLP endpoint is configured, the span tracer ([`switchyard_dispatcher::spans`]) feeding the
//! OpenTelemetry SDK's batch span processor and Switchyard's OTLP/HTTP exporter ([`crate::otlp`]).
//!
//! The two are separate: logs go through `tracing`, while each message's spans (receive, route,
//! attempt, record write) are built by `spans` directly. With export off no tracer is installed and
//! those spans are `None`: no cost.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::SpanKind;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SpanProcessor};
use opentelemetry_sdk::Resource;
use switchyard_dispatcher::spans::{self, Span, Tracer};
use switchyard_schemas::config::TelemetryConfig;
use tracing::Subscriber;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::otlp::{self, OtlpConfig, OtlpExporter};

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The running exporter; flushes on [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    processor: Option<Arc<dyn SpanProcessor>>,
    /// How long the last flush may take: one export request's timeout, and a little more.
    flush_timeout: Duration,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.processor.is_some()
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.processor {
            if let Err(e) = p.shutdown_with_timeout(self.flush_timeout) {
                eprintln!("switchyard: trace export did not flush: {e}");
            }
        }
    }
}

/// Where finished spans go, and how new traces are sampled.
#[derive(Debug, Clone)]
pub struct Export {
    /// One export request's timeout.
    pub timeout: Duration,
    /// Takes each finished span (the batch processor over the OTLP exporter in `serve`).
    pub processor: Arc<dyn SpanProcessor>,
    /// Decides for each trace that starts here, and, unless it is parent-based (the default), also for
    /// traces that arrive with a `traceparent` (see [`sampler`]).
    pub sampler: Sampler,
}

impl Export {
    /// The span tracer over this export (see [`switchyard_dispatcher::spans::install`]).
    pub fn tracer(&self) -> Tracer {
        Tracer::new(Arc::clone(&self.processor), self.sampler.clone())
    }
}

/// The OTLP export settings in effect (the config file's endpoint, else the standard variables');
/// `None` when export is off, including when `OTEL_SDK_DISABLED=true`.
///
/// # Errors
/// A setting that cannot be used, named (see [`otlp::resolve`]).
pub fn otlp_config(config: &TelemetryConfig) -> Result<Option<OtlpConfig>, String> {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    otlp::resolve(config.otlp_endpoint.as_deref(), |name| std::env::var(name).ok())
        .map_err(|e| format!("telemetry: {e}"))
}

/// Span export to `otlp` (see [`otlp_config`]) over OTLP/HTTP in batches: the SDK's batch processor,
/// which reads the standard `OTEL_BSP_*` variables, over [`otlp::OtlpExporter`]; sampled and named as
/// `config` and the standard variables say.
///
/// # Errors
/// A setting that cannot be used (the sampler), or an HTTP client that cannot be built.
pub fn export(config: &TelemetryConfig, otlp: &OtlpConfig) -> Result<Export, String> {
    let exporter = OtlpExporter::new(otlp)?;
    let sampler = sampler(config.sample_ratio, |name| std::env::var(name).ok())?;
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(&resource(config.service_name.as_deref()));
    Ok(Export { timeout: otlp.timeout, processor: Arc::new(processor), sampler })
}

/// The sampler for traces that start here: the config file's `sample_ratio` (parent-based: a
/// message's own `traceparent` decides for its trace), else the standard `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG`, else `parentbased_always_on`.
///
/// # Errors
/// A sampler Switchyard does not have, or an argument that is not a ratio from 0 to 1, named.
pub fn sampler(config_ratio: Option<f64>, env: impl Fn(&str) -> Option<String>) -> Result<Sampler, String> {
    if let Some(r) = config_ratio {
        return Ok(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))));
    }
    let ratio = || match env("OTEL_TRACES_SAMPLER_ARG").filter(|a| !a.trim().is_empty()) {
        None => Ok(1.0),
        Some(a) => match a.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!("telemetry: OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio from 0 to 1")),
        },
    };
    // Values are case-insensitive (the spec's rule for enum variables). Unlike the spec, which has an
    // unknown value ignored with a warning, an unknown sampler stops `serve`: a typo would otherwise
    // export every trace, or none, without anyone noticing.
    let name = env("OTEL_TRACES_SAMPLER").unwrap_or_default().trim().to_ascii_lowercase();
    Ok(match name.as_str() {
        "" | "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?))),
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        other => {
            return Err(format!(
                "telemetry: OTEL_TRACES_SAMPLER={other:?} is not supported (always_on, always_off, traceidratio, or parentbased_ with one of those)"
            ))
        }
    })
}

/// The resource spans are exported with: what the SDK detects (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with the config file's `service_name` over it, and `switchyard` as the
/// service name when nothing names one.
fn resource(service_name: Option<&str>) -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|v| v.as_str().is_empty() || v.as_str().starts_with("unknown_service"));
    match service_name {
        Some(name) => Resource::builder().with_service_name(name.to_owned()).build(),
        None if unnamed => Resource::builder().with_service_name("switchyard").build(),
        None => detected,
    }
}

/// Installs the global subscriber: logs in `format` filtered by `RUST_LOG` (default `info`), plus span
/// export when `telemetry` enables it (pass `None` for commands that only talk to a broker).
///
/// # Errors
/// When the exporter cannot be built.
pub fn init(format: LogFormat, telemetry: Option<&TelemetryConfig>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (export, url) = match telemetry {
        Some(t) => match otlp_config(t)? {
            Some(otlp) => (Some(export(t, &otlp)?), Some(otlp.url)),
            None => (None, None),
        },
        None => (None, None),
    };
    subscriber(format, filter, std::io::stderr).init();
    log_panics();
    if let Some(e) = &export {
        spans::install(e.tracer()).map_err(str::to_owned)?;
    }
    if let Some(url) = url {
        tracing::info!(%url, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry {
        flush_timeout: export.as_ref().map_or(Duration::ZERO, |e| e.timeout + Duration::from_secs(1)),
        processor: export.map(|e| e.processor),
    })
}

/// The subscriber [`init`] installs: logs to `writer` in `format` filtered by `filter`.
fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry().with(fmt.with_filter(filter))
}

/// Panics also go to the log (as ERROR, JSON when the log is JSON), not only to stderr's default
/// message: a panicking task stops only itself, and what it was doing (an ack, a record) is then
/// left unfinished, so it must be visible where operators look.
fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), %location, "panic: {message}");
        previous(info);
    }));
}

/// The OpenTelemetry context a W3C `traceparent` (and `tracestate`) value names: the parent of the
/// receive span, so a message's trace continues.
pub fn remote_parent(traceparent: &str, tracestate: Option<&str>) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&TraceHeaders { traceparent, tracestate })
}

/// The two trace-context values of a message, read in place.
struct TraceHeaders<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl opentelemetry::propagation::Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = vec!["traceparent"];
        keys.extend(self.tracestate.map(|_| "tracestate"));
        keys
    }
}

/// The span of one message arriving from a source (OpenTelemetry messaging conventions), continuing
/// the trace its `traceparent` extension names; [`Span::none`] when export is off.
pub fn receive_span(system: &'static str, source: &str, event: &switchyard_schemas::CloudEvent) -> Span {
    spans::installed().map_or(Span::none(), |t| receive_span_of(t, system, source, event))
}

fn receive_span_of(
    tracer: &Arc<Tracer>,
    system: &'static str,
    source: &str,
    event: &switchyard_schemas::CloudEvent,
) -> Span {
    use switchyard_schemas::ExtensionValue;
    // A root, whatever the source's task is doing: every message starts its own trace unless its
    // `traceparent` names one.
    let kind = if system == "http" { SpanKind::Server } else { SpanKind::Consumer };
    let mut span = tracer.root("receive", kind);
    if let Some(ExtensionValue::String(tp)) = event.extensions.get("traceparent") {
        let state = match event.extensions.get("tracestate") {
            Some(ExtensionValue::String(s)) => Some(s.as_str()),
            _ => None,
        };
        span.set_remote_parent(remote_parent(tp, state).span().span_context());
    }
    span.fill(|f| {
        let id: Arc<str> = Arc::from(event.id.as_str());
        f.name(format!("{source} receive"))
            .attr("messaging.system", system)
            .attr("messaging.destination.name", source.to_owned())
            .attr("messaging.operation.type", "receive")
            .attr("messaging.message.id", Arc::clone(&id))
            .attr("cloudevents.event_id", id)
            .attr("cloudevents.event_source", event.source.clone())
            .attr("cloudevents.event_type", event.ty.clone());
    });
    span
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{TraceContextExt as _, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SimpleSpanProcessor};

    #[test]
    fn the_receive_span_continues_the_message_trace() {
        let exporter = InMemorySpanExporter::default();
        let export = super::Export {
            timeout: std::time::Duration::from_secs(1),
            processor: Arc::new(SimpleSpanProcessor::new(exporter.clone())),
            sampler: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        };
        let tracer = Arc::new(export.tracer());
        let event: switchyard_schemas::CloudEvent = serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": "e-1", "source": "/t", "type": "t",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        }))
        .unwrap();
        let receive = super::receive_span_of(&tracer, "nats", "bus", &event);
        let cx = receive.context().cloned().expect("the receive span is exported");
        assert_eq!(cx.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        let route = receive.child("route", opentelemetry::trace::SpanKind::Internal);
        assert_eq!(route.context().map(|c| c.trace_id()), Some(cx.trace_id()), "a child is in the trace");
        drop((route, receive));
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 2, "receive and route are exported");
        let receive = spans.iter().find(|s| s.name == "bus receive").expect("the receive span is named");
        assert_eq!(receive.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(receive.parent_span_is_remote);
        let attr = |k: &str| receive.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
        assert_eq!(attr("messaging.system").as_deref(), Some("nats"));
        assert_eq!(attr("cloudevents.event_id").as_deref(), Some("e-1"));
        let remote = super::remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None);
        assert!(remote.span().span_context().is_remote());
        assert!(super::receive_span("nats", "bus", &event).context().is_none(), "no tracer installed: no span");
    }

    #[test]
    fn the_sampler_comes_from_the_config_else_the_standard_variables() {
        use opentelemetry_sdk::trace::Sampler;
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        let show = |s: Sampler| format!("{s:?}");
        let parent_based = |inner: Sampler| show(Sampler::ParentBased(Box::new(inner)));
        assert_eq!(show(super::sampler(None, env(&[])).unwrap()), parent_based(Sampler::AlwaysOn));
        assert_eq!(
            show(super::sampler(Some(0.25), env(&[("OTEL_TRACES_SAMPLER", "always_off")])).unwrap()),
            parent_based(Sampler::TraceIdRatioBased(0.25)),
            "the config file's ratio wins"
        );
        let ratio = env(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")]);
        assert_eq!(show(super::sampler(None, ratio).unwrap()), show(Sampler::TraceIdRatioBased(0.1)));
        let parent_ratio = env(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")]);
        assert_eq!(show(super::sampler(None, parent_ratio).unwrap()), parent_based(Sampler::TraceIdRatioBased(1.0)));
        assert_eq!(
            show(super::sampler(None, env(&[("OTEL_TRACES_SAMPLER", "always_on")])).unwrap()),
            show(Sampler::AlwaysOn)
        );
        let err = super::sampler(None, env(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")])).unwrap_err();
        assert!(err.contains("OTEL_TRACES_SAMPLER") && err.contains("jaeger_remote"), "{err}");
        let bad = env(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "1.5")]);
        assert!(super::sampler(None, bad).unwrap_err().contains("OTEL_TRACES_SAMPLER_ARG"));
    }

    #[test]
    fn the_service_is_named_by_the_config_else_the_environment_else_switchyard() {
        let name = |r: opentelemetry_sdk::Resource| {
            r.get(&opentelemetry::Key::from_static_str("service.name")).map(|v| v.as_str().into_owned())
        };
        assert_eq!(name(super::resource(Some("orders"))).as_deref(), Some("orders"));
        let named_by_env = ["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"].iter().any(|v| std::env::var(v).is_ok());
        if !named_by_env {
            assert_eq!(name(super::resource(None)).as_deref(), Some("switchyard"));
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn panics_are_logged_as_errors() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).with_ansi(false).finish();
        super::log_panics();
        tracing::subscriber::with_default(subscriber, || {
            let r = std::panic::catch_unwind(|| panic!("the ack task lost its way"));
            assert!(r.is_err());
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("\"level\":\"ERROR\""), "{text}");
        assert!(text.contains("panic: the ack task lost its way"), "{text}");
        assert!(text.contains("telemetry.rs"), "the location is logged: {text}");
    }
}
