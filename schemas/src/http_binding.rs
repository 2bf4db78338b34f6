//! The CloudEvents HTTP protocol binding 1.0.2: reading events from HTTP requests in binary,
//! structured and batched mode, and writing them in binary or structured mode.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::Value;

use crate::cloudevent::{
    check_datacontenttype, check_extension_name, check_specversion, is_json_media_type, media_essence, parse_batch,
    parse_time, CloudEvent, Data, EventError, ExtensionValue, CORE_ATTRIBUTES,
};

/// The media type of a structured-mode event in the JSON event format.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The media type of a batch in the JSON batch format.
pub const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";

/// The prefix of the headers that carry context attributes in binary mode.
const PREFIX: &str = "ce-";

/// What a `ce-*` header value must percent-encode besides the non-ASCII characters: the controls
/// (U+0000..U+001F, U+007F), space, double quote and percent. Everything else in U+0021..U+007E is
/// sent as is.
const HEADER_VALUE_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// How an HTTP message carries its event(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in `ce-*` headers, the data as the body.
    Binary,
    /// One event in the JSON event format as the body (`application/cloudevents+json`).
    Structured,
    /// Several events in the JSON batch format as the body (`application/cloudevents-batch+json`).
    Batch,
}

/// The mode of a message from its `Content-Type` (case-insensitive, parameters such as `charset`
/// ignored): [`CLOUDEVENTS_JSON`] is [`Mode::Structured`], [`CLOUDEVENTS_BATCH_JSON`] is
/// [`Mode::Batch`], anything else or none is [`Mode::Binary`].
pub fn detect_mode(headers: &HeaderMap) -> Mode {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Mode::Binary;
    };
    match media_essence(ct).as_str() {
        CLOUDEVENTS_JSON => Mode::Structured,
        CLOUDEVENTS_BATCH_JSON => Mode::Batch,
        _ => Mode::Binary,
    }
}

/// Reads the event(s) of an HTTP message: one event in binary or structured mode, any number
/// (possibly none) in batch mode. Every event is validated fully.
///
/// In binary mode the `ce-*` headers (names case-insensitive, values percent-decoded) are the
/// attributes, extensions becoming [`ExtensionValue::String`]; `Content-Type` is
/// `datacontenttype`; other headers are ignored. A non-empty body is the data: with a JSON content
/// type it must be JSON ([`Data::Json`]); with a textual type (`text/*`, XML, YAML, form data,
/// JavaScript, or any type with a `charset` parameter) it is [`Data::Text`] when it is valid UTF-8;
/// without a content type it is [`Data::Json`] when it parses as JSON; otherwise it is
/// [`Data::Binary`].
///
/// # Errors
///
/// An [`EventError`] naming the attribute at fault: `specversion` when `ce-specversion` is
/// missing, the attribute whose header is repeated or does not decode to UTF-8, `data` when a JSON
/// body does not parse; structured and batch bodies fail as [`CloudEvent::from_json_slice`] and
/// [`parse_batch`] do.
pub fn from_http(headers: &HeaderMap, body: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    match detect_mode(headers) {
        Mode::Structured => CloudEvent::from_json_slice(body).map(|e| vec![e]),
        Mode::Batch => parse_batch(body),
        Mode::Binary => from_binary(headers, body).map(|e| vec![e]),
    }
}

fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, EventError> {
    // Gather the `ce-*` headers by attribute name (header names are already lower-case).
    let mut raw: BTreeMap<&str, &HeaderValue> = BTreeMap::new();
    for name in headers.keys() {
        let Some(attr) = name.as_str().strip_prefix(PREFIX) else {
            continue;
        };
        let mut values = headers.get_all(name).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err(EventError::new(attr, format!("header `{name}` must appear only once")));
            }
            raw.insert(attr, value);
        }
    }
    let mut attrs = BTreeMap::new();
    for (attr, value) in raw {
        attrs.insert(attr.to_owned(), decode_header_value(attr, value)?);
    }
    let mut content_types = headers.get_all(CONTENT_TYPE).iter();
    let content_type = match content_types.next() {
        None => None,
        Some(v) => {
            if content_types.next().is_some() {
                return Err(EventError::new("datacontenttype", "header `content-type` must appear only once"));
            }
            Some(v.to_str().map_err(|_| EventError::new("datacontenttype", "header `content-type` must be ASCII"))?)
        }
    };
    event_from_binary_parts(attrs, content_type, body, PREFIX)
}

