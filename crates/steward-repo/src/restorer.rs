//! Restores: a snapshot (or a path in it) into a directory ([`restore`]), or one
//! file's content streamed to a writer ([`restore_file_to`]).
//!
//! [`restore`] first walks the snapshot's trees and creates directories, symlinks
//! and empty files, collecting which blob goes where (a file with content is created
//! by the first worker that writes into it, so file creation runs in parallel). It then
//! works pack by pack, several packs in parallel but a bounded number in flight,
//! reading only the byte ranges that hold needed blobs (adjacent blobs in one read,
//! at most 4 MiB per read), decrypting and verifying each blob (SHA-256) and
//! writing it with positional writes into every file and offset that uses it.
//! Memory stays bounded by the number of packs in flight whatever the size of the
//! repository. What is written is dropped from the page cache once on its way to
//! disk (see `CacheDropper`), so a large restore does not evict the host's working
//! set. Finally modes, owners (when running as root) and times are set,
//! directories last and deepest first so their mtimes stick.
//!
//! Names from the repository are checked before use: a node named `..`, `.`, or
//! containing `/` or NUL is refused as corrupt, so a hostile repository cannot
//! write outside the target.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::bounded;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{Id, IdMap};
use crate::index::IndexEntry;
use crate::pack::BlobType;
use crate::repo::{retry, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{unix_mode_from_go, Node, NodeType};

/// Largest single read from a pack: 4 MiB keeps a restore's memory low (each worker
/// holds one read); 32 MiB (whole packs) peaked at 174 MiB on the benchmark against 63
/// to 85 MiB now, with no loss of speed on a local disk.
const MAX_READ: u64 = 4 << 20;
/// Gap between needed blobs below which they are fetched in one read.
const MAX_GAP: u64 = 1 << 20;
/// Deepest directory nesting restored (a hostile repository could otherwise
/// exhaust the stack).
const MAX_DEPTH: usize = 1024;

/// Options of a restore.
#[derive(Clone, Default)]
pub struct RestoreOptions {
    /// Restore only this path of the snapshot (e.g. `/var/lib/db`). A directory's
    /// contents go directly into the target; a file goes to `target/<name>`.
    pub sub_path: Option<String>,
    /// Packs processed at once (default: available parallelism, at least 2).
    pub workers: Option<usize>,
    /// Called once planning is done (with `bytes_total`) and after each blob written.
    pub progress: Option<crate::archiver::ProgressFn>,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("sub_path", &self.sub_path)
            .field("workers", &self.workers)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What the workers count as they go, for [`RestoreOptions::progress`].
struct Counters {
    bytes_done: AtomicU64,
    files_done: AtomicU64,
    bytes_total: u64,
    progress: Option<crate::archiver::ProgressFn>,
}

impl Counters {
    fn report(&self) {
        if let Some(p) = &self.progress {
            p(&crate::archiver::Progress {
                bytes_done: self.bytes_done.load(Ordering::Relaxed),
                files_done: self.files_done.load(Ordering::Relaxed),
                bytes_total: Some(self.bytes_total),
            });
        }
    }

    /// `len` bytes were written into `file`.
    fn wrote(&self, file: &FileJob, len: u64) {
        self.bytes_done.fetch_add(len, Ordering::Relaxed);
        if file.pending.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.files_done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Regular files restored.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Other nodes (fifos, devices) created.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// Packs read.
    pub packs_read: u64,
    /// Wall time.
    pub duration: Duration,
    /// Problems that did not stop the restore (e.g. ownership not settable).
    pub warnings: Vec<String>,
}

struct FileJob {
    path: PathBuf,
    /// Blob writes into it still to come (one per content entry): done at zero.
    pending: std::sync::atomic::AtomicU32,
}

struct Target {
    file: u32,
    offset: u64,
}

struct BlobJob {
    id: Id,
    entry: IndexEntry,
    targets: Vec<Target>,
}

#[derive(Default)]
struct Plan {
    files: Vec<FileJob>,
    /// pack -> blob id -> job.
    packs: IdMap<Id, IdMap<Id, BlobJob>>,
    /// (path, node) in creation order; metadata is applied in reverse.
    meta: Vec<(PathBuf, Node)>,
    summary: RestoreSummary,
}

fn check_name(node: &Node, tree: &Id) -> Result<()> {
    if node.has_safe_name() {
        Ok(())
    } else {
        Err(Error::corrupt(
            format!("tree {tree}"),
            format!(
                "it holds a node named {:?}, which is not a valid file name",
                node.name
            ),
        ))
    }
}

struct Planner<'r> {
    repo: &'r Repository,
    plan: Plan,
    reloaded: bool,
}

impl Planner<'_> {
    fn lookup(&mut self, id: &Id) -> Result<IndexEntry> {
        if let Some(e) = self.repo.lookup_blob(BlobType::Data, id) {
            return Ok(e);
        }
        if !self.reloaded {
            // A backup may have finished after the index was loaded.
            self.reloaded = true;
            self.repo.reload_index()?;
            if let Some(e) = self.repo.lookup_blob(BlobType::Data, id) {
                return Ok(e);
            }
        }
        Err(Error::NotFound {
            what: format!("data blob {id}"),
            hint: "the snapshot references data the index does not list; run a check (the repository is damaged or a backup is still being written)".into(),
        })
    }

    fn add_node(&mut self, path: PathBuf, node: &Node, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::corrupt(
                format!("snapshot directory {}", path.display()),
                format!("directories are nested more than {MAX_DEPTH} deep"),
            ));
        }
        // Metadata is applied at the end; the content list is not needed for it.
        let meta_node = || Node {
            content: None,
            ..node.clone()
        };
        match node.node_type {
            NodeType::Dir => {
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                    Err(e) => return Err(Error::io("create directory", &path, e)),
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io("set permissions of", &path, e))?;
                self.plan.summary.dirs += 1;
                self.plan.meta.push((path.clone(), meta_node()));
                if let Some(sub) = node.subtree {
                    let tree = self.repo.load_tree(&sub)?;
                    for child in &tree.nodes {
                        check_name(child, &sub)?;
                        self.add_node(path.join(&child.name), child, depth + 1)?;
                    }
                }
            }
            NodeType::File => {
                // Never write through a symlink that happens to be in the way.
                if let Ok(m) = fs::symlink_metadata(&path) {
                    if m.is_dir() {
                        return Err(Error::io(
                            "create",
                            &path,
                            std::io::Error::other("a directory is in the way of a file"),
                        ));
                    }
                    fs::remove_file(&path).map_err(|e| Error::io("replace", &path, e))?;
                }
                let file_no = self.plan.files.len() as u32;
                let mut offset = 0u64;
                for id in node.content.iter().flatten() {
                    let entry = self.lookup(id)?;
                    crate::repo::check_entry(id, &entry)?;
                    let job = self
                        .plan
                        .packs
                        .entry(entry.pack)
                        .or_default()
                        .entry(*id)
                        .or_insert_with(|| BlobJob {
                            id: *id,
                            entry,
                            targets: Vec::new(),
                        });
                    job.targets.push(Target {
                        file: file_no,
                        offset,
                    });
                    offset += u64::from(entry.data_length());
                }
                if offset != node.size {
                    self.plan.summary.warnings.push(format!(
                        "{}: the snapshot records {} bytes but its blobs hold {offset}; restored the blobs",
                        path.display(),
                        node.size
                    ));
                }
                if offset == 0 {
                    // Nothing will write to it. A file with content is made by the
                    // first worker that writes to it, so creating files (slow on a
                    // busy file system) runs in parallel with the rest of the work.
                    create_file(&path)?;
                }
                self.plan.summary.files += 1;
                self.plan.summary.bytes_written += offset;
                let pending =
                    u32::try_from(node.content.as_ref().map_or(0, Vec::len)).map_err(|_| {
                        Error::corrupt(
                            format!("file {}", path.display()),
                            "more than 4 billion blobs",
                        )
                    })?;
                self.plan.files.push(FileJob {
                    path: path.clone(),
                    pending: pending.into(),
                });
                self.plan.meta.push((path, meta_node()));
            }
            NodeType::Symlink => {
                let target = node.link_target.clone().unwrap_or_default();
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {
                        return Err(Error::io(
                            "replace",
                            &path,
                            std::io::Error::other("a directory is in the way of a symlink"),
                        ))
                    }
                    Ok(_) => fs::remove_file(&path).map_err(|e| Error::io("replace", &path, e))?,
                    Err(_) => {}
                }
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| Error::io("create symlink", &path, e))?;
                self.plan.summary.symlinks += 1;
                self.plan.meta.push((path, meta_node()));
            }
            NodeType::Fifo => {
                let _ = fs::remove_file(&path);
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| Error::io("create fifo", &path, std::io::Error::from(e)))?;
                self.plan.summary.others += 1;
                self.plan.meta.push((path, meta_node()));
            }
            NodeType::Dev | NodeType::Chardev => {
                if crate::sys::uid() != 0 {
                    self.plan.summary.warnings.push(format!(
                        "{}: device nodes can only be created as root; skipped",
                        path.display()
                    ));
                    return Ok(());
                }
                let kind = if node.node_type == NodeType::Dev {
                    nix::sys::stat::SFlag::S_IFBLK
                } else {
                    nix::sys::stat::SFlag::S_IFCHR
                };
                let _ = fs::remove_file(&path);
                nix::sys::stat::mknod(
                    &path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    node.device as nix::libc::dev_t,
                )
                .map_err(|e| Error::io("create device", &path, std::io::Error::from(e)))?;
                self.plan.summary.others += 1;
                self.plan.meta.push((path, meta_node()));
            }
            _ => {
                self.plan.summary.warnings.push(format!(
                    "{}: {} nodes are not restored",
                    path.display(),
                    node.node_type.as_str()
                ));
            }
        }
        Ok(())
    }
}

