//! Cron source tests with a controllable clock: expression and timezone vectors (including the DST
//! transitions of 2026 in New York, Berlin and Lord Howe), and the tick loop under tokio's paused
//! clock: aligned ticks and deterministic ids, catch-up after a simulated outage, the forbid and
//! replace concurrency policies, one fire per tick across two replicas, pause / resume / fire-now.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_connectors::cron::{Clock as _, CronHandle, CronSource, Schedule, TokioClock};
use switchyard_connectors::{Delivery, MemoryState, Outcome, Source, SourceContext, SourceError, SourceState};
use switchyard_schemas::sources::cron::{CatchUp, ConcurrencyPolicy, CronSourceConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ticks(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
    let s = Schedule::new(expr, tz).unwrap();
    s.upcoming(utc(after), n).into_iter().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).collect()
}

// ---------------------------------------------------------------------------------------------
// Expression and timezone vectors.

#[test]
fn five_and_six_field_expressions_and_macros() {
    assert_eq!(
        ticks("*/15 * * * *", "UTC", "2026-05-01T10:07:00Z", 3),
        ["2026-05-01T10:15:00Z", "2026-05-01T10:30:00Z", "2026-05-01T10:45:00Z"]
    );
    assert_eq!(
        ticks("*/20 * * * * *", "UTC", "2026-05-01T10:07:59.5Z", 3),
        ["2026-05-01T10:08:00Z", "2026-05-01T10:08:20Z", "2026-05-01T10:08:40Z"]
    );
    assert_eq!(ticks("@hourly", "UTC", "2026-05-01T10:07:00Z", 2), ["2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z"]);
    assert_eq!(ticks("@daily", "Europe/Berlin", "2026-05-01T10:00:00Z", 1), ["2026-05-01T22:00:00Z"]);
    assert_eq!(ticks("@midnight", "UTC", "2026-05-01T10:00:00Z", 1), ["2026-05-02T00:00:00Z"]);
    // 2026-05-03 is a Sunday.
    assert_eq!(ticks("@weekly", "UTC", "2026-05-01T10:00:00Z", 1), ["2026-05-03T00:00:00Z"]);
    assert_eq!(ticks("@monthly", "UTC", "2026-05-01T10:00:00Z", 1), ["2026-06-01T00:00:00Z"]);
    assert_eq!(ticks("@yearly", "Asia/Tokyo", "2026-05-01T10:00:00Z", 1), ["2026-12-31T15:00:00Z"]);
    assert_eq!(
        ticks("0 9 * * MON-FRI", "America/New_York", "2026-05-01T14:00:00Z", 2),
        ["2026-05-04T13:00:00Z", "2026-05-05T13:00:00Z"]
    );
}

