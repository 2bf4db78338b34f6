//! One tracing span per attempt, carrying the function (`faas.invoked_name`), trigger, attempt number
//! and record id (the event's id is on the receive span of the same trace); the attempt is counted in
//! the invocation's shared progress.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

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
        // OpenTelemetry FaaS conventions (a client span invoking a function). Its parent (the
        // delivery's span) is given explicitly, and neither span is entered on each poll: with export
        // on, every enter and exit is a span lookup and a clock read. It ends when the attempt does.
        let span = tracing::debug_span!(
            parent: &inv.parent_span,
            "attempt",
            otel.name = %format_args!("invoke {}", inv.function),
            otel.kind = "client",
            faas.invoked_name = &*inv.function,
            faas.invoked_provider = "other",
            faas.trigger = "pubsub",
            trigger = &*inv.trigger,
            attempt = inv.attempt,
            record_id = %inv.record_id,
        );
        // When spans are exported, the function's traceparent names this attempt's span.
        if let Some(sc) = crate::spans::context_of(&span) {
            inv.traceparent = crate::spans::traceparent(&sc);
        }
        let fut = self.inner.call(inv);
        Box::pin(async move {
            let result = fut.await;
            if let Err(e) = &result {
                tracing::debug!(parent: &span, kind = %e.kind, retryable = e.is_retryable(), error = %e.message, "attempt failed");
            }
            drop(span); // the attempt is over
            result
        })
    }
}
