//! Steward's secrets engine: versioned, envelope-encrypted secrets per environment; tokens and
//! path policies; sealing with a key file, an environment variable or Shamir shares; key
//! rotation; and the audit trail every operation leaves. It knows nothing of HTTP.
//!
//! Architecture invariant: every public operation that takes a [`RequestCtx`] writes exactly one
//! audit entry (success or failure), in the same transaction as its change, and returns only
//! after that entry is committed. If the entry cannot be written, the operation fails.
#![forbid(unsafe_code)]

mod audit_ops;
mod auth;
pub mod error;
mod kv;
pub mod policy;
mod refs;
mod seal;
mod system;
mod tokens;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
};

use steward_core::{Clock, EnvName};
use steward_crypto::{Keyring, UnsealKey};
use steward_store::{AuditDraft, Store};
use zeroize::Zeroizing;

pub use audit_ops::{AuditExport, AuditFilter, AuditPage, VerifyReport, SEARCH_SCAN};
pub use auth::Caller;
pub use error::{Kind, SecretsError};
pub use kv::{
    ListResult, MetadataUpdate, ReadOptions, SecretData, SecretMetadata, VersionMeta, VersionOp,
    WriteRequest, WriteResult,
};
pub use seal::{InitRequest, InitResult, SealMode, SealStatus};
pub use system::{rewrap_aux, AuxRewrap, PreparedWrite, SYSTEM_ACTOR};
pub use tokens::{PolicyView, TokenCreate, TokenCreated, TokenInfo, MAX_CHILDREN};

/// Result alias for engine operations.
pub type Result<T, E = SecretsError> = std::result::Result<T, E>;

/// Engine settings (from `[secrets]` in steward.toml).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub environments: Vec<EnvName>,
    pub default_environment: EnvName,
    pub max_versions: u32,
    pub max_value_bytes: usize,
}

impl From<&steward_core::config::SecretsConfig> for EngineConfig {
    fn from(c: &steward_core::config::SecretsConfig) -> Self {
        Self {
            environments: c.environments.clone(),
            default_environment: c.default_environment.clone(),
            max_versions: c.max_versions,
            max_value_bytes: c.max_value_bytes,
        }
    }
}

/// Who is asking, and from where; one per API request. Its Debug output omits the token.
#[derive(Default)]
pub struct RequestCtx {
    pub request_id: String,
    pub token: Option<Zeroizing<String>>,
    pub remote_addr: Option<String>,
    audited: AtomicBool,
}

impl std::fmt::Debug for RequestCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCtx")
            .field("request_id", &self.request_id)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

impl RequestCtx {
    pub fn new(request_id: String, token: Option<String>, remote_addr: Option<String>) -> Self {
        Self {
            request_id,
            token: token.map(Zeroizing::new),
            remote_addr,
            audited: AtomicBool::new(false),
        }
    }

    /// Whether the engine has taken care of this request's audit entry.
    pub fn is_audited(&self) -> bool {
        self.audited.load(Ordering::Acquire)
    }

    fn mark_audited(&self) {
        self.audited.store(true, Ordering::Release);
    }
}

enum SealState {
    Sealed {
        shares: Vec<Zeroizing<String>>,
    },
    Unsealed {
        ring: Arc<Keyring>,
        unseal: Arc<UnsealKey>,
    },
}

/// Compiled policies by name, with the time each was loaded.
type PolicyCache = HashMap<String, (Arc<policy::CompiledPolicy>, chrono::DateTime<chrono::Utc>)>;

/// The secrets engine. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Store,
    clock: Arc<dyn Clock>,
    cfg: EngineConfig,
    state: RwLock<SealState>,
    initialized: AtomicBool,
    policy_cache: Mutex<PolicyCache>,
    token_cache: auth::TokenCache,
    reads: Mutex<system::ReadLog>,
    aux_rewrap: RwLock<Vec<system::AuxRewrap>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .field("sealed", &self.is_sealed())
            .finish()
    }
}

