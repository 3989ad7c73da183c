//! Initialization, sealing and unsealing, and root-key rotation.
//!
//! The unseal key (a key file, an environment variable, or Shamir shares of it) wraps the
//! keyring stored in the `keyring` sys row; the keyring's active key wraps every data key.
//! `keys rotate` adds a keyring key and re-wraps every data key under it in the background,
//! while both keys stay usable, so reads never stop.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use steward_crypto::{CryptoError, Keyring, UnsealKey};
use steward_store::{StoreError, TokenRecord, Tx};
use zeroize::Zeroizing;

use crate::{
    error::{Kind, SecretsError},
    policy::Capability,
    Engine, RequestCtx, Result, SealState,
};

const SYS_SEAL: &str = "seal_config";
pub(crate) const SYS_KEYRING: &str = "keyring";
/// The active keyring key id (big-endian u32), so a writer holding an older keyring notices.
pub(crate) const SYS_ACTIVE: &str = "keyring_active";
/// Envelopes re-wrapped per transaction during key rotation.
const REWRAP_BATCH: u32 = 256;

/// How the unseal key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealMode {
    /// A key file or environment variable; the server unseals itself at start.
    Key,
    /// Shamir shares; the server starts sealed until `threshold` shares are given.
    Shamir,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealConfig {
    mode: SealMode,
    shares: u8,
    threshold: u8,
    fingerprint: String,
    initialized_at: chrono::DateTime<chrono::Utc>,
}

/// What `steward init` asks for.
#[derive(Debug)]
pub enum InitRequest {
    /// Use this unseal key (the binary has already written it to the key file).
    Key(UnsealKey),
    /// Generate an unseal key and split it.
    Shamir { shares: u8, threshold: u8 },
}

/// What initialization hands back exactly once. Debug omits the token and the shares.
pub struct InitResult {
    pub root_token: Zeroizing<String>,
    pub shares: Vec<Zeroizing<String>>,
    pub mode: SealMode,
}

impl std::fmt::Debug for InitResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitResult")
            .field("root_token", &"[redacted]")
            .field("shares", &self.shares.len())
            .field("mode", &self.mode)
            .finish()
    }
}

/// `GET /v1/sys/seal-status`.
#[derive(Debug, Clone, Serialize)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    #[serde(rename = "type")]
    pub mode: Option<SealMode>,
    /// Shares needed (`t`) and given so far (`progress`), Vault's names.
    pub t: u8,
    pub n: u8,
    pub progress: u8,
    pub storage_type: &'static str,
}

fn wrong_key() -> SecretsError {
    SecretsError::new(
        Kind::Invalid,
        "wrong_root_key",
        "the root key does not unlock this store: check that the key file / STEWARD_ROOT_KEY belongs to this data directory or database",
    )
}

