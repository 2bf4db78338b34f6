//! The [`Runtime`] trait every function backend implements, the [`Invocation`] it is given, and the
//! typed [`InvokeError`] whose retryability drives the retry layer. Runtimes know nothing of
//! retries or records: the stack does.

pub mod http;
pub mod process;
pub mod wasm;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use switchyard_schemas::config::{FunctionConfig, RuntimeKind};
use switchyard_schemas::{CloudEvent, ErrorKind};
use uuid::Uuid;

/// One call of a function for one event. Cloned for each attempt.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The event.
    pub event: Arc<CloudEvent>,
    /// The function's name.
    pub function: Arc<str>,
    /// The trigger that matched.
    pub trigger: Arc<str>,
    /// The record this invocation writes.
    pub record_id: Uuid,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Longest time this attempt may take.
    pub attempt_timeout: Duration,
    /// When this attempt must be over (set by the timeout layer as the attempt starts).
    pub deadline: Option<DateTime<Utc>>,
    /// W3C trace context sent to the function.
    pub traceparent: String,
    /// Shared across attempts: how many were made and when the first started.
    pub progress: Arc<Progress>,
    /// The span each attempt's span is a child of (a delivery's route span, or the `invoke` or
    /// `replay` span); makes no spans when spans are not exported.
    pub parent: crate::spans::Parent,
}

/// Attempt bookkeeping shared by every attempt of one invocation.
#[derive(Debug, Default)]
pub struct Progress {
    attempts: AtomicU32,
    started: OnceLock<DateTime<Utc>>,
    init: OnceLock<Duration>,
}

impl Progress {
    /// Notes that an attempt starts; returns its number (1-based).
    pub fn begin_attempt(&self) -> u32 {
        let _ = self.started.set(Utc::now());
        self.attempts.fetch_add(1, Ordering::SeqCst) + 1
    }
    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
    /// When the first attempt started.
    pub fn started(&self) -> Option<DateTime<Utc>> {
        self.started.get().copied()
    }
    /// Notes that an attempt had to start a new instance, and how long its initialisation took.
    pub fn note_cold_start(&self, init: Duration) {
        let _ = self.init.set(init);
    }
    /// The initialisation time of a cold start, if there was one.
    pub fn cold_start(&self) -> Option<Duration> {
        self.init.get().copied()
    }
}

/// A function's answer.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// HTTP-style status (2xx on success).
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// What the function printed during this invocation.
    pub logs: String,
}

/// Whether a failed attempt may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Timeouts, connection errors, 408, 429, 5xx, crashed workers, handler exceptions.
    Retryable,
    /// 4xx, bad responses, handler exceptions marked permanent, missing handlers.
    Permanent,
}

/// A failed attempt. Its retryability is a typed property, never read from the message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Retry or not.
    pub retry: Retry,
    /// Details for the record.
    pub message: String,
    /// The function's status code, when it answered.
    pub status: Option<u16>,
    /// The function's body, when it answered.
    pub body: Option<Bytes>,
    /// Retry-After the function asked for.
    pub retry_after: Option<Duration>,
    /// What the function printed.
    pub logs: String,
}

