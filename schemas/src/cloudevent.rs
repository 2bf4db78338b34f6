//! The CloudEvent model (CloudEvents 1.0.2 core specification) with its validation rules and the
//! JSON event format (single events and batches).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, SecondsFormat, TimeZone};
use serde_json::{Map, Value};

/// The only CloudEvents specification version this crate accepts.
pub const SPEC_VERSION: &str = "1.0";

/// The names of the core context attributes, in the order they are checked and written.
pub const CORE_ATTRIBUTES: [&str; 8] =
    ["specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"];

/// Decodes `data_base64` whether or not the producer wrote the trailing `=` padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A CloudEvent: the context attributes and the optional data.
///
/// Build one with [`CloudEvent::new`] and set the optional fields directly; call
/// [`CloudEvent::validate`] before handing a hand-built event to others. Events produced by the
/// parsers in this crate are always valid.
///
/// Equality compares `time` as an instant: the same moment written with different UTC offsets is
/// equal.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent {
    /// `id`: identifies the event; unique per `source`. Non-empty.
    pub id: String,
    /// `source`: the context the event happened in. A non-empty URI-reference.
    pub source: String,
    /// `specversion`: always `"1.0"` once validated.
    pub specversion: String,
    /// `type`: the kind of event, e.g. `com.example.order.created`. Non-empty.
    pub ty: String,
    /// `datacontenttype`: the RFC 2046 media type of `data`. Absent means JSON.
    pub datacontenttype: Option<String>,
    /// `dataschema`: the schema `data` adheres to, as an absolute URI.
    pub dataschema: Option<String>,
    /// `subject`: what the event is about within `source`. Non-empty when present.
    pub subject: Option<String>,
    /// `time`: when the occurrence happened.
    pub time: Option<DateTime<FixedOffset>>,
    /// Extension context attributes by name (lower-case ASCII letters and digits).
    pub extensions: BTreeMap<String, ExtensionValue>,
    /// The event payload.
    pub data: Option<Data>,
}

/// The value of an extension context attribute.
///
/// The JSON event format carries the three JSON-native CloudEvents types; other CloudEvents types
/// (Binary, URI, URI-reference, Timestamp) travel as their canonical string forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExtensionValue {
    /// A string.
    String(String),
    /// An integer; the CloudEvents Integer type is a 32-bit signed integer, so a value outside the
    /// `i32` range fails validation.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
}

impl fmt::Display for ExtensionValue {
    /// The canonical string form: the string itself, the integer in decimal, `true` or `false`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl From<String> for ExtensionValue {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<&str> for ExtensionValue {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<i32> for ExtensionValue {
    fn from(i: i32) -> Self {
        Self::Integer(i64::from(i))
    }
}

impl From<bool> for ExtensionValue {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

/// The data (payload) of an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// JSON data: written embedded as JSON under `data` in the JSON format.
    Json(Value),
    /// Text data: written as a JSON string under `data`.
    Text(String),
    /// Binary data: written base64-encoded under `data_base64`.
    Binary(Bytes),
}

/// Why an event (or batch) is invalid: the attribute at fault and the rule it breaks.
///
/// `attribute` is a context attribute name (`time`), a JSON member (`data`, `data_base64`), an
/// index-prefixed name inside a batch (`[2].id`), `[2]` for a batch member that is not an event at
/// all, or `(event)` / `(batch)` for problems with the whole body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("attribute `{attribute}`: {rule}")]
pub struct EventError {
    /// The attribute (or member, or `(event)` / `(batch)`) at fault.
    pub attribute: String,
    /// The rule broken, with the offending value where that helps.
    pub rule: String,
}

impl EventError {
    /// An error about `attribute` breaking `rule`.
    pub fn new(attribute: impl Into<String>, rule: impl Into<String>) -> Self {
        Self { attribute: attribute.into(), rule: rule.into() }
    }

    /// The same error for the batch member at `index` (`id` becomes `[2].id`).
    fn in_batch(self, index: usize) -> Self {
        let attribute =
            if self.attribute == "(event)" { format!("[{index}]") } else { format!("[{index}].{}", self.attribute) };
        Self { attribute, rule: self.rule }
    }
}

