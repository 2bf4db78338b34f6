//! The Kafka source against a real broker (`tansu`, started per test) and librdkafka's mock
//! cluster (injected request errors, a broker outage). A fake dispatcher resolves the acks, so the
//! tests see exactly what the source takes, hands on and commits.

mod kafka_support;
mod kafka_tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_support::{
    create_topic, create_topic_with, produce, producer, producer_with, unique, ScramUser, Tansu, TansuOptions,
};
use kafka_tls::{TestPki, TlsProxy};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchyard_connectors::kafka::binding;
use switchyard_connectors::{build, Delivery, MemoryState, Outcome, SourceContext};
use switchyard_schemas::config::{Ordering, SourceConfig};
use switchyard_schemas::{CloudEvent, Data, ExtensionValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DONE: Outcome = Outcome::Completed { invocations: 1, failed: 0 };

struct Running {
    rx: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn next(&mut self, secs: u64) -> Delivery {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("a delivery within {secs}s"))
            .expect("source alive")
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task).await.expect("source stops").unwrap();
    }
}

fn start(yaml: &str) -> Running {
    let config: SourceConfig = serde_yaml::from_str(yaml).unwrap();
    config.validate("sources[0]").unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel(100_000);
    let stop = CancellationToken::new();
    let ctx = SourceContext {
        deliveries: tx,
        shutdown: stop.clone(),
        name: config.name().to_owned(),
        state: Arc::new(MemoryState::default()),
    };
    let source = build(&config);
    let task = tokio::spawn(async move { source.run(ctx).await.unwrap() });
    Running { rx, stop, task }
}

fn source_yaml(bootstrap: &str, topic: &str, group: &str, extra: &str) -> String {
    named_source_yaml("k", bootstrap, topic, group, extra)
}

fn named_source_yaml(name: &str, bootstrap: &str, topic: &str, group: &str, extra: &str) -> String {
    format!(
        "type: kafka\nname: {name}\nbootstrap_servers: ['{bootstrap}']\ntopics: [{topic}]\ngroup: {group}\n\
         start_offset: earliest\ncluster: test\ncommit_interval: 50ms\n{extra}"
    )
}

