//! Administration of access: tokens (create, look up, renew, revoke, list) and policies
//! (put, get, list, delete). Tokens are shown once, at creation; afterwards only accessors.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_store::{PolicyRecord, TokenRecord, Tx};

use crate::{
    auth::{seal_token, token_revoked},
    error::{Kind, SecretsError},
    policy::{check_policy_name, Capability, CompiledPolicy, PolicyDoc},
    Caller, Engine, RequestCtx, Result,
};

/// Live child tokens one non-admin token may have.
pub const MAX_CHILDREN: usize = 1000;

/// A token request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    #[serde(default)]
    pub policies: Vec<String>,
    /// Lifetime such as "1h" or "30m"; none means no expiry (admins only).
    pub ttl: Option<String>,
    /// Renewals never extend past created + explicit_max_ttl.
    #[serde(alias = "explicit_max_ttl")]
    pub max_ttl: Option<String>,
    #[serde(default)]
    pub display_name: String,
    pub renewable: Option<bool>,
    /// Accepted for Vault compatibility; Steward tokens have no default policy.
    #[serde(default)]
    pub no_default_policy: bool,
    /// Accepted for Vault compatibility (hvac sends it); must be empty.
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
    /// Vault: make an orphan token. Steward: admin-created tokens are orphans already; a
    /// non-admin may not ask for it.
    #[serde(default)]
    pub no_parent: bool,
    /// Vault's use-count limit; only 0 (unlimited) is supported.
    #[serde(default)]
    pub num_uses: u64,
    /// Vault's periodic tokens; not supported (must be empty).
    #[serde(default)]
    pub period: Option<serde_json::Value>,
    /// Vault's token type; only "service" (or empty) is supported.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// A freshly created token: the only time the token itself is returned. Debug omits it.
#[derive(Clone, Serialize)]
pub struct TokenCreated {
    pub token: String,
    pub info: TokenInfo,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("token", &"[redacted]")
            .field("info", &self.info)
            .finish()
    }
}

/// What may be shown about a token (never the token).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ttl_secs: Option<u64>,
    pub renewable: bool,
    pub revoked: bool,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        Self {
            accessor: r.accessor.clone(),
            display_name: r.display_name.clone(),
            policies: r.policies.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            ttl_secs: r.ttl_secs,
            renewable: r.renewable,
            revoked: r.revoked_at.is_some(),
        }
    }
}

/// A stored policy as shown to users.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    pub name: String,
    pub policy: PolicyDoc,
    pub updated_at: DateTime<Utc>,
}

fn parse_ttl(what: &str, s: &Option<String>) -> Result<Option<Duration>> {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            // Vault clients send plain seconds too.
            s.parse::<u64>()
                .map(Duration::from_secs)
                .or_else(|_| humantime_like(s))
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    SecretsError::invalid(
                        "invalid_ttl",
                        format!("{what} {s:?} is not a positive duration; write it like \"30m\", \"12h\" or \"7d\""),
                    )
                })
        })
        .transpose()
}

/// `now + d`, or None when that is past what a timestamp can hold.
fn expiry(now: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
}

fn too_long(what: &str) -> SecretsError {
    SecretsError::invalid(
        "invalid_ttl",
        format!("{what} is too long: the expiry would be past the end of the calendar"),
    )
}

/// `90s`, `30m`, `12h`, `7d` and sums like `1h30m`: humantime (as for config durations),
/// limited to those four units so a ttl reads the same everywhere in the docs.
fn humantime_like(s: &str) -> std::result::Result<Duration, ()> {
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || b"smhd".contains(&b))
    {
        return Err(());
    }
    humantime::parse_duration(s).map_err(drop)
}

