//! Thin AES-256-GCM helpers used by the keyring and the unseal key: 96-bit random
//! nonces, plaintexts returned in buffers that are wiped on drop.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::rngs::OsRng;
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::{CryptoError, SecretKey};

/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;

/// A fresh random nonce. With random 96-bit nonces a single key stays well within
/// the NIST bound (2^32 messages) for any realistic number of secrets.
pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut n);
    n
}

fn cipher(key: &SecretKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.expose()[..]))
}

/// Encrypts `msg`; returns `ciphertext || tag`.
pub(crate) fn encrypt(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    msg: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    cipher(key)
        .encrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .map_err(|_| CryptoError::Encrypt("input too large for AES-GCM".into()))
}

/// Decrypts `ciphertext || tag`; `None` when authentication fails.
pub(crate) fn decrypt(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    ct: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if ct.len() < TAG_LEN {
        return None;
    }
    cipher(key)
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

/// Splits `nonce || ciphertext || tag` and decrypts it; `None` on any failure.
pub(crate) fn decrypt_prefixed(
    key: &SecretKey,
    blob: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, ct) = blob.split_at_checked(NONCE_LEN)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    decrypt(key, &nonce, ct, aad)
}

/// Encrypts `msg` under a fresh nonce; returns `nonce || ciphertext || tag`.
pub(crate) fn encrypt_prefixed(
    key: &SecretKey,
    msg: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce = random_nonce();
    let ct = encrypt(key, &nonce, msg, aad)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_failures() {
        let k = SecretKey::generate();
        let blob = encrypt_prefixed(&k, b"hello", b"aad").unwrap();
        assert_eq!(blob.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(
            decrypt_prefixed(&k, &blob, b"aad").unwrap().as_slice(),
            b"hello"
        );
        assert!(decrypt_prefixed(&k, &blob, b"other").is_none());
        assert!(decrypt_prefixed(&SecretKey::generate(), &blob, b"aad").is_none());
        for cut in 0..blob.len() {
            assert!(decrypt_prefixed(&k, &blob[..cut], b"aad").is_none());
        }
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(random_nonce(), random_nonce());
    }
}
