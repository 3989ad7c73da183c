//! Storage errors. Messages never include row contents (which may be ciphertext or hashes).

/// What went wrong in the store; the API maps these to 503 (unavailable) or 500.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation; retrying later can help.
    #[error("the store is unavailable ({0}); check that the database is running and reachable")]
    Unavailable(String),
    /// Another process owns this embedded store.
    #[error("{0}")]
    Locked(String),
    /// Stored data failed to decode: the database was edited or damaged.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A schema migration failed.
    #[error("store migration {version} failed: {message}")]
    Migration { version: u32, message: String },
    /// The database schema is newer than this binary understands.
    #[error("the store was written by a newer Steward (schema {found}, this binary knows {known}); upgrade steward")]
    TooNew { found: u32, known: u32 },
    /// The store is sealed: the audit key is not loaded, so nothing can be written.
    #[error("the store is sealed; unseal it first")]
    Sealed,
    /// The writer has stopped (shutdown in progress).
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    pub(crate) fn sqlite(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => {
                StoreError::Corrupt(format!("sqlite: {e}"))
            }
            other => StoreError::Unavailable(format!("sqlite: {}", sqlite_msg(&other))),
        }
    }

    pub(crate) fn pg(e: postgres::Error) -> Self {
        // DbError details can echo row values; keep only the code and the short message.
        match e.as_db_error() {
            Some(db) => {
                StoreError::Unavailable(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None if e.is_closed() => StoreError::Unavailable("postgres connection closed".into()),
            None => StoreError::Unavailable(format!("postgres: {e}")),
        }
    }
}

fn sqlite_msg(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(code, _) => format!("{:?}", code.code),
        other => other.to_string(),
    }
}
