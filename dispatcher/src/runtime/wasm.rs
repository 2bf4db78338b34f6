//! The `wasm` runtime: WebAssembly command modules (WASI preview 1) run by wasmtime.
//!
//! The module is compiled once, when the function is deployed, into an [`InstancePre`] (imports
//! resolved and type-checked). Every invocation instantiates it afresh from the engine's pooling
//! allocator, so nothing survives from one invocation to the next, and runs its `_start` with the
//! request (`{"event": ..., "context": ...}`, the same shapes a Python or Node handler gets) on
//! stdin. What it writes to stdout is its answer (JSON, the `{statusCode, headers, body}` contract);
//! what it writes to stderr is its logs.
//!
//! Invocations run as async wasmtime calls on the tokio runtime, never on a blocking thread: a
//! ticker thread advances the engine's epoch every [`TICK`], and at each tick the guest yields to
//! the executor (so a busy guest holds a worker thread for at most one tick) or, past its deadline,
//! is interrupted. A dropped invocation future (the stack's timeout, a cancelled source) drops the
//! store and its instance with it.
//!
//! The sandbox denies by default: no preopened directories (no filesystem), no sockets (WASI
//! preview 1 has none), an environment made only of the function's `env`, argv = the function's
//! name. Linear memory may grow to `memory_mb` and no further.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use switchyard_schemas::config::FunctionConfig;
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::process::{describe_error, pool::context, MAX_LOG_BYTES};
use super::{DeployError, Invocation, InvokeError, Response, Runtime};

/// Default memory limit of a wasm instance, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// The largest answer a module may write to stdout. More fails the invocation as `bad_response`.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// How often the epoch advances: the longest a guest runs between yields to the executor, and the
/// precision of the timeout.
pub const TICK: Duration = Duration::from_millis(5);
/// Instances (and memories, tables, async stacks) the pooling allocator holds, across every wasm
/// function of the broker: the most wasm invocations that can run at once.
pub const POOL_INSTANCES: u32 = 1000;
const WASM_PAGE: u64 = 64 * 1024;

/// The engine (compiler settings, pooling allocator, epoch) and the WASI linker that every wasm
/// function shares. It lives while some wasm function is deployed; its ticker thread stops after.
struct Shared {
    engine: Engine,
    linker: Linker<State>,
}

static SHARED: Mutex<Weak<Shared>> = Mutex::new(Weak::new());

fn shared() -> Result<Arc<Shared>, String> {
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = slot.upgrade() {
        return Ok(s);
    }
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(POOL_INSTANCES)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES)
        .total_stacks(POOL_INSTANCES)
        // Every memory slot can hold the largest memory_mb; each store's limiter enforces its own.
        .max_memory_size(usize::try_from(switchyard_schemas::config::MAX_WASM_MEMORY_MB << 20).unwrap_or(usize::MAX));
    let mut config = Config::new();
    config.epoch_interruption(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| format!("cannot start the WebAssembly engine: {e}"))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut State| &mut s.wasi)
        .map_err(|e| format!("cannot set up WASI: {e}"))?;
    let s = Arc::new(Shared { engine, linker });
    let weak = Arc::downgrade(&s);
    std::thread::Builder::new()
        .name("switchyard-wasm-epoch".to_owned())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            match weak.upgrade() {
                Some(s) => s.engine.increment_epoch(),
                None => return,
            }
        })
        .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
    *slot = Arc::downgrade(&s);
    Ok(s)
}

/// What one store (one invocation) holds.
struct State {
    wasi: WasiP1Ctx,
    memory: MemoryCap,
}

/// Refuses linear memory growth past the function's limit, and remembers the refusal so that the
/// trap that usually follows (an allocator aborting) is reported as the limit it is.
struct MemoryCap {
    max_bytes: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables are bounded by the pool's slots (wasmtime's default of 20,000 elements).
        Ok(true)
    }
}

/// What to do with output beyond the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Stop the guest: the output would be incomplete (stdout, the answer).
    Fail,
    /// Keep the beginning and drop the rest (stderr, the logs).
    Cut,
}

#[derive(Debug)]
struct Buffer {
    bytes: Vec<u8>,
    capacity: usize,
    overflow: Overflow,
    overflowed: bool,
}

/// A guest's stdout or stderr, kept in memory up to a capacity.
#[derive(Debug, Clone)]
struct Capture(Arc<Mutex<Buffer>>);

