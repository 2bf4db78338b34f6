//! The Python runtime through the broker: the quickstart handler, context, handler errors
//! (retryable and permanent), logs, timeouts and crashes (worker replaced), warm reuse, and env
//! isolation.

mod common;

use common::{broker, invoke, python_handler, record, Broker};
use serde_json::{json, Value};
use switchyard_dispatcher::records::RecordQuery;
use switchyard_schemas::{ErrorKind, Status};

async fn behaviours() -> Broker {
    let file = python_handler("behaviours.py");
    let f = |name: &str, extra: &str| {
        format!("  - {{name: {name}, runtime: python, handler: '{file}', entrypoint: {name}{extra}}}\n")
    };
    let quick = format!("{}/../testdata/quickstart/handler.py", env!("CARGO_MANIFEST_DIR"));
    let yaml = format!(
        "functions:\n  - {{name: hello, runtime: python, handler: '{quick}'}}\n{}{}{}{}{}{}{}triggers:\n  - name: fails\n    function: fail\n    filters: [{{exact: {{type: fail}}}}]\n    delivery: {{retries: 2, backoff: {{initial: 10ms, max: 10ms}}}}\n  - name: perm\n    function: fail_permanent\n    filters: [{{exact: {{type: perm}}}}]\n    delivery: {{retries: 2}}\n",
        f("echo", ""),
        f("fail", ""),
        f("fail_permanent", ""),
        f("slow", ", timeout: 1s"),
        f("crash", ""),
        f("env", ", env: {GREETING: hi}"),
        f("status", ""),
    );
    broker(&yaml).await
}

#[tokio::test]
async fn quickstart_handler_answers() {
    let b = behaviours().await;
    let (status, body, id) = invoke(&b, "hello", json!({"name": "Ada"})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"message": "Hello, Ada!"}));
    let r = record(&b, &id).await;
    assert_eq!((r.status, r.attempts, r.function.as_str()), (Status::Success, 1, "hello"));
    let (_, body, _) = invoke(&b, "hello", json!({})).await;
    assert_eq!(body, json!({"message": "Hello, World!"}));
    b.running.shutdown().await;
}

#[tokio::test]
async fn context_and_logs_reach_the_record() {
    let b = behaviours().await;
    let (status, body, id) = invoke(&b, "echo", json!({"k": [1, 2]})).await;
    assert_eq!(status, 200);
    assert_eq!(body["event"], json!({"k": [1, 2]}));
    assert_eq!(body["type"], "dev.switchyard.invoke");
    assert_eq!(body["function"], "echo");
    assert_eq!(body["has_deadline"], true);
    let r = record(&b, &id).await;
    let logs = r.logs.unwrap();
    assert!(logs.contains("echo got {'k': [1, 2]}"), "{logs}");
    assert!(logs.contains("to stderr"), "{logs}");
    // A second call's logs hold only its own output.
    let (_, _, id2) = invoke(&b, "echo", json!({"second": true})).await;
    let logs2 = record(&b, &id2).await.logs.unwrap();
    assert!(logs2.contains("second") && !logs2.contains("[1, 2]"), "{logs2}");
    b.running.shutdown().await;
}

#[tokio::test]
async fn handler_exception_is_retried_and_recorded_with_traceback() {
    let b = behaviours().await;
    assert_eq!(b.post_event("exc-1", "fail", r#"{"x": 7}"#).await.status(), 202);
    let rs = b.wait_terminal(RecordQuery { function: Some("fail".into()), ..Default::default() }, 1).await;
    let r = &rs[0];
    assert_eq!((r.status, r.attempts, r.error_kind), (Status::Failure, 3, Some(ErrorKind::Handler)));
    let msg = r.error_message.as_deref().unwrap();
    assert!(msg.starts_with("ValueError: bad input: 7"), "{msg}");
    assert!(msg.contains("Traceback") && msg.contains("behaviours.py"), "{msg}");
    assert!(r.dead_lettered);
    b.running.shutdown().await;
}

#[tokio::test]
async fn exception_marked_permanent_is_not_retried() {
    let b = behaviours().await;
    b.post_event("perm-1", "perm", "{}").await;
    let rs = b.wait_terminal(RecordQuery { function: Some("fail_permanent".into()), ..Default::default() }, 1).await;
    assert_eq!((rs[0].status, rs[0].attempts), (Status::Failure, 1));
    assert!(rs[0].error_message.as_deref().unwrap().starts_with("Permanent: will never work"));
    b.running.shutdown().await;
}

#[tokio::test]
async fn status_codes_map_to_success_and_failure() {
    let b = behaviours().await;
    let (status, _, id) = invoke(&b, "status", json!({"code": 201})).await;
    assert_eq!(status, 201);
    assert_eq!(record(&b, &id).await.status, Status::Success);
    let (status, body, id) = invoke(&b, "status", json!({"code": 503})).await;
    assert_eq!((status, body), (503, json!("status 503")));
    let r = record(&b, &id).await;
    assert_eq!((r.status, r.response_status), (Status::Failure, Some(503)));
    b.running.shutdown().await;
}

#[tokio::test]
async fn timed_out_worker_is_killed_and_replaced() {
    let b = behaviours().await;
    let (status, body, id) = invoke(&b, "slow", json!({"seconds": 30})).await;
    assert_eq!(status, 504, "{body}");
    let r = record(&b, &id).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Timeout));
    assert!(r.duration_ms.unwrap() < 5000);
    // The next invocation gets a fresh worker and succeeds.
    let (status, body, _) = invoke(&b, "slow", json!({"seconds": 0})).await;
    assert_eq!((status, body), (200, json!("late")));
    b.running.shutdown().await;
}

#[tokio::test]
async fn crashed_worker_fails_only_its_invocation() {
    let b = behaviours().await;
    let (status, body, id) = invoke(&b, "crash", json!({})).await;
    assert_eq!(status, 502, "{body}");
    let r = record(&b, &id).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Crashed));
    assert!(r.error_message.unwrap().contains("exit status: 3"));
    // Other functions are untouched, and the crashed one starts a new worker next time.
    assert_eq!(invoke(&b, "hello", json!({})).await.0, 200);
    assert_eq!(invoke(&b, "crash", json!({})).await.0, 502);
    b.running.shutdown().await;
}

#[tokio::test]
async fn workers_are_reused_and_see_only_their_declared_env() {
    // Set in the broker's own environment: must not reach the handler.
    std::env::set_var("SWITCHYARD_TEST_SECRET", "broker-secret");
    let b = behaviours().await;
    let (_, first, _) = invoke(&b, "env", json!({})).await;
    let (_, second, _) = invoke(&b, "env", json!({})).await;
    assert_eq!(first["secret"], Value::Null);
    assert_eq!(first["declared"], "hi");
    assert_eq!(first["pid"], second["pid"], "a warm worker is reused, not one process per event");
    b.running.shutdown().await;
}

#[tokio::test]
async fn missing_handler_file_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "store: sqlite://{}/r.db\nserver: {{bind: '127.0.0.1:0'}}\nfunctions:\n  - {{name: nope, runtime: python, handler: /nonexistent/h.py}}\n",
        dir.path().display()
    );
    let config = switchyard_schemas::Config::from_yaml_str(&text, "t.yaml", |_| None).unwrap();
    let err = switchyard_broker::app::start(config, false, std::future::pending()).await.err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("nope") && msg.contains("/nonexistent/h.py"), "{msg}");
    assert!(matches!(err, switchyard_broker::app::StartError::Usage(_)));
}
