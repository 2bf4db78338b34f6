//! `type: s3` source: S3 object notifications from an SQS queue (deleted only once every invocation
//! is terminal and recorded, visibility extended meanwhile), SNS HTTP(S) deliveries (subscription
//! confirmation, signature verification) or webhook posts (bearer token), mapped to CloudEvents per
//! the CloudEvents AWS S3 adapter and filtered. Object access (`object`) is per trigger: the dispatcher
//! applies it with [`object::enrich`].

pub mod aws;
pub mod binding;
pub mod fanout;
pub mod object;
pub mod sns;
mod source;

pub use source::{HttpReply, S3HttpHandle, S3Source};
