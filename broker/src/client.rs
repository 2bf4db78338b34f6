//! The CLI's client commands: they talk to a running broker's API at `--url` / `SWITCHYARD_URL`
//! with `SWITCHYARD_TOKEN` as the bearer token.

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// A client for one broker.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            http: reqwest::Client::builder().build()?,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<(u16, Vec<(String, String)>, bytes::Bytes)> {
        let resp = r.send().await.with_context(|| format!("cannot reach the broker at {}", self.base))?;
        let status = resp.status().as_u16();
        let headers =
            resp.headers().iter().filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned()))).collect();
        Ok((status, headers, resp.bytes().await?))
    }

    async fn json(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let (status, _, body) = self.send(r).await?;
        let v: Value =
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        if !(200..300).contains(&status) {
            let msg = v.pointer("/error/message").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_owned);
            bail!("broker answered {status}: {msg}");
        }
        Ok(v)
    }

    /// `switchyard invoke`: prints the function's response body; fails on a failed invocation.
    ///
    /// # Errors
    /// When the broker cannot be reached or the invocation failed.
    pub async fn invoke(&self, name: &str, data: Option<String>) -> Result<()> {
        let mut r = self.req(reqwest::Method::POST, &format!("/api/v1/functions/invoke/{name}"));
        if let Some(d) = data {
            let text = match d.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).with_context(|| format!("--data @{path}"))?,
                None => d,
            };
            serde_json::from_str::<Value>(&text).context("--data is not valid JSON")?;
            r = r.header("content-type", "application/json").body(text);
        }
        let (status, headers, body) = self.send(r).await?;
        let record = headers.iter().find(|(k, _)| k == "x-switchyard-record-id").map(|(_, v)| v.clone());
        println!("{}", String::from_utf8_lossy(&body));
        if let Some(id) = record {
            eprintln!("status {status}, record {id}");
        }
        if !(200..300).contains(&status) {
            bail!("invocation failed with status {status}");
        }
        Ok(())
    }

    /// `switchyard events list`.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses the query.
    pub async fn events_list(&self, query: &[(&str, String)], json: bool) -> Result<()> {
        let v = self.json(self.req(reqwest::Method::GET, "/api/v3/events").query(query)).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        let items = v.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        println!(
            "{:<36}  {:<8}  {:<16}  {:<16}  {:>3}  {:<24}  EVENT",
            "RECORD", "STATUS", "FUNCTION", "TRIGGER", "ATT", "RECEIVED"
        );
        for r in &items {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
            println!(
                "{:<36}  {:<8}  {:<16}  {:<16}  {:>3}  {:<24}  {} ({})",
                s("id"),
                s("status"),
                s("function"),
                s("trigger"),
                r.get("attempts").and_then(Value::as_u64).unwrap_or(0),
                s("received_at").chars().take(24).collect::<String>(),
                s("event_id"),
                s("event_type"),
            );
        }
        if let Some(next) = v.get("next_cursor").and_then(Value::as_str) {
            eprintln!("more: --cursor {next}");
        }
        Ok(())
    }

    /// `switchyard replay`: prints what was (or, with `dry_run`, would be) replayed; fails when any
    /// selected record could not be replayed.
    ///
    /// # Errors
    /// When the broker cannot be reached, refuses the selection, or some records were not replayed.
    pub async fn replay(&self, body: Value, json: bool) -> Result<()> {
        let v = self.json(self.req(reqwest::Method::POST, "/api/v1/replay").json(&body)).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        let list = |k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
        let s = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
        if !json && v.get("dry_run").and_then(Value::as_bool) == Some(true) {
            println!("{:<36}  {:<8}  {:<16}  {:<16}  EVENT", "RECORD", "STATUS", "FUNCTION", "TRIGGER");
            for r in list("items") {
                let note = r.get("not_replayable").and_then(Value::as_str).map(|n| format!("  [not replayable: {n}]"));
                println!(
                    "{:<36}  {:<8}  {:<16}  {:<16}  {} ({}){}",
                    s(&r, "id"),
                    s(&r, "status"),
                    s(&r, "function"),
                    s(&r, "trigger"),
                    s(&r, "event_id"),
                    s(&r, "event_type"),
                    note.unwrap_or_default()
                );
            }
            eprintln!("dry run: {} selected, nothing invoked", list("items").len());
        } else if !json {
            println!("{:<36}  {:<36}  STATUS", "ORIGINAL", "REPLAY");
            for r in list("replayed") {
                println!("{:<36}  {:<36}  {}", s(&r, "original"), s(&r, "record"), s(&r, "status"));
            }
            for r in list("skipped") {
                eprintln!("not replayed: {} ({})", s(&r, "id"), s(&r, "reason"));
            }
        }
        for id in list("missing") {
            eprintln!("no record {}", id.as_str().unwrap_or("-"));
        }
        let failed = list("skipped").len() + list("missing").len();
        if failed > 0 {
            bail!("{failed} selected records were not replayed");
        }
        Ok(())
    }

    /// `switchyard events get ID`: the whole record as JSON.
    ///
    /// # Errors
    /// When the broker cannot be reached or has no such record.
    pub async fn events_get(&self, id: &str) -> Result<()> {
        let v = self.json(self.req(reqwest::Method::GET, &format!("/api/v3/events/{id}"))).await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }

    /// `switchyard logs FUNCTION [-f]`: the captured output of the newest `recent` invocations, oldest
    /// first, each under a header line; with `follow`, then every new invocation's as it is recorded.
    ///
    /// # Errors
    /// When the broker cannot be reached.
    pub async fn logs(&self, function: &str, recent: u32, follow: bool) -> Result<()> {
        // Everything after this instant is followed, so nothing falls between the list and the stream.
        let start = uuid::Uuid::now_v7().to_string();
        let query = [("function", function.to_owned()), ("limit", recent.clamp(1, 1000).to_string())];
        let v = self.json(self.req(reqwest::Method::GET, "/api/v3/events").query(&query)).await?;
        let mut items = v.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        items.reverse();
        for r in &items {
            print_logs(r);
        }
        if !follow {
            return Ok(());
        }
        // Records listed above that were still running are after `start` only if created later; the
        // newest shown one is the cursor when it is newer.
        let newest = items.iter().filter_map(|r| r.get("id").and_then(Value::as_str)).max().map(str::to_owned);
        let after = newest.filter(|n| *n > start).unwrap_or(start);
        // Then follow the server-sent events of the function's log stream.
        let resp = self
            .req(reqwest::Method::GET, &format!("/api/v1/functions/{function}/logs"))
            .query(&[("after", after)])
            .header("accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or_default();
            let msg = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("").to_owned();
            bail!("broker answered {status}: {msg}");
        }
        let mut resp = resp;
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect::<Vec<_>>()
                    .join("\n");
                if let Ok(r) = serde_json::from_str::<Value>(&data) {
                    print_logs(&r);
                    use std::io::Write as _;
                    let _ = std::io::stdout().flush();
                }
            }
        }
        bail!("the broker closed the log stream")
    }

    /// `switchyard functions list`.
    ///
    /// # Errors
    /// When the broker cannot be reached.
    pub async fn functions_list(&self) -> Result<()> {
        let v = self.json(self.req(reqwest::Method::GET, "/api/v1/functions")).await?;
        println!("{:<20}  {:<8}  {:<9}  {:>9}  {:>9}  TARGET", "NAME", "RUNTIME", "STATE", "MAX_CONC", "IN_FLIGHT");
        for f in v.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
            let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
            let target = ["url", "handler", "module"]
                .iter()
                .find_map(|k| f.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
                .or_else(|| f.get("command").and_then(Value::as_array).and_then(|c| c.first()).map(|c| c.to_string()))
                .unwrap_or_else(|| "-".to_owned());
            println!(
                "{:<20}  {:<8}  {:<9}  {:>9}  {:>9}  {target}",
                s("name"),
                s("runtime"),
                s("state"),
                f.get("max_concurrency").and_then(Value::as_u64).unwrap_or(0),
                f.get("in_flight").and_then(Value::as_u64).unwrap_or(0),
            );
            if let Some(error) = f.get("error").and_then(Value::as_str) {
                for line in error.lines() {
                    println!("    {line}");
                }
            }
        }
        Ok(())
    }

    /// `switchyard sources ...`.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses a change (the message names the field); `apply`
    /// stops at the first source refused, after printing what it applied before.
    pub async fn sources(&self, op: SourcesOp) -> Result<()> {
        match op {
            SourcesOp::List { json } => {
                let v = self.json(self.req(reqwest::Method::GET, "/api/v1/sources")).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                println!("{:<24}  {:<6}  {:<7}  {:<7}", "NAME", "TYPE", "ORIGIN", "RUNNING");
                for s in v.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
                    let text = |p: &str| s.pointer(p).and_then(Value::as_str).unwrap_or("-").to_owned();
                    let running = s.get("running").and_then(Value::as_bool).unwrap_or(false);
                    println!(
                        "{:<24}  {:<6}  {:<7}  {:<7}",
                        text("/name"),
                        text("/config/type"),
                        text("/origin"),
                        if running { "yes" } else { "no" }
                    );
                }
            }
            SourcesOp::Apply { sources } => {
                for source in sources {
                    let name = source.name().to_owned();
                    let path = format!("/api/v1/sources/{name}");
                    let v = self
                        .json(self.req(reqwest::Method::PUT, &path).json(&source))
                        .await
                        .with_context(|| format!("source {name:?}"))?;
                    println!("{name}: {}", v.get("change").and_then(Value::as_str).unwrap_or("applied"));
                }
            }
            SourcesOp::Delete { name } => {
                let path = format!("/api/v1/sources/{name}");
                let (status, _, body) = self.send(self.req(reqwest::Method::DELETE, &path)).await?;
                if !(200..300).contains(&status) {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let msg = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("").to_owned();
                    bail!("broker answered {status}: {msg}");
                }
                println!("{name}: deleted");
            }
        }
        Ok(())
    }

    /// `switchyard cron ...`.
    ///
    /// # Errors
    /// When the broker cannot be reached, has no such cron source, or the operation fails.
    pub async fn cron(&self, op: CronOp) -> Result<()> {
        match op {
            CronOp::List { json } => {
                let v = self.json(self.req(reqwest::Method::GET, "/api/v1/cron")).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                println!(
                    "{:<24}  {:<20}  {:<20}  {:<7}  {:<24}  LAST FIRED",
                    "NAME", "SCHEDULE", "TIMEZONE", "PAUSED", "NEXT"
                );
                for c in v.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
                    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
                    let next = c.pointer("/next/0").and_then(Value::as_str).unwrap_or("-");
                    let paused = c.get("paused").and_then(Value::as_bool).unwrap_or(false);
                    println!(
                        "{:<24}  {:<20}  {:<20}  {:<7}  {next:<24}  {}",
                        s("name"),
                        s("schedule"),
                        s("timezone"),
                        if paused { "yes" } else { "no" },
                        s("last_fired")
                    );
                }
            }
            CronOp::Next { name, count } => {
                let path = format!("/api/v1/cron/{name}/next");
                let v = self.json(self.req(reqwest::Method::GET, &path).query(&[("n", count)])).await?;
                for t in v.get("next").and_then(Value::as_array).cloned().unwrap_or_default() {
                    println!("{}", t.as_str().unwrap_or("-"));
                }
            }
            CronOp::Pause { name } => {
                self.json(self.req(reqwest::Method::POST, &format!("/api/v1/cron/{name}/pause"))).await?;
                println!("{name}: paused");
            }
            CronOp::Resume { name } => {
                self.json(self.req(reqwest::Method::POST, &format!("/api/v1/cron/{name}/resume"))).await?;
                println!("{name}: resumed");
            }
            CronOp::Fire { name } => {
                let v = self.json(self.req(reqwest::Method::POST, &format!("/api/v1/cron/{name}/fire"))).await?;
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
                println!("{name}: {} event {} at {}", s("outcome"), s("id"), s("time"));
            }
        }
        Ok(())
    }
}

/// A `switchyard sources` operation.
#[derive(Debug, Clone)]
pub enum SourcesOp {
    /// List sources.
    List {
        /// Print JSON.
        json: bool,
    },
    /// Create or replace these sources.
    Apply {
        /// The sources (validated).
        sources: Vec<switchyard_schemas::config::SourceConfig>,
    },
    /// Delete a source.
    Delete {
        /// The source.
        name: String,
    },
}

/// A `switchyard cron` operation.
#[derive(Debug, Clone)]
pub enum CronOp {
    /// List cron sources.
    List {
        /// Print JSON.
        json: bool,
    },
    /// The next fire times.
    Next {
        /// The source.
        name: String,
        /// How many.
        count: usize,
    },
    /// Pause.
    Pause {
        /// The source.
        name: String,
    },
    /// Resume.
    Resume {
        /// The source.
        name: String,
    },
    /// Fire now.
    Fire {
        /// The source.
        name: String,
    },
}

fn print_logs(r: &Value) {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-");
    println!("--- {} {} {} (record {})", s("finished_at"), s("status"), s("event_id"), s("id"));
    if let Some(logs) = r.get("logs").and_then(Value::as_str) {
        print!("{logs}");
        if !logs.ends_with('\n') {
            println!();
        }
    }
}
