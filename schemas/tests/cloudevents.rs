//! CloudEvents conformance and format tests: the CloudEvents JSON-format conformance vectors
//! against golden samples built in code, plus Switchyard's own vectors for the JSON format and the
//! HTTP binding (all under `testdata/cloudevents/`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use serde_json::{json, Value};
use switchyard_schemas::cloudevent::{batch_to_json_vec, parse_batch};
use switchyard_schemas::http_binding::{
    self, detect_mode, from_http, to_binary, to_structured, Mode, CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON,
};
use switchyard_schemas::{CloudEvent, Data, EventError, ExtensionValue};

// ---------------------------------------------------------------------------------------------
// Helpers.

fn vectors(name: &str) -> Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "testdata", "cloudevents", name].iter().collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    let items = v[key].as_array().unwrap_or_else(|| panic!("missing list `{key}`"));
    assert!(!items.is_empty() || key == "expected", "list `{key}` is empty");
    items.as_slice()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("missing string `{key}` in {v}"))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<FixedOffset> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().fixed_offset()
}

fn event(v: &Value) -> CloudEvent {
    CloudEvent::from_json_value(v.clone()).unwrap_or_else(|e| panic!("{v} must parse: {e}"))
}

fn headers_of(case: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for pair in case["headers"].as_array().into_iter().flatten() {
        let name = HeaderName::from_bytes(pair[0].as_str().unwrap().as_bytes()).unwrap();
        let value = HeaderValue::from_str(pair[1].as_str().unwrap()).unwrap();
        headers.append(name, value);
    }
    headers
}

fn body_of(case: &Value) -> Bytes {
    if let Some(text) = case["body"].as_str() {
        Bytes::from(text.to_owned())
    } else if let Some(b64) = case["bodyBase64"].as_str() {
        Bytes::from(STANDARD.decode(b64).unwrap())
    } else {
        Bytes::new()
    }
}

fn data_kind(e: &CloudEvent) -> &'static str {
    match &e.data {
        None => "none",
        Some(Data::Json(_)) => "json",
        Some(Data::Text(_)) => "text",
        Some(Data::Binary(_)) => "binary",
    }
}

/// Every context attribute in its string form (what survives HTTP binary mode).
fn attribute_strings(e: &CloudEvent) -> BTreeMap<String, String> {
    let core = ["specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"];
    core.iter()
        .map(ToString::to_string)
        .chain(e.extensions.keys().cloned())
        .filter_map(|n| e.attribute(&n).map(|v| (n, v.into_owned())))
        .collect()
}

