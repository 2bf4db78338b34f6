//! The `switchyard.yaml` configuration: types, defaults, `${ENV}` substitution, complete validation
//! before anything starts, and errors that name the file, line and field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest timeout a function may have.
pub const MAX_FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest `memory_mb` of a `wasm` function: all a 32-bit linear memory can address.
pub const MAX_WASM_MEMORY_MB: u64 = 4096;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where event records are kept: `sqlite://PATH` (created when missing; `sqlite::memory:` for a
    /// throw-away store), or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` for several replicas
    /// sharing one store. Default `sqlite://switchyard.db`.
    #[serde(default = "default_store")]
    pub store: String,
    /// The HTTP server: ingress, management API and health endpoints.
    #[serde(default)]
    pub server: ServerConfig,
    /// What is kept of each invocation in its record.
    #[serde(default)]
    pub records: RecordsConfig,
    /// OpenTelemetry trace export. Off by default.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The functions events are delivered to.
    #[serde(default)]
    pub functions: Vec<FunctionConfig>,
    /// Which events go to which function, and how delivery is retried.
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    /// Message sources (Kafka, NATS, AMQP, S3, cron). None exist yet; the HTTP ingress is built in.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

fn default_store() -> String {
    "sqlite://switchyard.db".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store: default_store(),
            server: ServerConfig::default(),
            records: RecordsConfig::default(),
            telemetry: TelemetryConfig::default(),
            functions: Vec::new(),
            triggers: Vec::new(),
            sources: Vec::new(),
        }
    }
}

pub use crate::sources::SourceConfig;

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`. A non-loopback address needs `tokens`
    /// (or `switchyard serve --insecure`).
    #[serde(default = "default_bind")]
    pub bind: String,
    /// API bearer tokens. When set, every route except `/healthz` and `/readyz` needs
    /// `Authorization: Bearer <token>`. Use `${ENV_VAR}` to keep them out of the file.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Largest accepted request body in bytes (events, batches, invoke payloads). Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight invocations before giving up on them. Default `30s`.
    #[serde(default = "default_shutdown_grace", with = "crate::duration")]
    #[schemars(with = "String")]
    pub shutdown_grace: Duration,
}

fn default_bind() -> String {
    "127.0.0.1:8080".to_owned()
}
const fn default_max_body_bytes() -> usize {
    1024 * 1024
}
const fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            tokens: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

/// What is kept of each invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    /// Request and response payloads longer than this many bytes are cut in the record (the original
    /// size is kept beside it). Default 64 KiB.
    #[serde(default = "default_capture_bytes")]
    pub capture_bytes: usize,
    /// Captured function log output longer than this many bytes is cut. Default 64 KiB.
    #[serde(default = "default_capture_bytes")]
    pub log_bytes: usize,
    /// Events longer than `capture_bytes` are still kept whole (for `switchyard replay`) up to this many
    /// bytes; a longer event is recorded but cannot be replayed. 0 keeps none. Default 1 MiB.
    #[serde(default = "default_replay_bytes")]
    pub replay_bytes: usize,
    /// Terminal records received longer ago than this are deleted in the background (`7d`, `12h`).
    /// Default: kept until you delete them.
    #[serde(default, with = "crate::duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub retention: Option<Duration>,
    /// An invocation still running this long after it was dispatched gets its PENDING row; a shorter
    /// one is written once, as its terminal record (half the rows for quick functions). `0s` writes
    /// the PENDING row at dispatch. Default `200ms`, at most `60s`.
    #[serde(default = "default_pending_after", with = "crate::duration")]
    #[schemars(with = "String")]
    pub pending_after: Duration,
}

const fn default_pending_after() -> Duration {
    Duration::from_millis(200)
}

/// OpenTelemetry trace export over OTLP (HTTP/protobuf). Export is on when an endpoint is set here or
/// in `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (and `OTEL_SDK_DISABLED` is
/// not `true`); the other standard `OTEL_*` variables apply too (headers, timeout, sampler).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL, e.g. `http://otel-collector:4318` (spans go to `/v1/traces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute. Default `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`), else `switchyard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Fraction of new traces kept (0 to 1) when no incoming `traceparent` decides. Default: the
    /// standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, else 1 (every trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
}

const fn default_replay_bytes() -> usize {
    1024 * 1024
}

const fn default_capture_bytes() -> usize {
    64 * 1024
}

impl Default for RecordsConfig {
    fn default() -> Self {
        Self {
            capture_bytes: default_capture_bytes(),
            log_bytes: default_capture_bytes(),
            replay_bytes: default_replay_bytes(),
            retention: None,
            pending_after: default_pending_after(),
        }
    }
}

/// The runtime a function runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// POST the event in CloudEvents binary mode to `url`.
    Http,
    /// Warm Python worker processes that call `entrypoint` in `handler`.
    Python,
    /// Warm Node.js worker processes that call the handler exported by `handler` (ES module or CommonJS).
    Node,
    /// Any program (`command`) that speaks the worker protocol (docs/worker-protocol.md).
    Process,
    /// A WebAssembly command module (WASI preview 1, `module`) run by wasmtime: a fresh instance per
    /// invocation, the request as JSON on stdin, the response on stdout, logs on stderr.
    Wasm,
}

impl RuntimeKind {
    /// Whether functions of this kind run in worker processes.
    pub const fn is_process(self) -> bool {
        matches!(self, Self::Python | Self::Node | Self::Process)
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Python => "python",
            Self::Node => "node",
            Self::Process => "process",
            Self::Wasm => "wasm",
        })
    }
}

