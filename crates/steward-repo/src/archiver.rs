//! Backups: files and directories ([`backup`]) or a single stream ([`backup_stream`])
//! into a new snapshot.
//!
//! The pipeline, with bounded channels so memory stays bounded whatever the input:
//!
//! ```text
//! walker (this thread): walks the paths in name order, reads files and cuts
//!     them into content-defined chunks ([`crate::chunker`]: FastCDC 2020, min
//!     512 KiB, average 1 MiB, max 8 MiB, restic's sizes)
//!   --chunks--> N workers: SHA-256, dedup against the index and the chunks in
//!     flight, zstd, encrypt, append to a pack, write full packs
//!   --ids--> tree builder thread: assembles each directory's tree once its
//!     files' chunk ids are known, saves tree blobs bottom-up, then the root
//! ```
//!
//! When the blobs and trees are saved, the saver is flushed (packs, then index
//! files) and only then is the snapshot written. With a parent snapshot (by default
//! the latest one with the same host and paths), a file whose type, mtime, ctime,
//! size and inode match the parent's node, and whose blobs are all still indexed,
//! reuses the parent's content list without being read, as restic does.
//!
//! The snapshot mirrors restic's layout: the root tree holds the first component of
//! each (absolute) path, with intermediate directories recorded with their real
//! metadata. Files that vanish or cannot be read during the backup are skipped and
//! reported in [`BackupSummary::warnings`].

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::lock::LockKind;
use crate::pack::BlobType;
use crate::repo::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::Snapshot;
use crate::sys::NameCache;
use crate::tree::{go_mode_from_unix, Node, NodeType, Tree};

/// A progress callback: a backup calls it from the reading thread after each chunk and
/// file, a restore from its workers after each blob written.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Progress of a running backup or restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of file content read (backup) or written (restore) so far.
    pub bytes_done: u64,
    /// Files finished so far (a backup: read or reused from the parent; a restore:
    /// every byte written).
    pub files_done: u64,
    /// All the bytes there are to do, when known (a restore knows it once it has
    /// planned; a backup does not).
    pub bytes_total: Option<u64>,
}

/// Which snapshot a backup compares against to skip unchanged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentSelection {
    /// The latest snapshot with the same host name and paths.
    #[default]
    Auto,
    /// None: read every file.
    None,
    /// This snapshot.
    Snapshot(Id),
}

/// Options of a backup.
#[derive(Clone)]
pub struct BackupOptions {
    /// Glob patterns of paths to leave out. A pattern without `/` matches a file
    /// name anywhere (`*.tmp`); one with `/` matches the end of the path
    /// (`cache/*`), or the whole path if it starts with `/`.
    pub excludes: Vec<String>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name for the snapshot (default: this machine's).
    pub hostname: Option<String>,
    /// Parent snapshot choice.
    pub parent: ParentSelection,
    /// Worker threads (default: available parallelism).
    pub workers: Option<usize>,
    /// Snapshot time (default: now).
    pub time: Option<DateTime<Utc>>,
    /// Take a shared repository lock for the duration (default true).
    pub lock: bool,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            excludes: Vec::new(),
            tags: Vec::new(),
            hostname: None,
            parent: ParentSelection::Auto,
            workers: None,
            time: None,
            lock: true,
            progress: None,
        }
    }
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("excludes", &self.excludes)
            .field("tags", &self.tags)
            .field("hostname", &self.hostname)
            .field("parent", &self.parent)
            .field("workers", &self.workers)
            .field("time", &self.time)
            .field("lock", &self.lock)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The new snapshot.
    pub snapshot_id: Id,
    /// Its root tree.
    pub tree: Id,
    /// The parent used, if any.
    pub parent: Option<Id>,
    /// Files not in the parent.
    pub files_new: u64,
    /// Files in the parent but changed (read again).
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// Total size of the files in the snapshot.
    pub total_bytes: u64,
    /// Bytes added to the repository (new blobs, compressed and encrypted).
    pub bytes_added: u64,
    /// New data blobs.
    pub data_blobs_added: u64,
    /// New tree blobs.
    pub tree_blobs_added: u64,
    /// Pack files written.
    pub packs_written: u64,
    /// Of those, data packs.
    pub data_packs_written: u64,
    /// Wall time.
    pub duration: Duration,
    /// Files skipped and other problems that did not stop the backup.
    pub warnings: Vec<String>,
}

