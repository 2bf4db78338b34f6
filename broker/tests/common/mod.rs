//! Shared helpers for the broker's integration tests: a local HTTP function server with scripted
//! behaviours, a broker started in-process on a random port with its own SQLite file, and waits
//! on the records store.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use switchyard_broker::app::{self, Running};
use switchyard_dispatcher::records::{RecordQuery, RecordStore};
use switchyard_schemas::{Config, EventRecord, Status};
use tokio::sync::Notify;

/// What the function server saw.
#[derive(Default)]
pub struct Seen {
    /// Calls per ce-id.
    pub calls: Mutex<HashMap<String, usize>>,
    /// traceparent headers received.
    pub traceparents: Mutex<Vec<String>>,
    /// Calls now running on /busy.
    pub in_flight: AtomicUsize,
    /// Most calls seen running at once on /busy.
    pub max_in_flight: AtomicUsize,
    /// Signalled when a /slow call starts.
    pub slow_started: Notify,
    /// Signalled to let /gate calls finish.
    pub gate: Notify,
    /// /until-healed fails with 503 until this is set.
    pub healed: std::sync::atomic::AtomicBool,
    /// Bodies POSTed to /sink (a dead-letter sink), as JSON.
    pub sunk: Mutex<Vec<serde_json::Value>>,
    /// Signalled when /sink receives one.
    pub sink_hit: Notify,
    /// /lanes: the `i` of each call's body per body `k`, in the order the calls started.
    pub arrivals: Mutex<HashMap<String, Vec<u64>>>,
    /// /lanes: calls running now per key and per partition (from `ce-subject` `<partition>:<offset>`).
    pub running: Mutex<HashMap<String, usize>>,
    /// /lanes: most calls seen running at once for one key, for one partition, and in all.
    pub max_same_key: AtomicUsize,
    pub max_same_partition: AtomicUsize,
    pub max_running: AtomicUsize,
}

/// Counts a /lanes call in or out of its key's and partition's running counts.
fn lanes_step(s: &Seen, key: &str, partition: &str, delta: isize) {
    let mut running = s.running.lock().unwrap();
    for (lane, max) in [(format!("k:{key}"), &s.max_same_key), (format!("p:{partition}"), &s.max_same_partition)] {
        let n = running.entry(lane).or_default();
        *n = n.checked_add_signed(delta).unwrap();
        max.fetch_max(*n, Ordering::SeqCst);
    }
    let all = running.entry("all".to_owned()).or_default();
    *all = all.checked_add_signed(delta).unwrap();
    s.max_running.fetch_max(*all, Ordering::SeqCst);
}

