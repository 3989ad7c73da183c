//! [`UnsealKey`]: the root key the operator holds. It encrypts the serialized
//! [`Keyring`] at rest (AES-256-GCM, AAD `b"steward-keyring-v1"`).
//!
//! Wrapped keyring blob: `0x01 (version) || nonce (12) || ciphertext || tag (16)`.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::ZeroizeOnDrop;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::{CryptoError, Keyring, SecretKey};

/// AAD of the keyring encryption.
const KEYRING_AAD: &[u8] = b"steward-keyring-v1";
/// Version byte of the wrapped keyring blob.
const WRAPPED_KEYRING_VERSION: u8 = 1;
/// Domain-separation prefix of the fingerprint hash.
const FINGERPRINT_PREFIX: &[u8] = b"steward-fp";

/// The key that unseals (decrypts) the keyring. Wiped on drop; `Debug` shows only the
/// fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct UnsealKey(SecretKey);

impl UnsealKey {
    /// A fresh random unseal key.
    pub fn generate() -> Self {
        Self(SecretKey::generate())
    }

    /// Wraps an existing key (e.g. one rebuilt from Shamir shares).
    pub fn from_secret(k: SecretKey) -> Self {
        Self(k)
    }

    /// The underlying key (e.g. to split it into shares).
    pub fn secret(&self) -> &SecretKey {
        &self.0
    }

    /// Encrypts the serialized keyring for storage.
    pub fn wrap_keyring(&self, ring: &Keyring) -> Result<Vec<u8>, CryptoError> {
        let plain = ring.to_bytes();
        let sealed = aead::encrypt_prefixed(&self.0, &plain, KEYRING_AAD)?;
        let mut out = Vec::with_capacity(1 + sealed.len());
        out.push(WRAPPED_KEYRING_VERSION);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a blob from [`UnsealKey::wrap_keyring`]. [`CryptoError::WrongKey`]
    /// when the AEAD check fails (wrong key, or a damaged blob: they cannot be told
    /// apart); [`CryptoError::Format`] when the blob is too short or of an unknown
    /// version.
    pub fn unwrap_keyring(&self, blob: &[u8]) -> Result<Keyring, CryptoError> {
        let Some((&version, rest)) = blob.split_first() else {
            return Err(CryptoError::Format("wrapped keyring is empty".into()));
        };
        if version != WRAPPED_KEYRING_VERSION {
            return Err(CryptoError::Format(format!(
                "unsupported wrapped keyring version {version} (this build reads version {WRAPPED_KEYRING_VERSION})"
            )));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Format(format!(
                "wrapped keyring is truncated ({} bytes)",
                blob.len()
            )));
        }
        let plain =
            aead::decrypt_prefixed(&self.0, rest, KEYRING_AAD).ok_or(CryptoError::WrongKey)?;
        Keyring::from_bytes(&plain)
    }

    /// Short non-secret identifier of the key: the first 8 bytes, in hex, of
    /// `SHA-256("steward-fp" || key)`.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_PREFIX);
        h.update(self.0.expose());
        hex::encode(&h.finalize()[..8])
    }
}

impl ZeroizeOnDrop for UnsealKey {}

impl fmt::Debug for UnsealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealKey")
            .field("fingerprint", &self.fingerprint())
            .field("key", &format_args!("[redacted]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_redacted;
    use crate::{aad_for, sha256};

    #[test]
    fn wrap_unwrap_round_trip() {
        let uk = UnsealKey::generate();
        let mut ring = Keyring::generate();
        let aad = aad_for("prod", "a", 1);
        let e = ring.seal(b"secret", &aad).unwrap();
        ring.rotate();
        let blob = uk.wrap_keyring(&ring).unwrap();
        assert_eq!(blob[0], 1);
        let back = uk.unwrap_keyring(&blob).unwrap();
        assert_eq!(back.key_ids(), vec![1, 2]);
        assert_eq!(back.active_id(), 2);
        assert_eq!(back.hmac_key(), ring.hmac_key());
        assert_eq!(back.open(&e, &aad).unwrap().as_slice(), b"secret");
        // The blob does not contain the serialized ring in the clear.
        let plain = ring.to_bytes();
        assert!(!blob.windows(16).any(|w| plain.windows(16).any(|p| p == w)));
    }

    #[test]
    fn wrong_key_is_wrong_key() {
        let ring = Keyring::generate();
        let blob = UnsealKey::generate().wrap_keyring(&ring).unwrap();
        assert!(matches!(
            UnsealKey::generate().unwrap_keyring(&blob),
            Err(CryptoError::WrongKey)
        ));
    }

    #[test]
    fn tampered_blob_fails() {
        let uk = UnsealKey::generate();
        let blob = uk.wrap_keyring(&Keyring::generate()).unwrap();
        for i in 1..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x04;
            assert!(
                matches!(uk.unwrap_keyring(&t), Err(CryptoError::WrongKey)),
                "byte {i}"
            );
        }
        let mut t = blob.clone();
        t[0] = 2;
        assert!(matches!(uk.unwrap_keyring(&t), Err(CryptoError::Format(_))));
        for cut in 0..(1 + NONCE_LEN + TAG_LEN) {
            assert!(matches!(
                uk.unwrap_keyring(&blob[..cut]),
                Err(CryptoError::Format(_))
            ));
        }
        assert!(matches!(
            uk.unwrap_keyring(&blob[..blob.len() - 1]),
            Err(CryptoError::WrongKey)
        ));
    }

    #[test]
    fn fingerprint_is_short_stable_and_derived_as_documented() {
        let k = SecretKey::from_bytes(&[42u8; 32]).unwrap();
        let uk = UnsealKey::from_secret(k.clone());
        let fp = uk.fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        let mut input = b"steward-fp".to_vec();
        input.extend_from_slice(&[42u8; 32]);
        assert_eq!(fp, hex::encode(&sha256(&input)[..8]));
        assert_eq!(fp, UnsealKey::from_secret(k).fingerprint());
        assert_ne!(fp, UnsealKey::generate().fingerprint());
        assert!(!hex::encode([42u8; 32]).contains(&fp));
    }

    #[test]
    fn secret_accessor() {
        let k = SecretKey::generate();
        let uk = UnsealKey::from_secret(k.clone());
        assert_eq!(uk.secret(), &k);
    }

    #[test]
    fn debug_is_redacted() {
        let uk = UnsealKey::generate();
        let d = format!("{uk:?}");
        assert!(d.contains(&uk.fingerprint()));
        assert_redacted(&d, uk.secret());
        assert_redacted(&format!("{uk:#?}"), uk.secret());
    }
}
