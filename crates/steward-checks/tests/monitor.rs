//! The monitor end to end with a scripted probe and a manual clock: state changes raise and
//! resolve the check's alert, results are stored, roll-ups equal the stored results (also
//! after a restart), heartbeats, dependencies inhibit, pruning.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use steward_alerting::Alerting;
use steward_checks::{
    config::{Check, Runner},
    state::Health,
    Compiled, Monitor,
};
use steward_core::{Clock, ManualClock};
use steward_probes::{Outcome, Probe, SecretSource};
use steward_secrets::{Engine, RequestCtx};

/// A probe whose next outcomes the test decides: `(status, latency ms)`.
struct Scripted(Mutex<Vec<(u16, u64)>>);

#[async_trait]
impl Probe for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn default_condition(&self) -> &'static str {
        "status == 200"
    }
    fn facts(&self) -> &'static [&'static str] {
        &["status", "response_time"]
    }
    async fn run(&self, _: &dyn SecretSource, _: Duration) -> Outcome {
        let (status, ms) = self.0.lock().unwrap().pop().unwrap_or((200, 1));
        let mut o = Outcome::default();
        o.facts.insert("status", f64::from(status));
        o.facts.insert("response_time", Duration::from_millis(ms));
        o
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn check(name: &str, probe: Arc<dyn Probe>, deps: &[&str]) -> Check {
    Check {
        name: name.into(),
        kind: "scripted".into(),
        runner: Runner::Probe(probe),
        interval: Duration::from_secs(10),
        jitter: 0.0,
        timeout: Duration::from_secs(5),
        condition: steward_expr::parse("status == 200 && response_time < 500ms").unwrap(),
        fail_after: 2,
        recover_after: 2,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        labels: BTreeMap::from([("team".to_string(), "api".to_string())]),
        status_page: None,
    }
}

struct World {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    engine: Arc<Engine>,
    alerting: Arc<Alerting>,
    ctx: RequestCtx,
    token: String,
}

impl World {
    fn ctx_token(&self) -> Option<String> {
        Some(self.token.clone())
    }
}

async fn world(dir: tempfile::TempDir, compiled: &Compiled) -> World {
    let clock = ManualClock::new(t0());
    let (engine, token) = steward_test_utils::engine(dir.path(), clock.clone()).await;
    let cfg = steward_core::alerting::AlertingConfig {
        inhibit_rules: compiled.inhibit_rules(),
        ..Default::default()
    };
    let alerting = Alerting::new(engine.clone(), &cfg).unwrap();
    alerting.load().await.unwrap();
    World {
        _dir: dir,
        clock,
        engine,
        alerting,
        ctx: RequestCtx::new("test".into(), Some(token.clone()), None),
        token,
    }
}

fn compiled(checks: Vec<Check>) -> Compiled {
    Compiled {
        checks,
        slos: Vec::new(),
        concurrency: 4,
        raw_retention: Duration::from_secs(48 * 3600),
        rollup_retention: Duration::from_secs(400 * 86_400),
    }
}

/// Lets spawned alert updates finish.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn state_changes_raise_and_resolve_the_checks_alert() {
    // Outcomes are popped from the end: first run 200, then two 500s, then two 200s.
    let probe = Arc::new(Scripted(Mutex::new(vec![
        (200, 3),
        (200, 2),
        (500, 4),
        (500, 5),
        (200, 1),
    ])));
    let c = compiled(vec![check("api", probe, &[])]);
    let w = world(tempfile::tempdir().unwrap(), &c).await;
    let m = Monitor::new(w.engine.clone(), Some(w.alerting.clone()), c);

    let run = m.run_check(0).await;
    assert!(run.ok, "{run:?}");
    assert_eq!(m.infos()[0].health, Health::Up);

    w.clock.advance(chrono::Duration::seconds(10));
    let run = m.run_check(0).await;
    assert!(!run.ok);
    let err = run.error.clone().unwrap();
    assert!(
        err.contains("status=500"),
        "the failure names the facts: {err}"
    );
    assert_eq!(m.infos()[0].health, Health::Up, "fail_after = 2");

    w.clock.advance(chrono::Duration::seconds(10));
    m.run_check(0).await;
    assert_eq!(m.infos()[0].health, Health::Down);
    settle().await;
    let alerts = w
        .alerting
        .alerts(&w.ctx, &["alertname=\"CheckDown\"".into()])
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0].doc.labels.get("check").map(String::as_str),
        Some("api")
    );
    assert_eq!(
        alerts[0].doc.labels.get("team").map(String::as_str),
        Some("api")
    );
    assert_eq!(alerts[0].state, steward_alerting::model::AlertState::Firing);

    for _ in 0..2 {
        w.clock.advance(chrono::Duration::seconds(10));
        m.run_check(0).await;
    }
    assert_eq!(m.infos()[0].health, Health::Up, "recover_after = 2");
    settle().await;
    let alerts = w
        .alerting
        .alerts(&w.ctx, &["alertname=\"CheckDown\"".into()])
        .await
        .unwrap();
    assert!(
        alerts
            .iter()
            .all(|a| a.state == steward_alerting::model::AlertState::Resolved),
        "{alerts:?}"
    );
    let s = m.stats();
    assert_eq!((s.runs, s.failures), (5, 2));
}

