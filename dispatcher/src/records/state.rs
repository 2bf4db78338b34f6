//! [`SourceState`] on the records store: durable key/value state per source, and once-only claims
//! (a unique key, so exactly one replica sharing the store wins each claim).

use chrono::Utc;
use switchyard_connectors::{SourceState, StateError};

use super::store::{ts, RecordStore};

fn err(operation: &'static str) -> impl Fn(sqlx::Error) -> StateError {
    move |e| StateError { operation, message: e.to_string() }
}

#[async_trait::async_trait]
impl SourceState for RecordStore {
    async fn claim(&self, source: &str, key: &str) -> Result<bool, StateError> {
        let done = if let Some(pg) = self.postgres() {
            sqlx::query(
                "INSERT INTO source_claims (source, key, claimed_at) VALUES ($1, $2, now()) ON CONFLICT DO NOTHING",
            )
            .bind(source)
            .bind(key)
            .execute(pg.pool())
            .await
            .map(|r| r.rows_affected())
        } else {
            let lite = self.sqlite().expect("one of the two stores");
            sqlx::query("INSERT INTO source_claims (source, key, claimed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(source)
                .bind(key)
                .bind(ts(Utc::now()))
                .execute(lite.pool())
                .await
                .map(|r| r.rows_affected())
        };
        Ok(done.map_err(err("claim"))? == 1)
    }

    async fn get(&self, source: &str, key: &str) -> Result<Option<String>, StateError> {
        let r = if let Some(pg) = self.postgres() {
            sqlx::query_scalar("SELECT value FROM source_state WHERE source = $1 AND key = $2")
                .bind(source)
                .bind(key)
                .fetch_optional(pg.pool())
                .await
        } else {
            let lite = self.sqlite().expect("one of the two stores");
            sqlx::query_scalar("SELECT value FROM source_state WHERE source = ? AND key = ?")
                .bind(source)
                .bind(key)
                .fetch_optional(lite.pool())
                .await
        };
        r.map_err(err("get"))
    }

    async fn put(&self, source: &str, key: &str, value: &str) -> Result<(), StateError> {
        let r = if let Some(pg) = self.postgres() {
            sqlx::query(
                "INSERT INTO source_state (source, key, value, updated_at) VALUES ($1, $2, $3, now())
                 ON CONFLICT (source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(source)
            .bind(key)
            .bind(value)
            .execute(pg.pool())
            .await
            .map(|r| r.rows_affected())
        } else {
            let lite = self.sqlite().expect("one of the two stores");
            sqlx::query(
                "INSERT INTO source_state (source, key, value, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT(source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(source)
            .bind(key)
            .bind(value)
            .bind(ts(Utc::now()))
            .execute(lite.pool())
            .await
            .map(|r| r.rows_affected())
        };
        r.map_err(err("put"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::TestDatabase;

    async fn claims_and_state(url: &str) {
        let a = RecordStore::open(url).await.unwrap();
        let b = RecordStore::open(url).await.unwrap(); // a second replica on the same store
        assert!(a.claim("cron1", "2026-11-24T12:00:00Z").await.unwrap());
        assert!(!b.claim("cron1", "2026-11-24T12:00:00Z").await.unwrap());
        assert!(b.claim("cron2", "2026-11-24T12:00:00Z").await.unwrap(), "claims are per source");
        assert_eq!(SourceState::get(&a, "cron1", "last").await.unwrap(), None);
        a.put("cron1", "last", "x").await.unwrap();
        b.put("cron1", "last", "y").await.unwrap();
        assert_eq!(SourceState::get(&a, "cron1", "last").await.unwrap().as_deref(), Some("y"));
    }

    #[tokio::test]
    async fn claims_are_won_once_and_state_round_trips_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        claims_and_state(&format!("sqlite://{}/s.db", dir.path().display())).await;
    }

    #[tokio::test]
    async fn claims_are_won_once_and_state_round_trips_on_postgres() {
        let Some(db) = TestDatabase::create().await else { return };
        claims_and_state(&db.url).await;
    }
}
