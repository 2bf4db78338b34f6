//! OTLP/HTTP span export: the SDK's batch span processor hands each batch of `SpanData` to
//! [`OtlpExporter`], which writes the OTLP protobuf request straight from it and POSTs it.
//!
//! Why not `opentelemetry-otlp`'s exporter: it first builds `opentelemetry-proto`'s message structs
//! from a clone of every span (every attribute key and value copied into new `String`s, spans grouped
//! through a `HashMap`), then has prost encode those. Counted with callgrind on the trace-export
//! bench's path, that conversion and encoding took about 39,000 instructions per event (four spans) on
//! the export thread, more than the tokio workers spend opening and closing the spans. Writing the
//! protobuf from the spans themselves skips the copies.
//!
//! The request is the one `opentelemetry-otlp` 0.31 sends, field for field: a test decodes ours with
//! `opentelemetry-proto`'s types and compares it with that crate's own conversion of the same spans.
//!
//! Configuration is the standard one: the endpoint (the config file's `telemetry.otlp_endpoint`, else
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`),
//! headers (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs
//! separated by commas, values percent-decoded) and the timeout (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
//! else `OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds, default 10 s). The protocol is `http/protobuf` and
//! requests are not compressed; asking for another protocol or a compression is an error at start.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use switchyard_dispatcher::runtime::http::error_chain;

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

/// The span exporter the batch processor drives. `export` blocks until the collector answers: run it on
/// the batch processor's own thread, never on a tokio worker.
#[derive(Debug)]
pub struct OtlpExporter {
    client: Option<reqwest::blocking::Client>,
    url: String,
    headers: HeaderMap,
    /// The encoded `Resource` message (set by the processor from the configured resource).
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
    /// An exporter sending to `config`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &OtlpConfig) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
            let mut value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        // The blocking client runs a runtime of its own, which must not be created inside tokio's.
        let timeout = config.timeout;
        let client = std::thread::spawn(move || reqwest::blocking::Client::builder().timeout(timeout).build())
            .join()
            .map_err(|_| "telemetry: building the OTLP HTTP client panicked".to_owned())?
            .map_err(|e| format!("telemetry: OTLP HTTP client: {e}"))?;
        let mut resource = Vec::new();
        put_resource(&mut resource, &Resource::builder_empty().build());
        Ok(Self {
            client: Some(client),
            url: config.url.clone(),
            headers,
            resource,
            resource_schema: String::new(),
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
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let Some(client) = &self.client else { return Err(OTelSdkError::AlreadyShutdown) };
        let mut body = Vec::with_capacity(64 + batch.len() * 384);
        encode_request(&mut body, &batch, &self.resource, &self.resource_schema);
        drop(batch);
        let sent = client.post(&self.url).headers(self.headers.clone()).body(body).send();
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
        Err(OTelSdkError::InternalFailure(error))
    }

    fn shutdown_with_timeout(&mut self, _timeout: Duration) -> OTelSdkResult {
        self.client.take().map(drop).ok_or(OTelSdkError::AlreadyShutdown)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource.clear();
        put_resource(&mut self.resource, resource);
        self.resource_schema = resource.schema_url().unwrap_or_default().to_owned();
    }
}

// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/). Field numbers are those of
// opentelemetry-proto's trace.proto, common.proto, resource.proto and trace_service.proto.

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from(field << 3 | wire));
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A string field; proto3 leaves an empty one out.
fn string_field(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(buf, field, s.as_bytes());
    }
}

fn uint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

fn fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32_field(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A message field whose content `write` appends; its length goes in front once known. `guess` bytes
/// are kept for the length (1 for up to 127 bytes, 2 for up to 16 KiB, 3 for up to 2 MiB), so the content moves only when
/// the guess was wrong.
fn message(buf: &mut Vec<u8>, field: u32, guess: usize, write: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, LEN);
    let at = buf.len();
    buf.resize(at + guess, 0);
    write(buf);
    let len = buf.len() - at - guess;
    let mut prefix = Vec::with_capacity(10);
    varint(&mut prefix, len as u64);
    match prefix.len().cmp(&guess) {
        std::cmp::Ordering::Equal => {}
        std::cmp::Ordering::Less => {
            buf.copy_within(at + guess.., at + prefix.len());
            buf.truncate(at + prefix.len() + len);
        }
        std::cmp::Ordering::Greater => {
            buf.splice(at..at, std::iter::repeat_n(0, prefix.len() - guess));
        }
    }
    buf[at..at + prefix.len()].copy_from_slice(&prefix);
}