/// Opens a file being restored for writing, creating it (0600 until its metadata is
/// applied) if it is not there yet. Never truncates: several workers write into it.
fn create_file(path: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

/// Splits a pack's needed blobs (sorted by offset) into reads.
fn group_reads(mut blobs: Vec<BlobJob>) -> Vec<Vec<BlobJob>> {
    blobs.sort_by_key(|b| b.entry.offset);
    let mut groups: Vec<Vec<BlobJob>> = Vec::new();
    for b in blobs {
        let start = u64::from(b.entry.offset);
        let end = start + u64::from(b.entry.length);
        if let Some(g) = groups.last_mut() {
            let gstart = u64::from(g[0].entry.offset);
            let last = &g[g.len() - 1];
            let gend = u64::from(last.entry.offset) + u64::from(last.entry.length);
            if start >= gend && start - gend <= MAX_GAP && end - gstart <= MAX_READ {
                g.push(b);
                continue;
            }
        }
        groups.push(vec![b]);
    }
    groups
}

/// What a restore worker reuses from read to read.
#[derive(Default)]
struct WorkerScratch {
    raw: Vec<u8>,
    blob: crate::file::BlobScratch,
    written: CacheDropper,
}

/// Bytes a worker lets its writes hold in the page cache before it asks the kernel to
/// drop the oldest (by then written back).
const CACHE_WINDOW: u64 = 16 << 20;
/// Most written ranges a worker remembers (each holds its file open).
const CACHE_RANGES: usize = 64;

/// Keeps a restore from filling the page cache with what it writes.
///
/// A restore writes each byte once and does not read it back; left in the cache, its
/// pages push the host's working set (a database's hot pages) out of memory, and the
/// kernel must find a fresh page for every 4 KiB written: on the benchmark's VM that
/// first touch cost more CPU than all of the restore's own work. So each write is
/// followed by `POSIX_FADV_DONTNEED` on its range, which starts its writeback, and once
/// a worker has more than [`CACHE_WINDOW`] bytes outstanding, the oldest range gets a
/// second one, which drops its pages (clean by then): the next writes reuse them. Pages
/// still being written back stay cached; nothing waits for the disk. Advice is only
/// advice: where the kernel or file system ignores it, the restore is the same, only
/// cached.
#[derive(Default)]
struct CacheDropper {
    ranges: std::collections::VecDeque<(fs::File, u64, u64)>,
    outstanding: u64,
}

impl CacheDropper {
    /// `len` bytes were just written at `offset` of `file`.
    fn written(&mut self, file: fs::File, offset: u64, len: u64) {
        crate::sys::drop_cached(&file, offset, len);
        self.ranges.push_back((file, offset, len));
        self.outstanding += len;
        while self.outstanding > CACHE_WINDOW || self.ranges.len() > CACHE_RANGES {
            let Some((f, off, l)) = self.ranges.pop_front() else {
                break;
            };
            crate::sys::drop_cached(&f, off, l);
            self.outstanding -= l;
        }
    }
}

fn restore_pack(
    repo: &Repository,
    pack: &Id,
    blobs: Vec<BlobJob>,
    files: &[FileJob],
    scratch: &mut WorkerScratch,
    counters: &Counters,
) -> Result<()> {
    for group in group_reads(blobs) {
        let start = u64::from(group[0].entry.offset);
        let last = &group[group.len() - 1];
        let end = u64::from(last.entry.offset) + u64::from(last.entry.length);
        let len = u32::try_from(end - start)
            .map_err(|_| Error::corrupt(format!("pack {pack}"), "blob range beyond 4 GiB"))?;
        retry(|| {
            repo.backend()
                .read_range_into(FileType::Pack, pack, start, len, &mut scratch.raw)
        })?;
        for b in &group {
            let off = (u64::from(b.entry.offset) - start) as usize;
            let slice = scratch
                .raw
                .get_mut(off..off + b.entry.length as usize)
                .ok_or_else(|| Error::corrupt(format!("pack {pack}"), "short read"))?;
            let data = repo.decode_blob_in_place(&b.id, &b.entry, slice, &mut scratch.blob)?;
            for t in &b.targets {
                let job = &files[t.file as usize];
                let f = create_file(&job.path)?;
                f.write_all_at(data, t.offset)
                    .map_err(|e| Error::io("write", &job.path, e))?;
                scratch.written.written(f, t.offset, data.len() as u64);
                counters.wrote(job, data.len() as u64);
            }
            counters.report();
        }
    }
    Ok(())
}

fn apply_metadata(
    path: &Path,
    node: &Node,
    as_root: bool,
    warnings: &Mutex<Vec<String>>,
) -> Result<()> {
    let warn = |m: String| warnings.lock().unwrap_or_else(|e| e.into_inner()).push(m);
    if as_root {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
            warn(format!("{}: cannot set owner: {e}", path.display()));
        }
    }
    let is_link = node.node_type == NodeType::Symlink;
    let ts = |t: &DateTime<Utc>| {
        nix::sys::time::TimeSpec::new(t.timestamp(), i64::from(t.timestamp_subsec_nanos()))
    };
    let flag = if is_link {
        nix::sys::stat::UtimensatFlags::NoFollowSymlink
    } else {
        nix::sys::stat::UtimensatFlags::FollowSymlink
    };
    if let Err(e) = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts(&node.atime),
        &ts(&node.mtime),
        flag,
    ) {
        warn(format!("{}: cannot set times: {e}", path.display()));
    }
    if !is_link {
        fs::set_permissions(
            path,
            fs::Permissions::from_mode(unix_mode_from_go(node.mode)),
        )
        .map_err(|e| Error::io("set permissions of", path, e))?;
    }
    Ok(())
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16)
}

