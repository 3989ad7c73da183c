//! Copying snapshots between repositories, like `restic copy`.
//!
//! The two repositories have different master keys, so every blob a snapshot
//! needs and the destination lacks is read from the source (decrypted and
//! verified), then compressed and encrypted again for the destination by a
//! [`crate::BlobSaver`], which deduplicates against the destination's index.
//! Blob ids are plaintext hashes, so trees and file contents keep their ids and
//! a copied tree is byte for byte the source's. Each snapshot is written only
//! after its blobs and their index files are (packs, index, snapshot), so an
//! interrupted copy leaves a consistent destination.
//!
//! The copy gets a new id (snapshot ids hash the encrypted file) with `parent`
//! cleared and `original` set to the source snapshot's id (or kept, if the
//! source was itself a copy), as restic 0.14 does. A source snapshot is skipped
//! when the destination already has a snapshot with the same original id and
//! the same time, tree, host, user, paths, tags and excludes (restic's test), so
//! copying twice adds nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{Id, IdSet};
use crate::lock::{LockKind, LockOptions};
use crate::pack::BlobType;
use crate::repo::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::Snapshot;
use crate::tree::{NodeType, Tree};

/// Options of [`copy_snapshots_with`].
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Lock timings and identity (a shared lock is taken on both repositories).
    pub lock: LockOptions,
    /// Threads copying data blobs (default: available parallelism, 2 to 8).
    pub workers: Option<usize>,
}

/// One source snapshot and its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedSnapshot {
    /// The snapshot in the source.
    pub source: Id,
    /// Its copy in the destination.
    pub destination: Id,
    /// True when the copy existed before (nothing was written for it).
    pub already_copied: bool,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// Every source snapshot considered, in the order handled (oldest first).
    pub snapshots: Vec<CopiedSnapshot>,
    /// Snapshots written to the destination.
    pub copied: usize,
    /// Snapshots skipped because the destination already had them.
    pub skipped: usize,
    /// Data blobs copied (the destination lacked them).
    pub data_blobs_copied: u64,
    /// Tree blobs copied.
    pub tree_blobs_copied: u64,
    /// Plaintext bytes of the blobs copied.
    pub bytes_copied: u64,
    /// Bytes added to the destination's packs (compressed and encrypted).
    pub bytes_added: u64,
    /// Packs written to the destination.
    pub packs_written: u64,
    /// Wall time.
    pub duration: Duration,
}

/// Copies the snapshots `ids` (all of the source's when empty) from `src` to
/// `dst` with default options. See the module docs.
pub fn copy_snapshots(src: &Repository, dst: &Repository, ids: &[Id]) -> Result<CopySummary> {
    copy_snapshots_with(src, dst, ids, &CopyOptions::default())
}

/// restic's test for "this destination snapshot is a copy of that one":
/// everything but `parent` and `original` matches.
fn similar(a: &Snapshot, b: &Snapshot) -> bool {
    let same_set =
        |x: &[String], y: &[String]| x.len() == y.len() && y.iter().all(|v| x.contains(v));
    a.time == b.time
        && a.tree == b.tree
        && a.hostname == b.hostname
        && a.username == b.username
        && a.uid == b.uid
        && a.gid == b.gid
        && a.excludes == b.excludes
        && same_set(&a.paths, &b.paths)
        && same_set(&a.tags, &b.tags)
}

fn workers(opts: &CopyOptions) -> usize {
    opts.workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8)
        })
        .max(1)
}

/// Walks the trees below `root` in `src`, saving the tree blobs `dst` lacks and
/// returning the data blobs it lacks.
fn copy_trees(
    src: &Repository,
    saver: &BlobSaver,
    root: Id,
    visited: &mut IdSet<Id>,
) -> Result<Vec<Id>> {
    let mut data = Vec::new();
    let mut wanted: IdSet<Id> = IdSet::default();
    let mut queue = vec![root];
    while let Some(id) = queue.pop() {
        if !visited.insert(id) {
            continue;
        }
        let raw = src.load_blob(BlobType::Tree, &id)?;
        let tree = Tree::from_blob(&raw, &format!("tree {id}"))?;
        // The raw bytes, not a re-encoding: the copy must hash to the same id.
        saver.save_with_id(BlobType::Tree, id, &raw)?;
        for node in &tree.nodes {
            match node.node_type {
                NodeType::File => {
                    for blob in node.content.iter().flatten() {
                        if !saver.is_known(BlobType::Data, blob) && wanted.insert(*blob) {
                            data.push(*blob);
                        }
                    }
                }
                NodeType::Dir => {
                    let sub = node.subtree.ok_or_else(|| {
                        Error::corrupt(
                            format!("tree {id}"),
                            format!("directory {:?} has no subtree", node.name),
                        )
                    })?;
                    queue.push(sub);
                }
                _ => {}
            }
        }
    }
    Ok(data)
}

