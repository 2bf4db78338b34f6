//! The broker against a local HTTP function server: success, retry then success, permanent
//! failure, timeout, the concurrency limit, 429 when saturated, and one terminal record per
//! invocation.

mod common;

use std::sync::atomic::Ordering;

use common::{broker, function_server, unique};
use switchyard_dispatcher::records::RecordQuery;
use switchyard_schemas::{ErrorKind, Status};

fn by_function(f: &str) -> RecordQuery {
    RecordQuery { function: Some(f.to_owned()), ..RecordQuery::default() }
}

#[tokio::test]
async fn success_is_recorded_with_response_and_trace() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: ok, runtime: http, url: '{}'}}\ntriggers:\n  - name: t\n    function: ok\n    filters: [{{exact: {{type: com.example.ok}}}}]\n",
        fs.url("/ok")
    ))
    .await;
    let id = unique("ev");
    let resp = b.post_event(&id, "com.example.ok", r#"{"n": 1}"#).await;
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"][0], id.as_str());
    let records = b.wait_terminal(by_function("ok"), 1).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!((r.status, r.attempts, r.event_id.as_str()), (Status::Success, 1, id.as_str()));
    assert_eq!(r.response_status, Some(200));
    assert_eq!(r.response.as_ref().unwrap().body, r#"{"n":1}"#);
    assert_eq!(r.trigger, "t");
    assert!(!r.dead_lettered);
    let trace = r.trace_id.clone().unwrap();
    let sent = fs.seen.traceparents.lock().unwrap().clone();
    assert!(sent[0].contains(&trace), "function got traceparent {sent:?}, record has {trace}");
    assert!(r.started_at.is_some() && r.finished_at.is_some());
    b.running.shutdown().await;
}

#[tokio::test]
async fn unmatched_event_is_counted_not_failed() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: ok, runtime: http, url: '{}'}}\ntriggers:\n  - name: t\n    function: ok\n    filters: [{{exact: {{type: wanted}}}}]\n",
        fs.url("/ok")
    ))
    .await;
    assert_eq!(b.post_event(&unique("ev"), "unwanted", "{}").await.status(), 202);
    assert_eq!(b.running.dispatcher.stats().unmatched.load(Ordering::SeqCst), 1);
    assert_eq!(b.running.dispatcher.store().count(None).await.unwrap(), 0);
    b.running.shutdown().await;
}

#[tokio::test]
async fn retryable_failure_is_retried_until_success() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: flaky, runtime: http, url: '{}'}}\ntriggers:\n  - name: t\n    function: flaky\n    delivery: {{retries: 3, backoff: {{initial: 10ms, max: 50ms}}}}\n",
        fs.url("/flaky/2")
    ))
    .await;
    let id = unique("ev");
    b.post_event(&id, "x", "{}").await;
    let r = &b.wait_terminal(by_function("flaky"), 1).await[0];
    assert_eq!((r.status, r.attempts), (Status::Success, 3));
    assert_eq!(fs.calls(&id), 3);
    assert_eq!(r.response.as_ref().unwrap().body, "finally");
    b.running.shutdown().await;
}

#[tokio::test]
async fn exhausted_retries_dead_letter_the_event() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: flaky, runtime: http, url: '{}'}}\ntriggers:\n  - name: t\n    function: flaky\n    delivery: {{retries: 2, backoff: {{initial: 10ms, max: 20ms}}}}\n",
        fs.url("/flaky/100")
    ))
    .await;
    let id = unique("ev");
    b.post_event(&id, "x", "{}").await;
    let r = &b.wait_terminal(by_function("flaky"), 1).await[0];
    assert_eq!((r.status, r.attempts, r.dead_lettered), (Status::Failure, 3, true));
    assert_eq!((r.error_kind, r.response_status), (Some(ErrorKind::Status), Some(503)));
    assert_eq!(fs.calls(&id), 3);
    b.running.shutdown().await;
}

