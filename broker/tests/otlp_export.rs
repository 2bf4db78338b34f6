//! Span export from a real `switchyard serve` process over OTLP/HTTP: an event carrying a
//! `traceparent` is handled, the process is stopped with SIGTERM, and the OTLP endpoint has received,
//! as protobuf that `opentelemetry-proto` decodes, the receive, route, attempt and record-write spans of
//! that trace, under the configured service name. The export thread's schedule is set far out
//! (`OTEL_BSP_SCHEDULE_DELAY`), so the spans can only have been sent by the final flush at shutdown:
//! nothing buffered is lost when the process stops.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use common::function_server;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;

type Received = Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>;

/// A local OTLP/HTTP endpoint that decodes every request it gets (and its content type).
async fn otlp_endpoint() -> (String, Received) {
    let received: Received = Arc::default();
    let r = Arc::clone(&received);
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let r = Arc::clone(&r);
            async move {
                let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let request = ExportTraceServiceRequest::decode(body).expect("the request is OTLP protobuf");
                r.lock().unwrap().push((kind, request));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_process_exports_a_messages_spans_over_otlp_and_flushes_them_at_shutdown() {
    let (endpoint, received) = otlp_endpoint().await;
    let fs = function_server().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "store: sqlite://{}/records.db\nserver: {{bind: '127.0.0.1:{port}'}}\ntelemetry: {{otlp_endpoint: '{endpoint}', service_name: orders-broker}}\nfunctions:\n  - {{name: ok, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: ok}}\n",
        dir.path().display(),
        fs.url("/ok")
    );
    let cfg = dir.path().join("otlp.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    // Only this test's settings: none of the OTEL_* variables of the shell that runs it.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("OTEL_")) {
        command.env_remove(name);
    }
    let mut serve = command
        .args(["serve", "-c", cfg.to_str().unwrap()])
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(tokio::time::Instant::now() < deadline, "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = http
        .post(format!("{base}/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "otlp-1")
        .header("ce-source", "/tests")
        .header("ce-type", "t")
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let record = loop {
        let r: serde_json::Value =
            http.get(format!("{base}/api/v3/events?limit=1")).send().await.unwrap().json().await.unwrap();
        match r["items"].as_array().and_then(|a| a.first()).filter(|r| r["status"] == "SUCCESS") {
            Some(r) => break r.clone(),
            None => {
                assert!(tokio::time::Instant::now() < deadline, "no SUCCESS record: {r}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(record["trace_id"], trace);
    assert!(received.lock().unwrap().is_empty(), "nothing is sent before a batch fills or the schedule comes round");

    let pid = serve.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), serve.wait()).await.unwrap().unwrap();
    assert!(status.success(), "serve stopped cleanly: {status}");
    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "the final flush sent the spans");
    let mut names = Vec::new();
    for (kind, request) in received.iter() {
        assert_eq!(kind, "application/x-protobuf");
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().expect("a resource");
            assert_eq!(text(&resource.attributes, "service.name").as_deref(), Some("orders-broker"));
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("switchyard"));
                for span in &ss.spans {
                    let id: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    if id == trace {
                        names.push(span.name.clone());
                    }
                }
            }
        }
    }
    for expected in ["http receive", "route", "invoke ok", "record write"] {
        assert!(names.iter().any(|n| n == expected), "a {expected:?} span in the trace: {names:?}");
    }
}