/// Restores `snapshot` (or `opts.sub_path` of it) into `target`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    fs::create_dir_all(target).map_err(|e| Error::io("create", target, e))?;
    let start = repo.find_node(&snapshot.tree, opts.sub_path.as_deref().unwrap_or("/"))?;
    let mut planner = Planner {
        repo,
        plan: Plan::default(),
        reloaded: false,
    };
    match start.node_type {
        NodeType::Dir => {
            let Some(sub) = start.subtree else {
                return Err(Error::corrupt(
                    format!("snapshot tree {}", snapshot.tree),
                    "a directory node has no subtree",
                ));
            };
            let tree = repo.load_tree(&sub)?;
            for child in &tree.nodes {
                check_name(child, &sub)?;
                planner.add_node(target.join(&child.name), child, 1)?;
            }
        }
        _ => {
            check_name(&start, &snapshot.tree)?;
            planner.add_node(target.join(&start.name), &start, 1)?;
        }
    }
    let mut plan = planner.plan;

    // Content, pack by pack.
    let workers = opts.workers.unwrap_or_else(default_workers).max(1);
    let packs: Vec<(Id, Vec<BlobJob>)> = plan
        .packs
        .drain()
        .map(|(p, blobs)| (p, blobs.into_values().collect()))
        .collect();
    plan.summary.packs_read = packs.len() as u64;
    let files = &plan.files;
    let counters = Counters {
        bytes_done: AtomicU64::new(0),
        files_done: AtomicU64::new(
            files
                .iter()
                .filter(|f| f.pending.load(Ordering::Relaxed) == 0)
                .count() as u64,
        ),
        bytes_total: plan.summary.bytes_written,
        progress: opts.progress.clone(),
    };
    counters.report();
    let counters = &counters;
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        let (tx, rx) = bounded::<(Id, Vec<BlobJob>)>(workers);
        for _ in 0..workers {
            let rx = rx.clone();
            let failed = &failed;
            let first_error = &first_error;
            s.spawn(move || {
                let mut scratch = WorkerScratch::default();
                for (pack, blobs) in rx.iter() {
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = restore_pack(repo, &pack, blobs, files, &mut scratch, counters)
                    {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
        drop(rx);
        for job in packs {
            if failed.load(Ordering::Relaxed) || tx.send(job).is_err() {
                break;
            }
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    // Workers report concurrently, so their last reports may arrive out of order:
    // this one, after all of them, is the final state.
    counters.report();

    // Metadata: files and links first, then directories deepest first.
    let as_root = crate::sys::uid() == 0;
    let warnings = Mutex::new(std::mem::take(&mut plan.summary.warnings));
    for (path, node) in plan
        .meta
        .iter()
        .filter(|(_, n)| n.node_type != NodeType::Dir)
    {
        apply_metadata(path, node, as_root, &warnings)?;
    }
    let mut dirs: Vec<&(PathBuf, Node)> = plan
        .meta
        .iter()
        .filter(|(_, n)| n.node_type == NodeType::Dir)
        .collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, node) in dirs {
        apply_metadata(path, node, as_root, &warnings)?;
    }
    plan.summary.warnings = warnings.into_inner().unwrap_or_else(|e| e.into_inner());
    plan.summary.duration = started.elapsed();
    Ok(plan.summary)
}

/// Streams the content of the file at `path` in `snapshot` to `out`, in order,
/// verifying every blob. A few blobs are fetched ahead in parallel; memory stays
/// bounded. Returns the bytes written.
pub fn restore_file_to(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    let node = repo.find_node(&snapshot.tree, path)?;
    if node.node_type != NodeType::File {
        return Err(Error::InvalidArgument(format!(
            "{path} in snapshot is a {}, not a file",
            node.node_type.as_str()
        )));
    }
    let content = node.content.unwrap_or_default();
    const AHEAD: usize = 4;
    let written = AtomicU64::new(0);
    std::thread::scope(|s| -> Result<()> {
        let (job_tx, job_rx) = bounded::<(Id, crossbeam_channel::Sender<Result<Vec<u8>>>)>(AHEAD);
        for _ in 0..AHEAD.min(content.len()).max(1) {
            let job_rx = job_rx.clone();
            s.spawn(move || {
                for (id, reply) in job_rx.iter() {
                    let _ = reply.send(repo.load_blob(BlobType::Data, &id));
                }
            });
        }
        drop(job_rx);
        let mut pending = std::collections::VecDeque::new();
        let mut ids = content.iter();
        loop {
            while pending.len() < AHEAD {
                let Some(id) = ids.next() else { break };
                let (tx, rx) = bounded(1);
                job_tx
                    .send((*id, tx))
                    .map_err(|_| Error::Aborted("a reader thread stopped".into()))?;
                pending.push_back(rx);
            }
            let Some(rx) = pending.pop_front() else { break };
            let data = rx
                .recv()
                .map_err(|_| Error::Aborted("a reader thread stopped".into()))??;
            out.write_all(&data)
                .map_err(|e| Error::io("write the content of", path, e))?;
            written.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        drop(job_tx);
        Ok(())
    })?;
    out.flush()
        .map_err(|e| Error::io("write the content of", path, e))?;
    Ok(written.load(Ordering::Relaxed))
}
