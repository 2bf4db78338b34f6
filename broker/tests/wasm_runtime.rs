//! The `wasm` runtime through the broker: functions from YAML and from the API, success (WAT and the
//! Rust function), handler error, timeout, crash, a memory hog stopped by its limit, env isolation,
//! N concurrent invocations on N fresh instances, logs in records, deploy-time validation, and a
//! real `switchyard serve` whose config names a module by a relative path.

mod common;

use std::time::{Duration, Instant};

use common::{broker, invoke, record, Broker, Serve};
use serde_json::{json, Value};
use switchyard_schemas::ErrorKind;

fn module(file: &str) -> String {
    format!("{}/../testdata/functions/wasm/{file}", env!("CARGO_MANIFEST_DIR"))
}

async fn instances(b: &Broker, name: &str) -> u64 {
    let f: Value = b.http.get(b.url(&format!("/api/v1/functions/{name}"))).send().await.unwrap().json().await.unwrap();
    f["instances"].as_u64().unwrap()
}

#[tokio::test]
async fn wasm_functions_from_yaml() {
    std::env::set_var("SWITCHYARD_WASM_BROKER_SECRET", "broker-secret");
    let fns = [
        ("hello", "hello.wat", ""),
        ("rust", "rust/echo.wasm", ""),
        ("fail", "fail.wat", ""),
        ("trap", "trap.wat", ""),
        ("spin", "loop.wat", ", timeout: 300ms"),
        ("hog", "hog.wat", ", memory_mb: 32"),
        ("env", "env.wat", ", env: {GREETING: hi}"),
    ];
    let yaml: String = fns
        .iter()
        .map(|(name, file, extra)| format!("  - {{name: {name}, runtime: wasm, module: '{}'{extra}}}\n", module(file)))
        .collect();
    let b = broker(&format!("functions:\n{yaml}")).await;

    let (status, body, id) = invoke(&b, "hello", json!({"name": "Ada"})).await;
    assert_eq!((status, body), (200, json!({"hello": "world", "runtime": "wat"})));
    let r = record(&b, &id).await;
    assert_eq!(r.logs.as_deref(), Some("hello.wat: handling a request\n"), "stderr is the record's logs");
    assert!(!r.cold_start, "compiled at deploy: no invocation is a cold start");

    let (status, body, id) = invoke(&b, "rust", json!({"order": 7})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runtime"], "rust");
    assert_eq!(body["request"]["event"], json!({"order": 7}));
    assert_eq!(body["request"]["context"]["type"], "dev.switchyard.invoke");
    assert_eq!(body["request"]["context"]["function_name"], "rust");
    assert!(record(&b, &id).await.logs.unwrap().starts_with("rust handler: request of"));

    let (status, body, id) = invoke(&b, "fail", json!({})).await;
    assert_eq!(status, 500, "{body}");
    let r = record(&b, &id).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Handler));
    assert_eq!(r.error_message.as_deref(), Some("ValidationError: no name given"));
    assert!(r.logs.unwrap().contains("the event has no name"));

    let (status, _, id) = invoke(&b, "trap", json!({})).await;
    assert_eq!(status, 502);
    let r = record(&b, &id).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Crashed));
    assert!(r.error_message.unwrap().contains("unreachable"));

    let t = Instant::now();
    let (status, _, id) = invoke(&b, "spin", json!({})).await;
    assert_eq!(status, 504);
    assert_eq!(record(&b, &id).await.error_kind, Some(ErrorKind::Timeout));
    assert!(t.elapsed() < Duration::from_secs(3), "interrupted at its timeout: {:?}", t.elapsed());

    let (status, _, id) = invoke(&b, "hog", json!({})).await;
    assert_eq!(status, 502);
    let r = record(&b, &id).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Crashed));
    assert!(r.error_message.unwrap().starts_with("memory limit of 32 MiB reached"));
    assert_eq!(invoke(&b, "hello", json!({})).await.0, 200, "only the hog's invocation failed");

    let (status, body, _) = invoke(&b, "env", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"env": ["GREETING=hi"], "preopens": 8}), "no broker variable, no directory");
    b.running.shutdown().await;
}

