//! OTLP/HTTP span export: a thread of its own takes the spans the workers have already encoded
//! (`switchyard_dispatcher::spans`) from their queue in batches, wraps them in an
//! `ExportTraceServiceRequest` (the resource and the `switchyard` scope) and POSTs it.
//!
//! Why not `opentelemetry-otlp`'s exporter and the SDK's batch span processor: the processor moves
//! every span through a channel as an SDK `SpanData` (a few hundred bytes of owned strings and
//! vectors, freed on the export thread), and the exporter then copies each one into
//! `opentelemetry-proto`'s message structs before prost encodes them. Counted with callgrind on the
//! trace-export bench's path, that was about 40,000 instructions per event. Here a span's protobuf is
//! written once, by the worker that ends it, and the export thread only frames and sends the bytes.
//!
//! The request is the message `opentelemetry-otlp` sends (a test decodes it with
//! `opentelemetry-proto`'s types). Configuration is the standard one: the endpoint (the config
//! file's `telemetry.otlp_endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`), headers (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
//! `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas, values percent-decoded) and
//! the timeout (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds,
//! default 10 s); batching follows the `OTEL_BSP_*` variables ([`BatchConfig`]). The protocol is
//! `http/protobuf` and requests are not compressed; asking for another protocol or a compression is
//! an error at start.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use switchyard_dispatcher::runtime::http::error_chain;
use switchyard_dispatcher::spans::wire::{bytes_field, message, string_field, tag, varint, varint_len, Scalar, LEN};
use switchyard_dispatcher::spans::{Queue, SCOPE};

/// Where and how spans are sent.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full URL spans are POSTed to (ends in `/v1/traces` unless a signal-specific variable said
    /// otherwise).
    pub url: String,
    /// Extra request headers, for example an API key for a hosted collector.
    pub headers: Vec<(String, String)>,
    /// How long one export request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for OtlpConfig {
    // Header values are often API keys: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("url", &self.url)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The first of `names` that is set (and not empty), with its name.
fn first_set(env: &impl Fn(&str) -> Option<String>, names: [&'static str; 2]) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
}

fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The export settings from the config file's endpoint (`config_endpoint`) and the `OTEL_EXPORTER_OTLP_*`
/// variables `env` reads; `None` when no endpoint is set (export off).
///
/// # Errors
/// A setting that cannot be used, named: an endpoint that is not an http(s) URL, a malformed header
/// list or timeout, or a protocol or compression Switchyard does not send.
pub fn resolve(
    config_endpoint: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, String> {
    let (name, url) =
        match (config_endpoint, first_set(&env, ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]))
        {
            (Some(e), _) if !e.is_empty() => ("telemetry.otlp_endpoint", traces_url(e)),
            (_, Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e))) => {
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e.trim().to_owned())
            }
            (_, Some((n, e))) => (n, traces_url(e.trim())),
            _ => return Ok(None),
        };
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => return Err(format!("{name}: {url:?} is not an http(s) URL")),
    }
    if let Some((n, p)) = first_set(&env, ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
        if !p.trim().eq_ignore_ascii_case("http/protobuf") {
            return Err(format!(
                "{n}={p:?}: Switchyard exports spans over OTLP/HTTP with protobuf only (http/protobuf)"
            ));
        }
    }
    if let Some((n, c)) = first_set(&env, ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"]) {
        if !c.trim().eq_ignore_ascii_case("none") {
            return Err(format!("{n}={c:?}: Switchyard does not compress OTLP requests (use none)"));
        }
    }
    let mut headers = Vec::new();
    if let Some((n, list)) = first_set(&env, ["OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"]) {
        for (i, entry) in list.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            // The value is not repeated in the error: it is often a secret.
            let Some((k, v)) = entry.split_once('=') else {
                return Err(format!("{n}: entry {} is not key=value", i + 1));
            };
            let k = k.trim().to_owned();
            if HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(format!("{n}: {k:?} is not a header name"));
            }
            let bad_value =
                || format!("{n}: the value of header {k:?} is not valid (percent-encode what is not visible ASCII)");
            let v = percent_encoding::percent_decode_str(v.trim()).decode_utf8().map_err(|_| bad_value())?.into_owned();
            if HeaderValue::from_str(&v).is_err() {
                return Err(bad_value());
            }
            headers.push((k, v));
        }
    }
    let timeout = match first_set(&env, ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]) {
        Some((n, t)) => match t.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => return Err(format!("{n}: {t:?} is not a positive number of milliseconds")),
        },
        None => Duration::from_secs(10),
    };
    Ok(Some(OtlpConfig { url, headers, timeout }))
}

