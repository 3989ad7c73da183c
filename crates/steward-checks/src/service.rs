//! The [`Monitor`]: runs every check on its schedule with bounded concurrency, keeps each
//! check's state, raises and resolves its alert (`CheckDown{check=...}`) on state changes,
//! stores every run, rolls runs up per minute, hour and day, and prunes old data.
//!
//! Scheduling: each check starts at an offset within its interval derived from its name (so
//! 10,000 checks every 10 s spread evenly instead of starting together), then runs every
//! interval plus a random jitter. The time from when a run was due to when it started is the
//! scheduling lag (reported as p50/p99 in [`Stats`]); a run that could not start before its
//! next one was due is counted as missed and skipped.
//!
//! Storage: results are written in batches every 250 ms (`check_results`). Roll-ups are
//! derived from the stored results, minute by minute, in one transaction with their
//! watermark (the `sys` key `checks/rollup/watermark`), so after kill -9 they are exactly
//! what the stored results say.
//!
//! Incidents: a check with a `status_page` component that goes down opens (or joins) the
//! component's incident, and its recovery closes it (see [`crate::incidents`]); the changes
//! are written with the next batch of results, and restored by [`Monitor::load`].

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use steward_alerting::{model::Labels, mutes::CompiledWindow, Alerting};
use steward_expr::Value;
use steward_probes::Outcome;
use steward_secrets::{policy::Capability, Engine, RequestCtx, Result, SecretsError};
use steward_store::{CheckResultRow, RollupRow, Tx};
use tokio::{
    sync::{watch, Semaphore},
    time::Instant,
};

use crate::{
    config::{Check, Compiled, Runner, ALERT_NAME},
    incidents::{Book, Incident, PublicIncident, CLOSED, OPEN, PAST_KEEP},
    rollup::{bucket_start, Agg, RESOLUTIONS},
    slo::{Counts, SloStatus, ALERT_NAME as SLO_ALERT, RULES},
    state::{CheckState, Health},
};

const WATERMARK_KEY: &str = "checks/rollup/watermark";
/// How often buffered results are written.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Minute roll-ups are kept this long; hours and days for `rollup_retention`.
const MINUTE_RETENTION_DAYS: i64 = 14;
/// How long the status page reuses the day history it read.
const HISTORY_TTL: ChronoDuration = ChronoDuration::seconds(30);
/// How far ahead the status page lists scheduled maintenance.
const MAINTENANCE_AHEAD: ChronoDuration = ChronoDuration::days(7);
/// Maintenance windows listed at most.
const MAINTENANCE_MAX: usize = 20;

/// Per status-page component, its runs aggregated per day (day start, Unix seconds).
type History = BTreeMap<String, BTreeMap<i64, Agg>>;

/// The history last read: when, for which (first day, today), and what.
type CachedHistory = Option<(DateTime<Utc>, (i64, i64), Arc<History>)>;

/// Most of a fact's text kept for display (bodies, outputs).
const FACT_TEXT_MAX: usize = 2048;

/// One run as recorded: the probe's facts and phases kept as they came (they are turned
/// into JSON only when someone looks, not on every run).
#[derive(Debug, Clone)]
pub struct Run {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub duration: Duration,
    pub error: Option<String>,
    pub facts: steward_expr::Facts,
    pub phases: Vec<(&'static str, Duration)>,
}

impl Run {
    /// Seconds until the certificate the probe saw expires, when it reports one.
    pub fn cert_expires_in_s(&self) -> Option<f64> {
        match self.facts.get("cert_expires_in") {
            Some(Value::Duration(d)) => Some(d.as_secs_f64()),
            _ => None,
        }
    }

    /// The run as listed (long texts cut).
    pub fn view(&self) -> LastRun {
        LastRun {
            at: self.at,
            ok: self.ok,
            duration_ms: self.duration.as_secs_f64() * 1000.0,
            error: self.error.clone(),
            facts: self
                .facts
                .iter()
                .map(|(k, v)| (k.clone(), fact_json(v)))
                .collect(),
            phases: self
                .phases
                .iter()
                .map(|(p, d)| (p.to_string(), d.as_secs_f64() * 1000.0))
                .collect(),
            cert_expires_in_s: self.cert_expires_in_s(),
        }
    }
}

/// The last run of a check, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub duration_ms: f64,
    pub error: Option<String>,
    /// The facts the probe reported (long texts cut).
    pub facts: serde_json::Map<String, serde_json::Value>,
    pub phases: Vec<(String, f64)>,
    /// Seconds until the certificate the probe saw expires, when it reports one.
    pub cert_expires_in_s: Option<f64>,
}

/// A check as listed.
#[derive(Debug, Clone, Serialize)]
pub struct CheckInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub health: Health,
    pub since: Option<DateTime<Utc>>,
    pub interval_s: f64,
    pub condition: String,
    pub depends_on: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub status_page: Option<String>,
    pub last: Option<LastRun>,
    pub fails_in_a_row: u32,
}

/// One roll-up bucket as shown.
#[derive(Debug, Clone, Serialize)]
pub struct RollupInfo {
    pub start: DateTime<Utc>,
    pub runs: u64,
    pub up: u64,
    pub uptime: Option<f64>,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: f64,
}

/// Seconds in a roll-up resolution: `minute`, `hour` or `day`.
pub fn resolution_len(res: &str) -> Result<i64> {
    RESOLUTIONS
        .iter()
        .find(|(r, _)| *r == res)
        .map(|(_, l)| *l)
        .ok_or_else(|| {
            SecretsError::invalid(
                "invalid_resolution",
                format!("resolution {res:?} is not one of minute, hour, day"),
            )
        })
}

/// The last `buckets` buckets of `len` seconds, up to and including the one holding `now`:
/// `[from, to)` in Unix seconds.
pub fn window(now: i64, len: i64, buckets: u32) -> (i64, i64) {
    let to = bucket_start(now, len) + len;
    (to - len * i64::from(buckets.clamp(1, 1000)), to)
}

