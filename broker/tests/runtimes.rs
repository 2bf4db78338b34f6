//! Process runtimes beyond the basics: Node.js (ES module and CommonJS), a custom `process` runtime
//! (a Perl worker), memory limits, scale to zero after `idle_timeout`, `min_instances`, one
//! invocation per instance, cold starts in records, and deploy-time validation.

mod common;

use std::time::Duration;

use common::{broker, invoke, python_handler, record, Broker};
use serde_json::{json, Value};
use switchyard_schemas::ErrorKind;

fn testdata(path: &str) -> String {
    format!("{}/../testdata/functions/{path}", env!("CARGO_MANIFEST_DIR"))
}

async fn instances(b: &Broker, name: &str) -> u64 {
    let f: Value = b.http.get(b.url(&format!("/api/v1/functions/{name}"))).send().await.unwrap().json().await.unwrap();
    f["instances"].as_u64().unwrap()
}

#[tokio::test]
async fn node_esm_and_commonjs_handlers() {
    std::env::set_var("SWITCHYARD_TEST_SECRET", "broker-secret");
    let esm = testdata("node/esm.mjs");
    let cjs = testdata("node/commonjs.cjs");
    let b = broker(&format!(
        "functions:\n  - {{name: esm, runtime: node, handler: '{esm}'}}\n  - {{name: cjs, runtime: node, handler: '{cjs}'}}\n  - {{name: fail, runtime: node, handler: '{esm}', entrypoint: fail}}\n  - {{name: slow, runtime: node, handler: '{esm}', entrypoint: slow, timeout: 1s}}\n  - {{name: env, runtime: node, handler: '{esm}', entrypoint: env, env: {{GREETING: hi}}}}\n  - {{name: crash, runtime: node, handler: '{esm}', entrypoint: crash}}\n"
    ))
    .await;
    let (status, body, id) = invoke(&b, "esm", json!({"name": "Ada"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"hello": "Ada", "type": "dev.switchyard.invoke", "fn": "esm"}));
    let logs = record(&b, &id).await.logs.unwrap();
    assert!(logs.contains(r#"esm got {"name":"Ada"}"#), "console.log is captured: {logs}");
    let (status, body, _) = invoke(&b, "cjs", json!({"k": 1})).await;
    assert_eq!((status, body), (201, json!({"cjs": true, "got": {"k": 1}})));
    let (status, _, id) = invoke(&b, "fail", json!({"x": 3})).await;
    assert_eq!(status, 500);
    let r = record(&b, &id).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Handler));
    assert!(r.error_message.unwrap().starts_with("Error: node says no: 3"));
    let (status, _, _) = invoke(&b, "slow", json!({"seconds": 30})).await;
    assert_eq!(status, 504);
    assert_eq!(
        invoke(&b, "slow", json!({"seconds": 0})).await.1,
        json!("late"),
        "a new instance replaced the killed one"
    );
    let (_, env, _) = invoke(&b, "env", json!({})).await;
    assert_eq!((env["secret"].clone(), env["declared"].clone()), (Value::Null, json!("hi")));
    let (status, _, id) = invoke(&b, "crash", json!({})).await;
    assert_eq!(status, 502);
    assert_eq!(record(&b, &id).await.error_kind, Some(ErrorKind::Crashed));
    assert_eq!(invoke(&b, "esm", json!({})).await.0, 200, "other functions are untouched");
    b.running.shutdown().await;
}

/// The `typescript` package scripts/test.sh installs (this machine's Node.js cannot strip types).
fn typescript_package() -> Option<String> {
    match std::env::var("SWITCHYARD_TEST_TYPESCRIPT") {
        Ok(p) if std::path::Path::new(&p).join("package.json").is_file() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and SWITCHYARD_TEST_TYPESCRIPT does not name the typescript package (scripts/test.sh installs it)")
        }
        _ => {
            eprintln!("skipped: set SWITCHYARD_TEST_TYPESCRIPT to a typescript package folder (scripts/test.sh does)");
            None
        }
    }
}

