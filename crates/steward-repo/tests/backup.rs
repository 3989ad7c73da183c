//! Backups: parent snapshots, dedup, progress, excludes, and detecting damage.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use steward_repo::{
    backup, check, read_data, restore, BackupOptions, BlobType, FileType, Id, ParentSelection,
    ReadDataSubset, RestoreOptions,
};

#[test]
fn second_backup_reuses_unchanged_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let repo = init_repo(&tmp.path().join("repo"));
    let first = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    assert_eq!(first.parent, None);
    assert_eq!(first.files_new, TREE_FILES);
    assert!(first.data_packs_written >= 1);

    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = Arc::clone(&seen);
    let opts = BackupOptions {
        progress: Some(Arc::new(move |p| {
            seen2.store(p.files_done, Ordering::Relaxed);
        })),
        ..Default::default()
    };
    let second = backup(&repo, &[&src], &opts).unwrap();
    assert_eq!(second.parent, Some(first.snapshot_id));
    assert_eq!(second.files_unchanged, TREE_FILES);
    assert_eq!(second.files_new + second.files_changed, 0);
    assert_eq!(second.bytes_read, 0, "unchanged files must not be read");
    assert_eq!(second.total_bytes, first.total_bytes);
    assert_eq!(second.data_blobs_added, 0);
    assert_eq!(second.data_packs_written, 0, "no new data packs");
    assert_eq!(seen.load(Ordering::Relaxed), TREE_FILES);

    // Change one file: only it is read.
    fs::write(src.join("a/small.txt"), b"changed").unwrap();
    let third = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    assert_eq!(third.parent, Some(second.snapshot_id));
    assert_eq!(third.files_changed, 1);
    assert_eq!(third.files_unchanged, TREE_FILES - 1);
    assert_eq!(third.bytes_read, 7);
    assert_eq!(third.data_blobs_added, 1);

    // Each snapshot restores to what the tree was at its time.
    let (_, sn) = repo.load_snapshot(&third.snapshot_id.to_hex()).unwrap();
    let out = tmp.path().join("out");
    restore(&repo, &sn, &out, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &under(&out, &src));
    assert!(check(&repo).unwrap().is_ok());
    assert_eq!(repo.list_snapshots().unwrap().len(), 3);
}

#[test]
fn same_data_twice_adds_no_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    fs::create_dir_all(&a).unwrap();
    let data = random_bytes(3 << 20, 9);
    fs::write(a.join("one.bin"), &data).unwrap();
    let repo = init_repo(&tmp.path().join("repo"));
    let first = backup(&repo, &[&a], &BackupOptions::default()).unwrap();
    assert!(first.data_blobs_added >= 2);

    // Another directory with the same content, no parent: read again, stored once.
    let b = tmp.path().join("b");
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("copy.bin"), &data).unwrap();
    fs::write(b.join("copy2.bin"), &data).unwrap();
    let opts = BackupOptions {
        parent: ParentSelection::None,
        ..Default::default()
    };
    let second = backup(&repo, &[&b], &opts).unwrap();
    assert_eq!(second.bytes_read, 2 * data.len() as u64);
    assert_eq!(second.data_blobs_added, 0);
    assert_eq!(second.data_packs_written, 0);
    let index_blobs = repo.index().count(BlobType::Data);
    assert_eq!(index_blobs as u64, first.data_blobs_added);
}

#[test]
fn excludes_and_multiple_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("cache/junk"), b"junk").unwrap();
    fs::write(src.join("a/x.tmp"), b"tmp").unwrap();
    let other = tmp.path().join("other.txt");
    fs::write(&other, b"other").unwrap();
    let repo = init_repo(&tmp.path().join("repo"));
    let opts = BackupOptions {
        excludes: vec!["*.tmp".into(), "src/cache".into(), "big.bin".into()],
        tags: vec!["nightly".into()],
        ..Default::default()
    };
    let s = backup(&repo, &[src.clone(), other.clone(), src.join("a")], &opts).unwrap();
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    let (_, sn) = repo.load_snapshot("latest").unwrap();
    assert_eq!(sn.tags, vec!["nightly"]);
    assert_eq!(sn.paths.len(), 2);
    let out = tmp.path().join("out");
    restore(&repo, &sn, &out, &RestoreOptions::default()).unwrap();
    let r = under(&out, &src);
    assert!(!r.join("big.bin").exists());
    assert!(!r.join("a/x.tmp").exists());
    assert!(!r.join("cache").exists());
    assert!(r.join("a/b/c/deep.txt").exists());
    assert_eq!(fs::read(under(&out, &other)).unwrap(), b"other");
}

