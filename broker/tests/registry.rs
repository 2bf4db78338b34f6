//! The shared registry: functions and triggers created through one replica's API reach the others
//! (PostgreSQL LISTEN/NOTIFY), survive restarts (SQLite too), and deletions propagate.

mod common;

use std::time::Duration;

use common::{broker_on, function_server, Broker};
use serde_json::{json, Value};
use switchyard_dispatcher::records::{RecordQuery, TestDatabase};
use switchyard_schemas::Status;

async fn send(b: &Broker, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = b.http.request(method, b.url(path));
    if let Some(body) = body {
        r = r.json(&body);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until `check` holds on `b`, or fails after 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "waited 10s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_reach_every_replica_on_postgres_and_survive_restarts() {
    let Some(db) = TestDatabase::create().await else { return };
    let fs = function_server().await;
    let a = broker_on(Some(&db.url), "").await;
    let b = broker_on(Some(&db.url), "").await;
    let function = json!({"name": "hook", "runtime": "http", "url": fs.url("/ok")});
    let trigger = json!({"name": "orders", "function": "hook", "filters": [{"exact": {"type": "order.created"}}]});
    assert_eq!(send(&a, reqwest::Method::POST, "/api/v1/functions", Some(function)).await.0, 201);
    assert_eq!(send(&a, reqwest::Method::POST, "/api/v1/triggers", Some(trigger.clone())).await.0, 201);
    eventually("replica b to get the trigger", || b.running.dispatcher.trigger("orders").is_some()).await;
    assert!(b.running.dispatcher.function("hook").is_some());
    assert_eq!(send(&b, reqwest::Method::GET, "/api/v1/triggers/orders", None).await.1["filters"], trigger["filters"]);
    // An event posted to b runs through the trigger created on a.
    assert_eq!(b.post_event("o-1", "order.created", "{}").await.status(), 202);
    let r = b.wait_terminal(RecordQuery { function: Some("hook".into()), ..RecordQuery::default() }, 1).await;
    assert_eq!((r[0].status, r[0].trigger.as_str()), (Status::Success, "orders"));

    // A replica started later gets them from the store.
    let c = broker_on(Some(&db.url), "").await;
    assert!(c.running.dispatcher.trigger("orders").is_some() && c.running.dispatcher.function("hook").is_some());

    // A bad trigger is refused with the field, and nothing is stored.
    let bad = json!({"name": "bad", "function": "nope"});
    let (status, body) = send(&a, reqwest::Method::POST, "/api/v1/triggers", Some(bad)).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("trigger.function"), "{body}");

    // Deletions propagate: the trigger, then the function it used.
    assert_eq!(send(&b, reqwest::Method::DELETE, "/api/v1/triggers/orders", None).await.0, 204);
    eventually("replica a to drop the trigger", || a.running.dispatcher.trigger("orders").is_none()).await;
    assert_eq!(send(&a, reqwest::Method::DELETE, "/api/v1/functions/hook", None).await.0, 204);
    eventually("replica c to drop the function", || c.running.dispatcher.function("hook").is_none()).await;
    let d = broker_on(Some(&db.url), "").await;
    assert!(d.running.dispatcher.function("hook").is_none(), "a deletion survives restarts too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_created_through_the_api_survives_a_restart_on_sqlite() {
    let fs = function_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/r.db", dir.path().display());
    let a = broker_on(Some(&store), "").await;
    let function = json!({"name": "kept", "runtime": "http", "url": fs.url("/ok")});
    assert_eq!(send(&a, reqwest::Method::POST, "/api/v1/functions", Some(function)).await.0, 201);
    assert!(a.running.shutdown().await);
    let b = broker_on(Some(&store), "").await;
    assert!(b.running.dispatcher.function("kept").is_some());
}
