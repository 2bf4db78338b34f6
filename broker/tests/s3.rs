//! S3 notification source end to end against moto's server mode (S3, SQS, SNS): uploads through
//! aws-sdk-s3 reach a function through SQS or SNS->HTTP; webhook posts of the MinIO samples; a
//! `switchyard serve` killed mid-run loses nothing. Tests that need moto FAIL when `CI=true` and
//! `SWITCHYARD_TEST_MOTO` (set by scripts/test.sh) is missing; they skip otherwise.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration, TopicConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use common::{broker, function_server, jetstream_with_stream, process_yaml, unique, wait_successes, Serve};
use switchyard_dispatcher::records::{RecordQuery, RecordStore};
use switchyard_schemas::sources::s3::AwsSettings;
use switchyard_schemas::{EventRecord, Status};

/// moto's URL, or `None` (skip) outside CI.
fn moto_url() -> Option<String> {
    match std::env::var("SWITCHYARD_TEST_MOTO") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but SWITCHYARD_TEST_MOTO is not set: scripts/test.sh installs and starts moto and sets it"
            );
            eprintln!("skipping: SWITCHYARD_TEST_MOTO is not set (scripts/test.sh starts moto_server and sets it)");
            None
        }
    }
}

struct Moto {
    url: String,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
}

fn settings(url: &str) -> AwsSettings {
    AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url.into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        session_token: None,
        force_path_style: true,
    }
}

async fn moto() -> Option<Moto> {
    let url = moto_url()?;
    let aws = settings(&url);
    let sdk = switchyard_connectors::s3::aws::sdk_config(&aws, None).await;
    let m = Moto {
        s3: switchyard_connectors::s3::aws::s3_client(&sdk, &aws),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        http: reqwest::Client::new(),
        url,
    };
    // Fail loudly (never skip) when the server was promised but does not answer.
    m.s3.list_buckets().send().await.unwrap_or_else(|e| panic!("moto at {} does not answer: {e:?}", m.url));
    Some(m)
}

impl Moto {
    fn aws_yaml(&self) -> String {
        format!(
            "aws: {{endpoint_url: '{}', region: us-east-1, access_key_id: test, secret_access_key: test, force_path_style: true}}",
            self.url
        )
    }

    async fn queue(&self, name: &str, attrs: &[(QueueAttributeName, String)]) -> (String, String) {
        let mut req = self.sqs.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k.clone(), v.clone());
        }
        let url = req.send().await.unwrap().queue_url.unwrap();
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        (url, arn)
    }

    /// A new bucket whose created and removed events go to a new queue; returns (bucket, queue URL).
    async fn bucket_to_queue(&self, attrs: &[(QueueAttributeName, String)]) -> (String, String) {
        let bucket = unique("sy");
        self.s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let (url, arn) = self.queue(&unique("q"), attrs).await;
        let qc = QueueConfiguration::builder()
            .queue_arn(arn)
            .events(Event::S3ObjectCreated)
            .events(Event::S3ObjectRemoved)
            .build()
            .unwrap();
        let nc = NotificationConfiguration::builder().queue_configurations(qc).build();
        self.s3
            .put_bucket_notification_configuration()
            .bucket(&bucket)
            .notification_configuration(nc)
            .send()
            .await
            .unwrap();
        (bucket, url)
    }

    async fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.s3.put_object().bucket(bucket).key(key).body(ByteStream::from(body.to_vec())).send().await.unwrap();
    }

    /// Messages on a queue, visible or in flight.
    async fn depth(&self, queue_url: &str) -> u64 {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        [QueueAttributeName::ApproximateNumberOfMessages, QueueAttributeName::ApproximateNumberOfMessagesNotVisible]
            .iter()
            .map(|k| attrs[k].parse::<u64>().unwrap())
            .sum()
    }

    async fn wait_empty(&self, queue_url: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let d = self.depth(queue_url).await;
            if d == 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{d} messages still on {queue_url} after 20s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An SNS Query API call (moto does not check signatures; the credential scope names the service).
    async fn sns(&self, params: &[(&str, &str)]) -> String {
        let auth =
            "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0";
        let mut form: Vec<(&str, &str)> = vec![("Version", "2010-03-31")];
        form.extend_from_slice(params);
        let resp = self.http.post(&self.url).header("authorization", auth).form(&form).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "SNS {params:?}: {status} {text}");
        text
    }
}

