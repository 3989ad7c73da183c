//! Versioned secrets: read, write with check-and-set, soft delete, undelete, destroy, metadata,
//! listing, rollback and export. Values are JSON strings or objects, sealed per version with
//! their own data key; the associated data binds each ciphertext to env, path and version.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use steward_core::SecretPath;

use steward_crypto::{CryptoError, Envelope, Keyring, UnsealKey};
use steward_store::{SecretHead, SecretMeta, Tx, VersionInfo, VersionRow};
use zeroize::Zeroizing;

use crate::{
    error::{Kind, SecretsError},
    policy::Capability,
    Engine, RequestCtx, Result,
};

/// Longest list answer; a prefix with more paths is cut (and says so).
const LIST_LIMIT: u32 = 10_000;

/// Highest version number a store can hold (versions are signed 64-bit columns); a larger
/// requested version does not exist, and must not reach the store (which would fail).
const MAX_STORED_VERSION: u64 = i64::MAX as u64;

/// A version's public bookkeeping (Vault's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionMeta {
    pub version: u64,
    pub created_time: DateTime<Utc>,
    pub deletion_time: Option<DateTime<Utc>>,
    pub destroyed: bool,
}

impl From<&VersionInfo> for VersionMeta {
    fn from(v: &VersionInfo) -> Self {
        Self {
            version: v.version,
            created_time: v.created_at,
            deletion_time: v.deleted_at,
            destroyed: v.destroyed,
        }
    }
}

/// A decrypted secret version.
#[derive(Debug, Clone)]
pub struct SecretData {
    pub value: Value,
    pub version: VersionMeta,
    pub meta: SecretMeta,
}

/// A secret's metadata and version history.
#[derive(Debug, Clone, Serialize)]
pub struct SecretMetadata {
    pub env: String,
    pub path: String,
    pub meta: SecretMeta,
    pub current_version: u64,
    pub oldest_version: u64,
    pub max_versions: u32,
    pub created_time: DateTime<Utc>,
    pub updated_time: DateTime<Utc>,
    pub versions: Vec<VersionMeta>,
}

/// Which version to read and whether to expand `${secret:...}` references.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub version: Option<u64>,
    pub resolve: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            version: None,
            resolve: true,
        }
    }
}

/// A metadata change; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataUpdate {
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Option<Vec<String>>,
    /// RFC 3339 time; `null` clears it.
    #[serde(default, with = "double_option")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(alias = "custom_metadata")]
    pub custom: Option<BTreeMap<String, String>>,
    pub max_versions: Option<u32>,
    pub cas_required: Option<bool>,
    /// Vault's automatic version deletion; accepted (Vault clients always send it) only as
    /// "0s", meaning off, because Steward does not delete versions on a timer.
    #[serde(default)]
    pub delete_version_after: Option<String>,
}

mod double_option {
    //! Tells "field absent" (leave) from "field null" (clear).
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }
}

impl MetadataUpdate {
    fn apply(&self, m: &mut SecretMeta) -> Result<()> {
        if let Some(d) = self.delete_version_after.as_deref() {
            if !matches!(d, "" | "0" | "0s") {
                return Err(SecretsError::invalid(
                    "unsupported",
                    format!("delete_version_after = {d:?} is not supported; use \"0s\" (off)"),
                ));
            }
        }
        const MAX_FIELD: usize = 4096;
        let long = |what: &str| {
            SecretsError::invalid(
                "invalid_metadata",
                format!("{what} is longer than {MAX_FIELD} bytes"),
            )
        };
        if let Some(d) = &self.description {
            (d.len() <= MAX_FIELD)
                .then_some(())
                .ok_or_else(|| long("description"))?;
            m.description = d.clone();
        }
        if let Some(o) = &self.owner {
            (o.len() <= 256)
                .then_some(())
                .ok_or_else(|| long("owner"))?;
            m.owner = o.clone();
        }
        if let Some(t) = &self.tags {
            if t.len() > 64 || t.iter().any(|t| t.is_empty() || t.len() > 128) {
                return Err(SecretsError::invalid(
                    "invalid_metadata",
                    "tags: at most 64 tags of 1-128 bytes each",
                ));
            }
            m.tags = t.clone();
        }
        if let Some(e) = self.expires_at {
            m.expires_at = e;
        }
        if let Some(c) = &self.custom {
            if c.len() > 64 || c.iter().any(|(k, v)| k.len() > 128 || v.len() > 512) {
                return Err(SecretsError::invalid(
                    "invalid_metadata",
                    "custom metadata: at most 64 keys, keys up to 128 bytes, values up to 512 bytes",
                ));
            }
            m.custom = c.clone();
        }
        if let Some(v) = self.max_versions {
            m.max_versions = Some(v);
        }
        if let Some(c) = self.cas_required {
            m.cas_required = c;
        }
        Ok(())
    }
}

