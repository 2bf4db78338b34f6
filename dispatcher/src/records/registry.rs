//! The shared registry on the store: functions, triggers and sources changed through the API, kept so
//! they survive restarts and reach every replica. Each change gets a revision from one counter; a replica
//! applies what is newer than what it has seen. On PostgreSQL a change is announced with
//! `NOTIFY switchyard_registry`; on SQLite replicas (processes sharing one file) poll.

use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::PgListener;

use super::store::{ts, RecordStore, StoreError};

/// The NOTIFY channel.
pub const CHANNEL: &str = "switchyard_registry";
/// How often a replica looks for changes it was not told about (SQLite; PostgreSQL after a lost
/// connection).
const POLL: Duration = Duration::from_secs(2);
const RESYNC: Duration = Duration::from_secs(30);

/// What is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A function.
    Function,
    /// A trigger.
    Trigger,
    /// A message source.
    Source,
}

impl Kind {
    /// The stored name of the kind.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Trigger => "trigger",
            Self::Source => "source",
        }
    }

    fn parse(stored: &str) -> Option<Self> {
        match stored {
            "function" => Some(Self::Function),
            "trigger" => Some(Self::Trigger),
            "source" => Some(Self::Source),
            _ => None,
        }
    }
}

/// One stored change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its JSON configuration, or `None` when it was deleted.
    pub config: Option<String>,
    /// The change's revision.
    pub revision: i64,
}

fn q(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

impl RecordStore {
    /// Stores a change (a configuration, or `None` for a deletion) and announces it; returns its
    /// revision.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn registry_put(&self, kind: Kind, name: &str, config: Option<&str>) -> Result<i64, StoreError> {
        if let Some(pg) = self.postgres() {
            let mut tx = pg.pool().begin().await.map_err(q("registry write"))?;
            let revision: i64 = sqlx::query_scalar(
                "INSERT INTO registry (kind, name, config, revision, updated_at)
                 VALUES ($1, $2, $3, nextval('registry_revision'), now())
                 ON CONFLICT (kind, name) DO UPDATE SET config = excluded.config, revision = excluded.revision,
                    updated_at = excluded.updated_at
                 RETURNING revision",
            )
            .bind(kind.as_str())
            .bind(name)
            .bind(config)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("registry write"))?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(revision.to_string())
                .execute(&mut *tx)
                .await
                .map_err(q("registry notify"))?;
            tx.commit().await.map_err(q("registry write"))?;
            return Ok(revision);
        }
        let lite = self.sqlite().expect("one of the two stores");
        let mut tx = lite.pool().begin_with("BEGIN IMMEDIATE").await.map_err(q("registry write"))?;
        let revision: i64 = sqlx::query_scalar(
            "INSERT INTO registry (kind, name, config, revision, updated_at)
             VALUES (?, ?, ?, (SELECT COALESCE(MAX(revision), 0) + 1 FROM registry), ?)
             ON CONFLICT (kind, name) DO UPDATE SET config = excluded.config, revision = excluded.revision,
                updated_at = excluded.updated_at
             RETURNING revision",
        )
        .bind(kind.as_str())
        .bind(name)
        .bind(config)
        .bind(ts(Utc::now()))
        .fetch_one(&mut *tx)
        .await
        .map_err(q("registry write"))?;
        tx.commit().await.map_err(q("registry write"))?;
        Ok(revision)
    }

    /// Every change after `revision`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn registry_since(&self, revision: i64) -> Result<Vec<Entry>, StoreError> {
        let rows: Vec<(String, String, Option<String>, i64)> = if let Some(pg) = self.postgres() {
            sqlx::query_as("SELECT kind, name, config, revision FROM registry WHERE revision > $1 ORDER BY revision")
                .bind(revision)
                .fetch_all(pg.pool())
                .await
        } else {
            let lite = self.sqlite().expect("one of the two stores");
            sqlx::query_as("SELECT kind, name, config, revision FROM registry WHERE revision > ? ORDER BY revision")
                .bind(revision)
                .fetch_all(lite.pool())
                .await
        }
        .map_err(q("registry read"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, name, config, revision)| match Kind::parse(&kind) {
                Some(kind) => Some(Entry { kind, name, config, revision }),
                None => {
                    // Written by a newer version: skipped here, not misread as another kind.
                    tracing::warn!(%kind, %name, revision, "registry: unknown kind; entry skipped");
                    None
                }
            })
            .collect())
    }

    /// A watch that resolves when the registry may have changed.
    pub async fn registry_watch(&self) -> RegistryWatch {
        let listener = match self.postgres() {
            Some(pg) => match PgListener::connect_with(pg.pool()).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "registry: LISTEN failed; polling instead");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "registry: no listener connection; polling instead");
                    None
                }
            },
            None => None,
        };
        RegistryWatch { listener }
    }
}

/// Wakes on a registry change: a PostgreSQL notification (with a resync every 30 s in case one was
/// missed while the connection was down), or a 2 s poll.
#[derive(Debug)]
pub struct RegistryWatch {
    listener: Option<PgListener>,
}

impl RegistryWatch {
    /// Waits until the registry may have changed.
    pub async fn changed(&mut self) {
        match &mut self.listener {
            Some(l) => {
                tokio::select! {
                    r = l.recv() => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "registry: listener connection lost; reconnecting");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    () = tokio::time::sleep(RESYNC) => {}
                }
            }
            None => tokio::time::sleep(POLL).await,
        }
    }
}
