//! Token authentication and policy loading.
//!
//! Tokens are looked up by their SHA-256 (a token has 256 random bits, so a fast hash is the
//! right tool and the index lookup leaks nothing useful); the stored hash is then compared in
//! constant time. Compiled policies are cached for a few seconds; a local change invalidates
//! the cache at once, a change made through another replica is seen within [`POLICY_TTL_SECS`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use steward_store::TokenRecord;

use crate::{
    error::{Kind, SecretsError},
    policy::{Capability, CompiledPolicy, PolicySet},
    Engine, RequestCtx, Result,
};

/// How long a compiled policy is trusted before it is re-read from the store.
pub const POLICY_TTL_SECS: i64 = 5;

/// How long a token record is trusted without re-reading it. On the embedded store only this
/// process writes (the data directory is locked), and every local change invalidates the entry,
/// so the cache is exact; on PostgreSQL a revocation made through another replica is seen here
/// within [`SHARED_STORE_TOKEN_TTL`]. Expiry is checked against the clock on every request.
pub const LOCAL_STORE_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const SHARED_STORE_TOKEN_TTL: Duration = Duration::from_secs(1);
const TOKEN_CACHE_MAX: usize = 10_000;

/// Token records by hash, with the instant they were read, and a generation that every
/// invalidation bumps: a record read before an invalidation is not cached after it.
#[derive(Debug, Default)]
pub(crate) struct TokenCache(Mutex<(TokenMap, u64)>);

type TokenMap = HashMap<[u8; 32], (TokenRecord, Instant)>;

impl TokenCache {
    /// The cached record, or the current generation to pass to [`TokenCache::put`].
    fn get(&self, hash: &[u8; 32], ttl: Duration) -> Result<TokenRecord, u64> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(hash)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(r, _)| r.clone())
            .ok_or(g.1)
    }

    /// Caches a record read at generation `seen`, unless something was invalidated since.
    fn put(&self, rec: &TokenRecord, seen: u64) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 != seen {
            return;
        }
        if g.0.len() >= TOKEN_CACHE_MAX {
            g.0.clear();
        }
        g.0.insert(rec.hash, (rec.clone(), Instant::now()));
    }

    /// Drops the token with this accessor (after a revoke or renew).
    pub(crate) fn forget_accessor(&self, accessor: &str) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        g.0.retain(|_, (r, _)| r.accessor != accessor);
    }

    pub(crate) fn clear(&self) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        g.0.clear();
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub token: TokenRecord,
    pub set: PolicySet,
    /// Secrets this request read through references, for its audit entry.
    pub(crate) touched: Arc<Mutex<Vec<String>>>,
    /// References resolved so far in this request: target -> fully resolved value, and how
    /// many substitutions were made (bounded, see `refs::MAX_SUBSTITUTIONS`).
    pub(crate) resolved: Arc<Mutex<(HashMap<String, serde_json::Value>, usize)>>,
}

impl Caller {
    /// Takes the list of secrets read through references so far.
    pub(crate) fn take_touched(&self) -> Vec<String> {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn allows(&self, env: &str, path: &str, cap: Capability) -> bool {
        self.set.allows(env, path, cap)
    }

    /// `Ok` if allowed, else the uniform permission error (which says nothing about existence).
    pub fn require(&self, cap: Capability, env: &str, path: &str) -> Result<()> {
        if self.allows(env, path, cap) {
            Ok(())
        } else {
            Err(SecretsError::forbidden())
        }
    }

    pub fn is_root(&self) -> bool {
        self.set.root
    }
}

/// Computes the record's MAC under the audit key (the record's own `mac` field excluded).
fn token_mac(key: &steward_crypto::SecretKey, rec: &TokenRecord) -> String {
    let mut bare = rec.clone();
    bare.mac = String::new();
    let mut data = b"steward-token-v1".to_vec();
    data.extend_from_slice(&rec.hash);
    data.extend_from_slice(&serde_json::to_vec(&bare).expect("token records serialize"));
    steward_crypto::hmac_hex(key, &data)
}

/// A stored policy: the document and a keyed MAC binding it to its name, so a policy written or
/// edited directly in the database grants nothing.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedPolicy {
    /// The policy document's JSON text, exactly as MAC'd.
    policy: String,
    mac: String,
}

fn policy_mac(key: &steward_crypto::SecretKey, name: &str, doc: &str) -> String {
    let mut data = b"steward-policy-v1".to_vec();
    data.extend_from_slice(name.as_bytes());
    data.push(0);
    data.extend_from_slice(doc.as_bytes());
    steward_crypto::hmac_hex(key, &data)
}

/// What the store keeps for policy `name` with document `doc` (canonical JSON).
pub(crate) fn seal_policy(key: &steward_crypto::SecretKey, name: &str, doc: &str) -> String {
    serde_json::to_string(&SealedPolicy {
        policy: doc.to_string(),
        mac: policy_mac(key, name, doc),
    })
    .expect("policies serialize")
}