/// A function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Unique name: letters, digits, `-` and `_`, at most 63 characters.
    pub name: String,
    /// `http`, `python`, `node`, `process` or `wasm`.
    pub runtime: RuntimeKind,
    /// `http` only: the URL the event is POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `python` and `node`: path of the handler file (relative paths are taken from the config file's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// `python` and `node`: the name of the handler function. Default `handler` (node also finds
    /// `handle` and a default export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// `python` and `node`: the interpreter. Default `python3` / `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// `node` only, for TypeScript handlers (`.ts`, `.mts`) on a Node.js that cannot strip types
    /// (before 22.6): the folder of the `typescript` package used to transpile them. Default: the
    /// `typescript` package found in a `node_modules` folder at or above the handler's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typescript: Option<String>,
    /// `process` only: the program and its arguments; it must speak the worker protocol. A relative
    /// program path is taken from the config file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `wasm` only: the WebAssembly module, a `.wasm` binary or a `.wat` text file (a relative path is
    /// taken from the config file's folder). It must be a WASI preview 1 command (it exports `_start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Process runtimes: warm instances kept even when idle. Default 0 (scale to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<usize>,
    /// Process runtimes: most instances at once (one invocation per instance). Default `max_concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<usize>,
    /// Process runtimes: an instance idle this long is stopped (down to `min_instances`). Default `60s`.
    #[serde(default, with = "crate::duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Duration>,
    /// Memory limit per instance in MiB. Process runtimes: RLIMIT_AS (for node, the V8 heap limit),
    /// default 256. `wasm`: the most linear memory an instance may grow to, default 128, at most 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Process runtimes: CPU time limit per instance (RLIMIT_CPU, over the instance's whole life; an
    /// instance that reaches it is killed and replaced). Default: none.
    #[serde(default, with = "crate::duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub cpu_time: Option<Duration>,
    /// Process runtimes: most open files per instance (RLIMIT_NOFILE). Default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_files: Option<u64>,
    /// Longest time one attempt may take. Default `30s`, at most `300s`.
    #[serde(default = "default_timeout", with = "crate::duration")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Invocations of this function running at once. Default 10.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Invocations waiting for a slot beyond `max_concurrency`; when full, the HTTP ingress answers
    /// 429 with Retry-After. Default 100.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Environment variables the function sees. For process runtimes this is the whole environment
    /// (plus `PATH`, `HOME`, `LANG`): nothing of the broker's leaks in. For `wasm` it is the whole
    /// WASI environment (empty when unset).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

const fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
const fn default_max_concurrency() -> usize {
    10
}
const fn default_queue_size() -> usize {
    100
}

impl FunctionConfig {
    /// A function with every optional field at its default.
    pub fn new(name: impl Into<String>, runtime: RuntimeKind) -> Self {
        Self {
            name: name.into(),
            runtime,
            url: None,
            handler: None,
            entrypoint: None,
            interpreter: None,
            typescript: None,
            command: None,
            module: None,
            min_instances: None,
            max_instances: None,
            idle_timeout: None,
            memory_mb: None,
            cpu_time: None,
            max_open_files: None,
            timeout: default_timeout(),
            max_concurrency: default_max_concurrency(),
            queue_size: default_queue_size(),
            env: BTreeMap::new(),
        }
    }

