//! [`BlobSaver`]: dedups, compresses, encrypts and packs new blobs.
//!
//! A saver is shared by worker threads (`&self` methods, cheap `Clone`). Each blob
//! is checked against the repository index and against the blobs this saver has
//! already taken (so two threads saving the same chunk store it once), compressed
//! with zstd unless that does not make it smaller, encrypted, and appended to the
//! open pack of its type (data and tree blobs never share a pack). Data packs are
//! written straight into a file the backend stages for them ([`Backend::stage`]: a
//! temporary file for the local backend, so a pack is never held in memory); tree
//! packs, and every pack of a backend that cannot stage, are built in a recycled
//! buffer. A full pack goes to the saver's writer thread (through a channel holding
//! one pack), which finishes it (header, hash) and stores it durably (fsync, rename)
//! while the workers go on compressing: compute never waits on fsync.
//! [`BlobSaver::flush`] writes the partly filled packs, waits for the writer, and then
//! writes the index files describing every pack written: only after it returns may a
//! snapshot referencing these blobs be saved. A failed pack write stops the saver: the
//! next save returns the write's own error (e.g. the disk is full), not a generic one.
//!
//! [`Backend::stage`]: crate::backend::Backend::stage

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};

use crate::backend::FileType;
use crate::crypto::{IV_LEN, MAC_LEN};
use crate::error::{Error, Result};
use crate::file::{compress_into, looks_incompressible};
use crate::id::{Id, IdSet};
use crate::index::IndexFile;
use crate::pack::{BlobType, PackBlob, PackWriter};
use crate::repo::{retry, Repository};

/// Largest per-thread sealing buffer kept between blobs (chunks are at most 8 MiB).
const MAX_KEPT_SEAL_BUFFER: usize = 16 << 20;

