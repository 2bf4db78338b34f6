//! Parse + route: a CloudEvent arriving over HTTP (binary and structured mode) parsed and matched
//! against 100 triggers, next to the baseline of parsing the same JSON body with serde_json alone.
//! Run: `cargo bench -p switchyard-dispatcher --bench parse_route`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use switchyard_dispatcher::router;
use switchyard_schemas::config::Filter;
use switchyard_schemas::http_binding;

fn map(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_owned(), v.to_owned())])
}

/// 100 triggers of mixed dialects; 3 of them match the event.
fn triggers() -> Vec<Vec<Filter>> {
    (0..100)
        .map(|i| match i % 4 {
            0 => vec![Filter::Exact(map("type", &format!("com.example.order.{i}")))],
            1 => vec![Filter::Prefix(map("source", &format!("/shop/{i}")))],
            2 => vec![Filter::All(vec![
                Filter::Suffix(map("subject", ".json")),
                Filter::Exact(map("tenant", &format!("t{i}"))),
            ])],
            _ => vec![Filter::Any(vec![
                Filter::Exact(map("type", "com.example.order.created")),
                Filter::Not(Box::new(Filter::Prefix(map("type", "com.")))),
            ])],
        })
        .collect()
}

const BODY: &str =
    r#"{"order": 42, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], "total": 31.5, "currency": "EUR"}"#;

fn binary_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "a8f4c1e2-0001"),
        ("ce-source", "/shop/eu"),
        ("ce-type", "com.example.order.created"),
        ("ce-subject", "orders/42.json"),
        ("ce-time", "2026-11-24T12:00:00.123Z"),
        ("ce-tenant", "t2"),
        ("content-type", "application/json"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let triggers = triggers();
    let headers = binary_headers();
    let structured = format!(
        r#"{{"specversion":"1.0","id":"a8f4c1e2-0001","source":"/shop/eu","type":"com.example.order.created","subject":"orders/42.json","time":"2026-11-24T12:00:00.123Z","tenant":"t2","datacontenttype":"application/json","data":{BODY}}}"#
    );
    let mut structured_headers = HeaderMap::new();
    structured_headers.insert("content-type", HeaderValue::from_static("application/cloudevents+json"));

    let mut g = c.benchmark_group("parse_route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_serde_json_parse_structured", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(structured.as_bytes())).unwrap()))
    });
    g.bench_function("binary_parse_and_route_100_triggers", |b| {
        b.iter(|| {
            let events = http_binding::from_http(black_box(&headers), black_box(BODY.as_bytes())).unwrap();
            let matched = triggers.iter().filter(|f| router::matches_all(f, &events[0])).count();
            black_box(matched)
        })
    });
    g.bench_function("structured_parse_and_route_100_triggers", |b| {
        b.iter(|| {
            let events =
                http_binding::from_http(black_box(&structured_headers), black_box(structured.as_bytes())).unwrap();
            let matched = triggers.iter().filter(|f| router::matches_all(f, &events[0])).count();
            black_box(matched)
        })
    });
    let event = http_binding::from_http(&headers, BODY.as_bytes()).unwrap().remove(0);
    assert_eq!(triggers.iter().filter(|f| router::matches_all(f, &event)).count(), 26, "25 `any` triggers and t2");
    g.bench_function("route_only_100_triggers", |b| {
        b.iter(|| black_box(triggers.iter().filter(|f| router::matches_all(f, black_box(&event))).count()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