    /// Checks this function alone. `at` is the field path prefix, e.g. `functions[0]`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        check_name(&self.name, &format!("{at}.name"))?;
        let only = |field: &str, set: bool, kinds: &[RuntimeKind]| -> Result<(), FieldError> {
            if set && !kinds.contains(&self.runtime) {
                let names: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
                return Err(FieldError::new(
                    format!("{at}.{field}"),
                    format!(
                        "only valid with runtime {} (this function has runtime `{}`)",
                        names.join(" or "),
                        self.runtime
                    ),
                ));
            }
            Ok(())
        };
        use RuntimeKind::{Http, Node, Process, Python, Wasm};
        only("url", self.url.is_some(), &[Http])?;
        only("handler", self.handler.is_some(), &[Python, Node])?;
        only("entrypoint", self.entrypoint.is_some(), &[Python, Node])?;
        only("interpreter", self.interpreter.is_some(), &[Python, Node])?;
        only("typescript", self.typescript.is_some(), &[Node])?;
        only("command", self.command.is_some(), &[Process])?;
        only("module", self.module.is_some(), &[Wasm])?;
        let procs = &[Python, Node, Process];
        only("min_instances", self.min_instances.is_some(), procs)?;
        only("max_instances", self.max_instances.is_some(), procs)?;
        only("idle_timeout", self.idle_timeout.is_some(), procs)?;
        only("memory_mb", self.memory_mb.is_some(), &[Python, Node, Process, Wasm])?;
        only("cpu_time", self.cpu_time.is_some(), procs)?;
        only("max_open_files", self.max_open_files.is_some(), procs)?;
        if self.max_instances == Some(0) {
            return Err(FieldError::new(format!("{at}.max_instances"), "must be at least 1"));
        }
        if self.min_instances.unwrap_or(0) > self.max_instances.unwrap_or(self.max_concurrency) {
            return Err(FieldError::new(
                format!("{at}.min_instances"),
                "must not exceed max_instances (default: max_concurrency)",
            ));
        }
        if self.memory_mb.is_some_and(|m| m < 16) {
            return Err(FieldError::new(format!("{at}.memory_mb"), "must be at least 16"));
        }
        if self.runtime == Wasm && self.memory_mb.is_some_and(|m| m > MAX_WASM_MEMORY_MB) {
            return Err(FieldError::new(
                format!("{at}.memory_mb"),
                format!("must be at most {MAX_WASM_MEMORY_MB} for runtime `wasm` (a 32-bit linear memory)"),
            ));
        }
        if self.max_open_files.is_some_and(|n| n < 16) {
            return Err(FieldError::new(format!("{at}.max_open_files"), "must be at least 16"));
        }
        if self.cpu_time.is_some_and(|t| t < Duration::from_secs(1)) {
            return Err(FieldError::new(format!("{at}.cpu_time"), "must be at least 1s"));
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(FieldError::new(format!("{at}.idle_timeout"), "must be more than 0s"));
        }
        match self.runtime {
            RuntimeKind::Http => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| FieldError::new(format!("{at}.url"), "required for runtime `http`"))?;
                let parsed = url::Url::parse(url)
                    .map_err(|e| FieldError::new(format!("{at}.url"), format!("not a URL ({e}): {url:?}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(FieldError::new(format!("{at}.url"), "must be an http:// or https:// URL"));
                }
            }
            RuntimeKind::Process => {
                let ok = self.command.as_ref().is_some_and(|c| c.first().is_some_and(|p| !p.is_empty()));
                if !ok {
                    return Err(FieldError::new(
                        format!("{at}.command"),
                        "required for runtime `process`: [program, args...]",
                    ));
                }
            }
            RuntimeKind::Wasm => {
                let module = self.module.as_deref().unwrap_or("");
                if module.is_empty() {
                    return Err(FieldError::new(format!("{at}.module"), "required for runtime `wasm`"));
                }
                if !(module.ends_with(".wasm") || module.ends_with(".wat")) {
                    return Err(FieldError::new(
                        format!("{at}.module"),
                        format!("must be a .wasm or .wat file, got {module:?}"),
                    ));
                }
            }
            RuntimeKind::Python | RuntimeKind::Node => {
                let handler = self.handler.as_deref().unwrap_or("");
                if handler.is_empty() {
                    return Err(FieldError::new(
                        format!("{at}.handler"),
                        format!("required for runtime `{}`", self.runtime),
                    ));
                }
                if let Some(entry) = &self.entrypoint {
                    let ok = !entry.is_empty()
                        && !entry.starts_with(|c: char| c.is_ascii_digit())
                        && entry.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !ok {
                        return Err(FieldError::new(
                            format!("{at}.entrypoint"),
                            format!("{entry:?} is not an identifier"),
                        ));
                    }
                }
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_FUNCTION_TIMEOUT {
            return Err(FieldError::new(
                format!("{at}.timeout"),
                format!("must be more than 0s and at most 300s, got {}", humantime::format_duration(self.timeout)),
            ));
        }
        if self.max_concurrency == 0 {
            return Err(FieldError::new(format!("{at}.max_concurrency"), "must be at least 1"));
        }
        for key in self.env.keys() {
            let ok = !key.is_empty() && !key.contains('=') && !key.contains('\0');
            if !ok {
                return Err(FieldError::new(format!("{at}.env.{key}"), "not a valid environment variable name"));
            }
        }
        Ok(())
    }
}

/// A trigger: events matching `filters` are delivered to `function` under `delivery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Unique name: letters, digits, `-` and `_`, at most 63 characters.
    pub name: String,
    /// The function events go to; must be one of `functions`.
    pub function: String,
    /// CloudEvents Subscriptions API filters; an event must match all of them. Empty matches every event.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    #[schemars(with = "Vec<Filter>")]
    pub filters: Vec<Filter>,
    /// Retries, backoff and the per-attempt timeout.
    #[serde(default)]
    pub delivery: DeliveryPolicy,
    /// Where an event goes when its retries are exhausted or it failed permanently (besides its record,
    /// which always says `dead_lettered`). Default: the record only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSink>,
    /// Idempotency: an event whose (`source`, `id`) already has a SUCCESS record of this trigger received
    /// within this window is not invoked again; a SKIPPED record says so. Default: off.
    #[serde(default, with = "crate::duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub idempotency_window: Option<Duration>,
    /// Order of this trigger's invocations for events from an ordered source (Kafka): `key` (messages
    /// of one partition with the same record key run one after the other, other keys in parallel),
    /// `partition` (one at a time per partition) or `none` (all in parallel). Default: the source's
    /// `ordering` (itself `key` by default). Events from other sources are not ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    /// Object access for the S3 events (`com.amazonaws.s3.*`) this trigger invokes: HeadObject
    /// metadata, a presigned GET URL, the content when small. Only this trigger's invocations get it;
    /// other triggers of the same event get it unchanged. Events from a `type: s3` source use that
    /// source's AWS settings, others (`s3_notifications` of `kafka`, `nats`, `amqp`) `object.aws`.
    /// Default: none, and no S3 calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<crate::sources::s3::ObjectAccess>,
}

/// Which messages of an ordered source run one after the other (per trigger).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Same partition and same record key: in order; others in parallel. Messages without a key
    /// are not ordered.
    #[default]
    Key,
    /// One message at a time per partition.
    Partition,
    /// No order: every message in parallel (up to the source's `max_in_flight` per partition).
    None,
}

