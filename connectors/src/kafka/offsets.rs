//! Per-partition bookkeeping shared by the consumer thread, the scheduler and the ack tasks: which
//! offsets were taken and which are terminal, the contiguous watermark below which every message
//! is terminal (the only offset ever committed), how many invocations run, and whether the
//! partition is paused. One `std` mutex, never held across an `.await`; a condvar wakes the
//! consumer thread waiting for revoked partitions to drain.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A topic and partition.
pub type Tp = (Arc<str>, i32);

#[derive(Debug)]
struct Partition {
    /// Changes each time the partition is (re)assigned; work from an older assignment is ignored.
    epoch: u64,
    /// Revoked: nothing new starts.
    revoked: bool,
    /// Offsets taken and not yet known terminal (`true` once terminal but behind an unfinished one).
    outstanding: BTreeMap<i64, bool>,
    /// The offset after the last one taken.
    next: Option<i64>,
    /// Last offset the broker confirmed as committed.
    committed: Option<i64>,
    /// Invocations handed to the dispatcher and not yet resolved.
    running: usize,
    paused: bool,
}

impl Partition {
    /// The offset to commit: the lowest unfinished offset, or the next one when all are finished.
    fn watermark(&self) -> Option<i64> {
        self.outstanding.keys().next().copied().or(self.next)
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<Tp, Partition>,
    next_epoch: u64,
    closed: bool,
}

/// The shared bookkeeping of one source.
#[derive(Debug, Default)]
pub struct Offsets {
    state: Mutex<State>,
    changed: Condvar,
}

/// What the consumer thread does after taking a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The assignment the message belongs to.
    pub epoch: u64,
    /// The partition reached its limit: pause it.
    pub pause: bool,
}

impl Offsets {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts tracking newly assigned partitions (a partition assigned again gets a new epoch).
    pub fn assign(&self, tps: &[Tp]) {
        let mut s = self.lock();
        for tp in tps {
            s.next_epoch += 1;
            let epoch = s.next_epoch;
            s.partitions.insert(
                tp.clone(),
                Partition {
                    epoch,
                    revoked: false,
                    outstanding: BTreeMap::new(),
                    next: None,
                    committed: None,
                    running: 0,
                    paused: false,
                },
            );
        }
    }

    /// Records a message taken from `tp`; `None` when the partition is not assigned (a stale
    /// message, dropped: its new owner gets it).
    pub fn take(&self, tp: &Tp, offset: i64, limit: usize) -> Option<Taken> {
        let mut s = self.lock();
        let p = s.partitions.get_mut(tp).filter(|p| !p.revoked)?;
        p.outstanding.insert(offset, false);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        let pause = !p.paused && p.outstanding.len() >= limit;
        p.paused |= pause;
        Some(Taken { epoch: p.epoch, pause })
    }

