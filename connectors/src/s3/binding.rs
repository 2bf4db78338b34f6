//! The CloudEvents AWS S3 adapter: S3 notification JSON (AWS, MinIO and other S3-compatible
//! stores, moto; bare or inside an SNS envelope) to one CloudEvent per record, plus the record
//! filters. Pure functions, shared by every input and by other connectors that receive the same JSON.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::Value;
use switchyard_schemas::sources::s3::S3Filter;
use switchyard_schemas::{CloudEvent, Data};

/// Prefix of every event type: `com.amazonaws.s3.ObjectCreated:Put`.
pub const TYPE_PREFIX: &str = "com.amazonaws.s3.";

/// What a notification body holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// `s3:TestEvent`, sent when a bucket's notification configuration changes: acknowledged and
    /// ignored.
    Test,
    /// One CloudEvent per record, in order.
    Events(Vec<CloudEvent>),
}

/// Why a body is not an S3 notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an S3 notification: {reason}")]
pub struct NotificationError {
    /// What is wrong, naming the field.
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> NotificationError {
    NotificationError { reason: reason.into() }
}

/// Parses a notification body: `{"Records": [...]}` (AWS, moto, MinIO which adds `EventName` and
/// `Key`), `{"Event": "s3:TestEvent", ...}`, or either inside an SNS `Notification` envelope (SNS to
/// SQS without raw delivery).
///
/// # Errors
/// [`NotificationError`] naming the first field that is missing or of the wrong type.
pub fn parse(body: &[u8]) -> Result<Notification, NotificationError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    parse_value(&value, 0)
}

fn parse_value(value: &Value, depth: u8) -> Result<Notification, NotificationError> {
    let obj = value.as_object().ok_or_else(|| bad("the body is not a JSON object"))?;
    if obj.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    if depth == 0 && obj.get("Type").and_then(Value::as_str) == Some("Notification") {
        if let Some(message) = obj.get("Message").and_then(Value::as_str) {
            let inner: Value =
                serde_json::from_str(message).map_err(|e| bad(format!("SNS Message: invalid JSON: {e}")))?;
            return parse_value(&inner, depth + 1);
        }
    }
    let records = obj.get("Records").ok_or_else(|| bad("no `Records` member"))?;
    let records = records.as_array().ok_or_else(|| bad("`Records` is not an array"))?;
    let events =
        records.iter().enumerate().map(|(i, r)| to_event(r).map_err(|e| bad(format!("Records[{i}].{}", e.reason))));
    Ok(Notification::Events(events.collect::<Result<_, _>>()?))
}

/// Whether `payload` looks like an S3 notification (cheap check before [`parse`]), for connectors
/// that receive it among other messages.
pub fn looks_like_notification(payload: &[u8]) -> bool {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(payload) else {
        return false;
    };
    let records_ok = obj
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r.get("s3").is_some() && r.get("eventName").is_some()));
    records_ok || obj.get("Event").and_then(Value::as_str) == Some("s3:TestEvent")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Decodes an object key as S3 writes it in notifications: form encoding, `+` for a space and
/// percent-encoding for the rest (`%2B` for `+`, `%2F` for `/` in moto). Bytes that do not decode to
/// UTF-8 are kept as the lossy replacement character.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// An event name without the `s3:` prefix MinIO adds.
pub fn bare_event_name(name: &str) -> &str {
    name.strip_prefix("s3:").unwrap_or(name)
}

