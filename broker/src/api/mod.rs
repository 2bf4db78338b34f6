//! The HTTP API: CloudEvents ingress, synchronous invoke, function management, event records and
//! health. One [`ApiError`] type gives every failure a stable JSON body that never leaks internals.

mod cron;
mod events;
mod functions;
mod logs;
mod replay;
mod s3;
mod sources;
mod triggers;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use switchyard_dispatcher::{DispatchError, Dispatcher};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The dispatcher.
    pub dispatcher: Dispatcher,
    /// Accepted bearer tokens (empty: no auth).
    pub tokens: Arc<Vec<String>>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// The running cron sources (list, pause, resume, fire now).
    pub cron: crate::cron_ops::CronSources,
    /// The HTTP endpoints of `s3` sources (`sns`, `webhook`) by source name.
    pub s3: crate::sources::S3Handles,
    /// The running sources (list, create, replace, delete).
    pub sources: crate::sources::Sources,
}

/// An API failure: status, a stable machine-readable code, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with a status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, extra: None }
    }
    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 500 without internals: the detail goes to the log only.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the broker log")
    }
    /// Adds fields to the error body.
    #[must_use]
    pub fn with(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match &e {
            DispatchError::Saturated { retry_after, .. } => {
                let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "saturated", e.to_string());
                err.retry_after = Some(*retry_after);
                err
            }
            DispatchError::UnknownFunction(_) => Self::not_found(e.to_string()),
            DispatchError::NotReady { .. } => Self::new(StatusCode::CONFLICT, "not_ready", e.to_string()),
            DispatchError::ShuttingDown => Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string()),
            DispatchError::Record(_) => Self::internal(&e),
            DispatchError::NotReplayable { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "not_replayable", e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let (Some(extra), Some(obj)) = (self.extra, body.as_object_mut()) {
            if let Some(map) = extra.as_object() {
                for (k, v) in map {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/events", post(events::ingest))
        .route("/api/v1/functions", get(functions::list).post(functions::create))
        .route("/api/v1/functions/{name}", get(functions::get_one).put(functions::update).delete(functions::delete))
        .route("/api/v1/functions/{name}/logs", get(logs::stream))
        .route("/api/v1/functions/invoke/{name}", post(functions::invoke_post).get(functions::invoke_get))
        .route("/api/v1/triggers", get(triggers::list).post(triggers::create))
        .route("/api/v1/triggers/{name}", get(triggers::get_one).put(triggers::update).delete(triggers::delete))
        .route("/api/v1/sources", get(sources::list))
        .route("/api/v1/sources/{name}", get(sources::get_one).put(sources::put).delete(sources::delete))
        .route("/api/v3/events", get(events::list))
        .route("/api/v3/events/{id}", get(events::get_one))
        .route("/api/v1/replay", post(replay::replay))
        .route("/api/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/v1/cron", get(cron::list))
        .route("/api/v1/cron/{name}", get(cron::get_one))
        .route("/api/v1/cron/{name}/next", get(cron::next))
        .route("/api/v1/cron/{name}/pause", post(cron::pause))
        .route("/api/v1/cron/{name}/resume", post(cron::resume))
        .route("/api/v1/cron/{name}/fire", post(cron::fire))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        // Authenticated by the source itself (webhook token, SNS signature), not server.tokens.
        .route("/ingest/s3/{source}", post(s3::ingest))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// Prometheus metrics in the OpenMetrics text format.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.dispatcher.encode_metrics(),
    )
        .into_response()
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|p| state.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), p.as_bytes())));
    if ok {
        next.run(req).await
    } else {
        let mut resp =
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token").into_response();
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.dispatcher.is_closing() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "shutting down").into_response();
    }
    if !state.dispatcher.store().ping().await {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "records store does not answer")
            .into_response();
    }
    Json(json!({"status": "ready"})).into_response()
}

async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(state.dispatcher.stats()).unwrap_or_default())
}

/// Maps axum's body-limit rejection to 413 with our error body.
pub fn body_error(e: axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body exceeds {limit} bytes"))
    } else {
        ApiError::bad_request("bad_body", e.body_text())
    }
}