impl InvokeError {
    fn new(kind: ErrorKind, retry: Retry, message: impl Into<String>) -> Self {
        Self { kind, retry, message: message.into(), status: None, body: None, retry_after: None, logs: String::new() }
    }
    /// The attempt ran out of time.
    pub fn timeout(after: Duration) -> Self {
        Self::new(ErrorKind::Timeout, Retry::Retryable, format!("attempt timed out after {}", humanize(after)))
    }
    /// The function could not be reached.
    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connection, Retry::Retryable, message)
    }
    /// The function answered with a failing status: 408, 429 and 5xx are retryable, the rest permanent.
    pub fn status(status: u16, body: Bytes, retry_after: Option<Duration>) -> Self {
        let retry = if status == 408 || status == 429 || status >= 500 { Retry::Retryable } else { Retry::Permanent };
        let mut e = Self::new(ErrorKind::Status, retry, format!("function answered HTTP {status}"));
        e.status = Some(status);
        e.body = Some(body);
        e.retry_after = retry_after;
        e
    }
    /// The handler raised an exception.
    pub fn handler(message: impl Into<String>, permanent: bool) -> Self {
        Self::new(ErrorKind::Handler, if permanent { Retry::Permanent } else { Retry::Retryable }, message)
    }
    /// The answer could not be understood.
    pub fn bad_response(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadResponse, Retry::Permanent, message)
    }
    /// The worker died.
    pub fn crashed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Crashed, Retry::Retryable, message)
    }
    /// The function could not be started.
    pub fn init(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Init, Retry::Permanent, message)
    }
    /// The broker gave up on the invocation at shutdown.
    pub fn shutdown() -> Self {
        Self::new(ErrorKind::Shutdown, Retry::Permanent, "broker shut down before the invocation finished")
    }
    /// The source cancelled the invocation.
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, Retry::Permanent, "cancelled by its source")
    }
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry == Retry::Retryable
    }
    /// Attaches captured logs.
    #[must_use]
    pub fn with_logs(mut self, logs: String) -> Self {
        self.logs = logs;
        self
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        let secs = format!("{:.3}", d.as_secs_f64());
        format!("{}s", secs.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// A function backend.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Runs one attempt. Cancellation (the future being dropped) must stop the work: a process
    /// runtime kills the worker it was using.
    ///
    /// # Errors
    /// [`InvokeError`] classified retryable or permanent.
    async fn invoke(&self, invocation: &Invocation) -> Result<Response, InvokeError>;

    /// Stops idle workers and frees resources. Called when the function is removed or at shutdown.
    async fn shutdown(&self) {}

    /// Live instances, for runtimes that run them (process runtimes).
    fn instances(&self) -> Option<usize> {
        None
    }
}

/// A function that cannot be deployed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("function {function}: {message}")]
pub struct DeployError {
    /// The function.
    pub function: String,
    /// What is wrong.
    pub message: String,
}

/// Builds the runtime a function's configuration asks for (the one explicit registry of runtimes).
///
/// # Errors
/// [`DeployError`] when the function cannot run (missing handler file, no interpreter, a module
/// that does not compile).
pub async fn build(config: &FunctionConfig, http: &reqwest::Client) -> Result<Arc<dyn Runtime>, DeployError> {
    match config.runtime {
        RuntimeKind::Http => Ok(Arc::new(http::HttpRuntime::new(config, http.clone())?)),
        RuntimeKind::Python | RuntimeKind::Node | RuntimeKind::Process => {
            let spec = match config.runtime {
                RuntimeKind::Python => process::python::spec(config).await?,
                RuntimeKind::Node => process::node::spec(config)?,
                _ => process::custom_spec(config)?,
            };
            let min = config.min_instances.unwrap_or(0);
            let idle = config.idle_timeout.unwrap_or(process::pool::DEFAULT_IDLE_TIMEOUT);
            let runtime = process::ProcessRuntime::deploy(spec, min, idle).await.map_err(|e| DeployError {
                function: config.name.clone(),
                message: format!("does not load: {}", e.message),
            })?;
            Ok(Arc::new(runtime))
        }
        RuntimeKind::Wasm => Ok(Arc::new(wasm::WasmRuntime::deploy(config).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(InvokeError::status(s, Bytes::new(), None).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!InvokeError::status(s, Bytes::new(), None).is_retryable(), "{s}");
        }
        assert!(InvokeError::timeout(Duration::from_secs(1)).is_retryable());
        assert!(InvokeError::connection("refused").is_retryable());
        assert!(!InvokeError::bad_response("x").is_retryable());
        assert!(!InvokeError::handler("x", true).is_retryable());
        assert!(InvokeError::handler("x", false).is_retryable());
    }

    #[test]
    fn timeout_message_is_readable() {
        assert_eq!(InvokeError::timeout(Duration::from_millis(250)).message, "attempt timed out after 250ms");
        assert_eq!(InvokeError::timeout(Duration::from_secs(2)).message, "attempt timed out after 2s");
        assert_eq!(InvokeError::timeout(Duration::from_millis(1500)).message, "attempt timed out after 1.5s");
    }
}
