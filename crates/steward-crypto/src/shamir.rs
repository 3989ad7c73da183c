//! Shamir secret sharing of a [`SecretKey`] (k-of-n), for `steward init --shares N
//! --threshold K`. The GF(256) arithmetic comes from the `blahaj` crate (the
//! maintained fork of `sharks`); this module adds validation and a typo-resistant
//! text format.
//!
//! Share text: `"steward-share-v1-"` + base64url (no padding) of
//! `index (1 byte) || share bytes (32) || checksum (4)`, where the checksum is the
//! first 4 bytes of SHA-256 of the preceding 33 bytes. The threshold is not stored:
//! combining fewer shares than the threshold yields a wrong key, which the caller
//! notices when the keyring does not unwrap ([`crate::CryptoError::WrongKey`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use blahaj::{Share, Sharks};
use zeroize::Zeroizing;

use crate::keys::KEY_LEN;
use crate::{sha256, CryptoError, SecretKey};

/// Prefix of every share string.
pub const SHARE_PREFIX: &str = "steward-share-v1-";
/// Index byte + key-sized share value.
const SHARE_BODY_LEN: usize = 1 + KEY_LEN;
const CHECKSUM_LEN: usize = 4;
const SHARE_BYTES_LEN: usize = SHARE_BODY_LEN + CHECKSUM_LEN;
/// Length of the base64url (no padding) part of a share string.
const SHARE_B64_LEN: usize = (SHARE_BYTES_LEN * 4).div_ceil(3);

/// Splits `key` into `shares` share strings, any `threshold` of which rebuild it.
///
/// Requires `1 <= threshold <= shares` (so at most 255 shares). With `threshold ==
/// 1` every share is the key itself, merely encoded.
pub fn split_key(
    key: &SecretKey,
    shares: u8,
    threshold: u8,
) -> Result<Vec<Zeroizing<String>>, CryptoError> {
    if shares == 0 {
        return Err(CryptoError::InvalidParameters(
            "the number of shares must be at least 1".into(),
        ));
    }
    if threshold == 0 {
        return Err(CryptoError::InvalidParameters(
            "the threshold must be at least 1".into(),
        ));
    }
    if threshold > shares {
        return Err(CryptoError::InvalidParameters(format!(
            "the threshold ({threshold}) cannot exceed the number of shares ({shares}): the key could never be rebuilt"
        )));
    }
    let dealer = Sharks(threshold).dealer(&key.expose()[..]);
    let mut out = Vec::with_capacity(usize::from(shares));
    for share in dealer.take(usize::from(shares)) {
        out.push(encode_share(&share)?);
    }
    Ok(out)
}

fn encode_share(share: &Share) -> Result<Zeroizing<String>, CryptoError> {
    let body = Zeroizing::new(Vec::from(share));
    if body.len() != SHARE_BODY_LEN {
        return Err(CryptoError::InvalidParameters(format!(
            "internal error: share has {} bytes, expected {SHARE_BODY_LEN}",
            body.len()
        )));
    }
    let mut bytes = Zeroizing::new([0u8; SHARE_BYTES_LEN]);
    bytes[..SHARE_BODY_LEN].copy_from_slice(&body);
    bytes[SHARE_BODY_LEN..].copy_from_slice(&checksum(&body));
    let mut text = Zeroizing::new(String::with_capacity(SHARE_PREFIX.len() + SHARE_B64_LEN));
    text.push_str(SHARE_PREFIX);
    URL_SAFE_NO_PAD.encode_string(&bytes[..], &mut text);
    Ok(text)
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = sha256(body);
    [h[0], h[1], h[2], h[3]]
}

/// Parses one share string into `index || value` (33 bytes).
fn decode_share(s: &str) -> Result<Zeroizing<[u8; SHARE_BODY_LEN]>, String> {
    let s = s.trim();
    let Some(b64) = s.strip_prefix(SHARE_PREFIX) else {
        return Err(format!("it does not start with `{SHARE_PREFIX}`"));
    };
    if b64.len() != SHARE_B64_LEN {
        return Err(format!(
            "it has {} characters after the prefix, expected {SHARE_B64_LEN}; part of it may be missing or repeated",
            b64.len()
        ));
    }
    let mut bytes = Zeroizing::new([0u8; SHARE_B64_LEN]);
    let n = URL_SAFE_NO_PAD
        .decode_slice(b64.as_bytes(), &mut bytes[..])
        .map_err(|_| {
            "it contains characters that are not valid here; it was probably mistyped".to_string()
        })?;
    if n != SHARE_BYTES_LEN {
        return Err(format!(
            "it decodes to {n} bytes, expected {SHARE_BYTES_LEN}"
        ));
    }
    let (body, sum) = bytes[..SHARE_BYTES_LEN].split_at(SHARE_BODY_LEN);
    if !crate::ct_eq(&checksum(body), sum) {
        return Err("checksum mismatch: the share was probably mistyped".into());
    }
    if body[0] == 0 {
        return Err("share index 0 is invalid".into());
    }
    let mut out = Zeroizing::new([0u8; SHARE_BODY_LEN]);
    out.copy_from_slice(body);
    Ok(out)
}

