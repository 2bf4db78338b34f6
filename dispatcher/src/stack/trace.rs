//! One tracing span per attempt, carrying function, trigger, event id and attempt number; the
//! attempt is counted in the invocation's shared progress.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::runtime::{Invocation, InvokeError};

/// Layer for [`Trace`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

/// Opens an `attempt` span around each call.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S> Service<Invocation> for Trace<S>
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
        inv.attempt = inv.progress.begin_attempt();
        let span = tracing::debug_span!(
            "attempt",
            function = %inv.function,
            trigger = %inv.trigger,
            event_id = %inv.event.id,
            attempt = inv.attempt,
        );
        let fut = {
            let _enter = span.enter();
            self.inner.call(inv)
        };
        Box::pin(
            async move {
                let result = fut.await;
                if let Err(e) = &result {
                    tracing::debug!(kind = %e.kind, retryable = e.is_retryable(), error = %e.message, "attempt failed");
                }
                result
            }
            .instrument(span),
        )
    }
}