#[test]
fn corrupted_pack_is_named_by_read_data() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.bin"), random_bytes(2 << 20, 5)).unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = init_repo(&repo_dir);
    backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    let clean = read_data(&repo, ReadDataSubset::All).unwrap();
    assert!(clean.is_ok(), "{:?}", clean.problems);
    assert!(clean.blobs_verified >= 3);

    // Flip one byte in the middle of the data pack.
    let entry = repo
        .index()
        .iter()
        .find(|(_, e)| e.blob_type == BlobType::Data)
        .map(|(_, e)| e)
        .unwrap();
    let pack = entry.pack;
    let path = repo_dir
        .join("data")
        .join(&pack.to_hex()[..2])
        .join(pack.to_hex());
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = u64::from(entry.offset) + u64::from(entry.length) / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);

    let report = read_data(&repo, ReadDataSubset::All).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.damaged_packs(), vec![pack]);
    let text = report.problems[0].to_string();
    assert!(text.contains(&pack.to_hex()), "{text}");
    // A subset that leaves that pack out finds nothing.
    let others = read_data(
        &repo,
        ReadDataSubset::Select(Arc::new(move |id: &Id| *id != pack)),
    )
    .unwrap();
    assert!(others.is_ok());
    // Restoring the damaged blob fails, naming the pack.
    let (_, sn) = repo.load_snapshot("latest").unwrap();
    let err = restore(
        &repo,
        &sn,
        &tmp.path().join("out"),
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(err.to_string().contains(&pack.to_hex()), "{err}");

    // Damage to the header is found by the structure check, which reads no data.
    let size = fs::metadata(&path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xAA], size - 10).unwrap();
    drop(f);
    let report = check(&repo).unwrap();
    assert_eq!(report.damaged_packs(), vec![pack], "{:?}", report.problems);
    assert!(report.into_result().is_err());

    // A damaged index file does not stop the repository from opening; the check
    // names it.
    let junk = b"not an encrypted index at all, but long enough".to_vec();
    let junk_id = Id::hash(&junk);
    fs::write(repo_dir.join("index").join(junk_id.to_hex()), &junk).unwrap();
    let reopened = open_repo(&repo_dir);
    let report = check(&reopened).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_string().contains(&format!("index file {junk_id}"))),
        "{:?}",
        report.problems
    );
}

#[test]
fn missing_pack_and_truncated_pack_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(1 << 20, 6)).unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = init_repo(&repo_dir);
    backup(&repo, &[src], &BackupOptions::default()).unwrap();
    let packs = repo.backend().list(FileType::Pack).unwrap();
    assert_eq!(packs.len(), 2, "one data pack and one tree pack");
    let (pack, size) = packs[0];
    let path = repo_dir
        .join("data")
        .join(&pack.to_hex()[..2])
        .join(pack.to_hex());
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(size - 1).unwrap();
    drop(f);
    let report = check(&repo).unwrap();
    assert_eq!(report.damaged_packs(), vec![pack]);
    fs::remove_file(&path).unwrap();
    let report = check(&repo).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.to_string().contains("does not exist")));
}

/// Wraps a backend and fails pack writes once `allowed` more have succeeded
/// (negative: never fails).
#[derive(Debug)]
struct FailingPacks {
    inner: steward_repo::LocalBackend,
    allowed: std::sync::atomic::AtomicI64,
}

impl steward_repo::Backend for FailingPacks {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<(), steward_repo::BackendError> {
        self.inner.create()
    }
    fn list(&self, t: FileType) -> Result<Vec<(Id, u64)>, steward_repo::BackendError> {
        self.inner.list(t)
    }
    fn read(&self, t: FileType, id: &Id) -> Result<Vec<u8>, steward_repo::BackendError> {
        self.inner.read(t, id)
    }
    fn read_range(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, steward_repo::BackendError> {
        self.inner.read_range(t, id, offset, len)
    }
    fn write(&self, t: FileType, id: &Id, data: &[u8]) -> Result<(), steward_repo::BackendError> {
        if t == FileType::Pack && self.allowed.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.allowed.store(0, Ordering::SeqCst);
            return Err(steward_repo::BackendError::Permanent {
                what: format!("write pack {id}"),
                message: "disk full at /fake: free space and try again".into(),
            });
        }
        self.inner.write(t, id, data)
    }
    fn remove(&self, t: FileType, id: &Id) -> Result<(), steward_repo::BackendError> {
        self.inner.remove(t, id)
    }
}