/// Maps one record. `id` is `x-amz-request-id.x-amz-id-2` (the adapter's rule); when the record
/// has no request id: `<bucket>/<key>/<sequencer>`, else `<bucket>/<key>/<eTag>/<eventName>/<eventTime>`
/// (stable across redeliveries of the same message).
///
/// # Errors
/// [`NotificationError`] when `eventName`, `s3.bucket.name` or `s3.object.key` is missing.
pub fn to_event(record: &Value) -> Result<CloudEvent, NotificationError> {
    if !record.is_object() {
        return Err(bad("the record is not an object"));
    }
    let name = str_at(record, &["eventName"]).ok_or_else(|| bad("eventName: missing"))?;
    let bucket = str_at(record, &["s3", "bucket", "name"]).ok_or_else(|| bad("s3.bucket.name: missing"))?;
    let raw_key = record
        .get("s3")
        .and_then(|s| s.get("object"))
        .and_then(|o| o.get("key"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("s3.object.key: missing"))?;
    let key = decode_key(raw_key);
    let event_source = str_at(record, &["eventSource"]).unwrap_or("aws:s3");
    let region = record.get("awsRegion").and_then(Value::as_str).unwrap_or("");
    let time_text = str_at(record, &["eventTime"]);
    let id = match (
        str_at(record, &["responseElements", "x-amz-request-id"]),
        str_at(record, &["responseElements", "x-amz-id-2"]),
    ) {
        (Some(req), Some(id2)) => format!("{req}.{id2}"),
        (Some(req), None) => req.to_owned(),
        _ => match str_at(record, &["s3", "object", "sequencer"]) {
            Some(seq) => format!("{bucket}/{key}/{seq}"),
            None => format!(
                "{bucket}/{key}/{}/{}/{}",
                str_at(record, &["s3", "object", "eTag"]).unwrap_or("-"),
                bare_event_name(name),
                time_text.unwrap_or("-")
            ),
        },
    };
    let mut event = CloudEvent::new(
        id,
        format!("{event_source}.{region}.{bucket}"),
        format!("{TYPE_PREFIX}{}", bare_event_name(name)),
    );
    if !key.is_empty() {
        event.subject = Some(key);
    }
    event.time = time_text.and_then(parse_time);
    event.datacontenttype = Some("application/json".to_owned());
    event.data = Some(Data::Json(record.clone()));
    Ok(event)
}

/// RFC 3339, or a time without an offset (as moto writes it), taken as UTC.
fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(text).ok().or_else(|| {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc().fixed_offset())
    })
}

/// The parts of a mapped event the filters look at.
fn parts(event: &CloudEvent) -> (Cow<'_, str>, &str, &str) {
    let bucket = match &event.data {
        Some(Data::Json(v)) => str_at(v, &["s3", "bucket", "name"]).map_or(Cow::Borrowed(""), Cow::Borrowed),
        _ => Cow::Borrowed(""),
    };
    let key = event.subject.as_deref().unwrap_or("");
    let name = event.ty.strip_prefix(TYPE_PREFIX).unwrap_or(&event.ty);
    (bucket, key, name)
}

/// Whether a mapped event passes `filter`.
pub fn matches(filter: &S3Filter, event: &CloudEvent) -> bool {
    let (bucket, key, name) = parts(event);
    (filter.buckets.is_empty() || filter.buckets.iter().any(|b| *b == bucket))
        && filter.prefix.as_deref().is_none_or(|p| key.starts_with(p))
        && filter.suffix.as_deref().is_none_or(|s| key.ends_with(s))
        && (filter.events.is_empty()
            || filter.events.iter().any(|pattern| {
                let pattern = bare_event_name(pattern);
                match pattern.strip_suffix('*') {
                    Some(head) => name.starts_with(head),
                    None => name == pattern,
                }
            }))
}

/// Whether the event is about an object that no longer exists (`ObjectRemoved:*`).
pub fn is_removal(event: &CloudEvent) -> bool {
    event.ty.starts_with("com.amazonaws.s3.ObjectRemoved")
}

