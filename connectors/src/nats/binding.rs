//! The CloudEvents NATS protocol binding: structured mode (a JSON event as the payload, with or
//! without a `content-type: application/cloudevents+json` header), binary mode (`ce-` headers,
//! `content-type` = datacontenttype, payload = data), and plain messages wrapped as
//! `dev.switchyard.nats.message`. Both directions, so tests and dead-letter sinks can publish.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use bytes::Bytes;
use switchyard_schemas::http_binding::{self, CLOUDEVENTS_JSON};
use switchyard_schemas::{CloudEvent, ExtensionValue};

/// The type of a wrapped plain message.
pub const PLAIN_TYPE: &str = "dev.switchyard.nats.message";
/// Header prefix of binary-mode attributes.
pub const PREFIX: &str = "ce-";
/// Extension added to a message that claimed to be a CloudEvent but was not a valid one; the message
/// is delivered wrapped as a plain message instead of being lost.
pub const DECODE_ERROR_EXTENSION: &str = "decodeerror";

/// What the source knows about one message.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The NATS subject.
    pub subject: &'a str,
    /// Its headers.
    pub headers: Option<&'a HeaderMap>,
    /// Its payload.
    pub payload: &'a [u8],
    /// `host:port` of the server, for the wrapped event's `source`.
    pub server: &'a str,
    /// A stable id when there is one (JetStream `stream:sequence`), for wrapped messages without a
    /// `Nats-Msg-Id` header.
    pub stable_id: Option<&'a str>,
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let headers = headers?;
    headers
        .iter()
        .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str())
}

fn content_type(headers: Option<&HeaderMap>) -> Option<&str> {
    header(headers, "content-type")
}

/// Turns a NATS message into a CloudEvent. Never fails: a message that claims to be a CloudEvent
/// (structured or binary) but is invalid is wrapped as a plain message with the reason in the
/// `decodeerror` extension, so it still reaches a function and a record.
pub fn to_event(msg: Incoming<'_>) -> CloudEvent {
    let ct = content_type(msg.headers);
    let structured_header = ct.is_some_and(|c| c.to_ascii_lowercase().starts_with(CLOUDEVENTS_JSON));
    let binary = header(msg.headers, "ce-specversion").is_some();
    let looks_structured = !binary && ct.is_none() && looks_like_structured(msg.payload);
    let decoded = if structured_header || looks_structured {
        Some(CloudEvent::from_json_slice(msg.payload))
    } else if binary {
        Some(from_binary(msg))
    } else {
        None
    };
    let mut event = match decoded {
        Some(Ok(mut event)) => {
            keep_traceparent(&mut event, msg.headers);
            return event;
        }
        Some(Err(e)) => {
            let mut event = wrap(msg);
            event.extensions.insert(DECODE_ERROR_EXTENSION.to_owned(), ExtensionValue::String(e.to_string()));
            event
        }
        None => wrap(msg),
    };
    keep_traceparent(&mut event, msg.headers);
    event
}

/// A JSON object with a `specversion` member: structured mode without a content-type header (as
/// the NATS binding 1.0.0 defines it).
fn looks_like_structured(payload: &[u8]) -> bool {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    first == Some(&b'{')
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
            .is_ok_and(|m| m.contains_key("specversion"))
}

fn from_binary(msg: Incoming<'_>) -> Result<CloudEvent, switchyard_schemas::EventError> {
    let mut attrs = BTreeMap::new();
    if let Some(headers) = msg.headers {
        for (name, values) in headers.iter() {
            let lower = AsRef::<str>::as_ref(name).to_ascii_lowercase();
            if let Some(attr) = lower.strip_prefix(PREFIX) {
                if values.len() > 1 {
                    return Err(switchyard_schemas::EventError::new(
                        attr,
                        format!("header `{name}` must appear only once"),
                    ));
                }
                if let Some(v) = values.first() {
                    attrs.insert(attr.to_owned(), v.as_str().to_owned());
                }
            }
        }
    }
    http_binding::event_from_binary_parts(attrs, content_type(msg.headers), msg.payload, PREFIX)
}

