//! restic's cryptography: AES-256-CTR encryption authenticated with Poly1305-AES,
//! and the scrypt key derivation used by key files.
//!
//! Every encrypted object is `IV (16 bytes) || ciphertext || MAC (16 bytes)`. The
//! MAC is Poly1305 over the ciphertext with the one-time key `r || AES-128_k(IV)`,
//! where `k` and `r` are the two halves of the MAC key (Poly1305 clamps `r`). The
//! MAC is checked (in constant time) before anything is decrypted.

use std::fmt;

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use base64::Engine as _;
use poly1305::Poly1305;
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Bytes of IV in front of every ciphertext.
pub const IV_LEN: usize = 16;
/// Bytes of MAC after every ciphertext.
pub const MAC_LEN: usize = 16;
/// Total bytes an encryption adds to the plaintext.
pub const OVERHEAD: usize = IV_LEN + MAC_LEN;

/// Why a ciphertext was rejected. Callers turn this into [`crate::Error::Corrupt`]
/// naming the file, or into a wrong-password error for key files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// Shorter than IV + MAC.
    #[error("ciphertext is too short ({0} bytes, at least 32 needed)")]
    TooShort(usize),
    /// The MAC does not match: damaged, tampered with, or another key.
    #[error("message authentication failed (MAC mismatch)")]
    BadMac,
}

/// A set of restic keys: 32 bytes for AES-256-CTR and a 32-byte Poly1305-AES MAC
/// key (`k` for AES-128, `r` for Poly1305). Used both for the repository's master
/// key and for the key derived from a password. Wiped on drop; `Debug` prints no
/// key bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    encrypt: [u8; 32],
    mac_k: [u8; 16],
    mac_r: [u8; 16],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Clears the bits Poly1305 requires to be zero in `r` (what restic calls masking).
fn clamp_r(r: &mut [u8; 16]) {
    for i in [3, 7, 11, 15] {
        r[i] &= 15;
    }
    for i in [4, 8, 12] {
        r[i] &= 252;
    }
}

impl MasterKey {
    /// A fresh random key (for a new repository).
    pub fn random() -> Self {
        let mut k = MasterKey {
            encrypt: [0; 32],
            mac_k: [0; 16],
            mac_r: [0; 16],
        };
        let mut rng = rand::thread_rng();
        rng.fill_bytes(&mut k.encrypt);
        rng.fill_bytes(&mut k.mac_k);
        rng.fill_bytes(&mut k.mac_r);
        clamp_r(&mut k.mac_r);
        k
    }

    /// Builds a key from the 64 bytes scrypt derives: encryption key, then `k`, then `r`.
    pub(crate) fn from_kdf_output(b: &[u8; 64]) -> Self {
        let mut k = MasterKey {
            encrypt: [0; 32],
            mac_k: [0; 16],
            mac_r: [0; 16],
        };
        k.encrypt.copy_from_slice(&b[..32]);
        k.mac_k.copy_from_slice(&b[32..48]);
        k.mac_r.copy_from_slice(&b[48..64]);
        k
    }

    /// True when no part of the key is all zeroes (restic refuses such keys).
    pub fn is_valid(&self) -> bool {
        self.encrypt.iter().any(|b| *b != 0)
            && self.mac_k.iter().any(|b| *b != 0)
            && self.mac_r.iter().any(|b| *b != 0)
    }

    fn mac(&self, iv: &[u8], ciphertext: &[u8]) -> [u8; 16] {
        let aes = aes::Aes128::new((&self.mac_k).into());
        let mut s = aes::Block::clone_from_slice(iv);
        aes.encrypt_block(&mut s);
        let mut key = Zeroizing::new([0u8; 32]);
        key[..16].copy_from_slice(&self.mac_r);
        key[16..].copy_from_slice(&s);
        s.zeroize();
        let tag = Poly1305::new(poly1305::Key::from_slice(&key[..])).compute_unpadded(ciphertext);
        tag.into()
    }

