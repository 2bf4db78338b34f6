//! S3 uploads -> SQS (moto) -> s3 source -> no-op HTTP function -> SQLite records, next to a bare
//! aws-sdk-sqs loop (receive 10 -> POST the same no-op function -> DeleteMessageBatch, same
//! in-flight window) in the same run.
//!
//! Run: `cargo bench -p switchyard-broker --bench s3` with `SWITCHYARD_TEST_MOTO` set to a moto server
//! (scripts/test.sh starts one; env `SWITCHYARD_BENCH_EVENTS`, default 2000). Under `cargo test` it
//! runs a small smoke load, and skips (fails when `CI=true`) without moto.
//! Two figures per path: the drain rate of a backlog of N notifications already on the queue, and
//! uploads/s end to end (PutObject of N objects with the consumer running, until every one is done).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use support::{noop_server, wait_succeeded};
use switchyard_broker::app;
use switchyard_schemas::sources::s3::AwsSettings;
use switchyard_schemas::Config;
use tokio::sync::Semaphore;

/// The in-flight window of both loops (the source's default `sqs.max_in_flight`).
const IN_FLIGHT: usize = 64;
/// Concurrent PutObject calls of the upload phase.
const UPLOADERS: usize = 8;

struct Aws {
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
}

async fn bucket_to_queue(aws: &Aws, tag: &str) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let bucket = format!("bench-{tag}-{}", &id[..12]);
    aws.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let url = aws.sqs.create_queue().queue_name(format!("bench-{tag}-{id}")).send().await.unwrap().queue_url.unwrap();
    let attrs = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let arn = attrs.attributes.unwrap()[&QueueAttributeName::QueueArn].clone();
    let qc = QueueConfiguration::builder().queue_arn(arn).events(Event::S3ObjectCreated).build().unwrap();
    let nc = NotificationConfiguration::builder().queue_configurations(qc).build();
    aws.s3.put_bucket_notification_configuration().bucket(&bucket).notification_configuration(nc).send().await.unwrap();
    (bucket, url)
}

