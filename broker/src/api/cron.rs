//! `/api/v1/cron`: the cron sources with their next fire times; pause, resume, and fire now.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_connectors::cron::{CronHandle, CronOpError, CronStatus};

use super::{ApiError, AppState};
use crate::cron_ops::CronSources;

/// Most fire times one request may ask for.
const MAX_NEXT: usize = 1000;

/// `?n=` for the next fire times.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    n: Option<usize>,
}

fn handle(state: &AppState, name: &str) -> Result<CronHandle, ApiError> {
    state.cron.get(name).ok_or_else(|| ApiError::not_found(format!("no cron source named {name:?}")))
}

impl From<CronOpError> for ApiError {
    fn from(e: CronOpError) -> Self {
        match &e {
            CronOpError::NotRunning { .. } => Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_running", e.to_string()),
            CronOpError::DispatcherClosed { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string())
            }
            CronOpError::State { .. } => Self::internal(&e),
        }
    }
}

fn status_json(name: &str, s: &CronStatus) -> Value {
    json!({"name": name, "paused": s.paused, "running": s.running, "last_fired": s.last_fired, "next": s.next})
}

/// Every cron source with its next fire time.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let items: Vec<Value> = state.cron.list().iter().map(|h| CronSources::describe(h, 1)).collect();
    Json(json!({"items": items}))
}

/// One cron source.
pub async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(CronSources::describe(&handle(&state, &name)?, 1)))
}

/// The next `n` (default 5) fire times.
pub async fn next(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<NextQuery>,
) -> Result<Json<Value>, ApiError> {
    let n = q.n.unwrap_or(5);
    if n == 0 || n > MAX_NEXT {
        return Err(ApiError::bad_request("bad_query", format!("n must be between 1 and {MAX_NEXT}")));
    }
    let h = handle(&state, &name)?;
    let next: Vec<String> =
        h.next(n).into_iter().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).collect();
    Ok(Json(json!({"name": name, "timezone": h.config().timezone, "next": next})))
}

/// Pauses the schedule (persisted; survives restarts).
pub async fn pause(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let s = handle(&state, &name)?.pause().await?;
    Ok(Json(status_json(&name, &s)))
}

/// Resumes the schedule from its next tick.
pub async fn resume(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let s = handle(&state, &name)?.resume().await?;
    Ok(Json(status_json(&name, &s)))
}

/// Fires one tick now (202: dispatched or skipped under `forbid`; the records tell the rest).
pub async fn fire(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let fired = handle(&state, &name)?.fire_now().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": name, "id": fired.id, "time": fired.time, "outcome": fired.outcome})),
    ))
}