/// Where a worker sends the id of a chunk it saved.
type IdReply = Receiver<Result<Id>>;

struct ChunkJob {
    data: Vec<u8>,
    reply: Sender<Result<Id>>,
}

/// The chunk ids of one file: those already known, in order, then the replies
/// still outstanding. Ready replies are collected while the file is read, so
/// only the chunks in flight hold a channel, however long the file.
#[derive(Default)]
struct Content {
    done: Vec<Id>,
    pending: VecDeque<IdReply>,
}

fn worker_gone() -> Error {
    Error::Aborted("a worker thread stopped unexpectedly".into())
}

impl Content {
    fn collect_ready(&mut self) -> Result<()> {
        while let Some(rx) = self.pending.front() {
            match rx.try_recv() {
                Ok(r) => {
                    self.done.push(r?);
                    self.pending.pop_front();
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(worker_gone()),
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Id>> {
        for rx in self.pending {
            self.done.push(rx.recv().map_err(|_| worker_gone())??);
        }
        Ok(self.done)
    }
}

enum Event {
    Enter,
    Leave(Node),
    Leaf(Node, Content),
}

/// The reading side's handle on the pipeline.
struct Feeder<'a> {
    work: Sender<ChunkJob>,
    events: Sender<Event>,
    abort: &'a AtomicBool,
    bytes_done: AtomicU64,
    files_done: AtomicU64,
    progress: Option<ProgressFn>,
}

enum ChunkError {
    Read(std::io::Error),
    Pipeline(Error),
}

fn aborted() -> Error {
    Error::Aborted("the backup pipeline stopped after an earlier error".into())
}

impl Feeder<'_> {
    fn report(&self) {
        if let Some(p) = &self.progress {
            p(&Progress {
                bytes_done: self.bytes_done.load(Ordering::Relaxed),
                files_done: self.files_done.load(Ordering::Relaxed),
                bytes_total: None,
            });
        }
    }

    fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.report();
    }

    fn send(&self, ev: Event) -> Result<()> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(aborted());
        }
        self.events.send(ev).map_err(|_| aborted())
    }

    /// Chunks a reader into the workers; returns the reply channels and bytes read.
    fn chunk(&self, r: impl Read) -> std::result::Result<(Content, u64), ChunkError> {
        let mut content = Content::default();
        let mut total = 0u64;
        for chunk in Chunker::new(r) {
            if self.abort.load(Ordering::Relaxed) {
                return Err(ChunkError::Pipeline(aborted()));
            }
            let data = chunk.map_err(ChunkError::Read)?;
            let len = data.len() as u64;
            total += len;
            let (tx, rx) = bounded(1);
            self.work
                .send(ChunkJob { data, reply: tx })
                .map_err(|_| ChunkError::Pipeline(aborted()))?;
            content.pending.push_back(rx);
            content.collect_ready().map_err(ChunkError::Pipeline)?;
            self.bytes_done.fetch_add(len, Ordering::Relaxed);
            self.report();
        }
        Ok((content, total))
    }
}

/// The first error a worker hit: the cause to report when the other threads stop with
/// "aborted" (or, for the tree builder, with the half-built directories that leaves).
type FirstError = std::sync::Mutex<Option<Error>>;