/// A dead-letter sink: the failed event is published there as a CloudEvent (structured JSON) with the
/// extensions `dlerror`, `dlerrorkind`, `dlattempts`, `dltrigger`, `dlfunction` and `dlrecordid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeadLetterSink {
    /// POST to an HTTP URL (`content-type: application/cloudevents+json`); any 2xx is success.
    Http {
        /// The URL.
        url: String,
    },
    /// Publish to a NATS subject (JetStream captures it when a stream covers the subject).
    Nats {
        /// Server URL. Default `nats://127.0.0.1:4222`.
        #[serde(default = "default_nats_url")]
        url: String,
        /// The subject.
        subject: String,
    },
    /// Publish to an AMQP 0-9-1 exchange (persistent, with publisher confirms).
    Amqp {
        /// Server URL. Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
        #[serde(default = "default_amqp_url")]
        url: String,
        /// The exchange (`""` is the default exchange, where the routing key names a queue).
        exchange: String,
        /// The routing key.
        #[serde(default)]
        routing_key: String,
    },
    /// Produce to a Kafka topic (`acks=all`; the record key is the event's `partitionkey` extension,
    /// else its id).
    Kafka {
        /// Bootstrap servers, `host:port`.
        brokers: Vec<String>,
        /// The topic (it must exist).
        topic: String,
        /// Extra librdkafka producer properties (TLS, SASL, ...).
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()
}

impl DeadLetterSink {
    /// Checks the sink's fields. `at` is the field path, e.g. `triggers[0].dead_letter`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let url_with = |url: &str, schemes: &[&str]| -> Result<(), FieldError> {
            let ok = url::Url::parse(url).is_ok_and(|u| schemes.contains(&u.scheme()));
            if ok {
                Ok(())
            } else {
                Err(FieldError::new(format!("{at}.url"), format!("{url:?} is not a {} URL", schemes.join(" or "))))
            }
        };
        match self {
            Self::Http { url } => url_with(url, &["http", "https"]),
            Self::Nats { url, subject } => {
                url_with(url, &["nats", "tls"])?;
                if subject.is_empty() || subject.contains(['*', '>', ' ']) {
                    return Err(FieldError::new(format!("{at}.subject"), "a subject without wildcards or spaces"));
                }
                Ok(())
            }
            Self::Amqp { url, .. } => url_with(url, &["amqp", "amqps"]),
            Self::Kafka { brokers, topic, .. } => {
                if brokers.is_empty() || brokers.iter().any(|b| !b.contains(':')) {
                    return Err(FieldError::new(format!("{at}.brokers"), "one or more host:port"));
                }
                if topic.is_empty() {
                    return Err(FieldError::new(format!("{at}.topic"), "must not be empty"));
                }
                Ok(())
            }
        }
    }
}

/// A filter expression in the CloudEvents Subscriptions API dialects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Filter {
    /// `{exact: {ATTRIBUTE: VALUE}}`: the attribute equals the value (case-sensitive).
    Exact(BTreeMap<String, String>),
    /// `{prefix: {ATTRIBUTE: VALUE}}`: the attribute starts with the value.
    Prefix(BTreeMap<String, String>),
    /// `{suffix: {ATTRIBUTE: VALUE}}`: the attribute ends with the value.
    Suffix(BTreeMap<String, String>),
    /// `{all: [FILTER, ...]}`: every nested filter matches.
    All(Vec<Filter>),
    /// `{any: [FILTER, ...]}`: at least one nested filter matches.
    Any(Vec<Filter>),
    /// `{not: FILTER}`: the nested filter does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// Checks the filter's shape. `at` is the field path, e.g. `triggers[0].filters[1]`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let single = |dialect: &str, map: &BTreeMap<String, String>| -> Result<(), FieldError> {
            if map.len() != 1 {
                return Err(FieldError::new(
                    format!("{at}.{dialect}"),
                    format!("must name exactly one attribute, got {}", map.len()),
                ));
            }
            for name in map.keys() {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
                    return Err(FieldError::new(
                        format!("{at}.{dialect}.{name}"),
                        "attribute names are lower-case letters and digits",
                    ));
                }
            }
            Ok(())
        };
        match self {
            Self::Exact(m) => single("exact", m),
            Self::Prefix(m) => single("prefix", m),
            Self::Suffix(m) => single("suffix", m),
            Self::All(list) | Self::Any(list) => {
                let dialect = if matches!(self, Self::All(_)) { "all" } else { "any" };
                if list.is_empty() {
                    return Err(FieldError::new(format!("{at}.{dialect}"), "needs at least one filter"));
                }
                for (i, f) in list.iter().enumerate() {
                    f.validate(&format!("{at}.{dialect}[{i}]"))?;
                }
                Ok(())
            }
            Self::Not(inner) => inner.validate(&format!("{at}.not")),
        }
    }
}

/// How a trigger's deliveries are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Retries after the first attempt for retryable failures (timeouts, connection errors, 408, 429,
    /// 5xx). Default 3; 0 disables retries.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Exponential backoff between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Full jitter: each delay is drawn uniformly between 0 and the backoff value. Default true.
    #[serde(default = "default_jitter")]
    pub jitter: bool,
    /// Longest time one attempt may take; defaults to the function's `timeout` and may not exceed it.
    #[serde(default, with = "crate::duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub attempt_timeout: Option<Duration>,
}

const fn default_retries() -> u32 {
    3
}
const fn default_jitter() -> bool {
    true
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            retries: default_retries(),
            backoff: Backoff::default(),
            jitter: default_jitter(),
            attempt_timeout: None,
        }
    }
}

/// Exponential backoff: attempt n waits `min(max, initial * multiplier^(n-1))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the first retry. Default `100ms`.
    #[serde(default = "default_backoff_initial", with = "crate::duration")]
    #[schemars(with = "String")]
    pub initial: Duration,
    /// Longest delay. Default `10s`.
    #[serde(default = "default_backoff_max", with = "crate::duration")]
    #[schemars(with = "String")]
    pub max: Duration,
    /// Growth factor per retry, at least 1. Default 2.
    #[serde(default = "default_backoff_multiplier")]
    pub multiplier: f64,
}