impl Capture {
    fn new(capacity: usize, overflow: Overflow) -> Self {
        Self(Arc::new(Mutex::new(Buffer { bytes: Vec::new(), capacity, overflow, overflowed: false })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends; on overflow keeps what fits and reports whether the guest must be stopped.
    fn push(&self, data: &[u8]) -> Result<(), usize> {
        let mut b = self.lock();
        let room = b.capacity - b.bytes.len();
        if data.len() <= room {
            b.bytes.extend_from_slice(data);
            return Ok(());
        }
        b.overflowed = true;
        match b.overflow {
            Overflow::Fail => Err(b.capacity),
            Overflow::Cut => {
                b.bytes.extend_from_slice(&data[..room]);
                Ok(())
            }
        }
    }

    fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().bytes)
    }

    /// The logs as text, marked when cut (as the process runtimes do).
    fn text(&self) -> String {
        let b = self.lock();
        let mut text = String::from_utf8_lossy(&b.bytes).into_owned();
        if b.overflowed {
            text.push_str("\n[logs cut]\n");
        }
        text
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes)
            .map_err(|cap| StreamError::Trap(wasmtime::format_err!("the module wrote more than {cap} bytes to stdout")))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Never 0 (a writer would wait for readiness forever): overflow is handled in `write`.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.push(buf)
                .map(|()| buf.len())
                .map_err(|cap| std::io::Error::other(format!("more than {cap} bytes written"))),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Counts an instance while an invocation holds it.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A deployed wasm function: its compiled, linked module and its sandbox settings.
pub struct WasmRuntime {
    shared: Arc<Shared>,
    pre: InstancePre<State>,
    function: String,
    env: Vec<(String, String)>,
    memory_mb: u64,
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").field("function", &self.function).finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// Reads and compiles the function's `module` (`.wasm`, or `.wat` text) and links it against
    /// WASI preview 1. Compilation runs on a blocking thread.
    ///
    /// # Errors
    /// [`DeployError`] when the file cannot be read, does not compile, is not a WASI command
    /// (no `_start`), imports something other than WASI preview 1, or starts with more memory than
    /// `memory_mb`.
    pub async fn deploy(config: &FunctionConfig) -> Result<Self, DeployError> {
        let err = |message: String| DeployError { function: config.name.clone(), message };
        let path = config.module.clone().ok_or_else(|| err("runtime wasm needs `module`".to_owned()))?;
        let bytes = tokio::fs::read(&path).await.map_err(|e| err(format!("cannot read module {path}: {e}")))?;
        Self::from_bytes(config, bytes).await.map_err(|m| err(format!("module {path} {m}")))
    }

    /// [`deploy`](Self::deploy) from the module's bytes (binary or text).
    ///
    /// # Errors
    /// What is wrong with the module, as a sentence after its name.
    pub async fn from_bytes(config: &FunctionConfig, bytes: Vec<u8>) -> Result<Self, String> {
        let shared = shared()?;
        let memory_mb = config.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        let s = Arc::clone(&shared);
        let pre = tokio::task::spawn_blocking(move || compile(&s, &bytes, memory_mb))
            .await
            .map_err(|e| format!("compilation did not finish: {e}"))??;
        let runtime = Self {
            shared,
            pre,
            function: config.name.clone(),
            env: config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            memory_mb,
            live: Arc::new(AtomicUsize::new(0)),
        };
        // One trial instantiation (no `_start`) finds, now rather than at every invocation, what only
        // instantiating shows: more memories or tables, or bigger ones, than the pool's slots hold.
        let mut store = runtime.store(WasiCtxBuilder::new().build_p1(), config.timeout);
        runtime.pre.instantiate_async(&mut store).await.map_err(|e| format!("cannot be instantiated: {e:#}"))?;
        Ok(runtime)
    }

    /// A store for one instance: its WASI context, its memory cap, and its deadline (after which the
    /// next epoch tick interrupts it; until then each tick yields to the executor).
    fn store(&self, wasi: WasiP1Ctx, timeout: Duration) -> Store<State> {
        let memory = MemoryCap { max_bytes: self.memory_limit_bytes(), refused: None };
        let mut store = Store::new(&self.shared.engine, State { wasi, memory });
        store.limiter(|s| &mut s.memory);
        let deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store
    }

    /// Instances running now (one per invocation in flight).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    fn memory_limit_bytes(&self) -> usize {
        usize::try_from(self.memory_mb << 20).unwrap_or(usize::MAX)
    }
}

fn compile(shared: &Shared, bytes: &[u8], memory_mb: u64) -> Result<InstancePre<State>, String> {
    let module = Module::new(&shared.engine, bytes).map_err(|e| format!("does not compile: {e:#}"))?;
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        _ => return Err("is not a WASI command: it exports no `_start` function of type () -> ()".to_owned()),
    }
    if let Some(pages) = module.resources_required().max_initial_memory_size {
        if pages.saturating_mul(WASM_PAGE) > memory_mb << 20 {
            return Err(format!(
                "starts with {} MiB of memory, more than its memory_mb ({memory_mb})",
                pages.saturating_mul(WASM_PAGE).div_ceil(1 << 20)
            ));
        }
    }
    shared
        .linker
        .instantiate_pre(&module)
        .map_err(|e| format!("cannot be linked (only WASI preview 1 is provided): {e:#}"))
}

