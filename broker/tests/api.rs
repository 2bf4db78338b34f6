//! The HTTP API: the three CloudEvents HTTP modes, invalid events (400 naming the attribute),
//! the body limit (413), bearer tokens, function management, and record listing with filters and
//! keyset pagination.

mod common;

use common::{broker, function_server, Broker};
use serde_json::{json, Value};
use switchyard_dispatcher::records::RecordQuery;
use switchyard_schemas::Status;

async fn ok_broker(extra: &str) -> (common::FunctionServer, Broker) {
    let fs = function_server().await;
    let b = broker(&format!(
        "{extra}functions:\n  - {{name: ok, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: ok}}\n",
        fs.url("/ok")
    ))
    .await;
    (fs, b)
}

/// POSTs a body to /events with a CloudEvents content type.
async fn post_ce(b: &Broker, content_type: &str, body: String) -> reqwest::Response {
    b.http.post(b.url("/events")).header("content-type", content_type).body(body).send().await.unwrap()
}

#[tokio::test]
async fn structured_and_batched_modes_are_accepted() {
    let (_fs, b) = ok_broker("").await;
    let structured = json!({"specversion": "1.0", "id": "s1", "source": "/t", "type": "x", "data": {"a": 1}});
    let resp = post_ce(&b, "application/cloudevents+json; charset=utf-8", structured.to_string()).await;
    assert_eq!(resp.status(), 202);
    let batch = json!([
        {"specversion": "1.0", "id": "b1", "source": "/t", "type": "x"},
        {"specversion": "1.0", "id": "b2", "source": "/t", "type": "x", "data_base64": "AAEC"}
    ]);
    let resp = post_ce(&b, "application/cloudevents-batch+json", batch.to_string()).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": ["b1", "b2"]}));
    let records = b.wait_terminal(RecordQuery::default(), 3).await;
    let s1 = records.iter().find(|r| r.event_id == "s1").unwrap();
    assert_eq!(s1.response.as_ref().unwrap().body, r#"{"a":1}"#);
    let b2 = records.iter().find(|r| r.event_id == "b2").unwrap();
    assert!(b2.request.body.contains(r#""data_base64":"AAEC""#), "{}", b2.request.body);
    b.running.shutdown().await;
}

#[tokio::test]
async fn invalid_events_are_rejected_naming_the_attribute() {
    let (_fs, b) = ok_broker("").await;
    // Binary mode without ce-id.
    let resp = b
        .http
        .post(b.url("/events"))
        .header("ce-specversion", "1.0")
        .header("ce-source", "/t")
        .header("ce-type", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_event");
    assert_eq!(body["attribute"], "id");
    // Structured mode with a bad time.
    let bad = json!({"specversion": "1.0", "id": "1", "source": "/t", "type": "x", "time": "lunchtime"});
    let resp = post_ce(&b, "application/cloudevents+json", bad.to_string()).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["attribute"], "time");
    assert!(body["error"]["message"].as_str().unwrap().contains("lunchtime"));
    // A batch with one invalid member: nothing of it is accepted.
    let batch = json!([{"specversion": "1.0", "id": "ok", "source": "/t", "type": "x"}, {"specversion": "1.0", "source": "/t", "type": "x"}]);
    let resp = post_ce(&b, "application/cloudevents-batch+json", batch.to_string()).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["attribute"], "[1].id");
    // Binary mode, JSON content type, body not JSON.
    let resp = b.post_event("j", "x", "{not json").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["attribute"], "data");
    assert_eq!(b.running.dispatcher.store().count(None).await.unwrap(), 0, "nothing invalid was recorded");
    b.running.shutdown().await;
}

#[tokio::test]
async fn oversized_body_is_413_not_truncated() {
    let (_fs, b) = ok_broker("server: {max_body_bytes: 1024}\n").await;
    let resp = b.post_event("big", "x", &format!("\"{}\"", "a".repeat(2000))).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");
    let resp = b.post_event("small", "x", "\"fits\"").await;
    assert_eq!(resp.status(), 202);
    b.running.shutdown().await;
}

#[tokio::test]
async fn tokens_protect_everything_but_health() {
    let (_fs, b) = ok_broker("server: {tokens: ['letmein-123']}\n").await;
    assert_eq!(b.http.get(b.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(b.http.get(b.url("/readyz")).send().await.unwrap().status(), 200);
    let resp = b.http.get(b.url("/api/v1/functions")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = b.http.get(b.url("/api/v1/functions")).bearer_auth("wrong-token").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(b.post_event("e", "x", "{}").await.status(), 401);
    let resp = b.http.get(b.url("/api/v1/functions")).bearer_auth("letmein-123").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    b.running.shutdown().await;
}

#[tokio::test]
async fn non_loopback_bind_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("store: sqlite://{}/r.db\nserver: {{bind: '0.0.0.0:0'}}\n", dir.path().display());
    let config = switchyard_schemas::Config::from_yaml_str(&text, "t.yaml", |_| None).unwrap();
    let err = switchyard_broker::app::start(config.clone(), false, std::future::pending()).await.err().unwrap();
    assert!(err.to_string().contains("--insecure"), "{err}");
    let running = switchyard_broker::app::start(config, true, std::future::pending()).await.unwrap();
    running.shutdown().await;
}

#[tokio::test]
async fn functions_can_be_created_updated_invoked_and_deleted() {
    let (fs, b) = ok_broker("").await;
    let list: Value = b.http.get(b.url("/api/v1/functions")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"][0]["name"], "ok");
    let new = json!({"name": "echo2", "runtime": "http", "url": fs.url("/ok"), "timeout": "5s"});
    let resp = b.http.post(b.url("/api/v1/functions")).json(&new).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(b.http.post(b.url("/api/v1/functions")).json(&new).send().await.unwrap().status(), 409);
    let got: Value = b.http.get(b.url("/api/v1/functions/echo2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["timeout"], "5s");
    let resp = b.http.post(b.url("/api/v1/functions/invoke/echo2")).json(&json!({"hi": 1})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"hi": 1}));
    // GET invoke: query parameters are the data.
    let resp = b.http.get(b.url("/api/v1/functions/invoke/echo2?name=Ada")).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"name": "Ada"}));
    // Update with a bad field is refused with the field named; the old one keeps working.
    let bad = json!({"name": "echo2", "runtime": "http", "url": fs.url("/ok"), "timeout": "900s"});
    let resp = b.http.put(b.url("/api/v1/functions/echo2")).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("timeout"));
    let unknown = json!({"name": "echo2", "runtime": "http", "url": fs.url("/ok"), "colour": "red"});
    let resp = b.http.put(b.url("/api/v1/functions/echo2")).json(&unknown).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("colour"));
    let good = json!({"name": "echo2", "runtime": "http", "url": fs.url("/bad")});
    assert_eq!(b.http.put(b.url("/api/v1/functions/echo2")).json(&good).send().await.unwrap().status(), 200);
    let resp = b.http.post(b.url("/api/v1/functions/invoke/echo2")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 422, "the updated function is the one invoked");
    assert_eq!(b.http.delete(b.url("/api/v1/functions/echo2")).send().await.unwrap().status(), 204);
    assert_eq!(b.http.get(b.url("/api/v1/functions/echo2")).send().await.unwrap().status(), 404);
    // A function a trigger uses cannot be deleted.
    assert_eq!(b.http.delete(b.url("/api/v1/functions/ok")).send().await.unwrap().status(), 409);
    assert_eq!(b.http.post(b.url("/api/v1/functions/invoke/nope")).send().await.unwrap().status(), 404);
    b.running.shutdown().await;
}

