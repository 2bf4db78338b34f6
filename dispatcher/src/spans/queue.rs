//! Finished spans, already encoded, waiting for the exporter: a bounded buffer shared by the threads
//! that end spans and the one thread that sends them.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Encoded spans waiting to be sent (each one a `ScopeSpans.spans` field, so any run of them is the
/// content of a `ScopeSpans` message). At most `max_spans` wait; spans beyond that are dropped and
/// counted, never waited for.
#[derive(Debug)]
pub struct Queue {
    pending: Mutex<Pending>,
    ready: Condvar,
    max_spans: usize,
    batch: usize,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where each span ends in `bytes`.
    ends: Vec<usize>,
    dropped: u64,
    /// A buffer the exporter gave back ([`Queue::recycle`]), so `bytes` does not grow from nothing
    /// (reallocating and copying as it goes) after each batch is taken.
    spare: Option<Vec<u8>>,
    closed: bool,
    /// The exporter was woken for a full batch and has not taken it yet.
    woken: bool,
}

/// Spans taken from the queue.
#[derive(Debug, Default)]
pub struct Batch {
    /// How many.
    pub spans: usize,
    /// Their encoding: the spans of a `ScopeSpans` message.
    pub bytes: Vec<u8>,
}

/// What [`Queue::wait`] found.
#[derive(Debug, Default)]
pub struct Taken {
    /// Up to one batch of spans.
    pub batch: Batch,
    /// Spans still waiting.
    pub rest: usize,
    /// The queue is closed: no more spans will come.
    pub closed: bool,
}

impl Queue {
    /// A queue of at most `max_spans` spans, sent `batch` at a time (the standard
    /// `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub fn new(max_spans: usize, batch: usize) -> Self {
        let max_spans = max_spans.max(1);
        Self { pending: Mutex::default(), ready: Condvar::new(), max_spans, batch: batch.clamp(1, max_spans) }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one span, which `encode` appends (a `ScopeSpans.spans` field); when the queue is full or
    /// closed, the span is dropped and counted instead.
    pub fn push(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut p = self.lock();
        if p.closed || p.ends.len() >= self.max_spans {
            p.dropped += 1;
            return;
        }
        encode(&mut p.bytes);
        let end = p.bytes.len();
        p.ends.push(end);
        if p.ends.len() >= self.batch && !p.woken {
            p.woken = true;
            drop(p);
            self.ready.notify_one();
        }
    }

    /// Waits until a whole batch is waiting, `until` has passed, or the queue is closed; then takes up
    /// to one batch.
    pub fn wait(&self, until: Instant) -> Taken {
        let mut p = self.lock();
        while p.ends.len() < self.batch && !p.closed {
            let now = Instant::now();
            if now >= until {
                break;
            }
            p = self.ready.wait_timeout(p, until - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        let n = p.ends.len().min(self.batch);
        let batch = if n == 0 {
            Batch::default()
        } else if n == p.ends.len() {
            p.ends.clear();
            let fresh = p.spare.take().unwrap_or_default();
            Batch { spans: n, bytes: std::mem::replace(&mut p.bytes, fresh) }
        } else {
            let cut = p.ends[n - 1];
            let bytes = p.bytes.drain(..cut).collect();
            p.ends.drain(..n);
            for e in &mut p.ends {
                *e -= cut;
            }
            Batch { spans: n, bytes }
        };
        p.woken = p.ends.len() >= self.batch;
        Taken { batch, rest: p.ends.len(), closed: p.closed }
    }

    /// Gives a batch's buffer back once it has been sent, for the spans to come.
    pub fn recycle(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        let mut p = self.lock();
        if p.spare.is_none() {
            p.spare = Some(bytes);
        }
    }

    /// Takes every span waiting, without waiting.
    pub fn take_all(&self) -> Batch {
        let mut p = self.lock();
        let spans = std::mem::take(&mut p.ends).len();
        p.woken = false;
        Batch { spans, bytes: std::mem::take(&mut p.bytes) }
    }

    /// Spans dropped since the last call, because the queue was full (or closed).
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }

    /// No more spans are taken; the exporter sends what is waiting and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Queue;

    #[test]
    fn batches_are_cut_at_span_boundaries_and_a_full_queue_drops() {
        let q = Queue::new(5, 2);
        for i in 0..7u8 {
            q.push(|b| b.extend_from_slice(&[i; 3]));
        }
        assert_eq!(q.take_dropped(), 2, "two spans beyond the five that fit");
        let t = q.wait(Instant::now() + Duration::from_secs(60));
        assert_eq!((t.batch.spans, t.batch.bytes.as_slice(), t.rest), (2, &[0, 0, 0, 1, 1, 1][..], 3));
        let t = q.wait(Instant::now() + Duration::from_secs(60));
        assert_eq!((t.batch.spans, t.batch.bytes.as_slice(), t.rest), (2, &[2, 2, 2, 3, 3, 3][..], 1));
        let capacity = t.batch.bytes.capacity();
        q.recycle(t.batch.bytes);
        let t = q.wait(Instant::now());
        assert_eq!((t.batch.spans, t.rest, t.closed), (1, 0, false), "the timer takes what is left");
        q.push(|b| b.push(4));
        let t = q.wait(Instant::now());
        assert_eq!(t.batch.bytes, [4], "a recycled buffer holds only new spans");
        assert!(t.batch.bytes.capacity() >= capacity, "the recycled buffer is used");
        q.close();
        let t = q.wait(Instant::now() + Duration::from_secs(60));
        assert!(t.closed && t.batch.spans == 0, "a closed queue does not wait");
        q.push(|b| b.push(9));
        assert_eq!(q.take_dropped(), 1, "spans after close are dropped");
    }

    #[test]
    fn a_full_batch_wakes_the_exporter() {
        let q = std::sync::Arc::new(Queue::new(100, 3));
        let q2 = std::sync::Arc::clone(&q);
        let waiter = std::thread::spawn(move || q2.wait(Instant::now() + Duration::from_secs(60)));
        for _ in 0..3 {
            q.push(|b| b.push(1));
        }
        let t = waiter.join().unwrap();
        assert_eq!(t.batch.spans, 3, "woken by the third span, long before its timer");
    }
}
