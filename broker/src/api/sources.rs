//! `/api/v1/sources`: list, show, create or replace (`PUT`), and delete message sources. A change is
//! applied on this replica (the source starts, or the old one drains and the new one starts, or it
//! drains and stops) and stored in the shared registry, so every replica applies it too. Sources of
//! the config file belong to the file: the API shows them but answers 409 to changing them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use switchyard_dispatcher::records::registry::Kind;
use switchyard_schemas::config::{check_name, FieldError, SourceConfig};

use super::functions::share;
use super::{body_error, ApiError, AppState};
use crate::sources::{Change, ChangeError, SourceInfo};

/// Keys whose values are secrets: shown as `***`.
const SECRET_KEYS: &[&str] = &["password", "key_password", "token", "secret_access_key", "session_token"];

/// The configuration with its secrets (passwords, tokens, a URL's password) replaced by `***`.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) && v.is_string() {
                    *v = Value::String("***".to_owned());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Ok(mut url) = reqwest::Url::parse(s) {
                if url.password().is_some() && url.set_password(Some("***")).is_ok() {
                    *s = url.to_string();
                }
            }
        }
        _ => {}
    }
}

fn show(info: &SourceInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    if let Some(config) = v.get_mut("config") {
        redact(config);
    }
    v
}

/// Every source (the config file's and the API's), by name.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"items": state.sources.list().iter().map(show).collect::<Vec<_>>()}))
}

/// One source.
pub async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let info = state.sources.get(&name).ok_or_else(|| ApiError::not_found(format!("no source named {name:?}")))?;
    Ok(Json(show(&info)))
}

/// A field error as the API answers it: `status`, code `invalid_source`, the message naming the field,
/// and the field itself.
fn invalid(status: StatusCode, e: &FieldError) -> ApiError {
    ApiError::new(status, "invalid_source", e.to_string()).with(json!({"field": e.field}))
}

/// Parses a body as a source configuration, the shape of a `sources[]` entry of the config file.
fn parse(body: &[u8]) -> Result<SourceConfig, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let not_a_source = |field: String, e: &serde_json::Error| {
        let mut message = e.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        invalid(StatusCode::BAD_REQUEST, &FieldError::new(field, message))
    };
    let config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "source".to_owned() } else { format!("source.{path}") };
        not_a_source(field, e.inner())
    })?;
    de.end().map_err(|e| not_a_source("source".to_owned(), &e))?;
    Ok(config)
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match &e {
            ChangeError::DefinedInConfig { .. } => Self::new(StatusCode::CONFLICT, "defined_in_config", e.to_string()),
            ChangeError::ShuttingDown => Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string()),
        }
    }
}

/// Creates (201) or replaces (200) a source. The body is a source as in the config file's `sources`,
/// as JSON. `400 invalid_source` when it is not one, `422 invalid_source` when a value is not
/// allowed (both with `field`), `409 defined_in_config` for a source of the config file. A
/// replacement answers once the old source has drained (at most `server.shutdown_grace`) and the new
/// one started.
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let config = parse(&body)?;
    if config.name() != name {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            &FieldError::new("source.name", format!("body says {:?}, path says {name:?}", config.name())),
        ));
    }
    check_name(&name, "source.name").map_err(|e| invalid(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
    config.validate("source").map_err(|e| invalid(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
    let json = serde_json::to_string(&config).unwrap_or_default();
    let change = state.sources.upsert(config).await?;
    share(&state, Kind::Source, &name, Some(&json)).await?;
    let mut body = state.sources.get(&name).map(|i| show(&i)).unwrap_or_default();
    let (status, what) = match change {
        Change::Created => (StatusCode::CREATED, "created"),
        Change::Replaced => (StatusCode::OK, "replaced"),
        Change::Unchanged => (StatusCode::OK, "unchanged"),
    };
    if let Some(obj) = body.as_object_mut() {
        obj.insert("change".to_owned(), what.into());
    }
    Ok((status, Json(body)))
}

/// Drains and removes a source created through the API (`409 defined_in_config` for one of the
/// config file).
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if !state.sources.remove(&name).await? {
        return Err(ApiError::not_found(format!("no source named {name:?}")));
    }
    share(&state, Kind::Source, &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_other_values_kept() {
        let mut v = json!({
            "type": "amqp", "url": "amqp://guest:secret@127.0.0.1:5672/%2f", "queue": "q",
            "nested": {"password": "p", "token": "t", "user": "u"},
            "servers": ["nats://127.0.0.1:4222", "nats://u:pw@10.0.0.1:4222"],
        });
        redact(&mut v);
        assert_eq!(v["url"], "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(v["nested"], json!({"password": "***", "token": "***", "user": "u"}));
        assert_eq!(v["servers"], json!(["nats://127.0.0.1:4222", "nats://u:***@10.0.0.1:4222"]));
        assert_eq!(v["queue"], "q");
    }

    #[test]
    fn a_body_that_is_not_a_source_names_the_field() {
        let e = parse(br#"{"type": "nats", "name": "n", "subjects": "one"}"#).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_source"));
        assert!(e.message.contains("expected a sequence"), "{}", e.message);
        assert!(e.extra.as_ref().unwrap()["field"].as_str().unwrap().starts_with("source"), "{:?}", e.extra);
        let e = parse(br#"{"type": "cron", "name": "n", "schedule": "* * * * *"} trailing"#).unwrap_err();
        assert_eq!((e.status, e.extra), (StatusCode::BAD_REQUEST, Some(json!({"field": "source"}))));
        let e = parse(br#"{"type": "carrier_pigeon", "name": "n"}"#).unwrap_err();
        assert_eq!(e.extra, Some(json!({"field": "source.type"})));
        assert!(e.message.contains("carrier_pigeon"), "{}", e.message);
    }
}