/// A write: the new value, optional check-and-set, optional metadata change.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub value: Value,
    pub cas: Option<u64>,
    pub metadata: Option<MetadataUpdate>,
}

/// The version a write created.
#[derive(Debug, Clone, Serialize)]
pub struct WriteResult {
    pub version: u64,
    pub created_time: DateTime<Utc>,
}

/// Keys directly under a prefix; folders end in '/'.
#[derive(Debug, Clone, Serialize)]
pub struct ListResult {
    pub keys: Vec<String>,
    pub truncated: bool,
}

fn not_found(env: &str, path: &str) -> SecretsError {
    SecretsError::not_found(format!("no secret at {env}/{path}"))
}

fn crypto_err(env: &str, path: &str, v: u64, e: CryptoError) -> SecretsError {
    SecretsError::internal(format!(
        "cannot decrypt {env}/{path} version {v} ({e}); the row may have been tampered with"
    ))
}

impl Engine {
    fn max_versions_for(&self, meta: &SecretMeta) -> u32 {
        meta.max_versions.unwrap_or(self.cfg.max_versions)
    }

    /// Validates and serializes a value; returns the plaintext bytes.
    pub(crate) fn encode_value(&self, value: &Value) -> Result<Zeroizing<Vec<u8>>> {
        if !matches!(value, Value::String(_) | Value::Object(_)) {
            return Err(SecretsError::invalid(
                "invalid_value",
                "a secret value must be a string or a JSON object",
            ));
        }
        let bytes = Zeroizing::new(serde_json::to_vec(value).expect("JSON values serialize"));
        if bytes.len() > self.cfg.max_value_bytes {
            return Err(SecretsError::new(
                Kind::TooLarge,
                "value_too_large",
                format!(
                    "the value is {} bytes; the limit is {} (secrets.max_value_bytes)",
                    bytes.len(),
                    self.cfg.max_value_bytes
                ),
            ));
        }
        Ok(bytes)
    }

    /// Opens a stored envelope, reloading the keyring once if another replica rotated it.
    async fn open(&self, env: &str, path: &str, v: u64, blob: &[u8]) -> Result<Value> {
        let aad = steward_crypto::aad_for(env, path, v);
        self.open_json(blob, &aad, &format!("{env}/{path} v{v}"), |e| {
            crypto_err(env, path, v, e)
        })
        .await
    }

    /// Opens an envelope holding JSON, reloading the keyring once if another replica rotated
    /// it; `what` names the value in errors.
    pub(crate) async fn open_json(
        &self,
        blob: &[u8],
        aad: &[u8],
        what: &str,
        bad: impl Fn(CryptoError) -> SecretsError,
    ) -> Result<Value> {
        let envelope = Envelope::from_bytes(blob).map_err(&bad)?;
        let mut ring = self.ring()?;
        let plain = match ring.open(&envelope, aad) {
            Err(CryptoError::UnknownKey(_)) => {
                self.refresh_ring().await?;
                ring = self.ring()?;
                ring.open(&envelope, aad)
            }
            other => other,
        }
        .map_err(&bad)?;
        serde_json::from_slice(&plain)
            .map_err(|e| SecretsError::internal(format!("{what} is not JSON: {e}")))
    }