impl CloudEvent {
    /// An event with the required attributes set, `specversion` `"1.0"`, and nothing else.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            specversion: SPEC_VERSION.to_owned(),
            ty: ty.into(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            extensions: BTreeMap::new(),
            data: None,
        }
    }

    /// Checks every rule of the core specification: the required attributes are non-empty,
    /// `specversion` is `"1.0"`, `source` is a URI-reference, `dataschema` an absolute URI,
    /// `datacontenttype` an RFC 2046 media type, `subject` non-empty, strings free of control
    /// characters, and extension names and values well-formed.
    ///
    /// # Errors
    ///
    /// The first rule broken, checked in the order `specversion`, `id`, `source`, `type`,
    /// `datacontenttype`, `dataschema`, `subject`, then the extensions by name.
    pub fn validate(&self) -> Result<(), EventError> {
        check_specversion(&self.specversion)?;
        check_required_string("id", &self.id)?;
        check_source(&self.source)?;
        check_required_string("type", &self.ty)?;
        if let Some(ct) = &self.datacontenttype {
            check_datacontenttype(ct)?;
        }
        if let Some(schema) = &self.dataschema {
            check_dataschema(schema)?;
        }
        if let Some(subject) = &self.subject {
            check_required_string("subject", subject)?;
        }
        for (name, value) in &self.extensions {
            check_extension_name(name)?;
            check_extension_value(name, value)?;
        }
        Ok(())
    }

    /// Parses an event in the JSON event format and validates it fully.
    ///
    /// A `null` attribute value means the attribute is unset; a `null` `data` or `data_base64`
    /// member means there is no data. `data_base64` becomes [`Data::Binary`]; `data` becomes
    /// [`Data::Json`] when the content type is JSON (or absent), [`Data::Text`] when it is a JSON
    /// string with a non-JSON content type, and [`Data::Json`] otherwise.
    ///
    /// # Errors
    ///
    /// An [`EventError`] naming the attribute at fault, or `(event)` when `v` is not an object.
    pub fn from_json_value(v: Value) -> Result<Self, EventError> {
        let Value::Object(mut obj) = v else {
            return Err(EventError::new("(event)", format!("must be a JSON object, got {}", json_kind(&v))));
        };

        let specversion = take_required_string(&mut obj, "specversion")?;
        check_specversion(&specversion)?;
        let id = take_required_string(&mut obj, "id")?;
        check_required_string("id", &id)?;
        let source = take_required_string(&mut obj, "source")?;
        check_source(&source)?;
        let ty = take_required_string(&mut obj, "type")?;
        check_required_string("type", &ty)?;

        let datacontenttype = take_optional_string(&mut obj, "datacontenttype")?;
        if let Some(ct) = &datacontenttype {
            check_datacontenttype(ct)?;
        }
        let dataschema = take_optional_string(&mut obj, "dataschema")?;
        if let Some(schema) = &dataschema {
            check_dataschema(schema)?;
        }
        let subject = take_optional_string(&mut obj, "subject")?;
        if let Some(subject) = &subject {
            check_required_string("subject", subject)?;
        }
        let time = match take_optional_string(&mut obj, "time")? {
            Some(t) => Some(parse_time(&t)?),
            None => None,
        };

        let data_member = obj.remove("data").filter(|d| !d.is_null());
        let base64_member = obj.remove("data_base64").filter(|d| !d.is_null());

        // Whatever is left is an extension attribute; check them in name order so the error
        // reported does not depend on the member order of the document.
        let mut rest: Vec<(String, Value)> = obj.into_iter().collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        let mut extensions = BTreeMap::new();
        for (name, value) in rest {
            check_extension_name(&name)?;
            let value = match value {
                Value::Null => continue,
                Value::String(s) => ExtensionValue::String(s),
                Value::Bool(b) => ExtensionValue::Boolean(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => ExtensionValue::Integer(i),
                    None => return Err(EventError::new(&name, integer_rule(&n.to_string()))),
                },
                other => {
                    return Err(EventError::new(
                        &name,
                        format!("must be a string, an integer or a boolean, got {}", json_kind(&other)),
                    ))
                }
            };
            check_extension_value(&name, &value)?;
            extensions.insert(name, value);
        }

        let mut event =
            Self { id, source, specversion, ty, datacontenttype, dataschema, subject, time, extensions, data: None };
        event.data = match (data_member, base64_member) {
            (Some(_), Some(_)) => {
                return Err(EventError::new("data", "`data` and `data_base64` must not both be present"))
            }
            (None, Some(Value::String(b64))) => Some(Data::Binary(decode_base64(&b64)?)),
            (None, Some(other)) => {
                return Err(EventError::new(
                    "data_base64",
                    format!("must be a base64 string, got {}", json_kind(&other)),
                ))
            }
            (Some(data), None) => Some(match data {
                Value::String(s) if !event.data_is_json() => Data::Text(s),
                other => Data::Json(other),
            }),
            (None, None) => None,
        };
        Ok(event)
    }

    /// Parses an event in the JSON event format from bytes and validates it fully.
    ///
    /// # Errors
    ///
    /// `(event)` when the bytes are not JSON, otherwise as [`CloudEvent::from_json_value`].
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, EventError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| EventError::new("(event)", format!("must be valid JSON: {e}")))?;
        Self::from_json_value(value)
    }

    /// The event in the JSON event format. Unset attributes are omitted; JSON data is embedded,
    /// text data is a string under `data`, binary data is base64 under `data_base64`; `time` uses
    /// as many fractional digits as it needs and `Z` for UTC.
    pub fn to_json_value(&self) -> Value {
        let mut obj = Map::new();
        for (name, value) in &self.extensions {
            let v = match value {
                ExtensionValue::String(s) => Value::String(s.clone()),
                ExtensionValue::Integer(i) => Value::from(*i),
                ExtensionValue::Boolean(b) => Value::Bool(*b),
            };
            obj.insert(name.clone(), v);
        }
        for name in CORE_ATTRIBUTES {
            if let Some(v) = self.attribute(name) {
                obj.insert(name.to_owned(), Value::String(v.into_owned()));
            }
        }
        match &self.data {
            Some(Data::Json(v)) => {
                obj.insert("data".to_owned(), v.clone());
            }
            Some(Data::Text(s)) => {
                obj.insert("data".to_owned(), Value::String(s.clone()));
            }
            Some(Data::Binary(b)) => {
                obj.insert("data_base64".to_owned(), Value::String(STANDARD.encode(b)));
            }
            None => {}
        }
        Value::Object(obj)
    }

    /// The event in the JSON event format, as bytes: the same bytes as serializing
    /// [`CloudEvent::to_json_value`], written straight from the event without building (and
    /// cloning every string into) a JSON tree first.
    pub fn to_json_vec(&self) -> Vec<u8> {
        serde_json::to_vec(&JsonFormat(self)).unwrap_or_else(|_| self.to_json_value().to_string().into_bytes())
    }

    /// The string form of a context attribute (core or extension) by name: `type` is
    /// [`CloudEvent::ty`], `time` is RFC 3339, extensions use their canonical string form. `None`
    /// when the attribute is unset (`data` is not an attribute).
    pub fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "specversion" => Some(Cow::Borrowed(&self.specversion)),
            "id" => Some(Cow::Borrowed(&self.id)),
            "source" => Some(Cow::Borrowed(&self.source)),
            "type" => Some(Cow::Borrowed(&self.ty)),
            "datacontenttype" => self.datacontenttype.as_deref().map(Cow::Borrowed),
            "dataschema" => self.dataschema.as_deref().map(Cow::Borrowed),
            "subject" => self.subject.as_deref().map(Cow::Borrowed),
            "time" => self.time.as_ref().map(|t| Cow::Owned(format_time(t))),
            _ => self.extensions.get(name).map(|v| match v {
                ExtensionValue::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            }),
        }
    }

    /// Whether the data is JSON: `datacontenttype` is absent, `application/json`, or any
    /// `*/*+json` type (parameters ignored, case-insensitive).
    pub fn data_is_json(&self) -> bool {
        self.datacontenttype.as_deref().is_none_or(is_json_media_type)
    }

    /// The bytes of the data as they go in an HTTP binary-mode body: JSON serialized, text as
    /// UTF-8, binary as is. `None` when there is no data.
    pub fn data_bytes(&self) -> Option<Bytes> {
        self.data.as_ref().map(|d| match d {
            Data::Json(v) => Bytes::from(v.to_string().into_bytes()),
            Data::Text(s) => Bytes::from(s.clone().into_bytes()),
            Data::Binary(b) => b.clone(),
        })
    }

    /// The data as JSON for a function handler: JSON as is; text parsed as JSON when the content
    /// type is JSON and it parses, else the string; binary as a base64 string; no data as `null`.
    pub fn data_for_handler(&self) -> Value {
        match &self.data {
            None => Value::Null,
            Some(Data::Json(v)) => v.clone(),
            Some(Data::Text(s)) => {
                if self.data_is_json() {
                    if let Ok(v) = serde_json::from_str(s) {
                        return v;
                    }
                }
                Value::String(s.clone())
            }
            Some(Data::Binary(b)) => Value::String(STANDARD.encode(b)),
        }
    }
}