/// Rebuilds a key from share strings made by [`split_key`]. Each share is checked
/// (prefix, encoding, checksum); duplicate or conflicting share indices are
/// rejected with [`CryptoError::BadShare`] naming the offending input position.
///
/// Fewer shares than the threshold produce a wrong key (inherent to Shamir); detect
/// it with [`crate::UnsealKey::unwrap_keyring`] returning `WrongKey`.
pub fn combine_shares(shares: &[&str]) -> Result<SecretKey, CryptoError> {
    if shares.is_empty() {
        return Err(CryptoError::InvalidParameters(
            "no shares were given".into(),
        ));
    }
    let mut parsed: Vec<Zeroizing<[u8; SHARE_BODY_LEN]>> = Vec::with_capacity(shares.len());
    for (index, s) in shares.iter().enumerate() {
        let body = decode_share(s).map_err(|reason| CryptoError::BadShare { index, reason })?;
        if let Some(prev) = parsed.iter().position(|p| p[0] == body[0]) {
            let reason = if crate::ct_eq(&parsed[prev][..], &body[..]) {
                format!("it is a duplicate of share {} of the input", prev + 1)
            } else {
                format!(
                    "it has the same share number ({}) as share {} of the input but different contents; the two come from different splits",
                    body[0],
                    prev + 1
                )
            };
            return Err(CryptoError::BadShare { index, reason });
        }
        parsed.push(body);
    }
    let blahaj_shares = parsed
        .iter()
        .map(|b| {
            Share::try_from(&b[..])
                .map_err(|e| CryptoError::InvalidParameters(format!("internal error: {e}")))
        })
        .collect::<Result<Vec<Share>, _>>()?;
    // At most 255 distinct non-zero indices exist, so this fits in a u8.
    let count = u8::try_from(blahaj_shares.len())
        .map_err(|_| CryptoError::InvalidParameters("too many shares".into()))?;
    let secret = Sharks(count)
        .recover(&blahaj_shares)
        .map(Zeroizing::new)
        .map_err(|e| CryptoError::InvalidParameters(e.to_string()))?;
    SecretKey::from_bytes(&secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn combos(n: usize, k: usize) -> Vec<Vec<usize>> {
        fn rec(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if cur.len() == k {
                out.push(cur.clone());
                return;
            }
            for i in start..n {
                cur.push(i);
                rec(i + 1, n, k, cur, out);
                cur.pop();
            }
        }
        let mut out = Vec::new();
        rec(0, n, k, &mut Vec::new(), &mut out);
        out
    }

    fn pick<'a>(shares: &'a [Zeroizing<String>], idx: &[usize]) -> Vec<&'a str> {
        idx.iter().map(|&i| shares[i].as_str()).collect()
    }

    #[test]
    fn share_format() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        for (i, s) in shares.iter().enumerate() {
            assert!(s.starts_with(SHARE_PREFIX));
            assert_eq!(s.len(), SHARE_PREFIX.len() + SHARE_B64_LEN);
            let raw = URL_SAFE_NO_PAD.decode(&s[SHARE_PREFIX.len()..]).unwrap();
            assert_eq!(raw.len(), 37);
            assert_eq!(usize::from(raw[0]), i + 1);
            assert_eq!(&raw[33..], &sha256(&raw[..33])[..4]);
        }
    }

    #[test]
    fn three_of_five_any_three_or_more_reconstruct() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 5, 3).unwrap();
        for k in 3..=5 {
            for c in combos(5, k) {
                let mut picked = pick(&shares, &c);
                assert_eq!(combine_shares(&picked).unwrap(), key, "{c:?}");
                picked.reverse();
                assert_eq!(combine_shares(&picked).unwrap(), key, "reversed {c:?}");
            }
        }
    }

    #[test]
    fn two_of_three_of_five_give_a_different_key() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 5, 3).unwrap();
        for c in combos(5, 2) {
            assert_ne!(combine_shares(&pick(&shares, &c)).unwrap(), key, "{c:?}");
        }
        for s in &shares {
            assert_ne!(combine_shares(&[s.as_str()]).unwrap(), key);
        }
    }

    #[test]
    fn single_share_does_not_reveal_key_bytes() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 5, 3).unwrap();
        for s in &shares {
            let raw = URL_SAFE_NO_PAD.decode(&s[SHARE_PREFIX.len()..]).unwrap();
            assert_ne!(&raw[1..33], &key.expose()[..]);
        }
    }

    #[test]
    fn threshold_one_and_edge_counts() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 3, 1).unwrap();
        for s in &shares {
            assert_eq!(combine_shares(&[s.as_str()]).unwrap(), key);
        }
        let one = split_key(&key, 1, 1).unwrap();
        assert_eq!(combine_shares(&[one[0].as_str()]).unwrap(), key);
        let all = split_key(&key, 255, 255).unwrap();
        let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(combine_shares(&refs).unwrap(), key);
        assert_ne!(combine_shares(&refs[..254]).unwrap(), key);
    }

    #[test]
    fn invalid_parameters() {
        let key = SecretKey::generate();
        for (n, k) in [(0, 0), (5, 0), (0, 1), (3, 4), (1, 2)] {
            let err = split_key(&key, n, k).unwrap_err();
            assert!(
                matches!(err, CryptoError::InvalidParameters(_)),
                "({n},{k})"
            );
        }
        assert!(matches!(
            combine_shares(&[]),
            Err(CryptoError::InvalidParameters(_))
        ));
    }

    fn bad_share_reason(shares: &[&str]) -> (usize, String) {
        match combine_shares(shares) {
            Err(CryptoError::BadShare { index, reason }) => (index, reason),
            other => panic!("expected BadShare, got {other:?}"),
        }
    }

    #[test]
    fn mistyped_share_caught_by_checksum() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 5, 3).unwrap();
        // Change one character in the middle to another valid base64url character.
        for pos in [
            SHARE_PREFIX.len() + 3,
            SHARE_PREFIX.len() + 20,
            SHARE_PREFIX.len() + 40,
        ] {
            let mut chars: Vec<char> = shares[1].chars().collect();
            chars[pos] = if chars[pos] == 'A' { 'B' } else { 'A' };
            let typo: String = chars.into_iter().collect();
            let (index, reason) =
                bad_share_reason(&[shares[0].as_str(), &typo, shares[2].as_str()]);
            assert_eq!(index, 1);
            assert!(reason.contains("checksum"), "{reason}");
        }
        // Swapped adjacent characters are caught too.
        let mut chars: Vec<char> = shares[0].chars().collect();
        let p = SHARE_PREFIX.len() + 10;
        if chars[p] == chars[p + 1] {
            chars[p] = if chars[p] == 'A' { 'B' } else { 'A' };
        } else {
            chars.swap(p, p + 1);
        }
        let typo: String = chars.into_iter().collect();
        let (index, _) = bad_share_reason(&[&typo, shares[1].as_str(), shares[2].as_str()]);
        assert_eq!(index, 0);
    }

    #[test]
    fn malformed_shares_rejected() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 3, 2).unwrap();
        let good = shares[0].as_str();
        let cases: Vec<String> = vec![
            String::new(),
            "hello".into(),
            good.replace("steward-share-v1-", "steward-share-v2-"),
            good[..good.len() - 1].to_string(),
            format!("{good}A"),
            format!("{}!{}", &good[..30], &good[31..]),
            // Index 0 with a valid checksum.
            {
                let mut body = vec![0u8; 33];
                body[1] = 5;
                let sum = sha256(&body);
                body.extend_from_slice(&sum[..4]);
                format!("{SHARE_PREFIX}{}", URL_SAFE_NO_PAD.encode(&body))
            },
        ];
        for c in &cases {
            let (index, reason) = bad_share_reason(&[shares[1].as_str(), c]);
            assert_eq!(index, 1, "{c}");
            assert!(!reason.is_empty());
            let msg = CryptoError::BadShare { index, reason }.to_string();
            assert!(msg.starts_with("share 2 of the input is invalid"), "{msg}");
        }
        // Whitespace around a share (copy-paste) is fine.
        let padded = format!("  {good}\n");
        assert_eq!(combine_shares(&[&padded, shares[1].as_str()]).unwrap(), key);
    }

    #[test]
    fn duplicate_and_conflicting_shares_rejected() {
        let key = SecretKey::generate();
        let shares = split_key(&key, 5, 3).unwrap();
        let (index, reason) =
            bad_share_reason(&[shares[0].as_str(), shares[1].as_str(), shares[0].as_str()]);
        assert_eq!(index, 2);
        assert!(reason.contains("duplicate of share 1"), "{reason}");

        let other = split_key(&SecretKey::generate(), 5, 3).unwrap();
        let (index, reason) =
            bad_share_reason(&[shares[0].as_str(), shares[1].as_str(), other[1].as_str()]);
        assert_eq!(index, 2);
        assert!(reason.contains("different splits"), "{reason}");
    }
}
