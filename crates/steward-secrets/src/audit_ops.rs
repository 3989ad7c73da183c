//! Reading the audit log back: export as JSON lines, verify the hash chain, and compute the
//! HMAC of a known value to look for it in the log (Vault's `sys/audit-hash`).

use serde::Serialize;
use steward_store::audit::{AuditRecord, ChainBreak, ChainVerifier};

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
