//! Several `switchyard serve` replicas on one PostgreSQL store: a NATS JetStream durable consumer
//! shared between them, a cron schedule that fires once per tick across them, and a replica killed
//! with `kill -9` whose work the other takes over. Every event ends with a SUCCESS record.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{function_server, process_yaml, unique, wait_successes, Serve};
use switchyard_dispatcher::records::{RecordQuery, RecordStore, TestDatabase};

async fn records_of(store: &RecordStore, function: &str) -> Vec<switchyard_schemas::EventRecord> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let q = RecordQuery { function: Some(function.into()), before, limit: 1000, ..RecordQuery::default() };
        let page = store.list(&q).await.unwrap();
        let full = page.len() == 1000;
        before = page.last().map(|r| r.id);
        out.extend(page);
        if !full {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_share_a_stream_fire_each_cron_tick_once_and_survive_a_kill() {
    let Some(db) = TestDatabase::create().await else { return };
    let (stream, subject) = (unique("SYR").replace('-', ""), unique("sy.r").replace('-', ""));
    let js = common::jetstream_with_stream(&stream, &subject).await;
    let (fs1, fs2) = (function_server().await, function_server().await);
    let store = RecordStore::open(&db.url).await.unwrap(); // migrated once before the replicas race
    let sources = format!(
        "sources:\n  - type: nats\n    name: js\n    max_in_flight: 32\n    jetstream: {{stream: {stream}, durable: d{stream}, ack_wait: 5s}}\n  - type: cron\n    name: every-second\n    schedule: '* * * * * *'\n"
    );
    let yaml = |url: &str| {
        process_yaml(&db.url, &sources, url).replace(
            "triggers:\n  - {name: t, function: ok}\n",
            "triggers:\n  - {name: t, function: ok, filters: [{prefix: {type: dev.switchyard.nats}}]}\n  - {name: tick, function: ok, filters: [{prefix: {type: dev.switchyard.cron}}]}\n",
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Serve::start(dir.path(), "a", &yaml(&fs1.url("/busy")));
    let b = Serve::start(dir.path(), "b", &yaml(&fs2.url("/busy")));
    let n = 2000;
    for i in 0..n {
        js.publish(format!("{subject}.m"), format!("{{\"i\": {i}}}").into()).await.unwrap().await.unwrap();
    }
    // Kill one replica mid-run: its unacked messages are redelivered to the other after ack_wait.
    let start = store.count(None).await.unwrap();
    wait_successes(&store, None, usize::try_from(start).unwrap() + 300, 60).await;
    a.signal("-KILL");
    a.wait().await;
    // Every message ends with a SUCCESS record (the NATS trigger's records are those with a `t` trigger).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let per_message = loop {
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in records_of(&store, "ok").await {
            if r.trigger == "t" && r.status == switchyard_schemas::Status::Success {
                *per.entry(r.event_id).or_default() += 1;
            }
        }
        if per.len() >= n {
            break per;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} of {n} messages have a SUCCESS record", per.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(per_message.len(), n);
    let duplicates: usize = per_message.values().map(|c| c - 1).sum();
    assert!(duplicates <= 32, "only the killed replica's in-flight window may run twice: {duplicates}");
    let calls1: usize = fs1.seen.calls.lock().unwrap().values().sum();
    let calls2: usize = fs2.seen.calls.lock().unwrap().values().sum();
    assert!(calls1 > 0 && calls2 > 0, "both replicas took work ({calls1} and {calls2})");
    // Each cron tick fired once across the replicas, however many ran at that second.
    let mut ticks: HashMap<String, usize> = HashMap::new();
    for r in records_of(&store, "ok").await.into_iter().filter(|r| r.trigger == "tick") {
        *ticks.entry(r.event_id).or_default() += 1;
    }
    assert!(ticks.len() >= 2, "the schedule fired while the test ran: {ticks:?}");
    assert!(ticks.values().all(|&c| c == 1), "a tick fired twice: {ticks:?}");
    b.signal("-TERM");
    assert!(b.wait().await.success());
    js.delete_stream(&stream).await.unwrap();
}