/// A local HTTP function server.
pub struct FunctionServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl FunctionServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    pub fn calls(&self, id: &str) -> usize {
        self.seen.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

fn count(seen: &Seen, headers: &HeaderMap) -> usize {
    let id = headers.get("ce-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        seen.traceparents.lock().unwrap().push(tp.to_owned());
    }
    let mut calls = seen.calls.lock().unwrap();
    let n = calls.entry(id).or_default();
    *n += 1;
    *n
}

pub async fn function_server() -> FunctionServer {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/ok",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap, body: axum::body::Bytes| async move {
                count(&s, &h);
                (StatusCode::OK, [("content-type", "application/json")], body)
            }),
        )
        .route(
            "/flaky/{n}",
            post(|State(s): State<Arc<Seen>>, Path(n): Path<usize>, h: HeaderMap| async move {
                if count(&s, &h) <= n {
                    (StatusCode::SERVICE_UNAVAILABLE, "try again")
                } else {
                    (StatusCode::OK, "finally")
                }
            }),
        )
        .route(
            "/poison",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap, body: axum::body::Bytes| async move {
                count(&s, &h);
                if body.windows(6).any(|w| w == b"poison") {
                    (StatusCode::INTERNAL_SERVER_ERROR, "poisoned")
                } else {
                    (StatusCode::OK, "fine")
                }
            }),
        )
        .route(
            "/bad",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap| async move {
                count(&s, &h);
                (StatusCode::UNPROCESSABLE_ENTITY, "nope")
            }),
        )
        .route(
            "/slow/{ms}",
            post(|State(s): State<Arc<Seen>>, Path(ms): Path<u64>, h: HeaderMap| async move {
                count(&s, &h);
                s.slow_started.notify_waiters();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (StatusCode::OK, "slow done")
            }),
        )
        .route(
            "/gate",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap| async move {
                count(&s, &h);
                s.slow_started.notify_waiters();
                s.gate.notified().await;
                (StatusCode::OK, "gate opened")
            }),
        )
        .route(
            "/until-healed",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap| async move {
                count(&s, &h);
                if s.healed.load(Ordering::SeqCst) {
                    (StatusCode::OK, "healed")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "still broken")
                }
            }),
        )
        .route(
            "/sink",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap, body: axum::body::Bytes| async move {
                let ct = h.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                assert!(ct.starts_with("application/cloudevents+json"), "dead letters are structured: {ct}");
                s.sunk.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                s.sink_hit.notify_waiters();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/lanes/{ms}",
            post(|State(s): State<Arc<Seen>>, Path(ms): Path<u64>, h: HeaderMap, body: axum::body::Bytes| async move {
                count(&s, &h);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let key = v["k"].as_str().unwrap().to_owned();
                let subject = h.get("ce-subject").and_then(|v| v.to_str().ok()).unwrap_or("");
                let partition = subject.split(':').next().unwrap().to_owned();
                s.arrivals.lock().unwrap().entry(key.clone()).or_default().push(v["i"].as_u64().unwrap());
                lanes_step(&s, &key, &partition, 1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                lanes_step(&s, &key, &partition, -1);
                (StatusCode::OK, "done")
            }),
        )
        .route(
            "/busy",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap| async move {
                count(&s, &h);
                let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_in_flight.fetch_max(now, Ordering::SeqCst);
                // The work itself: long enough that calls overlap.
                tokio::time::sleep(Duration::from_millis(40)).await;
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
                (StatusCode::OK, "done")
            }),
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FunctionServer { addr, seen }
}

/// A broker running in this process, with its SQLite store in a temp dir.
pub struct Broker {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Broker {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    /// Waits until `n` records match `q` and are terminal, or fails after 30 s.
    pub async fn wait_terminal(&self, q: RecordQuery, n: usize) -> Vec<EventRecord> {
        let store = self.running.dispatcher.store().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut q = q.clone();
            q.limit = 1000;
            let records = store.list(&q).await.unwrap();
            let terminal = records.iter().filter(|r| r.status.is_terminal()).count();
            if terminal >= n {
                return records;
            }
            assert!(tokio::time::Instant::now() < deadline, "waited 30s for {n} terminal records, have {terminal}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a binary-mode event.
    pub async fn post_event(&self, id: &str, ty: &str, data: &str) -> reqwest::Response {
        self.http
            .post(self.url("/events"))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/tests")
            .header("ce-type", ty)
            .header("content-type", "application/json")
            .body(data.to_owned())
            .send()
            .await
            .unwrap()
    }
}

/// Starts a broker from YAML text (store and bind are set here).
pub async fn broker(yaml: &str) -> Broker {
    broker_on(None, yaml).await
}

/// Starts a broker from YAML text on `store` (default: a new SQLite file in its temp dir).
pub async fn broker_on(store: Option<&str>, yaml: &str) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("records.db").display());
    let text = format!("store: {}\n{yaml}", store.unwrap_or(&db));
    let mut config = Config::from_yaml_str(&text, "test.yaml", |_| None).unwrap_or_else(|e| panic!("{e}"));
    config.server.bind = "127.0.0.1:0".to_owned();
    let running = app::start(config, false, std::future::pending()).await.unwrap();
    Broker { running, dir, http: reqwest::Client::new() }
}

/// Path of a Python test handler file.
pub fn python_handler(file: &str) -> String {
    format!("{}/../testdata/functions/python/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// A random suffix so tests never share names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// SUCCESS records per event id (of one function, or all), read page by page.
pub async fn successes(store: &RecordStore, function: Option<&str>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut before = None;
    loop {
        let q = RecordQuery {
            function: function.map(str::to_owned),
            status: Some(Status::Success),
            before,
            limit: 1000,
            ..RecordQuery::default()
        };
        let page = store.list(&q).await.unwrap();
        for r in &page {
            *out.entry(r.event_id.clone()).or_insert(0) += 1;
        }
        match page.last() {
            Some(last) if page.len() == 1000 => before = Some(last.id),
            _ => return out,
        }
    }
}

/// Waits until `n` distinct events have a SUCCESS record, or fails after `secs`.
pub async fn wait_successes(
    store: &RecordStore,
    function: Option<&str>,
    n: usize,
    secs: u64,
) -> HashMap<String, usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        // Counting is cheap; read the ids only once the count says they may all be there.
        let have = store.count(Some(Status::Success)).await.unwrap();
        if have >= i64::try_from(n).unwrap() {
            let s = successes(store, function).await;
            if s.len() >= n {
                return s;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "after {secs}s only {have} SUCCESS records for {n} messages");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `switchyard serve` process of the real binary.
pub struct Serve {
    child: tokio::process::Child,
}

impl Serve {
    /// Writes `yaml` to `dir/<name>.yaml` and starts `switchyard serve -c` on it.
    pub fn start(dir: &std::path::Path, name: &str, yaml: &str) -> Self {
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "-c", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(if std::env::var_os("SWITCHYARD_TEST_SERVE_LOGS").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child }
    }

    /// Sends a signal (`-TERM`, `-KILL`).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// Waits (at most 30 s) for the process to exit.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap()
    }
}

/// A config for a `serve` process: the given store (a URL, or a SQLite file path) and source section, a
/// free port, and an `ok` http function at `function_url` behind a match-all trigger.
pub fn process_yaml(store: &str, source: &str, function_url: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = if store.contains("://") { store.to_owned() } else { format!("sqlite://{store}") };
    format!(
        "store: {store}\nserver: {{bind: '127.0.0.1:{port}', shutdown_grace: 10s}}\n{source}functions:\n  - {{name: ok, runtime: http, url: '{function_url}', max_concurrency: 16}}\ntriggers:\n  - {{name: t, function: ok}}\n"
    )
}

/// Invokes a function synchronously: (status, body as JSON or string, record id).
pub async fn invoke(b: &Broker, name: &str, data: serde_json::Value) -> (u16, serde_json::Value, String) {
    let resp = b.http.post(b.url(&format!("/api/v1/functions/invoke/{name}"))).json(&data).send().await.unwrap();
    let status = resp.status().as_u16();
    let record =
        resp.headers().get("x-switchyard-record-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)), record)
}

/// One record by id.
pub async fn record(b: &Broker, id: &str) -> EventRecord {
    b.running.dispatcher.store().get(id.parse().unwrap()).await.unwrap().unwrap()
}

/// A JetStream context on the machine's NATS (127.0.0.1:4222) with a memory stream `stream` that
/// captures `subject.>`. Fails the test when NATS does not answer.
pub async fn jetstream_with_stream(stream: &str, subject: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .unwrap_or_else(|e| panic!("NATS must run on 127.0.0.1:4222 (scripts/test.sh starts it): {e}"));
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![format!("{subject}.>")],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    js
}
