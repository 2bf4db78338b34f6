//! The CloudEvents AMQP protocol binding 1.0 on AMQP 0-9-1 messages: reading events in binary mode
//! (`cloudEvents_*` application properties, i.e. message headers), structured mode
//! (`application/cloudevents+json`), or wrapping a plain message; and writing events in binary or
//! structured mode.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use switchyard_schemas::http_binding::{binary_attributes, event_from_binary_parts, CLOUDEVENTS_JSON};
use switchyard_schemas::{CloudEvent, EventError, ExtensionValue};

/// The type of a wrapped plain message.
pub const PLAIN_MESSAGE_TYPE: &str = "dev.switchyard.amqp.message";

/// The application-property prefix of context attributes in binary mode.
pub const PREFIX: &str = "cloudEvents_";

/// The older prefix (AMQP binding drafts), accepted when reading.
pub const LEGACY_PREFIX: &str = "cloudEvents:";

/// The extension that carries, as a JSON object, the headers of a plain message whose names are
/// not valid CloudEvents attribute names.
pub const HEADERS_EXTENSION: &str = "amqpheaders";

/// How a message carries its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in `cloudEvents_*` headers, the data as the body.
    Binary,
    /// The event in the JSON event format as the body (`application/cloudevents+json`).
    Structured,
    /// Not a CloudEvent: the message is wrapped.
    Plain,
}

/// Where a message came from: used to wrap plain messages.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The event `source` of wrapped messages, see [`plain_source`].
    pub source: &'a str,
    /// The message's routing key (the `subject` of a wrapped message).
    pub routing_key: &'a str,
}

/// The `source` of wrapped plain messages: `amqp://<host>/<vhost>/<queue>` with the vhost and
/// the queue percent-encoded (so the default vhost `/` is `%2F`). Credentials and port are left out.
pub fn plain_source(url: &str, queue: &str) -> String {
    let parsed = url::Url::parse(url).ok();
    let host = parsed.as_ref().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    // An AMQP URI's path is the percent-encoded vhost; an empty path is the default vhost `/`.
    let vhost = parsed
        .as_ref()
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .map(|p| percent_decode(&p))
        .unwrap_or_else(|| "/".to_owned());
    format!("amqp://{host}/{}/{}", encode(&vhost), encode(queue))
}

/// Percent-encodes every byte that is not an ASCII letter or digit.
fn encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits is kept); invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mode of a message: structured when the content type is `application/cloudevents+json`
/// (parameters and case ignored), binary when a `cloudEvents_specversion` (or
/// `cloudEvents:specversion`) header is present, plain otherwise.
pub fn detect_mode(properties: &BasicProperties) -> Mode {
    let structured = properties
        .content_type()
        .as_ref()
        .is_some_and(|ct| ct.as_str().split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(CLOUDEVENTS_JSON));
    if structured {
        return Mode::Structured;
    }
    let binary = properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().keys().any(|k| attribute_of(k.as_str()) == Some("specversion")));
    if binary {
        Mode::Binary
    } else {
        Mode::Plain
    }
}

/// The attribute a header names, when it carries the binding's prefix (matched case-insensitively).
fn attribute_of(header: &str) -> Option<&str> {
    for prefix in [PREFIX, LEGACY_PREFIX] {
        if header.len() > prefix.len()
            && header.is_char_boundary(prefix.len())
            && header[..prefix.len()].eq_ignore_ascii_case(prefix)
        {
            return Some(&header[prefix.len()..]);
        }
    }
    None
}

/// Reads the event of an AMQP message.
///
/// - Structured mode: the body is parsed with [`CloudEvent::from_json_slice`].
/// - Binary mode: the `cloudEvents_<attr>` (or `cloudEvents:<attr>`) headers are the attributes,
///   the `content-type` property is `datacontenttype`, the body is the data (typed as the HTTP
///   binding does). Header values may be any AMQP type: strings as is, integers and booleans keep
///   their type for extensions, an AMQP timestamp becomes an RFC 3339 `time`.
/// - Plain: see [`wrap_plain`].
///
/// In every mode a `traceparent` (and `tracestate`) header becomes the extension of that name
/// when the event does not already carry one.
///
/// # Errors
/// An [`EventError`] naming the attribute at fault when a binary or structured message is not a
/// valid CloudEvent. Plain messages never fail.
pub fn from_amqp(properties: &BasicProperties, body: &[u8], origin: Origin<'_>) -> Result<CloudEvent, EventError> {
    let mut event = match detect_mode(properties) {
        Mode::Structured => CloudEvent::from_json_slice(body)?,
        Mode::Binary => from_binary(properties, body)?,
        Mode::Plain => return Ok(wrap_plain(properties, body, origin)),
    };
    keep_trace_context(properties, &mut event);
    Ok(event)
}

