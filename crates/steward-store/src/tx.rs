//! [`Tx`]: the transactional primitives both backends implement. Engines compose them inside
//! [`crate::Store::read`] and [`crate::Store::write`] closures; each closure runs in one
//! transaction (writes: one savepoint inside a group-commit transaction).

use crate::{
    audit::AuditRecord, CheckResultRow, ConsumerRow, EventRow, PolicyRecord, RecordRow, RollupRow,
    RotationRow, SecretHead, StoreError, TokenRecord, VersionInfo, VersionRow,
};
use chrono::{DateTime, Utc};

/// One envelope to re-wrap: env, path, version, sealed envelope.
pub type RewrapItem = (String, String, u64, Vec<u8>);

/// One open transaction.
pub trait Tx {
    /// Backend name, for logs and metrics: `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    fn sys_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn sys_put(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Inserts only if absent; returns whether it inserted. Guards one-time initialization.
    fn sys_insert_new(&mut self, key: &str, value: &[u8]) -> Result<bool, StoreError>;

    fn head(&mut self, env: &str, path: &str) -> Result<Option<SecretHead>, StoreError>;
    /// A secret's head and one version (the current one when `version` is None), read
    /// consistently: in one statement where the backend can, so reads need no transaction.
    fn head_and_version(
        &mut self,
        env: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<(SecretHead, Option<VersionRow>)>, StoreError> {
        let Some(head) = self.head(env, path)? else {
            return Ok(None);
        };
        let row = self.version(env, path, version.unwrap_or(head.current_version))?;
        Ok(Some((head, row)))
    }
    fn put_head(&mut self, head: &SecretHead) -> Result<(), StoreError>;
    /// Removes a secret and all its versions; returns whether it existed.
    fn delete_secret(&mut self, env: &str, path: &str) -> Result<bool, StoreError>;
    /// Every kept version, oldest first.
    fn versions(&mut self, env: &str, path: &str) -> Result<Vec<VersionInfo>, StoreError>;
    fn version(
        &mut self,
        env: &str,
        path: &str,
        version: u64,
    ) -> Result<Option<VersionRow>, StoreError>;
    fn insert_version(
        &mut self,
        env: &str,
        path: &str,
        info: &VersionInfo,
        envelope: &[u8],
    ) -> Result<(), StoreError>;
    /// Sets deletion time and, when `destroy`, erases the envelope for good.
    fn update_version(
        &mut self,
        env: &str,
        path: &str,
        info: &VersionInfo,
    ) -> Result<(), StoreError>;
    /// Deletes versions below `keep_from`; returns how many.
    fn prune_versions(&mut self, env: &str, path: &str, keep_from: u64) -> Result<u64, StoreError>;
    /// Full paths in `env` that start with `prefix`, sorted, at most `limit`.
    fn list_paths(
        &mut self,
        env: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// Envelopes whose data key is wrapped under a key other than `key_id`.
    fn envelopes_not_under(
        &mut self,
        key_id: u32,
        limit: u32,
    ) -> Result<Vec<RewrapItem>, StoreError>;
    /// How many live envelopes are under a key other than `key_id`.
    fn count_envelopes_not_under(&mut self, key_id: u32) -> Result<u64, StoreError>;
    /// Replaces a live envelope with its re-wrapped form, unless the row is already under
    /// `key_id` (then it was rewritten since it was read for re-wrapping, and is left alone).
    fn set_envelope(
        &mut self,
        env: &str,
        path: &str,
        version: u64,
        key_id: u32,
        envelope: &[u8],
    ) -> Result<(), StoreError>;

    fn token_get(&mut self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;
    fn token_by_accessor(&mut self, accessor: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn token_put(&mut self, rec: &TokenRecord) -> Result<(), StoreError>;
    fn token_list(&mut self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Tokens whose `parent` is this accessor (indexed).
    fn token_children(&mut self, parent: &str) -> Result<Vec<TokenRecord>, StoreError>;

    fn policy_get(&mut self, name: &str) -> Result<Option<PolicyRecord>, StoreError>;
    fn policy_put(&mut self, rec: &PolicyRecord) -> Result<(), StoreError>;
    fn policy_delete(&mut self, name: &str) -> Result<bool, StoreError>;
    fn policy_list(&mut self) -> Result<Vec<PolicyRecord>, StoreError>;

    /// The chain head (seq, hash); locks it against other writers until commit.
    fn audit_head(&mut self) -> Result<(u64, [u8; 32]), StoreError>;
    /// Appends consecutive records and moves the head to the last one.
    fn audit_append(&mut self, recs: &[AuditRecord]) -> Result<(), StoreError>;
    /// Entries with seq > `after`, ascending, at most `limit`.
    fn audit_range(&mut self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// Secrets whose metadata sets `expires_at`.
    fn heads_with_expiry(&mut self) -> Result<Vec<SecretHead>, StoreError>;

    /// A rotation row; in a write transaction on PostgreSQL it is locked until commit.
    fn rotation_get(&mut self, env: &str, path: &str) -> Result<Option<RotationRow>, StoreError>;
    fn rotation_put(&mut self, row: &RotationRow) -> Result<(), StoreError>;
    fn rotation_delete(&mut self, env: &str, path: &str) -> Result<bool, StoreError>;
    /// Every rotation row, by env and path.
    fn rotation_list(&mut self) -> Result<Vec<RotationRow>, StoreError>;
    /// Rows due at or before `now`, earliest first, at most `limit`.
    fn rotation_due(
        &mut self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RotationRow>, StoreError>;

    /// Appends an event (its `seq` is ignored) and returns the seq it got. Events commit in
    /// seq order, so a cursor never skips one that commits later.
    fn event_append(&mut self, ev: &EventRow) -> Result<u64, StoreError>;
    /// Events with seq > `after`, ascending, at most `limit`.
    fn events_after(&mut self, after: u64, limit: u32) -> Result<Vec<EventRow>, StoreError>;

    /// The highest event seq (0 when there are none).
    fn events_last_seq(&mut self) -> Result<u64, StoreError>;

    /// Records that a token read a version (keeps the highest version and the latest time).
    fn consumer_put(&mut self, row: &ConsumerRow) -> Result<(), StoreError>;
    fn consumers(&mut self, env: &str, path: &str) -> Result<Vec<ConsumerRow>, StoreError>;

    /// A record; in a write transaction on PostgreSQL it is locked until commit.
    fn record_get(&mut self, kind: &str, id: &str) -> Result<Option<RecordRow>, StoreError>;
    /// Inserts or replaces a record.
    fn record_put(&mut self, row: &RecordRow) -> Result<(), StoreError>;
    fn record_delete(&mut self, kind: &str, id: &str) -> Result<bool, StoreError>;
    /// Records of `kind` with id > `after`, by id, at most `limit`.
    fn record_list(
        &mut self,
        kind: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<RecordRow>, StoreError>;
    /// Records of `kind` due at or before `now`, earliest first (then by id), at most `limit`.
    fn record_due(
        &mut self,
        kind: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RecordRow>, StoreError>;
    /// Deletes the records of `kind` due before `before` (pruning); returns how many.
    fn record_delete_due(&mut self, kind: &str, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// How many records `kind` has.
    fn record_count(&mut self, kind: &str) -> Result<u64, StoreError>;

    /// Stores health-check results (a result at the same check and time is replaced).
    fn check_results_put(&mut self, rows: &[CheckResultRow]) -> Result<(), StoreError>;
    /// Results with `from <= at < to` (all checks when `check` is None), oldest first, at
    /// most `limit`.
    fn check_results_range(
        &mut self,
        check: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<CheckResultRow>, StoreError>;
    /// The newest `limit` results of `check`, newest first.
    fn check_results_latest(
        &mut self,
        check: &str,
        limit: u32,
    ) -> Result<Vec<CheckResultRow>, StoreError>;
    /// Deletes results older than `before`; returns how many.
    fn check_results_delete_before(&mut self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    fn rollup_get(
        &mut self,
        check: &str,
        res: &str,
        bucket: i64,
    ) -> Result<Option<RollupRow>, StoreError>;
    /// Inserts or replaces a roll-up bucket.
    fn rollup_put(&mut self, row: &RollupRow) -> Result<(), StoreError>;
    /// Buckets of `check` at `res` with `from <= bucket < to`, oldest first.
    fn rollups_range(
        &mut self,
        check: &str,
        res: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<RollupRow>, StoreError>;
    /// Deletes buckets at `res` older than `before`; returns how many.
    fn rollups_delete_before(&mut self, res: &str, before: i64) -> Result<u64, StoreError>;

    fn savepoint(&mut self) -> Result<(), StoreError>;
    fn rollback_savepoint(&mut self) -> Result<(), StoreError>;
    fn release_savepoint(&mut self) -> Result<(), StoreError>;
}
