//! The NATS JetStream source end to end, against the machine's NATS server: 10,000 messages each
//! with a SUCCESS record; two `switchyard serve` processes sharing one durable consumer; `kill -9`
//! mid-run and restart; the NATS server restarted mid-run. Nothing may be lost.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{broker, function_server, process_yaml, wait_successes, Serve};
use switchyard_dispatcher::records::RecordStore;

/// The server-restart test stops NATS: no other test of this file may run meanwhile.
static NATS_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SERVER: &str = "nats://127.0.0.1:4222";

async fn js() -> jetstream::Context {
    let client = async_nats::connect(SERVER)
        .await
        .unwrap_or_else(|e| panic!("NATS must run on {SERVER} (scripts/test.sh starts it): {e}"));
    jetstream::new(client)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

async fn create_stream(js: &jetstream::Context, stream: &str, subject: &str, file: bool) {
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![format!("{subject}.>")],
        storage: if file { jetstream::stream::StorageType::File } else { jetstream::stream::StorageType::Memory },
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn publish(js: &jetstream::Context, subject: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for i in chunk {
            acks.push(js.publish(format!("{subject}.m"), format!("{{\"i\": {i}}}").into()).await.unwrap());
        }
        for a in acks {
            a.await.unwrap();
        }
    }
}

fn source_yaml(stream: &str, subject: &str, storage: &str) -> String {
    format!(
        "sources:\n  - type: nats\n    name: js\n    max_in_flight: 64\n    jetstream:\n      stream: {stream}\n      durable: d{stream}\n      ack_wait: 5s\n      create: {{subjects: ['{subject}.>'], storage: {storage}}}\n"
    )
}

#[tokio::test]
async fn ten_thousand_messages_each_get_a_success_record() {
    let _lock = NATS_LOCK.lock().await;
    let js = js().await;
    let (stream, subject) = (unique("SYB"), unique("sy.b."));
    create_stream(&js, &stream, &subject, false).await;
    let fs = function_server().await;
    let b = broker(&format!(
        "{}functions:\n  - {{name: ok, runtime: http, url: '{}', max_concurrency: 32}}\ntriggers:\n  - {{name: t, function: ok}}\n",
        source_yaml(&stream, &subject, "memory"),
        fs.url("/ok")
    ))
    .await;
    publish(&js, &subject, 10_000).await;
    let s = wait_successes(b.running.dispatcher.store(), Some("ok"), 10_000, 120).await;
    assert_eq!(s.len(), 10_000);
    assert!(s.keys().all(|id| id.starts_with(&format!("{stream}:"))));
    b.running.shutdown().await;
    let mut c: jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream(format!("d{stream}"), &stream).await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "every message acked");
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn two_serve_processes_share_one_durable_consumer() {
    let _lock = NATS_LOCK.lock().await;
    let js = js().await;
    let (stream, subject) = (unique("SYB"), unique("sy.b."));
    create_stream(&js, &stream, &subject, false).await;
    let (fs1, fs2) = (function_server().await, function_server().await);
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("shared.db");
    let store_url = store_path.display().to_string();
    let source = source_yaml(&stream, &subject, "memory");
    // Create the store before two processes race to migrate it.
    let store = RecordStore::open(&format!("sqlite://{store_url}")).await.unwrap();
    let a = Serve::start(dir.path(), "a", &process_yaml(&store_url, &source, &fs1.url("/busy")));
    let b = Serve::start(dir.path(), "b", &process_yaml(&store_url, &source, &fs2.url("/busy")));
    publish(&js, &subject, 2000).await;
    let s = wait_successes(&store, Some("ok"), 2000, 120).await;
    a.signal("-TERM");
    b.signal("-TERM");
    assert!(a.wait().await.success());
    assert!(b.wait().await.success());
    let calls1: usize = fs1.seen.calls.lock().unwrap().values().sum();
    let calls2: usize = fs2.seen.calls.lock().unwrap().values().sum();
    assert!(calls1 > 0 && calls2 > 0, "both replicas took work ({calls1} and {calls2})");
    assert_eq!(calls1 + calls2, 2000, "no message handled by both (none was redelivered)");
    assert!(s.values().all(|&n| n == 1));
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn kill_9_mid_run_then_restart_loses_nothing() {
    let _lock = NATS_LOCK.lock().await;
    let js = js().await;
    let (stream, subject) = (unique("SYB"), unique("sy.b."));
    create_stream(&js, &stream, &subject, false).await;
    let fs = function_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = dir.path().join("records.db").display().to_string();
    let store = RecordStore::open(&format!("sqlite://{store_url}")).await.unwrap();
    let yaml = process_yaml(&store_url, &source_yaml(&stream, &subject, "memory"), &fs.url("/busy"));
    publish(&js, &subject, 3000).await;
    let first = Serve::start(dir.path(), "a", &yaml);
    wait_successes(&store, Some("ok"), 300, 60).await;
    first.signal("-KILL");
    first.wait().await;
    let second = Serve::start(dir.path(), "a", &yaml);
    let s = wait_successes(&store, Some("ok"), 3000, 120).await;
    second.signal("-TERM");
    assert!(second.wait().await.success());
    let duplicates: usize = s.values().map(|n| n - 1).sum();
    // Only messages in flight at the kill (max_in_flight 64) may run twice.
    assert!(duplicates <= 64, "{duplicates} duplicate SUCCESS records");
    js.delete_stream(&stream).await.unwrap();
}

async fn restart_nats() {
    let stopped = std::process::Command::new("pkill").args(["-TERM", "-x", "nats-server"]).status().unwrap();
    assert!(stopped.success(), "nats-server was not running");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect("127.0.0.1:4222").await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "nats-server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = std::process::Command::new("start-stop-daemon")
        .args(["--start", "--oknodo", "--background", "--exec", "/usr/sbin/nats-server", "--"])
        .args(["-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server", "-l", "/var/log/nats-server.log"])
        .status()
        .unwrap();
    assert!(status.success());
    while tokio::net::TcpStream::connect("127.0.0.1:4222").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "nats-server did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn nats_server_restart_mid_run_loses_nothing() {
    let _lock = NATS_LOCK.lock().await;
    let js = js().await;
    let (stream, subject) = (unique("SYB"), unique("sy.b."));
    create_stream(&js, &stream, &subject, true).await;
    let fs = function_server().await;
    let b = broker(&format!(
        "{}functions:\n  - {{name: ok, runtime: http, url: '{}', max_concurrency: 8}}\ntriggers:\n  - {{name: t, function: ok}}\n",
        source_yaml(&stream, &subject, "file"),
        fs.url("/busy")
    ))
    .await;
    publish(&js, &subject, 3000).await;
    wait_successes(b.running.dispatcher.store(), Some("ok"), 300, 60).await;
    restart_nats().await;
    let s = wait_successes(b.running.dispatcher.store(), Some("ok"), 3000, 180).await;
    assert_eq!(s.len(), 3000);
    b.running.shutdown().await;
    let js = self::js().await;
    js.delete_stream(&stream).await.unwrap();
}