#[tokio::test]
async fn permanent_failure_is_not_retried() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: bad, runtime: http, url: '{}'}}\ntriggers:\n  - name: t\n    function: bad\n    delivery: {{retries: 5}}\n",
        fs.url("/bad")
    ))
    .await;
    let id = unique("ev");
    b.post_event(&id, "x", "{}").await;
    let r = &b.wait_terminal(by_function("bad"), 1).await[0];
    assert_eq!((r.status, r.attempts, r.response_status), (Status::Failure, 1, Some(422)));
    assert_eq!(r.response.as_ref().unwrap().body, "nope");
    assert_eq!(fs.calls(&id), 1);
    b.running.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let b = broker(&format!(
        "functions:\n  - {{name: gone, runtime: http, url: 'http://127.0.0.1:{port}/'}}\ntriggers:\n  - name: t\n    function: gone\n    delivery: {{retries: 1, backoff: {{initial: 10ms, max: 10ms}}}}\n"
    ))
    .await;
    b.post_event(&unique("ev"), "x", "{}").await;
    let r = &b.wait_terminal(by_function("gone"), 1).await[0];
    assert_eq!((r.status, r.attempts, r.error_kind), (Status::Failure, 2, Some(ErrorKind::Connection)));
    b.running.shutdown().await;
}

#[tokio::test]
async fn attempt_timeout_fails_the_attempt() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: slow, runtime: http, url: '{}', timeout: 5s}}\ntriggers:\n  - name: t\n    function: slow\n    delivery: {{retries: 1, attempt_timeout: 200ms, backoff: {{initial: 10ms, max: 10ms}}}}\n",
        fs.url("/slow/3000")
    ))
    .await;
    let id = unique("ev");
    b.post_event(&id, "x", "{}").await;
    let r = &b.wait_terminal(by_function("slow"), 1).await[0];
    assert_eq!((r.status, r.attempts, r.error_kind), (Status::Failure, 2, Some(ErrorKind::Timeout)));
    assert!(r.error_message.as_deref().unwrap().contains("200ms"), "{:?}", r.error_message);
    assert!(r.duration_ms.unwrap() < 3000, "the slow answer was not waited for");
    b.running.shutdown().await;
}

#[tokio::test]
async fn never_more_than_max_concurrency_in_flight() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: busy, runtime: http, url: '{}', max_concurrency: 3, queue_size: 100}}\ntriggers:\n  - name: t\n    function: busy\n",
        fs.url("/busy")
    ))
    .await;
    for i in 0..30 {
        assert_eq!(b.post_event(&format!("busy-{i}"), "x", "{}").await.status(), 202);
    }
    let records = b.wait_terminal(by_function("busy"), 30).await;
    assert!(records.iter().all(|r| r.status == Status::Success));
    let max = fs.seen.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "saw {max} in flight with max_concurrency 3");
    assert_eq!(max, 3, "the limit should also be reached under this load");
    b.running.shutdown().await;
}

#[tokio::test]
async fn saturated_function_answers_429_and_loses_nothing_accepted() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: gated, runtime: http, url: '{}', max_concurrency: 1, queue_size: 1}}\ntriggers:\n  - name: t\n    function: gated\n",
        fs.url("/gate")
    ))
    .await;
    let started = fs.seen.slow_started.notified();
    assert_eq!(b.post_event("g1", "x", "{}").await.status(), 202);
    started.await; // g1 is running
    assert_eq!(b.post_event("g2", "x", "{}").await.status(), 202); // queued
    let resp = b.post_event("g3", "x", "{}").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "saturated");
    // Let the accepted two finish.
    let second = fs.seen.slow_started.notified();
    fs.seen.gate.notify_one();
    second.await;
    fs.seen.gate.notify_one();
    let records = b.wait_terminal(by_function("gated"), 2).await;
    let mut ids: Vec<_> = records.iter().map(|r| r.event_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["g1", "g2"]);
    assert!(records.iter().all(|r| r.status == Status::Success));
    b.running.shutdown().await;
}