thread_local! {
    /// The buffer a thread seals its blobs in, kept between blobs.
    static SEAL: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What a saver has written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaverStats {
    /// New data blobs.
    pub data_blobs: u64,
    /// New tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of the new blobs.
    pub bytes_plain: u64,
    /// Bytes the new blobs take in packs (compressed and encrypted).
    pub bytes_stored: u64,
    /// Packs written.
    pub packs: u64,
    /// Data packs written.
    pub data_packs: u64,
    /// Index files written.
    pub index_files: u64,
}

#[derive(Default)]
struct Counters {
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_plain: AtomicU64,
    bytes_stored: AtomicU64,
    packs: AtomicU64,
    data_packs: AtomicU64,
    index_files: AtomicU64,
}

/// Packs written but not yet in an index file.
type Pending = Mutex<Vec<(Id, Vec<PackBlob>)>>;

/// The writer thread and the way to hand it packs.
struct Writer {
    tx: Sender<(BlobType, PackWriter)>,
    thread: JoinHandle<Result<()>>,
}

struct Shared {
    repo: Repository,
    packers: [Mutex<Option<PackWriter>>; 2],
    seen: Mutex<IdSet<(BlobType, Id)>>,
    pending: Arc<Pending>,
    counters: Arc<Counters>,
    level: Option<i32>,
    pack_size: usize,
    writer: Mutex<Option<Writer>>,
    /// Set by the writer thread when a pack write failed.
    failed: Arc<AtomicBool>,
    /// Pack buffers written and given back, for the next packs (no fresh 17 MiB
    /// allocation per pack).
    pool: Arc<Pool>,
}

/// Spare pack buffers.
type Pool = Mutex<Vec<Vec<u8>>>;

/// Buffers kept in the pool at most (the open, queued and writing packs).
const POOL_MAX: usize = 3;

/// Finishes `pw` and stores it; records it as pending and counts it.
fn store_pack(
    repo: &Repository,
    pending: &Pending,
    counters: &Counters,
    pool: &Pool,
    t: BlobType,
    pw: PackWriter,
) -> Result<()> {
    let mut pack = pw.finish(repo.key())?;
    match pack.staged.take() {
        Some(staged) => repo.backend().commit(FileType::Pack, &pack.id, staged)?,
        None => retry(|| repo.backend().write(FileType::Pack, &pack.id, &pack.data))?,
    }
    repo.add_to_index(pack.id, &pack.blobs);
    {
        let mut spare = lock(pool);
        if spare.len() < POOL_MAX && pack.data.capacity() > 0 {
            let mut buf = std::mem::take(&mut pack.data);
            buf.clear();
            spare.push(buf);
        }
    }
    lock(pending).push((pack.id, pack.blobs));
    counters.packs.fetch_add(1, Ordering::Relaxed);
    if t == BlobType::Data {
        counters.data_packs.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

impl Shared {
    /// Hands a full pack to the writer thread (starting it if needed).
    fn send(&self, t: BlobType, pw: PackWriter) -> Result<()> {
        let tx = {
            let mut slot = lock(&self.writer);
            if slot.is_none() {
                let (tx, rx) = bounded::<(BlobType, PackWriter)>(1);
                let repo = self.repo.clone();
                let pending = self.pending.clone();
                let counters = self.counters.clone();
                let failed = self.failed.clone();
                let pool = self.pool.clone();
                let thread = std::thread::Builder::new()
                    .name("pack-writer".into())
                    .spawn(move || -> Result<()> {
                        let mut first: Option<Error> = None;
                        for (t, pw) in rx.iter() {
                            if first.is_some() {
                                continue;
                            }
                            if let Err(e) = store_pack(&repo, &pending, &counters, &pool, t, pw) {
                                failed.store(true, Ordering::Relaxed);
                                first = Some(e);
                            }
                        }
                        first.map_or(Ok(()), Err)
                    })
                    .map_err(|e| Error::Aborted(format!("cannot start the pack writer: {e}")))?;
                *slot = Some(Writer { tx, thread });
            }
            slot.as_ref().map(|w| w.tx.clone())
        };
        match tx {
            Some(tx) if tx.send((t, pw)).is_ok() => Ok(()),
            _ => Err(self.writer_error()),
        }
    }

    /// Stops the writer thread and returns what it ended with.
    fn stop_writer(&self) -> Result<()> {
        let w = lock(&self.writer).take();
        match w {
            None => Ok(()),
            Some(Writer { tx, thread }) => {
                drop(tx);
                thread
                    .join()
                    .unwrap_or_else(|_| Err(Error::Aborted("the pack writer panicked".into())))
            }
        }
    }

    /// The error that stopped the writer (the first caller gets the real one).
    fn writer_error(&self) -> Error {
        match self.stop_writer() {
            Err(e) => e,
            Ok(()) => Error::Aborted("an earlier pack write failed".into()),
        }
    }
}

impl Drop for Shared {
    /// A saver dropped without a successful flush (the backup failed) may have
    /// written packs whose blobs are already in the in-memory index. Index them
    /// now, so later backups through the same handle that dedup against them stay
    /// valid; if even that fails, forget them.
    fn drop(&mut self) {
        // Packs still queued are written (or fail) before the pending list is read.
        let _ = self.stop_writer();
        let pending = std::mem::take(&mut *lock(&self.pending));
        if pending.is_empty() {
            return;
        }
        for file in IndexFile::build(&pending) {
            if let Err(e) = self.repo.save_json(FileType::Index, &file) {
                tracing::warn!(error = %e, "could not index the packs of an interrupted backup; they will be ignored");
                let ids: Vec<Id> = pending.iter().map(|(id, _)| *id).collect();
                self.repo.remove_from_index(&ids);
                return;
            }
        }
    }
}

/// Packs blobs into a repository. See the module docs.
#[derive(Clone)]
pub struct BlobSaver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BlobSaver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobSaver")
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BlobSaver {
    pub(crate) fn new(repo: Repository) -> Self {
        let level = repo.compression();
        let pack_size = repo.options().pack_size.max(64 * 1024) as usize;
        BlobSaver {
            shared: Arc::new(Shared {
                repo,
                packers: [Mutex::new(None), Mutex::new(None)],
                seen: Mutex::new(IdSet::default()),
                pending: Arc::new(Mutex::new(Vec::new())),
                counters: Arc::new(Counters::default()),
                level,
                pack_size,
                writer: Mutex::new(None),
                failed: Arc::new(AtomicBool::new(false)),
                pool: Arc::new(Mutex::new(Vec::new())),
            }),
        }
    }

    /// Saves a blob, computing its id. Returns the id and whether it was new.
    pub fn save(&self, t: BlobType, data: &[u8]) -> Result<(Id, bool)> {
        let id = Id::hash(data);
        let new = self.save_with_id(t, id, data)?;
        Ok((id, new))
    }

    /// True when the blob is already stored or being stored.
    pub fn is_known(&self, t: BlobType, id: &Id) -> bool {
        self.shared.repo.index().contains(t, id) || lock(&self.shared.seen).contains(&(t, *id))
    }

    /// Saves a blob whose id (SHA-256 of `data`) the caller computed. Returns
    /// false when it was already known.
    pub fn save_with_id(&self, t: BlobType, id: Id, data: &[u8]) -> Result<bool> {
        let sh = &self.shared;
        if sh.repo.index().contains(t, &id) {
            return Ok(false);
        }
        if !lock(&sh.seen).insert((t, id)) {
            return Ok(false);
        }
        match self.pack_blob(t, id, data) {
            Ok(()) => Ok(true),
            Err(e) => {
                lock(&sh.seen).remove(&(t, id));
                Err(e)
            }
        }
    }

    fn pack_blob(&self, t: BlobType, id: Id, data: &[u8]) -> Result<()> {
        let sh = &self.shared;
        if sh.failed.load(Ordering::Relaxed) {
            return Err(sh.writer_error());
        }
        let plain_len = u32::try_from(data.len()).map_err(|_| {
            Error::InvalidArgument(format!("blob {} is larger than 4 GiB", id.short()))
        })?;
        // The blob is compressed (or copied) into this thread's buffer after room for the
        // IV, encrypted there and sealed with its MAC: no allocation per blob.
        let mut buf = SEAL.take();
        let need = IV_LEN + data.len() + MAC_LEN;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let compressed = match sh.level {
            Some(level) if data.len() > 1 && !looks_incompressible(data, level) => {
                compress_into(data, level, &mut buf[IV_LEN..IV_LEN + data.len() - 1])
            }
            _ => None,
        };
        let (len, uncompressed) = match compressed {
            Some(n) => (n, Some(plain_len)),
            None => {
                buf[IV_LEN..IV_LEN + data.len()].copy_from_slice(data);
                (data.len(), None)
            }
        };
        let sealed = sh.repo.key().seal_in_place(&mut buf, len);
        let full = {
            let mut slot = lock(&sh.packers[t.index()]);
            if slot.is_none() {
                // Data packs go straight to a staged file when the backend has them
                // (nothing held in memory); otherwise into a (recycled) buffer.
                let staged = match t {
                    BlobType::Data => sh.repo.backend().stage(FileType::Pack)?,
                    BlobType::Tree => None,
                };
                let capacity = sh.pack_size + (1 << 20);
                *slot = Some(match (staged, lock(&sh.pool).pop()) {
                    (Some(staged), _) => PackWriter::staged(staged),
                    (None, Some(buf)) => PackWriter::with_buffer(buf, capacity),
                    (None, None) => PackWriter::new(capacity),
                });
            }
            let Some(pw) = slot.as_mut() else {
                return Err(Error::Aborted("internal error: no open pack".into()));
            };
            pw.add(t, id, &buf[..sealed], uncompressed)?;
            if pw.size() >= sh.pack_size {
                slot.take()
            } else {
                None
            }
        };
        // A very large blob's buffer is not kept (nor is one whose blob failed above).
        if buf.len() <= MAX_KEPT_SEAL_BUFFER {
            SEAL.set(buf);
        }
        let c = &sh.counters;
        match t {
            BlobType::Data => c.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobType::Tree => c.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        c.bytes_plain
            .fetch_add(u64::from(plain_len), Ordering::Relaxed);
        c.bytes_stored.fetch_add(sealed as u64, Ordering::Relaxed);
        if let Some(pw) = full {
            sh.send(t, pw)?;
        }
        Ok(())
    }

    /// Writes the open packs, then index files for every pack written since the
    /// last flush. Call when no other thread is saving through this saver.
    /// Returns the ids of the index files written.
    pub fn flush(&self) -> Result<Vec<Id>> {
        let sh = &self.shared;
        // Wait for the packs handed to the writer; a failed write is the flush's error.
        sh.stop_writer()?;
        if sh.failed.load(Ordering::Relaxed) {
            return Err(Error::Aborted("an earlier pack write failed".into()));
        }
        for t in [BlobType::Data, BlobType::Tree] {
            let pw = lock(&sh.packers[t.index()]).take();
            if let Some(pw) = pw {
                if !pw.is_empty() {
                    store_pack(&sh.repo, &sh.pending, &sh.counters, &sh.pool, t, pw)?;
                }
            }
        }
        let pending = std::mem::take(&mut *lock(&sh.pending));
        let files = IndexFile::build(&pending);
        let mut ids = Vec::with_capacity(files.len());
        for file in &files {
            match sh.repo.save_json(FileType::Index, file) {
                Ok(id) => {
                    ids.push(id);
                    sh.counters.index_files.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Keep the packs pending so a retried flush indexes them.
                    lock(&sh.pending).extend(pending);
                    return Err(e);
                }
            }
        }
        Ok(ids)
    }

    /// Counters so far.
    pub fn stats(&self) -> SaverStats {
        let c = &self.shared.counters;
        SaverStats {
            data_blobs: c.data_blobs.load(Ordering::Relaxed),
            tree_blobs: c.tree_blobs.load(Ordering::Relaxed),
            bytes_plain: c.bytes_plain.load(Ordering::Relaxed),
            bytes_stored: c.bytes_stored.load(Ordering::Relaxed),
            packs: c.packs.load(Ordering::Relaxed),
            data_packs: c.data_packs.load(Ordering::Relaxed),
            index_files: c.index_files.load(Ordering::Relaxed),
        }
    }
}