impl serde::Serialize for CloudEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json_value().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for CloudEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_json_value(value).map_err(serde::de::Error::custom)
    }
}

/// Parses a batch in the JSON batch format: a JSON array of events (possibly empty), each
/// validated fully.
///
/// # Errors
///
/// `(batch)` when the body is not a JSON array; `[i]` when member `i` is not an object; `[i].name`
/// when member `i` breaks a rule about attribute `name`.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| EventError::new("(batch)", format!("must be valid JSON: {e}")))?;
    let Value::Array(members) = value else {
        return Err(EventError::new("(batch)", format!("must be a JSON array of events, got {}", json_kind(&value))));
    };
    members
        .into_iter()
        .enumerate()
        .map(|(i, member)| CloudEvent::from_json_value(member).map_err(|e| e.in_batch(i)))
        .collect()
}

/// The events in the JSON batch format.
pub fn batch_to_json_vec(events: &[CloudEvent]) -> Vec<u8> {
    let array = Value::Array(events.iter().map(CloudEvent::to_json_value).collect());
    array.to_string().into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Attribute rules, shared with the HTTP binding.

/// `specversion` must be exactly `"1.0"`.
pub(crate) fn check_specversion(v: &str) -> Result<(), EventError> {
    if v == SPEC_VERSION {
        Ok(())
    } else {
        Err(EventError::new("specversion", format!("must be \"1.0\", got {}", quoted(v))))
    }
}

/// A string attribute that must be non-empty (id, type, subject) and free of forbidden characters.
pub(crate) fn check_required_string(name: &str, v: &str) -> Result<(), EventError> {
    if v.is_empty() {
        return Err(EventError::new(name, "must be a non-empty string"));
    }
    check_characters(name, v)
}

/// The CloudEvents String type forbids control characters and Unicode noncharacters.
fn check_characters(name: &str, v: &str) -> Result<(), EventError> {
    if v.chars().any(is_forbidden_char) {
        Err(EventError::new(
            name,
            format!("must not contain control characters or Unicode noncharacters, got {}", quoted(v)),
        ))
    } else {
        Ok(())
    }
}

fn is_forbidden_char(c: char) -> bool {
    let n = u32::from(c);
    c.is_control() // U+0000..U+001F and U+007F..U+009F
        || (0xFDD0..=0xFDEF).contains(&n)
        || (n & 0xFFFE) == 0xFFFE
}

pub(crate) fn check_source(v: &str) -> Result<(), EventError> {
    if v.is_empty() || !is_uri_reference(v) {
        Err(EventError::new("source", format!("must be a non-empty URI-reference, got {}", quoted(v))))
    } else {
        Ok(())
    }
}

pub(crate) fn check_dataschema(v: &str) -> Result<(), EventError> {
    if is_absolute_uri(v) {
        Ok(())
    } else {
        Err(EventError::new("dataschema", format!("must be an absolute URI, got {}", quoted(v))))
    }
}

pub(crate) fn check_datacontenttype(v: &str) -> Result<(), EventError> {
    if is_media_type(v) {
        Ok(())
    } else {
        Err(EventError::new(
            "datacontenttype",
            format!("must be an RFC 2046 media type such as \"application/json\", got {}", quoted(v)),
        ))
    }
}

/// Extension names: lower-case ASCII letters and digits, and not a core attribute or `data`.
pub(crate) fn check_extension_name(name: &str) -> Result<(), EventError> {
    if !is_attribute_name(name) {
        return Err(EventError::new(
            name,
            "attribute names must be non-empty and consist of lower-case ASCII letters and digits only",
        ));
    }
    if CORE_ATTRIBUTES.contains(&name) {
        return Err(EventError::new(name, "is a core attribute and cannot be an extension"));
    }
    if name == "data" {
        return Err(EventError::new(name, "is reserved for the event data and cannot be an extension"));
    }
    Ok(())
}

fn check_extension_value(name: &str, value: &ExtensionValue) -> Result<(), EventError> {
    match value {
        ExtensionValue::String(s) => check_characters(name, s),
        ExtensionValue::Integer(i) if i32::try_from(*i).is_err() => {
            Err(EventError::new(name, integer_rule(&i.to_string())))
        }
        ExtensionValue::Integer(_) | ExtensionValue::Boolean(_) => Ok(()),
    }
}

fn integer_rule(got: &str) -> String {
    format!("an integer must be a whole number in the 32-bit signed range, got {got}")
}

/// Parses the `time` attribute (strict RFC 3339).
pub(crate) fn parse_time(v: &str) -> Result<DateTime<FixedOffset>, EventError> {
    parse_rfc3339(v).ok_or_else(|| EventError::new("time", format!("must be an RFC 3339 timestamp, got {}", quoted(v))))
}

/// A member of an event in the JSON event format, borrowed from the event where it can be.
enum Member<'a> {
    Str(&'a str),
    Owned(String),
    Int(i64),
    Bool(bool),
    Json(&'a Value),
}

impl serde::Serialize for Member<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Str(v) => s.serialize_str(v),
            Self::Owned(v) => s.serialize_str(v),
            Self::Int(v) => s.serialize_i64(*v),
            Self::Bool(v) => s.serialize_bool(*v),
            Self::Json(v) => v.serialize(s),
        }
    }
}

