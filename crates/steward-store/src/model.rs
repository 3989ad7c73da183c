//! Row types exchanged between engines and the store. Nothing here holds plaintext secret values:
//! versions carry sealed envelopes, tokens carry only their hash.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Secret metadata: everything about a secret except its values. Stored unencrypted, so it must
/// never hold a secret (the docs say so).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretMeta {
    pub description: String,
    pub owner: String,
    pub tags: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub custom: BTreeMap<String, String>,
    /// Versions to keep; `None` uses the server default, `Some(0)` keeps all.
    pub max_versions: Option<u32>,
    /// Require `cas` on every write.
    pub cas_required: bool,
}

/// One secret's head row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHead {
    pub env: String,
    pub path: String,
    pub meta: SecretMeta,
    /// Highest version ever written (0 if none yet).
    pub current_version: u64,
    /// Lowest version still kept.
    pub oldest_version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A version's bookkeeping, without its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub destroyed: bool,
    pub key_id: u32,
}

/// A version with its sealed envelope (absent once destroyed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub info: VersionInfo,
    pub envelope: Option<Vec<u8>>,
}

/// A stored token. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(skip)]
    pub hash: [u8; 32],
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Lifetime granted on create and on each renew, in seconds; `None` for no expiry.
    pub ttl_secs: Option<u64>,
    /// Renewals never extend past this.
    pub max_expires_at: Option<DateTime<Utc>>,
    pub renewable: bool,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Accessor of the token that created this one; revoking the parent revokes it.
    #[serde(default)]
    pub parent: Option<String>,
    /// Keyed MAC over the record (set by the secrets engine), so a row written straight into
    /// the database without the audit key is not a valid token.
    #[serde(default)]
    pub mac: String,
}

/// A named access policy; `document` is the policy JSON the secrets engine understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub name: String,
    pub document: String,
    pub updated_at: DateTime<Utc>,
}

/// What one request contributes to the audit log; the writer adds seq, outcome and chain hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditDraft {
    pub time: DateTime<Utc>,
    pub request_id: String,
    /// Token accessor, `root`'s accessor, or `anonymous`; never the token.
    pub actor: String,
    pub action: String,
    pub env: Option<String>,
    pub path: Option<String>,
    pub remote_addr: Option<String>,
    /// Keyed HMACs of request fields that could carry a secret, e.g. `value`.
    pub hmacs: BTreeMap<String, String>,
}

/// Microseconds since the epoch, the on-disk time format of both backends.
pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(v: i64) -> Result<DateTime<Utc>, crate::StoreError> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| crate::StoreError::Corrupt(format!("timestamp {v} out of range")))
}

/// One secret's rotation: its configuration and state machine, as a JSON document the rotation
/// engine owns, plus the next time it is due (indexed, so the scheduler finds due rows fast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRow {
    pub env: String,
    pub path: String,
    pub doc: String,
    pub due_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A JSON document owned by one subsystem (`kind`, e.g. `alert`, `silence`, `outbox`), keyed
/// by `id` within its kind, with an optional due time (indexed per kind) for work queues.
/// Subsystems whose data is a set of documents share this table instead of adding one each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub kind: String,
    pub id: String,
    pub doc: String,
    pub due_at: Option<DateTime<Utc>>,
}

/// One durable change event. `seq` orders events across the whole store; a consumer keeps
/// the last `seq` it saw as its cursor. `detail` is JSON and never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub kind: String,
    pub env: Option<String>,
    pub path: Option<String>,
    pub detail: String,
}

/// The newest version of a secret a token has read, and when (consumer-aware retirement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerRow {
    pub env: String,
    pub path: String,
    pub accessor: String,
    pub version: u64,
    pub seen_at: DateTime<Utc>,
}

/// One health-check run (`check_results`, kept raw for a short time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResultRow {
    pub check: String,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub duration_us: u64,
    /// Why it failed (never holds a credential).
    pub error: Option<String>,
}

/// One roll-up bucket of a check's results (`check_rollups`): `res` is `minute`, `hour` or
/// `day`, `bucket` the bucket's start (Unix seconds), `doc` the aggregate as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub check: String,
    pub res: String,
    pub bucket: i64,
    pub doc: String,
}
