//! The AMQP source end to end against the local RabbitMQ: 10,000 messages each get a SUCCESS
//! record; two `switchyard serve` processes share a queue as competing consumers; `kill -9` mid-run
//! then a restart loses nothing; RabbitMQ restarted mid-run (durable queue, persistent messages)
//! loses nothing. Under `CI=true` a missing RabbitMQ fails these tests.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::{broker, function_server, process_yaml, unique, wait_successes, Serve};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use switchyard_connectors::amqp::binding::to_amqp_binary;
use switchyard_dispatcher::records::RecordStore;
use switchyard_schemas::{CloudEvent, Data, Status};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The server-restart test takes this exclusively; the others share it, so no test sees the
/// restart it did not ask for.
static RABBIT: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A publishing channel (with confirms), or `None` when RabbitMQ is not running (a failure under
/// `CI=true`).
async fn rabbit() -> Option<(Connection, Channel)> {
    match Connection::connect(URL, ConnectionProperties::default()).await {
        Ok(conn) => {
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            Some((conn, ch))
        }
        Err(e) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "RabbitMQ is required under CI=true: {e}");
            eprintln!("SKIPPED: RabbitMQ is not running on 127.0.0.1:5672 ({e})");
            None
        }
    }
}

async fn declare_durable(ch: &Channel, queue: &str) {
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
}

/// Publishes `n` persistent binary-mode CloudEvents `{prefix}-{i}` and waits for every confirm.
async fn publish(ch: &Channel, queue: &str, prefix: &str, n: usize) {
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let mut e = CloudEvent::new(format!("{prefix}-{i}"), "/tests/amqp", "com.example.amqp");
        e.data = Some(Data::Json(serde_json::json!({ "i": i })));
        let (props, body) = to_amqp_binary(&e);
        let confirm = ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, props.with_delivery_mode(2))
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for c in confirms {
        c.await.unwrap();
    }
}

/// Ready messages and consumers of a queue (from a fresh channel: a failed passive declare closes
/// it). Once no consumer is left, unacked messages are ready again, so (0, 0) means all were acked.
async fn queue_depth(conn: &Connection, queue: &str) -> (u32, u32) {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    let _ = ch.close(200, "done".into()).await;
    (q.message_count(), q.consumer_count())
}

fn assert_all(s: &HashMap<String, usize>, prefix: &str, n: usize) {
    let missing: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).filter(|id| !s.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} messages without a SUCCESS record, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

fn source_yaml(queue: &str, prefetch: u16) -> String {
    format!(
        "sources:\n  - type: amqp\n    name: rabbit\n    url: '{URL}'\n    queue: {queue}\n    prefetch: {prefetch}\n    reconnect: {{initial: 100ms, max: 1s}}\n    declare: {{queue: {{durable: true}}}}\n"
    )
}