impl Engine {
    /// Creates a token. Admins (on sys/tokens) may grant any policies; other callers only a
    /// subset of their own, and only with a TTL.
    pub async fn create_token(&self, ctx: &RequestCtx, req: TokenCreate) -> Result<TokenCreated> {
        let (caller, draft) = self.begin(ctx, "token.create", None, None).await?;
        let prepared = (|| {
            let admin = caller.allows("sys", "tokens", Capability::Admin);
            for p in &req.policies {
                if p != "root" {
                    check_policy_name(p)?;
                }
                if !admin && !caller.policies.contains(p) {
                    return Err(SecretsError::new(
                        Kind::Forbidden,
                        "permission_denied",
                        format!(
                            "you may only grant policies you hold yourself; you do not hold {p:?}"
                        ),
                    ));
                }
            }
            if req.policies.iter().any(|p| p == "root") && !caller.is_root() {
                return Err(SecretsError::forbidden());
            }
            let ttl = parse_ttl("ttl", &req.ttl)?;
            let max_ttl = parse_ttl("max_ttl", &req.max_ttl)?;
            // A lifetime past the calendar's end would silently become "never expires".
            let now = self.clock.now();
            for (what, d) in [("ttl", ttl), ("max_ttl", max_ttl)] {
                if d.is_some_and(|d| expiry(now, d).is_none()) {
                    return Err(too_long(what));
                }
            }
            if ttl.is_none() && !admin {
                return Err(SecretsError::invalid(
                    "ttl_required",
                    "only admins may create tokens without a ttl; add ttl, e.g. \"24h\"",
                ));
            }
            if req
                .meta
                .as_ref()
                .is_some_and(|m| !m.is_null() && m != &serde_json::json!({}))
            {
                return Err(SecretsError::invalid(
                    "unsupported",
                    "token meta is not supported",
                ));
            }
            if req.num_uses != 0 {
                return Err(SecretsError::invalid(
                    "unsupported",
                    "num_uses is not supported; send 0 (unlimited)",
                ));
            }
            if req.period.as_ref().is_some_and(|p| {
                !p.is_null() && p != &serde_json::json!("") && p != &serde_json::json!(0)
            }) {
                return Err(SecretsError::invalid(
                    "unsupported",
                    "periodic tokens are not supported; use ttl and renew",
                ));
            }
            if req
                .kind
                .as_deref()
                .is_some_and(|k| !k.is_empty() && k != "service")
            {
                return Err(SecretsError::invalid(
                    "unsupported",
                    "only service tokens exist; leave type empty or \"service\"",
                ));
            }
            if req.no_parent && !admin {
                return Err(SecretsError::forbidden());
            }
            if req.display_name.len() > 128 {
                return Err(SecretsError::invalid(
                    "invalid_display_name",
                    "display_name is longer than 128 bytes",
                ));
            }
            Ok((ttl, max_ttl))
        })();
        let (ttl, max_ttl) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        let (token, mut rec) = self.new_token_record(
            req.display_name.clone(),
            req.policies.clone(),
            ttl,
            max_ttl,
            req.renewable.unwrap_or(true),
        );
        // A token delegated by a non-admin is its creator's child: it never outlives its
        // parent and dies with it (see `revoke`). Tokens an admin creates stand on their own,
        // so revoking the bootstrap root token does not take every token with it.
        if !caller.allows("sys", "tokens", Capability::Admin) {
            rec.parent = Some(caller.accessor.clone());
            let parent_end = match (caller.token.expires_at, caller.token.max_expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(end) = parent_end {
                rec.expires_at = Some(rec.expires_at.map_or(end, |t| t.min(end)));
                rec.max_expires_at = Some(rec.max_expires_at.map_or(end, |t| t.min(end)));
            }
        }
        let key = match self.ring() {
            Ok(r) => r.hmac_key().clone(),
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        ctx.mark_audited();
        let info = TokenInfo::from(&rec);
        seal_token(&key, &mut rec);
        self.store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                // A child is born only while its parent is alive: checked in the same
                // transaction, so a concurrent revoke of the parent cannot miss it.
                if let Some(parent) = &rec.parent {
                    let alive = tx
                        .token_by_accessor(parent)?
                        .is_some_and(|p| p.revoked_at.is_none());
                    if !alive {
                        return Err(token_revoked());
                    }
                    let live = tx
                        .token_children(parent)?
                        .iter()
                        .filter(|t| t.revoked_at.is_none())
                        .count();
                    if live >= MAX_CHILDREN {
                        return Err(SecretsError::invalid(
                            "too_many_tokens",
                            format!("a token may have at most {MAX_CHILDREN} live child tokens; revoke some first"),
                        ));
                    }
                }
                tx.token_put(&rec).map_err(SecretsError::from)
            })
            .await?;
        Ok(TokenCreated {
            token: token.to_string(),
            info,
        })
    }

    /// The calling token's own record.
    pub async fn lookup_self(&self, ctx: &RequestCtx) -> Result<TokenInfo> {
        let (caller, draft) = self.begin(ctx, "token.lookup_self", None, None).await?;
        self.finish(ctx, draft, Ok(TokenInfo::from(&caller.token)))
            .await
    }

