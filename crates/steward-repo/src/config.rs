//! The repository `config` file and restic's chunker polynomial.
//!
//! The config is `{"version":2,"id":"<64 hex>","chunker_polynomial":"<hex>"}`,
//! encrypted with the master key and never compressed. restic refuses a config whose
//! polynomial is not an irreducible polynomial over GF(2), so a new repository gets
//! a random irreducible polynomial of degree 53, chosen the way restic does. (This
//! crate chunks with FastCDC and does not otherwise use the polynomial.)

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The repository format versions this crate reads. It writes version 2.
pub const SUPPORTED_VERSIONS: [u32; 2] = [1, 2];

/// The decrypted config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format version (1 or 2).
    pub version: u32,
    /// Random repository id, 64 hex digits.
    pub id: String,
    /// restic's Rabin chunker polynomial, in hex.
    pub chunker_polynomial: String,
}

impl Config {
    /// A fresh version-2 config with a random id and polynomial.
    pub fn new_v2() -> Self {
        Config {
            version: 2,
            id: crate::id::Id::random().to_hex(),
            chunker_polynomial: format!("{:x}", random_irreducible_polynomial()),
        }
    }

    /// The polynomial as a number, if it parses.
    pub fn polynomial(&self) -> Option<u64> {
        u64::from_str_radix(&self.chunker_polynomial, 16).ok()
    }

    /// True when blobs and unpacked files may be compressed (version 2).
    pub fn compression_allowed(&self) -> bool {
        self.version >= 2
    }
}

fn degree(x: u128) -> i32 {
    127 - x.leading_zeros() as i32
}

/// `x mod m` over GF(2).
fn pol_mod(mut x: u128, m: u64) -> u64 {
    let m = u128::from(m);
    let dm = degree(m);
    if dm < 0 {
        return 0;
    }
    while degree(x) >= dm {
        x ^= m << (degree(x) - dm);
    }
    x as u64
}

/// Carry-less product of two polynomials.
fn clmul(a: u64, b: u64) -> u128 {
    let mut r = 0u128;
    let a = u128::from(a);
    for i in 0..64 {
        if b >> i & 1 == 1 {
            r ^= a << i;
        }
    }
    r
}

fn mulmod(a: u64, b: u64, m: u64) -> u64 {
    pol_mod(clmul(a, b), m)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let r = pol_mod(u128::from(a), b);
        a = b;
        b = r;
    }
    a
}

/// `(x^(2^p) - x) mod g`.
fn qp(p: u32, g: u64) -> u64 {
    let mut res: u64 = 2;
    for _ in 0..p {
        res = mulmod(res, res, g);
    }
    pol_mod(u128::from(res ^ 2), g)
}

/// Ben-Or's irreducibility test, as restic's chunker applies it.
pub fn is_irreducible(f: u64) -> bool {
    let d = degree(u128::from(f));
    if d < 1 {
        return false;
    }
    for i in 1..=(d / 2) as u32 {
        if gcd(f, qp(i, f)) != 1 {
            return false;
        }
    }
    true
}

/// A random irreducible polynomial of degree 53.
pub fn random_irreducible_polynomial() -> u64 {
    let mut rng = rand::thread_rng();
    loop {
        let f = (rng.next_u64() & ((1 << 54) - 1)) | (1 << 53) | 1;
        if is_irreducible(f) {
            return f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irreducibility() {
        assert!(is_irreducible(0b111)); // x^2+x+1
        assert!(!is_irreducible(0b101)); // (x+1)^2
        assert!(is_irreducible(0b1011)); // x^3+x+1
        assert!(!is_irreducible(0b1111)); // x^3+x^2+x+1 = (x+1)^3
                                          // The polynomial from restic's design document.
        assert!(is_irreducible(0x25b468838dcb75));
        let p = random_irreducible_polynomial();
        assert_eq!(degree(u128::from(p)), 53);
        assert!(is_irreducible(p));
        assert!(!is_irreducible(clmul(0b111, 0b1011) as u64));
    }
}