/// Serializes an event in the JSON event format. Members are collected as
/// [`CloudEvent::to_json_value`] inserts them (extensions, then core attributes, then the data, a
/// later one replacing an earlier one of the same name) and written sorted by name, as
/// `serde_json::Map` writes them, so both give the same bytes.
struct JsonFormat<'a>(&'a CloudEvent);

impl serde::Serialize for JsonFormat<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let e = self.0;
        let mut members: BTreeMap<&str, Member<'_>> = BTreeMap::new();
        for (name, value) in &e.extensions {
            let v = match value {
                ExtensionValue::String(v) => Member::Str(v),
                ExtensionValue::Integer(v) => Member::Int(*v),
                ExtensionValue::Boolean(v) => Member::Bool(*v),
            };
            members.insert(name, v);
        }
        for name in CORE_ATTRIBUTES {
            match e.attribute(name) {
                Some(Cow::Borrowed(v)) => members.insert(name, Member::Str(v)),
                Some(Cow::Owned(v)) => members.insert(name, Member::Owned(v)),
                None => None,
            };
        }
        match &e.data {
            Some(Data::Json(v)) => members.insert("data", Member::Json(v)),
            Some(Data::Text(v)) => members.insert("data", Member::Str(v)),
            Some(Data::Binary(b)) => members.insert("data_base64", Member::Owned(STANDARD.encode(b))),
            None => None,
        };
        let mut map = s.serialize_map(Some(members.len()))?;
        for (name, value) in &members {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The canonical form of a timestamp: RFC 3339, only the fractional digits needed, `Z` for UTC.
pub(crate) fn format_time(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn decode_base64(v: &str) -> Result<Bytes, EventError> {
    BASE64_LENIENT
        .decode(v)
        .map(Bytes::from)
        .map_err(|e| EventError::new("data_base64", format!("must be valid base64: {e}")))
}

fn take_required_string(obj: &mut Map<String, Value>, name: &str) -> Result<String, EventError> {
    match obj.remove(name) {
        None | Some(Value::Null) => Err(EventError::new(name, "is required")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(EventError::new(name, format!("must be a string, got {}", json_kind(&other)))),
    }
}

fn take_optional_string(obj: &mut Map<String, Value>, name: &str) -> Result<Option<String>, EventError> {
    match obj.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::new(name, format!("must be a string, got {}", json_kind(&other)))),
    }
}

/// The JSON type of a value, for error messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value quoted for an error message, cut short when long.
pub(crate) fn quoted(v: &str) -> String {
    const MAX: usize = 100;
    match v.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &v[..cut]),
        None => format!("{v:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax helpers.

/// Attribute names: non-empty, lower-case ASCII letters and digits.
pub(crate) fn is_attribute_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// RFC 2045 `token` characters: printable ASCII except space and the `tspecials`.
fn is_token_byte(b: u8) -> bool {
    (0x21..=0x7E).contains(&b) && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Whether `s` is an RFC 2046 media type: `type/subtype` followed by any number of
/// `; attribute=value` parameters (value a token or a quoted string; whitespace allowed around `;`).
pub(crate) fn is_media_type(s: &str) -> bool {
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or_default();
    let Some((ty, subtype)) = essence.trim_end_matches([' ', '\t']).split_once('/') else {
        return false;
    };
    if !is_token(ty) || !is_token(subtype) {
        return false;
    }
    // Re-scan the parameters by hand: a quoted value may itself contain `;`.
    let mut rest = &s[essence.len()..];
    while let Some(after) = rest.strip_prefix(';') {
        let param = after.trim_start_matches([' ', '\t']);
        let Some((attr, value)) = param.split_once('=') else {
            return false;
        };
        if !is_token(attr) {
            return false;
        }
        let consumed = if let Some(q) = value.strip_prefix('"') {
            match quoted_string_len(q) {
                Some(n) => n + 1,
                None => return false,
            }
        } else {
            let n = value.bytes().take_while(|b| is_token_byte(*b)).count();
            if n == 0 {
                return false;
            }
            n
        };
        rest = value[consumed..].trim_start_matches([' ', '\t']);
    }
    rest.is_empty()
}

/// The length of a quoted string's body plus its closing quote (the opening quote already
/// stripped), or `None` when it is not closed or holds characters outside printable ASCII and tab.
fn quoted_string_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                if !(next == b'\t' || (0x20..=0x7E).contains(&next)) {
                    return None;
                }
                i += 2;
            }
            b'\t' | 0x20..=0x7E => i += 1,
            _ => return None,
        }
    }
    None
}