#[tokio::test]
async fn roll_ups_equal_the_stored_results_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // 12 runs a minute apart... outcomes popped from the end.
    let script: Vec<(u16, u64)> = (0..12)
        .map(|i| (if i % 4 == 0 { 500 } else { 200 }, 10 + i))
        .collect();
    let probe = Arc::new(Scripted(Mutex::new(script.clone())));
    let c = compiled(vec![check("api", probe, &[])]);
    let w = world(dir, &c).await;
    let m = Monitor::new(w.engine.clone(), None, c.clone());
    // The first roll-up only sets the watermark.
    assert_eq!(m.roll_up(w.clock.now()).await.unwrap(), 0);
    for _ in 0..12 {
        m.run_check(0).await;
        w.clock.advance(chrono::Duration::seconds(20));
    }
    // 12 runs over 4 minutes; roll up everything before the current minute.
    let rolled = m.roll_up(w.clock.now()).await.unwrap();
    assert_eq!(rolled, 12);
    let (_, latest, hours) = m.show(&w.ctx, "api", "hour", 2).await.unwrap();
    assert_eq!(latest.len(), 12);
    let hour = hours.last().expect("an hour bucket");
    assert_eq!(hour.runs, 12);
    assert_eq!(hour.up, 9, "every fourth run returned 500");
    let (_, _, minutes) = m.show(&w.ctx, "api", "minute", 10).await.unwrap();
    assert_eq!(minutes.iter().map(|r| r.runs).sum::<u64>(), 12);
    assert_eq!(minutes.len(), 4);
    // A second roll-up in the same minute adds nothing (the watermark moved).
    assert_eq!(m.roll_up(w.clock.now()).await.unwrap(), 0);

    // Restart: a new monitor on the same store sees the same roll-ups, and goes on.
    drop(m);
    let engine = w.engine.clone();
    let m2 = Monitor::new(engine, None, c);
    let (_, _, hours2) = m2.show(&w.ctx, "api", "hour", 2).await.unwrap();
    assert_eq!(hours2.last().unwrap().runs, 12);
    m2.run_check(0).await;
    w.clock.advance(chrono::Duration::seconds(60));
    assert_eq!(m2.roll_up(w.clock.now()).await.unwrap(), 1);
    let (_, _, hours3) = m2.show(&w.ctx, "api", "hour", 2).await.unwrap();
    assert_eq!(hours3.iter().map(|r| r.runs).sum::<u64>(), 13);
}

