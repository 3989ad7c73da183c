//! Pruning: removing data that no snapshot references, like `restic prune`.
//!
//! [`prune`] takes an exclusive lock (so it can never run while a backup,
//! which holds a shared lock, is writing data that no snapshot references
//! yet), then:
//!
//! 1. loads every index file and refuses to go on if one is damaged, if a pack
//!    the index lists is missing or has the wrong size, if a snapshot or tree
//!    cannot be read, or if a tree references a blob the index does not know:
//!    deciding what is unused on incomplete information could delete data;
//! 2. walks every snapshot's trees to find the used blobs (trees and data); a
//!    blob stored twice is used in one pack only, the other copy is unused;
//! 3. sorts the packs: no used blob (delete), only used blobs (keep), partly used
//!    (repack candidates). Candidates holding trees are always repacked; data
//!    packs are repacked, most wasteful first, until the unused space left is
//!    within [`PruneOptions::max_unused`] (default 5% of the used space, as
//!    restic's `--max-unused 5%`), and never beyond
//!    [`PruneOptions::max_repack_bytes`];
//!
//! and, unless it is a dry run, changes the repository in an order that keeps
//! it consistent if the process dies at any point:
//!
//! 4. copies the used blobs of the packs to repack into new packs (each blob is
//!    decrypted and verified, then its stored bytes are copied unchanged);
//! 5. writes new index files listing every kept pack (all their blobs) and the
//!    new packs; the last one names all old index files in `supersedes`, so a
//!    reader honouring it never sees a partial new index;
//! 6. deletes the old index files;
//! 7. deletes the packs no longer indexed: unused, repacked, and packs that no
//!    index file referenced at all (left by interrupted backups or prunes).
//!
//! Until step 6 the old index describes every pack, all of which still exist;
//! after it, only packs no index lists are deleted. A crash leaves at worst
//! unreferenced packs or superseded index files, which a check reports as
//! harmless and the next prune deletes.

use std::time::{Duration, Instant};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{Id, IdMap, IdSet};
use crate::index::{Index, IndexEntry, IndexFile};
use crate::lock::{LockKind, LockOptions};
use crate::pack::{expected_pack_size, BlobType, PackBlob, PackWriter};
use crate::repo::{describe, retry, superseded_index_files, Repository};
use crate::snapshot::Snapshot;
use crate::tree::NodeType;

/// How much unused space a prune may leave in partly used packs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// At most this percentage (0 to below 100) of the repository's size after
    /// the prune may be unused (restic's `--max-unused 5%`).
    Percent(f64),
    /// At most this many unused bytes.
    Bytes(u64),
    /// Repack only packs holding trees; leave unused data in place.
    Unlimited,
}

impl Default for MaxUnused {
    fn default() -> Self {
        MaxUnused::Percent(5.0)
    }
}

impl MaxUnused {
    /// The unused bytes tolerated when `used` bytes are in use.
    pub fn limit(&self, used: u64) -> Result<u64> {
        match *self {
            MaxUnused::Percent(p) => {
                if !(0.0..100.0).contains(&p) {
                    return Err(Error::InvalidArgument(format!(
                        "max unused {p}% is out of range: give a percentage from 0 up to (not including) 100, or unlimited"
                    )));
                }
                Ok((p * used as f64 / (100.0 - p)) as u64)
            }
            MaxUnused::Bytes(b) => Ok(b),
            MaxUnused::Unlimited => Ok(u64::MAX),
        }
    }
}

impl std::str::FromStr for MaxUnused {
    type Err = Error;

    /// `5%`, `unlimited`, or a size in bytes with an optional k/m/g/t suffix
    /// (powers of 1024), as restic's `--max-unused`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| {
                Error::InvalidArgument(format!("{s:?} is not a percentage: write e.g. 5%"))
            })?;
            let m = MaxUnused::Percent(p);
            m.limit(0)?;
            return Ok(m);
        }
        parse_size(s).map(MaxUnused::Bytes)
    }
}

/// Parses `123`, `10k`, `5M`, `2g`, `1t` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{s:?} is not a size: write a number of bytes with an optional k, m, g or t suffix (e.g. 500m), a percentage (5%) or unlimited"
        ))
    };
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        Some('t') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