    /// Reads one version (latest when `version` is None) and decrypts it.
    pub(crate) async fn read_plain(
        &self,
        env: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<(SecretHead, VersionInfo, Value)> {
        let (e, p) = (env.to_string(), path.to_string());
        let (head, row) = self
            .store
            .read(move |tx| -> Result<(SecretHead, Option<VersionRow>)> {
                // Versions beyond what the store can hold do not exist.
                let v = version.filter(|v| *v > MAX_STORED_VERSION);
                if v.is_some() {
                    let head = tx.head(&e, &p)?.ok_or_else(|| not_found(&e, &p))?;
                    return Ok((head, None));
                }
                tx.head_and_version(&e, &p, version)?
                    .ok_or_else(|| not_found(&e, &p))
            })
            .await?;
        let want = version.unwrap_or(head.current_version);
        let row = row.ok_or_else(|| {
            SecretsError::not_found(format!(
                "version {want} of {env}/{path} does not exist (kept versions: {}..={})",
                head.oldest_version, head.current_version
            ))
        })?;
        // Vault answers a deleted or destroyed version with its metadata; so do we.
        let detail = || {
            serde_json::json!({
                "version": want,
                "created_time": row.info.created_at,
                "deletion_time": row.info.deleted_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).unwrap_or_default(),
                "destroyed": row.info.destroyed,
                "custom_metadata": null,
            })
        };
        if row.info.destroyed {
            return Err(SecretsError::new(
                Kind::NotFound,
                "version_destroyed",
                format!("version {want} of {env}/{path} was destroyed; read another version"),
            )
            .with_detail(detail()));
        }
        if let Some(at) = row.info.deleted_at {
            return Err(SecretsError::new(
                Kind::NotFound,
                "version_deleted",
                format!(
                    "version {want} of {env}/{path} was deleted at {at}; undelete it or read another version"
                ),
            )
            .with_detail(detail()));
        }
        let blob = row
            .envelope
            .as_deref()
            .ok_or_else(|| SecretsError::internal("live version without ciphertext"))?;
        let value = self.open(env, path, want, blob).await?;
        Ok((head, row.info, value))
    }

    /// Reads a secret. Unless `opts.resolve` is false, `${secret:ENV/PATH}` references in the
    /// value are replaced by the referenced secrets (which the caller must be able to read).
    pub async fn read_secret(
        &self,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        opts: ReadOptions,
    ) -> Result<SecretData> {
        let (caller, mut draft) = self
            .begin(ctx, "secret.read", Some(env), Some(path))
            .await?;
        let r = async {
            let env = self.env(env)?;
            let path = SecretPath::parse(path)?;
            caller.require(Capability::Read, env.as_str(), path.as_str())?;
            let (head, info, value) = self
                .read_plain(env.as_str(), path.as_str(), opts.version)
                .await?;
            let value = if opts.resolve {
                let origin = format!("{env}/{path}");
                self.resolve_value(&caller, value, vec![origin]).await?
            } else {
                value
            };
            self.note_read(env.as_str(), path.as_str(), &caller.accessor, info.version);
            Ok(SecretData {
                value,
                version: VersionMeta::from(&info),
                meta: head.meta,
            })
        }
        .await;
        Self::note_references(&caller, &mut draft);
        self.finish(ctx, draft, r).await
    }