const fn default_backoff_initial() -> Duration {
    Duration::from_millis(100)
}
const fn default_backoff_max() -> Duration {
    Duration::from_secs(10)
}
const fn default_backoff_multiplier() -> f64 {
    2.0
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
            multiplier: default_backoff_multiplier(),
        }
    }
}

/// A problem with one field, before the file and line are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `functions[0].timeout`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A configuration error: file, line (when known), field and message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not fit the types.
    #[error("{file}:{}: {message}", line.map_or_else(|| "?".to_owned(), |l| l.to_string()))]
    Parse {
        /// The file.
        file: String,
        /// 1-based line.
        line: Option<usize>,
        /// serde's message, which names the field path.
        message: String,
    },
    /// A value is not allowed.
    #[error("{file}:{}: {field}: {message}", line.map_or_else(|| "?".to_owned(), |l| l.to_string()))]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line, when the field could be found in the text.
        line: Option<usize>,
        /// Dotted field path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The field path, where the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Invalid { line, .. } | Self::Parse { line, .. } => *line,
            Self::Read { .. } => None,
        }
    }
}

impl Config {
    /// Reads, substitutes `${ENV}`, parses and validates a configuration file.
    /// Relative handler and module paths are resolved against the file's folder.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let mut config = Self::from_yaml_str(&text, &file, |k| std::env::var(k).ok())?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for f in &mut config.functions {
            for path in [&mut f.handler, &mut f.typescript, &mut f.module].into_iter().flatten() {
                if Path::new(path.as_str()).is_relative() {
                    *path = base.join(path.as_str()).display().to_string();
                }
            }
            if let Some(program) = f.command.as_mut().and_then(|c| c.first_mut()) {
                // A bare name (`perl`) is looked up on PATH; a relative path is the config file's.
                if program.contains('/') && Path::new(program.as_str()).is_relative() {
                    *program = base.join(program.as_str()).display().to_string();
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates configuration text. `file` names it in errors; `env` looks up
    /// `${NAME}` substitutions.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line and field.
    pub fn from_yaml_str(text: &str, file: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = substitute_env(text, &env).map_err(|(line, message)| ConfigError::Parse {
            file: file.to_owned(),
            line: Some(line),
            message,
        })?;
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                // serde_yaml points at the enclosing item for errors inside it; the field path
                // (tracked by serde_path_to_error) finds the field's own line.
                let path = e.path().to_string();
                let inner = e.into_inner();
                let serde_line = inner.location().map(|l| l.line());
                let line = match (locate(&text, &path), serde_line) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                let mut message = inner.to_string();
                if let Some(at) = message.rfind(" at line ") {
                    message.truncate(at);
                }
                if let Some((prefix, rest)) = message.split_once(": ") {
                    if prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')) {
                        message = rest.to_owned();
                    }
                }
                if path != "." {
                    message = format!("{path}: {message}");
                }
                ConfigError::Parse { file: file.to_owned(), line, message }
            })?
        };
        config.validate().map_err(|e| ConfigError::Invalid {
            file: file.to_owned(),
            line: locate(&text, &e.field),
            field: e.field,
            message: e.message,
        })?;
        Ok(config)
    }

    /// Cross-field checks: unique names, triggers pointing at existing functions, limits.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self) -> Result<(), FieldError> {
        let store_ok = ["sqlite:", "postgres://", "postgresql://"].iter().any(|p| self.store.starts_with(p));
        if !store_ok {
            return Err(FieldError::new(
                "store",
                format!("unsupported store {:?}: use sqlite://PATH or postgres://USER@HOST/DATABASE", self.store),
            ));
        }
        if let Some(url) = &self.telemetry.otlp_endpoint {
            if !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                return Err(FieldError::new("telemetry.otlp_endpoint", format!("{url:?} is not an http(s) URL")));
            }
        }
        if let Some(r) = self.telemetry.sample_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(FieldError::new("telemetry.sample_ratio", "must be between 0 and 1"));
            }
        }
        if self.records.pending_after > Duration::from_secs(60) {
            return Err(FieldError::new("records.pending_after", "must be at most 60s"));
        }
        if let Some(r) = self.records.retention {
            if r < Duration::from_secs(60) {
                return Err(FieldError::new("records.retention", "must be at least 1m"));
            }
        }
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(FieldError::new(
                "server.bind",
                format!("{:?} is not an address like 127.0.0.1:8080", self.server.bind),
            ));
        }
        for (i, t) in self.server.tokens.iter().enumerate() {
            if t.len() < 8 {
                return Err(FieldError::new(format!("server.tokens[{i}]"), "tokens must be at least 8 characters"));
            }
        }
        if self.server.max_body_bytes == 0 {
            return Err(FieldError::new("server.max_body_bytes", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.functions.iter().enumerate() {
            f.validate(&format!("functions[{i}]"))?;
            if !names.insert(f.name.as_str()) {
                return Err(FieldError::new(
                    format!("functions[{i}].name"),
                    format!("duplicate function {:?}", f.name),
                ));
            }
        }
        let mut source_names = std::collections::HashSet::new();
        for (i, src) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            check_name(src.name(), &format!("{at}.name"))?;
            if !source_names.insert(src.name()) {
                return Err(FieldError::new(format!("{at}.name"), format!("duplicate source {:?}", src.name())));
            }
            src.validate(&at)?;
        }
        let mut trigger_names = std::collections::HashSet::new();
        for (i, t) in self.triggers.iter().enumerate() {
            let at = format!("triggers[{i}]");
            if !trigger_names.insert(t.name.as_str()) {
                return Err(FieldError::new(format!("{at}.name"), format!("duplicate trigger {:?}", t.name)));
            }
            let function = self.functions.iter().find(|f| f.name == t.function);
            t.validate(&at, function)?;
        }
        Ok(())
    }
}