/// Sparse roll-ups (oldest first, as stored) as one entry per bucket of `[from, to)`;
/// buckets without runs are empty (for charts that must show gaps).
pub fn dense(rollups: &[RollupInfo], from: i64, to: i64, len: i64) -> Vec<RollupInfo> {
    let mut it = rollups.iter().peekable();
    let mut out = Vec::with_capacity(((to - from) / len.max(1)).max(0) as usize);
    let mut at = from;
    while at < to {
        while it.peek().is_some_and(|r| r.start.timestamp() < at) {
            it.next();
        }
        match it.peek() {
            Some(r) if r.start.timestamp() == at => out.push((*r).clone()),
            _ => out.push(RollupInfo::empty(at)),
        }
        at += len;
    }
    out
}

impl RollupInfo {
    /// A bucket with no runs.
    pub fn empty(start: i64) -> Self {
        Self {
            start: DateTime::from_timestamp(start, 0).unwrap_or_default(),
            runs: 0,
            up: 0,
            uptime: None,
            mean_ms: None,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            max_ms: 0.0,
        }
    }

    fn from_row(r: &steward_store::RollupRow) -> Option<Self> {
        serde_json::from_str::<Agg>(&r.doc)
            .ok()
            .map(|a| Self::new(r.bucket, &a))
    }

    fn new(start: i64, a: &Agg) -> Self {
        let ms = |v: Option<f64>| v.map(|x| x / 1000.0);
        Self {
            start: DateTime::from_timestamp(start, 0).unwrap_or_default(),
            runs: a.total,
            up: a.up,
            uptime: a.uptime(),
            mean_ms: ms(a.mean_us()),
            p50_ms: ms(a.quantile_us(0.5)),
            p95_ms: ms(a.quantile_us(0.95)),
            p99_ms: ms(a.quantile_us(0.99)),
            max_ms: a.max_us as f64 / 1000.0,
        }
    }
}

/// What the public status page shows: components, incidents, scheduled maintenance. Only
/// public things: component names, states, uptime, times, and the names and comments of
/// windows marked `public`; never check names, settings, errors, facts, labels or matchers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusPage {
    pub components: Vec<Component>,
    /// Open incidents, oldest first.
    pub open_incidents: Vec<PublicIncident>,
    /// Closed incidents that ended within the days shown, newest end first, at most
    /// [`PAST_KEEP`].
    pub past_incidents: Vec<PublicIncident>,
    /// Public maintenance in progress or starting within 7 days, by start.
    pub maintenance: Vec<ScheduledMaintenance>,
}

/// One component of the public status page.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub name: String,
    pub health: Health,
    /// When the component went down (its incident's start), while it is down.
    pub down_since: Option<DateTime<Utc>>,
    /// A public maintenance window in progress covers one of its checks.
    pub maintenance: bool,
    /// Over the days shown.
    pub uptime: Option<f64>,
    pub days: Vec<DayUptime>,
}

/// A day's uptime (None: no runs that day).
#[derive(Debug, Clone, Serialize)]
pub struct DayUptime {
    pub day: DateTime<Utc>,
    pub uptime: Option<f64>,
    /// Incidents of the component that were open during the day (of those the page knows:
    /// the open ones and the latest closed ones).
    #[serde(default)]
    pub incidents: u32,
}

/// One occurrence of a public maintenance window, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledMaintenance {
    /// The window's name (or "Scheduled maintenance" when it has none).
    pub title: String,
    /// The window's comment.
    pub comment: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub in_progress: bool,
    /// A recurring window (this is its occurrence in progress, or its next one).
    pub recurring: bool,
    /// The components whose checks it covers.
    pub components: Vec<String>,
}

/// Scheduler figures (for /metrics and the benchmark).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub runs: u64,
    pub failures: u64,
    pub missed: u64,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub lag_max_ms: f64,
    pub up: u64,
    pub down: u64,
    pub unknown: u64,
}

#[derive(Default)]
struct Live {
    state: CheckState,
    last: Option<Arc<Run>>,
    last_beat: Option<DateTime<Utc>>,
    beats: u64,
}

struct Inner {
    live: Vec<Live>,
    /// (SLO, speed) pairs whose burn-rate alert is raised.
    burning: std::collections::HashSet<(String, String)>,
    pending: Vec<CheckResultRow>,
    lag: Agg,
    /// Incidents of status-page components (and their changes not written yet).
    book: Book,
}

/// The health-check service.
pub struct Monitor {
    engine: Arc<Engine>,
    alerting: Option<Arc<Alerting>>,
    compiled: Compiled,
    index: HashMap<String, usize>,
    inner: Mutex<Inner>,
    permits: Arc<Semaphore>,
    /// The status page's day history and when it was read (see `day_history`).
    history: Mutex<CachedHistory>,
    /// Serializes writes of buffered results and incident changes, so the incident changes
    /// reach the store in the order they happened.
    flush_lock: tokio::sync::Mutex<()>,
    runs: AtomicU64,
    failures: AtomicU64,
    missed: AtomicU64,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("checks", &self.compiled.checks.len())
            .finish_non_exhaustive()
    }
}

/// The offset within `interval` at which a check named `name` first runs: a hash of the name
/// (FNV-1a), so it is stable across restarts and spread evenly.
fn offset(name: &str, interval: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    interval.mul_f64((h % 10_000) as f64 / 10_000.0)
}

fn fact_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(J::Null, J::Number),
        Value::Duration(d) => J::String(format!("{:.3}ms", d.as_secs_f64() * 1000.0)),
        Value::String(s) => {
            let mut s = s.clone();
            if s.len() > FACT_TEXT_MAX {
                let mut cut = FACT_TEXT_MAX;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push('…');
            }
            J::String(s)
        }
        Value::List(items) => J::Array(items.iter().map(fact_json).collect()),
        Value::Json(j) => {
            let text = j.to_string();
            if text.len() > FACT_TEXT_MAX {
                J::String(format!("(JSON, {} bytes)", text.len()))
            } else {
                j.clone()
            }
        }
    }
}

