//! The worker pool every process runtime (python, node, process) shares: an invocation takes an
//! idle warm instance, else starts one (a cold start, noted in the record with its init time) up to
//! the function's maximum (the stack's concurrency limit); instances idle for `idle_timeout` are
//! stopped down to `min_instances`, so functions scale to zero by default. One invocation per
//! instance at a time; a dropped (timed-out) call kills its instance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{describe_error, Spawn, Worker};
use crate::runtime::{Invocation, InvokeError, Response, Runtime};

/// Default time an idle instance is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct Idle {
    worker: Worker,
    since: Instant,
}

struct Pool {
    spawn: Spawn,
    idle: Mutex<Vec<Idle>>,
    live: Arc<AtomicUsize>,
    min: usize,
    idle_timeout: Duration,
}

/// A checked-out worker, counted in the pool's live instances. Dropped while checked out (a timeout,
/// a crash), it is killed and uncounted; handed back with [`Pool::put_idle`], it stays counted.
struct Counted {
    worker: Option<Worker>,
    live: Arc<AtomicUsize>,
}

impl Counted {
    fn worker(&mut self) -> &mut Worker {
        self.worker.as_mut().unwrap_or_else(|| unreachable!("a checked-out worker is present until handed back"))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.worker.take().is_some() {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_idle(&self) -> Option<Counted> {
        let mut idle = self.lock();
        while let Some(i) = idle.pop() {
            let mut counted = Counted { worker: Some(i.worker), live: Arc::clone(&self.live) };
            if counted.worker().is_alive() {
                return Some(counted);
            }
        }
        None
    }

    fn put_idle(&self, mut c: Counted) {
        if let Some(worker) = c.worker.take() {
            self.lock().push(Idle { worker, since: Instant::now() });
        }
    }

    async fn start(&self) -> Result<(Counted, Duration), InvokeError> {
        let t = Instant::now();
        self.live.fetch_add(1, Ordering::SeqCst);
        match Worker::start(&self.spawn).await {
            Ok(worker) => Ok((Counted { worker: Some(worker), live: Arc::clone(&self.live) }, t.elapsed())),
            Err(e) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Stops instances idle past the timeout, keeping `min` alive; starts instances up to `min`.
    async fn maintain(&self) {
        let expired: Vec<Idle> = {
            let mut idle = self.lock();
            let now = Instant::now();
            let mut keep = Vec::with_capacity(idle.len());
            let mut gone = Vec::new();
            let mut live = self.live.load(Ordering::SeqCst);
            for i in idle.drain(..) {
                if live > self.min && now.duration_since(i.since) >= self.idle_timeout {
                    live -= 1;
                    gone.push(i);
                } else {
                    keep.push(i);
                }
            }
            *idle = keep;
            gone
        };
        if !expired.is_empty() {
            self.live.fetch_sub(expired.len(), Ordering::SeqCst);
            tracing::debug!(function = %self.spawn.function, stopped = expired.len(), "idle instances stopped");
        }
        drop(expired); // kill_on_drop
        while self.live.load(Ordering::SeqCst) < self.min {
            match self.start().await {
                Ok((c, init)) => {
                    tracing::debug!(function = %self.spawn.function, init_ms = init.as_millis() as u64, "warm instance started");
                    self.put_idle(c);
                }
                Err(e) => {
                    tracing::warn!(function = %self.spawn.function, error = %e, "cannot keep min_instances warm");
                    break;
                }
            }
        }
    }
}

/// A process runtime: a pool of warm workers for one function.
pub struct ProcessRuntime {
    pool: Arc<Pool>,
    stop: CancellationToken,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime").field("function", &self.pool.spawn.function).finish_non_exhaustive()
    }
}

impl ProcessRuntime {
    /// Starts the pool: checks that the handler loads by starting one instance (kept warm), starts
    /// `min` instances, and a maintenance task for idle timeouts.
    ///
    /// # Errors
    /// The worker's own error (e.g. a Python traceback or a missing export) when it cannot load.
    pub async fn deploy(spawn: Spawn, min: usize, idle_timeout: Duration) -> Result<Self, InvokeError> {
        let pool = Arc::new(Pool {
            spawn,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
            min,
            idle_timeout,
        });
        let (first, _) = pool.start().await?;
        pool.put_idle(first);
        pool.maintain().await;
        let stop = CancellationToken::new();
        let weak: Weak<Pool> = Arc::downgrade(&pool);
        let tick = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let token = stop.clone();
        let span = tracing::debug_span!("pool_maintenance", function = %pool.spawn.function);
        tokio::spawn(
            async move {
                let mut interval = tokio::time::interval(tick);
                loop {
                    tokio::select! {
                        () = token.cancelled() => return,
                        _ = interval.tick() => {}
                    }
                    let Some(pool) = weak.upgrade() else { return };
                    pool.maintain().await;
                }
            }
            .instrument(span),
        );
        Ok(Self { pool, stop })
    }

    /// Live instances (idle and busy).
    pub fn live(&self) -> usize {
        self.pool.live.load(Ordering::SeqCst)
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The `context` a handler receives: the CloudEvent attributes, the function, the deadline. The wasm
/// runtime gives its modules the same.
pub(crate) fn context(inv: &Invocation) -> Value {
    let mut ctx = inv.event.to_json_value();
    if let Some(map) = ctx.as_object_mut() {
        map.remove("data");
        map.remove("data_base64");
        map.insert("function_name".to_owned(), json!(&*inv.function));
        map.insert("trigger".to_owned(), json!(&*inv.trigger));
        map.insert("attempt".to_owned(), json!(inv.attempt));
        map.insert("record_id".to_owned(), json!(inv.record_id.to_string()));
        map.insert("traceparent".to_owned(), json!(inv.traceparent));
        if let Some(d) = inv.deadline {
            map.insert("deadline_ms".to_owned(), json!(d.timestamp_millis()));
            map.insert("deadline".to_owned(), json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
        }
    }
    ctx
}

/// Maps a worker's result frame to a response or a typed error.
fn to_response(reply: &Value, logs: String) -> Result<Response, InvokeError> {
    if reply.get("type").and_then(Value::as_str) != Some("result") {
        return Err(InvokeError::bad_response(format!("worker sent {reply} instead of a result")).with_logs(logs));
    }
    if reply.get("ok").and_then(Value::as_bool) != Some(true) {
        let error = reply.get("error");
        let permanent = error.and_then(|e| e.get("permanent")).and_then(Value::as_bool).unwrap_or(false);
        return Err(InvokeError::handler(describe_error(error), permanent).with_logs(logs));
    }
    let r = reply.get("response").ok_or_else(|| InvokeError::bad_response("result without response"))?;
    let status = r
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| {
            InvokeError::bad_response(format!("statusCode must be an HTTP status, got {r}")).with_logs(logs.clone())
        })?;
    let headers: Vec<(String, String)> = r
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let body = if let Some(b64) = r.get("body_base64").and_then(Value::as_str) {
        Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| InvokeError::bad_response(format!("body_base64: {e}")))?,
        )
    } else {
        Bytes::from(r.get("body").and_then(Value::as_str).unwrap_or_default().to_owned())
    };
    if status >= 400 {
        return Err(InvokeError::status(status, body, None).with_logs(logs));
    }
    Ok(Response { status, headers, body, logs })
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    async fn invoke(&self, inv: &Invocation) -> Result<Response, InvokeError> {
        let mut counted = match self.pool.take_idle() {
            Some(c) => c,
            None => {
                let (c, init) = self.pool.start().await?;
                inv.progress.note_cold_start(init);
                c
            }
        };
        let (reply, logs) = counted.worker().call(inv.event.data_for_handler(), context(inv)).await?;
        let result = to_response(&reply, logs);
        // A worker that answered is healthy and goes back to the pool, whatever the handler did.
        if counted.worker().is_alive() {
            self.pool.put_idle(counted);
        }
        result
    }

    async fn shutdown(&self) {
        self.stop.cancel();
        let workers: Vec<Idle> = std::mem::take(&mut *self.pool.lock());
        self.pool.live.fetch_sub(workers.len(), Ordering::SeqCst);
        drop(workers); // kill_on_drop
    }

    fn instances(&self) -> Option<usize> {
        Some(self.live())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_mapping() {
        let ok =
            json!({"type": "result", "ok": true, "response": {"status": 200, "headers": {"a": "b"}, "body": "hi"}});
        let r = to_response(&ok, "log".into()).unwrap();
        assert_eq!((r.status, &r.body[..], r.logs.as_str()), (200, &b"hi"[..], "log"));
        let bad = json!({"type": "result", "ok": true, "response": {"status": 503, "body": "busy"}});
        let e = to_response(&bad, String::new()).unwrap_err();
        assert!(e.is_retryable());
        let bad = json!({"type": "result", "ok": true, "response": {"status": 404, "body": ""}});
        assert!(!to_response(&bad, String::new()).unwrap_err().is_retryable());
        let exc = json!({"type": "result", "ok": false, "error": {"type": "ValueError", "message": "no", "traceback": "tb", "permanent": true}});
        let e = to_response(&exc, String::new()).unwrap_err();
        assert_eq!(e.message, "ValueError: no\ntb");
        assert!(!e.is_retryable());
        let weird = json!({"type": "result", "ok": true, "response": {"status": 99}});
        assert!(!to_response(&weird, String::new()).unwrap_err().is_retryable());
    }
}
