//! Audit-log and token helpers: HMAC-SHA256 tags, the hash chain that links audit
//! entries, SHA-256, random tokens and constant-time comparison.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::SecretKey;

/// Domain-separation prefix of [`chain_hash`].
const AUDIT_CHAIN_PREFIX: &[u8] = b"steward-audit-v1";
/// SHA-256 block size: HMAC keys shorter than this are zero-padded to it.
const SHA256_BLOCK: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed with a 32-byte key, built without a fallible constructor.
///
/// RFC 2104 pads a key shorter than the hash's block size with zeros to the block
/// size, so keying with the zero-padded 64 bytes is exactly HMAC with the 32-byte
/// key (a unit test cross-checks this against `new_from_slice`).
fn mac(key: &SecretKey) -> HmacSha256 {
    let mut block = Zeroizing::new([0u8; SHA256_BLOCK]);
    block[..key.expose().len()].copy_from_slice(key.expose());
    <HmacSha256 as hmac::digest::KeyInit>::new((&*block).into())
}

/// `"hmac-sha256:" + hex(HMAC-SHA256(key, data))`.
pub fn hmac_hex(key: &SecretKey, data: &[u8]) -> String {
    let mut m = mac(key);
    m.update(data);
    format!("hmac-sha256:{}", hex::encode(m.finalize().into_bytes()))
}

/// Next link of the audit chain: `HMAC-SHA256(key, "steward-audit-v1" || prev || entry)`.
pub fn chain_hash(key: &SecretKey, prev: &[u8; 32], entry: &[u8]) -> [u8; 32] {
    let mut m = mac(key);
    m.update(AUDIT_CHAIN_PREFIX);
    m.update(prev);
    m.update(entry);
    m.finalize().into_bytes().into()
}

/// 32 bytes from the operating system's CSPRNG (for API tokens and the like).
pub fn random_token_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality of the contents (lengths are not secret: different
/// lengths return `false` at once).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    #[test]
    fn padded_key_matches_standard_hmac() {
        for seed in 0..8u8 {
            let k = SecretKey::from_bytes(&[seed.wrapping_mul(37).wrapping_add(1); 32]).unwrap();
            let data = vec![seed; seed as usize * 13];
            let mut m = mac(&k);
            m.update(&data);
            let ours: [u8; 32] = m.finalize().into_bytes().into();
            assert_eq!(ours, reference_hmac(k.expose(), &data));
        }
    }

    #[test]
    fn hmac_hex_format_and_value() {
        let k = SecretKey::generate();
        let h = hmac_hex(&k, b"entry");
        assert_eq!(
            h,
            format!(
                "hmac-sha256:{}",
                hex::encode(reference_hmac(k.expose(), b"entry"))
            )
        );
        assert_eq!(h.len(), "hmac-sha256:".len() + 64);
        assert_ne!(h, hmac_hex(&k, b"entrY"));
        assert_ne!(h, hmac_hex(&SecretKey::generate(), b"entry"));
    }

    #[test]
    fn chain_hash_is_hmac_of_concatenation() {
        let k = SecretKey::generate();
        let prev = [7u8; 32];
        let mut msg = b"steward-audit-v1".to_vec();
        msg.extend_from_slice(&prev);
        msg.extend_from_slice(b"{\"op\":\"read\"}");
        assert_eq!(
            chain_hash(&k, &prev, b"{\"op\":\"read\"}"),
            reference_hmac(k.expose(), &msg)
        );
    }

    #[test]
    fn chain_hash_depends_on_every_input() {
        let k = SecretKey::generate();
        let base = chain_hash(&k, &[0u8; 32], b"e");
        assert_ne!(base, chain_hash(&k, &[1u8; 32], b"e"));
        assert_ne!(base, chain_hash(&k, &[0u8; 32], b"f"));
        assert_ne!(base, chain_hash(&SecretKey::generate(), &[0u8; 32], b"e"));
        assert_eq!(base, chain_hash(&k, &[0u8; 32], b"e"));
        // A chain: each link depends on the previous one.
        let l1 = chain_hash(&k, &[0u8; 32], b"a");
        let l2 = chain_hash(&k, &l1, b"b");
        assert_ne!(l2, chain_hash(&k, &[0u8; 32], b"b"));
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(random_token_bytes(), random_token_bytes());
    }

    #[test]
    fn ct_eq_semantics() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
    }
}