#[tokio::test]
async fn typescript_handlers_run_through_the_typescript_package() {
    let Some(ts) = typescript_package() else { return };
    let typed = testdata("node/ts/typed.ts");
    let b = broker(&format!(
        "functions:\n  - {{name: typed, runtime: node, handler: '{typed}', typescript: '{ts}'}}\n  - {{name: tfail, runtime: node, handler: '{typed}', entrypoint: fail, typescript: '{ts}'}}\n"
    ))
    .await;
    let (status, body, id) = invoke(&b, "typed", json!({"name": "Ada"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"hello": "Hello, Ada!", "to": "Ada", "fn": "typed"}), "imports another .ts module");
    assert!(record(&b, &id).await.logs.unwrap().contains("typed handler greets Ada"));
    let (status, _, id) = invoke(&b, "tfail", json!({})).await;
    assert_eq!(status, 500);
    let r = record(&b, &id).await;
    assert!(r.error_message.unwrap().starts_with("Error: typed failure"));
    // A syntax error fails the deployment with the file and position.
    let bad =
        json!({"name": "tbad", "runtime": "node", "handler": testdata("node/ts/syntax_error.ts"), "typescript": ts});
    let resp = b.http.post(b.url("/api/v1/functions")).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let text = resp.text().await.unwrap();
    assert!(text.contains("syntax_error.ts:2:"), "{text}");
    // No typescript package and a Node.js that cannot strip types: a clear deployment error.
    let none = json!({"name": "tnone", "runtime": "node", "handler": typed, "typescript": "/nonexistent/typescript"});
    let resp = b.http.post(b.url("/api/v1/functions")).json(&none).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("is not a package folder"));
    b.running.shutdown().await;
}

#[tokio::test]
async fn custom_process_runtime_speaks_the_protocol() {
    std::env::set_var("SWITCHYARD_TEST_SECRET", "broker-secret");
    let perl = testdata("process/echo.pl");
    let b = broker(&format!(
        "functions:\n  - {{name: perl, runtime: process, command: ['perl', '{perl}'], timeout: 1s, memory_mb: 64, env: {{GREETING: hi}}}}\n"
    ))
    .await;
    let (status, body, id) = invoke(&b, "perl", json!({"a": [1, 2]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"echo": {"a": [1, 2]}, "runtime": "perl"}));
    let r = record(&b, &id).await;
    assert!(r.logs.unwrap().contains("perl worker handling"));
    // Handler error: the worker's error object, permanent as it says.
    let (status, _, id) = invoke(&b, "perl", json!({"do": "fail"})).await;
    assert_eq!(status, 500);
    let r = record(&b, &id).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Handler));
    assert!(r.error_message.unwrap().starts_with("PerlError: perl says no"));
    // Crash: only this invocation fails; the next one gets a new worker.
    let (status, _, id) = invoke(&b, "perl", json!({"do": "crash"})).await;
    assert_eq!(status, 502);
    assert_eq!(record(&b, &id).await.error_kind, Some(ErrorKind::Crashed));
    // Timeout: the worker is killed and replaced.
    let (status, _, id) = invoke(&b, "perl", json!({"do": "sleep"})).await;
    assert_eq!(status, 504);
    assert_eq!(record(&b, &id).await.error_kind, Some(ErrorKind::Timeout));
    // Memory hog: RLIMIT_AS stops it (perl dies "Out of memory"), only its own invocation fails.
    let (status, _, id) = invoke(&b, "perl", json!({"do": "hog"})).await;
    assert_eq!(status, 502);
    assert_eq!(record(&b, &id).await.error_kind, Some(ErrorKind::Crashed));
    // Environment: only what the function declares.
    let (status, env, _) = invoke(&b, "perl", json!({"do": "env"})).await;
    assert_eq!(status, 200);
    assert_eq!((env["secret"].clone(), env["declared"].clone()), (Value::Null, json!("hi")));
    b.running.shutdown().await;
}