fn worker_loop(rx: Receiver<ChunkJob>, saver: &BlobSaver, abort: &AtomicBool, first: &FirstError) {
    for job in rx.iter() {
        if abort.load(Ordering::Relaxed) {
            let _ = job.reply.send(Err(aborted()));
            continue;
        }
        let id = Id::hash(&job.data);
        let r = match saver.save_with_id(BlobType::Data, id, &job.data) {
            Ok(_) => Ok(id),
            Err(e) => {
                abort.store(true, Ordering::Relaxed);
                let mut slot = first.lock().unwrap_or_else(|p| p.into_inner());
                // The first real cause wins over a generic "aborted" from another thread.
                let generic = |x: &Error| matches!(x, Error::Aborted(_));
                if slot
                    .as_ref()
                    .is_none_or(|have| generic(have) && !generic(&e))
                {
                    *slot = Some(e);
                }
                Err(aborted())
            }
        };
        let _ = job.reply.send(r);
        crate::chunker::recycle(job.data);
    }
}

fn save_tree(saver: &BlobSaver, nodes: Vec<Node>) -> Result<Id> {
    let blob = Tree::from_nodes(nodes).to_blob()?;
    Ok(saver.save(BlobType::Tree, &blob)?.0)
}

fn tree_builder(events: Receiver<Event>, saver: &BlobSaver) -> Result<Id> {
    let unbalanced = || Error::Aborted("internal error: unbalanced directory events".into());
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    for ev in events.iter() {
        match ev {
            Event::Enter => stack.push(Vec::new()),
            Event::Leave(mut node) => {
                let children = stack.pop().ok_or_else(unbalanced)?;
                node.subtree = Some(save_tree(saver, children)?);
                stack.last_mut().ok_or_else(unbalanced)?.push(node);
            }
            Event::Leaf(mut node, content) => {
                if node.node_type == NodeType::File && node.content.is_none() {
                    node.content = Some(content.finish()?);
                }
                stack.last_mut().ok_or_else(unbalanced)?.push(node);
            }
        }
    }
    if stack.len() != 1 {
        return Err(unbalanced());
    }
    save_tree(saver, stack.pop().unwrap_or_default())
}

/// Runs the worker and tree-builder threads around `produce`, which feeds them
/// from the current thread. Returns the root tree id.
fn run_pipeline(
    saver: &BlobSaver,
    workers: usize,
    progress: Option<ProgressFn>,
    produce: impl FnOnce(&Feeder<'_>) -> Result<()>,
) -> Result<Id> {
    let abort = AtomicBool::new(false);
    let first: FirstError = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        let (work_tx, work_rx) = bounded::<ChunkJob>(workers * 2);
        let (ev_tx, ev_rx) = bounded::<Event>(4096);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let rx = work_rx.clone();
            let abort = &abort;
            let first = &first;
            handles.push(s.spawn(move || worker_loop(rx, saver, abort, first)));
        }
        drop(work_rx);
        let builder = {
            let abort = &abort;
            s.spawn(move || {
                let r = tree_builder(ev_rx, saver);
                if r.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                r
            })
        };
        let feeder = Feeder {
            work: work_tx,
            events: ev_tx,
            abort: &abort,
            bytes_done: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            progress,
        };
        let produced = produce(&feeder);
        if produced.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        drop(feeder);
        let built = builder
            .join()
            .unwrap_or_else(|_| Err(Error::Aborted("the tree builder thread panicked".into())));
        let mut worker_panicked = false;
        for h in handles {
            worker_panicked |= h.join().is_err();
        }
        if worker_panicked && built.is_ok() && produced.is_ok() {
            return Err(Error::Aborted("a worker thread panicked".into()));
        }
        let worker_error = first.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (produced, built, worker_error) {
            (Ok(()), Ok(root), _) => Ok(root),
            // A read error of the walker is its own cause.
            (Err(e), _, _) if !matches!(e, Error::Aborted(_)) => Err(e),
            // A worker's failure (a full disk, storage gone) made everyone else stop.
            (_, _, Some(e)) => Err(e),
            (_, Err(e), None) => Err(e),
            (Err(e), Ok(_), None) => Err(e),
        }
    })
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16)
}

fn time_from(secs: i64, nsec: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, nsec.clamp(0, 999_999_999) as u32).unwrap_or_default()
}

