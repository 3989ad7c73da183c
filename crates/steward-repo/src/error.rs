//! The crate's error type. Every message says what is wrong and, where there is one,
//! what to do about it. Messages never contain key material or passwords.

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::id::Id;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading or writing a repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage below the repository failed (missing file, IO error, disk full...).
    #[error(transparent)]
    Backend(#[from] BackendError),

    /// No key file could be decrypted with the given password.
    #[error("no key in {location} opens with this password: check the password (or the password file) and that this is the right repository")]
    WrongPassword {
        /// Where the repository is (never contains credentials).
        location: String,
    },

    /// Data in the repository failed authentication or does not parse: it was
    /// damaged or tampered with. `what` names the file (and blob) concerned.
    #[error("{what} is corrupted: {reason}; run a check with read_data to list every damaged file, and restore the repository from another copy if the damage is confirmed")]
    Corrupt {
        /// The file (and blob) concerned, e.g. `pack 1a2b3c4d`.
        what: String,
        /// What exactly failed.
        reason: String,
    },

    /// Something that was asked for does not exist.
    #[error("{what} not found: {hint}")]
    NotFound {
        /// What was looked up.
        what: String,
        /// How to find the right one.
        hint: String,
    },

    /// A snapshot id prefix matches more than one snapshot.
    #[error("snapshot id prefix {prefix:?} is ambiguous: it matches {count} snapshots; give more characters of the id")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// How many snapshots it matches.
        count: usize,
    },

    /// The repository uses a feature or version this crate does not implement.
    #[error("unsupported repository: {0}")]
    Unsupported(String),

    /// Another process holds a conflicting lock on the repository.
    #[error("repository at {location} is locked: {holder} (lock {lock}); wait for that operation to finish; if that process is gone, remove locks/{lock} from the repository (locks not refreshed for 30 minutes are removed automatically)")]
    Locked {
        /// Where the repository is.
        location: String,
        /// The id of the conflicting lock file.
        lock: Id,
        /// Who holds it, e.g. `exclusive lock held by PID 42 on host db1 (user postgres) since ...`.
        holder: String,
    },

    /// A caller passed something unusable (an empty path list, a bad pattern...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A local file-system operation outside the repository failed (reading the
    /// files to back up, writing restored files).
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. `read`.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A multi-step repository operation (prune) failed part-way. Its steps are
    /// ordered so the repository stays consistent at every point; running the
    /// operation again finishes the job.
    #[error("{operation} stopped while {step}: {source}; the repository is still consistent (nothing a snapshot needs was removed): fix the cause and run {operation} again to finish")]
    Interrupted {
        /// The operation, e.g. `prune`.
        operation: &'static str,
        /// The step that failed, e.g. `deleting old index files`.
        step: String,
        /// What failed.
        #[source]
        source: Box<Error>,
    },

    /// An operation was stopped because another part of it failed first, or a
    /// worker thread died.
    #[error("operation aborted: {0}")]
    Aborted(String),
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when the error says the data in the repository is damaged.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}
