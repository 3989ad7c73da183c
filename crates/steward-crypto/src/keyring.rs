//! [`Keyring`]: the AES-256-GCM root keys (by `u32` id, one active) that wrap the
//! per-value data-encryption keys, plus the audit HMAC key; envelope sealing,
//! opening and re-wrapping; versioned serialization.
//!
//! Sealing: a fresh random 32-byte DEK encrypts the plaintext (random nonce, the
//! caller's AAD). The DEK is then encrypted with the active root key under
//! `b"steward-dek-v1" || key_id (u32 BE) || aad`. Both layers are bound to the
//! caller's AAD, so neither the data ciphertext nor the wrapped DEK can be moved to
//! another row, environment, path or version.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::aead::{self, TAG_LEN};
use crate::envelope::WRAPPED_DEK_LEN;
use crate::{CryptoError, Envelope, SecretKey};

/// Domain-separation prefix of the DEK-wrapping AAD.
const DEK_AAD_PREFIX: &[u8] = b"steward-dek-v1";
/// `format` field of the serialized keyring.
const KEYRING_FORMAT: &str = "steward-keyring";
/// Serialization version.
const KEYRING_VERSION: u32 = 1;
/// Largest plaintext `seal` accepts: its ciphertext length must fit the envelope's
/// u32 length prefix.
const MAX_PLAINTEXT: usize = u32::MAX as usize - TAG_LEN;

/// The data-encryption keyring. Every key in it is wiped on drop; `Debug` shows ids
/// only.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<u32, SecretKey>,
    active: u32,
    hmac: SecretKey,
}