impl TriggerConfig {
    /// Checks the trigger against the function it names (`None`: no such function). `at` is the field
    /// path, e.g. `triggers[0]`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str, function: Option<&FunctionConfig>) -> Result<(), FieldError> {
        check_name(&self.name, &format!("{at}.name"))?;
        let Some(function) = function else {
            return Err(FieldError::new(
                format!("{at}.function"),
                format!("no function named {:?} in `functions`", self.function),
            ));
        };
        for (j, filter) in self.filters.iter().enumerate() {
            filter.validate(&format!("{at}.filters[{j}]"))?;
        }
        self.delivery.validate(&format!("{at}.delivery"), function)?;
        if let Some(sink) = &self.dead_letter {
            sink.validate(&format!("{at}.dead_letter"))?;
        }
        if self.idempotency_window.is_some_and(|w| w.is_zero()) {
            return Err(FieldError::new(format!("{at}.idempotency_window"), "must be more than 0s"));
        }
        if let Some(object) = &self.object {
            object.validate(&format!("{at}.object"))?;
        }
        Ok(())
    }
}

impl DeliveryPolicy {
    /// Checks the policy against the function it delivers to.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str, function: &FunctionConfig) -> Result<(), FieldError> {
        if self.retries > 100 {
            return Err(FieldError::new(format!("{at}.retries"), "at most 100"));
        }
        if !(self.backoff.multiplier.is_finite() && self.backoff.multiplier >= 1.0) {
            return Err(FieldError::new(format!("{at}.backoff.multiplier"), "must be a number of at least 1"));
        }
        if self.backoff.initial > self.backoff.max {
            return Err(FieldError::new(format!("{at}.backoff.initial"), "must not exceed backoff.max"));
        }
        if let Some(t) = self.attempt_timeout {
            if t.is_zero() || t > function.timeout {
                return Err(FieldError::new(
                    format!("{at}.attempt_timeout"),
                    format!(
                        "must be more than 0s and at most the function's timeout ({})",
                        humantime::format_duration(function.timeout)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a function, source or trigger name (1-63 letters, digits, `-` or `_`); `field` is its path.
///
/// # Errors
/// A [`FieldError`] on `field`.
pub fn check_name(name: &str, field: &str) -> Result<(), FieldError> {
    let ok =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("{name:?} must be 1-63 letters, digits, '-' or '_'")))
    }
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`.
/// A variable that is not set is an error naming it and its 1-based line.
fn substitute_env(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        // A whole-line YAML comment may mention variables that are not set (commented-out examples).
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find("${") {
            if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
                out.push_str(&rest[..pos - 1]);
                out.push_str("${");
                rest = &rest[pos + 2..];
                continue;
            }
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let Some(end) = after.find('}') else {
                return Err((n + 1, "unterminated ${ in environment variable reference".to_owned()));
            };
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((n + 1, format!("invalid environment variable name {name:?} in ${{...}}")));
            }
            let value = env(name).ok_or_else(|| (n + 1, format!("environment variable {name} is not set")))?;
            if value.contains('\n') {
                return Err((n + 1, format!("environment variable {name} contains a newline")));
            }
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Finds the 1-based line of a field path such as `functions[1].timeout` in block-style YAML.
/// Falls back to the deepest part of the path it could find.
fn locate(text: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let meaningful = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    // The block: line range [start, end) and the indentation of its keys.
    let (mut start, mut end, mut key_indent) = (0usize, lines.len(), 0usize);
    let mut found: Option<usize> = None;
    for part in field.split('.') {
        let (key, index) = match part.find('[') {
            Some(p) => (&part[..p], part[p + 1..].trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let prefix = format!("{key}:");
        let line = (start..end).find(|&i| {
            let l = lines[i];
            meaningful(l) && indent(l) == key_indent && l.trim_start().trim_start_matches("- ").starts_with(&prefix)
                || (meaningful(l) && l.trim_start().starts_with("- ") && {
                    let inner = &l.trim_start()[2..];
                    indent(l) + 2 == key_indent && inner.starts_with(&prefix)
                })
        })?;
        found = Some(line + 1);
        let own_indent = indent(lines[line]);
        let block_end = (line + 1..end)
            .find(|&i| {
                meaningful(lines[i]) && indent(lines[i]) <= own_indent && !lines[i].trim_start().starts_with("- ")
                    || meaningful(lines[i]) && indent(lines[i]) < own_indent
            })
            .unwrap_or(end);
        start = line + 1;
        end = block_end;
        key_indent = (start..end).find(|&i| meaningful(lines[i])).map_or(own_indent + 2, |i| indent(lines[i]));
        if let Some(idx) = index {
            // List items: lines starting with "- " at the block's indentation.
            let items: Vec<usize> = (start..end)
                .filter(|&i| {
                    meaningful(lines[i]) && indent(lines[i]) == key_indent && lines[i].trim_start().starts_with("- ")
                })
                .collect();
            let item = *items.get(idx)?;
            found = Some(item + 1);
            let item_end = items.iter().copied().find(|&i| i > item).unwrap_or(end);
            start = item;
            end = item_end;
            key_indent += 2;
        }
    }
    found
}

/// The JSON Schema of the configuration file, as committed in `schemas/json/config.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str(text, "test.yaml", |k| (k == "TOKEN").then(|| "s3cret-token".to_owned()))
    }

    const GOOD: &str = "\
server:
  tokens: [\"${TOKEN}\"]
functions:
  - name: hello
    runtime: python
    handler: handler.py
  - name: web
    runtime: http
    url: http://127.0.0.1:9000/
    timeout: 5s
triggers:
  - name: t1
    function: web
    filters:
      - exact: {type: com.example.order}
      - any:
          - prefix: {source: /shop}
          - not: {suffix: {subject: .tmp}}
    delivery:
      retries: 2
      backoff: {initial: 50ms, max: 1s}
";

    #[test]
    fn good_config_parses_with_defaults_and_env() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.store, "sqlite://switchyard.db");
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.server.tokens, vec!["s3cret-token"]);
        assert_eq!(c.functions[0].timeout, Duration::from_secs(30));
        assert_eq!(c.functions[1].timeout, Duration::from_secs(5));
        assert_eq!(c.functions[0].max_concurrency, 10);
        assert_eq!(c.triggers[0].delivery.retries, 2);
        assert_eq!(c.triggers[0].delivery.backoff.multiplier, 2.0);
        assert!(c.triggers[0].delivery.jitter);
        assert_eq!(c.triggers[0].filters.len(), 2);
    }

