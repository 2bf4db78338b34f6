//! Cost of trace export: the end-to-end path (POST /events -> dispatcher -> no-op HTTP function ->
//! SUCCESS record) on two `switchyard serve` processes, one with OpenTelemetry span export off and one
//! with it on, driven alternately in one run. Spans go over OTLP/HTTP (batched) to a local sink that
//! accepts them. Throughput is N events over first post -> last SUCCESS record.
//!
//! Beside throughput, it reads each `serve` process's CPU time (user + system, from `/proc`) over its
//! rounds, in total and by thread (tokio's workers, the records thread, the span export thread): CPU per
//! event is steadier than events/s on a shared, noisy machine, and the difference between the two
//! processes is what export costs the broker itself.
//!
//! Run: `cargo bench -p switchyard-broker --bench tracing` (env: `SWITCHYARD_BENCH_EVENTS`, default
//! 20000; `SWITCHYARD_BENCH_CONCURRENCY`, default 32). Under `cargo test` it runs a small smoke load.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use support::{drive, noop_server};
use switchyard_dispatcher::records::RecordStore;
use switchyard_schemas::Status;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A local OTLP/HTTP endpoint: accepts every export, counts the bytes.
async fn otlp_sink() -> (String, Arc<AtomicUsize>) {
    let bytes = Arc::new(AtomicUsize::new(0));
    let b = Arc::clone(&bytes);
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let b = Arc::clone(&b);
            async move {
                b.fetch_add(body.len(), Ordering::Relaxed);
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), bytes)
}

/// A `switchyard serve` process of the real binary, and its records store.
struct Serve {
    child: tokio::process::Child,
    url: String,
    store: RecordStore,
}

async fn serve(dir: &std::path::Path, name: &str, function: &str, telemetry: &str) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let db = dir.join(format!("{name}.db"));
    let yaml = format!(
        "store: sqlite://{}\nserver: {{bind: '127.0.0.1:{port}'}}\n{telemetry}functions:\n  - {{name: noop, runtime: http, url: '{function}', max_concurrency: 64, queue_size: 100000}}\ntriggers:\n  - {{name: all, function: noop}}\n",
        db.display()
    );
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(&cfg, yaml).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-c", cfg.to_str().unwrap()])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "{name} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = RecordStore::open(&format!("sqlite://{}", db.display())).await.unwrap();
    Serve { child, url, store }
}

/// CPU seconds (user + system) used so far, from a `/proc/.../stat` line: utime and stime are the 12th
/// and 13th fields after the command name (which may hold spaces, so split after its closing
/// parenthesis), in clock ticks of USER_HZ, which is 100 on every architecture Linux supports.
fn stat_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
}

/// A process's CPU so far: in total (threads that have ended included), and by thread id with each
/// thread's name (tokio's workers share one).
#[derive(Default)]
struct Cpu {
    total: f64,
    threads: BTreeMap<u32, (String, f64)>,
}

fn cpu_of(pid: u32) -> Cpu {
    let mut cpu = Cpu {
        total: std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| stat_seconds(&s)).unwrap_or(0.0),
        ..Cpu::default()
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return cpu };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let path = task.path();
        let (Ok(name), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue; // the thread ended meanwhile
        };
        if let Some(seconds) = stat_seconds(&stat) {
            cpu.threads.insert(tid, (name.trim().to_owned(), seconds));
        }
    }
    cpu
}

/// Adds what the process used between `before` and `after` to `into`, by thread name: "total" for the
/// whole process, and "(threads that ended, rounding)" for what the running threads do not account for
/// (threads that ended, and each thread's ticks being rounded on their own).
fn add_cpu(into: &mut BTreeMap<String, f64>, before: &Cpu, after: &Cpu) {
    let total = after.total - before.total;
    *into.entry("total".to_owned()).or_default() += total;
    let mut by_threads = 0.0;
    for (tid, (name, t)) in &after.threads {
        let used = t - before.threads.get(tid).map_or(0.0, |(_, b)| *b);
        by_threads += used;
        *into.entry(name.clone()).or_default() += used;
    }
    *into.entry("(threads that ended, rounding)".to_owned()).or_default() += (total - by_threads).max(0.0);
}

