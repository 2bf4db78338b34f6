//! One span per attempt (`crate::spans`), carrying the function (`faas.invoked_name`), trigger, attempt number
//! and record id (the event's id is on the receive span of the same trace); the attempt is counted in
//! the invocation's shared progress.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use opentelemetry::trace::SpanKind;
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
        // OpenTelemetry FaaS conventions: a client span invoking a function, a child of the delivery's
        // route span, ending when the attempt does (see `crate::spans`; none when export is off).
        let mut span = inv.parent.child("attempt", SpanKind::Client);
        span.fill(|f| {
            let mut id = uuid::Uuid::encode_buffer();
            f.name(&["invoke ", &inv.function])
                .attr("faas.invoked_name", &*inv.function)
                .attr("faas.invoked_provider", "other")
                .attr("faas.trigger", "pubsub")
                .attr("trigger", &*inv.trigger)
                .attr("attempt", i64::from(inv.attempt))
                .attr("record_id", &*inv.record_id.hyphenated().encode_lower(&mut id));
        });
        // When spans are exported, the function's traceparent names this attempt's span.
        if let Some(sc) = span.context() {
            inv.traceparent = crate::spans::traceparent(sc);
        }
        // What the failure's debug line names, kept only when that line can be logged.
        let who = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (std::sync::Arc::clone(&inv.function), inv.attempt, inv.record_id));
        let fut = self.inner.call(inv);
        Box::pin(async move {
            let result = fut.await;
            if let Err(e) = &result {
                if let Some((function, attempt, record)) = &who {
                    tracing::debug!(%function, attempt, %record, kind = %e.kind, retryable = e.is_retryable(), error = %e.message, "attempt failed");
                }
                span.fill(|f| {
                    f.error(&e.message);
                });
            }
            drop(span); // the attempt is over
            result
        })
    }
}