fn xml_value(xml: &str, tag: &str) -> String {
    let start = xml.find(&format!("<{tag}>")).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
    xml[start..end].to_owned()
}

fn function_yaml(url: &str) -> String {
    format!("functions:\n  - {{name: f, runtime: http, url: '{url}'}}\ntriggers:\n  - {{name: t, function: f, delivery: {{retries: 0}}}}\n")
}

async fn terminal(b: &common::Broker, n: usize) -> Vec<EventRecord> {
    b.wait_terminal(RecordQuery { function: Some("f".into()), ..RecordQuery::default() }, n).await
}

#[tokio::test]
async fn sqs_uploads_and_deletes_invoke_the_function_with_adapter_events() {
    let Some(m) = moto().await else { return };
    let fs = function_server().await;
    let (bucket, queue) = m.bucket_to_queue(&[]).await;
    let yaml = format!(
        "{}sources:\n  - type: s3\n    name: up\n    sqs: {{queue_url: '{queue}', wait_time: 1s, visibility_timeout: 10s}}\n    {}\n",
        function_yaml(&fs.url("/ok")),
        m.aws_yaml()
    );
    let b = broker(&yaml).await;
    let keys = ["plain.txt", "with space.txt", "plus+sign.txt", "dir/sub/deep.txt", "Zoë/ünï çödé.txt"];
    for k in keys {
        m.put(&bucket, k, k.as_bytes()).await;
    }
    m.s3.delete_object().bucket(&bucket).key("plain.txt").send().await.unwrap();
    let records = terminal(&b, keys.len() + 1).await;
    assert_eq!(records.len(), keys.len() + 1, "one record per upload and delete, none for s3:TestEvent");
    assert!(records.iter().all(|r| r.status == Status::Success));
    let created: BTreeSet<_> = records
        .iter()
        .filter(|r| r.event_type == "com.amazonaws.s3.ObjectCreated:Put")
        .map(|r| r.event_subject.clone().unwrap())
        .collect();
    assert_eq!(created, keys.iter().map(|k| (*k).to_owned()).collect());
    let deleted: Vec<_> = records.iter().filter(|r| r.event_type == "com.amazonaws.s3.ObjectRemoved:Delete").collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].event_subject.as_deref(), Some("plain.txt"));
    assert!(records.iter().all(|r| r.event_source == format!("aws:s3.us-east-1.{bucket}")));
    // The function got the record as data.
    let deep = records.iter().find(|r| r.event_subject.as_deref() == Some("dir/sub/deep.txt")).unwrap();
    let event: serde_json::Value = serde_json::from_str(&deep.request.body).unwrap();
    assert_eq!(event["data"]["s3"]["bucket"]["name"], bucket.as_str());
    assert_eq!(event["data"]["s3"]["object"]["key"], "dir%2Fsub%2Fdeep.txt", "data is the record as sent");
    // Every message, the TestEvent included, was deleted once its records were written.
    m.wait_empty(&queue).await;
    b.running.shutdown().await;
}

/// The event a record says was sent to the function.
fn sent(r: &EventRecord) -> serde_json::Value {
    serde_json::from_str(&r.request.body).unwrap()
}

