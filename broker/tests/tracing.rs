//! Traces from message to function, with the exported spans kept in memory (the span queue, decoded
//! from the OTLP protobuf they would be sent as): a message carrying a W3C
//! `traceparent` (HTTP header, NATS header) produces receive -> route -> invoke attempt(s) and record
//! write spans in that trace; the HTTP function gets a `traceparent` naming its attempt's span; the
//! record stores the same trace id, also when the message carried none (the trace starts at receive).
//! One test per binary: it installs the process's span tracer.

mod common;

use std::time::Duration;

use common::{broker, function_server};
use std::sync::Arc;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span as SpanData};
use opentelemetry_sdk::trace::Sampler;
use prost::Message as _;
use switchyard_dispatcher::records::RecordQuery;
use switchyard_dispatcher::spans::{Queue, Tracer};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const CONSUMER: i32 = 5;

fn named<'a>(spans: &'a [SpanData], trace: TraceId, name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.trace_id == trace.to_bytes() && s.name == name).collect()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every span exported so far: those already taken from the queue (`seen`), and those in it now.
fn finished(queue: &Queue, seen: &mut Vec<SpanData>) -> Vec<SpanData> {
    seen.extend(ScopeSpans::decode(queue.take_all().bytes.as_slice()).expect("spans decode").spans);
    seen.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_continues_from_message_to_function_and_record() {
    // The exported spans wait in this queue, encoded as they would be sent; the test decodes them.
    let queue = Arc::new(Queue::new(100_000, 100_000));
    let tracer = Tracer::new(Arc::clone(&queue), Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    switchyard_dispatcher::spans::install(tracer).unwrap();
    let mut taken = Vec::new();

    let fs = function_server().await;
    let subject = format!("sy.trace.{}", uuid::Uuid::new_v4().simple());
    let yaml = format!(
        "sources:\n  - {{type: nats, name: bus, subjects: ['{subject}']}}\nfunctions:\n  - {{name: f, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: f, delivery: {{retries: 2, backoff: {{initial: 1ms, max: 2ms}}}}}}\n",
        fs.url("/flaky/1")
    );
    let b = broker(&yaml).await;

    // 1. HTTP: the traceparent header.
    let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let caller = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let resp = b
        .http
        .post(b.url("/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "traced-1")
        .header("ce-source", "/tests")
        .header("ce-type", "t")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let records = b.wait_terminal(RecordQuery::default(), 1).await;
    assert_eq!(records[0].trace_id.as_deref(), Some(trace.to_string().as_str()), "the record keeps the trace id");
    let spans = finished(&queue, &mut taken);

    let receive = named(&spans, trace, "http receive");
    assert_eq!(receive.len(), 1, "one receive span: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    let receive = receive[0];
    assert_eq!(receive.parent_span_id, caller.to_bytes(), "the receive span continues the caller's span");
    assert_eq!(receive.kind, SERVER);
    assert_eq!(attr(receive, "messaging.message.id").as_deref(), Some("traced-1"));
    let route = named(&spans, trace, "route");
    assert_eq!(route.len(), 1);
    assert_eq!(route[0].parent_span_id, receive.span_id);
    let attempts = named(&spans, trace, "invoke f");
    assert_eq!(attempts.len(), 2, "/flaky/1 fails the first attempt");
    for a in &attempts {
        assert_eq!(a.parent_span_id, route[0].span_id);
        assert_eq!(a.kind, CLIENT);
        assert_eq!(attr(a, "faas.invoked_name").as_deref(), Some("f"));
    }
    let failed: Vec<_> = attempts.iter().filter(|a| a.status.as_ref().is_some_and(|s| s.code == 2)).collect();
    assert_eq!(failed.len(), 1, "the failed attempt's span says so");
    let writes = named(&spans, trace, "record write");
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].parent_span_id, route[0].span_id);
    // The function saw each attempt's span as its parent.
    let seen = fs.seen.traceparents.lock().unwrap().clone();
    let mut expected: Vec<String> = attempts.iter().map(|a| format!("00-{trace}-{}-01", hex(&a.span_id))).collect();
    let mut got: Vec<String> = seen.iter().filter(|tp| tp.contains(&trace.to_string())).cloned().collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    // 2. No traceparent: the receive span starts a trace, and the record stores that trace's id.
    let resp = b.post_event("untraced-1", "t", "{}").await;
    assert_eq!(resp.status(), 202);
    let records = b.wait_terminal(RecordQuery::default(), 2).await;
    let record = records.iter().find(|r| r.event_id == "untraced-1").expect("a record for the untraced event");
    let spans = finished(&queue, &mut taken);
    let receive = spans
        .iter()
        .find(|s| s.name == "http receive" && attr(s, "messaging.message.id").as_deref() == Some("untraced-1"))
        .expect("a receive span for the untraced event");
    let fresh = TraceId::from_bytes(receive.trace_id.clone().try_into().unwrap());
    assert!(receive.parent_span_id.is_empty(), "the receive span is a root");
    assert_eq!(record.trace_id.as_deref(), Some(fresh.to_string().as_str()), "the record names the new trace");
    assert_eq!(named(&spans, fresh, "record write").len(), 1, "the record write is in that trace");

    // 3. NATS: the traceparent message header.
    let trace2 = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    let nats = async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS runs on 127.0.0.1:4222");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace2}-b7ad6b7169203331-01").as_str());
    // The core subscription may not be live yet: publish until the record appears.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        nats.publish_with_headers(subject.clone(), headers.clone(), "{}".into()).await.unwrap();
        nats.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got =
            b.running.dispatcher.store().list(&RecordQuery { limit: 10, ..RecordQuery::default() }).await.unwrap();
        if got.iter().any(|r| r.trace_id.as_deref() == Some(trace2.to_string().as_str()) && r.status.is_terminal()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no record for the NATS message");
    }
    let spans = finished(&queue, &mut taken);
    let receive = named(&spans, trace2, "bus receive");
    assert!(!receive.is_empty());
    assert_eq!(attr(receive[0], "messaging.system").as_deref(), Some("nats"));
    assert_eq!(receive[0].kind, CONSUMER);
    assert!(!named(&spans, trace2, "invoke f").is_empty());

    // 4. Untraced NATS messages: each starts its own trace at its receive span (the source's long-lived
    // task span is not their parent).
    for tag in ["plain-a", "plain-b"] {
        nats.publish(subject.clone(), format!("{{\"tag\": \"{tag}\"}}").into()).await.unwrap();
    }
    nats.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let plain = loop {
        let got =
            b.running.dispatcher.store().list(&RecordQuery { limit: 100, ..RecordQuery::default() }).await.unwrap();
        let plain: Vec<_> =
            got.into_iter().filter(|r| r.status.is_terminal() && r.request.body.contains("plain-")).collect();
        if plain.len() == 2 {
            break plain;
        }
        assert!(tokio::time::Instant::now() < deadline, "no records for the untraced NATS messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let spans = finished(&queue, &mut taken);
    let ids: Vec<&str> = plain.iter().map(|r| r.trace_id.as_deref().unwrap()).collect();
    assert_ne!(ids[0], ids[1], "two untraced messages are two traces");
    for id in ids {
        let trace = TraceId::from_hex(id).unwrap();
        let receive = named(&spans, trace, "bus receive");
        assert_eq!(receive.len(), 1, "the record's trace has the message's receive span");
        assert!(receive[0].parent_span_id.is_empty(), "the receive span is a root");
        assert_eq!(named(&spans, trace, "record write").len(), 1);
    }
}
