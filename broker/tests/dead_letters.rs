//! Dead letters, inspection and replay, idempotency, and the PostgreSQL store end to end: failed
//! events reach the trigger's sink (HTTP, NATS, AMQP) with why they failed; `switchyard dlq list` and
//! `switchyard replay` find and re-run them, each replay linked to its original.

mod common;

use std::time::Duration;

use common::{broker, broker_on, function_server, unique, Broker};
use futures::StreamExt;
use serde_json::Value;
use switchyard_dispatcher::records::{RecordQuery, TestDatabase};
use switchyard_schemas::{EventRecord, Status};

fn yaml(function_url: &str, trigger_extra: &str) -> String {
    format!(
        "functions:\n  - {{name: f, runtime: http, url: '{function_url}'}}\ntriggers:\n  - name: t\n    function: f\n    delivery: {{retries: 1, backoff: {{initial: 1ms, max: 2ms}}}}\n{trigger_extra}"
    )
}

async fn one_terminal(b: &Broker) -> EventRecord {
    b.wait_terminal(RecordQuery { function: Some("f".into()), ..RecordQuery::default() }, 1).await.remove(0)
}

async fn cli(b: &Broker, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_URL", b.url(""))
        .output()
        .await
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_reach_the_http_sink_with_why_they_failed() {
    let fs = function_server().await;
    let sink = format!("    dead_letter: {{type: http, url: '{}'}}\n", fs.url("/sink"));
    let b = broker(&yaml(&fs.url("/until-healed"), &sink)).await;
    let hit = fs.seen.sink_hit.notified();
    assert_eq!(b.post_event("dl-1", "order.created", r#"{"n": 1}"#).await.status(), 202);
    hit.await;
    let r = one_terminal(&b).await;
    assert_eq!((r.status, r.dead_lettered, r.attempts), (Status::Failure, true, 2));
    let sunk = fs.seen.sunk.lock().unwrap().clone();
    assert_eq!(sunk.len(), 1);
    let e = &sunk[0];
    assert_eq!(e["id"], "dl-1");
    assert_eq!(e["type"], "order.created");
    assert_eq!(e["data"], serde_json::json!({"n": 1}));
    assert_eq!(e["dlerrorkind"], "status");
    assert!(e["dlerror"].as_str().unwrap().contains("503"), "{e}");
    assert_eq!(e["dlattempts"], 2);
    assert_eq!(e["dltrigger"], "t");
    assert_eq!(e["dlfunction"], "f");
    assert_eq!(e["dlrecordid"], r.id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_be_reached_is_noted_in_the_record_and_nothing_is_lost() {
    let fs = function_server().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let sink = format!("    dead_letter: {{type: http, url: 'http://{closed}/dlq'}}\n");
    let b = broker(&yaml(&fs.url("/bad"), &sink)).await;
    assert_eq!(b.post_event("dl-2", "t", "{}").await.status(), 202);
    let r = one_terminal(&b).await;
    assert!(r.dead_lettered);
    let msg = r.error_message.clone().unwrap();
    assert!(msg.contains("dead-letter sink http") && msg.contains(&closed.to_string()), "{msg}");
    assert!(r.replayable_event().is_some(), "the event stays replayable from the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_published_to_nats_and_amqp() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    let fs = function_server().await;
    let subject = unique("dlq");
    let queue = unique("dlq");
    let nats = async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS runs on 127.0.0.1:4222");
    let mut sub = nats.subscribe(subject.clone()).await.unwrap();
    let amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ runs on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions { auto_delete: false, ..Default::default() };
    ch.queue_declare(queue.as_str().into(), opts, lapin::types::FieldTable::default()).await.unwrap();
    let yaml = format!(
        "functions:\n  - {{name: f, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: tn, function: f, delivery: {{retries: 0}}, filters: [{{exact: {{type: to.nats}}}}], dead_letter: {{type: nats, subject: {subject}}}}}\n  - {{name: ta, function: f, delivery: {{retries: 0}}, filters: [{{exact: {{type: to.amqp}}}}], dead_letter: {{type: amqp, exchange: '', routing_key: {queue}}}}}\n",
        fs.url("/bad")
    );
    let b = broker(&yaml).await;
    assert_eq!(b.post_event("n-1", "to.nats", "{}").await.status(), 202);
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap();
    let e: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        (e["id"].as_str(), e["dltrigger"].as_str(), e["dlerrorkind"].as_str()),
        (Some("n-1"), Some("tn"), Some("status"))
    );
    assert_eq!(b.post_event("a-1", "to.amqp", "{}").await.status(), 202);
    b.wait_terminal(RecordQuery { event_type: Some("to.amqp".into()), ..RecordQuery::default() }, 1).await;
    // The terminal record is written after the publish was confirmed.
    let got =
        ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("a dead letter");
    let e: Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!((e["id"].as_str(), e["dltrigger"].as_str()), (Some("a-1"), Some("ta")));
    let _ = ch.queue_delete(queue.as_str().into(), Default::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_and_replay_rerun_failed_events_linked_to_their_originals() {
    let fs = function_server().await;
    // Capture cut at 64 bytes: the big event is kept whole for replay anyway.
    let b = broker(&format!("records: {{capture_bytes: 64}}\n{}", yaml(&fs.url("/until-healed"), ""))).await;
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(500));
    assert_eq!(b.post_event("r-1", "order.created", &big).await.status(), 202);
    assert_eq!(b.post_event("r-2", "order.created", "{}").await.status(), 202);
    let failed = b.wait_terminal(RecordQuery { function: Some("f".into()), ..RecordQuery::default() }, 2).await;
    assert!(failed.iter().all(|r| r.dead_lettered && r.status == Status::Failure));

    let (ok, out, err) = cli(&b, &["dlq", "list", "--function", "f", "--since", "1h"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&failed[0].id.to_string()) && out.contains(&failed[1].id.to_string()), "{out}");

    // A dry run lists them and invokes nothing.
    let calls_before = fs.calls("r-1") + fs.calls("r-2");
    let (ok, out, err) = cli(&b, &["replay", "--dead-lettered", "--function", "f", "--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("r-1") && out.contains("r-2") && err.contains("2 selected"), "{out}{err}");
    assert_eq!(fs.calls("r-1") + fs.calls("r-2"), calls_before);

    // Fixed function: replay every dead letter of f.
    fs.seen.healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, out, err) = cli(&b, &["replay", "--dead-lettered", "--function", "f", "--rate", "100", "--json"]).await;
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let replayed = v["replayed"].as_array().unwrap();
    assert_eq!(replayed.len(), 2, "{v}");
    for item in replayed {
        assert_eq!(item["status"], "SUCCESS");
        let new = common::record(&b, item["record"].as_str().unwrap()).await;
        let original: uuid::Uuid = item["original"].as_str().unwrap().parse().unwrap();
        assert_eq!(new.replay_of, Some(original));
        assert_eq!(new.trigger, "t");
        let old = common::record(&b, &original.to_string()).await;
        assert_eq!(new.event_id, old.event_id);
    }
    // The big one arrived whole: the function saw the same event id, and the records say it was cut.
    let big_record = failed.iter().find(|r| r.event_id == "r-1").unwrap();
    assert!(big_record.request.truncated && big_record.event.is_some());

    // Replay by id works for any record, a SUCCESS too; an unknown id is reported.
    let success = replayed[0]["record"].as_str().unwrap().to_owned();
    let unknown = uuid::Uuid::now_v7().to_string();
    let (ok, _, err) = cli(&b, &["replay", "--id", &success, "--id", &unknown]).await;
    assert!(!ok && err.contains(&format!("no record {unknown}")), "{err}");
    let again = b.wait_terminal(RecordQuery { status: Some(Status::Success), ..RecordQuery::default() }, 3).await;
    assert!(again.iter().any(|r| r.replay_of.map(|u| u.to_string()) == Some(success.clone())));

    // Selecting everything by accident is refused, naming what to give.
    let (ok, _, err) = cli(&b, &["replay"]).await;
    assert!(!ok && err.contains("select records with ids"), "{err}");
    let (ok, _, err) = cli(&b, &["replay", "--error", "nonsense", "--dry-run"]).await;
    assert!(!ok && err.contains("unknown error kind"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_replay_bytes_is_recorded_but_refused_for_replay_with_the_reason() {
    let fs = function_server().await;
    let b = broker(&format!("records: {{capture_bytes: 64, replay_bytes: 128}}\n{}", yaml(&fs.url("/bad"), ""))).await;
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(500));
    assert_eq!(b.post_event("huge", "t", &big).await.status(), 202);
    let r = one_terminal(&b).await;
    assert!(r.event.is_none() && r.request.truncated);
    let (ok, _, err) = cli(&b, &["replay", "--id", &r.id.to_string()]).await;
    assert!(!ok && err.contains("replay_bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_trigger_skips_an_event_that_already_succeeded() {
    let fs = function_server().await;
    let b = broker(&yaml(&fs.url("/ok"), "    idempotency_window: 1h\n")).await;
    assert_eq!(b.post_event("same", "t", "{}").await.status(), 202);
    b.wait_terminal(RecordQuery { status: Some(Status::Success), ..RecordQuery::default() }, 1).await;
    assert_eq!(b.post_event("same", "t", "{}").await.status(), 202);
    let skipped = b.wait_terminal(RecordQuery { status: Some(Status::Skipped), ..RecordQuery::default() }, 1).await;
    assert!(skipped[0].error_message.as_deref().unwrap().contains("duplicate"), "{:?}", skipped[0].error_message);
    assert_eq!(fs.calls("same"), 1, "the function ran once");
    // A different id runs.
    assert_eq!(b.post_event("other", "t", "{}").await.status(), 202);
    b.wait_terminal(RecordQuery { status: Some(Status::Success), ..RecordQuery::default() }, 2).await;
    assert_eq!(fs.calls("other"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_runs_on_postgres_with_the_same_records() {
    let Some(db) = TestDatabase::create().await else { return };
    let fs = function_server().await;
    let b = broker_on(Some(&db.url), &yaml(&fs.url("/flaky/1"), "")).await;
    assert_eq!(b.post_event("pg-1", "t", r#"{"a": 1}"#).await.status(), 202);
    let r = one_terminal(&b).await;
    assert_eq!((r.status, r.attempts, r.event_id.as_str()), (Status::Success, 2, "pg-1"));
    let (ok, out, err) = cli(&b, &["events", "get", &r.id.to_string()]).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "SUCCESS");
    assert_eq!(b.running.dispatcher.store().kind(), "postgres");
    // Replay through PostgreSQL too.
    let (ok, _, err) = cli(&b, &["replay", "--id", &r.id.to_string()]).await;
    assert!(ok, "{err}");
    let all = b.wait_terminal(RecordQuery { status: Some(Status::Success), ..RecordQuery::default() }, 2).await;
    assert!(all.iter().any(|x| x.replay_of == Some(r.id)));
}