/// Fetches a presigned URL with no credentials at all.
async fn fetch(url: &str) -> Vec<u8> {
    let resp = reqwest::get(url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn object_access_is_per_trigger_on_one_s3_source() {
    let Some(m) = moto().await else { return };
    let fs = function_server().await;
    let (bucket, queue) = m.bucket_to_queue(&[]).await;
    let yaml = format!(
        "functions:\n  - {{name: f, runtime: http, url: '{}'}}\ntriggers:\n  - name: with-object\n    function: f\n    delivery: {{retries: 0}}\n    object: {{metadata: true, presign: 5m, inline_max_bytes: 1024}}\n  - {{name: plain, function: f, delivery: {{retries: 0}}}}\nsources:\n  - type: s3\n    name: up\n    sqs: {{queue_url: '{queue}', wait_time: 1s}}\n    filter: {{suffix: .txt}}\n    {}\n",
        fs.url("/ok"),
        m.aws_yaml()
    );
    let b = broker(&yaml).await;
    m.s3.put_object()
        .bucket(&bucket)
        .key("small ü.txt")
        .metadata("owner", "ann")
        .content_type("text/plain")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let big = vec![b'x'; 2000];
    m.put(&bucket, "big.txt", &big).await;
    m.put(&bucket, "skipped.bin", b"not a .txt").await;
    m.put(&bucket, "old.txt", b"short-lived").await;
    m.s3.delete_object().bucket(&bucket).key("old.txt").send().await.unwrap();
    // Four events (three uploads, one delete), each to both triggers.
    let records = terminal(&b, 8).await;
    m.wait_empty(&queue).await;
    assert_eq!(terminal(&b, 8).await.len(), 8, "the .bin upload is filtered out: {records:?}");
    assert!(records.iter().all(|r| r.status == Status::Success), "{records:?}");
    let find = |trigger: &str, subject: &str, ty: &str| {
        let r = records
            .iter()
            .find(|r| r.trigger == trigger && r.event_subject.as_deref() == Some(subject) && r.event_type.ends_with(ty))
            .unwrap_or_else(|| panic!("no {trigger} record of {ty} {subject}: {records:?}"));
        sent(r)
    };

    let small = find("with-object", "small ü.txt", "ObjectCreated:Put");
    let object = &small["data"]["s3"]["object"];
    assert_eq!(object["head"]["metadata"]["owner"], "ann");
    assert_eq!(object["head"]["contentLength"], 5);
    assert_eq!(object["head"]["contentType"], "text/plain");
    assert_eq!(object["contentBase64"], "aGVsbG8=");
    assert!(small.get("objecterror").is_none(), "{small}");
    assert_eq!(fetch(small["presignedurl"].as_str().unwrap()).await, b"hello");

    let big_event = find("with-object", "big.txt", "ObjectCreated:Put");
    assert_eq!(big_event["data"]["s3"]["object"]["head"]["contentLength"], 2000);
    assert!(
        big_event["data"]["s3"]["object"].get("contentBase64").is_none(),
        "over the cap: no content, never a cut one"
    );
    assert_eq!(fetch(big_event["presignedurl"].as_str().unwrap()).await, big);

    let removed = find("with-object", "old.txt", "ObjectRemoved:Delete");
    assert!(removed["data"]["s3"]["object"].get("head").is_none(), "no object access for removals: {removed}");
    assert!(removed.get("presignedurl").is_none() && removed.get("objecterror").is_none(), "{removed}");

    // The trigger without `object` got the plain events: none of it, and no error either.
    for (subject, ty) in [
        ("small ü.txt", "ObjectCreated:Put"),
        ("big.txt", "ObjectCreated:Put"),
        ("old.txt", "ObjectCreated:Put"),
        ("old.txt", "ObjectRemoved:Delete"),
    ] {
        let plain = find("plain", subject, ty);
        let object = &plain["data"]["s3"]["object"];
        assert!(object.get("head").is_none() && object.get("contentBase64").is_none(), "{plain}");
        assert!(plain.get("presignedurl").is_none() && plain.get("objecterror").is_none(), "{plain}");
    }
    b.running.shutdown().await;
}

#[tokio::test]
async fn nats_s3_notifications_get_object_access_through_the_trigger_aws_settings() {
    let Some(m) = moto().await else { return };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, subject) = (format!("S3O{id}"), format!("s3o.{id}"));
    let js = jetstream_with_stream(&stream, &subject).await;
    let bucket = unique("sy");
    m.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    m.put(&bucket, "in/a b.csv", b"a,b\n1,2\n").await;
    let fs = function_server().await;
    let yaml = format!(
        "functions:\n  - {{name: f, runtime: http, url: '{}'}}\ntriggers:\n  - name: t\n    function: f\n    delivery: {{retries: 0}}\n    object:\n      metadata: true\n      presign: 5m\n      inline_max_bytes: 1024\n      {}\nsources:\n  - type: nats\n    name: n\n    s3_notifications: true\n    jetstream: {{stream: {stream}}}\n",
        fs.url("/ok"),
        m.aws_yaml()
    );
    let b = broker(&yaml).await;
    // What a store publishes: one upload that exists, one whose object is gone already.
    let record = |key: &str| {
        serde_json::json!({"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-24T16:29:23.444Z", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 8, "sequencer": key}}})
    };
    let body = serde_json::json!({"Records": [record("in/a+b.csv"), record("in/gone.csv")]});
    js.publish(format!("{subject}.1"), serde_json::to_vec(&body).unwrap().into()).await.unwrap().await.unwrap();
    let records = terminal(&b, 2).await;
    assert!(records.iter().all(|r| r.status == Status::Success), "{records:?}");
    let by_subject = |s: &str| sent(records.iter().find(|r| r.event_subject.as_deref() == Some(s)).unwrap());
    let csv = by_subject("in/a b.csv");
    assert_eq!(csv["data"]["s3"]["object"]["head"]["contentLength"], 8);
    assert_eq!(csv["data"]["s3"]["object"]["contentBase64"], "YSxiCjEsMgo=");
    assert_eq!(fetch(csv["presignedurl"].as_str().unwrap()).await, b"a,b\n1,2\n");
    assert!(csv.get("objecterror").is_none(), "{csv}");
    // A failed access is reported on the event, which is still delivered.
    let gone = by_subject("in/gone.csv");
    let error = gone["objecterror"].as_str().unwrap_or_else(|| panic!("no objecterror: {gone}"));
    assert!(error.starts_with("HeadObject: "), "{error}");
    assert!(gone["data"]["s3"]["object"].get("head").is_none(), "{gone}");
    b.running.shutdown().await;
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn sqs_message_that_keeps_failing_goes_to_the_redrive_dead_letter_queue() {
    let Some(m) = moto().await else { return };
    let fs = function_server().await;
    let (dlq, dlq_arn) = m.queue(&unique("dlq"), &[]).await;
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#);
    let (bucket, queue) = m.bucket_to_queue(&[(QueueAttributeName::RedrivePolicy, policy)]).await;
    let yaml = format!(
        "{}sources:\n  - type: s3\n    name: up\n    sqs: {{queue_url: '{queue}', wait_time: 1s, visibility_timeout: 1s}}\n    {}\n",
        function_yaml(&fs.url("/bad")),
        m.aws_yaml()
    );
    let b = broker(&yaml).await;
    m.put(&bucket, "poison.txt", b"x").await;
    // Each receive fails for good (422, no retries); the message is never deleted, and after
    // maxReceiveCount receives the queue moves it to its dead-letter queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let moved = loop {
        let got = m.sqs.receive_message().queue_url(&dlq).wait_time_seconds(1).send().await.unwrap();
        if let Some(msg) = got.messages.unwrap_or_default().into_iter().next() {
            break msg;
        }
        assert!(tokio::time::Instant::now() < deadline, "the failing message never reached the dead-letter queue");
    };
    assert!(moved.body.unwrap().contains("poison.txt"));
    let failures = terminal(&b, 2).await;
    assert!(failures.len() >= 2 && failures.iter().all(|r| r.status == Status::Failure && r.dead_lettered));
    assert!(failures.iter().all(|r| r.event_subject.as_deref() == Some("poison.txt")));
    b.running.shutdown().await;
}