/// Builds an event from the parts of any protocol binding's binary mode: the context attributes
/// (already decoded, keyed by attribute name), the content type and the body. `prefix` is the
/// protocol's attribute prefix (`ce-`, `ce_`, `cloudEvents_`), used only in error messages.
/// Extensions become [`ExtensionValue::String`]; the body becomes data as described in [`from_http`].
///
/// # Errors
/// An [`EventError`] naming the attribute at fault.
pub fn event_from_binary_parts(
    mut attrs: BTreeMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
    prefix: &str,
) -> Result<CloudEvent, EventError> {
    let mut take = |attr: &str| attrs.remove(attr);
    let required = |attr: &str, v: Option<String>| {
        v.ok_or_else(|| EventError::new(attr, format!("is required (`{prefix}{attr}`)")))
    };

    let specversion = required("specversion", take("specversion"))?;
    check_specversion(&specversion)?;
    let id = required("id", take("id"))?;
    let source = required("source", take("source"))?;
    let ty = required("type", take("type"))?;
    if take("datacontenttype").is_some() {
        return Err(EventError::new(
            "datacontenttype",
            format!("must be sent as the content type in binary mode, not as `{prefix}datacontenttype`"),
        ));
    }
    let dataschema = take("dataschema");
    let subject = take("subject");
    let time = take("time").map(|t| parse_time(&t)).transpose()?;

    let mut extensions = BTreeMap::new();
    for (attr, value) in std::mem::take(&mut attrs) {
        check_extension_name(&attr)?;
        extensions.insert(attr, ExtensionValue::String(value));
    }
    let datacontenttype = match content_type {
        None => None,
        Some(ct) => {
            check_datacontenttype(ct)?;
            Some(ct.to_owned())
        }
    };

    let mut event =
        CloudEvent { id, source, specversion, ty, datacontenttype, dataschema, subject, time, extensions, data: None };
    event.validate()?;
    event.data = body_to_data(event.datacontenttype.as_deref(), body)?;
    Ok(event)
}

/// The data of a binary-mode body (see [`from_http`]).
fn body_to_data(content_type: Option<&str>, body: &[u8]) -> Result<Option<Data>, EventError> {
    if body.is_empty() {
        return Ok(None);
    }
    let data = match content_type {
        None => match serde_json::from_slice::<Value>(body) {
            Ok(v) => Data::Json(v),
            Err(_) => Data::Binary(Bytes::copy_from_slice(body)),
        },
        Some(ct) if is_json_media_type(ct) => {
            let v = serde_json::from_slice(body)
                .map_err(|e| EventError::new("data", format!("body must be valid JSON for content type {ct}: {e}")))?;
            Data::Json(v)
        }
        Some(ct) if is_textual_media_type(ct) => match std::str::from_utf8(body) {
            Ok(s) => Data::Text(s.to_owned()),
            Err(_) => Data::Binary(Bytes::copy_from_slice(body)),
        },
        Some(_) => Data::Binary(Bytes::copy_from_slice(body)),
    };
    Ok(Some(data))
}

/// Whether a media type is text: `text/*`, XML, YAML, form data, JavaScript, or anything with a
/// `charset` parameter.
fn is_textual_media_type(ct: &str) -> bool {
    let essence = media_essence(ct);
    let (ty, subtype) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    let has_charset = ct.split(';').skip(1).any(|p| p.trim().to_ascii_lowercase().starts_with("charset="));
    ty == "text"
        || has_charset
        || subtype.ends_with("+xml")
        || subtype.ends_with("+yaml")
        || (ty == "application"
            && matches!(
                subtype,
                "xml"
                    | "yaml"
                    | "x-yaml"
                    | "javascript"
                    | "ecmascript"
                    | "x-www-form-urlencoded"
                    | "x-ndjson"
                    | "graphql"
                    | "sql"
            ))
}

/// Writes an event in binary mode: each set attribute as a percent-encoded `ce-*` header,
/// `datacontenttype` as `Content-Type` (none when unset), the data as the body
/// ([`CloudEvent::data_bytes`], empty when there is none).
///
/// Extensions whose names are not valid attribute names are skipped; validate hand-built events
/// first.
pub fn to_binary(event: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    for (name, value) in binary_attributes(event) {
        insert_attribute(&mut headers, name, &value);
    }
    if let Some(ct) = &event.datacontenttype {
        if let Ok(v) = HeaderValue::from_str(ct) {
            headers.insert(CONTENT_TYPE, v);
        }
    }
    (headers, event.data_bytes().unwrap_or_default())
}

/// The context attributes a binary mode carries as protocol headers or properties, in their string
/// form: every set attribute except `datacontenttype` (which travels as the content type), and
/// extensions whose names are valid attribute names. Shared by every protocol binding.
pub fn binary_attributes(event: &CloudEvent) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    for name in CORE_ATTRIBUTES {
        if name == "datacontenttype" {
            continue;
        }
        if let Some(value) = event.attribute(name) {
            out.push((name, value.into_owned()));
        }
    }
    for (name, value) in &event.extensions {
        if check_extension_name(name).is_ok() {
            out.push((name.as_str(), value.to_string()));
        }
    }
    out
}

/// Writes an event in structured mode: `Content-Type: application/cloudevents+json;
/// charset=utf-8` and the event in the JSON event format as the body.
pub fn to_structured(event: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json; charset=utf-8"));
    (headers, Bytes::from(event.to_json_vec()))
}

/// Writes events in batch mode: `Content-Type: application/cloudevents-batch+json;
/// charset=utf-8` and the events in the JSON batch format as the body.
pub fn to_batch(events: &[CloudEvent]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/cloudevents-batch+json; charset=utf-8"));
    (headers, Bytes::from(crate::cloudevent::batch_to_json_vec(events)))
}

