//! PostgreSQL store bench, two parts, each next to a baseline measured in the same run:
//!
//! 1. Records/s written by the records store (`upsert_batch` in the writer's 512-record batches: one
//!    `INSERT ... SELECT FROM UNNEST` each) next to a raw `COPY ... FROM STDIN (FORMAT csv)` of the same
//!    rows into an identical table (same columns and indexes).
//! 2. `GET /api/v3/events` latency with filters (function, status, type, dead letters, a cursor page)
//!    on a table of M records, next to the same SQL run directly over one connection.
//!
//! Run: `cargo bench -p switchyard-broker --bench postgres` (env: `SWITCHYARD_BENCH_EVENTS`, default
//! 200000 written records; `SWITCHYARD_BENCH_RECORDS`, default 10000000 rows for the query part;
//! `SWITCHYARD_TEST_POSTGRES`, the server, default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Under `cargo test` it runs 2,000 records and 20,000 rows as a smoke test. It creates and drops its
//! own database.

mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::{Connection, Executor, PgConnection};
use support::percentile;
use switchyard_broker::app;
use switchyard_dispatcher::records::{RecordStore, TestDatabase};
use switchyard_schemas::record::Captured;
use switchyard_schemas::{Config, ErrorKind, EventRecord, Status};
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn record(i: usize) -> EventRecord {
    let now = Utc::now();
    let failed = i.is_multiple_of(25);
    let request = format!(
        r#"{{"specversion":"1.0","id":"evt-{i}","source":"/bench/orders","type":"order.created","datacontenttype":"application/json","data":{{"order":{i},"items":[{{"sku":"A-1","qty":2}}],"total":31.5}}}}"#
    );
    EventRecord {
        id: Uuid::now_v7(),
        event_id: format!("evt-{i}"),
        event_source: "/bench/orders".into(),
        event_type: "order.created".into(),
        event_subject: None,
        trigger: "orders".into(),
        function: format!("f{}", i % 16),
        status: if failed { Status::Failure } else { Status::Success },
        attempts: if failed { 4 } else { 1 },
        received_at: now,
        started_at: Some(now),
        finished_at: Some(now),
        duration_ms: Some(3),
        request: Captured::new(request.as_bytes(), 65536),
        response_status: Some(if failed { 503 } else { 200 }),
        response: Some(Captured::new(br#"{"ok":true}"#, 65536)),
        error_kind: failed.then_some(ErrorKind::Status),
        error_message: failed.then(|| "function answered 503".to_owned()),
        dead_lettered: failed,
        trace_id: Some(format!("{:032x}", i)),
        logs: None,
        cold_start: false,
        init_ms: None,
        replay_of: None,
        event: None,
    }
}

fn csv_field(out: &mut String, v: Option<&str>) {
    match v {
        None => {}
        Some(s) => {
            out.push('"');
            out.push_str(&s.replace('"', "\"\""));
            out.push('"');
        }
    }
}

/// The same rows as CSV for COPY, in the store's column order.
fn csv(records: &[EventRecord]) -> String {
    let mut out = String::with_capacity(records.len() * 400);
    for r in records {
        let ts = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339());
        let fields: Vec<Option<String>> = vec![
            Some(r.id.to_string()),
            Some(r.event_id.clone()),
            Some(r.event_source.clone()),
            Some(r.event_type.clone()),
            r.event_subject.clone(),
            Some(r.trigger.clone()),
            Some(r.function.clone()),
            Some(r.status.as_str().to_owned()),
            Some(r.attempts.to_string()),
            ts(Some(r.received_at)),
            ts(r.started_at),
            ts(r.finished_at),
            r.duration_ms.map(|d| d.to_string()),
            Some(r.request.body.clone()),
            Some(r.request.base64.to_string()),
            Some(r.request.size.to_string()),
            Some(r.request.truncated.to_string()),
            r.response_status.map(|s| s.to_string()),
            r.response.as_ref().map(|c| c.body.clone()),
            Some(r.response.as_ref().is_some_and(|c| c.base64).to_string()),
            r.response.as_ref().map(|c| c.size.to_string()),
            Some(r.response.as_ref().is_some_and(|c| c.truncated).to_string()),
            r.error_kind.map(|k| k.as_str().to_owned()),
            r.error_message.clone(),
            Some(r.dead_lettered.to_string()),
            r.trace_id.clone(),
            r.logs.clone(),
            Some(r.cold_start.to_string()),
            r.init_ms.map(|m| m.to_string()),
            r.event.clone(),
            r.replay_of.map(|u| u.to_string()),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&mut out, f.as_deref());
        }
        out.push('\n');
    }
    out
}