#[tokio::test]
async fn memory_hogs_are_stopped_by_their_limit() {
    let py = python_handler("behaviours.py");
    let esm = testdata("node/esm.mjs");
    let b = broker(&format!(
        "functions:\n  - {{name: pyhog, runtime: python, handler: '{py}', entrypoint: hog, memory_mb: 128, timeout: 20s}}\n  - {{name: nodehog, runtime: node, handler: '{esm}', entrypoint: hog, memory_mb: 64, timeout: 60s}}\n  - {{name: hello, runtime: python, handler: '{py}', entrypoint: echo}}\n"
    ))
    .await;
    let (status, _, id) = invoke(&b, "pyhog", json!({})).await;
    assert_eq!(status, 500);
    let r = record(&b, &id).await;
    assert!(r.error_message.unwrap().starts_with("MemoryError"), "RLIMIT_AS stops the Python hog");
    let (status, _, id) = invoke(&b, "nodehog", json!({})).await;
    assert_eq!(status, 502);
    assert_eq!(record(&b, &id).await.error_kind, Some(ErrorKind::Crashed), "V8's heap limit stops the node hog");
    assert_eq!(invoke(&b, "hello", json!({})).await.0, 200, "other functions are untouched");
    b.running.shutdown().await;
}

#[tokio::test]
async fn scale_to_zero_cold_starts_and_min_instances() {
    let py = python_handler("behaviours.py");
    let b = broker(&format!(
        "functions:\n  - {{name: zero, runtime: python, handler: '{py}', entrypoint: echo, idle_timeout: 300ms}}\n  - {{name: warm, runtime: python, handler: '{py}', entrypoint: echo, min_instances: 2, idle_timeout: 300ms}}\n"
    ))
    .await;
    assert_eq!(instances(&b, "warm").await, 2, "min_instances are started at deploy");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while instances(&b, "zero").await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the deploy-time instance was never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, cold) = invoke(&b, "zero", json!({})).await;
    let (_, _, warm) = invoke(&b, "zero", json!({})).await;
    let (cold, warm) = (record(&b, &cold).await, record(&b, &warm).await);
    assert!(cold.cold_start && cold.init_ms.is_some(), "{cold:?}");
    assert!(!warm.cold_start && warm.init_ms.is_none());
    while instances(&b, "zero").await != 0 {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(10), "did not scale to zero");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(instances(&b, "warm").await, 2, "min_instances survive idle_timeout");
    b.running.shutdown().await;
}

#[tokio::test]
async fn n_concurrent_invocations_run_on_n_instances() {
    let py = python_handler("behaviours.py");
    let b = broker(&format!(
        "functions:\n  - {{name: p, runtime: python, handler: '{py}', entrypoint: pid_after, max_concurrency: 3}}\n"
    ))
    .await;
    let calls = (0..3).map(|_| invoke(&b, "p", json!({"seconds": 0.5})));
    let results = futures::future::join_all(calls).await;
    let mut pids: Vec<i64> = results.iter().map(|(_, body, _)| body["pid"].as_i64().unwrap()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "one invocation per instance at a time");
    assert_eq!(instances(&b, "p").await, 3);
    b.running.shutdown().await;
}

#[tokio::test]
async fn functions_that_do_not_load_fail_to_deploy_and_show_state_error() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, expect) in [
        (
            format!("{{name: nox, runtime: node, handler: '{}'}}", testdata("node/noexport.mjs")),
            "exports no function handler or handle",
        ),
        (
            format!("{{name: broken, runtime: python, handler: '{}'}}", python_handler("broken.py")),
            "RuntimeError: broken at import time",
        ),
        ("{name: nocmd, runtime: process, command: ['/nonexistent/worker']}".to_owned(), "not found"),
    ] {
        let text = format!(
            "store: sqlite://{}/r.db\nserver: {{bind: '127.0.0.1:0'}}\nfunctions:\n  - {yaml}\n",
            dir.path().display()
        );
        let config = switchyard_schemas::Config::from_yaml_str(&text, "t.yaml", |_| None).unwrap();
        let err = switchyard_broker::app::start(config, false, std::future::pending()).await.err().unwrap();
        assert!(err.to_string().contains(expect), "{err}");
    }
    b_api_states().await;
}