fn keep_trace_context(properties: &BasicProperties, event: &mut CloudEvent) {
    let Some(headers) = properties.headers() else {
        return;
    };
    for name in ["traceparent", "tracestate"] {
        if event.extensions.contains_key(name) {
            continue;
        }
        if let Some(v) = headers.inner().get(name).and_then(value_as_string) {
            if !v.is_empty() {
                event.extensions.insert(name.to_owned(), ExtensionValue::String(v));
            }
        }
    }
}

fn from_binary(properties: &BasicProperties, body: &[u8]) -> Result<CloudEvent, EventError> {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    let mut typed: BTreeMap<String, ExtensionValue> = BTreeMap::new();
    let mut from_current_prefix: BTreeMap<String, bool> = BTreeMap::new();
    if let Some(headers) = properties.headers() {
        for (key, value) in headers.inner() {
            let Some(attr) = attribute_of(key.as_str()) else {
                continue;
            };
            let current = key.as_str()[..PREFIX.len()].eq_ignore_ascii_case(PREFIX);
            // `cloudEvents_` wins over `cloudEvents:` when both carry the same attribute.
            if from_current_prefix.get(attr).copied().unwrap_or(false) && !current {
                continue;
            }
            let text = if attr == "time" {
                match value {
                    AMQPValue::Timestamp(secs) => timestamp_rfc3339(*secs),
                    other => value_as_string(other),
                }
            } else {
                value_as_string(value)
            };
            let Some(text) = text else {
                return Err(EventError::new(
                    attr,
                    format!("header `{key}` has an AMQP type ({:?}) that cannot carry an attribute", value.get_type()),
                ));
            };
            match value {
                AMQPValue::Boolean(b) => typed.insert(attr.to_owned(), ExtensionValue::Boolean(*b)),
                v => match value_as_integer(v) {
                    Some(i) => typed.insert(attr.to_owned(), ExtensionValue::Integer(i)),
                    None => typed.remove(attr),
                },
            };
            attrs.insert(attr.to_owned(), text);
            from_current_prefix.insert(attr.to_owned(), current);
        }
    }
    let content_type = properties.content_type().as_ref().map(ShortString::as_str);
    let mut event = event_from_binary_parts(attrs, content_type, body, PREFIX)?;
    // Extensions sent as AMQP integers or booleans keep their CloudEvents type.
    for (name, value) in typed {
        if let Some(slot) = event.extensions.get_mut(&name) {
            *slot = value;
        }
    }
    event.validate()?;
    Ok(event)
}