impl Engine {
    /// A sealed engine over `store`; call [`Engine::initialize`] or unseal next.
    pub fn new(store: Store, clock: Arc<dyn Clock>, cfg: EngineConfig) -> Self {
        Self {
            store,
            clock,
            cfg,
            state: RwLock::new(SealState::Sealed { shares: vec![] }),
            initialized: AtomicBool::new(false),
            policy_cache: Mutex::new(HashMap::new()),
            token_cache: auth::TokenCache::default(),
            reads: Mutex::new(HashMap::new()),
            aux_rewrap: RwLock::new(Vec::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn is_sealed(&self) -> bool {
        matches!(
            *self.state.read().unwrap_or_else(|e| e.into_inner()),
            SealState::Sealed { .. }
        )
    }

    /// The keyring, or the sealed error.
    fn ring(&self) -> Result<Arc<Keyring>> {
        self.keys().map(|(ring, _)| ring)
    }

    /// Resolves an environment name that must be configured.
    pub fn env(&self, name: &str) -> Result<EnvName> {
        let env = EnvName::parse(name)?;
        if !self.cfg.environments.contains(&env) {
            return Err(SecretsError::invalid(
                "unknown_environment",
                format!(
                    "environment {name:?} does not exist; configured environments: {}",
                    self.cfg
                        .environments
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(env)
    }

    fn draft(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        action: &str,
        env: Option<&str>,
        path: Option<&str>,
    ) -> AuditDraft {
        AuditDraft {
            time: self.clock.now(),
            request_id: ctx.request_id.clone(),
            actor: actor.to_string(),
            action: action.to_string(),
            env: env.map(str::to_string),
            path: path.map(str::to_string),
            remote_addr: ctx.remote_addr.clone(),
            hmacs: Default::default(),
        }
    }

    /// Authenticates the request and starts its audit draft. A failure is audited here.
    async fn begin(
        &self,
        ctx: &RequestCtx,
        action: &str,
        env: Option<&str>,
        path: Option<&str>,
    ) -> Result<(Caller, AuditDraft)> {
        if self.is_sealed() {
            // Nothing can be audited while sealed (the audit key is sealed too).
            ctx.mark_audited();
            return Err(SecretsError::sealed());
        }
        match self.authenticate(ctx).await {
            Ok(caller) => {
                let draft = self.draft(ctx, &caller.accessor, action, env, path);
                Ok((caller, draft))
            }
            Err(e) => {
                let draft = self.draft(ctx, "anonymous", action, env, path);
                self.finish(ctx, draft, Err(e)).await
            }
        }
    }

    /// Writes the audit entry for an operation that changed nothing and returns its result,
    /// or the store's error if the entry could not be written (fail closed).
    async fn finish<T>(&self, ctx: &RequestCtx, draft: AuditDraft, result: Result<T>) -> Result<T> {
        ctx.mark_audited();
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code.to_string(),
        };
        self.store.audit(draft, outcome).await?;
        result
    }

    /// Notes in the audit draft which secrets were read through references (at most 64 named).
    fn note_references(caller: &Caller, draft: &mut AuditDraft) {
        let mut touched = caller.take_touched();
        if touched.is_empty() {
            return;
        }
        touched.sort();
        touched.dedup();
        let n = touched.len();
        touched.truncate(64);
        let mut list = touched.join(",");
        if n > 64 {
            list.push_str(&format!(",...({n} in all)"));
        }
        draft.hmacs.insert("references".into(), list);
    }

    /// Audits a request the API refused before it reached an engine operation (bad JSON, an
    /// unknown route). Skipped while sealed.
    pub async fn audit_refused(&self, ctx: &RequestCtx, action: &str, outcome: &str) -> Result<()> {
        if ctx.is_audited() || self.is_sealed() {
            return Ok(());
        }
        let actor = match self.authenticate(ctx).await {
            Ok(c) => c.accessor,
            Err(_) => "anonymous".to_string(),
        };
        let draft = self.draft(ctx, &actor, action, None, None);
        ctx.mark_audited();
        self.store.audit(draft, outcome.to_string()).await?;
        Ok(())
    }
}
