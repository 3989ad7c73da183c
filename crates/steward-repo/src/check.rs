//! Repository checks.
//!
//! [`check`] verifies the structure without reading blob data: every pack an index
//! file lists exists with exactly the size its blobs imply, every pack's header
//! (read from the end of the file) matches what the index says, every snapshot
//! loads, every tree reachable from a snapshot loads, and every blob a tree
//! references is in the index. [`read_data`] downloads packs (all, a `n/m` share as
//! restic's `--read-data-subset`, or a selection), checks each pack's SHA-256
//! against its name, parses its header and decrypts, decompresses and verifies
//! every blob. Problems are collected in a [`CheckReport`] naming the pack, tree or
//! snapshot concerned; only failures to run the check at all are errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{Id, IdMap, IdSet};
use crate::index::IndexEntry;
use crate::pack::{expected_pack_size, parse_pack, read_header, BlobType, PackBlob};
use crate::repo::{retry, superseded_index_files, Repository};
use crate::snapshot::Snapshot;
use crate::tree::NodeType;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckProblem {
    /// An index file could not be loaded.
    Index {
        /// The index file.
        id: Id,
        /// What failed.
        reason: String,
    },
    /// A pack the index lists does not exist.
    MissingPack {
        /// The pack.
        pack: Id,
    },
    /// A pack's size is not what its blobs imply.
    PackSize {
        /// The pack.
        pack: Id,
        /// Size implied by the index.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A pack is damaged: unreadable header, wrong hash, a blob that fails to
    /// decrypt or verify, or a header that disagrees with the index.
    CorruptPack {
        /// The pack.
        pack: Id,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot could not be loaded.
    Snapshot {
        /// The snapshot.
        id: Id,
        /// What failed.
        reason: String,
    },
    /// A tree could not be loaded or is invalid.
    Tree {
        /// The tree.
        id: Id,
        /// What is wrong.
        reason: String,
    },
    /// A tree references a blob the index does not list.
    MissingBlob {
        /// The tree referencing it.
        tree: Id,
        /// The blob.
        blob: Id,
        /// Its type.
        blob_type: BlobType,
    },
}

impl std::fmt::Display for CheckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckProblem::Index { id, reason } => write!(f, "index file {id}: {reason}"),
            CheckProblem::MissingPack { pack } => {
                write!(f, "pack {pack} is listed in the index but does not exist")
            }
            CheckProblem::PackSize {
                pack,
                expected,
                actual,
            } => write!(
                f,
                "pack {pack} has {actual} bytes, the index implies {expected}"
            ),
            CheckProblem::CorruptPack { pack, reason } => {
                write!(f, "pack {pack} is corrupted: {reason}")
            }
            CheckProblem::Snapshot { id, reason } => write!(f, "snapshot {id}: {reason}"),
            CheckProblem::Tree { id, reason } => write!(f, "tree {id}: {reason}"),
            CheckProblem::MissingBlob {
                tree,
                blob,
                blob_type,
            } => write!(
                f,
                "tree {tree} references {blob_type} blob {blob}, which is not in the index"
            ),
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Problems found.
    pub problems: Vec<CheckProblem>,
    /// Harmless findings (e.g. packs no index references, left by an interrupted
    /// backup).
    pub warnings: Vec<String>,
    /// Packs examined.
    pub packs_checked: usize,
    /// Snapshots examined.
    pub snapshots_checked: usize,
    /// Trees examined.
    pub trees_checked: usize,
    /// Blobs verified by reading their data.
    pub blobs_verified: usize,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Ids of packs named in problems.
    pub fn damaged_packs(&self) -> Vec<Id> {
        let mut v: Vec<Id> = self
            .problems
            .iter()
            .filter_map(|p| match p {
                CheckProblem::MissingPack { pack }
                | CheckProblem::PackSize { pack, .. }
                | CheckProblem::CorruptPack { pack, .. } => Some(*pack),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// `Err` listing every problem, or `Ok` when there is none.
    pub fn into_result(self) -> Result<CheckReport> {
        if self.is_ok() {
            return Ok(self);
        }
        let list: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        Err(Error::corrupt("repository", list.join("; ")))
    }
}

/// Which packs [`read_data`] downloads.
#[derive(Clone, Default)]
pub enum ReadDataSubset {
    /// Every pack.
    #[default]
    All,
    /// Part `n` of `m` (1-based), by the first byte of the pack id, like restic's
    /// `--read-data-subset n/m`.
    Part {
        /// Which part (1..=m).
        n: u32,
        /// Number of parts.
        m: u32,
    },
    /// Packs for which the function returns true.
    Select(Arc<dyn Fn(&Id) -> bool + Send + Sync>),
}

impl std::fmt::Debug for ReadDataSubset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadDataSubset::All => f.write_str("All"),
            ReadDataSubset::Part { n, m } => write!(f, "Part({n}/{m})"),
            ReadDataSubset::Select(_) => f.write_str("Select(..)"),
        }
    }
}

impl ReadDataSubset {
    /// Parses `n/m`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "{s:?} is not a subset: write n/m with 1 <= n <= m, e.g. 1/5"
            ))
        };
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        if n == 0 || m == 0 || n > m {
            return Err(bad());
        }
        Ok(ReadDataSubset::Part { n, m })
    }

    fn selects(&self, id: &Id) -> bool {
        match self {
            ReadDataSubset::All => true,
            ReadDataSubset::Part { n, m } => u32::from(id.0[0]) % m == n - 1,
            ReadDataSubset::Select(f) => f(id),
        }
    }
}

