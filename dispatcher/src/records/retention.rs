//! Retention: terminal records older than `records.retention` are deleted in the background, a bounded
//! batch at a time so the writer is never starved. PENDING records are never deleted. Sources'
//! once-only claims (one row per cron tick) older than the retention go too.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::RecordStore;

/// Records deleted per statement.
const BATCH: u32 = 5_000;

/// How often to look: a tenth of the retention, between 10 s and 10 min.
pub fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(10), Duration::from_secs(600))
}

/// Deletes every terminal record received before `now - retention`, and every source claim made
/// before then; returns how many records.
///
/// # Errors
/// The store's error (what was deleted before it stays deleted).
pub async fn prune_once(store: &RecordStore, retention: Duration) -> Result<u64, super::StoreError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let n = store.prune(cutoff, BATCH).await?;
        total += n;
        if n < u64::from(BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    while store.prune_claims(cutoff, BATCH).await? == u64::from(BATCH) {
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// Runs [`prune_once`] every [`interval`] until `stop` is cancelled.
pub fn spawn(store: RecordStore, retention: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match prune_once(&store, retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention: deleted old records"),
                Err(e) => tracing::warn!(error = %e, "retention: prune failed; will try again"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval(retention)) => {}
                () = stop.cancelled() => return,
            }
        }
    })
}
