//! A repository in a local directory, in restic's default layout:
//!
//! ```text
//! config
//! keys/<id>  locks/<id>  snapshots/<id>  index/<id>
//! data/00/<id> ... data/ff/<id>   (packs, by the first byte of their id)
//! ```
//!
//! Writes go to a temporary file (`.tmp-<host>.<pid>.<random>`, a name restic
//! ignores) at the root, are fsynced, renamed into place, and the directory is
//! fsynced: a crash or `kill -9` never leaves a partial file under a real name, and
//! the next run on the host removes the temporary files of processes that are gone.
//! Files are created 0600 and directories 0700.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::{Backend, BackendError, FileType};
use crate::id::Id;

/// The local-directory backend.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    /// Whether dead processes' staged packs were looked for yet.
    swept: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const TEMP_PREFIX: &str = ".tmp-";

/// 16 random hex digits.
fn random_hex() -> String {
    let mut rnd = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut rnd);
    hex::encode(rnd)
}

/// This host's name as it goes into a staged file's name (letters, digits and `-`).
fn staging_host() -> String {
    crate::sys::hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl LocalBackend {
    /// A backend for the repository at `root` (nothing is touched until used).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            swept: Default::default(),
        }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory `(t, id)` goes in, made (0700) if missing.
    fn dir_for(&self, t: FileType, id: &Id) -> Result<PathBuf, BackendError> {
        let dir = self
            .path_for(t, id)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io_error("create directory", &dir, e))?;
        }
        Ok(dir)
    }

    /// A new file (0600) at the root named `.tmp-<host>.<pid>.<random>`, after the
    /// handle's first sweep of dead processes' temporary files. Every file (packs,
    /// snapshots, indexes, locks, keys) is written there and renamed into place, so a
    /// kill -9 at any point leaves nothing but such a file, which the next run removes.
    fn temp_file(&self) -> Result<super::StagedFile, BackendError> {
        self.sweep_dead_staged();
        let name = format!("{}.{}.{}", staging_host(), std::process::id(), random_hex());
        let path = self.root.join(format!("{TEMP_PREFIX}{name}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        Ok(super::StagedFile::new(file, path))
    }

    /// Temporary files of processes on this machine that no longer run (killed mid-write):
    /// nothing will ever commit them. Removed once per backend handle, before it writes
    /// its first file. Files of other hosts (a shared file system) are left alone.
    fn sweep_dead_staged(&self) {
        if self.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mine = format!("{TEMP_PREFIX}{}.", staging_host());
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&mine)) else {
                continue;
            };
            let pid = rest.split('.').next().and_then(|p| p.parse::<i64>().ok());
            if pid.is_some_and(|pid| !crate::sys::process_exists(pid)) {
                match fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(file = %e.path().display(), "removed a temporary file left by a process that died")
                    }
                    Err(err) => {
                        tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a dead process's temporary file")
                    }
                }
            }
        }
    }

    /// Makes `staged` the file `(t, id)` durably: fsync, rename, fsync of the directory.
    fn place(
        &self,
        t: FileType,
        id: &Id,
        mut staged: super::StagedFile,
    ) -> Result<(), BackendError> {
        let dir = self.dir_for(t, id)?;
        let final_path = self.path_for(t, id);
        staged
            .file
            .sync_all()
            .map_err(|e| io_error("sync", &staged.path, e))?;
        fs::rename(&staged.path, &final_path)
            .map_err(|e| io_error("rename into", &final_path, e))?;
        staged.mark_committed();
        if t == FileType::Pack {
            // On disk now; a pack is read again only by a restore or a check, usually
            // long after. Its clean pages are freed for the backup's next pack instead
            // of filling the cache.
            crate::sys::drop_cached(&staged.file, 0, 0);
        }
        sync_dir(&dir)
    }

    /// Where the file of this type and id lives.
    pub fn path_for(&self, t: FileType, id: &Id) -> PathBuf {
        match t {
            FileType::Config => self.root.join("config"),
            FileType::Pack => {
                let hex = id.to_hex();
                self.root.join("data").join(&hex[..2]).join(hex)
            }
            _ => self.root.join(t.dir_name()).join(id.to_hex()),
        }
    }

    fn mkdir(path: &Path) -> Result<(), BackendError> {
        match DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
            Err(e) => Err(io_error("create directory", path, e)),
        }
    }

    fn list_dir(dir: &Path, out: &mut Vec<(Id, u64)>) -> Result<(), BackendError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(id) = Id::from_hex(name) else { continue };
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed between listing and stat: not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("stat", &entry.path(), e)),
            };
            if meta.is_file() {
                out.push((id, meta.len()));
            }
        }
        Ok(())
    }
}