impl Engine {
    async fn seal_config(&self) -> Result<Option<SealConfig>> {
        let raw = self
            .store
            .read(|tx| tx.sys_get(SYS_SEAL).map_err(SecretsError::from))
            .await?;
        raw.map(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| SecretsError::internal(format!("seal config is corrupt: {e}")))
        })
        .transpose()
    }

    /// What the last successful look said about initialization (no store read).
    pub fn initialized_hint(&self) -> bool {
        self.initialized.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the store once, for probes: whether it is initialized, or the error when the
    /// store is unreachable. Remembers a "yes" for [`Engine::is_initialized`].
    pub async fn check_store(&self) -> Result<bool> {
        let yes = self.seal_config().await?.is_some();
        if yes {
            self.initialized
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(yes)
    }

    /// Whether the store has been initialized (remembered once true: it never goes back).
    pub async fn is_initialized(&self) -> Result<bool> {
        if self.initialized_hint() {
            return Ok(true);
        }
        self.check_store().await
    }

    /// Seal mode of an initialized store.
    pub async fn seal_mode(&self) -> Result<Option<SealMode>> {
        Ok(self.seal_config().await?.map(|c| c.mode))
    }

    /// Initializes an empty store: keyring, seal config and the root token, in one transaction.
    /// `persist_token` runs before the commit (to write the root-token file), so a crash can
    /// never leave an initialized store whose root token nobody saw.
    pub async fn initialize(
        &self,
        req: InitRequest,
        persist_token: impl FnOnce(&str) -> std::io::Result<()>,
    ) -> Result<InitResult> {
        let ring = Keyring::generate();
        let (unseal, shares, mode, n, t) = match req {
            InitRequest::Key(k) => (k, vec![], SealMode::Key, 1, 1),
            InitRequest::Shamir { shares, threshold } => {
                let key = UnsealKey::generate();
                let parts = steward_crypto::split_key(key.secret(), shares, threshold)
                    .map_err(|e| SecretsError::invalid("invalid_shares", e.to_string()))?;
                (key, parts, SealMode::Shamir, shares, threshold)
            }
        };
        let wrapped = unseal
            .wrap_keyring(&ring)
            .map_err(|e| SecretsError::internal(e.to_string()))?;
        let cfg = SealConfig {
            mode,
            shares: n,
            threshold: t,
            fingerprint: unseal.fingerprint(),
            initialized_at: self.clock.now(),
        };
        let (token, mut root) =
            self.new_token_record("root".into(), vec!["root".into()], None, None, false);
        crate::auth::seal_token(ring.hmac_key(), &mut root);
        persist_token(&token)
            .map_err(|e| SecretsError::internal(format!("cannot save the root token file: {e}")))?;
        let cfg_json = serde_json::to_vec(&cfg).expect("seal config serializes");
        let active = ring.active_id();
        self.store
            .write(None, move |tx: &mut dyn Tx| {
                if !tx.sys_insert_new(SYS_SEAL, &cfg_json)? {
                    return Err(SecretsError::new(
                        Kind::Conflict,
                        "already_initialized",
                        "this store is already initialized",
                    ));
                }
                tx.sys_put(SYS_KEYRING, &wrapped)?;
                tx.sys_put(SYS_ACTIVE, &active.to_be_bytes())?;
                tx.token_put(&root)?;
                Ok(())
            })
            .await?;
        if mode == SealMode::Key {
            self.install(ring, Arc::new(unseal));
        }
        Ok(InitResult {
            root_token: token,
            shares,
            mode,
        })
    }

    fn install(&self, ring: Keyring, unseal: Arc<UnsealKey>) {
        self.store.set_audit_key(Some(ring.hmac_key().clone()));
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = SealState::Unsealed {
            ring: Arc::new(ring),
            unseal,
        };
    }

    /// Replaces the keyring of an engine that is still unsealed; a `seal` that landed while
    /// the new keyring was being loaded wins.
    fn reinstall(&self, ring: Keyring, unseal: Arc<UnsealKey>) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if matches!(*st, SealState::Unsealed { .. }) {
            self.store.set_audit_key(Some(ring.hmac_key().clone()));
            *st = SealState::Unsealed {
                ring: Arc::new(ring),
                unseal,
            };
        }
    }

    async fn load_ring(&self, unseal: &UnsealKey) -> Result<Keyring> {
        let blob = self
            .store
            .read(|tx| tx.sys_get(SYS_KEYRING).map_err(SecretsError::from))
            .await?
            .ok_or_else(|| {
                SecretsError::new(
                    Kind::Invalid,
                    "not_initialized",
                    "this store is not initialized: run `steward init` or `steward up`",
                )
            })?;
        unseal.unwrap_keyring(&blob).map_err(|e| match e {
            CryptoError::WrongKey | CryptoError::Decrypt => wrong_key(),
            other => SecretsError::internal(format!("keyring is corrupt: {other}")),
        })
    }

    /// Unseals with the whole unseal key (key file or environment variable).
    pub async fn unseal_with_key(&self, unseal: UnsealKey) -> Result<()> {
        let ring = self.load_ring(&unseal).await?;
        self.install(ring, Arc::new(unseal));
        Ok(())
    }

    /// Adds one Shamir share; unseals once enough are in. A set of shares that does not
    /// reconstruct the key resets progress.
    pub async fn submit_share(&self, share: &str) -> Result<SealStatus> {
        let cfg = self.seal_config().await?.ok_or_else(|| {
            SecretsError::new(
                Kind::Invalid,
                "not_initialized",
                "this store is not initialized",
            )
        })?;
        if cfg.mode != SealMode::Shamir {
            return Err(SecretsError::invalid(
                "not_shamir",
                "this store is unsealed with a key file or STEWARD_ROOT_KEY, not with shares",
            ));
        }
        // Validate the share's own checksum now, so a typo is reported immediately.
        if let Err(e @ CryptoError::BadShare { .. }) = steward_crypto::combine_shares(&[share]) {
            return Err(SecretsError::invalid("invalid_share", e.to_string()));
        }
        let ready: Option<Vec<Zeroizing<String>>> = {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            match &mut *st {
                SealState::Unsealed { .. } => None,
                SealState::Sealed { shares } => {
                    if !shares.iter().any(|s| s.as_str() == share) {
                        shares.push(Zeroizing::new(share.to_string()));
                    }
                    (shares.len() >= cfg.threshold as usize).then(|| std::mem::take(shares))
                }
            }
        };
        if let Some(shares) = ready {
            let refs: Vec<&str> = shares.iter().map(|s| s.as_str()).collect();
            let key = steward_crypto::combine_shares(&refs)
                .map_err(|e| SecretsError::invalid("invalid_share", e.to_string()))?;
            let unseal = UnsealKey::from_secret(key);
            match self.load_ring(&unseal).await {
                Ok(ring) => self.install(ring, Arc::new(unseal)),
                Err(e) if e.code == "wrong_root_key" => {
                    return Err(SecretsError::invalid(
                        "wrong_shares",
                        "these shares do not reconstruct this store's root key; progress was reset, start again",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        self.seal_status().await
    }

    /// Forgets the shares given so far.
    pub fn reset_unseal_progress(&self) {
        if let SealState::Sealed { shares } =
            &mut *self.state.write().unwrap_or_else(|e| e.into_inner())
        {
            shares.clear();
        }
    }

    /// Current seal state, Vault-style.
    pub async fn seal_status(&self) -> Result<SealStatus> {
        let cfg = self.seal_config().await?;
        let progress = match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            SealState::Sealed { shares } => shares.len() as u8,
            SealState::Unsealed { .. } => 0,
        };
        Ok(SealStatus {
            initialized: cfg.is_some(),
            sealed: self.is_sealed(),
            mode: cfg.as_ref().map(|c| c.mode),
            t: cfg.as_ref().map_or(0, |c| c.threshold),
            n: cfg.as_ref().map_or(0, |c| c.shares),
            progress,
            storage_type: self.store.kind(),
        })
    }

    /// Seals the engine: forgets the keyring (admin on sys/keys).
    pub async fn seal(&self, ctx: &RequestCtx) -> Result<()> {
        let (caller, draft) = self.begin(ctx, "sys.seal", None, None).await?;
        let r = caller.require(Capability::Admin, "sys", "keys");
        self.finish(ctx, draft, r).await?;
        // State and audit key change together, under the state lock (see `reinstall`).
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        *st = SealState::Sealed { shares: vec![] };
        self.store.set_audit_key(None);
        self.token_cache.clear();
        Ok(())
    }

    /// Makes a fresh keyring key active and re-wraps every data key under it, in batches, in
    /// the background; returns the new key id. Reads and writes go on throughout.
    pub async fn rotate_keys(self: &Arc<Self>, ctx: &RequestCtx) -> Result<u32> {
        let (caller, draft) = self.begin(ctx, "sys.keys.rotate", None, None).await?;
        if let Err(e) = caller.require(Capability::Admin, "sys", "keys") {
            return self.finish(ctx, draft, Err(e)).await;
        }
        let (_, unseal) = self.keys()?;
        ctx.mark_audited();
        let unseal2 = unseal.clone();
        let ring = self
            .store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                let blob = tx
                    .sys_get(SYS_KEYRING)?
                    .ok_or_else(|| SecretsError::internal("keyring row missing"))?;
                let mut ring = unseal2
                    .unwrap_keyring(&blob)
                    .map_err(|e| SecretsError::internal(format!("keyring: {e}")))?;
                ring.rotate();
                let wrapped = unseal2
                    .wrap_keyring(&ring)
                    .map_err(|e| SecretsError::internal(e.to_string()))?;
                tx.sys_put(SYS_KEYRING, &wrapped)?;
                tx.sys_put(SYS_ACTIVE, &ring.active_id().to_be_bytes())?;
                Ok::<_, SecretsError>(ring)
            })
            .await?;
        let active = ring.active_id();
        self.reinstall(ring, unseal);
        let engine = self.clone();
        tokio::spawn(async move {
            match engine.rewrap_all().await {
                Ok(n) => tracing::info!(rewrapped = n, key_id = active, "key rotation finished"),
                Err(e) => {
                    tracing::error!(error = %e, "key rotation re-wrap stopped; run `steward keys rotate` again to resume")
                }
            }
        });
        Ok(active)
    }

    /// Re-wraps data keys not under the active key until none is left, then retires the old
    /// keys. Returns how many envelopes were re-wrapped. Safe to run again after a crash.
    pub async fn rewrap_all(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let ring = self.ring()?;
            let active = ring.active_id();
            let batch = self
                .store
                .read(move |tx| {
                    tx.envelopes_not_under(active, REWRAP_BATCH)
                        .map_err(SecretsError::from)
                })
                .await?;
            if batch.is_empty() {
                break;
            }
            let mut updates = Vec::with_capacity(batch.len());
            for (env, path, version, blob) in batch {
                let aad = steward_crypto::aad_for(&env, &path, version);
                let old = steward_crypto::Envelope::from_bytes(&blob)
                    .map_err(|e| SecretsError::internal(format!("{env}/{path} v{version}: {e}")))?;
                let new = ring
                    .rewrap(&old, &aad)
                    .map_err(|e| SecretsError::internal(format!("{env}/{path} v{version}: {e}")))?;
                updates.push((env, path, version, new.to_bytes()));
            }
            total += updates.len() as u64;
            self.store
                .write(None, move |tx: &mut dyn Tx| {
                    for (env, path, version, blob) in &updates {
                        tx.set_envelope(env, path, *version, active, blob)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await?;
        }
        self.retire_old_keys().await?;
        Ok(total)
    }

    async fn retire_old_keys(&self) -> Result<()> {
        let (_, unseal) = self.keys()?;
        let aux = self.aux_rewrappers();
        self.store
            .write(None, move |tx: &mut dyn Tx| {
                let blob = tx
                    .sys_get(SYS_KEYRING)?
                    .ok_or_else(|| SecretsError::internal("keyring row missing"))?;
                let mut ring = unseal
                    .unwrap_keyring(&blob)
                    .map_err(|e| SecretsError::internal(format!("keyring: {e}")))?;
                // Only when nothing still uses an old key (a concurrent rotation may be running).
                if !tx.envelopes_not_under(ring.active_id(), 1)?.is_empty() {
                    return Ok(());
                }
                // Values sealed outside secret versions move to the active key in the same
                // transaction that retires the old ones.
                for f in &aux {
                    f(tx, &ring)?;
                }
                for id in ring.key_ids() {
                    if id != ring.active_id() {
                        ring.retire(id)
                            .map_err(|e| SecretsError::internal(e.to_string()))?;
                    }
                }
                let wrapped = unseal
                    .wrap_keyring(&ring)
                    .map_err(|e| SecretsError::internal(e.to_string()))?;
                tx.sys_put(SYS_KEYRING, &wrapped)?;
                Ok(())
            })
            .await
    }

    /// Key status: active id and every id still in the ring (admin on sys/keys).
    pub async fn key_status(&self, ctx: &RequestCtx) -> Result<(u32, Vec<u32>, u64)> {
        let (caller, draft) = self.begin(ctx, "sys.keys.status", None, None).await?;
        let r = async {
            caller.require(Capability::Admin, "sys", "keys")?;
            self.refresh_ring().await?;
            let ring = self.ring()?;
            let active = ring.active_id();
            let pending = self
                .store
                .read(move |tx| {
                    tx.count_envelopes_not_under(active)
                        .map_err(SecretsError::from)
                })
                .await?;
            Ok((active, ring.key_ids(), pending))
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// The keyring and the unseal key that wraps it.
    pub(crate) fn keys(&self) -> Result<(Arc<Keyring>, Arc<UnsealKey>)> {
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            SealState::Unsealed { ring, unseal } => Ok((ring.clone(), unseal.clone())),
            SealState::Sealed { .. } => Err(SecretsError::sealed()),
        }
    }

    /// Reloads the keyring from the store (another replica may have rotated it).
    pub(crate) async fn refresh_ring(&self) -> Result<()> {
        let (_, unseal) = self.keys()?;
        let ring = self.load_ring(&unseal).await?;
        self.reinstall(ring, unseal);
        Ok(())
    }

    /// Builds a new token and its stored record (hash only).
    pub(crate) fn new_token_record(
        &self,
        display_name: String,
        policies: Vec<String>,
        ttl: Option<std::time::Duration>,
        max_ttl: Option<std::time::Duration>,
        renewable: bool,
    ) -> (Zeroizing<String>, TokenRecord) {
        use base64::Engine as _;
        let raw = steward_crypto::random_token_bytes();
        let token = Zeroizing::new(format!(
            "stw.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        ));
        let accessor = format!(
            "acc.{}",
            hex::encode(&steward_crypto::random_token_bytes()[..12])
        );
        let now = self.clock.now();
        let add = |d: std::time::Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
        };
        let rec = TokenRecord {
            hash: steward_crypto::sha256(token.as_bytes()),
            accessor,
            display_name,
            policies,
            created_at: now,
            // max_ttl caps the first lifetime too, not only renewals.
            expires_at: match (ttl.and_then(add), max_ttl.and_then(add)) {
                (Some(t), Some(m)) => Some(t.min(m)),
                (t, m) => t.or(m),
            },
            ttl_secs: ttl.map(|d| d.as_secs()),
            max_expires_at: max_ttl.and_then(add),
            renewable,
            revoked_at: None,
            parent: None,
            mac: String::new(),
        };
        (token, rec)
    }
}
