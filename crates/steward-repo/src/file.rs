//! Unpacked files (config, index, snapshot and lock files) and compression.
//!
//! An unpacked file is `IV || ciphertext || MAC`. In repository version 2 the
//! plaintext starts with an encoding byte: `{` or `[` mean the whole plaintext is
//! JSON (version 1 style, and what restic uses for the config file), `0x02` means
//! the rest is a zstd frame holding the JSON. Unpacked files other than the config
//! are named by the SHA-256 of their stored bytes, which is checked on load.

use std::io::Read;

use crate::crypto::{DecryptError, MasterKey};
use crate::error::{Error, Result};

/// Encoding byte of zstd-compressed unpacked files.
pub const ENCODING_ZSTD: u8 = 2;

/// The largest decompressed unpacked file accepted (index files stay below 8 MiB
/// compressed; anything near this is hostile).
pub const MAX_UNPACKED: usize = 1 << 30;

/// Encrypts `json`, compressing it first when `level` is given.
pub(crate) fn encode_unpacked(key: &MasterKey, json: &[u8], level: Option<i32>) -> Result<Vec<u8>> {
    match level {
        Some(level) => {
            let compressed = compress(json, level)?;
            let mut plain = Vec::with_capacity(compressed.len() + 1);
            plain.push(ENCODING_ZSTD);
            plain.extend_from_slice(&compressed);
            Ok(key.encrypt(&plain))
        }
        None => Ok(key.encrypt(json)),
    }
}

/// Decrypts an unpacked file and returns its JSON bytes. `what` names the file in
/// errors.
pub(crate) fn decode_unpacked(key: &MasterKey, data: &[u8], what: &str) -> Result<Vec<u8>> {
    let plain = key.decrypt(data).map_err(|e| decrypt_error(what, e))?;
    match plain.first() {
        Some(b'{') | Some(b'[') => Ok(plain),
        Some(&ENCODING_ZSTD) => decompress_unknown(&plain[1..], MAX_UNPACKED)
            .map_err(|reason| Error::corrupt(what, reason)),
        Some(v) => Err(Error::corrupt(
            what,
            format!("unknown encoding version {v} (expected JSON or 2 for zstd)"),
        )),
        None => Err(Error::corrupt(what, "the file is empty after decryption")),
    }
}

/// The [`Error::Corrupt`] for a failed decryption.
pub(crate) fn decrypt_error(what: &str, e: DecryptError) -> Error {
    Error::corrupt(what, e.to_string())
}

/// A zstd compressor for `level`. The default level (3) is tuned for blobs of about a
/// MiB: minimum match 6, hash table 2^16, chain table 2^14 (level 3 has 5, 2^17 and
/// 2^16). On the benchmark's text and JSON this compressed about 1.6x faster than plain
/// level 3, as fast as level 1, and smaller than both (4.37 against 4.30 and 4.24;
/// bench/README.md).
fn compressor(level: i32) -> std::io::Result<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(level)?;
    if level == crate::repo::DEFAULT_COMPRESSION_LEVEL {
        c.set_parameter(CParameter::MinMatch(6))?;
        c.set_parameter(CParameter::HashLog(16))?;
        c.set_parameter(CParameter::ChainLog(14))?;
    }
    Ok(c)
}

/// Runs `f` with this thread's compressor for `level` (made on first use, or when the
/// level changes).
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T,
) -> Result<T> {
    use std::cell::RefCell;
    thread_local! {
        static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match &mut *slot {
            Some((l, c)) if *l == level => c,
            other => {
                let c = compressor(level)
                    .map_err(|e| Error::InvalidArgument(format!("zstd level {level}: {e}")))?;
                &mut other.insert((level, c)).1
            }
        };
        Ok(f(c))
    })
}

/// zstd-compresses `data` at `level`, reusing a per-thread context.
pub(crate) fn compress(data: &[u8], level: i32) -> Result<Vec<u8>> {
    with_compressor(level, |c| c.compress(data))?
        .map_err(|e| Error::Aborted(format!("zstd compression failed: {e}")))
}

/// Compresses `data` at `level` into `out` (a thread's reused compressor); `None` when
/// the result does not fit in `out` (make `out` shorter than `data` to keep only
/// compression that saves space). An error here is almost always "destination too
/// small": the blob is then stored as it is, which is always valid.
pub(crate) fn compress_into(data: &[u8], level: i32, out: &mut [u8]) -> Option<usize> {
    with_compressor(level, |c| c.compress_to_buffer(data, out).ok())
        .ok()
        .flatten()
}

/// Samples below this many bytes are not worth testing: the blob is simply compressed.
const SAMPLE_MIN_BLOB: usize = 256 * 1024;
const SAMPLE_LEN: usize = 8 * 1024;

