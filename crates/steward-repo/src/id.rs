//! [`Id`]: the 32-byte SHA-256 that names every file and blob in a repository.
//!
//! Files are named by the hash of their stored (encrypted) bytes, blobs by the hash
//! of their plaintext. Ids print as 64 lower-case hex digits; the short form is the
//! first 8, as restic prints them.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::OnceLock;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 hash naming a file or a blob.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

/// An id string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {input:?}: expected 64 hexadecimal digits (a SHA-256)")]
pub struct ParseIdError {
    input: String,
}

impl Id {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// SHA-256 of `data`.
    pub fn hash(data: &[u8]) -> Id {
        Id(Sha256::digest(data).into())
    }

    /// A random id (used for the repository id).
    pub fn random() -> Id {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Id(b)
    }

    /// The 64-digit lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as restic shows ids.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// True for the all-zero id (never a real hash in practice).
    pub fn is_null(&self) -> bool {
        self.0 == [0u8; 32]
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Id, ParseIdError> {
        let err = || ParseIdError {
            input: s.chars().take(80).collect(),
        };
        if s.len() != 64 {
            return Err(err());
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| err())?;
        Ok(Id(b))
    }

    /// True when the hex form starts with `prefix` (case-insensitive).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let hex = self.to_hex();
        hex.starts_with(&prefix.to_ascii_lowercase())
    }
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Id::from_hex(s)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input.
        hex::encode_to_slice(self.0, &mut buf).map_err(serde::ser::Error::custom)?;
        s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-digit hex id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                Id::from_hex(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A fast hasher for maps keyed by [`Id`]: ids are already uniform hashes, so it
/// only folds the 32 bytes with a per-process random seed (the seed keeps crafted
/// ids in a hostile index from all landing in one bucket chain).
#[derive(Clone, Copy, Debug)]
pub struct IdBuildHasher {
    seed: u64,
}

impl Default for IdBuildHasher {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        IdBuildHasher {
            seed: *SEED.get_or_init(|| rand::thread_rng().next_u64() | 1),
        }
    }
}

/// The [`Hasher`] made by [`IdBuildHasher`].
#[derive(Debug)]
pub struct IdHasher {
    state: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            let v = u64::from_le_bytes(w);
            self.state = (self.state ^ v)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
}

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher { state: self.seed }
    }
}

/// A `HashMap` keyed by [`Id`] (or tuples containing one) with [`IdBuildHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuildHasher>;
/// A `HashSet` of ids with [`IdBuildHasher`].
pub type IdSet<K> = std::collections::HashSet<K, IdBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short_form() {
        let id = Id::hash(b"hello");
        let s = id.to_string();
        assert_eq!(
            s,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(id.short(), "2cf24dba");
        assert_eq!(s.parse::<Id>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<Id>().unwrap(), id);
        assert!("abc".parse::<Id>().is_err());
        assert!("zz".repeat(32).parse::<Id>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        assert!(id.has_prefix("2CF2"));
    }
}
