//! The records store: SQLite (WAL mode, the embedded default) or PostgreSQL (several replicas), chosen by
//! the `store:` URL. Both keep the same rows: migrations, batched upserts in one transaction, the
//! queries behind `GET /api/v3/events` with keyset pagination on the UUIDv7 record id, retention, and
//! the idempotency lookup.

use chrono::{DateTime, SecondsFormat, Utc};
use switchyard_schemas::{ErrorKind, EventRecord, Status};
use uuid::Uuid;

use super::{postgres::Postgres, sqlite::Sqlite};

/// A store failure, naming the store URL or the operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or migrated.
    #[error("store {url}: {source}")]
    Open {
        /// The store URL (without its password).
        url: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The URL names no supported store.
    #[error("store {0:?}: unsupported; use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB")]
    Unsupported(String),
    /// A query failed.
    #[error("records {operation}: {source}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite records writer's connection failed.
    #[error("records {operation}: {source}")]
    SqliteWrite {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The SQLite records write thread is gone (it stopped or panicked).
    #[error("records write: {0}")]
    WriterGone(&'static str),
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
    /// Only failures of this kind.
    pub error_kind: Option<ErrorKind>,
    /// Only dead letters (`Some(true)`) or only records that are not (`Some(false)`).
    pub dead_lettered: Option<bool>,
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

/// One bound value of a filter, converted to each store's column type by the store.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Time(DateTime<Utc>),
    Id(Uuid),
    /// The clause is complete: nothing to bind.
    Nothing,
}

impl RecordQuery {
    /// The WHERE clauses (each `column op ` followed by one bound value, or complete), in a fixed order.
    pub(crate) fn clauses(&self) -> Vec<(&'static str, Arg)> {
        let mut c = Vec::new();
        if let Some(f) = &self.function {
            c.push((" AND function_name = ", Arg::Text(f.clone())));
        }
        if let Some(s) = self.status {
            c.push((" AND status = ", Arg::Text(s.as_str().to_owned())));
        }
        if let Some(t) = &self.event_type {
            c.push((" AND event_type = ", Arg::Text(t.clone())));
        }
        if let Some(k) = self.error_kind {
            c.push((" AND error_kind = ", Arg::Text(k.as_str().to_owned())));
        }
        // Written out, not bound: SQLite uses its partial index of dead-lettered records (`WHERE
        // dead_lettered`) only for a query that says `dead_lettered` in those words.
        match self.dead_lettered {
            Some(true) => c.push((" AND dead_lettered", Arg::Nothing)),
            Some(false) => c.push((" AND NOT dead_lettered", Arg::Nothing)),
            None => {}
        }
        if let Some(t) = self.since {
            c.push((" AND received_at >= ", Arg::Time(t)));
        }
        if let Some(t) = self.until {
            c.push((" AND received_at < ", Arg::Time(t)));
        }
        if let Some(b) = self.before {
            c.push((" AND id < ", Arg::Id(b)));
        }
        if let Some(a) = self.after {
            c.push((" AND id > ", Arg::Id(a)));
        }
        c
    }

    /// ORDER BY and LIMIT.
    pub(crate) fn order(&self) -> &'static str {
        if self.after.is_some() {
            " ORDER BY id ASC LIMIT "
        } else {
            " ORDER BY id DESC LIMIT "
        }
    }

    pub(crate) fn page_size(&self) -> i64 {
        i64::from(self.limit.clamp(1, 1000))
    }
}

/// The columns every store writes, in insert order, and reads: named, never `SELECT *`, because SQLite
/// re-prepares a cached `SELECT *` with more columns after another process adds one, and sqlx keeps the
/// old column list (a panic in the connection worker).
pub(crate) const COLUMNS: &str = "id, event_id, event_source, event_type, event_subject, trigger_name,
    function_name, status, attempts, received_at, started_at, finished_at, duration_ms, request,
    request_base64, request_size, request_truncated, response_status, response, response_base64,
    response_size, response_truncated, error_kind, error_message, dead_lettered, trace_id, logs,
    cold_start, init_ms, event, replay_of";

/// What an upsert of an existing row changes (the columns that move after PENDING).
pub(crate) const ON_CONFLICT: &str = " ON CONFLICT (id) DO UPDATE SET status = excluded.status,
    attempts = excluded.attempts, started_at = excluded.started_at, finished_at = excluded.finished_at,
    duration_ms = excluded.duration_ms, response_status = excluded.response_status,
    response = excluded.response, response_base64 = excluded.response_base64,
    response_size = excluded.response_size, response_truncated = excluded.response_truncated,
    error_kind = excluded.error_kind, error_message = excluded.error_message,
    dead_lettered = excluded.dead_lettered, trace_id = excluded.trace_id, logs = excluded.logs,
    cold_start = excluded.cold_start, init_ms = excluded.init_ms";

/// The indexes of the newest version of each record in a batch, in batch order (PENDING then SUCCESS
/// queued together become one row write).
pub(crate) fn newest_versions(records: &[EventRecord]) -> Vec<usize> {
    let mut latest: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        latest.insert(r.id, i);
    }
    let mut keep: Vec<usize> = latest.into_values().collect();
    keep.sort_unstable();
    keep
}

