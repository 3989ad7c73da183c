//! The pipeline's time-based behaviour, driven with explicit times (no sleeps): group_wait,
//! group_interval, repeat_interval, resolves through silences and inhibition, escalation and
//! acknowledgement, maintenance windows, and restoring state after a restart.

use chrono::{DateTime, Duration, Utc};
use steward_alerting::{
    config::Compiled,
    model::{Labels, Notification, NotifyKind},
    mutes::{ApiMatcher, CompiledWindow, Maintenance, Silence},
    pipeline::{Ack, AlertDoc, Pipeline},
};
use steward_core::config::Config;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn secs(n: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(n)
}

const BASE: &str = r#"
[alerting.route]
receiver = "team"
group_by = ["alertname"]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"
[[alerting.route.routes]]
matchers = ['severity="page"']
receiver = "oncall"
[[alerting.receivers]]
name = "team"
channels = ["hook"]
[[alerting.receivers]]
name = "oncall"
channels = ["slack"]
escalation = [{ after = "10m", channels = ["pd"] }]
[[alerting.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/"
[[alerting.channels]]
name = "slack"
type = "webhook"
url = "http://127.0.0.1:9/"
[[alerting.channels]]
name = "pd"
type = "webhook"
url = "http://127.0.0.1:9/"
[[alerting.inhibit_rules]]
source_matchers = ['alertname="DatabaseDown"']
target_matchers = ['tier="app"']
equal = ["cluster"]
"#;

fn pipeline(extra: &str) -> Pipeline {
    let cfg = Config::parse(&format!("{BASE}{extra}"), "steward.toml").unwrap();
    Pipeline::new(Compiled::compile(&cfg.alerting).unwrap())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alert(pairs: &[(&str, &str)], at: DateTime<Utc>) -> AlertDoc {
    AlertDoc {
        labels: labels(pairs).into(),
        annotations: Default::default(),
        starts_at: at,
        ends_at: None,
        generator_url: String::new(),
        updated_at: at,
        fire_at: None,
        source: "api".into(),
    }
}

fn fire(p: &mut Pipeline, pairs: &[(&str, &str)], at: DateTime<Utc>) -> String {
    p.upsert(alert(pairs, at), at, Duration::zero()).0
}

fn eval(p: &mut Pipeline, at: DateTime<Utc>) -> Vec<Notification> {
    p.evaluate(at).notifications
}

fn summary(ns: &[Notification]) -> Vec<(String, String, usize)> {
    ns.iter()
        .map(|n| (n.channel.clone(), n.status.clone(), n.alerts.len()))
        .collect()
}

#[test]
fn group_wait_batches_then_group_interval_spaces_updates() {
    let mut p = pipeline("");
    fire(
        &mut p,
        &[("alertname", "HighLatency"), ("instance", "a")],
        secs(0),
    );
    fire(
        &mut p,
        &[("alertname", "HighLatency"), ("instance", "b")],
        secs(10),
    );
    assert!(
        eval(&mut p, secs(29)).is_empty(),
        "group_wait holds the first notification"
    );
    let n = eval(&mut p, secs(30));
    assert_eq!(
        summary(&n),
        [("hook".into(), "firing".into(), 2)],
        "both in one"
    );
    assert_eq!(n[0].group_labels, labels(&[("alertname", "HighLatency")]));
    // A new alert in the group waits for the next group_interval.
    fire(
        &mut p,
        &[("alertname", "HighLatency"), ("instance", "c")],
        secs(40),
    );
    assert!(eval(&mut p, secs(60)).is_empty());
    assert!(eval(&mut p, secs(329)).is_empty());
    let n = eval(&mut p, secs(330));
    assert_eq!(summary(&n), [("hook".into(), "firing".into(), 3)]);
    // Nothing new: no notification at the next interval.
    assert!(eval(&mut p, secs(630)).is_empty());
}

#[test]
fn repeat_interval_reminds_and_resolve_is_sent() {
    let mut p = pipeline("");
    let fp = fire(&mut p, &[("alertname", "DiskFull")], secs(0));
    assert_eq!(eval(&mut p, secs(30)).len(), 1);
    let mut t = 30;
    let mut reminders = 0;
    while t < 4 * 3600 + 330 {
        t += 300;
        reminders += eval(&mut p, secs(t)).len();
    }
    assert_eq!(reminders, 1, "one reminder after 4h");
    assert!(p.resolve(&fp, secs(t)));
    let n = eval(&mut p, secs(t + 300));
    assert_eq!(summary(&n), [("hook".into(), "resolved".into(), 1)]);
    assert_eq!(n[0].kind, NotifyKind::Resolved);
    assert_eq!(
        p.alert_count(),
        0,
        "resolved and notified alerts are collected"
    );
    assert_eq!(p.group_count(), 0);
}

#[test]
fn an_alert_resolved_before_its_group_waited_is_never_sent() {
    let mut p = pipeline("");
    let fp = fire(&mut p, &[("alertname", "Blip")], secs(0));
    p.resolve(&fp, secs(5));
    assert!(eval(&mut p, secs(30)).is_empty());
    assert_eq!(p.group_count(), 0);
}

fn silence(id: &str, name: &str, value: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Silence {
    Silence {
        id: id.into(),
        matchers: vec![ApiMatcher {
            name: name.into(),
            value: value.into(),
            is_regex: false,
            is_equal: true,
        }],
        starts_at: from,
        ends_at: to,
        created_by: "test".into(),
        comment: "test".into(),
        updated_at: from,
    }
}

#[test]
fn a_silence_mutes_new_notifications_but_lets_the_resolve_through() {
    let mut p = pipeline("");
    let fp = fire(
        &mut p,
        &[("alertname", "DiskFull"), ("host", "db1")],
        secs(0),
    );
    assert_eq!(eval(&mut p, secs(30)).len(), 1, "firing went out");
    p.set_silence(silence("s1", "host", "db1", secs(40), secs(86_400)))
        .unwrap();
    // Reminders are muted while silenced.
    for k in 1..60 {
        assert!(eval(&mut p, secs(30 + 300 * k)).is_empty());
    }
    // A new alert matching the silence is never announced.
    fire(
        &mut p,
        &[("alertname", "DiskFull"), ("host", "db1"), ("disk", "2")],
        secs(18_100),
    );
    assert!(eval(&mut p, secs(18_330)).is_empty());
    // The resolve of the alert that was announced goes out (alertmanager#226).
    p.resolve(&fp, secs(18_400));
    let n = eval(&mut p, secs(18_630));
    assert_eq!(n.len(), 1);
    assert_eq!(
        n[0].alerts.len(),
        1,
        "only the announced alert: {:?}",
        n[0].alerts
    );
    assert_eq!(n[0].alerts[0].status, "resolved");
    assert_eq!(n[0].status, "resolved");
}

#[test]
fn inhibition_suppresses_dependents_but_not_their_resolves() {
    let mut p = pipeline("");
    let app = fire(
        &mut p,
        &[("alertname", "AppSlow"), ("tier", "app"), ("cluster", "a")],
        secs(0),
    );
    assert_eq!(eval(&mut p, secs(30)).len(), 1);
    // The database goes down: the database alert is sent, a new app alert is not.
    fire(
        &mut p,
        &[("alertname", "DatabaseDown"), ("cluster", "a")],
        secs(40),
    );
    fire(
        &mut p,
        &[
            ("alertname", "AppErrors"),
            ("tier", "app"),
            ("cluster", "a"),
        ],
        secs(40),
    );
    fire(
        &mut p,
        &[
            ("alertname", "AppErrors"),
            ("tier", "app"),
            ("cluster", "b"),
        ],
        secs(40),
    );
    let n = eval(&mut p, secs(70));
    let names: Vec<_> = n
        .iter()
        .flat_map(|n| {
            n.alerts
                .iter()
                .map(|a| format!("{}/{}", a.labels["alertname"], a.labels["cluster"]))
        })
        .collect();
    assert!(names.contains(&"DatabaseDown/a".to_string()), "{names:?}");
    assert!(
        names.contains(&"AppErrors/b".to_string()),
        "other cluster is not inhibited: {names:?}"
    );
    assert!(
        !names.contains(&"AppErrors/a".to_string()),
        "inhibited: {names:?}"
    );
    let info = p.info_of(&app, secs(70)).unwrap();
    assert_eq!(info.mute.inhibited_by.len(), 1);
    // The app alert that was announced before resolves: its resolve is sent.
    p.resolve(&app, secs(100));
    let n = eval(&mut p, secs(330));
    let resolved: Vec<_> = n
        .iter()
        .flat_map(|n| n.alerts.iter().filter(|a| a.status == "resolved"))
        .map(|a| a.labels["alertname"].clone())
        .collect();
    assert_eq!(resolved, ["AppSlow"]);
}

#[test]
fn escalation_goes_to_the_next_step_unless_acknowledged() {
    let mut p = pipeline("");
    fire(
        &mut p,
        &[("alertname", "Down"), ("severity", "page")],
        secs(0),
    );
    let n = eval(&mut p, secs(30));
    assert_eq!(summary(&n), [("slack".into(), "firing".into(), 1)]);
    assert!(eval(&mut p, secs(629)).is_empty());
    let n = eval(&mut p, secs(630));
    assert_eq!(
        summary(&n),
        [("pd".into(), "firing".into(), 1)],
        "after 10m"
    );
    // Later notifications go to both steps.
    fire(
        &mut p,
        &[("alertname", "Down"), ("severity", "page"), ("x", "2")],
        secs(700),
    );
    let n = eval(&mut p, secs(930));
    let mut chans: Vec<_> = n.iter().map(|n| n.channel.clone()).collect();
    chans.sort();
    assert_eq!(chans, ["pd", "slack"]);

    // A second incident, acknowledged before the step: no escalation, no reminders.
    let mut p = pipeline("");
    let fp = fire(
        &mut p,
        &[("alertname", "Down"), ("severity", "page")],
        secs(0),
    );
    eval(&mut p, secs(30));
    let ack = Ack {
        by: "alice".into(),
        at: secs(60),
        comment: "looking".into(),
    };
    let f = p.ack(&fp, ack, secs(60));
    assert_eq!(
        summary(&f.notifications),
        [("slack".into(), "firing".into(), 1)]
    );
    assert_eq!(f.notifications[0].kind, NotifyKind::Acknowledged);
    for k in 1..100 {
        assert!(
            eval(&mut p, secs(30 + 300 * k)).is_empty(),
            "muted after ack"
        );
    }
    p.resolve(&fp, secs(30_100));
    let n = eval(&mut p, secs(30_330));
    assert_eq!(
        summary(&n),
        [("slack".into(), "resolved".into(), 1)],
        "resolve still sent"
    );
}

#[test]
fn dedup_keys_are_stable_per_group_and_receiver() {
    let mut p = pipeline("");
    fire(&mut p, &[("alertname", "A"), ("i", "1")], secs(0));
    let first = eval(&mut p, secs(30))[0].dedup_key.clone();
    fire(&mut p, &[("alertname", "A"), ("i", "2")], secs(40));
    let second = eval(&mut p, secs(330))[0].dedup_key.clone();
    assert_eq!(first, second);
    assert_eq!(first.len(), 32);
    fire(&mut p, &[("alertname", "B")], secs(400));
    let other = eval(&mut p, secs(430))[0].dedup_key.clone();
    assert_ne!(first, other);
}

#[test]
fn maintenance_windows_mute_while_open_and_release_afterwards() {
    let mut p = pipeline(
        r#"
[[alerting.maintenance]]
name = "nightly"
cron = "0 2 * * *"
duration = "1h"
timezone = "UTC"
matchers = ['service="db"']
"#,
    );
    let night = DateTime::parse_from_rfc3339("2026-12-02T02:10:00Z")
        .unwrap()
        .with_timezone(&Utc);
    fire(&mut p, &[("alertname", "Slow"), ("service", "db")], night);
    fire(&mut p, &[("alertname", "Other"), ("service", "web")], night);
    let n = eval(&mut p, night + Duration::seconds(30));
    let names: Vec<_> = n
        .iter()
        .map(|n| n.alerts[0].labels["alertname"].clone())
        .collect();
    assert_eq!(
        names,
        ["Other"],
        "the db alert waits for the window to close"
    );
    // After 03:00 the db alert is announced at its next flush.
    let n = eval(&mut p, night + Duration::minutes(55));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].alerts[0].labels["alertname"], "Slow");

    // A one-off window opened by a deploy and closed early.
    let mut p = pipeline("");
    let w = CompiledWindow::compile(
        Maintenance {
            id: "deploy-1".into(),
            name: "deploy".into(),
            matchers: vec!["service=\"api\"".into()],
            starts_at: Some(secs(0)),
            ends_at: Some(secs(3600)),
            cron: None,
            duration_secs: None,
            timezone: None,
            comment: "deploy".into(),
            created_by: "ci".into(),
            public: false,
        },
        "w",
    )
    .unwrap();
    p.set_window(w);
    fire(
        &mut p,
        &[("alertname", "Errors"), ("service", "api")],
        secs(10),
    );
    assert!(eval(&mut p, secs(40)).is_empty());
    assert!(p.remove_window("deploy-1"));
    assert_eq!(eval(&mut p, secs(340)).len(), 1);
}

#[test]
fn state_survives_a_restart_without_repeating_notifications() {
    let mut p = pipeline("");
    let a = alert(&[("alertname", "Disk")], secs(0));
    let (fp, _) = p.upsert(a.clone(), secs(0), Duration::zero());
    let f = p.evaluate(secs(30));
    assert_eq!(f.notifications.len(), 1);
    let groups = f.groups_put.clone();
    // A new process restores the stored groups and alerts: no second firing notification.
    let mut q = pipeline("");
    q.restore(
        groups,
        vec![(fp.clone(), p.get(&fp).unwrap().clone())],
        secs(60),
    );
    assert!(q.evaluate(secs(330)).notifications.is_empty());
    q.resolve(&fp, secs(400));
    let n = q.evaluate(secs(630)).notifications;
    assert_eq!(summary(&n), [("hook".into(), "resolved".into(), 1)]);
}

#[test]
fn a_failed_store_write_is_undone_and_evaluated_again() {
    let mut p = pipeline("");
    fire(&mut p, &[("alertname", "Disk")], secs(0));
    let f = p.evaluate(secs(30));
    assert_eq!(f.notifications.len(), 1);
    p.undo(f, secs(30));
    assert_eq!(
        p.evaluate(secs(31)).notifications.len(),
        1,
        "produced again"
    );
}

#[test]
fn config_mistakes_name_the_key() {
    let bad = |extra: &str| {
        let cfg = Config::parse(&format!("{BASE}{extra}"), "steward.toml").unwrap();
        Compiled::compile(&cfg.alerting).unwrap_err()
    };
    let e = bad("[[alerting.receivers]]\nname = \"x\"\nchannels = [\"nope\"]\n");
    assert_eq!(e.key, "alerting.receivers[2].channels");
    let e = bad("[[alerting.inhibit_rules]]\nsource_matchers = ['a=~\"(\"']\ntarget_matchers = ['b=\"c\"']\n");
    assert_eq!(e.key, "alerting.inhibit_rules[1].source_matchers");
    let e = bad("[[alerting.maintenance]]\nname = \"m\"\ncron = \"0 2 * * *\"\nduration = \"1h\"\ntimezone = \"Nowhere/City\"\n");
    assert_eq!(e.key, "alerting.maintenance[0].timezone");
}

#[test]
fn an_alert_that_fires_again_after_its_resolve_was_sent_is_notified_again() {
    // Two groups hold the alert: the fast one sends the resolve and lets go of the alert;
    // the slow one still owes its resolve, so the alert stays in memory. Firing again then
    // must bring it back into the fast group.
    let mut p = pipeline(
        r#"
[[alerting.route.routes]]
matchers = ['team="x"']
receiver = "team"
group_wait = "10s"
group_interval = "1m"
continue = true
[[alerting.route.routes]]
matchers = ['team="x"']
receiver = "oncall"
group_wait = "10s"
group_interval = "1h"
"#,
    );
    let pairs = [("alertname", "Flappy"), ("team", "x")];
    let fp = fire(&mut p, &pairs, secs(0));
    let n = eval(&mut p, secs(10));
    let mut chans: Vec<_> = n.iter().map(|n| n.channel.clone()).collect();
    chans.sort();
    assert_eq!(chans, ["hook", "slack"], "both groups announce it");
    p.resolve(&fp, secs(20));
    let n = eval(&mut p, secs(70));
    assert_eq!(
        summary(&n),
        [("hook".into(), "resolved".into(), 1)],
        "fast group only"
    );
    assert!(
        p.get(&fp).is_some(),
        "the slow group still owes its resolve"
    );
    fire(&mut p, &pairs, secs(80));
    let n = eval(&mut p, secs(130));
    assert_eq!(
        summary(&n),
        [("hook".into(), "firing".into(), 1)],
        "the fast group announces it again"
    );
}

#[test]
fn change_events_go_once_to_the_receivers_their_labels_route_to() {
    let mut p = pipeline("");
    let n = p.change(
        labels(&[
            ("alertname", "SecretRotated"),
            ("severity", "page"),
            ("env", "prod"),
        ]),
        "prod/db/app rotated".into(),
        secs(0),
    );
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].kind, NotifyKind::Change);
    assert_eq!(n[0].channel, "slack", "the oncall route's first step");
    assert_eq!(n[0].summary.as_deref(), Some("prod/db/app rotated"));
    assert_eq!(p.group_count(), 0, "a change is not an incident: no group");
    assert!(eval(&mut p, secs(600)).is_empty());
}