/// The policy document of a stored record, if its MAC holds.
pub(crate) fn open_policy(
    key: &steward_crypto::SecretKey,
    name: &str,
    stored: &str,
) -> Result<String> {
    let bad = || {
        tracing::error!(policy = %name, "policy record fails its integrity check: it was written or edited outside Steward");
        SecretsError::new(
            crate::Kind::Internal,
            "policy_corrupt",
            format!("policy {name:?} fails its integrity check; write it again with `steward policy put`"),
        )
    };
    let sealed: SealedPolicy = serde_json::from_str(stored).map_err(|_| bad())?;
    if steward_crypto::ct_eq(
        policy_mac(key, name, &sealed.policy).as_bytes(),
        sealed.mac.as_bytes(),
    ) {
        Ok(sealed.policy)
    } else {
        Err(bad())
    }
}

/// Sets the record's MAC; every token write goes through this.
pub(crate) fn seal_token(key: &steward_crypto::SecretKey, rec: &mut TokenRecord) {
    rec.mac = token_mac(key, rec);
}

fn token_mac_ok(key: &steward_crypto::SecretKey, rec: &TokenRecord) -> bool {
    steward_crypto::ct_eq(token_mac(key, rec).as_bytes(), rec.mac.as_bytes())
}

/// The answer for a revoked token (also when a revocation is found inside a transaction).
pub(crate) fn token_revoked() -> SecretsError {
    unauthenticated(
        "token_revoked",
        "the token has been revoked; ask for a new one",
    )
}

fn unauthenticated(code: &'static str, message: &str) -> SecretsError {
    SecretsError::new(Kind::Unauthenticated, code, message)
}

impl Engine {
    /// Checks the request's token and loads its policies.
    pub async fn authenticate(&self, ctx: &RequestCtx) -> Result<Caller> {
        let token = ctx
            .token
            .as_ref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthenticated(
                "missing_token",
                "no token: send it as `Authorization: Bearer <token>` or `X-Vault-Token: <token>`",
            )
            })?;
        let hash = steward_crypto::sha256(token.as_bytes());
        let ttl = if self.store.kind() == "sqlite" {
            LOCAL_STORE_TOKEN_TTL
        } else {
            SHARED_STORE_TOKEN_TTL
        };
        // Only records that passed the integrity check are cached, so hits skip it.
        let rec = match self.token_cache.get(&hash, ttl) {
            Ok(r) => r,
            Err(generation) => {
                let rec = self
                    .store
                    .read(move |tx| tx.token_get(&hash).map_err(SecretsError::from))
                    .await?;
                let key = self.ring()?.hmac_key().clone();
                let rec = match rec {
                    Some(r) if steward_crypto::ct_eq(&r.hash, &hash) && token_mac_ok(&key, &r) => r,
                    Some(r) if steward_crypto::ct_eq(&r.hash, &hash) => {
                        tracing::error!(accessor = %r.accessor, "token record fails its integrity check: it was written or edited outside Steward");
                        return Err(unauthenticated("invalid_token", "the token is not valid"));
                    }
                    _ => return Err(unauthenticated("invalid_token", "the token is not valid")),
                };
                self.token_cache.put(&rec, generation);
                rec
            }
        };
        if rec.revoked_at.is_some() {
            return Err(token_revoked());
        }
        if rec.expires_at.is_some_and(|t| t <= self.clock.now()) {
            return Err(unauthenticated(
                "token_expired",
                "the token has expired; renew tokens before their TTL runs out or ask for a new one",
            ));
        }
        let set = self.policy_set(&rec.policies).await?;
        Ok(Caller {
            accessor: rec.accessor.clone(),
            display_name: rec.display_name.clone(),
            policies: rec.policies.clone(),
            token: rec,
            set,
            touched: Arc::default(),
            resolved: Arc::default(),
        })
    }

    async fn policy_set(&self, names: &[String]) -> Result<PolicySet> {
        let mut set = PolicySet::default();
        for name in names {
            if name == "root" {
                set.root = true;
                continue;
            }
            if let Some(p) = self.cached_policy(name) {
                set.policies.push(p);
                continue;
            }
            let n = name.clone();
            let rec = self
                .store
                .read(move |tx| tx.policy_get(&n).map_err(SecretsError::from))
                .await?;
            // A token may name a policy that was deleted since (or one that fails its integrity
            // check): it then grants nothing.
            let key = self.ring()?.hmac_key().clone();
            if let Some(doc) = rec.and_then(|r| open_policy(&key, name, &r.document).ok()) {
                let (_, compiled) = CompiledPolicy::parse(&doc)?;
                let compiled = Arc::new(compiled);
                self.policy_cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), (compiled.clone(), self.clock.now()));
                set.policies.push(compiled);
            }
        }
        Ok(set)
    }

    fn cached_policy(&self, name: &str) -> Option<Arc<CompiledPolicy>> {
        let cache = self.policy_cache.lock().unwrap_or_else(|e| e.into_inner());
        let (p, at) = cache.get(name)?;
        ((self.clock.now() - *at).num_seconds() < POLICY_TTL_SECS).then(|| p.clone())
    }

    pub(crate) fn forget_policy(&self, name: &str) {
        self.policy_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}
