//! Pack files: `blob_1 || ... || blob_n || encrypted header || header length (u32 LE)`.
//!
//! Each blob is encrypted on its own (`IV || ciphertext || MAC`, the plaintext
//! optionally zstd-compressed). The decrypted header has one entry per blob, in file
//! order: a type byte, then for types 0 (data) and 1 (tree) `length (u32 LE) ||
//! id (32)`, for types 2 (compressed data) and 3 (compressed tree) `length ||
//! uncompressed length || id`. `length` is the stored (encrypted) length; offsets
//! follow from the order. Data and tree blobs never share a pack.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::{Backend, FileType};
use crate::crypto::{MasterKey, OVERHEAD};
use crate::error::{Error, Result};
use crate::id::Id;

/// The two kinds of blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content.
    Data,
    /// A directory listing (tree JSON).
    Tree,
}

impl BlobType {
    /// `"data"` or `"tree"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }
}

impl std::fmt::Display for BlobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One blob as a pack header (or an index) describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackBlob {
    /// Data or tree.
    pub blob_type: BlobType,
    /// SHA-256 of the plaintext.
    pub id: Id,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored (encrypted) length.
    pub length: u32,
    /// Plaintext length when the blob is compressed.
    pub uncompressed_length: Option<u32>,
}

impl PackBlob {
    /// Length of the plaintext.
    pub fn data_length(&self) -> u32 {
        self.uncompressed_length
            .unwrap_or_else(|| self.length.saturating_sub(OVERHEAD as u32))
    }
}

/// Header entry sizes.
pub const ENTRY_LEN: usize = 1 + 4 + 32;
/// Header entry size for compressed blobs.
pub const ENTRY_LEN_COMPRESSED: usize = 1 + 4 + 4 + 32;
/// restic's limit on header size.
pub const MAX_HEADER_SIZE: u32 = 16 * 1024 * 1024;
/// Header entries read together with the length field, to save a round trip.
const EAGER_ENTRIES: usize = 15;

fn entry_len(b: &PackBlob) -> usize {
    if b.uncompressed_length.is_some() {
        ENTRY_LEN_COMPRESSED
    } else {
        ENTRY_LEN
    }
}

/// Size of the encrypted header plus the length field, for these blobs.
pub fn header_size(blobs: &[PackBlob]) -> u64 {
    blobs.iter().map(|b| entry_len(b) as u64).sum::<u64>() + OVERHEAD as u64 + 4
}

/// The size a pack with exactly these blobs has.
pub fn expected_pack_size(blobs: &[PackBlob]) -> u64 {
    blobs.iter().map(|b| u64::from(b.length)).sum::<u64>() + header_size(blobs)
}

/// A pack being built, in memory or (when the backend can stage files) in a
/// temporary file.
pub(crate) struct PackWriter {
    buf: Vec<u8>,
    staged: Option<crate::backend::StagedFile>,
    /// Bytes written so far (in `buf` or the staged file).
    len: usize,
    hasher: Sha256,
    blobs: Vec<PackBlob>,
}

/// A finished pack, ready to be stored: `data` in memory, or the staged file.
pub(crate) struct FinishedPack {
    pub id: Id,
    pub data: Vec<u8>,
    pub staged: Option<crate::backend::StagedFile>,
    pub blobs: Vec<PackBlob>,
}

impl PackWriter {
    pub fn new(capacity: usize) -> Self {
        PackWriter {
            buf: Vec::with_capacity(capacity),
            staged: None,
            len: 0,
            hasher: Sha256::new(),
            blobs: Vec::new(),
        }
    }