fn insert_attribute(headers: &mut HeaderMap, attr: &str, value: &str) {
    // The core attributes' header names are constants; only extensions build theirs.
    let name = match attr {
        "specversion" => HeaderName::from_static("ce-specversion"),
        "id" => HeaderName::from_static("ce-id"),
        "source" => HeaderName::from_static("ce-source"),
        "type" => HeaderName::from_static("ce-type"),
        "dataschema" => HeaderName::from_static("ce-dataschema"),
        "subject" => HeaderName::from_static("ce-subject"),
        "time" => HeaderName::from_static("ce-time"),
        _ => match HeaderName::from_bytes(format!("{PREFIX}{attr}").as_bytes()) {
            Ok(name) => name,
            Err(_) => return,
        },
    };
    headers.insert(name, encode_header_value(value));
}

/// Percent-encodes an attribute value for a `ce-*` header: space, `"`, `%` and every character
/// outside U+0021..U+007E become `%XX` of their UTF-8 bytes.
fn encode_header_value(value: &str) -> HeaderValue {
    let encoded: std::borrow::Cow<'_, str> = utf8_percent_encode(value, HEADER_VALUE_ENCODE).into();
    HeaderValue::from_str(&encoded).expect("percent-encoded text is visible ASCII")
}

/// Percent-decodes a `ce-*` header value; the result must be UTF-8. A `%` not followed by two hex
/// digits is kept as is.
fn decode_header_value(attr: &str, value: &HeaderValue) -> Result<String, EventError> {
    percent_decode(value.as_bytes()).decode_utf8().map(std::borrow::Cow::into_owned).map_err(|_| {
        EventError::new(attr, format!("header `{PREFIX}{attr}` is not valid UTF-8 after percent-decoding"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(raw: &[u8]) -> Result<String, EventError> {
        decode_header_value("x", &HeaderValue::from_bytes(raw).unwrap())
    }

    #[test]
    fn encodes_exactly_the_required_characters() {
        let visible: String = (0x21u8..=0x7E).map(char::from).collect();
        let expected = visible.replace('"', "%22").replace('%', "%25");
        // `%` is replaced after `"`, so fix the `%22` that became `%2522`.
        let expected = expected.replace("%2522", "%22");
        assert_eq!(encode_header_value(&visible), expected.as_str());
        assert_eq!(encode_header_value("a b"), "a%20b");
        assert_eq!(encode_header_value("\t\n\u{7f}"), "%09%0A%7F");
        assert_eq!(encode_header_value("é"), "%C3%A9");
        assert_eq!(encode_header_value("€ ✓"), "%E2%82%AC%20%E2%9C%93");
        assert_eq!(encode_header_value("😀"), "%F0%9F%98%80");
        assert_eq!(encode_header_value("100%"), "100%25");
        assert_eq!(encode_header_value(""), "");
    }

    #[test]
    fn decodes_and_round_trips() {
        assert_eq!(decode(b"a%20b").unwrap(), "a b");
        assert_eq!(decode(b"%c3%a9").unwrap(), "é");
        assert_eq!(decode(b"100%25").unwrap(), "100%");
        assert_eq!(decode(b"50%").unwrap(), "50%");
        assert_eq!(decode(b"%zz").unwrap(), "%zz");
        assert_eq!(decode(b"plain+text").unwrap(), "plain+text");
        for s in ["", "a b \"q\" 100%", "héllo wörld ✓ 😀", "%20 literally", "tab\there", "+~!*"] {
            let encoded = encode_header_value(s);
            assert_eq!(decode(encoded.as_bytes()).unwrap(), s, "{s:?}");
        }
    }

    #[test]
    fn invalid_utf8_after_decoding_names_the_attribute() {
        let err = decode(b"%FF%FE").unwrap_err();
        assert_eq!(err.attribute, "x");
        let err = decode(b"\xe9t\xe9").unwrap_err();
        assert_eq!(err.attribute, "x");
    }

    #[test]
    fn textual_media_types() {
        for ct in [
            "text/plain",
            "text/csv; header=present",
            "application/xml",
            "application/atom+xml",
            "application/x-yaml",
            "application/x-www-form-urlencoded",
            "application/octet-stream; charset=utf-8",
        ] {
            assert!(is_textual_media_type(ct), "{ct}");
        }
        for ct in ["application/octet-stream", "image/png", "application/pdf"] {
            assert!(!is_textual_media_type(ct), "{ct}");
        }
    }

    #[test]
    fn modes() {
        let mode = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            detect_mode(&h)
        };
        assert_eq!(detect_mode(&HeaderMap::new()), Mode::Binary);
        assert_eq!(mode("application/cloudevents+json"), Mode::Structured);
        assert_eq!(mode("Application/CloudEvents+JSON; charset=UTF-8"), Mode::Structured);
        assert_eq!(mode("application/cloudevents-batch+json"), Mode::Batch);
        assert_eq!(mode("application/cloudevents-batch+json;charset=utf-8"), Mode::Batch);
        assert_eq!(mode("application/json"), Mode::Binary);
        assert_eq!(mode("application/cloudevents+xml"), Mode::Binary);
    }
}
