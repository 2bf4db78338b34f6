//! End-to-end bench: HTTP ingress -> dispatcher -> no-op HTTP function -> SQLite records, next to
//! the baseline of the same load sent straight to the function server, in the same run.
//!
//! Run: `cargo bench -p switchyard-broker --bench e2e` (env: `SWITCHYARD_BENCH_EVENTS`, default
//! 20000; `SWITCHYARD_BENCH_CONCURRENCY`, default 32). Under `cargo test` it runs a small smoke load.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{drive, noop_server, Run};
use switchyard_broker::app;
use switchyard_dispatcher::records::RecordQuery;
use switchyard_schemas::{Config, Status};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n = if bench_mode { env_usize("SWITCHYARD_BENCH_EVENTS", 20_000) } else { 200 };
    let concurrency = env_usize("SWITCHYARD_BENCH_CONCURRENCY", 32);
    let function = noop_server().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store: sqlite://{}/bench.db\nserver: {{bind: '127.0.0.1:0', max_body_bytes: 1048576}}\nfunctions:\n  - {{name: noop, runtime: http, url: '{function}', max_concurrency: 64, queue_size: 100000}}\ntriggers:\n  - {{name: all, function: noop}}\n",
        dir.path().display()
    );
    let config = Config::from_yaml_str(&yaml, "bench.yaml", |_| None).unwrap();
    let running = app::start(config, false, std::future::pending()).await.unwrap();
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let body = r#"{"order": 42, "items": [{"sku": "A-1", "qty": 2}], "total": 31.5}"#;

    // Warm up connections and the SQLite file.
    let c = client.clone();
    let f = function.clone();
    drive(200.min(n), concurrency, Arc::new(move |_| c.post(&f).body(body)), 200).await;

    // Baseline: the same load straight to the function server.
    let c = client.clone();
    let f = function.clone();
    let (elapsed, latencies) = drive(n, concurrency, Arc::new(move |_| c.post(&f).body(body)), 200).await;
    let baseline = Run { name: "baseline: client -> no-op function", n, elapsed, latencies };

    // Synchronous invoke: ingress -> stack -> function -> record durable -> response.
    let c = client.clone();
    let url = format!("{base}/api/v1/functions/invoke/noop");
    let (elapsed, latencies) = drive(n, concurrency, Arc::new(move |_| c.post(&url).body(body)), 200).await;
    let invoke = Run { name: "switchyard invoke API (record durable before reply)", n, elapsed, latencies };

    // Async ingress: POST /events (202), then wait for every SUCCESS record.
    let store = running.dispatcher.store().clone();
    let before = store.count(Some(Status::Success)).await.unwrap();
    let c = client.clone();
    let url = format!("{base}/events");
    let start = Instant::now();
    let make = Arc::new(move |i: usize| {
        c.post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", format!("bench-{i}"))
            .header("ce-source", "/bench")
            .header("ce-type", "bench")
            .header("content-type", "application/json")
            .body(body)
    });
    let (_, _accept_latencies) = drive(n, concurrency, make, 202).await;
    loop {
        let done = store.count(Some(Status::Success)).await.unwrap() - before;
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let records = store
        .list(&RecordQuery { function: Some("noop".to_owned()), limit: 1000, ..RecordQuery::default() })
        .await
        .unwrap();
    // Latency per event from acceptance to its terminal record (the newest 1000 records).
    let latencies: Vec<Duration> = records
        .iter()
        .filter(|r| r.trigger == "all")
        .filter_map(|r| (r.finished_at? - r.received_at).to_std().ok())
        .collect();
    let ingress = Run { name: "switchyard POST /events -> SUCCESS record", n, elapsed, latencies };
    let failures = store.count(Some(Status::Failure)).await.unwrap();
    assert_eq!(failures, 0, "no invocation may fail in the bench");

    let b = baseline.rate();
    println!("\nend-to-end, {n} events, {concurrency} concurrent clients, SQLite records (WAL)\n");
    println!("| path | events | events/s | ratio to baseline | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    println!("{}", baseline.row(b));
    println!("{}", invoke.row(b));
    println!("{}", ingress.row(b));
    println!("\n(POST /events latency is from acceptance to the committed SUCCESS record, newest 1000 events.)");
    running.shutdown().await;
}
