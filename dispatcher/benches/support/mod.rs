//! What the runtime benches share: a bench invocation and percentiles.

use std::sync::Arc;
use std::time::Duration;

use switchyard_dispatcher::runtime::{Invocation, Progress};
use switchyard_schemas::{CloudEvent, Data};

/// One invocation of a function named `bench` with `{"name": "Ada"}` as JSON data.
pub fn invocation() -> Invocation {
    let mut e = CloudEvent::new("b-1", "/bench", "bench");
    e.datacontenttype = Some("application/json".into());
    e.data = Some(Data::Json(serde_json::json!({"name": "Ada"})));
    Invocation {
        event: Arc::new(e),
        function: Arc::from("bench"),
        trigger: Arc::from("bench"),
        record_id: uuid::Uuid::now_v7(),
        attempt: 1,
        attempt_timeout: Duration::from_secs(30),
        deadline: None,
        traceparent: String::new(),
        progress: Arc::new(Progress::default()),
        parent: switchyard_dispatcher::spans::Parent::default(),
    }
}

/// p50 and p99 of `v`, in units of `unit` seconds (1e-3 for ms, 1e-6 for µs).
pub fn percentiles(mut v: Vec<Duration>, unit: f64) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() / unit;
    (at(0.5), at(0.99))
}