#[tokio::test]
async fn heartbeats_go_down_when_late_and_up_on_a_beat() {
    let hb = Check {
        name: "nightly".into(),
        kind: "heartbeat".into(),
        runner: Runner::Heartbeat {
            grace: Duration::from_secs(60),
        },
        interval: Duration::from_secs(30),
        jitter: 0.0,
        timeout: Duration::from_secs(5),
        condition: steward_expr::parse("since_last_beat <= 0s").unwrap(),
        fail_after: 1,
        recover_after: 1,
        depends_on: vec![],
        labels: BTreeMap::new(),
        status_page: None,
    };
    let c = compiled(vec![hb]);
    let w = world(tempfile::tempdir().unwrap(), &c).await;
    let m = Monitor::new(w.engine.clone(), Some(w.alerting.clone()), c.clone());
    let run = m.run_check(0).await;
    assert!(!run.ok, "no beat yet");
    m.beat(&w.ctx, "nightly", true, None).await.unwrap();
    assert_eq!(m.infos()[0].health, Health::Up);
    w.clock.advance(chrono::Duration::seconds(50));
    assert!(m.run_check(0).await.ok, "within grace");
    w.clock.advance(chrono::Duration::seconds(20));
    let run = m.run_check(0).await;
    assert!(!run.ok, "70 s after the beat, grace 60 s");
    assert!(run.error.clone().unwrap().contains("no beat since"));
    assert_eq!(m.infos()[0].health, Health::Down);
    // A failed job reports at once; a beat for a check that is not a heartbeat is refused.
    m.beat(&w.ctx, "nightly", true, None).await.unwrap();
    assert_eq!(m.infos()[0].health, Health::Up);
    m.beat(&w.ctx, "nightly", false, Some("exit 3".into()))
        .await
        .unwrap();
    assert_eq!(m.infos()[0].health, Health::Down);
    assert!(m.beat(&w.ctx, "nope", true, None).await.is_err());
    // After a restart the last good beat is known again.
    m.beat(&w.ctx, "nightly", true, None).await.unwrap();
    m.flush().await.unwrap();
    let m2 = Monitor::new(w.engine.clone(), None, c);
    m2.load().await.unwrap();
    w.clock.advance(chrono::Duration::seconds(30));
    assert!(
        m2.run_check(0).await.ok,
        "the beat before the restart counts"
    );
}

#[tokio::test]
async fn a_down_dependency_inhibits_the_dependents_alert() {
    let db = Arc::new(Scripted(Mutex::new(vec![(500, 1); 4])));
    let api = Arc::new(Scripted(Mutex::new(vec![(500, 1); 4])));
    let c = compiled(vec![check("db", db, &[]), check("api", api, &["db"])]);
    let w = world(tempfile::tempdir().unwrap(), &c).await;
    let m = Monitor::new(w.engine.clone(), Some(w.alerting.clone()), c);
    for _ in 0..2 {
        m.run_check(0).await;
        m.run_check(1).await;
        w.clock.advance(chrono::Duration::seconds(10));
    }
    settle().await;
    let alerts = w
        .alerting
        .alerts(&w.ctx, &["alertname=\"CheckDown\"".into()])
        .await
        .unwrap();
    assert_eq!(alerts.len(), 2);
    let api = alerts
        .iter()
        .find(|a| a.doc.labels.get("check").map(String::as_str) == Some("api"))
        .unwrap();
    assert!(
        !api.mute.inhibited_by.is_empty(),
        "api's alert is inhibited by db's: {api:?}"
    );
    let db = alerts
        .iter()
        .find(|a| a.doc.labels.get("check").map(String::as_str) == Some("db"))
        .unwrap();
    assert!(db.mute.inhibited_by.is_empty());
}

