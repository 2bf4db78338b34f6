//! `POST /api/v1/replay`: select recorded events (by id, or by function, status, type, error kind,
//! dead-letter flag and time range) and invoke their functions again, at a bounded rate. Each replay
//! gets a new record whose `replay_of` names the original. `dry_run` only lists what would run.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_dispatcher::records::RecordQuery;
use switchyard_dispatcher::DispatchError;
use switchyard_schemas::{EventRecord, Status};
use uuid::Uuid;

use super::events::{parse_error_kind, parse_status, parse_time};
use super::{ApiError, AppState};

/// Most records one request replays.
pub const MAX_REPLAY: u32 = 10_000;
/// Default replays started per second.
const DEFAULT_RATE: f64 = 50.0;

/// The request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Exact records.
    #[serde(default)]
    ids: Vec<String>,
    function: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    error: Option<String>,
    dead_lettered: Option<bool>,
    since: Option<String>,
    until: Option<String>,
    /// At most this many records (newest matching ones; replayed oldest first). Default 100.
    limit: Option<u32>,
    /// Replays started per second. Default 50.
    rate: Option<f64>,
    /// List what would be replayed without invoking anything.
    #[serde(default)]
    dry_run: bool,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad_replay", message)
}

/// Selects and replays.
pub async fn replay(
    State(state): State<AppState>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    let rate = req.rate.unwrap_or(DEFAULT_RATE);
    if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
        return Err(bad("rate: must be more than 0 and at most 10000 per second"));
    }
    let limit = req.limit.unwrap_or(100);
    if !(1..=MAX_REPLAY).contains(&limit) {
        return Err(bad(format!("limit: must be between 1 and {MAX_REPLAY}")));
    }
    let store = state.dispatcher.store();
    let mut missing = Vec::new();
    let mut selected: Vec<EventRecord> = Vec::new();
    if req.ids.is_empty() {
        let q = RecordQuery {
            function: req.function,
            status: req.status.as_deref().map(parse_status).transpose()?,
            event_type: req.event_type,
            error_kind: req.error.as_deref().map(parse_error_kind).transpose()?,
            dead_lettered: req.dead_lettered,
            since: req.since.map(|t| parse_time("since", &t)).transpose()?,
            until: req.until.map(|t| parse_time("until", &t)).transpose()?,
            before: None,
            after: None,
            limit: 1000,
        };
        let filtered = q.function.is_some()
            || q.status.is_some()
            || q.event_type.is_some()
            || q.error_kind.is_some()
            || q.dead_lettered.is_some()
            || q.since.is_some();
        if !filtered {
            return Err(bad(
                "select records with ids, or at least one of function, status, type, error, dead_lettered, since",
            ));
        }
        // Page through newest first until `limit` terminal records are found.
        let mut q = q;
        loop {
            let page = store.list(&q).await.map_err(|e| ApiError::internal(&e))?;
            let full = page.len() == 1000;
            q.before = page.last().map(|r| r.id);
            selected.extend(page.into_iter().filter(|r| r.status.is_terminal()));
            if !full || selected.len() >= limit as usize {
                break;
            }
        }
        selected.truncate(limit as usize);
        selected.reverse(); // oldest first
    } else {
        if req.ids.len() > limit as usize {
            return Err(bad(format!("ids: {} given, more than limit {limit}", req.ids.len())));
        }
        for id in &req.ids {
            let uuid = Uuid::parse_str(id).map_err(|_| bad(format!("ids: {id:?} is not a record id")))?;
            match store.get(uuid).await.map_err(|e| ApiError::internal(&e))? {
                Some(r) => selected.push(r),
                None => missing.push(id.clone()),
            }
        }
    }
    let not_replayable = |r: &EventRecord| -> Option<String> {
        if r.status == Status::Pending {
            Some("still PENDING".to_owned())
        } else if r.replayable_event().is_none() {
            Some("the event was over records.replay_bytes when recorded and was not kept".to_owned())
        } else if state.dispatcher.function(&r.function).is_none() {
            Some(format!("function {:?} no longer exists", r.function))
        } else {
            None
        }
    };
    if req.dry_run {
        let items: Vec<Value> = selected
            .iter()
            .map(|r| {
                json!({"id": r.id, "function": r.function, "trigger": r.trigger, "status": r.status,
                       "event_id": r.event_id, "event_type": r.event_type, "received_at": r.received_at,
                       "not_replayable": not_replayable(r)})
            })
            .collect();
        return Ok(Json(json!({"dry_run": true, "selected": items.len(), "items": items, "missing": missing})));
    }
    let mut skipped = Vec::new();
    let mut runs = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let count = selected.len();
    for (i, r) in selected.into_iter().enumerate() {
        if let Some(reason) = not_replayable(&r) {
            skipped.push(json!({"id": r.id, "reason": reason}));
            continue;
        }
        tick.tick().await;
        let dispatcher = state.dispatcher.clone();
        runs.spawn(async move { (i, r.id, dispatcher.replay(&r).await) });
    }
    let mut replayed = Vec::new();
    while let Some(done) = runs.join_next().await {
        let Ok((i, original, result)) = done else { continue };
        match result {
            Ok(res) => replayed.push((
                i,
                json!({"original": original, "record": res.record.id, "status": res.record.status,
                       "error": res.record.error_message}),
            )),
            Err(DispatchError::NotReplayable { reason, .. }) => skipped.push(json!({"id": original, "reason": reason})),
            Err(e) => skipped.push(json!({"id": original, "reason": e.to_string()})),
        }
    }
    replayed.sort_by_key(|(i, _)| *i);
    let replayed: Vec<Value> = replayed.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({
        "dry_run": false, "selected": count, "replayed": replayed, "skipped": skipped, "missing": missing
    })))
}