impl Keyring {
    /// A new ring: one fresh key with id 1 (active) and a fresh HMAC key.
    pub fn generate() -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(1, SecretKey::generate());
        Self {
            keys,
            active: 1,
            hmac: SecretKey::generate(),
        }
    }

    /// Id of the key that [`Keyring::seal`] and [`Keyring::rewrap`] use.
    pub fn active_id(&self) -> u32 {
        self.active
    }

    /// All key ids, ascending.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Adds a fresh key with id `max + 1`, makes it active and returns its id.
    /// Older keys stay in the ring so existing envelopes still open.
    pub fn rotate(&mut self) -> u32 {
        let id = self.next_id();
        self.keys.insert(id, SecretKey::generate());
        self.active = id;
        id
    }

    fn next_id(&self) -> u32 {
        let max = self.keys.keys().next_back().copied().unwrap_or(0);
        match max.checked_add(1) {
            Some(id) => id,
            // Only reachable if a key with id u32::MAX exists: reuse the lowest free
            // id. (A ring cannot hold 2^32 keys, so one is always free.) An envelope
            // that still names a retired id then fails with Decrypt, not UnknownKey.
            None => (1..u32::MAX)
                .find(|id| !self.keys.contains_key(id))
                .unwrap_or(0),
        }
    }

    /// Removes a non-active key. Envelopes still wrapped with it will then fail to
    /// open with [`CryptoError::UnknownKey`], so [`Keyring::rewrap`] them first.
    pub fn retire(&mut self, id: u32) -> Result<(), CryptoError> {
        if id == self.active {
            return Err(CryptoError::ActiveKey(id));
        }
        match self.keys.remove(&id) {
            Some(_) => Ok(()),
            None => Err(CryptoError::UnknownKey(id)),
        }
    }

    /// The audit HMAC key: generated with the ring, kept across [`Keyring::rotate`].
    pub fn hmac_key(&self) -> &SecretKey {
        &self.hmac
    }

    fn active_key(&self) -> Result<&SecretKey, CryptoError> {
        // The invariant "active is in keys" is kept by every constructor and by
        // `retire`; report rather than panic should it ever break.
        self.keys
            .get(&self.active)
            .ok_or(CryptoError::UnknownKey(self.active))
    }

    /// Encrypts `plaintext` under a fresh DEK bound to `aad` (see [`crate::aad_for`])
    /// and wraps the DEK with the active key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Envelope, CryptoError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(CryptoError::InvalidParameters(format!(
                "plaintext of {} bytes is too large to seal (limit {MAX_PLAINTEXT})",
                plaintext.len()
            )));
        }
        let dek = SecretKey::generate();
        let nonce = aead::random_nonce();
        let ciphertext = aead::encrypt(&dek, &nonce, plaintext, aad)?;
        let wrapped_dek = self.wrap_dek(&dek, aad)?;
        Ok(Envelope {
            key_id: self.active,
            wrapped_dek,
            nonce,
            ciphertext,
        })
    }

    /// Decrypts an envelope sealed with `aad`. [`CryptoError::UnknownKey`] if its key
    /// id is not in the ring; [`CryptoError::Decrypt`] on any tampering or AAD mismatch.
    pub fn open(&self, env: &Envelope, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let dek = self.unwrap_dek(env, aad)?;
        aead::decrypt(&dek, &env.nonce, &env.ciphertext, aad).ok_or(CryptoError::Decrypt)
    }

    /// Re-wraps the envelope's DEK under the active key; the data ciphertext and nonce
    /// are untouched. Use after [`Keyring::rotate`], before retiring the old key.
    pub fn rewrap(&self, env: &Envelope, aad: &[u8]) -> Result<Envelope, CryptoError> {
        let dek = self.unwrap_dek(env, aad)?;
        Ok(Envelope {
            key_id: self.active,
            wrapped_dek: self.wrap_dek(&dek, aad)?,
            nonce: env.nonce,
            ciphertext: env.ciphertext.clone(),
        })
    }

    fn wrap_dek(&self, dek: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.active_key()?;
        aead::encrypt_prefixed(key, &dek.expose()[..], &dek_aad(self.active, aad))
    }

    fn unwrap_dek(&self, env: &Envelope, aad: &[u8]) -> Result<SecretKey, CryptoError> {
        let key = self
            .keys
            .get(&env.key_id)
            .ok_or(CryptoError::UnknownKey(env.key_id))?;
        if env.wrapped_dek.len() != WRAPPED_DEK_LEN {
            return Err(CryptoError::Decrypt);
        }
        let dek = aead::decrypt_prefixed(key, &env.wrapped_dek, &dek_aad(env.key_id, aad))
            .ok_or(CryptoError::Decrypt)?;
        SecretKey::from_bytes(&dek).map_err(|_| CryptoError::Decrypt)
    }

    /// Versioned serialization (JSON, keys in base64). The result holds every key in
    /// the clear: encrypt it with [`crate::UnsealKey::wrap_keyring`] before storing.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let doc = KeyringDoc {
            format: KEYRING_FORMAT.to_owned(),
            version: KEYRING_VERSION,
            active: self.active,
            hmac_key: self.hmac.to_base64().to_string(),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| KeyDoc {
                    id: *id,
                    key: k.to_base64().to_string(),
                })
                .collect(),
        };
        // Pre-size so the buffer never reallocates (which would leave stray copies of
        // key text in freed memory). ~70 bytes per key plus the header.
        let mut out = Zeroizing::new(Vec::with_capacity(256 + 96 * doc.keys.len()));
        // Serializing plain strings and integers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, &doc).is_err() {
            out.clear();
        }
        out
    }

    /// Parses [`Keyring::to_bytes`] output. [`CryptoError::Format`] on anything
    /// malformed: bad JSON, unknown version, bad key, duplicate ids, active key missing.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        let doc: KeyringDocIn<'_> = serde_json::from_slice(b).map_err(|e| {
            CryptoError::Format(format!("keyring is not valid: {}", json_error_summary(&e)))
        })?;
        if doc.format != KEYRING_FORMAT {
            return Err(CryptoError::Format("not a steward keyring".into()));
        }
        if doc.version != KEYRING_VERSION {
            return Err(CryptoError::Format(format!(
                "unsupported keyring version {} (this build reads version {KEYRING_VERSION})",
                doc.version
            )));
        }
        let hmac = SecretKey::from_base64(doc.hmac_key)
            .map_err(|e| CryptoError::Format(format!("keyring HMAC key: {e}")))?;
        let mut keys = BTreeMap::new();
        for k in &doc.keys {
            let key = SecretKey::from_base64(k.key)
                .map_err(|e| CryptoError::Format(format!("keyring key {}: {e}", k.id)))?;
            if keys.insert(k.id, key).is_some() {
                return Err(CryptoError::Format(format!(
                    "keyring has key id {} twice",
                    k.id
                )));
            }
        }
        if !keys.contains_key(&doc.active) {
            return Err(CryptoError::Format(format!(
                "keyring's active key id {} is not among its keys",
                doc.active
            )));
        }
        Ok(Self {
            keys,
            active: doc.active,
            hmac,
        })
    }
}

