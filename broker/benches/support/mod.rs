//! Shared by the end-to-end bench harnesses: a no-op HTTP function server, percentiles, and one
//! result row (events/s, ratio to the same run's baseline, p50/p99).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;

/// Starts a no-op HTTP function on a random port; returns its URL.
pub async fn noop_server() -> String {
    let app = Router::new().route("/", post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

/// Waits until `n` SUCCESS records are durable, reading the dispatcher's in-process counter (polling
/// `COUNT(*)` on the store instead would take the broker's CPU and store lock while it is measured),
/// then checks the store agrees.
pub async fn wait_succeeded(dispatcher: &switchyard_dispatcher::Dispatcher, n: u64) {
    let stats = dispatcher.stats();
    while stats.succeeded.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stored = dispatcher.store().count(Some(switchyard_schemas::Status::Success)).await.unwrap();
    assert!(stored >= i64::try_from(n).unwrap(), "the store holds {stored} SUCCESS records, the counter {n}");
}

/// The `p` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One measured path.
pub struct Run {
    /// What was measured.
    pub name: &'static str,
    /// Events handled.
    pub n: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Per-event latencies.
    pub latencies: Vec<Duration>,
}

impl Run {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.n as f64 / self.elapsed.as_secs_f64()
    }

    /// A markdown row: name, events, events/s, ratio to `baseline` events/s, p50 and p99 in ms.
    pub fn row(&self, baseline: f64) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            self.name,
            self.n,
            self.rate(),
            self.rate() / baseline,
            percentile(&l, 0.50).as_secs_f64() * 1000.0,
            percentile(&l, 0.99).as_secs_f64() * 1000.0,
        )
    }
}

/// Sends `n` requests with `concurrency` workers; `make` builds request i.
pub async fn drive(
    n: usize,
    concurrency: usize,
    make: Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync>,
    expect: u16,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = Arc::clone(&next);
            let make = Arc::clone(&make);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return lat;
                    }
                    let t = Instant::now();
                    let resp = make(i).send().await.expect("request");
                    assert_eq!(resp.status().as_u16(), expect, "request {i}");
                    let _ = resp.bytes().await;
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.unwrap());
    }
    (start.elapsed(), all)
}

/// The allocator the `switchyard` binary uses, so the benches measure what runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
