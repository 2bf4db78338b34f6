//! The CloudEvents Kafka protocol binding 1.0: binary mode (`ce_` headers, `content-type` header =
//! datacontenttype, value = data), structured mode (`content-type` starting with
//! `application/cloudevents`, value = the JSON event), and plain messages wrapped as
//! `dev.switchyard.kafka.message`. The record key maps to the `partitionkey` extension; `traceparent`
//! and `tracestate` headers are kept. Both directions, so tests and producers can write events.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use switchyard_schemas::http_binding::{self, CLOUDEVENTS_JSON};
use switchyard_schemas::{CloudEvent, Data, EventError, ExtensionValue};

/// The type of a wrapped plain message.
pub const PLAIN_TYPE: &str = "dev.switchyard.kafka.message";
/// Header prefix of binary-mode attributes.
pub const PREFIX: &str = "ce_";
/// The extension carrying the record key.
pub const PARTITION_KEY: &str = "partitionkey";
/// Extension added to the wrapped form of a message that could not be decoded.
pub const DECODE_ERROR_EXTENSION: &str = "decodeerror";

/// What the source knows about one Kafka record.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Its headers in order (a header may have no value).
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// Its value (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
    /// Its timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The cluster name for wrapped messages' `source`.
    pub cluster: &'a str,
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<Option<&[u8]>> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    fn header_str(&self, name: &str) -> Result<Option<&str>, EventError> {
        match self.header(name) {
            None | Some(None) => Ok(None),
            Some(Some(v)) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| EventError::new(name, format!("header `{name}` is not UTF-8"))),
        }
    }

    fn value(&self) -> &[u8] {
        self.payload.unwrap_or_default()
    }

    /// The id of the wrapped form: stable across redeliveries.
    pub fn stable_id(&self) -> String {
        format!("{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// How a record carries its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ce_` headers.
    Binary,
    /// A JSON event as the value.
    Structured,
    /// Not a CloudEvent: wrapped.
    Plain,
}

/// The mode of a record: structured when `content-type` starts with `application/cloudevents`,
/// binary when a `ce_specversion` header is present, plain otherwise.
pub fn mode(msg: &Incoming<'_>) -> Mode {
    let ct = msg.header("content-type").flatten().and_then(|v| std::str::from_utf8(v).ok());
    if ct.is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("application/cloudevents")) {
        Mode::Structured
    } else if msg.header("ce_specversion").is_some() {
        Mode::Binary
    } else {
        Mode::Plain
    }
}

/// Turns a record into a CloudEvent.
///
/// # Errors
/// An [`EventError`] when the record claims to be a CloudEvent (structured or binary mode) but is
/// not a valid one; the source then dead-letters [`wrap`]'s form with the error.
pub fn to_event(msg: &Incoming<'_>) -> Result<CloudEvent, EventError> {
    let mut event = match mode(msg) {
        Mode::Structured => {
            let ct = msg.header_str("content-type")?.unwrap_or_default();
            let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if essence != CLOUDEVENTS_JSON {
                return Err(EventError::new(
                    "(event)",
                    format!("structured mode content type {essence:?} is not supported (only {CLOUDEVENTS_JSON})"),
                ));
            }
            CloudEvent::from_json_slice(msg.value())?
        }
        Mode::Binary => from_binary(msg)?,
        Mode::Plain => return Ok(wrap(msg)),
    };
    add_key(&mut event, msg);
    keep_trace_headers(&mut event, msg);
    Ok(event)
}

fn from_binary(msg: &Incoming<'_>) -> Result<CloudEvent, EventError> {
    let mut attrs = BTreeMap::new();
    for (name, value) in msg.headers {
        let lower = name.to_ascii_lowercase();
        let Some(attr) = lower.strip_prefix(PREFIX) else {
            continue;
        };
        let value = value.unwrap_or_default();
        let value = std::str::from_utf8(value)
            .map_err(|_| EventError::new(attr, format!("header `{name}` is not UTF-8")))?
            .to_owned();
        if attrs.insert(attr.to_owned(), value).is_some() {
            return Err(EventError::new(attr, format!("header `{name}` must appear only once")));
        }
    }
    let ct = msg.header_str("content-type")?;
    http_binding::event_from_binary_parts(attrs, ct, msg.value(), PREFIX)
}

/// The record key as a `partitionkey` value: the key itself when it is UTF-8, else `base64:` and
/// its base64 form.
pub fn key_string(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(key)),
    }
}

fn add_key(event: &mut CloudEvent, msg: &Incoming<'_>) {
    if let Some(key) = msg.key {
        event.extensions.entry(PARTITION_KEY.to_owned()).or_insert_with(|| ExtensionValue::String(key_string(key)));
    }
}

