//! Cron bench: lateness of ticks (dispatch time minus scheduled instant, p50/p99) with 1 schedule
//! and with 10,000 schedules, plus idle CPU and RSS with 10,000 schedules loaded. The sources run
//! in-process on the system clock with the real SQLite store for claims and state; a no-op
//! consumer takes the deliveries (and acks them at once).
//!
//! Run: `cargo bench -p switchyard-broker --bench cron` (env: `SWITCHYARD_BENCH_CRON_SECS`, the
//! length of each firing phase, default 20; `SWITCHYARD_BENCH_CRON_SCHEDULES`, default 10000).
//! Under `cargo test` it runs a small smoke load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use switchyard_connectors::cron::{CronHandle, CronSource};
use switchyard_connectors::{Delivery, Outcome, Source, SourceContext, SourceState};
use switchyard_dispatcher::records::RecordStore;
use switchyard_schemas::sources::cron::CronSourceConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// utime + stime of this process in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is 0, utime is 11, stime is 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// VmRSS in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Phase {
    handles: Vec<CronHandle>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    consumer: tokio::task::JoinHandle<Vec<f64>>,
}

/// Starts `n` cron sources (schedule `i` from `schedule(i)`) feeding one no-op consumer that
/// records lateness in milliseconds.
fn start(prefix: &str, n: usize, schedule: impl Fn(usize) -> String, state: &Arc<dyn SourceState>) -> Phase {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (tx, mut rx) = mpsc::channel::<Delivery>(4096);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let config = CronSourceConfig { name: name.clone(), schedule: schedule(i), ..CronSourceConfig::default() };
        let source = Box::new(CronSource::new(config));
        handles.push(source.handle());
        let ctx =
            SourceContext { deliveries: tx.clone(), shutdown: shutdown.child_token(), name, state: Arc::clone(state) };
        tracker.spawn(async move {
            if let Err(e) = source.run(ctx).await {
                eprintln!("source failed: {e}");
            }
        });
    }
    drop(tx);
    tracker.close();
    let consumer = tokio::spawn(async move {
        let mut late = Vec::new();
        while let Some(mut d) = rx.recv().await {
            let now = Utc::now();
            if let Some(t) = d.event.time {
                late.push((now - t.with_timezone(&Utc)).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
        }
        late
    });
    Phase { handles, shutdown, tracker, consumer }
}

impl Phase {
    /// Waits until every source has read its state and runs its tick loop.
    async fn started(&self) {
        while !self.handles.iter().all(|h| h.status().running) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> Vec<f64> {
        self.shutdown.cancel();
        self.tracker.wait().await;
        let mut late = self.consumer.await.unwrap();
        late.sort_by(f64::total_cmp);
        late
    }
}

fn row(what: &str, schedules: usize, late: &[f64], cpu: f64, rss: f64) -> String {
    format!(
        "| {what} | {schedules} | {} | {:.2} | {:.2} | {:.2} | {cpu:.2} | {rss:.1} |",
        late.len(),
        percentile(late, 0.50),
        percentile(late, 0.99),
        late.last().copied().unwrap_or(f64::NAN),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let secs = if bench_mode { env_usize("SWITCHYARD_BENCH_CRON_SECS", 20) } else { 2 };
    let many = if bench_mode { env_usize("SWITCHYARD_BENCH_CRON_SCHEDULES", 10_000) } else { 100 };
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(&format!("sqlite://{}/cron-bench.db", dir.path().display())).await.unwrap();
    let state: Arc<dyn SourceState> = Arc::new(store);
    let mut rows = Vec::new();

    // 1 schedule, every second.
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let phase = start("one", 1, |_| "* * * * * *".to_owned(), &state);
    tokio::time::sleep(Duration::from_secs(secs as u64)).await;
    let cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib();
    rows.push(row("every second", 1, &phase.stop().await, cpu, rss));

    // Many schedules loaded but not due (yearly): idle CPU and RSS, measured before the firing
    // phase so the RSS is that of 10,000 loaded schedules, not the allocator's high-water mark.
    let phase = start("idle", many, |_| "@yearly".to_owned(), &state);
    phase.started().await;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs.max(2) as u64)).await;
    let cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib();
    rows.push(row("idle (yearly, none due)", many, &phase.stop().await, cpu, rss));

    // Many schedules, each every minute at second i % 60: about many/60 ticks per second.
    let t_start = Instant::now();
    let phase = start("many", many, |i| format!("{} * * * * *", i % 60), &state);
    phase.started().await;
    let startup = t_start.elapsed();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs as u64)).await;
    let cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib();
    rows.push(row("every minute, spread over the seconds", many, &phase.stop().await, cpu, rss));

    println!(
        "\ncron bench: {secs} s per phase; {many} schedules started in {:.0} ms\n",
        startup.as_secs_f64() * 1000.0
    );
    println!("| phase | schedules | ticks | p50 late (ms) | p99 late (ms) | max late (ms) | CPU (% of one core) | RSS (MiB) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!("{r}");
    }
}
