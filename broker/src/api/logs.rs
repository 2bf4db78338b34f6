//! `GET /api/v1/functions/{name}/logs`: a function's captured output as server-sent events, live.
//! Each invocation that becomes terminal (on any replica sharing the store) is one `record` event
//! whose data is the record as JSON (with `logs`). The stream tails the records store, so it sees
//! every replica's invocations; an invocation still running is sent once it finishes.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use switchyard_dispatcher::records::{RecordQuery, RecordStore};
use switchyard_schemas::EventRecord;
use uuid::Uuid;

use super::{ApiError, AppState};

/// How often the store is read for new records.
const POLL: Duration = Duration::from_millis(200);

struct Tail {
    store: RecordStore,
    function: String,
    cursor: Uuid,
    pending: BTreeSet<Uuid>,
    ready: VecDeque<EventRecord>,
}

impl Tail {
    /// Reads what finished since the last look: new records after the cursor, and records that were
    /// still running then.
    async fn poll(&mut self) {
        let q = RecordQuery {
            function: Some(self.function.clone()),
            after: Some(self.cursor),
            limit: 200,
            ..RecordQuery::default()
        };
        match self.store.list(&q).await {
            Ok(page) => {
                for r in page {
                    self.cursor = r.id;
                    if r.status.is_terminal() {
                        self.ready.push_back(r);
                    } else {
                        self.pending.insert(r.id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "log stream: records not readable"),
        }
        for id in self.pending.clone() {
            match self.store.get(id).await {
                Ok(Some(r)) if r.status.is_terminal() => {
                    self.pending.remove(&id);
                    self.ready.push_back(r);
                }
                Ok(None) => {
                    self.pending.remove(&id);
                }
                _ => {}
            }
        }
    }
}

/// Query of the log stream.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Start after this record id (default: now), so a client that listed recent logs misses nothing.
    after: Option<String>,
}

/// Streams the function's invocations (with their logs) as they finish.
pub async fn stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    if state.dispatcher.function(&name).is_none() {
        return Err(ApiError::not_found(format!("no function named {name:?}")));
    }
    let cursor = match p.after {
        Some(a) => Uuid::parse_str(&a).map_err(|_| ApiError::bad_request("bad_query", "after: not a record id"))?,
        None => Uuid::now_v7(),
    };
    let tail = Tail {
        store: state.dispatcher.store().clone(),
        function: name,
        cursor,
        pending: BTreeSet::new(),
        ready: VecDeque::new(),
    };
    let events = futures::stream::unfold(tail, |mut tail| async move {
        loop {
            if let Some(r) = tail.ready.pop_front() {
                let event = Event::default().event("record").id(r.id.to_string()).json_data(&r).unwrap_or_default();
                return Some((Ok(event), tail));
            }
            tokio::time::sleep(POLL).await;
            tail.poll().await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