/// Formats a time the way SQLite stores it (RFC 3339, microseconds: sorts as text).
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

/// The records store. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct RecordStore {
    backend: Backend,
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($s) => $e,
            Backend::Postgres($s) => $e,
        }
    };
}

impl RecordStore {
    /// Opens (creating when missing) and migrates the store at `url`: `sqlite://PATH`,
    /// `sqlite::memory:`, or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (`postgresql://` too).
    ///
    /// # Errors
    /// [`StoreError::Open`] naming the URL, or [`StoreError::Unsupported`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(Sqlite::open(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(Postgres::open(url).await?)
        } else {
            return Err(StoreError::Unsupported(url.to_owned()));
        };
        Ok(Self { backend })
    }

    /// `sqlite` or `postgres`.
    pub const fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn postgres(&self) -> Option<&Postgres> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    pub(crate) fn sqlite(&self) -> Option<&Sqlite> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        each!(self, s => s.ping().await)
    }

    /// Writes records (insert or update by id) in one transaction; only the newest version of each
    /// record in the batch is written.
    ///
    /// # Errors
    /// [`StoreError::Query`]; nothing of the batch is written then.
    pub async fn upsert_batch(&self, records: &[EventRecord]) -> Result<(), StoreError> {
        each!(self, s => s.upsert_batch(records).await)
    }

    /// [`Self::upsert_batch`] for the records writer: takes the batch and gives it back, so that a
    /// SQLite file store can hand it to its write thread without copying it.
    pub(crate) async fn write_batch(&self, records: Vec<EventRecord>) -> (Vec<EventRecord>, Result<(), StoreError>) {
        match &self.backend {
            Backend::Sqlite(s) => s.write_batch(records).await,
            Backend::Postgres(s) => {
                let r = s.upsert_batch(&records).await;
                (records, r)
            }
        }
    }

    /// One record by id.
    ///
    /// # Errors
    /// [`StoreError`] when the query fails or the row is corrupt.
    pub async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        each!(self, s => s.get(id).await)
    }

    /// Records matching `q`, newest first (oldest first with `after`).
    ///
    /// # Errors
    /// [`StoreError`] when the query fails or a row is corrupt.
    pub async fn list(&self, q: &RecordQuery) -> Result<Vec<EventRecord>, StoreError> {
        each!(self, s => s.list(q).await)
    }

    /// Number of records, optionally of one status.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn count(&self, status: Option<Status>) -> Result<i64, StoreError> {
        each!(self, s => s.count(status).await)
    }

    /// The id of a SUCCESS record of `trigger` for the event (`source`, `id`) received at or after
    /// `since`, if there is one (idempotency).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn find_success(
        &self,
        source: &str,
        event_id: &str,
        trigger: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Uuid>, StoreError> {
        each!(self, s => s.find_success(source, event_id, trigger, since).await)
    }

    /// Deletes up to `limit` once-only claims of sources (cron ticks) made before `cutoff`; returns
    /// how many. A claim that old is never asked for again: the source's state has moved past it.
    ///
    /// # Errors
    /// The store's error.
    pub async fn prune_claims(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        each!(self, s => s.prune_claims(cutoff, limit).await)
    }

    /// Deletes up to `limit` terminal records received before `cutoff` (retention); returns how many.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        each!(self, s => s.prune(cutoff, limit).await)
    }

    /// Closes the pool (SQLite: checkpointing the WAL).
    pub async fn close(&self) {
        each!(self, s => s.close().await);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use switchyard_schemas::record::Captured;

    use super::*;
    use crate::records::TestDatabase;

    pub(crate) fn record(status: Status, function: &str) -> EventRecord {
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
            replay_of: None,
            event: None,
        }
    }

    async fn batch_keeps_the_newest_version(store: RecordStore) {
        let pending = record(Status::Pending, "f");
        let mut done = pending.clone();
        done.status = Status::Failure;
        done.attempts = 3;
        done.error_kind = Some(ErrorKind::Timeout);
        done.dead_lettered = true;
        done.response = Some(Captured::new(&[0xff, 0x00], 10));
        done.response_status = Some(503);
        done.finished_at = Some(chrono::SubsecRound::trunc_subsecs(Utc::now(), 6));
        done.logs = Some("a NUL \0 in logs".into());
        let other = record(Status::Pending, "g");
        store.upsert_batch(&[pending.clone(), other.clone(), done.clone()]).await.unwrap();
        let mut expected = done.clone();
        if store.kind() == "postgres" {
            expected.logs = Some("a NUL \u{FFFD} in logs".into());
        }
        assert_eq!(store.get(pending.id).await.unwrap().unwrap(), expected);
        assert_eq!(store.count(None).await.unwrap(), 2);
        assert_eq!(store.count(Some(Status::Pending)).await.unwrap(), 1);
        // A later batch updates in place.
        let mut other_done = other.clone();
        other_done.status = Status::Success;
        store.upsert_batch(&[other_done.clone()]).await.unwrap();
        assert_eq!(store.get(other.id).await.unwrap().unwrap().status, Status::Success);
        // Filters.
        let dead = RecordQuery { dead_lettered: Some(true), limit: 10, ..RecordQuery::default() };
        assert_eq!(store.list(&dead).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![pending.id]);
        let alive = RecordQuery { dead_lettered: Some(false), limit: 10, ..RecordQuery::default() };
        assert_eq!(store.list(&alive).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![other.id]);
        let timeouts = RecordQuery { error_kind: Some(ErrorKind::Timeout), limit: 10, ..RecordQuery::default() };
        assert_eq!(store.list(&timeouts).await.unwrap().len(), 1);
        let g = RecordQuery {
            function: Some("g".into()),
            status: Some(Status::Success),
            limit: 10,
            ..RecordQuery::default()
        };
        assert_eq!(store.list(&g).await.unwrap()[0].id, other.id);
    }

    async fn large_batches_and_pages(store: RecordStore) {
        let n = super::super::sqlite::ROWS_PER_INSERT * 3 + 7;
        let batch: Vec<EventRecord> = (0..n).map(|_| record(Status::Success, "f")).collect();
        store.upsert_batch(&batch).await.unwrap();
        assert_eq!(store.count(None).await.unwrap(), batch.len() as i64);
        let page = store.list(&RecordQuery { limit: 5, ..RecordQuery::default() }).await.unwrap();
        assert_eq!(page.len(), 5);
        assert_eq!(page[0].id, batch.last().unwrap().id, "newest first");
        let next =
            store.list(&RecordQuery { limit: 5, before: Some(page[4].id), ..RecordQuery::default() }).await.unwrap();
        assert_eq!(next[0].id, batch[n - 6].id, "the next page starts after the cursor");
        let after =
            store.list(&RecordQuery { limit: 2, after: Some(batch[0].id), ..RecordQuery::default() }).await.unwrap();
        assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), vec![batch[1].id, batch[2].id]);
    }

    async fn idempotency_and_retention(store: RecordStore) {
        let mut old = record(Status::Success, "f");
        old.received_at -= chrono::Duration::hours(2);
        let pending = record(Status::Pending, "f");
        let recent = record(Status::Success, "f");
        store.upsert_batch(&[old.clone(), pending.clone(), recent.clone()]).await.unwrap();
        let hour_ago = Utc::now() - chrono::Duration::hours(1);
        assert_eq!(store.find_success("/s", "e", "tr", hour_ago).await.unwrap(), Some(recent.id));
        assert_eq!(store.find_success("/s", "e", "other", hour_ago).await.unwrap(), None);
        assert_eq!(store.find_success("/s", "x", "tr", hour_ago).await.unwrap(), None);
        assert_eq!(store.prune(hour_ago, 100).await.unwrap(), 1, "only the old terminal record goes");
        assert!(store.get(old.id).await.unwrap().is_none());
        assert!(store.get(pending.id).await.unwrap().is_some());
        assert_eq!(store.prune(Utc::now() + chrono::Duration::hours(1), 100).await.unwrap(), 1, "PENDING is kept");
        // Source claims older than the cutoff go; a pruned claim's key could be claimed again, but no
        // source asks for it: its state has moved past that tick.
        use switchyard_connectors::SourceState as _;
        assert!(store.claim("cron", "tick-1").await.unwrap());
        assert!(!store.claim("cron", "tick-1").await.unwrap(), "claimed once");
        assert_eq!(store.prune_claims(hour_ago, 100).await.unwrap(), 0, "a new claim is kept");
        assert_eq!(store.prune_claims(Utc::now() + chrono::Duration::seconds(1), 100).await.unwrap(), 1);
        // And through retention (nothing is older than an hour now).
        assert_eq!(super::super::retention::prune_once(&store, std::time::Duration::from_secs(3600)).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn sqlite_store_behaves() {
        batch_keeps_the_newest_version(RecordStore::open("sqlite::memory:").await.unwrap()).await;
        large_batches_and_pages(RecordStore::open("sqlite::memory:").await.unwrap()).await;
        idempotency_and_retention(RecordStore::open("sqlite::memory:").await.unwrap()).await;
    }

    /// A file database writes records on its own connection and reads them on the pool's: what one
    /// commits, the other sees.
    #[tokio::test]
    async fn sqlite_file_store_behaves() {
        let dir = tempfile::tempdir().unwrap();
        for check in 0..3 {
            let url = format!("sqlite://{}/records-{check}.db", dir.path().display());
            let store = RecordStore::open(&url).await.unwrap();
            match check {
                0 => batch_keeps_the_newest_version(store.clone()).await,
                1 => large_batches_and_pages(store.clone()).await,
                _ => idempotency_and_retention(store.clone()).await,
            }
            store.close().await;
        }
    }

    #[tokio::test]
    async fn postgres_store_behaves_like_sqlite() {
        let Some(db) = TestDatabase::create().await else { return };
        batch_keeps_the_newest_version(RecordStore::open(&db.url).await.unwrap()).await;
        let db2 = TestDatabase::create().await.unwrap();
        large_batches_and_pages(RecordStore::open(&db2.url).await.unwrap()).await;
        let db3 = TestDatabase::create().await.unwrap();
        idempotency_and_retention(RecordStore::open(&db3.url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn replicas_migrating_one_new_postgres_database_together_both_start() {
        let Some(db) = TestDatabase::create().await else { return };
        let (a, b, c) =
            tokio::join!(RecordStore::open(&db.url), RecordStore::open(&db.url), RecordStore::open(&db.url));
        a.unwrap();
        b.unwrap();
        c.unwrap();
    }

    #[tokio::test]
    async fn unsupported_and_unreachable_stores_are_named() {
        let e = RecordStore::open("mysql://x").await.unwrap_err().to_string();
        assert!(e.contains("mysql://x") && e.contains("unsupported"), "{e}");
        let e = RecordStore::open("postgres://u:secret@127.0.0.1:1/db").await.unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:1") && !e.contains("secret"), "password hidden: {e}");
    }
}
