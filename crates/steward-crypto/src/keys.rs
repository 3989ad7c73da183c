//! [`SecretKey`]: 32 bytes of key material, kept in one heap allocation (so moving
//! the value never copies the key), wiped on drop, compared in constant time and
//! never shown by `Debug`.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CryptoError;

/// Length in bytes of every key in this crate.
pub const KEY_LEN: usize = 32;

/// Length of the padded standard base64 of a key.
const KEY_B64_LEN: usize = 44;

/// A 32-byte secret key. Zeroized on drop; `Debug` prints `[redacted]`.
pub struct SecretKey {
    // Boxed so that moves of a `SecretKey` move a pointer, not the key bytes, and
    // the only copy is the one wiped in `Drop`.
    bytes: Box<[u8; KEY_LEN]>,
}

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(&mut bytes[..]);
        Self { bytes }
    }

    /// Copies a key from `b`, which must be exactly 32 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        if b.len() != KEY_LEN {
            return Err(CryptoError::InvalidKeyLength {
                expected: KEY_LEN,
                actual: b.len(),
            });
        }
        let mut bytes = Box::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(b);
        Ok(Self { bytes })
    }

    /// The raw key bytes. Do not log or store them unencrypted.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Standard base64 (with padding, 44 characters), in a buffer wiped on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(KEY_B64_LEN));
        STANDARD.encode_string(&self.bytes[..], &mut out);
        out
    }

    /// Parses the output of [`SecretKey::to_base64`]. Surrounding whitespace is
    /// ignored. Errors never echo the input.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let s = s.trim();
        // Bound the work and the buffer: a key is 44 characters.
        let mut buf = Zeroizing::new([0u8; 3 * KEY_B64_LEN / 4 + 3]);
        if s.len() > KEY_B64_LEN + 4 {
            return Err(CryptoError::InvalidKeyLength {
                expected: KEY_LEN,
                actual: s.len() / 4 * 3,
            });
        }
        let n = STANDARD
            .decode_slice(s.as_bytes(), &mut buf[..])
            .map_err(|_| CryptoError::Format("key is not valid base64".into()))?;
        Self::from_bytes(&buf[..n])
    }
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&self.bytes[..]);
        Self { bytes }
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// Constant-time comparison.
impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        crate::ct_eq(&self.bytes[..], &other.bytes[..])
    }
}

impl Eq for SecretKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_redacted;

    #[test]
    fn generate_gives_distinct_nonzero_keys() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        assert_ne!(a, b);
        assert_ne!(a.expose(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn from_bytes_requires_exactly_32() {
        for len in [0, 1, 31, 33, 64] {
            let err = SecretKey::from_bytes(&vec![7u8; len]).unwrap_err();
            assert!(
                matches!(err, CryptoError::InvalidKeyLength { expected: 32, actual } if actual == len)
            );
        }
        let k = SecretKey::from_bytes(&[9u8; 32]).unwrap();
        assert_eq!(k.expose(), &[9u8; 32]);
    }

    #[test]
    fn base64_round_trip() {
        let k = SecretKey::generate();
        let s = k.to_base64();
        assert_eq!(s.len(), KEY_B64_LEN);
        let back = SecretKey::from_base64(&s).unwrap();
        assert_eq!(back.expose(), k.expose());
        // Whitespace around it (e.g. a pasted line) is tolerated.
        let padded = format!("  {}\n", s.as_str());
        assert_eq!(SecretKey::from_base64(&padded).unwrap(), k);
    }

    #[test]
    fn from_base64_rejects_bad_input() {
        assert!(matches!(
            SecretKey::from_base64("not base64 !!!"),
            Err(CryptoError::Format(_))
        ));
        // Valid base64 of 16 bytes: wrong length.
        let short = STANDARD.encode([1u8; 16]);
        assert!(matches!(
            SecretKey::from_base64(&short),
            Err(CryptoError::InvalidKeyLength { actual: 16, .. })
        ));
        let long = STANDARD.encode([1u8; 33]);
        assert!(matches!(
            SecretKey::from_base64(&long),
            Err(CryptoError::InvalidKeyLength { .. })
        ));
        let huge = "A".repeat(10_000);
        assert!(SecretKey::from_base64(&huge).is_err());
        assert!(SecretKey::from_base64("").is_err());
    }

    #[test]
    fn base64_error_does_not_echo_input() {
        let k = SecretKey::generate();
        let mut s = k.to_base64().to_string();
        s.push('!');
        let msg = SecretKey::from_base64(&s).unwrap_err().to_string();
        assert!(!msg.contains(&s[..40]), "{msg}");
    }

    #[test]
    fn clone_is_equal_and_independent() {
        let k = SecretKey::generate();
        let c = k.clone();
        assert_eq!(k, c);
        drop(k);
        assert_ne!(c.expose(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey::generate();
        let d = format!("{k:?}");
        assert_eq!(d, "SecretKey([redacted])");
        assert_redacted(&d, &k);
        assert_redacted(&format!("{k:#?}"), &k);
    }
}
