//! The Switchyard broker: the HTTP API, the wiring of store, dispatcher and sources, and the CLI's
//! client commands. The binary `switchyard` is a thin `main.rs` over this library.

pub mod api;
pub mod app;
pub mod client;
pub mod cron_ops;
pub mod otlp;
pub mod registry;
pub mod sources;
pub mod telemetry;
