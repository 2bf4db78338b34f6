//! Kafka (tansu) -> no-op HTTP function -> SQLite records, next to a bare rdkafka loop (consume ->
//! POST the same no-op function -> store offset -> commit, same in-flight window) in the same run,
//! against the same tansu broker.
//!
//! Run: `cargo bench -p switchyard-broker --bench kafka` (needs tansu: `SWITCHYARD_TANSU` or
//! `/opt/switchyard-tools/tansu/bin/tansu`, installed by `scripts/test.sh`; env
//! `SWITCHYARD_BENCH_EVENTS`, default 20000). Under `cargo test` it runs a small smoke load.
//! Throughput: draining a backlog of N messages over 4 partitions, from the consumer's start to the
//! last offset stored (bare) or the last SUCCESS record committed (Switchyard).

#[path = "../../connectors/tests/kafka_support/mod.rs"]
mod kafka_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_support::{create_topic, unique, Tansu};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use support::{noop_server, wait_succeeded};
use switchyard_broker::app;
use switchyard_schemas::Config;
use tokio::sync::Semaphore;

/// The in-flight window of both loops: `IN_FLIGHT * PARTITIONS` invocations at once (the bare loop's
/// semaphore; the function's `max_concurrency` for Switchyard). The source's own per-partition
/// `max_in_flight` is set above the backlog so that it never pauses a partition: tansu 0.6.0 skips the
/// rest of a producer batch when a fetch starts inside it (the defect the README describes), which a
/// resume after a pause does. Pause/resume is covered by the tests, with one record per batch.
const IN_FLIGHT: usize = 256;
const PARTITIONS: i32 = 4;

async fn publish(bootstrap: &str, topic: &str, n: usize) {
    let p: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|i| {
            let p = &p;
            async move {
                let (key, value) = (format!("k{}", i % 64), format!("{{\"i\": {i}}}"));
                p.send(FutureRecord::to(topic).key(&key).payload(&value), Duration::from_secs(30)).await.unwrap();
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// The bare loop: seconds to handle `n` messages.
async fn bare(bootstrap: &str, topic: &str, n: usize, function: &str) -> f64 {
    let consumer: Arc<StreamConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("bare"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .create()
            .unwrap(),
    );
    consumer.subscribe(&[topic]).unwrap();
    let http = reqwest::Client::new();
    let done = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(IN_FLIGHT * PARTITIONS as usize));
    let start = Instant::now();
    for _ in 0..n {
        let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
        let msg = consumer.recv().await.unwrap().detach();
        let (http, function, done, consumer) =
            (http.clone(), function.to_owned(), Arc::clone(&done), Arc::clone(&consumer));
        tokio::spawn(async move {
            let body = msg.payload().unwrap_or_default().to_vec();
            http.post(&function).body(body).send().await.unwrap().bytes().await.unwrap();
            consumer.store_offset(msg.topic(), msg.partition(), msg.offset()).unwrap();
            done.fetch_add(1, Ordering::SeqCst);
            drop(permit);
        });
    }
    while done.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    secs
}

/// Switchyard with `ordering`: seconds until `n` SUCCESS records.
async fn switchyard(bootstrap: &str, topic: &str, n: usize, function: &str, ordering: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store: sqlite://{}/bench.db\nserver: {{bind: '127.0.0.1:0'}}\nsources:\n  - type: kafka\n    name: k\n    \
         bootstrap_servers: ['{bootstrap}']\n    topics: [{topic}]\n    group: {}\n    start_offset: earliest\n    \
         ordering: {ordering}\n    max_in_flight: 100000\nfunctions:\n  - {{name: noop, runtime: http, url: '{function}', \
         max_concurrency: {}}}\ntriggers:\n  - {{name: all, function: noop}}\n",
        dir.path().display(),
        unique("sy"),
        IN_FLIGHT * PARTITIONS as usize
    );
    let config = Config::from_yaml_str(&yaml, "bench.yaml", |_| None).unwrap();
    let start = Instant::now();
    let running = app::start(config, false, std::future::pending()).await.unwrap();
    wait_succeeded(&running.dispatcher, n as u64).await;
    let secs = start.elapsed().as_secs_f64();
    running.shutdown().await;
    secs
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = if bench {
        std::env::var("SWITCHYARD_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
    } else {
        300
    };
    let Some(t) = Tansu::start() else { return };
    let function = noop_server().await;
    let topic = unique("bench");
    create_topic(&t.bootstrap, &topic, PARTITIONS).await;
    publish(&t.bootstrap, &topic, n).await;
    // Every run reads the same backlog with its own group; the bare loop runs first and last so a
    // warming machine does not favour either side.
    eprintln!("published {n}");
    let bare1 = bare(&t.bootstrap, &topic, n, &function).await;
    eprintln!("bare: {bare1:.2}s");
    let none = switchyard(&t.bootstrap, &topic, n, &function, "none").await;
    eprintln!("switchyard ordering none: {none:.2}s");
    let key = switchyard(&t.bootstrap, &topic, n, &function, "key").await;
    eprintln!("switchyard ordering key: {key:.2}s");
    let bare2 = bare(&t.bootstrap, &topic, n, &function).await;
    eprintln!("bare: {bare2:.2}s");
    let br = n as f64 / bare1.min(bare2);
    let (nr, kr) = (n as f64 / none, n as f64 / key);
    println!("\nKafka (tansu 0.6.0, memory storage), {n} messages backlog over {PARTITIONS} partitions, 64 keys\n");
    println!("| path | events/s | ratio |");
    println!("|---|---|---|");
    println!("| bare rdkafka loop: consume -> POST no-op -> store offset -> commit (best of 2) | {br:.0} | 1.00 |");
    println!("| switchyard, ordering none -> no-op function -> SUCCESS record | {nr:.0} | {:.2} |", nr / br);
    println!("| switchyard, ordering key (default) -> no-op function -> SUCCESS record | {kr:.0} | {:.2} |", kr / br);
}
