//! The AMQP source against the local RabbitMQ (127.0.0.1:5672, guest/guest), driven directly: a
//! test plays the dispatcher and resolves each delivery's ack, so the ack/nack decisions, the
//! CloudEvents binding in both directions and reconnection can be checked one by one.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use switchyard_connectors::amqp::binding::{self, PLAIN_MESSAGE_TYPE};
use switchyard_connectors::amqp::AmqpSource;
use switchyard_connectors::{Delivery, MemoryState, Outcome, Source, SourceContext};
use switchyard_schemas::sources::AmqpSourceConfig;
use switchyard_schemas::{CloudEvent, Data, ExtensionValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A publishing connection, or `None` (with a message) when RabbitMQ is not running; under
/// `CI=true` a missing RabbitMQ fails the test.
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

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn publish(ch: &Channel, queue: &str, props: BasicProperties, body: &[u8]) {
    ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Ready (not delivered, not unacked) messages in a queue.
async fn ready(ch: &Channel, queue: &str) -> u32 {
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    q.message_count()
}

async fn delete(ch: &Channel, queues: &[&str]) {
    for q in queues {
        let _ = ch.queue_delete((*q).into(), QueueDeleteOptions::default()).await;
    }
}

struct Running {
    rx: mpsc::Receiver<Delivery>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("a delivery within 20s")
            .expect("source running")
    }
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("source stops").unwrap();
    }
}

fn start(config: serde_json::Value) -> Running {
    let config: AmqpSourceConfig = serde_json::from_value(config).unwrap();
    config.validate("sources[0]").unwrap();
    let (tx, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        deliveries: tx,
        shutdown: shutdown.clone(),
        name: config.name.clone(),
        state: Arc::new(MemoryState::default()),
    };
    let source = Box::new(AmqpSource::new(config));
    let task = tokio::spawn(async move { source.run(ctx).await.unwrap() });
    Running { rx, shutdown, task }
}

fn event(id: &str) -> CloudEvent {
    let mut e = CloudEvent::new(id, "/tests/amqp", "com.example.amqp");
    e.datacontenttype = Some("application/json".into());
    e.data = Some(Data::Json(serde_json::json!({ "id": id })));
    e
}

async fn publish_event(ch: &Channel, queue: &str, id: &str) {
    let (props, body) = binding::to_amqp_binary(&event(id));
    publish(ch, queue, props.with_delivery_mode(2), &body).await;
}

/// Waits until `queue` has `n` ready messages.
async fn wait_ready(ch: &Channel, queue: &str, n: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let have = ready(ch, queue).await;
        if have == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "queue {queue}: waited for {n} ready messages, have {have}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn settles_by_outcome_with_a_dead_letter_exchange() {
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-settle");
    let dlq = format!("{queue}.dlq");
    ch.queue_declare(dlq.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let mut src = start(json!({
        "name": "settle", "url": URL, "queue": queue, "prefetch": 8,
        "declare": {"queue": {"durable": false, "arguments": {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}}},
    }));
    // The source declares the queue; declaring it here too (same settings) lets us publish at once.
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dlq.as_str().into()));
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args).await.unwrap();
    for id in ["ok", "failed", "unmatched", "held"] {
        publish_event(&ch, &queue, id).await;
    }
    let mut held = None;
    for _ in 0..4 {
        let mut d = src.next().await;
        assert!(d.skip.is_none());
        match d.event.id.as_str() {
            "ok" => d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 }),
            "failed" => d.ack.resolve(Outcome::Completed { invocations: 2, failed: 1 }),
            "unmatched" => d.ack.resolve(Outcome::Unmatched),
            "held" => held = Some(d),
            other => panic!("unexpected {other}"),
        }
    }
    // Only the failed one is dead-lettered; the held one is unacked, so not ready either.
    wait_ready(&ch, &dlq, 1).await;
    assert_eq!(ready(&ch, &queue).await, 0);
    // Abandoned (shutdown elsewhere): requeued, and delivered again.
    held.unwrap().ack.resolve(Outcome::Abandoned);
    let mut again = src.next().await;
    assert_eq!(again.event.id, "held");
    again.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    src.stop().await;
    assert_eq!(ready(&ch, &queue).await, 0, "acked messages do not come back after the channel closed");
    assert_eq!(ready(&ch, &dlq).await, 1);
    delete(&ch, &[&queue, &dlq]).await;
}