/// The lower-cased `type/subtype` of a media type, parameters and surrounding whitespace dropped.
pub(crate) fn media_essence(s: &str) -> String {
    s.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// `application/json` or any `*/*+json` type.
pub(crate) fn is_json_media_type(s: &str) -> bool {
    let essence = media_essence(s);
    essence == "application/json" || essence.split_once('/').is_some_and(|(_, sub)| sub.ends_with("+json"))
}

/// Whether every character may appear in an RFC 3986 URI: unreserved, reserved, or a `%XX` escape;
/// with at most one `#`.
fn has_uri_characters(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut hashes = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
            continue;
        }
        if b == b'#' {
            hashes += 1;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b)) {
            return false;
        }
        i += 1;
    }
    hashes <= 1
}

/// The scheme of a URI when it has one: `Some(Ok(scheme))`, `Some(Err(()))` when the text before
/// the first `:` is not a valid scheme (so the string is not a URI-reference), `None` for a
/// relative reference.
fn uri_scheme(s: &str) -> Option<Result<&str, ()>> {
    let end = s.find([':', '/', '?', '#'])?;
    if s.as_bytes()[end] != b':' {
        return None;
    }
    let scheme = &s[..end];
    let valid = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    Some(if valid { Ok(scheme) } else { Err(()) })
}

