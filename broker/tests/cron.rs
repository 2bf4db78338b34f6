//! The cron source end to end: an every-second schedule fires N times in about N seconds with one
//! SUCCESS record per tick; `forbid` records SKIPPED ticks and `replace` cancels the running
//! invocation; the cron API (list, next, pause, resume, fire); and two `switchyard serve`
//! processes sharing one SQLite store fire each tick exactly once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{broker, function_server, unique, Broker};
use serde_json::Value;
use switchyard_dispatcher::records::{RecordQuery, RecordStore};
use switchyard_schemas::{ErrorKind, EventRecord, Status};

const TICK: &str = "dev.switchyard.cron.tick";

fn cron_yaml(fn_url: &str, source: &str, extra: &str) -> String {
    format!(
        "functions:\n  - {{name: f, runtime: http, url: '{fn_url}'}}\n\
         triggers:\n  - name: t\n    function: f\n    filters:\n      - exact: {{type: {TICK}}}\n\
         sources:\n  - type: cron\n    name: {source}\n    schedule: '* * * * * *'\n{extra}"
    )
}

fn q(status: Option<Status>) -> RecordQuery {
    RecordQuery { event_type: Some(TICK.to_owned()), status, limit: 1000, ..RecordQuery::default() }
}

async fn records(b: &Broker, status: Option<Status>) -> Vec<EventRecord> {
    b.running.dispatcher.store().list(&q(status)).await.unwrap()
}

/// Polls until `pred` holds on the tick records, or fails after `secs`.
async fn wait_for(b: &Broker, secs: u64, what: &str, pred: impl Fn(&[EventRecord]) -> bool) -> Vec<EventRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let rs = records(b, None).await;
        if pred(&rs) {
            return rs;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited {secs}s for {what}; records: {:?}", summary(&rs));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(rs: &[EventRecord]) -> Vec<String> {
    rs.iter().map(|r| format!("{} {}", r.event_id, r.status.as_str())).collect()
}

fn scheduled(id: &str) -> DateTime<Utc> {
    let at = id.split_once(':').map(|(_, t)| t).unwrap();
    at.parse().unwrap_or_else(|e| panic!("{id}: {e}"))
}

#[tokio::test]
async fn every_second_schedule_fires_n_times_in_n_seconds_with_one_success_each() {
    const N: i64 = 5;
    let fs = function_server().await;
    let name = unique("every-second");
    let before = Utc::now();
    let b = broker(&cron_yaml(&fs.url("/ok"), &name, "")).await;
    tokio::time::sleep(Duration::from_millis(N as u64 * 1000 + 200)).await;
    b.running.shutdown().await;
    let after = Utc::now();

    let store = RecordStore::open(&format!("sqlite://{}", b.dir.path().join("records.db").display())).await.unwrap();
    let rs = store.list(&q(None)).await.unwrap();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    let mut ticks = Vec::new();
    for r in &rs {
        *per_id.entry(r.event_id.as_str()).or_default() += 1;
        assert_eq!(r.status, Status::Success, "{}", r.event_id);
        assert_eq!(r.event_source, format!("/switchyard/sources/{name}"));
        let at = scheduled(&r.event_id);
        assert_eq!(at.timestamp_subsec_nanos(), 0, "ticks are whole seconds");
        assert!(before < at && at <= after, "{} outside the run", r.event_id);
        // Received (dispatched) shortly after the scheduled instant, never before it.
        let late = r.received_at - at;
        assert!(late >= chrono::TimeDelta::zero() && late < chrono::TimeDelta::seconds(1), "{}: {late}", r.event_id);
        assert_eq!(fs.calls(&r.event_id), 1);
        ticks.push(at.timestamp());
    }
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    ticks.sort_unstable();
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 1), "a tick is missing: {:?}", summary(&rs));
    assert!((N..=N + 2).contains(&(ticks.len() as i64)), "{} ticks in about {N} s: {:?}", ticks.len(), summary(&rs));
}

#[tokio::test]
async fn forbid_records_skipped_ticks_while_the_previous_runs() {
    let fs = function_server().await;
    let b = broker(&cron_yaml(&fs.url("/slow/2500"), &unique("forbid"), "    concurrency_policy: forbid\n")).await;
    let rs = wait_for(&b, 15, "a SKIPPED tick and a later SUCCESS", |rs| {
        let skipped = rs.iter().filter(|r| r.status == Status::Skipped).count();
        let ok = rs.iter().filter(|r| r.status == Status::Success).count();
        skipped >= 2 && ok >= 2
    })
    .await;
    for r in rs.iter().filter(|r| r.status == Status::Skipped) {
        assert_eq!(r.error_message.as_deref(), Some("previous invocation still running"));
        assert_eq!(fs.calls(&r.event_id), 0, "a skipped tick is not invoked");
    }
    b.running.shutdown().await;
}

