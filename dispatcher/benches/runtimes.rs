//! Cold start and warm invoke latency of the python, node and wasm runtimes, next to the baseline
//! of spawning a process once per event (`python3` / `node` running the same handler; for wasm, `cat`
//! echoing the request, the cheapest process there is), all measured in one run.
//!
//! Run: `cargo bench -p switchyard-dispatcher --bench runtimes`. Under `cargo test` it runs a few
//! iterations as a smoke test.

mod support;

use std::time::{Duration, Instant};

use switchyard_dispatcher::runtime::process::{self, ProcessRuntime, Worker};
use switchyard_dispatcher::runtime::wasm::WasmRuntime;
use switchyard_dispatcher::runtime::Runtime;
use switchyard_schemas::config::{FunctionConfig, RuntimeKind};

fn testdata(path: &str) -> String {
    format!("{}/../testdata/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn stats(v: Vec<Duration>) -> (f64, f64) {
    support::percentiles(v, 1e-3)
}

async fn spawn_per_event(program: &str, args: &[String], n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let o = tokio::process::Command::new(program).args(args).output().await.unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out.push(t.elapsed());
    }
    out
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (warm_n, cold_n) = if bench { (5000, 100) } else { (20, 3) };
    let py_handler = testdata("quickstart/handler.py");
    let node_handler = testdata("functions/node/esm.mjs");
    let mut rows = Vec::new();
    for (kind, handler) in [(RuntimeKind::Python, &py_handler), (RuntimeKind::Node, &node_handler)] {
        let mut config = FunctionConfig::new("bench", kind);
        config.handler = Some(handler.clone());
        let spec = match kind {
            RuntimeKind::Python => process::python::spec(&config).await.unwrap(),
            _ => process::node::spec(&config).unwrap(),
        };
        // Cold start: a new instance until it reports ready, then its first invocation.
        let mut cold = Vec::with_capacity(cold_n);
        for _ in 0..cold_n {
            let t = Instant::now();
            let mut w = Worker::start(&spec).await.unwrap();
            let inv = support::invocation();
            w.call(inv.event.data_for_handler(), serde_json::json!({"type": "bench"})).await.unwrap();
            cold.push(t.elapsed());
        }
        // Warm: invocations through the runtime (pool checkout, protocol, logs mark, response mapping).
        let runtime = ProcessRuntime::deploy(spec.clone(), 1, Duration::from_secs(600)).await.unwrap();
        let inv = support::invocation();
        for _ in 0..50 {
            runtime.invoke(&inv).await.unwrap();
        }
        let mut warm = Vec::with_capacity(warm_n);
        for _ in 0..warm_n {
            let t = Instant::now();
            runtime.invoke(&inv).await.unwrap();
            warm.push(t.elapsed());
        }
        runtime.shutdown().await;
        // Baseline: one interpreter process per event running the same handler.
        let (program, args) = match kind {
            RuntimeKind::Python => (
                spec.program.display().to_string(),
                vec![
                    "-c".to_owned(),
                    format!("import runpy; m = runpy.run_path({py_handler:?}); print(m['handler']({{'name': 'Ada'}}))"),
                ],
            ),
            _ => (
                spec.program.display().to_string(),
                vec![
                    "--input-type=module".to_owned(),
                    "-e".to_owned(),
                    format!("const m = await import({node_handler:?}); console.log(await m.handler({{name: 'Ada'}}, {{}}));"),
                ],
            ),
        };
        let baseline = spawn_per_event(&program, &args, cold_n).await;
        rows.push((kind, stats(cold), stats(warm), stats(baseline)));
    }
    // wasm: cold start = deploy (read, compile, link) and the first invocation; warm = a fresh
    // instance per invocation (what every wasm invocation is).
    let mut config = FunctionConfig::new("bench", RuntimeKind::Wasm);
    config.module = Some(testdata("functions/wasm/hello.wat"));
    let keep = WasmRuntime::deploy(&config).await.unwrap(); // keeps the shared engine up, as in a broker
    let inv = support::invocation();
    let mut cold = Vec::with_capacity(cold_n);
    for _ in 0..cold_n {
        let t = Instant::now();
        let rt = WasmRuntime::deploy(&config).await.unwrap();
        rt.invoke(&inv).await.unwrap();
        cold.push(t.elapsed());
    }
    for _ in 0..50 {
        keep.invoke(&inv).await.unwrap();
    }
    let mut warm = Vec::with_capacity(warm_n);
    for _ in 0..warm_n {
        let t = Instant::now();
        keep.invoke(&inv).await.unwrap();
        warm.push(t.elapsed());
    }
    // Baseline: one `cat` per event printing the request (no interpreter at all).
    let request = std::env::temp_dir().join(format!("switchyard-bench-{}.json", std::process::id()));
    std::fs::write(&request, r#"{"event": {"name": "Ada"}, "context": {}}"#).unwrap();
    let baseline = spawn_per_event("cat", &[request.display().to_string()], cold_n).await;
    let _ = std::fs::remove_file(&request);
    rows.push((RuntimeKind::Wasm, stats(cold), stats(warm), stats(baseline)));
    println!("\nruntimes: cold start ({cold_n} runs), warm invoke ({warm_n} runs), spawn-per-event baseline ({cold_n} runs)\n");
    println!("| runtime | cold start p50 ms | p99 ms | warm invoke p50 ms | p99 ms | spawn per event p50 ms | p99 ms | warm speed-up vs spawn (p50) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (kind, c, w, b) in rows {
        println!(
            "| {kind} | {:.2} | {:.2} | {:.4} | {:.4} | {:.2} | {:.2} | {:.0}x |",
            c.0,
            c.1,
            w.0,
            w.1,
            b.0,
            b.1,
            b.0 / w.0
        );
    }
}