    /// Encrypts `plaintext` with a fresh random IV: `IV || ciphertext || MAC`.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        let mut iv = [0u8; IV_LEN];
        rand::thread_rng().fill_bytes(&mut iv);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        let mut cipher = Aes256Ctr::new((&self.encrypt).into(), (&iv).into());
        cipher.apply_keystream(&mut out[IV_LEN..]);
        let tag = self.mac(&iv, &out[IV_LEN..]);
        out.extend_from_slice(&tag);
        out
    }

    /// Encrypts `buf[IV_LEN..IV_LEN + len]` where it lies: writes a fresh random IV
    /// before it and the MAC after it, and returns the sealed length
    /// (`IV_LEN + len + MAC_LEN`). `buf` must hold at least that many bytes.
    pub fn seal_in_place(&self, buf: &mut [u8], len: usize) -> usize {
        let total = IV_LEN + len + MAC_LEN;
        assert!(buf.len() >= total, "seal_in_place: buffer too small");
        let mut iv = [0u8; IV_LEN];
        rand::thread_rng().fill_bytes(&mut iv);
        buf[..IV_LEN].copy_from_slice(&iv);
        let body = &mut buf[IV_LEN..IV_LEN + len];
        let mut cipher = Aes256Ctr::new((&self.encrypt).into(), (&iv).into());
        cipher.apply_keystream(body);
        let tag = self.mac(&iv, body);
        buf[IV_LEN + len..total].copy_from_slice(&tag);
        total
    }

    /// Checks the MAC (constant time), then decrypts.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let mut out = data.to_vec();
        let plain = self.decrypt_in_place(&mut out)?;
        out.truncate(plain.end);
        out.drain(..plain.start);
        Ok(out)
    }

    /// Checks the MAC (constant time), then decrypts `IV || ciphertext || MAC` where it
    /// lies; returns where the plaintext is in `data`. Nothing is changed when the MAC
    /// does not match.
    pub fn decrypt_in_place(
        &self,
        data: &mut [u8],
    ) -> Result<std::ops::Range<usize>, DecryptError> {
        if data.len() < OVERHEAD {
            return Err(DecryptError::TooShort(data.len()));
        }
        let end = data.len() - MAC_LEN;
        let (head, tag) = data.split_at_mut(end);
        let (iv, ciphertext) = head.split_at_mut(IV_LEN);
        let expected = self.mac(iv, ciphertext);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(DecryptError::BadMac);
        }
        let iv_arr: [u8; IV_LEN] = (&*iv).try_into().expect("IV_LEN bytes");
        let mut cipher = Aes256Ctr::new((&self.encrypt).into(), (&iv_arr).into());
        cipher.apply_keystream(ciphertext);
        Ok(IV_LEN..end)
    }

    /// The JSON restic stores (encrypted) in key files:
    /// `{"mac":{"k":..,"r":..},"encrypt":..}` with base64 values.
    pub(crate) fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let b64 = |b: &[u8]| Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(b));
        let k = b64(&self.mac_k);
        let r = b64(&self.mac_r);
        let e = b64(&self.encrypt);
        let mut out = Zeroizing::new(Vec::with_capacity(128));
        out.extend_from_slice(b"{\"mac\":{\"k\":\"");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\",\"r\":\"");
        out.extend_from_slice(r.as_bytes());
        out.extend_from_slice(b"\"},\"encrypt\":\"");
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }

    /// Parses the JSON form; `None` when it is not a valid restic master key.
    pub(crate) fn from_json(json: &[u8]) -> Option<Self> {
        #[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
        struct MacJson {
            k: String,
            r: String,
        }
        #[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
        struct KeyJson {
            mac: MacJson,
            encrypt: String,
        }
        let parsed: KeyJson = serde_json::from_slice(json).ok()?;
        let dec = |s: &str| -> Option<Zeroizing<Vec<u8>>> {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .ok()
                .map(Zeroizing::new)
        };
        let k = dec(&parsed.mac.k)?;
        let r = dec(&parsed.mac.r)?;
        let e = dec(&parsed.encrypt)?;
        if k.len() != 16 || r.len() != 16 || e.len() != 32 {
            return None;
        }
        let mut key = MasterKey {
            encrypt: [0; 32],
            mac_k: [0; 16],
            mac_r: [0; 16],
        };
        key.encrypt.copy_from_slice(&e);
        key.mac_k.copy_from_slice(&k);
        key.mac_r.copy_from_slice(&r);
        key.is_valid().then_some(key)
    }
}

/// scrypt parameters of a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// CPU/memory cost; a power of two.
    pub n: u64,
    /// Block size.
    pub r: u32,
    /// Parallelism.
    pub p: u32,
}

impl Default for KdfParams {
    /// N=32768, r=8, p=1: 32 MiB of memory, in the range restic's own calibration
    /// picks.
    fn default() -> Self {
        KdfParams {
            n: 32768,
            r: 8,
            p: 1,
        }
    }
}

