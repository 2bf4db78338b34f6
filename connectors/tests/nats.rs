//! The NATS source against the machine's NATS server (127.0.0.1:4222, JetStream on): core
//! subscriptions, JetStream acks only after the outcome, redelivery of abandoned messages,
//! in-progress acks for long invocations, and a durable consumer resuming after a restart.
//! A fake dispatcher resolves the acks, so these tests see exactly what the source does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use switchyard_connectors::{build, Delivery, MemoryState, Outcome, SourceContext};
use switchyard_schemas::config::SourceConfig;
use switchyard_schemas::CloudEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SERVER: &str = "nats://127.0.0.1:4222";

async fn client() -> async_nats::Client {
    match async_nats::connect(SERVER).await {
        Ok(c) => c,
        Err(e) => panic!("NATS must run on {SERVER} for these tests (scripts/test.sh starts it): {e}"),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Runs a source from YAML; returns its deliveries and the token that stops it.
fn start(yaml: &str) -> (mpsc::Receiver<Delivery>, CancellationToken, tokio::task::JoinHandle<()>) {
    let config: SourceConfig = serde_yaml::from_str(yaml).unwrap();
    config.validate("sources[0]").unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        deliveries: tx,
        shutdown: shutdown.clone(),
        name: config.name().to_owned(),
        state: Arc::new(MemoryState::default()),
    };
    let source = build(&config);
    let task = tokio::spawn(async move { source.run(ctx).await.unwrap() });
    (rx, shutdown, task)
}

async fn next(rx: &mut mpsc::Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a delivery within 20s")
        .expect("source alive")
}

#[tokio::test]
async fn core_subscription_wraps_plain_binary_and_structured_messages() {
    let nc = client().await;
    let prefix = unique("sy.core.");
    let (mut rx, stop, task) = start(&format!("type: nats\nname: core\nsubjects: ['{prefix}.>']\n"));
    // The subscription is ready once a probe gets through (core NATS keeps nothing for late subscribers).
    let mut probe = None;
    for _ in 0..200 {
        nc.publish(format!("{prefix}.probe"), "probe".into()).await.unwrap();
        nc.flush().await.unwrap();
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            probe = Some(d);
            break;
        }
    }
    let mut probe = probe.expect("the source subscribed");
    assert_eq!(probe.event.ty, "dev.switchyard.nats.message");
    probe.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    while let Ok(d) = rx.try_recv() {
        drop(d);
    }

    let mut ce = CloudEvent::new("bin-1", "/tests", "com.example.binary");
    ce.datacontenttype = Some("text/plain".into());
    ce.data = Some(switchyard_schemas::Data::Text("héllo".into()));
    let (h, body) = switchyard_connectors::nats::binding::to_binary(&ce);
    nc.publish_with_headers(format!("{prefix}.bin"), h, body).await.unwrap();
    let st = CloudEvent::new("st-1", "/tests", "com.example.structured");
    let (h, body) = switchyard_connectors::nats::binding::to_structured(&st);
    nc.publish_with_headers(format!("{prefix}.st"), h, body).await.unwrap();
    nc.publish(format!("{prefix}.plain"), "{\"a\": 1}".into()).await.unwrap();
    nc.flush().await.unwrap();

    let mut got = Vec::new();
    while got.len() < 3 {
        let d = next(&mut rx).await;
        if d.event.subject.as_deref().is_some_and(|s| s.ends_with(".probe")) {
            continue;
        }
        got.push(d.event);
    }
    assert_eq!(got[0], ce);
    assert_eq!(got[1], st);
    assert_eq!(got[2].ty, "dev.switchyard.nats.message");
    assert_eq!(got[2].source, format!("nats://127.0.0.1:4222/{prefix}.plain"));
    assert_eq!(got[2].data, Some(switchyard_schemas::Data::Json(serde_json::json!({"a": 1}))));
    stop.cancel();
    task.await.unwrap();
}

async fn stream_yaml(stream: &str, subject: &str, extra: &str) -> String {
    format!(
        "type: nats\nname: js\njetstream:\n  stream: {stream}\n  create: {{subjects: ['{subject}.>'], storage: memory}}\n  durable: d{stream}\n{extra}"
    )
}