const COLUMNS: &str = "id, event_id, event_source, event_type, event_subject, trigger_name, function_name, status,
    attempts, received_at, started_at, finished_at, duration_ms, request, request_base64, request_size,
    request_truncated, response_status, response, response_base64, response_size, response_truncated,
    error_kind, error_message, dead_lettered, trace_id, logs, cold_start, init_ms, event, replay_of";

async fn write_part(db: &TestDatabase, n: usize) -> (f64, f64) {
    let store = RecordStore::open(&db.url).await.unwrap();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("CREATE TABLE copy_records (LIKE event_records INCLUDING ALL)").await.unwrap();
    let batch = switchyard_dispatcher::records::MAX_BATCH;
    // Baseline: COPY the same rows in the same batch sizes.
    let rows: Vec<EventRecord> = (0..n).map(record).collect();
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut copy =
            conn.copy_in_raw(&format!("COPY copy_records ({COLUMNS}) FROM STDIN WITH (FORMAT csv)")).await.unwrap();
        copy.send(csv(chunk).into_bytes()).await.unwrap();
        copy.finish().await.unwrap();
    }
    let copy_rate = n as f64 / started.elapsed().as_secs_f64();
    let rows: Vec<EventRecord> = (0..n).map(record).collect();
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        store.upsert_batch(chunk).await.unwrap();
    }
    let store_rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(store.count(None).await.unwrap(), n as i64);
    let copied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM copy_records").fetch_one(&mut conn).await.unwrap();
    assert_eq!(copied, n as i64);
    store.close().await;
    (store_rate, copy_rate)
}

/// Fills `event_records` with `m` rows server-side (16 functions x 4 statuses x 8 types spread evenly,
/// 4% failures of which all dead-lettered), ids UUIDv7-like in time order.
async fn fill(db: &TestDatabase, m: usize) {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("TRUNCATE event_records").await.unwrap();
    let step = 1_000_000;
    let mut done = 0;
    while done < m {
        let upto = (done + step).min(m);
        let sql = format!(
            "INSERT INTO event_records (id, event_id, event_source, event_type, trigger_name, function_name, status,
                attempts, received_at, started_at, finished_at, duration_ms, request, request_size, response_status,
                response, response_size, error_kind, error_message, dead_lettered, trace_id)
             SELECT
                (lpad(to_hex((extract(epoch from t) * 1000)::bigint), 12, '0') || '7000' || '8' || lpad(to_hex(g), 15, '0'))::uuid,
                'evt-' || g, '/bench/orders', 'type.' || (g % 8), 'orders', 'f' || (g % 16),
                CASE WHEN g % 25 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
                CASE WHEN g % 25 = 0 THEN 4 ELSE 1 END, t, t, t, 3,
                '{{\"specversion\":\"1.0\",\"id\":\"evt-' || g || '\",\"source\":\"/bench/orders\",\"type\":\"order.created\",\"data\":{{\"order\":' || g || '}}}}',
                120, CASE WHEN g % 25 = 0 THEN 503 ELSE 200 END, '{{\"ok\":true}}', 11,
                CASE WHEN g % 25 = 0 THEN 'status' END, CASE WHEN g % 25 = 0 THEN 'function answered 503' END,
                g % 25 = 0, lpad(to_hex(g), 32, '0')
             FROM (SELECT g, now() - interval '30 days' + (g * interval '1 millisecond') * (2592000000.0 / {m}) AS t
                   FROM generate_series({done} + 1, {upto}) g) s"
        );
        conn.execute(sql.as_str()).await.unwrap();
        done = upto;
    }
    conn.execute("ANALYZE event_records").await.unwrap();
}