#[tokio::test]
async fn fan_out_gives_one_terminal_record_per_invocation() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: a, runtime: http, url: '{ok}'}}\n  - {{name: b, runtime: http, url: '{bad}'}}\ntriggers:\n  - {{name: ta, function: a}}\n  - {{name: tb, function: b, delivery: {{retries: 0}}}}\n  - name: tc\n    function: a\n    filters: [{{prefix: {{type: com.}}}}]\n",
        ok = fs.url("/ok"),
        bad = fs.url("/bad"),
    ))
    .await;
    for i in 0..10 {
        b.post_event(&format!("fan-{i}"), if i % 2 == 0 { "com.even" } else { "odd" }, "{}").await;
    }
    // 10 events x (ta, tb) + 5 even events x tc = 25 invocations.
    let records = b.wait_terminal(RecordQuery::default(), 25).await;
    assert_eq!(records.len(), 25);
    assert!(records.iter().all(|r| r.status.is_terminal()));
    let mut keys: Vec<(String, String)> = records.iter().map(|r| (r.event_id.clone(), r.trigger.clone())).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 25, "exactly one record per (event, trigger)");
    assert_eq!(records.iter().filter(|r| r.trigger == "tb" && r.status == Status::Failure).count(), 10);
    b.running.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_invocations_finish() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: slow, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: slow}}\n",
        fs.url("/slow/500")
    ))
    .await;
    let started = fs.seen.slow_started.notified();
    b.post_event("in-flight", "x", "{}").await;
    started.await;
    let store = b.running.dispatcher.store().clone();
    let db = b.dir.path().join("records.db");
    assert!(b.running.shutdown().await, "drained within the grace period");
    drop(store);
    // Reopen the file: the record is durable and terminal.
    let reopened =
        switchyard_dispatcher::records::RecordStore::open(&format!("sqlite://{}", db.display())).await.unwrap();
    let records = reopened.list(&RecordQuery { limit: 10, ..RecordQuery::default() }).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::Success);
    assert_eq!(records[0].response.as_ref().unwrap().body, "slow done");
}

#[tokio::test]
async fn ack_resolves_only_after_terminal_records_are_durable() {
    use switchyard_connectors::{Delivery, Outcome};
    use switchyard_schemas::CloudEvent;
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: ok, runtime: http, url: '{}'}}\n  - {{name: bad, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t1, function: ok, filters: [{{prefix: {{type: com.}}}}]}}\n  - {{name: t2, function: bad, filters: [{{exact: {{type: com.both}}}}]}}\n",
        fs.url("/ok"),
        fs.url("/bad"),
    ))
    .await;
    let d = &b.running.dispatcher;
    let (delivery, ack) = Delivery::new(CloudEvent::new("a1", "/t", "com.one"));
    d.dispatch(delivery).await.unwrap();
    assert_eq!(ack.outcome().await, Outcome::Completed { invocations: 1, failed: 0 });
    // The record is already committed when the ack resolves.
    let rs = d.store().list(&RecordQuery { limit: 10, ..RecordQuery::default() }).await.unwrap();
    assert_eq!((rs.len(), rs[0].status), (1, Status::Success));

    let (delivery, ack) = Delivery::new(CloudEvent::new("a2", "/t", "com.both"));
    d.dispatch(delivery).await.unwrap();
    assert_eq!(ack.outcome().await, Outcome::Completed { invocations: 2, failed: 1 });
    let rs = d.store().list(&RecordQuery { limit: 10, ..RecordQuery::default() }).await.unwrap();
    assert_eq!(rs.iter().filter(|r| r.event_id == "a2" && r.status.is_terminal()).count(), 2);

    let (delivery, ack) = Delivery::new(CloudEvent::new("a3", "/t", "other"));
    d.dispatch(delivery).await.unwrap();
    assert_eq!(ack.outcome().await, Outcome::Unmatched);
    b.running.shutdown().await;
}

#[tokio::test]
async fn ordered_deliveries_wait_their_turn_and_a_withdrawn_one_leaves_no_record() {
    use std::sync::Arc;
    use switchyard_connectors::{Delivery, OrderKey, Outcome};
    use switchyard_schemas::config::Ordering;
    use switchyard_schemas::CloudEvent;
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: gated, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: gated, ordering: partition}}\n",
        fs.url("/gate")
    ))
    .await;
    let d = &b.running.dispatcher;
    let order = OrderKey { stream: Arc::from("orders/0"), key: None, default: Ordering::Key };
    let send = |id: &str| {
        let withdraw = tokio_util::sync::CancellationToken::new();
        let (delivery, ack) = Delivery::new(CloudEvent::new(id, "/t", "x"));
        (delivery.with_order(order.clone(), withdraw.clone()), ack, withdraw)
    };
    let (first, first_ack, _) = send("o1");
    let (second, second_ack, withdraw) = send("o2");
    let (third, third_ack, _) = send("o3");
    let started = fs.seen.slow_started.notified();
    d.dispatch(first).await.unwrap();
    started.await;
    d.dispatch(second).await.unwrap();
    d.dispatch(third).await.unwrap();
    // o2 and o3 wait behind o1 (one at a time per partition): o2 is withdrawn before its turn.
    withdraw.cancel();
    assert_eq!(second_ack.outcome().await, Outcome::Abandoned, "a withdrawn delivery is redelivered");
    assert_eq!((fs.calls("o2"), fs.calls("o3")), (0, 0), "nothing ran while o1 held the partition");
    // o1 finishes; o3 takes the turn o2 gave up.
    let started = fs.seen.slow_started.notified();
    fs.seen.gate.notify_one();
    assert_eq!(first_ack.outcome().await, Outcome::Completed { invocations: 1, failed: 0 });
    started.await;
    fs.seen.gate.notify_one();
    assert_eq!(third_ack.outcome().await, Outcome::Completed { invocations: 1, failed: 0 });
    let rs = d.store().list(&RecordQuery { limit: 10, ..RecordQuery::default() }).await.unwrap();
    let mut ids: Vec<&str> = rs.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["o1", "o3"], "the withdrawn delivery has no record");
    assert_eq!(fs.calls("o2"), 0);
    b.running.shutdown().await;
}

