//! The one task that writes records: it takes whatever is queued (up to a batch) and commits it in a
//! single transaction, then tells each waiter its record is durable. Never a transaction per event.

use std::time::Duration;

use switchyard_schemas::EventRecord;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::store::RecordStore;
use crate::metrics::Metrics;

/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Attempts at committing one batch before its waiters are told it failed.
const COMMIT_ATTEMPTS: u32 = 5;

/// A record could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The store refused the batch after retries.
    #[error("record {record_id} not written: {message}")]
    Store {
        /// The record.
        record_id: String,
        /// The store's error.
        message: String,
    },
    /// The writer has stopped (shutdown).
    #[error("records writer has stopped")]
    Closed,
}

struct Write {
    record: EventRecord,
    done: Option<oneshot::Sender<Result<(), WriteError>>>,
}

/// Handle to the writer task. Cloning shares the task.
#[derive(Clone)]
pub struct RecordWriter {
    tx: mpsc::Sender<Write>,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter").finish_non_exhaustive()
    }
}

impl RecordWriter {
    /// Starts the writer task. It ends when every handle is dropped, after committing what was queued;
    /// await the returned handle to know the last batch is durable.
    pub fn spawn(store: RecordStore, metrics: std::sync::Arc<Metrics>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8 * MAX_BATCH);
        let task = tokio::spawn(run(store, rx, metrics).instrument(tracing::info_span!("records_writer")));
        (Self { tx }, task)
    }

    /// Queues a record without waiting for it to be durable (used for PENDING rows).
    ///
    /// # Errors
    /// [`WriteError::Closed`] after shutdown.
    pub async fn queue(&self, record: EventRecord) -> Result<(), WriteError> {
        self.tx.send(Write { record, done: None }).await.map_err(|_| WriteError::Closed)
    }

    /// Queues a record and waits until it is committed.
    ///
    /// # Errors
    /// [`WriteError`] when it could not be made durable.
    pub async fn write(&self, record: EventRecord) -> Result<(), WriteError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Write { record, done: Some(done) }).await.map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
    }
}

async fn run(store: RecordStore, mut rx: mpsc::Receiver<Write>, metrics: std::sync::Arc<Metrics>) {
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Move the records out of the batch (no copy); later writes of one record win in the upsert.
        let (records, waiters): (Vec<EventRecord>, Vec<_>) = batch.drain(..).map(|w| (w.record, w.done)).unzip();
        let started = std::time::Instant::now();
        // `instrument`, never `span.enter()` across an `.await`: a guard held over an await leaves the
        // span on whatever worker thread the task left, and later tasks there find a closed span as
        // their parent (tracing-subscriber panics on it, killing that task).
        let span = tracing::debug_span!("record_write", records = records.len());
        let result = commit(&store, &records).instrument(span).await;
        metrics.record_batch_size.observe(records.len() as f64);
        metrics.record_batch_duration.observe(started.elapsed().as_secs_f64());
        tracing::trace!(records = records.len(), "record batch committed");
        for (record, done) in records.iter().zip(waiters) {
            if let Some(done) = done {
                let r =
                    result.clone().map_err(|message| WriteError::Store { record_id: record.id.to_string(), message });
                let _ = done.send(r);
            }
        }
    }
}

/// Commits one batch, retrying a few times; the last error when every attempt failed.
async fn commit(store: &RecordStore, records: &[EventRecord]) -> Result<(), String> {
    let mut result = Err(String::new());
    for attempt in 1..=COMMIT_ATTEMPTS {
        match store.upsert_batch(records).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, records = records.len(), error = %e, "record batch not committed");
                result = Err(e.to_string());
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
        }
    }
    result
}
