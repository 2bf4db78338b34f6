//! Sources through the API (`/api/v1/sources`), against the machine's NATS server and PostgreSQL:
//! on one node with SQLite a JetStream source is started, replaced and stopped at runtime (the old
//! consumer's messages stay pending once it is replaced or deleted, and a replacement lets the old
//! source's in-flight delivery finish and ack first); bad bodies and sources of the
//! config file are refused; cron and S3 webhook sources created at runtime reach the cron API and the
//! ingest endpoint and survive a restart. On PostgreSQL, a source created on one `switchyard serve`
//! replica runs on the other, and a cron source created by the API fires once per tick across both.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use common::{broker, broker_on, function_server, jetstream_with_stream, successes, wait_successes, Broker, Serve};
use futures::StreamExt as _;
use serde_json::{json, Value};
use switchyard_dispatcher::records::{RecordQuery, RecordStore, TestDatabase};
use switchyard_schemas::Status;

/// A memory stream with a random name capturing a random subject prefix: (context, stream, subject).
async fn new_stream() -> (jetstream::Context, String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, subject) = (format!("SYSRC{id}"), format!("sy.src.{id}"));
    (jetstream_with_stream(&stream, &subject).await, stream, subject)
}

/// A stream, two subjects under it (`a`, `b`), two durable names, and a broker whose functions call
/// `function_path` on a new function server.
struct TwoDurables {
    js: jetstream::Context,
    stream: String,
    a: String,
    bsub: String,
    d1: String,
    d2: String,
    fs: common::FunctionServer,
    b: Broker,
}

async fn two_durables(function_path: &str) -> TwoDurables {
    let (js, stream, subject) = new_stream().await;
    let (a, bsub) = (format!("{subject}.a"), format!("{subject}.b"));
    let (d1, d2) = (format!("d1{stream}"), format!("d2{stream}"));
    let fs = function_server().await;
    let b = broker(&config(&fs.url(function_path), "")).await;
    TwoDurables { js, stream, a, bsub, d1, d2, fs, b }
}

async fn publish(js: &jetstream::Context, subject: &str, n: usize) {
    for i in 0..n {
        js.publish(subject.to_owned(), format!("{{\"i\": {i}}}").into()).await.unwrap().await.unwrap();
    }
}

