//! The crate's error type. Every message says what is wrong and what to do about
//! it, and none ever contains a password (tool output is redacted before it is
//! put in an error).

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while backing up or drilling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting of a source or drill is unusable.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),

    /// A program (pg_dump, mariadb-dump, redis-cli...) could not be started.
    #[error("cannot run {program}: {source}; {hint}")]
    Spawn {
        /// The program.
        program: String,
        /// How to fix it.
        hint: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },

    /// Connecting to or querying a database server failed.
    #[error("{what}: {reason}")]
    Database {
        /// What was being done, naming the server and database (never a password).
        what: String,
        /// The server's or driver's message, redacted, with a hint.
        reason: String,
    },

    /// The dump tool failed; nothing was stored as a snapshot.
    #[error("{tool} of {target} failed, so no snapshot was recorded: {message}; fix the cause and run the backup again")]
    Dump {
        /// The program, e.g. `pg_dump`.
        tool: String,
        /// What was dumped, e.g. `database "app" on 127.0.0.1:5432`.
        target: String,
        /// The tool's exit status and its stderr (trimmed, bounded, redacted).
        message: String,
    },

    /// Extracting a restored backup failed; what was written is incomplete.
    #[error(
        "{tool} could not extract {what}: {message}; empty the directory and run the restore again"
    )]
    Extract {
        /// The program, e.g. `tar`.
        tool: String,
        /// What was being extracted and where.
        what: String,
        /// The tool's exit status and its stderr (trimmed, bounded).
        message: String,
    },

    /// A local file operation failed (temporary copies, SQLite files).
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// SQLite failed while taking the online backup.
    #[error("SQLite backup of {}: {reason}", .path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What failed and what to do.
        reason: String,
    },

    /// The repository failed (locked, damaged, disk full...).
    #[error(transparent)]
    Repo(#[from] steward_repo::Error),
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Database`].
    pub fn database(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Database {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
