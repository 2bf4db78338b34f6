//! AMQP bench: RabbitMQ queue -> Switchyard (amqp source, dispatcher, no-op HTTP function, SQLite
//! records) next to a bare lapin loop (consume -> POST the same no-op function -> ack) with the
//! same prefetch, measured in the same run. Both arms publish N persistent messages as fast as
//! they can while the consumer runs; throughput is N over first publish -> last completion, and
//! latency is publish -> ack (bare loop) or publish -> committed SUCCESS record (Switchyard).
//!
//! Run: `cargo bench -p switchyard-broker --bench amqp` (env: `SWITCHYARD_BENCH_EVENTS`, default
//! 20000; `SWITCHYARD_BENCH_PREFETCH`, a comma-separated list, default `64,256`). Under `cargo test` it runs 200 messages as a
//! smoke test. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest).

mod support;

use std::time::{Instant, SystemTime};

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use support::{noop_server, Run};
use switchyard_broker::app;
use switchyard_connectors::amqp::binding::to_amqp_binary;
use switchyard_dispatcher::records::RecordQuery;
use switchyard_schemas::{CloudEvent, Config, Data, Status};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn message(i: usize) -> (lapin::BasicProperties, Vec<u8>) {
    let mut e = CloudEvent::new(format!("b-{i}"), "/bench", "bench");
    e.data = Some(Data::Json(serde_json::json!({"order": 42, "items": [{"sku": "A-1", "qty": 2}], "total": 31.5})));
    let (props, body) = to_amqp_binary(&e);
    (props.with_delivery_mode(2), body)
}

/// Publishes `n` messages, returning when each was published (wall clock and monotonic).
async fn publish(ch: &Channel, queue: &str, n: usize) -> (Instant, Vec<SystemTime>, Vec<Instant>) {
    let start = Instant::now();
    let mut wall = Vec::with_capacity(n);
    let mut mono = Vec::with_capacity(n);
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let (props, body) = message(i);
        wall.push(SystemTime::now());
        mono.push(Instant::now());
        let c = ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, props).await.unwrap();
        confirms.push(c);
    }
    for c in confirms {
        c.await.unwrap();
    }
    (start, wall, mono)
}

async fn declare(ch: &Channel, queue: &str) {
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
}