/// Uploads `n` small objects with `UPLOADERS` concurrent calls; returns the seconds it took.
async fn upload(aws: &Aws, bucket: &str, n: usize, phase: &str) -> f64 {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..UPLOADERS {
        let (s3, bucket, next, phase) = (aws.s3.clone(), bucket.to_owned(), Arc::clone(&next), phase.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let key = format!("{phase}/obj {i}.txt");
                s3.put_object().bucket(&bucket).key(key).body(ByteStream::from_static(b"x")).send().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// The bare loop: receive up to 10, POST each body to the no-op function concurrently (at most
/// `IN_FLIGHT` in flight), delete each batch once its POSTs are done. Returns once `n` messages were
/// received and handled.
async fn bare(aws: &Aws, queue: &str, n: usize, function: &str) {
    let http = reqwest::Client::new();
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut received = 0;
    while received < n {
        let permits = Arc::clone(&limit).acquire_many_owned(10).await.unwrap();
        let got = aws
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await
            .unwrap();
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            drop(permits);
            continue;
        }
        received += messages.len();
        let (sqs, queue, http, function) = (aws.sqs.clone(), queue.to_owned(), http.clone(), function.to_owned());
        tasks.spawn(async move {
            let posts = messages.iter().map(|m| {
                let body = m.body.clone().unwrap_or_default();
                let http = http.clone();
                let function = function.clone();
                async move { http.post(&function).body(body).send().await.unwrap().bytes().await.unwrap() }
            });
            futures::future::join_all(posts).await;
            let entries: Vec<_> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap())
                        .build()
                        .unwrap()
                })
                .collect();
            sqs.delete_message_batch().queue_url(&queue).set_entries(Some(entries)).send().await.unwrap();
            drop(permits);
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let Ok(moto) = std::env::var("SWITCHYARD_TEST_MOTO") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but SWITCHYARD_TEST_MOTO is not set");
        eprintln!("skipping the s3 bench: SWITCHYARD_TEST_MOTO is not set (scripts/test.sh starts moto)");
        return;
    };
    let n: usize = if bench {
        std::env::var("SWITCHYARD_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    } else {
        60
    };
    let settings = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.clone()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        session_token: None,
        force_path_style: true,
    };
    let sdk = switchyard_connectors::s3::aws::sdk_config(&settings, None).await;
    let aws =
        Aws { s3: switchyard_connectors::s3::aws::s3_client(&sdk, &settings), sqs: aws_sdk_sqs::Client::new(&sdk) };
    let function = noop_server().await;

    // Bare loop: a backlog, then uploads with the loop running. `+ 1`: the s3:TestEvent.
    let (bucket, queue) = bucket_to_queue(&aws, "bare").await;
    let bare_upload_only = upload(&aws, &bucket, n, "backlog").await;
    let start = Instant::now();
    bare(&aws, &queue, n + 1, &function).await;
    let bare_drain = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let consumer = tokio::spawn({
        let aws = Aws { s3: aws.s3.clone(), sqs: aws.sqs.clone() };
        let (queue, function) = (queue.clone(), function.clone());
        async move { bare(&aws, &queue, n, &function).await }
    });
    upload(&aws, &bucket, n, "live").await;
    consumer.await.unwrap();
    let bare_e2e = start.elapsed().as_secs_f64();

    // Switchyard.
    let (bucket, queue) = bucket_to_queue(&aws, "sy").await;
    let sy_upload_only = upload(&aws, &bucket, n, "backlog").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store: sqlite://{}/bench.db\nserver: {{bind: '127.0.0.1:0'}}\nsources:\n  - type: s3\n    name: up\n    sqs: {{queue_url: '{queue}', wait_time: 1s, max_in_flight: {IN_FLIGHT}}}\n    aws: {{endpoint_url: '{moto}', region: us-east-1, access_key_id: test, secret_access_key: test, force_path_style: true}}\nfunctions:\n  - {{name: noop, runtime: http, url: '{function}', max_concurrency: {IN_FLIGHT}}}\ntriggers:\n  - {{name: all, function: noop}}\n",
        dir.path().display()
    );
    let config = Config::from_yaml_str(&yaml, "bench.yaml", |_| None).unwrap();
    let start = Instant::now();
    let running = app::start(config, false, std::future::pending()).await.unwrap();
    wait_succeeded(&running.dispatcher, n as u64).await;
    let sy_drain = start.elapsed().as_secs_f64();
    let start = Instant::now();
    upload(&aws, &bucket, n, "live").await;
    wait_succeeded(&running.dispatcher, (2 * n) as u64).await;
    let sy_e2e = start.elapsed().as_secs_f64();
    running.shutdown().await;

    let rate = |secs: f64| n as f64 / secs;
    println!("\nS3 -> SQS on moto, {n} objects per phase, in-flight {IN_FLIGHT}, {UPLOADERS} concurrent uploaders\n");
    println!("| path | drain events/s (backlog) | ratio | uploads/s end to end | ratio |");
    println!("|---|---|---|---|---|");
    println!(
        "| bare aws-sdk-sqs loop: receive -> POST no-op -> DeleteMessageBatch | {:.0} | 1.00 | {:.0} | 1.00 |",
        rate(bare_drain),
        rate(bare_e2e)
    );
    println!(
        "| switchyard: s3 source (sqs) -> no-op function -> SUCCESS record | {:.0} | {:.2} | {:.0} | {:.2} |",
        rate(sy_drain),
        bare_drain / sy_drain,
        rate(sy_e2e),
        bare_e2e / sy_e2e
    );
    println!(
        "\nPutObject alone (no consumer): {:.0} and {:.0} uploads/s",
        rate(bare_upload_only),
        rate(sy_upload_only)
    );
}
