//! `/api/v1/triggers`: list, get, create, replace and delete triggers. Changes are stored in the shared
//! registry and reach every replica.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use switchyard_dispatcher::records::registry::Kind;
use switchyard_schemas::config::TriggerConfig;

use super::functions::share;
use super::{body_error, ApiError, AppState};

/// Every trigger, in routing order.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"items": state.dispatcher.triggers()}))
}

/// One trigger.
pub async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let t = state.dispatcher.trigger(&name).ok_or_else(|| ApiError::not_found(format!("no trigger named {name:?}")))?;
    Ok(Json(serde_json::to_value(t).unwrap_or_default()))
}

fn parse(body: &[u8]) -> Result<TriggerConfig, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_trigger", format!("trigger: {e}")))
}

async fn set(state: &AppState, trigger: TriggerConfig) -> Result<Value, ApiError> {
    let name = trigger.name.clone();
    let json = serde_json::to_string(&trigger).unwrap_or_default();
    state.dispatcher.upsert_trigger(trigger).map_err(|e| ApiError::bad_request("invalid_trigger", e.to_string()))?;
    share(state, Kind::Trigger, &name, Some(&json)).await?;
    Ok(serde_json::to_value(state.dispatcher.trigger(&name)).unwrap_or_default())
}

/// Creates a trigger (409 when the name is taken).
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let trigger = parse(&body)?;
    if state.dispatcher.trigger(&trigger.name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("trigger {:?} exists; use PUT to replace it", trigger.name),
        ));
    }
    Ok((StatusCode::CREATED, Json(set(&state, trigger).await?)))
}

/// Replaces a trigger (the body's name must match the path).
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let trigger = parse(&body)?;
    if trigger.name != name {
        return Err(ApiError::bad_request(
            "invalid_trigger",
            format!("name: body says {:?}, path says {name:?}", trigger.name),
        ));
    }
    if state.dispatcher.trigger(&name).is_none() {
        return Err(ApiError::not_found(format!("no trigger named {name:?}")));
    }
    Ok(Json(set(&state, trigger).await?))
}

/// Deletes a trigger.
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if !state.dispatcher.remove_trigger(&name) {
        return Err(ApiError::not_found(format!("no trigger named {name:?}")));
    }
    share(&state, Kind::Trigger, &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
