//! The index: which pack holds each blob, at which offset and length.
//!
//! Index files are unpacked JSON documents
//! `{"supersedes":[..],"packs":[{"id","blobs":[{"id","type","offset","length","uncompressed_length"}]}]}`.
//! [`Index`] is the in-memory form, kept compact for millions of blobs: pack ids are
//! interned once in a `Vec` and each entry is the 32-byte blob id plus four `u32`s
//! (pack number, offset, length, uncompressed length), about 50-60 bytes per blob
//! with the hash table.
//!
//! `supersedes` names index files a newer one replaces. [`crate::prune()`] writes
//! the replacement files (the last one carrying `supersedes`) before deleting the
//! old ones; readers ([`crate::Repository::reload_index`]) skip a file another
//! readable file supersedes. restic 0.14 ignores the field when loading, which is
//! also safe: a superseded file only lists packs that still exist until it is
//! deleted.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::id::{Id, IdMap};
use crate::pack::{BlobType, PackBlob};

/// Blobs per index file written (restic's limit for uncompressed repositories;
/// compressed files stay far below restic's 8 MiB target).
pub const MAX_BLOBS_PER_INDEX_FILE: usize = 50_000;

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// An index file's JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexFile {
    /// Index files this one replaces.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub supersedes: Vec<Id>,
    /// The packs described.
    #[serde(default, deserialize_with = "null_as_default")]
    pub packs: Vec<IndexPack>,
}

/// One pack in an index file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack's id.
    pub id: Id,
    /// Its blobs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub blobs: Vec<IndexBlob>,
}

/// One blob in an index file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexBlob {
    /// Plaintext hash.
    pub id: Id,
    /// Data or tree.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub length: u64,
    /// Plaintext length for compressed blobs, absent otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uncompressed_length: u64,
}

impl IndexPack {
    /// Converts to [`PackBlob`]s, checking the numbers fit restic's limits.
    pub fn pack_blobs(&self, what: &str) -> Result<Vec<PackBlob>> {
        self.blobs
            .iter()
            .map(|b| {
                let conv = |v: u64, name: &str| {
                    u32::try_from(v).map_err(|_| {
                        Error::corrupt(
                            what,
                            format!("blob {} has {name} {v}, beyond 4 GiB", b.id.short()),
                        )
                    })
                };
                Ok(PackBlob {
                    blob_type: b.blob_type,
                    id: b.id,
                    offset: conv(b.offset, "offset")?,
                    length: conv(b.length, "length")?,
                    uncompressed_length: if b.uncompressed_length == 0 {
                        None
                    } else {
                        Some(conv(b.uncompressed_length, "uncompressed_length")?)
                    },
                })
            })
            .collect()
    }
}

impl IndexFile {
    /// Builds index files (each at most [`MAX_BLOBS_PER_INDEX_FILE`] blobs, never
    /// splitting a pack) for these packs.
    pub fn build(packs: &[(Id, Vec<PackBlob>)]) -> Vec<IndexFile> {
        let mut files = Vec::new();
        let mut cur = IndexFile::default();
        let mut count = 0usize;
        for (id, blobs) in packs {
            if count > 0 && count + blobs.len() > MAX_BLOBS_PER_INDEX_FILE {
                files.push(std::mem::take(&mut cur));
                count = 0;
            }
            cur.packs.push(IndexPack {
                id: *id,
                blobs: blobs
                    .iter()
                    .map(|b| IndexBlob {
                        id: b.id,
                        blob_type: b.blob_type,
                        offset: u64::from(b.offset),
                        length: u64::from(b.length),
                        uncompressed_length: b.uncompressed_length.map(u64::from).unwrap_or(0),
                    })
                    .collect(),
            });
            count += blobs.len();
        }
        if !cur.packs.is_empty() {
            files.push(cur);
        }
        files
    }
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The pack.
    pub pack: Id,
    /// Data or tree.
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Plaintext length if compressed.
    pub uncompressed_length: Option<u32>,
}

impl IndexEntry {
    /// Length of the plaintext.
    pub fn data_length(&self) -> u32 {
        self.uncompressed_length
            .unwrap_or_else(|| self.length.saturating_sub(crate::crypto::OVERHEAD as u32))
    }
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    offset: u32,
    length: u32,
    /// 0 = not compressed.
    uncompressed: u32,
}

