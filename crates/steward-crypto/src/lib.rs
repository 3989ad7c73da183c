//! Steward's cryptography.
//!
//! * [`SecretKey`]: a 32-byte key that is wiped on drop and never printed.
//! * [`Keyring`]: the data-encryption keys (AES-256-GCM root keys with `u32` ids,
//!   one active) plus the audit HMAC key. [`Keyring::seal`] does envelope
//!   encryption: a fresh data-encryption key (DEK) per value, wrapped by the
//!   active root key, both bound to the caller's associated data ([`aad_for`]).
//! * [`Envelope`]: the sealed form of one value, with a compact binary encoding.
//! * [`UnsealKey`]: the key the operator holds; it wraps the keyring at rest.
//! * [`write_key_file`] / [`read_key_file`]: the unseal key on disk (mode 0600).
//! * [`split_key`] / [`combine_shares`]: Shamir k-of-n shares of a key.
//! * [`hmac_hex`], [`chain_hash`], [`sha256`], [`ct_eq`], [`random_token_bytes`]:
//!   helpers for the audit log and tokens.
//!
//! Nothing here does IO except the key-file functions. Key files are Unix-only.
#![forbid(unsafe_code)]

mod aead;
mod audit;
mod envelope;
mod error;
mod keyfile;
mod keyring;
mod keys;
mod shamir;
mod unseal;

pub use audit::{chain_hash, ct_eq, hmac_hex, random_token_bytes, sha256};
pub use envelope::{aad_for, Envelope};
pub use error::{CryptoError, KeyFileError};
pub use keyfile::{read_key_file, write_key_file, KEY_FILE_PREFIX};
pub use keyring::Keyring;
pub use keys::{SecretKey, KEY_LEN};
pub use shamir::{combine_shares, split_key, SHARE_PREFIX};
pub use unseal::UnsealKey;
/// Re-exported so callers can name the wrapper returned by [`Keyring::open`] and friends.
pub use zeroize::Zeroizing;

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers shared by the unit tests.
    use crate::SecretKey;
    use base64::Engine as _;

    /// Every textual form of the key's bytes that must never show up in a Debug string.
    pub fn key_renderings(key: &SecretKey) -> Vec<String> {
        let b = key.expose();
        vec![
            hex::encode(b),
            hex::encode_upper(b),
            base64::engine::general_purpose::STANDARD.encode(b),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
            format!("{:?}", &b[..]),
            format!("{:?}", b),
        ]
    }

    /// Panics (in tests) if `debug` contains any rendering of `key`.
    pub fn assert_redacted(debug: &str, key: &SecretKey) {
        assert!(
            debug.contains("[redacted]"),
            "no redaction marker in {debug}"
        );
        for r in key_renderings(key) {
            assert!(!debug.contains(&r), "Debug output leaks key bytes: {debug}");
        }
    }
}
