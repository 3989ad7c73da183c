//! Pruning: freeing unreferenced data, crash safety at every step, locks, and
//! restic's view of the result.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use steward_repo::{
    backup, check, prune, read_data, restore, restore_file_to, Backend, BackendError,
    BackupOptions, Error, FileType, Id, InitOptions, LocalBackend, LockKind, LockOptions,
    MaxUnused, ParentSelection, PruneOptions, PruneSummary, ReadDataSubset, RepoOptions,
    Repository, RestoreOptions, Snapshot,
};

fn quick_lock() -> LockOptions {
    LockOptions {
        recheck_delay: Duration::ZERO,
        ..Default::default()
    }
}

fn opts() -> PruneOptions {
    PruneOptions {
        lock: quick_lock(),
        ..Default::default()
    }
}

/// Small packs, so a few MiB of data spread over several packs.
fn small_packs() -> InitOptions {
    let mut o = fast_init();
    o.options = RepoOptions {
        pack_size: 3 << 20,
        ..Default::default()
    };
    o
}

fn open_small(dir: &Path) -> Repository {
    Repository::open_with(
        Arc::new(LocalBackend::new(dir)),
        PASSWORD,
        small_packs().options,
    )
    .unwrap()
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Every file name below the repository except locks.
fn listing(repo_dir: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(repo_dir, &mut out);
    out.retain(|p| !p.starts_with(repo_dir.join("locks")));
    out.sort();
    out
}

struct Fixture {
    src_a: PathBuf,
    src_b: PathBuf,
    repo_dir: PathBuf,
    a: Id,
    b: Id,
    c: Id,
}

/// A and B share a 5 MiB file and an empty directory (the same tree blob); C
/// is a subdirectory of A. A is backed up with one worker, so its only-A and
/// shared blobs sit together in one pack. Then A is forgotten.
fn fixture(tmp: &Path) -> Fixture {
    let src_a = tmp.join("A");
    let src_b = tmp.join("B");
    fs::create_dir_all(src_a.join("sub")).unwrap();
    fs::create_dir_all(src_b.join("empty")).unwrap();
    // An empty directory is the same (empty) tree blob everywhere: B's copy
    // dedups against the one in A's tree pack.
    fs::create_dir_all(src_a.join("empty")).unwrap();
    let shared = random_bytes(5 << 20, 2);
    fs::write(src_a.join("a_only.bin"), random_bytes(5 << 20, 1)).unwrap();
    fs::write(src_a.join("shared.bin"), &shared).unwrap();
    fs::write(src_a.join("sub/kept.sql"), text_bytes(300_000, 9)).unwrap();
    fs::write(src_b.join("shared.bin"), &shared).unwrap();
    fs::write(src_b.join("b_only.bin"), random_bytes(4 << 20, 3)).unwrap();
    fs::write(src_b.join("notes.txt"), b"notes").unwrap();

    let repo_dir = tmp.join("repo");
    let repo = Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        PASSWORD,
        small_packs(),
    )
    .unwrap();
    let at = |d| Some(Utc.with_ymd_and_hms(2024, 5, d, 12, 0, 0).unwrap());
    let a = backup(
        &repo,
        &[&src_a],
        &BackupOptions {
            workers: Some(1),
            time: at(1),
            ..Default::default()
        },
    )
    .unwrap()
    .snapshot_id;
    let b = backup(
        &repo,
        &[&src_b],
        &BackupOptions {
            time: at(2),
            ..Default::default()
        },
    )
    .unwrap()
    .snapshot_id;
    let c = backup(
        &repo,
        &[src_a.join("sub")],
        &BackupOptions {
            time: at(3),
            parent: ParentSelection::None,
            ..Default::default()
        },
    )
    .unwrap()
    .snapshot_id;
    assert_eq!(repo.remove_snapshots_with(&[a], quick_lock()).unwrap(), 1);
    Fixture {
        src_a,
        src_b,
        repo_dir,
        a,
        b,
        c,
    }
}