/// Wraps a plain (non-CloudEvents) message:
///
/// | attribute | value |
/// |---|---|
/// | `type` | `dev.switchyard.amqp.message` |
/// | `source` | [`Origin::source`] (`amqp://<host>/<vhost>/<queue>`) |
/// | `id` | the `message-id` property; without one, `amqp-` + 32 hex digits of a 128-bit FNV-1a hash of the routing key, content type, headers and body (stable across redeliveries; identical messages get the same id) |
/// | `subject` | the routing key (unset when empty) |
/// | `datacontenttype` | the `content-type` property (unset when it is not a valid media type) |
/// | `time` | the `timestamp` property |
/// | data | the body: JSON for a JSON content type (or none, when it parses), text for textual types, else binary |
///
/// Headers whose names are valid attribute names (lower-case ASCII letters and digits, not a core
/// attribute) become extensions (AMQP integers and booleans keep their type, other values their
/// string form); `traceparent` is kept that way. The other headers are collected into one
/// extension, `amqpheaders`, as a JSON object of their string forms.
pub fn wrap_plain(properties: &BasicProperties, body: &[u8], origin: Origin<'_>) -> CloudEvent {
    let id = properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .filter(|m| !m.is_empty() && !m.chars().any(char::is_control))
        .unwrap_or_else(|| format!("amqp-{:032x}", message_hash(properties, body, origin.routing_key)));
    let content_type = properties.content_type().as_ref().map(|c| c.as_str().to_owned());
    let mut attrs = BTreeMap::from([
        ("specversion".to_owned(), "1.0".to_owned()),
        ("id".to_owned(), id.clone()),
        ("source".to_owned(), origin.source.to_owned()),
        ("type".to_owned(), PLAIN_MESSAGE_TYPE.to_owned()),
    ]);
    if !origin.routing_key.is_empty() && !origin.routing_key.chars().any(char::is_control) {
        attrs.insert("subject".to_owned(), origin.routing_key.to_owned());
    }
    // The body becomes data as in binary mode; a body that does not match its content type (say,
    // invalid JSON under application/json) is kept as it is.
    let mut event = event_from_binary_parts(attrs.clone(), content_type.as_deref(), body, PREFIX)
        .or_else(|_| event_from_binary_parts(attrs.clone(), None, body, PREFIX))
        .unwrap_or_else(|_| {
            let mut e = CloudEvent::new(id, origin.source, PLAIN_MESSAGE_TYPE);
            e.data = (!body.is_empty()).then(|| switchyard_schemas::Data::Binary(bytes::Bytes::copy_from_slice(body)));
            e
        });
    if event.datacontenttype.is_none() {
        if let Some(ct) = content_type {
            let previous = event.datacontenttype.replace(ct);
            if event.validate().is_err() {
                event.datacontenttype = previous;
            }
        }
    }
    if let Some(ts) = properties.timestamp() {
        if let Some(t) = DateTime::<Utc>::from_timestamp(i64::try_from(*ts).unwrap_or(i64::MAX), 0) {
            event.time = Some(t.fixed_offset());
        }
    }
    let mut others = serde_json::Map::new();
    if let Some(headers) = properties.headers() {
        for (key, value) in headers.inner() {
            let name = key.as_str();
            let mut candidate = event.clone();
            let ext = match value {
                AMQPValue::Boolean(b) => Some(ExtensionValue::Boolean(*b)),
                v => value_as_integer(v)
                    .map(ExtensionValue::Integer)
                    .or_else(|| value_as_string(v).map(ExtensionValue::String)),
            };
            if let Some(ext) = ext {
                candidate.extensions.insert(name.to_owned(), ext);
                if candidate.validate().is_ok() {
                    event = candidate;
                    continue;
                }
            }
            others.insert(name.to_owned(), value_to_json(value));
        }
    }
    if !others.is_empty() {
        event.extensions.insert(
            HEADERS_EXTENSION.to_owned(),
            ExtensionValue::String(serde_json::Value::Object(others).to_string()),
        );
    }
    event
}

/// A 128-bit FNV-1a hash of what identifies a message (stable across processes and releases).
fn message_hash(properties: &BasicProperties, body: &[u8], routing_key: &str) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        // Length-prefix each part so that boundaries cannot shift between parts.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h ^= u128::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    feed(routing_key.as_bytes());
    feed(properties.content_type().as_ref().map_or(&b""[..], |c| c.as_str().as_bytes()));
    if let Some(headers) = properties.headers() {
        for (k, v) in headers.inner() {
            feed(k.as_str().as_bytes());
            feed(value_to_json(v).to_string().as_bytes());
        }
    }
    feed(body);
    h
}

fn timestamp_rfc3339(secs: u64) -> Option<String> {
    let t = DateTime::<Utc>::from_timestamp(i64::try_from(secs).ok()?, 0)?;
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn value_as_integer(v: &AMQPValue) -> Option<i64> {
    let i = match v {
        AMQPValue::ShortShortInt(i) => i64::from(*i),
        AMQPValue::ShortShortUInt(i) => i64::from(*i),
        AMQPValue::ShortInt(i) => i64::from(*i),
        AMQPValue::ShortUInt(i) => i64::from(*i),
        AMQPValue::LongInt(i) => i64::from(*i),
        AMQPValue::LongUInt(i) => i64::from(*i),
        AMQPValue::LongLongInt(i) => *i,
        _ => return None,
    };
    i32::try_from(i).is_ok().then_some(i)
}

/// The string form of a header value: strings (UTF-8 only), numbers, booleans; a timestamp as RFC
/// 3339. `None` for tables, arrays, byte arrays, void and non-UTF-8 strings.
fn value_as_string(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok()?,
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(i) => i.to_string(),
        AMQPValue::ShortShortUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        AMQPValue::DecimalValue(d) => {
            let scale = u32::from(d.scale);
            let p = 10u64.pow(scale.min(19));
            if scale == 0 {
                d.value.to_string()
            } else {
                format!("{}.{:0width$}", u64::from(d.value) / p, u64::from(d.value) % p, width = scale as usize)
            }
        }
        AMQPValue::Timestamp(t) => timestamp_rfc3339(*t)?,
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) | AMQPValue::ByteArray(_) | AMQPValue::Void => return None,
    })
}

