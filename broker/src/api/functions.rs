//! `/api/v1/functions`: list, get, create, update, delete, and synchronous invoke
//! (`POST` with a JSON body, `GET` with query parameters as the event's data).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use switchyard_dispatcher::{InvokeResult, RemoveError};
use switchyard_schemas::config::FunctionConfig;
use switchyard_schemas::{CloudEvent, Data, ErrorKind};

use super::{body_error, ApiError, AppState};
use switchyard_dispatcher::records::registry::Kind;

/// Stores a change in the shared registry so it survives restarts and reaches every replica. It is
/// already applied here; when the store refuses it, the caller is told (503) that only this replica has it.
pub async fn share(state: &AppState, kind: Kind, name: &str, config: Option<&str>) -> Result<(), ApiError> {
    state.dispatcher.store().registry_put(kind, name, config).await.map(drop).map_err(|e| {
        tracing::error!(%name, error = %e, "registry: change applied here but not stored");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!("{name:?} changed on this replica only: the store refused it ({e}); retry the request"),
        )
    })
}

/// Every function.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"items": state.dispatcher.functions()}))
}

/// One function.
pub async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let f =
        state.dispatcher.function(&name).ok_or_else(|| ApiError::not_found(format!("no function named {name:?}")))?;
    Ok(Json(serde_json::to_value(f).unwrap_or_default()))
}

fn parse_function(body: &[u8]) -> Result<FunctionConfig, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_function", format!("function: {e}")))
}

/// `?wait=false`: answer 202 as soon as the deployment starts instead of waiting for its outcome.
#[derive(Debug, serde::Deserialize)]
pub struct DeployQuery {
    #[serde(default = "yes")]
    wait: bool,
}

const fn yes() -> bool {
    true
}

/// Creates a function (409 when the name is taken).
pub async fn create(
    State(state): State<AppState>,
    Query(q): Query<DeployQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let config = parse_function(&body)?;
    if let Some(f) = state.dispatcher.function(&config.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("function {:?} exists (state {}); use PUT to update it", config.name, f.state),
        ));
    }
    deploy(&state, config, q.wait, StatusCode::CREATED).await
}

/// Replaces a function's configuration (the body's name must match the path).
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DeployQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let config = parse_function(&body)?;
    if config.name != name {
        return Err(ApiError::bad_request(
            "invalid_function",
            format!("name: body says {:?}, path says {name:?}", config.name),
        ));
    }
    if state.dispatcher.function(&name).is_none() {
        return Err(ApiError::not_found(format!("no function named {name:?}")));
    }
    deploy(&state, config, q.wait, StatusCode::OK).await
}

/// Validates (400, nothing changes), marks the deployment started (state `Creating` or `Deploying`),
/// then either waits for it (`ok` when Ready; 422 `deploy_failed` with the function in state `Error`)
/// or answers 202 at once and finishes it in the background. A deployed configuration is stored in
/// the shared registry.
async fn deploy(
    state: &AppState,
    config: FunctionConfig,
    wait: bool,
    ok: StatusCode,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = config.name.clone();
    let json = serde_json::to_string(&config).unwrap_or_default();
    let deployment =
        state.dispatcher.begin_deploy(config).map_err(|e| ApiError::bad_request("invalid_function", e.to_string()))?;
    let show = |state: &AppState| serde_json::to_value(state.dispatcher.function(&name)).unwrap_or_default();
    if !wait {
        let info = show(state);
        let state = state.clone();
        tokio::spawn(async move {
            match state.dispatcher.finish_deploy(deployment).await {
                Ok(_) => {
                    let _ = share(&state, Kind::Function, &name, Some(&json)).await;
                }
                Err(e) => tracing::warn!(function = %name, error = %e, "deployment failed (state Error)"),
            }
        });
        return Ok((StatusCode::ACCEPTED, Json(info)));
    }
    match state.dispatcher.finish_deploy(deployment).await {
        Ok(_) => {
            share(state, Kind::Function, &name, Some(&json)).await?;
            Ok((ok, Json(show(state))))
        }
        Err(e) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "deploy_failed", e.to_string())
            .with(json!({"function": show(state)}))),
    }
}

/// Deletes a function no trigger uses.
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    match state.dispatcher.remove_function(&name).await {
        Ok(()) => {
            share(&state, Kind::Function, &name, None).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e @ RemoveError::Unknown(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ RemoveError::InUse { .. }) => Err(ApiError::new(StatusCode::CONFLICT, "in_use", e.to_string())),
    }
}

fn invoke_event(data: Option<Data>) -> CloudEvent {
    let mut event = CloudEvent::new(uuid::Uuid::new_v4().to_string(), "/switchyard/invoke", "dev.switchyard.invoke");
    if data.is_some() {
        event.datacontenttype = Some("application/json".to_owned());
    }
    event.data = data;
    event
}

/// Invokes with a JSON body as the event's data.
pub async fn invoke_post(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("request body is not JSON: {e}")))?;
        Some(Data::Json(v))
    };
    invoke(&state, &name, invoke_event(data)).await
}

/// Invokes with the query parameters (as a JSON object of strings) as the event's data.
pub async fn invoke_get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let data = Data::Json(serde_json::to_value(params).unwrap_or_default());
    invoke(&state, &name, invoke_event(Some(data))).await
}

async fn invoke(state: &AppState, name: &str, event: CloudEvent) -> Result<Response, ApiError> {
    let InvokeResult { record, response } = state.dispatcher.invoke(name, event).await?;
    let record_header = (HeaderName::from_static("x-switchyard-record-id"), record.id.to_string());
    match response {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
            let mut resp = (status, r.body).into_response();
            for (k, v) in &r.headers {
                let skip = matches!(k.as_str(), "content-length" | "transfer-encoding" | "connection");
                if let (false, Ok(k), Ok(v)) = (skip, HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
                    resp.headers_mut().insert(k, v);
                }
            }
            if let Ok(v) = HeaderValue::from_str(&record_header.1) {
                resp.headers_mut().insert(record_header.0, v);
            }
            Ok(resp)
        }
        Err(e) => {
            // A function that answered with a failing status: pass its answer through.
            if let (Some(status), Some(body)) = (e.status, e.body.clone()) {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut resp = (status, body).into_response();
                if let Ok(v) = HeaderValue::from_str(&record_header.1) {
                    resp.headers_mut().insert(record_header.0, v);
                }
                return Ok(resp);
            }
            let (status, code) = match e.kind {
                ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "function_timeout"),
                ErrorKind::Connection => (StatusCode::BAD_GATEWAY, "function_unreachable"),
                ErrorKind::Handler => (StatusCode::INTERNAL_SERVER_ERROR, "function_error"),
                ErrorKind::Crashed => (StatusCode::BAD_GATEWAY, "function_crashed"),
                ErrorKind::Init => (StatusCode::INTERNAL_SERVER_ERROR, "function_init_failed"),
                ErrorKind::BadResponse | ErrorKind::Status => (StatusCode::BAD_GATEWAY, "function_bad_response"),
                ErrorKind::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                ErrorKind::Cancelled => (StatusCode::CONFLICT, "cancelled"),
                ErrorKind::Decode => (StatusCode::BAD_REQUEST, "undecodable_event"),
            };
            let mut resp = ApiError::new(status, code, e.message)
                .with(json!({"record_id": record.id, "logs": record.logs}))
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&record_header.1) {
                resp.headers_mut().insert(record_header.0, v);
            }
            Ok(resp)
        }
    }
}
