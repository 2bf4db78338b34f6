//! `POST /ingest/s3/{source}`: the HTTP endpoint of `s3` sources with an `sns` or `webhook` input.
//! The source authenticates each request (bearer token or SNS signature) and answers once the
//! events it carried are terminal and recorded.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{body_error, ApiError, AppState};

/// Hands the request to the named source.
pub async fn ingest(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(handle) = state.s3.get(&source) else {
        return ApiError::not_found(format!("no s3 source with an sns or webhook input named {source:?}"))
            .into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(e, state.max_body_bytes).into_response(),
    };
    let reply = handle.handle(headers, body).await;
    (StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(reply.body)).into_response()
}
