//! The SQLite store (WAL mode): times are RFC 3339 text with microseconds and ids are UUID text, so
//! both sort as text.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};
use switchyard_schemas::record::Captured;
use switchyard_schemas::{ErrorKind, EventRecord, Status};
use uuid::Uuid;

use super::store::{newest_versions, ts, Arg, RecordQuery, StoreError, COLUMNS, ON_CONFLICT};

/// Rows per multi-row INSERT on the pool (31 parameters each, well under SQLite's 32766).
pub(crate) const ROWS_PER_INSERT: usize = 100;
/// Page cache of the write connection, in KiB: the pages a batch touches (the tails of the table
/// and of its indexes) stay cached between batches instead of being read back from the file.
const WRITE_CACHE_KIB: i64 = 32 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Sqlite {
    /// Queries, state, registry and retention; also the records writes of an in-memory database,
    /// which exists only on its one connection.
    pool: SqlitePool,
    /// The records writer's own connection, on a thread of its own, for a database file.
    writer: Option<WriteThread>,
}

/// The records writer's connection to a SQLite file, owned by one thread. Its page cache stays valid
/// from one batch to the next (another connection's commit would invalidate it), and it keeps one
/// prepared single-row upsert, run once per record inside the batch's transaction: one hand-over
/// between threads per batch, and no SQL parsed per batch.
#[derive(Debug, Clone)]
struct WriteThread {
    jobs: std::sync::mpsc::Sender<WriteJob>,
}

type WriteDone = tokio::sync::oneshot::Sender<(Vec<EventRecord>, Result<(), rusqlite::Error>)>;

struct WriteJob {
    records: Vec<EventRecord>,
    done: WriteDone,
}

impl WriteThread {
    fn start(path: &std::path::Path) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -WRITE_CACHE_KIB)?;
        let placeholders = (1..=31).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let upsert = format!("INSERT INTO event_records ({COLUMNS}) VALUES ({placeholders}){ON_CONFLICT}");
        let (jobs, rx) = std::sync::mpsc::channel::<WriteJob>();
        std::thread::Builder::new().name("switchyard-records-sqlite".to_owned()).spawn(move || {
            let mut conn = conn;
            // Ends when every handle is dropped; the connection closes with it.
            while let Ok(WriteJob { records, done }) = rx.recv() {
                let result = write_rows(&mut conn, &upsert, &records);
                let _ = done.send((records, result));
            }
        })?;
        Ok(Self { jobs })
    }
}

/// Writes the newest version of each record of the batch in one transaction.
/// `upsert` is the single-row statement, kept prepared by the connection's statement cache.
fn write_rows(conn: &mut rusqlite::Connection, upsert: &str, records: &[EventRecord]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(upsert)?;
        for i in newest_versions(records) {
            let r = &records[i];
            stmt.execute(rusqlite::params![
                r.id.to_string(),
                r.event_id,
                r.event_source,
                r.event_type,
                r.event_subject,
                r.trigger,
                r.function,
                r.status.as_str(),
                i64::from(r.attempts),
                ts(r.received_at),
                r.started_at.map(ts),
                r.finished_at.map(ts),
                r.duration_ms,
                r.request.body,
                r.request.base64,
                i64::try_from(r.request.size).unwrap_or(i64::MAX),
                r.request.truncated,
                r.response_status.map(i64::from),
                r.response.as_ref().map(|c| c.body.as_str()),
                r.response.as_ref().is_some_and(|c| c.base64),
                r.response.as_ref().map(|c| i64::try_from(c.size).unwrap_or(i64::MAX)),
                r.response.as_ref().is_some_and(|c| c.truncated),
                r.error_kind.map(ErrorKind::as_str),
                r.error_message,
                r.dead_lettered,
                r.trace_id,
                r.logs,
                r.cold_start,
                r.init_ms,
                r.event,
                r.replay_of.map(|u| u.to_string()),
            ])?;
        }
    }
    tx.commit()
}

