//! `type: kafka` source: a consumer-group member with at-least-once delivery (a partition's offset
//! is committed only up to the highest offset below which every message is terminal and recorded),
//! per-key / per-partition / no ordering, pause/resume backpressure, and rebalances that drain and
//! commit revoked partitions before releasing them.

pub mod binding;
mod offsets;
mod source;

pub use source::{client_config, KafkaSource};