/// The bare loop: consume with `prefetch`, POST each message's body to the function, ack.
async fn bare_loop(conn: &Connection, pub_ch: &Channel, function: &str, n: usize, prefetch: u16) -> Run {
    let queue = format!("sy-bench-bare-{}", uuid::Uuid::new_v4().simple());
    declare(pub_ch, &queue).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let client = reqwest::Client::builder().pool_max_idle_per_host(usize::from(prefetch)).build().unwrap();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let f = function.to_owned();
    let consume = tokio::spawn(async move {
        let mut seen = 0;
        while seen < n {
            let d = consumer.next().await.unwrap().unwrap();
            seen += 1;
            let (client, f, done) = (client.clone(), f.clone(), done_tx.clone());
            tokio::spawn(async move {
                let id = match d.properties.headers().as_ref().and_then(|h| h.inner().get("cloudEvents_id").cloned()) {
                    Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    _ => panic!("no id"),
                };
                let resp = client
                    .post(&f)
                    .header("ce-specversion", "1.0")
                    .header("ce-id", &id)
                    .header("ce-source", "/bench")
                    .header("ce-type", "bench")
                    .header("content-type", "application/json")
                    .body(d.data.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
                let _ = resp.bytes().await;
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
                let i: usize = id.trim_start_matches("b-").parse().unwrap();
                let _ = done.send((i, Instant::now()));
            });
        }
    });
    let (start, _, published) = publish(pub_ch, &queue, n).await;
    let mut latencies = Vec::with_capacity(n);
    let mut last = start;
    for _ in 0..n {
        let (i, at) = done_rx.recv().await.unwrap();
        latencies.push(at - published[i]);
        last = last.max(at);
    }
    consume.await.unwrap();
    let _ = ch.close(200, "done".into()).await;
    let _ = pub_ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    Run { name: "bare lapin loop: consume -> POST no-op -> ack", n, elapsed: last - start, latencies }
}

/// Switchyard: the amqp source with the same prefetch, the no-op function, SQLite records.
async fn switchyard(pub_ch: &Channel, function: &str, n: usize, prefetch: u16) -> Run {
    let queue = format!("sy-bench-sy-{}", uuid::Uuid::new_v4().simple());
    declare(pub_ch, &queue).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store: sqlite://{}/bench.db\nserver: {{bind: '127.0.0.1:0'}}\nsources:\n  - {{type: amqp, name: rabbit, url: '{URL}', queue: {queue}, prefetch: {prefetch}}}\nfunctions:\n  - {{name: noop, runtime: http, url: '{function}', max_concurrency: {prefetch}, queue_size: 100000}}\ntriggers:\n  - {{name: all, function: noop}}\n",
        dir.path().display()
    );
    let config = Config::from_yaml_str(&yaml, "bench.yaml", |_| None).unwrap();
    let running = app::start(config, false, std::future::pending()).await.unwrap();
    let store = running.dispatcher.store().clone();
    let (start, wall, _) = publish(pub_ch, &queue, n).await;
    support::wait_succeeded(&running.dispatcher, n as u64).await;
    let mut latencies = Vec::with_capacity(n);
    let mut last_finished = None;
    let mut before = None;
    loop {
        let q = RecordQuery { status: Some(Status::Success), before, limit: 1000, ..RecordQuery::default() };
        let page = store.list(&q).await.unwrap();
        for r in &page {
            let i: usize = r.event_id.trim_start_matches("b-").parse().unwrap();
            let finished = r.finished_at.unwrap();
            let published: chrono::DateTime<chrono::Utc> = wall[i].into();
            latencies.push((finished - published).to_std().unwrap_or_default());
            last_finished = last_finished.max(Some(finished));
        }
        match page.last() {
            Some(l) if page.len() == 1000 => before = Some(l.id),
            _ => break,
        }
    }
    // Throughput from the first publish to the last committed SUCCESS record.
    let first: chrono::DateTime<chrono::Utc> = wall[0].into();
    let elapsed = (last_finished.unwrap() - first).to_std().unwrap_or_else(|_| start.elapsed());
    assert_eq!(store.count(Some(Status::Failure)).await.unwrap(), 0, "no invocation may fail in the bench");
    running.shutdown().await;
    let _ = pub_ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    Run { name: "switchyard amqp source -> no-op -> SUCCESS record -> ack", n, elapsed, latencies }
}

#[tokio::main]
async fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n = if bench_mode { env_usize("SWITCHYARD_BENCH_EVENTS", 20_000) } else { 200 };
    let prefetches: Vec<u16> = std::env::var("SWITCHYARD_BENCH_PREFETCH")
        .unwrap_or_else(|_| "64,256".to_owned())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let conn = match Connection::connect(URL, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "RabbitMQ is required under CI=true: {e}");
            eprintln!("SKIPPED: RabbitMQ is not running on 127.0.0.1:5672 ({e})");
            return;
        }
    };
    let pub_ch = conn.create_channel().await.unwrap();
    pub_ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let function = noop_server().await;

    // Warm up the function server, RabbitMQ and the page cache with a small run of each.
    let _ = bare_loop(&conn, &pub_ch, &function, 200.min(n), prefetches[0]).await;
    let _ = switchyard(&pub_ch, &function, 200.min(n), prefetches[0]).await;

    println!("\nAMQP, {n} persistent messages published in a burst, no-op HTTP function\n");
    println!("| prefetch | path | events | events/s | ratio to bare loop | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    for &prefetch in &prefetches {
        let bare = bare_loop(&conn, &pub_ch, &function, n, prefetch).await;
        let sy = switchyard(&pub_ch, &function, n, prefetch).await;
        let b = bare.rate();
        println!("| {prefetch} {}", bare.row(b));
        println!("| {prefetch} {}", sy.row(b));
    }
    println!("\n(latency: publish -> ack for the bare loop, publish -> committed SUCCESS record for Switchyard;");
    println!("the messages are published in one burst, so it includes the time spent queued in RabbitMQ.)");
    let _ = conn.close(200, "done".into()).await;
}
