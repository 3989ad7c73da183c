//! The `Alerting` service: owns the [`Pipeline`], persists it through the store, runs the
//! evaluation loop (events to alerts, flushes, delivery, heartbeat, log pruning), and offers
//! the operations behind the API and the CLI, each authorized against `sys/<area>` and
//! audited like every other request.
//!
//! Persistence (`records` kinds): `alert` (per fingerprint), `group` (notification state),
//! `silence`, `maintenance`, `rulecount`, `outbox`, `dead`, `notifylog`; the event cursor is
//! the `sys` key `alerting/events/cursor`. Ingested alerts are written before the request is
//! answered; a group's new state and the notifications it produced commit together.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use steward_core::alerting::{AlertingConfig, DeliveryConfig, HeartbeatConfig};
use steward_secrets::{policy::Capability, Caller, Engine, RequestCtx, Result, SecretsError};
use steward_store::AuditDraft;
use steward_store::{RecordRow, Tx};
use tokio::sync::{watch, Notify, Semaphore};
use zeroize::Zeroizing;

use crate::{
    channels::{Channel, SendError},
    config::prepare,
    matchers::{parse_list, valid_label_name},
    model::{fingerprint, Labels, Notification},
    mutes::{ApiMatcher, CompiledWindow, Maintenance, Silence},
    outbox::{backoff, LogEntry, OutboxItem, DEAD, LOG, OUTBOX},
    pipeline::{Ack, AlertDoc, AlertInfo, Flush, GroupState, Pipeline, CHANNEL_FAILING},
    rules::{Action, Counter, RuleEngine},
    ConfigError,
};

const CURSOR_KEY: &str = "alerting/events/cursor";
/// How often the loop looks for work when nothing wakes it (it adds at most this to a
/// notification's latency beyond group_wait).
const TICK: Duration = Duration::from_millis(100);
/// A loop pass longer than this is logged with its phases (it delays notifications).
const SLOW_PASS: Duration = Duration::from_millis(100);

/// An alert as the Alertmanager API v2 posts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    #[serde(default, deserialize_with = "de_starts")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "de_ends")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

/// An RFC 3339 time (or null), with an error that names the field and the expected form.
fn de_time_named<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &str,
) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&s)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "{field} {s:?} is not an RFC 3339 time; write it like 2026-12-01T10:00:00Z"
            ))
        })
}

fn de_starts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    de_time_named(d, "startsAt")
}

fn de_ends<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    de_time_named(d, "endsAt")
}

/// A silence as the Alertmanager API v2 posts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<ApiMatcher>,
    /// Default: now (the server's clock).
    #[serde(default, deserialize_with = "de_starts")]
    pub starts_at: Option<DateTime<Utc>>,
    /// Required unless `duration` is given.
    #[serde(default, deserialize_with = "de_ends")]
    pub ends_at: Option<DateTime<Utc>>,
    /// Steward's extension: the length from the start (e.g. `2h`) instead of `endsAt`.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// A maintenance window request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Instead of `ends_at`: how long from the start, e.g. `30m`.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub comment: String,
    /// Show the window on the public status page (name, comment, times; never matchers or
    /// author). Default false.
    #[serde(default)]
    pub public: bool,
}

/// A window as listed.
#[derive(Debug, Clone, Serialize)]
pub struct WindowInfo {
    #[serde(flatten)]
    pub doc: Maintenance,
    pub active: bool,
    pub current_end: Option<DateTime<Utc>>,
    pub next_start: Option<DateTime<Utc>>,
}

