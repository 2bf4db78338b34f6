//! Test helpers shared by the Kafka tests and bench: a `tansu` broker started per test on a free
//! port from an empty directory (memory storage), topic creation and a producer.
//!
//! The binary comes from `$SWITCHYARD_TANSU` (set by `scripts/test.sh`) or
//! `/opt/switchyard-tools/tansu/bin/tansu`. When it is missing the tests skip with a reason, except
//! under `CI=true`, where they fail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Where `scripts/test.sh` installs tansu when `SWITCHYARD_TANSU` is not set.
pub const DEFAULT_TANSU: &str = "/opt/switchyard-tools/tansu/bin/tansu";

/// A running tansu broker; killed on drop.
pub struct Tansu {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

/// How [`Tansu::start_with`] starts the broker.
#[derive(Debug, Clone, Copy, Default)]
pub struct TansuOptions {
    /// `--authentication`: every client must log in with SASL first. tansu 0.6.0 offers SCRAM
    /// only (`PLAIN` fails with `NoSharedMechanism`), with the users of `scram_users`.
    pub authentication: bool,
    /// SCRAM users created before the broker starts. Its memory storage keeps no SCRAM
    /// credentials (`tansu user create` succeeds and stores nothing), so with users the broker
    /// runs on SQLite storage in its directory (tansu built with the `libsql` feature, as
    /// `scripts/test.sh` builds it): a first run without authentication creates them, then the
    /// broker restarts on the same file.
    pub scram_users: &'static [ScramUser],
    /// The port advertised to clients in metadata instead of the broker's own, for a proxy in
    /// front of it (tansu 0.6.0 has no TLS listener: `--cert` and `--key` cannot be given
    /// together, and the broker never wraps connections in TLS).
    pub advertised_port: Option<u16>,
}

/// A SCRAM user for [`TansuOptions::scram_users`].
#[derive(Debug, Clone, Copy)]
pub struct ScramUser {
    /// `scram256` or `scram512` (`tansu user create --mechanism`).
    pub mechanism: &'static str,
    pub name: &'static str,
    pub password: &'static str,
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("SWITCHYARD_TANSU").map_or_else(|| PathBuf::from(DEFAULT_TANSU), PathBuf::from);
    path.is_file().then_some(path)
}

fn skip_or_fail(msg: &str) -> Option<Tansu> {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// Starts `tansu broker` in `dir` and waits until it listens on `port`; `Err(log)` when it exits.
fn spawn(
    bin: &Path,
    dir: &Path,
    port: u16,
    advertised: u16,
    storage: &str,
    authentication: bool,
) -> Result<Child, String> {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let log_path = dir.join("tansu.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(bin);
    command
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
        .args(["--storage-engine", storage]);
    if authentication {
        command.arg("--authentication");
    }
    let mut child = command
        .current_dir(dir)
        .env_remove("STORAGE_ENGINE")
        .env_remove("LISTENER_URL")
        .env_remove("ADVERTISED_LISTENER_URL")
        .env_remove("CLUSTER_ID")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("tansu exited at start ({status}): {log}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tansu did not listen on {port} within 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

impl Tansu {
    /// Starts a broker; `None` (test skipped, reason printed) when tansu is not installed, unless
    /// `CI=true`, where it panics.
    pub fn start() -> Option<Self> {
        Self::start_with(TansuOptions::default())
    }

    /// [`Tansu::start`] with options.
    pub fn start_with(options: TansuOptions) -> Option<Self> {
        let Some(bin) = binary() else {
            return skip_or_fail(&format!(
                "tansu not found (SWITCHYARD_TANSU or {DEFAULT_TANSU}); run scripts/test.sh to install it"
            ));
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let advertised = options.advertised_port.unwrap_or(port);
        let storage = if options.scram_users.is_empty() { "memory://tansu/" } else { "sqlite://tansu.db" };
        if !options.scram_users.is_empty() {
            let mut setup = match spawn(&bin, dir.path(), port, port, storage, false) {
                Ok(child) => child,
                Err(log) if log.contains("FeatureNotEnabled") => {
                    return skip_or_fail(&format!(
                        "{} has no SQLite storage (the libsql feature), which SCRAM users need; run scripts/test.sh \
                         to rebuild it: {log}",
                        bin.display()
                    ));
                }
                Err(log) => panic!("{log}"),
            };
            for u in options.scram_users {
                let status = Command::new(&bin)
                    .args(["user", "create", "--broker", &format!("tcp://127.0.0.1:{port}")])
                    .args(["--mechanism", u.mechanism, u.name, u.password])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "tansu user create {}: {status}", u.name);
            }
            let _ = setup.kill();
            let _ = setup.wait();
        }
        let child = spawn(&bin, dir.path(), port, advertised, storage, options.authentication)
            .unwrap_or_else(|log| panic!("{log}"));
        Some(Self { child, bootstrap: format!("127.0.0.1:{port}"), _dir: dir })
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A random name so tests never share topics or groups.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates a topic with `partitions` partitions.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(ClientConfig::new().set("bootstrap.servers", bootstrap), topic, partitions).await;
}

/// [`create_topic`] through a client configured with `config` (bootstrap servers and security).
pub async fn create_topic_with(config: &ClientConfig, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &opts).await;
    for r in res.unwrap() {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// A producer. `batch.num.messages=1`: tansu 0.6.0 makes a consumer resuming at a committed offset
/// inside a producer batch skip the rest of that batch, so tests that restart consumers produce
/// one record per batch.
pub fn producer(bootstrap: &str) -> FutureProducer {
    producer_with(ClientConfig::new().set("bootstrap.servers", bootstrap))
}

/// [`producer`] with `config`'s bootstrap servers and security settings.
pub fn producer_with(config: &ClientConfig) -> FutureProducer {
    config
        .clone()
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap()
}

/// Produces one record and waits for its ack; returns (partition, offset).
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    headers: &[(String, Vec<u8>)],
    value: Option<&[u8]>,
) -> (i32, i64) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header { key: k, value: Some(v) });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(h);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    if let Some(pt) = partition {
        record = record.partition(pt);
    }
    let d = p.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produce");
    (d.partition, d.offset)
}
