//! Logs and traces: the `tracing` subscriber (text or JSON logs on stderr, filtered by `RUST_LOG`) and,
//! when an OTLP endpoint is configured, the span tracer ([`switchyard_dispatcher::spans`]) feeding the
//! queue Switchyard's OTLP/HTTP export thread sends from ([`crate::otlp`]).
//!
//! The two are separate: logs go through `tracing`, while each message's spans (receive, route,
//! attempt, record write) are built by `spans` directly. With export off no tracer is installed and
//! those spans are `None`: no cost.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::Sampler;
use opentelemetry_sdk::Resource;
use switchyard_dispatcher::spans::{self, Queue, Span, Tracer};
use switchyard_schemas::config::TelemetryConfig;
use tracing::Subscriber;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::otlp::{self, BatchConfig, OtlpConfig, OtlpExporter};

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
    sender: Option<otlp::Sender>,
    /// How long the last flush may take: one export request's timeout, and a little more.
    flush_timeout: Duration,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.sender.is_some()
    }

    /// Exports what is waiting and stops the exporter.
    pub fn shutdown(self) {
        if let Some(s) = self.sender {
            if !s.shutdown(self.flush_timeout) {
                eprintln!("switchyard: trace export did not flush within {:?}", self.flush_timeout);
            }
        }
    }
}

/// Span export, running: where finished spans go, and how new traces are sampled.
#[derive(Debug)]
pub struct Export {
    /// One export request's timeout.
    pub timeout: Duration,
    /// The queue finished spans wait in.
    pub queue: Arc<Queue>,
    /// Decides for each trace that starts here, and, unless it is parent-based (the default), also for
    /// traces that arrive with a `traceparent` (see [`sampler`]).
    pub sampler: Sampler,
    sender: otlp::Sender,
}

impl Export {
    /// The span tracer over this export (see [`switchyard_dispatcher::spans::install`]).
    pub fn tracer(&self) -> Tracer {
        Tracer::new(Arc::clone(&self.queue), self.sampler.clone())
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

/// Span export to `otlp` (see [`otlp_config`]) over OTLP/HTTP in batches, as the standard `OTEL_BSP_*`
/// variables say ([`BatchConfig`]), from a thread of its own (started here); sampled and named as
/// `config` and the standard variables say.
///
/// # Errors
/// A setting that cannot be used (the sampler, a batching variable), or an HTTP client or thread that
/// cannot be started.
pub fn export(config: &TelemetryConfig, otlp: &OtlpConfig) -> Result<Export, String> {
    let env = |name: &str| std::env::var(name).ok();
    let sampler = sampler(config.sample_ratio, env)?;
    let batching = BatchConfig::from_env(env).map_err(|e| format!("telemetry: {e}"))?;
    let timeout = otlp.timeout.min(batching.export_timeout);
    let exporter = OtlpExporter::new(otlp, timeout, &resource(config.service_name.as_deref()))?;
    let queue = Arc::new(Queue::new(batching.max_queue_size, batching.max_export_batch_size));
    let sender = otlp::start(exporter, Arc::clone(&queue), &batching)?;
    Ok(Export { timeout, queue, sampler, sender })
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
    let mut telemetry = Telemetry::default();
    if let Some(e) = export {
        spans::install(e.tracer()).map_err(str::to_owned)?;
        telemetry = Telemetry { flush_timeout: e.timeout + Duration::from_secs(1), sender: Some(e.sender) };
    }
    if let Some(url) = url {
        tracing::info!(%url, "exporting traces over OTLP/HTTP");
    }
    Ok(telemetry)
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
    // A root, whatever the source's task is doing: every message starts its own trace unless its
    // `traceparent` names one.
    let kind = if system == "http" { SpanKind::Server } else { SpanKind::Consumer };
    let mut span = tracer.continuing("receive", kind, event);
    span.fill(|f| {
        f.name(&[source, " receive"])
            .attr("messaging.system", system)
            .attr("messaging.destination.name", source)
            .attr("messaging.operation.type", "receive")
            .attr("messaging.message.id", event.id.as_str())
            .attr("cloudevents.event_id", event.id.as_str())
            .attr("cloudevents.event_source", event.source.as_str())
            .attr("cloudevents.event_type", event.ty.as_str());
    });
    span
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceId;
    use opentelemetry_sdk::trace::Sampler;
    use switchyard_dispatcher::spans::{Queue, Tracer};

    #[test]
    fn the_receive_span_continues_the_message_trace() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
        use prost::Message as _;
        let queue = Arc::new(Queue::new(100, 100));
        let tracer = Arc::new(Tracer::new(Arc::clone(&queue), Sampler::ParentBased(Box::new(Sampler::AlwaysOn))));
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
        let spans = ScopeSpans::decode(queue.take_all().bytes.as_slice()).unwrap().spans;
        assert_eq!(spans.len(), 2, "receive and route are exported");
        let receive = spans.iter().find(|s| s.name == "bus receive").expect("the receive span is named");
        assert_eq!(receive.parent_span_id, 0x00f0_67aa_0ba9_02b7_u64.to_be_bytes());
        assert_eq!(receive.flags & 0x200, 0x200, "the parent is remote");
        let attr = |k: &str| {
            receive.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
        };
        assert_eq!(attr("messaging.system"), Some(Any::StringValue("nats".into())));
        assert_eq!(attr("cloudevents.event_id"), Some(Any::StringValue("e-1".into())));
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