    /// Marks a message as handed to the dispatcher. `false` when it must not be (its partition was
    /// revoked or reassigned, or the source is closing): drop it, it stays uncommitted.
    pub fn start(&self, tp: &Tp, epoch: u64) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        match s.partitions.get_mut(tp) {
            Some(p) if p.epoch == epoch && !p.revoked => {
                p.running += 1;
                true
            }
            _ => false,
        }
    }

    /// An invocation handed on with [`Offsets::start`] was resolved; `terminal` when it may be
    /// committed (not abandoned at shutdown).
    pub fn finish(&self, tp: &Tp, epoch: u64, offset: i64, terminal: bool) {
        let mut s = self.lock();
        if let Some(p) = s.partitions.get_mut(tp).filter(|p| p.epoch == epoch) {
            p.running = p.running.saturating_sub(1);
            if terminal {
                if let Some(done) = p.outstanding.get_mut(&offset) {
                    *done = true;
                }
                while let Some(entry) = p.outstanding.first_entry() {
                    if !*entry.get() {
                        break;
                    }
                    entry.remove();
                }
            }
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Paused partitions that drained to `resume_at` or fewer outstanding messages; marked resumed.
    pub fn resumable(&self, resume_at: usize) -> Vec<Tp> {
        let mut s = self.lock();
        let mut out = Vec::new();
        for (tp, p) in &mut s.partitions {
            if p.paused && !p.revoked && p.outstanding.len() <= resume_at {
                p.paused = false;
                out.push(tp.clone());
            }
        }
        out
    }

    /// Whether any partition is paused.
    pub fn any_paused(&self) -> bool {
        self.lock().partitions.values().any(|p| p.paused)
    }

    /// Watermarks that moved past the last confirmed commit (of `only` when given).
    pub fn to_commit(&self, only: Option<&[Tp]>) -> Vec<(Tp, i64)> {
        let s = self.lock();
        s.partitions
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| {
                let w = p.watermark()?;
                (p.committed != Some(w)).then(|| (tp.clone(), w))
            })
            .collect()
    }

    /// The broker confirmed these commits.
    pub fn committed(&self, offsets: &[(Tp, i64)]) {
        let mut s = self.lock();
        for (tp, offset) in offsets {
            if let Some(p) = s.partitions.get_mut(tp) {
                p.committed = Some(p.committed.map_or(*offset, |c| c.max(*offset)));
            }
        }
    }

    /// Stops new work on `tps` (queued messages of theirs are dropped by [`Offsets::start`]).
    pub fn revoke(&self, tps: &[Tp]) {
        let mut s = self.lock();
        for tp in tps {
            if let Some(p) = s.partitions.get_mut(tp) {
                p.revoked = true;
            }
        }
    }

    /// Waits until nothing runs on `tps` (every partition when `None`), at most `timeout`.
    /// Returns how many invocations still run.
    pub fn wait_idle(&self, tps: Option<&[Tp]>, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            let running: usize =
                s.partitions.iter().filter(|(tp, _)| tps.is_none_or(|o| o.contains(tp))).map(|(_, p)| p.running).sum();
            let now = Instant::now();
            if running == 0 || now >= deadline {
                return running;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    /// Forgets released partitions.
    pub fn remove(&self, tps: &[Tp]) {
        let mut s = self.lock();
        for tp in tps {
            s.partitions.remove(tp);
        }
    }

    /// Nothing new starts from now on (shutdown).
    pub fn close(&self) {
        self.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        (Arc::from("t"), p)
    }

    #[test]
    fn watermark_only_moves_past_contiguous_finished_offsets() {
        let o = Offsets::default();
        o.assign(&[tp(0)]);
        let e = o.take(&tp(0), 10, 100).unwrap().epoch;
        for off in [11, 12, 14] {
            o.take(&tp(0), off, 100).unwrap();
        }
        for _ in 0..4 {
            assert!(o.start(&tp(0), e));
        }
        assert_eq!(o.to_commit(None), vec![(tp(0), 10)]);
        o.finish(&tp(0), e, 11, true);
        o.finish(&tp(0), e, 14, true);
        assert_eq!(o.to_commit(None), vec![(tp(0), 10)], "10 still runs");
        o.finish(&tp(0), e, 10, true);
        assert_eq!(o.to_commit(None), vec![(tp(0), 12)], "12 still runs; 13 never existed");
        o.committed(&[(tp(0), 12)]);
        assert!(o.to_commit(None).is_empty());
        o.finish(&tp(0), e, 12, false);
        assert!(o.to_commit(None).is_empty(), "an abandoned message is not committed past");
        assert_eq!(o.wait_idle(None, Duration::ZERO), 0);
    }

    #[test]
    fn pause_at_limit_resume_at_half_and_revoked_work_is_refused() {
        let o = Offsets::default();
        o.assign(&[tp(1)]);
        let mut last = None;
        for off in 0..4 {
            last = o.take(&tp(1), off, 4);
        }
        let Taken { epoch, pause } = last.unwrap();
        assert!(pause);
        assert!(o.any_paused());
        assert!(o.resumable(2).is_empty());
        for off in 0..2 {
            assert!(o.start(&tp(1), epoch));
            o.finish(&tp(1), epoch, off, true);
        }
        assert_eq!(o.resumable(2), vec![tp(1)]);
        assert!(o.start(&tp(1), epoch));
        o.revoke(&[tp(1)]);
        assert!(!o.start(&tp(1), epoch), "revoked: queued messages are dropped");
        assert_eq!(o.wait_idle(Some(&[tp(1)]), Duration::from_millis(10)), 1);
        o.finish(&tp(1), epoch, 2, true);
        assert_eq!(o.wait_idle(Some(&[tp(1)]), Duration::from_secs(1)), 0);
        assert_eq!(o.to_commit(Some(&[tp(1)])), vec![(tp(1), 3)]);
        o.remove(&[tp(1)]);
        o.assign(&[tp(1)]);
        assert!(!o.start(&tp(1), epoch), "an older assignment's work is refused");
        assert!(o.take(&tp(9), 0, 4).is_none(), "unassigned partition");
    }
}