/// How spans are batched: the standard `OTEL_BSP_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits before it is sent (default 5 s).
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans that may wait; more are dropped (default 2048).
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per request, at most the queue size (default 512).
    pub max_export_batch_size: usize,
    /// `OTEL_BSP_EXPORT_TIMEOUT`: the longest one request may take, with the OTLP timeout: the
    /// shorter of the two applies (default 30 s).
    pub export_timeout: Duration,
}

impl BatchConfig {
    /// The settings `env` gives, else the defaults.
    ///
    /// # Errors
    /// A value that is not a positive whole number, named.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name}: {v:?} is not a positive whole number")),
                },
            }
        };
        let max_queue_size = usize::try_from(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?).unwrap_or(usize::MAX);
        Ok(Self {
            schedule_delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            max_queue_size,
            max_export_batch_size: usize::try_from(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?)
                .unwrap_or(usize::MAX)
                .min(max_queue_size),
            export_timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?),
        })
    }
}

/// Sends batches of encoded spans to the collector. `send` blocks until the collector answers: it
/// runs on the export thread ([`start`]), never on a tokio worker.
#[derive(Debug)]
pub struct OtlpExporter {
    client: reqwest::blocking::Client,
    url: String,
    headers: HeaderMap,
    /// The encoded `Resource` message's content.
    resource: Vec<u8>,
    resource_schema: String,
    failures: Mutex<Failures>,
}

/// Export failures, so a collector that is down (or fails now and then) gives at most one warning and
/// one recovery line a minute, not one per batch.
#[derive(Debug, Default)]
struct Failures {
    /// The last batch failed.
    failing: bool,
    /// Failed batches not yet counted in a warning.
    unreported: u64,
    warned_at: Option<Instant>,
    recovered_at: Option<Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(60);

fn due(at: Option<Instant>) -> bool {
    at.is_none_or(|t| t.elapsed() >= LOG_EVERY)
}

impl OtlpExporter {
    /// An exporter sending to `config`, each request taking at most `timeout`, with `resource`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &OtlpConfig, timeout: Duration, resource: &Resource) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
            let mut value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        // The blocking client runs a runtime of its own, which must not be created inside tokio's.
        let client = std::thread::spawn(move || reqwest::blocking::Client::builder().timeout(timeout).build())
            .join()
            .map_err(|_| "telemetry: building the OTLP HTTP client panicked".to_owned())?
            .map_err(|e| format!("telemetry: OTLP HTTP client: {e}"))?;
        let mut encoded = Vec::new();
        put_resource(&mut encoded, resource);
        Ok(Self {
            client,
            url: config.url.clone(),
            headers,
            resource: encoded,
            resource_schema: resource.schema_url().unwrap_or_default().to_owned(),
            failures: Mutex::default(),
        })
    }

    fn failed(&self, error: &str) {
        let mut f = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f.failing = true;
        f.unreported += 1;
        if due(f.warned_at) {
            tracing::warn!(url = %self.url, failed_batches = f.unreported, %error, "span export failed; those spans are dropped");
            f.unreported = 0;
            f.warned_at = Some(Instant::now());
        }
    }

    fn succeeded(&self) {
        let mut f = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if std::mem::take(&mut f.failing) && due(f.recovered_at) {
            tracing::info!(url = %self.url, "span export works again");
            f.recovered_at = Some(Instant::now());
        }
    }