/// A node for `meta` (no content, subtree or link target yet).
pub fn node_from_metadata(name: OsString, meta: &Metadata, names: &mut NameCache) -> Node {
    let st_mode = meta.mode();
    let node_type = NodeType::from_unix(st_mode);
    let mut node = Node::new(name, node_type.clone());
    node.mode = go_mode_from_unix(st_mode);
    node.mtime = time_from(meta.mtime(), meta.mtime_nsec());
    node.atime = time_from(meta.atime(), meta.atime_nsec());
    node.ctime = time_from(meta.ctime(), meta.ctime_nsec());
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.user = names.user(node.uid);
    node.group = names.group(node.gid);
    node.inode = meta.ino();
    node.device_id = meta.dev();
    node.links = meta.nlink();
    if node_type == NodeType::File {
        node.size = meta.size();
    }
    if matches!(node_type, NodeType::Dev | NodeType::Chardev) {
        node.device = meta.rdev();
    }
    node
}

/// Lexically normalised absolute path (`.` and `..` resolved without following
/// symlinks, like Go's `filepath.Clean(filepath.Abs(p))`).
fn absolute(p: &Path) -> Result<PathBuf> {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::io("read the current directory for", p, e))?;
        cwd.join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

struct Excluder {
    names: GlobSet,
    paths: GlobSet,
    empty: bool,
}

impl Excluder {
    fn new(patterns: &[String]) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let mut empty = true;
        for p in patterns {
            let p = p.trim_end_matches('/');
            if p.is_empty() {
                continue;
            }
            let (target, pattern) = if !p.contains('/') {
                (&mut names, p.to_string())
            } else if p.starts_with('/') {
                (&mut paths, p.to_string())
            } else {
                (&mut paths, format!("**/{p}"))
            };
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "exclude pattern {p:?} is not a valid glob: {e}"
                    ))
                })?;
            target.add(glob);
            empty = false;
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidArgument(format!("exclude patterns: {e}")))
        };
        Ok(Excluder {
            names: build(names)?,
            paths: build(paths)?,
            empty,
        })
    }

    fn is_excluded(&self, path: &Path) -> bool {
        if self.empty {
            return false;
        }
        path.file_name()
            .map(|n| self.names.is_match(Path::new(n)))
            .unwrap_or(false)
            || self.paths.is_match(path)
    }
}

#[derive(Default)]
struct VDir {
    children: BTreeMap<Vec<u8>, (OsString, VDir)>,
    target: bool,
}

#[derive(Default)]
struct Counts {
    files_new: u64,
    files_changed: u64,
    files_unchanged: u64,
    dirs: u64,
    total_bytes: u64,
    warnings: Vec<String>,
}

struct Walker<'r> {
    repo: &'r Repository,
    excluder: Excluder,
    names: NameCache,
    counts: Counts,
}

fn unchanged(old: &Node, new: &Node) -> bool {
    old.node_type == NodeType::File
        && old.mtime == new.mtime
        && old.ctime == new.ctime
        && old.size == new.size
        && old.inode == new.inode
        && old.content.is_some()
}

