//! Where a repository's files live: the [`Backend`] trait and its errors.
//!
//! A backend stores opaque files by [`FileType`] and [`Id`]; it knows nothing about
//! encryption or the repository format. [`local::LocalBackend`] is restic's local
//! layout; other backends (S3) implement the same trait. Implementations must make
//! [`Backend::write`] atomic and durable: after it returns the file is complete under
//! its final name, and a crash never leaves a partial file under that name.

pub mod local;

use std::fmt;

use crate::id::Id;

/// The kinds of files in a repository, each in its own directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// The single `config` file.
    Config,
    /// `keys/`: password-protected copies of the master key.
    Key,
    /// `locks/`.
    Lock,
    /// `snapshots/`.
    Snapshot,
    /// `index/`.
    Index,
    /// `data/`: pack files.
    Pack,
}

impl FileType {
    /// The directory name restic uses (`config` for the config file).
    pub fn dir_name(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Key => "keys",
            FileType::Lock => "locks",
            FileType::Snapshot => "snapshots",
            FileType::Index => "index",
            FileType::Pack => "data",
        }
    }

    /// A human name for messages, e.g. `pack`.
    pub fn noun(self) -> &'static str {
        match self {
            FileType::Config => "config file",
            FileType::Key => "key file",
            FileType::Lock => "lock file",
            FileType::Snapshot => "snapshot",
            FileType::Index => "index file",
            FileType::Pack => "pack",
        }
    }

    /// `"pack 1a2b3c4d"`, or `"config file"` for the config.
    pub fn describe(self, id: &Id) -> String {
        match self {
            FileType::Config => "config file".to_string(),
            _ => format!("{} {}", self.noun(), id.short()),
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// A backend failure. Messages name the file and never contain credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The file does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// The file, e.g. `pack 1a2b3c4d at /srv/repo`.
        what: String,
    },
    /// A failure that may go away when retried (timeouts, throttling, resets).
    #[error("{what}: {message} (a temporary failure; retrying may help)")]
    Transient {
        /// The file or operation.
        what: String,
        /// What happened.
        message: String,
    },
    /// A temporary failure that the backend already retried, with backoff, as long as its
    /// policy allows: retrying again at once will not help (callers do not retry it).
    #[error(
        "{what}: {message} (a temporary failure the backend already retried; try again later)"
    )]
    Exhausted {
        /// The file or operation.
        what: String,
        /// What happened.
        message: String,
    },
    /// A failure that retrying will not fix (permissions, disk full, bad data).
    #[error("{what}: {message}")]
    Permanent {
        /// The file or operation.
        what: String,
        /// What happened and how to fix it.
        message: String,
    },
    /// [`Backend::create`] found an existing repository.
    #[error("a repository already exists at {location} (it has a config file): open it instead of creating it again, or choose another location")]
    AlreadyExists {
        /// The location.
        location: String,
    },
}

impl BackendError {
    /// True for [`BackendError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// True for [`BackendError::Transient`].
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. })
    }

    /// True for a temporary failure, whether or not the backend already retried it
    /// ([`BackendError::Transient`] or [`BackendError::Exhausted`]).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            BackendError::Transient { .. } | BackendError::Exhausted { .. }
        )
    }
}

/// Storage for a repository's files.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where the repository is, for messages; never contains credentials.
    fn location(&self) -> String;
    /// Makes the layout; fails with [`BackendError::AlreadyExists`] if a config exists.
    fn create(&self) -> Result<(), BackendError>;
    /// Ids and sizes of all files of a type. For [`FileType::Config`] the list has one
    /// entry (with the null id) if the config exists.
    fn list(&self, t: FileType) -> Result<Vec<(Id, u64)>, BackendError>;
    /// The whole file. `Config` ignores `id`.
    fn read(&self, t: FileType, id: &Id) -> Result<Vec<u8>, BackendError>;
    /// `len` bytes from `offset`; fails if the file is shorter.
    fn read_range(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError>;
    /// Like [`Backend::read_range`], into `buf` (resized to `len`), so a caller that
    /// reads many ranges can reuse one buffer.
    fn read_range_into(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        *buf = self.read_range(t, id, offset, len)?;
        Ok(())
    }
    /// Stores a file atomically and durably (replacing one with the same name).
    fn write(&self, t: FileType, id: &Id, data: &[u8]) -> Result<(), BackendError>;
    /// Deletes a file.
    fn remove(&self, t: FileType, id: &Id) -> Result<(), BackendError>;

    /// A temporary file in which a file of type `t` whose id is known only at the end (a
    /// pack) can be assembled without holding it in memory; `None` when this backend
    /// stores from memory only (the default).
    fn stage(&self, _t: FileType) -> Result<Option<StagedFile>, BackendError> {
        Ok(None)
    }

    /// Stores a staged file as `(t, id)`, atomically and durably. The default reads it
    /// back and calls [`Backend::write`].
    fn commit(&self, t: FileType, id: &Id, mut staged: StagedFile) -> Result<(), BackendError> {
        use std::io::{Read, Seek};
        let mut data = Vec::new();
        staged
            .file
            .rewind()
            .and_then(|_| staged.file.read_to_end(&mut data))
            .map_err(|e| local::io_error("read the staged file", &staged.path, e))?;
        self.write(t, id, &data)
    }
}

/// A temporary file made by [`Backend::stage`]; removed when dropped unless committed.
#[derive(Debug)]
pub struct StagedFile {
    pub file: std::fs::File,
    pub path: std::path::PathBuf,
    committed: bool,
}

impl StagedFile {
    /// Wraps a freshly created temporary file.
    pub fn new(file: std::fs::File, path: std::path::PathBuf) -> Self {
        StagedFile {
            file,
            path,
            committed: false,
        }
    }

    /// Marks it moved into place (so dropping it removes nothing).
    pub fn mark_committed(&mut self) {
        self.committed = true;
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