#[tokio::test]
async fn sns_to_http_delivers_s3_events() {
    let Some(m) = moto().await else { return };
    let fs = function_server().await;
    let source = unique("sns");
    let yaml = format!(
        "{}sources:\n  - type: s3\n    name: {source}\n    sns: {{verify_signatures: false}}\n    {}\n",
        function_yaml(&fs.url("/ok")),
        m.aws_yaml()
    );
    let b = broker(&yaml).await;
    let topic = xml_value(&m.sns(&[("Action", "CreateTopic"), ("Name", &unique("t"))]).await, "TopicArn");
    let endpoint = b.url(&format!("/ingest/s3/{source}"));
    m.sns(&[("Action", "Subscribe"), ("TopicArn", &topic), ("Protocol", "http"), ("Endpoint", &endpoint)]).await;
    let bucket = unique("sy");
    m.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let tc = TopicConfiguration::builder().topic_arn(&topic).events(Event::S3ObjectCreated).build().unwrap();
    let nc = NotificationConfiguration::builder().topic_configurations(tc).build();
    m.s3.put_bucket_notification_configuration().bucket(&bucket).notification_configuration(nc).send().await.unwrap();
    m.put(&bucket, "via sns/ä+b.txt", b"x").await;
    let records = terminal(&b, 1).await;
    assert_eq!(records[0].event_type, "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(records[0].event_subject.as_deref(), Some("via sns/ä+b.txt"));
    assert_eq!(records[0].status, Status::Success);
    b.running.shutdown().await;
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../testdata/s3/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn webhook_takes_minio_samples_with_the_bearer_token_only() {
    let fs = function_server().await;
    let token = "a-webhook-token-of-some-length";
    let yaml = format!(
        "{}sources:\n  - type: s3\n    name: minio\n    webhook: {{token: {token}}}\n",
        function_yaml(&fs.url("/ok"))
    );
    let b = broker(&yaml).await;
    let post = |body: Vec<u8>, auth: Option<&str>| {
        let mut req = b.http.post(b.url("/ingest/s3/minio")).header("content-type", "application/json").body(body);
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        req.send()
    };
    assert_eq!(post(sample("minio-put.json"), None).await.unwrap().status(), 401);
    assert_eq!(post(sample("minio-put.json"), Some("wrong-token-wrong-token")).await.unwrap().status(), 401);
    let resp = post(sample("minio-put.json"), Some(token)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["events"], 1, "answered once the event was terminal: {body}");
    assert_eq!(body["failed"], 0);
    assert_eq!(post(sample("minio-delete.json"), Some(token)).await.unwrap().status(), 200);
    let resp = post(sample("moto-test-event.json"), Some(token)).await.unwrap();
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["ignored"], "s3:TestEvent");
    let resp = post(br#"{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}"#.to_vec(), Some(token)).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("s3.bucket.name"));
    let records = terminal(&b, 2).await;
    assert_eq!(records.len(), 2);
    let put = records.iter().find(|r| r.event_type == "com.amazonaws.s3.ObjectCreated:Put").unwrap();
    assert_eq!(put.event_subject.as_deref(), Some("scans/page 1+2 ü.png"));
    assert_eq!(put.event_source, "minio:s3..incoming");
    assert_eq!(put.event_id, "17CB1A2F3E4D5C6B.dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8");
    let del = records.iter().find(|r| r.event_type == "com.amazonaws.s3.ObjectRemoved:Delete").unwrap();
    assert_eq!(del.event_subject.as_deref(), Some("old/report.txt"));
    // Unknown sources are 404; server.tokens do not apply to this path (the source authenticates).
    assert_eq!(b.http.post(b.url("/ingest/s3/nope")).body("{}").send().await.unwrap().status(), 404);
    b.running.shutdown().await;
}

#[tokio::test]
async fn sns_endpoint_refuses_foreign_topics_and_certificates() {
    let fs = function_server().await;
    let yaml = format!(
        "{}sources:\n  - type: s3\n    name: sns\n    sns: {{topic_arns: ['arn:aws:sns:eu-west-1:123456789012:uploads']}}\n",
        function_yaml(&fs.url("/ok"))
    );
    let b = broker(&yaml).await;
    let signed: serde_json::Value = serde_json::from_slice(&sample("sns/notification-v1.json")).unwrap();
    let post = |v: serde_json::Value| b.http.post(b.url("/ingest/s3/sns")).json(&v).send();
    let mut other_topic = signed.clone();
    other_topic["TopicArn"] = "arn:aws:sns:eu-west-1:123456789012:someone-else".into();
    assert_eq!(post(other_topic).await.unwrap().status(), 403);
    let mut forged_cert = signed.clone();
    forged_cert["SigningCertURL"] = "https://evil.example.com/sns.eu-west-1.amazonaws.com/cert.pem".into();
    let resp = post(forged_cert).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("bad_signature"));
    assert_eq!(post(serde_json::json!({"Type": "Notification"})).await.unwrap().status(), 400);
    assert!(fs.seen.calls.lock().unwrap().is_empty(), "nothing refused reached the function");
    b.running.shutdown().await;
}

#[tokio::test]
async fn sqs_serve_killed_mid_run_loses_nothing() {
    let Some(m) = moto().await else { return };
    let fs = function_server().await;
    let (bucket, queue) = m.bucket_to_queue(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("records.db").display().to_string();
    let store = RecordStore::open(&format!("sqlite://{store_path}")).await.unwrap();
    let n = 60;
    for i in 0..n {
        m.put(&bucket, &format!("k/{i:03}.txt"), b"x").await;
    }
    let source = format!(
        "sources:\n  - type: s3\n    name: up\n    sqs: {{queue_url: '{queue}', wait_time: 1s, visibility_timeout: 3s, max_in_flight: 8}}\n    {}\n",
        m.aws_yaml()
    );
    let yaml = process_yaml(&store_path, &source, &fs.url("/slow/100"));
    let first = Serve::start(dir.path(), "first", &yaml);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.count(Some(Status::Success)).await.unwrap() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "the first process never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal("-KILL");
    let _ = first.wait().await;
    let before = store.count(Some(Status::Success)).await.unwrap();
    assert!(before < n, "killed too late to test anything ({before} done)");
    let second = Serve::start(dir.path(), "second", &yaml);
    let s = wait_successes(&store, None, usize::try_from(n).unwrap(), 120).await;
    let subjects: BTreeSet<String> = store
        .list(&RecordQuery { status: Some(Status::Success), limit: 1000, ..RecordQuery::default() })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.event_subject)
        .collect();
    assert_eq!(subjects.len(), usize::try_from(n).unwrap(), "every upload processed: {} ids", s.len());
    m.wait_empty(&queue).await;
    second.signal("-TERM");
    assert!(second.wait().await.success());
}

#[tokio::test]
async fn nats_messages_with_s3_json_become_s3_events_when_the_source_asks() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, subject) = (format!("S3N{id}"), format!("s3n.{id}"));
    let js = jetstream_with_stream(&stream, &subject).await;
    let fs = function_server().await;
    let yaml = format!(
        "{}sources:\n  - type: nats\n    name: n\n    s3_notifications: true\n    jetstream: {{stream: {stream}}}\n",
        function_yaml(&fs.url("/ok"))
    );
    let b = broker(&yaml).await;
    for (i, body) in [
        sample("minio-put.json"),
        sample("aws-delete.json"),
        sample("aws-test-event.json"),
        br#"{"order": 1}"#.to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        js.publish(format!("{subject}.{i}"), body.into()).await.unwrap().await.unwrap();
    }
    let records = terminal(&b, 4).await;
    let mut types: Vec<_> = records.iter().map(|r| r.event_type.as_str()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "com.amazonaws.s3.ObjectCreated:Put",
            "com.amazonaws.s3.ObjectRemoved:Delete",
            "com.amazonaws.s3.ObjectRemoved:DeleteMarkerCreated",
            "dev.switchyard.nats.message"
        ],
        "one event per record, the TestEvent dropped, other messages as usual"
    );
    assert!(records.iter().any(|r| r.event_subject.as_deref() == Some("2024/q1/raw data.csv")));
    let mut c: async_nats::jetstream::consumer::PullConsumer = js.get_consumer_from_stream("n", &stream).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = c.info().await.unwrap();
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "carriers not acked: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.running.shutdown().await;
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn sqs_visibility_is_extended_while_a_slow_function_runs() {
    let Some(m) = moto().await else { return };
    let fs = function_server().await;
    let (bucket, queue) = m.bucket_to_queue(&[]).await;
    // The function takes 2.5x the visibility timeout: without extensions the message would be
    // received again while it runs.
    let yaml = format!(
        "{}sources:\n  - type: s3\n    name: up\n    sqs: {{queue_url: '{queue}', wait_time: 1s, visibility_timeout: 2s}}\n    {}\n",
        function_yaml(&fs.url("/slow/5000")),
        m.aws_yaml()
    );
    let b = broker(&yaml).await;
    m.put(&bucket, "slow.txt", b"x").await;
    let records = terminal(&b, 1).await;
    assert_eq!(records[0].status, Status::Success);
    m.wait_empty(&queue).await;
    assert_eq!(fs.calls(&records[0].event_id), 1, "received once, invoked once");
    assert_eq!(terminal(&b, 1).await.len(), 1);
    b.running.shutdown().await;
}

#[tokio::test]
async fn sns_subscription_confirmation_fetches_the_subscribe_url() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/confirm",
        axum::routing::get({
            let hits = Arc::clone(&hits);
            move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "<ConfirmSubscriptionResponse/>"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let fs = function_server().await;
    let yaml = format!(
        "{}sources:\n  - type: s3\n    name: sns\n    sns: {{verify_signatures: false}}\n",
        function_yaml(&fs.url("/ok"))
    );
    let b = broker(&yaml).await;
    let mut msg: serde_json::Value = serde_json::from_slice(&sample("sns/subscription-confirmation-v1.json")).unwrap();
    msg["SubscribeURL"] = format!("http://{addr}/confirm").into();
    let resp = b.http.post(b.url("/ingest/s3/sns")).json(&msg).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["confirmed"], true);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    b.running.shutdown().await;
}