/// One value of an `AnyValue` (common.proto), borrowed from an attribute.
enum Scalar<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl Scalar<'_> {
    /// The encoded `AnyValue` message's length (the `oneof` member is always written).
    fn len(&self) -> usize {
        match self {
            Scalar::Str(s) => 1 + varint_len(s.len() as u64) + s.len(),
            Scalar::Bool(_) => 2,
            Scalar::Int(i) => 1 + varint_len(*i as u64),
            Scalar::Double(_) => 9,
        }
    }

    fn put(&self, buf: &mut Vec<u8>) {
        match self {
            Scalar::Str(s) => bytes_field(buf, 1, s.as_bytes()),
            Scalar::Bool(b) => {
                tag(buf, 2, VARINT);
                buf.push(u8::from(*b));
            }
            Scalar::Int(i) => {
                tag(buf, 3, VARINT);
                varint(buf, *i as u64);
            }
            Scalar::Double(d) => {
                tag(buf, 4, FIXED64);
                buf.extend_from_slice(&d.to_le_bytes());
            }
        }
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

/// A `KeyValue` message (field `field` of its parent).
fn put_attribute(buf: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    let key = kv.key.as_str();
    let key_len = if key.is_empty() { 0 } else { 1 + varint_len(key.len() as u64) + key.len() };
    let other;
    let (value_len, scalar, array) = match &kv.value {
        Value::String(s) => {
            let s = Scalar::Str(s.as_str());
            (s.len(), Some(s), None)
        }
        Value::Bool(b) => (2, Some(Scalar::Bool(*b)), None),
        Value::I64(i) => (Scalar::Int(*i).len(), Some(Scalar::Int(*i)), None),
        Value::F64(d) => (9, Some(Scalar::Double(*d)), None),
        Value::Array(a) => {
            let items = elements(a);
            let inner: usize = items.iter().map(|s| 1 + varint_len(s.len() as u64) + s.len()).sum();
            (1 + varint_len(inner as u64) + inner, None, Some((items, inner)))
        }
        // A value kind newer than this encoder: sent as its text.
        v => {
            other = v.to_string();
            let s = Scalar::Str(&other);
            (s.len(), Some(s), None)
        }
    };
    tag(buf, field, LEN);
    varint(buf, (key_len + 1 + varint_len(value_len as u64) + value_len) as u64);
    string_field(buf, 1, key);
    tag(buf, 2, LEN);
    varint(buf, value_len as u64);
    if let Some(s) = scalar {
        s.put(buf);
    }
    if let Some((items, inner)) = array {
        tag(buf, 5, LEN);
        varint(buf, inner as u64);
        for s in items {
            tag(buf, 1, LEN);
            varint(buf, s.len() as u64);
            s.put(buf);
        }
    }
}

/// The content of a `Resource` message.
fn put_resource(buf: &mut Vec<u8>, resource: &Resource) {
    for (k, v) in resource.iter() {
        put_attribute(buf, 1, &KeyValue::new(k.clone(), v.clone()));
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// `Span.flags` / `Link.flags`: the W3C trace flags, plus whether the parent (or linked) context is
/// remote, with the bit that says that is known.
fn flags(cx: &SpanContext, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(cx.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

/// The content of a `Span` message.
fn put_span(buf: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    bytes_field(buf, 1, &cx.trace_id().to_bytes());
    bytes_field(buf, 2, &cx.span_id().to_bytes());
    string_field(buf, 3, &cx.trace_state().header());
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        bytes_field(buf, 4, &span.parent_span_id.to_bytes());
    }
    string_field(buf, 5, &span.name);
    let kind = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    uint_field(buf, 6, kind);
    fixed64_field(buf, 7, nanos(span.start_time));
    fixed64_field(buf, 8, nanos(span.end_time));
    for kv in &span.attributes {
        put_attribute(buf, 9, kv);
    }
    uint_field(buf, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        message(buf, 11, 1, |b| {
            fixed64_field(b, 1, nanos(event.timestamp));
            string_field(b, 2, &event.name);
            for kv in &event.attributes {
                put_attribute(b, 3, kv);
            }
            uint_field(b, 4, u64::from(event.dropped_attributes_count));
        });
    }
    uint_field(buf, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        message(buf, 13, 1, |b| {
            let lcx = &link.span_context;
            bytes_field(b, 1, &lcx.trace_id().to_bytes());
            bytes_field(b, 2, &lcx.span_id().to_bytes());
            string_field(b, 3, &lcx.trace_state().header());
            for kv in &link.attributes {
                put_attribute(b, 4, kv);
            }
            uint_field(b, 5, u64::from(link.dropped_attributes_count));
            fixed32_field(b, 6, flags(lcx, lcx.is_remote()));
        });
    }
    uint_field(buf, 14, u64::from(span.links.dropped_count));
    message(buf, 15, 1, |b| match &span.status {
        Status::Unset => {}
        Status::Ok => uint_field(b, 3, 1),
        Status::Error { description } => {
            string_field(b, 2, description);
            uint_field(b, 3, 2);
        }
    });
    fixed32_field(buf, 16, flags(cx, span.parent_span_is_remote));
}

/// The content of an `InstrumentationScope` message.
fn put_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    string_field(buf, 1, scope.name());
    string_field(buf, 2, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        put_attribute(buf, 3, kv);
    }
}

/// An `ExportTraceServiceRequest` for `spans`: one `ResourceSpans` (the encoded `resource` and its
/// schema URL) with one `ScopeSpans` per instrumentation scope, in order of first appearance.
pub fn encode_request(buf: &mut Vec<u8>, spans: &[SpanData], resource: &[u8], resource_schema: &str) {
    let mut scopes: Vec<&InstrumentationScope> = Vec::new();
    for s in spans {
        if !scopes.contains(&&s.instrumentation_scope) {
            scopes.push(&s.instrumentation_scope);
        }
    }
    let single = scopes.len() == 1;
    message(buf, 1, 3, |b| {
        bytes_field(b, 1, resource);
        for scope in scopes {
            message(b, 2, 3, |b| {
                message(b, 1, 1, |b| put_scope(b, scope));
                for span in spans.iter().filter(|s| single || &s.instrumentation_scope == scope) {
                    message(b, 2, 2, |b| put_span(b, span));
                }
                string_field(b, 3, scope.schema_url().unwrap_or_default());
            });
        }
        string_field(b, 3, resource_schema);
    });
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
    use opentelemetry_sdk::Resource;
    use prost::Message as _;

    use super::{resolve, OtlpConfig, OtlpExporter};

    fn span(n: u8, scope: &InstrumentationScope) -> SpanData {
        let trace = TraceId::from_bytes([n; 16]);
        let state = TraceState::from_key_value([("vendor", "x1")]).unwrap();
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "retry",
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            vec![KeyValue::new("attempt", 2), KeyValue::new("detail", "d".repeat(200))],
            1,
        ));
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            SpanContext::new(
                TraceId::from_bytes([9; 16]),
                SpanId::from_bytes([8; 8]),
                TraceFlags::SAMPLED,
                true,
                TraceState::NONE,
            ),
            vec![KeyValue::new("link.kind", "batch")],
            0,
        ));
        SpanData {
            span_context: SpanContext::new(
                trace,
                SpanId::from_bytes([n; 8]),
                TraceFlags::SAMPLED,
                false,
                if n == 1 { state } else { TraceState::NONE },
            ),
            parent_span_id: if n == 1 { SpanId::INVALID } else { SpanId::from_bytes([7; 8]) },
            parent_span_is_remote: n == 2,
            span_kind: [SpanKind::Consumer, SpanKind::Client, SpanKind::Internal, SpanKind::Server, SpanKind::Producer]
                [usize::from(n) % 5]
                .clone(),
            name: Cow::Owned(format!("span {n} ünïcode")),
            start_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + u64::from(n)),
            end_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_500_000_000),
            attributes: vec![
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("empty", ""),
                KeyValue::new("count", -3_i64),
                KeyValue::new("big", i64::MAX),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("ok", false),
                // Span 4 is over 16 KiB: its length needs more bytes than were kept for it.
                KeyValue::new("long", "x".repeat(if n == 4 { 20_000 } else { 300 })),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 300]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
                KeyValue::new(
                    "strings",
                    Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("")])),
                ),
            ],
            dropped_attributes_count: u32::from(n),
            events: if n == 3 { events } else { SpanEvents::default() },
            links: if n == 3 { links } else { SpanLinks::default() },
            status: match n {
                1 => Status::Ok,
                2 => Status::error("function returned 500"),
                _ => Status::Unset,
            },
            instrumentation_scope: scope.clone(),
        }
    }

    fn spans() -> Vec<SpanData> {
        let ours = InstrumentationScope::builder("switchyard").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", 1)])
            .build();
        vec![span(1, &ours), span(2, &ours), span(3, &other), span(4, &ours), span(5, &other)]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "switchyard"), KeyValue::new("host.cores", 2)])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build()
    }

    /// opentelemetry-otlp's request for the same spans (opentelemetry-proto's conversion), scopes in
    /// the order ours writes them (the conversion's come out of a `HashMap`).
    fn reference(spans: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        let order: Vec<String> = {
            let mut names = Vec::new();
            for s in &spans {
                if !names.contains(&s.instrumentation_scope.name().to_owned()) {
                    names.push(s.instrumentation_scope.name().to_owned());
                }
            }
            names
        };
        let mut rs = group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(resource));
        for r in &mut rs {
            r.scope_spans.sort_by_key(|s| order.iter().position(|n| Some(n) == s.scope.as_ref().map(|x| &x.name)));
        }
        ExportTraceServiceRequest { resource_spans: rs }
    }

    /// An exporter to `url` with `resource` (the same `Resource` as the reference is given: its
    /// attributes come out of a `HashMap`, in an order of its own).
    fn exporter_for(url: &str, resource: &Resource) -> OtlpExporter {
        let mut e = OtlpExporter::new(&OtlpConfig {
            url: url.to_owned(),
            headers: vec![("x-api-key".into(), "secret value".into())],
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        e.set_resource(resource);
        e
    }

    #[test]
    fn the_request_is_the_one_opentelemetry_otlp_sends() {
        let res = resource();
        let e = exporter_for("http://127.0.0.1:1/v1/traces", &res);
        let mut body = Vec::new();
        super::encode_request(&mut body, &spans(), &e.resource, &e.resource_schema);
        let ours = ExportTraceServiceRequest::decode(body.as_slice()).expect("our request decodes");
        let expected = reference(spans(), &res);
        assert_eq!(ours.resource_spans[0].scope_spans.len(), 2, "one ScopeSpans per scope");
        assert_eq!(ours, expected);
        assert_eq!(body, expected.encode_to_vec(), "byte for byte: the same fields, in prost's order");
    }

    #[test]
    fn an_empty_batch_and_an_empty_resource_encode() {
        let mut body = Vec::new();
        super::encode_request(&mut body, &[], &[], "");
        let ours = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(ours, reference(Vec::new(), &Resource::builder_empty().build()));
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
    fn export_posts_protobuf_with_the_configured_headers_and_reports_rejections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            (serve_one(&listener, "200 OK"), serve_one(&listener, "503 Service Unavailable"))
        });
        let res = resource();
        let e = exporter_for(&url, &res);
        futures::executor::block_on(e.export(spans())).expect("a 200 is a success");
        let err = futures::executor::block_on(e.export(spans()[..1].to_vec())).expect_err("a 503 is a failure");
        assert!(
            err.to_string().contains("503") && err.to_string().contains("nope"),
            "the collector's reason is kept: {err}"
        );
        let ((head, body), (_, second)) = server.join().unwrap();
        assert!(head.starts_with("post /v1/traces http/1.1"), "{head}");
        assert!(head.contains("content-type: application/x-protobuf"), "{head}");
        assert!(head.contains("x-api-key: secret value"), "{head}");
        let got = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(got, reference(spans(), &res));
        assert_eq!(
            ExportTraceServiceRequest::decode(second.as_slice()).unwrap(),
            reference(spans()[..1].to_vec(), &res)
        );
    }

    #[test]
    fn a_shut_down_exporter_refuses_batches() {
        let mut e = exporter_for("http://127.0.0.1:1/v1/traces", &resource());
        let err = futures::executor::block_on(e.export(spans())).expect_err("nothing listens on port 1");
        assert!(err.to_string().to_lowercase().contains("refused"), "the cause is reported: {err}");
        e.shutdown().unwrap();
        assert!(futures::executor::block_on(e.export(spans())).is_err());
        assert!(e.shutdown().is_err(), "a second shutdown says so");
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
}