fn q(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

impl Sqlite {
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
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
            .connect_with(opts.clone())
            .await
            .map_err(open_err)?;
        let mut store = Self { pool, writer: None };
        store.migrate().await.map_err(open_err)?;
        if !memory {
            // After the migrations, so the writer's connection finds the tables.
            let thread = WriteThread::start(opts.get_filename())
                .map_err(|e| StoreError::Open { url: url.to_owned(), source: sqlx::Error::Configuration(e) })?;
            store.writer = Some(thread);
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        sqlx::query("CREATE TABLE IF NOT EXISTS switchyard_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, name, sql) in switchyard_schemas::SQLITE_MIGRATIONS {
            // BEGIN IMMEDIATE semantics: two processes opening one new file apply each migration once.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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

    pub(crate) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub(crate) async fn upsert_batch(&self, records: &[EventRecord]) -> Result<(), StoreError> {
        if self.writer.is_some() {
            return self.write_batch(records.to_vec()).await.1;
        }
        self.insert_in_pool(records).await
    }

    /// Writes a batch on the write thread (a database file) or on the pool (in memory), and gives
    /// it back.
    pub(crate) async fn write_batch(&self, records: Vec<EventRecord>) -> (Vec<EventRecord>, Result<(), StoreError>) {
        let Some(writer) = &self.writer else {
            let r = self.insert_in_pool(&records).await;
            return (records, r);
        };
        let (done, rx) = tokio::sync::oneshot::channel();
        if let Err(std::sync::mpsc::SendError(job)) = writer.jobs.send(WriteJob { records, done }) {
            return (job.records, Err(StoreError::WriterGone("the records write thread has stopped")));
        }
        match rx.await {
            Ok((records, r)) => (records, r.map_err(|source| StoreError::SqliteWrite { operation: "write", source })),
            // The thread only drops a job unanswered when it panicked; the batch went with it, and
            // its waiters are told their records were not written.
            Err(_) => (Vec::new(), Err(StoreError::WriterGone("the records write thread panicked"))),
        }
    }

    /// Multi-row INSERTs on the pool (an in-memory database).
    async fn insert_in_pool(&self, records: &[EventRecord]) -> Result<(), StoreError> {
        let keep = newest_versions(records);
        let mut tx = self.pool.begin().await.map_err(q("write"))?;
        for chunk in keep.chunks(ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<'_, sqlx::Sqlite> = QueryBuilder::new("INSERT INTO event_records (");
            qb.push(COLUMNS).push(") ");
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
                    .push_bind(r.init_ms)
                    .push_bind(&r.event)
                    .push_bind(r.replay_of.map(|u| u.to_string()));
            });
            qb.push(ON_CONFLICT);
            qb.build().execute(&mut *tx).await.map_err(q("write"))?;
        }
        tx.commit().await.map_err(q("write"))
    }

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM event_records WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("get"))?;
        row.map(|r| from_row(&r)).transpose()
    }

    pub(crate) async fn list(&self, query: &RecordQuery) -> Result<Vec<EventRecord>, StoreError> {
        let mut qb: QueryBuilder<'_, sqlx::Sqlite> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM event_records WHERE 1 = 1"));
        for (clause, arg) in query.clauses() {
            qb.push(clause);
            match arg {
                Arg::Text(s) => qb.push_bind(s),
                Arg::Time(t) => qb.push_bind(ts(t)),
                Arg::Id(u) => qb.push_bind(u.to_string()),
                Arg::Nothing => &mut qb,
            };
        }
        qb.push(query.order()).push_bind(query.page_size());
        let rows = qb.build().fetch_all(&self.pool).await.map_err(q("list"))?;
        rows.iter().map(from_row).collect()
    }

    pub(crate) async fn count(&self, status: Option<Status>) -> Result<i64, StoreError> {
        let query = match status {
            Some(s) => sqlx::query_scalar("SELECT COUNT(*) FROM event_records WHERE status = ?").bind(s.as_str()),
            None => sqlx::query_scalar("SELECT COUNT(*) FROM event_records"),
        };
        query.fetch_one(&self.pool).await.map_err(q("count"))
    }

    pub(crate) async fn find_success(
        &self,
        source: &str,
        event_id: &str,
        trigger: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Uuid>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM event_records WHERE event_source = ? AND event_id = ? AND trigger_name = ?
             AND status = 'SUCCESS' AND received_at >= ? LIMIT 1",
        )
        .bind(source)
        .bind(event_id)
        .bind(trigger)
        .bind(ts(since))
        .fetch_optional(&self.pool)
        .await
        .map_err(q("idempotency lookup"))?;
        Ok(id.and_then(|s| Uuid::parse_str(&s).ok()))
    }

    pub(crate) async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM event_records WHERE id IN (SELECT id FROM event_records
             WHERE received_at < ? AND status <> 'PENDING' ORDER BY id LIMIT ?)",
        )
        .bind(ts(cutoff))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(q("prune"))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn prune_claims(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM source_claims WHERE rowid IN
             (SELECT rowid FROM source_claims WHERE claimed_at < ? LIMIT ?)",
        )
        .bind(ts(cutoff))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(q("prune claims"))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn close(&self) {
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
    let replay_of: Option<String> = row.get("replay_of");
    let fields = Fields {
        id,
        status: row.get("status"),
        error_kind: row.get("error_kind"),
        received_at: time("received_at")?.ok_or_else(|| corrupt("received_at", "missing".to_owned()))?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
        replay_of: replay_of
            .map(|s| Uuid::parse_str(&s).map_err(|e| corrupt("replay_of", e.to_string())))
            .transpose()?,
    };
    read_record(row, fields)
}

