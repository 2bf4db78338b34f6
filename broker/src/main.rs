//! `switchyard`: serve the broker, validate a configuration, and talk to a running broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard_broker::client::{self, Client};
use switchyard_broker::{app, telemetry};
use switchyard_schemas::Config;

/// mimalloc instead of glibc's malloc: the per-event path allocates many short-lived buffers, and
/// glibc's allocator took about a sixth of the CPU in the queue benchmarks' profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for bad configuration or usage (EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Event-driven trigger broker and dispatcher for serverless functions")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(clap::Args)]
struct Remote {
    /// The broker's URL.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token for the API.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// Configuration file.
        #[arg(short, long, default_value = "switchyard.yaml")]
        config: PathBuf,
        /// Allow a non-loopback bind address without API tokens.
        #[arg(long)]
        insecure: bool,
    },
    /// Check a configuration file and exit (0 valid, 64 invalid).
    Validate {
        /// Configuration file.
        #[arg(short, long, default_value = "switchyard.yaml")]
        config: PathBuf,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// Invoke a function synchronously and print its response.
    Invoke {
        /// The function.
        name: String,
        /// The event data: JSON text, or @FILE.
        #[arg(long)]
        data: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Look at event records.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Show a function's captured logs, oldest first; `-f` follows new invocations.
    Logs {
        /// The function.
        function: String,
        /// Keep printing logs of new invocations.
        #[arg(short, long)]
        follow: bool,
        /// How many recent invocations to show first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Look at functions.
    Functions {
        #[command(subcommand)]
        command: FunctionsCommand,
    },
    /// Message sources: list; create, replace or delete them through the API (stored in the shared
    /// registry, so every replica runs them).
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Cron schedules: list, next fire times, pause, resume, fire now.
    Cron {
        #[command(subcommand)]
        command: CronCommand,
    },
    /// Dead letters: invocations whose retries ran out or that failed permanently.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Invoke recorded events again (any record, not only dead letters); each replay gets a new record
    /// whose `replay_of` names the original.
    Replay {
        /// Exact record ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        #[command(flatten)]
        select: Select,
        /// Only dead letters.
        #[arg(long)]
        dead_lettered: bool,
        /// At most this many records (the newest that match, replayed oldest first).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Replays started per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Only list what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Record filters shared by `events list`, `dlq list` and `replay`.
#[derive(clap::Args)]
struct Select {
    /// Only this function.
    #[arg(long)]
    function: Option<String>,
    /// Only this status (PENDING, SUCCESS, FAILURE, SKIPPED).
    #[arg(long)]
    status: Option<String>,
    /// Only this CloudEvent type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only failures of this kind (timeout, connection, status, handler, bad_response, crashed, init).
    #[arg(long)]
    error: Option<String>,
    /// Only records received since (RFC 3339 time or a duration back from now like 1h).
    #[arg(long)]
    since: Option<String>,
    /// Only records received before (RFC 3339 time or a duration back from now).
    #[arg(long)]
    until: Option<String>,
}

impl Select {
    fn pairs(self) -> Vec<(&'static str, String)> {
        [
            ("function", self.function),
            ("status", self.status),
            ("type", self.event_type),
            ("error", self.error),
            ("since", self.since),
            ("until", self.until),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// Only this function.
        #[arg(long)]
        function: Option<String>,
        /// Only since (RFC 3339 time or a duration like 1h).
        #[arg(long)]
        since: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum CronCommand {
    /// List cron sources with their next fire time.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a schedule's next fire times.
    Next {
        /// The cron source.
        name: String,
        /// How many.
        #[arg(short = 'n', default_value_t = 5)]
        count: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Pause a schedule (kept across restarts).
    Pause {
        /// The cron source.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Resume a paused schedule from its next tick.
    Resume {
        /// The cron source.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Fire a schedule once now.
    Fire {
        /// The cron source.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List records, newest first.
    List {
        #[command(flatten)]
        select: Select,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one record.
    Get {
        /// Record id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum SourcesCommand {
    /// List sources (the config file's and the API's).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create or replace the sources of a YAML file (its `sources:` list, as in switchyard.yaml;
    /// validated as a config file, with `${ENV}` substitution).
    Apply {
        /// The file.
        #[arg(short, long)]
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a source created through the API (it drains, then stops on every replica).
    Delete {
        /// The source.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum FunctionsCommand {
    /// List functions.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

impl From<LogFormat> for telemetry::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Pretty => Self::Pretty,
            LogFormat::Json => Self::Json,
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("switchyard: invalid configuration: {e}");
        ExitCode::from(EX_USAGE)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = telemetry::LogFormat::from(cli.log_format);
    if !matches!(cli.command, Command::Serve { .. }) {
        let _ = telemetry::init(format, None);
    }
    let result = match cli.command {
        Command::Serve { config, insecure } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let traces = match telemetry::init(format, Some(&config.telemetry)) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            match app::start(config, insecure, app::shutdown_signal()).await {
                Ok(running) => {
                    running.wait().await;
                    traces.shutdown();
                    Ok(())
                }
                Err(app::StartError::Usage(msg)) => {
                    eprintln!("switchyard: {msg}");
                    return ExitCode::from(EX_USAGE);
                }
                Err(app::StartError::Other(msg)) => Err(anyhow::anyhow!(msg)),
            }
        }
        Command::Validate { config } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} functions, {} triggers)",
                    config.display(),
                    c.functions.len(),
                    c.triggers.len()
                );
                Ok(())
            }
            Err(code) => return code,
        },
        Command::Schema => {
            print!("{}", switchyard_schemas::config::json_schema());
            Ok(())
        }
        Command::Invoke { name, data, remote } => match Client::new(&remote.url, remote.token) {
            Ok(c) => c.invoke(&name, data).await,
            Err(e) => Err(e),
        },
        Command::Events { command } => match command {
            EventsCommand::List { select, limit, cursor, json, remote } => {
                let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
                q.extend(select.pairs());
                q.extend(cursor.map(|c| ("cursor", c)));
                match Client::new(&remote.url, remote.token) {
                    Ok(c) => c.events_list(&q, json).await,
                    Err(e) => Err(e),
                }
            }
            EventsCommand::Get { id, remote } => match Client::new(&remote.url, remote.token) {
                Ok(c) => c.events_get(&id).await,
                Err(e) => Err(e),
            },
        },
        Command::Cron { command } => {
            let (remote, op) = match command {
                CronCommand::List { json, remote } => (remote, client::CronOp::List { json }),
                CronCommand::Next { name, count, remote } => (remote, client::CronOp::Next { name, count }),
                CronCommand::Pause { name, remote } => (remote, client::CronOp::Pause { name }),
                CronCommand::Resume { name, remote } => (remote, client::CronOp::Resume { name }),
                CronCommand::Fire { name, remote } => (remote, client::CronOp::Fire { name }),
            };
            match Client::new(&remote.url, remote.token) {
                Ok(c) => c.cron(op).await,
                Err(e) => Err(e),
            }
        }
        Command::Dlq { command: DlqCommand::List { function, since, limit, cursor, json, remote } } => {
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string()), ("dead_lettered", "true".into())];
            q.extend(function.map(|f| ("function", f)));
            q.extend(since.map(|s| ("since", s)));
            q.extend(cursor.map(|c| ("cursor", c)));
            match Client::new(&remote.url, remote.token) {
                Ok(c) => c.events_list(&q, json).await,
                Err(e) => Err(e),
            }
        }
        Command::Replay { ids, select, dead_lettered, limit, rate, dry_run, json, remote } => {
            let mut body = serde_json::Map::new();
            for (k, v) in select.pairs() {
                body.insert(k.to_owned(), v.into());
            }
            if !ids.is_empty() {
                body.insert("ids".into(), ids.into());
            }
            if dead_lettered {
                body.insert("dead_lettered".into(), true.into());
            }
            body.insert("limit".into(), limit.into());
            body.insert("rate".into(), rate.into());
            body.insert("dry_run".into(), dry_run.into());
            match Client::new(&remote.url, remote.token) {
                Ok(c) => c.replay(serde_json::Value::Object(body), json).await,
                Err(e) => Err(e),
            }
        }
        Command::Logs { function, follow, lines, remote } => match Client::new(&remote.url, remote.token) {
            Ok(c) => c.logs(&function, lines, follow).await,
            Err(e) => Err(e),
        },
        Command::Sources { command } => {
            let (remote, op) = match command {
                SourcesCommand::List { json, remote } => (remote, client::SourcesOp::List { json }),
                SourcesCommand::Apply { file, remote } => {
                    let config = match load(&file) {
                        Ok(c) => c,
                        Err(code) => return code,
                    };
                    if config.sources.is_empty() {
                        eprintln!("switchyard: {}: no `sources` to apply", file.display());
                        return ExitCode::from(EX_USAGE);
                    }
                    if !config.functions.is_empty() || !config.triggers.is_empty() {
                        eprintln!(
                            "note: {} also has functions or triggers; `sources apply` applies only its sources",
                            file.display()
                        );
                    }
                    (remote, client::SourcesOp::Apply { sources: config.sources })
                }
                SourcesCommand::Delete { name, remote } => (remote, client::SourcesOp::Delete { name }),
            };
            match Client::new(&remote.url, remote.token) {
                Ok(c) => c.sources(op).await,
                Err(e) => Err(e),
            }
        }
        Command::Functions { command: FunctionsCommand::List { remote } } => {
            match Client::new(&remote.url, remote.token) {
                Ok(c) => c.functions_list().await,
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