/// Posts `n` events to `s` and waits for their SUCCESS records; returns events/s, and adds the CPU
/// seconds the `serve` process's threads used over the round to `cpu`.
async fn round(
    s: &Serve,
    client: &reqwest::Client,
    first: usize,
    n: usize,
    concurrency: usize,
    cpu: &mut BTreeMap<String, f64>,
) -> f64 {
    let pid = s.child.id().expect("serve is running");
    let cpu_before = cpu_of(pid);
    let body = r#"{"order": 42, "items": [{"sku": "A-1", "qty": 2}], "total": 31.5}"#;
    let before = s.store.count(Some(Status::Success)).await.unwrap();
    let start = Instant::now();
    let c = client.clone();
    let url = format!("{}/events", s.url);
    let make = Arc::new(move |i: usize| {
        c.post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", format!("bench-{}", first + i))
            .header("ce-source", "/bench")
            .header("ce-type", "bench")
            .header("traceparent", format!("00-{:032x}-{:016x}-01", first + i + 1, first + i + 1))
            .header("content-type", "application/json")
            .body(body)
    });
    drive(n, concurrency, make, 202).await;
    while ((s.store.count(Some(Status::Success)).await.unwrap() - before) as usize) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    add_cpu(cpu, &cpu_before, &cpu_of(pid));
    rate
}

#[tokio::main]
async fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n = if bench_mode { env_usize("SWITCHYARD_BENCH_EVENTS", 20_000) } else { 200 };
    let concurrency = env_usize("SWITCHYARD_BENCH_CONCURRENCY", 32);
    let (endpoint, exported) = otlp_sink().await;
    let function = noop_server().await;
    // Kept after a failure, so the brokers' logs can be read.
    let dir = tempfile::Builder::new().prefix("sy-tracing-bench").tempdir().unwrap().keep();
    eprintln!("broker logs in {}", dir.display());
    let off = serve(&dir, "off", &function, "").await;
    let on = serve(&dir, "on", &function, &format!("telemetry: {{otlp_endpoint: '{endpoint}'}}\n")).await;
    // Idle connections to one process wait while the other is driven; drop them before the server's
    // 30 s header-read timeout closes them under a reused request.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut warm_up = BTreeMap::new();
    round(&off, &client, 0, 200.min(n), concurrency, &mut warm_up).await;
    round(&on, &client, 0, 200.min(n), concurrency, &mut warm_up).await;
    let (mut rates_off, mut rates_on) = (Vec::new(), Vec::new());
    let (mut cpu_off, mut cpu_on) = (BTreeMap::new(), BTreeMap::new());
    for r in 0..3 {
        rates_off.push(round(&off, &client, (r + 1) * n, n, concurrency, &mut cpu_off).await);
        rates_on.push(round(&on, &client, (r + 1) * n, n, concurrency, &mut cpu_on).await);
    }
    for s in [&off, &on] {
        assert_eq!(s.store.count(Some(Status::Failure)).await.unwrap(), 0, "no invocation may fail in the bench");
    }
    // The exporter sends a batch at least every 5 s; wait for the first to arrive.
    let deadline = Instant::now() + Duration::from_secs(15);
    while exported.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no spans reached the OTLP endpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off_m, on_m) = (median(&mut rates_off), median(&mut rates_on));
    println!("\ntrace export cost: two `switchyard serve` processes, {n} events per round, 3 rounds each, alternating, {concurrency} concurrent clients\n");
    println!("| path | events/s (median of 3) | ratio to export off |");
    println!("|---|---|---|");
    println!("| POST /events -> SUCCESS record, export off (baseline) | {off_m:.0} | 1.00 |");
    println!("| same, spans exported over OTLP/HTTP | {on_m:.0} | {:.2} |", on_m / off_m);
    // CPU microseconds per event of each `serve` process, over its 3 rounds.
    let per_event = |cpu: f64| cpu * 1e6 / (3 * n) as f64;
    let total = |cpu: &BTreeMap<String, f64>| cpu.get("total").copied().unwrap_or_default();
    let (total_off, total_on) = (total(&cpu_off), total(&cpu_on));
    println!(
        "| CPU of the `serve` process per event (export off / on) | {:.0} us / {:.0} us | {:.2} |",
        per_event(total_off),
        per_event(total_on),
        total_on / total_off
    );
    println!("\nCPU per event by thread, us (export off / on; threads with at least 0.5 us):\n");
    let names: std::collections::BTreeSet<&String> =
        cpu_off.keys().chain(cpu_on.keys()).filter(|n| n.as_str() != "total").collect();
    for name in names {
        let (a, b) = (
            per_event(cpu_off.get(name).copied().unwrap_or_default()),
            per_event(cpu_on.get(name).copied().unwrap_or_default()),
        );
        if a >= 0.5 || b >= 0.5 {
            println!("- {name}: {a:.1} / {b:.1}");
        }
    }
    println!(
        "\n(rounds off: {rates_off:.0?}; on: {rates_on:.0?}; {} bytes of spans exported so far)",
        exported.load(Ordering::Relaxed)
    );
    drop((off.child, on.child));
    let _ = std::fs::remove_dir_all(&dir);
}