/// Most memory an scrypt run may need before a key file is refused (a hostile key
/// file could otherwise ask for terabytes).
pub const MAX_KDF_MEMORY: u64 = 1 << 30;
/// Most work (N * r * p) a key file may ask for.
pub const MAX_KDF_WORK: u64 = 1 << 26;

impl KdfParams {
    /// Checks the parameters are valid scrypt parameters and within sane bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.n < 2 || !self.n.is_power_of_two() {
            return Err(format!("scrypt N={} is not a power of two >= 2", self.n));
        }
        if self.r == 0 || self.p == 0 {
            return Err(format!(
                "scrypt r={} p={} must both be at least 1",
                self.r, self.p
            ));
        }
        let memory = 128u64
            .saturating_mul(self.n)
            .saturating_mul(u64::from(self.r));
        if memory > MAX_KDF_MEMORY {
            return Err(format!(
                "scrypt N={} r={} needs {} MiB of memory, more than the {} MiB allowed",
                self.n,
                self.r,
                memory >> 20,
                MAX_KDF_MEMORY >> 20
            ));
        }
        let work = self
            .n
            .saturating_mul(u64::from(self.r))
            .saturating_mul(u64::from(self.p));
        if work > MAX_KDF_WORK {
            return Err(format!(
                "scrypt N={} r={} p={} is too expensive (N*r*p above {})",
                self.n, self.r, self.p, MAX_KDF_WORK
            ));
        }
        Ok(())
    }

    /// Derives the 64-byte user key from a password with scrypt.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<MasterKey, String> {
        self.validate()?;
        let log_n = self.n.trailing_zeros() as u8;
        let params = scrypt::Params::new(log_n, self.r, self.p, 64)
            .map_err(|e| format!("invalid scrypt parameters: {e}"))?;
        let mut out = Zeroizing::new([0u8; 64]);
        scrypt::scrypt(password, salt, &params, &mut out[..])
            .map_err(|e| format!("scrypt failed: {e}"))?;
        Ok(MasterKey::from_kdf_output(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_in_place_matches_encrypt_and_opens_in_place() {
        let k = MasterKey::random();
        let mut buf = vec![0u8; IV_LEN + 5 + MAC_LEN + 7];
        buf[IV_LEN..IV_LEN + 5].copy_from_slice(b"chunk");
        let n = k.seal_in_place(&mut buf, 5);
        assert_eq!(n, 5 + OVERHEAD);
        // What encrypt() would have made: decrypt() reads it.
        assert_eq!(k.decrypt(&buf[..n]).unwrap(), b"chunk");
        let mut copy = buf[..n].to_vec();
        let r = k.decrypt_in_place(&mut copy).unwrap();
        assert_eq!(&copy[r], b"chunk");
        // A flipped bit: refused, and the data left as it was.
        let mut bad = buf[..n].to_vec();
        bad[IV_LEN + 1] ^= 1;
        let before = bad.clone();
        assert!(matches!(
            k.decrypt_in_place(&mut bad),
            Err(DecryptError::BadMac)
        ));
        assert_eq!(bad, before);
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = MasterKey::random();
        let ct = k.encrypt(b"hello world");
        assert_eq!(ct.len(), 11 + OVERHEAD);
        assert_eq!(k.decrypt(&ct).unwrap(), b"hello world");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert_eq!(k.decrypt(&bad), Err(DecryptError::BadMac), "byte {i}");
        }
        assert_eq!(k.decrypt(&ct[..31]), Err(DecryptError::TooShort(31)));
        let other = MasterKey::random();
        assert_eq!(other.decrypt(&ct), Err(DecryptError::BadMac));
        let empty = k.encrypt(b"");
        assert_eq!(k.decrypt(&empty).unwrap(), b"");
    }

    #[test]
    fn json_round_trip_and_debug_redacted() {
        let k = MasterKey::random();
        let json = k.to_json();
        let back = MasterKey::from_json(&json).unwrap();
        let ct = k.encrypt(b"x");
        assert_eq!(back.decrypt(&ct).unwrap(), b"x");
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "MasterKey([redacted])");
        assert!(MasterKey::from_json(b"{}").is_none());
    }

    #[test]
    fn kdf_bounds() {
        assert!(KdfParams::default().validate().is_ok());
        assert!(KdfParams { n: 3, r: 8, p: 1 }.validate().is_err());
        assert!(KdfParams {
            n: 1 << 30,
            r: 8,
            p: 1
        }
        .validate()
        .is_err());
        assert!(KdfParams {
            n: 1024,
            r: 0,
            p: 1
        }
        .validate()
        .is_err());
    }
}
