//! The one task that writes records: it takes whatever is queued (up to a batch) and commits it in a
//! single transaction, then tells each waiter its record is durable. Never a transaction per event.
//!
//! Rows of one record are written in the order they were queued: a PENDING row queued before its
//! terminal row never overwrites it (the dispatcher queues an invocation's PENDING row only once it
//! has run for `records.pending_after`).

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
    done: Option<Waiter>,
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

    /// Queues a record without waiting for it to be committed (a PENDING row: what makes an
    /// invocation's outcome durable is its terminal record, written with [`RecordWriter::write`]).
    ///
    /// # Errors
    /// [`WriteError::Closed`] after shutdown.
    pub async fn queue(&self, record: EventRecord) -> Result<(), WriteError> {
        self.tx.send(Write { record, done: None }).await.map_err(|_| WriteError::Closed)
    }

    /// Queues a record and waits until it is committed; gives the record back (no copy is made).
    ///
    /// # Errors
    /// [`WriteError`] when it could not be made durable.
    pub async fn write(&self, record: EventRecord) -> Result<EventRecord, WriteError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Write { record, done: Some(done) }).await.map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
    }
}

type Waiter = oneshot::Sender<Result<EventRecord, WriteError>>;

async fn run(store: RecordStore, mut rx: mpsc::Receiver<Write>, metrics: std::sync::Arc<Metrics>) {
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Move the records out (no copy); later writes of one record win in the upsert.
        let (records, waiters): (Vec<EventRecord>, Vec<Option<Waiter>>) =
            batch.drain(..).map(|w| (w.record, w.done)).unzip();
        let started = std::time::Instant::now();
        // `instrument`, never `span.enter()` across an `.await`: a guard held over an await leaves the
        // span on whatever worker thread the task left, and later tasks there find a closed span as
        // their parent (tracing-subscriber panics on it, killing that task).
        let span = tracing::debug_span!("record_write", records = records.len());
        let (records, result) = commit(&store, records).instrument(span).await;
        metrics.record_batch_size.observe(records.len() as f64);
        metrics.record_batch_duration.observe(started.elapsed().as_secs_f64());
        tracing::trace!(records = records.len(), "record batch committed");
        for (record, done) in records.into_iter().zip(waiters) {
            if let Some(done) = done {
                let r = match &result {
                    Ok(()) => Ok(record),
                    Err(message) => {
                        Err(WriteError::Store { record_id: record.id.to_string(), message: message.clone() })
                    }
                };
                let _ = done.send(r);
            }
        }
    }
}

/// Commits one batch, retrying a few times; gives the batch back, with the last error when every
/// attempt failed.
async fn commit(store: &RecordStore, mut records: Vec<EventRecord>) -> (Vec<EventRecord>, Result<(), String>) {
    let mut result = Err(String::new());
    for attempt in 1..=COMMIT_ATTEMPTS {
        let (back, r) = store.write_batch(records).await;
        records = back;
        match r {
            Ok(()) => return (records, Ok(())),
            Err(e) => {
                tracing::warn!(attempt, records = records.len(), error = %e, "record batch not committed");
                result = Err(e.to_string());
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
        }
    }
    (records, result)
}

#[cfg(test)]
mod tests {
    use switchyard_schemas::Status;

    use super::*;
    use crate::records::store::tests::record;

    #[tokio::test]
    async fn a_row_queued_before_the_terminal_one_never_overwrites_it() {
        let store = RecordStore::open("sqlite::memory:").await.unwrap();
        let (writer, task) = RecordWriter::spawn(store.clone(), std::sync::Arc::default());
        let running = record(Status::Pending, "f");
        writer.queue(running.clone()).await.unwrap();
        let mut done = running.clone();
        done.status = Status::Success;
        writer.write(done).await.unwrap();
        assert_eq!(store.get(running.id).await.unwrap().map(|r| r.status), Some(Status::Success));
        // A queued row is committed before the writer ends.
        let other = record(Status::Pending, "g");
        writer.queue(other.clone()).await.unwrap();
        drop(writer);
        task.await.unwrap();
        assert_eq!(store.get(other.id).await.unwrap().map(|r| r.status), Some(Status::Pending));
    }
}
