//! The `python` runtime: warm worker processes (one per concurrent invocation, started on first use
//! and reused) running `bootstrap.py`, which loads the handler file and calls
//! `handler(event)` or `handler(event, context)`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use switchyard_schemas::config::FunctionConfig;

use super::{base_env, describe_error, Spawn, Worker};
use crate::runtime::{DeployError, Invocation, InvokeError, Response, Runtime};

/// The worker script, passed to the interpreter with `-c` so the binary needs no files beside it.
pub const BOOTSTRAP: &str = include_str!("bootstrap.py");

/// Python functions.
#[derive(Debug)]
pub struct PythonRuntime {
    spawn: Spawn,
    idle: Mutex<Vec<Worker>>,
}

impl PythonRuntime {
    /// Checks the handler file and resolves the interpreter to an absolute path (the worker's
    /// environment is cleared, so it cannot rely on the broker's PATH or pyenv shims).
    ///
    /// # Errors
    /// [`DeployError`] when the file or the interpreter is missing.
    pub async fn deploy(config: &FunctionConfig) -> Result<Self, DeployError> {
        let err = |message: String| DeployError { function: config.name.clone(), message };
        let handler = config.handler.as_deref().ok_or_else(|| err("runtime python needs `handler`".to_owned()))?;
        let handler = std::fs::canonicalize(handler).map_err(|e| err(format!("handler file {handler:?}: {e}")))?;
        if !handler.is_file() {
            return Err(err(format!("handler {} is not a file", handler.display())));
        }
        let interpreter = config.interpreter.as_deref().unwrap_or("python3");
        let program = resolve_interpreter(interpreter).await.map_err(err)?;
        let cwd = handler.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let mut env = base_env(&config.env);
        env.entry("PYTHONUNBUFFERED".to_owned()).or_insert_with(|| "1".to_owned());
        env.entry("PYTHONDONTWRITEBYTECODE".to_owned()).or_insert_with(|| "1".to_owned());
        let spawn = Spawn {
            program,
            args: vec![
                "-u".to_owned(),
                "-c".to_owned(),
                BOOTSTRAP.to_owned(),
                handler.display().to_string(),
                config.entrypoint.clone().unwrap_or_else(|| "handler".to_owned()),
            ],
            env,
            cwd,
            function: config.name.clone(),
        };
        Ok(Self { spawn, idle: Mutex::new(Vec::new()) })
    }

    fn take_idle(&self) -> Option<Worker> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(mut w) = idle.pop() {
            if w.is_alive() {
                return Some(w);
            }
        }
        None
    }

    fn put_idle(&self, worker: Worker) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(worker);
    }

    /// Warm workers waiting for work.
    pub fn idle_workers(&self) -> usize {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

async fn resolve_interpreter(name: &str) -> Result<PathBuf, String> {
    let out = tokio::process::Command::new(name)
        .args(["-c", "import sys; print(sys.executable)"])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run Python interpreter {name:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("Python interpreter {name:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() {
        return Err(format!("Python interpreter {name:?} did not report sys.executable"));
    }
    Ok(PathBuf::from(path))
}

/// The `context` a handler receives: the CloudEvent attributes, the function, the deadline.
fn context(inv: &Invocation) -> Value {
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
impl Runtime for PythonRuntime {
    async fn invoke(&self, inv: &Invocation) -> Result<Response, InvokeError> {
        let mut worker = match self.take_idle() {
            Some(w) => w,
            None => Worker::start(&self.spawn).await?,
        };
        let (reply, logs) = worker.call(inv.event.data_for_handler(), context(inv)).await?;
        let result = to_response(&reply, logs);
        // A worker that answered is healthy and goes back to the pool, whatever the handler did.
        if worker.is_alive() {
            self.put_idle(worker);
        }
        result
    }

    async fn shutdown(&self) {
        let workers: Vec<Worker> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        drop(workers); // kill_on_drop
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