fn assert_attribute(result: Result<impl std::fmt::Debug, EventError>, attribute: &str, case: &str) {
    match result {
        Ok(v) => panic!("{case}: must be rejected, parsed to {v:?}"),
        Err(e) => {
            assert_eq!(e.attribute, attribute, "{case}: wrong attribute in error `{e}`");
            assert!(!e.rule.is_empty(), "{case}: empty rule");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The conformance vectors.

/// The golden sample events, described in `testdata/cloudevents/CONFORMANCE-ATTRIBUTION.md`.
fn golden(sample: &str) -> CloudEvent {
    let minimal = || CloudEvent::new("minimal", "https://cloudevents.io", "io.cloudevents.test");
    let with_id = |id: &str| CloudEvent { id: id.to_owned(), ..minimal() };
    match sample {
        "minimal" => minimal(),
        "minimalWithTime" => CloudEvent { time: Some(utc(2018, 4, 5, 17, 31, 0)), ..with_id("minimalWithTime") },
        "minimalWithRelativeSource" => {
            CloudEvent { source: "#fragment".to_owned(), ..with_id("minimalWithRelativeSource") }
        }
        "allCore" => CloudEvent {
            datacontenttype: Some("text/plain".to_owned()),
            dataschema: Some("https://cloudevents.io/dataschema".to_owned()),
            subject: Some("tests".to_owned()),
            time: Some(utc(2018, 4, 5, 17, 31, 0)),
            ..with_id("allCore")
        },
        // The sample descriptions leave these ids unchanged from `minimal`, but every vector uses
        // the sample's own name as its id; the vectors are what is tested.
        "simpleTextData" => CloudEvent {
            datacontenttype: Some("text/plain".to_owned()),
            data: Some(Data::Text("Simple text".to_owned())),
            ..with_id("simpleTextData")
        },
        "allExtensionTypes" => {
            let mut e = with_id("allExtensionTypes");
            let ext = [
                ("extinteger", ExtensionValue::Integer(10)),
                ("extboolean", ExtensionValue::Boolean(true)),
                ("extstring", ExtensionValue::from("text")),
                // No typed extensions: Binary, Timestamp, URI and URI-reference compare as their
                // canonical strings.
                ("extbinary", ExtensionValue::String(STANDARD.encode([0x4d, 0x61]))),
                ("exttimestamp", ExtensionValue::from("2023-03-31T15:12:00Z")),
                ("exturi", ExtensionValue::from("https://cloudevents.io")),
                ("exturiref", ExtensionValue::from("//authority/path")),
            ];
            e.extensions = ext.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            e
        }
        other => panic!("unknown golden sample `{other}`"),
    }
}

fn golden_batch(sample: &str) -> Vec<CloudEvent> {
    match sample {
        "empty" => vec![],
        "minimal" => vec![golden("minimal")],
        "minimal2" => vec![golden("minimal"), golden("minimal")],
        "minimalAndAllCore" => vec![golden("minimal"), golden("allCore")],
        "minimalAndAllExtensionTypes" => vec![golden("minimal"), golden("allExtensionTypes")],
        other => panic!("unknown golden batch `{other}`"),
    }
}

#[test]
fn golden_samples_are_valid() {
    for sample in
        ["minimal", "minimalWithTime", "minimalWithRelativeSource", "allCore", "simpleTextData", "allExtensionTypes"]
    {
        golden(sample).validate().unwrap_or_else(|e| panic!("{sample}: {e}"));
    }
}

#[test]
fn conformance_valid_events() {
    let file = vectors("valid-events.json");
    assert_eq!(file["testType"], "ValidSingleEvent");
    let tests = list(&file, "tests");
    assert!(tests.len() >= 10);
    for test in tests {
        let id = str_of(test, "id");
        let parsed = CloudEvent::from_json_value(test["event"].clone()).unwrap_or_else(|e| panic!("{id}: {e}"));
        let expected = golden(str_of(test, "sampleId"));
        assert_eq!(parsed, expected, "{id}");
        // The same through serde and from bytes.
        let bytes = serde_json::to_vec(&test["event"]).unwrap();
        assert_eq!(CloudEvent::from_json_slice(&bytes).unwrap(), expected, "{id}");
        let via_serde: CloudEvent = serde_json::from_value(test["event"].clone()).unwrap();
        assert_eq!(via_serde, expected, "{id}");
        // And back: the JSON format, structured and binary HTTP mode all round-trip.
        assert_eq!(CloudEvent::from_json_slice(&parsed.to_json_vec()).unwrap(), parsed, "{id}");
        let (headers, body) = to_structured(&parsed);
        assert_eq!(from_http(&headers, &body).unwrap(), vec![parsed.clone()], "{id}");
        let (headers, body) = to_binary(&parsed);
        let back = from_http(&headers, &body).unwrap().remove(0);
        assert_eq!(attribute_strings(&back), attribute_strings(&parsed), "{id}");
        assert_eq!(back.data, parsed.data, "{id}");
    }
}

#[test]
fn conformance_invalid_events() {
    // The attribute each conformance test's error must name.
    let expected: BTreeMap<&str, &str> = [
        ("invalidNoSpecVersion", "specversion"),
        ("invalidNoId", "id"),
        ("invalidNoType", "type"),
        ("invalidNoSource", "source"),
        ("invalidTimeGarbage", "time"),
        ("invalidTimeToMinute", "time"),
        ("invalidTimeOffsetX", "time"),
        ("invalidTimeOffsetOutOfRange", "time"),
        ("invalidTimeOffsetNonInteger", "time"),
        ("invalidTimeOffsetHourOnly", "time"),
        ("invalidEmptyId", "id"),
        ("invalidEmptyType", "type"),
        ("invalidEmptySource", "source"),
        ("invalidEmptySpecVersion", "specversion"),
        ("invalidUnknownSpecVersion", "specversion"),
        ("invalidNonRfc2046DataContentType", "datacontenttype"),
        ("invalidEmptyDataContentType", "datacontenttype"),
        ("invalidEmptyDataSchema", "dataschema"),
        ("invalidEmptySubject", "subject"),
        ("invalidNumericId", "id"),
        ("invalidObjectId", "id"),
        ("invalidCapitalizedExtension", "MyExtension"),
        ("invalidPunctuatedExtension", "my.extension"),
        ("invalidNonIntegerExtensionValue", "my.extension"),
        ("invalidBothDataAndDataBase64", "data"),
    ]
    .into_iter()
    .collect();
    let file = vectors("invalid-events.json");
    assert_eq!(file["testType"], "InvalidSingleEvent");
    let tests = list(&file, "tests");
    assert_eq!(tests.len(), expected.len(), "a conformance test has no expected attribute");
    for test in tests {
        let id = str_of(test, "id");
        let attribute = expected.get(id).unwrap_or_else(|| panic!("no expectation for {id}"));
        assert_attribute(CloudEvent::from_json_value(test["event"].clone()), attribute, id);
        let via_serde = serde_json::from_value::<CloudEvent>(test["event"].clone());
        let err = via_serde.expect_err(id).to_string();
        assert!(err.contains(&format!("attribute `{attribute}`")), "{id}: {err}");
    }
}

#[test]
fn conformance_valid_batches() {
    let file = vectors("valid-batches.json");
    assert_eq!(file["testType"], "ValidBatch");
    for test in list(&file, "tests") {
        let id = str_of(test, "id");
        let bytes = serde_json::to_vec(&test["batch"]).unwrap();
        let parsed = parse_batch(&bytes).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(parsed, golden_batch(str_of(test, "sampleId")), "{id}");
        assert_eq!(parse_batch(&batch_to_json_vec(&parsed)).unwrap(), parsed, "{id}");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CLOUDEVENTS_BATCH_JSON));
        assert_eq!(from_http(&headers, &bytes).unwrap(), parsed, "{id}");
        let (headers, body) = http_binding::to_batch(&parsed);
        assert_eq!(detect_mode(&headers), Mode::Batch);
        assert_eq!(from_http(&headers, &body).unwrap(), parsed, "{id}");
    }
}

#[test]
fn conformance_invalid_batches() {
    let expected: BTreeMap<&str, &str> = [
        ("invalidBatchMixedSpecVersions", "[1].specversion"),
        ("invalidBatchContainingInvalidCloudEvent", "[0].id"),
        ("invalidBatchContainingNonObject", "[0]"),
    ]
    .into_iter()
    .collect();
    let file = vectors("invalid-batches.json");
    assert_eq!(file["testType"], "InvalidBatch");
    let tests = list(&file, "tests");
    assert_eq!(tests.len(), expected.len());
    for test in tests {
        let id = str_of(test, "id");
        let bytes = serde_json::to_vec(&test["batch"]).unwrap();
        assert_attribute(parse_batch(&bytes), expected[id], id);
    }
}

// ---------------------------------------------------------------------------------------------
// Switchyard's JSON format vectors.

#[test]
fn json_format_extra_valid() {
    let file = vectors("json-format-extra.json");
    for case in list(&file, "valid") {
        let id = str_of(case, "id");
        let parsed = event(&case["event"]);
        parsed.validate().unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(data_kind(&parsed), str_of(case, "dataKind"), "{id}");
        if let Some(b64) = case["dataBytesBase64"].as_str() {
            let want = STANDARD.decode(b64).unwrap();
            let got = parsed.data_bytes().expect("data");
            if data_kind(&parsed) == "json" {
                // Compare as JSON: member order is not part of the contract.
                let got: Value = serde_json::from_slice(&got).unwrap();
                assert_eq!(got, serde_json::from_slice::<Value>(&want).unwrap(), "{id}");
            } else {
                assert_eq!(got.as_ref(), want.as_slice(), "{id}");
            }
        }
        if let Some(handler) = case.get("handlerData") {
            assert_eq!(&parsed.data_for_handler(), handler, "{id}");
        }
        if let Some(serialized) = case.get("serialized") {
            assert_eq!(&parsed.to_json_value(), serialized, "{id}");
            assert_eq!(&serde_json::to_value(&parsed).unwrap(), serialized, "{id}");
        }
        assert_eq!(event(&parsed.to_json_value()), parsed, "{id}: JSON round trip");
        let (headers, body) = to_structured(&parsed);
        assert_eq!(from_http(&headers, &body).unwrap(), vec![parsed.clone()], "{id}");
    }
}

#[test]
fn json_format_extra_invalid() {
    let file = vectors("json-format-extra.json");
    for case in list(&file, "invalid") {
        let id = str_of(case, "id");
        let result = match case["bodyText"].as_str() {
            Some(text) => CloudEvent::from_json_slice(text.as_bytes()),
            None => CloudEvent::from_json_value(case["event"].clone()),
        };
        assert_attribute(result, str_of(case, "attribute"), id);
    }
}

#[test]
fn json_format_extra_batches() {
    let file = vectors("json-format-extra.json");
    for case in list(&file, "validBatches") {
        let id = str_of(case, "id");
        let parsed = parse_batch(&serde_json::to_vec(&case["batch"]).unwrap()).unwrap();
        let kinds: Vec<&str> = parsed.iter().map(data_kind).collect();
        let want: Vec<&str> = list(case, "dataKinds").iter().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(kinds, want, "{id}");
        assert_eq!(parse_batch(&batch_to_json_vec(&parsed)).unwrap(), parsed, "{id}");
    }
    for case in list(&file, "invalidBatches") {
        let id = str_of(case, "id");
        let bytes = match case["bodyText"].as_str() {
            Some(text) => text.as_bytes().to_vec(),
            None => serde_json::to_vec(&case["batch"]).unwrap(),
        };
        assert_attribute(parse_batch(&bytes), str_of(case, "attribute"), id);
    }
}

// ---------------------------------------------------------------------------------------------
// Switchyard's HTTP binding vectors.

#[test]
fn http_binary_receive() {
    let file = vectors("http-binary.json");
    let cases = list(&file, "receive");
    assert!(cases.len() > 20);
    for case in cases {
        let id = str_of(case, "id");
        let headers = headers_of(case);
        assert_eq!(detect_mode(&headers), Mode::Binary, "{id}");
        let result = from_http(&headers, &body_of(case));
        if let Some(attribute) = case["attribute"].as_str() {
            assert_attribute(result, attribute, id);
            continue;
        }
        let events = result.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(events, vec![event(&case["expected"])], "{id}");
        if let Some(kind) = case["dataKind"].as_str() {
            assert_eq!(data_kind(&events[0]), kind, "{id}");
        }
        // Extensions read from headers are strings.
        for (name, value) in &events[0].extensions {
            assert!(matches!(value, ExtensionValue::String(_)), "{id}: {name}");
        }
    }
}

#[test]
fn http_binary_send() {
    let file = vectors("http-binary.json");
    for case in list(&file, "send") {
        let id = str_of(case, "id");
        let original = event(&case["event"]);
        let (headers, body) = to_binary(&original);
        let want = headers_of(case);
        assert_eq!(headers, want, "{id}: headers");
        assert_eq!(body, body_of(case), "{id}: body");
        let received = case.get("received").map_or_else(|| original.clone(), event);
        assert_eq!(from_http(&headers, &body).unwrap(), vec![received], "{id}: round trip");
    }
}

#[test]
fn http_structured_and_batch() {
    let file = vectors("http-structured.json");
    for case in list(&file, "valid") {
        let id = str_of(case, "id");
        let headers = headers_of(case);
        let mode = format!("{:?}", detect_mode(&headers));
        assert_eq!(mode, str_of(case, "mode"), "{id}");
        let events = from_http(&headers, &body_of(case)).unwrap_or_else(|e| panic!("{id}: {e}"));
        let want: Vec<CloudEvent> = list(case, "expected").iter().map(event).collect();
        assert_eq!(events, want, "{id}");
    }
    for case in list(&file, "invalid") {
        let id = str_of(case, "id");
        let headers = headers_of(case);
        let mode = format!("{:?}", detect_mode(&headers));
        assert_eq!(mode, str_of(case, "mode"), "{id}");
        assert_attribute(from_http(&headers, &body_of(case)), str_of(case, "attribute"), id);
    }
}

#[test]
fn structured_output_is_the_json_format() {
    let mut e = CloudEvent::new("1", "/x", "t");
    e.data = Some(Data::Json(json!({"a": [1, 2]})));
    let (headers, body) = to_structured(&e);
    let ct = headers[CONTENT_TYPE].to_str().unwrap();
    assert!(ct.starts_with(CLOUDEVENTS_JSON), "{ct}");
    assert!(ct.contains("charset=utf-8"), "{ct}");
    assert_eq!(headers.len(), 1, "no ce- headers in structured mode");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, e.to_json_value());
    assert_eq!(body["data"], json!({"a": [1, 2]}), "JSON data embedded, not a string");
}