/// `b"steward-dek-v1" || key_id (BE) || aad`: fixed-size fields first, so unambiguous.
fn dek_aad(key_id: u32, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DEK_AAD_PREFIX.len() + 4 + aad.len());
    out.extend_from_slice(DEK_AAD_PREFIX);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(aad);
    out
}

/// serde_json errors can quote input; keep only the category and position.
fn json_error_summary(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active_id", &self.active)
            .field("key_ids", &self.key_ids())
            .field("keys", &format_args!("[redacted]"))
            .finish()
    }
}

impl ZeroizeOnDrop for Keyring {}

#[derive(Serialize, Zeroize, ZeroizeOnDrop)]
struct KeyringDoc {
    format: String,
    version: u32,
    active: u32,
    hmac_key: String,
    keys: Vec<KeyDoc>,
}

#[derive(Serialize, Zeroize, ZeroizeOnDrop)]
struct KeyDoc {
    id: u32,
    key: String,
}

/// Borrowing twin of [`KeyringDoc`]: key text is decoded straight from the input
/// buffer (base64 never needs JSON escapes), so no extra copies are made.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringDocIn<'a> {
    #[serde(borrow)]
    format: &'a str,
    version: u32,
    active: u32,
    #[serde(borrow)]
    hmac_key: &'a str,
    #[serde(borrow)]
    keys: Vec<KeyDocIn<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyDocIn<'a> {
    id: u32,
    #[serde(borrow)]
    key: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aad_for;
    use crate::aead::NONCE_LEN;
    use crate::test_util::assert_redacted;

    fn aad() -> Vec<u8> {
        aad_for("prod", "db/password", 1)
    }

    #[test]
    fn generate_has_one_active_key() {
        let r = Keyring::generate();
        assert_eq!(r.active_id(), 1);
        assert_eq!(r.key_ids(), vec![1]);
        assert_ne!(r.hmac_key(), r.keys.get(&1).unwrap());
    }

    #[test]
    fn seal_open_round_trip() {
        let r = Keyring::generate();
        for pt in [&b""[..], b"x", b"hunter2", &[0u8; 5000][..]] {
            let e = r.seal(pt, &aad()).unwrap();
            assert_eq!(e.key_id, 1);
            assert_eq!(e.wrapped_dek.len(), WRAPPED_DEK_LEN);
            assert_eq!(e.ciphertext.len(), pt.len() + TAG_LEN);
            assert_eq!(r.open(&e, &aad()).unwrap().as_slice(), pt);
            // Also through the binary encoding.
            let back = Envelope::from_bytes(&e.to_bytes()).unwrap();
            assert_eq!(r.open(&back, &aad()).unwrap().as_slice(), pt);
        }
    }

    #[test]
    fn seal_is_randomized() {
        let r = Keyring::generate();
        let a = r.seal(b"same", &aad()).unwrap();
        let b = r.seal(b"same", &aad()).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_ne!(a.wrapped_dek, b.wrapped_dek);
        assert!(!a.ciphertext.windows(4).any(|w| w == b"same"));
    }

    #[test]
    fn tampering_any_byte_fails() {
        let r = Keyring::generate();
        let e = r.seal(b"top secret value", &aad()).unwrap();
        for i in 0..e.ciphertext.len() {
            let mut t = e.clone();
            t.ciphertext[i] ^= 0x01;
            assert!(
                matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)),
                "ct byte {i}"
            );
        }
        for i in 0..e.wrapped_dek.len() {
            let mut t = e.clone();
            t.wrapped_dek[i] ^= 0x80;
            assert!(
                matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)),
                "dek byte {i}"
            );
        }
        for i in 0..NONCE_LEN {
            let mut t = e.clone();
            t.nonce[i] ^= 0x01;
            assert!(
                matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)),
                "nonce byte {i}"
            );
        }
        let mut t = e.clone();
        t.ciphertext.pop();
        assert!(matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)));
        let mut t = e.clone();
        t.wrapped_dek.truncate(5);
        assert!(matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)));
        let mut t = e.clone();
        t.ciphertext.clear();
        assert!(matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)));
        // The untampered one still opens.
        assert_eq!(r.open(&e, &aad()).unwrap().as_slice(), b"top secret value");
    }

    #[test]
    fn wrong_aad_fails() {
        let r = Keyring::generate();
        let e = r.seal(b"v", &aad_for("prod", "db/password", 1)).unwrap();
        for other in [
            aad_for("staging", "db/password", 1),
            aad_for("prod", "db/passwore", 1),
            aad_for("prod", "db/password", 2),
            Vec::new(),
        ] {
            assert!(matches!(r.open(&e, &other), Err(CryptoError::Decrypt)));
        }
    }

    #[test]
    fn swapping_parts_between_envelopes_fails() {
        let r = Keyring::generate();
        let a = r.seal(b"alpha", &aad()).unwrap();
        let b = r.seal(b"bravo", &aad()).unwrap();
        // Same AAD: B's DEK does not decrypt A's data.
        let mut t = a.clone();
        t.wrapped_dek = b.wrapped_dek.clone();
        assert!(matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)));
        let mut t = a.clone();
        t.ciphertext = b.ciphertext.clone();
        t.nonce = b.nonce;
        assert!(matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)));

        // Different AAD: moving a whole wrapped DEK + ciphertext pair to another path
        // fails too, at the wrap layer.
        let other_aad = aad_for("prod", "other", 1);
        let c = r.seal(b"charlie", &other_aad).unwrap();
        let mut t = c.clone();
        t.wrapped_dek = a.wrapped_dek.clone();
        assert!(matches!(r.open(&t, &other_aad), Err(CryptoError::Decrypt)));
        assert!(matches!(r.open(&a, &other_aad), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn unknown_key_id() {
        let r = Keyring::generate();
        let mut e = r.seal(b"v", &aad()).unwrap();
        e.key_id = 99;
        assert!(matches!(
            r.open(&e, &aad()),
            Err(CryptoError::UnknownKey(99))
        ));
        // Another ring with the same id but another key cannot open it.
        let e = r.seal(b"v", &aad()).unwrap();
        assert!(matches!(
            Keyring::generate().open(&e, &aad()),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn key_id_is_bound_into_the_wrap() {
        let mut r = Keyring::generate();
        let e = r.seal(b"v", &aad()).unwrap();
        r.rotate();
        // Relabel the envelope as if wrapped by key 2: must fail.
        let mut t = e.clone();
        t.key_id = 2;
        assert!(matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)));
        assert_eq!(r.open(&e, &aad()).unwrap().as_slice(), b"v");
    }

    #[test]
    fn key_id_is_in_the_wrap_aad_even_for_identical_keys() {
        // Same key material under two ids: only the AAD can tell them apart.
        let mut r = Keyring::generate();
        let k1 = r.keys.get(&1).unwrap().clone();
        r.keys.insert(2, k1);
        let e = r.seal(b"v", &aad()).unwrap();
        let mut t = e.clone();
        t.key_id = 2;
        assert!(matches!(r.open(&t, &aad()), Err(CryptoError::Decrypt)));
        assert_eq!(r.open(&e, &aad()).unwrap().as_slice(), b"v");
    }

    #[test]
    fn wrapped_dek_is_bound_to_the_aad() {
        // The data layer alone would also catch a moved envelope; check the wrap
        // layer on its own via rewrap, which never touches the data ciphertext.
        let r = Keyring::generate();
        let e = r.seal(b"v", &aad()).unwrap();
        assert!(matches!(
            r.rewrap(&e, &aad_for("prod", "db/password", 2)),
            Err(CryptoError::Decrypt)
        ));
        assert!(r.rewrap(&e, &aad()).is_ok());
    }

    #[test]
    fn rotate_adds_keys_and_keeps_hmac() {
        let mut r = Keyring::generate();
        let hmac_before = r.hmac_key().clone();
        let old = r.seal(b"old", &aad()).unwrap();
        assert_eq!(r.rotate(), 2);
        assert_eq!(r.rotate(), 3);
        assert_eq!(r.active_id(), 3);
        assert_eq!(r.key_ids(), vec![1, 2, 3]);
        assert_eq!(r.hmac_key(), &hmac_before);
        let new = r.seal(b"new", &aad()).unwrap();
        assert_eq!(new.key_id, 3);
        assert_eq!(r.open(&old, &aad()).unwrap().as_slice(), b"old");
        assert_eq!(r.open(&new, &aad()).unwrap().as_slice(), b"new");
        // Ids keep growing past retired ones.
        r.retire(1).unwrap();
        r.retire(2).unwrap();
        assert_eq!(r.rotate(), 4);
    }

    #[test]
    fn rotate_never_reuses_max_id_even_at_the_top() {
        let mut r = Keyring::generate();
        let k = r.keys.remove(&1).unwrap();
        r.keys.insert(u32::MAX, k);
        r.active = u32::MAX;
        let id = r.rotate();
        assert_ne!(id, u32::MAX);
        assert_eq!(r.key_ids().len(), 2);
        assert_eq!(r.active_id(), id);
    }

    #[test]
    fn retire_rules() {
        let mut r = Keyring::generate();
        assert!(matches!(r.retire(1), Err(CryptoError::ActiveKey(1))));
        assert!(matches!(r.retire(7), Err(CryptoError::UnknownKey(7))));
        r.rotate();
        r.retire(1).unwrap();
        assert_eq!(r.key_ids(), vec![2]);
        assert!(matches!(r.retire(1), Err(CryptoError::UnknownKey(1))));
    }

    #[test]
    fn rewrap_after_rotate_then_retire() {
        let mut r = Keyring::generate();
        let a = aad();
        let e1 = r.seal(b"payload", &a).unwrap();
        r.rotate();
        let e2 = r.rewrap(&e1, &a).unwrap();
        assert_eq!(e2.key_id, 2);
        assert_eq!(e2.ciphertext, e1.ciphertext);
        assert_eq!(e2.nonce, e1.nonce);
        assert_ne!(e2.wrapped_dek, e1.wrapped_dek);
        r.retire(1).unwrap();
        assert_eq!(r.open(&e2, &a).unwrap().as_slice(), b"payload");
        assert!(matches!(r.open(&e1, &a), Err(CryptoError::UnknownKey(1))));
        // Rewrap also checks the AAD.
        assert!(matches!(
            r.rewrap(&e2, &aad_for("x", "y", 1)),
            Err(CryptoError::Decrypt)
        ));
        // And a serialized-then-restored ring opens the rewrapped envelope.
        let r2 = Keyring::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(r2.open(&e2, &a).unwrap().as_slice(), b"payload");
    }

    #[test]
    fn serialization_round_trip() {
        let mut r = Keyring::generate();
        let e1 = r.seal(b"one", &aad()).unwrap();
        r.rotate();
        r.rotate();
        r.retire(2).unwrap();
        let e3 = r.seal(b"three", &aad()).unwrap();
        let bytes = r.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains("\"version\":1"), "{text}");
        let back = Keyring::from_bytes(&bytes).unwrap();
        assert_eq!(back.active_id(), 3);
        assert_eq!(back.key_ids(), vec![1, 3]);
        assert_eq!(back.hmac_key(), r.hmac_key());
        assert_eq!(back.open(&e1, &aad()).unwrap().as_slice(), b"one");
        assert_eq!(back.open(&e3, &aad()).unwrap().as_slice(), b"three");
    }

    #[test]
    fn from_bytes_rejects_bad_input() {
        let good = Keyring::generate();
        let text = String::from_utf8(good.to_bytes().to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let k = v["keys"][0]["key"].as_str().unwrap().to_owned();
        let h = v["hmac_key"].as_str().unwrap().to_owned();
        let cases = [
            String::new(),
            "garbage".to_owned(),
            "{}".to_owned(),
            text[..text.len() / 2].to_owned(),
            text.replace("\"version\":1", "\"version\":2"),
            text.replace("steward-keyring", "other"),
            text.replace("\"active\":1", "\"active\":5"),
            text.replace(&k, "AAAA"),
            text.replace(&h, "!!!"),
            format!(
                r#"{{"format":"steward-keyring","version":1,"active":1,"hmac_key":"{h}","keys":[{{"id":1,"key":"{k}"}},{{"id":1,"key":"{k}"}}]}}"#
            ),
            format!(
                r#"{{"format":"steward-keyring","version":1,"active":1,"hmac_key":"{h}","keys":[]}}"#
            ),
        ];
        for (i, c) in cases.iter().enumerate() {
            let err = Keyring::from_bytes(c.as_bytes()).unwrap_err();
            assert!(matches!(err, CryptoError::Format(_)), "case {i}: {err:?}");
            assert!(!err.to_string().contains(&k), "case {i} leaks key");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let mut r = Keyring::generate();
        r.rotate();
        let d = format!("{r:?}");
        assert!(d.contains("active_id: 2"), "{d}");
        for k in r.keys.values() {
            assert_redacted(&d, k);
        }
        assert_redacted(&d, r.hmac_key());
        assert_redacted(&format!("{r:#?}"), r.hmac_key());
    }
}
