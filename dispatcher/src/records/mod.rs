//! Typed event records: the SQLite store (migrations, queries) and the batched writer task that is
//! the only thing writing to it.

mod state;
mod store;
mod writer;

pub use store::{RecordQuery, RecordStore, StoreError};
pub use writer::{RecordWriter, WriteError};