// ---------------------------------------------------------------------------------------------
// The model's own API.

fn sample() -> CloudEvent {
    let mut e = CloudEvent::new("42", "/shop/eu", "com.example.order.created");
    e.time = Some(utc(2018, 4, 5, 17, 31, 0));
    e.subject = Some("order/42".to_owned());
    e.extensions.insert("tenant".to_owned(), "acme".into());
    e.extensions.insert("priority".to_owned(), 5.into());
    e.extensions.insert("urgent".to_owned(), true.into());
    e
}

#[test]
fn new_and_attribute() {
    let e = sample();
    assert_eq!(e.specversion, "1.0");
    e.validate().unwrap();
    assert_eq!(e.attribute("type").as_deref(), Some("com.example.order.created"));
    assert_eq!(e.attribute("id").as_deref(), Some("42"));
    assert_eq!(e.attribute("source").as_deref(), Some("/shop/eu"));
    assert_eq!(e.attribute("specversion").as_deref(), Some("1.0"));
    assert_eq!(e.attribute("subject").as_deref(), Some("order/42"));
    assert_eq!(e.attribute("time").as_deref(), Some("2018-04-05T17:31:00Z"));
    assert_eq!(e.attribute("tenant").as_deref(), Some("acme"));
    assert_eq!(e.attribute("priority").as_deref(), Some("5"));
    assert_eq!(e.attribute("urgent").as_deref(), Some("true"));
    assert_eq!(e.attribute("datacontenttype"), None);
    assert_eq!(e.attribute("dataschema"), None);
    assert_eq!(e.attribute("data"), None);
    assert_eq!(e.attribute("ty"), None);
    assert_eq!(e.attribute("missing"), None);
    let offset = CloudEvent {
        time: Some(FixedOffset::east_opt(5400).unwrap().with_ymd_and_hms(2018, 4, 5, 19, 1, 0).unwrap()),
        ..sample()
    };
    assert_eq!(offset.attribute("time").as_deref(), Some("2018-04-05T19:01:00+01:30"));
    assert_eq!(offset, sample(), "time compares as an instant");
}