#[tokio::test]
async fn n_concurrent_invocations_run_on_n_fresh_instances() {
    let b = broker(&format!(
        "functions:\n  - {{name: nap, runtime: wasm, module: '{}', max_concurrency: 3}}\n",
        module("sleep.wat")
    ))
    .await;
    assert_eq!(instances(&b, "nap").await, 0, "no instance exists between invocations");
    let t = Instant::now();
    let calls = futures::future::join_all((0..3).map(|_| invoke(&b, "nap", json!({}))));
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if instances(&b, "nap").await == 3 {
                return;
            }
            assert!(Instant::now() < deadline, "never saw 3 instances at once");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (results, ()) = tokio::join!(calls, watch);
    for (status, body, _) in results {
        assert_eq!((status, body), (200, json!({"count": 1})), "each invocation starts from a fresh instance");
    }
    assert!(t.elapsed() < Duration::from_millis(1500), "three 300 ms sleeps overlapped: {:?}", t.elapsed());
    assert_eq!(instances(&b, "nap").await, 0);
    b.running.shutdown().await;
}

#[tokio::test]
async fn wasm_functions_through_the_api_are_validated_at_deploy() {
    let b = broker("").await;
    let good = json!({"name": "w", "runtime": "wasm", "module": module("hello.wat")});
    let resp = b.http.post(b.url("/api/v1/functions")).json(&good).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    assert_eq!(invoke(&b, "w", json!({})).await.0, 200);

    let dir = tempfile::tempdir().unwrap();
    let no_start = dir.path().join("lib.wat");
    std::fs::write(&no_start, "(module (func (export \"main\")))").unwrap();
    // A module that does not deploy: 422, and the function stays in state Error with the reason.
    for (bad, expect) in [
        (json!({"name": "x", "runtime": "wasm", "module": no_start}), "exports no `_start`"),
        (json!({"name": "x", "runtime": "wasm", "module": module("nope.wasm")}), "cannot read module"),
    ] {
        let resp = b.http.post(b.url("/api/v1/functions")).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 422, "{bad}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(expect), "{bad}: {text}");
        let f: serde_json::Value = b.http.get(b.url("/api/v1/functions/x")).send().await.unwrap().json().await.unwrap();
        assert_eq!(f["state"], "Error", "{f}");
        assert!(f["error"].as_str().unwrap().contains(expect), "{f}");
        assert_eq!(b.http.delete(b.url("/api/v1/functions/x")).send().await.unwrap().status(), 204);
    }
    // An invalid configuration: 400 naming the field, and nothing is deployed.
    for (bad, expect) in [
        (json!({"name": "x", "runtime": "wasm"}), "module"),
        (json!({"name": "x", "runtime": "wasm", "module": module("hog.wat"), "memory_mb": 8192}), "memory_mb"),
    ] {
        let resp = b.http.post(b.url("/api/v1/functions")).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(expect), "{bad}: {text}");
        assert_eq!(b.http.get(b.url("/api/v1/functions/x")).send().await.unwrap().status(), 404);
    }
    b.running.shutdown().await;
}

#[tokio::test]
async fn serve_loads_a_module_relative_to_its_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fns")).unwrap();
    std::fs::copy(module("hello.wat"), dir.path().join("fns/hello.wat")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "store: sqlite://{}/r.db\nserver: {{bind: '127.0.0.1:{port}'}}\nfunctions:\n  - {{name: hello, runtime: wasm, module: fns/hello.wat}}\n",
        dir.path().display()
    );
    let serve = Serve::start(dir.path(), "switchyard", &yaml);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/functions/invoke/hello");
    let deadline = Instant::now() + Duration::from_secs(30);
    let resp = loop {
        match http.post(&url).json(&json!({})).send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "serve did not come up: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"hello": "world", "runtime": "wat"}));
    serve.signal("-TERM");
    assert!(serve.wait().await.success());
}