/// The group's committed offset per partition.
fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(30)).unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Waits until the group's committed offsets equal `want`.
async fn wait_committed(bootstrap: &str, group: &str, topic: &str, want: &BTreeMap<i32, i64>) {
    let partitions = want.keys().max().map_or(1, |m| m + 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
        let have = tokio::task::spawn_blocking(move || committed(&b, &g, &t, partitions)).await.unwrap();
        if &have == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "committed {have:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tansu_topic(partitions: i32) -> Option<(Tansu, String, FutureProducer)> {
    let t = Tansu::start()?;
    let topic = unique("sy");
    create_topic(&t.bootstrap, &topic, partitions).await;
    let p = producer(&t.bootstrap);
    Some((t, topic, p))
}

#[tokio::test]
async fn binding_conformance_binary_structured_and_plain_records() {
    let Some((t, topic, p)) = tansu_topic(1).await else { return };
    let mut bin = CloudEvent::new("bin-1", "/tests", "com.example.binary");
    bin.datacontenttype = Some("text/plain".into());
    bin.data = Some(Data::Text("héllo".into()));
    bin.extensions.insert("tenant".into(), ExtensionValue::String("acme".into()));
    let (h, v) = binding::to_binary(&bin);
    produce(&p, &topic, None, Some(b"k-bin"), &h, Some(&v)).await;
    let mut st = CloudEvent::new("st-1", "/tests", "com.example.structured");
    st.datacontenttype = Some("application/json".into());
    st.data = Some(Data::Json(serde_json::json!({"n": 1})));
    let (h, v) = binding::to_structured(&st);
    produce(&p, &topic, None, None, &h, Some(&v)).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = vec![
        ("traceparent".to_owned(), tp.as_bytes().to_vec()),
        ("region".to_owned(), b"eu".to_vec()),
        ("content-type".to_owned(), b"application/json".to_vec()),
    ];
    let (_, plain_offset) = produce(&p, &topic, None, Some(b"cust-9"), &headers, Some(br#"{"plain": true}"#)).await;

    let mut s = start(&source_yaml(&t.bootstrap, &topic, &unique("g"), ""));
    let mut d = s.next(30).await;
    let mut want = bin.clone();
    want.extensions.insert("partitionkey".into(), ExtensionValue::String("k-bin".into()));
    assert_eq!(d.event, want, "binary mode, key as partitionkey");
    d.ack.resolve(DONE);
    let mut d = s.next(10).await;
    assert_eq!(d.event, st, "structured mode");
    d.ack.resolve(DONE);
    let mut d = s.next(10).await;
    let e = &d.event;
    assert_eq!(e.ty, "dev.switchyard.kafka.message");
    assert_eq!(e.source, format!("kafka://test/{topic}"));
    assert_eq!(e.subject.as_deref(), Some(format!("0:{plain_offset}").as_str()));
    assert_eq!(e.id, format!("{topic}:0:{plain_offset}"));
    assert_eq!(e.extensions["partitionkey"], ExtensionValue::String("cust-9".into()));
    assert_eq!(e.extensions["region"], ExtensionValue::String("eu".into()));
    assert_eq!(e.extensions["traceparent"], ExtensionValue::String(tp.into()));
    assert_eq!(e.data, Some(Data::Json(serde_json::json!({"plain": true}))));
    assert!(e.time.is_some(), "record timestamp kept");
    assert!(d.undecodable.is_none());
    d.ack.resolve(DONE);
    s.stop().await;
}

#[tokio::test]
async fn undecodable_record_is_dead_lettered_with_its_error_and_the_partition_moves_on() {
    let Some((t, topic, p)) = tansu_topic(1).await else { return };
    let group = unique("g");
    let bad = vec![("ce_specversion".to_owned(), b"1.0".to_vec()), ("ce_id".to_owned(), b"x".to_vec())];
    produce(&p, &topic, None, Some(b"k"), &bad, Some(b"{}")).await;
    produce(&p, &topic, None, Some(b"k"), &[], Some(b"after")).await;
    let mut s = start(&source_yaml(&t.bootstrap, &topic, &group, ""));
    let mut d = s.next(30).await;
    let reason = d.undecodable.clone().expect("marked undecodable");
    assert!(reason.contains("source"), "{reason}");
    assert!(d.event.extensions[binding::DECODE_ERROR_EXTENSION].to_string().contains("source"));
    // The dispatcher records it as FAILURE, dead-lettered; the outcome lets the source move on.
    d.ack.resolve(Outcome::Completed { invocations: 1, failed: 1 });
    let mut d = s.next(10).await;
    assert_eq!(d.event.data, Some(Data::Binary(bytes::Bytes::from_static(b"after"))));
    d.ack.resolve(DONE);
    wait_committed(&t.bootstrap, &group, &topic, &BTreeMap::from([(0, 2)])).await;
    s.stop().await;
}

#[tokio::test]
async fn commits_only_up_to_the_contiguous_watermark_of_finished_messages() {
    let Some((t, topic, p)) = tansu_topic(1).await else { return };
    let group = unique("g");
    for i in 0..5 {
        produce(&p, &topic, Some(0), None, &[], Some(format!("m{i}").as_bytes())).await;
    }
    let mut s = start(&source_yaml(&t.bootstrap, &topic, &group, "ordering: none\n"));
    let mut ds = Vec::new();
    for _ in 0..5 {
        ds.push(s.next(30).await);
    }
    // Finish 1, 2 and 4: offset 0 still runs, nothing may be committed past it.
    for i in [1, 2, 4] {
        ds[i].ack.resolve(DONE);
    }
    ds[0].ack.resolve(DONE);
    wait_committed(&t.bootstrap, &group, &topic, &BTreeMap::from([(0, 3)])).await;
    ds[3].ack.resolve(DONE);
    wait_committed(&t.bootstrap, &group, &topic, &BTreeMap::from([(0, 5)])).await;
    s.stop().await;
}

#[tokio::test]
async fn abandoned_messages_are_not_committed_and_come_back() {
    let Some((t, topic, p)) = tansu_topic(1).await else { return };
    let group = unique("g");
    for i in 0..3 {
        produce(&p, &topic, Some(0), None, &[], Some(format!("m{i}").as_bytes())).await;
    }
    // One message in flight at a time.
    let yaml = source_yaml(&t.bootstrap, &topic, &group, "max_in_flight: 1\n");
    let mut s = start(&yaml);
    let mut d = s.next(30).await;
    d.ack.resolve(DONE);
    let mut d = s.next(10).await;
    // Shutdown: what has not started is withdrawn, and the dispatcher gives up on the running message.
    s.stop.cancel();
    let withdraw = d.withdraw.clone().expect("a withdraw token");
    tokio::time::timeout(Duration::from_secs(10), withdraw.cancelled()).await.expect("withdrawn at shutdown");
    d.ack.resolve(Outcome::Abandoned);
    s.stop().await;
    wait_committed(&t.bootstrap, &group, &topic, &BTreeMap::from([(0, 1)])).await;
    let mut s = start(&yaml);
    let d = s.next(30).await;
    assert_eq!(d.event.data, Some(Data::Binary(bytes::Bytes::from_static(b"m1"))), "redelivered");
    drop(d);
    s.stop().await;
}

#[tokio::test]
async fn messages_are_handed_on_in_partition_order_with_their_partition_and_key() {
    let Some((t, topic, p)) = tansu_topic(2).await else { return };
    let keys = ["a", "b", "c", "d"];
    for i in 0..20 {
        for k in keys {
            produce(&p, &topic, None, Some(k.as_bytes()), &[], Some(format!("{k}-{i}").as_bytes())).await;
        }
    }
    produce(&p, &topic, Some(0), None, &[], Some(b"keyless")).await;
    let mut s = start(&source_yaml(&t.bootstrap, &topic, &unique("g"), "ordering: partition\nmax_in_flight: 100\n"));
    // The source does not wait for a key's previous message (each trigger orders its own
    // invocations in the dispatcher): all 81 arrive while none is finished, every key in order, each
    // carrying its partition, key and the source's default ordering.
    let mut next_seq: HashMap<String, usize> = HashMap::new();
    let mut open = Vec::new();
    let mut keyless = 0;
    for _ in 0..81 {
        let d = s.next(30).await;
        let order = d.order.clone().expect("an order key");
        assert_eq!(order.default, Ordering::Partition);
        let subject = d.event.subject.clone().expect("subject <partition>:<offset>");
        let partition = subject.split(':').next().unwrap();
        assert_eq!(&*order.stream, format!("{topic}/{partition}").as_str());
        let Some(Data::Binary(b)) = &d.event.data else { panic!("data") };
        let text = String::from_utf8(b.to_vec()).unwrap();
        match order.key.as_deref() {
            Some(key) => {
                let key = String::from_utf8(key.to_vec()).unwrap();
                assert_eq!(d.event.extensions["partitionkey"].to_string(), key);
                let seq: usize = text.rsplit('-').next().unwrap().parse().unwrap();
                assert_eq!(seq, *next_seq.get(&key).unwrap_or(&0), "key {key} out of order");
                next_seq.insert(key, seq + 1);
            }
            None => {
                assert_eq!(text, "keyless");
                keyless += 1;
            }
        }
        assert!(!d.withdraw.as_ref().expect("withdraw token").is_cancelled());
        open.push(d);
    }
    assert_eq!((keyless, next_seq.values().sum::<usize>()), (1, 80));
    for mut d in open {
        d.ack.resolve(DONE);
    }
    s.stop().await;
}

#[tokio::test]
async fn partition_is_paused_at_max_in_flight_and_resumed_as_work_drains() {
    let Some((t, topic, p)) = tansu_topic(1).await else { return };
    for i in 0..30 {
        produce(&p, &topic, Some(0), None, &[], Some(format!("m{i}").as_bytes())).await;
    }
    let mut s = start(&source_yaml(&t.bootstrap, &topic, &unique("g"), "ordering: none\nmax_in_flight: 6\n"));
    let mut ds = Vec::new();
    for _ in 0..6 {
        ds.push(s.next(30).await);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(700), s.rx.recv()).await.is_err(),
        "nothing beyond max_in_flight while paused"
    );
    // Three finish: 3 outstanding = half the limit, the partition resumes.
    for mut d in ds.drain(..3) {
        d.ack.resolve(DONE);
    }
    let mut more = 0;
    while more < 3 {
        ds.push(s.next(10).await);
        more += 1;
    }
    assert_eq!(ds.len(), 6);
    for mut d in ds.drain(..) {
        d.ack.resolve(DONE);
    }
    let mut rest = 0;
    while rest < 30 - 9 {
        s.next(10).await.ack.resolve(DONE);
        rest += 1;
    }
    s.stop().await;
}

#[tokio::test]
async fn rebalance_drains_running_work_and_commits_before_releasing_partitions() {
    let Some((t, topic, p)) = tansu_topic(4).await else { return };
    let group = unique("g");
    for i in 0..8 {
        produce(&p, &topic, Some(i % 4), None, &[], Some(format!("m{i}").as_bytes())).await;
    }
    let extra = "max_in_flight: 1\ndrain_timeout: 20s\n\
                 properties: {partition.assignment.strategy: cooperative-sticky, session.timeout.ms: '6000', \
                 heartbeat.interval.ms: '500'}\n";
    let mut a = start(&source_yaml(&t.bootstrap, &topic, &group, extra));
    // A takes the first message of each partition (one in flight per partition) and holds it.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(a.next(30).await);
    }
    // B joins: some partitions move to B. A's revoke waits for the held messages; finish them after
    // B joined, then A commits and releases.
    let mut b = start(&source_yaml(&t.bootstrap, &topic, &group, extra));
    // Not a synchronisation (the outcome is the same either way): gives B time to join so that the
    // revoke happens while A still holds the messages, which is the case under test.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for mut d in held {
        d.ack.resolve(DONE);
    }
    // Every message arrives exactly once across A and B: the drained ones were committed before
    // their partitions moved, so B starts after them.
    let mut seen: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "seen {seen:?}");
        tokio::select! {
            Some(mut d) = a.rx.recv() => { assert!(seen.insert(d.event.id.clone()), "duplicate {}", d.event.id); d.ack.resolve(DONE); }
            Some(mut d) = b.rx.recv() => { assert!(seen.insert(d.event.id.clone()), "duplicate {}", d.event.id); d.ack.resolve(DONE); }
        }
    }
    wait_committed(&t.bootstrap, &group, &topic, &(0..4).map(|p| (p, 2)).collect()).await;
    a.stop().await;
    b.stop().await;
}