    /// POSTs one request holding `spans` (encoded spans, as [`Queue`] keeps them). A failure is
    /// logged (rate-limited) and returned.
    ///
    /// # Errors
    /// The collector's refusal or the transport error, as text.
    pub fn send(&self, spans: &[u8]) -> Result<(), String> {
        let mut body = Vec::with_capacity(spans.len() + self.resource.len() + 64);
        encode_request(&mut body, spans, &self.resource, &self.resource_schema);
        let sent = self.client.post(&self.url).headers(self.headers.clone()).body(body).send();
        let error = match sent {
            Ok(r) if r.status().is_success() => {
                // Read to the end, so the connection is reused for the next batch.
                let _ = r.bytes();
                self.succeeded();
                return Ok(());
            }
            Ok(r) => {
                let status = r.status();
                let kind = r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let body = r.bytes().unwrap_or_default();
                // A collector explains itself in text or JSON; a protobuf `Status` is not shown.
                if kind.starts_with("text/") || kind.contains("json") {
                    format!("HTTP {status}: {}", String::from_utf8_lossy(&body).chars().take(200).collect::<String>())
                } else {
                    format!("HTTP {status} ({} bytes of {kind:?})", body.len())
                }
            }
            Err(e) => error_chain(&e),
        };
        self.failed(&error);
        Err(error)
    }
}

/// The running export thread: stop it with [`Sender::shutdown`].
#[derive(Debug)]
pub struct Sender {
    queue: Arc<Queue>,
    done: mpsc::Receiver<()>,
}

/// Starts the export thread: it sends a batch from `queue` whenever one is full, and what is waiting
/// every `config.schedule_delay`; spans the queue had to drop are logged (at most once a minute).
///
/// # Errors
/// When the thread cannot be started.
pub fn start(exporter: OtlpExporter, queue: Arc<Queue>, config: &BatchConfig) -> Result<Sender, String> {
    let (tx, done) = mpsc::channel();
    let q = Arc::clone(&queue);
    let delay = config.schedule_delay;
    std::thread::Builder::new()
        .name("switchyard-otlp".into())
        .spawn(move || {
            let mut next = Instant::now() + delay;
            let mut dropped_warned: Option<Instant> = None;
            let mut dropped = 0;
            loop {
                let taken = q.wait(next);
                if taken.batch.spans > 0 {
                    let _ = exporter.send(&taken.batch.bytes);
                    q.recycle(taken.batch.bytes);
                }
                dropped += q.take_dropped();
                if dropped > 0 && due(dropped_warned) {
                    tracing::warn!(
                        dropped_spans = dropped,
                        "the span queue was full (OTEL_BSP_MAX_QUEUE_SIZE); those spans were not exported"
                    );
                    dropped = 0;
                    dropped_warned = Some(Instant::now());
                }
                if taken.rest == 0 {
                    if taken.closed {
                        if dropped > 0 {
                            tracing::warn!(
                                dropped_spans = dropped,
                                "the span queue was full (OTEL_BSP_MAX_QUEUE_SIZE); those spans were not exported"
                            );
                        }
                        break;
                    }
                    if Instant::now() >= next {
                        next = Instant::now() + delay;
                    }
                }
            }
            let _ = tx.send(());
        })
        .map_err(|e| format!("telemetry: starting the span export thread: {e}"))?;
    Ok(Sender { queue, done })
}

impl Sender {
    /// Sends what is waiting and stops the thread; false when that took longer than `timeout`.
    pub fn shutdown(self, timeout: Duration) -> bool {
        self.queue.close();
        self.done.recv_timeout(timeout).is_ok()
    }
}

/// An array's elements as `AnyValue`s.
fn elements(a: &Array) -> Vec<Scalar<'_>> {
    match a {
        Array::Bool(v) => v.iter().map(|b| Scalar::Bool(*b)).collect(),
        Array::I64(v) => v.iter().map(|i| Scalar::Int(*i)).collect(),
        Array::F64(v) => v.iter().map(|d| Scalar::Double(*d)).collect(),
        Array::String(v) => v.iter().map(|s| Scalar::Str(s.as_str())).collect(),
        _ => Vec::new(),
    }
}