/// A header value as JSON (for `amqpheaders` and hashing).
fn value_to_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => {
            Value::Object(t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), value_to_json(v))).collect())
        }
        AMQPValue::ByteArray(b) => {
            use std::fmt::Write as _;
            Value::String(b.as_slice().iter().fold(String::new(), |mut out, b| {
                let _ = write!(out, "{b:02x}");
                out
            }))
        }
        AMQPValue::Void => Value::Null,
        other => match value_as_integer(other) {
            Some(i) => Value::from(i),
            None => value_as_string(other).map_or(Value::Null, Value::String),
        },
    }
}

/// Writes an event in binary mode: each set attribute (except `datacontenttype`) as a
/// `cloudEvents_<attr>` header (extensions that are integers or booleans as AMQP integers or
/// booleans, everything else as a string), `datacontenttype` as the `content-type` property, the
/// data as the body. A `traceparent` extension is also written as a plain `traceparent` header.
/// The returned properties are otherwise default: add `delivery_mode: 2` for persistence.
pub fn to_amqp_binary(event: &CloudEvent) -> (BasicProperties, Vec<u8>) {
    let mut headers = FieldTable::default();
    for (name, value) in binary_attributes(event) {
        let amqp = match event.extensions.get(name) {
            Some(ExtensionValue::Integer(i)) => {
                i32::try_from(*i).map_or_else(|_| AMQPValue::LongString(value.clone().into()), AMQPValue::LongInt)
            }
            Some(ExtensionValue::Boolean(b)) => AMQPValue::Boolean(*b),
            _ => AMQPValue::LongString(LongString::from(value.clone())),
        };
        headers.insert(ShortString::from(format!("{PREFIX}{name}")), amqp);
    }
    if let Some(tp) = event.extensions.get("traceparent") {
        headers.insert("traceparent".into(), AMQPValue::LongString(tp.to_string().into()));
    }
    let mut properties = BasicProperties::default().with_headers(headers);
    if let Some(ct) = event.datacontenttype.as_deref().and_then(|ct| ShortString::try_new(ct).ok()) {
        properties = properties.with_content_type(ct);
    }
    (properties, event.data_bytes().map(|b| b.to_vec()).unwrap_or_default())
}