/// Produces `n` messages to the mock cluster, spread over its partitions.
async fn mock_produce(bootstrap: &str, topic: &str, n: usize) {
    let p = producer(bootstrap);
    for i in 0..n {
        produce(&p, topic, None, Some(format!("k{}", i % 7).as_bytes()), &[], Some(format!("{i}").as_bytes())).await;
    }
}

/// Consumes until every one of `n` distinct messages was seen; returns how many deliveries it took.
async fn consume_all(s: &mut Running, n: usize, secs: u64) -> usize {
    let mut seen = HashSet::new();
    let mut deliveries = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while seen.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {n} messages after {secs}s", seen.len());
        if let Ok(Some(mut d)) = tokio::time::timeout(Duration::from_secs(1), s.rx.recv()).await {
            seen.insert(d.event.id.clone());
            deliveries += 1;
            d.ack.resolve(DONE);
        }
    }
    deliveries
}

#[tokio::test]
async fn survives_injected_broker_errors_without_loss() {
    let mock = MockCluster::new(3).unwrap();
    let topic = unique("mock");
    mock.create_topic(&topic, 3, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    mock_produce(&bootstrap, &topic, 300).await;
    let group = unique("g");
    let yaml = source_yaml(&bootstrap, &topic, &group, "ordering: key\n");
    // Fetches and commits fail now and then; librdkafka retries, the source keeps its watermarks.
    let errs = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
    ];
    mock.request_errors(RDKafkaApiKey::Fetch, &errs);
    mock.request_errors(RDKafkaApiKey::OffsetCommit, &errs);
    let mut s = start(&yaml);
    consume_all(&mut s, 300, 90).await;
    mock.request_errors(RDKafkaApiKey::OffsetCommit, &errs[..2]);
    s.stop().await;
    let want: BTreeMap<i32, i64> = {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        (0..3).map(|p| (p, c.fetch_watermarks(&topic, p, Duration::from_secs(10)).unwrap().1)).collect()
    };
    assert_eq!(want.values().sum::<i64>(), 300);
    wait_committed(&bootstrap, &group, &topic, &want).await;
}