#[tokio::test]
async fn without_a_dead_letter_exchange_failures_are_acked_not_requeued() {
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-nodlx");
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let mut src = start(json!({"name": "nodlx", "url": URL, "queue": queue}));
    publish_event(&ch, &queue, "failed").await;
    let mut d = src.next().await;
    assert_eq!(d.event.id, "failed");
    d.ack.resolve(Outcome::Completed { invocations: 1, failed: 1 });
    // A requeued message would go back to the head of the queue, before this marker.
    publish_event(&ch, &queue, "marker").await;
    let mut m = src.next().await;
    assert_eq!(m.event.id, "marker", "the failed message was requeued");
    m.ack.resolve(Outcome::Unmatched);
    src.stop().await;
    assert_eq!(ready(&ch, &queue).await, 0);
    delete(&ch, &[&queue]).await;
}

#[tokio::test]
async fn invalid_cloudevents_are_skipped_and_dead_lettered_never_requeued() {
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-invalid");
    let dlq = format!("{queue}.dlq");
    ch.queue_declare(dlq.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dlq.as_str().into()));
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args).await.unwrap();
    // The DLX comes from the queue's own arguments here, not from `declare`: say so.
    let mut src = start(json!({"name": "invalid", "url": URL, "queue": queue, "dead_letter_exchange": true}));
    let props = BasicProperties::default().with_content_type("application/cloudevents+json".into());
    publish(&ch, &queue, props, b"{\"specversion\": \"1.0\", \"id\": ").await;
    let mut d = src.next().await;
    let reason = d.skip.clone().expect("recorded as SKIPPED");
    assert!(reason.contains("not a valid CloudEvent"), "{reason}");
    assert_eq!(d.event.ty, PLAIN_MESSAGE_TYPE);
    d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    wait_ready(&ch, &dlq, 1).await;
    src.stop().await;
    assert_eq!(ready(&ch, &queue).await, 0);
    delete(&ch, &[&queue, &dlq]).await;
}

