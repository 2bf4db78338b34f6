//! `type: nats` source: core NATS subscriptions (at-most-once, as NATS core is) and JetStream
//! durable pull consumers (at-least-once: a message is acked only after every invocation it caused
//! is terminal and recorded, and kept alive with in-progress acks while they run).

pub mod binding;
mod source;

pub use source::NatsSource;
