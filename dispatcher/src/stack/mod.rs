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

/// Adapts a [`Runtime`] to a tower service.
#[derive(Clone)]
pub struct RuntimeService(pub Arc<dyn Runtime>);

impl Service<Invocation> for RuntimeService {
    type Response = Response;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<Response, InvokeError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, inv: Invocation) -> Self::Future {
        let runtime = Arc::clone(&self.0);
        Box::pin(async move { runtime.invoke(&inv).await })
    }
}

/// Builds a function's stack (without retry, which depends on the trigger's policy; see
/// [`with_retry`]).
pub fn build(runtime: Arc<dyn Runtime>, max_concurrency: usize) -> FunctionService {
    let svc = ServiceBuilder::new()
        .layer(trace::TraceLayer)
        .concurrency_limit(max_concurrency)
        .layer(timeout::AttemptTimeoutLayer)
        .service(RuntimeService(runtime));
    BoxCloneSyncService::new(svc)
}

/// Wraps a function's stack in the retry layer for one trigger's delivery policy.
pub fn with_retry(inner: FunctionService, policy: &switchyard_schemas::config::DeliveryPolicy) -> FunctionService {
    BoxCloneSyncService::new(tower::retry::Retry::new(retry::RetryPolicy::new(policy), inner))
}