/// Maps an IO error to a [`BackendError`], naming the path and saying what to do.
pub(crate) fn io_error(action: &str, path: &Path, e: io::Error) -> BackendError {
    let what = format!("{action} {}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound => BackendError::NotFound {
            what: path.display().to_string(),
        },
        io::ErrorKind::StorageFull => BackendError::Permanent {
            what,
            message: format!(
                "disk full at {}: free space on that file system (or move the repository) and try again",
                path.display()
            ),
        },
        io::ErrorKind::PermissionDenied => BackendError::Permanent {
            what,
            message: format!(
                "permission denied ({e}): check the owner and mode of {} and run as the user that owns the repository",
                path.display()
            ),
        },
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            BackendError::Transient {
                what,
                message: e.to_string(),
            }
        }
        _ => BackendError::Permanent {
            what,
            message: e.to_string(),
        },
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackendError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync directory", dir, e))
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<(), BackendError> {
        if self.root.join("config").exists() {
            return Err(BackendError::AlreadyExists {
                location: self.location(),
            });
        }
        if !self.root.exists() {
            if let Some(parent) = self.root.parent() {
                if !parent.as_os_str().is_empty() {
                    DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(|e| io_error("create directory", parent, e))?;
                }
            }
        }
        Self::mkdir(&self.root)?;
        for t in [
            FileType::Key,
            FileType::Lock,
            FileType::Snapshot,
            FileType::Index,
            FileType::Pack,
        ] {
            Self::mkdir(&self.root.join(t.dir_name()))?;
        }
        let data = self.root.join("data");
        for b in 0..=255u8 {
            Self::mkdir(&data.join(format!("{b:02x}")))?;
        }
        sync_dir(&data)?;
        sync_dir(&self.root)
    }

    fn list(&self, t: FileType) -> Result<Vec<(Id, u64)>, BackendError> {
        let mut out = Vec::new();
        match t {
            FileType::Config => {
                let p = self.root.join("config");
                match fs::metadata(&p) {
                    Ok(m) => out.push((Id::default(), m.len())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("stat", &p, e)),
                }
            }
            FileType::Pack => {
                let data = self.root.join("data");
                let entries = match fs::read_dir(&data) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(io_error("list", &data, e)),
                };
                let mut dirs = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| io_error("list", &data, e))?;
                    let is_dir = entry.file_type().map(|ft| ft.is_dir()).unwrap_or(false);
                    if is_dir {
                        dirs.push(entry.path());
                    } else if let Some(name) = entry.file_name().to_str() {
                        // Packs directly below data/ (restic's s3legacy layout).
                        if let Ok(id) = Id::from_hex(name) {
                            if let Ok(m) = entry.metadata() {
                                out.push((id, m.len()));
                            }
                        }
                    }
                }
                dirs.sort();
                for d in dirs {
                    Self::list_dir(&d, &mut out)?;
                }
            }
            _ => Self::list_dir(&self.root.join(t.dir_name()), &mut out)?,
        }
        Ok(out)
    }

    fn read(&self, t: FileType, id: &Id) -> Result<Vec<u8>, BackendError> {
        let p = self.path_for(t, id);
        fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BackendError::NotFound {
                what: format!("{} at {}", t.describe(id), self.location()),
            },
            _ => io_error("read", &p, e),
        })
    }

    fn read_range(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        let mut buf = Vec::new();
        self.read_range_into(t, id, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn read_range_into(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let p = self.path_for(t, id);
        let f = File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BackendError::NotFound {
                what: format!("{} at {}", t.describe(id), self.location()),
            },
            _ => io_error("open", &p, e),
        })?;
        // Only growth is zeroed: a reused buffer costs no page faults or zeroing.
        buf.resize(len as usize, 0);
        let read = f.read_exact_at(buf, offset);
        if t == FileType::Pack {
            // Restores and checks read each pack range once.
            crate::sys::drop_cached(&f, offset, u64::from(len));
        }
        read.map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                BackendError::Permanent {
                    what: format!("read {}", p.display()),
                    message: format!(
                        "the file is shorter than expected (wanted {len} bytes at offset {offset}); it was truncated"
                    ),
                }
            } else {
                io_error("read", &p, e)
            }
        })
    }

    /// Packs are assembled in `.tmp-<host>.<pid>.<random>` at the repository's root
    /// (restic and listings ignore it), like every other file written (`temp_file`).
    fn stage(&self, _t: FileType) -> Result<Option<super::StagedFile>, BackendError> {
        self.temp_file().map(Some)
    }

    fn commit(&self, t: FileType, id: &Id, staged: super::StagedFile) -> Result<(), BackendError> {
        self.place(t, id, staged)
    }

    fn write(&self, t: FileType, id: &Id, data: &[u8]) -> Result<(), BackendError> {
        // The temporary file sits at the root, where the sweep finds it after a kill -9;
        // dropped on failure, it is removed.
        let mut staged = self.temp_file()?;
        staged
            .file
            .write_all(data)
            .map_err(|e| io_error("write", &staged.path, e))?;
        self.place(t, id, staged)
    }

    fn remove(&self, t: FileType, id: &Id) -> Result<(), BackendError> {
        let p = self.path_for(t, id);
        fs::remove_file(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BackendError::NotFound {
                what: format!("{} at {}", t.describe(id), self.location()),
            },
            _ => io_error("remove", &p, e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn staging_removes_only_dead_local_processes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        let host = staging_host();
        let dead = dir.path().join(format!(".tmp-{host}.2147483646.00"));
        let alive = dir
            .path()
            .join(format!(".tmp-{host}.{}.00", std::process::id()));
        let other = dir.path().join(".tmp-some-other-host.2147483646.00");
        for f in [&dead, &alive, &other] {
            fs::write(f, b"pack").unwrap();
        }
        let staged = b.stage(FileType::Pack).unwrap().unwrap();
        assert!(!dead.exists(), "a dead process's staged pack stays");
        assert!(alive.exists() && other.exists());
        // A staged file that is dropped uncommitted is removed; a committed one is the pack.
        let path = staged.path.clone();
        drop(staged);
        assert!(!path.exists());
        let mut staged = b.stage(FileType::Pack).unwrap().unwrap();
        std::io::Write::write_all(&mut staged.file, b"data").unwrap();
        let id = Id::hash(b"data");
        b.commit(FileType::Pack, &id, staged).unwrap();
        assert_eq!(b.read(FileType::Pack, &id).unwrap(), b"data");
    }

    #[test]
    fn a_snapshot_write_cut_short_is_swept_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        LocalBackend::new(dir.path()).create().unwrap();
        // What a kill -9 in the middle of writing a snapshot leaves: a temporary file at
        // the root, never in snapshots/ where nothing would look for it.
        let host = staging_host();
        let dead = dir.path().join(format!(".tmp-{host}.2147483646.0011"));
        fs::write(&dead, b"{\"half a snapshot").unwrap();
        // The next run writes no pack (nothing new), only its lock and snapshot.
        let b = LocalBackend::new(dir.path());
        let id = Id::hash(b"snapshot");
        b.write(FileType::Snapshot, &id, b"snapshot").unwrap();
        assert!(!dead.exists(), "the dead writer's temporary file stays");
        let names: Vec<_> = fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![id.to_hex()]);
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TEMP_PREFIX)
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn layout_write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        assert!(dir.path().join("repo/data/ff").is_dir());
        let mode = fs::metadata(dir.path().join("repo/keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let id = Id::hash(b"pack");
        b.write(FileType::Pack, &id, b"0123456789").unwrap();
        let p = b.path_for(FileType::Pack, &id);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(b.read(FileType::Pack, &id).unwrap(), b"0123456789");
        assert_eq!(b.read_range(FileType::Pack, &id, 2, 3).unwrap(), b"234");
        assert!(b.read_range(FileType::Pack, &id, 8, 3).is_err());
        assert_eq!(b.list(FileType::Pack).unwrap(), vec![(id, 10)]);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);

        b.write(FileType::Config, &Id::default(), b"cfg").unwrap();
        assert!(matches!(
            b.create(),
            Err(BackendError::AlreadyExists { .. })
        ));
        b.remove(FileType::Pack, &id).unwrap();
        assert!(b.read(FileType::Pack, &id).unwrap_err().is_not_found());
        let full = io_error(
            "write",
            Path::new("/srv/repo/data/00/x"),
            io::Error::from_raw_os_error(28),
        );
        assert!(
            full.to_string()
                .contains("disk full at /srv/repo/data/00/x"),
            "{full}"
        );
        assert!(b.remove(FileType::Pack, &id).unwrap_err().is_not_found());
    }
}