#[test]
fn validate_names_the_attribute() {
    let cases: Vec<(&str, CloudEvent)> = vec![
        ("specversion", CloudEvent { specversion: "0.3".to_owned(), ..sample() }),
        ("id", CloudEvent { id: String::new(), ..sample() }),
        ("source", CloudEvent { source: String::new(), ..sample() }),
        ("source", CloudEvent { source: "not a uri".to_owned(), ..sample() }),
        ("type", CloudEvent { ty: String::new(), ..sample() }),
        ("type", CloudEvent { ty: "tab\there".to_owned(), ..sample() }),
        ("datacontenttype", CloudEvent { datacontenttype: Some("xyz".to_owned()), ..sample() }),
        ("datacontenttype", CloudEvent { datacontenttype: Some(String::new()), ..sample() }),
        ("dataschema", CloudEvent { dataschema: Some("relative".to_owned()), ..sample() }),
        ("subject", CloudEvent { subject: Some(String::new()), ..sample() }),
    ];
    for (attribute, e) in cases {
        assert_attribute(e.validate(), attribute, &format!("{e:?}"));
    }
    let with_ext = |name: &str, value: ExtensionValue| {
        let mut e = sample();
        e.extensions.insert(name.to_owned(), value);
        e
    };
    let too_big = i64::from(i32::MAX) + 1;
    let too_small = i64::from(i32::MIN) - 1;
    for (name, value) in [
        ("extint", ExtensionValue::Integer(too_big)),
        ("extint", ExtensionValue::Integer(too_small)),
        ("extstr", ExtensionValue::from("nul\0")),
        ("MyExt", ExtensionValue::from("v")),
        ("my_ext", ExtensionValue::from("v")),
        ("", ExtensionValue::from("v")),
        ("data", ExtensionValue::from("v")),
        ("time", ExtensionValue::from("v")),
        ("id", ExtensionValue::from("v")),
    ] {
        assert_attribute(with_ext(name, value).validate(), name, name);
    }
    with_ext("extint", ExtensionValue::Integer(i64::from(i32::MAX))).validate().unwrap();
    with_ext("extint", ExtensionValue::Integer(i64::from(i32::MIN))).validate().unwrap();
}

