//! Expiry warnings: secrets whose metadata sets `expires_at` get one warning per threshold
//! (default 7, 3 and 1 days before, and at expiry), each stored exactly once — a unique key
//! per secret, expiry time and threshold commits with the event — so restarts and replicas
//! never repeat one. Changing `expires_at` arms the warnings again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use steward_secrets::{policy::Capability, RequestCtx, Result};
use steward_store::{EventRow, Tx};

use crate::Rotations;

/// A secret that expires within the asked window (or already has).
#[derive(Debug, Clone, Serialize)]
pub struct ExpiringSecret {
    pub env: String,
    pub path: String,
    pub expires_at: DateTime<Utc>,
    /// Negative once expired.
    pub seconds_left: i64,
    pub expired: bool,
    pub owner: String,
    pub description: String,
}

fn threshold_name(t: Duration) -> String {
    if t.is_zero() {
        "expired".into()
    } else {
        humantime::format_duration(t).to_string()
    }
}

pub(crate) async fn scan_if_due(rot: &Rotations) -> Result<()> {
    let now = rot.engine.clock().now();
    {
        let mut last = rot
            .last_expiry_scan
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let every =
            chrono::Duration::from_std(rot.cfg.expiry_scan).unwrap_or(chrono::Duration::MAX);
        if last.is_some_and(|t| now >= t && now - t < every) {
            return Ok(());
        }
        *last = Some(now);
    }
    scan(rot, now).await
}

/// Stores the warnings due at `now`. For a secret past several thresholds at once (Steward
/// was down), only the tightest is sent; the looser ones are marked done.
pub async fn scan(rot: &Rotations, now: DateTime<Utc>) -> Result<()> {
    let heads = rot.engine.store().read(|tx| tx.heads_with_expiry()).await?;
    let mut thresholds = rot.cfg.expiry_warnings.clone();
    thresholds.sort_unstable_by(|a, b| b.cmp(a));
    let mut work = Vec::new();
    for head in heads {
        let Some(exp) = head.meta.expires_at else {
            continue;
        };
        let crossed: Vec<Duration> = thresholds
            .iter()
            .copied()
            .filter(|t| {
                now + chrono::Duration::from_std(*t).unwrap_or(chrono::Duration::MAX) >= exp
            })
            .collect();
        let Some(tightest) = crossed.last().copied() else {
            continue;
        };
        let keys: Vec<String> = crossed
            .iter()
            .map(|t| {
                format!(
                    "warned/expiry/{}/{}/{}/{}",
                    head.env,
                    head.path,
                    exp.timestamp_micros(),
                    t.as_secs()
                )
            })
            .collect();
        let kind = if tightest.is_zero() {
            "secret.expired"
        } else {
            "secret.expiring"
        };
        let event = EventRow {
            seq: 0,
            time: now,
            kind: kind.into(),
            env: Some(head.env.clone()),
            path: Some(head.path.clone()),
            detail: json!({
                "expires_at": exp,
                "threshold": threshold_name(tightest),
                "seconds_left": (exp - now).num_seconds(),
                "owner": head.meta.owner,
            })
            .to_string(),
        };
        work.push((keys, event));
    }
    if work.is_empty() {
        return Ok(());
    }
    rot.engine
        .store()
        .write(None, move |tx: &mut dyn Tx| -> Result<()> {
            for (keys, event) in &work {
                let mut newest_is_new = false;
                for (i, key) in keys.iter().enumerate() {
                    let inserted = tx.sys_insert_new(key, b"1")?;
                    if i + 1 == keys.len() {
                        newest_is_new = inserted;
                    }
                }
                if newest_is_new {
                    tx.event_append(event)?;
                }
            }
            Ok(())
        })
        .await
}

impl Rotations {
    /// Secrets the caller may read that expire within `within` (or have expired).
    pub async fn expiring(
        &self,
        ctx: &RequestCtx,
        within: Duration,
    ) -> Result<Vec<ExpiringSecret>> {
        let (caller, draft) = self
            .engine
            .authorize(ctx, "secret.expiring", None, Capability::Read)
            .await?;
        let r = async {
            let now = self.engine.clock().now();
            let horizon = now + chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
            let heads = self
                .engine
                .store()
                .read(|tx| tx.heads_with_expiry())
                .await?;
            let mut list: Vec<ExpiringSecret> = heads
                .into_iter()
                .filter(|h| crate::events::may_see(&caller, &h.env, &h.path))
                .filter_map(|h| {
                    let exp = h.meta.expires_at?;
                    (exp <= horizon).then(|| ExpiringSecret {
                        seconds_left: (exp - now).num_seconds(),
                        expired: exp <= now,
                        expires_at: exp,
                        owner: h.meta.owner.clone(),
                        description: h.meta.description.clone(),
                        env: h.env,
                        path: h.path,
                    })
                })
                .collect();
            list.sort_by_key(|s| s.expires_at);
            Ok(list)
        }
        .await;
        self.engine.complete(ctx, draft, r).await
    }
}
