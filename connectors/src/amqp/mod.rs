//! `type: amqp`: RabbitMQ (AMQP 0-9-1) queues consumed with manual acks, and the CloudEvents AMQP
//! protocol binding.

pub mod binding;
mod source;

pub use source::{AmqpError, AmqpSource};