async fn call(http: &reqwest::Client, url: String, method: reqwest::Method, body: Option<Value>) -> (u16, Value) {
    let mut r = http.request(method, url);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn send(b: &Broker, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call(&b.http, b.url(path), method, body).await
}

/// The one message pending on `durable`, fetched by the test itself: it proves no source took it
/// (a running source keeps a pull request waiting, so the server would have handed it over at once).
/// A pull request the stopped source left on the server may still have been handed the message; it
/// then comes back after the consumer's `ack_wait` (5 s) unacked, which is what this waits for.
async fn fetch_pending(js: &jetstream::Context, stream: &str, durable: &str) -> async_nats::jetstream::Message {
    let mut consumer: PullConsumer = js.get_consumer_from_stream(durable, stream).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info = consumer.info().await.unwrap().clone();
        if (info.num_pending, info.num_ack_pending) == (1, 0) {
            break;
        }
        let seen = (info.num_pending, info.num_ack_pending, info.num_redelivered);
        assert!(tokio::time::Instant::now() < deadline, "{durable}: one message should wait unhandled: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
    let message = batch.next().await.expect("the pending message").unwrap();
    message.ack().await.unwrap();
    message
}

fn nats_source(stream: &str, durable: &str, filter: &str) -> Value {
    json!({
        "type": "nats", "name": "js", "max_in_flight": 8,
        "jetstream": {"stream": stream, "durable": durable, "filter_subjects": [filter], "ack_wait": "5s"},
    })
}

fn config(function_url: &str, file_sources: &str) -> String {
    format!(
        "{file_sources}functions:\n  - {{name: ok, runtime: http, url: '{function_url}'}}\ntriggers:\n  - {{name: t, function: ok, filters: [{{prefix: {{type: dev.switchyard.nats}}}}]}}\n  - {{name: tick, function: ok, filters: [{{prefix: {{type: dev.switchyard.cron}}}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_source_put_through_the_api_starts_is_replaced_and_stops() {
    let TwoDurables { js, stream, a, bsub, d1, d2, fs: _fs, b } = two_durables("/ok").await;
    let store = b.running.dispatcher.store().clone();

    let (status, body) =
        send(&b, reqwest::Method::PUT, "/api/v1/sources/js", Some(nats_source(&stream, &d1, &a))).await;
    assert_eq!(
        (status, body["change"].as_str(), body["origin"].as_str()),
        (201, Some("created"), Some("api")),
        "{body}"
    );
    publish(&js, &a, 3).await;
    wait_successes(&store, Some("ok"), 3, 30).await;
    let (status, body) = send(&b, reqwest::Method::GET, "/api/v1/sources/js", None).await;
    assert_eq!((status, &body["config"]["jetstream"]["durable"], &body["running"]), (200, &json!(d1), &json!(true)));
    // The same configuration again changes nothing.
    let (status, body) =
        send(&b, reqwest::Method::PUT, "/api/v1/sources/js", Some(nats_source(&stream, &d1, &a))).await;
    assert_eq!((status, body["change"].as_str()), (200, Some("unchanged")));

    // Replaced: another durable on another subject. The old consumer no longer takes messages.
    let (status, body) =
        send(&b, reqwest::Method::PUT, "/api/v1/sources/js", Some(nats_source(&stream, &d2, &bsub))).await;
    assert_eq!((status, body["change"].as_str()), (200, Some("replaced")), "{body}");
    publish(&js, &bsub, 2).await;
    publish(&js, &a, 1).await;
    wait_successes(&store, Some("ok"), 5, 30).await;
    let left = fetch_pending(&js, &stream, &d1).await;
    assert_eq!(left.subject.as_str(), a);
    assert_eq!(store.count(Some(Status::Success)).await.unwrap(), 5);

    // Deleted: drained and stopped before the answer; a later message stays on the stream.
    assert_eq!(send(&b, reqwest::Method::DELETE, "/api/v1/sources/js", None).await.0, 204);
    assert_eq!(send(&b, reqwest::Method::GET, "/api/v1/sources/js", None).await.0, 404);
    assert_eq!(send(&b, reqwest::Method::DELETE, "/api/v1/sources/js", None).await.0, 404);
    publish(&js, &bsub, 1).await;
    let left = fetch_pending(&js, &stream, &d2).await;
    assert_eq!(left.subject.as_str(), bsub);
    assert_eq!(store.count(Some(Status::Success)).await.unwrap(), 5);
    assert!(b.running.shutdown().await);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_source_finishes_and_acks_its_in_flight_delivery_before_the_answer() {
    let TwoDurables { js, stream, a, bsub, d1, d2, fs, b } = two_durables("/slow/1500").await;
    let put = |body: Value| send(&b, reqwest::Method::PUT, "/api/v1/sources/js", Some(body));
    assert_eq!(put(nats_source(&stream, &d1, &a)).await.0, 201);
    let started = fs.seen.slow_started.notified();
    tokio::pin!(started);
    started.as_mut().enable();
    publish(&js, &a, 1).await;
    tokio::time::timeout(Duration::from_secs(30), started).await.expect("the function was called");
    // The replacement waits for the running invocation: when it answers, the record is written.
    let (status, body) = put(nats_source(&stream, &d2, &bsub)).await;
    assert_eq!((status, body["change"].as_str()), (200, Some("replaced")), "{body}");
    let records = b.running.dispatcher.store().list(&RecordQuery::default()).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::Success, "finished, not abandoned: {:?}", records[0]);
    // And the message was acked: nothing pending or waiting for an ack on the old consumer.
    let mut consumer: PullConsumer = js.get_consumer_from_stream(&d1, &stream).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap();
        if (info.num_pending, info.num_ack_pending, info.ack_floor.stream_sequence) == (0, 0, 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the in-flight message was not acked: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fs.seen.calls.lock().unwrap().values().sum::<usize>(), 1, "invoked once");
    assert!(b.running.shutdown().await);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn bad_sources_are_refused_with_the_field_and_the_config_files_sources_are_not_changed() {
    let fs = function_server().await;
    let b =
        broker(&config(&fs.url("/ok"), "sources:\n  - {type: cron, name: file-cron, schedule: '0 0 1 1 *'}\n")).await;
    let put = |name: &str, body: Value| {
        let path = format!("/api/v1/sources/{name}");
        let b = &b;
        async move { send(b, reqwest::Method::PUT, &path, Some(body)).await }
    };
    // A value that is not allowed: 422 with the field, as the config file would say it.
    let (status, body) = put("bad", json!({"type": "nats", "name": "bad"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["field"].as_str()),
        (422, Some("invalid_source"), Some("source.subjects"))
    );
    assert!(body["error"]["message"].as_str().unwrap().starts_with("source.subjects: "), "{body}");
    let (status, body) = put("bad", json!({"type": "nats", "name": "bad", "subjects": ["a..b"]})).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("source.subjects[0]")), "{body}");
    let (status, body) = put("bad name", json!({"type": "cron", "name": "bad name", "schedule": "* * * * *"})).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("source.name")), "{body}");
    // Not a source at all: 400.
    let (status, body) = put("bad", json!({"type": "nats", "name": "bad", "subjects": ["a"], "bogus": 1})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_source")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("bogus"), "{body}");
    let (status, body) = put("bad", json!({"type": "pigeon", "name": "bad"})).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("source.type")), "{body}");
    let (status, body) = put("other", json!({"type": "cron", "name": "bad", "schedule": "* * * * *"})).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("source.name")), "{body}");
    assert_eq!(send(&b, reqwest::Method::GET, "/api/v1/sources/bad", None).await.0, 404, "nothing was started");

    // The config file's source is listed, and the API may not change or delete it.
    let (_, list) = send(&b, reqwest::Method::GET, "/api/v1/sources", None).await;
    assert_eq!(list["items"][0]["name"], "file-cron");
    assert_eq!(list["items"][0]["origin"], "config");
    let (status, body) =
        put("file-cron", json!({"type": "cron", "name": "file-cron", "schedule": "* * * * * *"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("defined_in_config")), "{body}");
    let (status, body) = send(&b, reqwest::Method::DELETE, "/api/v1/sources/file-cron", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("defined_in_config")), "{body}");
    let (_, cron) = send(&b, reqwest::Method::GET, "/api/v1/cron/file-cron", None).await;
    assert_eq!(cron["schedule"], "0 0 1 1 *");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_and_webhook_sources_created_at_runtime_reach_their_endpoints_and_survive_a_restart() {
    let fs = function_server().await;
    let yaml = config(&fs.url("/ok"), "");
    let b = broker(&yaml).await;
    // A cron source: the cron API sees it, and firing it runs the function.
    let cron = json!({"type": "cron", "name": "api-cron", "schedule": "0 0 1 1 *"});
    assert_eq!(send(&b, reqwest::Method::PUT, "/api/v1/sources/api-cron", Some(cron)).await.0, 201);
    let (status, listed) = send(&b, reqwest::Method::GET, "/api/v1/cron", None).await;
    assert_eq!((status, &listed["items"][0]["name"]), (200, &json!("api-cron")));
    assert_eq!(send(&b, reqwest::Method::POST, "/api/v1/cron/api-cron/fire", None).await.0, 202);
    let q = RecordQuery { event_type: Some("dev.switchyard.cron.tick".into()), ..RecordQuery::default() };
    let records = b.wait_terminal(q, 1).await;
    assert_eq!((records[0].status, records[0].trigger.as_str()), (Status::Success, "tick"));
    // Replaced with another schedule: the cron API shows the new one.
    let cron = json!({"type": "cron", "name": "api-cron", "schedule": "0 0 2 1 *"});
    assert_eq!(send(&b, reqwest::Method::PUT, "/api/v1/sources/api-cron", Some(cron)).await.0, 200);
    assert_eq!(send(&b, reqwest::Method::GET, "/api/v1/cron/api-cron", None).await.1["schedule"], "0 0 2 1 *");

    // An s3 webhook source: its ingest endpoint exists while the source does; its token is not shown.
    let token = "a-webhook-token-of-some-length";
    let hook = json!({"type": "s3", "name": "hooks", "webhook": {"token": token}});
    assert_eq!(send(&b, reqwest::Method::PUT, "/api/v1/sources/hooks", Some(hook)).await.0, 201);
    let (_, shown) = send(&b, reqwest::Method::GET, "/api/v1/sources/hooks", None).await;
    assert_eq!(shown["config"]["webhook"]["token"], "***");
    let sample = std::fs::read(format!("{}/../testdata/s3/minio-put.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let ingest = |auth: &'static str| {
        b.http
            .post(b.url("/ingest/s3/hooks"))
            .bearer_auth(auth)
            .header("content-type", "application/json")
            .body(sample.clone())
    };
    assert_eq!(ingest("wrong-token-wrong-token").send().await.unwrap().status(), 401);
    let resp = ingest(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["events"], 1);
    assert_eq!(send(&b, reqwest::Method::DELETE, "/api/v1/sources/hooks", None).await.0, 204);
    assert_eq!(ingest("wrong-token-wrong-token").send().await.unwrap().status(), 404);

    // The API's sources are in the store: a restart on the same file starts the cron source again.
    let Broker { running, dir, .. } = b;
    assert!(running.shutdown().await);
    let store = format!("sqlite://{}", dir.path().join("records.db").display());
    let b = broker_on(Some(&store), &yaml).await;
    let (status, kept) = send(&b, reqwest::Method::GET, "/api/v1/sources/api-cron", None).await;
    assert_eq!((status, &kept["origin"], &kept["config"]["schedule"]), (200, &json!("api"), &json!("0 0 2 1 *")));
    assert_eq!(send(&b, reqwest::Method::GET, "/api/v1/cron/api-cron", None).await.0, 200);
    assert_eq!(send(&b, reqwest::Method::GET, "/api/v1/sources/hooks", None).await.0, 404, "the deletion was kept");
    drop(dir);
}

/// Waits until `GET url` answers 200, or fails after 30 s.
async fn until_ok(http: &reqwest::Client, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited 30s for {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_created_on_one_replica_runs_on_the_other_and_its_cron_ticks_fire_once() {
    let Some(db) = TestDatabase::create().await else { return };
    let (js, stream, subject) = new_stream().await;
    let (fs1, fs2) = (function_server().await, function_server().await);
    let store = RecordStore::open(&db.url).await.unwrap(); // migrated once before the replicas race
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let yaml = |port: u16, url: &str| {
        format!("store: {}\nserver: {{bind: '127.0.0.1:{port}', shutdown_grace: 10s}}\n{}", db.url, config(url, ""))
    };
    let a = Serve::start(dir.path(), "a", &yaml(port_a, &fs1.url("/ok")));
    let b = Serve::start(dir.path(), "b", &yaml(port_b, &fs2.url("/ok")));
    let (url_a, url_b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    let http = reqwest::Client::new();
    until_ok(&http, &format!("{url_a}/readyz")).await;
    until_ok(&http, &format!("{url_b}/readyz")).await;

    // A JetStream source created on a: b starts it too (one durable consumer shared by both).
    let source = nats_source(&stream, &format!("d{stream}"), &format!("{subject}.>"));
    let (status, body) = call(&http, format!("{url_a}/api/v1/sources/js"), reqwest::Method::PUT, Some(source)).await;
    assert_eq!(status, 201, "{body}");
    until_ok(&http, &format!("{url_b}/api/v1/sources/js")).await;
    publish(&js, &format!("{subject}.m"), 100).await;
    wait_successes(&store, Some("ok"), 100, 60).await;

    // A cron source created on a fires every second; each tick runs once across the replicas.
    let cron = json!({"type": "cron", "name": "every-second", "schedule": "* * * * * *"});
    let (status, body) =
        call(&http, format!("{url_a}/api/v1/sources/every-second"), reqwest::Method::PUT, Some(cron)).await;
    assert_eq!(status, 201, "{body}");
    until_ok(&http, &format!("{url_b}/api/v1/cron/every-second")).await;
    let ticks = |records: Vec<switchyard_schemas::EventRecord>| {
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in records.into_iter().filter(|r| r.trigger == "tick") {
            *per.entry(r.event_id).or_default() += 1;
        }
        per
    };
    let q = RecordQuery { event_type: Some("dev.switchyard.cron.tick".into()), limit: 1000, ..RecordQuery::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ticks(store.list(&q).await.unwrap()).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the API's cron source did not fire 3 times in 30s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = call(&http, format!("{url_b}/api/v1/sources/every-second"), reqwest::Method::DELETE, None).await;
    assert_eq!(status, 204);
    // The deletion reaches a too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("{url_a}/api/v1/cron/every-second")).send().await.unwrap().status() != 404 {
        assert!(tokio::time::Instant::now() < deadline, "a still runs the deleted cron source after 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per_tick = ticks(store.list(&q).await.unwrap());
    assert!(per_tick.values().all(|&c| c == 1), "a tick fired twice: {per_tick:?}");

    // With a stopped, b alone consumes the source a created.
    a.signal("-TERM");
    assert!(a.wait().await.success());
    let before: usize = fs2.seen.calls.lock().unwrap().values().sum();
    let done = successes(&store, None).await.len();
    publish(&js, &format!("{subject}.m"), 50).await;
    wait_successes(&store, None, done + 50, 60).await;
    let after: usize = fs2.seen.calls.lock().unwrap().values().sum();
    assert!(after - before >= 50, "b handled the 50 messages published after a stopped ({})", after - before);
    b.signal("-TERM");
    assert!(b.wait().await.success());
    js.delete_stream(&stream).await.unwrap();
}