impl Walker<'_> {
    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.counts.warnings.push(msg);
    }

    fn parent_tree(&mut self, node: Option<&Node>) -> Option<Tree> {
        let id = node
            .filter(|n| n.node_type == NodeType::Dir)
            .and_then(|n| n.subtree)?;
        match self.repo.load_tree(&id) {
            Ok(t) => Some(t),
            Err(e) => {
                self.warn(format!(
                    "cannot load tree {} of the parent snapshot ({e}); reading that directory in full",
                    id.short()
                ));
                None
            }
        }
    }

    fn walk_virtual(
        &mut self,
        f: &Feeder<'_>,
        path: &Path,
        dir: &VDir,
        parent: Option<&Tree>,
    ) -> Result<()> {
        for (name, child) in dir.children.values() {
            let child_path = path.join(name);
            let parent_node = parent.and_then(|t| t.find(name));
            if child.target {
                self.walk_path(f, &child_path, name.clone(), parent_node)?;
                continue;
            }
            let meta = match fs::symlink_metadata(&child_path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(format!("{}: {e}; skipped", child_path.display()));
                    continue;
                }
            };
            let node = node_from_metadata(name.clone(), &meta, &mut self.names);
            let sub = self.parent_tree(parent_node);
            f.send(Event::Enter)?;
            self.walk_virtual(f, &child_path, child, sub.as_ref())?;
            f.send(Event::Leave(node))?;
        }
        Ok(())
    }

    fn walk_contents(&mut self, f: &Feeder<'_>, path: &Path, parent: Option<&Tree>) -> Result<()> {
        let rd = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.warn(format!(
                    "cannot list {}: {e}; its contents are not in the snapshot",
                    path.display()
                ));
                return Ok(());
            }
        };
        let mut names = Vec::new();
        for entry in rd {
            match entry {
                Ok(e) => names.push(e.file_name()),
                Err(e) => self.warn(format!("error listing {}: {e}", path.display())),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = path.join(&name);
            let parent_node = parent.and_then(|t| t.find(&name));
            self.walk_path(f, &child, name, parent_node)?;
        }
        Ok(())
    }

    fn walk_path(
        &mut self,
        f: &Feeder<'_>,
        path: &Path,
        name: OsString,
        parent: Option<&Node>,
    ) -> Result<()> {
        if self.excluder.is_excluded(path) {
            return Ok(());
        }
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}; skipped", path.display()));
                return Ok(());
            }
        };
        let mut node = node_from_metadata(name, &meta, &mut self.names);
        match node.node_type {
            NodeType::Dir => {
                let sub = self.parent_tree(parent);
                f.send(Event::Enter)?;
                self.walk_contents(f, path, sub.as_ref())?;
                self.counts.dirs += 1;
                f.send(Event::Leave(node))
            }
            NodeType::File => self.walk_file(f, path, node, parent),
            NodeType::Symlink => {
                match fs::read_link(path) {
                    Ok(t) => node.link_target = Some(t.into_os_string()),
                    Err(e) => self.warn(format!("cannot read symlink {}: {e}", path.display())),
                }
                f.send(Event::Leaf(node, Content::default()))
            }
            _ => f.send(Event::Leaf(node, Content::default())),
        }
    }

    fn walk_file(
        &mut self,
        f: &Feeder<'_>,
        path: &Path,
        mut node: Node,
        parent: Option<&Node>,
    ) -> Result<()> {
        self.counts.total_bytes += node.size;
        let mut changed = false;
        if let Some(old) = parent {
            if unchanged(old, &node) {
                let content = old.content.clone().unwrap_or_default();
                let all_indexed = {
                    let index = self.repo.index();
                    content.iter().all(|id| index.contains(BlobType::Data, id))
                };
                if all_indexed {
                    node.content = Some(content);
                    self.counts.files_unchanged += 1;
                    f.file_done();
                    return f.send(Event::Leaf(node, Content::default()));
                }
            }
            changed = true;
        }
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) => {
                self.counts.total_bytes -= node.size;
                self.warn(format!("cannot open {}: {e}; skipped", path.display()));
                return Ok(());
            }
        };
        match f.chunk(file) {
            Ok((content, n)) => {
                if n != node.size {
                    self.counts.total_bytes = self.counts.total_bytes - node.size + n;
                    node.size = n;
                }
                if changed {
                    self.counts.files_changed += 1;
                } else {
                    self.counts.files_new += 1;
                }
                f.file_done();
                f.send(Event::Leaf(node, content))
            }
            Err(ChunkError::Read(e)) => {
                self.counts.total_bytes -= node.size;
                self.warn(format!("error reading {}: {e}; skipped", path.display()));
                Ok(())
            }
            Err(ChunkError::Pipeline(e)) => Err(e),
        }
    }
}

