//! Credential rotators: the [`Rotator`] trait the rotation engine drives through its four steps
//! (create, set, test, finish), and one module per target system: [`random`] (generated
//! values, nothing to apply), [`postgres`], [`mysql`] (MariaDB and MySQL), [`redis`] (ACL
//! users), [`webhook`] (keys an HTTP endpoint issues) and [`command`] (an operator's program).
//!
//! A rotator never logs a credential and never puts one in an error message, in argv or in a
//! panic. The engine stores the pending value (sealed) before it calls [`Rotator::set`], so a
//! rotator may assume that whatever it applies in the target is already recoverable.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt, sync::Arc};

use async_trait::async_trait;
use serde_json::{Map, Value};

/// A credential: the JSON object a secret version holds (e.g. `username`, `password`, `host`).
/// Its Debug output names the fields, never their values.
#[derive(Clone, PartialEq, Default)]
pub struct Credential(pub Map<String, Value>);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("fields", &self.0.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential from a secret's JSON value: an object, or a bare string (stored under
    /// `value`).
    pub fn from_value(v: Value) -> Self {
        match v {
            Value::Object(m) => Self(m),
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                Self(m)
            }
        }
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    /// A string field, or an error naming the field (never its value).
    pub fn str(&self, field: &str) -> Result<&str, RotatorError> {
        self.0.get(field).and_then(Value::as_str).ok_or_else(|| {
            RotatorError::invalid(format!(
                "the credential has no string field {field:?}; store it in the secret"
            ))
        })
    }

    /// This credential with `field` set to `value`.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.0.insert(field.to_string(), value.into());
        self
    }
}

/// What kind of failure a step met; the engine retries all but [`ErrorKind::Invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The settings or the stored credential are wrong; retrying will not help.
    Invalid,
    /// The target refused (e.g. it rejected the password or the login failed).
    Rejected,
    /// The target could not be reached or timed out.
    Unavailable,
}

/// A rotator's error. The message says what failed and never holds a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RotatorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RotatorError {
    pub fn invalid(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Invalid,
            message: m.into(),
        }
    }
    pub fn rejected(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Rejected,
            message: m.into(),
        }
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            message: m.into(),
        }
    }
}

/// Everything a step sees. `settings` is the rotator's JSON settings from the rotation config;
/// `admin` is the credential named by `settings.admin` (a Steward secret), already resolved.
#[derive(Debug)]
pub struct StepContext<'a> {
    pub env: &'a str,
    pub path: &'a str,
    pub settings: &'a Value,
    /// The value labelled current, if the secret has one.
    pub current: Option<&'a Credential>,
    /// The value labelled previous, if any.
    pub previous: Option<&'a Credential>,
    pub admin: Option<&'a Credential>,
    /// Unique per rotation attempt; rotators may use it as an idempotency key.
    pub attempt_id: &'a str,
}

/// One kind of target system. Every method must be idempotent: the engine may call a step again
/// after a crash, with the same pending credential.
#[async_trait]
pub trait Rotator: Send + Sync + 'static {
    /// The name used in rotation configs (`random`, `postgres`, ...).
    fn kind(&self) -> &'static str;

    /// Checks settings when a rotation is configured; the message says which field is wrong
    /// and how to fix it.
    fn check_settings(&self, settings: &Value) -> Result<(), RotatorError>;

    /// Step 1: a new credential (pending). Must not change anything in the target, except
    /// for targets that issue credentials themselves (webhook, command), which issue it here.
    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError>;

    /// Step 2: make `pending` valid in the target.
    async fn set(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError>;

    /// Step 3: log in with `pending`.
    async fn test(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError>;

    /// Undo `set` after a failed rotation: afterwards `cx.current` works as before and
    /// `pending` should not.
    async fn discard(&self, cx: &StepContext<'_>, pending: &Credential)
        -> Result<(), RotatorError>;

    /// Retire an old credential (the previous one, after the grace period). Must leave
    /// `cx.current` working.
    async fn revoke(&self, cx: &StepContext<'_>, old: &Credential) -> Result<(), RotatorError>;
}

/// Rotators by kind.
#[derive(Clone, Default)]
pub struct Registry {
    by_kind: BTreeMap<&'static str, Arc<dyn Rotator>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_kind.keys()).finish()
    }
}

impl Registry {
    /// Every built-in rotator.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        r.add(Arc::new(random::RandomRotator));
        r.add(Arc::new(self::postgres::PostgresRotator));
        r.add(Arc::new(self::mysql::MysqlRotator));
        r.add(Arc::new(self::redis::RedisRotator));
        r.add(Arc::new(webhook::WebhookRotator));
        r.add(Arc::new(command::CommandRotator));
        r
    }

    pub fn add(&mut self, rotator: Arc<dyn Rotator>) {
        self.by_kind.insert(rotator.kind(), rotator);
    }

    pub fn get(&self, kind: &str) -> Result<Arc<dyn Rotator>, RotatorError> {
        self.by_kind.get(kind).cloned().ok_or_else(|| {
            RotatorError::invalid(format!(
                "unknown rotator {kind:?}; available: {}",
                self.by_kind.keys().copied().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

mod accounts;
pub mod command;
pub mod mysql;
pub mod postgres;
pub mod random;
pub mod redis;
mod support;
pub mod webhook;

pub use accounts::Strategy;