/// A `KeyValue` message (field `field` of its parent) for an SDK attribute: the resource's.
fn put_attribute(buf: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    let key = kv.key.as_str();
    let other;
    let scalar = match &kv.value {
        Value::String(s) => Scalar::Str(s.as_str()),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::I64(i) => Scalar::Int(*i),
        Value::F64(d) => Scalar::Double(*d),
        Value::Array(a) => {
            let items = elements(a);
            let inner: usize = items.iter().map(|s| 1 + varint_len(s.encoded_len() as u64) + s.encoded_len()).sum();
            let value_len = 1 + varint_len(inner as u64) + inner;
            let key_len = if key.is_empty() { 0 } else { 1 + varint_len(key.len() as u64) + key.len() };
            tag(buf, field, LEN);
            varint(buf, (key_len + 1 + varint_len(value_len as u64) + value_len) as u64);
            string_field(buf, 1, key);
            tag(buf, 2, LEN);
            varint(buf, value_len as u64);
            tag(buf, 5, LEN);
            varint(buf, inner as u64);
            for s in items {
                tag(buf, 1, LEN);
                varint(buf, s.encoded_len() as u64);
                s.put(buf);
            }
            return;
        }
        // A value kind newer than this encoder: sent as its text.
        v => {
            other = v.to_string();
            Scalar::Str(&other)
        }
    };
    switchyard_dispatcher::spans::wire::key_value(buf, field, key, scalar);
}

/// The content of a `Resource` message.
fn put_resource(buf: &mut Vec<u8>, resource: &Resource) {
    for (k, v) in resource.iter() {
        put_attribute(buf, 1, &KeyValue::new(k.clone(), v.clone()));
    }
}