fn select_parent(
    repo: &Repository,
    sel: ParentSelection,
    hostname: &str,
    paths: &[String],
) -> Result<Option<(Id, Snapshot)>> {
    match sel {
        ParentSelection::None => Ok(None),
        ParentSelection::Snapshot(id) => Ok(Some(repo.load_snapshot(&id.to_hex())?)),
        ParentSelection::Auto => Ok(repo
            .list_snapshots()?
            .into_iter()
            .rfind(|(_, sn)| sn.same_source(hostname, paths))),
    }
}

fn finish_snapshot(
    repo: &Repository,
    saver: &BlobSaver,
    mut sn: Snapshot,
    opts: &BackupOptions,
    hostname: String,
) -> Result<Id> {
    saver.flush()?;
    sn.hostname = hostname;
    sn.username = crate::sys::username();
    sn.uid = crate::sys::uid();
    sn.gid = crate::sys::gid();
    sn.tags = opts.tags.clone();
    sn.excludes = opts.excludes.clone();
    repo.save_snapshot(&sn)
}

/// Backs up `paths` (files, directories, symlinks) into a new snapshot.
pub fn backup<P: AsRef<Path>>(
    repo: &Repository,
    paths: &[P],
    opts: &BackupOptions,
) -> Result<BackupSummary> {
    let started = Instant::now();
    if paths.is_empty() {
        return Err(Error::InvalidArgument(
            "no paths to back up: give at least one file or directory".into(),
        ));
    }
    let time = opts.time.unwrap_or_else(Utc::now);
    let hostname = opts.hostname.clone().unwrap_or_else(crate::sys::hostname);
    let excluder = Excluder::new(&opts.excludes)?;

    let mut targets: Vec<PathBuf> = paths
        .iter()
        .map(|p| absolute(p.as_ref()))
        .collect::<Result<_>>()?;
    targets.sort();
    targets.dedup();
    let mut root = VDir::default();
    let mut kept = Vec::new();
    let mut warnings = Vec::new();
    for t in &targets {
        if let Err(e) = fs::symlink_metadata(t) {
            return Err(Error::io("back up", t, e));
        }
        let mut dir = &mut root;
        let mut covered = dir.target;
        for c in t.components() {
            if let Component::Normal(n) = c {
                if covered {
                    break;
                }
                dir = &mut dir
                    .children
                    .entry(n.as_bytes().to_vec())
                    .or_insert_with(|| (n.to_os_string(), VDir::default()))
                    .1;
                covered = dir.target;
            }
        }
        if covered {
            warnings.push(format!(
                "{} is inside another path of this backup; backed up once",
                t.display()
            ));
            continue;
        }
        dir.target = true;
        dir.children.clear();
        kept.push(t.to_string_lossy().into_owned());
    }

    let _lock = if opts.lock {
        Some(repo.lock(LockKind::Shared)?)
    } else {
        None
    };
    let parent = select_parent(repo, opts.parent, &hostname, &kept)?;
    let parent_root = match &parent {
        Some((_, sn)) => Some(repo.load_tree(&sn.tree)?),
        None => None,
    };

    let saver = repo.blob_saver();
    let mut walker = Walker {
        repo,
        excluder,
        names: NameCache::default(),
        counts: Counts::default(),
    };
    walker.counts.warnings = warnings;
    let workers = opts.workers.unwrap_or_else(default_workers).max(1);
    let bytes_read = AtomicU64::new(0);
    let tree = run_pipeline(&saver, workers, opts.progress.clone(), |f| {
        let r = if root.target {
            walker.walk_contents(f, Path::new("/"), parent_root.as_ref())
        } else {
            walker.walk_virtual(f, Path::new("/"), &root, parent_root.as_ref())
        };
        bytes_read.store(f.bytes_done.load(Ordering::Relaxed), Ordering::Relaxed);
        r
    })?;

    let mut sn = Snapshot::new(time, tree, kept);
    sn.parent = parent.as_ref().map(|(id, _)| *id);
    let snapshot_id = finish_snapshot(repo, &saver, sn, opts, hostname)?;
    let st = saver.stats();
    let c = walker.counts;
    Ok(BackupSummary {
        snapshot_id,
        tree,
        parent: parent.map(|(id, _)| id),
        files_new: c.files_new,
        files_changed: c.files_changed,
        files_unchanged: c.files_unchanged,
        dirs: c.dirs,
        bytes_read: bytes_read.load(Ordering::Relaxed),
        total_bytes: c.total_bytes,
        bytes_added: st.bytes_stored,
        data_blobs_added: st.data_blobs,
        tree_blobs_added: st.tree_blobs,
        packs_written: st.packs,
        data_packs_written: st.data_packs,
        duration: started.elapsed(),
        warnings: c.warnings,
    })
}

