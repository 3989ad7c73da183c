//! Path policies: rules of environment glob x path glob x capabilities. Deny by default; an
//! explicit `deny` on a matching rule wins over every grant; `admin` implies every capability.
//!
//! System operations are checked as `admin` at the reserved environment `sys`, path `tokens`,
//! `policies`, `audit` or `keys`, so one rule shape covers everything.

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::error::SecretsError;

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Read,
    List,
    Write,
    Delete,
    Rotate,
    Admin,
    Deny,
}

/// A policy document as users write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    #[serde(default)]
    pub description: String,
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Environment glob, e.g. `prod` or `*`.
    pub env: String,
    /// Path glob: `*` stays within one segment, `**` crosses segments (`billing/**`).
    pub path: String,
    pub capabilities: Vec<Capability>,
}

/// A policy ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    rules: Vec<(GlobMatcher, GlobMatcher, Vec<Capability>)>,
}

/// Names policies may not take.
pub const RESERVED_POLICY_NAMES: &[&str] = &["root"];

/// Validates a policy name: 1-64 chars of [a-z0-9_-].
pub fn check_policy_name(name: &str) -> Result<(), SecretsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(SecretsError::invalid(
            "invalid_policy_name",
            format!(
                "policy name {name:?} is invalid: use 1-64 lowercase letters, digits, '-' or '_'"
            ),
        ));
    }
    if RESERVED_POLICY_NAMES.contains(&name) {
        return Err(SecretsError::invalid(
            "invalid_policy_name",
            format!("policy name {name:?} is reserved"),
        ));
    }
    Ok(())
}

fn glob(pattern: &str, what: &str, i: usize) -> Result<GlobMatcher, SecretsError> {
    let g: Result<Glob, _> = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build();
    g.map(|g| g.compile_matcher()).map_err(|e| {
        SecretsError::invalid(
            "invalid_policy",
            format!("rule {i}: {what} pattern {pattern:?} is not a valid glob: {e}"),
        )
    })
}

impl CompiledPolicy {
    /// Parses and compiles a JSON policy document.
    pub fn parse(json: &str) -> Result<(PolicyDoc, Self), SecretsError> {
        let doc: PolicyDoc = serde_json::from_str(json).map_err(|e| {
            SecretsError::invalid(
                "invalid_policy",
                format!("policy is not valid: {e}; expected {{\"rules\": [{{\"env\": \"prod\", \"path\": \"billing/**\", \"capabilities\": [\"read\"]}}]}}"),
            )
        })?;
        let compiled = Self::compile(&doc)?;
        Ok((doc, compiled))
    }

    pub fn compile(doc: &PolicyDoc) -> Result<Self, SecretsError> {
        let mut rules = Vec::with_capacity(doc.rules.len());
        for (i, r) in doc.rules.iter().enumerate() {
            if r.capabilities.is_empty() {
                return Err(SecretsError::invalid(
                    "invalid_policy",
                    format!("rule {i} has no capabilities; list some of read, list, write, delete, rotate, admin, deny"),
                ));
            }
            rules.push((
                glob(&r.env, "env", i)?,
                glob(&r.path, "path", i)?,
                r.capabilities.clone(),
            ));
        }
        Ok(Self { rules })
    }
}

/// The union of a caller's policies.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub root: bool,
    pub policies: Vec<std::sync::Arc<CompiledPolicy>>,
}

impl PolicySet {
    /// Deny by default: allowed only if some rule grants `cap` (or admin) and none denies.
    pub fn allows(&self, env: &str, path: &str, cap: Capability) -> bool {
        if self.root {
            return true;
        }
        let mut granted = false;
        for p in &self.policies {
            for (e, pa, caps) in &p.rules {
                if !e.is_match(env) || !pa.is_match(path) {
                    continue;
                }
                if caps.contains(&Capability::Deny) {
                    return false;
                }
                granted |= caps.contains(&cap) || caps.contains(&Capability::Admin);
            }
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn set(json: &str) -> PolicySet {
        PolicySet {
            root: false,
            policies: vec![Arc::new(CompiledPolicy::parse(json).unwrap().1)],
        }
    }

    fn check(policy: &str, cases: &[(&str, &str, Capability, bool)]) {
        let s = set(policy);
        for (env, path, cap, want) in cases {
            assert_eq!(s.allows(env, path, *cap), *want, "{env}/{path} {cap:?}");
        }
    }

    #[test]
    fn deny_by_default_and_globs() {
        use Capability::*;
        check(
            r#"{"rules":[{"env":"prod","path":"billing/*","capabilities":["read","list"]},
                        {"env":"*","path":"shared/**","capabilities":["write"]},
                        {"env":"prod","path":"billing/root_key","capabilities":["deny"]}]}"#,
            &[
                ("prod", "billing/db", Read, true),
                ("prod", "billing/db", Write, false),
                ("prod", "billing/a/b", Read, false),
                ("staging", "billing/db", Read, false),
                ("prod", "billing/root_key", Read, false),
                ("dev", "shared/x/y", Write, true),
                ("dev", "other", Read, false),
                ("prod", "billing/", List, true),
            ],
        );
        check(
            r#"{"rules":[{"env":"*","path":"**","capabilities":["admin"]}]}"#,
            &[
                ("sys", "tokens", Admin, true),
                ("prod", "a/b", Delete, true),
            ],
        );
        assert!(!PolicySet::default().allows("prod", "x", Capability::Read));
    }

    #[test]
    fn bad_documents_are_explained() {
        for (doc, frag) in [
            ("{", "not valid"),
            (
                r#"{"rules":[{"env":"a","path":"b","capabilities":["fly"]}]}"#,
                "fly",
            ),
            (
                r#"{"rules":[{"env":"a","path":"b","capabilities":[]}]}"#,
                "no capabilities",
            ),
            (
                r#"{"rules":[{"env":"a","path":"[","capabilities":["read"]}]}"#,
                "not a valid glob",
            ),
            (r#"{"rules":[],"extra":1}"#, "extra"),
        ] {
            let err = CompiledPolicy::parse(doc).unwrap_err();
            assert!(err.message.contains(frag), "{doc}: {}", err.message);
        }
        assert!(check_policy_name("root").is_err());
        assert!(check_policy_name("Billing").is_err());
        assert!(check_policy_name("billing-read").is_ok());
    }
}
