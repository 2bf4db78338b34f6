//! Per-attempt timeout: each attempt gets `invocation.attempt_timeout`; on expiry the attempt's
//! future (and so the worker it holds) is dropped and a retryable `timeout` error is returned.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::runtime::{Invocation, InvokeError};

/// Layer for [`AttemptTimeout`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptTimeoutLayer;

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout { inner }
    }
}

/// Bounds each attempt by the invocation's `attempt_timeout` and sets its `deadline`.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
}

impl<S> Service<Invocation> for AttemptTimeout<S>
where
    S: Service<Invocation, Error = InvokeError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<S::Response, InvokeError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut inv: Invocation) -> Self::Future {
        let limit = inv.attempt_timeout;
        inv.deadline = chrono::Duration::from_std(limit).ok().map(|d| chrono::Utc::now() + d);
        let fut = self.inner.call(inv);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::timeout(limit)),
            }
        })
    }
}
