//! The wasm runtime: cold start (read, compile and link a module, as a deploy does) and warm invoke
//! (a fresh instance from the pool, `_start` run with the request on stdin, the answer parsed), next
//! to two baselines measured in the same run: the same request/answer JSON work done natively in
//! this process (no wasm at all), and one process spawned per event (`cat` echoing the request, the
//! cheapest process a per-event runtime could start).
//!
//! Run: `cargo bench -p switchyard-dispatcher --bench wasm`. Under `cargo test` it runs a few
//! iterations as a smoke test.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use switchyard_dispatcher::runtime::wasm::WasmRuntime;
use switchyard_dispatcher::runtime::{Invocation, Response, Runtime};
use switchyard_schemas::config::{FunctionConfig, RuntimeKind};
use tokio::io::AsyncWriteExt;

fn module(file: &str) -> String {
    format!("{}/../testdata/functions/wasm/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn stats(v: Vec<Duration>) -> (f64, f64) {
    support::percentiles(v, 1e-6)
}

/// The request a module gets, built and serialized; then hello.wat's answer parsed and mapped.
fn native_hello(inv: &Invocation) -> Response {
    let mut context = inv.event.to_json_value();
    if let Some(m) = context.as_object_mut() {
        m.remove("data");
        m.insert("function_name".into(), json!(&*inv.function));
        m.insert("trigger".into(), json!(&*inv.trigger));
        m.insert("attempt".into(), json!(inv.attempt));
        m.insert("record_id".into(), json!(inv.record_id.to_string()));
    }
    let request = serde_json::to_vec(&json!({"event": inv.event.data_for_handler(), "context": context})).unwrap();
    std::hint::black_box(&request);
    let out: Value = serde_json::from_slice(br#"{"hello": "world", "runtime": "wat"}"#).unwrap();
    Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from(out.to_string()),
        logs: String::from("hello.wat: handling a request\n"),
    }
}

async fn spawn_per_event(n: usize, request: &[u8]) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut child =
            tokio::process::Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(request).await.unwrap();
        drop(stdin);
        let o = child.wait_with_output().await.unwrap();
        assert_eq!(o.stdout, request);
        out.push(t.elapsed());
    }
    out
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (warm_n, cold_n, spawn_n) = if bench { (20_000, 50, 500) } else { (20, 2, 3) };
    let inv = support::invocation();
    let mut rows = Vec::new();
    for file in ["hello.wat", "rust/echo.wasm"] {
        let mut config = FunctionConfig::new("bench", RuntimeKind::Wasm);
        config.module = Some(module(file));
        // A deploy while the engine is up (another wasm function is deployed), as in a running broker.
        let keep = WasmRuntime::deploy(&config).await.unwrap();
        let mut cold = Vec::with_capacity(cold_n);
        for _ in 0..cold_n {
            let t = Instant::now();
            let rt = WasmRuntime::deploy(&config).await.unwrap();
            cold.push(t.elapsed());
            drop(rt);
        }
        drop(keep);
        let rt = WasmRuntime::deploy(&config).await.unwrap();
        for _ in 0..200 {
            assert_eq!(rt.invoke(&inv).await.unwrap().status, 200);
        }
        let mut warm = Vec::with_capacity(warm_n);
        for _ in 0..warm_n {
            let t = Instant::now();
            let r = rt.invoke(&inv).await.unwrap();
            warm.push(t.elapsed());
            std::hint::black_box(r);
        }
        rows.push((file, stats(cold), stats(warm)));
    }
    let mut native = Vec::with_capacity(warm_n);
    for _ in 0..warm_n {
        let t = Instant::now();
        std::hint::black_box(native_hello(&inv));
        native.push(t.elapsed());
    }
    let native = stats(native);
    let request = serde_json::to_vec(&json!({"event": {"name": "Ada"}, "context": {"id": "b-1"}})).unwrap();
    let spawn = stats(spawn_per_event(spawn_n, &request).await);

    println!(
        "\nwasm runtime: cold start = deploy ({cold_n} runs), warm invoke ({warm_n} runs), baselines in the same run\n"
    );
    println!("| case | p50 µs | p99 µs | p50 vs native | p50 vs spawn per event |");
    println!("|---|---|---|---|---|");
    let row = |name: String, (p50, p99): (f64, f64)| {
        println!("| {name} | {p50:.1} | {p99:.1} | {:.1}x | {:.3}x |", p50 / native.0, p50 / spawn.0);
    };
    for (file, cold, warm) in &rows {
        row(format!("{file}: warm invoke (instantiate + run + answer)"), *warm);
        row(format!("{file}: cold start (read + compile + link)"), *cold);
    }
    row("baseline: native, same JSON work, no wasm".into(), native);
    row("baseline: spawn `cat` per event".into(), spawn);
    let hello = rows[0].2 .0;
    if !bench {
        println!("\nsmoke run (a test build, a few iterations): these are not measurements");
        return;
    }
    println!(
        "\ntarget: hello.wat warm invoke p50 <= 100 µs including instantiation: {hello:.1} µs, {}",
        if hello <= 100.0 { "met" } else { "NOT met" }
    );
}