async fn state_of(b: &Broker, name: &str) -> Value {
    b.http.get(b.url(&format!("/api/v1/functions/{name}"))).send().await.unwrap().json().await.unwrap()
}

/// Through the API a function that does not load is kept in state `Error` with the reason; a fixed
/// configuration makes it `Ready`; a failed update leaves the previous version serving.
async fn b_api_states() {
    let b = broker("").await;
    let bad = json!({"name": "nox", "runtime": "node", "handler": testdata("node/noexport.mjs")});
    let resp = b.http.post(b.url("/api/v1/functions")).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "deploy_failed");
    assert_eq!(body["function"]["state"], "Error");
    let f = state_of(&b, "nox").await;
    assert_eq!(f["state"], "Error");
    assert_eq!(f["serving"], false);
    assert!(f["error"].as_str().unwrap().contains("exports no function"), "{f}");
    // Listed with its state and error by the CLI.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["functions", "list", "--url", &b.url("")])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nox") && text.contains("Error") && text.contains("exports no function"), "{text}");
    // Not invocable: 409 naming the state.
    let resp = b.http.post(b.url("/api/v1/functions/invoke/nox")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    assert!(resp.text().await.unwrap().contains("state Error"));
    // Invalid configuration: refused before any deployment, nothing changes.
    let invalid = json!({"name": "nox", "runtime": "node"});
    let resp = b.http.put(b.url("/api/v1/functions/nox")).json(&invalid).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(state_of(&b, "nox").await["state"], "Error");
    // Fixed: Ready and serving.
    let good = json!({"name": "nox", "runtime": "node", "handler": testdata("node/esm.mjs")});
    let resp = b.http.put(b.url("/api/v1/functions/nox")).json(&good).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let f: Value = resp.json().await.unwrap();
    assert_eq!((f["state"].as_str(), f["serving"].as_bool(), f.get("error")), (Some("Ready"), Some(true), None));
    // A failing update: state Error, the previous version still serves.
    let resp = b.http.put(b.url("/api/v1/functions/nox")).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let f = state_of(&b, "nox").await;
    assert_eq!((f["state"].as_str(), f["serving"].as_bool()), (Some("Error"), Some(true)));
    let resp = b.http.post(b.url("/api/v1/functions/invoke/nox")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the previous version serves");
    // `?wait=false`: 202 with the deployment under way, then Ready.
    let py =
        json!({"name": "later", "runtime": "python", "handler": python_handler("behaviours.py"), "entrypoint": "echo"});
    let resp = b.http.post(b.url("/api/v1/functions?wait=false")).json(&py).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let f: Value = resp.json().await.unwrap();
    assert_eq!(f["state"], "Creating", "{f}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let f = state_of(&b, "later").await;
        if f["state"] == "Ready" {
            break;
        }
        assert_eq!(f["state"], "Creating", "{f}");
        assert!(std::time::Instant::now() < deadline, "still {f}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Removing a function in state Error works.
    let resp = b
        .http
        .put(b.url("/api/v1/functions/later"))
        .json(&json!({"name": "later", "runtime": "python", "handler": python_handler("broken.py")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(b.http.delete(b.url("/api/v1/functions/later")).send().await.unwrap().status(), 204);
    assert_eq!(b.http.get(b.url("/api/v1/functions/later")).send().await.unwrap().status(), 404);
    b.running.shutdown().await;
}
