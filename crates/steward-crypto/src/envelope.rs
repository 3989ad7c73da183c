//! [`Envelope`]: one sealed value (data ciphertext + wrapped DEK), its compact
//! versioned binary encoding, and [`aad_for`], the associated data that binds a
//! secret's ciphertext to its environment, path and version.
//!
//! Binary layout, version 1 (all integers big-endian):
//!
//! ```text
//! u8      version = 1
//! u32     key_id
//! u32     len(wrapped_dek) = 60, then wrapped_dek (nonce 12 || DEK ct 32 || tag 16)
//! [u8;12] nonce
//! u32     len(ciphertext) >= 16, then ciphertext (ct || tag 16)
//! ```
//!
//! Nothing may follow. Anything else is rejected with [`CryptoError::Format`].

use crate::aead::{NONCE_LEN, TAG_LEN};
use crate::keys::KEY_LEN;
use crate::CryptoError;

/// Version byte of the binary encoding.
const ENVELOPE_VERSION: u8 = 1;

/// Size of a wrapped DEK: nonce || encrypted 32-byte key || tag.
pub(crate) const WRAPPED_DEK_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Domain-separation prefix of [`aad_for`].
const SECRET_AAD_PREFIX: &[u8] = b"steward-secret-v1";

/// A sealed value. Produced by [`crate::Keyring::seal`], opened by
/// [`crate::Keyring::open`]. Holds no secret in the clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Id of the keyring key that wrapped the DEK.
    pub key_id: u32,
    /// `nonce || ciphertext || tag` of the DEK under keyring key `key_id`.
    pub wrapped_dek: Vec<u8>,
    /// Nonce of the data ciphertext.
    pub nonce: [u8; 12],
    /// `ciphertext || tag` of the data under the DEK.
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// Compact versioned binary encoding (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            1 + 4 + 4 + self.wrapped_dek.len() + NONCE_LEN + 4 + self.ciphertext.len(),
        );
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&self.key_id.to_be_bytes());
        put_field(&mut out, &self.wrapped_dek);
        out.extend_from_slice(&self.nonce);
        put_field(&mut out, &self.ciphertext);
        out
    }

    /// Parses [`Envelope::to_bytes`] output. Truncated, oversized, trailing or
    /// otherwise malformed input gives [`CryptoError::Format`]; never panics.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader { rest: b };
        let version = r.take_array::<1>("version")?[0];
        if version != ENVELOPE_VERSION {
            return Err(CryptoError::Format(format!(
                "unsupported envelope version {version} (this build reads version {ENVELOPE_VERSION})"
            )));
        }
        let key_id = u32::from_be_bytes(r.take_array::<4>("key id")?);
        let wrapped_dek = r.take_field("wrapped DEK")?;
        if wrapped_dek.len() != WRAPPED_DEK_LEN {
            return Err(CryptoError::Format(format!(
                "wrapped DEK is {} bytes, expected {WRAPPED_DEK_LEN}",
                wrapped_dek.len()
            )));
        }
        let nonce = r.take_array::<NONCE_LEN>("nonce")?;
        let ciphertext = r.take_field("ciphertext")?;
        if ciphertext.len() < TAG_LEN {
            return Err(CryptoError::Format(format!(
                "ciphertext is {} bytes, shorter than the {TAG_LEN}-byte tag",
                ciphertext.len()
            )));
        }
        if !r.rest.is_empty() {
            return Err(CryptoError::Format(format!(
                "{} unexpected trailing bytes after the envelope",
                r.rest.len()
            )));
        }
        Ok(Self {
            key_id,
            wrapped_dek: wrapped_dek.to_vec(),
            nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields longer than u32::MAX cannot come out of `Keyring::seal` (it refuses such
    // plaintexts). Should a hand-built one get here, the saturated length makes the
    // encoding fail to parse instead of panicking.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// Bounds-checked cursor over the input.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CryptoError> {
        match self.rest.split_at_checked(n) {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(head)
            }
            None => Err(CryptoError::Format(format!(
                "envelope truncated: {what} needs {n} bytes, {} left",
                self.rest.len()
            ))),
        }
    }

    fn take_array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CryptoError> {
        let s = self.take(N, what)?;
        // `take` returned exactly N bytes, so this conversion cannot fail.
        s.try_into()
            .map_err(|_| CryptoError::Format(format!("envelope {what} has the wrong size")))
    }

    fn take_field(&mut self, what: &str) -> Result<&'a [u8], CryptoError> {
        let len = u32::from_be_bytes(self.take_array::<4>(what)?);
        let len = usize::try_from(len)
            .map_err(|_| CryptoError::Format(format!("envelope {what} length too large")))?;
        self.take(len, what)
    }
}

