//! `${secret:ENV/PATH}` and `${secret:ENV/PATH#field}` references, resolved at read time.
//!
//! A reference is replaced by the referenced secret's latest live value (a string, or one field
//! of a JSON object). Resolution is recursive, checks the caller's `read` permission on every
//! secret it touches, and stops at cycles and at [`MAX_DEPTH`] with an error naming the chain.

use std::{future::Future, pin::Pin};

use serde_json::Value;

use crate::{auth::Caller, error::SecretsError, Engine, Result};

/// Deepest chain of references followed.
pub const MAX_DEPTH: usize = 8;
/// Most substitutions one request may make (each distinct secret is read once, then reused).
pub const MAX_SUBSTITUTIONS: usize = 1024;
const OPEN: &str = "${secret:";

/// One reference found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub start: usize,
    pub end: usize,
    pub env: String,
    pub path: String,
    pub field: Option<String>,
}

impl Reference {
    fn target(&self) -> String {
        format!("{}/{}", self.env, self.path)
    }
}

/// Finds every reference in `s`. A `${secret:` without a closing `}` or with a malformed target
/// is an error, so typos do not pass through silently.
pub fn find_references(s: &str) -> Result<Vec<Reference>> {
    let mut out = vec![];
    let mut from = 0;
    while let Some(i) = s[from..].find(OPEN) {
        let start = from + i;
        let body_start = start + OPEN.len();
        let close = s[body_start..].find('}').ok_or_else(|| {
            SecretsError::invalid(
                "invalid_reference",
                "unterminated reference: `${secret:` needs a closing `}`",
            )
        })?;
        let body = &s[body_start..body_start + close];
        let (target, field) = match body.split_once('#') {
            Some((t, f)) if !f.is_empty() => (t, Some(f.to_string())),
            Some(_) => {
                return Err(SecretsError::invalid(
                    "invalid_reference",
                    format!("reference ${{secret:{body}}} has an empty #field"),
                ))
            }
            None => (body, None),
        };
        let (env, path) = steward_core::names::parse_reference(target)
            .map_err(|e| SecretsError::invalid("invalid_reference", e.to_string()))?;
        let end = body_start + close + 1;
        out.push(Reference {
            start,
            end,
            env: env.to_string(),
            path: path.to_string(),
            field,
        });
        from = end;
    }
    Ok(out)
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Engine {
    /// Resolves references in every string of `value`. `chain` holds the secrets being
    /// resolved (outermost first), for cycle detection.
    pub(crate) fn resolve_value<'a>(
        &'a self,
        caller: &'a Caller,
        value: Value,
        chain: Vec<String>,
    ) -> BoxFut<'a, Result<Value>> {
        Box::pin(async move {
            match value {
                Value::String(s) => Ok(Value::String(self.resolve_str(caller, s, &chain).await?)),
                Value::Object(map) => {
                    let mut out = serde_json::Map::with_capacity(map.len());
                    for (k, v) in map {
                        out.insert(k, self.resolve_value(caller, v, chain.clone()).await?);
                    }
                    Ok(Value::Object(out))
                }
                other => Ok(other),
            }
        })
    }

    async fn resolve_str(&self, caller: &Caller, s: String, chain: &[String]) -> Result<String> {
        if !s.contains(OPEN) {
            return Ok(s);
        }
        let refs = find_references(&s)?;
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for r in refs {
            out.push_str(&s[last..r.start]);
            out.push_str(&self.resolve_one(caller, &r, chain).await?);
            last = r.end;
        }
        out.push_str(&s[last..]);
        // Expansion is bounded, so a small template cannot make a huge answer.
        let limit = self.cfg.max_value_bytes.saturating_mul(4);
        if out.len() > limit {
            return Err(SecretsError::invalid(
                "reference_too_large",
                format!(
                    "references expand to more than {limit} bytes (4 x secrets.max_value_bytes)"
                ),
            ));
        }
        Ok(out)
    }

    async fn resolve_one(
        &self,
        caller: &Caller,
        r: &Reference,
        chain: &[String],
    ) -> Result<String> {
        let target = r.target();
        if chain.contains(&target) {
            let mut cycle = chain.to_vec();
            cycle.push(target);
            return Err(SecretsError::invalid(
                "reference_cycle",
                format!("reference cycle: {}", cycle.join(" -> ")),
            ));
        }
        if chain.len() >= MAX_DEPTH {
            return Err(SecretsError::invalid(
                "reference_too_deep",
                format!("references nest deeper than {MAX_DEPTH} levels at {target}"),
            ));
        }
        self.env(&r.env)?;
        let memo = {
            let mut g = caller.resolved.lock().unwrap_or_else(|e| e.into_inner());
            g.1 += 1;
            if g.1 > MAX_SUBSTITUTIONS {
                return Err(SecretsError::invalid(
                    "reference_too_many",
                    format!("more than {MAX_SUBSTITUTIONS} references in one request"),
                ));
            }
            g.0.get(&target).cloned()
        };
        if !caller.allows(&r.env, &r.path, crate::policy::Capability::Read) {
            return Err(SecretsError::new(
                crate::Kind::Forbidden,
                "permission_denied",
                format!("permission denied reading referenced secret {target}"),
            ));
        }
        let value = match memo {
            Some(v) => v,
            None => {
                let (_, info, value) =
                    self.read_plain(&r.env, &r.path, None).await.map_err(|e| {
                        SecretsError::new(
                            e.kind,
                            e.code,
                            format!("reference {target}: {}", e.message),
                        )
                    })?;
                // Templates and references are consumers too (consumer-aware retirement).
                self.note_read(&r.env, &r.path, &caller.accessor, info.version);
                caller
                    .touched
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(target.clone());
                let mut next = chain.to_vec();
                next.push(target.clone());
                let value = self.resolve_value(caller, value, next).await?;
                caller
                    .resolved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .insert(target.clone(), value.clone());
                value
            }
        };
        match (&r.field, value) {
            (None, Value::String(s)) => Ok(s),
            (None, Value::Object(_)) => Err(SecretsError::invalid(
                "invalid_reference",
                format!("{target} is a JSON object; name a field: ${{secret:{target}#field}}"),
            )),
            (Some(f), Value::Object(map)) => match map.get(f) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Ok(other.to_string()),
                None => Err(SecretsError::invalid(
                    "invalid_reference",
                    format!("{target} has no field {f:?}"),
                )),
            },
            (Some(f), _) => Err(SecretsError::invalid(
                "invalid_reference",
                format!("{target} is a string, it has no field {f:?}"),
            )),
            (_, _) => Err(SecretsError::internal("unexpected value type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references() {
        let r = find_references("a=${secret:prod/x/y} b=${secret:dev/z#user}!").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].env.as_str(), r[0].path.as_str()), ("prod", "x/y"));
        assert_eq!(r[1].field.as_deref(), Some("user"));
        assert_eq!(
            &"a=${secret:prod/x/y} b"[r[0].start..r[0].end],
            "${secret:prod/x/y}"
        );
        assert!(find_references("no refs here $HOME ${other}")
            .unwrap()
            .is_empty());
        for bad in [
            "${secret:prod/x",
            "${secret:prod}",
            "${secret:prod/../x}",
            "${secret:prod/x#}",
        ] {
            assert!(find_references(bad).is_err(), "{bad}");
        }
    }
}