/// Pack contents according to the index files, and problems loading them.
/// Superseded index files (left by an interrupted prune) are still checked,
/// as restic checks them, and noted as a warning.
fn load_index_files(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<IdMap<Id, Vec<PackBlob>>> {
    let mut packs: IdMap<Id, Vec<PackBlob>> = IdMap::default();
    let mut good = Vec::new();
    for (id, r) in repo.load_index_files()? {
        match r {
            Ok(f) => good.push((id, f)),
            Err(e) => report.problems.push(CheckProblem::Index {
                id,
                reason: e.to_string(),
            }),
        }
    }
    let superseded = superseded_index_files(&good);
    for (id, file) in &good {
        if superseded.contains(id) {
            report.warnings.push(format!(
                "index file {id} is superseded by a newer index file (left by an interrupted prune; the next prune deletes it)"
            ));
        }
        let what = format!("index file {id}");
        for p in &file.packs {
            match p.pack_blobs(&what) {
                Ok(mut blobs) => {
                    blobs.sort_by_key(|b| b.offset);
                    packs.entry(p.id).or_insert(blobs);
                }
                Err(e) => report.problems.push(CheckProblem::Index {
                    id: *id,
                    reason: e.to_string(),
                }),
            }
        }
    }
    Ok(packs)
}

fn sorted(mut v: Vec<PackBlob>) -> Vec<PackBlob> {
    v.sort_by_key(|b| b.offset);
    v
}

fn compare_header(pack: &Id, header: Vec<PackBlob>, indexed: &[PackBlob]) -> Option<CheckProblem> {
    let header = sorted(header);
    if header.as_slice() == indexed {
        return None;
    }
    let reason = match header.iter().zip(indexed).find(|(a, b)| a != b) {
        Some((h, i)) => format!(
            "its header lists {} blob {} at offset {} (length {}), the index {} blob {} at offset {} (length {})",
            h.blob_type, h.id.short(), h.offset, h.length, i.blob_type, i.id.short(), i.offset, i.length
        ),
        None => format!(
            "its header lists {} blobs, the index {}",
            header.len(),
            indexed.len()
        ),
    };
    Some(CheckProblem::CorruptPack {
        pack: *pack,
        reason,
    })
}

/// Runs `f` over `items` on a few threads, collecting problems.
fn parallel<T: Sync>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<Vec<CheckProblem>> + Sync,
) -> Result<Vec<CheckProblem>> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    let err: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                match f(item) {
                    Ok(p) => out.lock().unwrap_or_else(|e| e.into_inner()).extend(p),
                    Err(e) => {
                        err.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(out.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// Checks the repository's structure (see the module docs).
pub fn check(repo: &Repository) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    // Snapshots first, then the index: a snapshot written meanwhile then finds
    // its index (restic's read ordering).
    let snapshot_ids: Vec<Id> = repo.snapshot_ids()?;
    let indexed = load_index_files(repo, &mut report)?;
    repo.reload_index()?;

    let stored: IdMap<Id, u64> = retry(|| repo.backend().list(FileType::Pack))?
        .into_iter()
        .collect();
    let mut to_read = Vec::new();
    let mut packs: Vec<(&Id, &Vec<PackBlob>)> = indexed.iter().collect();
    packs.sort_by_key(|(id, _)| **id);
    for (pack, blobs) in packs {
        match stored.get(pack) {
            None => report
                .problems
                .push(CheckProblem::MissingPack { pack: *pack }),
            Some(&size) => {
                let expected = expected_pack_size(blobs);
                if size != expected {
                    report.problems.push(CheckProblem::PackSize {
                        pack: *pack,
                        expected,
                        actual: size,
                    });
                } else {
                    to_read.push((*pack, size, blobs.clone()));
                }
            }
        }
    }
    let mut orphans: Vec<&Id> = stored
        .keys()
        .filter(|p| !indexed.contains_key(*p))
        .collect();
    orphans.sort();
    for p in orphans {
        report.warnings.push(format!(
            "pack {p} is not referenced by any index (left by an interrupted backup; harmless)"
        ));
    }
    report.packs_checked = to_read.len();
    let key = repo.key();
    let problems = parallel(
        &to_read,
        threads(),
        |(pack, size, blobs)| match read_header(repo.backend().as_ref(), key, pack, *size) {
            Ok(header) => Ok(compare_header(pack, header, blobs).into_iter().collect()),
            Err(Error::Corrupt { reason, .. }) => Ok(vec![CheckProblem::CorruptPack {
                pack: *pack,
                reason,
            }]),
            Err(Error::Backend(e)) if e.is_not_found() => {
                Ok(vec![CheckProblem::MissingPack { pack: *pack }])
            }
            Err(e) => Err(e),
        },
    )?;
    report.problems.extend(problems);

    // Snapshots and the trees they reach.
    let mut roots = Vec::new();
    for id in &snapshot_ids {
        match repo.load_json::<Snapshot>(FileType::Snapshot, id) {
            Ok(sn) => roots.push(sn.tree),
            Err(Error::Backend(e)) if !e.is_not_found() => return Err(e.into()),
            Err(e) => report.problems.push(CheckProblem::Snapshot {
                id: *id,
                reason: e.to_string(),
            }),
        }
    }
    report.snapshots_checked = snapshot_ids.len();
    let mut seen: IdSet<Id> = IdSet::default();
    let mut queue: Vec<Id> = roots;
    while let Some(tree_id) = queue.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        report.trees_checked += 1;
        let tree = match repo.load_tree(&tree_id) {
            Ok(t) => t,
            Err(Error::Backend(e)) if !e.is_not_found() => return Err(e.into()),
            Err(e) => {
                report.problems.push(CheckProblem::Tree {
                    id: tree_id,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let index = repo.index();
        for node in &tree.nodes {
            if !node.has_safe_name() {
                report.problems.push(CheckProblem::Tree {
                    id: tree_id,
                    reason: format!("node name {:?} is not a valid file name", node.name),
                });
            }
            match node.node_type {
                NodeType::File => match &node.content {
                    None => report.problems.push(CheckProblem::Tree {
                        id: tree_id,
                        reason: format!("file {:?} has no content list", node.name),
                    }),
                    Some(ids) => {
                        for blob in ids {
                            if !index.contains(BlobType::Data, blob) {
                                report.problems.push(CheckProblem::MissingBlob {
                                    tree: tree_id,
                                    blob: *blob,
                                    blob_type: BlobType::Data,
                                });
                            }
                        }
                    }
                },
                NodeType::Dir => match node.subtree {
                    None => report.problems.push(CheckProblem::Tree {
                        id: tree_id,
                        reason: format!("directory {:?} has no subtree", node.name),
                    }),
                    Some(sub) => {
                        if !index.contains(BlobType::Tree, &sub) {
                            report.problems.push(CheckProblem::MissingBlob {
                                tree: tree_id,
                                blob: sub,
                                blob_type: BlobType::Tree,
                            });
                        } else {
                            queue.push(sub);
                        }
                    }
                },
                NodeType::Other(ref t) => report.problems.push(CheckProblem::Tree {
                    id: tree_id,
                    reason: format!("node {:?} has unknown type {t:?}", node.name),
                }),
                _ => {}
            }
        }
    }
    Ok(report)
}

fn verify_pack(
    repo: &Repository,
    pack: &Id,
    indexed: &[PackBlob],
) -> Result<(Vec<CheckProblem>, usize)> {
    let corrupt = |reason: String| CheckProblem::CorruptPack {
        pack: *pack,
        reason,
    };
    let data = match retry(|| repo.backend().read(FileType::Pack, pack)) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => {
            return Ok((vec![CheckProblem::MissingPack { pack: *pack }], 0))
        }
        Err(e) => return Err(e.into()),
    };
    if Id::hash(&data) != *pack {
        return Ok((
            vec![corrupt(
                "its content does not match its name (SHA-256): the file was modified or damaged"
                    .into(),
            )],
            0,
        ));
    }
    let header = match parse_pack(repo.key(), pack, &data) {
        Ok(h) => h,
        Err(Error::Corrupt { reason, .. }) => return Ok((vec![corrupt(reason)], 0)),
        Err(e) => return Err(e),
    };
    let mut problems: Vec<CheckProblem> = compare_header(pack, header.clone(), indexed)
        .into_iter()
        .collect();
    let mut verified = 0;
    for b in &header {
        let entry = IndexEntry {
            pack: *pack,
            blob_type: b.blob_type,
            offset: b.offset,
            length: b.length,
            uncompressed_length: b.uncompressed_length,
        };
        let start = b.offset as usize;
        let raw = &data[start..start + b.length as usize];
        match repo.decode_blob(&b.id, &entry, raw) {
            Ok(_) => verified += 1,
            Err(Error::Corrupt { what, reason }) => {
                problems.push(corrupt(format!("{what}: {reason}")))
            }
            Err(e) => return Err(e),
        }
    }
    Ok((problems, verified))
}

/// Downloads and verifies the selected packs (see the module docs).
pub fn read_data(repo: &Repository, subset: ReadDataSubset) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let indexed = load_index_files(repo, &mut report)?;
    let mut selected: BTreeMap<Id, Vec<PackBlob>> = BTreeMap::new();
    for (pack, blobs) in indexed {
        if subset.selects(&pack) {
            selected.insert(pack, blobs);
        }
    }
    let items: Vec<(Id, Vec<PackBlob>)> = selected.into_iter().collect();
    report.packs_checked = items.len();
    let verified = AtomicUsize::new(0);
    let problems = parallel(&items, threads(), |(pack, blobs)| {
        let (p, n) = verify_pack(repo, pack, blobs)?;
        verified.fetch_add(n, Ordering::Relaxed);
        Ok(p)
    })?;
    report.problems.extend(problems);
    report.problems.sort_by_key(|p| p.to_string());
    report.blobs_verified = verified.load(Ordering::Relaxed);
    Ok(report)
}
