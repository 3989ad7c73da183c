//! What the layers above the engine (rotation, expiry scans, event delivery) need from it:
//! operations Steward performs on its own behalf, audited under the actor [`SYSTEM_ACTOR`];
//! authorization and audit for operations that live in other crates; sealing of auxiliary
//! values (a rotation's pending credential) under the keyring; and the record of which token
//! read which version of a secret (consumer-aware retirement).

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use serde_json::Value;
use steward_core::{Clock, SecretPath};
use steward_crypto::{CryptoError, Envelope, Keyring, UnsealKey};
use steward_store::{AuditDraft, ConsumerRow, SecretHead, Tx};
use zeroize::Zeroizing;

use crate::{
    kv::{current_ring, put_version},
    policy::Capability,
    Caller, Engine, RequestCtx, Result, SecretsError, WriteRequest, WriteResult,
};

/// The audit actor of operations Steward starts itself (scheduled rotations, expiry scans).
pub const SYSTEM_ACTOR: &str = "steward";

/// Most distinct (secret, token) reads kept between flushes; beyond it new pairs are dropped
/// (and counted) rather than letting memory grow without bound.
const MAX_PENDING_READS: usize = 100_000;

/// Reads noted since the last flush: (env, path, accessor) -> (version, time).
/// Keyed by a hash of (env, path, accessor), so a repeated read (the common case) allocates
/// nothing; the row keeps the names.
pub(crate) type ReadLog = HashMap<u64, ConsumerRow>;

fn read_key(env: &str, path: &str, accessor: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (env, path, accessor).hash(&mut h);
    h.finish()
}