    /// Another token's record, by accessor (admin).
    pub async fn lookup_accessor(&self, ctx: &RequestCtx, accessor: &str) -> Result<TokenInfo> {
        let (caller, draft) = self.begin(ctx, "token.lookup", None, None).await?;
        let r = async {
            caller.require(Capability::Admin, "sys", "tokens")?;
            let a = accessor.to_string();
            let rec = self
                .store
                .read(move |tx| tx.token_by_accessor(&a).map_err(SecretsError::from))
                .await?
                .ok_or_else(|| {
                    SecretsError::not_found(format!("no token with accessor {accessor}"))
                })?;
            Ok(TokenInfo::from(&rec))
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Every token's record (admin).
    pub async fn list_tokens(&self, ctx: &RequestCtx) -> Result<Vec<TokenInfo>> {
        let (caller, draft) = self.begin(ctx, "token.list", None, None).await?;
        let r = async {
            caller.require(Capability::Admin, "sys", "tokens")?;
            let recs = self
                .store
                .read(|tx| tx.token_list().map_err(SecretsError::from))
                .await?;
            Ok(recs.iter().map(TokenInfo::from).collect())
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Extends the calling token's life by `increment` (default: its ttl), capped by max_ttl.
    pub async fn renew_self(
        &self,
        ctx: &RequestCtx,
        increment: Option<String>,
    ) -> Result<TokenInfo> {
        let (caller, draft) = self.begin(ctx, "token.renew_self", None, None).await?;
        let prepared = (|| {
            let rec = caller.token.clone();
            if !rec.renewable {
                return Err(SecretsError::invalid(
                    "not_renewable",
                    "this token is not renewable",
                ));
            }
            let inc = parse_ttl("increment", &increment)?
                .or(rec.ttl_secs.map(Duration::from_secs))
                .ok_or_else(|| {
                    SecretsError::invalid(
                        "not_renewable",
                        "this token has no ttl, so there is nothing to renew",
                    )
                })?;
            let until = expiry(self.clock.now(), inc).ok_or_else(|| too_long("increment"))?;
            Ok((rec, until))
        })();
        let (rec, mut until) = match prepared {
            Ok(p) => p,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        if let Some(max) = rec.max_expires_at {
            until = until.min(max);
        }
        let key = match self.ring() {
            Ok(r) => r.hmac_key().clone(),
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        ctx.mark_audited();
        let hash = rec.hash;
        let info = self
            .store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                // Re-read inside the transaction: a revoke that committed after this request
                // authenticated must not be undone by writing the old record back.
                let mut fresh = tx
                    .token_get(&hash)?
                    .filter(|t| t.revoked_at.is_none())
                    .ok_or_else(token_revoked)?;
                fresh.expires_at = Some(until);
                seal_token(&key, &mut fresh);
                tx.token_put(&fresh)?;
                Ok::<_, SecretsError>(TokenInfo::from(&fresh))
            })
            .await?;
        self.token_cache.forget_accessor(&info.accessor);
        Ok(info)
    }

    /// Revokes the calling token (`accessor` None) or another token by accessor (admin).
    pub async fn revoke(&self, ctx: &RequestCtx, accessor: Option<&str>) -> Result<()> {
        let (caller, draft) = self.begin(ctx, "token.revoke", None, None).await?;
        let target = accessor.unwrap_or(&caller.accessor).to_string();
        let prepared: Result<()> = if target != caller.accessor {
            caller.require(Capability::Admin, "sys", "tokens")
        } else {
            Ok(())
        };
        if let Err(e) = prepared {
            return self.finish(ctx, draft, Err(e)).await;
        }
        ctx.mark_audited();
        let now = self.clock.now();
        let key = self.ring()?.hmac_key().clone();
        let revoked = self
            .store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                let rec = tx.token_by_accessor(&target)?.ok_or_else(|| {
                    SecretsError::not_found(format!("no token with accessor {target}"))
                })?;
                // Revoking a token revokes every token it created, transitively, walking the
                // indexed parent column (never the whole table).
                let mut doomed = vec![];
                let mut queue = vec![rec];
                while let Some(mut t) = queue.pop() {
                    queue.extend(tx.token_children(&t.accessor)?);
                    if t.revoked_at.is_none() {
                        t.revoked_at = Some(now);
                        seal_token(&key, &mut t);
                        tx.token_put(&t)?;
                    }
                    doomed.push(t.accessor);
                }
                Ok::<_, SecretsError>(doomed)
            })
            .await?;
        for a in &revoked {
            self.token_cache.forget_accessor(a);
        }
        Ok(())
    }

    fn require_policy_admin(caller: &Caller) -> Result<()> {
        caller.require(Capability::Admin, "sys", "policies")
    }

    /// Creates or replaces a policy (admin on sys/policies).
    pub async fn put_policy(&self, ctx: &RequestCtx, name: &str, document: &str) -> Result<()> {
        let (caller, draft) = self.begin(ctx, "policy.write", None, Some(name)).await?;
        let prepared = (|| {
            Self::require_policy_admin(&caller)?;
            check_policy_name(name)?;
            let (doc, _) = CompiledPolicy::parse(document)?;
            Ok(serde_json::to_string(&doc).expect("policy serializes"))
        })();
        let doc = match prepared {
            Ok(d) => d,
            Err(e) => return self.finish(ctx, draft, Err(e)).await,
        };
        ctx.mark_audited();
        let rec = PolicyRecord {
            name: name.to_string(),
            document: crate::auth::seal_policy(self.ring()?.hmac_key(), name, &doc),
            updated_at: self.clock.now(),
        };
        self.store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                tx.policy_put(&rec).map_err(SecretsError::from)
            })
            .await?;
        self.forget_policy(name);
        Ok(())
    }

