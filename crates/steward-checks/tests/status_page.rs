//! The public status page's data with a scripted probe and a manual clock: incidents open
//! when a component's check goes down (its alert fires) and close when it recovers, survive
//! a restart without a duplicate, close at the first good run after a restart, are pruned
//! after the roll-up retention; public maintenance windows (config and API) are listed and
//! mark the components they cover, private ones never appear.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use steward_alerting::{service::MaintenanceRequest, Alerting};
use steward_checks::{
    config::{Check, Runner},
    incidents::{CLOSED, OPEN},
    state::Health,
    Compiled, Monitor, StatusPage,
};
use steward_core::{alerting::MaintenanceConfig, Clock, ManualClock};
use steward_probes::{Outcome, Probe, SecretSource};
use steward_secrets::{Engine, RequestCtx};

/// A probe that answers 200 while `up` is true and 500 otherwise.
struct Switch(Mutex<bool>);

impl Switch {
    fn set(&self, up: bool) {
        *self.0.lock().unwrap() = up;
    }
}

#[async_trait]
impl Probe for Switch {
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
        let up = *self.0.lock().unwrap();
        let mut o = Outcome::default();
        o.facts.insert("status", if up { 200.0 } else { 500.0 });
        o.facts.insert("response_time", Duration::from_millis(3));
        o
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn check(name: &str, probe: Arc<Switch>, component: Option<&str>) -> Check {
    Check {
        name: name.into(),
        kind: "scripted".into(),
        runner: Runner::Probe(probe),
        interval: Duration::from_secs(10),
        jitter: 0.0,
        timeout: Duration::from_secs(5),
        condition: steward_expr::parse("status == 200").unwrap(),
        fail_after: 2,
        recover_after: 2,
        depends_on: vec![],
        labels: BTreeMap::from([("service".to_string(), name.to_string())]),
        status_page: component.map(String::from),
    }
}

fn compiled(checks: Vec<Check>) -> Compiled {
    Compiled {
        checks,
        slos: Vec::new(),
        concurrency: 4,
        raw_retention: Duration::from_secs(48 * 3600),
        rollup_retention: Duration::from_secs(30 * 86_400),
    }
}

struct World {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    engine: Arc<Engine>,
    alerting: Arc<Alerting>,
    ctx: RequestCtx,
}

async fn world(windows: Vec<MaintenanceConfig>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let (engine, token) = steward_test_utils::engine(dir.path(), clock.clone()).await;
    let cfg = steward_core::alerting::AlertingConfig {
        maintenance: windows,
        ..Default::default()
    };
    let alerting = Alerting::new(engine.clone(), &cfg).unwrap();
    alerting.load().await.unwrap();
    World {
        _dir: dir,
        clock,
        engine,
        alerting,
        ctx: RequestCtx::new("test".into(), Some(token), None),
    }
}

impl World {
    async fn monitor(&self, c: &Compiled) -> Arc<Monitor> {
        let m = Monitor::new(self.engine.clone(), Some(self.alerting.clone()), c.clone());
        m.load().await.unwrap();
        m
    }

    async fn page(&self, m: &Monitor) -> StatusPage {
        m.status_page(self.clock.now(), 90).await.unwrap()
    }

    /// Runs check `i` `n` times, 10 s apart (the clock moves before each run).
    async fn runs(&self, m: &Monitor, i: usize, n: usize) {
        for _ in 0..n {
            self.clock.advance(ChronoDuration::seconds(10));
            m.run_check(i).await;
        }
    }

    async fn stored(&self, kind: &'static str) -> Vec<steward_store::RecordRow> {
        self.engine
            .store()
            .read(move |tx| tx.record_list(kind, "", 1000))
            .await
            .unwrap()
    }