/// A short text of the facts a condition reads, for the alert: `status=500, response_time=12ms`.
fn explain(check: &Check, outcome: &Outcome) -> String {
    let mut parts = Vec::new();
    for name in check.condition.names() {
        let shown = match outcome.facts.lookup(&name) {
            Some(v) => match fact_json(&v) {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            },
            None => "(not reported)".into(),
        };
        let mut shown = shown;
        if shown.len() > 80 {
            shown.truncate(77);
            shown.push_str("...");
        }
        parts.push(format!("{name}={shown}"));
    }
    parts.join(", ")
}

impl Monitor {
    /// Builds the service; nothing runs until [`Monitor::run`].
    pub fn new(
        engine: Arc<Engine>,
        alerting: Option<Arc<Alerting>>,
        compiled: Compiled,
    ) -> Arc<Self> {
        let index = compiled
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let live = compiled.checks.iter().map(|_| Live::default()).collect();
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(compiled.concurrency)),
            history: Mutex::new(None),
            flush_lock: tokio::sync::Mutex::new(()),
            engine,
            alerting,
            index,
            compiled,
            inner: Mutex::new(Inner {
                live,
                burning: Default::default(),
                pending: Vec::new(),
                lag: Agg::default(),
                book: Book::default(),
            }),
            runs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        self.engine.clock().now()
    }

    /// Restores the last beat of heartbeat checks from the stored results, and the incidents
    /// (the open ones, and the latest closed ones for the page). An open incident whose
    /// checks are no longer in its component (config changed) is closed now. [`Monitor::run`]
    /// calls it before the first run; call it before `run_check` when driving checks by hand.
    pub async fn load(&self) -> Result<()> {
        self.load_incidents().await?;
        for (i, c) in self.compiled.checks.iter().enumerate() {
            if !matches!(c.runner, Runner::Heartbeat { .. }) {
                continue;
            }
            let name = c.name.clone();
            let rows = self
                .engine
                .store()
                .read(move |tx| tx.check_results_latest(&name, 50))
                .await
                .map_err(SecretsError::from)?;
            // Beats are the good results a heartbeat check records with no duration.
            if let Some(beat) = rows.iter().find(|r| r.ok && r.error.is_none()) {
                self.lock().live[i].last_beat = Some(beat.at);
            }
        }
        Ok(())
    }

    async fn load_incidents(&self) -> Result<()> {
        // Changes made before (a second load) are written first, so none is lost.
        self.flush().await?;
        let store = self.engine.store();
        let mut open_rows = Vec::new();
        let mut after = String::new();
        loop {
            let a = after.clone();
            let page = store
                .read(move |tx| tx.record_list(OPEN, &a, 1000))
                .await
                .map_err(SecretsError::from)?;
            let done = page.len() < 1000;
            if let Some(last) = page.last() {
                after = last.id.clone();
            }
            open_rows.extend(page);
            if done {
                break;
            }
        }
        let past_rows = store
            .read(|tx| tx.record_list(CLOSED, "", PAST_KEEP as u32))
            .await
            .map_err(SecretsError::from)?;
        let parse = |rows: Vec<steward_store::RecordRow>| -> Vec<Incident> {
            rows.into_iter()
                .filter_map(|r| match serde_json::from_str::<Incident>(&r.doc) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        tracing::warn!(kind = %r.kind, id = %r.id, error = %e, "checks: skipping an incident that does not parse");
                        None
                    }
                })
                .collect()
        };
        let mut book = Book::restore(parse(open_rows), parse(past_rows));
        book.reconcile(self.now(), |comp, check| {
            self.index
                .get(check)
                .is_some_and(|i| self.compiled.checks[*i].status_page.as_deref() == Some(comp))
        });
        self.lock().book = book;
        self.flush().await
    }

    /// The scheduler, the writer of results and the roll-up, until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Incidents must be known before the first state change, or a restart could open a
        // second one: retry while the store cannot be read.
        let mut wait = Duration::from_secs(1);
        while let Err(e) = self.load().await {
            tracing::warn!(error = %e, "checks: cannot load heartbeats and incidents; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
        let flusher = tokio::spawn(self.clone().flush_loop(shutdown.clone()));
        let start = Instant::now();
        let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = self
            .compiled
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| Reverse((start + offset(&c.name, c.interval), i)))
            .collect();
        loop {
            let Some(Reverse((due, _))) = heap.peek().copied() else {
                let _ = shutdown.changed().await;
                break;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            while let Some(Reverse((due, i))) = heap.peek().copied() {
                if due > now {
                    break;
                }
                heap.pop();
                let c = &self.compiled.checks[i];
                let jitter = c.interval.mul_f64(c.jitter * rand::random::<f64>());
                let mut next = due + c.interval;
                while next + jitter <= now {
                    // Could not start in time: skip the missed runs instead of bunching.
                    self.missed.fetch_add(1, Ordering::Relaxed);
                    next += c.interval;
                }
                heap.push(Reverse((next + jitter, i)));
                let me = self.clone();
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    let lag = Instant::now().saturating_duration_since(due);
                    me.lock().lag.add(true, lag.as_micros() as u64);
                    me.run_check(i).await;
                });
            }
        }
        let _ = flusher.await;
        // Whatever is buffered goes out before the process ends.
        let _ = self.flush().await;
    }

    async fn flush_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_rollup = Instant::now();
        let mut last_slo: Option<Instant> = None;
        let mut last_prune: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "checks: cannot store results; keeping them to retry");
            }
            if last_rollup.elapsed() >= Duration::from_secs(10) {
                last_rollup = Instant::now();
                if let Err(e) = self.roll_up(self.now()).await {
                    tracing::warn!(error = %e, "checks: roll-up failed; retrying later");
                }
            }
            if !self.compiled.slos.is_empty()
                && last_slo.is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
            {
                last_slo = Some(Instant::now());
                if let Err(e) = self.evaluate_slos(self.now()).await {
                    tracing::warn!(error = %e, "checks: SLO evaluation failed; retrying later");
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
                last_prune = Some(Instant::now());
                if let Err(e) = self.prune(self.now()).await {
                    tracing::warn!(error = %e, "checks: pruning old results failed");
                }
            }
        }
    }

    /// Writes buffered results and incident changes in one transaction; on failure they go
    /// back to the buffer. One flush at a time, so incident changes are written in order.
    pub async fn flush(&self) -> Result<()> {
        let _serial = self.flush_lock.lock().await;
        let (rows, ops) = {
            let mut inner = self.lock();
            (std::mem::take(&mut inner.pending), inner.book.take_ops())
        };
        if rows.is_empty() && ops.is_empty() {
            return Ok(());
        }
        let r = {
            let (rows, ops) = (rows.clone(), ops.clone());
            self.engine
                .store()
                .write(None, move |tx: &mut dyn Tx| {
                    if !rows.is_empty() {
                        tx.check_results_put(&rows)?;
                    }
                    for op in &ops {
                        op.apply(tx)?;
                    }
                    Ok::<_, steward_store::StoreError>(())
                })
                .await
        };
        if let Err(e) = r {
            let mut inner = self.lock();
            let mut back = rows;
            back.append(&mut inner.pending);
            inner.pending = back;
            inner.book.put_back(ops);
            return Err(SecretsError::from(e));
        }
        Ok(())
    }

    /// Runs check `i` once now and records the result (also used by "run now").
    pub async fn run_check(&self, i: usize) -> Arc<Run> {
        let c = &self.compiled.checks[i];
        let at = self.now();
        let started = std::time::Instant::now();
        let outcome = match &c.runner {
            Runner::Probe(p) => {
                // The probe keeps its own timeout; this one only guards against a probe
                // that does not.
                match tokio::time::timeout(
                    c.timeout + Duration::from_secs(1),
                    p.run(&*self.engine, c.timeout),
                )
                .await
                {
                    Ok(o) => o,
                    Err(_) => Outcome {
                        error: Some(format!("no answer within {}s", c.timeout.as_secs_f64())),
                        ..Outcome::default()
                    },
                }
            }
            Runner::Heartbeat { grace } => self.heartbeat_outcome(i, at, *grace),
        };
        let elapsed = started.elapsed();
        self.record(i, at, elapsed, outcome)
    }

    fn heartbeat_outcome(&self, i: usize, now: DateTime<Utc>, grace: Duration) -> Outcome {
        let (last, beats) = {
            let inner = self.lock();
            (inner.live[i].last_beat, inner.live[i].beats)
        };
        let mut o = Outcome::default();
        let grace = ChronoDuration::from_std(grace).unwrap_or(ChronoDuration::MAX);
        o.facts.insert("beats", beats);
        o.facts.insert("response_time", Duration::ZERO);
        match last {
            Some(t) => {
                let late = (now - t - grace).max(ChronoDuration::zero());
                o.facts
                    .insert("since_last_beat", late.to_std().unwrap_or_default());
                if late > ChronoDuration::zero() {
                    o.error = Some(format!(
                        "no beat since {} (grace {}s)",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        grace.num_seconds()
                    ));
                }
            }
            None => {
                o.facts.insert("since_last_beat", Duration::MAX);
                o.error = Some("no beat received yet".into());
            }
        }
        o
    }

    /// Evaluates the condition, moves the state, buffers the result, raises or resolves.
    fn record(&self, i: usize, at: DateTime<Utc>, elapsed: Duration, outcome: Outcome) -> Arc<Run> {
        let c = &self.compiled.checks[i];
        let mut error = outcome.error.clone();
        let ok = error.is_none()
            && match c.condition.eval(&outcome.facts) {
                Ok(true) => true,
                Ok(false) => {
                    error = Some(format!(
                        "condition `{}` is false ({})",
                        c.condition.source(),
                        explain(c, &outcome)
                    ));
                    false
                }
                Err(e) => {
                    error = Some(format!("condition `{}`: {e}", c.condition.source()));
                    false
                }
            };
        let duration = match outcome.facts.get("response_time") {
            Some(Value::Duration(d)) => *d,
            _ => elapsed,
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let last = Arc::new(Run {
            at,
            ok,
            duration,
            error: error.clone(),
            facts: outcome.facts,
            phases: outcome.phases,
        });
        let change = {
            let mut inner = self.lock();
            inner.pending.push(CheckResultRow {
                check: c.name.clone(),
                at,
                ok,
                duration_us: duration.as_micros() as u64,
                error: error.clone(),
            });
            let live = &mut inner.live[i];
            live.last = Some(Arc::clone(&last));
            let before = live.state.health;
            let change = live
                .state
                .record(ok, at, c.fail_after, c.recover_after)
                .map(|h| (before, h));
            // The incident moves with the alert: opened when it fires, closed when it
            // resolves (or at the first good run after a restart).
            if let (Some((_, after)), Some(comp)) = (change, &c.status_page) {
                match after {
                    Health::Down => inner.book.down(comp, &c.name, at),
                    Health::Up => inner.book.up(comp, &c.name, at),
                    Health::Unknown => {}
                }
            }
            change
        };
        if let Some((before, after)) = change {
            tracing::info!(check = %c.name, from = before.as_str(), to = after.as_str(), "check state changed");
            if let Some(alerting) = self.alerting.clone() {
                let labels = self.alert_labels(c);
                let summary = format!("Check {} is down", c.name);
                let description = error.unwrap_or_default();
                tokio::spawn(async move {
                    let r = match after {
                        Health::Down => {
                            let annotations: Labels = [
                                ("summary".to_string(), summary),
                                ("description".to_string(), description),
                            ]
                            .into();
                            alerting.raise(labels, annotations).await.map(drop)
                        }
                        _ => alerting.resolve(&labels).await.map(drop),
                    };
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "checks: cannot update the check's alert");
                    }
                });
            }
        }
        last
    }

    fn alert_labels(&self, c: &Check) -> Labels {
        let mut l: Labels = c.labels.clone();
        l.insert("alertname".into(), ALERT_NAME.into());
        l.insert("check".into(), c.name.clone());
        l.insert("check_type".into(), c.kind.clone());
        l.entry("severity".into())
            .or_insert_with(|| "critical".into());
        l
    }

    /// Derives minute roll-ups from stored results for every whole minute since the
    /// watermark (at most a day per call), and merges them into hours and days, in one
    /// transaction with the new watermark.
    pub async fn roll_up(&self, now: DateTime<Utc>) -> Result<u64> {
        self.flush().await?;
        let current = bucket_start(now.timestamp(), 60);
        let r = self
            .engine
            .store()
            .write(
                None,
                move |tx: &mut dyn Tx| -> std::result::Result<u64, steward_store::StoreError> {
                    let mark = tx
                        .sys_get(WATERMARK_KEY)?
                        .and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok());
                    let Some(from) = mark else {
                        // First start: roll up from now on.
                        tx.sys_put(WATERMARK_KEY, current.to_string().as_bytes())?;
                        return Ok(0);
                    };
                    let to = current.min(from + 86_400);
                    if to <= from {
                        return Ok(0);
                    }
                    let ts = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
                    let rows = tx.check_results_range(None, ts(from), ts(to), u32::MAX)?;
                    let mut minutes: BTreeMap<(String, i64), Agg> = BTreeMap::new();
                    for r in &rows {
                        minutes
                            .entry((r.check.clone(), bucket_start(r.at.timestamp(), 60)))
                            .or_default()
                            .add(r.ok, r.duration_us);
                    }
                    let mut coarse: BTreeMap<(String, &str, i64), Agg> = BTreeMap::new();
                    for ((check, minute), agg) in &minutes {
                        tx.rollup_put(&RollupRow {
                            check: check.clone(),
                            res: "minute".into(),
                            bucket: *minute,
                            doc: serde_json::to_string(agg).unwrap_or_default(),
                        })?;
                        for (res, len) in &RESOLUTIONS[1..] {
                            coarse
                                .entry((check.clone(), res, bucket_start(*minute, *len)))
                                .or_default()
                                .merge(agg);
                        }
                    }
                    for ((check, res, bucket), agg) in coarse {
                        let mut merged = tx
                            .rollup_get(&check, res, bucket)?
                            .and_then(|r| serde_json::from_str::<Agg>(&r.doc).ok())
                            .unwrap_or_default();
                        merged.merge(&agg);
                        tx.rollup_put(&RollupRow {
                            check,
                            res: res.to_string(),
                            bucket,
                            doc: serde_json::to_string(&merged).unwrap_or_default(),
                        })?;
                    }
                    tx.sys_put(WATERMARK_KEY, to.to_string().as_bytes())?;
                    Ok(rows.len() as u64)
                },
            )
            .await
            .map_err(SecretsError::from)?;
        Ok(r)
    }

    /// Deletes raw results and roll-ups past their retention.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<()> {
        let raw = now - ChronoDuration::from_std(self.compiled.raw_retention).unwrap_or_default();
        let keep = ChronoDuration::from_std(self.compiled.rollup_retention).unwrap_or_default();
        let minute_before = (now - ChronoDuration::days(MINUTE_RETENTION_DAYS)).timestamp();
        let coarse_before = (now - keep).timestamp();
        let incidents_before = now - keep;
        self.engine
            .store()
            .write(None, move |tx: &mut dyn Tx| {
                tx.check_results_delete_before(raw)?;
                tx.rollups_delete_before("minute", minute_before)?;
                tx.rollups_delete_before("hour", coarse_before)?;
                tx.rollups_delete_before("day", coarse_before)?;
                // Closed incidents are due at their end; open ones are never pruned.
                tx.record_delete_due(CLOSED, incidents_before)?;
                Ok::<_, steward_store::StoreError>(())
            })
            .await
            .map_err(SecretsError::from)?;
        self.lock().book.prune(incidents_before);
        Ok(())
    }

    /// Every SLO's attainment, budget left and burn rates at `now` (no authorization).
    pub async fn slo_statuses(&self, now: DateTime<Utc>) -> Result<Vec<SloStatus>> {
        self.flush().await?;
        let mut out = Vec::new();
        for slo in &self.compiled.slos {
            let checks = slo.checks.clone();
            let window = slo.window;
            let longest = RULES.iter().map(|r| r.1).max().unwrap_or_default();
            let since = now - ChronoDuration::from_std(longest).unwrap_or_default();
            let from_hour = bucket_start(
                (now - ChronoDuration::from_std(window).unwrap_or_default()).timestamp(),
                3600,
            );
            let to_hour = bucket_start(now.timestamp(), 3600) + 3600;
            let (raw, hours) = self
                .engine
                .store()
                .read(move |tx| {
                    let mut raw = Vec::new();
                    let mut hours = Vec::new();
                    for c in &checks {
                        raw.extend(tx.check_results_range(Some(c), since, now, u32::MAX)?);
                        hours.extend(tx.rollups_range(c, "hour", from_hour, to_hour)?);
                    }
                    Ok::<_, steward_store::StoreError>((raw, hours))
                })
                .await
                .map_err(SecretsError::from)?;
            let mut whole = Counts::default();
            for h in &hours {
                if let Ok(a) = serde_json::from_str::<Agg>(&h.doc) {
                    whole.total += a.total;
                    whole.good += a.up;
                }
            }
            let count = |w: Duration| {
                let from = now - ChronoDuration::from_std(w).unwrap_or_default();
                let mut c = Counts::default();
                for r in raw.iter().filter(|r| r.at >= from) {
                    c.add(r.ok);
                }
                c
            };
            let mut burn = Vec::new();
            for (label, w) in [
                ("5m", Duration::from_secs(300)),
                ("30m", Duration::from_secs(1800)),
                ("1h", Duration::from_secs(3600)),
                ("6h", Duration::from_secs(6 * 3600)),
            ] {
                burn.push((label.to_string(), slo.burn_rate(count(w))));
            }
            let burning = RULES
                .iter()
                .filter(|(_, long, short, threshold, _)| {
                    slo.burn_rate(count(*long)) >= *threshold
                        && slo.burn_rate(count(*short)) >= *threshold
                })
                .map(|r| r.0.to_string())
                .collect();
            out.push(SloStatus {
                name: slo.name.clone(),
                checks: slo.checks.clone(),
                objective: slo.objective,
                window_days: window.as_secs_f64() / 86_400.0,
                attained: (whole.total > 0).then(|| whole.good as f64 / whole.total as f64),
                runs: whole.total,
                budget_left: slo.budget_left(whole),
                burn,
                burning,
            });
        }
        Ok(out)
    }

    /// Raises and resolves `SLOBurnRate{slo, speed}` as the burn-rate rules start and stop
    /// firing.
    pub async fn evaluate_slos(&self, now: DateTime<Utc>) -> Result<Vec<SloStatus>> {
        let statuses = self.slo_statuses(now).await?;
        let Some(alerting) = self.alerting.clone() else {
            return Ok(statuses);
        };
        for (st, slo) in statuses.iter().zip(&self.compiled.slos) {
            if !slo.alerts {
                continue;
            }
            for (speed, _, _, threshold, severity) in RULES {
                let labels: Labels = [
                    ("alertname".to_string(), SLO_ALERT.to_string()),
                    ("slo".to_string(), st.name.clone()),
                    ("speed".to_string(), speed.to_string()),
                    ("severity".to_string(), severity.to_string()),
                ]
                .into();
                let key = (st.name.clone(), speed.to_string());
                let now_burning = st.burning.iter().any(|s| s == speed);
                let was = self.lock().burning.contains(&key);
                if now_burning && !was {
                    let annotations: Labels = [
                        (
                            "summary".to_string(),
                            format!(
                                "SLO {} burns its error budget {speed} (over {threshold}x)",
                                st.name
                            ),
                        ),
                        (
                            "description".to_string(),
                            format!(
                                "objective {:.3}%, budget left {:.1}%, burn rates {}",
                                st.objective * 100.0,
                                st.budget_left * 100.0,
                                st.burn
                                    .iter()
                                    .map(|(w, b)| format!("{w}={b:.1}"))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            ),
                        ),
                    ]
                    .into();
                    alerting.raise(labels, annotations).await?;
                    self.lock().burning.insert(key);
                } else if !now_burning {
                    // Also resolves one left firing before a restart; resolving an alert that
                    // is not active changes nothing and writes nothing.
                    alerting.resolve(&labels).await?;
                    self.lock().burning.remove(&key);
                }
            }
        }
        Ok(statuses)
    }

    /// `GET /v1/slos`.
    pub async fn slos(&self, ctx: &RequestCtx) -> Result<Vec<SloStatus>> {
        let draft = self
            .authorize(ctx, "checks.slos", "checks", Capability::Read)
            .await?;
        let r = self.slo_statuses(self.now()).await;
        self.engine.complete(ctx, draft, r).await
    }

    /// The public status page's data at `now`: components (checks with `status_page`,
    /// grouped by its value; a component is as bad as its worst check) with their uptime per
    /// day for the last `days` days from the day roll-ups, open incidents, incidents closed in
    /// those days, and public maintenance windows in progress or starting within 7 days. No
    /// authorization: the page is public, so it carries component names, states, uptime,
    /// times and public windows' names and comments only, never check names, settings,
    /// errors, facts, labels or matchers.
    pub async fn status_page(&self, now: DateTime<Utc>, days: u32) -> Result<StatusPage> {
        let mut comps: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, c) in self.compiled.checks.iter().enumerate() {
            if let Some(name) = &c.status_page {
                comps.entry(name.clone()).or_default().push(i);
            }
        }
        let today = bucket_start(now.timestamp(), 86_400);
        let from = today - 86_400 * i64::from(days.saturating_sub(1));
        let history = self.day_history(&comps, now, from, today).await?;
        let windows = self
            .alerting
            .as_ref()
            .map(|a| a.public_windows())
            .unwrap_or_default();
        let maintenance = self.scheduled_maintenance(&comps, &windows, now);
        let since = DateTime::from_timestamp(from, 0).unwrap_or_default();
        let ts = |d: i64| DateTime::from_timestamp(d, 0).unwrap_or_default();
        let inner = self.lock();
        let mut out = Vec::new();
        for (name, idx) in &comps {
            let per_day = history.get(name).cloned().unwrap_or_default();
            let open = inner.book.open_of(name);
            let mine: Vec<&Incident> = open
                .into_iter()
                .chain(inner.book.past(since).filter(|i| &i.component == name))
                .collect();
            let days_v = (0..i64::from(days))
                .map(|k| {
                    let d = from + k * 86_400;
                    DayUptime {
                        day: ts(d),
                        uptime: per_day.get(&d).and_then(Agg::uptime),
                        incidents: mine
                            .iter()
                            .filter(|i| i.overlaps(ts(d), ts(d + 86_400), now))
                            .count() as u32,
                    }
                })
                .collect::<Vec<_>>();
            // The state is read live; only the day history comes from the store (cached).
            let states: Vec<&CheckState> = idx.iter().map(|i| &inner.live[*i].state).collect();
            let health = if states.iter().any(|s| s.health == Health::Down) {
                Health::Down
            } else if states.iter().all(|s| s.health == Health::Up) {
                Health::Up
            } else if open.is_some() {
                // Restarted while down: the incident is open until a check proves it up.
                Health::Down
            } else {
                Health::Unknown
            };
            let down_since = (health == Health::Down)
                .then(|| {
                    open.map(|i| i.started_at).or_else(|| {
                        states
                            .iter()
                            .filter(|s| s.health == Health::Down)
                            .filter_map(|s| s.since)
                            .min()
                    })
                })
                .flatten();
            let total = per_day.values().fold(Agg::default(), |mut a, b| {
                a.merge(b);
                a
            });
            out.push(Component {
                name: name.clone(),
                health,
                down_since,
                maintenance: maintenance
                    .iter()
                    .any(|m| m.in_progress && m.components.contains(name)),
                uptime: total.uptime(),
                days: days_v,
            });
        }
        Ok(StatusPage {
            components: out,
            open_incidents: inner.book.open().iter().map(|i| i.public()).collect(),
            past_incidents: inner.book.past(since).map(Incident::public).collect(),
            maintenance,
        })
    }

    /// Public `windows` in progress at `now` or starting within [`MAINTENANCE_AHEAD`], each
    /// once (a recurring one with its occurrence in progress, or else its next one), by
    /// start, with the components whose checks' alert labels they match.
    fn scheduled_maintenance(
        &self,
        comps: &BTreeMap<String, Vec<usize>>,
        windows: &[CompiledWindow],
        now: DateTime<Utc>,
    ) -> Vec<ScheduledMaintenance> {
        let labels: Vec<(&String, Vec<Labels>)> = comps
            .iter()
            .map(|(name, idx)| {
                let l = idx
                    .iter()
                    .map(|i| self.alert_labels(&self.compiled.checks[*i]))
                    .collect();
                (name, l)
            })
            .collect();
        let mut out = Vec::new();
        for w in windows {
            let covered: Vec<String> = labels
                .iter()
                .filter(|(_, ls)| ls.iter().any(|l| w.matches(l)))
                .map(|(name, _)| (*name).clone())
                .collect();
            let title = if w.doc.name.trim().is_empty() {
                "Scheduled maintenance".to_string()
            } else {
                w.doc.name.clone()
            };
            if let Some((start, end)) = w.occurrences(now, now + MAINTENANCE_AHEAD, 1).pop() {
                out.push(ScheduledMaintenance {
                    title,
                    comment: w.doc.comment.clone(),
                    starts_at: start,
                    ends_at: end,
                    in_progress: start <= now && now < end,
                    recurring: w.doc.cron.is_some(),
                    components: covered,
                });
            }
        }
        out.sort_by(|a, b| (a.starts_at, &a.title).cmp(&(b.starts_at, &b.title)));
        out.truncate(MAINTENANCE_MAX);
        out
    }

    /// Each component's day roll-ups from `from` to `today`, in one store read, reused for
    /// [`HISTORY_TTL`]: the page is public, and its history changes only as days roll up.
    async fn day_history(
        &self,
        comps: &BTreeMap<String, Vec<usize>>,
        now: DateTime<Utc>,
        from: i64,
        today: i64,
    ) -> Result<Arc<History>> {
        if let Some((at, key, h)) = &*self.history.lock().unwrap_or_else(|e| e.into_inner()) {
            if *key == (from, today) && now - *at < HISTORY_TTL && now >= *at {
                return Ok(h.clone());
            }
        }
        let wanted: Vec<(String, String)> = comps
            .iter()
            .flat_map(|(comp, idx)| {
                idx.iter()
                    .map(|i| (comp.clone(), self.compiled.checks[*i].name.clone()))
            })
            .collect();
        let rows = self
            .engine
            .store()
            .read(move |tx| {
                let mut v = Vec::new();
                for (comp, check) in &wanted {
                    for r in tx.rollups_range(check, "day", from, today + 86_400)? {
                        v.push((comp.clone(), r));
                    }
                }
                Ok::<_, steward_store::StoreError>(v)
            })
            .await
            .map_err(SecretsError::from)?;
        let mut h = History::new();
        for (comp, r) in rows {
            if let Ok(a) = serde_json::from_str::<Agg>(&r.doc) {
                h.entry(comp)
                    .or_default()
                    .entry(r.bucket)
                    .or_default()
                    .merge(&a);
            }
        }
        let h = Arc::new(h);
        *self.history.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((now, (from, today), h.clone()));
        Ok(h)
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let mut s = Stats {
            runs: self.runs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            lag_p50_ms: inner.lag.quantile_us(0.5).map(|v| v / 1000.0),
            lag_p99_ms: inner.lag.quantile_us(0.99).map(|v| v / 1000.0),
            lag_max_ms: inner.lag.max_us as f64 / 1000.0,
            ..Stats::default()
        };
        for l in &inner.live {
            match l.state.health {
                Health::Up => s.up += 1,
                Health::Down => s.down += 1,
                Health::Unknown => s.unknown += 1,
            }
        }
        s
    }

    /// Every check's state and last run as recorded (no JSON made): what `/metrics` reads on
    /// each scrape.
    pub fn latest(&self) -> Vec<(&Check, Health, Option<Arc<Run>>)> {
        let inner = self.lock();
        self.compiled
            .checks
            .iter()
            .zip(&inner.live)
            .map(|(c, l)| (c, l.state.health, l.last.clone()))
            .collect()
    }

    /// Every check with its state and last run (no authorization: for tests and listings).
    pub fn infos(&self) -> Vec<CheckInfo> {
        let inner = self.lock();
        (0..self.compiled.checks.len())
            .map(|i| self.info_of(i, &inner))
            .collect()
    }

    fn info_of(&self, i: usize, inner: &Inner) -> CheckInfo {
        let (c, l) = (&self.compiled.checks[i], &inner.live[i]);
        CheckInfo {
            name: c.name.clone(),
            kind: c.kind.clone(),
            health: l.state.health,
            since: l.state.since,
            interval_s: c.interval.as_secs_f64(),
            condition: c.condition.source().to_string(),
            depends_on: c.depends_on.clone(),
            labels: c.labels.clone(),
            status_page: c.status_page.clone(),
            last: l.last.as_ref().map(|r| r.view()),
            fails_in_a_row: l.state.fails,
        }
    }

    fn find(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| {
            SecretsError::not_found(format!(
                "no check is named {name:?}; `steward checks list` shows the configured ones"
            ))
        })
    }

    // ---- operations for the API (authorized and audited) ----------------------------------

    async fn authorize(
        &self,
        ctx: &RequestCtx,
        action: &str,
        area: &str,
        cap: Capability,
    ) -> Result<steward_store::AuditDraft> {
        let (caller, draft) = self.engine.authorize(ctx, action, None, cap).await?;
        if let Err(e) = caller.require(cap, "sys", area) {
            return self.engine.complete(ctx, draft, Err(e)).await;
        }
        Ok(draft)
    }

    /// `GET /v1/checks`.
    pub async fn list(&self, ctx: &RequestCtx) -> Result<Vec<CheckInfo>> {
        let draft = self
            .authorize(ctx, "checks.list", "checks", Capability::Read)
            .await?;
        self.engine.complete(ctx, draft, Ok(self.infos())).await
    }

    /// Every check with its roll-ups at `res` for the last `buckets` buckets (the
    /// dashboard's list), read in one store transaction and authorized once.
    pub async fn history(
        &self,
        ctx: &RequestCtx,
        res: &str,
        buckets: u32,
    ) -> Result<Vec<(CheckInfo, Vec<RollupInfo>)>> {
        let draft = self
            .authorize(ctx, "checks.list", "checks", Capability::Read)
            .await?;
        let r = self.history_inner(res, buckets).await;
        self.engine.complete(ctx, draft, r).await
    }

    async fn history_inner(
        &self,
        res: &str,
        buckets: u32,
    ) -> Result<Vec<(CheckInfo, Vec<RollupInfo>)>> {
        let len = resolution_len(res)?;
        self.flush().await?;
        let infos = self.infos();
        let names: Vec<String> = infos.iter().map(|c| c.name.clone()).collect();
        let (from, to) = window(self.now().timestamp(), len, buckets);
        let res_s = res.to_string();
        let rows = self
            .engine
            .store()
            .read(move |tx| {
                names
                    .iter()
                    .map(|n| tx.rollups_range(n, &res_s, from, to))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .await
            .map_err(SecretsError::from)?;
        Ok(infos
            .into_iter()
            .zip(rows)
            .map(|(info, rows)| {
                let sparse: Vec<RollupInfo> =
                    rows.iter().filter_map(RollupInfo::from_row).collect();
                (info, dense(&sparse, from, to, len))
            })
            .collect())
    }

    /// `GET /v1/checks/{name}`: the check, its latest runs, and roll-ups at `res` for the
    /// last `buckets` buckets.
    pub async fn show(
        &self,
        ctx: &RequestCtx,
        name: &str,
        res: &str,
        buckets: u32,
    ) -> Result<(CheckInfo, Vec<CheckResultRow>, Vec<RollupInfo>)> {
        let draft = self
            .authorize(ctx, "checks.show", "checks", Capability::Read)
            .await?;
        let r = self.show_inner(name, res, buckets).await;
        self.engine.complete(ctx, draft, r).await
    }

    async fn show_inner(
        &self,
        name: &str,
        res: &str,
        buckets: u32,
    ) -> Result<(CheckInfo, Vec<CheckResultRow>, Vec<RollupInfo>)> {
        let i = self.find(name)?;
        let len = resolution_len(res)?;
        self.flush().await?;
        let info = self.info_of(i, &self.lock());
        let check = name.to_string();
        let (from, to) = window(self.now().timestamp(), len, buckets);
        let res_s = res.to_string();
        let (latest, rollups) = self
            .engine
            .store()
            .read(move |tx| {
                Ok::<_, steward_store::StoreError>((
                    tx.check_results_latest(&check, 100)?,
                    tx.rollups_range(&check, &res_s, from, to)?,
                ))
            })
            .await
            .map_err(SecretsError::from)?;
        let rollups = rollups.iter().filter_map(RollupInfo::from_row).collect();
        Ok((info, latest, rollups))
    }

    /// `POST /v1/checks/{name}/run`: runs the check now and returns the run.
    pub async fn run_now(&self, ctx: &RequestCtx, name: &str) -> Result<LastRun> {
        let draft = self
            .authorize(ctx, "checks.run", "checks", Capability::Write)
            .await?;
        let r = match self.find(name) {
            Ok(i) => Ok(self.run_check(i).await.view()),
            Err(e) => Err(e),
        };
        self.engine.complete(ctx, draft, r).await
    }

    /// `POST /v1/checks/{name}/beat`: a heartbeat from a cron job or worker (`ok = false`
    /// reports a failed job at once). Needs write on `sys/heartbeats/<name>`.
    pub async fn beat(
        &self,
        ctx: &RequestCtx,
        name: &str,
        ok: bool,
        message: Option<String>,
    ) -> Result<()> {
        let draft = self
            .authorize(
                ctx,
                "checks.beat",
                &format!("heartbeats/{name}"),
                Capability::Write,
            )
            .await?;
        let r = self.beat_inner(name, ok, message);
        self.engine.complete(ctx, draft, r).await
    }

    fn beat_inner(&self, name: &str, ok: bool, message: Option<String>) -> Result<()> {
        let i = self.find(name)?;
        if !matches!(self.compiled.checks[i].runner, Runner::Heartbeat { .. }) {
            return Err(SecretsError::invalid(
                "not_a_heartbeat",
                format!("check {name:?} is not a heartbeat check (type = \"heartbeat\")"),
            ));
        }
        let now = self.now();
        let mut o = Outcome::default();
        o.facts.insert("since_last_beat", Duration::ZERO);
        o.facts.insert("response_time", Duration::ZERO);
        {
            let mut inner = self.lock();
            let live = &mut inner.live[i];
            live.beats += 1;
            o.facts.insert("beats", live.beats);
            if ok {
                live.last_beat = Some(now);
            }
        }
        if !ok {
            let mut m = message.unwrap_or_else(|| "the job reported a failure".into());
            m.truncate(500);
            o.error = Some(m);
        }
        self.record(i, now, Duration::ZERO, o);
        Ok(())
    }
}