    #[test]
    fn empty_file_is_the_default_config() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_field_is_named_with_line() {
        let err =
            parse("functions:\n  - name: a\n    runtime: http\n    url: http://x/\n    colour: red\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("colour"), "{msg}");
        assert_eq!(err.line(), Some(5), "{msg}");
        assert!(msg.starts_with("test.yaml:5:"), "{msg}");
    }

    #[test]
    fn timeout_over_max_names_field_and_line() {
        let text = GOOD.replace("timeout: 5s", "timeout: 301s");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field(), Some("functions[1].timeout"));
        assert_eq!(err.line(), Some(10));
        assert!(err.to_string().contains("at most 300s"), "{err}");
    }

    #[test]
    fn bad_duration_is_named() {
        let err = parse(&GOOD.replace("timeout: 5s", "timeout: soon")).unwrap_err();
        assert!(err.to_string().contains("invalid duration \"soon\""), "{err}");
        assert_eq!(err.line(), Some(10));
    }

    #[test]
    fn trigger_to_missing_function_is_rejected() {
        let err = parse(&GOOD.replace("function: web", "function: nope")).unwrap_err();
        assert_eq!(err.field(), Some("triggers[0].function"));
        assert_eq!(err.line(), Some(13));
    }

    #[test]
    fn runtime_specific_fields_are_checked() {
        let err = parse("functions:\n  - name: a\n    runtime: python\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].handler"));
        let err =
            parse("functions:\n  - name: a\n    runtime: python\n    handler: h.py\n    url: http://x/\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].url"));
        assert_eq!(err.line(), Some(5));
        let err = parse("functions:\n  - name: a\n    runtime: http\n    url: ftp://x/\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].url"));
        let err = parse("functions:\n  - name: a\n    runtime: lua\n").unwrap_err();
        assert!(err.to_string().contains("lua"), "{err}");
    }

    #[test]
    fn wasm_fields_are_checked() {
        let ok =
            parse("functions:\n  - {name: w, runtime: wasm, module: f.wat, memory_mb: 64, env: {A: b}}\n").unwrap();
        assert_eq!(ok.functions[0].module.as_deref(), Some("f.wat"));
        let err = parse("functions:\n  - name: w\n    runtime: wasm\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].module"));
        let err = parse("functions:\n  - {name: w, runtime: wasm, module: f.so}\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].module"));
        assert!(err.to_string().contains(".wasm or .wat"), "{err}");
        let err = parse("functions:\n  - {name: w, runtime: wasm, module: f.wasm, memory_mb: 5000}\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].memory_mb"));
        let err = parse("functions:\n  - {name: w, runtime: wasm, module: f.wasm, min_instances: 1}\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].min_instances"));
        let err = parse("functions:\n  - {name: p, runtime: python, handler: h.py, module: f.wasm}\n").unwrap_err();
        assert_eq!(err.field(), Some("functions[0].module"));
        assert!(err.to_string().contains("only valid with runtime `wasm`"), "{err}");
    }

    #[test]
    fn relative_module_paths_are_the_config_files() {
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switchyard.yaml");
        std::fs::write(&path, "functions:\n  - {name: w, runtime: wasm, module: fns/hello.wat}\n").unwrap();
        let c = Config::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.unwrap().functions[0].module.as_deref(), Some(dir.join("fns/hello.wat").to_str().unwrap()));
    }

    #[test]
    fn duplicate_names_and_bad_names_are_rejected() {
        let text = "functions:\n  - {name: a, runtime: http, url: 'http://x/'}\n  - {name: a, runtime: http, url: 'http://y/'}\n";
        assert_eq!(parse(text).unwrap_err().field(), Some("functions[1].name"));
        let text = "functions:\n  - {name: 'a b', runtime: http, url: 'http://x/'}\n";
        assert_eq!(parse(text).unwrap_err().field(), Some("functions[0].name"));
    }

    #[test]
    fn filters_need_exactly_one_attribute() {
        let err = parse(&GOOD.replace("exact: {type: com.example.order}", "exact: {type: a, source: b}")).unwrap_err();
        assert_eq!(err.field(), Some("triggers[0].filters[0].exact"));
        let err = parse(&GOOD.replace("exact: {type: com.example.order}", "exact: {Type: a}")).unwrap_err();
        assert_eq!(err.field(), Some("triggers[0].filters[0].exact.Type"));
        let err = parse(&GOOD.replace("exact: {type: com.example.order}", "all: []")).unwrap_err();
        assert_eq!(err.field(), Some("triggers[0].filters[0].all"));
    }

    #[test]
    fn delivery_policy_is_checked_against_function() {
        let text = GOOD.replace("retries: 2", "retries: 2\n      attempt_timeout: 6s");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field(), Some("triggers[0].delivery.attempt_timeout"));
        let err = parse(&GOOD.replace("max: 1s", "max: 1s, multiplier: 0.5")).unwrap_err();
        assert_eq!(err.field(), Some("triggers[0].delivery.backoff.multiplier"));
    }

    #[test]
    fn env_substitution_errors_name_the_variable_and_line() {
        let err = parse("server:\n  tokens: [\"${MISSING_VAR}\"]\n").unwrap_err();
        assert!(err.to_string().contains("MISSING_VAR is not set"), "{err}");
        assert_eq!(err.line(), Some(2));
        let c = parse("functions:\n  - {name: a, runtime: http, url: 'http://x/', env: {A: '$${literal}'}}\n").unwrap();
        assert!(parse("# store: ${NOT_SET_ANYWHERE}\n  # url: ${NOR_THIS}\n").is_ok(), "comment lines are left alone");
        assert_eq!(c.functions[0].env["A"], "${literal}");
    }

    #[test]
    fn dead_letter_sinks_idempotency_and_retention_are_checked() {
        let base =
            "functions:\n  - {name: f, runtime: http, url: 'http://x/'}\ntriggers:\n  - name: t\n    function: f\n";
        let c =
            parse(&format!("{base}    dead_letter: {{type: nats, subject: dlq.orders}}\n    idempotency_window: 1h\n"))
                .unwrap();
        assert_eq!(
            c.triggers[0].dead_letter,
            Some(DeadLetterSink::Nats { url: "nats://127.0.0.1:4222".into(), subject: "dlq.orders".into() })
        );
        assert_eq!(c.triggers[0].idempotency_window, Some(Duration::from_secs(3600)));
        let e = parse(&format!("{base}    dead_letter: {{type: http, url: 'ftp://x'}}\n")).unwrap_err();
        assert_eq!(e.field(), Some("triggers[0].dead_letter.url"));
        let e = parse(&format!("{base}    dead_letter: {{type: nats, subject: 'dlq.*'}}\n")).unwrap_err();
        assert_eq!(e.field(), Some("triggers[0].dead_letter.subject"));
        let e = parse(&format!("{base}    dead_letter: {{type: amqp, exchange: x, queue: y}}\n")).unwrap_err();
        assert!(e.to_string().contains("queue"), "{e}");
        let e = parse(&format!("{base}    dead_letter: {{type: smtp}}\n")).unwrap_err();
        assert!(e.to_string().contains("smtp"), "{e}");
        assert_eq!(parse("records: {retention: 10s}").unwrap_err().field(), Some("records.retention"));
        assert_eq!(parse("records: {pending_after: 2m}").unwrap_err().field(), Some("records.pending_after"));
        assert_eq!(parse("records: {}").unwrap().records.pending_after, Duration::from_millis(200));
        assert_eq!(parse("records: {pending_after: 0s}").unwrap().records.pending_after, Duration::ZERO);
        assert_eq!(parse("records: {retention: 7d}").unwrap().records.retention, Some(Duration::from_secs(7 * 86400)));
        assert!(parse("store: postgres://switchyard@db:5432/switchyard").is_ok());
    }

    #[test]
    fn trigger_object_access_is_checked_and_the_source_level_one_refused() {
        let base = "functions:\n  - {name: f, runtime: http, url: 'http://x/'}\ntriggers:\n  - {name: plain, function: f}\n  - name: t\n    function: f\n";
        let c = parse(&format!(
            "{base}    object: {{metadata: true, presign: 5m, inline_max_bytes: 1024, aws: {{endpoint_url: 'http://127.0.0.1:5055', force_path_style: true}}}}\n"
        ))
        .unwrap();
        assert!(c.triggers[0].object.is_none());
        let o = c.triggers[1].object.as_ref().unwrap();
        assert_eq!((o.metadata, o.presign, o.inline_max_bytes), (true, Some(Duration::from_secs(300)), Some(1024)));
        assert!(o.aws.as_ref().is_some_and(|a| a.force_path_style));
        let field = |y: &str| parse(&format!("{base}    object: {y}\n")).unwrap_err().field().map(str::to_owned);
        assert_eq!(field("{presign: 30d}").as_deref(), Some("triggers[1].object.presign"));
        assert_eq!(field("{inline_max_bytes: 0}").as_deref(), Some("triggers[1].object.inline_max_bytes"));
        assert_eq!(field("{}").as_deref(), Some("triggers[1].object"));
        assert_eq!(
            field("{metadata: true, aws: {endpoint_url: nowhere}}").as_deref(),
            Some("triggers[1].object.aws.endpoint_url")
        );
        let text = "sources:\n  - type: s3\n    name: up\n    sns: {}\n    object: {metadata: true}\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.field(), e.line()), (Some("sources[0].object"), Some(5)));
        assert!(e.to_string().contains("move `object:` to each trigger"), "{e}");
    }

    #[test]
    fn server_settings_are_checked() {
        assert_eq!(parse("server: {bind: nowhere}").unwrap_err().field(), Some("server.bind"));
        assert_eq!(parse("server: {tokens: [short]}").unwrap_err().field(), Some("server.tokens[0]"));
        assert_eq!(parse("store: mysql://x").unwrap_err().field(), Some("store"));
        assert!(parse("sources:\n  - {type: kafka, name: k}\n").unwrap_err().to_string().contains("topics"));
    }

    #[test]
    fn locate_finds_nested_fields() {
        assert_eq!(locate(GOOD, "triggers[0].delivery.retries"), Some(20));
        assert_eq!(locate(GOOD, "functions[1].url"), Some(9));
        assert_eq!(locate(GOOD, "server.tokens"), Some(2));
    }
}