#[tokio::test]
async fn replace_cancels_the_running_invocation() {
    let fs = function_server().await;
    let b = broker(&cron_yaml(&fs.url("/slow/5000"), &unique("replace"), "    concurrency_policy: replace\n")).await;
    let rs = wait_for(&b, 15, "a cancelled tick", |rs| {
        rs.iter().filter(|r| r.status == Status::Failure && r.error_kind == Some(ErrorKind::Cancelled)).count() >= 2
    })
    .await;
    assert!(rs.iter().all(|r| r.status != Status::Skipped));
    b.running.shutdown().await;
}

#[tokio::test]
async fn cron_api_lists_pauses_resumes_and_fires() {
    let fs = function_server().await;
    let name = unique("ops");
    let yaml = format!(
        "{}  - type: cron\n    name: nightly\n    schedule: '30 2 * * *'\n    timezone: America/New_York\n",
        cron_yaml(&fs.url("/ok"), &name, "")
    );
    let b = broker(&yaml).await;
    let get = |path: String| {
        let http = b.http.clone();
        let url = b.url(&path);
        async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let post = |path: String| {
        let http = b.http.clone();
        let url = b.url(&path);
        async move {
            let r = http.post(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let list = get("/api/v1/cron".into()).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let nightly = items.iter().find(|i| i["name"] == "nightly").unwrap();
    assert_eq!(nightly["timezone"], "America/New_York");
    assert_eq!(nightly["next"].as_array().unwrap().len(), 1);

    let next = get("/api/v1/cron/nightly/next?n=5".into()).await;
    let times: Vec<DateTime<Utc>> =
        next["next"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(times.len(), 5);
    assert!(times.windows(2).all(|w| w[1] - w[0] >= chrono::TimeDelta::hours(23)), "{next}");
    assert_eq!(get("/api/v1/cron/nope/next".into()).await["error"]["code"], "not_found");

    // Pause: no tick records while paused.
    wait_for(&b, 10, "a first tick", |rs| !rs.is_empty()).await;
    let (status, body) = post(format!("/api/v1/cron/{name}/pause")).await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(true)), "{body}");
    tokio::time::sleep(Duration::from_millis(1000)).await; // let a tick claimed ahead land
    let before = records(&b, None).await.len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(records(&b, None).await.len(), before, "ticks fired while paused");
    assert_eq!(get(format!("/api/v1/cron/{name}")).await["paused"], true);

    // Fire now while paused: one record with a manual id.
    let (status, fired) = post(format!("/api/v1/cron/{name}/fire")).await;
    assert_eq!(status, 202, "{fired}");
    let id = fired["id"].as_str().unwrap().to_owned();
    assert!(id.contains(":manual-"), "{id}");
    let rs =
        wait_for(&b, 10, "the fired tick", |rs| rs.iter().any(|r| r.event_id == id && r.status.is_terminal())).await;
    assert_eq!(rs.iter().filter(|r| r.event_id == id).count(), 1);

    // Resume: ticks again.
    let (status, body) = post(format!("/api/v1/cron/{name}/resume")).await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(false)), "{body}");
    let n = records(&b, None).await.len();
    wait_for(&b, 10, "a tick after resume", |rs| rs.len() > n).await;
    b.running.shutdown().await;
}

// Multi-threaded: the function server must keep answering while the test waits for the processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_sharing_a_store_fire_each_tick_once() {
    let fs = function_server().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let store_url = format!("sqlite://{}", db.display());
    let name = unique("replicated");
    let config = dir.path().join("switchyard.yaml");
    let yaml = format!("store: {store_url}\nserver:\n  bind: 127.0.0.1:0\n{}", cron_yaml(&fs.url("/ok"), &name, ""));
    std::fs::write(&config, yaml).unwrap();
    // Create and migrate the store once, so the two processes do not race on the migrations.
    drop(RecordStore::open(&store_url).await.unwrap());

    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "-c"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = spawn();
    let mut b = spawn();
    let started = Utc::now();
    tokio::time::sleep(Duration::from_millis(5500)).await;
    for child in [&mut a, &mut b] {
        let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
    for mut child in [a, b] {
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
        assert!(status.success(), "serve exited with {status}");
    }

    let store = RecordStore::open(&store_url).await.unwrap();
    let rs = store.list(&q(None)).await.unwrap();
    let mut per_id: HashMap<&str, Vec<Status>> = HashMap::new();
    for r in &rs {
        per_id.entry(r.event_id.as_str()).or_default().push(r.status);
        assert!(r.status == Status::Success, "{}: {:?} {:?} {:?}", r.event_id, r.status, r.error_kind, r.error_message);
    }
    assert!(per_id.len() >= 4, "expected about 5 ticks since {started}: {per_id:?}");
    for (id, statuses) in &per_id {
        assert_eq!(statuses, &[Status::Success], "{id}: one SUCCESS record per tick");
        assert_eq!(fs.calls(id), 1, "{id} invoked more than once");
    }
}
