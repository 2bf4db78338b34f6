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
        // OpenTelemetry FaaS conventions (a client span invoking a function).
        let span = tracing::debug_span!(
            "attempt",
            otel.name = %format_args!("invoke {}", inv.function),
            otel.kind = "client",
            faas.invoked_name = &*inv.function,
            faas.invoked_provider = "other",
            faas.trigger = "pubsub",
            function = &*inv.function,
            trigger = &*inv.trigger,
            event_id = inv.event.id.as_str(),
            attempt = inv.attempt,
            record_id = %inv.record_id,
        );
        // When spans are exported, the function's traceparent names this attempt's span.
        {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                inv.traceparent = format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
            }
        }
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