/// Expands an event another connector received into the S3 events its data holds, for sources
/// that opt in (`s3_notifications`): `None` when the data is not an S3 notification (the event is
/// delivered as it is), `Some(vec![])` for `s3:TestEvent` (ack and ignore).
pub fn expand(event: &CloudEvent) -> Option<Vec<CloudEvent>> {
    let bytes = match &event.data {
        Some(Data::Json(v)) => serde_json::to_vec(v).ok()?,
        Some(_) => event.data_bytes()?.to_vec(),
        None => return None,
    };
    if !looks_like_notification(&bytes) {
        return None;
    }
    let mut out = match parse(&bytes).ok()? {
        Notification::Test => Vec::new(),
        Notification::Events(events) => events,
    };
    // Keep the carrier's trace context.
    for e in &mut out {
        for name in ["traceparent", "tracestate"] {
            if let Some(v) = event.extensions.get(name) {
                e.extensions.insert(name.to_owned(), v.clone());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, key: &str) -> Value {
        json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
            "eventTime": "2024-05-01T10:00:00.000Z", "eventName": name,
            "s3": {"bucket": {"name": "photos"}, "object": {"key": key, "size": 3, "eTag": "abc"}}
        })
    }

    #[test]
    fn keys_decode_plus_and_percent() {
        assert_eq!(decode_key("dir%2Fa+b%2Bc%2FZo%C3%AB.txt"), "dir/a b+c/Zoë.txt");
        assert_eq!(decode_key("plain/key.jpg"), "plain/key.jpg");
        assert_eq!(decode_key("100%25+done"), "100% done");
        assert_eq!(decode_key("bad%FF"), "bad\u{FFFD}");
    }

    #[test]
    fn mapping_and_id_fallbacks() {
        let mut r = record("ObjectCreated:Put", "a+b.txt");
        let e = to_event(&r).unwrap();
        assert_eq!(e.ty, "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(e.source, "aws:s3.eu-west-1.photos");
        assert_eq!(e.subject.as_deref(), Some("a b.txt"));
        assert_eq!(e.id, "photos/a b.txt/abc/ObjectCreated:Put/2024-05-01T10:00:00.000Z");
        assert_eq!(e.time.unwrap().to_rfc3339(), "2024-05-01T10:00:00+00:00");
        e.validate().unwrap();
        r["s3"]["object"]["sequencer"] = json!("0055AED6DCD90281E5");
        assert_eq!(to_event(&r).unwrap().id, "photos/a b.txt/0055AED6DCD90281E5");
        r["responseElements"] = json!({"x-amz-request-id": "REQ", "x-amz-id-2": "ID2"});
        assert_eq!(to_event(&r).unwrap().id, "REQ.ID2");
        r["eventName"] = json!("s3:ObjectRemoved:Delete");
        r["eventTime"] = json!("2024-05-01T10:00:00.123456");
        let e = to_event(&r).unwrap();
        assert_eq!(e.ty, "com.amazonaws.s3.ObjectRemoved:Delete");
        assert!(is_removal(&e));
        assert_eq!(e.time.unwrap().to_rfc3339(), "2024-05-01T10:00:00.123456+00:00");
    }

    #[test]
    fn test_events_envelopes_and_errors() {
        assert_eq!(parse(br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#), Ok(Notification::Test));
        let inner = json!({"Records": [record("ObjectCreated:Put", "k")]}).to_string();
        let sns = json!({"Type": "Notification", "Message": inner}).to_string();
        let Ok(Notification::Events(events)) = parse(sns.as_bytes()) else { panic!() };
        assert_eq!(events.len(), 1);
        let err = parse(br#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"}}}]}"#);
        assert_eq!(err.unwrap_err().reason, "Records[0].s3.object.key: missing");
        assert!(parse(b"[1]").is_err());
        assert!(parse(b"{").unwrap_err().reason.contains("invalid JSON"));
        assert!(looks_like_notification(inner.as_bytes()));
        assert!(!looks_like_notification(br#"{"Records": []}"#));
        assert!(!looks_like_notification(br#"{"order": 1}"#));
    }

    #[test]
    fn filters() {
        let e = to_event(&record("ObjectCreated:CompleteMultipartUpload", "img/cat.jpg")).unwrap();
        let f = |y: &str| serde_yaml::from_str::<S3Filter>(y).unwrap();
        assert!(matches(&f("{}"), &e));
        assert!(matches(&f("{buckets: [photos], prefix: img/, suffix: .jpg, events: ['s3:ObjectCreated:*']}"), &e));
        assert!(!matches(&f("{buckets: [other]}"), &e));
        assert!(!matches(&f("{prefix: doc/}"), &e));
        assert!(!matches(&f("{suffix: .png}"), &e));
        assert!(!matches(&f("{events: ['ObjectRemoved:*', 'ObjectCreated:Put']}"), &e));
        assert!(matches(&f("{events: ['ObjectCreated:CompleteMultipartUpload']}"), &e));
    }

    #[test]
    fn expand_other_connectors_events() {
        let mut carrier = CloudEvent::new("1", "nats://x/s", "dev.switchyard.nats.message");
        carrier.data = Some(Data::Json(json!({"Records": [record("ObjectCreated:Put", "k")]})));
        carrier.extensions.insert("traceparent".into(), switchyard_schemas::ExtensionValue::String("00-x".into()));
        let out = expand(&carrier).unwrap();
        assert_eq!(out[0].ty, "com.amazonaws.s3.ObjectCreated:Put");
        assert!(out[0].extensions.contains_key("traceparent"));
        carrier.data = Some(Data::Json(json!({"Event": "s3:TestEvent"})));
        assert_eq!(expand(&carrier), Some(vec![]));
        carrier.data = Some(Data::Json(json!({"order": 1})));
        assert_eq!(expand(&carrier), None);
    }
}