/// B and C restore byte for byte through Steward.
fn assert_restores(repo: &Repository, f: &Fixture, out: &Path) {
    let _ = fs::remove_dir_all(out);
    for (id, src) in [(f.b, f.src_b.clone()), (f.c, f.src_a.join("sub"))] {
        let (_, sn) = repo.load_snapshot(&id.to_hex()).unwrap();
        let target = out.join(id.short());
        restore(repo, &sn, &target, &RestoreOptions::default()).unwrap();
        assert_same_tree(&src, &under(&target, &src));
    }
}

fn assert_clean(repo: &Repository) {
    let report = check(repo).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn prune_frees_forgotten_data_and_restic_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path());
    let repo = open_small(&f.repo_dir);
    assert!(repo.load_snapshot(&f.a.to_hex()).is_err());
    let data_before = dir_size(&f.repo_dir.join("data"));

    // A dry run changes nothing and predicts the real run.
    let before = listing(&f.repo_dir);
    let dry = prune(
        &repo,
        &PruneOptions {
            dry_run: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(dry.dry_run);
    assert_eq!(listing(&f.repo_dir), before);

    let s = prune(&repo, &opts()).unwrap();
    println!("{s:#?}");
    assert!(!s.dry_run);
    assert_eq!(s.snapshots, 2);
    assert!(s.packs_deleted >= 1, "{s:?}");
    // A's tree pack holds the empty tree B uses: tree packs are always
    // repacked, and the pack mixing A-only and shared data is too (far above
    // 5% unused).
    assert!(s.packs_repacked >= 2, "{s:?}");
    assert!(s.packs_written >= 2, "{s:?}");
    assert_eq!(s.unreferenced_packs_deleted, 0);
    assert_eq!(s.index_files_deleted, 3, "one index file per backup before");
    assert!(s.index_files_written >= 1);
    assert!(s.blobs_removed >= 5, "{s:?}");
    assert_eq!(s.bytes_before, data_before);
    assert!(s.bytes_freed >= 5 << 20, "{s:?}");
    assert_eq!(s.bytes_before - s.bytes_freed, s.bytes_after);
    for (what, d, r) in [
        ("packs deleted", dry.packs_deleted, s.packs_deleted),
        ("packs repacked", dry.packs_repacked, s.packs_repacked),
        ("blobs removed", dry.blobs_removed, s.blobs_removed),
        ("blobs kept", dry.blobs_kept, s.blobs_kept),
        (
            "index files deleted",
            dry.index_files_deleted,
            s.index_files_deleted,
        ),
        (
            "index files written",
            dry.index_files_written,
            s.index_files_written,
        ),
        ("packs written", dry.packs_written, s.packs_written),
        ("packs after", dry.packs_after, s.packs_after),
    ] {
        assert_eq!(d, r, "dry run predicted {what} wrongly");
    }
    // Within 5% of the real size (pack headers are estimated).
    assert!(dry.bytes_after.abs_diff(s.bytes_after) < s.bytes_after / 20);
    let data_after = dir_size(&f.repo_dir.join("data"));
    assert_eq!(data_after, s.bytes_after);
    assert!(
        data_after + (5 << 20) <= data_before,
        "{data_before} -> {data_after}"
    );
    assert_eq!(repo.index().pack_count() as u64, s.packs_after);

    assert_restores(&repo, &f, &tmp.path().join("out"));
    assert_clean(&repo);
    let rd = read_data(&repo, ReadDataSubset::All).unwrap();
    assert!(rd.is_ok(), "{:?}", rd.problems);
    // A fresh handle reads the new index.
    assert_restores(&open_repo(&f.repo_dir), &f, &tmp.path().join("out2"));

    if have_restic("prune_frees_forgotten_data_and_restic_agrees") {
        let pw = password_file(tmp.path());
        let out = restic(&f.repo_dir, &pw, &["check", "--read-data"]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("no errors were found"), "{text}");
        assert!(!text.contains("additional files"), "{text}");
        let target = tmp.path().join("restic-out");
        restic(
            &f.repo_dir,
            &pw,
            &[
                "restore",
                &f.b.to_hex(),
                "--target",
                target.to_str().unwrap(),
            ],
        );
        assert_same_tree(&f.src_b, &under(&target, &f.src_b));
    }

    // Nothing left to do.
    let again = prune(&repo, &opts()).unwrap();
    assert_eq!(
        (
            again.packs_deleted,
            again.packs_repacked,
            again.index_files_written
        ),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(again.bytes_freed, 0);
    assert_eq!(again.index_files_deleted, 0, "{again:?}");

    // restic's own prune works on what Steward left, and Steward still reads it.
    if have_restic("prune_frees_forgotten_data_and_restic_agrees") {
        let pw = password_file(tmp.path());
        restic(&f.repo_dir, &pw, &["forget", &f.c.to_hex()]);
        restic(&f.repo_dir, &pw, &["prune"]);
        restic(&f.repo_dir, &pw, &["check", "--read-data"]);
        let repo = open_repo(&f.repo_dir);
        let (_, sn) = repo.load_snapshot(&f.b.to_hex()).unwrap();
        let mut got = Vec::new();
        restore_file_to(
            &repo,
            &sn,
            &format!("{}/b_only.bin", f.src_b.display()),
            &mut got,
        )
        .unwrap();
        assert!(got == fs::read(f.src_b.join("b_only.bin")).unwrap());
        assert_clean(&repo);
        // And Steward prunes after restic.
        let s = prune(&repo, &opts()).unwrap();
        assert_eq!(s.packs_deleted + s.packs_repacked, 0, "{s:?}");
        restic(&f.repo_dir, &pw, &["check", "--read-data"]);
    }
}

#[test]
fn prune_respects_locks_refuses_damage_and_empties_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path());
    let repo = open_small(&f.repo_dir);
    let before = listing(&f.repo_dir);

    // A backup in progress holds a shared lock: prune must not run.
    let backup_lock = repo
        .lock_with(
            LockKind::Shared,
            LockOptions {
                hostname: "backup-host".into(),
                pid: 4242,
                ..quick_lock()
            },
        )
        .unwrap();
    let err = prune(&repo, &opts()).unwrap_err();
    match &err {
        Error::Locked { holder, .. } => {
            assert!(
                holder.contains("a shared lock held by PID 4242 on host backup-host"),
                "{holder}"
            )
        }
        other => panic!("expected Locked, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("wait for that operation to finish"),
        "{err}"
    );
    // A dry run only reads, so it may run next to a backup.
    prune(
        &repo,
        &PruneOptions {
            dry_run: true,
            ..opts()
        },
    )
    .unwrap();
    drop(backup_lock);
    assert_eq!(listing(&f.repo_dir), before);

    // A snapshot whose tree is not in the index: prune cannot know what that
    // snapshot needs, so it refuses and changes nothing.
    let bogus = repo
        .save_snapshot(&Snapshot::new(
            Utc::now(),
            Id::hash(b"no such tree"),
            vec!["/x".into()],
        ))
        .unwrap();
    let before = listing(&f.repo_dir);
    let err = prune(
        &repo,
        &PruneOptions {
            max_unused: MaxUnused::Bytes(0),
            ..opts()
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("prune refused") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(msg.contains(&bogus.to_hex()), "{msg}");
    assert_eq!(listing(&f.repo_dir), before);
    repo.remove_snapshots_with(&[bogus], quick_lock()).unwrap();

    // Forget everything: prune leaves no pack and no index file.
    repo.remove_snapshots_with(&[f.b, f.c], quick_lock())
        .unwrap();
    let s = prune(&repo, &opts()).unwrap();
    assert_eq!(s.packs_after, 0, "{s:?}");
    assert_eq!(s.blobs_kept, 0);
    assert!(repo.backend().list(FileType::Pack).unwrap().is_empty());
    assert!(repo.backend().list(FileType::Index).unwrap().is_empty());
    assert_clean(&open_repo(&f.repo_dir));
    if have_restic("prune_respects_locks_refuses_damage_and_empties_a_repository") {
        let pw = password_file(tmp.path());
        restic(&f.repo_dir, &pw, &["check"]);
    }
}

/// A backend that fails every write or remove of packs and index files from the
/// `fail_at`-th one on, as if the process had died there.
#[derive(Debug)]
struct Crashing {
    inner: LocalBackend,
    fail_at: usize,
    ops: AtomicUsize,
    dead: AtomicBool,
    failed_op: Mutex<Option<String>>,
}

impl Crashing {
    fn step(&self, what: String) -> Result<(), BackendError> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.fail_at || self.dead.load(Ordering::SeqCst) {
            self.dead.store(true, Ordering::SeqCst);
            self.failed_op
                .lock()
                .unwrap()
                .get_or_insert_with(|| what.clone());
            return Err(BackendError::Permanent {
                what,
                message: "injected crash".into(),
            });
        }
        Ok(())
    }
}

impl Backend for Crashing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<(), BackendError> {
        self.inner.create()
    }
    fn list(&self, t: FileType) -> Result<Vec<(Id, u64)>, BackendError> {
        self.inner.list(t)
    }
    fn read(&self, t: FileType, id: &Id) -> Result<Vec<u8>, BackendError> {
        self.inner.read(t, id)
    }
    fn read_range(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.read_range(t, id, offset, len)
    }
    fn write(&self, t: FileType, id: &Id, data: &[u8]) -> Result<(), BackendError> {
        if matches!(t, FileType::Pack | FileType::Index) {
            self.step(format!("write {t}"))?;
        }
        self.inner.write(t, id, data)
    }
    fn remove(&self, t: FileType, id: &Id) -> Result<(), BackendError> {
        if matches!(t, FileType::Pack | FileType::Index) {
            self.step(format!("remove {t}"))?;
        }
        self.inner.remove(t, id)
    }
}

#[test]
fn a_crash_at_any_step_leaves_a_consistent_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path());
    let restic_ok = have_restic("a_crash_at_any_step_leaves_a_consistent_repository");
    let pw = password_file(tmp.path());
    let want_b = fs::read(f.src_b.join("b_only.bin")).unwrap();
    let want_shared = fs::read(f.src_b.join("shared.bin")).unwrap();

    let mut failed_ops = Vec::new();
    let mut reference: Option<PruneSummary> = None;
    for k in 1.. {
        assert!(k < 100, "prune never finished");
        let dir = tmp.path().join(format!("crash{k}"));
        copy_dir(&f.repo_dir, &dir);
        let backend = Arc::new(Crashing {
            inner: LocalBackend::new(&dir),
            fail_at: k,
            ops: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            failed_op: Mutex::new(None),
        });
        let repo = Repository::open_with(backend.clone(), PASSWORD, small_packs().options).unwrap();
        let result = prune(&repo, &opts());
        let failed = backend.failed_op.lock().unwrap().clone();
        let Some(op) = failed else {
            // Past the last step: the prune ran to the end.
            let s = result.unwrap();
            assert_eq!(
                s.packs_written
                    + s.index_files_written
                    + s.index_files_deleted
                    + s.packs_deleted
                    + s.packs_repacked,
                k as u64 - 1
            );
            reference = Some(s);
            break;
        };
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::Interrupted { .. }),
            "step {k} ({op}): expected Interrupted, got {err}"
        );
        assert!(err.to_string().contains("run prune again"), "{err}");
        failed_ops.push(op.clone());

        // The repository as the crash left it: consistent for us and restic.
        let repo = open_small(&dir);
        let report = check(&repo).unwrap();
        assert!(
            report.is_ok(),
            "after a crash at step {k} ({op}): {:?}",
            report.problems
        );
        if restic_ok {
            restic(&dir, &pw, &["check"]);
        }
        let (_, sn) = repo.load_snapshot(&f.b.to_hex()).unwrap();
        let mut got = Vec::new();
        restore_file_to(
            &repo,
            &sn,
            &format!("{}/b_only.bin", f.src_b.display()),
            &mut got,
        )
        .unwrap();
        assert!(got == want_b, "step {k}: b_only.bin differs");

        // A second prune finishes the job and leaves nothing behind.
        let s = prune(&repo, &opts()).unwrap();
        assert_eq!(s.snapshots, 2);
        assert_clean(&repo);
        let rd = read_data(&repo, ReadDataSubset::All).unwrap();
        assert!(rd.is_ok(), "{:?}", rd.problems);
        let mut got = Vec::new();
        restore_file_to(
            &repo,
            &sn,
            &format!("{}/shared.bin", f.src_b.display()),
            &mut got,
        )
        .unwrap();
        assert!(got == want_shared, "step {k}: shared.bin differs");
        if restic_ok {
            let out = restic(&dir, &pw, &["check"]);
            assert!(!String::from_utf8_lossy(&out).contains("additional files"));
        }
        fs::remove_dir_all(&dir).unwrap();
    }
    println!("crash points: {failed_ops:?}");
    let s = reference.unwrap();
    assert!(s.packs_repacked >= 1 && s.packs_deleted >= 1, "{s:?}");
    // The interesting points were all hit: while writing new packs, when
    // writing the new index, right after it (deleting old index files), and on
    // the first removal of a pack.
    for op in [
        "write pack",
        "write index file",
        "remove index file",
        "remove pack",
    ] {
        assert!(
            failed_ops.iter().any(|o| o == op),
            "never crashed at {op}: {failed_ops:?}"
        );
    }
    let first_index_removal = failed_ops
        .iter()
        .position(|o| o == "remove index file")
        .unwrap();
    assert_eq!(failed_ops[first_index_removal - 1], "write index file");
}

