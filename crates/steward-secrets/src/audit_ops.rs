//! Reading the audit log back: export as JSON lines, verify the hash chain, and compute the
//! HMAC of a known value to look for it in the log (Vault's `sys/audit-hash`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use steward_store::audit::{AuditEntry, AuditRecord, ChainBreak, ChainVerifier};

use crate::{error::SecretsError, policy::Capability, Engine, RequestCtx, Result};

const PAGE: u32 = 2000;

/// A page of exported entries.
#[derive(Debug, Clone, Serialize)]
pub struct AuditExport {
    /// JSON lines, each an entry with its `hash`.
    pub lines: Vec<String>,
    /// Pass as `after` to get the next page; None at the end.
    pub next: Option<u64>,
}

/// What to look for in the audit log; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The actor (a token accessor), exactly.
    pub actor: Option<String>,
    /// A prefix of the action, e.g. `secret.` or `secret.read`.
    pub action: Option<String>,
    pub env: Option<String>,
    /// A prefix of the path.
    pub path: Option<String>,
    /// `ok`, `failed` (anything but ok), or an exact error code.
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl AuditFilter {
    fn keeps(&self, e: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self
                .action
                .as_ref()
                .is_none_or(|a| e.action.starts_with(a.as_str()))
            && self.env.as_ref().is_none_or(|v| e.env.as_ref() == Some(v))
            && self
                .path
                .as_ref()
                .is_none_or(|p| e.path.as_deref().is_some_and(|x| x.starts_with(p.as_str())))
            && self.outcome.as_deref().is_none_or(|o| match o {
                "failed" => e.outcome != "ok",
                o => e.outcome == o,
            })
            && self.since.is_none_or(|t| e.time >= t)
            && self.until.is_none_or(|t| e.time < t)
    }
}

/// A page of matching entries, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for older matches; None when the start of the log was reached.
    pub next_before: Option<u64>,
    /// Entries read to find these (a search reads at most [`SEARCH_SCAN`] per call).
    pub scanned: u64,
}

/// Entries one search call reads at most; a rare filter continues from `next_before`.
pub const SEARCH_SCAN: u64 = 50_000;

/// The outcome of `steward audit verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: u64,
    pub first_bad: Option<ChainBreak>,
}

impl Engine {
    /// Exports entries with seq > `after`, at most `limit` (admin on sys/audit).
    pub async fn audit_export(
        &self,
        ctx: &RequestCtx,
        after: u64,
        limit: u32,
    ) -> Result<AuditExport> {
        let (caller, draft) = self.begin(ctx, "audit.export", None, None).await?;
        let r = async {
            caller.require(Capability::Admin, "sys", "audit")?;
            let limit = limit.clamp(1, 10_000);
            // Sequence numbers are signed 64-bit in the store; nothing lies beyond.
            let after = after.min(i64::MAX as u64);
            let recs: Vec<AuditRecord> = self
                .store
                .read(move |tx| tx.audit_range(after, limit).map_err(SecretsError::from))
                .await?;
            let next = (recs.len() as u32 == limit).then(|| recs.last().map_or(after, |r| r.seq));
            Ok(AuditExport {
                lines: recs.iter().map(AuditRecord::export_line).collect(),
                next,
            })
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Entries matching `filter`, newest first, older than `before` (default: all), at most
    /// `limit` (admin on sys/audit). Reads backwards in pages and stops after
    /// [`SEARCH_SCAN`] entries, so a search never holds the store for long.
    pub async fn audit_search(
        &self,
        ctx: &RequestCtx,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<AuditPage> {
        let (caller, draft) = self.begin(ctx, "audit.search", None, None).await?;
        let r = async {
            caller.require(Capability::Admin, "sys", "audit")?;
            let limit = limit.clamp(1, 1000) as usize;
            let head = self
                .store
                .read(|tx| tx.audit_head().map_err(SecretsError::from))
                .await?
                .0;
            // `cursor` is one past the newest entry still to read.
            let mut cursor = before.map_or(head + 1, |b| b.min(head + 1));
            let (mut entries, mut scanned) = (Vec::new(), 0u64);
            while cursor > 1 && entries.len() < limit && scanned < SEARCH_SCAN {
                let after = cursor.saturating_sub(u64::from(PAGE) + 1);
                let n = (cursor - 1 - after) as u32;
                let page = self
                    .store
                    .read(move |tx| tx.audit_range(after, n).map_err(SecretsError::from))
                    .await?;
                for rec in page.iter().rev() {
                    if rec.seq >= cursor {
                        continue;
                    }
                    scanned += 1;
                    cursor = rec.seq;
                    // A row that does not parse is corrupt: `steward audit verify` names it.
                    if let Ok(e) = serde_json::from_str::<AuditEntry>(&rec.entry) {
                        if filter.keeps(&e) {
                            entries.push(e);
                            if entries.len() == limit {
                                break;
                            }
                        }
                    }
                }
                if page.is_empty() {
                    cursor = after + 1;
                }
            }
            Ok(AuditPage {
                entries,
                next_before: (cursor > 1).then_some(cursor),
                scanned,
            })
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Walks the whole chain and reports the first broken entry (admin on sys/audit).
    pub async fn audit_verify(&self, ctx: &RequestCtx) -> Result<VerifyReport> {
        let (caller, draft) = self.begin(ctx, "audit.verify", None, None).await?;
        let r = async {
            caller.require(Capability::Admin, "sys", "audit")?;
            let key = self.ring()?.hmac_key().clone();
            let mut v = ChainVerifier::new(&key);
            // The head is read first: entries appended while we walk lie beyond it.
            let head = self
                .store
                .read(|tx| tx.audit_head().map_err(SecretsError::from))
                .await?;
            let mut after = 0;
            while after < head.0 {
                let limit = PAGE.min((head.0 - after) as u32);
                let page = self
                    .store
                    .read(move |tx| tx.audit_range(after, limit).map_err(SecretsError::from))
                    .await?;
                if page.is_empty() {
                    break;
                }
                for rec in &page {
                    if rec.seq <= head.0 {
                        v.push(rec);
                    }
                }
                after = page.last().map_or(head.0, |r| r.seq);
            }
            v.finish(head);
            Ok(VerifyReport {
                ok: v.first_break.is_none(),
                entries: v.checked,
                first_bad: v.first_break.clone(),
            })
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// HMAC of `input` under the audit key, to compare with `hmacs` fields in the log.
    pub async fn audit_hash(&self, ctx: &RequestCtx, input: &str) -> Result<String> {
        let (caller, draft) = self.begin(ctx, "audit.hash", None, None).await?;
        let r = async {
            caller.require(Capability::Admin, "sys", "audit")?;
            let ring = self.ring()?;
            // Values are logged as the HMAC of their JSON encoding; accept the raw string too.
            let json = serde_json::to_vec(&serde_json::Value::String(input.to_string()))
                .expect("strings serialize");
            Ok(steward_crypto::hmac_hex(ring.hmac_key(), &json))
        }
        .await;
        self.finish(ctx, draft, r).await
    }
}