/// Reads the blobs from `src` and saves them to `dst` on a few threads.
fn copy_data(
    src: &Repository,
    saver: &BlobSaver,
    mut blobs: Vec<Id>,
    threads: usize,
) -> Result<()> {
    // In pack order, so reads from one pack follow each other.
    {
        let index = src.index();
        blobs.sort_by_cached_key(|id| {
            index
                .lookup(BlobType::Data, id)
                .map(|e| (e.pack, e.offset))
                .unwrap_or_default()
        });
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.min(blobs.len()).max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = blobs.get(i) else { break };
                    let r = src
                        .load_blob(BlobType::Data, id)
                        .and_then(|data| saver.save_with_id(BlobType::Data, *id, &data));
                    if let Err(e) = r {
                        stop.store(true, Ordering::Relaxed);
                        first_err
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`copy_snapshots`] with explicit options.
pub fn copy_snapshots_with(
    src: &Repository,
    dst: &Repository,
    ids: &[Id],
    opts: &CopyOptions,
) -> Result<CopySummary> {
    let started = Instant::now();
    if src.config().id == dst.config().id {
        return Err(Error::InvalidArgument(format!(
            "{} and {} are the same repository (id {}); copy snapshots between two different repositories",
            src.location(),
            dst.location(),
            src.config().id
        )));
    }
    let src_lock = src.lock_with(LockKind::Shared, opts.lock.clone())?;
    let dst_lock = dst.lock_with(LockKind::Shared, opts.lock.clone())?;
    // The indexes may have changed since the repositories were opened (a
    // prune in particular): dedup must only trust what exists now.
    dst.reload_index()?;
    src.reload_index()?;

    let mut sources: Vec<(Id, Snapshot)> = if ids.is_empty() {
        src.list_snapshots()?
    } else {
        let present: IdSet<Id> = src.snapshot_ids()?.into_iter().collect();
        let mut unique = ids.to_vec();
        unique.sort();
        unique.dedup();
        let mut out = Vec::with_capacity(unique.len());
        for id in unique {
            if !present.contains(&id) {
                return Err(Error::NotFound {
                    what: format!("snapshot {id} in {}", src.location()),
                    hint: "nothing was copied; list the source's snapshots to find the right ids"
                        .into(),
                });
            }
            out.push((id, src.load_json::<Snapshot>(FileType::Snapshot, &id)?));
        }
        out
    };
    sources.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));

    // Destination snapshots by the id of the snapshot they are copies of (and by
    // their own id, so copying a copy back is recognised too).
    let mut by_original: HashMap<Id, Vec<(Id, Snapshot)>> = HashMap::new();
    for (id, sn) in dst.list_snapshots()? {
        if let Some(orig) = sn.original.filter(|o| !o.is_null()) {
            by_original.entry(orig).or_default().push((id, sn.clone()));
        }
        by_original.entry(id).or_default().push((id, sn));
    }

    let saver = dst.blob_saver();
    let threads = workers(opts);
    let mut visited: IdSet<Id> = IdSet::default();
    let mut summary = CopySummary::default();
    for (src_id, sn) in sources {
        let original = sn.original.filter(|o| !o.is_null()).unwrap_or(src_id);
        let existing = by_original
            .get(&original)
            .and_then(|list| list.iter().find(|(_, d)| similar(d, &sn)))
            .map(|(id, _)| *id);
        if let Some(dst_id) = existing {
            tracing::info!(source = %src_id, copy = %dst_id, "snapshot already copied; skipped");
            summary.skipped += 1;
            summary.snapshots.push(CopiedSnapshot {
                source: src_id,
                destination: dst_id,
                already_copied: true,
            });
            continue;
        }
        let data = copy_trees(src, &saver, sn.tree, &mut visited)?;
        copy_data(src, &saver, data, threads)?;
        saver.flush()?;
        let mut copy = sn.clone();
        copy.parent = None;
        copy.original = Some(original);
        let dst_id = dst.save_snapshot(&copy)?;
        tracing::info!(source = %src_id, copy = %dst_id, "snapshot copied");
        by_original
            .entry(original)
            .or_default()
            .push((dst_id, copy));
        summary.copied += 1;
        summary.snapshots.push(CopiedSnapshot {
            source: src_id,
            destination: dst_id,
            already_copied: false,
        });
    }
    let st = saver.stats();
    summary.data_blobs_copied = st.data_blobs;
    summary.tree_blobs_copied = st.tree_blobs;
    summary.bytes_copied = st.bytes_plain;
    summary.bytes_added = st.bytes_stored;
    summary.packs_written = st.packs;
    summary.duration = started.elapsed();
    dst_lock.release()?;
    src_lock.release()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn similarity_ignores_parent_original_and_order() {
        let mut a = Snapshot::new(Utc::now(), Id::hash(b"t"), vec!["/b".into(), "/a".into()]);
        a.tags = vec!["x".into(), "y".into()];
        let mut b = a.clone();
        b.paths.reverse();
        b.tags.reverse();
        b.parent = Some(Id::hash(b"p"));
        b.original = Some(Id::hash(b"o"));
        assert!(similar(&a, &b));
        b.hostname = "other".into();
        assert!(!similar(&a, &b));
        let mut c = a.clone();
        c.tree = Id::hash(b"u");
        assert!(!similar(&a, &c));
    }
}