#[test]
fn steward_prunes_a_repository_restic_wrote() {
    if !have_restic("steward_prunes_a_repository_restic_wrote") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path());
    let repo_dir = tmp.path().join("repo");
    restic(&repo_dir, &pw, &["init", "--repository-version", "2"]);
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("keep.bin"), random_bytes(3 << 20, 51)).unwrap();
    fs::write(src.join("d/gone.bin"), random_bytes(4 << 20, 52)).unwrap();
    fs::write(src.join("d/text.sql"), text_bytes(800_000, 53)).unwrap();
    restic_with_path(
        &repo_dir,
        &pw,
        &["backup", "--host", "h", "--pack-size", "4"],
        &src,
    );
    fs::remove_file(src.join("d/gone.bin")).unwrap();
    restic_with_path(&repo_dir, &pw, &["backup", "--host", "h"], &src);

    let repo = open_repo(&repo_dir);
    let snaps = repo.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 2);
    repo.remove_snapshots_with(&[snaps[0].0], quick_lock())
        .unwrap();
    let before = dir_size(&repo_dir.join("data"));
    let s = prune(&repo, &opts()).unwrap();
    assert!(s.bytes_freed >= 3 << 20, "{s:?}");
    assert!(dir_size(&repo_dir.join("data")) + (3 << 20) <= before);
    assert_clean(&repo);

    let out = restic(&repo_dir, &pw, &["check", "--read-data"]);
    assert!(String::from_utf8_lossy(&out).contains("no errors were found"));
    let target = tmp.path().join("out");
    restic(
        &repo_dir,
        &pw,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &under(&target, &src));
    let (_, sn) = repo.load_snapshot("latest").unwrap();
    let ours = tmp.path().join("ours");
    restore(&repo, &sn, &ours, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &under(&ours, &src));
}