/// Maps what a module wrote to stdout after a successful exit to a response.
fn to_response(out: &[u8], logs: String) -> Result<Response, InvokeError> {
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(Response { status: 200, headers: Vec::new(), body: Bytes::new(), logs });
    }
    let value: Value = match serde_json::from_slice(out) {
        Ok(v) => v,
        Err(e) => {
            let excerpt = String::from_utf8_lossy(&out[..out.len().min(200)]).into_owned();
            return Err(InvokeError::bad_response(format!("stdout is not JSON ({e}): {excerpt:?}")).with_logs(logs));
        }
    };
    let Some(status) = value.as_object().and_then(|o| o.get("statusCode")) else {
        let body = Bytes::from(value.to_string());
        return Ok(Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
            logs,
        });
    };
    let status = match status.as_u64().and_then(|s| u16::try_from(s).ok()).filter(|s| (100..=599).contains(s)) {
        Some(s) => s,
        None => {
            return Err(
                InvokeError::bad_response(format!("statusCode must be an HTTP status, got {status}")).with_logs(logs)
            )
        }
    };
    let mut headers: Vec<(String, String)> = match value.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
        Some(other) => {
            return Err(InvokeError::bad_response(format!("headers must be an object, got {other}")).with_logs(logs))
        }
    };
    let body = match value.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => {
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Bytes::from(other.to_string())
        }
    };
    if status >= 400 {
        return Err(InvokeError::status(status, body, None).with_logs(logs));
    }
    Ok(Response { status, headers, body, logs })
}

/// A non-zero exit: a handler error, described by the `{"error": {...}}` the module may have
/// written to stdout (the worker protocol's error object; `permanent: true` stops retries).
fn exit_error(code: i32, out: &[u8], logs: String) -> InvokeError {
    let parsed: Option<Value> = serde_json::from_slice(out).ok();
    match parsed.as_ref().and_then(|v| v.get("error")).filter(|e| e.is_object()) {
        Some(error) => {
            let permanent = error.get("permanent").and_then(Value::as_bool).unwrap_or(false);
            InvokeError::handler(describe_error(Some(error)), permanent)
        }
        None => InvokeError::handler(format!("the module exited with status {code}"), false),
    }
    .with_logs(logs)
}

/// "the module trapped: <reason>" and the wasm backtrace, one frame a line.
fn describe_trap(e: &wasmtime::Error) -> String {
    let mut text = match e.downcast_ref::<Trap>() {
        Some(trap) => {
            let reason = trap.to_string();
            format!("the module trapped: {}", reason.strip_prefix("wasm trap: ").unwrap_or(&reason))
        }
        None => format!("the module failed: {e:#}"),
    };
    if let Some(bt) = e.downcast_ref::<WasmBacktrace>() {
        let bt = bt.to_string();
        text.push('\n');
        text.push_str(bt.strip_prefix("error while executing at ").unwrap_or(&bt).trim_end());
    }
    text
}