/// An `ExportTraceServiceRequest` for `spans` (encoded spans, as [`Queue`] keeps them): one
/// `ResourceSpans` (the encoded `resource` and its schema URL) with one `ScopeSpans`, Switchyard's.
pub fn encode_request(buf: &mut Vec<u8>, spans: &[u8], resource: &[u8], resource_schema: &str) {
    message(buf, 1, 3, |b| {
        bytes_field(b, 1, resource);
        message(b, 2, 3, |b| {
            message(b, 1, 1, |b| string_field(b, 1, SCOPE));
            b.extend_from_slice(spans);
        });
        string_field(b, 3, resource_schema);
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Array, KeyValue, StringValue, Value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
    use opentelemetry_sdk::trace::Sampler;
    use opentelemetry_sdk::Resource;
    use prost::Message as _;
    use switchyard_dispatcher::spans::{Queue, Tracer};

    use super::{resolve, BatchConfig, OtlpConfig, OtlpExporter};

    /// Three spans through the dispatcher's tracer, encoded as the workers encode them: a root with
    /// every kind of attribute, a child of a remote parent with trace state, and one over 16 KiB.
    fn spans() -> Vec<u8> {
        let queue = Arc::new(Queue::new(100, 100));
        let tracer = Arc::new(Tracer::new(Arc::clone(&queue), Sampler::AlwaysOn));
        let mut root = tracer.root("receive", SpanKind::Consumer);
        root.fill(|f| {
            f.name(&["bus ", "receive ünïcode"])
                .attr("messaging.system", "nats")
                .attr("empty", "")
                .attr("count", -3_i64)
                .attr("big", i64::MAX)
                .attr("ratio", 0.25)
                .attr("ok", false);
        });
        let mut remote = tracer.root("route", SpanKind::Internal);
        remote.set_remote_parent(&SpanContext::new(
            TraceId::from_bytes([3; 16]),
            SpanId::from_bytes([7; 8]),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "x1")]).unwrap(),
        ));
        remote.fill(|f| {
            f.error("function returned 500");
        });
        let mut long = root.child("attempt", SpanKind::Client);
        long.fill(|f| {
            f.attr("long", "x".repeat(20_000).as_str());
        });
        drop((long, remote, root));
        queue.take_all().bytes
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "switchyard"),
                KeyValue::new("host.cores", 2),
                KeyValue::new("tags", Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("")]))),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
            ])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build()
    }

    fn exporter_for(url: &str) -> OtlpExporter {
        let config = OtlpConfig {
            url: url.to_owned(),
            headers: vec![("x-api-key".into(), "secret value".into())],
            timeout: Duration::from_secs(5),
        };
        OtlpExporter::new(&config, config.timeout, &resource()).unwrap()
    }

    fn value(v: Option<&AnyValue>) -> Option<&Any> {
        v.and_then(|v| v.value.as_ref())
    }

    /// Checks a decoded request holds [`spans`] under [`resource`].
    fn check(request: &ExportTraceServiceRequest) {
        assert_eq!(request.resource_spans.len(), 1);
        let rs = &request.resource_spans[0];
        assert_eq!(rs.schema_url, "https://opentelemetry.io/schemas/1.30.0");
        let attrs: HashMap<&str, Option<&Any>> = rs
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), value(kv.value.as_ref())))
            .collect();
        assert_eq!(attrs["service.name"], Some(&Any::StringValue("switchyard".into())));
        assert_eq!(attrs["host.cores"], Some(&Any::IntValue(2)));
        let strings = |v: &[&str]| ArrayValue {
            values: v.iter().map(|s| AnyValue { value: Some(Any::StringValue((*s).into())) }).collect(),
        };
        assert_eq!(attrs["tags"], Some(&Any::ArrayValue(strings(&["a", ""]))));
        assert!(matches!(attrs["flags"], Some(Any::ArrayValue(a)) if a.values.len() == 2));
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("switchyard"));
        let [long, remote, root] = &ss.spans[..] else { panic!("three spans: {:?}", ss.spans.len()) };
        assert_eq!(root.name, "bus receive ünïcode");
        assert_eq!(root.kind, 5);
        let a = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
            s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| value(kv.value.as_ref())).cloned()
        };
        assert_eq!(a(root, "messaging.system"), Some(Any::StringValue("nats".into())));
        assert_eq!(a(root, "empty"), Some(Any::StringValue(String::new())));
        assert_eq!(a(root, "count"), Some(Any::IntValue(-3)));
        assert_eq!(a(root, "big"), Some(Any::IntValue(i64::MAX)));
        assert_eq!(a(root, "ratio"), Some(Any::DoubleValue(0.25)));
        assert_eq!(a(root, "ok"), Some(Any::BoolValue(false)));
        assert_eq!((root.flags, root.parent_span_id.len(), root.status.as_ref().map(|s| s.code)), (0x101, 0, Some(0)));
        assert!(
            root.start_time_unix_nano > 1_700_000_000_000_000_000
                && root.start_time_unix_nano <= root.end_time_unix_nano
        );
        assert_eq!(remote.trace_id, vec![3; 16]);
        assert_eq!(remote.parent_span_id, vec![7; 8]);
        assert_eq!(remote.trace_state, "vendor=x1");
        assert_eq!(remote.flags, 0x301, "the parent is remote");
        let status = remote.status.clone().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "function returned 500"));
        assert_eq!(long.parent_span_id, root.span_id);
        assert!(matches!(a(long, "long"), Some(Any::StringValue(s)) if s.len() == 20_000));
    }

    #[test]
    fn the_request_decodes_as_the_otlp_message() {
        let e = exporter_for("http://127.0.0.1:1/v1/traces");
        let mut body = Vec::new();
        super::encode_request(&mut body, &spans(), &e.resource, &e.resource_schema);
        check(&ExportTraceServiceRequest::decode(body.as_slice()).expect("our request decodes"));
    }

    #[test]
    fn an_empty_batch_and_an_empty_resource_encode() {
        let mut body = Vec::new();
        super::encode_request(&mut body, &[], &[], "");
        let ours = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(ours.resource_spans[0].scope_spans[0].spans.len(), 0);
        assert_eq!(ours.resource_spans[0].resource.as_ref().map(|r| r.attributes.len()), Some(0));
    }

    /// Reads one HTTP/1.1 request from `listener` and answers it with `status`; returns the request
    /// head (lowercased) and body.
    fn serve_one(listener: &std::net::TcpListener, status: &str) -> (String, Vec<u8>) {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
        )
        .unwrap();
        (head, body)
    }

    #[test]
    fn send_posts_protobuf_with_the_configured_headers_and_reports_rejections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            (serve_one(&listener, "200 OK"), serve_one(&listener, "503 Service Unavailable"))
        });
        let e = exporter_for(&url);
        e.send(&spans()).expect("a 200 is a success");
        let err = e.send(&spans()).expect_err("a 503 is a failure");
        assert!(err.contains("503") && err.contains("nope"), "the collector's reason is kept: {err}");
        let ((head, body), _) = server.join().unwrap();
        assert!(head.starts_with("post /v1/traces http/1.1"), "{head}");
        assert!(head.contains("content-type: application/x-protobuf"), "{head}");
        assert!(head.contains("x-api-key: secret value"), "{head}");
        check(&ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
        let err = exporter_for("http://127.0.0.1:1/v1/traces").send(&spans()).expect_err("nothing listens on port 1");
        assert!(err.to_lowercase().contains("refused"), "the cause is reported: {err}");
    }

    #[test]
    fn the_export_thread_sends_full_batches_and_the_rest_at_shutdown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || (serve_one(&listener, "200 OK"), serve_one(&listener, "200 OK")));
        let queue = Arc::new(Queue::new(10, 2));
        let config =
            BatchConfig { schedule_delay: Duration::from_secs(3600), ..BatchConfig::from_env(|_| None).unwrap() };
        let sender = super::start(exporter_for(&url), Arc::clone(&queue), &config).unwrap();
        let tracer = Arc::new(Tracer::new(Arc::clone(&queue), Sampler::AlwaysOn));
        for _ in 0..3 {
            drop(tracer.root("receive", SpanKind::Consumer));
        }
        // The first two are a full batch, sent at once; the third waits for the hour-long timer, or
        // for shutdown.
        assert!(sender.shutdown(Duration::from_secs(10)), "the last batch was sent in time");
        let ((_, first), (_, second)) = server.join().unwrap();
        let count =
            |b: &[u8]| ExportTraceServiceRequest::decode(b).unwrap().resource_spans[0].scope_spans[0].spans.len();
        assert_eq!((count(&first), count(&second)), (2, 1));
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn settings_follow_the_standard_variables() {
        assert_eq!(resolve(None, env(&[])).unwrap(), None, "no endpoint: export off");
        let c = resolve(Some("http://collector:4318/"), env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.url, "http://collector:4318/v1/traces", "the config file's endpoint comes first");
        assert_eq!(c.timeout, Duration::from_secs(10));
        let c = resolve(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318/base")])).unwrap().unwrap();
        assert_eq!(c.url, "https://c:4318/base/v1/traces");
        let c = resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9999/custom"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", " api-key = s%20t , x=y=z ,"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.url, "http://t:9999/custom", "the traces endpoint is used as given");
        assert_eq!(c.headers, vec![("api-key".to_owned(), "s t".to_owned()), ("x".to_owned(), "y=z".to_owned())]);
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert!(!format!("{c:?}").contains("s t"), "Debug does not show header values: {c:?}");
    }

    #[test]
    fn unusable_settings_are_errors_that_name_them() {
        let e = |vars: &[(&str, &str)]| resolve(None, env(vars)).unwrap_err();
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(e(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]).contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
        assert!(resolve(Some("ftp://c"), env(&[])).unwrap_err().contains("telemetry.otlp_endpoint"));
        assert!(e(&[base, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]).contains("OTEL_EXPORTER_OTLP_HEADERS"));
        assert!(e(&[base, ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad name=1")])
            .contains("OTEL_EXPORTER_OTLP_TRACES_HEADERS"));
        assert!(e(&[base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).contains("OTEL_EXPORTER_OTLP_TIMEOUT"));
        assert!(e(&[base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "0")]).contains("OTEL_EXPORTER_OTLP_TIMEOUT"));
        let secret = e(&[base, ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr\u{7f}t")]);
        assert!(secret.contains("api-key") && !secret.contains("s3cr"), "values are not repeated: {secret}");
        assert!(e(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).contains("OTEL_EXPORTER_OTLP_PROTOCOL"));
        assert!(e(&[base, ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")])
            .contains("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"));
    }

    #[test]
    fn batching_follows_the_bsp_variables() {
        let d = BatchConfig::from_env(env(&[])).unwrap();
        assert_eq!(
            (d.schedule_delay, d.max_queue_size, d.max_export_batch_size, d.export_timeout),
            (Duration::from_secs(5), 2048, 512, Duration::from_secs(30))
        );
        let c = BatchConfig::from_env(env(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
        ]))
        .unwrap();
        assert_eq!(c.schedule_delay, Duration::from_millis(250));
        assert_eq!((c.max_queue_size, c.max_export_batch_size), (100, 100), "a batch is at most the queue");
        assert_eq!(c.export_timeout, Duration::from_secs(2));
        for (name, bad) in
            [("OTEL_BSP_MAX_QUEUE_SIZE", "lots"), ("OTEL_BSP_SCHEDULE_DELAY", "0"), ("OTEL_BSP_EXPORT_TIMEOUT", "-1")]
        {
            let err = BatchConfig::from_env(env(&[(name, bad)])).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }
}
