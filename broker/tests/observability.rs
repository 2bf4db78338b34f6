//! Observability: `/metrics` scraped and parsed, with counters matching what the test sent.

mod common;

use std::collections::HashMap;

use common::{broker, function_server};
use switchyard_dispatcher::records::RecordQuery;

/// Parses the OpenMetrics text: `name{labels}` -> value (comments skipped).
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        out.insert(key.to_owned(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent() {
    let fs = function_server().await;
    let yaml = format!(
        "functions:\n  - {{name: f, runtime: http, url: '{}'}}\n  - {{name: g, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: tf, function: f, filters: [{{exact: {{type: to.f}}}}], delivery: {{retries: 3, backoff: {{initial: 1ms, max: 2ms}}}}}}\n  - {{name: tg, function: g, filters: [{{exact: {{type: to.g}}}}], delivery: {{retries: 0}}}}\n",
        fs.url("/flaky/1"),
        fs.url("/bad")
    );
    let b = broker(&yaml).await;
    for i in 0..3 {
        assert_eq!(b.post_event(&format!("f-{i}"), "to.f", "{}").await.status(), 202);
    }
    assert_eq!(b.post_event("g-1", "to.g", "{}").await.status(), 202);
    assert_eq!(b.post_event("u-1", "nobody.listens", "{}").await.status(), 202);
    b.wait_terminal(RecordQuery::default(), 4).await;
    // Admission slots are released just after the terminal record is committed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while ["f", "g"].iter().any(|f| b.running.dispatcher.function(f).unwrap().in_flight > 0) {
        assert!(tokio::time::Instant::now() < deadline, "invocations still admitted");
        tokio::task::yield_now().await;
    }
    let resp = b.http.get(b.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let m = parse(&resp.text().await.unwrap());
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no sample {k}; have {:?}", m.keys()));
    assert_eq!(get(r#"switchyard_events_received_total{source="http"}"#), 5.0);
    assert_eq!(get("switchyard_events_routed_total"), 4.0);
    assert_eq!(get("switchyard_events_unmatched_total"), 1.0);
    assert_eq!(get(r#"switchyard_invocations_total{function="f",status="SUCCESS"}"#), 3.0);
    assert_eq!(get(r#"switchyard_invocations_total{function="g",status="FAILURE"}"#), 1.0);
    // /flaky/1 fails each event's first attempt once.
    assert_eq!(get(r#"switchyard_invocation_retries_total{function="f"}"#), 3.0);
    assert_eq!(get(r#"switchyard_dead_letters_total{function="g"}"#), 1.0);
    assert_eq!(get(r#"switchyard_invocation_duration_seconds_count{function="f"}"#), 3.0);
    assert_eq!(get(r#"switchyard_function_in_flight{function="f"}"#), 0.0);
    assert_eq!(get(r#"switchyard_function_queued{function="f"}"#), 0.0);
    assert!(get("switchyard_record_batch_size_records_count") >= 1.0);
    assert!(get("switchyard_record_batch_duration_seconds_count") >= 1.0);
    assert!(!m.contains_key(r#"switchyard_dead_letters_total{function="f"}"#), "f had no dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stream_delivers_a_line_written_by_a_handler() {
    let handler = common::python_handler("behaviours.py");
    let b = broker(&format!(
        "functions:\n  - {{name: echo, runtime: python, handler: '{handler}', entrypoint: echo}}\ntriggers:\n  - {{name: t, function: echo}}\n"
    ))
    .await;
    let resp = b.http.get(b.url("/api/v1/functions/echo/logs")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = resp;
    assert_eq!(b.post_event("logged-1", "t", r#"{"word": "marmalade"}"#).await.status(), 202);
    let mut seen = String::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(chunk) = body.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(frame) = seen.split("\n\n").find(|f| f.contains("event: record")) {
                let data: String = frame.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                return serde_json::from_str::<serde_json::Value>(&data).unwrap();
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("a record event within 30 s");
    assert_eq!(found["event_id"], "logged-1");
    let logs = found["logs"].as_str().unwrap();
    assert!(logs.contains("echo got") && logs.contains("marmalade"), "{logs}");
    assert!(logs.contains("to stderr"));
    let missing = b.http.get(b.url("/api/v1/functions/nope/logs")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_lag_is_read_from_jetstream_and_rabbitmq() {
    use async_nats::jetstream;
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
    use switchyard_connectors::lag::LagProbe;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, subject, durable, queue) =
        (format!("SYLAG{id}"), format!("sy.lag.{id}"), format!("d{id}"), format!("sy-lag-{id}"));
    // 7 messages waiting in a stream for a durable consumer.
    let js = jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS on 127.0.0.1:4222"));
    let s = js
        .get_or_create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject}.>")],
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    s.create_consumer(jetstream::consumer::pull::Config { durable_name: Some(durable.clone()), ..Default::default() })
        .await
        .unwrap();
    for i in 0..7 {
        js.publish(format!("{subject}.m"), format!("{i}").into()).await.unwrap().await.unwrap();
    }
    // 3 messages ready in a queue.
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.expect("RabbitMQ");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), Default::default()).await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for _ in 0..3 {
        ch.basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), b"x", Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let yaml = format!(
        "sources:\n  - {{type: nats, name: js, jetstream: {{stream: {stream}, durable: {durable}}}}}\n  - {{type: amqp, name: q, url: '{url}', queue: {queue}}}\n"
    );
    let config = switchyard_schemas::Config::from_yaml_str(&yaml, "lag.yaml", |_| None).unwrap();
    let mut nats = LagProbe::for_source(&config.sources[0]).unwrap();
    let mut amqp = LagProbe::for_source(&config.sources[1]).unwrap();
    assert_eq!(nats.read().await.unwrap(), vec![(String::new(), 7)]);
    assert_eq!(amqp.read().await.unwrap(), vec![(String::new(), 3)]);
    // A queue that does not exist is an error, and the probe recovers once it does.
    let missing = format!("{queue}-missing");
    let yaml = format!("sources:\n  - {{type: amqp, name: m, url: '{url}', queue: {missing}}}\n");
    let config = switchyard_schemas::Config::from_yaml_str(&yaml, "lag.yaml", |_| None).unwrap();
    let mut probe = LagProbe::for_source(&config.sources[0]).unwrap();
    assert!(probe.read().await.is_err());
    ch.queue_declare(missing.as_str().into(), QueueDeclareOptions::default(), Default::default()).await.unwrap();
    assert_eq!(probe.read().await.unwrap(), vec![(String::new(), 0)]);
    for q in [&queue, &missing] {
        ch.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
    }
    js.delete_stream(&stream).await.unwrap();
}