#[tokio::test]
async fn ten_thousand_messages_each_get_a_success_record() {
    let _shared = RABBIT.read().await;
    let Some((conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-10k");
    declare_durable(&ch, &queue).await;
    let fs = function_server().await;
    let b = broker(&format!(
        "{}functions:\n  - {{name: ok, runtime: http, url: '{}', max_concurrency: 64}}\ntriggers:\n  - {{name: t, function: ok}}\n",
        source_yaml(&queue, 128),
        fs.url("/ok")
    ))
    .await;
    publish(&ch, &queue, "m", 10_000).await;
    let s = wait_successes(b.running.dispatcher.store(), None, 10_000, 180).await;
    assert_all(&s, "m", 10_000);
    assert_eq!(s.len(), 10_000);
    b.running.shutdown().await;
    assert_eq!(queue_depth(&conn, &queue).await, (0, 0), "every message acked, consumer gone");
    let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
}

#[tokio::test]
async fn two_serve_processes_are_competing_consumers() {
    let _shared = RABBIT.read().await;
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-two");
    declare_durable(&ch, &queue).await;
    let (fs1, fs2) = (function_server().await, function_server().await);
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("shared.db").display().to_string();
    // Create the store before two processes race to migrate it.
    let store = RecordStore::open(&format!("sqlite://{store_path}")).await.unwrap();
    let source = source_yaml(&queue, 16);
    let a = Serve::start(dir.path(), "a", &process_yaml(&store_path, &source, &fs1.url("/busy")));
    let b = Serve::start(dir.path(), "b", &process_yaml(&store_path, &source, &fs2.url("/busy")));
    publish(&ch, &queue, "c", 2000).await;
    let s = wait_successes(&store, None, 2000, 120).await;
    a.signal("-TERM");
    b.signal("-TERM");
    assert!(a.wait().await.success());
    assert!(b.wait().await.success());
    assert_all(&s, "c", 2000);
    let calls1: usize = fs1.seen.calls.lock().unwrap().values().sum();
    let calls2: usize = fs2.seen.calls.lock().unwrap().values().sum();
    assert!(calls1 > 0 && calls2 > 0, "both replicas took work ({calls1} and {calls2})");
    assert_eq!(calls1 + calls2, 2000, "no message handled by both (none was redelivered)");
    assert!(s.values().all(|&n| n == 1), "one SUCCESS record per message");
    let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
}

#[tokio::test]
async fn kill_9_mid_run_then_restart_loses_nothing() {
    let _shared = RABBIT.read().await;
    let Some((conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-kill");
    declare_durable(&ch, &queue).await;
    let fs = function_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("records.db").display().to_string();
    let store = RecordStore::open(&format!("sqlite://{store_path}")).await.unwrap();
    let prefetch = 32;
    let n = 3000;
    let yaml = process_yaml(&store_path, &source_yaml(&queue, prefetch), &fs.url("/slow/2"));
    publish(&ch, &queue, "k", n).await;
    let first = Serve::start(dir.path(), "first", &yaml);
    // Kill it once it is well into the run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.count(Some(Status::Success)).await.unwrap() < 500 {
        assert!(tokio::time::Instant::now() < deadline, "first process made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal("-KILL");
    let _ = first.wait().await;
    let done_before = store.count(Some(Status::Success)).await.unwrap();
    assert!(done_before < i64::try_from(n).unwrap(), "killed too late to test anything");
    let second = Serve::start(dir.path(), "second", &yaml);
    let s = wait_successes(&store, None, n, 120).await;
    second.signal("-TERM");
    assert!(second.wait().await.success());
    assert_all(&s, "k", n);
    // Only the messages unacked at the kill (at most `prefetch`) may have run twice.
    let twice = fs.seen.calls.lock().unwrap().values().filter(|&&c| c > 1).count();
    assert!(twice <= usize::from(prefetch), "{twice} messages ran twice, more than the prefetch window {prefetch}");
    let dup_records = s.values().filter(|&&c| c > 1).count();
    assert!(dup_records <= usize::from(prefetch), "{dup_records} duplicate SUCCESS records");
    assert_eq!(queue_depth(&conn, &queue).await, (0, 0));
    let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
}

async fn rabbitmqctl(args: &[&str]) {
    let status = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .await
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

#[tokio::test]
async fn rabbitmq_restarted_mid_run_loses_nothing() {
    let _exclusive = RABBIT.write().await;
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-restart");
    declare_durable(&ch, &queue).await;
    let fs = function_server().await;
    // 6000 messages at about 16 per 20 ms take ~7 s: the restart (a few seconds) lands mid-run.
    let n = 6000;
    let b = broker(&format!(
        "{}functions:\n  - {{name: ok, runtime: http, url: '{}', max_concurrency: 16}}\ntriggers:\n  - {{name: t, function: ok}}\n",
        source_yaml(&queue, 32),
        fs.url("/slow/20")
    ))
    .await;
    publish(&ch, &queue, "s", n).await;
    let store = b.running.dispatcher.store().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.count(Some(Status::Success)).await.unwrap() < 300 {
        assert!(tokio::time::Instant::now() < deadline, "no progress before the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rabbitmqctl(&["stop_app"]).await;
    let during = store.count(Some(Status::Success)).await.unwrap();
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    assert!(during < i64::try_from(n).unwrap(), "restarted too late to test anything");
    let s = wait_successes(&store, None, n, 180).await;
    assert_all(&s, "s", n);
    b.running.shutdown().await;
    let (conn, ch) = rabbit().await.expect("RabbitMQ is back");
    assert_eq!(queue_depth(&conn, &queue).await, (0, 0));
    let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
}
