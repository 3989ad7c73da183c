//! Change events: stored once ([`once`]), read with a cursor ([`Rotations::events`], a long
//! poll), and delivered to the log and an optional webhook from a durable cursor
//! ([`run_sink`], at least once).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use steward_secrets::{policy::Capability, Engine, RequestCtx, Result, SecretsError};
use steward_store::{EventRow, Tx};

use crate::Rotations;

/// Where events go besides the store and the log.
#[derive(Debug, Clone, Default)]
pub struct SinkConfig {
    /// POSTs each notable event as JSON.
    pub webhook_url: Option<String>,
    /// `ENV/PATH#FIELD` of a Steward secret whose value signs webhook bodies
    /// (`X-Steward-Signature: v1=HEX(HMAC-SHA256(key, "TIMESTAMP.BODY"))`).
    pub signing_secret: Option<String>,
}

/// Event kinds the sink delivers (warnings someone must act on).
const NOTABLE: &[&str] = &[
    "secret.expiring",
    "secret.expired",
    "rotation.failed",
    "rotation.overdue",
    "rotation.retire_failed",
];

const CURSOR_KEY: &str = "events/sink/cursor";

/// An event as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub kind: String,
    pub env: Option<String>,
    pub path: Option<String>,
    pub detail: Value,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        Self {
            seq: r.seq,
            time: r.time,
            kind: r.kind,
            env: r.env,
            path: r.path,
            detail: serde_json::from_str(&r.detail).unwrap_or(Value::Null),
        }
    }
}

/// A page of events and the cursor to pass next time.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// The highest seq looked at (events the caller may not see are skipped, not re-sent).
    pub next: u64,
}

/// Stores `event` unless `key` was stored before: exactly once, across restarts and replicas
/// (the key's insert and the event commit together). Returns whether it stored it.
pub async fn once(engine: &Engine, key: String, event: EventRow) -> Result<bool> {
    engine
        .store()
        .write(None, move |tx: &mut dyn Tx| -> Result<bool> {
            if !tx.sys_insert_new(&key, b"1")? {
                return Ok(false);
            }
            tx.event_append(&event)?;
            Ok(true)
        })
        .await
}

/// Whether a caller may learn that a secret exists and changed: `read` or `list` on it.
pub(crate) fn may_see(caller: &steward_secrets::Caller, env: &str, path: &str) -> bool {
    caller.allows(env, path, Capability::Read) || caller.allows(env, path, Capability::List)
}

/// Waits for this process's next commit, at most a second (other replicas' commits are seen by
/// looking again) and never past `deadline`.
async fn next_commit(
    commits: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) {
    let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
    let _ = tokio::time::timeout_at(until, commits.changed()).await;
}

impl Rotations {
    /// Events after `after` that the caller may see, waiting up to `wait` for one to arrive.
    pub async fn events(
        &self,
        ctx: &RequestCtx,
        after: u64,
        limit: u32,
        wait: Duration,
    ) -> Result<EventPage> {
        let (caller, draft) = self
            .engine
            .authorize(ctx, "events.read", None, Capability::Read)
            .await?;
        let r = async {
            let after = if after == u64::MAX {
                // "From now on": start at the newest event.
                self.engine.store().read(|tx| tx.events_last_seq()).await?
            } else {
                after
            };
            let limit = limit.clamp(1, 1000);
            let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(300));
            let mut commits = self.engine.store().commits();
            let mut cursor = after;
            loop {
                let from = cursor;
                let rows = self
                    .engine
                    .store()
                    .read(move |tx| tx.events_after(from, limit))
                    .await?;
                let mut events = Vec::new();
                for row in rows {
                    cursor = row.seq;
                    let visible = match (&row.env, &row.path) {
                        (Some(e), Some(p)) => may_see(&caller, e, p),
                        _ => caller.is_root(),
                    };
                    if visible {
                        events.push(EventView::from(row));
                    }
                }
                if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(EventPage {
                        events,
                        next: cursor,
                    });
                }
                next_commit(&mut commits, deadline).await;
            }
        }
        .await;
        self.engine.complete(ctx, draft, r).await
    }

    /// Waits up to `wait` until the secret's latest version differs from `known`; returns the
    /// latest version (None if the secret does not exist). The caller must hold read.
    pub async fn wait_for_change(
        &self,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        known: u64,
        wait: Duration,
    ) -> Result<Option<u64>> {
        let (_, draft) = self
            .engine
            .authorize(ctx, "secret.watch", Some((env, path)), Capability::Read)
            .await?;
        let r = async {
            let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(300));
            let mut commits = self.engine.store().commits();
            loop {
                let (e, p) = (env.to_string(), path.to_string());
                let head = self.engine.store().read(move |tx| tx.head(&e, &p)).await?;
                let version = head.map(|h| h.current_version);
                if version != Some(known) || tokio::time::Instant::now() >= deadline {
                    return Ok(version);
                }
                next_commit(&mut commits, deadline).await;
            }
        }
        .await;
        self.engine.complete(ctx, draft, r).await
    }
}

