//! S3 notification JSON arriving through another source (`s3_notifications: true` on `nats` or
//! `amqp`): one delivery per record in place of the carrier's, and the carrier's ack resolved once
//! all of theirs are.

use std::future::Future;

use super::binding;
use crate::{Delivery, Outcome};

/// Splits `delivery` when its event holds S3 notification JSON: the deliveries to dispatch (none for
/// `s3:TestEvent`), and a future that resolves the original ack with the combined outcome once theirs
/// resolved; spawn it. `Err(delivery)`, unchanged (boxed), when it is not a notification.
///
/// The combined outcome is `Abandoned` if any part was (the carrier is then redelivered, and the parts
/// that did complete run again), else `Completed` with the sums, else `Unmatched`.
///
/// # Errors
/// The delivery itself, when there is nothing to split.
pub fn split(delivery: Delivery) -> Result<(Vec<Delivery>, impl Future<Output = ()> + Send + 'static), Box<Delivery>> {
    let Some(events) = binding::expand(&delivery.event) else {
        return Err(Box::new(delivery));
    };
    let Delivery { mut ack, skip, cancel, order, withdraw, .. } = delivery;
    let mut parts = Vec::with_capacity(events.len());
    let mut receivers = Vec::with_capacity(events.len());
    for event in events {
        let (mut d, rx) = Delivery::new(event);
        d.skip = skip.clone();
        d.cancel = cancel.clone();
        d.order = order.clone();
        d.withdraw = withdraw.clone();
        parts.push(d);
        receivers.push(rx);
    }
    let done = async move {
        let outcomes = futures::future::join_all(receivers.into_iter().map(|r| r.outcome())).await;
        ack.resolve(combine(outcomes));
    };
    Ok((parts, done))
}

fn combine(outcomes: Vec<Outcome>) -> Outcome {
    let mut combined = Outcome::Unmatched;
    for o in outcomes {
        combined = match (combined, o) {
            (Outcome::Abandoned, _) | (_, Outcome::Abandoned) => Outcome::Abandoned,
            (c, Outcome::Unmatched) => c,
            (Outcome::Unmatched, c) => c,
            (Outcome::Completed { invocations: a, failed: fa }, Outcome::Completed { invocations: b, failed: fb }) => {
                Outcome::Completed { invocations: a + b, failed: fa + fb }
            }
        };
    }
    combined
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_schemas::{CloudEvent, Data};

    fn carrier(data: serde_json::Value) -> (Delivery, crate::AckReceiver) {
        let mut e = CloudEvent::new("1", "nats://x/s", "dev.switchyard.nats.message");
        e.data = Some(Data::Json(data));
        Delivery::new(e)
    }

    fn record(key: &str) -> serde_json::Value {
        json!({"eventName": "ObjectCreated:Put", "awsRegion": "r", "eventSource": "aws:s3",
               "s3": {"bucket": {"name": "b"}, "object": {"key": key}}})
    }

    #[tokio::test]
    async fn carrier_is_acked_once_every_part_is() {
        let (d, rx) = carrier(json!({"Records": [record("a"), record("b")]}));
        let (mut parts, done) = split(d).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].event.subject.as_deref(), Some("b"));
        let task = tokio::spawn(done);
        parts[0].ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
        parts[1].ack.resolve(Outcome::Completed { invocations: 2, failed: 1 });
        task.await.unwrap();
        assert_eq!(rx.outcome().await, Outcome::Completed { invocations: 3, failed: 1 });
    }

    #[tokio::test]
    async fn a_dropped_part_means_the_carrier_is_not_acked() {
        let (d, rx) = carrier(json!({"Records": [record("a"), record("b")]}));
        let (mut parts, done) = split(d).unwrap();
        let task = tokio::spawn(done);
        parts[0].ack.resolve(Outcome::Unmatched);
        parts.pop();
        task.await.unwrap();
        assert_eq!(rx.outcome().await, Outcome::Abandoned);
    }

    #[tokio::test]
    async fn test_event_is_acked_and_other_messages_pass() {
        let (d, rx) = carrier(json!({"Event": "s3:TestEvent"}));
        let (parts, done) = split(d).unwrap();
        assert!(parts.is_empty());
        done.await;
        assert_eq!(rx.outcome().await, Outcome::Unmatched);
        let (d, _rx) = carrier(json!({"order": 1}));
        assert!(split(d).is_err());
    }
}