/// The alerting service.
pub struct Alerting {
    engine: Arc<Engine>,
    pipeline: Mutex<Pipeline>,
    rules: Mutex<RuleEngine>,
    channels: HashMap<String, Arc<dyn Channel>>,
    delivery: DeliveryConfig,
    heartbeat: Option<HeartbeatConfig>,
    http: reqwest::Client,
    wake: Notify,
    /// Delivery order per (channel, dedup key): keys with a send in flight, and the oldest
    /// pending notification of keys waiting for a retry (later ones wait behind it).
    order: Mutex<Order>,
    counters: Counters,
    /// The event cursor once read (see `follow_events`).
    cursor: Mutex<Option<u64>>,
    permits: Arc<Semaphore>,
    /// When the loop last completed a pass (the dead man's switch beats only while it does).
    last_pass: Mutex<Option<DateTime<Utc>>>,
    /// How far `endsAt` may move before a re-posted alert is written again.
    slack: ChronoDuration,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting")
            .field("channels", &self.channels.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn bad(code: &'static str, msg: impl Into<String>) -> SecretsError {
    SecretsError::invalid(code, msg)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> SecretsError {
    SecretsError::internal(format!("stored {what} does not parse ({e})"))
}

impl Alerting {
    /// Compiles the config and builds the channels (nothing is read from the store yet).
    pub fn new(
        engine: Arc<Engine>,
        cfg: &AlertingConfig,
    ) -> std::result::Result<Arc<Self>, ConfigError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| {
                ConfigError::new("alerting", format!("cannot build the HTTP client: {e}"))
            })?;
        let (compiled, channels) = prepare(cfg, &http)?;
        let rules = RuleEngine::new(compiled.rules.clone(), HashMap::new());
        let slack = ChronoDuration::from_std(compiled.resolve_timeout / 4)
            .unwrap_or(ChronoDuration::seconds(60))
            .min(ChronoDuration::seconds(60));
        Ok(Arc::new(Self {
            engine,
            pipeline: Mutex::new(Pipeline::new(compiled)),
            rules: Mutex::new(rules),
            channels,
            permits: Arc::new(Semaphore::new(cfg.delivery.concurrency.max(1))),
            delivery: cfg.delivery.clone(),
            heartbeat: cfg.heartbeat.clone(),
            http,
            wake: Notify::new(),
            order: Mutex::new(Order::default()),
            counters: Counters::default(),
            cursor: Mutex::new(None),
            last_pass: Mutex::new(None),
            slack,
        }))
    }

    fn now(&self) -> DateTime<Utc> {
        self.engine.clock().now()
    }

    fn pipe(&self) -> std::sync::MutexGuard<'_, Pipeline> {
        self.pipeline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record of `kind`.
    async fn all(&self, kind: &'static str) -> Result<Vec<RecordRow>> {
        Ok(self.engine.store().records(kind).await?)
    }

    /// Loads alerts, groups, silences, windows and flap counters from the store.
    pub async fn load(&self) -> Result<()> {
        let all = |kind| self.all(kind);
        let now = self.now();
        let groups = all("group")
            .await?
            .into_iter()
            .map(|r| serde_json::from_str::<GroupState>(&r.doc).map_err(|e| corrupt("group", e)))
            .collect::<Result<Vec<_>>>()?;
        let alerts = all("alert")
            .await?
            .into_iter()
            .map(|r| {
                Ok((
                    r.id,
                    serde_json::from_str::<AlertDoc>(&r.doc).map_err(|e| corrupt("alert", e))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let silences = all("silence").await?;
        let windows = all("maintenance").await?;
        let counters = all("rulecount").await?;
        let mut p = self.pipe();
        p.restore(groups, alerts, now);
        for s in silences {
            let s: Silence = serde_json::from_str(&s.doc).map_err(|e| corrupt("silence", e))?;
            p.set_silence(s).map_err(|e| corrupt("silence", e))?;
        }
        for w in windows {
            let m: Maintenance =
                serde_json::from_str(&w.doc).map_err(|e| corrupt("maintenance window", e))?;
            let key = format!("maintenance {}", m.id);
            p.set_window(
                CompiledWindow::compile(m, &key).map_err(|e| corrupt("maintenance window", e))?,
            );
        }
        drop(p);
        let mut r = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for c in counters {
            if let Ok(v) = serde_json::from_str::<Counter>(&c.doc) {
                r.counters.insert(c.id, v);
            }
        }
        Ok(())
    }

    /// The loop: every 100 ms (or when woken) follow events, evaluate, deliver; beat the
    /// heartbeat and prune the log on their own intervals. Ends when `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut loaded = false;
        let mut last_beat: Option<DateTime<Utc>> = None;
        let mut last_prune: Option<DateTime<Utc>> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !loaded {
                match self.load().await {
                    Ok(()) => loaded = self.load_outbox().await.is_ok(),
                    Err(e) => {
                        tracing::warn!(error = %e, "alerting: cannot load state yet; retrying")
                    }
                }
            }
            if loaded {
                let t0 = std::time::Instant::now();
                let ok = self.follow_events().await.is_ok();
                let t1 = t0.elapsed();
                let ok = self.evaluate().await.is_ok() & ok;
                let t2 = t0.elapsed();
                self.clone().deliver().await;
                let t3 = t0.elapsed();
                if t3 > SLOW_PASS {
                    tracing::info!(
                        events_ms = t1.as_millis() as u64,
                        evaluate_ms = (t2 - t1).as_millis() as u64,
                        deliver_ms = (t3 - t2).as_millis() as u64,
                        "alerting: slow pass"
                    );
                }
                let now = self.now();
                if ok {
                    *self.last_pass.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                }
                if let Some(h) = &self.heartbeat {
                    if ok && last_beat.is_none_or(|t| now - t >= crate::pipeline::dur(h.interval)) {
                        last_beat = Some(now);
                        self.beat(h).await;
                    }
                }
                if last_prune.is_none_or(|t| now - t >= ChronoDuration::minutes(10)) {
                    last_prune = Some(now);
                    let before = now - crate::pipeline::dur(self.delivery.log_retention);
                    let _ = self
                        .engine
                        .store()
                        .write(None, move |tx: &mut dyn Tx| {
                            tx.record_delete_due(LOG, before)
                        })
                        .await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Turns new events into alerts; the cursor, counters and alerts commit together.
    async fn follow_events(&self) -> Result<()> {
        let store = self.engine.store();
        // The stored cursor is read once; afterwards this loop is its only writer and keeps
        // it in memory (no store read per pass).
        let known = *self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let cursor = match known {
            Some(c) => c,
            None => {
                let stored = store
                    .read(|tx| tx.sys_get(CURSOR_KEY))
                    .await
                    .map_err(SecretsError::from)?;
                let c = match stored {
                    Some(v) => String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0),
                    None => {
                        // First start: alert on what happens from now on, not on history.
                        let last = store
                            .read(|tx| tx.events_last_seq())
                            .await
                            .map_err(SecretsError::from)?;
                        store
                            .write(None, move |tx: &mut dyn Tx| {
                                tx.sys_put(CURSOR_KEY, last.to_string().as_bytes())
                            })
                            .await
                            .map_err(SecretsError::from)?;
                        last
                    }
                };
                *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                c
            }
        };
        let events = store
            .read(move |tx| tx.events_after(cursor, 256))
            .await
            .map_err(SecretsError::from)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        let now = self.now();
        let mut puts: Vec<RecordRow> = Vec::new();
        let mut outbox = Vec::new();
        {
            let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
            let mut p = self.pipe();
            for ev in &events {
                let (actions, counters) = rules.on_event(ev, now);
                for (id, c) in counters {
                    puts.push(RecordRow {
                        kind: "rulecount".into(),
                        id,
                        doc: serde_json::to_string(&c).expect("counters serialize"),
                        due_at: None,
                    });
                }
                for a in actions {
                    match a {
                        Action::Raise(mut doc) => {
                            let fp = fingerprint(&doc.labels);
                            if let Some(old) = p.get(&fp) {
                                if old.state(now) != crate::model::AlertState::Resolved {
                                    doc.fire_at = old.fire_at;
                                }
                            }
                            let (fp, _) = p.upsert(doc, now, ChronoDuration::zero());
                            puts.push(alert_row(&fp, p.get(&fp).expect("just inserted")));
                        }
                        Action::Resolve(fp) => {
                            if p.resolve(&fp, now) {
                                puts.push(alert_row(&fp, p.get(&fp).expect("present")));
                            }
                        }
                        Action::Change(labels, summary) => {
                            for n in p.change(labels, summary, now) {
                                outbox.push(OutboxItem::new(n, now));
                            }
                        }
                    }
                }
            }
        }
        let rows: Vec<RecordRow> = outbox
            .iter()
            .map(|o| o.row(OUTBOX, Some(o.first_at)))
            .collect();
        store
            .write(None, move |tx: &mut dyn Tx| {
                for r in puts.iter().chain(&rows) {
                    tx.record_put(r)?;
                }
                tx.sys_put(CURSOR_KEY, last.to_string().as_bytes())
            })
            .await
            .map_err(SecretsError::from)?;
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
        self.enqueue(outbox.into_iter().map(|o| (o.first_at, o)));
        Ok(())
    }

    /// One evaluation; its group states and notifications commit together or not at all.
    async fn evaluate(&self) -> Result<()> {
        let now = self.now();
        let t = std::time::Instant::now();
        let flush = self.pipe().evaluate(now);
        let computed = t.elapsed();
        let r = self.persist(flush, now, None).await.map(drop);
        if t.elapsed() > SLOW_PASS {
            tracing::info!(
                compute_ms = computed.as_millis() as u64,
                store_ms = (t.elapsed() - computed).as_millis() as u64,
                "alerting: slow evaluation"
            );
        }
        r
    }

    /// Writes a flush (group states, deletions, outbox rows), with `draft` as its audit
    /// entry when a request caused it; undoes it in memory if the write fails.
    async fn persist(
        &self,
        mut flush: Flush,
        now: DateTime<Utc>,
        draft: Option<AuditDraft>,
    ) -> Result<usize> {
        if flush.is_empty() && draft.is_none() {
            return Ok(0);
        }
        let groups: Vec<RecordRow> = flush
            .groups_put
            .iter()
            .map(|g| RecordRow {
                kind: "group".into(),
                id: g.id.clone(),
                doc: serde_json::to_string(g).expect("groups serialize"),
                due_at: None,
            })
            .collect();
        let deleted = flush.groups_deleted.clone();
        let alerts_deleted = flush.alerts_deleted.clone();
        let items: Vec<OutboxItem> = std::mem::take(&mut flush.notifications)
            .into_iter()
            .map(|n| OutboxItem::new(n, now))
            .collect();
        let rows: Vec<RecordRow> = items.iter().map(|i| i.row(OUTBOX, Some(now))).collect();
        let count = items.len();
        let r = self
            .engine
            .store()
            .write(draft, move |tx: &mut dyn Tx| -> Result<()> {
                for g in &groups {
                    tx.record_put(g)?;
                }
                for g in &deleted {
                    tx.record_delete("group", g)?;
                }
                for a in &alerts_deleted {
                    tx.record_delete("alert", a)?;
                }
                for i in &rows {
                    tx.record_put(i)?;
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                self.enqueue(items.into_iter().map(|i| (now, i)));
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(error = %e, "alerting: cannot store a flush; it will be evaluated again");
                self.pipe().undo(flush, now);
                Err(e)
            }
        }
    }

    // ---- delivery ------------------------------------------------------------------------

    /// Reads the outbox once, after a (re)start, into the in-memory queue, and notes the
    /// oldest pending notification per key. From then on the queue is fed by the writes that
    /// add or reschedule outbox rows, after they commit: delivery never reads the store.
    /// A row that does not parse goes to the dead letters.
    async fn load_outbox(&self) -> Result<()> {
        let mut items = Vec::new();
        for row in self.all(OUTBOX).await? {
            match serde_json::from_str::<OutboxItem>(&row.doc) {
                Ok(item) => items.push((row.due_at.unwrap_or_else(|| self.now()), item)),
                Err(_) => {
                    tracing::error!(id = %row.id, "alerting: an outbox row does not parse; moving it to the dead letters");
                    let id = row.id.clone();
                    self.engine
                        .store()
                        .write(None, move |tx: &mut dyn Tx| {
                            tx.record_delete(OUTBOX, &id)?;
                            tx.record_put(&RecordRow {
                                kind: DEAD.into(),
                                ..row
                            })
                        })
                        .await
                        .map_err(SecretsError::from)?;
                }
            }
        }
        {
            let mut o = self.order.lock().unwrap_or_else(|e| e.into_inner());
            // Ids grow with creation time: the first seen per key is its oldest.
            for (_, item) in &items {
                let n = &item.notification;
                o.waiting
                    .entry((n.channel.clone(), n.dedup_key.clone()))
                    .or_insert(n.id.clone());
            }
        }
        self.enqueue(items);
        Ok(())
    }

    /// Queues committed outbox items for delivery at their due time and wakes the loop.
    fn enqueue(&self, items: impl IntoIterator<Item = (DateTime<Utc>, OutboxItem)>) {
        let mut o = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let before = o.queue.len();
        for (due, item) in items {
            o.queue.insert((due, item.notification.id.clone()), item);
        }
        if o.queue.len() > before {
            self.wake.notify_one();
        }
    }

    /// Starts a send for every due notification whose key is free: one send per (channel,
    /// dedup key) at a time, oldest first, so a resolve never overtakes its firing.
    async fn deliver(self: Arc<Self>) {
        let now = self.now();
        let due: Vec<OutboxItem> = {
            let mut o = self.order.lock().unwrap_or_else(|e| e.into_inner());
            let later = o.queue.split_off(&(now, String::from("\u{10ffff}")));
            let due = std::mem::replace(&mut o.queue, later);
            let mut ready = Vec::new();
            for ((at, id), item) in due {
                let n = &item.notification;
                let key = (n.channel.clone(), n.dedup_key.clone());
                if o.busy.contains(&key) || o.waiting.get(&key).is_some_and(|w| *w != n.id) {
                    // Behind a send in flight or a retry: stays queued, in order.
                    o.queue.insert((at, id), item);
                    continue;
                }
                o.busy.insert(key);
                ready.push(item);
            }
            ready
        };
        for item in due {
            let key = (
                item.notification.channel.clone(),
                item.notification.dedup_key.clone(),
            );
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let release = {
                    let me = me.clone();
                    move || {
                        me.order
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .busy
                            .remove(&key);
                        drop(permit);
                        // The key is free: a notification queued behind it may go now.
                        me.wake.notify_one();
                    }
                };
                me.send_one(item, release).await;
            });
        }
    }

    /// Sends one notification, calls `release` (frees its key and its concurrency slot) as
    /// soon as the provider answered, then records the outcome. Not holding the slot during
    /// that write keeps sends flowing while the store commits: a crash before the write
    /// commits sends the notification again after the restart (at least once, in order).
    async fn send_one(&self, mut item: OutboxItem, release: impl FnOnce()) {
        let channel = item.notification.channel.clone();
        let result = match self.channels.get(&channel) {
            Some(ch) => ch.send(&item.notification, &*self.engine).await,
            None => Err(SendError::permanent(format!(
                "channel {channel:?} is no longer configured"
            ))),
        };
        let now = self.now();
        item.attempts += 1;
        let id = item.notification.id.clone();
        let will_retry = matches!(&result, Err(SendError::Retryable { .. }))
            && item.attempts < self.delivery.max_attempts;
        if will_retry {
            // Later notifications of this key wait behind this one's retry.
            let n = &item.notification;
            let mut o = self.order.lock().unwrap_or_else(|e| e.into_inner());
            o.waiting
                .insert((n.channel.clone(), n.dedup_key.clone()), n.id.clone());
        }
        release();
        match result {
            Ok(()) => {
                self.counters
                    .sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let log = LogEntry::new(&item, now, "sent", None).row();
                let r = self
                    .engine
                    .store()
                    .write(None, move |tx: &mut dyn Tx| {
                        tx.record_delete(OUTBOX, &id)?;
                        tx.record_put(&log)
                    })
                    .await;
                match r {
                    Ok(()) => self.done(&item.notification),
                    Err(e) => {
                        tracing::warn!(error = %e, "alerting: sent, but cannot record it; it may be sent again")
                    }
                }
                self.channel_recovered(&channel).await;
            }
            Err(e) => {
                let reason = e.to_string();
                let retry = match &e {
                    SendError::Retryable { retry_after, .. }
                        if item.attempts < self.delivery.max_attempts =>
                    {
                        Some(backoff(
                            item.attempts,
                            self.delivery.retry_base,
                            self.delivery.retry_max,
                            *retry_after,
                        ))
                    }
                    _ => None,
                };
                item.last_error = Some(reason.clone());
                match retry {
                    Some(wait) => {
                        self.counters
                            .retried
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(channel = %channel, attempt = item.attempts, error = %reason, "alerting: send failed; will retry");
                        let due = now + crate::pipeline::dur(wait);
                        let log = LogEntry::new(&item, now, "retry", Some(reason)).row();
                        let row = item.row(OUTBOX, Some(due));
                        let _ = self
                            .engine
                            .store()
                            .write(None, move |tx: &mut dyn Tx| {
                                tx.record_put(&row)?;
                                tx.record_put(&log)
                            })
                            .await;
                        // Retried from memory even if that write failed (the stored row
                        // then still holds the previous attempt; a restart sends it again).
                        self.enqueue([(due, item)]);
                    }
                    None => {
                        self.counters
                            .dead
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(channel = %channel, attempt = item.attempts, error = %reason, "alerting: notification moved to the dead letters");
                        item.dead_at = Some(now);
                        let log = LogEntry::new(&item, now, "dead", Some(reason.clone())).row();
                        let row = item.row(DEAD, None);
                        let r = self
                            .engine
                            .store()
                            .write(None, move |tx: &mut dyn Tx| {
                                tx.record_delete(OUTBOX, &id)?;
                                tx.record_put(&row)?;
                                tx.record_put(&log)
                            })
                            .await;
                        if r.is_ok() {
                            self.done(&item.notification);
                        } else {
                            // Still in the stored outbox: try the move again later.
                            let later = now + crate::pipeline::dur(self.delivery.retry_base);
                            self.enqueue([(later, item)]);
                        }
                        self.channel_failed(&channel, &reason).await;
                    }
                }
            }
        }
    }

    /// A notification left the outbox: the next one of its key may go.
    fn done(&self, n: &Notification) {
        let mut o = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let key = (n.channel.clone(), n.dedup_key.clone());
        if o.waiting.get(&key) == Some(&n.id) {
            o.waiting.remove(&key);
            self.wake.notify_one();
        }
    }

    fn failing_labels(channel: &str) -> Labels {
        [
            ("alertname".to_string(), CHANNEL_FAILING.to_string()),
            ("channel".to_string(), channel.to_string()),
            ("severity".to_string(), "critical".to_string()),
        ]
        .into_iter()
        .collect()
    }

    /// A channel that dead-letters raises `StewardChannelFailing` through the other channels.
    async fn channel_failed(&self, channel: &str, reason: &str) {
        let annotations = [(
            "summary".to_string(),
            format!("Notifications to channel {channel} fail: {reason}"),
        )]
        .into_iter()
        .collect();
        if let Err(e) = self.raise(Self::failing_labels(channel), annotations).await {
            tracing::warn!(error = %e, "alerting: cannot store the channel-failing alert");
        }
    }

    async fn channel_recovered(&self, channel: &str) {
        if let Err(e) = self.resolve(&Self::failing_labels(channel)).await {
            tracing::warn!(error = %e, "alerting: cannot store the channel-failing alert's resolve");
        }
    }

    async fn beat(&self, h: &HeartbeatConfig) {
        let url = match (&h.url, &h.url_secret) {
            (Some(u), _) => Zeroizing::new(u.clone()),
            (None, Some(r)) => match self.engine.resolve_reference(r).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "alerting: heartbeat URL unavailable");
                    return;
                }
            },
            _ => return,
        };
        let body = serde_json::json!({"status": "ok", "time": self.now(), "source": "steward"});
        match self.http.post(url.as_str()).json(&body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "alerting: heartbeat refused"),
            Err(_) => tracing::warn!("alerting: heartbeat endpoint unreachable"),
        }
    }

    // ---- operations for the API ----------------------------------------------------------

    async fn auth(
        &self,
        ctx: &RequestCtx,
        action: &str,
        area: &str,
        cap: Capability,
    ) -> Result<(Caller, AuditDraft)> {
        let (caller, draft) = self.engine.authorize(ctx, action, None, cap).await?;
        if let Err(e) = caller.require(cap, "sys", area) {
            return self.engine.complete(ctx, draft, Err(e)).await;
        }
        Ok((caller, draft))
    }

    /// `POST /api/v2/alerts`: validates, applies, and stores alerts before answering.
    pub async fn ingest(&self, ctx: &RequestCtx, alerts: Vec<PostableAlert>) -> Result<usize> {
        let (_, draft) = self
            .auth(ctx, "alerts.post", "alerts", Capability::Write)
            .await?;
        let now = self.now();
        for (i, a) in alerts.iter().enumerate() {
            let check = (|| {
                if a.labels.is_empty() {
                    return Err(bad("invalid_alert", format!("alert {i}: labels are empty; every alert needs at least one label (e.g. alertname)")));
                }
                if let Some(k) = a.labels.keys().find(|k| !valid_label_name(k)) {
                    return Err(bad(
                        "invalid_alert",
                        format!("alert {i}: {k:?} is not a label name (letters, digits and '_')"),
                    ));
                }
                if let (Some(s), Some(e)) = (a.starts_at, a.ends_at) {
                    if e < s {
                        return Err(bad(
                            "invalid_alert",
                            format!("alert {i}: endsAt is before startsAt"),
                        ));
                    }
                }
                Ok(())
            })();
            if let Err(e) = check {
                return self.engine.complete(ctx, draft, Err(e)).await;
            }
        }
        let n = alerts.len();
        // Alertmanager clients (amtool) send 0001-01-01T00:00:00Z for "not set".
        let set = |t: Option<DateTime<Utc>>| t.filter(|t| t.timestamp() > 0);
        let rows: Vec<RecordRow> = {
            let mut p = self.pipe();
            let timeout = crate::pipeline::dur(p.cfg.resolve_timeout);
            let mut rows = Vec::new();
            for a in alerts {
                let starts = set(a.starts_at).unwrap_or(now);
                let doc = AlertDoc {
                    labels: a.labels.into(),
                    annotations: a.annotations.into(),
                    starts_at: starts,
                    ends_at: Some(set(a.ends_at).unwrap_or(now + timeout)),
                    generator_url: a.generator_url,
                    updated_at: now,
                    fire_at: None,
                    source: "api".into(),
                };
                let (fp, write) = p.upsert(doc, now, self.slack);
                if write {
                    rows.push(alert_row(&fp, p.get(&fp).expect("present")));
                }
            }
            rows
        };
        self.engine.mark_audited(ctx);
        self.engine
            .store()
            .write(Some(draft), move |tx: &mut dyn Tx| -> Result<()> {
                for r in &rows {
                    tx.record_put(r)?;
                }
                Ok(())
            })
            .await?;
        Ok(n)
    }

    /// Every alert (`filter`: matchers every listed alert satisfies).
    pub async fn alerts(&self, ctx: &RequestCtx, filter: &[String]) -> Result<Vec<AlertInfo>> {
        let (_, draft) = self
            .auth(ctx, "alerts.list", "alerts", Capability::Read)
            .await?;
        let r = parse_list(filter)
            .map_err(|e| bad("invalid_filter", e.to_string()))
            .map(|m| {
                self.pipe()
                    .list(self.now())
                    .into_iter()
                    .filter(|a| crate::matchers::all_match(&m, &a.doc.labels))
                    .collect()
            });
        self.engine.complete(ctx, draft, r).await
    }

    pub async fn alert(&self, ctx: &RequestCtx, fp: &str) -> Result<AlertInfo> {
        let (_, draft) = self
            .auth(ctx, "alerts.read", "alerts", Capability::Read)
            .await?;
        let r = self.pipe().info_of(fp, self.now()).ok_or_else(|| {
            SecretsError::not_found(format!(
                "no alert has fingerprint {fp:?}; `steward alerts list` shows them"
            ))
        });
        self.engine.complete(ctx, draft, r).await
    }

    /// Groups with their members.
    pub async fn groups(&self, ctx: &RequestCtx) -> Result<Vec<(GroupState, Vec<AlertInfo>)>> {
        let (_, draft) = self
            .auth(ctx, "alerts.groups", "alerts", Capability::Read)
            .await?;
        let now = self.now();
        let out = {
            let p = self.pipe();
            p.group_list()
                .into_iter()
                .map(|(g, fps)| {
                    let alerts = fps.iter().filter_map(|f| p.info_of(f, now)).collect();
                    (g, alerts)
                })
                .collect()
        };
        self.engine.complete(ctx, draft, Ok(out)).await
    }

    /// Acknowledges the groups of an alert (or a group id): reminders and escalation stop;
    /// channels already notified hear of it; the resolve still goes out.
    pub async fn ack(&self, ctx: &RequestCtx, target: &str, comment: &str) -> Result<Vec<String>> {
        let (caller, draft) = self
            .auth(ctx, "alerts.ack", "alerts", Capability::Write)
            .await?;
        let now = self.now();
        let ack = Ack {
            by: caller.display_name.clone(),
            at: now,
            comment: comment.to_string(),
        };
        let flush = self.pipe().ack(target, ack, now);
        if flush.groups_put.is_empty() {
            let known = self.pipe().get(target).is_some();
            let e = if known {
                bad(
                    "already_acknowledged",
                    format!("every group of {target:?} is already acknowledged"),
                )
            } else {
                SecretsError::not_found(format!(
                    "no alert or group is {target:?}; `steward alerts list` shows fingerprints"
                ))
            };
            return self.engine.complete(ctx, draft, Err(e)).await;
        }
        let groups: Vec<String> = flush.groups_put.iter().map(|g| g.id.clone()).collect();
        self.engine.mark_audited(ctx);
        self.persist(flush, now, Some(draft)).await?;
        Ok(groups)
    }

    pub async fn silences(&self, ctx: &RequestCtx) -> Result<Vec<Silence>> {
        let (_, draft) = self
            .auth(ctx, "silences.list", "silences", Capability::Read)
            .await?;
        let s = self.pipe().silences();
        self.engine.complete(ctx, draft, Ok(s)).await
    }

    pub async fn silence(&self, ctx: &RequestCtx, id: &str) -> Result<Silence> {
        let (_, draft) = self
            .auth(ctx, "silences.read", "silences", Capability::Read)
            .await?;
        let s = self
            .pipe()
            .silence(id)
            .ok_or_else(|| SecretsError::not_found(format!("no silence has id {id:?}")));
        self.engine.complete(ctx, draft, s).await
    }

    /// Creates (or, with an id, updates) a silence; returns its id.
    pub async fn put_silence(&self, ctx: &RequestCtx, s: PostableSilence) -> Result<String> {
        let (caller, draft) = self
            .auth(ctx, "silences.put", "silences", Capability::Write)
            .await?;
        let now = self.now();
        // A start in the past means now, as in Alertmanager.
        let starts_at = s.starts_at.unwrap_or(now).max(now);
        let check = (|| {
            if s.matchers.is_empty() {
                return Err(bad(
                    "invalid_silence",
                    "a silence needs at least one matcher",
                ));
            }
            for m in &s.matchers {
                m.compile()
                    .map_err(|e| bad("invalid_silence", e.to_string()))?;
            }
            let ends_at = match (s.ends_at, s.duration.as_deref()) {
                (Some(e), _) => e,
                (None, Some(d)) => {
                    let d = humantime::parse_duration(d).map_err(|e| {
                        bad(
                            "invalid_silence",
                            format!("duration {d:?} is not a duration ({e}); e.g. \"2h\""),
                        )
                    })?;
                    starts_at + crate::pipeline::dur(d)
                }
                (None, None) => {
                    return Err(bad(
                        "invalid_silence",
                        "give endsAt (or duration, e.g. \"2h\")",
                    ))
                }
            };
            if ends_at <= starts_at {
                return Err(bad(
                    "invalid_silence",
                    "endsAt must be after startsAt and in the future",
                ));
            }
            if let Some(id) = &s.id {
                if self.pipe().silence(id).is_none() {
                    return Err(SecretsError::not_found(format!(
                        "no silence has id {id:?}; omit the id to create one"
                    )));
                }
            }
            Ok(ends_at)
        })();
        let ends_at = match check {
            Ok(e) => e,
            Err(e) => return self.engine.complete(ctx, draft, Err(e)).await,
        };
        // As in Alertmanager: changing the matchers of a silence that already started
        // expires it and creates a new one (what it muted stays on record); other edits
        // update it in place.
        let old = s.id.as_deref().and_then(|id| self.pipe().silence(id));
        let mut changes = Vec::new();
        let id = match old {
            Some(o) if o.matchers != s.matchers && o.state(now) != "pending" => {
                changes.push(Silence {
                    ends_at: now.min(o.ends_at),
                    updated_at: now,
                    ..o
                });
                uuid::Uuid::new_v4().to_string()
            }
            Some(o) => o.id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        changes.push(Silence {
            id: id.clone(),
            matchers: s.matchers,
            starts_at,
            ends_at,
            created_by: if s.created_by.is_empty() {
                caller.display_name.clone()
            } else {
                s.created_by
            },
            comment: s.comment,
            updated_at: now,
        });
        self.store_silences(ctx, draft, changes).await?;
        Ok(id)
    }

    async fn store_silences(
        &self,
        ctx: &RequestCtx,
        draft: AuditDraft,
        list: Vec<Silence>,
    ) -> Result<()> {
        let rows: Vec<RecordRow> = list
            .iter()
            .map(|s| RecordRow {
                kind: "silence".into(),
                id: s.id.clone(),
                doc: serde_json::to_string(s).expect("silences serialize"),
                due_at: Some(s.ends_at),
            })
            .collect();
        self.engine.mark_audited(ctx);
        self.engine
            .store()
            .write(Some(draft), move |tx: &mut dyn Tx| {
                rows.iter().try_for_each(|r| tx.record_put(r))
            })
            .await
            .map_err(SecretsError::from)?;
        let mut p = self.pipe();
        for s in list {
            p.set_silence(s)
                .map_err(|e| bad("invalid_silence", e.to_string()))?;
        }
        Ok(())
    }

    /// Ends a silence now (it stays listed as expired).
    pub async fn expire_silence(&self, ctx: &RequestCtx, id: &str) -> Result<()> {
        let (_, draft) = self
            .auth(ctx, "silences.expire", "silences", Capability::Write)
            .await?;
        let now = self.now();
        let found = self.pipe().silence(id);
        let s = match found {
            None => {
                let e = SecretsError::not_found(format!("no silence has id {id:?}"));
                return self.engine.complete(ctx, draft, Err(e)).await;
            }
            Some(s) if s.state(now) == "expired" => {
                let e = bad(
                    "already_expired",
                    format!("silence {id:?} has already expired"),
                );
                return self.engine.complete(ctx, draft, Err(e)).await;
            }
            Some(s) => s,
        };
        let s = Silence {
            ends_at: now,
            starts_at: s.starts_at.min(now),
            updated_at: now,
            ..s
        };
        self.store_silences(ctx, draft, vec![s]).await
    }

    pub async fn windows(&self, ctx: &RequestCtx) -> Result<Vec<WindowInfo>> {
        let (_, draft) = self
            .auth(ctx, "maintenance.list", "maintenance", Capability::Read)
            .await?;
        let now = self.now();
        let out = self
            .pipe()
            .windows()
            .iter()
            .map(|w| {
                let span = w.active_span(now);
                WindowInfo {
                    doc: w.doc.clone(),
                    active: span.is_some(),
                    current_end: span.map(|s| s.1),
                    next_start: w.next_start(now),
                }
            })
            .collect();
        self.engine.complete(ctx, draft, Ok(out)).await
    }

    /// The windows marked `public` (config and API), for the public status page. No
    /// authorization: the caller shows only their names, comments and times (and which of
    /// its own components they cover), never their matchers or authors.
    pub fn public_windows(&self) -> Vec<CompiledWindow> {
        self.pipe()
            .windows()
            .iter()
            .filter(|w| w.doc.public)
            .cloned()
            .collect()
    }

    /// Opens a maintenance window (one-off by default: from now for `duration`).
    pub async fn start_window(
        &self,
        ctx: &RequestCtx,
        req: MaintenanceRequest,
    ) -> Result<WindowInfo> {
        let (caller, draft) = self
            .auth(ctx, "maintenance.start", "maintenance", Capability::Write)
            .await?;
        let now = self.now();
        let built = (|| {
            let duration = req
                .duration
                .as_deref()
                .map(|d| {
                    humantime::parse_duration(d).map_err(|e| {
                        bad(
                            "invalid_window",
                            format!("duration {d:?} is not a duration ({e}); e.g. \"30m\""),
                        )
                    })
                })
                .transpose()?;
            let (starts_at, ends_at) = if req.cron.is_some() {
                (None, None)
            } else {
                let s = req.starts_at.unwrap_or(now);
                let e = match (req.ends_at, duration) {
                    (Some(e), _) => e,
                    (None, Some(d)) => s + crate::pipeline::dur(d),
                    (None, None) => {
                        return Err(bad(
                            "invalid_window",
                            "give duration (e.g. \"30m\") or ends_at, or cron and duration",
                        ))
                    }
                };
                if e <= s || e <= now {
                    return Err(bad(
                        "invalid_window",
                        "the window must end after it starts and in the future",
                    ));
                }
                (Some(s), Some(e))
            };
            let doc = Maintenance {
                id: uuid::Uuid::new_v4().to_string(),
                name: req.name.clone(),
                matchers: req.matchers.clone(),
                starts_at,
                ends_at,
                cron: req.cron.clone(),
                duration_secs: duration.map(|d| d.as_secs()),
                timezone: req.timezone.clone(),
                comment: req.comment.clone(),
                created_by: caller.display_name.clone(),
                public: req.public,
            };
            CompiledWindow::compile(doc, "window").map_err(|e| bad("invalid_window", e.message))
        })();
        let w = match built {
            Ok(w) => w,
            Err(e) => return self.engine.complete(ctx, draft, Err(e)).await,
        };
        self.engine.mark_audited(ctx);
        self.store_window(w, Some(draft)).await
    }

    async fn store_window(
        &self,
        w: CompiledWindow,
        draft: Option<AuditDraft>,
    ) -> Result<WindowInfo> {
        let now = self.now();
        let row = RecordRow {
            kind: "maintenance".into(),
            id: w.doc.id.clone(),
            doc: serde_json::to_string(&w.doc).expect("windows serialize"),
            due_at: w.doc.ends_at,
        };
        self.engine
            .store()
            .write(draft, move |tx: &mut dyn Tx| tx.record_put(&row))
            .await
            .map_err(SecretsError::from)?;
        let span = w.active_span(now);
        let info = WindowInfo {
            doc: w.doc.clone(),
            active: span.is_some(),
            current_end: span.map(|s| s.1),
            next_start: w.next_start(now),
        };
        self.pipe().set_window(w);
        Ok(info)
    }

    /// Opens a window for Steward's own work (a deploy, a backup) from now for `length`;
    /// close it with [`Alerting::close_window`] when done. Returns its id.
    pub async fn open_window(
        &self,
        name: &str,
        matchers: Vec<String>,
        length: Duration,
    ) -> Result<String> {
        let now = self.now();
        let doc = Maintenance {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            matchers,
            starts_at: Some(now),
            ends_at: Some(now + crate::pipeline::dur(length)),
            cron: None,
            duration_secs: Some(length.as_secs()),
            timezone: None,
            comment: format!("opened by Steward for {name}"),
            created_by: steward_secrets::SYSTEM_ACTOR.into(),
            public: false,
        };
        let w =
            CompiledWindow::compile(doc, "window").map_err(|e| bad("invalid_window", e.message))?;
        Ok(self.store_window(w, None).await?.doc.id)
    }

    /// Closes a window opened with [`Alerting::open_window`].
    pub async fn close_window(&self, id: &str) -> Result<()> {
        self.remove_window(id, None).await
    }

    async fn remove_window(&self, id: &str, draft: Option<AuditDraft>) -> Result<()> {
        let i = id.to_string();
        self.engine
            .store()
            .write(draft, move |tx: &mut dyn Tx| {
                tx.record_delete("maintenance", &i).map(drop)
            })
            .await
            .map_err(SecretsError::from)?;
        self.pipe().remove_window(id);
        self.wake.notify_one();
        Ok(())
    }

    /// Closes a window opened through the API (config windows are changed in the config).
    pub async fn end_window(&self, ctx: &RequestCtx, id: &str) -> Result<()> {
        let (_, draft) = self
            .auth(ctx, "maintenance.end", "maintenance", Capability::Write)
            .await?;
        if id.starts_with("config:") {
            let e = bad(
                "config_window",
                "this window comes from [[alerting.maintenance]]; change the config to remove it",
            );
            return self.engine.complete(ctx, draft, Err(e)).await;
        }
        if !self.pipe().windows().iter().any(|w| w.doc.id == id) {
            let e = SecretsError::not_found(format!("no maintenance window has id {id:?}"));
            return self.engine.complete(ctx, draft, Err(e)).await;
        }
        // Alerts held back by the window notify at their next flush.
        self.engine.mark_audited(ctx);
        self.remove_window(id, Some(draft)).await
    }

    pub async fn dead_letters(&self, ctx: &RequestCtx) -> Result<Vec<OutboxItem>> {
        let (_, draft) = self
            .auth(ctx, "alerts.dead_letters", "alerts", Capability::Read)
            .await?;
        let r = self.list_kind(DEAD).await;
        self.engine.complete(ctx, draft, r).await
    }

    async fn list_kind(&self, kind: &'static str) -> Result<Vec<OutboxItem>> {
        let rows = self
            .engine
            .store()
            .read(move |tx| tx.record_list(kind, "", 10_000))
            .await
            .map_err(SecretsError::from)?;
        rows.iter()
            .map(|r| serde_json::from_str(&r.doc).map_err(|e| corrupt("notification", e)))
            .collect()
    }

    /// Pending notifications (the outbox).
    pub async fn pending(&self, ctx: &RequestCtx) -> Result<Vec<OutboxItem>> {
        let (_, draft) = self
            .auth(ctx, "alerts.outbox", "alerts", Capability::Read)
            .await?;
        let r = self.list_kind(OUTBOX).await;
        self.engine.complete(ctx, draft, r).await
    }

    /// Moves dead letters (all, or `ids`) back to the outbox with fresh attempts.
    pub async fn replay(&self, ctx: &RequestCtx, ids: Option<Vec<String>>) -> Result<usize> {
        let (_, draft) = self
            .auth(ctx, "alerts.replay", "alerting", Capability::Admin)
            .await?;
        let now = self.now();
        self.engine.mark_audited(ctx);
        let n = self
            .engine
            .store()
            .write(
                Some(draft),
                move |tx: &mut dyn Tx| -> Result<Vec<OutboxItem>> {
                    let rows = tx.record_list(DEAD, "", 10_000)?;
                    let mut n = Vec::new();
                    for r in rows {
                        if ids.as_ref().is_some_and(|ids| !ids.contains(&r.id)) {
                            continue;
                        }
                        let mut item: OutboxItem =
                            serde_json::from_str(&r.doc).map_err(|e| corrupt("notification", e))?;
                        item.attempts = 0;
                        item.dead_at = None;
                        tx.record_delete(DEAD, &r.id)?;
                        tx.record_put(&item.row(OUTBOX, Some(now)))?;
                        n.push(item);
                    }
                    Ok(n)
                },
            )
            .await?;
        let count = n.len();
        self.enqueue(n.into_iter().map(|i| (now, i)));
        Ok(count)
    }

    /// Sends a test notification to one channel at once and reports the outcome.
    pub async fn notify_test(&self, ctx: &RequestCtx, channel: &str) -> Result<Value> {
        let (_, draft) = self
            .auth(ctx, "alerts.notify_test", "alerting", Capability::Admin)
            .await?;
        let Some(ch) = self.channels.get(channel) else {
            let mut names: Vec<&String> = self.channels.keys().collect();
            names.sort();
            let e = SecretsError::not_found(format!(
                "no channel is named {channel:?} (configured: {names:?})"
            ));
            return self.engine.complete(ctx, draft, Err(e)).await;
        };
        let now = self.now();
        let n = Notification::sample(channel, now);
        let r = ch.send(&n, &*self.engine).await;
        let mut item = OutboxItem::new(n, now);
        item.attempts = 1;
        let (outcome, err) = match &r {
            Ok(()) => ("sent", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        let log = LogEntry::new(&item, now, outcome, err.clone()).row();
        self.engine.mark_audited(ctx);
        self.engine
            .store()
            .write(Some(draft), move |tx: &mut dyn Tx| tx.record_put(&log))
            .await
            .map_err(SecretsError::from)?;
        match r {
            Ok(()) => Ok(serde_json::json!({"channel": channel, "outcome": "sent"})),
            Err(e) => Err(SecretsError::new(
                steward_secrets::Kind::Unavailable,
                "channel_failed",
                format!("channel {channel:?}: {e}"),
            )),
        }
    }

    /// The notification log, newest first.
    pub async fn log(&self, ctx: &RequestCtx, limit: u32) -> Result<Vec<LogEntry>> {
        let (_, draft) = self
            .auth(ctx, "alerts.log", "alerts", Capability::Read)
            .await?;
        let r = self
            .engine
            .store()
            .read(move |tx| tx.record_list(LOG, "", limit.min(10_000)))
            .await
            .map_err(SecretsError::from)
            .and_then(|rows| {
                rows.iter()
                    .map(|r| serde_json::from_str(&r.doc).map_err(|e| corrupt("log entry", e)))
                    .collect()
            });
        self.engine.complete(ctx, draft, r).await
    }

    /// Receiver names (`GET /api/v2/receivers`; also what `/api/v2/status` checks access with).
    pub async fn receivers(&self, ctx: &RequestCtx) -> Result<Vec<String>> {
        let (_, draft) = self
            .auth(ctx, "alerts.receivers", "alerts", Capability::Read)
            .await?;
        let mut v: Vec<String> = self.pipe().cfg.receivers.keys().cloned().collect();
        v.sort();
        self.engine.complete(ctx, draft, Ok(v)).await
    }

    /// Numbers for /metrics (no names, no labels of alerts).
    pub async fn stats(&self) -> Result<Stats> {
        let now = self.now();
        let mut st = Stats::default();
        {
            let p = self.pipe();
            (st.firing, st.pending, st.suppressed) = p.counts(now);
            st.groups = p.group_count() as u64;
        }
        let c = &self.counters;
        st.sent = c.sent.load(std::sync::atomic::Ordering::Relaxed);
        st.retried = c.retried.load(std::sync::atomic::Ordering::Relaxed);
        st.dead = c.dead.load(std::sync::atomic::Ordering::Relaxed);
        let (q, d) = self
            .engine
            .store()
            .read(|tx| {
                Ok::<_, steward_store::StoreError>((
                    tx.record_count(OUTBOX)?,
                    tx.record_count(DEAD)?,
                ))
            })
            .await
            .map_err(SecretsError::from)?;
        st.queued = q;
        st.dead_letters = d;
        Ok(st)
    }

    /// Raises or refreshes an alert from inside Steward (checks, backups, deploys).
    pub async fn raise(&self, labels: Labels, annotations: Labels) -> Result<String> {
        let now = self.now();
        let doc = AlertDoc {
            labels: labels.into(),
            annotations: annotations.into(),
            starts_at: now,
            ends_at: None,
            generator_url: String::new(),
            updated_at: now,
            fire_at: None,
            source: "steward".into(),
        };
        let (fp, row) = {
            let mut p = self.pipe();
            let (fp, write) = p.upsert(doc, now, ChronoDuration::zero());
            let row = write.then(|| alert_row(&fp, p.get(&fp).expect("present")));
            (fp, row)
        };
        if let Some(row) = row {
            self.engine
                .store()
                .write(None, move |tx: &mut dyn Tx| tx.record_put(&row))
                .await
                .map_err(SecretsError::from)?;
        }
        Ok(fp)
    }

    /// Resolves an alert raised with [`Alerting::raise`].
    pub async fn resolve(&self, labels: &Labels) -> Result<bool> {
        let now = self.now();
        let fp = fingerprint(labels);
        let row = {
            let mut p = self.pipe();
            p.resolve(&fp, now)
                .then(|| alert_row(&fp, p.get(&fp).expect("present")))
        };
        let Some(row) = row else {
            return Ok(false);
        };
        self.engine
            .store()
            .write(None, move |tx: &mut dyn Tx| tx.record_put(&row))
            .await
            .map_err(SecretsError::from)?;
        Ok(true)
    }
}

/// Numbers for /metrics.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Stats {
    pub firing: u64,
    pub pending: u64,
    pub suppressed: u64,
    pub groups: u64,
    pub sent: u64,
    pub retried: u64,
    pub dead: u64,
    pub queued: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: std::sync::atomic::AtomicU64,
    retried: std::sync::atomic::AtomicU64,
    dead: std::sync::atomic::AtomicU64,
}

/// See [`Alerting::deliver`].
#[derive(Debug, Default)]
struct Order {
    busy: HashSet<(String, String)>,
    waiting: HashMap<(String, String), String>,
    /// The outbox, mirrored in memory by (due, id) (see [`Alerting::load_outbox`]).
    queue: BTreeMap<(DateTime<Utc>, String), OutboxItem>,
}

fn alert_row(fp: &str, doc: &AlertDoc) -> RecordRow {
    RecordRow {
        kind: "alert".into(),
        id: fp.to_string(),
        doc: serde_json::to_string(doc).expect("alerts serialize"),
        due_at: None,
    }
}
