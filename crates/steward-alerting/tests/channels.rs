//! The channels against local receivers that check every payload against the provider's
//! documented schema and limits (written out by hand below), and the email channel against a
//! real SMTP server (aiosmtpd, with STARTTLS required).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use async_trait::async_trait;
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use steward_alerting::{
    channels::{self, Channel, SecretSource, SendError},
    model::{fingerprint, zero_time, AlertView, Labels, Notification, NotifyKind},
};
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------------
// Secrets

struct MapSecrets(HashMap<String, String>);

impl MapSecrets {
    fn new(pairs: &[(&str, &str)]) -> Self {
        MapSecrets(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

#[async_trait]
impl SecretSource for MapSecrets {
    async fn resolve(&self, reference: &str) -> Result<Zeroizing<String>, String> {
        self.0
            .get(reference)
            .map(|v| Zeroizing::new(v.clone()))
            .ok_or_else(|| format!("no secret at {reference}"))
    }
}

// ---------------------------------------------------------------------------------------------
// A receiver that records requests and answers from a script

#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

impl Req {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.into(),
    }
}

#[derive(Clone)]
struct Shared {
    reqs: Arc<Mutex<Vec<Req>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Reply,
}

struct Receiver {
    addr: SocketAddr,
    shared: Shared,
}

async fn record(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.reqs.lock().unwrap().push(Req {
        method,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    let r = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.default.clone());
    let mut resp = (StatusCode::from_u16(r.status).unwrap(), r.body).into_response();
    for (k, v) in r.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

impl Receiver {
    async fn start(default: Reply) -> Self {
        let shared = Shared {
            reqs: Arc::default(),
            script: Arc::default(),
            default,
        };
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, shared }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn then(&self, r: Reply) {
        self.shared.script.lock().unwrap().push_back(r);
    }
    fn requests(&self) -> Vec<Req> {
        self.shared.reqs.lock().unwrap().clone()
    }
    fn last(&self) -> Req {
        self.requests().pop().expect("the receiver got a request")
    }
}

// ---------------------------------------------------------------------------------------------
// Notifications

const DEDUP: &str = "5f0c1a2b3c4d5e6f708192a3b4c5d6e7";
const EXTERNAL: &str = "https://steward.example/ui/alerts?group=5f0c";

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alert(i: usize, status: &str, summary: &str) -> AlertView {
    let l = labels(&[
        ("alertname", "HighLatency"),
        ("service", "api"),
        ("severity", "critical"),
        ("instance", &format!("api-{i}:9100")),
    ]);
    let resolved = status == "resolved";
    AlertView {
        status: status.into(),
        fingerprint: fingerprint(&l),
        labels: l.into(),
        annotations: labels(&[
            ("summary", summary),
            ("runbook_url", "https://runbooks.example/high-latency"),
        ])
        .into(),
        starts_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc),
        ends_at: if resolved { Utc::now() } else { zero_time() },
        generator_url: "https://prometheus.example/graph?g0.expr=latency".into(),
    }
}

fn firing(count: usize) -> Notification {
    let mut n = Notification::sample("ops", Utc::now());
    n.kind = NotifyKind::Firing;
    n.status = "firing".into();
    n.receiver = "ops-team".into();
    n.group_key = "{}/{service=\"api\"}:{alertname=\"HighLatency\"}".into();
    n.dedup_key = DEDUP.into();
    n.group_labels = labels(&[("alertname", "HighLatency"), ("service", "api")]);
    n.common_labels = labels(&[
        ("alertname", "HighLatency"),
        ("service", "api"),
        ("severity", "critical"),
    ]);
    n.common_annotations = labels(&[("runbook_url", "https://runbooks.example/high-latency")]);
    n.alerts = (0..count)
        .map(|i| alert(i, "firing", &format!("p99 latency of api-{i} is 2.3s")))
        .collect();
    n.external_url = EXTERNAL.into();
    n.summary = None;
    n
}

fn resolved(count: usize) -> Notification {
    let mut n = firing(count);
    n.kind = NotifyKind::Resolved;
    n.status = "resolved".into();
    for a in &mut n.alerts {
        a.status = "resolved".into();
        a.ends_at = Utc::now();
    }
    n
}

fn with_kind(mut n: Notification, kind: NotifyKind) -> Notification {
    n.kind = kind;
    if kind == NotifyKind::Change {
        n.summary = Some("Deployed api v2.4.1 to production".into());
        n.alerts.clear();
    }
    n
}

/// A notification far past every provider's limits: many alerts with long texts.
fn huge() -> Notification {
    let mut n = firing(0);
    let long = "Latency is high because ".repeat(400); // ~9,600 characters
    n.alerts = (0..300).map(|i| alert(i, "firing", &long)).collect();
    n.group_labels.insert("team".into(), "x".repeat(400));
    n.truncated_alerts = 5;
    n
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn build(kind: &str, settings: Value) -> Arc<dyn Channel> {
    channels::build("ops", kind, &settings, &http()).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Schema checks, after the providers' documentation

fn fail(what: &str, v: &Value) -> ! {
    panic!(
        "{what}\npayload: {}",
        serde_json::to_string_pretty(v).unwrap()
    )
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn is_str_map(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.values().all(Value::is_string))
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok())
}

/// Alertmanager's webhook payload, version 4.
fn check_webhook_v4(p: &Value) {
    let ok = p["version"] == "4"
        && p["groupKey"].is_string()
        && p["truncatedAlerts"].is_u64()
        && matches!(p["status"].as_str(), Some("firing" | "resolved"))
        && p["receiver"].is_string()
        && is_str_map(&p["groupLabels"])
        && is_str_map(&p["commonLabels"])
        && is_str_map(&p["commonAnnotations"])
        && p["externalURL"].is_string()
        && p["alerts"].is_array();
    if !ok {
        fail(
            "webhook v4: a top-level field is missing or of the wrong type",
            p,
        );
    }
    for a in p["alerts"].as_array().unwrap() {
        let ok = matches!(a["status"].as_str(), Some("firing" | "resolved"))
            && is_str_map(&a["labels"])
            && is_str_map(&a["annotations"])
            && is_rfc3339(&a["startsAt"])
            && is_rfc3339(&a["endsAt"])
            && a["generatorURL"].is_string()
            && a["fingerprint"].is_string();
        if !ok {
            fail("webhook v4: an alert is malformed", p);
        }
        if a["status"] == "firing" && a["endsAt"] != "0001-01-01T00:00:00Z" {
            fail("webhook v4: a firing alert has an end time", p);
        }
    }
}

/// Slack incoming webhook with Block Kit.
fn check_slack(p: &Value) {
    if chars(&p["text"]) == 0 {
        fail("slack: `text` (the notification fallback) is required", p);
    }
    let blocks = p["blocks"]
        .as_array()
        .unwrap_or_else(|| fail("slack: blocks must be a list", p));
    if blocks.is_empty() || blocks.len() > 50 {
        fail("slack: 1 to 50 blocks", p);
    }
    for b in blocks {
        match b["type"].as_str() {
            Some("header") => {
                let t = &b["text"];
                if t["type"] != "plain_text" || chars(&t["text"]) == 0 || chars(&t["text"]) > 150 {
                    fail(
                        "slack: a header's text is plain_text of 1 to 150 characters",
                        p,
                    );
                }
            }
            Some("section") => {
                let t = &b["text"];
                if !matches!(t["type"].as_str(), Some("mrkdwn" | "plain_text"))
                    || chars(&t["text"]) == 0
                    || chars(&t["text"]) > 3000
                {
                    fail("slack: a section's text is 1 to 3000 characters", p);
                }
            }
            Some("context") => {
                let els = b["elements"].as_array().unwrap();
                if els.is_empty() || els.len() > 10 {
                    fail("slack: a context block has 1 to 10 elements", p);
                }
                for e in els {
                    if !matches!(e["type"].as_str(), Some("mrkdwn" | "plain_text"))
                        || chars(&e["text"]) == 0
                        || chars(&e["text"]) > 3000
                    {
                        fail("slack: a context element's text is 1 to 3000 characters", p);
                    }
                }
            }
            Some("divider") => {}
            _ => fail("slack: unexpected block type", p),
        }
        if let Some(id) = b.get("block_id") {
            if chars(id) > 255 {
                fail("slack: block_id is at most 255 characters", p);
            }
        }
    }
}

const PD_KEY: &str = "R0UT1NGK3Y0123456789abcdefABCDEF";

/// PagerDuty Events API v2, alert events.
fn check_pd_event(p: &Value) {
    let allowed = [
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "images",
        "links",
        "client",
        "client_url",
    ];
    if let Some(k) = p
        .as_object()
        .unwrap()
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
    {
        fail(&format!("pagerduty: unknown field {k}"), p);
    }
    if chars(&p["routing_key"]) != 32 {
        fail("pagerduty: routing_key is 32 characters", p);
    }
    let action = p["event_action"].as_str().unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        fail(
            "pagerduty: event_action is trigger, acknowledge or resolve",
            p,
        );
    }
    if let Some(d) = p.get("dedup_key") {
        if !d.is_string() || chars(d) == 0 || chars(d) > 255 {
            fail("pagerduty: dedup_key is 1 to 255 characters", p);
        }
    } else if action != "trigger" {
        fail("pagerduty: acknowledge and resolve need a dedup_key", p);
    }
    if action == "trigger" {
        let pl = &p["payload"];
        if chars(&pl["summary"]) == 0 || chars(&pl["summary"]) > 1024 {
            fail("pagerduty: payload.summary is 1 to 1024 characters", p);
        }
        if chars(&pl["source"]) == 0 {
            fail("pagerduty: payload.source is required", p);
        }
        if !["critical", "error", "warning", "info"]
            .contains(&pl["severity"].as_str().unwrap_or_default())
        {
            fail(
                "pagerduty: payload.severity is critical, error, warning or info",
                p,
            );
        }
        if let Some(t) = pl.get("timestamp") {
            if !is_rfc3339(t) {
                fail("pagerduty: payload.timestamp is ISO 8601", p);
            }
        }
        for f in ["component", "group", "class"] {
            if pl.get(f).is_some_and(|v| !v.is_string()) {
                fail("pagerduty: component, group and class are strings", p);
            }
        }
        if pl.get("custom_details").is_some_and(|v| !v.is_object()) {
            fail("pagerduty: custom_details is an object", p);
        }
    }
    check_pd_links(p);
    if serde_json::to_vec(p).unwrap().len() > 512 * 1024 {
        fail("pagerduty: an event is at most 512 KB", p);
    }
}

fn check_pd_links(p: &Value) {
    if let Some(links) = p.get("links") {
        for l in links.as_array().unwrap() {
            if !l["href"].is_string() || l.get("text").is_some_and(|t| !t.is_string()) {
                fail("pagerduty: links are {href, text}", p);
            }
        }
    }
}

/// PagerDuty Events API v2, change events.
fn check_pd_change(p: &Value) {
    if chars(&p["routing_key"]) != 32 {
        fail("pagerduty change: routing_key is 32 characters", p);
    }
    if p.get("event_action").is_some() || p.get("dedup_key").is_some() {
        fail("pagerduty change: no event_action or dedup_key", p);
    }
    let pl = &p["payload"];
    if chars(&pl["summary"]) == 0 || chars(&pl["summary"]) > 1024 {
        fail(
            "pagerduty change: payload.summary is 1 to 1024 characters",
            p,
        );
    }
    if pl.get("timestamp").is_some_and(|t| !is_rfc3339(t)) {
        fail("pagerduty change: payload.timestamp is ISO 8601", p);
    }
    if pl.get("custom_details").is_some_and(|v| !v.is_object()) {
        fail("pagerduty change: custom_details is an object", p);
    }
    check_pd_links(p);
}

/// Opsgenie create alert.
fn check_opsgenie_create(p: &Value) {
    if chars(&p["message"]) == 0 || chars(&p["message"]) > 130 {
        fail("opsgenie: message is 1 to 130 characters", p);
    }
    if chars(&p["alias"]) == 0 || chars(&p["alias"]) > 512 {
        fail("opsgenie: alias is at most 512 characters", p);
    }
    if p.get("description")
        .is_some_and(|d| !d.is_string() || chars(d) > 15_000)
    {
        fail("opsgenie: description is at most 15000 characters", p);
    }
    if let Some(tags) = p.get("tags") {
        let tags = tags.as_array().unwrap();
        if tags.len() > 20 || tags.iter().any(|t| chars(t) == 0 || chars(t) > 50) {
            fail("opsgenie: at most 20 tags of at most 50 characters", p);
        }
    }
    if let Some(d) = p.get("details") {
        if !is_str_map(d) {
            fail("opsgenie: details map strings to strings", p);
        }
        let total: usize = d
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| k.chars().count() + chars(v))
            .sum();
        if total > 8000 {
            fail("opsgenie: details are at most 8000 characters", p);
        }
    }
    if !["P1", "P2", "P3", "P4", "P5"].contains(&p["priority"].as_str().unwrap_or("P3")) {
        fail("opsgenie: priority is P1 to P5", p);
    }
    if p.get("source").is_some_and(|s| chars(s) > 100) {
        fail("opsgenie: source is at most 100 characters", p);
    }
}

/// Opsgenie close / acknowledge.
fn check_opsgenie_action(p: &Value) {
    for (f, max) in [("source", 100), ("user", 100), ("note", 25_000)] {
        if p.get(f).is_some_and(|v| !v.is_string() || chars(v) > max) {
            fail(&format!("opsgenie: {f} is at most {max} characters"), p);
        }
    }
}

/// A Teams message with one Adaptive Card.
fn check_teams(p: &Value, raw_len: usize) {
    if raw_len > 28 * 1000 {
        fail(
            &format!("teams: {raw_len} bytes is over the 28 KB limit"),
            p,
        );
    }
    if p["type"] != "message" {
        fail("teams: type is message", p);
    }
    let att = p["attachments"].as_array().unwrap();
    if att.len() != 1 || att[0]["contentType"] != "application/vnd.microsoft.card.adaptive" {
        fail("teams: one adaptive card attachment", p);
    }
    let card = &att[0]["content"];
    if card["type"] != "AdaptiveCard"
        || card["$schema"] != "http://adaptivecards.io/schemas/adaptive-card.json"
        || card["version"] != "1.4"
    {
        fail("teams: an AdaptiveCard 1.4 with its $schema", p);
    }
    let body = card["body"].as_array().unwrap();
    if body.is_empty() {
        fail("teams: the card has a body", p);
    }
    for e in body {
        match e["type"].as_str() {
            Some("TextBlock") => {
                if chars(&e["text"]) == 0 {
                    fail("teams: a TextBlock has text", p);
                }
            }
            Some("FactSet") => {
                for f in e["facts"].as_array().unwrap() {
                    if !f["title"].is_string() || !f["value"].is_string() {
                        fail("teams: facts are {title, value} strings", p);
                    }
                }
            }
            _ => fail("teams: unexpected element type", p),
        }
    }
    if let Some(actions) = card.get("actions") {
        for a in actions.as_array().unwrap() {
            if a["type"] != "Action.OpenUrl" || !a["url"].is_string() || !a["title"].is_string() {
                fail("teams: actions are Action.OpenUrl", p);
            }
        }
    }
}

fn assert_retryable(r: Result<(), SendError>, want_after: Option<Duration>) -> String {
    match r {
        Err(SendError::Retryable {
            reason,
            retry_after,
        }) => {
            assert_eq!(retry_after, want_after, "{reason}");
            reason
        }
        other => panic!("want Retryable, got {other:?}"),
    }
}

fn assert_permanent(r: Result<(), SendError>) -> String {
    match r {
        Err(SendError::Permanent { reason }) => reason,
        other => panic!("want Permanent, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// webhook

#[tokio::test]
async fn webhook_sends_alertmanager_v4_for_every_kind() {
    let rx = Receiver::start(reply(200, "")).await;
    let secrets = MapSecrets::new(&[("prod/hooks/ops#token", "bearer-token-123456")]);
    let ch = build(
        "webhook",
        json!({"url": rx.url("/alerts"), "bearer_secret": "prod/hooks/ops#token"}),
    );
    assert_eq!(ch.kind(), "webhook");

    ch.send(&firing(3), &secrets).await.unwrap();
    let r = rx.last();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/alerts");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        r.header("authorization").as_deref(),
        Some("Bearer bearer-token-123456")
    );
    let p = r.json();
    check_webhook_v4(&p);
    assert_eq!(p["status"], "firing");
    assert_eq!(p["alerts"].as_array().unwrap().len(), 3);
    assert_eq!(p["truncatedAlerts"], 0);
    assert_eq!(p["groupLabels"]["alertname"], "HighLatency");
    assert_eq!(p["externalURL"], EXTERNAL);
    assert_eq!(p["receiver"], "ops-team");

    ch.send(&resolved(3), &secrets).await.unwrap();
    let p = rx.last().json();
    check_webhook_v4(&p);
    assert_eq!(p["status"], "resolved");
    assert!(p["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["status"] == "resolved" && a["endsAt"] != "0001-01-01T00:00:00Z"));

    let test = Notification::sample("ops", Utc::now());
    ch.send(&test, &secrets).await.unwrap();
    let p = rx.last().json();
    check_webhook_v4(&p);
    assert_eq!(p["status"], "firing");
    assert_eq!(p["steward"]["kind"], "test");

    ch.send(&with_kind(firing(1), NotifyKind::Change), &secrets)
        .await
        .unwrap();
    let p = rx.last().json();
    check_webhook_v4(&p);
    assert_eq!(p["steward"]["kind"], "change");
    assert_eq!(p["steward"]["dedupKey"], DEDUP);
    // Acknowledgements are skipped unless asked for: an Alertmanager receiver would take
    // one for a reminder.
    let ack = with_kind(firing(1), NotifyKind::Acknowledged);
    ch.send(&ack, &secrets).await.unwrap();
    assert_eq!(rx.requests().len(), 4, "no request for the acknowledgement");
    let acks = build(
        "webhook",
        json!({"url": rx.url("/alerts"), "send_acknowledgements": true}),
    );
    acks.send(&ack, &secrets).await.unwrap();
    let p = rx.last().json();
    check_webhook_v4(&p);
    assert_eq!(p["steward"]["kind"], "acknowledged");
    assert_eq!(p["steward"]["dedupKey"], DEDUP);
    assert_eq!(rx.requests().len(), 5);
}

#[tokio::test]
async fn webhook_max_alerts_truncates_and_counts() {
    let rx = Receiver::start(reply(204, "")).await;
    let ch = build("webhook", json!({"url": rx.url("/"), "max_alerts": 2}));
    let mut n = firing(5);
    n.truncated_alerts = 1;
    ch.send(&n, &MapSecrets::new(&[])).await.unwrap();
    let p = rx.last().json();
    check_webhook_v4(&p);
    assert_eq!(p["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(p["truncatedAlerts"], 4);
}

#[tokio::test]
async fn webhook_url_secret_and_error_classes() {
    let rx = Receiver::start(reply(200, "")).await;
    let hook = rx.url("/hook/s3cr3t-hook-token");
    let secrets = MapSecrets::new(&[("prod/hooks/ops#url", hook.as_str())]);
    let ch = build(
        "webhook",
        json!({"url_secret": "prod/hooks/ops#url", "timeout": "5s"}),
    );

    ch.send(&firing(1), &secrets).await.unwrap();
    assert_eq!(rx.last().path, "/hook/s3cr3t-hook-token");

    rx.then(Reply {
        status: 429,
        headers: vec![("retry-after", "7".into())],
        body: "slow down".into(),
    });
    let why = assert_retryable(
        ch.send(&firing(1), &secrets).await,
        Some(Duration::from_secs(7)),
    );
    assert!(why.contains("429") && why.contains("\"ops\""), "{why}");

    rx.then(reply(500, "internal error at /hook/s3cr3t-hook-token"));
    let why = assert_retryable(ch.send(&firing(1), &secrets).await, None);
    assert!(why.contains("500"), "{why}");
    assert!(!why.contains("s3cr3t-hook-token"), "{why}");

    rx.then(reply(404, "no such hook: s3cr3t-hook-token"));
    let why = assert_permanent(ch.send(&firing(1), &secrets).await);
    assert!(why.contains("404"), "{why}");
    assert!(!why.contains("s3cr3t-hook-token"), "{why}");

    rx.then(reply(400, "bad"));
    assert_permanent(ch.send(&firing(1), &secrets).await);

    // A missing secret is retryable and names the reference.
    let why = assert_retryable(ch.send(&firing(1), &MapSecrets::new(&[])).await, None);
    assert!(why.contains("prod/hooks/ops#url"), "{why}");
}

#[tokio::test]
async fn webhook_connection_failure_is_retryable_without_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/closed/t0ps3cret");
    let secrets = MapSecrets::new(&[("prod/hooks/ops#url", url.as_str())]);
    let ch = build("webhook", json!({"url_secret": "prod/hooks/ops#url"}));
    let why = assert_retryable(ch.send(&firing(1), &secrets).await, None);
    assert!(!why.contains("t0ps3cret"), "{why}");
}

#[tokio::test]
async fn webhook_times_out_as_retryable() {
    // A listener that accepts and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = vec![];
        while let Ok((s, _)) = l.accept().await {
            open.push(s);
        }
    });
    let ch = build(
        "webhook",
        json!({"url": format!("http://{addr}/"), "timeout": "300ms"}),
    );
    let t = Instant::now();
    let why = assert_retryable(ch.send(&firing(1), &MapSecrets::new(&[])).await, None);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(why.contains("300ms"), "{why}");
    hold.abort();
}

// ---------------------------------------------------------------------------------------------
// slack

fn slack_setup(rx: &Receiver, interval: &str) -> (Arc<dyn Channel>, MapSecrets, String) {
    let url = rx.url("/services/T000/B000/XXXXslacksecretXXXX");
    let secrets = MapSecrets::new(&[("prod/alerting/slack#url", url.as_str())]);
    let ch = build(
        "slack",
        json!({"url_secret": "prod/alerting/slack#url", "min_interval": interval}),
    );
    (ch, secrets, url)
}

#[tokio::test]
async fn slack_payloads_follow_block_kit_limits() {
    let rx = Receiver::start(reply(200, "ok")).await;
    let (ch, secrets, _) = slack_setup(&rx, "10ms");

    ch.send(&firing(2), &secrets).await.unwrap();
    let p = rx.last().json();
    check_slack(&p);
    assert_eq!(p["blocks"][0]["type"], "header");
    assert!(p["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("[FIRING:2] HighLatency"));
    assert_eq!(p["blocks"].as_array().unwrap().len(), 4); // header, 2 alerts, context
    assert!(p["text"].as_str().unwrap().contains("HighLatency"));

    ch.send(&resolved(2), &secrets).await.unwrap();
    let p = rx.last().json();
    check_slack(&p);
    assert!(p["text"].as_str().unwrap().starts_with("[RESOLVED]"));

    for n in [
        Notification::sample("ops", Utc::now()),
        with_kind(firing(1), NotifyKind::Change),
        with_kind(firing(1), NotifyKind::Acknowledged),
    ] {
        ch.send(&n, &secrets).await.unwrap();
        check_slack(&rx.last().json());
    }

    // Far past the limits: 300 alerts with ~9,600-character summaries and a long title.
    ch.send(&huge(), &secrets).await.unwrap();
    let p = rx.last().json();
    check_slack(&p);
    let blocks = p["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 50);
    assert!(blocks[0]["text"]["text"].as_str().unwrap().ends_with('…'));
    // A long summary is cut on its own: the labels and times still show.
    let first = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(
        first.contains("*Labels:*") && first.contains("*Started:*"),
        "{first}"
    );
    let note = blocks[blocks.len() - 2]["text"]["text"].as_str().unwrap();
    // 48 blocks are left for alerts and the note: 47 alerts shown, 253 + 5 left out.
    assert!(note.contains("258 more alerts"), "{note}");
}

#[tokio::test]
async fn slack_spaces_posts_by_min_interval() {
    let rx = Receiver::start(reply(200, "ok")).await;
    let (ch, secrets, _) = slack_setup(&rx, "200ms");
    let n = firing(1);
    let (a, b, c) = tokio::join!(
        ch.send(&n, &secrets),
        ch.send(&n, &secrets),
        ch.send(&n, &secrets)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    ch.send(&n, &secrets).await.unwrap();
    let at: Vec<Instant> = rx.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 4);
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(200),
            "posts only {gap:?} apart"
        );
    }
}

#[tokio::test]
async fn slack_rate_limit_and_errors() {
    let rx = Receiver::start(reply(200, "ok")).await;
    let (ch, secrets, url) = slack_setup(&rx, "10ms");

    rx.then(Reply {
        status: 429,
        headers: vec![("retry-after", "30".into())],
        body: "rate_limited".into(),
    });
    let why = assert_retryable(
        ch.send(&firing(1), &secrets).await,
        Some(Duration::from_secs(30)),
    );
    assert!(why.contains("429"), "{why}");
    assert!(!why.contains("slacksecret") && !why.contains(&url), "{why}");
    // Held back: answered at once, without another post.
    let before = rx.requests().len();
    match ch.send(&firing(1), &secrets).await {
        Err(SendError::Retryable {
            retry_after: Some(d),
            ..
        }) => assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        ),
        other => panic!("want a held Retryable, got {other:?}"),
    }
    assert_eq!(rx.requests().len(), before);

    let (ch, secrets, _) = slack_setup(&rx, "10ms");
    rx.then(reply(
        404,
        "no_service /services/T000/B000/XXXXslacksecretXXXX",
    ));
    let why = assert_permanent(ch.send(&firing(1), &secrets).await);
    assert!(why.contains("404") && why.contains("no_service"), "{why}");
    assert!(!why.contains("slacksecret"), "{why}");

    rx.then(reply(400, "invalid_payload"));
    assert_permanent(ch.send(&firing(1), &secrets).await);

    rx.then(reply(500, "rollup_error"));
    assert_retryable(ch.send(&firing(1), &secrets).await, None);
    rx.then(reply(503, ""));
    assert_retryable(ch.send(&firing(1), &secrets).await, None);
}

// ---------------------------------------------------------------------------------------------
// pagerduty

fn pd_setup(rx: &Receiver, extra: Value) -> (Arc<dyn Channel>, MapSecrets) {
    let mut settings = json!({
        "routing_key_secret": "prod/alerting/pagerduty#routing_key",
        "url": rx.url("/v2/enqueue"),
        "change_url": rx.url("/v2/change/enqueue"),
    });
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    (
        build("pagerduty", settings),
        MapSecrets::new(&[("prod/alerting/pagerduty#routing_key", PD_KEY)]),
    )
}

const PD_OK: &str = r#"{"status":"success","message":"Event processed","dedup_key":"5f0c1a2b3c4d5e6f708192a3b4c5d6e7"}"#;

#[tokio::test]
async fn pagerduty_events_for_every_kind() {
    let rx = Receiver::start(reply(202, PD_OK)).await;
    let (ch, secrets) = pd_setup(&rx, json!({}));

    let mut n = firing(2);
    n.common_labels
        .insert("component".into(), "postgres".into());
    n.common_labels.insert("class".into(), "latency".into());
    ch.send(&n, &secrets).await.unwrap();
    ch.send(&n, &secrets).await.unwrap(); // a repeat: same dedup_key
    let reqs = rx.requests();
    for r in &reqs {
        assert_eq!(r.path, "/v2/enqueue");
        let p = r.json();
        check_pd_event(&p);
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], DEDUP);
        assert_eq!(p["routing_key"], PD_KEY);
        assert_eq!(p["payload"]["severity"], "critical");
        assert_eq!(p["payload"]["source"], "steward");
        assert_eq!(p["payload"]["component"], "postgres");
        assert_eq!(p["payload"]["class"], "latency");
        assert!(p["payload"].get("group").is_none());
        assert_eq!(
            p["payload"]["custom_details"]["alerts"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    ch.send(&with_kind(firing(2), NotifyKind::Acknowledged), &secrets)
        .await
        .unwrap();
    let p = rx.last().json();
    check_pd_event(&p);
    assert_eq!(p["event_action"], "acknowledge");
    assert_eq!(p["dedup_key"], DEDUP);

    ch.send(&resolved(2), &secrets).await.unwrap();
    let p = rx.last().json();
    check_pd_event(&p);
    assert_eq!(p["event_action"], "resolve");
    assert_eq!(p["dedup_key"], DEDUP);

    let test = Notification::sample("oncall", Utc::now());
    ch.send(&test, &secrets).await.unwrap();
    let p = rx.last().json();
    check_pd_event(&p);
    assert_eq!(p["event_action"], "trigger");
    assert_eq!(p["dedup_key"], test.dedup_key);
    assert_eq!(p["payload"]["severity"], "info");

    ch.send(&with_kind(firing(0), NotifyKind::Change), &secrets)
        .await
        .unwrap();
    let r = rx.last();
    assert_eq!(r.path, "/v2/change/enqueue");
    let p = r.json();
    check_pd_change(&p);
    assert_eq!(p["payload"]["summary"], "Deployed api v2.4.1 to production");

    // Limits hold for a huge group; unknown severities map to error; the setting overrides.
    let mut big = huge();
    big.common_labels
        .insert("severity".into(), "disaster".into());
    big.common_labels.insert("group".into(), "g".repeat(5000));
    big.alerts.truncate(1);
    ch.send(&big, &secrets).await.unwrap();
    let p = rx.last().json();
    check_pd_event(&p);
    assert_eq!(p["payload"]["severity"], "error");
    assert!(p["payload"]["summary"].as_str().unwrap().ends_with('…'));

    let (ch, secrets) = pd_setup(&rx, json!({"severity": "warning", "source": "steward-eu"}));
    ch.send(&huge(), &secrets).await.unwrap();
    let p = rx.last().json();
    check_pd_event(&p);
    assert_eq!(p["payload"]["severity"], "warning");
    assert_eq!(p["payload"]["source"], "steward-eu");
}

#[tokio::test]
async fn pagerduty_error_classes_never_show_the_routing_key() {
    let rx = Receiver::start(reply(202, PD_OK)).await;
    let (ch, secrets) = pd_setup(&rx, json!({}));

    let at = SystemTime::now() + Duration::from_secs(30);
    rx.then(Reply {
        status: 429,
        headers: vec![("retry-after", httpdate::fmt_http_date(at))],
        body: "".into(),
    });
    match ch.send(&firing(1), &secrets).await {
        Err(SendError::Retryable {
            retry_after: Some(d),
            ..
        }) => assert!(
            d >= Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        ),
        other => panic!("want Retryable with a retry_after, got {other:?}"),
    }

    rx.then(reply(502, "bad gateway"));
    assert_retryable(ch.send(&firing(1), &secrets).await, None);

    rx.then(reply(
        400,
        &format!(
            r#"{{"status":"invalid event","message":"Event object is invalid","errors":["Invalid routing key {PD_KEY}"]}}"#
        ),
    ));
    let why = assert_permanent(ch.send(&firing(1), &secrets).await);
    assert!(
        why.contains("400") && why.contains("invalid event"),
        "{why}"
    );
    assert!(!why.contains(PD_KEY), "{why}");

    rx.then(reply(404, ""));
    assert_permanent(ch.send(&resolved(1), &secrets).await);
}

// ---------------------------------------------------------------------------------------------
// opsgenie

const GENIE_KEY: &str = "eb243592-faa2-4ba2-a551q-1afdf565c889";
const GENIE_OK: &str =
    r#"{"result":"Request will be processed","took":0.302,"requestId":"43a29c5c"}"#;

fn genie_setup(rx: &Receiver) -> (Arc<dyn Channel>, MapSecrets) {
    (
        build(
            "opsgenie",
            json!({"api_key_secret": "prod/alerting/opsgenie#api_key", "url": rx.url(""), "tags": ["team-db"]}),
        ),
        MapSecrets::new(&[("prod/alerting/opsgenie#api_key", GENIE_KEY)]),
    )
}

#[tokio::test]
async fn opsgenie_create_close_acknowledge() {
    let rx = Receiver::start(reply(202, GENIE_OK)).await;
    let (ch, secrets) = genie_setup(&rx);

    ch.send(&firing(2), &secrets).await.unwrap();
    ch.send(&firing(2), &secrets).await.unwrap();
    for r in rx.requests() {
        assert_eq!(r.path, "/v2/alerts");
        assert_eq!(r.query, None);
        assert_eq!(
            r.header("authorization"),
            Some(format!("GenieKey {GENIE_KEY}"))
        );
        let p = r.json();
        check_opsgenie_create(&p);
        assert_eq!(p["alias"], DEDUP);
        assert_eq!(p["priority"], "P1");
        assert_eq!(p["source"], "steward");
        assert!(p["tags"].as_array().unwrap().contains(&json!("team-db")));
    }

    ch.send(&resolved(2), &secrets).await.unwrap();
    let r = rx.last();
    assert_eq!(r.path, format!("/v2/alerts/{DEDUP}/close"));
    assert_eq!(r.query.as_deref(), Some("identifierType=alias"));
    check_opsgenie_action(&r.json());

    ch.send(&with_kind(firing(2), NotifyKind::Acknowledged), &secrets)
        .await
        .unwrap();
    let r = rx.last();
    assert_eq!(r.path, format!("/v2/alerts/{DEDUP}/acknowledge"));
    assert_eq!(r.query.as_deref(), Some("identifierType=alias"));
    check_opsgenie_action(&r.json());

    let test = Notification::sample("oncall", Utc::now());
    ch.send(&test, &secrets).await.unwrap();
    let p = rx.last().json();
    check_opsgenie_create(&p);
    assert_eq!(p["priority"], "P5");

    ch.send(&with_kind(firing(0), NotifyKind::Change), &secrets)
        .await
        .unwrap();
    let p = rx.last().json();
    check_opsgenie_create(&p);
    assert_eq!(p["priority"], "P5");
    assert!(p["tags"].as_array().unwrap().contains(&json!("change")));

    ch.send(&huge(), &secrets).await.unwrap();
    let p = rx.last().json();
    check_opsgenie_create(&p);
    assert!(p["description"].as_str().unwrap().ends_with('…'));
}

#[tokio::test]
async fn opsgenie_error_classes() {
    let rx = Receiver::start(reply(202, GENIE_OK)).await;
    let (ch, secrets) = genie_setup(&rx);
    rx.then(Reply {
        status: 429,
        headers: vec![("retry-after", "2".into())],
        body: "".into(),
    });
    assert_retryable(
        ch.send(&firing(1), &secrets).await,
        Some(Duration::from_secs(2)),
    );
    rx.then(reply(500, ""));
    assert_retryable(ch.send(&firing(1), &secrets).await, None);
    rx.then(reply(
        401,
        &format!(r#"{{"message":"Key {GENIE_KEY} is invalid","took":0.0}}"#),
    ));
    let why = assert_permanent(ch.send(&firing(1), &secrets).await);
    assert!(why.contains("401") && !why.contains(GENIE_KEY), "{why}");
    rx.then(reply(
        422,
        r#"{"message":"Request body is not processable"}"#,
    ));
    assert_permanent(ch.send(&firing(1), &secrets).await);
}

// ---------------------------------------------------------------------------------------------
// teams

#[tokio::test]
async fn teams_adaptive_card_within_28kb() {
    let rx = Receiver::start(reply(202, "")).await;
    let url = rx.url("/workflows/triggers/manual/paths/invoke?sig=t3amss1gnature");
    let secrets = MapSecrets::new(&[("prod/alerting/teams#url", url.as_str())]);
    let ch = build("teams", json!({"url_secret": "prod/alerting/teams#url"}));

    for n in [
        firing(3),
        resolved(3),
        Notification::sample("ops", Utc::now()),
        with_kind(firing(0), NotifyKind::Change),
        with_kind(firing(1), NotifyKind::Acknowledged),
    ] {
        ch.send(&n, &secrets).await.unwrap();
        let r = rx.last();
        assert_eq!(r.query.as_deref(), Some("sig=t3amss1gnature"));
        check_teams(&r.json(), r.body.len());
    }
    let p = rx.requests()[0].json();
    let body = p["attachments"][0]["content"]["body"].as_array().unwrap();
    assert!(body[0]["text"].as_str().unwrap().starts_with("[FIRING:3]"));
    assert!(body.iter().any(|e| e["type"] == "FactSet"
        && e["facts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"] == "instance")));

    ch.send(&huge(), &secrets).await.unwrap();
    let r = rx.last();
    check_teams(&r.json(), r.body.len());
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.contains("more alerts not shown"), "{}", r.body.len());

    rx.then(Reply {
        status: 429,
        headers: vec![("retry-after", "5".into())],
        body: "".into(),
    });
    assert_retryable(
        ch.send(&firing(1), &secrets).await,
        Some(Duration::from_secs(5)),
    );
    rx.then(reply(500, ""));
    assert_retryable(ch.send(&firing(1), &secrets).await, None);
    rx.then(reply(400, "Bad payload for sig=t3amss1gnature"));
    let why = assert_permanent(ch.send(&firing(1), &secrets).await);
    assert!(!why.contains("t3amss1gnature"), "{why}");
}

// ---------------------------------------------------------------------------------------------
// settings

#[test]
fn settings_are_checked() {
    let good: &[(&str, Value)] = &[
        ("webhook", json!({"url": "https://h.example/x"})),
        ("slack", json!({"url_secret": "prod/a/slack#url"})),
        ("pagerduty", json!({"routing_key_secret": "prod/a/pd#key"})),
        (
            "email",
            json!({"host": "smtp.example.com", "from": "s@example.com", "to": ["o@example.com"]}),
        ),
        ("opsgenie", json!({"api_key_secret": "prod/a/og#key"})),
        ("teams", json!({"url_secret": "prod/a/teams#url"})),
    ];
    for (kind, settings) in good {
        channels::build("c", kind, settings, &http()).unwrap_or_else(|e| panic!("{kind}: {e}"));

        // An unknown key is named.
        let mut bad = settings.clone();
        bad["colour"] = json!("red");
        let e = channels::build("c", kind, &bad, &http()).err().unwrap();
        assert_eq!(e.key, "colour", "{kind}: {e}");
        assert_eq!(e.channel, "c");

        // Every required key is named when missing.
        for key in settings.as_object().unwrap().keys() {
            let mut missing = settings.clone();
            missing.as_object_mut().unwrap().remove(key);
            let e = channels::build("c", kind, &missing, &http()).err().unwrap();
            assert_eq!(&e.key, key, "{kind}: {e}");
        }
    }

    // A credential pasted where a reference belongs is refused without being echoed.
    let e = channels::build(
        "c",
        "slack",
        &json!({"url_secret": "https://hooks.slack.com/services/T0/B0/pastedsecret"}),
        &http(),
    )
    .err()
    .unwrap();
    assert_eq!(e.key, "url_secret");
    assert!(!e.to_string().contains("pastedsecret"), "{e}");

    let bad: &[(&str, Value, &str)] = &[
        ("webhook", json!({"url": "ftp://x.example/"}), "url"),
        (
            "webhook",
            json!({"url": "https://x.example/", "url_secret": "prod/a/b#c"}),
            "url_secret",
        ),
        (
            "webhook",
            json!({"url": "https://x.example/", "timeout": "soon"}),
            "timeout",
        ),
        (
            "webhook",
            json!({"url": "https://x.example/", "max_alerts": -1}),
            "max_alerts",
        ),
        (
            "slack",
            json!({"url_secret": "prod/a/b#c", "min_interval": 1}),
            "min_interval",
        ),
        (
            "pagerduty",
            json!({"routing_key_secret": "prod/a/b#c", "severity": "fatal"}),
            "severity",
        ),
        (
            "opsgenie",
            json!({"api_key_secret": "prod/a/b#c", "priority": "P0"}),
            "priority",
        ),
        (
            "email",
            json!({"host": "smtp.example.com", "tls": "none", "from": "a@example.com", "to": "b@example.com"}),
            "tls",
        ),
        (
            "email",
            json!({"host": "localhost", "tls": "plain", "from": "a@example.com", "to": "b@example.com"}),
            "tls",
        ),
        (
            "email",
            json!({"host": "localhost", "from": "not an address", "to": "b@example.com"}),
            "from",
        ),
        (
            "email",
            json!({"host": "localhost", "from": "a@example.com", "to": []}),
            "to",
        ),
        (
            "email",
            json!({"host": "localhost", "from": "a@example.com", "to": "b@example.com", "password_secret": "prod/a/b#c"}),
            "username",
        ),
        ("teams", json!({"url_secret": "no-reference"}), "url_secret"),
        ("teams", json!("a string"), "settings"),
    ];
    for (kind, settings, key) in bad {
        let e = channels::build("c", kind, settings, &http())
            .err()
            .unwrap_or_else(|| panic!("{kind} {settings} should be refused"));
        assert_eq!(&e.key, key, "{kind}: {e}");
    }
    // `none` is fine to a loopback relay.
    channels::build(
        "c",
        "email",
        &json!({"host": "127.0.0.1", "tls": "none", "from": "a@example.com", "to": "b@example.com"}),
        &http(),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// email, against aiosmtpd

struct SmtpServer {
    child: Child,
    port: u16,
    spool: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use steward_test_utils::free_port;

/// aiosmtpd on a free loopback port, with STARTTLS required (its default once a certificate
/// is given), writing what it receives to `spool` through `tests/channels/smtp_sink.py`.
async fn smtp_server() -> SmtpServer {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(st.success(), "openssl could not make a certificate");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let port = free_port();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/channels");
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tlscert")
        .arg(&cert)
        .arg("--tlskey")
        .arg(&key)
        .args(["-c", "smtp_sink.Sink"])
        .arg(&spool)
        .env("PYTHONPATH", &here)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 is installed");
    let mut server = SmtpServer {
        child,
        port,
        spool,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        if let Some(st) = server.child.try_wait().unwrap() {
            panic!(
                "aiosmtpd exited ({st}); its stderr is above. Is it installed \
                 (`python3 -m pip install aiosmtpd`)?"
            );
        }
        assert!(
            Instant::now() < deadline,
            "aiosmtpd did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

fn received(spool: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn email_over_starttls_to_a_real_smtp_server() {
    let srv = smtp_server().await;
    let settings = json!({
        "host": "localhost",
        "port": srv.port,
        "from": "Steward <steward@example.com>",
        "to": ["oncall@example.com", "Ops <ops@example.com>"],
        "accept_invalid_certs": true,
        "timeout": "10s",
    });
    let ch = channels::build("mail", "email", &settings, &http()).unwrap();
    assert_eq!(ch.kind(), "email");
    let secrets = MapSecrets::new(&[]);

    let mut n = firing(2);
    std::sync::Arc::make_mut(&mut n.alerts[0].annotations)
        .insert("description".into(), "<b>not html</b> & more".into());
    ch.send(&n, &secrets).await.unwrap();
    ch.send(&resolved(2), &secrets).await.unwrap();

    let got = received(&srv.spool);
    assert_eq!(got.len(), 2, "{got:?}");
    let m = &got[0];
    assert_eq!(m["tls"], true, "STARTTLS was used");
    assert_eq!(m["mail_from"], "steward@example.com");
    assert_eq!(
        m["rcpt_tos"],
        json!(["oncall@example.com", "ops@example.com"])
    );
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [FIRING:2] HighLatency (api)"),
        "{data}"
    );
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(
        data.contains("text/plain") && data.contains("text/html"),
        "{data}"
    );
    assert!(
        data.contains(&format!("References: <{DEDUP}@steward>")),
        "{data}"
    );
    assert!(data.contains("api-1:9100"), "{data}");
    assert!(
        data.contains("&lt;b&gt;not html&lt;/b&gt; &amp; more"),
        "{data}"
    );
    let data = got[1]["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [RESOLVED] HighLatency (api)"),
        "{data}"
    );
    assert_eq!(got[1]["tls"], true);
}

#[tokio::test]
async fn email_failures_are_classified() {
    let srv = smtp_server().await;
    let secrets = MapSecrets::new(&[]);

    // Plain text to a server that requires STARTTLS: 530 on MAIL, permanent.
    let ch = channels::build(
        "mail",
        "email",
        &json!({"host": "127.0.0.1", "port": srv.port, "tls": "none", "from": "a@example.com", "to": "b@example.com"}),
        &http(),
    )
    .unwrap();
    let why = assert_permanent(ch.send(&firing(1), &secrets).await);
    assert!(why.contains("530") || why.contains("STARTTLS"), "{why}");

    // The self-signed certificate is refused unless accept_invalid_certs: retryable (TLS).
    let ch = channels::build(
        "mail",
        "email",
        &json!({"host": "localhost", "port": srv.port, "from": "a@example.com", "to": "b@example.com"}),
        &http(),
    )
    .unwrap();
    let why = assert_retryable(ch.send(&firing(1), &secrets).await, None);
    assert!(why.contains("\"mail\""), "{why}");
    assert!(received(&srv.spool).is_empty());

    // Nothing listening: retryable.
    let ch = channels::build(
        "mail",
        "email",
        &json!({"host": "127.0.0.1", "port": free_port(), "from": "a@example.com", "to": "b@example.com", "timeout": "3s"}),
        &http(),
    )
    .unwrap();
    assert_retryable(ch.send(&firing(1), &secrets).await, None);

    // A password reference that does not resolve: retryable, naming the reference only.
    let ch = channels::build(
        "mail",
        "email",
        &json!({"host": "localhost", "port": srv.port, "from": "a@example.com", "to": "b@example.com",
                "username": "steward", "password_secret": "prod/alerting/smtp#password"}),
        &http(),
    )
    .unwrap();
    let why = assert_retryable(ch.send(&firing(1), &secrets).await, None);
    assert!(why.contains("prod/alerting/smtp#password"), "{why}");
}
