//! Typed event records: the store (SQLite or PostgreSQL: migrations, queries) and the batched writer
//! task that is the only thing writing to it.

mod postgres;
pub mod registry;
pub mod retention;
mod sqlite;
mod state;
mod store;
#[doc(hidden)]
pub mod testing;
mod writer;

pub use store::{RecordQuery, RecordStore, StoreError};
#[doc(hidden)]
pub use testing::TestDatabase;
pub use writer::{RecordWriter, WriteError, MAX_BATCH};