fn wrap(msg: Incoming<'_>) -> CloudEvent {
    let id = header(msg.headers, "Nats-Msg-Id")
        .map(str::to_owned)
        .or_else(|| msg.stable_id.map(str::to_owned))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut attrs = BTreeMap::new();
    attrs.insert("specversion".to_owned(), "1.0".to_owned());
    attrs.insert("id".to_owned(), id);
    attrs.insert("source".to_owned(), format!("nats://{}/{}", msg.server, msg.subject));
    attrs.insert("type".to_owned(), PLAIN_TYPE.to_owned());
    attrs.insert("subject".to_owned(), msg.subject.to_owned());
    // Headers whose lower-cased name is a valid attribute name become string extensions.
    if let Some(headers) = msg.headers {
        for (name, values) in headers.iter() {
            let lower = AsRef::<str>::as_ref(name).to_ascii_lowercase();
            let valid = !lower.is_empty() && lower.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            let reserved = switchyard_schemas::cloudevent::CORE_ATTRIBUTES.contains(&lower.as_str())
                || matches!(lower.as_str(), "data" | "data_base64");
            if valid && !reserved {
                if let Some(v) = values.first() {
                    attrs.insert(lower, v.as_str().to_owned());
                }
            }
        }
    }
    let ct = content_type(msg.headers);
    match http_binding::event_from_binary_parts(attrs.clone(), ct, msg.payload, PREFIX) {
        Ok(e) => e,
        // A content type that is not a media type, or JSON that does not parse: keep the bytes.
        Err(_) => {
            let mut e = http_binding::event_from_binary_parts(attrs.clone(), None, &[], PREFIX)
                .unwrap_or_else(|_| CloudEvent::new(attrs["id"].clone(), attrs["source"].clone(), PLAIN_TYPE));
            e.datacontenttype = Some("application/octet-stream".to_owned());
            if !msg.payload.is_empty() {
                e.data = Some(switchyard_schemas::Data::Binary(Bytes::copy_from_slice(msg.payload)));
            }
            e
        }
    }
}

fn keep_traceparent(event: &mut CloudEvent, headers: Option<&HeaderMap>) {
    for name in ["traceparent", "tracestate"] {
        if let Some(v) = header(headers, name) {
            event.extensions.entry(name.to_owned()).or_insert_with(|| ExtensionValue::String(v.to_owned()));
        }
    }
}

/// Writes an event in binary mode: `ce-` headers, `content-type`, the data as payload.
pub fn to_binary(event: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    for (name, value) in http_binding::binary_attributes(event) {
        headers.insert(format!("{PREFIX}{name}").as_str(), value.as_str());
    }
    if let Some(ct) = &event.datacontenttype {
        headers.insert("content-type", ct.as_str());
    }
    (headers, event.data_bytes().unwrap_or_default())
}

/// Writes an event in structured mode: `content-type: application/cloudevents+json` and the JSON event.
pub fn to_structured(event: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", CLOUDEVENTS_JSON);
    (headers, Bytes::from(event.to_json_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::Data;

    fn incoming<'a>(subject: &'a str, headers: Option<&'a HeaderMap>, payload: &'a [u8]) -> Incoming<'a> {
        Incoming { subject, headers, payload, server: "127.0.0.1:4222", stable_id: Some("ORDERS:7") }
    }

    use crate::test_support::sample_event as sample;

    #[test]
    fn binary_round_trip() {
        let e = sample();
        let (h, body) = to_binary(&e);
        assert_eq!(h.get("ce-id").map(|v| v.as_str()), Some("id-1"));
        let back = to_event(incoming("orders.eu", Some(&h), &body));
        assert_eq!(back, e);
    }

    #[test]
    fn structured_round_trip_with_and_without_header() {
        let e = sample();
        let (h, body) = to_structured(&e);
        assert_eq!(to_event(incoming("orders.eu", Some(&h), &body)), e);
        assert_eq!(to_event(incoming("orders.eu", None, &body)), e, "NATS binding 1.0.0: no headers");
    }

    #[test]
    fn plain_message_is_wrapped_with_subject_source_and_headers() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        h.insert("X-Tenant", "acme");
        h.insert("Region", "eu");
        h.insert("content-type", "application/json");
        let e = to_event(incoming("orders.eu", Some(&h), br#"{"n": 2}"#));
        assert_eq!(e.ty, PLAIN_TYPE);
        assert_eq!(e.source, "nats://127.0.0.1:4222/orders.eu");
        assert_eq!(e.subject.as_deref(), Some("orders.eu"));
        assert_eq!(e.id, "ORDERS:7");
        assert_eq!(e.data, Some(Data::Json(serde_json::json!({"n": 2}))));
        assert_eq!(e.extensions["region"], ExtensionValue::String("eu".into()));
        assert!(!e.extensions.contains_key("x-tenant"), "not a valid attribute name");
        assert!(e.extensions["traceparent"].to_string().starts_with("00-4bf9"));
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "dedupe-9");
        let e = to_event(incoming("a", Some(&h), b"\x00\x01"));
        assert_eq!(e.id, "dedupe-9");
        assert_eq!(e.data, Some(Data::Binary(Bytes::from_static(b"\x00\x01"))));
        let e = to_event(incoming("a", None, b"hello"));
        assert_eq!(e.data, Some(Data::Binary(Bytes::from_static(b"hello"))));
    }

    #[test]
    fn invalid_cloudevent_is_wrapped_not_lost() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/cloudevents+json");
        let e = to_event(incoming("a", Some(&h), br#"{"specversion": "1.0", "id": ""}"#));
        assert_eq!(e.ty, PLAIN_TYPE);
        assert!(e.extensions[DECODE_ERROR_EXTENSION].to_string().contains("id"));
        assert!(e.data.is_some());
        let mut h = HeaderMap::new();
        h.insert("ce-specversion", "1.0");
        h.insert("ce-id", "x");
        let e = to_event(incoming("a", Some(&h), b"{}"));
        assert!(e.extensions[DECODE_ERROR_EXTENSION].to_string().contains("source"));
    }
}