fn keep_trace_headers(event: &mut CloudEvent, msg: &Incoming<'_>) {
    for name in ["traceparent", "tracestate"] {
        if let Ok(Some(v)) = msg.header_str(name) {
            event.extensions.entry(name.to_owned()).or_insert_with(|| ExtensionValue::String(v.to_owned()));
        }
    }
}

/// Wraps a record as a plain message: type [`PLAIN_TYPE`], source `kafka://<cluster>/<topic>`,
/// subject `<partition>:<offset>`, id `<topic>:<partition>:<offset>`, the record timestamp as
/// `time`, the key as `partitionkey`, and every header whose lower-cased name is a valid attribute
/// name (with a UTF-8 value) as a string extension. The `content-type` header is the
/// datacontenttype; a value that does not fit it is kept as bytes.
pub fn wrap(msg: &Incoming<'_>) -> CloudEvent {
    let mut attrs = BTreeMap::new();
    attrs.insert("specversion".to_owned(), "1.0".to_owned());
    attrs.insert("id".to_owned(), msg.stable_id());
    attrs.insert("source".to_owned(), format!("kafka://{}/{}", msg.cluster, msg.topic));
    attrs.insert("type".to_owned(), PLAIN_TYPE.to_owned());
    attrs.insert("subject".to_owned(), format!("{}:{}", msg.partition, msg.offset));
    if let Some(t) = msg.timestamp_ms.and_then(chrono::DateTime::from_timestamp_millis) {
        attrs.insert("time".to_owned(), t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    for (name, value) in msg.headers {
        let lower = name.to_ascii_lowercase();
        let valid = !lower.is_empty() && lower.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let reserved = switchyard_schemas::cloudevent::CORE_ATTRIBUTES.contains(&lower.as_str())
            || matches!(lower.as_str(), "data" | "data_base64" | PARTITION_KEY | DECODE_ERROR_EXTENSION);
        if valid && !reserved {
            if let Some(v) = value.and_then(|v| std::str::from_utf8(v).ok()) {
                attrs.entry(lower).or_insert_with(|| v.to_owned());
            }
        }
    }
    if let Some(key) = msg.key {
        attrs.insert(PARTITION_KEY.to_owned(), key_string(key));
    }
    let ct = msg.header_str("content-type").ok().flatten();
    let mut event = match http_binding::event_from_binary_parts(attrs.clone(), ct, msg.value(), PREFIX) {
        Ok(e) => e,
        // A content type that is not a media type, or a value that does not fit it: keep the bytes.
        Err(_) => {
            let mut e = http_binding::event_from_binary_parts(attrs.clone(), None, &[], PREFIX)
                .unwrap_or_else(|_| CloudEvent::new(attrs["id"].clone(), attrs["source"].clone(), PLAIN_TYPE));
            if !msg.value().is_empty() {
                e.datacontenttype = Some("application/octet-stream".to_owned());
                e.data = Some(Data::Binary(Bytes::copy_from_slice(msg.value())));
            }
            e
        }
    };
    keep_trace_headers(&mut event, msg);
    event
}

/// The wrapped form of a record that could not be decoded, with the error in `decodeerror`.
pub fn wrap_undecodable(msg: &Incoming<'_>, error: &EventError) -> CloudEvent {
    let mut event = wrap(msg);
    event.extensions.insert(DECODE_ERROR_EXTENSION.to_owned(), ExtensionValue::String(error.to_string()));
    event
}

/// Headers and value of an event in binary mode: `ce_` headers, `content-type`, the data.
pub fn to_binary(event: &CloudEvent) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut headers: Vec<(String, Vec<u8>)> = http_binding::binary_attributes(event)
        .into_iter()
        .map(|(name, value)| (format!("{PREFIX}{name}"), value.into_bytes()))
        .collect();
    if let Some(ct) = &event.datacontenttype {
        headers.push(("content-type".to_owned(), ct.clone().into_bytes()));
    }
    (headers, event.data_bytes().map(|b| b.to_vec()).unwrap_or_default())
}

/// Headers and value of an event in structured mode: `content-type: application/cloudevents+json`
/// and the JSON event.
pub fn to_structured(event: &CloudEvent) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    (vec![("content-type".to_owned(), CLOUDEVENTS_JSON.as_bytes().to_vec())], event.to_json_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming<'a>(
        key: Option<&'a [u8]>,
        headers: &'a [(&'a str, Option<&'a [u8]>)],
        payload: Option<&'a [u8]>,
    ) -> Incoming<'a> {
        Incoming {
            topic: "orders",
            partition: 3,
            offset: 42,
            key,
            headers,
            payload,
            timestamp_ms: Some(1_700_000_000_123),
            cluster: "prod",
        }
    }

    fn borrow(h: &[(String, Vec<u8>)]) -> Vec<(&str, Option<&[u8]>)> {
        h.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))).collect()
    }

    use crate::test_support::sample_event as sample;

    #[test]
    fn binary_round_trip_and_key_becomes_partitionkey() {
        let e = sample();
        let (h, body) = to_binary(&e);
        assert!(h.iter().any(|(k, v)| k == "ce_id" && v == b"id-1"));
        let hb = borrow(&h);
        assert_eq!(mode(&incoming(None, &hb, Some(&body))), Mode::Binary);
        assert_eq!(to_event(&incoming(None, &hb, Some(&body))).unwrap(), e);
        let back = to_event(&incoming(Some(b"customer-7"), &hb, Some(&body))).unwrap();
        assert_eq!(back.extensions[PARTITION_KEY], ExtensionValue::String("customer-7".into()));
    }

    #[test]
    fn structured_round_trip() {
        let e = sample();
        let (h, body) = to_structured(&e);
        let hb = borrow(&h);
        assert_eq!(mode(&incoming(None, &hb, Some(&body))), Mode::Structured);
        assert_eq!(to_event(&incoming(None, &hb, Some(&body))).unwrap(), e);
    }

    #[test]
    fn plain_record_is_wrapped() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let h: Vec<(&str, Option<&[u8]>)> = vec![
            ("traceparent", Some(tp)),
            ("Region", Some(b"eu")),
            ("X-Tenant", Some(b"acme")),
            ("content-type", Some(b"application/json")),
            ("empty", None),
        ];
        let e = to_event(&incoming(Some(b"k1"), &h, Some(br#"{"n": 2}"#))).unwrap();
        assert_eq!(e.ty, PLAIN_TYPE);
        assert_eq!(e.source, "kafka://prod/orders");
        assert_eq!(e.subject.as_deref(), Some("3:42"));
        assert_eq!(e.id, "orders:3:42");
        assert_eq!(e.time.unwrap().timestamp_millis(), 1_700_000_000_123);
        assert_eq!(e.data, Some(Data::Json(serde_json::json!({"n": 2}))));
        assert_eq!(e.extensions[PARTITION_KEY], ExtensionValue::String("k1".into()));
        assert_eq!(e.extensions["region"], ExtensionValue::String("eu".into()));
        assert!(e.extensions["traceparent"].to_string().starts_with("00-4bf9"));
        assert!(!e.extensions.contains_key("x-tenant"));
        let e = to_event(&incoming(Some(&[0xff, 0x00]), &[], Some(b"\x00\x01"))).unwrap();
        assert_eq!(e.data, Some(Data::Binary(Bytes::from_static(b"\x00\x01"))));
        assert_eq!(e.extensions[PARTITION_KEY], ExtensionValue::String("base64:/wA=".into()));
        let tombstone = to_event(&incoming(Some(b"k"), &[], None)).unwrap();
        assert_eq!(tombstone.data, None);
        let h: Vec<(&str, Option<&[u8]>)> = vec![("content-type", Some(b"application/json"))];
        let e = to_event(&incoming(None, &h, Some(b"not json"))).unwrap();
        assert_eq!(e.data, Some(Data::Binary(Bytes::from_static(b"not json"))), "kept, not lost");
    }

    #[test]
    fn invalid_cloudevents_are_errors_naming_the_attribute() {
        let h: Vec<(&str, Option<&[u8]>)> = vec![("content-type", Some(b"application/cloudevents+json"))];
        let err = to_event(&incoming(None, &h, Some(br#"{"specversion": "1.0", "id": ""}"#))).unwrap_err();
        assert_eq!(err.attribute, "id");
        let h: Vec<(&str, Option<&[u8]>)> = vec![("ce_specversion", Some(b"1.0")), ("ce_id", Some(b"x"))];
        let err = to_event(&incoming(None, &h, Some(b"{}"))).unwrap_err();
        assert_eq!(err.attribute, "source");
        let h: Vec<(&str, Option<&[u8]>)> = vec![
            ("ce_specversion", Some(b"1.0")),
            ("ce_id", Some(b"x")),
            ("ce_id", Some(b"y")),
            ("ce_source", Some(b"/s")),
            ("ce_type", Some(b"t")),
        ];
        assert!(to_event(&incoming(None, &h, None)).unwrap_err().rule.contains("only once"));
        let h: Vec<(&str, Option<&[u8]>)> = vec![("ce_specversion", Some(&[0xff]))];
        assert!(to_event(&incoming(None, &h, None)).unwrap_err().rule.contains("UTF-8"));
        let m = incoming(None, &h, Some(b"x"));
        let wrapped = wrap_undecodable(&m, &to_event(&m).unwrap_err());
        assert_eq!(wrapped.ty, PLAIN_TYPE);
        assert!(wrapped.extensions[DECODE_ERROR_EXTENSION].to_string().contains("UTF-8"));
    }
}
