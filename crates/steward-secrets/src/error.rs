//! The engine's error type: a stable machine code, a human message that says what to do, and a
//! kind the API maps to an HTTP status. Messages never contain secret values or tokens.

use steward_store::StoreError;

/// Broad class of an error; the API turns it into a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input (400).
    Invalid,
    /// No or bad credentials (401).
    Unauthenticated,
    /// Credentials fine, permission missing (403).
    Forbidden,
    /// Nothing there (404).
    NotFound,
    /// Lost update / state conflict (409).
    Conflict,
    /// Too large (413).
    TooLarge,
    /// Sealed or store down (503); retrying later can help.
    Unavailable,
    /// A bug or corrupt data (500).
    Internal,
}

/// An engine error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SecretsError {
    pub kind: Kind,
    /// Stable, documented machine code, e.g. `cas_mismatch`.
    pub code: &'static str,
    pub message: String,
    /// Non-secret facts a client may want with the error (e.g. a deleted version's metadata).
    pub detail: Option<serde_json::Value>,
}

impl SecretsError {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, "not_found", message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            Kind::Forbidden,
            "permission_denied",
            "permission denied: the token's policies do not grant this operation on this path",
        )
    }

    pub fn sealed() -> Self {
        Self::new(
            Kind::Unavailable,
            "sealed",
            "Steward is sealed: run `steward unseal` with enough key shares (or start it with its root key)",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, "internal_error", message)
    }
}

impl From<StoreError> for SecretsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Sealed => SecretsError::sealed(),
            StoreError::Corrupt(_) => {
                SecretsError::new(Kind::Internal, "store_corrupt", e.to_string())
            }
            other => SecretsError::new(Kind::Unavailable, "store_unavailable", other.to_string()),
        }
    }
}

impl From<steward_core::NameError> for SecretsError {
    fn from(e: steward_core::NameError) -> Self {
        SecretsError::invalid("invalid_path", e.to_string())
    }
}

impl steward_store::JobError for SecretsError {
    fn audit_code(&self) -> String {
        self.code.to_string()
    }
}