    async fn firing_check_down(&self) -> usize {
        self.alerting
            .alerts(&self.ctx, &["alertname=\"CheckDown\"".into()])
            .await
            .unwrap()
            .iter()
            .filter(|a| a.state == steward_alerting::model::AlertState::Firing)
            .count()
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
async fn an_incident_opens_when_the_alert_fires_and_closes_when_it_resolves() {
    let probe = Arc::new(Switch(Mutex::new(true)));
    let c = compiled(vec![
        check("api-eu", probe.clone(), Some("Public API")),
        check("internal", Arc::new(Switch(Mutex::new(false))), None),
    ]);
    let w = world(vec![]).await;
    let m = w.monitor(&c).await;
    w.runs(&m, 0, 1).await;
    let p = w.page(&m).await;
    assert!(p.open_incidents.is_empty() && p.past_incidents.is_empty());
    assert_eq!(p.components.len(), 1, "only checks with status_page");

    probe.set(false);
    w.runs(&m, 0, 1).await;
    assert!(w.page(&m).await.open_incidents.is_empty(), "fail_after = 2");
    w.runs(&m, 0, 1).await;
    let down_at = w.clock.now();
    settle().await;
    assert_eq!(w.firing_check_down().await, 1, "the alert fired");
    let p = w.page(&m).await;
    assert_eq!(p.open_incidents.len(), 1, "{p:?}");
    assert_eq!(p.open_incidents[0].component, "Public API");
    assert_eq!(p.open_incidents[0].started_at, down_at);
    assert_eq!(p.components[0].health, Health::Down);
    assert_eq!(p.components[0].down_since, Some(down_at));
    let today = p.components[0].days.last().unwrap();
    assert_eq!(today.incidents, 1, "today's bar mentions it");
    // The internal check goes down too: no incident, it is not on the page.
    w.runs(&m, 1, 2).await;
    assert_eq!(w.page(&m).await.open_incidents.len(), 1);

    // Stored with the next flush, as the open incident of its component.
    m.flush().await.unwrap();
    let open = w.stored(OPEN).await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, "Public API");

    // More failures change nothing; two good runs recover, the alert resolves.
    w.runs(&m, 0, 3).await;
    probe.set(true);
    w.runs(&m, 0, 1).await;
    assert_eq!(
        w.page(&m).await.open_incidents.len(),
        1,
        "recover_after = 2"
    );
    w.runs(&m, 0, 1).await;
    let up_at = w.clock.now();
    settle().await;
    assert_eq!(
        w.firing_check_down().await,
        1,
        "only the internal check's alert"
    );
    let p = w.page(&m).await;
    assert!(p.open_incidents.is_empty(), "{p:?}");
    assert_eq!(p.past_incidents.len(), 1);
    assert_eq!(p.past_incidents[0].started_at, down_at);
    assert_eq!(p.past_incidents[0].ended_at, Some(up_at));
    assert_eq!(p.components[0].health, Health::Up);
    m.flush().await.unwrap();
    assert!(w.stored(OPEN).await.is_empty());
    let closed = w.stored(CLOSED).await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].due_at, Some(up_at));

    // A second outage is a second incident, listed first.
    probe.set(false);
    w.runs(&m, 0, 2).await;
    probe.set(true);
    w.runs(&m, 0, 2).await;
    let p = w.page(&m).await;
    assert_eq!(p.past_incidents.len(), 2);
    assert!(p.past_incidents[0].started_at > p.past_incidents[1].started_at);

    // Nothing internal on the page: no check names, labels or errors.
    let json = serde_json::to_string(&p).unwrap();
    for private in ["api-eu", "internal", "service", "status=500", "condition"] {
        assert!(!json.contains(private), "{private} leaked: {json}");
    }
}

#[tokio::test]
async fn a_restart_neither_duplicates_nor_loses_an_open_incident() {
    let probe = Arc::new(Switch(Mutex::new(false)));
    let c = compiled(vec![check("api", probe.clone(), Some("Public API"))]);
    let w = world(vec![]).await;
    let m = w.monitor(&c).await;
    w.runs(&m, 0, 2).await;
    let down_at = w.clock.now();
    assert_eq!(w.page(&m).await.open_incidents.len(), 1);
    m.flush().await.unwrap();
    drop(m);

    // Restart while still down: the incident is back, with its start, and the component
    // counts as down before any run.
    w.clock.advance(ChronoDuration::minutes(5));
    let m = w.monitor(&c).await;
    let p = w.page(&m).await;
    assert_eq!(p.open_incidents.len(), 1);
    assert_eq!(p.open_incidents[0].started_at, down_at);
    assert_eq!(p.components[0].health, Health::Down);
    assert_eq!(p.components[0].down_since, Some(down_at));
    // The check goes down again (unknown -> down): no second incident.
    w.runs(&m, 0, 2).await;
    assert_eq!(m.infos()[0].health, Health::Down);
    m.flush().await.unwrap();
    let p = w.page(&m).await;
    assert_eq!(p.open_incidents.len(), 1);
    assert_eq!(p.open_incidents[0].started_at, down_at, "the same incident");
    assert_eq!(w.stored(OPEN).await.len(), 1);
    assert!(w.stored(CLOSED).await.is_empty());
    drop(m);

    // Restart after it recovered: the first good run closes it (unknown -> up).
    probe.set(true);
    w.clock.advance(ChronoDuration::minutes(5));
    let m = w.monitor(&c).await;
    assert_eq!(w.page(&m).await.open_incidents.len(), 1);
    w.runs(&m, 0, 1).await;
    let up_at = w.clock.now();
    let p = w.page(&m).await;
    assert!(p.open_incidents.is_empty(), "{p:?}");
    assert_eq!(p.past_incidents.len(), 1);
    assert_eq!(
        (p.past_incidents[0].started_at, p.past_incidents[0].ended_at),
        (down_at, Some(up_at))
    );
    m.flush().await.unwrap();
    drop(m);

    // And the closed incident is still there after one more restart.
    let m = w.monitor(&c).await;
    let p = w.page(&m).await;
    assert!(p.open_incidents.is_empty());
    assert_eq!(p.past_incidents.len(), 1);
    assert_eq!(p.past_incidents[0].ended_at, Some(up_at));
    assert!(w.stored(OPEN).await.is_empty());
    assert_eq!(w.stored(CLOSED).await.len(), 1);
}