/// Stores everything `reader` yields as a snapshot holding one file `filename`
/// (like `restic backup --stdin --stdin-filename NAME`), streaming: nothing is
/// written to a temporary file and memory stays bounded.
pub fn backup_stream(
    repo: &Repository,
    filename: &str,
    reader: impl Read,
    opts: &BackupOptions,
) -> Result<BackupSummary> {
    let started = Instant::now();
    if filename.is_empty()
        || filename.contains('/')
        || filename == "."
        || filename == ".."
        || filename.contains('\0')
    {
        return Err(Error::InvalidArgument(format!(
            "{filename:?} cannot be the name of a backed-up stream: use a plain file name without '/'"
        )));
    }
    let time = opts.time.unwrap_or_else(Utc::now);
    let hostname = opts.hostname.clone().unwrap_or_else(crate::sys::hostname);
    let _lock = if opts.lock {
        Some(repo.lock(LockKind::Shared)?)
    } else {
        None
    };
    let saver = repo.blob_saver();
    let workers = opts.workers.unwrap_or_else(default_workers).max(1);
    let mut names = NameCache::default();
    let mut bytes = 0u64;
    let tree = run_pipeline(&saver, workers, opts.progress.clone(), |f| {
        let (content, n) = f.chunk(reader).map_err(|e| match e {
            ChunkError::Read(io) => Error::io("read the stream for", filename, io),
            ChunkError::Pipeline(e) => e,
        })?;
        bytes = n;
        let mut node = Node::new(filename, NodeType::File);
        node.mode = 0o644;
        node.mtime = time;
        node.atime = time;
        node.ctime = time;
        node.uid = crate::sys::uid();
        node.gid = crate::sys::gid();
        node.user = names.user(node.uid);
        node.group = names.group(node.gid);
        node.size = n;
        node.links = 1;
        f.file_done();
        f.send(Event::Leaf(node, content))
    })?;
    let sn = Snapshot::new(time, tree, vec![format!("/{filename}")]);
    let snapshot_id = finish_snapshot(repo, &saver, sn, opts, hostname)?;
    let st = saver.stats();
    Ok(BackupSummary {
        snapshot_id,
        tree,
        parent: None,
        files_new: 1,
        files_changed: 0,
        files_unchanged: 0,
        dirs: 0,
        bytes_read: bytes,
        total_bytes: bytes,
        bytes_added: st.bytes_stored,
        data_blobs_added: st.data_blobs,
        tree_blobs_added: st.tree_blobs,
        packs_written: st.packs,
        data_packs_written: st.data_packs,
        duration: started.elapsed(),
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes() {
        let ex = Excluder::new(&["*.tmp".into(), "cache/*".into(), "/abs/x".into()]).unwrap();
        assert!(ex.is_excluded(Path::new("/a/b/c.tmp")));
        assert!(!ex.is_excluded(Path::new("/a/b/c.tmpx")));
        assert!(ex.is_excluded(Path::new("/a/cache/z")));
        assert!(!ex.is_excluded(Path::new("/a/cache")));
        assert!(ex.is_excluded(Path::new("/abs/x")));
        assert!(!ex.is_excluded(Path::new("/b/abs/x")));
        assert!(Excluder::new(&["[".into()]).is_err());
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(
            absolute(Path::new("/a/./b/../c/")).unwrap(),
            PathBuf::from("/a/c")
        );
        assert_eq!(absolute(Path::new("/..")).unwrap(), PathBuf::from("/"));
    }
}