#[test]
fn new_york_spring_forward_2026_03_08() {
    // 02:00 EST jumps to 03:00 EDT at 07:00Z: 02:30 does not exist and fires once at 07:00Z.
    assert_eq!(
        ticks("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 3),
        ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
    );
    // 02:00 and 02:30 (missing) and 03:00 collapse into one tick at the jump.
    assert_eq!(
        ticks("*/30 * * * *", "America/New_York", "2026-03-08T06:00:00Z", 4),
        ["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:00:00Z"]
    );
}

#[test]
fn new_york_fall_back_2026_11_01() {
    // 01:30 happens twice (EDT 05:30Z, EST 06:30Z): it fires once, at the first.
    assert_eq!(
        ticks("30 1 * * *", "America/New_York", "2026-10-31T00:00:00Z", 3),
        ["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
    assert_eq!(
        ticks("*/30 * * * *", "America/New_York", "2026-11-01T04:45:00Z", 4),
        ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z", "2026-11-01T07:30:00Z"]
    );
    // Asked from inside the repeated hour (01:15 EST), the next tick is after it, not a repeat.
    assert_eq!(ticks("*/30 * * * *", "America/New_York", "2026-11-01T06:15:00Z", 1), ["2026-11-01T07:00:00Z"]);
}

#[test]
fn berlin_spring_forward_2026_03_29() {
    assert_eq!(
        ticks("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
        ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
}

#[test]
fn berlin_fall_back_2026_10_25() {
    assert_eq!(
        ticks("30 2 * * *", "Europe/Berlin", "2026-10-24T00:00:00Z", 3),
        ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_shifts_2026() {
    // DST starts 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11:00) at 15:30Z on 10-03.
    assert_eq!(
        ticks("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T00:00:00Z", 3),
        ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]
    );
    // DST ends 2026-04-05: 02:00 (+11:00) falls back to 01:30 (+10:30); 01:45 happens twice.
    assert_eq!(
        ticks("45 1 * * *", "Australia/Lord_Howe", "2026-04-03T00:00:00Z", 3),
        ["2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
}

#[test]
fn every_second_through_a_fall_back_has_no_repeats() {
    let s = Schedule::new("* * * * * *", "Europe/Berlin").unwrap();
    let got = s.upcoming(utc("2026-10-25T00:59:58Z"), 3);
    // 02:59:59 CEST (00:59:59Z), then 03:00:00 CET (02:00:00Z): the repeated 02:xx hour is skipped.
    assert_eq!(got, [utc("2026-10-25T00:59:59Z"), utc("2026-10-25T02:00:00Z"), utc("2026-10-25T02:00:01Z")]);
}

// ---------------------------------------------------------------------------------------------
// The tick loop under a paused tokio clock.

struct Running {
    rx: mpsc::Receiver<Delivery>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
    handle: CronHandle,
    clock: TokioClock,
}

impl Running {
    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(86_400 * 400), self.rx.recv())
            .await
            .expect("no delivery within a virtual year")
            .expect("source stopped")
    }

    async fn stop(self) -> mpsc::Receiver<Delivery> {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.rx
    }
}

fn config(name: &str, schedule: &str) -> CronSourceConfig {
    CronSourceConfig { name: name.into(), schedule: schedule.into(), ..CronSourceConfig::default() }
}

fn start(config: CronSourceConfig, at: &str, state: &Arc<MemoryState>) -> Running {
    config.validate("sources[0]").unwrap();
    let clock = TokioClock::starting_at(utc(at));
    let source = CronSource::with_clock(config.clone(), Arc::new(clock));
    let handle = source.handle();
    let (tx, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        deliveries: tx,
        shutdown: shutdown.clone(),
        name: config.name.clone(),
        state: Arc::clone(state) as Arc<dyn SourceState>,
    };
    let task = tokio::spawn(Box::new(source).run(ctx));
    Running { rx, shutdown, task, handle, clock }
}

fn time_of(d: &Delivery) -> DateTime<Utc> {
    d.event.time.unwrap().with_timezone(&Utc)
}

#[tokio::test(start_paused = true)]
async fn every_second_ticks_are_aligned_with_deterministic_ids() {
    let state = Arc::new(MemoryState::default());
    let mut c = config("heartbeat", "* * * * * *");
    c.data = Some(serde_json::json!({"hello": "world"}));
    let mut r = start(c, "2026-01-01T00:00:00.300Z", &state);
    for i in 1..=5 {
        let mut d = r.next().await;
        let want = utc(&format!("2026-01-01T00:00:0{i}Z"));
        assert_eq!(d.event.id, format!("heartbeat:2026-01-01T00:00:0{i}Z"));
        assert_eq!(d.event.ty, "dev.switchyard.cron.tick");
        assert_eq!(d.event.source, "/switchyard/sources/heartbeat");
        assert_eq!(time_of(&d), want);
        assert!(d.skip.is_none());
        // Dispatched at the scheduled instant, not before.
        assert!(r.clock.now() >= want && r.clock.now() - want < chrono::TimeDelta::milliseconds(5));
        d.event.validate().unwrap();
        d.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    }
    assert_eq!(r.handle.status().last_fired, Some(utc("2026-01-01T00:00:05Z")));
    r.stop().await;
    assert_eq!(
        SourceState::get(&*state, "heartbeat", "last_fired").await.unwrap().as_deref(),
        Some("2026-01-01T00:00:05Z")
    );
}

#[tokio::test(start_paused = true)]
async fn the_loop_fires_once_across_a_spring_forward() {
    let state = Arc::new(MemoryState::default());
    let mut c = config("ny", "*/30 * * * *");
    c.timezone = "America/New_York".into();
    let mut r = start(c, "2026-03-08T06:10:00Z", &state);
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = r.next().await;
        got.push(d.event.time.unwrap().to_rfc3339());
    }
    assert_eq!(
        got,
        [
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-08T04:00:00-04:00"
        ]
    );
    r.stop().await;
}

/// Ticks every 10 minutes; last fired at 12:00; the broker comes back at 13:05 (6 ticks missed:
/// 12:10 .. 13:00). Returns the first `n` tick times delivered after the restart.
async fn after_outage(policy: CatchUp, max: u32, deadline: Option<Duration>, n: usize) -> Vec<String> {
    let state = Arc::new(MemoryState::default());
    state.put("job", "last_fired", "2026-06-01T12:00:00Z").await.unwrap();
    let mut c = config("job", "*/10 * * * *");
    c.catch_up = policy;
    c.max_catch_up = max;
    c.starting_deadline = deadline;
    let mut r = start(c, "2026-06-01T13:05:00Z", &state);
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(time_of(&r.next().await).format("%H:%M").to_string());
    }
    r.stop().await;
    got
}

#[tokio::test(start_paused = true)]
async fn catch_up_none_fires_nothing_missed() {
    assert_eq!(after_outage(CatchUp::None, 10, None, 2).await, ["13:10", "13:20"]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_latest_fires_the_most_recent_missed_tick() {
    assert_eq!(after_outage(CatchUp::Latest, 10, None, 2).await, ["13:00", "13:10"]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_all_fires_missed_ticks_in_order_bounded() {
    assert_eq!(
        after_outage(CatchUp::All, 10, None, 7).await,
        ["12:10", "12:20", "12:30", "12:40", "12:50", "13:00", "13:10"]
    );
    assert_eq!(after_outage(CatchUp::All, 3, None, 4).await, ["12:40", "12:50", "13:00", "13:10"]);
    let deadline = Some(Duration::from_secs(25 * 60));
    assert_eq!(after_outage(CatchUp::All, 10, deadline, 3).await, ["12:50", "13:00", "13:10"]);
}

#[tokio::test(start_paused = true)]
async fn forbid_skips_a_tick_while_the_previous_runs() {
    let state = Arc::new(MemoryState::default());
    let mut c = config("forbid", "* * * * * *");
    c.concurrency_policy = ConcurrencyPolicy::Forbid;
    let mut r = start(c, "2026-01-01T00:00:00Z", &state);
    let mut first = r.next().await; // still running: its ack is held
    assert!(first.skip.is_none());
    let second = r.next().await;
    assert_eq!(second.skip.as_deref(), Some("previous invocation still running"));
    assert_eq!(second.event.id, "forbid:2026-01-01T00:00:02Z");
    first.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    tokio::task::yield_now().await;
    let third = r.next().await;
    assert!(third.skip.is_none(), "the previous invocation finished, so the next tick runs");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replace_cancels_the_running_invocation() {
    let state = Arc::new(MemoryState::default());
    let mut c = config("replace", "* * * * * *");
    c.concurrency_policy = ConcurrencyPolicy::Replace;
    let mut r = start(c, "2026-01-01T00:00:00Z", &state);
    let first = r.next().await;
    let first_cancel = first.cancel.clone().expect("replace attaches a cancel token");
    assert!(!first_cancel.is_cancelled());
    let mut second = r.next().await;
    assert!(first_cancel.is_cancelled(), "the running invocation is cancelled by the next tick");
    assert!(second.skip.is_none());
    let second_cancel = second.cancel.clone().unwrap();
    second.ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
    let _third = r.next().await;
    assert!(!second_cancel.is_cancelled(), "a finished invocation is not cancelled");
    drop(first);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn allow_runs_ticks_concurrently() {
    let state = Arc::new(MemoryState::default());
    let mut r = start(config("allow", "* * * * * *"), "2026-01-01T00:00:00Z", &state);
    let a = r.next().await;
    let b = r.next().await;
    assert!(a.skip.is_none() && b.skip.is_none() && b.cancel.is_none());
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn two_replicas_fire_each_tick_once() {
    let state = Arc::new(MemoryState::default());
    let a = start(config("shared", "* * * * * *"), "2026-01-01T00:00:00Z", &state);
    let b = start(config("shared", "* * * * * *"), "2026-01-01T00:00:00Z", &state);
    tokio::time::sleep(Duration::from_millis(10_200)).await;
    let mut ids = Vec::new();
    for r in [a, b] {
        let mut rx = r.stop().await;
        while let Ok(d) = rx.try_recv() {
            ids.push(d.event.id.clone());
        }
    }
    ids.sort();
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a tick fired twice: {ids:?}");
    assert_eq!(ids.len(), 10, "{ids:?}");
}

#[tokio::test(start_paused = true)]
async fn pause_resume_and_fire_now() {
    let state = Arc::new(MemoryState::default());
    let mut r = start(config("ops", "* * * * * *"), "2026-01-01T00:00:00Z", &state);
    r.next().await;
    let status = r.handle.pause().await.unwrap();
    assert!(status.paused);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(r.rx.try_recv().is_err(), "no ticks while paused");

    // Fire now works while paused, with the current instant and a distinct id.
    let fired = r.handle.fire_now().await.unwrap();
    assert_eq!(fired.outcome, "dispatched");
    let d = r.next().await;
    assert_eq!(d.event.id, fired.id);
    assert!(d.event.id.starts_with("ops:2026-01-01T00:00:06") && d.event.id.contains(":manual-"), "{}", d.event.id);
    assert_eq!(time_of(&d), fired.time);

    // The pause survives a restart.
    let rx = r.stop().await;
    drop(rx);
    let mut r = start(config("ops", "* * * * * *"), "2026-01-01T00:00:10Z", &state);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(r.handle.status().paused);
    assert!(r.rx.try_recv().is_err(), "still paused after the restart");

    // Resumed: the next tick fires; the paused ones are not caught up.
    assert!(!r.handle.resume().await.unwrap().paused);
    let d = r.next().await;
    assert_eq!(d.event.id, "ops:2026-01-01T00:00:14Z");
    assert_eq!(r.handle.next(2), [utc("2026-01-01T00:00:15Z"), utc("2026-01-01T00:00:16Z")]);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn text_payload_and_stopped_source() {
    let state = Arc::new(MemoryState::default());
    let mut c = config("text", "@hourly");
    c.data = Some(serde_json::json!("ping"));
    c.content_type = Some("text/plain".into());
    let mut r = start(c, "2026-01-01T00:59:59Z", &state);
    let d = r.next().await;
    assert_eq!(d.event.datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(d.event.data, Some(switchyard_schemas::Data::Text("ping".into())));
    let handle = r.handle.clone();
    r.stop().await;
    assert!(!handle.status().running);
    assert!(matches!(handle.pause().await, Err(switchyard_connectors::cron::CronOpError::NotRunning { .. })));
}