#[tokio::test]
async fn survives_a_broker_outage_without_loss() {
    let mock = MockCluster::new(3).unwrap();
    let topic = unique("mock");
    mock.create_topic(&topic, 3, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    mock_produce(&bootstrap, &topic, 200).await;
    let group = unique("g");
    let mut s = start(&source_yaml(&bootstrap, &topic, &group, "ordering: none\nmax_in_flight: 20\n"));
    // Take some, then take a broker down (a partition leader) while messages are in flight.
    let mut first = Vec::new();
    for _ in 0..20 {
        first.push(s.next(60).await);
    }
    mock.broker_down(1).unwrap();
    let mut seen: HashSet<String> = first.iter().map(|d| d.event.id.clone()).collect();
    for mut d in first {
        d.ack.resolve(DONE);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    mock.broker_up(1).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < 200 {
        assert!(tokio::time::Instant::now() < deadline, "only {} of 200 after the outage", seen.len());
        if let Ok(Some(mut d)) = tokio::time::timeout(Duration::from_secs(1), s.rx.recv()).await {
            seen.insert(d.event.id.clone());
            d.ack.resolve(DONE);
        }
    }
    s.stop().await;
    let want: BTreeMap<i32, i64> = {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        (0..3).map(|p| (p, c.fetch_watermarks(&topic, p, Duration::from_secs(10)).unwrap().1)).collect()
    };
    wait_committed(&bootstrap, &group, &topic, &want).await;
}

/// What this test binary logs (warnings and errors), for the tests that assert what a source
/// reports. Lines are kept in memory; a watch channel signals each new one.
mod logs {
    use std::sync::{Mutex, Once, OnceLock};
    use std::time::Duration;

    use tokio::sync::watch;

    struct Store {
        lines: Mutex<Vec<String>>,
        written: watch::Sender<usize>,
    }

    fn store() -> &'static Store {
        static STORE: OnceLock<Store> = OnceLock::new();
        STORE.get_or_init(|| Store { lines: Mutex::new(Vec::new()), written: watch::channel(0).0 })
    }

    struct Writer;

    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            store().lines.lock().unwrap().push(String::from_utf8_lossy(buf).into_owned());
            store().written.send_modify(|n| *n += 1);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Starts capturing (once per test binary).
    pub fn capture() {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .with_writer(|| Writer)
                .try_init()
                .expect("no other tracing subscriber in this test binary");
        });
    }

    /// The first line logged that contains every one of `needles`, waiting up to `secs`.
    pub async fn wait_for(needles: &[&str], secs: u64) -> String {
        let mut written = store().written.subscribe();
        let found = tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                let hit = store().lines.lock().unwrap().iter().find(|l| needles.iter().all(|n| l.contains(n))).cloned();
                if let Some(line) = hit {
                    return line;
                }
                written.changed().await.unwrap();
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let lines = store().lines.lock().unwrap().clone();
            panic!("no log line with {needles:?} within {secs}s; logged:\n{}", lines.concat())
        })
    }
}

