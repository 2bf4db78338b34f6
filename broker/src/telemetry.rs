//! Logs and traces: the `tracing` subscriber (text or JSON logs on stderr, filtered by `RUST_LOG`) and,
//! when an OTLP endpoint is configured, an OpenTelemetry layer exporting spans over OTLP/HTTP.
//!
//! The two layers filter separately: logs default to `info`, while the OpenTelemetry layer takes
//! Switchyard's own spans down to `debug` (receive, delivery, attempt, record). With export off there
//! is no OpenTelemetry layer at all, and those `debug` spans are disabled: no cost.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use switchyard_schemas::config::TelemetryConfig;
use tracing::Subscriber;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

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
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("switchyard: trace export did not flush: {e}");
            }
        }
    }
}

/// The OTLP endpoint in effect: the config's, else the standard variables'; `None` when export is off.
pub fn endpoint(config: &TelemetryConfig) -> Option<String> {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    config
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
}

/// A tracer provider exporting to `config`'s endpoint over OTLP/HTTP in batches.
///
/// # Errors
/// When the exporter cannot be built (a bad endpoint URL).
pub fn provider(config: &TelemetryConfig) -> Result<Option<SdkTracerProvider>, String> {
    if endpoint(config).is_none() {
        return Ok(None);
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(base) = &config.otlp_endpoint {
        let base = base.trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
        builder = builder.with_endpoint(url);
    }
    let exporter = builder.build().map_err(|e| format!("telemetry: {e}"))?;
    let service = config
        .service_name
        .clone()
        .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
        .unwrap_or_else(|| "switchyard".to_owned());
    let ratio = config.sample_ratio.unwrap_or(1.0);
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
            .with_resource(Resource::builder().with_service_name(service).build())
            .build(),
    ))
}

/// The OpenTelemetry layer over `provider`: Switchyard's spans down to `debug`, nothing else.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let own_spans = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with("switchyard") && *meta.level() <= tracing::Level::DEBUG
    });
    // The attributes each span carries are the ones named where it is opened. The layer's extras
    // (source file and line, thread, target, busy and idle time) are off: they cost a clock read on
    // every poll of an instrumented future and several attributes per span, and answer nothing about
    // a message. Entering a span does not make its context OpenTelemetry's current one either: trace
    // ids are read from the spans themselves (`OpenTelemetrySpanExt::context`), never from
    // `Context::current`, so that work on every poll would be wasted.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(own_spans)
}

/// Installs the global subscriber: logs in `format` filtered by `RUST_LOG` (default `info`), plus span
/// export when `telemetry` enables it (pass `None` for commands that only talk to a broker).
///
/// # Errors
/// When the exporter cannot be built.
pub fn init(format: LogFormat, telemetry: Option<&TelemetryConfig>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let provider = match telemetry {
        Some(t) => provider(t)?,
        None => None,
    };
    let otel = provider.as_ref().map(otel_layer);
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).init();
    log_panics();
    if let Some(e) = telemetry.and_then(endpoint) {
        tracing::info!(endpoint = %e, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
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
/// the trace its `traceparent` extension names.
pub fn receive_span(system: &'static str, source: &str, event: &switchyard_schemas::CloudEvent) -> tracing::Span {
    use switchyard_schemas::ExtensionValue;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::debug_span!(
        target: "switchyard::receive",
        "receive",
        otel.name = %format_args!("{source} receive"),
        otel.kind = if system == "http" { "server" } else { "consumer" },
        messaging.system = system,
        messaging.destination.name = source,
        messaging.operation.type = "receive",
        messaging.message.id = event.id.as_str(),
        cloudevents.event_id = event.id.as_str(),
        cloudevents.event_source = event.source.as_str(),
        cloudevents.event_type = event.ty.as_str(),
    );
    if let Some(ExtensionValue::String(tp)) = event.extensions.get("traceparent") {
        let state = match event.extensions.get("tracestate") {
            Some(ExtensionValue::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let _ = span.set_parent(remote_parent(tp, state));
    }
    span
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

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