/// Options of [`prune`].
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Decide and report, change nothing (takes only a shared lock).
    pub dry_run: bool,
    /// Unused space tolerated in partly used data packs.
    pub max_unused: MaxUnused,
    /// Stop choosing packs to repack once this many bytes are selected.
    pub max_repack_bytes: Option<u64>,
    /// Lock timings and identity.
    pub lock: LockOptions,
}

/// What [`prune`] did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneSummary {
    /// True when nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose trees were walked.
    pub snapshots: usize,
    /// Blobs some snapshot uses.
    pub blobs_used: u64,
    /// Blobs deleted (unused, or second copies of used blobs).
    pub blobs_removed: u64,
    /// Blobs in the index afterwards.
    pub blobs_kept: u64,
    /// Of those, unused blobs left in partly used packs (within `max_unused`).
    pub unused_blobs_kept: u64,
    /// Packs the index listed before.
    pub packs_before: u64,
    /// Packs deleted because none of their blobs is used.
    pub packs_deleted: u64,
    /// Partly used packs whose used blobs were copied to new packs.
    pub packs_repacked: u64,
    /// New packs written by the repacking.
    pub packs_written: u64,
    /// Packs deleted that no index file referenced.
    pub unreferenced_packs_deleted: u64,
    /// Packs after.
    pub packs_after: u64,
    /// Index files deleted (all old ones when the index was rewritten, or
    /// superseded ones left by an interrupted prune).
    pub index_files_deleted: u64,
    /// Index files written (estimated for a dry run).
    pub index_files_written: u64,
    /// Bytes of all packs before.
    pub bytes_before: u64,
    /// Bytes of all packs after (estimated for a dry run).
    pub bytes_after: u64,
    /// `bytes_before - bytes_after`.
    pub bytes_freed: u64,
    /// Unused blob bytes left in packs afterwards.
    pub bytes_unused_after: u64,
    /// Wall time.
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Delete,
    Repack,
}

struct PackInfo {
    id: Id,
    size: u64,
    blobs: Vec<PackBlob>,
    /// Per blob: the copy of a used blob that is kept.
    used: Vec<bool>,
    used_blobs: u64,
    used_bytes: u64,
    unused_blobs: u64,
    unused_bytes: u64,
    has_tree: bool,
    fate: Fate,
}

struct Plan {
    snapshots: usize,
    blobs_used: u64,
    packs: Vec<PackInfo>,
    unreferenced: Vec<(Id, u64)>,
    old_index: Vec<Id>,
    superseded: Vec<Id>,
    bytes_before: u64,
}

fn refuse(what: String) -> Error {
    Error::Aborted(format!(
        "prune refused to run: {what}; nothing was changed. Run a check (with read_data) to see the damage and repair the repository first"
    ))
}

