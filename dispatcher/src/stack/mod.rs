//! The per-function tower stack.
//!
//! # Order
//! Outermost first: [`retry`] (backoff with full jitter, typed retryability) > [`trace`] (one span
//! per attempt) > concurrency limit (`tower::limit`, a slot is taken in `poll_ready`, so waiting
//! invocations queue there and backoff sleeps hold no slot) > [`timeout`] (per attempt, starts when
//! the slot is held) > the runtime. The bounded queue in front of the limit is the dispatcher's
//! admission semaphore.

pub mod retry;
pub mod timeout;
pub mod trace;

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use crate::runtime::{Invocation, InvokeError, Response, Runtime};

/// The stack's service type.
pub type FunctionService = BoxCloneSyncService<Invocation, Response, InvokeError>;

/// Adapts a [`Runtime`] to a tower service, counting the attempts running in it.
#[derive(Clone)]
pub struct RuntimeService(pub Arc<dyn Runtime>, pub Arc<std::sync::atomic::AtomicUsize>);

impl Service<Invocation> for RuntimeService {
    type Response = Response;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<Response, InvokeError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, inv: Invocation) -> Self::Future {
        let runtime = Arc::clone(&self.0);
        let running = Arc::clone(&self.1);
        Box::pin(async move {
            let _running = RunningGuard::new(running);
            runtime.invoke(&inv).await
        })
    }
}

/// Counts one running attempt until dropped (also when a timeout drops the attempt).
struct RunningGuard(Arc<std::sync::atomic::AtomicUsize>);

impl RunningGuard {
    fn new(count: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Builds a function's stack (without retry, which depends on the trigger's policy; see
/// [`with_retry`]).
pub fn build(
    runtime: Arc<dyn Runtime>,
    max_concurrency: usize,
    running: Arc<std::sync::atomic::AtomicUsize>,
) -> FunctionService {
    let svc = ServiceBuilder::new()
        .layer(trace::TraceLayer)
        .concurrency_limit(max_concurrency)
        .layer(timeout::AttemptTimeoutLayer)
        .service(RuntimeService(runtime, running));
    BoxCloneSyncService::new(svc)
}

/// Wraps a function's stack in the retry layer for one trigger's delivery policy.
pub fn with_retry(inner: FunctionService, policy: &switchyard_schemas::config::DeliveryPolicy) -> FunctionService {
    BoxCloneSyncService::new(tower::retry::Retry::new(retry::RetryPolicy::new(policy), inner))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::time::Duration;

    use switchyard_schemas::config::{Backoff, DeliveryPolicy};
    use switchyard_schemas::{CloudEvent, ErrorKind};
    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::runtime::Progress;

    /// A runtime that fails `fails` times with `error`, holding each call for `hold`.
    struct Fake {
        fails: AtomicU32,
        error: InvokeError,
        hold: Duration,
        calls: AtomicU32,
        in_flight: AtomicUsize,
        max_seen: AtomicUsize,
    }

    impl Fake {
        fn new(fails: u32, error: InvokeError, hold: Duration) -> Arc<Self> {
            Arc::new(Self {
                fails: AtomicU32::new(fails),
                error,
                hold,
                calls: AtomicU32::new(0),
                in_flight: AtomicUsize::new(0),
                max_seen: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl Runtime for Fake {
        async fn invoke(&self, _inv: &Invocation) -> Result<Response, InvokeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_seen.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.hold).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let failing = self.fails.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1)).is_ok();
            if failing {
                Err(self.error.clone())
            } else {
                Ok(Response { status: 200, ..Response::default() })
            }
        }
    }

    fn invocation(timeout: Duration) -> Invocation {
        Invocation {
            event: Arc::new(CloudEvent::new("1", "/test", "t")),
            function: Arc::from("f"),
            trigger: Arc::from("t"),
            record_id: uuid::Uuid::now_v7(),
            attempt: 0,
            attempt_timeout: timeout,
            deadline: None,
            traceparent: String::new(),
            progress: Arc::new(Progress::default()),
            parent: crate::spans::Parent::default(),
        }
    }

    fn policy(retries: u32) -> DeliveryPolicy {
        DeliveryPolicy {
            retries,
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 },
            jitter: false,
            attempt_timeout: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially_then_succeed() {
        let fake = Fake::new(2, InvokeError::connection("refused"), Duration::ZERO);
        let svc = with_retry(build(fake.clone(), 4, Arc::default()), &policy(3));
        let inv = invocation(Duration::from_secs(5));
        let progress = Arc::clone(&inv.progress);
        let start = Instant::now();
        let r = svc.oneshot(inv).await;
        assert!(r.is_ok());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        assert_eq!(progress.attempts(), 3);
        // 100ms before the first retry, 200ms before the second.
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_exhausted() {
        let fake = Fake::new(10, InvokeError::status(503, bytes::Bytes::new(), None), Duration::ZERO);
        let svc = with_retry(build(fake.clone(), 4, Arc::default()), &policy(2));
        let err = svc.oneshot(invocation(Duration::from_secs(5))).await.unwrap_err();
        assert_eq!(err.status, Some(503));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let fake = Fake::new(10, InvokeError::status(404, bytes::Bytes::new(), None), Duration::ZERO);
        let svc = with_retry(build(fake.clone(), 4, Arc::default()), &policy(5));
        assert!(svc.oneshot(invocation(Duration::from_secs(5))).await.is_err());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_the_backoff() {
        let fake =
            Fake::new(1, InvokeError::status(429, bytes::Bytes::new(), Some(Duration::from_secs(7))), Duration::ZERO);
        let svc = with_retry(build(fake.clone(), 4, Arc::default()), &policy(3));
        let start = Instant::now();
        assert!(svc.oneshot(invocation(Duration::from_secs(5))).await.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_is_bounded_by_its_timeout() {
        let fake = Fake::new(0, InvokeError::connection("x"), Duration::from_secs(60));
        let svc = with_retry(build(fake.clone(), 4, Arc::default()), &policy(1));
        let start = Instant::now();
        let err = svc.oneshot(invocation(Duration::from_millis(500))).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // two attempts of 500ms and one 100ms backoff
        assert_eq!(start.elapsed(), Duration::from_millis(1100));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_limit_holds_and_queues_the_rest() {
        let fake = Fake::new(0, InvokeError::connection("x"), Duration::from_millis(100));
        let svc = build(fake.clone(), 2, Arc::default());
        let start = Instant::now();
        let calls = (0..6).map(|_| svc.clone().oneshot(invocation(Duration::from_secs(5))));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(fake.max_seen.load(Ordering::SeqCst), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn queue_wait_does_not_count_against_the_attempt_timeout() {
        let fake = Fake::new(0, InvokeError::connection("x"), Duration::from_millis(400));
        let svc = build(fake.clone(), 1, Arc::default());
        let calls = (0..3).map(|_| svc.clone().oneshot(invocation(Duration::from_millis(500))));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok), "the third call waited 800ms in the queue but ran 400ms");
    }
}