#[test]
fn error_display() {
    let err = CloudEvent::from_json_value(json!({
        "specversion": "1.0", "id": "1", "source": "/x", "type": "t", "time": "lunchtime"
    }))
    .unwrap_err();
    assert_eq!(err, EventError::new("time", "must be an RFC 3339 timestamp, got \"lunchtime\""));
    assert_eq!(err.to_string(), "attribute `time`: must be an RFC 3339 timestamp, got \"lunchtime\"");
}

#[test]
fn data_is_json_rules() {
    let with_ct =
        |ct: Option<&str>| CloudEvent { datacontenttype: ct.map(str::to_owned), ..CloudEvent::new("1", "/x", "t") };
    for ct in [
        None,
        Some("application/json"),
        Some("APPLICATION/JSON; charset=utf-8"),
        Some("application/cloudevents+json"),
        Some("text/vnd.example+json"),
    ] {
        assert!(with_ct(ct).data_is_json(), "{ct:?}");
    }
    for ct in ["text/plain", "application/xml", "application/json-patch", "application/jsonl"] {
        assert!(!with_ct(Some(ct)).data_is_json(), "{ct}");
    }
}

#[test]
fn data_bytes_and_handler_data() {
    let base = CloudEvent::new("1", "/x", "t");
    assert_eq!(base.data_bytes(), None);
    assert_eq!(base.data_for_handler(), Value::Null);

    let json_data = CloudEvent { data: Some(Data::Json(json!({"k": "v"}))), ..base.clone() };
    assert_eq!(json_data.data_bytes().unwrap(), Bytes::from_static(br#"{"k":"v"}"#));
    assert_eq!(json_data.data_for_handler(), json!({"k": "v"}));

    // Text holding JSON under a JSON content type is handed over parsed.
    let json_text = CloudEvent {
        datacontenttype: Some("application/json".to_owned()),
        data: Some(Data::Text("{\"k\": [1]}".to_owned())),
        ..base.clone()
    };
    assert_eq!(json_text.data_bytes().unwrap(), Bytes::from_static(b"{\"k\": [1]}"));
    assert_eq!(json_text.data_for_handler(), json!({"k": [1]}));

    // Text that is not JSON stays a string, even under a JSON type.
    let not_json = CloudEvent { data: Some(Data::Text("hello".to_owned())), ..base.clone() };
    assert_eq!(not_json.data_for_handler(), json!("hello"));

    // Text under a text type is never parsed.
    let text = CloudEvent {
        datacontenttype: Some("text/plain".to_owned()),
        data: Some(Data::Text("[1]".to_owned())),
        ..base.clone()
    };
    assert_eq!(text.data_for_handler(), json!("[1]"));
    assert_eq!(text.data_bytes().unwrap(), Bytes::from_static(b"[1]"));

    let binary = CloudEvent {
        datacontenttype: Some("application/octet-stream".to_owned()),
        data: Some(Data::Binary(Bytes::from_static(&[0, 1, 2, 255]))),
        ..base
    };
    assert_eq!(binary.data_bytes().unwrap(), Bytes::from_static(&[0, 1, 2, 255]));
    assert_eq!(binary.data_for_handler(), json!("AAEC/w=="));
    assert_eq!(binary.to_json_value()["data_base64"], json!("AAEC/w=="));
    assert!(binary.to_json_value().get("data").is_none());
}

#[test]
fn serde_round_trip() {
    let mut e = sample();
    e.datacontenttype = Some("text/plain".to_owned());
    e.data = Some(Data::Text("hi".to_owned()));
    let text = serde_json::to_string(&e).unwrap();
    let back: CloudEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(back, e);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["priority"], json!(5));
    assert_eq!(value["urgent"], json!(true));
    assert_eq!(value["data"], json!("hi"));
    assert_eq!(value["time"], json!("2018-04-05T17:31:00Z"));

    // Inside other serde types the event keeps its format.
    let wrapped: Vec<CloudEvent> = serde_json::from_slice(&batch_to_json_vec(&[e.clone()])).unwrap();
    assert_eq!(wrapped, vec![e]);
    let err = serde_json::from_str::<CloudEvent>(r#"{"specversion":"1.0","id":"1","type":"t"}"#).unwrap_err();
    assert!(err.to_string().contains("attribute `source`: is required"), "{err}");
}

#[test]
fn binary_round_trip_of_hand_built_event() {
    let mut e = sample();
    e.subject = Some("Grüße aus \"Köln\" – 100% ✓".to_owned());
    e.extensions.insert("note".to_owned(), "  spaced  out  ".into());
    e.datacontenttype = Some("application/json".to_owned());
    e.data = Some(Data::Json(json!({"x": "ü"})));
    let (headers, body) = to_binary(&e);
    for (name, value) in &headers {
        let bytes = value.as_bytes();
        assert!(bytes.iter().all(|b| (0x21..=0x7E).contains(b)), "{name}: {value:?}");
    }
    assert_eq!(headers["ce-note"], "%20%20spaced%20%20out%20%20");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    let back = from_http(&headers, &body).unwrap().remove(0);
    assert_eq!(attribute_strings(&back), attribute_strings(&e));
    assert_eq!(back.data, e.data);
    assert_eq!(back.extensions["priority"], ExtensionValue::from("5"));
}