/// True when three samples of `data` (start, middle, end) do not compress by even 2%: the
/// blob is media, an archive or encrypted, and compressing all of it would cost CPU for
/// nothing. zstd stores such blobs only if they shrink anyway, so a wrong guess costs at
/// most a little space, never correctness.
pub(crate) fn looks_incompressible(data: &[u8], level: i32) -> bool {
    if data.len() < SAMPLE_MIN_BLOB {
        return false;
    }
    let mid = data.len() / 2 - SAMPLE_LEN / 2;
    let mut plain = 0usize;
    let mut packed = 0usize;
    for start in [0, mid, data.len() - SAMPLE_LEN] {
        let sample = &data[start..start + SAMPLE_LEN];
        match compress(sample, level) {
            Ok(c) => {
                plain += sample.len();
                packed += c.len();
            }
            Err(_) => return false,
        }
    }
    packed * 100 >= plain * 98
}

/// What decompressing blob after blob reuses: a zstd context and its output buffer
/// (see [`crate::Repository::decode_blob_in_place`]).
#[derive(Default)]
pub struct BlobScratch {
    dctx: Option<zstd::bulk::Decompressor<'static>>,
    pub(crate) out: Vec<u8>,
}

impl BlobScratch {
    pub fn new() -> Self {
        BlobScratch::default()
    }

    /// Decompresses a zstd frame into `self.out`; it must come to exactly `expected`
    /// bytes.
    pub(crate) fn decompress(
        &mut self,
        data: &[u8],
        expected: usize,
    ) -> std::result::Result<(), String> {
        const BULK_LIMIT: usize = 64 << 20;
        let n = if expected > BULK_LIMIT {
            self.out = decompress_unknown(data, expected)?;
            self.out.len()
        } else {
            let dctx = match &mut self.dctx {
                Some(d) => d,
                none => none.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| format!("cannot make a zstd context: {e}"))?,
                ),
            };
            self.out.clear();
            self.out.reserve(expected);
            dctx.decompress_to_buffer(data, &mut self.out)
                .map_err(|e| format!("zstd decompression failed: {e}"))?
        };
        if n != expected {
            return Err(format!(
                "decompressed to {n} bytes, the index says {expected}"
            ));
        }
        Ok(())
    }
}

/// Decompresses a zstd stream of unknown size, refusing more than `limit` bytes.
pub(crate) fn decompress_unknown(
    data: &[u8],
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(data)
        .map_err(|e| format!("zstd decompression failed: {e}"))?;
    let mut out = Vec::new();
    (&mut dec)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zstd decompression failed: {e}"))?;
    if out.len() > limit {
        return Err(format!("decompresses to more than {limit} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` pseudo-random (xorshift) bytes: incompressible.
    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn decompress_exact(data: &[u8], expected: usize) -> std::result::Result<Vec<u8>, String> {
        let mut s = BlobScratch::new();
        s.decompress(data, expected)?;
        Ok(s.out)
    }

    #[test]
    fn compress_into_keeps_only_what_shrinks_and_round_trips() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {} of the log\n", i % 977).into_bytes())
            .collect();
        let mut out = vec![0u8; text.len() - 1];
        for level in [1, crate::repo::DEFAULT_COMPRESSION_LEVEL, 19] {
            let n = compress_into(&text, level, &mut out).unwrap();
            assert!(n < text.len() / 10, "level {level}: {n}");
            assert_eq!(decompress_exact(&out[..n], text.len()).unwrap(), text);
        }
        // Random bytes do not fit in fewer bytes than they have: None, stored as is.
        let random = random_bytes(100_000, 7);
        let mut out = vec![0u8; random.len() - 1];
        assert_eq!(compress_into(&random, 3, &mut out), None);
    }

    #[test]
    fn unpacked_round_trip() {
        let k = MasterKey::random();
        let json = br#"{"a":1}"#;
        for level in [None, Some(3)] {
            let enc = encode_unpacked(&k, json, level).unwrap();
            assert_eq!(decode_unpacked(&k, &enc, "x").unwrap(), json);
        }
        let bad = k.encrypt(&[7, 1, 2]);
        assert!(decode_unpacked(&k, &bad, "x").unwrap_err().is_corrupt());
        let c = compress(&[0u8; 1000], 3).unwrap();
        assert_eq!(decompress_exact(&c, 1000).unwrap(), vec![0u8; 1000]);
        assert!(decompress_exact(&c, 999).is_err());
        assert!(decompress_unknown(&c, 10).is_err());
    }

    #[test]
    fn random_blobs_are_skipped_and_text_is_not() {
        let random = random_bytes(1 << 20, 0x9e37_79b9_7f4a_7c15);
        assert!(looks_incompressible(&random, 1));
        let text = b"GET /index.html 200 1234 Mozilla/5.0\n".repeat(30_000);
        assert!(!looks_incompressible(&text, 1));
        // Random at the start, text after: not skipped (one sample compresses).
        let mut mixed = random[..512 * 1024].to_vec();
        mixed.extend_from_slice(&text[..512 * 1024]);
        assert!(!looks_incompressible(&mixed, 1));
        assert!(
            !looks_incompressible(&random[..1000], 1),
            "small blobs are just compressed"
        );
    }
}
