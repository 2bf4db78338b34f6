//! Worker processes for process runtimes: spawning with a cleared environment, the length-prefixed
//! JSON worker protocol on the process's stdin/stdout, and per-invocation log capture from stderr.
//! A worker serves one invocation at a time; a dropped (timed-out) call kills its worker.

pub mod node;
pub mod pool;
pub mod python;

pub use pool::ProcessRuntime;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::InvokeError;

/// Largest protocol frame accepted from a worker.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Most log bytes kept per invocation before the rest is cut.
pub const MAX_LOG_BYTES: usize = 256 * 1024;
/// The line a worker writes to stderr after each invocation, followed by the sequence number.
pub const END_MARK: &str = "\u{1e}SWITCHYARD-END ";

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// The program (an absolute path).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment the worker gets.
    pub env: BTreeMap<String, String>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// The function, for spans and messages.
    pub function: String,
    /// Resource limits applied to the process before it runs.
    pub limits: Limits,
}

/// Per-instance resource limits, applied with setrlimit(2) in the child before exec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_AS in bytes (address space); None for runtimes that limit memory another way.
    pub address_space: Option<u64>,
    /// RLIMIT_CPU in seconds (CPU time over the instance's life).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
}

impl Limits {
    /// Applies the limits to the calling process. Only async-signal-safe calls: used between fork
    /// and exec.
    fn apply(self) -> std::io::Result<()> {
        fn set(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
            let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
            // SAFETY: setrlimit only reads the struct we pass; it is async-signal-safe.
            if unsafe { libc::setrlimit(resource, &lim) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }
        if let Some(v) = self.address_space {
            set(libc::RLIMIT_AS, v)?;
        }
        if let Some(v) = self.cpu_seconds {
            set(libc::RLIMIT_CPU, v)?;
        }
        if let Some(v) = self.open_files {
            set(libc::RLIMIT_NOFILE, v)?;
        }
        Ok(())
    }
}

/// The limits a function's configuration asks for, with the defaults (256 MiB, 256 files, no CPU cap).
pub fn limits_of(config: &switchyard_schemas::config::FunctionConfig, memory_as_rlimit: bool) -> Limits {
    Limits {
        address_space: memory_as_rlimit.then(|| config.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) * 1024 * 1024),
        cpu_seconds: config.cpu_time.map(|t| t.as_secs().max(1)),
        open_files: Some(config.max_open_files.unwrap_or(DEFAULT_OPEN_FILES)),
    }
}

/// Default memory limit per instance, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// Default open-files limit per instance.
pub const DEFAULT_OPEN_FILES: u64 = 256;

/// Looks a program up on the broker's PATH (workers get a fixed PATH, so names are resolved here).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| PathBuf::from(dir).join(program)).find(|p| p.is_file())
}

/// The spawn spec of a `process` function: its `command`, run from its program's folder.
///
/// # Errors
/// When the program cannot be found.
pub fn custom_spec(config: &switchyard_schemas::config::FunctionConfig) -> Result<Spawn, super::DeployError> {
    let err = |message: String| super::DeployError { function: config.name.clone(), message };
    let command = config.command.clone().unwrap_or_default();
    let (program, args) = command.split_first().ok_or_else(|| err("runtime process needs `command`".to_owned()))?;
    let path = which(program).ok_or_else(|| err(format!("command program {program:?} not found")))?;
    let cwd = path.parent().map_or_else(|| PathBuf::from("/"), std::path::Path::to_path_buf);
    Ok(Spawn {
        program: path,
        args: args.to_vec(),
        env: base_env(&config.env),
        cwd,
        function: config.name.clone(),
        limits: limits_of(config, true),
    })
}

/// The environment a worker starts from: a fixed PATH, HOME and LANG, then the function's `env`.
/// Nothing of the broker's own environment (tokens, credentials) is passed on.
pub fn base_env(declared: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned());
    env.insert("HOME".to_owned(), "/tmp".to_owned());
    env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
    env.extend(declared.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// One running worker process.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    logs: mpsc::Receiver<LogChunk>,
    seq: u64,
    /// What the worker printed before it was ready.
    pending_logs: String,
}

#[derive(Debug)]
struct LogChunk {
    /// Sequence number of the invocation the chunk ends, or None at end of stream.
    seq: Option<u64>,
    text: String,
}