#[async_trait::async_trait]
impl Runtime for WasmRuntime {
    async fn invoke(&self, inv: &Invocation) -> Result<Response, InvokeError> {
        let _live = Live::new(&self.live);
        let request = json!({"event": inv.event.data_for_handler(), "context": context(inv)});
        let input = serde_json::to_vec(&request).map_err(|e| InvokeError::bad_response(e.to_string()))?;
        let stdout = Capture::new(MAX_OUTPUT_BYTES, Overflow::Fail);
        let stderr = Capture::new(MAX_LOG_BYTES, Overflow::Cut);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&[&self.function])
            .envs(&self.env)
            .build_p1();
        let mut store = self.store(wasi, inv.attempt_timeout);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| InvokeError::crashed(format!("the module could not be instantiated: {e:#}")))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| InvokeError::init(format!("_start: {e:#}")))?;
        let outcome = start.call_async(&mut store, ()).await;
        let logs = stderr.text();
        if stdout.overflowed() {
            return Err(InvokeError::bad_response(format!(
                "the module wrote more than {MAX_OUTPUT_BYTES} bytes to stdout (the answer's limit); it was stopped"
            ))
            .with_logs(logs));
        }
        let out = stdout.take();
        let Err(e) = outcome else { return to_response(&out, logs) };
        if let Some(exit) = e.downcast_ref::<I32Exit>() {
            return if exit.0 == 0 { to_response(&out, logs) } else { Err(exit_error(exit.0, &out, logs)) };
        }
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return Err(InvokeError::timeout(inv.attempt_timeout).with_logs(logs));
        }
        let trapped = describe_trap(&e);
        let message = match store.data().memory.refused {
            Some(wanted) => format!(
                "memory limit of {} MiB reached (memory.grow to {} MiB refused); then {trapped}",
                self.memory_mb,
                wanted.div_ceil(1 << 20)
            ),
            None => trapped,
        };
        Err(InvokeError::crashed(message).with_logs(logs))
    }

    fn instances(&self) -> Option<usize> {
        Some(self.live())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Progress;
    use switchyard_schemas::config::RuntimeKind;
    use switchyard_schemas::{CloudEvent, Data, ErrorKind};

    fn testdata(file: &str) -> String {
        format!("{}/../testdata/functions/wasm/{file}", env!("CARGO_MANIFEST_DIR"))
    }

    fn config(module: &str) -> FunctionConfig {
        let mut c = FunctionConfig::new("wasm-test", RuntimeKind::Wasm);
        c.module = Some(testdata(module));
        c
    }

    async fn deploy(module: &str) -> WasmRuntime {
        WasmRuntime::deploy(&config(module)).await.unwrap()
    }

    async fn inline(wat: &str) -> WasmRuntime {
        WasmRuntime::from_bytes(&FunctionConfig::new("inline", RuntimeKind::Wasm), wat.as_bytes().to_vec())
            .await
            .unwrap()
    }

    fn invocation(data: Value, timeout: Duration) -> Invocation {
        let mut e = CloudEvent::new("e-1", "/tests", "com.example.test");
        e.datacontenttype = Some("application/json".into());
        e.data = Some(Data::Json(data));
        Invocation {
            event: Arc::new(e),
            function: Arc::from("wasm-test"),
            trigger: Arc::from("t"),
            record_id: uuid::Uuid::now_v7(),
            attempt: 1,
            attempt_timeout: timeout,
            deadline: None,
            traceparent: String::new(),
            progress: Arc::new(Progress::default()),
            parent: crate::spans::Parent::default(),
        }
    }

    fn inv() -> Invocation {
        invocation(json!({"name": "Ada"}), Duration::from_secs(10))
    }

    fn body(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[tokio::test]
    async fn wat_hello_answers_and_logs() {
        let rt = deploy("hello.wat").await;
        let r = rt.invoke(&inv()).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(body(&r), json!({"hello": "world", "runtime": "wat"}));
        assert!(r.headers.contains(&("content-type".into(), "application/json".into())));
        assert_eq!(r.logs, "hello.wat: handling a request\n");
        assert_eq!(rt.live(), 0);
    }

    #[tokio::test]
    async fn rust_function_gets_the_event_and_context() {
        let rt = deploy("rust/echo.wasm").await;
        let r = rt.invoke(&inv()).await.unwrap();
        assert_eq!(r.status, 200);
        let b = body(&r);
        assert_eq!(b["runtime"], "rust");
        assert_eq!(b["request"]["event"], json!({"name": "Ada"}));
        let ctx = &b["request"]["context"];
        assert_eq!((ctx["id"].as_str(), ctx["type"].as_str()), (Some("e-1"), Some("com.example.test")));
        assert_eq!((ctx["function_name"].as_str(), ctx["attempt"].as_u64()), (Some("wasm-test"), Some(1)));
        assert!(ctx.get("data").is_none(), "the data is the event, not part of the context");
        let n = b["bytes"].as_u64().unwrap();
        assert!(r.logs.contains(&format!("rust handler: request of {n} bytes")), "{}", r.logs);
    }

    #[tokio::test]
    async fn handler_error_object_and_plain_exit_status() {
        let rt = deploy("fail.wat").await;
        let e = rt.invoke(&inv()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Handler);
        assert_eq!(e.message, "ValidationError: no name given");
        assert!(!e.is_retryable(), "permanent: true");
        assert!(e.logs.contains("the event has no name"), "{}", e.logs);
        let rt = inline(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (memory (export "memory") 1)
                 (func (export "_start") (call $exit (i32.const 2))))"#,
        )
        .await;
        let e = rt.invoke(&inv()).await.unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Handler, "the module exited with status 2"));
        assert!(e.is_retryable());
    }

    #[tokio::test]
    async fn exit_zero_is_success() {
        let rt = inline(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (memory (export "memory") 1)
                 (func (export "_start") (call $exit (i32.const 0))))"#,
        )
        .await;
        let r = rt.invoke(&inv()).await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0), "no output: an empty 200");
    }

    #[tokio::test]
    async fn a_runaway_module_is_interrupted_at_its_timeout() {
        let rt = deploy("loop.wat").await;
        let t = Instant::now();
        let e = rt.invoke(&invocation(json!({}), Duration::from_millis(200))).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(e.message, "attempt timed out after 200ms");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(rt.live(), 0);
    }

    #[tokio::test]
    async fn a_dropped_invocation_stops_its_instance() {
        // The stack's timeout drops the future: the guest yields at every epoch tick, so the drop
        // happens on time even though the module never calls the host.
        let rt = deploy("loop.wat").await;
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_millis(100), rt.invoke(&inv())).await;
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(rt.live(), 0, "the instance went with the future");
    }

    #[tokio::test]
    async fn a_trap_is_a_crash() {
        let rt = deploy("trap.wat").await;
        let e = rt.invoke(&inv()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Crashed);
        assert!(
            e.message.starts_with("the module trapped: wasm `unreachable` instruction executed\n"),
            "{}",
            e.message
        );
        assert!(e.message.contains("\nwasm backtrace:\n"), "the backtrace follows: {}", e.message);
        assert_eq!(e.logs, "trap.wat: about to trap\n");
    }

    #[tokio::test]
    async fn a_memory_hog_is_stopped_at_its_limit_and_alone() {
        let mut c = config("hog.wat");
        c.memory_mb = Some(32);
        let hog = WasmRuntime::deploy(&c).await.unwrap();
        let e = hog.invoke(&inv()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Crashed);
        assert!(
            e.message.starts_with("memory limit of 32 MiB reached (memory.grow to 33 MiB refused)"),
            "{}",
            e.message
        );
        assert!(e.logs.contains("memory.grow refused"), "{}", e.logs);
        // The default limit is 128 MiB.
        let e = deploy("hog.wat").await.invoke(&inv()).await.unwrap_err();
        assert!(e.message.starts_with("memory limit of 128 MiB reached"), "{}", e.message);
        // Only that invocation failed: the next one, and other functions, run.
        assert_eq!(hog.invoke(&inv()).await.unwrap_err().kind, ErrorKind::Crashed);
        assert_eq!(deploy("hello.wat").await.invoke(&inv()).await.unwrap().status, 200);
    }

    #[tokio::test]
    async fn the_sandbox_has_only_the_declared_env_and_no_files() {
        std::env::set_var("SWITCHYARD_WASM_TEST_SECRET", "broker-secret");
        let mut c = config("env.wat");
        c.env.insert("GREETING".into(), "hi".into());
        let rt = WasmRuntime::deploy(&c).await.unwrap();
        let r = rt.invoke(&inv()).await.unwrap();
        // 8 = EBADF: there is no preopened directory at fd 3.
        assert_eq!(body(&r), json!({"env": ["GREETING=hi"], "preopens": 8}));
        let r = deploy("env.wat").await.invoke(&inv()).await.unwrap();
        assert_eq!(body(&r), json!({"env": [], "preopens": 8}));
    }

    #[tokio::test]
    async fn concurrent_invocations_run_on_their_own_fresh_instances() {
        let rt = Arc::new(deploy("sleep.wat").await);
        let n = 4;
        let t = Instant::now();
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let rt = Arc::clone(&rt);
                tokio::spawn(async move { rt.invoke(&inv()).await })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while rt.live() < n {
            assert!(Instant::now() < deadline, "only {} instances live", rt.live());
            tokio::task::yield_now().await;
        }
        for call in calls {
            let r = call.await.unwrap().unwrap();
            assert_eq!(body(&r), json!({"count": 1}), "each instance starts fresh");
        }
        // Four 300 ms sleeps, overlapped.
        assert!(t.elapsed() < Duration::from_millis(1100), "{:?}", t.elapsed());
        assert_eq!(rt.live(), 0);
        assert_eq!(body(&rt.invoke(&inv()).await.unwrap()), json!({"count": 1}), "nothing leaks to the next one");
    }

    #[tokio::test]
    async fn logs_are_capped_and_stdout_overflow_fails() {
        let r = deploy("logs.wat").await.invoke(&inv()).await.unwrap();
        assert_eq!(body(&r), json!({"logged": true}));
        assert!(r.logs.starts_with("logs.wat: starting\n"));
        assert!(r.logs.ends_with("\n[logs cut]\n"));
        assert!(!r.logs.contains("logs.wat: done"));
        assert!(r.logs.len() <= MAX_LOG_BYTES + 20);
        let e = deploy("flood.wat").await.invoke(&inv()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadResponse);
        assert!(e.message.contains("more than 16777216 bytes to stdout"), "{}", e.message);
    }

    #[test]
    fn answers_map_like_the_other_runtimes() {
        let r = to_response(br#"{"statusCode": 201, "headers": {"X-A": "b"}, "body": "hi"}"#, "l".into()).unwrap();
        assert_eq!((r.status, &r.body[..], r.logs.as_str()), (201, &b"hi"[..], "l"));
        assert_eq!(r.headers, vec![("x-a".to_owned(), "b".to_owned())]);
        let r = to_response(br#"{"statusCode": 200, "body": {"a": 1}}"#, String::new()).unwrap();
        assert_eq!((&r.body[..], r.headers[0].1.as_str()), (&br#"{"a":1}"#[..], "application/json"));
        let r = to_response(b"[1, 2]", String::new()).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"[1,2]"[..]));
        let e = to_response(br#"{"statusCode": 503, "body": "busy"}"#, String::new()).unwrap_err();
        assert_eq!((e.kind, e.status, e.is_retryable()), (ErrorKind::Status, Some(503), true));
        let e = to_response(br#"{"statusCode": 404}"#, String::new()).unwrap_err();
        assert!(!e.is_retryable());
        for bad in [&b"hello"[..], br#"{"statusCode": 99}"#, br#"{"statusCode": 200, "headers": [1]}"#] {
            let e = to_response(bad, "kept".into()).unwrap_err();
            assert_eq!((e.kind, e.logs.as_str()), (ErrorKind::BadResponse, "kept"), "{e}");
        }
    }

    #[tokio::test]
    async fn modules_that_cannot_run_are_refused_at_deploy() {
        let err = |wat: &str| {
            let wat = wat.to_owned();
            async move {
                WasmRuntime::from_bytes(&FunctionConfig::new("bad", RuntimeKind::Wasm), wat.into_bytes())
                    .await
                    .err()
                    .unwrap()
            }
        };
        assert!(err("(module (func (export \"main\")))").await.contains("exports no `_start`"));
        let e = err(r#"(module (import "env" "launch" (func)) (func (export "_start")))"#).await;
        assert!(e.contains("cannot be linked") && e.contains("launch"), "{e}");
        let e = err("(module (memory 4096) (func (export \"_start\")))").await;
        assert_eq!(e, "starts with 256 MiB of memory, more than its memory_mb (128)");
        // What the pool's slots cannot hold.
        let e = err("(module (memory 1) (memory 1) (func (export \"_start\")))").await;
        assert!(e.contains("defined memories count of 2 exceeds the per-instance limit of 1"), "{e}");
        let e = err("(module (table 30000 funcref) (func (export \"_start\")))").await;
        assert!(e.contains("30000") && e.contains("exceeds"), "{e}");
        // What only instantiating shows: a data segment outside its memory.
        let e = err("(module (memory 1) (data (i32.const 70000) \"x\") (func (export \"_start\")))").await;
        assert!(e.starts_with("cannot be instantiated") && e.contains("out of bounds"), "{e}");
        let e = err("(module (func (export \"_start\") (i32.add)))").await;
        assert!(e.starts_with("does not compile"), "{e}");
        let e = WasmRuntime::deploy(&config("missing.wasm")).await.unwrap_err();
        assert!(e.to_string().contains("cannot read module") && e.to_string().contains("missing.wasm"), "{e}");
    }
}