/// Writes an event in structured mode: content type `application/cloudevents+json;
/// charset=utf-8`, the event in the JSON event format as the body, and a `traceparent` header
/// when the event has that extension.
pub fn to_amqp_structured(event: &CloudEvent) -> (BasicProperties, Vec<u8>) {
    let mut properties =
        BasicProperties::default().with_content_type("application/cloudevents+json; charset=utf-8".into());
    if let Some(tp) = event.extensions.get("traceparent") {
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString(tp.to_string().into()));
        properties = properties.with_headers(headers);
    }
    (properties, event.to_json_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::Data;

    const ORIGIN: Origin<'static> = Origin { source: "amqp://127.0.0.1/%2F/q", routing_key: "orders.new" };

    fn headers(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn source_uri_of_wrapped_messages() {
        assert_eq!(plain_source("amqp://guest:guest@127.0.0.1:5672/%2f", "orders"), "amqp://127.0.0.1/%2F/orders");
        assert_eq!(plain_source("amqp://rabbit/prod", "a.b"), "amqp://rabbit/prod/a%2Eb");
        assert_eq!(plain_source("amqp://rabbit", "q"), "amqp://rabbit/%2F/q");
    }

    #[test]
    fn binary_mode_with_typed_extensions_and_both_prefixes() {
        let props = BasicProperties::default().with_content_type("application/json".into()).with_headers(headers(&[
            ("cloudEvents_specversion", s("1.0")),
            ("cloudEvents_id", s("e-1")),
            ("cloudEvents:source", s("/shop")),
            ("cloudEvents_type", AMQPValue::ShortString("com.example.order".into())),
            ("cloudEvents_time", AMQPValue::Timestamp(1_700_000_000)),
            ("cloudEvents_count", AMQPValue::LongInt(7)),
            ("cloudEvents_urgent", AMQPValue::Boolean(true)),
            ("cloudEvents_tenant", s("acme")),
            ("traceparent", s("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
            ("x-other", s("ignored")),
        ]));
        assert_eq!(detect_mode(&props), Mode::Binary);
        let e = from_amqp(&props, br#"{"n":1}"#, ORIGIN).unwrap();
        assert_eq!((e.id.as_str(), e.source.as_str(), e.ty.as_str()), ("e-1", "/shop", "com.example.order"));
        assert_eq!(e.time.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(e.extensions["count"], ExtensionValue::Integer(7));
        assert_eq!(e.extensions["urgent"], ExtensionValue::Boolean(true));
        assert_eq!(e.extensions["tenant"], ExtensionValue::String("acme".into()));
        assert!(e.extensions.contains_key("traceparent"));
        assert!(!e.extensions.contains_key("x-other"));
        assert_eq!(e.data, Some(Data::Json(serde_json::json!({"n": 1}))));
    }

    #[test]
    fn invalid_binary_and_structured_messages_name_the_attribute() {
        let props = BasicProperties::default()
            .with_headers(headers(&[("cloudEvents_specversion", s("1.0")), ("cloudEvents_id", s("x"))]));
        assert_eq!(from_amqp(&props, b"", ORIGIN).unwrap_err().attribute, "source");
        let props = BasicProperties::default().with_content_type("application/cloudevents+json".into());
        assert!(from_amqp(&props, b"{not json", ORIGIN).is_err());
    }

    #[test]
    fn plain_messages_are_wrapped_with_a_stable_id() {
        let props = BasicProperties::default().with_content_type("text/plain".into()).with_headers(headers(&[
            ("traceparent", s("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
            ("priority", AMQPValue::LongInt(3)),
            ("X-Request-Id", s("r-1")),
        ]));
        let e = from_amqp(&props, b"hello", ORIGIN).unwrap();
        assert_eq!(e.ty, PLAIN_MESSAGE_TYPE);
        assert_eq!(e.source, ORIGIN.source);
        assert_eq!(e.subject.as_deref(), Some("orders.new"));
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(e.data, Some(Data::Text("hello".into())));
        assert!(e.id.starts_with("amqp-") && e.id.len() == 37, "{}", e.id);
        assert_eq!(e.id, from_amqp(&props, b"hello", ORIGIN).unwrap().id);
        assert_ne!(e.id, from_amqp(&props, b"hello!", ORIGIN).unwrap().id);
        assert_eq!(e.extensions["priority"], ExtensionValue::Integer(3));
        assert!(e.extensions.contains_key("traceparent"));
        assert_eq!(e.extensions[HEADERS_EXTENSION], ExtensionValue::String(r#"{"X-Request-Id":"r-1"}"#.into()));
        e.validate().unwrap();

        let props =
            BasicProperties::default().with_message_id("m-9".into()).with_content_type("application/json".into());
        let e = from_amqp(&props, b"{broken", ORIGIN).unwrap();
        assert_eq!(e.id, "m-9");
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.data_bytes().unwrap().as_ref(), b"{broken");
    }

    #[test]
    fn round_trips_in_both_modes() {
        let mut e = CloudEvent::new("rt-1", "/tests", "com.example.rt");
        e.subject = Some("s".into());
        e.time = Some(DateTime::parse_from_rfc3339("2024-05-01T12:00:00.5Z").unwrap());
        e.dataschema = Some("https://example.com/schema".into());
        e.extensions.insert("n".into(), ExtensionValue::Integer(42));
        e.extensions.insert("flag".into(), ExtensionValue::Boolean(false));
        e.extensions.insert("traceparent".into(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        e.datacontenttype = Some("application/json".into());
        e.data = Some(Data::Json(serde_json::json!({"a": [1, 2]})));
        let (p, body) = to_amqp_binary(&e);
        assert_eq!(detect_mode(&p), Mode::Binary);
        assert_eq!(from_amqp(&p, &body, ORIGIN).unwrap(), e);
        let (p, body) = to_amqp_structured(&e);
        assert_eq!(detect_mode(&p), Mode::Structured);
        assert_eq!(from_amqp(&p, &body, ORIGIN).unwrap(), e);

        let mut bin = CloudEvent::new("rt-2", "/tests", "com.example.bin");
        bin.datacontenttype = Some("application/octet-stream".into());
        bin.data = Some(Data::Binary(bytes::Bytes::from_static(&[0, 159, 146, 150])));
        let (p, body) = to_amqp_binary(&bin);
        assert_eq!(from_amqp(&p, &body, ORIGIN).unwrap(), bin);
        let (p, body) = to_amqp_structured(&bin);
        assert_eq!(from_amqp(&p, &body, ORIGIN).unwrap(), bin);
    }
}