/// The columns whose type differs between stores, already converted.
pub(crate) struct Fields {
    pub(crate) id: Uuid,
    pub(crate) status: String,
    pub(crate) error_kind: Option<String>,
    pub(crate) received_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) replay_of: Option<Uuid>,
}

/// Reads the columns both stores type alike (text, integers, booleans) from any row.
pub(crate) fn read_record<'r, R>(row: &'r R, f: Fields) -> Result<EventRecord, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |column: &'static str, message: String| StoreError::Corrupt { id: f.id.to_string(), column, message };
    // Integer columns are BIGINT in PostgreSQL, so i64 reads both stores.
    let int = |column: &'static str| -> Option<i64> { row.get(column) };
    let response: Option<String> = row.get("response");
    Ok(EventRecord {
        id: f.id,
        event_id: row.get("event_id"),
        event_source: row.get("event_source"),
        event_type: row.get("event_type"),
        event_subject: row.get("event_subject"),
        trigger: row.get("trigger_name"),
        function: row.get("function_name"),
        status: f
            .status
            .parse()
            .map_err(|e: switchyard_schemas::record::UnknownStatus| corrupt("status", e.to_string()))?,
        attempts: u32::try_from(row.get::<i64, _>("attempts")).unwrap_or(0),
        received_at: f.received_at,
        started_at: f.started_at,
        finished_at: f.finished_at,
        duration_ms: int("duration_ms"),
        request: Captured {
            body: row.get("request"),
            base64: row.get("request_base64"),
            size: u64::try_from(row.get::<i64, _>("request_size")).unwrap_or(0),
            truncated: row.get("request_truncated"),
        },
        response_status: int("response_status").and_then(|s| u16::try_from(s).ok()),
        response: response.map(|body| Captured {
            body,
            base64: row.get("response_base64"),
            size: int("response_size").and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            truncated: row.get("response_truncated"),
        }),
        error_kind: f.error_kind.map(|k| k.parse().map_err(|e: String| corrupt("error_kind", e))).transpose()?,
        error_message: row.get("error_message"),
        dead_lettered: row.get("dead_lettered"),
        trace_id: row.get("trace_id"),
        logs: row.get("logs"),
        cold_start: row.get("cold_start"),
        init_ms: int("init_ms"),
        replay_of: f.replay_of,
        event: row.get("event"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::store::Arg;

    /// Listing dead letters reads the partial index of dead-lettered records, not every record.
    #[tokio::test]
    async fn dead_letter_listing_uses_the_partial_index() {
        let store = Sqlite::open("sqlite::memory:").await.unwrap();
        for (dead, index) in [(true, "event_records_dead"), (false, "sqlite_autoindex_event_records_1")] {
            let query = RecordQuery { dead_lettered: Some(dead), limit: 10, ..RecordQuery::default() };
            // The statement `list` runs, with the page size written in.
            let mut sql = format!("EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM event_records WHERE 1 = 1");
            for (clause, arg) in query.clauses() {
                assert!(matches!(arg, Arg::Nothing), "{clause} binds nothing");
                sql.push_str(clause);
            }
            sql.push_str(query.order());
            sql.push_str("10");
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&sql).fetch_all(store.pool()).await.unwrap();
            assert!(plan.iter().any(|(.., detail)| detail.contains(index)), "dead_lettered {dead}: {plan:?}");
        }
    }
}
