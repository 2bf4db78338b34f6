//! `POST /events` (CloudEvents over HTTP in binary, structured and batched mode) and the records
//! API `GET /api/v3/events[/{id}]`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_connectors::Delivery;
use switchyard_dispatcher::records::RecordQuery;
use switchyard_dispatcher::DispatchError;
use switchyard_schemas::{http_binding, ErrorKind, Status};
use uuid::Uuid;

use super::{body_error, ApiError, AppState};

/// Accepts one event (binary or structured mode) or a batch; 202 with the accepted ids.
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let mut events = http_binding::from_http(&headers, &body)
        .map_err(|e| ApiError::bad_request("invalid_event", e.to_string()).with(json!({"attribute": e.attribute})))?;
    // A W3C traceparent on the request continues into events that carry none of their own.
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        for e in &mut events {
            e.extensions
                .entry("traceparent".to_owned())
                .or_insert_with(|| switchyard_schemas::ExtensionValue::String(tp.to_owned()));
        }
    }
    let mut accepted = Vec::with_capacity(events.len());
    for event in events {
        state.dispatcher.metrics().received("http");
        let span = crate::telemetry::receive_span("http", "http", &event);
        let id = event.id.clone();
        let (delivery, _ack) = Delivery::new(event);
        match state.dispatcher.try_dispatch_traced(delivery, span) {
            Ok(()) => accepted.push(id),
            Err(e @ DispatchError::Saturated { .. }) if !accepted.is_empty() => {
                // Earlier events of the batch are accepted and will run; say which.
                return Err(ApiError::from(e).with(json!({"accepted": accepted, "rejected_from": id})));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": accepted}))))
}

/// Query parameters of `GET /api/v3/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    function: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    error: Option<String>,
    dead_lettered: Option<bool>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// Parses a status filter.
pub fn parse_status(text: &str) -> Result<Status, ApiError> {
    text.parse::<Status>().map_err(|e| ApiError::bad_request("bad_query", format!("status: {e}")))
}

/// Parses an error-kind filter (`timeout`, `handler`, ...).
pub fn parse_error_kind(text: &str) -> Result<ErrorKind, ApiError> {
    text.parse::<ErrorKind>().map_err(|e| ApiError::bad_request("bad_query", format!("error: {e}")))
}

/// Parses an RFC 3339 time or a duration back from now (`15m`, `1h`, `7d`).
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = switchyard_schemas::duration::parse(text).map_err(|_| {
        ApiError::bad_request(
            "bad_query",
            format!("{field}: expected an RFC 3339 time or a duration like 1h, got {text:?}"),
        )
    })?;
    let ago = chrono::Duration::from_std(ago)
        .map_err(|_| ApiError::bad_request("bad_query", format!("{field}: too far back")))?;
    Ok(Utc::now() - ago)
}

/// Lists records, newest first, with keyset pagination (`cursor` = the previous `next_cursor`).
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("bad_query", "limit: must be between 1 and 1000"));
    }
    let q = RecordQuery {
        function: p.function,
        status: p.status.as_deref().map(parse_status).transpose()?,
        event_type: p.event_type,
        error_kind: p.error.as_deref().map(parse_error_kind).transpose()?,
        dead_lettered: p.dead_lettered,
        since: p.since.map(|t| parse_time("since", &t)).transpose()?,
        until: p.until.map(|t| parse_time("until", &t)).transpose()?,
        before: p
            .cursor
            .map(|c| Uuid::parse_str(&c))
            .transpose()
            .map_err(|_| ApiError::bad_request("bad_query", "cursor: not a cursor from a previous page"))?,
        after: p
            .after
            .map(|c| Uuid::parse_str(&c))
            .transpose()
            .map_err(|_| ApiError::bad_request("bad_query", "after: not a record id"))?,
        limit,
    };
    let items = state.dispatcher.store().list(&q).await.map_err(|e| ApiError::internal(&e))?;
    let next = (items.len() == limit as usize).then(|| items.last().map(|r| r.id.to_string())).flatten();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

/// One record.
pub async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let uuid =
        Uuid::parse_str(&id).map_err(|_| ApiError::bad_request("bad_id", format!("{id:?} is not a record id")))?;
    let record = state.dispatcher.store().get(uuid).await.map_err(|e| ApiError::internal(&e))?;
    let record = record.ok_or_else(|| ApiError::not_found(format!("no record {id}")))?;
    Ok(Json(serde_json::to_value(record).unwrap_or_default()))
}
