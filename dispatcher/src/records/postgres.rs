//! The PostgreSQL store, for several replicas: native UUID, TIMESTAMPTZ and BOOLEAN columns; a batch
//! is one `INSERT ... SELECT FROM UNNEST(arrays)` (one statement and 31 parameters whatever the batch
//! size); migrations run under an advisory lock so replicas starting together apply each once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, QueryBuilder, Row};
use switchyard_schemas::{ErrorKind, EventRecord, Status};
use uuid::Uuid;

use super::sqlite::{read_record, Fields};
use super::store::{newest_versions, Arg, RecordQuery, StoreError, COLUMNS, ON_CONFLICT};

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x5357_4954_4348; // "SWITCH"

#[derive(Debug, Clone)]
pub(crate) struct Postgres {
    pool: PgPool,
}

fn q(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

/// PostgreSQL text cannot hold NUL: it is replaced, never silently dropped with the rest of the row.
fn text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

fn opt_text(s: Option<&String>) -> Option<String> {
    s.map(|s| text(s))
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Postgres {
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open { url: redact(url), source };
        let opts: PgConnectOptions = url.parse().map_err(open_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(Some(Duration::from_secs(600)))
            .connect_with(opts.application_name("switchyard"))
            .await
            .map_err(open_err)?;
        let store = Self { pool };
        store.migrate().await.map_err(open_err)?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS switchyard_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        for (version, name, sql) in switchyard_schemas::POSTGRES_MIGRATIONS {
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM switchyard_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_none() {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO switchyard_migrations (version, name, applied_at) VALUES ($1, $2, now())")
                    .bind(version)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub(crate) async fn upsert_batch(&self, records: &[EventRecord]) -> Result<(), StoreError> {
        let keep = newest_versions(records);
        let rows: Vec<&EventRecord> = keep.iter().map(|&i| &records[i]).collect();
        let col = |f: &dyn Fn(&EventRecord) -> String| rows.iter().map(|r| f(r)).collect::<Vec<String>>();
        let opt = |f: &dyn Fn(&EventRecord) -> Option<String>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        let int = |f: &dyn Fn(&EventRecord) -> Option<i64>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        let flag = |f: &dyn Fn(&EventRecord) -> bool| rows.iter().map(|r| f(r)).collect::<Vec<bool>>();
        let size = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut qb: QueryBuilder<'_, sqlx::Postgres> = QueryBuilder::new("INSERT INTO event_records (");
        qb.push(COLUMNS).push(") SELECT * FROM UNNEST(");
        let mut a = qb.separated(", ");
        a.push_bind(rows.iter().map(|r| r.id).collect::<Vec<Uuid>>()).push_unseparated("::uuid[]");
        a.push_bind(col(&|r| text(&r.event_id))).push_unseparated("::text[]");
        a.push_bind(col(&|r| text(&r.event_source))).push_unseparated("::text[]");
        a.push_bind(col(&|r| text(&r.event_type))).push_unseparated("::text[]");
        a.push_bind(opt(&|r| opt_text(r.event_subject.as_ref()))).push_unseparated("::text[]");
        a.push_bind(col(&|r| text(&r.trigger))).push_unseparated("::text[]");
        a.push_bind(col(&|r| text(&r.function))).push_unseparated("::text[]");
        a.push_bind(col(&|r| r.status.as_str().to_owned())).push_unseparated("::text[]");
        a.push_bind(rows.iter().map(|r| i64::from(r.attempts)).collect::<Vec<i64>>()).push_unseparated("::int8[]");
        a.push_bind(rows.iter().map(|r| r.received_at).collect::<Vec<DateTime<Utc>>>())
            .push_unseparated("::timestamptz[]");
        a.push_bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>()).push_unseparated("::timestamptz[]");
        a.push_bind(rows.iter().map(|r| r.finished_at).collect::<Vec<_>>()).push_unseparated("::timestamptz[]");
        a.push_bind(int(&|r| r.duration_ms)).push_unseparated("::int8[]");
        a.push_bind(col(&|r| text(&r.request.body))).push_unseparated("::text[]");
        a.push_bind(flag(&|r| r.request.base64)).push_unseparated("::bool[]");
        a.push_bind(rows.iter().map(|r| size(r.request.size)).collect::<Vec<i64>>()).push_unseparated("::int8[]");
        a.push_bind(flag(&|r| r.request.truncated)).push_unseparated("::bool[]");
        a.push_bind(int(&|r| r.response_status.map(i64::from))).push_unseparated("::int8[]");
        a.push_bind(opt(&|r| r.response.as_ref().map(|c| text(&c.body)))).push_unseparated("::text[]");
        a.push_bind(flag(&|r| r.response.as_ref().is_some_and(|c| c.base64))).push_unseparated("::bool[]");
        a.push_bind(int(&|r| r.response.as_ref().map(|c| size(c.size)))).push_unseparated("::int8[]");
        a.push_bind(flag(&|r| r.response.as_ref().is_some_and(|c| c.truncated))).push_unseparated("::bool[]");
        a.push_bind(opt(&|r| r.error_kind.map(|k| ErrorKind::as_str(k).to_owned()))).push_unseparated("::text[]");
        a.push_bind(opt(&|r| opt_text(r.error_message.as_ref()))).push_unseparated("::text[]");
        a.push_bind(flag(&|r| r.dead_lettered)).push_unseparated("::bool[]");
        a.push_bind(opt(&|r| r.trace_id.clone())).push_unseparated("::text[]");
        a.push_bind(opt(&|r| opt_text(r.logs.as_ref()))).push_unseparated("::text[]");
        a.push_bind(flag(&|r| r.cold_start)).push_unseparated("::bool[]");
        a.push_bind(int(&|r| r.init_ms)).push_unseparated("::int8[]");
        a.push_bind(opt(&|r| opt_text(r.event.as_ref()))).push_unseparated("::text[]");
        a.push_bind(rows.iter().map(|r| r.replay_of).collect::<Vec<Option<Uuid>>>()).push_unseparated("::uuid[]");
        qb.push(")");
        qb.push(ON_CONFLICT);
        // One statement: atomic on its own.
        qb.build().execute(&self.pool).await.map_err(q("write"))?;
        Ok(())
    }

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM event_records WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("get"))?;
        row.map(|r| from_row(&r)).transpose()
    }

    pub(crate) async fn list(&self, query: &RecordQuery) -> Result<Vec<EventRecord>, StoreError> {
        let mut qb: QueryBuilder<'_, sqlx::Postgres> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM event_records WHERE TRUE"));
        for (clause, arg) in query.clauses() {
            qb.push(clause);
            match arg {
                Arg::Text(s) => qb.push_bind(s),
                Arg::Time(t) => qb.push_bind(t),
                Arg::Id(u) => qb.push_bind(u),
                Arg::Nothing => &mut qb,
            };
        }
        qb.push(query.order()).push_bind(query.page_size());
        let rows = qb.build().fetch_all(&self.pool).await.map_err(q("list"))?;
        rows.iter().map(from_row).collect()
    }

    pub(crate) async fn count(&self, status: Option<Status>) -> Result<i64, StoreError> {
        let query = match status {
            Some(s) => sqlx::query_scalar("SELECT COUNT(*) FROM event_records WHERE status = $1").bind(s.as_str()),
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
        sqlx::query_scalar(
            "SELECT id FROM event_records WHERE event_source = $1 AND event_id = $2 AND trigger_name = $3
             AND status = 'SUCCESS' AND received_at >= $4 LIMIT 1",
        )
        .bind(source)
        .bind(event_id)
        .bind(trigger)
        .bind(since)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("idempotency lookup"))
    }

    pub(crate) async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM event_records WHERE id IN (SELECT id FROM event_records
             WHERE received_at < $1 AND status <> 'PENDING' ORDER BY id LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(q("prune"))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn prune_claims(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM source_claims WHERE ctid IN
             (SELECT ctid FROM source_claims WHERE claimed_at < $1 LIMIT $2)",
        )
        .bind(cutoff)
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

fn from_row(row: &PgRow) -> Result<EventRecord, StoreError> {
    let fields = Fields {
        id: row.get("id"),
        status: row.get("status"),
        error_kind: row.get("error_kind"),
        received_at: row.get("received_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        replay_of: row.get("replay_of"),
    };
    read_record(row, fields)
}
