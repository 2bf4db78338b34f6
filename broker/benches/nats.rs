//! NATS JetStream -> no-op HTTP function -> SQLite records, next to a bare async-nats loop
//! (consume -> POST the same no-op function -> ack, same in-flight window) in the same run.
//!
//! Run: `cargo bench -p switchyard-broker --bench nats` (needs NATS with JetStream on 127.0.0.1:4222;
//! env `SWITCHYARD_BENCH_EVENTS`, default 20000). Under `cargo test` it runs a small smoke load.
//! Throughput: draining a backlog of N messages, three rounds of each loop taking turns (medians).
//! Latency: N/10 messages published at a steady 500 msg/s, from publish (timestamp in the body) to
//! acked (bare) or SUCCESS record committed.
//! For profiling, `SWITCHYARD_BENCH_ONLY=switchyard` (or `bare`) runs the backlog rounds of one loop
//! only and skips the latency part.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use support::{noop_server, wait_succeeded};
use switchyard_broker::app;
use switchyard_dispatcher::records::{RecordQuery, RecordStore};
use switchyard_schemas::Config;
use tokio::sync::Semaphore;

/// The in-flight window of both loops (the NATS source's default `max_in_flight`).
const IN_FLIGHT: usize = 256;
/// Backlog rounds of each loop, alternating; the table shows the medians.
const ROUNDS: usize = 3;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn stream(js: &jetstream::Context, name: &str, subject: &str) {
    let _ = js.delete_stream(name).await;
    js.create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{subject}.>")],
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn publish(js: &jetstream::Context, subject: &str, n: usize, rate: Option<u32>) {
    let mut acks = Vec::new();
    let mut tick = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r))));
    for _ in 0..n {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        acks.push(js.publish(format!("{subject}.m"), format!("{{\"t\": {}}}", now_us()).into()).await.unwrap());
        if acks.len() >= 1000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// The bare loop: returns (seconds to handle `n` messages, latencies in ms).
async fn bare(js: &jetstream::Context, stream: &str, n: usize, function: &str) -> (f64, Vec<f64>) {
    let s = js.get_stream(stream).await.unwrap();
    let consumer = s
        .get_or_create_consumer(
            "bare",
            jetstream::consumer::pull::Config {
                durable_name: Some("bare".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: IN_FLIGHT as i64,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let done = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut messages = consumer.stream().max_messages_per_batch(IN_FLIGHT).messages().await.unwrap();
    let start = Instant::now();
    let mut taken = 0;
    while taken < n {
        let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
        let msg = messages.next().await.unwrap().unwrap();
        taken += 1;
        let (http, function, done, lat) = (http.clone(), function.to_owned(), Arc::clone(&done), Arc::clone(&lat));
        tokio::spawn(async move {
            http.post(&function).body(msg.payload.clone()).send().await.unwrap().bytes().await.unwrap();
            msg.ack().await.unwrap();
            let t: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            lat.lock().unwrap().push((now_us() - t["t"].as_i64().unwrap()) as f64 / 1000.0);
            done.fetch_add(1, Ordering::SeqCst);
            drop(permit);
        });
    }
    while done.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let l = lat.lock().unwrap().clone();
    (secs, l)
}

/// publish -> SUCCESS latency of the newest `n` records, from the timestamp in their data.
async fn record_latencies(store: &RecordStore, n: usize) -> Vec<f64> {
    let rs = store.list(&RecordQuery { limit: n.min(1000) as u32, ..RecordQuery::default() }).await.unwrap();
    rs.iter()
        .filter_map(|r| {
            let ev: serde_json::Value = serde_json::from_str(&r.request.body).ok()?;
            let t = ev["data"]["t"].as_i64()?;
            Some((r.finished_at?.timestamp_micros() - t) as f64 / 1000.0)
        })
        .collect()
}

/// Switchyard on a fresh stream holding a backlog of `n` messages: seconds until `n` SUCCESS records.
async fn switchyard_backlog(js: &jetstream::Context, id: &str, round: usize, n: usize, function: &str) -> f64 {
    let (ss, ssub) = (format!("BENCHSY{id}R{round}"), format!("bench.sy.{id}.r{round}"));
    stream(js, &ss, &ssub).await;
    publish(js, &ssub, n, None).await;
    let dir = tempfile::tempdir().unwrap();
    let running = app::start(config(dir.path(), &ss, function), false, std::future::pending()).await.unwrap();
    let start = Instant::now();
    wait_succeeded(&running.dispatcher, n as u64).await;
    let secs = start.elapsed().as_secs_f64();
    running.shutdown().await;
    js.delete_stream(&ss).await.unwrap();
    secs
}

/// The bare loop on a fresh stream holding a backlog of `n` messages: seconds to handle them.
async fn bare_backlog(js: &jetstream::Context, id: &str, round: usize, n: usize, function: &str) -> f64 {
    let (bs, bsub) = (format!("BENCHBARE{id}R{round}"), format!("bench.bare.{id}.r{round}"));
    stream(js, &bs, &bsub).await;
    publish(js, &bsub, n, None).await;
    let (secs, _) = bare(js, &bs, n, function).await;
    js.delete_stream(&bs).await.unwrap();
    secs
}

fn config(dir: &std::path::Path, stream: &str, function: &str) -> Config {
    let yaml = format!(
        "store: sqlite://{}/bench.db\nserver: {{bind: '127.0.0.1:0'}}\nsources:\n  - type: nats\n    name: js\n    max_in_flight: {IN_FLIGHT}\n    jetstream: {{stream: {stream}, durable: sy}}\nfunctions:\n  - {{name: noop, runtime: http, url: '{function}', max_concurrency: {IN_FLIGHT}}}\ntriggers:\n  - {{name: all, function: noop}}\n",
        dir.display(),
    );
    Config::from_yaml_str(&yaml, "bench.yaml", |_| None).unwrap()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = if bench {
        std::env::var("SWITCHYARD_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
    } else {
        300
    };
    let rounds = if bench { ROUNDS } else { 1 };
    let paced = (n / 10).max(50);
    let client = async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS on 127.0.0.1:4222");
    let js = jetstream::new(client);
    let function = noop_server().await;
    let id = uuid::Uuid::new_v4().simple().to_string();

    // Throughput: the two loops take turns on fresh backlogs, so a slow or fast spell of the machine
    // falls on both.
    let only = std::env::var("SWITCHYARD_BENCH_ONLY").unwrap_or_default();
    let (mut bare_rates, mut sy_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if only != "switchyard" {
            bare_rates.push(n as f64 / bare_backlog(&js, &id, round, n, &function).await);
        }
        if only != "bare" {
            sy_rates.push(n as f64 / switchyard_backlog(&js, &id, round, n, &function).await);
        }
    }
    if !only.is_empty() {
        println!("\n{only} only, events/s per round: {:.0?}", if only == "bare" { &bare_rates } else { &sy_rates });
        return;
    }

    // Latency at a steady rate: the bare loop...
    let (bs, bsub) = (format!("BENCHBARE{id}P"), format!("bench.bare.{id}.p"));
    stream(&js, &bs, &bsub).await;
    let lat_task = tokio::spawn({
        let (js, bs, function) = (js.clone(), bs.clone(), function.clone());
        async move { bare(&js, &bs, paced, &function).await }
    });
    publish(&js, &bsub, paced, Some(500)).await;
    let (_, mut bare_lat) = lat_task.await.unwrap();
    js.delete_stream(&bs).await.unwrap();
    // ...and Switchyard.
    let (ss, ssub) = (format!("BENCHSY{id}P"), format!("bench.sy.{id}.p"));
    stream(&js, &ss, &ssub).await;
    let dir = tempfile::tempdir().unwrap();
    let running = app::start(config(dir.path(), &ss, &function), false, std::future::pending()).await.unwrap();
    let store = running.dispatcher.store().clone();
    publish(&js, &ssub, paced, Some(500)).await;
    wait_succeeded(&running.dispatcher, paced as u64).await;
    let mut sy_lat = record_latencies(&store, paced).await;
    running.shutdown().await;
    js.delete_stream(&ss).await.unwrap();

    let (br, sr) = (median(&bare_rates), median(&sy_rates));
    println!("\nNATS JetStream, {n} messages backlog x {rounds} rounds (alternating), {paced} paced at 500 msg/s, in-flight {IN_FLIGHT}\n");
    println!("| path | events/s (backlog, median) | ratio | p50 ms (paced) | p99 ms (paced) |");
    println!("|---|---|---|---|---|");
    println!(
        "| bare async-nats loop: consume -> POST no-op -> ack | {br:.0} | 1.00 | {:.2} | {:.2} |",
        pct(&mut bare_lat, 0.5),
        pct(&mut bare_lat, 0.99)
    );
    println!(
        "| switchyard: nats source -> no-op function -> SUCCESS record | {sr:.0} | {:.2} | {:.2} | {:.2} |",
        sr / br,
        pct(&mut sy_lat, 0.5),
        pct(&mut sy_lat, 0.99)
    );
    println!("\n(rounds, events/s: bare {bare_rates:.0?}; switchyard {sy_rates:.0?})");
}