#[test]
fn failures_stop_the_backup_without_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Arc::new(FailingPacks {
        inner: steward_repo::LocalBackend::new(tmp.path().join("repo")),
        allowed: std::sync::atomic::AtomicI64::new(-1_000_000),
    });
    let repo = steward_repo::Repository::init(backend.clone(), PASSWORD, fast_init()).unwrap();

    // A stream that breaks half way.
    struct Broken(usize);
    impl std::io::Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset by pg_dump"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let err =
        steward_repo::backup_stream(&repo, "db.sql", Broken(3 << 20), &BackupOptions::default())
            .unwrap_err();
    assert!(
        err.to_string().contains("connection reset by pg_dump"),
        "{err}"
    );
    assert!(repo.list_snapshots().unwrap().is_empty());
    assert!(repo.backend().list(FileType::Lock).unwrap().is_empty());

    // Pack writes failing (disk full) while files are being read.
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), random_bytes(4 << 20, 100 + i)).unwrap();
    }
    backend.allowed.store(0, Ordering::SeqCst);
    let err = backup(&repo, &[&src], &BackupOptions::default()).unwrap_err();
    assert!(err.to_string().contains("disk full at"), "{err}");
    assert!(repo.list_snapshots().unwrap().is_empty());
    assert!(repo.backend().list(FileType::Lock).unwrap().is_empty());

    // Failing after one pack was stored: that pack gets indexed anyway, so the
    // next backup can rely on (and dedup against) it.
    backend.allowed.store(1, Ordering::SeqCst);
    let err = backup(&repo, &[&src], &BackupOptions::default()).unwrap_err();
    assert!(err.to_string().contains("disk full at"), "{err}");
    let report = check(&repo).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(report.packs_checked, 1);

    // Once the disk has space again the same repository (and handle) works.
    backend.allowed.store(-1_000_000, Ordering::SeqCst);
    let ok = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    assert_eq!(ok.files_new, 6);
    let fresh = open_repo(&tmp.path().join("repo"));
    assert!(check(&fresh).unwrap().is_ok());
    assert!(read_data(&fresh, ReadDataSubset::All).unwrap().is_ok());
    let (_, sn) = fresh.load_snapshot("latest").unwrap();
    let out = tmp.path().join("out");
    restore(&fresh, &sn, &out, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &under(&out, &src));
    assert!(check(&repo).unwrap().is_ok());
}

/// [`make_tree`] in a temp dir, backed up once: (dir, source, repo, summary, snapshot).
fn backed_up_tree() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    steward_repo::Repository,
    steward_repo::BackupSummary,
    steward_repo::Snapshot,
) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let repo = init_repo(&tmp.path().join("repo"));
    let b = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    let (_, sn) = repo.load_snapshot(&b.snapshot_id.to_hex()).unwrap();
    (tmp, src, repo, b, sn)
}

#[test]
fn restoring_over_an_earlier_restore_replaces_what_is_in_the_way() {
    let (tmp, src, repo, _, sn) = backed_up_tree();
    let out = tmp.path().join("out");
    restore(&repo, &sn, &out, &RestoreOptions::default()).unwrap();
    let root = under(&out, &src);

    // A longer file where a shorter one goes: the result is the snapshot's, not a mix.
    fs::write(root.join("a/small.txt"), vec![b'x'; 5 << 20]).unwrap();
    // A read-only file is replaced, not refused.
    assert!(root.join("readonly").exists());
    // A symlink where a file goes is replaced, never written through.
    let victim = tmp.path().join("victim");
    fs::write(&victim, b"untouched").unwrap();
    fs::remove_file(root.join("dump.sql")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("dump.sql")).unwrap();
    restore(&repo, &sn, &out, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &root);
    assert_eq!(fs::read(&victim).unwrap(), b"untouched");

    // A directory where a file goes stops the restore with the path named.
    fs::remove_file(root.join("secret")).unwrap();
    fs::create_dir(root.join("secret")).unwrap();
    let err = restore(&repo, &sn, &out, &RestoreOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret") && err.contains("a directory is in the way"),
        "{err}"
    );
}

#[test]
fn a_restore_reports_its_total_and_reaches_it() {
    let (tmp, _, repo, b, sn) = backed_up_tree();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let opts = RestoreOptions {
        progress: Some(Arc::new(move |p| seen2.lock().unwrap().push(*p))),
        ..Default::default()
    };
    let s = restore(&repo, &sn, &tmp.path().join("out"), &opts).unwrap();
    let seen = seen.lock().unwrap();
    // The first report comes before any content (the total is known from the plan).
    assert_eq!(seen[0].bytes_done, 0);
    assert!(seen.iter().all(|p| p.bytes_total == Some(s.bytes_written)));
    // The last report comes after every worker is done.
    let last = seen.last().unwrap();
    assert_eq!(last.bytes_done, s.bytes_written);
    assert_eq!(last.files_done, TREE_FILES);
    assert_eq!(s.bytes_written, b.total_bytes);
}