/// Whether `s` is an RFC 3986 URI-reference (a URI or a relative reference; may be empty).
pub(crate) fn is_uri_reference(s: &str) -> bool {
    has_uri_characters(s) && !matches!(uri_scheme(s), Some(Err(())))
}

/// Whether `s` is an RFC 3986 URI with a scheme (a fragment is allowed).
pub(crate) fn is_absolute_uri(s: &str) -> bool {
    has_uri_characters(s) && matches!(uri_scheme(s), Some(Ok(_)))
}

/// Parses a timestamp in strict RFC 3339 `date-time` form: `YYYY-MM-DDTHH:MM:SS`, optional
/// fraction of any length (kept to the nanosecond), then `Z` or `+HH:MM` / `-HH:MM`. `T` and `Z`
/// may be lower-case. A leap second (`:60`) is accepted.
pub(crate) fn parse_rfc3339(s: &str) -> Option<DateTime<FixedOffset>> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |acc, d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
    };
    let byte_is = |at: usize, want: &[u8]| b.get(at).is_some_and(|c| want.contains(c));

    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if !(byte_is(4, b"-") && byte_is(7, b"-") && byte_is(10, b"Tt") && byte_is(13, b":") && byte_is(16, b":")) {
        return None;
    }

    let mut i = 19;
    let mut nanos = 0u32;
    if byte_is(i, b".") {
        i += 1;
        let start = i;
        while byte_is(i, b"0123456789") {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        if digits < 9 {
            nanos *= 10u32.pow(u32::try_from(9 - digits).ok()?);
        }
    }

    let offset_secs: i32 = match &b[i..] {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let oh = num(i + 1, 2)?;
            let om = num(i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i32::try_from(oh * 3600 + om * 60).ok()?;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };

    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = if second == 60 {
        NaiveTime::from_hms_nano_opt(hour, minute, 59, 1_000_000_000 + nanos)?
    } else {
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?
    };
    let offset = FixedOffset::east_opt(offset_secs)?;
    offset.from_local_datetime(&date.and_time(time)).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bytes_are_those_of_the_json_value() {
        let mut e = CloudEvent::new("id-1", "/src", "com.example.t");
        e.subject = Some("a \"quoted\" subject".to_owned());
        e.time = Some(parse_rfc3339("2018-04-05T17:31:00.5+02:00").unwrap());
        e.datacontenttype = Some("application/json".to_owned());
        e.extensions.insert("zeta".to_owned(), ExtensionValue::Integer(-7));
        e.extensions.insert("alpha".to_owned(), ExtensionValue::Boolean(true));
        e.extensions.insert("partitionkey".to_owned(), ExtensionValue::String("k\u{e9}y".to_owned()));
        for data in [
            None,
            Some(Data::Json(serde_json::json!({"b": [1, 2.5, null], "a": {"z": "\n"}}))),
            Some(Data::Text("plain text".to_owned())),
            Some(Data::Binary(Bytes::from_static(&[0, 159, 146, 150]))),
        ] {
            e.data = data;
            assert_eq!(String::from_utf8(e.to_json_vec()).unwrap(), e.to_json_value().to_string(), "data {:?}", e.data);
        }
    }

    #[test]
    fn rfc3339_accepts_any_precision_and_offset() {
        let utc = parse_rfc3339("2018-04-05T17:31:00Z").unwrap();
        for s in [
            "2018-04-05T17:31:00.000000000Z",
            "2018-04-05T17:31:00.0Z",
            "2018-04-05T17:31:00.000000000000Z",
            "2018-04-05t17:31:00z",
            "2018-04-05T18:31:00+01:00",
            "2018-04-05T16:31:00-01:00",
            "2018-04-05T17:31:00-00:00",
            "2018-04-06T17:01:00+23:30",
        ] {
            assert_eq!(parse_rfc3339(s), Some(utc), "{s}");
        }
        let frac = parse_rfc3339("2018-04-05T17:31:00.123456789123Z").unwrap();
        assert_eq!(frac.timestamp_subsec_nanos(), 123_456_789);
        let ms = parse_rfc3339("2018-04-05T17:31:00.5+02:00").unwrap();
        assert_eq!(ms.timestamp_subsec_millis(), 500);
        assert_eq!(ms.offset().local_minus_utc(), 7200);
        assert!(parse_rfc3339("2016-12-31T23:59:60Z").is_some(), "leap second");
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some(), "leap day");
    }

    #[test]
    fn rfc3339_rejects_everything_else() {
        for s in [
            "",
            "lunchtime",
            "2018-04-05",
            "2018-04-05T18:31Z",
            "2018-04-05T18:31:00",
            "2018-04-05T18:31:00X",
            "2018-04-05T18:31:00+25:00",
            "2018-04-05T18:31:00+24:00",
            "2018-04-05T18:31:00+01:60",
            "2018-04-05T18:31:00+xx:00",
            "2018-04-05T18:31:00+05",
            "2018-04-05T18:31:00+0500",
            "2018-04-05 18:31:00Z",
            "2018-04-05T18:31:00.Z",
            "2018-04-05T18:31:00,5Z",
            "2018-04-05T18:31:00Z ",
            " 2018-04-05T18:31:00Z",
            "2018-13-05T18:31:00Z",
            "2018-02-30T18:31:00Z",
            "2023-02-29T00:00:00Z",
            "2018-04-05T24:00:00Z",
            "2018-04-05T23:60:00Z",
            "2018-04-05T23:59:61Z",
            "18-04-05T18:31:00Z",
            "2018-4-05T18:31:00Z",
            "2018-04-05T18:31:00ZZ",
            "+2018-04-05T18:31:00Z",
            "２018-04-05T18:31:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?} must be rejected");
        }
    }

    #[test]
    fn time_is_written_canonically() {
        let t = parse_rfc3339("2018-04-05T17:31:00.000Z").unwrap();
        assert_eq!(format_time(&t), "2018-04-05T17:31:00Z");
        let t = parse_rfc3339("2018-04-05T17:31:00.120+01:30").unwrap();
        assert_eq!(format_time(&t), "2018-04-05T17:31:00.120+01:30");
        let t = parse_rfc3339("2018-04-05T17:31:00-00:00").unwrap();
        assert_eq!(format_time(&t), "2018-04-05T17:31:00Z");
    }

    #[test]
    fn media_types() {
        for s in [
            "text/plain",
            "application/json",
            "application/cloudevents+json",
            "application/vnd.example.v1+json",
            "text/plain; charset=utf-8",
            "text/plain;charset=utf-8",
            "text/plain ; charset=utf-8",
            "TEXT/Plain; Charset=UTF-8",
            "multipart/form-data; boundary=\"a;b c\"",
            "application/x-thing; a=1; b=\"q\\\"uote\"",
            "*/*",
        ] {
            assert!(is_media_type(s), "{s:?} must be accepted");
        }
        for s in [
            "",
            "xyz",
            "text",
            "text/",
            "/plain",
            "text/plain/extra",
            " text/plain",
            "text /plain",
            "text/pl ain",
            "text/plain;",
            "text/plain; charset",
            "text/plain; charset=",
            "text/plain; =utf-8",
            "text/plain; charset = utf-8",
            "text/plain; charset=\"utf-8",
            "text/plain; charset=utf-8 extra",
            "text/plain; a=é",
            "tëxt/plain",
            "text/plain\n",
        ] {
            assert!(!is_media_type(s), "{s:?} must be rejected");
        }
    }

    #[test]
    fn json_media_types() {
        for s in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/cloudevents+json",
            "text/vnd.thing+json",
        ] {
            assert!(is_json_media_type(s), "{s}");
        }
        for s in ["text/plain", "application/jsonx", "application/json-seq", "json", "+json"] {
            assert!(!is_json_media_type(s), "{s}");
        }
    }

    #[test]
    fn uri_references() {
        for s in [
            "https://cloudevents.io",
            "#fragment",
            "//authority/path",
            "/shop/eu",
            "relative/path?q=1",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "mailto:someone@example.com",
            "http://[::1]:8080/a%20b",
            "./a:b",
        ] {
            assert!(is_uri_reference(s), "{s:?}");
        }
        for s in ["a b", "https://x/é", "1http://x", ":nothing", "a:b c", "%zz", "#a#b", "x\"y"] {
            assert!(!is_uri_reference(s), "{s:?}");
        }
        assert!(is_absolute_uri("https://cloudevents.io/dataschema"));
        assert!(is_absolute_uri("https://example.com/schema.json#/definitions/a"));
        assert!(is_absolute_uri("urn:example:schema"));
        for s in ["", "/schema", "#f", "//host/path", "schema.json"] {
            assert!(!is_absolute_uri(s), "{s:?}");
        }
    }

    #[test]
    fn attribute_names() {
        assert!(is_attribute_name("extinteger"));
        assert!(is_attribute_name("a1"));
        assert!(is_attribute_name("1"));
        for s in ["", "MyExtension", "my.extension", "my-ext", "my_ext", "ext\u{e9}"] {
            assert!(!is_attribute_name(s), "{s:?}");
        }
        assert_eq!(check_extension_name("time").unwrap_err().attribute, "time");
        assert_eq!(check_extension_name("data").unwrap_err().attribute, "data");
    }

    #[test]
    fn forbidden_characters() {
        assert!(is_forbidden_char('\n'));
        assert!(is_forbidden_char('\u{7f}'));
        assert!(is_forbidden_char('\u{9f}'));
        assert!(is_forbidden_char('\u{fdd0}'));
        assert!(is_forbidden_char('\u{fffe}'));
        assert!(is_forbidden_char('\u{10ffff}'));
        assert!(!is_forbidden_char('é'));
        assert!(!is_forbidden_char('\u{a0}'));
        assert!(!is_forbidden_char('✓'));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let q = quoted(&long);
        assert!(q.len() < 120, "{q}");
        assert!(q.ends_with('…'));
        assert_eq!(quoted("ab"), "\"ab\"");
    }

    #[test]
    fn extension_display() {
        assert_eq!(ExtensionValue::Integer(-5).to_string(), "-5");
        assert_eq!(ExtensionValue::Boolean(false).to_string(), "false");
        assert_eq!(ExtensionValue::from("a b").to_string(), "a b");
    }
}