/// Delivers notable events to the log and the webhook, from a cursor stored in the store.
pub(crate) async fn run_sink(rot: Arc<Rotations>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok();
    let mut failures: u32 = 0;
    loop {
        let pause = if failures == 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(1u64 << failures.min(6))
        };
        tokio::time::sleep(pause).await;
        if rot.engine.is_sealed() {
            continue;
        }
        match deliver_batch(&rot, client.as_ref()).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "event delivery failed; retrying with backoff");
            }
        }
    }
}

async fn deliver_batch(rot: &Rotations, client: Option<&reqwest::Client>) -> Result<()> {
    let store = rot.engine.store();
    let cursor = store
        .read(|tx| tx.sys_get(CURSOR_KEY))
        .await?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let rows = store.read(move |tx| tx.events_after(cursor, 100)).await?;
    let Some(last) = rows.last().map(|r| r.seq) else {
        return Ok(());
    };
    for row in rows {
        if !NOTABLE.contains(&row.kind.as_str()) {
            continue;
        }
        let view = EventView::from(row);
        tracing::warn!(
            event = %view.kind,
            env = view.env.as_deref().unwrap_or(""),
            path = view.path.as_deref().unwrap_or(""),
            detail = %view.detail,
            seq = view.seq,
            "steward event"
        );
        if let (Some(url), Some(client)) = (&rot.cfg.sink.webhook_url, client) {
            post(rot, client, url, &view).await?;
        }
    }
    store
        .write(None, move |tx: &mut dyn Tx| -> Result<()> {
            tx.sys_put(CURSOR_KEY, &last.to_be_bytes())?;
            Ok(())
        })
        .await
}

async fn post(rot: &Rotations, client: &reqwest::Client, url: &str, ev: &EventView) -> Result<()> {
    let body = serde_json::to_vec(ev).expect("events serialize");
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-steward-event", ev.kind.as_str())
        .header("x-steward-event-seq", ev.seq.to_string());
    if let Some(reference) = &rot.cfg.sink.signing_secret {
        let key = signing_key(&rot.engine, reference).await?;
        let ts = rot.engine.clock().now().timestamp().to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&body);
        req = req.header("x-steward-timestamp", ts).header(
            "x-steward-signature",
            format!("v1={}", hex::encode(mac.finalize().into_bytes())),
        );
    }
    let resp = req.body(body).send().await.map_err(|e| {
        SecretsError::new(
            steward_secrets::Kind::Unavailable,
            "event_delivery_failed",
            format!("event webhook unreachable: {e}"),
        )
    })?;
    if !resp.status().is_success() {
        return Err(SecretsError::new(
            steward_secrets::Kind::Unavailable,
            "event_delivery_failed",
            format!("event webhook answered {}", resp.status()),
        ));
    }
    Ok(())
}

/// Resolves `ENV/PATH#FIELD` to the signing key.
async fn signing_key(engine: &Engine, reference: &str) -> Result<String> {
    let bad = || {
        SecretsError::invalid(
            "invalid_reference",
            format!("events.signing_secret {reference:?} must look like ENV/PATH#FIELD"),
        )
    };
    let (target, field) = reference.split_once('#').ok_or_else(bad)?;
    let (env, path) = target.split_once('/').ok_or_else(bad)?;
    let (_, _, value) = engine.system_read(env, path, None).await?;
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            SecretsError::invalid(
                "invalid_reference",
                format!("{env}/{path} has no string field {field:?} for events.signing_secret"),
            )
        })
}
