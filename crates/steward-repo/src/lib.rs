//! Steward's backup repositories: a reader and writer of the **restic repository
//! format, version 2** (zstd compression), so every backup Steward makes can be
//! listed, checked and restored with the `restic` binary, and Steward can read the
//! repositories restic makes.
//!
//! # Using it
//!
//! ```no_run
//! use std::sync::Arc;
//! use steward_repo::{backup, restore, BackupOptions, LocalBackend, Repository, RestoreOptions};
//!
//! # fn main() -> steward_repo::Result<()> {
//! let backend = Arc::new(LocalBackend::new("/srv/backups/db1"));
//! let repo = Repository::init(backend, "correct horse", Default::default())?;
//! let summary = backup(&repo, &["/var/lib/app"], &BackupOptions::default())?;
//! let (_, snapshot) = repo.load_snapshot(&summary.snapshot_id.to_hex())?;
//! restore(&repo, &snapshot, "/tmp/restored".as_ref(), &RestoreOptions::default())?;
//! # Ok(())
//! # }
//! ```
//!
//! Database dumps are streamed with [`backup_stream`] (no temporary file) and read
//! back in order with [`restore_file_to`]. [`check()`] and [`read_data`] verify a
//! repository the way `restic check` and `restic check --read-data` do.
//!
//! # Retention, pruning and copies
//!
//! * [`forget()`] applies a [`KeepPolicy`] (`keep_last`, `keep_hourly` ..
//!   `keep_yearly`, `keep_within`, `keep_within_daily` and friends, `keep_tags`)
//!   to each group of snapshots ([`GroupBy`], by default host and paths) with
//!   restic 0.14's semantics, reports every decision with its reasons
//!   ([`ForgetPlan`]) and removes the snapshots not kept under an exclusive lock.
//!   [`apply_policy`] is the pure decision; an empty policy keeps everything.
//!   [`Repository::remove_snapshots`] removes snapshots by id.
//! * [`prune()`] deletes the data no snapshot references: packs with no used blob
//!   are deleted, partly used packs are repacked (trees always, data until at
//!   most 5% of the space is unused, restic's default), a new index superseding
//!   the old one is written before anything is deleted, so a crash at any step
//!   leaves a repository that checks clean (with at worst unreferenced packs that
//!   the next prune removes). It takes an exclusive lock, so it never runs while
//!   a backup (shared lock) is writing. A dry run reports what it would do.
//! * [`copy_snapshots`] copies snapshots with the trees and data they need into
//!   another repository (different key: blobs are decrypted, verified and
//!   re-encrypted, and deduplicated against the destination), recording the
//!   source id in `original` as `restic copy` does, so copying twice adds nothing.
//!
//! # Format, briefly
//!
//! * Every file but the key files is `IV || AES-256-CTR ciphertext || Poly1305-AES
//!   MAC` ([`crypto`]); key files wrap the master key with a scrypt-derived key
//!   ([`key`]).
//! * File contents are cut into content-defined chunks ([`chunker`]), each chunk a
//!   *data blob* named by the SHA-256 of its plaintext; directories are *tree
//!   blobs* (JSON, [`tree`]). Blobs are compressed with zstd when that helps,
//!   encrypted, and packed into *pack files* with an encrypted header at the end
//!   ([`pack`]).
//! * *Index files* say which pack holds each blob ([`index`]); *snapshots* point at
//!   a root tree ([`snapshot`]); *locks* coordinate writers ([`lock`]). All of
//!   these are JSON, compressed and encrypted ([`file`](mod@file)), named by the SHA-256 of
//!   their stored bytes.
//! * Storage is behind the [`Backend`] trait; [`LocalBackend`] is restic's local
//!   directory layout.
//!
//! Write ordering follows restic: packs, then index files, then the snapshot, so a
//! crash at any point leaves a valid repository (at worst with unreferenced packs).
//! Index files named in a newer index file's `supersedes` list (left by an
//! interrupted prune) are ignored when the index is loaded.
//!
//! # Performance
//!
//! Measured with `examples/bench.rs` (release build, 2 cores, data in the page
//! cache, repository on the same local disk, zstd level 1, the default then; it is
//! level 3 now, see bench/README.md for the side-by-side figures of `steward repo`):
//!
//! | data | Steward backup | restic 0.14 backup | Steward restore | restic restore |
//! |---|---|---|---|---|
//! | 300 MiB SQL-like text | ~290 MiB/s (repo 69 MiB) | ~110 MiB/s (71 MiB) | ~830 MiB/s | ~250 MiB/s |
//! | 400 MiB, 40% random | ~260 MiB/s (repo 175 MiB) | ~150 MiB/s (173 MiB) | ~740 MiB/s | ~270 MiB/s |
//!
//! Numbers vary by ±40% between runs on a busy virtual disk; an unchanged second
//! backup of either takes about 0.2 s (most of it the lock's re-check delay).
//!
//! # Not implemented (yet)
//!
//! Extended attributes (read and written back to JSON, but not captured or
//! restored), hard-link detection (each link is stored as a file), restic's Rabin
//! chunker (this crate uses FastCDC, so a file backed up by both restic and
//! Steward dedups only where chunk boundaries happen to agree), index and snapshot
//! repair (`rebuild-index`, `repair snapshots`: prune refuses to run on a damaged
//! repository instead), prune's `--repack-small` and `--repack-uncompressed`, and
//! the "keep all" (`-1`) counts of later restic versions.
#![forbid(unsafe_code)]

pub mod archiver;
pub mod backend;
pub mod check;
pub mod chunker;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod file;
pub mod forget;
pub mod id;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod prune;
pub mod repo;
pub mod restorer;
pub mod saver;
pub mod snapshot;
pub mod sys;
pub mod tree;

pub use archiver::{
    backup, backup_stream, BackupOptions, BackupSummary, ParentSelection, Progress, ProgressFn,
};
pub use backend::local::LocalBackend;
pub use backend::{Backend, BackendError, FileType};
pub use check::{check, read_data, CheckProblem, CheckReport, ReadDataSubset};
pub use config::Config;
pub use copy::{copy_snapshots, copy_snapshots_with, CopiedSnapshot, CopyOptions, CopySummary};
pub use crypto::{KdfParams, MasterKey};
pub use error::{Error, Result};
pub use file::BlobScratch;
pub use forget::{
    apply_policy, forget, ForgetGroup, ForgetOptions, ForgetPlan, ForgetReport, GroupBy, GroupKey,
    KeepPolicy, KeepReason, Period, PolicyTimeZone, RetentionDuration, SnapshotDecision,
    WithinFrom,
};
pub use id::Id;
pub use index::{Index, IndexEntry};
pub use lock::{LockInfo, LockKind, LockOptions, RepoLock};
pub use pack::{BlobType, PackBlob};
pub use prune::{prune, MaxUnused, PruneOptions, PruneSummary};
pub use repo::{InitOptions, RepoOptions, Repository};
pub use restorer::{restore, restore_file_to, RestoreOptions, RestoreSummary};
pub use saver::{BlobSaver, SaverStats};
pub use snapshot::Snapshot;
pub use tree::{Node, NodeType, Tree};
