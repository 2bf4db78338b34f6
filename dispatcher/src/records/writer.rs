//! The one task that writes records: it takes whatever is queued (up to a batch) and commits it in a
//! single transaction, then tells each waiter its record is durable. Never a transaction per event.
//!
//! A PENDING row is held back for `pending_after` (see [`RecordWriter::spawn`]): when the invocation's
//! terminal record arrives within that time, only the terminal row is written, so a short invocation
//! costs one row, not two. An invocation that runs longer shows up as PENDING after that delay.

use std::collections::{HashMap, VecDeque};
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
    /// A PENDING row that may be superseded before it is written.
    deferred: bool,
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
    /// PENDING rows queued with [`RecordWriter::queue_pending`] are written only once they are this
    /// old and still not superseded by their terminal record (zero: at once).
    pub fn spawn(
        store: RecordStore,
        metrics: std::sync::Arc<Metrics>,
        pending_after: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8 * MAX_BATCH);
        let task =
            tokio::spawn(run(store, rx, metrics, pending_after).instrument(tracing::info_span!("records_writer")));
        (Self { tx }, task)
    }

    /// Queues a PENDING record, written after the writer's `pending_after` unless a record with the
    /// same id (its terminal record) arrives first.
    ///
    /// # Errors
    /// [`WriteError::Closed`] after shutdown.
    pub async fn queue_pending(&self, record: EventRecord) -> Result<(), WriteError> {
        self.tx.send(Write { record, done: None, deferred: true }).await.map_err(|_| WriteError::Closed)
    }

    /// Queues a record and waits until it is committed; gives the record back (no copy is made).
    ///
    /// # Errors
    /// [`WriteError`] when it could not be made durable.
    pub async fn write(&self, record: EventRecord) -> Result<EventRecord, WriteError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Write { record, done: Some(done), deferred: false }).await.map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
    }
}

/// PENDING rows held back, in the order they come due.
#[derive(Default)]
struct Deferred {
    records: HashMap<uuid::Uuid, EventRecord>,
    due: VecDeque<(tokio::time::Instant, uuid::Uuid)>,
}

impl Deferred {
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.due.front().map(|(at, _)| *at)
    }

    /// Moves the rows due by `now` (all of them when `now` is `None`) into `out`.
    fn take_due(&mut self, now: Option<tokio::time::Instant>, out: &mut Vec<(EventRecord, Option<Waiter>)>) {
        while let Some((at, id)) = self.due.front().copied() {
            if now.is_some_and(|now| at > now) {
                break;
            }
            self.due.pop_front();
            if let Some(record) = self.records.remove(&id) {
                out.push((record, None));
            }
        }
    }
}

type Waiter = oneshot::Sender<Result<EventRecord, WriteError>>;

async fn run(
    store: RecordStore,
    mut rx: mpsc::Receiver<Write>,
    metrics: std::sync::Arc<Metrics>,
    pending_after: Duration,
) {
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    let mut deferred = Deferred::default();
    let mut open = true;
    loop {
        let timer = deferred.next_due();
        tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH), if open => open = n > 0,
            () = tokio::time::sleep_until(timer.unwrap_or_else(tokio::time::Instant::now)), if timer.is_some() => {}
            else => break, // every handle dropped and nothing held back
        }
        let now = tokio::time::Instant::now();
        let mut writes: Vec<(EventRecord, Option<Waiter>)> = Vec::with_capacity(batch.len());
        for w in batch.drain(..) {
            if w.deferred && !pending_after.is_zero() {
                deferred.due.push_back((now + pending_after, w.record.id));
                deferred.records.insert(w.record.id, w.record);
            } else {
                // A later row of the same record supersedes its held-back PENDING row.
                deferred.records.remove(&w.record.id);
                writes.push((w.record, w.done));
            }
        }
        // Once every handle is dropped, the rows still held back are written at once.
        deferred.take_due(open.then_some(now), &mut writes);
        if writes.is_empty() {
            continue;
        }
        // Move the records out (no copy); later writes of one record win in the upsert.
        let (records, waiters): (Vec<EventRecord>, Vec<_>) = writes.into_iter().unzip();
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

    fn finished(mut r: EventRecord) -> EventRecord {
        r.status = Status::Success;
        r
    }

    #[tokio::test]
    async fn a_pending_row_superseded_within_pending_after_is_never_written() {
        let store = RecordStore::open("sqlite::memory:").await.unwrap();
        let (writer, task) = RecordWriter::spawn(store.clone(), std::sync::Arc::default(), Duration::from_secs(3600));
        let (short, long) = (record(Status::Pending, "f"), record(Status::Pending, "f"));
        writer.queue_pending(short.clone()).await.unwrap();
        writer.queue_pending(long.clone()).await.unwrap();
        writer.write(finished(record(Status::Pending, "g"))).await.unwrap();
        assert!(store.get(short.id).await.unwrap().is_none(), "held back");
        writer.write(finished(short.clone())).await.unwrap();
        assert_eq!(store.get(short.id).await.unwrap().map(|r| r.status), Some(Status::Success));
        // Closing writes what is still held back: the long one's PENDING row, not the short one's
        // (which would overwrite its SUCCESS).
        drop(writer);
        task.await.unwrap();
        assert_eq!(store.get(short.id).await.unwrap().map(|r| r.status), Some(Status::Success));
        assert_eq!(store.get(long.id).await.unwrap().map(|r| r.status), Some(Status::Pending));
    }

    #[tokio::test]
    async fn a_pending_row_is_written_once_pending_after_has_passed() {
        let store = RecordStore::open("sqlite::memory:").await.unwrap();
        let (writer, _task) = RecordWriter::spawn(store.clone(), std::sync::Arc::default(), Duration::from_millis(30));
        let running = record(Status::Pending, "f");
        writer.queue_pending(running.clone()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.get(running.id).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the PENDING row was never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        writer.write(finished(running.clone())).await.unwrap();
        assert_eq!(store.get(running.id).await.unwrap().map(|r| r.status), Some(Status::Success));
    }

    #[tokio::test]
    async fn with_zero_pending_after_the_pending_row_is_written_at_once() {
        let store = RecordStore::open("sqlite::memory:").await.unwrap();
        let (writer, _task) = RecordWriter::spawn(store.clone(), std::sync::Arc::default(), Duration::ZERO);
        let running = record(Status::Pending, "f");
        writer.queue_pending(running.clone()).await.unwrap();
        writer.write(finished(record(Status::Pending, "g"))).await.unwrap();
        assert_eq!(store.get(running.id).await.unwrap().map(|r| r.status), Some(Status::Pending));
    }
}