/// The associated data for a secret value: binds a sealed value to its environment,
/// path and version so a ciphertext cannot be replayed elsewhere.
///
/// Encoding: `b"steward-secret-v1" || u64 len(env) || env || u64 len(path) || path ||
/// u64 version`, integers big-endian. Length prefixes make it injective.
pub fn aad_for(env: &str, path: &str, version: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(SECRET_AAD_PREFIX.len() + 8 + env.len() + 8 + path.len() + 8);
    out.extend_from_slice(SECRET_AAD_PREFIX);
    out.extend_from_slice(&(env.len() as u64).to_be_bytes());
    out.extend_from_slice(env.as_bytes());
    out.extend_from_slice(&(path.len() as u64).to_be_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            key_id: 0x0102_0304,
            wrapped_dek: (0..WRAPPED_DEK_LEN as u8).collect(),
            nonce: [0xAB; 12],
            ciphertext: vec![0xCD; 40],
        }
    }

    #[test]
    fn encoding_layout_is_stable() {
        let b = sample().to_bytes();
        assert_eq!(b.len(), 1 + 4 + 4 + 60 + 12 + 4 + 40);
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..5], &[1, 2, 3, 4]);
        assert_eq!(&b[5..9], &60u32.to_be_bytes());
        assert_eq!(&b[69..81], &[0xAB; 12]);
        assert_eq!(&b[81..85], &40u32.to_be_bytes());
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(Envelope::from_bytes(&e.to_bytes()).unwrap(), e);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let b = sample().to_bytes();
        for cut in 0..b.len() {
            assert!(
                matches!(Envelope::from_bytes(&b[..cut]), Err(CryptoError::Format(_))),
                "prefix of length {cut} accepted"
            );
        }
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut b = sample().to_bytes();
        b.push(0);
        assert!(matches!(
            Envelope::from_bytes(&b),
            Err(CryptoError::Format(_))
        ));
    }

    #[test]
    fn bad_version_rejected() {
        let mut b = sample().to_bytes();
        for v in [0u8, 2, 0xFF] {
            b[0] = v;
            let err = Envelope::from_bytes(&b).unwrap_err();
            assert!(err.to_string().contains("version"), "{err}");
        }
    }

    #[test]
    fn bad_field_lengths_rejected() {
        let mut e = sample();
        e.wrapped_dek.pop();
        assert!(matches!(
            Envelope::from_bytes(&e.to_bytes()),
            Err(CryptoError::Format(_))
        ));
        let mut e = sample();
        e.ciphertext.truncate(15);
        assert!(matches!(
            Envelope::from_bytes(&e.to_bytes()),
            Err(CryptoError::Format(_))
        ));
        // A length prefix that claims more than is there.
        let mut b = sample().to_bytes();
        b[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Envelope::from_bytes(&b),
            Err(CryptoError::Format(_))
        ));
    }

    #[test]
    fn aad_has_prefix_and_is_unambiguous() {
        let a = aad_for("prod", "db/password", 3);
        assert!(a.starts_with(b"steward-secret-v1"));
        assert_ne!(aad_for("ab", "c", 1), aad_for("a", "bc", 1));
        assert_ne!(aad_for("prod", "x", 1), aad_for("prod", "x", 2));
        assert_ne!(aad_for("prod", "x", 1), aad_for("staging", "x", 1));
        assert_ne!(aad_for("prod", "x", 1), aad_for("prod", "y", 1));
        assert_eq!(aad_for("prod", "x", 1), aad_for("prod", "x", 1));
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        (
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), WRAPPED_DEK_LEN),
            any::<[u8; 12]>(),
            proptest::collection::vec(any::<u8>(), TAG_LEN..300),
        )
            .prop_map(|(key_id, wrapped_dek, nonce, ciphertext)| Envelope {
                key_id,
                wrapped_dek,
                nonce,
                ciphertext,
            })
    }

    proptest! {
        #[test]
        fn from_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Envelope::from_bytes(&b);
        }

        #[test]
        fn from_bytes_never_panics_near_valid(e in arb_envelope(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let mut b = e.to_bytes();
            let i = pos % b.len();
            b[i] = byte;
            b.truncate(cut % (b.len() + 1));
            if let Ok(parsed) = Envelope::from_bytes(&b) {
                // Whatever parses must re-encode to exactly the same bytes.
                prop_assert_eq!(parsed.to_bytes(), b);
            }
        }

        #[test]
        fn round_trip_any(e in arb_envelope()) {
            prop_assert_eq!(Envelope::from_bytes(&e.to_bytes()).unwrap(), e);
        }

        #[test]
        fn aad_injective(e1 in ".{0,8}", p1 in ".{0,8}", v1 in 0u64..4, e2 in ".{0,8}", p2 in ".{0,8}", v2 in 0u64..4) {
            prop_assert_eq!(aad_for(&e1, &p1, v1) == aad_for(&e2, &p2, v2), (e1, p1, v1) == (e2, p2, v2));
        }
    }
}
