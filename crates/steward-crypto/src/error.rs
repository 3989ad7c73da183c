//! Error types. Messages never contain key bytes; key-file errors name the path and
//! say how to fix the problem.

use std::io;
use std::path::PathBuf;

/// Errors from the in-memory cryptographic operations.
#[derive(thiserror::Error, Debug)]
pub enum CryptoError {
    /// AEAD verification failed: the data was modified, or it is being opened with
    /// other associated data (another env/path/version) than it was sealed with.
    #[error("decryption failed: the data was modified or belongs to a different secret, environment, path or version")]
    Decrypt,
    /// The unseal key does not decrypt the keyring blob (or the blob is damaged:
    /// AEAD cannot tell the two apart).
    #[error("wrong unseal key: the keyring could not be decrypted with this key (or the keyring data is damaged)")]
    WrongKey,
    /// The envelope names a keyring key id that is not in the ring.
    #[error("unknown key id {0}: the data was sealed with a keyring key that is not in this keyring (was it retired?)")]
    UnknownKey(u32),
    /// [`crate::Keyring::retire`] was asked to remove the active key.
    #[error("cannot retire key {0}: it is the active key; rotate to a new key first")]
    ActiveKey(u32),
    /// A key of the wrong size was given.
    #[error("invalid key length: expected {expected} bytes, got {actual}")]
    InvalidKeyLength {
        /// Always 32.
        expected: usize,
        /// What was given.
        actual: usize,
    },
    /// Encryption refused the input (only possible for absurdly large plaintexts).
    #[error("encryption failed: {0}")]
    Encrypt(String),
    /// Serialized data (envelope, keyring, key text) is truncated, garbage or of an
    /// unsupported version.
    #[error("malformed data: {0}")]
    Format(String),
    /// A Shamir share could not be used. `index` is the 0-based position of the share
    /// in the input slice; the message counts from 1.
    #[error("share {} of the input is invalid: {reason}", .index + 1)]
    BadShare {
        /// 0-based position in the slice given to [`crate::combine_shares`].
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Bad arguments, e.g. a Shamir threshold larger than the number of shares.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
}

/// Errors from [`crate::write_key_file`] and [`crate::read_key_file`].
#[derive(thiserror::Error, Debug)]
pub enum KeyFileError {
    /// The key file does not exist.
    #[error("key file {} does not exist: check the path (or the setting that points to it), or create a key with `steward init`", .path.display())]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// [`crate::write_key_file`] refuses to replace an existing file.
    #[error("refusing to overwrite existing key file {}: the key in it may still be needed to unseal existing data; move it away first if you really mean to replace it", .path.display())]
    AlreadyExists {
        /// The existing path.
        path: PathBuf,
    },
    /// The file can be read or written by group or other users.
    #[error("key file {} is accessible by other users (mode {mode:04o}); run `chmod 600 {}` and try again", .path.display(), .path.display())]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`st_mode & 0o7777`).
        mode: u32,
    },
    /// The file exists but does not hold a valid key.
    #[error("key file {} is corrupt: {reason}; it must hold the single line `steward-root-key-v1:<base64 of 32 bytes>`; restore it from your backup copy", .path.display())]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never contains key material).
        reason: String,
    },
    /// Any other IO failure.
    #[error("could not {action} key file {}: {source}; check that the file and its directory exist and are accessible to this user", .path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What was being done, e.g. "read", "create temporary file for".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