async fn query_part(db: &TestDatabase, m: usize, requests: usize) -> (Vec<Duration>, Vec<Duration>) {
    fill(db, m).await;
    let yaml = format!("store: {}\nserver: {{bind: '127.0.0.1:0'}}\n", db.url);
    let config = Config::from_yaml_str(&yaml, "bench.yaml", |_| None).unwrap();
    let running = app::start(config, false, std::future::pending()).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v3/events", running.addr);
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    // A cursor from the middle of the table, for the "next page" query.
    let mid: Uuid = sqlx::query_scalar("SELECT id FROM event_records ORDER BY id DESC OFFSET $1 LIMIT 1")
        .bind(i64::try_from(m / 2).unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let queries: Vec<(String, String)> = vec![
        ("function=f3".into(), "function_name = 'f3'".into()),
        ("status=FAILURE".into(), "status = 'FAILURE'".into()),
        ("function=f7&status=FAILURE".into(), "function_name = 'f7' AND status = 'FAILURE'".into()),
        ("type=type.5".into(), "event_type = 'type.5'".into()),
        ("dead_lettered=true&function=f11".into(), "dead_lettered AND function_name = 'f11'".into()),
        ("since=1d&function=f2".into(), "received_at >= now() - interval '1 day' AND function_name = 'f2'".into()),
        (format!("cursor={mid}&function=f5"), format!("id < '{mid}' AND function_name = 'f5'")),
    ];
    let (mut api, mut sql) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for i in 0..requests {
        let (params, clause) = &queries[i % queries.len()];
        let started = Instant::now();
        let resp = http.get(format!("{base}?{params}&limit=50")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{params}");
        let v: serde_json::Value = resp.json().await.unwrap();
        api.push(started.elapsed());
        let got = v["items"].as_array().unwrap().len();
        let started = Instant::now();
        let mut q = String::new();
        let _ = write!(q, "SELECT * FROM event_records WHERE {clause} ORDER BY id DESC LIMIT 50");
        let rows = sqlx::query(&q).fetch_all(&mut conn).await.unwrap();
        sql.push(started.elapsed());
        assert!(!rows.is_empty(), "{params}");
        assert_eq!(got, rows.len(), "the API returns what the SQL does: {params}");
    }
    running.shutdown().await;
    api.sort();
    sql.sort();
    (api, sql)
}

#[tokio::main]
async fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n = if bench_mode { env_usize("SWITCHYARD_BENCH_EVENTS", 200_000) } else { 2_000 };
    let m = if bench_mode { env_usize("SWITCHYARD_BENCH_RECORDS", 10_000_000) } else { 20_000 };
    let Some(db) = TestDatabase::create().await else { return };
    let (store_rate, copy_rate) = write_part(&db, n).await;
    println!("| writer | records | records/s | ratio to raw COPY |");
    println!("|---|---|---|---|");
    println!("| raw COPY (baseline) | {n} | {copy_rate:.0} | 1.00 |");
    println!("| RecordStore::upsert_batch (UNNEST) | {n} | {store_rate:.0} | {:.2} |", store_rate / copy_rate);
    let filled = Instant::now();
    let (api, sql) = query_part(&db, m, if bench_mode { 1400 } else { 70 }).await;
    eprintln!("filled and queried {m} rows in {:.0}s", filled.elapsed().as_secs_f64());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("| query path ({m} records) | requests | p50 ms | p99 ms | p99 ratio to SQL |");
    println!("|---|---|---|---|---|");
    let (sp99, ap99) = (percentile(&sql, 0.99), percentile(&api, 0.99));
    println!(
        "| same SQL, one connection (baseline) | {} | {:.2} | {:.2} | 1.00 |",
        sql.len(),
        ms(percentile(&sql, 0.5)),
        ms(sp99)
    );
    println!(
        "| GET /api/v3/events | {} | {:.2} | {:.2} | {:.2} |",
        api.len(),
        ms(percentile(&api, 0.5)),
        ms(ap99),
        ap99.as_secs_f64() / sp99.as_secs_f64()
    );
}