impl Worker {
    /// Starts a worker and waits for its `ready` frame.
    ///
    /// # Errors
    /// [`InvokeError`] of kind `init` with the worker's own error (e.g. a Python traceback) when it
    /// cannot load, or `crashed` when it dies first.
    pub async fn start(spec: &Spawn) -> Result<Self, InvokeError> {
        let mut command = Command::new(&spec.program);
        let limits = spec.limits;
        // SAFETY: the closure only calls setrlimit, which is async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || limits.apply());
        }
        let mut child = command
            .args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| InvokeError::init(format!("cannot start {}: {e}", spec.program.display())))?;
        let stdin = child.stdin.take().ok_or_else(|| InvokeError::init("worker stdin missing"))?;
        let stdout = child.stdout.take().ok_or_else(|| InvokeError::init("worker stdout missing"))?;
        let stderr = child.stderr.take().ok_or_else(|| InvokeError::init("worker stderr missing"))?;
        let (tx, logs) = mpsc::channel(8);
        let span = tracing::debug_span!("worker_logs", function = %spec.function, pid = child.id());
        tokio::spawn(read_logs(stderr, tx).instrument(span));
        let mut worker = Self { child, stdin, stdout, logs, seq: 0, pending_logs: String::new() };
        match worker.recv().await {
            Ok(msg) if msg.get("type").and_then(Value::as_str) == Some("ready") => Ok(worker),
            Ok(msg) if msg.get("type").and_then(Value::as_str) == Some("init_error") => {
                let logs = worker.drain_logs().await;
                Err(InvokeError::init(describe_error(msg.get("error"))).with_logs(logs))
            }
            Ok(other) => Err(InvokeError::bad_response(format!("worker sent {other} before ready"))),
            Err(e) => {
                let logs = worker.drain_logs().await;
                let status = worker.child.wait().await.map(|s| s.to_string()).unwrap_or_default();
                Err(InvokeError::crashed(format!("worker exited before it was ready ({status}): {}", e.message))
                    .with_logs(logs))
            }
        }
    }

    /// Whether the process still runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends one invocation and waits for its result frame and its logs.
    ///
    /// # Errors
    /// `crashed` when the worker dies mid-invocation; `bad_response` for a malformed frame.
    pub async fn call(&mut self, event: Value, context: Value) -> Result<(Value, String), InvokeError> {
        self.seq += 1;
        let seq = self.seq;
        let msg = serde_json::json!({"type": "invoke", "seq": seq, "event": event, "context": context});
        let body = serde_json::to_vec(&msg).map_err(|e| InvokeError::bad_response(e.to_string()))?;
        let len = u32::try_from(body.len()).map_err(|_| InvokeError::bad_response("event too large for a frame"))?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        let sent = async {
            self.stdin.write_all(&frame).await?;
            self.stdin.flush().await
        }
        .await;
        if let Err(e) = sent {
            let logs = self.drain_logs().await;
            return Err(self.crash_error(format!("worker pipe closed: {e}")).await.with_logs(logs));
        }
        let reply = match self.recv().await {
            Ok(reply) => reply,
            Err(e) => {
                let logs = self.drain_logs().await;
                return Err(self.crash_error(e.message).await.with_logs(logs));
            }
        };
        let logs = self.logs_for(seq).await;
        Ok((reply, logs))
    }

    async fn crash_error(&mut self, detail: String) -> InvokeError {
        let status = match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(Ok(s)) => s.to_string(),
            _ => "still running".to_owned(),
        };
        InvokeError::crashed(format!("worker died during the invocation ({status}): {detail}"))
    }

    async fn recv(&mut self) -> Result<Value, InvokeError> {
        let mut head = [0u8; 4];
        self.stdout
            .read_exact(&mut head)
            .await
            .map_err(|e| InvokeError::crashed(format!("reading worker frame: {e}")))?;
        let len = u32::from_be_bytes(head) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(InvokeError::bad_response(format!("worker frame of {len} bytes exceeds {MAX_FRAME_BYTES}")));
        }
        let mut body = vec![0u8; len];
        self.stdout
            .read_exact(&mut body)
            .await
            .map_err(|e| InvokeError::crashed(format!("reading worker frame: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| InvokeError::bad_response(format!("worker sent invalid JSON: {e}")))
    }

    /// The logs of invocation `seq`: everything up to its end mark (a real signal from the worker,
    /// written after the handler's output was flushed).
    async fn logs_for(&mut self, seq: u64) -> String {
        let mut text = std::mem::take(&mut self.pending_logs);
        loop {
            match tokio::time::timeout(Duration::from_secs(2), self.logs.recv()).await {
                Ok(Some(chunk)) => {
                    push_capped(&mut text, &chunk.text);
                    if chunk.seq.is_none_or(|s| s >= seq) {
                        return text;
                    }
                }
                Ok(None) | Err(_) => return text,
            }
        }
    }

    /// Whatever the worker printed until its stderr closed (after a crash).
    async fn drain_logs(&mut self) -> String {
        let mut text = std::mem::take(&mut self.pending_logs);
        while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(1), self.logs.recv()).await {
            push_capped(&mut text, &chunk.text);
            if chunk.seq.is_none() {
                break;
            }
        }
        text
    }
}

fn push_capped(text: &mut String, more: &str) {
    if text.len() >= MAX_LOG_BYTES {
        return;
    }
    let room = MAX_LOG_BYTES - text.len();
    if more.len() <= room {
        text.push_str(more);
    } else {
        let mut end = room;
        while !more.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str(&more[..end]);
        text.push_str("\n[logs cut]\n");
    }
}

async fn read_logs(stderr: tokio::process::ChildStderr, tx: mpsc::Sender<LogChunk>) {
    let mut lines = BufReader::new(stderr);
    let mut text = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let s = String::from_utf8_lossy(&line);
                if let Some(rest) = s.strip_prefix(END_MARK) {
                    let seq = rest.trim().parse().ok();
                    let chunk = LogChunk { seq: Some(seq.unwrap_or(0)), text: std::mem::take(&mut text) };
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                } else {
                    push_capped(&mut text, &s);
                }
            }
        }
    }
    let _ = tx.send(LogChunk { seq: None, text }).await;
}

/// Formats a worker's error object: `Type: message` and the traceback.
pub fn describe_error(error: Option<&Value>) -> String {
    let Some(e) = error else { return "worker reported an error without details".to_owned() };
    let ty = e.get("type").and_then(Value::as_str).unwrap_or("Error");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    let mut text = format!("{ty}: {message}");
    if let Some(tb) = e.get("traceback").and_then(Value::as_str) {
        if !tb.is_empty() {
            text.push('\n');
            text.push_str(tb.trim_end());
        }
    }
    text
}