/// Associated data of auxiliary sealed values; distinct from secret versions' (`aad_for`).
fn aux_aad(context: &str) -> Vec<u8> {
    let mut aad = b"steward-aux-v1\0".to_vec();
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// A new version prepared outside a transaction (validated, keys taken), to be applied inside
/// one together with other changes (a rotation's finish step).
pub struct PreparedWrite {
    env: String,
    path: String,
    plain: Zeroizing<Vec<u8>>,
    ring: Arc<Keyring>,
    unseal: Arc<UnsealKey>,
    now: DateTime<Utc>,
    default_max: u32,
}

impl std::fmt::Debug for PreparedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedWrite")
            .field("env", &self.env)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PreparedWrite {
    /// Writes the version (and its change event) in `tx`.
    pub fn apply(&self, tx: &mut dyn Tx) -> Result<WriteResult> {
        let ring = current_ring(tx, &self.ring, &self.unseal)?;
        // In the same transaction as the head it reads, so check-and-set always holds: a
        // secret that requires CAS still takes the rotation's version.
        let cas = tx
            .head(&self.env, &self.path)?
            .map_or(0, |h| h.current_version);
        let req = WriteRequest {
            value: Value::Null,
            cas: Some(cas),
            metadata: None,
        };
        put_version(
            tx,
            &ring,
            &self.env,
            &self.path,
            &self.plain,
            &req,
            self.now,
            self.default_max,
        )
    }
}

/// Re-seals auxiliary values under the keyring's active key inside a transaction, before old
/// keys are retired (see [`Engine::register_aux_rewrap`]).
pub type AuxRewrap = Arc<dyn Fn(&mut dyn Tx, &Keyring) -> Result<()> + Send + Sync>;

/// Re-wraps one auxiliary value (sealed by [`Engine::seal_aux`] with `context`) under the
/// active key of `ring`.
pub fn rewrap_aux(ring: &Keyring, context: &str, blob: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: CryptoError| {
        SecretsError::internal(format!(
            "cannot re-wrap the sealed value of {context} ({e})"
        ))
    };
    let old = Envelope::from_bytes(blob).map_err(bad)?;
    if old.key_id == ring.active_id() {
        return Ok(blob.to_vec());
    }
    Ok(ring
        .rewrap(&old, &aux_aad(context))
        .map_err(bad)?
        .to_bytes())
}

impl Engine {
    /// Registers a function that re-seals a layer's auxiliary values (the rotation engine's
    /// pending and previous credentials) when old keys are retired after a key rotation.
    pub fn register_aux_rewrap(&self, f: AuxRewrap) {
        self.aux_rewrap
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    pub(crate) fn aux_rewrappers(&self) -> Vec<AuxRewrap> {
        self.aux_rewrap
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// An audit draft for an operation Steward starts itself.
    pub fn system_draft(&self, action: &str, env: &str, path: &str) -> AuditDraft {
        AuditDraft {
            time: self.clock.now(),
            request_id: format!("sys-{}", hex::encode(rand::random::<[u8; 8]>())),
            actor: SYSTEM_ACTOR.to_string(),
            action: action.to_string(),
            env: Some(env.to_string()),
            path: Some(path.to_string()),
            remote_addr: None,
            hmacs: Default::default(),
        }
    }

    /// Authenticates `ctx` and, when `target` is given, checks `cap` on it (the env must be
    /// configured and the path valid). Failures are audited here; on success the caller gets
    /// the draft to pass to [`Engine::complete`] (or to a write).
    pub async fn authorize(
        &self,
        ctx: &RequestCtx,
        action: &str,
        target: Option<(&str, &str)>,
        cap: Capability,
    ) -> Result<(Caller, AuditDraft)> {
        let (caller, draft) = self
            .begin(ctx, action, target.map(|t| t.0), target.map(|t| t.1))
            .await?;
        let check = match target {
            Some((env, path)) => (|| {
                let env = self.env(env)?;
                let path = SecretPath::parse(path)?;
                caller.require(cap, env.as_str(), path.as_str())
            })(),
            None => Ok(()),
        };
        match check {
            Ok(()) => Ok((caller, draft)),
            Err(e) => self.finish(ctx, draft, Err(e)).await,
        }
    }

    /// Audits an operation that changed nothing (or whose change was audited in its own write)
    /// and returns its result.
    pub async fn complete<T>(
        &self,
        ctx: &RequestCtx,
        draft: AuditDraft,
        result: Result<T>,
    ) -> Result<T> {
        self.finish(ctx, draft, result).await
    }

    /// Resolves a credential reference `ENV/PATH#FIELD` (a string field of a Steward secret)
    /// for Steward's own use: alert channels, health-check probes. The error never holds
    /// the value.
    pub async fn resolve_reference(
        &self,
        reference: &str,
    ) -> std::result::Result<Zeroizing<String>, String> {
        let (target, field) = reference.split_once('#').ok_or_else(|| {
            format!("secret reference {reference:?} needs a field: ENV/PATH#FIELD")
        })?;
        let (env, path) = target
            .split_once('/')
            .ok_or_else(|| format!("secret reference {reference:?} needs ENV/PATH#FIELD"))?;
        let (_, _, value) = self
            .system_read(env, path, None)
            .await
            .map_err(|e| format!("cannot read {env}/{path}: {}", e.message))?;
        match value.get(field) {
            Some(Value::String(s)) => Ok(Zeroizing::new(s.clone())),
            Some(_) => Err(format!("{env}/{path}#{field} is not a string")),
            None => Err(format!("{env}/{path} has no field {field:?}")),
        }
    }

    /// Marks a request audited by a write the caller made with its draft.
    pub fn mark_audited(&self, ctx: &RequestCtx) {
        ctx.mark_audited();
    }

    /// Seals `value` under the active key, bound to `context` (e.g. a rotation's id).
    pub fn seal_aux(&self, context: &str, value: &Value) -> Result<Vec<u8>> {
        let plain = Zeroizing::new(serde_json::to_vec(value).expect("JSON values serialize"));
        let envelope = self
            .ring()?
            .seal(&plain, &aux_aad(context))
            .map_err(|e| SecretsError::internal(format!("encryption failed: {e}")))?;
        Ok(envelope.to_bytes())
    }

    /// Opens a value sealed by [`Engine::seal_aux`] with the same `context`.
    pub async fn open_aux(&self, context: &str, blob: &[u8]) -> Result<Value> {
        let bad = |e: CryptoError| {
            SecretsError::internal(format!(
                "cannot decrypt the sealed value of {context} ({e}); the row may have been tampered with"
            ))
        };
        self.open_json(blob, &aux_aad(context), context, bad).await
    }

    /// Reads and decrypts a version (the current one when `version` is None) without a caller:
    /// for Steward's own operations, which audit themselves.
    pub async fn system_read(
        &self,
        env: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<(SecretHead, u64, Value)> {
        let (head, info, value) = self.read_plain(env, path, version).await?;
        Ok((head, info.version, value))
    }

    /// Validates a value and takes the keys for a version written later by
    /// [`PreparedWrite::apply`].
    pub fn prepare_write(&self, env: &str, path: &str, value: &Value) -> Result<PreparedWrite> {
        let env = self.env(env)?;
        let path = SecretPath::parse(path)?;
        let plain = self.encode_value(value)?;
        let (ring, unseal) = self.keys()?;
        Ok(PreparedWrite {
            env: env.as_str().to_string(),
            path: path.as_str().to_string(),
            plain,
            ring,
            unseal,
            now: self.clock.now(),
            default_max: self.cfg.max_versions,
        })
    }

    /// Notes that `accessor` read `version` of a secret; flushed by [`Engine::take_reads`].
    pub(crate) fn note_read(&self, env: &str, path: &str, accessor: &str, version: u64) {
        let now = self.clock.now();
        let key = read_key(env, path, accessor);
        let mut log = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(row) = log.get_mut(&key) {
            if row.env == env && row.path == path && row.accessor == accessor {
                row.version = row.version.max(version);
                row.seen_at = now;
                return;
            }
        }
        if log.len() >= MAX_PENDING_READS {
            return;
        }
        // New, or (astronomically rarely) a hash collision: the newer read wins the slot.
        log.insert(
            key,
            ConsumerRow {
                env: env.to_string(),
                path: path.to_string(),
                accessor: accessor.to_string(),
                version,
                seen_at: now,
            },
        );
    }

    /// The reads noted since the last call, for the caller to store (`Tx::consumer_put`).
    pub fn take_reads(&self) -> Vec<ConsumerRow> {
        let log = std::mem::take(&mut *self.reads.lock().unwrap_or_else(|e| e.into_inner()));
        log.into_values().collect()
    }
}

/// Alert channels and health-check probes read their credentials through the engine.
#[async_trait::async_trait]
impl steward_core::settings::SecretSource for Engine {
    async fn resolve(&self, reference: &str) -> std::result::Result<Zeroizing<String>, String> {
        self.resolve_reference(reference).await
    }
}