    /// Writes a new version.
    pub async fn write_secret(
        &self,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        req: WriteRequest,
    ) -> Result<WriteResult> {
        let (caller, mut draft) = self
            .begin(ctx, "secret.write", Some(env), Some(path))
            .await?;
        let prepared = (|| {
            let env = self.env(env)?;
            let path = SecretPath::parse(path)?;
            caller.require(Capability::Write, env.as_str(), path.as_str())?;
            if req
                .metadata
                .as_ref()
                .is_some_and(|m| m.max_versions.is_some())
            {
                // Lowering max_versions deletes history for good: that takes `delete`.
                caller.require(Capability::Delete, env.as_str(), path.as_str())?;
            }
            let plain = self.encode_value(&req.value)?;
            check_references(&req.value)?;
            let (ring, unseal) = self.keys()?;
            Ok((env, path, plain, ring, unseal))
        })();
        let (env, path, plain, ring, unseal) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        draft.hmacs.insert(
            "value".into(),
            steward_crypto::hmac_hex(ring.hmac_key(), &plain),
        );
        ctx.mark_audited();
        self.commit_version(draft, env, path, plain, req, ring, unseal)
            .await
    }

    /// Runs the version write (with its audit entry) in the group-commit writer.
    #[allow(clippy::too_many_arguments)]
    async fn commit_version(
        &self,
        draft: steward_store::AuditDraft,
        env: steward_core::EnvName,
        path: SecretPath,
        plain: Zeroizing<Vec<u8>>,
        req: WriteRequest,
        ring: Arc<Keyring>,
        unseal: Arc<UnsealKey>,
    ) -> Result<WriteResult> {
        let now = self.clock.now();
        let default_max = self.cfg.max_versions;
        self.store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                let ring = current_ring(tx, &ring, &unseal)?;
                put_version(
                    tx,
                    &ring,
                    env.as_str(),
                    path.as_str(),
                    &plain,
                    &req,
                    now,
                    default_max,
                )
            })
            .await
    }

    /// Makes a new version holding an older version's value.
    pub async fn rollback(
        &self,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        to_version: u64,
    ) -> Result<WriteResult> {
        let (caller, mut draft) = self
            .begin(ctx, "secret.rollback", Some(env), Some(path))
            .await?;
        draft
            .hmacs
            .insert("to_version".into(), to_version.to_string());
        let prepared = async {
            let env = self.env(env)?;
            let path = SecretPath::parse(path)?;
            caller.require(Capability::Write, env.as_str(), path.as_str())?;
            let (head, _, value) = self
                .read_plain(env.as_str(), path.as_str(), Some(to_version))
                .await?;
            let plain = self.encode_value(&value)?;
            let (ring, unseal) = self.keys()?;
            Ok((env, path, plain, head.current_version, ring, unseal))
        }
        .await;
        let (env, path, plain, current, ring, unseal) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        ctx.mark_audited();
        // cas on the version we read, so a concurrent write is not silently overwritten.
        let req = WriteRequest {
            value: Value::Null,
            cas: Some(current),
            metadata: None,
        };
        self.commit_version(draft, env, path, plain, req, ring, unseal)
            .await
    }

    /// Soft-deletes versions (the latest when `versions` is empty), undeletes, or destroys.
    pub async fn change_versions(
        &self,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        op: VersionOp,
        versions: Vec<u64>,
    ) -> Result<()> {
        let action = match op {
            VersionOp::Delete => "secret.delete",
            VersionOp::Undelete => "secret.undelete",
            VersionOp::Destroy => "secret.destroy",
        };
        let (caller, mut draft) = self.begin(ctx, action, Some(env), Some(path)).await?;
        if !versions.is_empty() {
            draft.hmacs.insert(
                "versions".into(),
                versions
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let prepared = (|| {
            let env = self.env(env)?;
            let path = SecretPath::parse(path)?;
            caller.require(Capability::Delete, env.as_str(), path.as_str())?;
            if versions.is_empty() && op != VersionOp::Delete {
                return Err(SecretsError::invalid(
                    "missing_versions",
                    "name the versions to change, e.g. {\"versions\": [1, 2]}",
                ));
            }
            Ok((env, path))
        })();
        let (env, path) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        ctx.mark_audited();
        let now = self.clock.now();
        self.store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                let (env, path) = (env.as_str(), path.as_str());
                let head = tx.head(env, path)?.ok_or_else(|| not_found(env, path))?;
                let targets = if versions.is_empty() {
                    vec![head.current_version]
                } else {
                    versions
                };
                for v in targets {
                    if v > MAX_STORED_VERSION {
                        continue;
                    }
                    let Some(row) = tx.version(env, path, v)? else {
                        continue;
                    };
                    let mut info = row.info;
                    match op {
                        VersionOp::Delete if info.deleted_at.is_none() => {
                            info.deleted_at = Some(now)
                        }
                        VersionOp::Undelete if !info.destroyed => info.deleted_at = None,
                        VersionOp::Destroy => info.destroyed = true,
                        _ => continue,
                    }
                    tx.update_version(env, path, &info)?;
                }
                Ok(())
            })
            .await
    }

    /// Reads metadata and version history.
    pub async fn read_metadata(
        &self,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
    ) -> Result<SecretMetadata> {
        let (caller, draft) = self
            .begin(ctx, "secret.metadata.read", Some(env), Some(path))
            .await?;
        let r = async {
            let env = self.env(env)?;
            let path = SecretPath::parse(path)?;
            caller.require(Capability::Read, env.as_str(), path.as_str())?;
            let (e, p) = (env.to_string(), path.to_string());
            let (head, versions) = self
                .store
                .read(move |tx| -> Result<_> {
                    let head = tx.head(&e, &p)?.ok_or_else(|| not_found(&e, &p))?;
                    Ok((head, tx.versions(&e, &p)?))
                })
                .await?;
            Ok(SecretMetadata {
                max_versions: self.max_versions_for(&head.meta),
                env: head.env,
                path: head.path,
                meta: head.meta,
                current_version: head.current_version,
                oldest_version: head.oldest_version,
                created_time: head.created_at,
                updated_time: head.updated_at,
                versions: versions.iter().map(VersionMeta::from).collect(),
            })
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Changes metadata; creates the secret's head if it does not exist yet (as Vault does).
    pub async fn update_metadata(
        &self,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        update: MetadataUpdate,
    ) -> Result<()> {
        let (caller, draft) = self
            .begin(ctx, "secret.metadata.write", Some(env), Some(path))
            .await?;
        let prepared = (|| {
            let env = self.env(env)?;
            let path = SecretPath::parse(path)?;
            caller.require(Capability::Write, env.as_str(), path.as_str())?;
            if update.max_versions.is_some() {
                // Lowering max_versions deletes history for good: that takes `delete`.
                caller.require(Capability::Delete, env.as_str(), path.as_str())?;
            }
            Ok((env, path))
        })();
        let (env, path) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        ctx.mark_audited();
        let now = self.clock.now();
        let default_max = self.cfg.max_versions;
        self.store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                let (env, path) = (env.as_str(), path.as_str());
                let mut head = tx
                    .head(env, path)?
                    .unwrap_or_else(|| new_head(env, path, now));
                update.apply(&mut head.meta)?;
                head.updated_at = now;
                prune(tx, &mut head, default_max)?;
                tx.put_head(&head)?;
                Ok(())
            })
            .await
    }

    /// Deletes a secret with every version and its metadata.
    pub async fn delete_metadata(&self, ctx: &RequestCtx, env: &str, path: &str) -> Result<()> {
        let (caller, draft) = self
            .begin(ctx, "secret.metadata.delete", Some(env), Some(path))
            .await?;
        let prepared = (|| {
            let env = self.env(env)?;
            let path = SecretPath::parse(path)?;
            caller.require(Capability::Delete, env.as_str(), path.as_str())?;
            Ok((env, path))
        })();
        let (env, path) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        ctx.mark_audited();
        self.store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                tx.delete_secret(env.as_str(), path.as_str())?;
                Ok(())
            })
            .await
    }

    /// Lists the keys directly under `prefix` (folders end in '/').
    pub async fn list(&self, ctx: &RequestCtx, env: &str, prefix: &str) -> Result<ListResult> {
        let (caller, draft) = self
            .begin(ctx, "secret.list", Some(env), Some(prefix))
            .await?;
        let r = async {
            let env = self.env(env)?;
            let prefix = SecretPath::parse_prefix(prefix)?;
            caller.require(Capability::List, env.as_str(), &prefix)?;
            let (e, p) = (env.to_string(), prefix.clone());
            let paths = self
                .store
                .read(move |tx| {
                    tx.list_paths(&e, &p, LIST_LIMIT)
                        .map_err(SecretsError::from)
                })
                .await?;
            let truncated = paths.len() as u32 >= LIST_LIMIT;
            let mut keys = BTreeSet::new();
            for p in &paths {
                let rest = &p[prefix.len()..];
                match rest.find('/') {
                    Some(i) => keys.insert(rest[..=i].to_string()),
                    None => keys.insert(rest.to_string()),
                };
            }
            Ok(ListResult {
                keys: keys.into_iter().collect(),
                truncated,
            })
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Every readable secret under `prefix` (recursively), latest live version, references
    /// resolved: for `steward run` and `steward export`. Secrets the caller may not read, and
    /// secrets whose latest version is deleted, are left out and named in the second list.
    pub async fn export(
        &self,
        ctx: &RequestCtx,
        env: &str,
        prefix: &str,
    ) -> Result<(BTreeMap<String, Value>, Vec<String>)> {
        let (caller, mut draft) = self
            .begin(ctx, "secret.export", Some(env), Some(prefix))
            .await?;
        let r = async {
            let env = self.env(env)?;
            let prefix = SecretPath::parse_prefix(prefix)?;
            caller.require(Capability::List, env.as_str(), &prefix)?;
            let (e, p) = (env.to_string(), prefix.clone());
            let paths = self
                .store
                .read(move |tx| {
                    tx.list_paths(&e, &p, LIST_LIMIT)
                        .map_err(SecretsError::from)
                })
                .await?;
            let mut out = BTreeMap::new();
            let mut skipped = vec![];
            for path in paths {
                if !caller.allows(env.as_str(), &path, Capability::Read) {
                    skipped.push(path);
                    continue;
                }
                match self.read_plain(env.as_str(), &path, None).await {
                    Ok((_, info, value)) => {
                        self.note_read(env.as_str(), &path, &caller.accessor, info.version);
                        let origin = format!("{env}/{path}");
                        let value = self.resolve_value(&caller, value, vec![origin]).await?;
                        out.insert(path, value);
                    }
                    Err(e) if e.kind == Kind::NotFound => skipped.push(path),
                    Err(e) => return Err(e),
                }
            }
            Ok((out, skipped))
        }
        .await;
        Self::note_references(&caller, &mut draft);
        self.finish(ctx, draft, r).await
    }

    /// Renders `${secret:ENV/PATH}` / `${secret:ENV/PATH#field}` references in a template.
    pub async fn render_template(&self, ctx: &RequestCtx, template: &str) -> Result<String> {
        let (caller, mut draft) = self.begin(ctx, "template.render", None, None).await?;
        let r = async {
            let v = self
                .resolve_value(&caller, Value::String(template.to_string()), vec![])
                .await?;
            Ok(v.as_str().unwrap_or_default().to_string())
        }
        .await;
        Self::note_references(&caller, &mut draft);
        self.finish(ctx, draft, r).await
    }
}

/// Refuses values whose `${secret:...}` references are malformed, so nothing is stored that
/// cannot be read back.
fn check_references(v: &Value) -> Result<()> {
    match v {
        Value::String(s) => crate::refs::find_references(s).map(drop),
        Value::Object(m) => m.values().try_for_each(check_references),
        _ => Ok(()),
    }
}

/// What [`Engine::change_versions`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOp {
    Delete,
    Undelete,
    Destroy,
}

