//! The `switchyard` binary: `validate` exit codes and messages, `serve` refusing unusable telemetry
//! settings, and `serve` draining in-flight work on SIGTERM before exiting 0, with `invoke`, `events`
//! and `sources` talking to it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

#[test]
fn validate_accepts_the_quickstart_and_rejects_bad_files_with_64() {
    let quick = format!("{}/../testdata/quickstart/switchyard.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = bin().args(["validate", "-c", &quick]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (1 functions, 1 triggers)"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "functions:\n  - name: f\n    runtime: http\n    url: http://127.0.0.1:1/\n    timeout: 10m\n",
    )
    .unwrap();
    let out = bin().args(["validate", "-c", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:5: functions[0].timeout: must be more than 0s and at most 300s"), "{err}");

    let out = bin().args(["serve", "-c", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "serve refuses an invalid file too");
    let out = bin().args(["validate", "-c", "/nonexistent.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml: cannot read"));
}

#[test]
fn serve_refuses_unusable_telemetry_settings_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "store: sqlite://{}/records.db\nserver: {{bind: '127.0.0.1:0'}}\nfunctions:\n  - {{name: f, runtime: http, url: 'http://127.0.0.1:1/'}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for (var, value) in [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("OTEL_BSP_SCHEDULE_DELAY", "0"),
        ("OTEL_TRACES_SAMPLER", "bogus"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ] {
        let mut cmd = bin();
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(k);
        }
        let child = cmd
            .args(["serve", "-c", cfg.to_str().unwrap()])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
            .env(var, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A setting that were accepted would leave `serve` running: fail instead of hanging.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("serve started with {var}={value}");
        };
        let out = out.unwrap();
        let (status, err) = (out.status, String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(status.code(), Some(64), "{var}={value}: {err}");
        assert!(err.contains(var), "the error names {var}: {err}");
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_exits_zero() {
    let fs = common::function_server().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.path().join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "store: sqlite://{}/records.db\nserver: {{bind: '127.0.0.1:{port}', shutdown_grace: 10s}}\nfunctions:\n  - {{name: slow, runtime: http, url: '{}'}}\ntriggers:\n  - {{name: t, function: slow}}\n",
            dir.path().display(),
            fs.url("/slow/700"),
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-c", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // Wait for readiness (the process has no other signal to give us).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http.get(format!("{url}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(tokio::time::Instant::now() < deadline, "broker did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = fs.seen.slow_started.notified();
    let resp = http
        .post(format!("{url}/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "drain-me")
        .header("ce-source", "/t")
        .header("ce-type", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    started.await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {log}", out.status);
    assert!(log.contains("shutdown complete"), "{log}");
    let store =
        switchyard_dispatcher::records::RecordStore::open(&format!("sqlite://{}/records.db", dir.path().display()))
            .await
            .unwrap();
    let records =
        store.list(&switchyard_dispatcher::records::RecordQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, switchyard_schemas::Status::Success, "the in-flight invocation finished");
}

#[tokio::test]
async fn invoke_and_events_commands_talk_to_the_broker() {
    let quick = format!("{}/../testdata/quickstart/handler.py", env!("CARGO_MANIFEST_DIR"));
    let b = common::broker(&format!(
        "server: {{tokens: ['cli-token-123']}}\nfunctions:\n  - {{name: hello, runtime: python, handler: '{quick}'}}\n"
    ))
    .await;
    let url = b.url("");
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            bin().args(&args).env("SWITCHYARD_URL", url).env("SWITCHYARD_TOKEN", "cli-token-123").output().unwrap()
        })
    };
    let out = run(vec!["invoke".into(), "hello".into(), "--data".into(), r#"{"name":"CLI"}"#.into()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello, CLI!"));
    let out = run(vec!["events".into(), "list".into(), "--function".into(), "hello".into()]).await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("SUCCESS") && table.contains("hello"), "{table}");
    let id = table.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let out = run(vec!["events".into(), "get".into(), id.clone()]).await.unwrap();
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["status"], "SUCCESS");
    let out = run(vec!["functions".into(), "list".into()]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("python"));
    // Without the token the CLI reports the 401 and fails.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            bin().args(["events", "list"]).env("SWITCHYARD_URL", url).env_remove("SWITCHYARD_TOKEN").output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    b.running.shutdown().await;
}

#[tokio::test]
async fn sources_apply_list_and_delete_go_through_the_api() {
    let b = common::broker("server: {tokens: ['cli-token-123']}\n").await;
    let url = b.url("");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sources.yaml");
    let run = |args: Vec<String>, token: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = bin();
            cmd.args(&args).env("SWITCHYARD_URL", url).env("CRON_TZ_FOR_TEST", "Europe/Berlin");
            match token {
                Some(t) => cmd.env("SWITCHYARD_TOKEN", t),
                None => cmd.env_remove("SWITCHYARD_TOKEN"),
            };
            cmd.output().unwrap()
        })
    };
    let apply = vec!["sources".into(), "apply".into(), "-f".into(), file.display().to_string()];
    // `${ENV}` is substituted as in a config file.
    std::fs::write(
        &file,
        "sources:\n  - {type: cron, name: nightly, schedule: '0 3 * * *', timezone: '${CRON_TZ_FOR_TEST}'}\n",
    )
    .unwrap();
    let out = run(apply.clone(), Some("cli-token-123")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nightly: created\n");
    let out = run(apply.clone(), Some("cli-token-123")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nightly: unchanged\n");
    assert_eq!(b.running.dispatcher.store().registry_since(0).await.unwrap().len(), 1, "stored in the registry");
    let out = run(vec!["sources".into(), "list".into()], Some("cli-token-123")).await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["nightly", "cron", "api", "yes"]),
        "{table}"
    );
    let out = run(vec!["cron".into(), "list".into()], Some("cli-token-123")).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Europe/Berlin"));
    // An invalid file is refused before anything is sent, with the file, line and field.
    std::fs::write(&file, "sources:\n  - type: nats\n    name: n\n").unwrap();
    let out = run(apply.clone(), Some("cli-token-123")).await.unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sources[0].subjects"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the token: 401.
    let out = run(vec!["sources".into(), "delete".into(), "nightly".into()], None).await.unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = run(vec!["sources".into(), "delete".into(), "nightly".into()], Some("cli-token-123")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        b.running.dispatcher.store().registry_since(0).await.unwrap()[0].config.is_none(),
        "the deletion is stored"
    );
    let out = run(vec!["sources".into(), "delete".into(), "nightly".into()], Some("cli-token-123")).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    b.running.shutdown().await;
}

#[tokio::test]
async fn logs_shows_recent_output_and_follows_new_invocations() {
    use tokio::io::AsyncBufReadExt;
    let py = common::python_handler("behaviours.py");
    let b = common::broker(&format!(
        "functions:\n  - {{name: echo, runtime: python, handler: '{py}', entrypoint: echo}}\n"
    ))
    .await;
    let invoke = |marker: &'static str| {
        let (http, url) = (b.http.clone(), b.url("/api/v1/functions/invoke/echo"));
        async move {
            let resp = http.post(url).json(&serde_json::json!({"marker": marker})).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    invoke("first-call").await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["logs", "echo", "--url", &b.url("")])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("echo got {'marker': 'first-call'}"), "{text}");

    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["logs", "echo", "-f", "--url", &b.url("")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    // The follower first prints the existing invocation; once it has, a new one must follow.
    read_until(&mut lines, "first-call").await;
    invoke("second-call").await;
    read_until(&mut lines, "second-call").await;
    follow.kill().await.unwrap();
    b.running.shutdown().await;
}

async fn read_until(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the follower printed no line with {needle}");
}
