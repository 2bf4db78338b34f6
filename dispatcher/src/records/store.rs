//! The records store on SQLite (WAL mode): migrations, batched upserts in one transaction, and the
//! queries behind `GET /api/v3/events` with keyset pagination on the UUIDv7 record id.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use switchyard_schemas::record::Captured;
use switchyard_schemas::{ErrorKind, EventRecord, Status};
use uuid::Uuid;

/// A store failure, naming the store URL or the operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or migrated.
    #[error("store {url}: {source}")]
    Open {
        /// The store URL.
        url: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("records {operation}: {source}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A stored row could not be read back.
    #[error("record {id}: corrupt column {column}: {message}")]
    Corrupt {
        /// The record id.
        id: String,
        /// The column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Filters for listing records; all are optional and combine with AND.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    /// Only this function.
    pub function: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this CloudEvent type.
    pub event_type: Option<String>,
    /// Only records received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records received before this time.
    pub until: Option<DateTime<Utc>>,
    /// Keyset cursor: only records older than this id (the previous page's `next_cursor`).
    pub before: Option<Uuid>,
    /// Only records newer than this id, oldest first (for following new records).
    pub after: Option<Uuid>,
    /// Page size (1..=1000).
    pub limit: u32,
}

/// Rows per multi-row INSERT (27 parameters each, well under SQLite's 32766).
const ROWS_PER_INSERT: usize = 100;

/// The SQLite records store.
#[derive(Debug, Clone)]
pub struct RecordStore {
    pool: SqlitePool,
}

/// Formats a time the way it is stored.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl RecordStore {
    /// Opens (creating when missing) and migrates the store at `url` (`sqlite://PATH` or
    /// `sqlite::memory:`).
    ///
    /// # Errors
    /// [`StoreError::Open`] naming the URL.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open { url: url.to_owned(), source };
        let memory = url.contains(":memory:");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory { None } else { Some(Duration::from_secs(600)) })
            .max_lifetime(if memory { None } else { Some(Duration::from_secs(3600)) })
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        let store = Self { pool };
        store.migrate().await.map_err(open_err)?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        sqlx::query("CREATE TABLE IF NOT EXISTS switchyard_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, name, sql) in switchyard_schemas::SQLITE_MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM switchyard_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_none() {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO switchyard_migrations (version, name, applied_at) VALUES (?, ?, ?)")
                    .bind(version)
                    .bind(name)
                    .bind(ts(Utc::now()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Writes records (insert or replace by id) in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Query`]; nothing of the batch is written then.
    pub async fn upsert_batch(&self, records: &[EventRecord]) -> Result<(), StoreError> {
        let q = |source| StoreError::Query { operation: "write", source };
        // Only the newest version of each record in the batch is written (PENDING then SUCCESS
        // queued together become one row write).
        let mut latest: std::collections::HashMap<Uuid, usize> =
            std::collections::HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            latest.insert(r.id, i);
        }
        let mut keep: Vec<usize> = latest.into_values().collect();
        keep.sort_unstable();
        let mut tx = self.pool.begin().await.map_err(q)?;
        for chunk in keep.chunks(ROWS_PER_INSERT) {
            let mut qb: sqlx::QueryBuilder<'_, sqlx::Sqlite> = sqlx::QueryBuilder::new(
                "INSERT INTO event_records (id, event_id, event_source, event_type, event_subject, trigger_name,
                    function_name, status, attempts, received_at, started_at, finished_at, duration_ms, request,
                    request_base64, request_size, request_truncated, response_status, response, response_base64,
                    response_size, response_truncated, error_kind, error_message, dead_lettered, trace_id, logs,
                    cold_start, init_ms) ",
            );
            qb.push_values(chunk.iter().map(|&i| &records[i]), |mut b, r| {
                b.push_bind(r.id.to_string())
                    .push_bind(&r.event_id)
                    .push_bind(&r.event_source)
                    .push_bind(&r.event_type)
                    .push_bind(&r.event_subject)
                    .push_bind(&r.trigger)
                    .push_bind(&r.function)
                    .push_bind(r.status.as_str())
                    .push_bind(i64::from(r.attempts))
                    .push_bind(ts(r.received_at))
                    .push_bind(r.started_at.map(ts))
                    .push_bind(r.finished_at.map(ts))
                    .push_bind(r.duration_ms)
                    .push_bind(&r.request.body)
                    .push_bind(r.request.base64)
                    .push_bind(i64::try_from(r.request.size).unwrap_or(i64::MAX))
                    .push_bind(r.request.truncated)
                    .push_bind(r.response_status.map(i64::from))
                    .push_bind(r.response.as_ref().map(|c| c.body.as_str()))
                    .push_bind(r.response.as_ref().is_some_and(|c| c.base64))
                    .push_bind(r.response.as_ref().map(|c| i64::try_from(c.size).unwrap_or(i64::MAX)))
                    .push_bind(r.response.as_ref().is_some_and(|c| c.truncated))
                    .push_bind(r.error_kind.map(ErrorKind::as_str))
                    .push_bind(&r.error_message)
                    .push_bind(r.dead_lettered)
                    .push_bind(&r.trace_id)
                    .push_bind(&r.logs)
                    .push_bind(r.cold_start)
                    .push_bind(r.init_ms);
            });
            qb.push(
                " ON CONFLICT(id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                    started_at = excluded.started_at, finished_at = excluded.finished_at,
                    duration_ms = excluded.duration_ms, response_status = excluded.response_status,
                    response = excluded.response, response_base64 = excluded.response_base64,
                    response_size = excluded.response_size, response_truncated = excluded.response_truncated,
                    error_kind = excluded.error_kind, error_message = excluded.error_message,
                    dead_lettered = excluded.dead_lettered, trace_id = excluded.trace_id, logs = excluded.logs,
                    cold_start = excluded.cold_start, init_ms = excluded.init_ms",
            );
            qb.build().execute(&mut *tx).await.map_err(q)?;
        }
        tx.commit().await.map_err(q)
    }

    /// One record by id.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails or the row is corrupt.
    pub async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM event_records WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| StoreError::Query { operation: "get", source })?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// Records matching `q`, newest first.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails or a row is corrupt.
    pub async fn list(&self, q: &RecordQuery) -> Result<Vec<EventRecord>, StoreError> {
        let mut sql = String::from("SELECT * FROM event_records WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(f) = &q.function {
            sql.push_str(" AND function_name = ?");
            args.push(f.clone());
        }
        if let Some(s) = q.status {
            sql.push_str(" AND status = ?");
            args.push(s.as_str().to_owned());
        }
        if let Some(t) = &q.event_type {
            sql.push_str(" AND event_type = ?");
            args.push(t.clone());
        }
        if let Some(t) = q.since {
            sql.push_str(" AND received_at >= ?");
            args.push(ts(t));
        }
        if let Some(t) = q.until {
            sql.push_str(" AND received_at < ?");
            args.push(ts(t));
        }
        if let Some(b) = q.before {
            sql.push_str(" AND id < ?");
            args.push(b.to_string());
        }
        if let Some(a) = q.after {
            sql.push_str(" AND id > ?");
            args.push(a.to_string());
        }
        sql.push_str(if q.after.is_some() { " ORDER BY id ASC LIMIT ?" } else { " ORDER BY id DESC LIMIT ?" });
        let mut query = sqlx::query(&sql);
        for a in &args {
            query = query.bind(a);
        }
        let rows = query
            .bind(i64::from(q.limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StoreError::Query { operation: "list", source })?;
        rows.iter().map(from_row).collect()
    }

    /// Number of records per status (for tests, readiness and the CLI).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn count(&self, status: Option<Status>) -> Result<i64, StoreError> {
        let q = match status {
            Some(s) => sqlx::query_scalar("SELECT COUNT(*) FROM event_records WHERE status = ?").bind(s.as_str()),
            None => sqlx::query_scalar("SELECT COUNT(*) FROM event_records"),
        };
        q.fetch_one(&self.pool).await.map_err(|source| StoreError::Query { operation: "count", source })
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn from_row(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    let id_text: String = row.get("id");
    let corrupt = |column: &'static str, message: String| StoreError::Corrupt { id: id_text.clone(), column, message };
    let time = |column: &'static str| -> Result<Option<DateTime<Utc>>, StoreError> {
        let v: Option<String> = row.get(column);
        v.map(|s| {
            DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(|e| corrupt(column, e.to_string()))
        })
        .transpose()
    };
    let id = Uuid::parse_str(&id_text).map_err(|e| corrupt("id", e.to_string()))?;
    let status: String = row.get("status");
    let error_kind: Option<String> = row.get("error_kind");
    let response: Option<String> = row.get("response");
    let response_size: Option<i64> = row.get("response_size");
    let response_status: Option<i64> = row.get("response_status");
    Ok(EventRecord {
        id,
        event_id: row.get("event_id"),
        event_source: row.get("event_source"),
        event_type: row.get("event_type"),
        event_subject: row.get("event_subject"),
        trigger: row.get("trigger_name"),
        function: row.get("function_name"),
        status: status
            .parse()
            .map_err(|e: switchyard_schemas::record::UnknownStatus| corrupt("status", e.to_string()))?,
        attempts: u32::try_from(row.get::<i64, _>("attempts")).unwrap_or(0),
        received_at: time("received_at")?.ok_or_else(|| corrupt("received_at", "missing".to_owned()))?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
        duration_ms: row.get("duration_ms"),
        request: Captured {
            body: row.get("request"),
            base64: row.get("request_base64"),
            size: u64::try_from(row.get::<i64, _>("request_size")).unwrap_or(0),
            truncated: row.get("request_truncated"),
        },
        response_status: response_status.and_then(|s| u16::try_from(s).ok()),
        response: response.map(|body| Captured {
            body,
            base64: row.get("response_base64"),
            size: response_size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            truncated: row.get("response_truncated"),
        }),
        error_kind: error_kind.map(|k| k.parse().map_err(|e: String| corrupt("error_kind", e))).transpose()?,
        error_message: row.get("error_message"),
        dead_lettered: row.get("dead_lettered"),
        trace_id: row.get("trace_id"),
        logs: row.get("logs"),
        cold_start: row.get("cold_start"),
        init_ms: row.get("init_ms"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Status, function: &str) -> EventRecord {
        EventRecord {
            id: Uuid::now_v7(),
            event_id: "e".into(),
            event_source: "/s".into(),
            event_type: "t".into(),
            event_subject: None,
            trigger: "tr".into(),
            function: function.into(),
            status,
            attempts: 0,
            // Stored with microsecond precision.
            received_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            request: Captured::new(b"{}", 10),
            response_status: None,
            response: None,
            error_kind: None,
            error_message: None,
            dead_lettered: false,
            trace_id: None,
            logs: None,
            cold_start: false,
            init_ms: None,
        }
    }

    #[tokio::test]
    async fn batch_keeps_the_newest_version_of_each_record() {
        let store = RecordStore::open("sqlite::memory:").await.unwrap();
        let pending = record(Status::Pending, "f");
        let mut done = pending.clone();
        done.status = Status::Failure;
        done.attempts = 3;
        done.error_kind = Some(ErrorKind::Timeout);
        done.response = Some(Captured::new(&[0xff, 0x00], 10));
        let other = record(Status::Pending, "g");
        store.upsert_batch(&[pending.clone(), other.clone(), done.clone()]).await.unwrap();
        assert_eq!(store.get(pending.id).await.unwrap().unwrap(), done);
        assert_eq!(store.count(None).await.unwrap(), 2);
        assert_eq!(store.count(Some(Status::Pending)).await.unwrap(), 1);
        // A later batch updates in place.
        let mut other_done = other.clone();
        other_done.status = Status::Success;
        store.upsert_batch(&[other_done.clone()]).await.unwrap();
        assert_eq!(store.get(other.id).await.unwrap().unwrap().status, Status::Success);
    }

    #[tokio::test]
    async fn large_batches_span_several_inserts() {
        let store = RecordStore::open("sqlite::memory:").await.unwrap();
        let batch: Vec<EventRecord> = (0..(ROWS_PER_INSERT * 3 + 7)).map(|_| record(Status::Success, "f")).collect();
        store.upsert_batch(&batch).await.unwrap();
        assert_eq!(store.count(None).await.unwrap(), batch.len() as i64);
        let page = store.list(&RecordQuery { limit: 5, ..RecordQuery::default() }).await.unwrap();
        assert_eq!(page.len(), 5);
        assert_eq!(page[0].id, batch.last().unwrap().id, "newest first");
    }
}