#[tokio::test]
async fn an_open_incident_of_a_check_taken_off_the_page_closes_at_load() {
    let probe = Arc::new(Switch(Mutex::new(false)));
    let c = compiled(vec![check("api", probe.clone(), Some("Public API"))]);
    let w = world(vec![]).await;
    let m = w.monitor(&c).await;
    w.runs(&m, 0, 2).await;
    m.flush().await.unwrap();
    drop(m);
    w.clock.advance(ChronoDuration::minutes(1));
    let moved = compiled(vec![check("api", probe, Some("Website"))]);
    let m = w.monitor(&moved).await;
    let p = w.page(&m).await;
    assert!(p.open_incidents.is_empty(), "{p:?}");
    assert_eq!(p.past_incidents.len(), 1);
    assert_eq!(p.past_incidents[0].component, "Public API");
    assert_eq!(p.past_incidents[0].ended_at, Some(w.clock.now()));
    assert!(w.stored(OPEN).await.is_empty(), "written at load");
}

#[tokio::test]
async fn closed_incidents_are_pruned_after_the_rollup_retention() {
    let probe = Arc::new(Switch(Mutex::new(false)));
    let other = Arc::new(Switch(Mutex::new(true)));
    let c = compiled(vec![
        check("api", probe.clone(), Some("Public API")),
        check("db", other.clone(), Some("Database")),
    ]);
    let w = world(vec![]).await;
    let m = w.monitor(&c).await;
    w.runs(&m, 0, 2).await;
    probe.set(true);
    w.runs(&m, 0, 2).await;
    m.flush().await.unwrap();
    assert_eq!(w.stored(CLOSED).await.len(), 1);

    // 20 days later the database goes down and stays down.
    w.clock.advance(ChronoDuration::days(20));
    other.set(false);
    w.runs(&m, 1, 2).await;
    m.flush().await.unwrap();

    // Retention is 30 days: at 29 days nothing goes; at 31 the closed one goes, the open stays.
    w.clock.advance(ChronoDuration::days(9));
    m.prune(w.clock.now()).await.unwrap();
    assert_eq!(w.stored(CLOSED).await.len(), 1);
    w.clock.advance(ChronoDuration::days(2));
    m.prune(w.clock.now()).await.unwrap();
    assert!(w.stored(CLOSED).await.is_empty());
    assert_eq!(
        w.stored(OPEN).await.len(),
        1,
        "open incidents are never pruned"
    );
    let p = w.page(&m).await;
    assert!(p.past_incidents.is_empty());
    assert_eq!(p.open_incidents.len(), 1);
    assert_eq!(p.open_incidents[0].component, "Database");
}