#[tokio::test]
async fn records_list_filters_and_paginates() {
    let fs = function_server().await;
    let b = broker(&format!(
        "functions:\n  - {{name: ok, runtime: http, url: '{}'}}\n  - {{name: bad, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t1, function: ok}}\n  - {{name: t2, function: bad, filters: [{{exact: {{type: to-bad}}}}]}}\n",
        fs.url("/ok"),
        fs.url("/bad"),
    ))
    .await;
    for i in 0..7 {
        b.post_event(&format!("p{i}"), "plain", "{}").await;
    }
    b.post_event("tb", "to-bad", "{}").await;
    b.wait_terminal(RecordQuery::default(), 9).await;
    let get = |q: String| {
        let b = &b;
        async move {
            let resp = b.http.get(b.url(&format!("/api/v3/events?{q}"))).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{q}");
            resp.json::<Value>().await.unwrap()
        }
    };
    let page1 = get("function=ok&limit=3".into()).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = page1["next_cursor"].as_str().map(str::to_owned);
    seen.extend(page1["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()));
    while let Some(c) = cursor {
        let page = get(format!("function=ok&limit=3&cursor={c}")).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 8, "7 plain + 1 to-bad went to ok");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(sorted, seen, "newest first, no duplicates across pages");
    let failures = get("status=FAILURE".into()).await;
    assert_eq!(failures["items"].as_array().unwrap().len(), 1);
    assert_eq!(failures["items"][0]["function"], "bad");
    let typed = get("type=to-bad".into()).await;
    assert_eq!(typed["items"].as_array().unwrap().len(), 2);
    assert_eq!(get("since=1h".into()).await["items"].as_array().unwrap().len(), 9);
    assert_eq!(get("until=2000-01-01T00:00:00Z".into()).await["items"].as_array().unwrap().len(), 0);
    let one = &failures["items"][0];
    let got = get(String::new()).await; // default limit
    assert_eq!(got["items"].as_array().unwrap().len(), 9);
    let resp = b.http.get(b.url(&format!("/api/v3/events/{}", one["id"].as_str().unwrap()))).send().await.unwrap();
    let record: Value = resp.json().await.unwrap();
    assert_eq!(record["status"], Status::Failure.as_str());
    assert_eq!(record["dead_lettered"], true);
    for bad in ["status=DONE", "limit=0", "since=yesterday", "cursor=xyz", "colour=red"] {
        let resp = b.http.get(b.url(&format!("/api/v3/events?{bad}"))).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(
        b.http.get(b.url("/api/v3/events/00000000-0000-0000-0000-000000000000")).send().await.unwrap().status(),
        404
    );
    b.running.shutdown().await;
}