#[tokio::test]
async fn pruning_drops_old_raw_results() {
    let probe = Arc::new(Scripted(Mutex::new(vec![])));
    let c = compiled(vec![check("api", probe, &[])]);
    let w = world(tempfile::tempdir().unwrap(), &c).await;
    let m = Monitor::new(w.engine.clone(), None, c);
    m.run_check(0).await;
    m.flush().await.unwrap();
    w.clock.advance(chrono::Duration::hours(47));
    m.run_check(0).await;
    m.flush().await.unwrap();
    w.clock.advance(chrono::Duration::hours(2));
    m.prune(w.clock.now()).await.unwrap();
    let (_, latest, _) = m.show(&w.ctx, "api", "hour", 1).await.unwrap();
    assert_eq!(
        latest.len(),
        1,
        "the run 49 h ago is gone, the one 2 h ago stays"
    );
}

#[tokio::test]
async fn slo_burn_rate_alerts_fire_on_both_windows_and_resolve_on_the_short_one() {
    // 50 good runs, then 10 failures, then 40 good runs (outcomes pop from the end).
    let mut script: Vec<(u16, u64)> = Vec::new();
    script.extend(std::iter::repeat_n((200, 5), 40));
    script.extend(std::iter::repeat_n((500, 5), 10));
    script.extend(std::iter::repeat_n((200, 5), 50));
    let probe = Arc::new(Scripted(Mutex::new(script)));
    let mut c = compiled(vec![check("api", probe, &[])]);
    c.slos = steward_checks::slo::compile(
        &[steward_core::monitoring::SloConfig {
            name: "api-availability".into(),
            checks: vec!["api".into()],
            objective: toml::Value::String("99.9%".into()),
            window: None,
            alerts: true,
        }],
        &["api".to_string()],
    )
    .unwrap();
    let w = world(tempfile::tempdir().unwrap(), &c).await;
    let m = Monitor::new(w.engine.clone(), Some(w.alerting.clone()), c);
    m.roll_up(w.clock.now()).await.unwrap();
    let burning = |w: &World| {
        let w_alerting = w.alerting.clone();
        let ctx = RequestCtx::new("t".into(), w.ctx_token(), None);
        async move {
            let mut v: Vec<String> = w_alerting
                .alerts(&ctx, &["alertname=\"SLOBurnRate\"".into()])
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.state == steward_alerting::model::AlertState::Firing)
                .map(|a| a.doc.labels["speed"].clone())
                .collect();
            v.sort();
            v
        }
    };
    for _ in 0..50 {
        m.run_check(0).await;
        w.clock.advance(chrono::Duration::seconds(10));
    }
    let st = m.evaluate_slos(w.clock.now()).await.unwrap();
    assert!(st[0].burning.is_empty(), "all good so far: {st:?}");
    for _ in 0..10 {
        m.run_check(0).await;
        w.clock.advance(chrono::Duration::seconds(10));
    }
    let st = m.evaluate_slos(w.clock.now()).await.unwrap();
    assert_eq!(
        st[0].burning,
        vec!["fast".to_string(), "slow".to_string()],
        "{st:?}"
    );
    assert_eq!(burning(&w).await, vec!["fast", "slow"]);
    // Recovery: once five minutes are clean the fast rule stops; the slow one (30 min short
    // window) still sees the failures.
    for _ in 0..40 {
        m.run_check(0).await;
        w.clock.advance(chrono::Duration::seconds(10));
    }
    let st = m.evaluate_slos(w.clock.now()).await.unwrap();
    assert_eq!(st[0].burning, vec!["slow".to_string()], "{st:?}");
    assert_eq!(burning(&w).await, vec!["slow"]);
    // The budget over 30 days: 10 bad runs of 100 against a 0.1% budget is overspent.
    m.roll_up(w.clock.now() + chrono::Duration::minutes(2))
        .await
        .unwrap();
    let st = m.slo_statuses(w.clock.now()).await.unwrap();
    assert!(st[0].runs >= 90, "{st:?}");
    assert!(st[0].budget_left < 0.0, "{st:?}");
    assert!((st[0].attained.unwrap() - 0.9).abs() < 0.02, "{st:?}");
}
