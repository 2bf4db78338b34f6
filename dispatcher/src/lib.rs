//! Switchyard's dispatcher: routes each delivered CloudEvent to the triggers it matches, runs every
//! invocation through its function's tower stack (trace, per-attempt timeout, retries with backoff
//! and jitter, concurrency limit behind a bounded queue) on a pluggable runtime, and writes a typed
//! record of every invocation. A delivery's ack resolves only after its terminal records are durable.

mod dispatch;
mod lanes;
pub mod metrics;
mod object;
pub mod records;
pub mod router;
pub mod runtime;
pub mod spans;
pub mod stack;

pub use dispatch::{
    Deployment, DispatchError, Dispatcher, FunctionInfo, FunctionState, InvokeResult, RemoveError, Stats,
};
