//! [`Repository`]: an opened repository (backend + master key + config + index).
//!
//! `Repository` is a cheap, cloneable handle; clones share the key and the index.
//! Reading follows restic's ordering rules (snapshots are the last thing written
//! and the first read); writing goes through [`crate::BlobSaver`], whose `flush`
//! stores packs, then index files, so a snapshot is only saved once everything it
//! references is durable.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, BackendError, FileType};
use crate::config::{Config, SUPPORTED_VERSIONS};
use crate::crypto::{KdfParams, MasterKey};
use crate::error::{Error, Result};
use crate::file::{decode_unpacked, decrypt_error, encode_unpacked, BlobScratch};
use crate::id::Id;
use crate::index::{Index, IndexEntry, IndexFile};
use crate::key::KeyFile;
use crate::lock::{LockKind, LockOptions, RepoLock};
use crate::pack::BlobType;
use crate::saver::BlobSaver;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeType, Tree};

/// How many key files are tried before giving up.
pub const MAX_KEYS_TRIED: usize = 64;

/// Largest blob (stored or decompressed) accepted from an index; anything larger
/// is treated as corruption instead of allocating that much memory.
pub const MAX_BLOB_LEN: u32 = 1 << 30;

/// Default target size of pack files.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

/// Default zstd level: 3, about what restic's `auto` gives, with its match finder
/// tuned for blobs of about a MiB (see `file::compressor`). On the benchmark's 2 GiB
/// mixed data set plain level 1 was about 10% faster but made a repository 1% larger
/// than restic's (843.7 against 838 MiB); plain level 3 made it smaller (836.1 MiB).
/// See bench/README.md.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// Tunables for writing.
#[derive(Debug, Clone)]
pub struct RepoOptions {
    /// zstd level for blobs and unpacked files; 0 stores everything uncompressed.
    pub compression_level: i32,
    /// A pack is written once it reaches this many bytes.
    pub pack_size: u32,
}

impl Default for RepoOptions {
    fn default() -> Self {
        RepoOptions {
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack_size: DEFAULT_PACK_SIZE,
        }
    }
}

/// Options for [`Repository::init`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// scrypt parameters of the first key file.
    pub kdf: KdfParams,
    /// Write options of the returned handle.
    pub options: RepoOptions,
}

struct Inner {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    key_id: Id,
    config: Config,
    index: RwLock<Index>,
    options: RepoOptions,
}

/// An open repository.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.inner.backend.location())
            .field("version", &self.inner.config.version)
            .field("key", &self.inner.key_id.short())
            .finish()
    }
}