    /// Reads a policy (admin on sys/policies).
    pub async fn get_policy(&self, ctx: &RequestCtx, name: &str) -> Result<PolicyView> {
        let (caller, draft) = self.begin(ctx, "policy.read", None, Some(name)).await?;
        let r = async {
            Self::require_policy_admin(&caller)?;
            let n = name.to_string();
            let rec = self
                .store
                .read(move |tx| tx.policy_get(&n).map_err(SecretsError::from))
                .await?
                .ok_or_else(|| SecretsError::not_found(format!("no policy named {name:?}")))?;
            policy_view(&*self.ring()?, rec)
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Lists policies (admin on sys/policies).
    pub async fn list_policies(&self, ctx: &RequestCtx) -> Result<Vec<PolicyView>> {
        let (caller, draft) = self.begin(ctx, "policy.list", None, None).await?;
        let r = async {
            Self::require_policy_admin(&caller)?;
            let recs = self
                .store
                .read(|tx| tx.policy_list().map_err(SecretsError::from))
                .await?;
            let ring = self.ring()?;
            recs.into_iter().map(|r| policy_view(&ring, r)).collect()
        }
        .await;
        self.finish(ctx, draft, r).await
    }

    /// Deletes a policy (admin on sys/policies).
    pub async fn delete_policy(&self, ctx: &RequestCtx, name: &str) -> Result<()> {
        let (caller, draft) = self.begin(ctx, "policy.delete", None, Some(name)).await?;
        if let Err(e) = Self::require_policy_admin(&caller) {
            return self.finish(ctx, draft, Err(e)).await;
        }
        ctx.mark_audited();
        let n = name.to_string();
        // The not-found answer is decided inside the job, so the audit entry records it too.
        let r = self
            .store
            .write(Some(draft), move |tx: &mut dyn Tx| {
                if tx.policy_delete(&n)? {
                    Ok(())
                } else {
                    Err(SecretsError::not_found(format!("no policy named {n:?}")))
                }
            })
            .await;
        self.forget_policy(name);
        r
    }
}

fn policy_view(ring: &steward_crypto::Keyring, rec: PolicyRecord) -> Result<PolicyView> {
    let doc = crate::auth::open_policy(ring.hmac_key(), &rec.name, &rec.document)?;
    let (policy, _) = CompiledPolicy::parse(&doc)?;
    Ok(PolicyView {
        name: rec.name,
        policy,
        updated_at: rec.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parsing() {
        assert_eq!(humantime_like("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(humantime_like("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(humantime_like("7d"), Ok(Duration::from_secs(604_800)));
        assert!(humantime_like("7").is_err());
        assert!(humantime_like("h").is_err());
        assert!(humantime_like("1y").is_err());
        assert_eq!(
            parse_ttl("ttl", &Some("3600".into())).unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert!(parse_ttl("ttl", &Some("soon".into())).is_err());
        assert_eq!(parse_ttl("ttl", &None).unwrap(), None);
    }
}
