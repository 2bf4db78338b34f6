//! Per-trigger ordering: invocations that share a lane (a trigger and a Kafka partition, or a
//! trigger, a partition and a record key) run one after the other, in the order the deliveries
//! reached the dispatcher; different lanes run in parallel.
//!
//! A place in a lane is taken synchronously, when the delivery is routed (sources hand deliveries
//! on one at a time, in stream order), so the order does not depend on how tasks are scheduled.
//! The turn passes when the holder's [`Turn`] is dropped: once its invocation has returned (retries
//! included; the record may still be on its way to the store), or
//! when it gave up waiting (withdrawn, shutdown). A lane with nobody in it takes no memory.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use switchyard_connectors::OrderKey;
use switchyard_schemas::config::{Ordering, TriggerConfig};
use tokio::sync::oneshot;

/// One lane: the trigger, the ordered stream, and the key when ordering by key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LaneId {
    trigger: Arc<str>,
    stream: Arc<str>,
    key: Option<Arc<[u8]>>,
}

impl LaneId {
    /// The lane an event at `order` takes for `trigger`, or `None` when it is not ordered (ordering
    /// `none`, or `key` for a message without a key).
    pub(crate) fn of(trigger: &TriggerConfig, order: &OrderKey) -> Option<Self> {
        let key = match trigger.ordering.unwrap_or(order.default) {
            Ordering::None => return None,
            Ordering::Partition => None,
            Ordering::Key => Some(Arc::clone(order.key.as_ref()?)),
        };
        Some(Self { trigger: Arc::from(trigger.name.as_str()), stream: Arc::clone(&order.stream), key })
    }
}

/// The lanes in use. A lane present in the map is held by someone; its queue holds the waiters in
/// arrival order.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    busy: Mutex<HashMap<LaneId, VecDeque<oneshot::Sender<()>>>>,
}

impl Lanes {
    /// Takes the next place in `lane`: the turn at once when the lane is free, else a place behind
    /// the ones already in it.
    pub(crate) fn enter(self: &Arc<Self>, lane: LaneId) -> Turn {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = match busy.entry(lane.clone()) {
            Entry::Occupied(mut waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.get_mut().push_back(tx);
                Some(rx)
            }
            Entry::Vacant(free) => {
                free.insert(VecDeque::new());
                None
            }
        };
        let holding = wait.is_none();
        Turn { lanes: Arc::clone(self), lane, wait, holding }
    }

    /// Passes the turn of `lane` to its next live waiter, or frees the lane.
    fn pass(&self, lane: &LaneId) {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(waiters) = busy.get_mut(lane) else { return };
        while let Some(next) = waiters.pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        busy.remove(lane);
    }

    /// Lanes held right now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A place in a lane. Dropping it passes the turn on (if it had it).
#[derive(Debug)]
pub(crate) struct Turn {
    lanes: Arc<Lanes>,
    lane: LaneId,
    wait: Option<oneshot::Receiver<()>>,
    holding: bool,
}

impl Turn {
    /// Waits until every earlier place in the lane is done. Cancel-safe: dropping the future keeps
    /// the place, dropping the `Turn` gives it up.
    pub(crate) async fn ready(&mut self) {
        if let Some(rx) = &mut self.wait {
            // The sender is only dropped unsent when the receiver is closed, which only `Drop` does.
            let _ = rx.await;
            self.wait = None;
            self.holding = true;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let holding = self.holding
            || self.wait.as_mut().is_some_and(|rx| {
                // Given the turn just as we gave up: pass it on, or the lane would stall.
                rx.close();
                rx.try_recv().is_ok()
            });
        if holding {
            self.lanes.pass(&self.lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lane(key: &str) -> LaneId {
        LaneId { trigger: Arc::from("t"), stream: Arc::from("orders/0"), key: Some(Arc::from(key.as_bytes())) }
    }

    async fn is_ready(turn: &mut Turn) -> bool {
        tokio::time::timeout(Duration::from_millis(20), turn.ready()).await.is_ok()
    }

    #[tokio::test]
    async fn places_in_a_lane_take_their_turn_in_arrival_order() {
        let lanes = Arc::new(Lanes::default());
        let mut a = lanes.enter(lane("k"));
        let mut b = lanes.enter(lane("k"));
        let mut c = lanes.enter(lane("k"));
        let mut other = lanes.enter(lane("j"));
        assert!(is_ready(&mut a).await);
        assert!(is_ready(&mut other).await, "another key runs in parallel");
        assert!(!is_ready(&mut c).await && !is_ready(&mut b).await);
        drop(a);
        assert!(!is_ready(&mut c).await, "c waits behind b");
        assert!(is_ready(&mut b).await);
        drop(b);
        assert!(is_ready(&mut c).await);
        drop((c, other));
        assert_eq!(lanes.len(), 0, "free lanes take no memory");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_is_skipped() {
        let lanes = Arc::new(Lanes::default());
        let a = lanes.enter(lane("k"));
        let b = lanes.enter(lane("k"));
        let mut c = lanes.enter(lane("k"));
        drop(b); // withdrawn before its turn
        drop(a);
        assert!(is_ready(&mut c).await);
        drop(c);
        assert_eq!(lanes.len(), 0);
    }

    #[tokio::test]
    async fn a_turn_given_just_before_giving_up_is_passed_on() {
        let lanes = Arc::new(Lanes::default());
        let a = lanes.enter(lane("k"));
        let b = lanes.enter(lane("k"));
        let mut c = lanes.enter(lane("k"));
        drop(a); // b is handed the turn but never looks at it
        drop(b);
        assert!(is_ready(&mut c).await, "the turn b was given reached c");
        drop(c);
        assert_eq!(lanes.len(), 0);
    }

    #[test]
    fn lane_of_follows_the_trigger_then_the_source_default() {
        let mut trigger: TriggerConfig = serde_json::from_str(r#"{"name": "t", "function": "f"}"#).expect("trigger");
        let keyed = OrderKey { stream: Arc::from("o/1"), key: Some(Arc::from(&b"k"[..])), default: Ordering::Key };
        let keyless = OrderKey { key: None, ..keyed.clone() };
        assert!(LaneId::of(&trigger, &keyed).is_some_and(|l| l.key.is_some()));
        assert!(LaneId::of(&trigger, &keyless).is_none(), "no key: not ordered");
        let by_partition = OrderKey { default: Ordering::Partition, ..keyless.clone() };
        assert!(LaneId::of(&trigger, &by_partition).is_some_and(|l| l.key.is_none()));
        trigger.ordering = Some(Ordering::None);
        assert!(LaneId::of(&trigger, &keyed).is_none(), "the trigger's own ordering wins");
        trigger.ordering = Some(Ordering::Partition);
        let a = LaneId::of(&trigger, &keyed).expect("lane");
        let b = LaneId::of(&trigger, &OrderKey { key: Some(Arc::from(&b"other"[..])), ..keyed }).expect("lane");
        assert_eq!(a, b, "partition ordering ignores the key");
    }
}