/// Finds the blobs the snapshots use, walking each tree once.
fn used_blobs(repo: &Repository, roots: Vec<(Id, Id)>) -> Result<IdSet<(BlobType, Id)>> {
    let mut used: IdSet<(BlobType, Id)> = IdSet::default();
    let mut queue: Vec<(Id, String)> = Vec::new();
    {
        let index = repo.index();
        for (sn, tree) in roots {
            if !index.contains(BlobType::Tree, &tree) {
                return Err(refuse(format!(
                    "the root tree {tree} of snapshot {sn} is not in the index"
                )));
            }
            if used.insert((BlobType::Tree, tree)) {
                queue.push((tree, format!("snapshot {}", sn.short())));
            }
        }
    }
    while let Some((tree_id, from)) = queue.pop() {
        let tree = repo.load_tree(&tree_id).map_err(|e| match e {
            Error::Backend(_) => e,
            e => refuse(format!(
                "tree {tree_id} (reached from {from}) cannot be read: {e}"
            )),
        })?;
        let index = repo.index();
        for node in &tree.nodes {
            match node.node_type {
                NodeType::File => {
                    for blob in node.content.iter().flatten() {
                        if !index.contains(BlobType::Data, blob) {
                            return Err(refuse(format!(
                                "tree {tree_id} references data blob {blob} (file {:?}), which is not in the index",
                                node.name
                            )));
                        }
                        used.insert((BlobType::Data, *blob));
                    }
                }
                NodeType::Dir => {
                    let Some(sub) = node.subtree else {
                        return Err(refuse(format!(
                            "directory {:?} in tree {tree_id} has no subtree",
                            node.name
                        )));
                    };
                    if !index.contains(BlobType::Tree, &sub) {
                        return Err(refuse(format!(
                            "tree {tree_id} references tree {sub} (directory {:?}), which is not in the index",
                            node.name
                        )));
                    }
                    if used.insert((BlobType::Tree, sub)) {
                        queue.push((sub, format!("tree {}", tree_id.short())));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(used)
}

fn make_plan(repo: &Repository, opts: &PruneOptions) -> Result<Plan> {
    // Snapshots first, then the index (restic's read order).
    let snapshot_ids = repo.snapshot_ids()?;
    let mut files = Vec::new();
    for (id, r) in repo.load_index_files()? {
        match r {
            Ok(f) => files.push((id, f)),
            Err(e) => return Err(refuse(format!("index file {id} is damaged ({e})"))),
        }
    }
    let old_index: Vec<Id> = files.iter().map(|(id, _)| *id).collect();
    let superseded_set = superseded_index_files(&files);
    // Only those still present (a `supersedes` list keeps naming files long
    // deleted).
    let superseded: Vec<Id> = old_index
        .iter()
        .filter(|id| superseded_set.contains(*id))
        .copied()
        .collect();
    let mut index = Index::new();
    let mut pack_blobs: IdMap<Id, Vec<PackBlob>> = IdMap::default();
    for (id, file) in &files {
        if superseded_set.contains(id) {
            continue;
        }
        let what = describe(FileType::Index, id);
        index.add_file(file, &what)?;
        for p in &file.packs {
            if let std::collections::hash_map::Entry::Vacant(slot) = pack_blobs.entry(p.id) {
                let mut blobs = p.pack_blobs(&what)?;
                blobs.sort_by_key(|b| b.offset);
                slot.insert(blobs);
            }
        }
    }
    drop(files);
    repo.replace_index(index);

    let stored: IdMap<Id, u64> = retry(|| repo.backend().list(FileType::Pack))?
        .into_iter()
        .collect();
    let bytes_before = stored.values().sum();
    let mut ids: Vec<&Id> = pack_blobs.keys().collect();
    ids.sort();
    for id in ids {
        let expected = expected_pack_size(&pack_blobs[id]);
        match stored.get(id) {
            None => {
                return Err(refuse(format!(
                    "pack {id} is listed in the index but does not exist"
                )))
            }
            Some(&size) if size != expected => {
                return Err(refuse(format!(
                    "pack {id} has {size} bytes, the index implies {expected}"
                )))
            }
            Some(_) => {}
        }
    }
    let mut unreferenced: Vec<(Id, u64)> = stored
        .iter()
        .filter(|(id, _)| !pack_blobs.contains_key(*id))
        .map(|(id, size)| (*id, *size))
        .collect();
    unreferenced.sort();

    let mut roots = Vec::with_capacity(snapshot_ids.len());
    for id in &snapshot_ids {
        let sn: Snapshot = repo
            .load_json(FileType::Snapshot, id)
            .map_err(|e| match e {
                Error::Backend(ref b) if !b.is_not_found() => e,
                e => refuse(format!("snapshot {id} cannot be read ({e})")),
            })?;
        roots.push((*id, sn.tree));
    }
    let used = used_blobs(repo, roots)?;

    // Packs whose blobs are all used come first, so a blob stored twice is
    // kept where it costs nothing.
    let mut packs: Vec<PackInfo> = pack_blobs
        .into_iter()
        .map(|(id, blobs)| PackInfo {
            id,
            size: stored.get(&id).copied().unwrap_or(0),
            used: vec![false; blobs.len()],
            has_tree: blobs.iter().any(|b| b.blob_type == BlobType::Tree),
            blobs,
            used_blobs: 0,
            used_bytes: 0,
            unused_blobs: 0,
            unused_bytes: 0,
            fate: Fate::Keep,
        })
        .collect();
    let referenced = |p: &PackInfo| {
        p.blobs
            .iter()
            .filter(|b| used.contains(&(b.blob_type, b.id)))
            .count() as u64
    };
    packs.sort_by_cached_key(|p| {
        let r = referenced(p);
        let total = p.blobs.len().max(1) as u64;
        // Fully used first, then by used share (descending), then id.
        (r != total, u64::MAX - r * 1_000_000 / total, p.id)
    });
    let mut placed: IdSet<(BlobType, Id)> = IdSet::default();
    for p in &mut packs {
        for (i, b) in p.blobs.iter().enumerate() {
            let key = (b.blob_type, b.id);
            if used.contains(&key) && placed.insert(key) {
                p.used[i] = true;
                p.used_blobs += 1;
                p.used_bytes += u64::from(b.length);
            } else {
                p.unused_blobs += 1;
                p.unused_bytes += u64::from(b.length);
            }
        }
    }

    let used_bytes: u64 = packs.iter().map(|p| p.used_bytes).sum();
    let unused_bytes: u64 = packs.iter().map(|p| p.unused_bytes).sum();
    let mut removed_unused = 0u64;
    let mut candidates = Vec::new();
    for (i, p) in packs.iter_mut().enumerate() {
        if p.used_blobs == 0 {
            p.fate = Fate::Delete;
            removed_unused += p.unused_bytes;
        } else if p.unused_blobs > 0 {
            candidates.push(i);
        }
    }
    // Tree packs first, then the largest unused share.
    candidates.sort_by(|&a, &b| {
        let (pa, pb) = (&packs[a], &packs[b]);
        pb.has_tree.cmp(&pa.has_tree).then_with(|| {
            let lhs = u128::from(pb.unused_bytes) * u128::from(pa.used_bytes);
            let rhs = u128::from(pa.unused_bytes) * u128::from(pb.used_bytes);
            lhs.cmp(&rhs).then(pa.id.cmp(&pb.id))
        })
    });
    let max_after = opts.max_unused.limit(used_bytes)?;
    let mut repack_bytes = 0u64;
    let mut repack_removed = 0u64;
    for i in candidates {
        let p = &mut packs[i];
        let reached_unused = unused_bytes - removed_unused - repack_removed < max_after;
        let reached_repack = opts
            .max_repack_bytes
            .is_some_and(|m| repack_bytes + p.used_bytes + p.unused_bytes >= m);
        let repack = !reached_repack && (p.has_tree || !reached_unused);
        if repack {
            p.fate = Fate::Repack;
            repack_bytes += p.used_bytes + p.unused_bytes;
            repack_removed += p.unused_bytes;
        }
    }
    packs.sort_by_key(|p| p.id);
    Ok(Plan {
        snapshots: snapshot_ids.len(),
        blobs_used: used.len() as u64,
        packs,
        unreferenced,
        old_index,
        superseded,
        bytes_before,
    })
}

/// Writes packs of copied blobs, one open pack per blob type.
struct Repacker<'a> {
    repo: &'a Repository,
    writers: [Option<PackWriter>; 2],
    pack_size: usize,
    written: Vec<(Id, Vec<PackBlob>, u64)>,
}

impl Repacker<'_> {
    fn add(&mut self, b: &PackBlob, raw: &[u8]) -> Result<()> {
        let slot = &mut self.writers[b.blob_type.index()];
        let pack_size = self.pack_size;
        let w = slot.get_or_insert_with(|| PackWriter::new(pack_size + (1 << 20)));
        w.add(b.blob_type, b.id, raw, b.uncompressed_length)?;
        if w.size() >= pack_size {
            if let Some(w) = slot.take() {
                self.write(w)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, w: PackWriter) -> Result<()> {
        let pack = w.finish(self.repo.key())?;
        retry(|| {
            self.repo
                .backend()
                .write(FileType::Pack, &pack.id, &pack.data)
        })?;
        self.written
            .push((pack.id, pack.blobs, pack.data.len() as u64));
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<(Id, Vec<PackBlob>, u64)>> {
        for t in [BlobType::Data, BlobType::Tree] {
            if let Some(w) = self.writers[t.index()].take() {
                if !w.is_empty() {
                    self.write(w)?;
                }
            }
        }
        Ok(self.written)
    }
}

fn interrupted(step: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| Error::Interrupted {
        operation: "prune",
        step: step.to_string(),
        source: Box::new(e),
    }
}

/// Step 4: copies the used blobs of the packs to repack into new packs.
fn repack(repo: &Repository, plan: &Plan) -> Result<Vec<(Id, Vec<PackBlob>, u64)>> {
    let mut rp = Repacker {
        repo,
        writers: [None, None],
        pack_size: repo.options().pack_size.max(64 * 1024) as usize,
        written: Vec::new(),
    };
    for p in plan.packs.iter().filter(|p| p.fate == Fate::Repack) {
        let data = retry(|| repo.backend().read(FileType::Pack, &p.id))?;
        for (b, used) in p.blobs.iter().zip(&p.used) {
            if !used {
                continue;
            }
            let start = b.offset as usize;
            let raw = data.get(start..start + b.length as usize).ok_or_else(|| {
                Error::corrupt(
                    format!("pack {}", p.id),
                    format!(
                        "the file ends before {} blob {} (offset {}, length {})",
                        b.blob_type, b.id, b.offset, b.length
                    ),
                )
            })?;
            let entry = IndexEntry {
                pack: p.id,
                blob_type: b.blob_type,
                offset: b.offset,
                length: b.length,
                uncompressed_length: b.uncompressed_length,
            };
            // Never copy a damaged blob into a new pack.
            repo.decode_blob(&b.id, &entry, raw)?;
            rp.add(b, raw)?;
        }
    }
    rp.finish()
}

fn remove_all(repo: &Repository, t: FileType, ids: &[Id]) -> Result<()> {
    for id in ids {
        match retry(|| repo.backend().remove(t, id)) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes unused data (see the module docs).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneSummary> {
    let started = Instant::now();
    // A bad percentage fails now, not after walking every snapshot.
    opts.max_unused.limit(0)?;
    let kind = if opts.dry_run {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    let lock = repo.lock_with(kind, opts.lock.clone())?;
    let plan = make_plan(repo, opts)?;

    let count = |f: Fate| plan.packs.iter().filter(|p| p.fate == f).count() as u64;
    let mut s = PruneSummary {
        dry_run: opts.dry_run,
        snapshots: plan.snapshots,
        blobs_used: plan.blobs_used,
        packs_before: plan.packs.len() as u64,
        packs_deleted: count(Fate::Delete),
        packs_repacked: count(Fate::Repack),
        unreferenced_packs_deleted: plan.unreferenced.len() as u64,
        bytes_before: plan.bytes_before,
        ..Default::default()
    };
    let kept = plan.packs.iter().filter(|p| p.fate == Fate::Keep);
    s.unused_blobs_kept = kept.clone().map(|p| p.unused_blobs).sum();
    s.bytes_unused_after = kept.clone().map(|p| p.unused_bytes).sum();
    let repacked_used: u64 = plan
        .packs
        .iter()
        .filter(|p| p.fate == Fate::Repack)
        .map(|p| p.used_blobs)
        .sum();
    s.blobs_kept = kept.clone().map(|p| p.blobs.len() as u64).sum::<u64>() + repacked_used;
    s.blobs_removed = plan
        .packs
        .iter()
        .filter(|p| p.fate != Fate::Keep)
        .map(|p| p.unused_blobs)
        .sum();
    let dropped: Vec<Id> = plan
        .packs
        .iter()
        .filter(|p| p.fate != Fate::Keep)
        .map(|p| p.id)
        .chain(plan.unreferenced.iter().map(|(id, _)| *id))
        .collect();
    let dropped_bytes: u64 = plan
        .packs
        .iter()
        .filter(|p| p.fate != Fate::Keep)
        .map(|p| p.size)
        .chain(plan.unreferenced.iter().map(|(_, size)| *size))
        .sum();
    let rewrite_index = s.packs_deleted + s.packs_repacked > 0;

    if opts.dry_run {
        // Estimate the new packs: the repacked blobs of each type, cut at the
        // pack size, each pack with its header.
        let pack_size = u64::from(repo.options().pack_size.max(64 * 1024));
        let mut new_bytes = 0u64;
        for t in [BlobType::Data, BlobType::Tree] {
            let blobs: Vec<PackBlob> = plan
                .packs
                .iter()
                .filter(|p| p.fate == Fate::Repack)
                .flat_map(|p| p.blobs.iter().zip(&p.used).filter(|(_, u)| **u))
                .map(|(b, _)| *b)
                .filter(|b| b.blob_type == t)
                .collect();
            let (mut packs, mut size) = (0u64, 0u64);
            for b in &blobs {
                size += u64::from(b.length);
                if size >= pack_size {
                    packs += 1;
                    size = 0;
                }
            }
            if size > 0 {
                packs += 1;
            }
            if packs > 0 {
                // One encrypted header and length field per pack.
                new_bytes +=
                    expected_pack_size(&blobs) + (packs - 1) * (crate::crypto::OVERHEAD as u64 + 4);
            }
            s.packs_written += packs;
        }
        s.bytes_after = plan.bytes_before - dropped_bytes + new_bytes;
        s.packs_after =
            plan.packs.len() as u64 - s.packs_deleted - s.packs_repacked + s.packs_written;
        s.index_files_written = if rewrite_index {
            s.blobs_kept
                .div_ceil(crate::index::MAX_BLOBS_PER_INDEX_FILE as u64)
        } else {
            0
        };
        s.index_files_deleted = if rewrite_index {
            plan.old_index.len() as u64
        } else {
            plan.superseded.len() as u64
        };
        s.bytes_freed = plan.bytes_before.saturating_sub(s.bytes_after);
        s.duration = started.elapsed();
        lock.release()?;
        return Ok(s);
    }

    let new_packs =
        repack(repo, &plan).map_err(interrupted("copying used blobs into new packs"))?;
    s.packs_written = new_packs.len() as u64;
    let new_bytes: u64 = new_packs.iter().map(|(_, _, size)| size).sum();

    if rewrite_index {
        let mut listed: Vec<(Id, Vec<PackBlob>)> = plan
            .packs
            .iter()
            .filter(|p| p.fate == Fate::Keep)
            .map(|p| (p.id, p.blobs.clone()))
            .collect();
        listed.extend(new_packs.iter().map(|(id, blobs, _)| (*id, blobs.clone())));
        let mut files = IndexFile::build(&listed);
        if let Some(last) = files.last_mut() {
            last.supersedes = plan.old_index.clone();
        }
        for f in &files {
            repo.save_json(FileType::Index, f)
                .map_err(interrupted("writing the new index"))?;
            s.index_files_written += 1;
        }
        remove_all(repo, FileType::Index, &plan.old_index)
            .map_err(interrupted("deleting the old index files"))?;
        s.index_files_deleted = plan.old_index.len() as u64;
    } else if !plan.superseded.is_empty() {
        remove_all(repo, FileType::Index, &plan.superseded)
            .map_err(interrupted("deleting superseded index files"))?;
        s.index_files_deleted = plan.superseded.len() as u64;
    }
    remove_all(repo, FileType::Pack, &dropped).map_err(interrupted("deleting unused packs"))?;

    repo.reload_index()?;
    s.packs_after = repo.index().pack_count() as u64;
    s.bytes_after = plan.bytes_before - dropped_bytes + new_bytes;
    s.bytes_freed = plan.bytes_before.saturating_sub(s.bytes_after);
    s.duration = started.elapsed();
    tracing::info!(
        packs_deleted = s.packs_deleted,
        packs_repacked = s.packs_repacked,
        unreferenced = s.unreferenced_packs_deleted,
        bytes_freed = s.bytes_freed,
        "prune finished"
    );
    lock.release()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unused_parses_like_restic() {
        assert_eq!("5%".parse::<MaxUnused>().unwrap(), MaxUnused::Percent(5.0));
        assert_eq!(
            "unlimited".parse::<MaxUnused>().unwrap(),
            MaxUnused::Unlimited
        );
        assert_eq!(
            "10M".parse::<MaxUnused>().unwrap(),
            MaxUnused::Bytes(10 << 20)
        );
        assert_eq!("123".parse::<MaxUnused>().unwrap(), MaxUnused::Bytes(123));
        for bad in ["100%", "-1%", "x%", "12q", ""] {
            assert!(bad.parse::<MaxUnused>().is_err(), "{bad}");
        }
        // 5% of the total after pruning: unused / (used + unused) <= 5%.
        assert_eq!(MaxUnused::Percent(5.0).limit(95_000).unwrap(), 5_000);
        assert_eq!(MaxUnused::Percent(0.0).limit(95_000).unwrap(), 0);
        assert!(MaxUnused::Percent(100.0).limit(1).is_err());
    }
}