fn new_head(env: &str, path: &str, now: DateTime<Utc>) -> SecretHead {
    SecretHead {
        env: env.into(),
        path: path.into(),
        meta: SecretMeta::default(),
        current_version: 0,
        oldest_version: 0,
        created_at: now,
        updated_at: now,
    }
}

/// The keyring to seal with, checked inside the write transaction: if another replica (or a
/// rotation that raced this write) made a newer key active, the stored keyring is loaded, so
/// no data key is ever wrapped under a key that may already be retired.
pub(crate) fn current_ring(
    tx: &mut dyn Tx,
    ring: &Arc<Keyring>,
    unseal: &UnsealKey,
) -> Result<Arc<Keyring>> {
    match tx.sys_get(crate::seal::SYS_ACTIVE)? {
        Some(active) if active.as_slice() != ring.active_id().to_be_bytes() => {
            let blob = tx
                .sys_get(crate::seal::SYS_KEYRING)?
                .ok_or_else(|| SecretsError::internal("keyring row missing"))?;
            let fresh = unseal
                .unwrap_keyring(&blob)
                .map_err(|e| SecretsError::internal(format!("keyring: {e}")))?;
            Ok(Arc::new(fresh))
        }
        _ => Ok(ring.clone()),
    }
}

/// Drops versions beyond the secret's `max_versions`.
fn prune(tx: &mut dyn Tx, head: &mut SecretHead, default_max: u32) -> Result<()> {
    let max = head.meta.max_versions.unwrap_or(default_max) as u64;
    if max == 0 || head.current_version < max {
        return Ok(());
    }
    let keep_from = head.current_version + 1 - max;
    if keep_from > head.oldest_version {
        tx.prune_versions(&head.env, &head.path, keep_from)?;
        head.oldest_version = keep_from;
    }
    Ok(())
}