async fn consumer_info(stream: &str) -> jetstream::consumer::Info {
    let js = jetstream::new(client().await);
    let mut c: jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream(format!("d{stream}"), stream).await.unwrap();
    c.info().await.unwrap().clone()
}

async fn publish_n(js: &jetstream::Context, subject: &str, n: usize) {
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(js.publish(subject.to_owned(), format!("{{\"i\": {i}}}").into()).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn create_stream(stream: &str, subject: &str) -> jetstream::Context {
    let js = jetstream::new(client().await);
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![format!("{subject}.>")],
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

async fn delete_stream(stream: &str) {
    let js = jetstream::new(client().await);
    let _ = js.delete_stream(stream).await;
}

#[tokio::test]
async fn jetstream_acks_only_after_the_outcome_and_redelivers_abandoned() {
    let stream = unique("SYJS");
    let subject = unique("sy.js.");
    let js = create_stream(&stream, &subject).await;
    publish_n(&js, &format!("{subject}.a"), 20).await;
    let (mut rx, stop, task) = start(&(stream_yaml(&stream, &subject, "  ack_wait: 30s\n").await));
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut held = Vec::new();
    // Take all 20, holding their acks: nothing may be acked yet.
    for _ in 0..20 {
        let d = next(&mut rx).await;
        *seen.entry(d.event.id.clone()).or_default() += 1;
        held.push(d);
    }
    let info = consumer_info(&stream).await;
    assert_eq!(info.num_ack_pending, 20, "no message is acked before its outcome");
    // Complete 19; abandon one (as at shutdown): it must come back.
    let abandoned = held.pop().unwrap();
    let abandoned_id = abandoned.event.id.clone();
    drop(abandoned);
    for mut d in held {
        d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    }
    let mut again = next(&mut rx).await;
    assert_eq!(again.event.id, abandoned_id, "the abandoned message is redelivered with the same id");
    assert!(abandoned_id.starts_with(&format!("{stream}:")), "{abandoned_id}");
    again.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    // double_ack: once the source has acked, the server knows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer_info(&stream).await;
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "acks never reached the server: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.len(), 20);
    stop.cancel();
    task.await.unwrap();
    delete_stream(&stream).await;
}

#[tokio::test]
async fn long_invocation_is_kept_alive_with_in_progress_acks() {
    let stream = unique("SYJS");
    let subject = unique("sy.js.");
    let js = create_stream(&stream, &subject).await;
    publish_n(&js, &format!("{subject}.a"), 1).await;
    let (mut rx, stop, task) = start(&(stream_yaml(&stream, &subject, "  ack_wait: 1s\n").await));
    let mut d = next(&mut rx).await;
    // Hold the outcome for 3.5 ack_waits: without in-progress acks the server would redeliver.
    let redelivered = tokio::time::timeout(Duration::from_millis(3500), rx.recv()).await;
    assert!(redelivered.is_err(), "the message was redelivered while its invocation still ran");
    d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while consumer_info(&stream).await.num_ack_pending != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = consumer_info(&stream).await;
    assert_eq!(info.num_redelivered, 0);
    stop.cancel();
    task.await.unwrap();
    delete_stream(&stream).await;
}

#[tokio::test]
async fn durable_consumer_resumes_where_the_acks_left_off() {
    let stream = unique("SYJS");
    let subject = unique("sy.js.");
    let js = create_stream(&stream, &subject).await;
    publish_n(&js, &format!("{subject}.a"), 5).await;
    let yaml = stream_yaml(&stream, &subject, "").await;
    let (mut rx, stop, task) = start(&yaml);
    let mut first = Vec::new();
    for _ in 0..5 {
        let mut d = next(&mut rx).await;
        first.push(d.event.id.clone());
        d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    }
    stop.cancel();
    task.await.unwrap();
    publish_n(&js, &format!("{subject}.b"), 5).await;
    let (mut rx, stop, task) = start(&yaml);
    let mut second = Vec::new();
    for _ in 0..5 {
        let mut d = next(&mut rx).await;
        assert_eq!(d.event.subject.as_deref(), Some(format!("{subject}.b").as_str()), "only the new messages");
        second.push(d.event.id.clone());
        d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    }
    assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.is_err(), "nothing else");
    assert!(first.iter().all(|id| !second.contains(id)));
    stop.cancel();
    task.await.unwrap();
    delete_stream(&stream).await;
}