/// Retries `f` a few times (with backoff) while it fails with a transient error.
pub(crate) fn retry<T>(mut f: impl FnMut() -> Result<T, BackendError>) -> Result<T, BackendError> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match f() {
            Err(e) if e.is_transient() && attempt < 3 => {
                tracing::warn!(error = %e, attempt, "transient backend error, retrying");
                std::thread::sleep(delay);
                delay *= 4;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `"<noun> <full id>"`, how files are named in errors.
pub(crate) fn describe(t: FileType, id: &Id) -> String {
    match t {
        FileType::Config => "config file".to_string(),
        _ => format!("{} {}", t.noun(), id),
    }
}

/// Refuses index entries with implausible lengths (a hostile or damaged index).
pub(crate) fn check_entry(id: &Id, entry: &IndexEntry) -> Result<()> {
    if entry.length > MAX_BLOB_LEN || entry.data_length() > MAX_BLOB_LEN {
        return Err(Error::corrupt(
            format!("index entry for {} blob {id}", entry.blob_type),
            format!(
                "implausible length {} (uncompressed {}) in pack {}",
                entry.length,
                entry.data_length(),
                entry.pack
            ),
        ));
    }
    Ok(())
}

/// Ids of the index files that some other present, readable index file
/// supersedes. Such a file only lists packs that its replacement also lists (or
/// that were meant to be deleted), so readers skip it.
pub(crate) fn superseded_index_files(files: &[(Id, IndexFile)]) -> crate::id::IdSet<Id> {
    let mut out = crate::id::IdSet::default();
    for (id, f) in files {
        for old in &f.supersedes {
            if old != id {
                out.insert(*old);
            }
        }
    }
    out
}

impl Repository {
    /// Creates a new version-2 repository with one key for `password`.
    pub fn init(backend: Arc<dyn Backend>, password: &str, opts: InitOptions) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::InvalidArgument(
                "an empty password cannot protect a repository; choose a password".into(),
            ));
        }
        backend.create()?;
        let master = MasterKey::random();
        let (key_bytes, key_id) = KeyFile::create(
            &master,
            password,
            opts.kdf,
            &crate::sys::username(),
            &crate::sys::hostname(),
        )?;
        retry(|| backend.write(FileType::Key, &key_id, &key_bytes))?;
        let config = Config::new_v2();
        let json = serde_json::to_vec(&config)
            .map_err(|e| Error::Aborted(format!("cannot encode config: {e}")))?;
        let enc = encode_unpacked(&master, &json, None)?;
        retry(|| backend.write(FileType::Config, &Id::default(), &enc))?;
        Ok(Repository {
            inner: Arc::new(Inner {
                backend,
                key: master,
                key_id,
                config,
                index: RwLock::new(Index::new()),
                options: opts.options,
            }),
        })
    }

    /// Opens a repository with default write options and loads its index.
    pub fn open(backend: Arc<dyn Backend>, password: &str) -> Result<Self> {
        Self::open_with(backend, password, RepoOptions::default())
    }

    /// Opens a repository with the given write options and loads its index.
    pub fn open_with(
        backend: Arc<dyn Backend>,
        password: &str,
        options: RepoOptions,
    ) -> Result<Self> {
        let location = backend.location();
        if retry(|| backend.list(FileType::Config))?.is_empty() {
            return Err(Error::NotFound {
                what: format!("repository at {location}"),
                hint: "there is no config file there: check the location, or initialise a repository first".into(),
            });
        }
        let mut keys = retry(|| backend.list(FileType::Key))?;
        if keys.is_empty() {
            return Err(Error::NotFound {
                what: format!("key files in {location}"),
                hint: "the keys/ directory is empty, so no password can open this repository; restore keys/ from a copy".into(),
            });
        }
        keys.sort();
        let mut found = None;
        for (id, _) in keys.iter().take(MAX_KEYS_TRIED) {
            let what = describe(FileType::Key, id);
            let bytes = match retry(|| backend.read(FileType::Key, id)) {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let kf = match KeyFile::parse(&bytes, &what) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable key file");
                    continue;
                }
            };
            match kf.open(password, &what) {
                Ok(Some(master)) => {
                    found = Some((master, *id));
                    break;
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping key file");
                    continue;
                }
            }
        }
        let Some((key, key_id)) = found else {
            return Err(Error::WrongPassword { location });
        };
        let raw = retry(|| backend.read(FileType::Config, &Id::default()))?;
        let json = decode_unpacked(&key, &raw, "config file")?;
        let config: Config = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt("config file", format!("not a valid config: {e}")))?;
        if !SUPPORTED_VERSIONS.contains(&config.version) {
            return Err(Error::Unsupported(format!(
                "{location} has repository format version {}; this version of Steward reads versions 1 and 2 (upgrade Steward)",
                config.version
            )));
        }
        let repo = Repository {
            inner: Arc::new(Inner {
                backend,
                key,
                key_id,
                config,
                index: RwLock::new(Index::new()),
                options,
            }),
        };
        repo.reload_index()?;
        Ok(repo)
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Where the repository is.
    pub fn location(&self) -> String {
        self.inner.backend.location()
    }

    /// The decrypted config.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The id of the key file the password opened.
    pub fn key_id(&self) -> Id {
        self.inner.key_id
    }

    /// Write options.
    pub fn options(&self) -> &RepoOptions {
        &self.inner.options
    }

    pub(crate) fn key(&self) -> &MasterKey {
        &self.inner.key
    }

    /// The zstd level to use, or `None` to store uncompressed (level 0 or a
    /// version-1 repository).
    pub(crate) fn compression(&self) -> Option<i32> {
        (self.inner.config.compression_allowed() && self.inner.options.compression_level != 0)
            .then_some(self.inner.options.compression_level)
    }

    /// Reads the in-memory index.
    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_to_index(&self, pack: Id, blobs: &[crate::pack::PackBlob]) {
        self.inner
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add_pack(pack, blobs);
    }

    pub(crate) fn remove_from_index(&self, packs: &[Id]) {
        self.inner
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove_packs(packs);
    }

    /// Where a blob is stored, if the index knows it.
    pub fn lookup_blob(&self, t: BlobType, id: &Id) -> Option<IndexEntry> {
        self.index().lookup(t, id)
    }

    /// Loads every index file, a few at a time in parallel. Storage errors fail
    /// the whole load; a file that is damaged (fails to decrypt or parse) is
    /// returned with its error so the caller decides (skip, report or refuse).
    pub(crate) fn load_index_files(&self) -> Result<Vec<(Id, Result<IndexFile>)>> {
        let ids: Vec<Id> = retry(|| self.inner.backend.list(FileType::Index))?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let threads = ids.len().clamp(1, 4);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tx, rx) = crossbeam_channel::bounded::<(Id, Result<IndexFile>)>(threads * 2);
        let mut out = Vec::with_capacity(ids.len());
        std::thread::scope(|s| -> Result<()> {
            for _ in 0..threads {
                let tx = tx.clone();
                let ids = &ids;
                let next = &next;
                s.spawn(move || loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let r = self
                        .load_json::<IndexFile>(FileType::Index, id)
                        .and_then(|f| {
                            // Check the numbers now, so a damaged file is reported
                            // as such rather than half-used.
                            let what = describe(FileType::Index, id);
                            for p in &f.packs {
                                p.pack_blobs(&what)?;
                            }
                            Ok(f)
                        });
                    let failed = matches!(&r, Err(e) if !e.is_corrupt());
                    if tx.send((*id, r)).is_err() || failed {
                        break;
                    }
                });
            }
            drop(tx);
            let mut first_err = None;
            for (id, r) in rx.iter() {
                match r {
                    Err(e) if !e.is_corrupt() => {
                        if first_err.is_none() {
                            first_err = Some(e);
                        }
                        next.store(usize::MAX / 2, std::sync::atomic::Ordering::Relaxed);
                    }
                    r => out.push((id, r)),
                }
            }
            first_err.map_or(Ok(()), Err)
        })?;
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Loads every index file again (do not call while a [`BlobSaver`] is writing).
    /// Index files named in another file's `supersedes` list are ignored (a
    /// prune writes the replacement before deleting them). Damaged index files
    /// are skipped with a warning (a check reports them); storage errors fail.
    pub fn reload_index(&self) -> Result<()> {
        let files = self.load_index_files()?;
        let mut good = Vec::with_capacity(files.len());
        for (id, r) in files {
            match r {
                Ok(f) => good.push((id, f)),
                // A damaged index file must not make the repository unusable
                // (a check has to be able to open it to report the damage).
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a damaged index file; run a check");
                }
            }
        }
        let superseded = superseded_index_files(&good);
        let mut index = Index::new();
        for (id, file) in &good {
            if superseded.contains(id) {
                continue;
            }
            index.add_file(file, &describe(FileType::Index, id))?;
        }
        self.replace_index(index);
        Ok(())
    }

    /// Replaces the in-memory index.
    pub(crate) fn replace_index(&self, index: Index) {
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) = index;
    }

    /// Loads an unpacked file and returns its JSON bytes, checking its hash.
    pub fn load_unpacked(&self, t: FileType, id: &Id) -> Result<Vec<u8>> {
        let data = retry(|| self.inner.backend.read(t, id))?;
        let what = describe(t, id);
        if t != FileType::Config && Id::hash(&data) != *id {
            return Err(Error::corrupt(
                what,
                "its content does not match its name (SHA-256)",
            ));
        }
        decode_unpacked(&self.inner.key, &data, &what)
    }

    /// Stores JSON bytes as an unpacked file (compressed in version 2); returns its id.
    pub fn save_unpacked(&self, t: FileType, json: &[u8]) -> Result<Id> {
        let level = if t == FileType::Config {
            None
        } else {
            self.compression()
        };
        let data = encode_unpacked(&self.inner.key, json, level)?;
        let id = if t == FileType::Config {
            Id::default()
        } else {
            Id::hash(&data)
        };
        retry(|| self.inner.backend.write(t, &id, &data))?;
        Ok(id)
    }

    /// Loads and parses an unpacked JSON file.
    pub fn load_json<T: DeserializeOwned>(&self, t: FileType, id: &Id) -> Result<T> {
        let json = self.load_unpacked(t, id)?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(describe(t, id), format!("invalid JSON: {e}")))
    }

    /// Serializes and stores an unpacked JSON file.
    pub fn save_json<T: Serialize>(&self, t: FileType, value: &T) -> Result<Id> {
        let json = serde_json::to_vec(value)
            .map_err(|e| Error::Aborted(format!("cannot encode {}: {e}", t.noun())))?;
        self.save_unpacked(t, &json)
    }

    /// Decrypts, decompresses and verifies a blob read from its pack.
    pub fn decode_blob(&self, id: &Id, entry: &IndexEntry, raw: &[u8]) -> Result<Vec<u8>> {
        let mut buf = raw.to_vec();
        let mut scratch = BlobScratch::new();
        Ok(match self.open_blob(id, entry, &mut buf, &mut scratch)? {
            Some(plain) => {
                buf.truncate(plain.end);
                buf.drain(..plain.start);
                buf
            }
            None => scratch.out,
        })
    }

    /// Like [`Repository::decode_blob`], without allocating: decrypts `raw` in place
    /// and decompresses into `scratch`. Returns the verified blob, in `raw` or in
    /// `scratch`.
    pub fn decode_blob_in_place<'a>(
        &self,
        id: &Id,
        entry: &IndexEntry,
        raw: &'a mut [u8],
        scratch: &'a mut BlobScratch,
    ) -> Result<&'a [u8]> {
        Ok(match self.open_blob(id, entry, raw, scratch)? {
            Some(plain) => &raw[plain],
            None => &scratch.out,
        })
    }

    /// Decrypts `raw` in place, decompresses into `scratch` when the blob is compressed,
    /// and checks the content against `id`. Returns where the blob is: `Some(range)` of
    /// `raw`, or `None` for `scratch.out`.
    fn open_blob(
        &self,
        id: &Id,
        entry: &IndexEntry,
        raw: &mut [u8],
        scratch: &mut BlobScratch,
    ) -> Result<Option<std::ops::Range<usize>>> {
        let what = || format!("{} blob {} in pack {}", entry.blob_type, id, entry.pack);
        check_entry(id, entry)?;
        let plain = self
            .inner
            .key
            .decrypt_in_place(raw)
            .map_err(|e| decrypt_error(&what(), e))?;
        let (data, place) = match entry.uncompressed_length {
            Some(u) => {
                scratch
                    .decompress(&raw[plain], u as usize)
                    .map_err(|r| Error::corrupt(what(), r))?;
                (&scratch.out[..], None)
            }
            None => (&raw[plain.clone()], Some(plain)),
        };
        if Id::hash(data) != *id {
            return Err(Error::corrupt(
                what(),
                "its content does not match its id (SHA-256)",
            ));
        }
        Ok(place)
    }

    /// Loads one blob: reads only its bytes from the pack, then decrypts,
    /// decompresses and verifies it.
    pub fn load_blob(&self, t: BlobType, id: &Id) -> Result<Vec<u8>> {
        let entry = self.lookup_blob(t, id).ok_or_else(|| Error::NotFound {
            what: format!("{t} blob {id}"),
            hint: "the repository index does not list it; run a check to see what is missing"
                .into(),
        })?;
        check_entry(id, &entry)?;
        let raw = retry(|| {
            self.inner.backend.read_range(
                FileType::Pack,
                &entry.pack,
                u64::from(entry.offset),
                entry.length,
            )
        })?;
        self.decode_blob(id, &entry, &raw)
    }

    /// A saver that packs new blobs into this repository.
    pub fn blob_saver(&self) -> BlobSaver {
        BlobSaver::new(self.clone())
    }

    /// Stores a snapshot. Call only after the blob saver that wrote its data was
    /// flushed.
    pub fn save_snapshot(&self, sn: &Snapshot) -> Result<Id> {
        self.save_json(FileType::Snapshot, sn)
    }

    /// Ids of all snapshots.
    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        Ok(retry(|| self.inner.backend.list(FileType::Snapshot))?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// All snapshots, oldest first. Damaged snapshot files are skipped with a
    /// warning (a check reports them).
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let mut out = Vec::new();
        for id in self.snapshot_ids()? {
            match self.load_json::<Snapshot>(FileType::Snapshot, &id) {
                Ok(sn) => out.push((id, sn)),
                // Removed by a concurrent forget between list and read.
                Err(Error::Backend(e)) if e.is_not_found() => continue,
                Err(e) if e.is_corrupt() => {
                    tracing::warn!(error = %e, "skipping a damaged snapshot; run a check");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Loads a snapshot by unique id prefix (like restic), or `latest`.
    pub fn load_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return self.list_snapshots()?.pop().ok_or_else(|| Error::NotFound {
                what: "latest snapshot".into(),
                hint: format!("{} has no snapshots yet", self.location()),
            });
        }
        if spec.is_empty() || spec.len() > 64 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(format!(
                "{spec:?} is not a snapshot id: give a hex id prefix or \"latest\""
            )));
        }
        let matches: Vec<Id> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.has_prefix(spec))
            .collect();
        match matches.as_slice() {
            [] => Err(Error::NotFound {
                what: format!("snapshot {spec}"),
                hint: "no snapshot id starts with that; list the snapshots to find the right id"
                    .into(),
            }),
            [id] => Ok((*id, self.load_json(FileType::Snapshot, id)?)),
            many => Err(Error::Ambiguous {
                prefix: spec.to_string(),
                count: many.len(),
            }),
        }
    }

    /// Loads a tree blob.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        let data = self.load_blob(BlobType::Tree, id)?;
        Tree::from_blob(&data, &format!("tree {id}"))
    }

    /// The node at `path` (components separated by `/`) below the tree `root`. An
    /// empty path or `/` gives a directory node for the root itself.
    pub fn find_node(&self, root: &Id, path: &str) -> Result<Node> {
        let mut node = Node::new("/", NodeType::Dir);
        node.subtree = Some(*root);
        let mut walked = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let Some(subtree) = node.subtree.filter(|_| node.node_type == NodeType::Dir) else {
                return Err(Error::NotFound {
                    what: format!("{path} in the snapshot"),
                    hint: format!("{walked} is not a directory"),
                });
            };
            let tree = self.load_tree(&subtree)?;
            walked.push('/');
            walked.push_str(comp);
            node = tree
                .find(std::ffi::OsStr::new(comp))
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    what: format!("{walked} in the snapshot"),
                    hint: "list the snapshot to see which paths it contains".into(),
                })?;
        }
        Ok(node)
    }

    /// Takes a lock with default options (30-minute staleness, 5-minute refresh).
    pub fn lock(&self, kind: LockKind) -> Result<RepoLock> {
        RepoLock::acquire(self, kind, LockOptions::default())
    }

    /// Takes a lock with explicit options (clock, host name, timings).
    pub fn lock_with(&self, kind: LockKind, options: LockOptions) -> Result<RepoLock> {
        RepoLock::acquire(self, kind, options)
    }
}