/// The write transaction: check-and-set, seal under the next version's AAD, insert, prune.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_version(
    tx: &mut dyn Tx,
    ring: &Keyring,
    env: &str,
    path: &str,
    plain: &[u8],
    req: &WriteRequest,
    now: DateTime<Utc>,
    default_max: u32,
) -> Result<WriteResult> {
    let mut head = tx
        .head(env, path)?
        .unwrap_or_else(|| new_head(env, path, now));
    if let Some(update) = &req.metadata {
        update.apply(&mut head.meta)?;
    }
    match req.cas {
        Some(cas) if cas != head.current_version => {
            return Err(SecretsError::new(
                Kind::Conflict,
                "cas_mismatch",
                format!(
                    "check-and-set failed: {env}/{path} is at version {}, the write expected {cas}; read it again and retry",
                    head.current_version
                ),
            ))
        }
        None if head.meta.cas_required => {
            return Err(SecretsError::invalid(
                "cas_required",
                format!("{env}/{path} requires check-and-set: send cas = the version you read (0 to create)"),
            ))
        }
        _ => {}
    }
    let version = head.current_version + 1;
    let envelope = ring
        .seal(plain, &steward_crypto::aad_for(env, path, version))
        .map_err(|e| SecretsError::internal(format!("encryption failed: {e}")))?;
    let info = VersionInfo {
        version,
        created_at: now,
        deleted_at: None,
        destroyed: false,
        key_id: envelope.key_id,
    };
    tx.insert_version(env, path, &info, &envelope.to_bytes())?;
    head.current_version = version;
    if head.oldest_version == 0 {
        head.oldest_version = 1;
    }
    head.updated_at = now;
    prune(tx, &mut head, default_max)?;
    tx.put_head(&head)?;
    tx.event_append(&steward_store::EventRow {
        seq: 0,
        time: now,
        kind: "secret.written".into(),
        env: Some(env.into()),
        path: Some(path.into()),
        detail: format!("{{\"version\":{version}}}"),
    })?;
    Ok(WriteResult {
        version,
        created_time: now,
    })
}
