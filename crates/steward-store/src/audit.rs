//! The audit log's entry format, its keyed hash chain, and verification.
//!
//! Each entry's `hash` is HMAC-SHA256 under the audit key over the previous hash and the entry's
//! canonical JSON (which itself holds `seq` and `prev_hash`). Editing, deleting or reordering an
//! entry breaks the chain at that entry; cutting entries off the end is caught by the stored head;
//! and nobody without the key can forge a consistent chain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_crypto::SecretKey;

use crate::AuditDraft;

/// One audit entry as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub request_id: String,
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `ok`, or the error code the request was answered with.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hmacs: BTreeMap<String, String>,
    pub prev_hash: String,
}

/// A stored entry: its canonical JSON text and chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub entry: String,
    pub hash: [u8; 32],
}

impl AuditRecord {
    /// Builds the next record in the chain.
    pub fn seal(
        key: &SecretKey,
        draft: &AuditDraft,
        outcome: &str,
        seq: u64,
        prev: &[u8; 32],
    ) -> Self {
        let entry = AuditEntry {
            seq,
            time: draft.time,
            request_id: draft.request_id.clone(),
            actor: draft.actor.clone(),
            action: draft.action.clone(),
            env: draft.env.clone(),
            path: draft.path.clone(),
            outcome: outcome.to_string(),
            remote_addr: draft.remote_addr.clone(),
            hmacs: draft.hmacs.clone(),
            prev_hash: hex::encode(prev),
        };
        let entry = serde_json::to_string(&entry).expect("audit entries always serialize");
        let hash = steward_crypto::chain_hash(key, prev, entry.as_bytes());
        Self { seq, entry, hash }
    }

    /// One JSON line for `steward audit export`: the entry plus its hash.
    pub fn export_line(&self) -> String {
        let mut v: serde_json::Value =
            serde_json::from_str(&self.entry).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("hash".into(), hex::encode(self.hash).into());
            v.to_string()
        } else {
            // A corrupt row: export it verbatim so verification can point at it.
            serde_json::json!({ "seq": self.seq, "corrupt_entry": self.entry, "hash": hex::encode(self.hash) })
                .to_string()
        }
    }
}

/// The first entry where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: String,
}

/// Walks records in order and checks the chain; feed it pages with [`ChainVerifier::push`].
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    key: &'k SecretKey,
    prev: [u8; 32],
    expected_seq: u64,
    pub checked: u64,
    pub first_break: Option<ChainBreak>,
}

impl<'k> ChainVerifier<'k> {
    pub fn new(key: &'k SecretKey) -> Self {
        Self {
            key,
            prev: [0; 32],
            expected_seq: 1,
            checked: 0,
            first_break: None,
        }
    }

    fn fail(&mut self, seq: u64, reason: impl Into<String>) {
        if self.first_break.is_none() {
            self.first_break = Some(ChainBreak {
                seq,
                reason: reason.into(),
            });
        }
    }

    /// Checks the next record. After the first break, later records are not judged.
    pub fn push(&mut self, rec: &AuditRecord) {
        if self.first_break.is_some() {
            return;
        }
        self.checked += 1;
        if rec.seq != self.expected_seq {
            let reason = if rec.seq > self.expected_seq {
                format!(
                    "entries {}..{} are missing (deleted)",
                    self.expected_seq,
                    rec.seq - 1
                )
            } else {
                format!("entry out of order (expected seq {})", self.expected_seq)
            };
            return self.fail(self.expected_seq.min(rec.seq), reason);
        }
        let parsed: Result<AuditEntry, _> = serde_json::from_str(&rec.entry);
        match parsed {
            Err(e) => return self.fail(rec.seq, format!("entry is not valid JSON ({e})")),
            Ok(entry) if entry.seq != rec.seq => {
                return self.fail(rec.seq, "entry's seq field does not match its position")
            }
            Ok(entry) if entry.prev_hash != hex::encode(self.prev) => {
                return self.fail(
                    rec.seq,
                    "prev_hash does not match the previous entry (reordered or replaced)",
                )
            }
            Ok(_) => {}
        }
        let want = steward_crypto::chain_hash(self.key, &self.prev, rec.entry.as_bytes());
        if !steward_crypto::ct_eq(&want, &rec.hash) {
            return self.fail(rec.seq, "hash mismatch: the entry was edited");
        }
        self.prev = rec.hash;
        self.expected_seq += 1;
    }

    /// Compares the end of the walk with the stored head, which catches a cut-off tail.
    pub fn finish(&mut self, head: (u64, [u8; 32])) {
        if self.first_break.is_some() {
            return;
        }
        let last = self.expected_seq - 1;
        if head.0 != last || (last > 0 && !steward_crypto::ct_eq(&head.1, &self.prev)) {
            self.fail(
                last + 1,
                format!("the log ends at entry {last} but the head records entry {}: entries were removed from the end", head.0),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &SecretKey, n: u64) -> (Vec<AuditRecord>, (u64, [u8; 32])) {
        let mut prev = [0u8; 32];
        let mut out = vec![];
        for seq in 1..=n {
            let draft = AuditDraft {
                action: format!("secret.read.{seq}"),
                actor: "acc".into(),
                ..Default::default()
            };
            let rec = AuditRecord::seal(key, &draft, "ok", seq, &prev);
            prev = rec.hash;
            out.push(rec);
        }
        (out, (n, prev))
    }

    fn verify(key: &SecretKey, recs: &[AuditRecord], head: (u64, [u8; 32])) -> Option<ChainBreak> {
        let mut v = ChainVerifier::new(key);
        recs.iter().for_each(|r| v.push(r));
        v.finish(head);
        v.first_break
    }

    #[test]
    fn intact_chain_verifies() {
        let key = SecretKey::generate();
        let (recs, head) = chain(&key, 5);
        assert_eq!(verify(&key, &recs, head), None);
    }

    #[test]
    fn edit_delete_reorder_truncate_are_caught() {
        let key = SecretKey::generate();
        let (recs, head) = chain(&key, 6);

        let mut edited = recs.clone();
        edited[2].entry = edited[2].entry.replace("secret.read.3", "secret.read.X");
        assert_eq!(verify(&key, &edited, head).unwrap().seq, 3);

        let mut deleted = recs.clone();
        deleted.remove(3);
        assert_eq!(verify(&key, &deleted, head).unwrap().seq, 4);

        let mut reordered = recs.clone();
        reordered.swap(1, 2);
        assert_eq!(verify(&key, &reordered, head).unwrap().seq, 2);

        let truncated = &recs[..4];
        let brk = verify(&key, truncated, head).unwrap();
        assert_eq!(brk.seq, 5);
        assert!(brk.reason.contains("end"));

        // Renumbering after a delete does not help without the key.
        let other = SecretKey::generate();
        let (forged, forged_head) = chain(&other, 6);
        assert_eq!(verify(&key, &forged, forged_head).unwrap().seq, 1);
    }
}