#[tokio::test]
async fn public_maintenance_is_listed_and_private_windows_never_are() {
    // A config window every day at 02:00 UTC, public; one at 03:00, private.
    let window = |name: &str, cron: &str, public: bool| MaintenanceConfig {
        name: name.into(),
        cron: cron.into(),
        duration: Duration::from_secs(3600),
        timezone: "UTC".into(),
        matchers: vec!["service=\"db\"".into()],
        comment: format!("{name} comment"),
        public,
    };
    let w = world(vec![
        window("nightly-vacuum", "0 2 * * *", true),
        window("secret-job", "0 3 * * *", false),
    ])
    .await;
    let api = Arc::new(Switch(Mutex::new(false)));
    let db = Arc::new(Switch(Mutex::new(true)));
    let c = compiled(vec![
        check("api", api.clone(), Some("Public API")),
        check("db", db.clone(), Some("Database")),
    ]);
    let m = w.monitor(&c).await;

    // Through the API: a public window on the API now, a private one now, a public one in
    // three days and one in ten days (past the 7-day horizon).
    let now = w.clock.now();
    let start = |name: &str, public: bool, starts_in: ChronoDuration| MaintenanceRequest {
        name: name.into(),
        matchers: vec!["service=\"api\"".into(), "team!=\"x\"".into()],
        starts_at: Some(now + starts_in),
        ends_at: Some(now + starts_in + ChronoDuration::minutes(30)),
        duration: None,
        cron: None,
        timezone: None,
        comment: format!("{name} comment"),
        public,
    };
    for (name, public, at) in [
        ("API deploy", true, ChronoDuration::zero()),
        ("private-now", false, ChronoDuration::zero()),
        ("API migration", true, ChronoDuration::days(3)),
        ("far-away", true, ChronoDuration::days(10)),
    ] {
        w.alerting
            .start_window(&w.ctx, start(name, public, at))
            .await
            .unwrap();
    }

    // The API goes down during its window: under maintenance, not an outage.
    w.runs(&m, 0, 2).await;
    w.runs(&m, 1, 1).await;
    let p = w.page(&m).await;
    let titles: Vec<&str> = p.maintenance.iter().map(|x| x.title.as_str()).collect();
    assert!(titles.contains(&"API deploy") && titles.contains(&"API migration"));
    assert!(titles.contains(&"nightly-vacuum"), "{titles:?}");
    assert_eq!(
        titles.iter().filter(|t| **t == "nightly-vacuum").count(),
        1,
        "a daily window once, with its next occurrence: {titles:?}"
    );
    for private in ["private-now", "secret-job", "far-away"] {
        assert!(
            !titles.contains(&private),
            "{private} is listed: {titles:?}"
        );
    }
    let deploy = p
        .maintenance
        .iter()
        .find(|x| x.title == "API deploy")
        .unwrap();
    assert!(deploy.in_progress);
    assert_eq!(deploy.components, vec!["Public API".to_string()]);
    assert_eq!(deploy.comment, "API deploy comment");
    let vacuum = p
        .maintenance
        .iter()
        .find(|x| x.title == "nightly-vacuum")
        .unwrap();
    assert!(!vacuum.in_progress && vacuum.recurring);
    assert_eq!(
        vacuum.starts_at,
        Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap()
    );
    assert!(!deploy.recurring);
    assert_eq!(vacuum.components, vec!["Database".to_string()]);
    assert!(p
        .maintenance
        .windows(2)
        .all(|x| x[0].starts_at <= x[1].starts_at));

    let api_c = p
        .components
        .iter()
        .find(|c| c.name == "Public API")
        .unwrap();
    assert!(api_c.maintenance, "{api_c:?}");
    assert_eq!(api_c.health, Health::Down);
    let db_c = p.components.iter().find(|c| c.name == "Database").unwrap();
    assert!(!db_c.maintenance);

    // Never matchers, authors, private windows' comments or check names.
    let json = serde_json::to_string(&p).unwrap();
    for private in [
        "service",
        "team!=",
        "root",
        "config",
        "private-now",
        "secret-job",
        "\"api\"",
    ] {
        assert!(!json.contains(private), "{private} leaked: {json}");
    }

    // At 02:30 the nightly window is in progress and covers the database.
    w.clock
        .set(Utc.with_ymd_and_hms(2026, 3, 2, 2, 30, 0).unwrap());
    let p = w.page(&m).await;
    let db_c = p.components.iter().find(|c| c.name == "Database").unwrap();
    assert!(db_c.maintenance);
    let api_c = p
        .components
        .iter()
        .find(|c| c.name == "Public API")
        .unwrap();
    assert!(!api_c.maintenance, "the API's window ended");
    assert!(p.maintenance[0].in_progress && p.maintenance[0].title == "nightly-vacuum");
    assert_eq!(p.maintenance.len(), 2, "the vacuum and the API migration");
}

#[tokio::test]
async fn without_alerting_there_is_no_maintenance_but_still_incidents() {
    let w = world(vec![]).await;
    let probe = Arc::new(Switch(Mutex::new(false)));
    let c = compiled(vec![check("api", probe, Some("Public API"))]);
    let m = Monitor::new(w.engine.clone(), None, c);
    m.load().await.unwrap();
    w.runs(&m, 0, 2).await;
    let p = w.page(&m).await;
    assert!(p.maintenance.is_empty());
    assert_eq!(p.open_incidents.len(), 1);
}