#[tokio::test]
async fn binding_conformance_binary_structured_plain() {
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-binding");
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let mut src = start(json!({"name": "binding", "url": URL, "queue": queue}));

    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut binary = event("bin-1");
    binary.subject = Some("orders/1".into());
    binary.time = Some(chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678+02:00").unwrap());
    binary.extensions.insert("tenant".into(), ExtensionValue::String("acme".into()));
    binary.extensions.insert("attempt".into(), ExtensionValue::Integer(3));
    binary.extensions.insert("traceparent".into(), ExtensionValue::String(tp.into()));
    let (p, b) = binding::to_amqp_binary(&binary);
    publish(&ch, &queue, p, &b).await;

    let mut structured = event("str-1");
    structured.datacontenttype = Some("text/plain".into());
    structured.data = Some(Data::Text("héllo".into()));
    let (p, b) = binding::to_amqp_structured(&structured);
    publish(&ch, &queue, p, &b).await;

    // The older `cloudEvents:` prefix.
    let mut headers = FieldTable::default();
    for (k, v) in [("specversion", "1.0"), ("id", "legacy-1"), ("source", "/legacy"), ("type", "com.example.legacy")] {
        headers.insert(format!("cloudEvents:{k}").into(), AMQPValue::LongString(v.into()));
    }
    publish(&ch, &queue, BasicProperties::default().with_headers(headers), b"").await;

    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
    headers.insert("x-custom".into(), AMQPValue::LongString("v".into()));
    let plain = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("m-1".into())
        .with_headers(headers);
    publish(&ch, &queue, plain, br#"{"plain":true}"#).await;

    let mut got = Vec::new();
    for _ in 0..4 {
        let mut d = src.next().await;
        d.ack.resolve(Outcome::Unmatched);
        got.push(d.event);
    }
    assert_eq!(got[0], binary);
    assert_eq!(got[1], structured);
    assert_eq!(
        (got[2].id.as_str(), got[2].source.as_str(), got[2].ty.as_str()),
        ("legacy-1", "/legacy", "com.example.legacy")
    );
    let p = &got[3];
    assert_eq!(p.id, "m-1");
    assert_eq!(p.ty, PLAIN_MESSAGE_TYPE);
    assert_eq!(p.source, format!("amqp://127.0.0.1/%2F/{}", queue.replace('-', "%2D")));
    assert_eq!(p.subject.as_deref(), Some(queue.as_str()), "subject is the routing key");
    assert_eq!(p.data, Some(Data::Json(serde_json::json!({"plain": true}))));
    assert_eq!(p.extensions["traceparent"], ExtensionValue::String(tp.into()));
    assert_eq!(p.extensions["amqpheaders"], ExtensionValue::String(r#"{"x-custom":"v"}"#.into()));

    // The other direction: what the source reads, written back, reads the same.
    for e in &got {
        let (p, b) = binding::to_amqp_binary(e);
        publish(&ch, &queue, p, &b).await;
        let (p, b) = binding::to_amqp_structured(e);
        publish(&ch, &queue, p, &b).await;
    }
    for e in &got {
        for _ in 0..2 {
            let mut d = src.next().await;
            d.ack.resolve(Outcome::Unmatched);
            assert_eq!(&d.event, e);
        }
    }
    src.stop().await;
    delete(&ch, &[&queue]).await;
}

/// Closes the source's connection from the server side (`rabbitmqctl close_connection`).
async fn close_connection_named(name: &str) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "--no-table-headers", "pid", "client_properties"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = text
        .lines()
        .find(|l| l.contains(&format!("\"{name}\"")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection named {name} in:\n{text}"))
        .to_owned();
    let status = tokio::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "test: connection loss"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn reconnects_and_unacked_messages_come_back() {
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-reconnect");
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let name = unique("reconnect");
    let mut src =
        start(json!({"name": name, "url": URL, "queue": queue, "reconnect": {"initial": "100ms", "max": "1s"}}));
    for i in 0..5 {
        publish_event(&ch, &queue, &format!("r-{i}")).await;
    }
    // Hold every ack, then cut the connection.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(src.next().await);
    }
    close_connection_named(&format!("switchyard:{name}")).await;
    // Their acks now fail (the channel is gone) ...
    for d in &mut held {
        d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    }
    // ... so the broker delivers all five again on the new connection.
    let mut again: Vec<String> = Vec::new();
    for _ in 0..5 {
        let mut d = src.next().await;
        again.push(d.event.id.clone());
        d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    }
    again.sort();
    assert_eq!(again, (0..5).map(|i| format!("r-{i}")).collect::<Vec<_>>());
    src.stop().await;
    assert_eq!(ready(&ch, &queue).await, 0);
    delete(&ch, &[&queue]).await;
}

#[tokio::test]
async fn prefetch_bounds_in_flight_deliveries() {
    let Some((_conn, ch)) = rabbit().await else { return };
    let queue = unique("sy-prefetch");
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let mut src = start(json!({"name": "prefetch", "url": URL, "queue": queue, "prefetch": 3}));
    for i in 0..6 {
        publish_event(&ch, &queue, &format!("p-{i}")).await;
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(src.next().await);
    }
    // Three unacked: the broker sends no more until one is settled.
    wait_ready(&ch, &queue, 3).await;
    assert!(tokio::time::timeout(Duration::from_millis(300), src.rx.recv()).await.is_err(), "a 4th delivery came");
    held.pop().unwrap().ack.resolve(Outcome::Unmatched);
    held.push(src.next().await);
    for mut d in held {
        d.ack.resolve(Outcome::Unmatched);
    }
    for _ in 0..2 {
        src.next().await.ack.resolve(Outcome::Unmatched);
    }
    src.stop().await;
    assert_eq!(ready(&ch, &queue).await, 0);
    delete(&ch, &[&queue]).await;
}