/// The in-memory index.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<Id>,
    pack_numbers: IdMap<Id, u32>,
    by_type: [IdMap<Id, Loc>; 2],
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, pack: Id) -> u32 {
        if let Some(n) = self.pack_numbers.get(&pack) {
            return *n;
        }
        let n = self.packs.len() as u32;
        self.packs.push(pack);
        self.pack_numbers.insert(pack, n);
        n
    }

    /// Adds a pack's blobs. A blob already known (in another pack) keeps its
    /// first location.
    pub fn add_pack(&mut self, pack: Id, blobs: &[PackBlob]) {
        let n = self.intern(pack);
        for b in blobs {
            self.by_type[b.blob_type.index()]
                .entry(b.id)
                .or_insert(Loc {
                    pack: n,
                    offset: b.offset,
                    length: b.length,
                    uncompressed: b.uncompressed_length.unwrap_or(0),
                });
        }
    }

    /// Adds everything in an index file.
    pub fn add_file(&mut self, file: &IndexFile, what: &str) -> Result<()> {
        for p in &file.packs {
            let blobs = p.pack_blobs(what)?;
            self.add_pack(p.id, &blobs);
        }
        Ok(())
    }

    /// Forgets the blobs of these packs (used when packs were written but their
    /// index file could not be, so nothing may be deduplicated against them).
    pub fn remove_packs(&mut self, packs: &[Id]) {
        let numbers: Vec<u32> = packs
            .iter()
            .filter_map(|p| self.pack_numbers.remove(p))
            .collect();
        if numbers.is_empty() {
            return;
        }
        for map in &mut self.by_type {
            map.retain(|_, loc| !numbers.contains(&loc.pack));
        }
    }

    /// Where a blob is, if known.
    pub fn lookup(&self, t: BlobType, id: &Id) -> Option<IndexEntry> {
        let loc = self.by_type[t.index()].get(id)?;
        Some(IndexEntry {
            pack: self.packs[loc.pack as usize],
            blob_type: t,
            offset: loc.offset,
            length: loc.length,
            uncompressed_length: (loc.uncompressed != 0).then_some(loc.uncompressed),
        })
    }

    /// True when the blob is known.
    pub fn contains(&self, t: BlobType, id: &Id) -> bool {
        self.by_type[t.index()].contains_key(id)
    }

    /// True when the pack is referenced.
    pub fn has_pack(&self, pack: &Id) -> bool {
        self.pack_numbers.contains_key(pack)
    }

    /// Number of blobs of a type.
    pub fn count(&self, t: BlobType) -> usize {
        self.by_type[t.index()].len()
    }

    /// Number of packs referenced.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// All packs referenced.
    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// Every blob with its location.
    pub fn iter(&self) -> impl Iterator<Item = (Id, IndexEntry)> + '_ {
        [BlobType::Data, BlobType::Tree]
            .into_iter()
            .flat_map(move |t| {
                self.by_type[t.index()].iter().map(move |(id, loc)| {
                    (
                        *id,
                        IndexEntry {
                            pack: self.packs[loc.pack as usize],
                            blob_type: t,
                            offset: loc.offset,
                            length: loc.length,
                            uncompressed_length: (loc.uncompressed != 0)
                                .then_some(loc.uncompressed),
                        },
                    )
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_restic_shape() {
        let pack = Id::hash(b"p");
        let blobs = vec![
            PackBlob {
                blob_type: BlobType::Data,
                id: Id::hash(b"a"),
                offset: 0,
                length: 38,
                uncompressed_length: None,
            },
            PackBlob {
                blob_type: BlobType::Data,
                id: Id::hash(b"b"),
                offset: 38,
                length: 112,
                uncompressed_length: Some(511),
            },
        ];
        let files = IndexFile::build(&[(pack, blobs.clone())]);
        assert_eq!(files.len(), 1);
        let json = serde_json::to_string(&files[0]).unwrap();
        assert!(!json.contains("supersedes"));
        assert_eq!(json.matches("uncompressed_length").count(), 1);
        assert!(json.contains("\"type\":\"data\""));
        let back: IndexFile = serde_json::from_str(&json).unwrap();
        let mut idx = Index::new();
        idx.add_file(&back, "index").unwrap();
        let e = idx.lookup(BlobType::Data, &Id::hash(b"b")).unwrap();
        assert_eq!(e.pack, pack);
        assert_eq!(e.offset, 38);
        assert_eq!(e.uncompressed_length, Some(511));
        assert_eq!(
            idx.lookup(BlobType::Data, &Id::hash(b"a"))
                .unwrap()
                .data_length(),
            6
        );
        assert!(!idx.contains(BlobType::Tree, &Id::hash(b"a")));
        let nulls: IndexFile =
            serde_json::from_str(r#"{"supersedes":null,"packs":[{"id":"0000000000000000000000000000000000000000000000000000000000000000","blobs":null}]}"#)
                .unwrap();
        assert_eq!(nulls.packs.len(), 1);
    }
}