/// librdkafka properties of the tests' own clients (admin, producer).
fn client(bootstrap: &str, props: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in props {
        c.set(*k, *v);
    }
    c
}

const SVC_512: ScramUser = ScramUser { mechanism: "scram512", name: "svc", password: "s3cret-512" };
const SVC_256: ScramUser = ScramUser { mechanism: "scram256", name: "svc256", password: "s3cret-256" };

/// The librdkafka SASL properties of `user`.
fn scram(user: &ScramUser) -> [(&'static str, &'static str); 3] {
    let mechanism = if user.mechanism == "scram256" { "SCRAM-SHA-256" } else { "SCRAM-SHA-512" };
    [("sasl.mechanism", mechanism), ("sasl.username", user.name), ("sasl.password", user.password)]
}

/// SCRAM needs librdkafka built with OpenSSL (rdkafka's `ssl` feature): without it the consumer
/// cannot even be created.
#[tokio::test]
async fn scram_source_logs_in_and_a_wrong_password_is_logged_as_an_authentication_error() {
    logs::capture();
    let options = TansuOptions { authentication: true, scram_users: &[SVC_512], ..TansuOptions::default() };
    let Some(t) = Tansu::start_with(options) else { return };
    // Without SASL the broker answers nothing but ApiVersions and the SASL requests.
    let bootstrap = t.bootstrap.clone();
    let anonymous = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client(&bootstrap, &[]).create().unwrap();
        c.fetch_metadata(None, Duration::from_secs(3)).map(|_| ())
    })
    .await
    .unwrap();
    assert!(anonymous.is_err(), "the broker requires authentication");
    let [m, u, pw] = scram(&SVC_512);
    let config = client(&t.bootstrap, &[m, u, pw, ("security.protocol", "sasl_plaintext")]);
    let topic = unique("scram");
    create_topic_with(&config, &topic, 1).await;
    produce(&producer_with(&config), &topic, None, None, &[], Some(br#"{"over": "scram"}"#)).await;

    let wrong = unique("scram-wrong");
    let extra = "sasl: {mechanism: scram_sha_512, username: svc, password: not-the-password}\n";
    let mut s = start(&named_source_yaml(&wrong, &t.bootstrap, &topic, &unique("g"), extra));
    let line = logs::wait_for(&[&wrong, "sasl_plaintext://", "SASL authentication error"], 30).await;
    assert!(line.contains("SASL SCRAM authentication failed"), "{line}");
    assert!(s.rx.try_recv().is_err(), "nothing is taken without a login");
    s.stop().await;

    let extra = format!("sasl: {{mechanism: scram_sha_512, username: svc, password: {}}}\n", SVC_512.password);
    let mut s = start(&source_yaml(&t.bootstrap, &topic, &unique("g"), &extra));
    let mut d = s.next(30).await;
    assert_eq!(d.event.data, Some(Data::Json(serde_json::json!({"over": "scram"}))));
    d.ack.resolve(DONE);
    s.stop().await;
}

/// tansu behind the verifying TLS proxy, which is all a client sees: the broker (keep it), the proxy
/// (keep it) and the bootstrap address. `None` when tansu is not installed (outside CI).
fn tansu_behind_tls(pki: &TestPki, client_auth: bool, options: TansuOptions) -> Option<(Tansu, TlsProxy, String)> {
    let listener = TlsProxy::bind();
    let port = listener.local_addr().unwrap().port();
    let t = Tansu::start_with(TansuOptions { advertised_port: Some(port), ..options })?;
    let proxy = TlsProxy::forward_to(listener, pki, client_auth, t.bootstrap.parse().unwrap());
    Some((t, proxy, format!("127.0.0.1:{port}")))
}

#[tokio::test]
async fn tls_and_sasl_together_log_in_with_scram_inside_the_verified_tls_session() {
    let pki = TestPki::new();
    let options = TansuOptions { authentication: true, scram_users: &[SVC_256], ..TansuOptions::default() };
    let Some((_t, _proxy, bootstrap)) = tansu_behind_tls(&pki, false, options) else { return };
    let ca = pki.ca_file.display().to_string();
    let [m, u, pw] = scram(&SVC_256);
    let config = client(&bootstrap, &[m, u, pw, ("security.protocol", "sasl_ssl"), ("ssl.ca.location", &ca)]);
    let topic = unique("sasl-ssl");
    create_topic_with(&config, &topic, 1).await;
    produce(&producer_with(&config), &topic, None, None, &[], Some(br#"{"over": "sasl_ssl"}"#)).await;
    let extra = format!(
        "tls: {{ca_file: '{ca}'}}\nsasl: {{mechanism: scram_sha_256, username: {}, password: {}}}\n",
        SVC_256.name, SVC_256.password
    );
    let mut s = start(&source_yaml(&bootstrap, &topic, &unique("g"), &extra));
    let mut d = s.next(30).await;
    assert_eq!(d.event.data, Some(Data::Json(serde_json::json!({"over": "sasl_ssl"}))));
    d.ack.resolve(DONE);
    s.stop().await;
}

#[tokio::test]
async fn tls_source_verifies_the_broker_against_its_ca_file() {
    logs::capture();
    let pki = TestPki::new();
    let Some((_t, _proxy, bootstrap)) = tansu_behind_tls(&pki, false, TansuOptions::default()) else { return };
    let ca = pki.ca_file.display().to_string();
    let tls = client(&bootstrap, &[("security.protocol", "ssl"), ("ssl.ca.location", &ca)]);
    let topic = unique("tls");
    create_topic_with(&tls, &topic, 1).await;
    produce(&producer_with(&tls), &topic, None, None, &[], Some(br#"{"over": "tls"}"#)).await;

    // The system CAs do not vouch for the test CA: the handshake fails and nothing is taken.
    let untrusting = unique("tls-system-ca");
    let mut s = start(&named_source_yaml(&untrusting, &bootstrap, &topic, &unique("g"), "tls: {}\n"));
    logs::wait_for(&[&untrusting, "certificate verify failed"], 30).await;
    assert!(s.rx.try_recv().is_err(), "nothing is taken from an unverified broker");
    s.stop().await;

    let mut s = start(&source_yaml(&bootstrap, &topic, &unique("g"), &format!("tls: {{ca_file: '{ca}'}}\n")));
    let mut d = s.next(30).await;
    assert_eq!(d.event.data, Some(Data::Json(serde_json::json!({"over": "tls"}))));
    d.ack.resolve(DONE);
    s.stop().await;
}

#[tokio::test]
async fn mutual_tls_source_presents_its_client_certificate() {
    logs::capture();
    let pki = TestPki::new();
    let Some((_t, _proxy, bootstrap)) = tansu_behind_tls(&pki, true, TansuOptions::default()) else { return };
    let (ca, cert, key) = (
        pki.ca_file.display().to_string(),
        pki.client_cert_file.display().to_string(),
        pki.client_key_file.display().to_string(),
    );
    let props = [
        ("security.protocol", "ssl"),
        ("ssl.ca.location", ca.as_str()),
        ("ssl.certificate.location", cert.as_str()),
        ("ssl.key.location", key.as_str()),
    ];
    let mtls = client(&bootstrap, &props);
    let topic = unique("mtls");
    create_topic_with(&mtls, &topic, 1).await;
    produce(&producer_with(&mtls), &topic, None, None, &[], Some(br#"{"over": "mtls"}"#)).await;

    // Without a client certificate the proxy ends the handshake and nothing is taken.
    let anonymous = unique("mtls-no-cert");
    let mut s =
        start(&named_source_yaml(&anonymous, &bootstrap, &topic, &unique("g"), &format!("tls: {{ca_file: '{ca}'}}\n")));
    logs::wait_for(&[&anonymous, "ssl://", "alert certificate required"], 30).await;
    assert!(s.rx.try_recv().is_err(), "nothing is taken without a client certificate");
    s.stop().await;

    let extra = format!("tls: {{ca_file: '{ca}', cert_file: '{cert}', key_file: '{key}'}}\n");
    let mut s = start(&source_yaml(&bootstrap, &topic, &unique("g"), &extra));
    let mut d = s.next(30).await;
    assert_eq!(d.event.data, Some(Data::Json(serde_json::json!({"over": "mtls"}))));
    d.ack.resolve(DONE);
    s.stop().await;
}