    /// A pack written straight into `staged` (nothing held in memory).
    pub fn staged(staged: crate::backend::StagedFile) -> Self {
        PackWriter {
            buf: Vec::new(),
            staged: Some(staged),
            len: 0,
            hasher: Sha256::new(),
            blobs: Vec::new(),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.staged {
            Some(st) => {
                use std::io::Write;
                st.file
                    .write_all(bytes)
                    .map_err(|e| crate::backend::local::io_error("write", &st.path, e))?;
            }
            None => self.buf.extend_from_slice(bytes),
        }
        self.len += bytes.len();
        Ok(())
    }

    /// A pack writer reusing `buf` (cleared) with room for `capacity` bytes.
    pub fn with_buffer(mut buf: Vec<u8>, capacity: usize) -> Self {
        buf.clear();
        buf.reserve(capacity);
        PackWriter {
            buf,
            staged: None,
            len: 0,
            hasher: Sha256::new(),
            blobs: Vec::new(),
        }
    }

    /// Appends an encrypted blob.
    pub fn add(
        &mut self,
        blob_type: BlobType,
        id: Id,
        encrypted: &[u8],
        uncompressed_length: Option<u32>,
    ) -> Result<()> {
        let offset = u32::try_from(self.len)
            .map_err(|_| Error::InvalidArgument("pack grew beyond 4 GiB".into()))?;
        let length = u32::try_from(encrypted.len()).map_err(|_| {
            Error::InvalidArgument(format!("blob {} is larger than 4 GiB", id.short()))
        })?;
        self.append(encrypted)?;
        self.hasher.update(encrypted);
        self.blobs.push(PackBlob {
            blob_type,
            id,
            offset,
            length,
            uncompressed_length,
        });
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends the encrypted header and its length; returns the pack and its id.
    pub fn finish(mut self, key: &MasterKey) -> Result<FinishedPack> {
        let mut header = Vec::with_capacity(self.blobs.len() * ENTRY_LEN_COMPRESSED);
        for b in &self.blobs {
            let compressed = b.uncompressed_length.is_some();
            let t: u8 = match (b.blob_type, compressed) {
                (BlobType::Data, false) => 0,
                (BlobType::Tree, false) => 1,
                (BlobType::Data, true) => 2,
                (BlobType::Tree, true) => 3,
            };
            header.push(t);
            header.extend_from_slice(&b.length.to_le_bytes());
            if let Some(u) = b.uncompressed_length {
                header.extend_from_slice(&u.to_le_bytes());
            }
            header.extend_from_slice(&b.id.0);
        }
        let enc = key.encrypt(&header);
        let len = (enc.len() as u32).to_le_bytes();
        self.append(&enc)?;
        self.append(&len)?;
        self.hasher.update(&enc);
        self.hasher.update(len);
        Ok(FinishedPack {
            id: Id(self.hasher.finalize().into()),
            data: self.buf,
            staged: self.staged,
            blobs: self.blobs,
        })
    }
}

/// Parses a decrypted header; checks the blobs exactly fill `blobs_len` bytes.
fn parse_header_plain(plain: &[u8], blobs_len: u64, what: &str) -> Result<Vec<PackBlob>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut offset: u64 = 0;
    while pos < plain.len() {
        let t = plain[pos];
        let (blob_type, compressed) = match t {
            0 => (BlobType::Data, false),
            1 => (BlobType::Tree, false),
            2 => (BlobType::Data, true),
            3 => (BlobType::Tree, true),
            other => {
                return Err(Error::corrupt(
                    what,
                    format!("header entry {} has invalid blob type {other}", out.len()),
                ))
            }
        };
        let need = if compressed {
            ENTRY_LEN_COMPRESSED
        } else {
            ENTRY_LEN
        };
        let Some(entry) = plain.get(pos..pos + need) else {
            return Err(Error::corrupt(
                what,
                format!("header entry {} is truncated", out.len()),
            ));
        };
        let length = u32::from_le_bytes([entry[1], entry[2], entry[3], entry[4]]);
        let (uncompressed_length, id_at) = if compressed {
            (
                Some(u32::from_le_bytes([entry[5], entry[6], entry[7], entry[8]])),
                9,
            )
        } else {
            (None, 5)
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&entry[id_at..id_at + 32]);
        if (length as usize) < OVERHEAD {
            return Err(Error::corrupt(
                what,
                format!("blob {} has impossible length {length}", Id(id).short()),
            ));
        }
        let off =
            u32::try_from(offset).map_err(|_| Error::corrupt(what, "blobs extend beyond 4 GiB"))?;
        out.push(PackBlob {
            blob_type,
            id: Id(id),
            offset: off,
            length,
            uncompressed_length,
        });
        offset += u64::from(length);
        pos += need;
    }
    if out.is_empty() {
        return Err(Error::corrupt(what, "the header lists no blobs"));
    }
    if offset != blobs_len {
        return Err(Error::corrupt(
            what,
            format!("the header describes {offset} bytes of blobs but the pack holds {blobs_len}"),
        ));
    }
    Ok(out)
}

/// Validates the header length field against the pack size.
fn check_header_len(hlen: u32, size: u64, what: &str) -> Result<()> {
    if (hlen as usize) < OVERHEAD + ENTRY_LEN {
        return Err(Error::corrupt(
            what,
            format!("header length {hlen} is too small"),
        ));
    }
    if hlen > MAX_HEADER_SIZE {
        return Err(Error::corrupt(
            what,
            format!("header length {hlen} is larger than the 16 MiB limit"),
        ));
    }
    if u64::from(hlen) + 4 > size {
        return Err(Error::corrupt(
            what,
            format!("header length {hlen} is larger than the pack ({size} bytes)"),
        ));
    }
    Ok(())
}

/// Reads and parses the header of a stored pack of `size` bytes, fetching only the
/// tail of the file.
pub fn read_header(
    backend: &dyn Backend,
    key: &MasterKey,
    pack: &Id,
    size: u64,
) -> Result<Vec<PackBlob>> {
    let what = format!("pack {pack}");
    if size < (4 + OVERHEAD + ENTRY_LEN + OVERHEAD) as u64 {
        return Err(Error::corrupt(
            &what,
            format!("the file is only {size} bytes, too small for a pack"),
        ));
    }
    let eager = (4 + OVERHEAD + EAGER_ENTRIES * ENTRY_LEN_COMPRESSED) as u64;
    let first = eager.min(size);
    let tail = backend.read_range(FileType::Pack, pack, size - first, first as u32)?;
    let n = tail.len();
    if n < 4 {
        return Err(Error::corrupt(&what, "short read of the pack tail"));
    }
    let hlen = u32::from_le_bytes([tail[n - 4], tail[n - 3], tail[n - 2], tail[n - 1]]);
    check_header_len(hlen, size, &what)?;
    let enc_header = if u64::from(hlen) + 4 <= first {
        tail[n - 4 - hlen as usize..n - 4].to_vec()
    } else {
        backend.read_range(FileType::Pack, pack, size - 4 - u64::from(hlen), hlen)?
    };
    let plain = key
        .decrypt(&enc_header)
        .map_err(|e| Error::corrupt(&what, format!("header: {e}")))?;
    parse_header_plain(&plain, size - 4 - u64::from(hlen), &what)
}

/// Parses the header of a whole pack held in memory.
pub fn parse_pack(key: &MasterKey, pack: &Id, data: &[u8]) -> Result<Vec<PackBlob>> {
    let what = format!("pack {pack}");
    let size = data.len() as u64;
    if data.len() < 4 + OVERHEAD + ENTRY_LEN {
        return Err(Error::corrupt(
            &what,
            format!("the file is only {size} bytes, too small for a pack"),
        ));
    }
    let n = data.len();
    let hlen = u32::from_le_bytes([data[n - 4], data[n - 3], data[n - 2], data[n - 1]]);
    check_header_len(hlen, size, &what)?;
    let start = n - 4 - hlen as usize;
    let plain = key
        .decrypt(&data[start..n - 4])
        .map_err(|e| Error::corrupt(&what, format!("header: {e}")))?;
    parse_header_plain(&plain, start as u64, &what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    #[test]
    fn write_then_parse() {
        let key = MasterKey::random();
        let mut w = PackWriter::new(1024);
        let a = key.encrypt(b"aaaa");
        let b = key.encrypt(b"bbbbbbbb");
        w.add(BlobType::Data, Id::hash(b"aaaa"), &a, None).unwrap();
        w.add(BlobType::Data, Id::hash(b"bbbbbbbb"), &b, Some(100))
            .unwrap();
        let p = w.finish(&key).unwrap();
        assert_eq!(p.id, Id::hash(&p.data));
        assert_eq!(p.data.len() as u64, expected_pack_size(&p.blobs));
        let parsed = parse_pack(&key, &p.id, &p.data).unwrap();
        assert_eq!(parsed, p.blobs);
        assert_eq!(parsed[1].offset, a.len() as u32);

        let dir = tempfile::tempdir().unwrap();
        let be = LocalBackend::new(dir.path());
        be.create().unwrap();
        be.write(FileType::Pack, &p.id, &p.data).unwrap();
        let h = read_header(&be, &key, &p.id, p.data.len() as u64).unwrap();
        assert_eq!(h, p.blobs);

        // A flipped bit in the header is reported as corruption of that pack.
        let mut bad = p.data.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        let err = parse_pack(&key, &p.id, &bad).unwrap_err();
        assert!(err.to_string().contains(&p.id.to_hex()), "{err}");
        // A header too long for the eager tail read (second read path).
        let mut w = PackWriter::new(1024);
        for i in 0..40u32 {
            let plain = i.to_le_bytes();
            w.add(
                BlobType::Tree,
                Id::hash(&plain),
                &key.encrypt(&plain),
                Some(4),
            )
            .unwrap();
        }
        let many = w.finish(&key).unwrap();
        be.write(FileType::Pack, &many.id, &many.data).unwrap();
        let h = read_header(&be, &key, &many.id, many.data.len() as u64).unwrap();
        assert_eq!(h, many.blobs);
        assert_eq!(h.len(), 40);

        // A hostile length field.
        let mut bad = p.data.clone();
        bad[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_pack(&key, &p.id, &bad).unwrap_err().is_corrupt());
    }
}