#[tokio::test]
async fn skipped_and_cancelled_deliveries_are_recorded() {
    use switchyard_connectors::{Delivery, Outcome};
    use switchyard_schemas::CloudEvent;
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: gated, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: gated}}\n",
        fs.url("/gate")
    ))
    .await;
    let d = &b.running.dispatcher;
    let (delivery, ack) = Delivery::skipped(CloudEvent::new("s1", "/t", "x"), "previous tick still running");
    d.dispatch(delivery).await.unwrap();
    assert_eq!(ack.outcome().await, Outcome::Completed { invocations: 1, failed: 0 });
    let rs = d.store().list(&RecordQuery { limit: 10, ..RecordQuery::default() }).await.unwrap();
    assert_eq!(rs[0].status, Status::Skipped);
    assert_eq!(rs[0].error_message.as_deref(), Some("previous tick still running"));
    assert_eq!(fs.calls("s1"), 0, "a skipped event is not invoked");

    let token = tokio_util::sync::CancellationToken::new();
    let (delivery, ack) = Delivery::new(CloudEvent::new("c1", "/t", "x"));
    let started = fs.seen.slow_started.notified();
    d.dispatch(delivery.with_cancel(token.clone())).await.unwrap();
    started.await;
    token.cancel();
    assert_eq!(ack.outcome().await, Outcome::Completed { invocations: 1, failed: 1 });
    let rs = d
        .store()
        .list(&RecordQuery { status: Some(Status::Failure), limit: 10, ..RecordQuery::default() })
        .await
        .unwrap();
    assert_eq!((rs[0].error_kind, rs[0].dead_lettered), (Some(ErrorKind::Cancelled), false));
    b.running.shutdown().await;
}

/// Waits until the store holds a PENDING row for `function` (the invocation is still running).
async fn wait_pending(b: &common::Broker, function: &str) {
    let store = b.running.dispatcher.store();
    let q = RecordQuery { status: Some(Status::Pending), ..by_function(function) };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.list(&q).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no PENDING row for {function}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_pending_row_is_written_only_for_an_invocation_still_running_after_pending_after() {
    let fs = function_server().await;
    let yaml = |after: &str| {
        format!(
            "records: {{pending_after: {after}}}\nfunctions:\n  - {{name: gated, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: gated}}\n",
            fs.url("/gate")
        )
    };
    // Running for less than pending_after (a minute, the longest allowed): no row until the
    // terminal one.
    let b = broker(&yaml("60s")).await;
    let started = fs.seen.slow_started.notified();
    assert_eq!(b.post_event("quick", "x", "{}").await.status(), 202);
    started.await;
    let store = b.running.dispatcher.store();
    assert!(store.list(&by_function("gated")).await.unwrap().is_empty(), "no PENDING row before pending_after");
    fs.seen.gate.notify_one();
    let records = b.wait_terminal(by_function("gated"), 1).await;
    assert_eq!(records[0].status, Status::Success);
    b.running.shutdown().await;
    // Still running after pending_after: the PENDING row shows, then the terminal row replaces it.
    for after in ["20ms", "0s"] {
        let b = broker(&yaml(after)).await;
        let started = fs.seen.slow_started.notified();
        assert_eq!(b.post_event(&format!("long-{after}"), "x", "{}").await.status(), 202);
        started.await;
        wait_pending(&b, "gated").await;
        fs.seen.gate.notify_one();
        let records = b.wait_terminal(by_function("gated"), 1).await;
        assert_eq!((records.len(), records[0].status), (1, Status::Success), "pending_after {after}");
        b.running.shutdown().await;
    }
}
