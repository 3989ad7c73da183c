//! Compatibility with the restic binary, both ways.

mod common;

use std::fs;
use std::process::Command;
use std::sync::Arc;

use common::*;
use steward_repo::{
    backup, backup_stream, check, read_data, restore, restore_file_to, BackupOptions, LocalBackend,
    ReadDataSubset, Repository, RestoreOptions,
};

#[test]
fn steward_writes_restic_reads() {
    if !have_restic("steward_writes_restic_reads") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let repo_dir = tmp.path().join("repo");
    let repo = init_repo(&repo_dir);
    let summary = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    assert_eq!(summary.files_new, TREE_FILES);
    assert_eq!(summary.bytes_read, summary.total_bytes);
    // The 20 MB file holds 16 MiB of random data of which only 8 MiB is distinct
    // (plus zeros); dedup and compression must keep the repository well below that.
    assert!(
        summary.bytes_added < 16 << 20,
        "added {} bytes",
        summary.bytes_added
    );

    let pw = password_file(tmp.path());
    let check_out = restic(&repo_dir, &pw, &["check", "--read-data"]);
    let text = String::from_utf8_lossy(&check_out);
    assert!(text.contains("no errors were found"), "{text}");

    let json = restic(&repo_dir, &pw, &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], summary.snapshot_id.to_hex());
    assert_eq!(snaps[0]["paths"][0], src.to_str().unwrap());
    assert_eq!(snaps[0]["tree"], summary.tree.to_hex());

    let ls = String::from_utf8_lossy(&restic(&repo_dir, &pw, &["ls", "latest"])).into_owned();
    for name in [
        "big.bin",
        "a/b/c/deep.txt",
        "name with spaces.txt",
        "ünïcödé ✓ 日本.txt",
        "link",
    ] {
        let p = format!("{}/{name}", src.display());
        assert!(ls.lines().any(|l| l == p), "restic ls lacks {p}:\n{ls}");
    }

    let target = tmp.path().join("restic-restore");
    restic(
        &repo_dir,
        &pw,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &under(&target, &src));

    // The same snapshot through our own restorer.
    let (_, sn) = repo.load_snapshot("latest").unwrap();
    let ours = tmp.path().join("steward-restore");
    let rs = restore(&repo, &sn, &ours, &RestoreOptions::default()).unwrap();
    assert_eq!(rs.files, TREE_FILES);
    assert_same_tree(&src, &under(&ours, &src));
    assert!(check(&repo).unwrap().is_ok());
}

#[test]
fn stream_backup_dumps_with_restic() {
    if !have_restic("stream_backup_dumps_with_restic") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = init_repo(&repo_dir);
    let mut dump = text_bytes(9 << 20, 11);
    dump.extend_from_slice(&random_bytes(3 << 20, 12));
    let s = backup_stream(&repo, "db.sql", &dump[..], &BackupOptions::default()).unwrap();
    assert_eq!(s.bytes_read, dump.len() as u64);
    assert!(s.data_blobs_added >= 2);

    let pw = password_file(tmp.path());
    let out = restic(&repo_dir, &pw, &["dump", "latest", "db.sql"]);
    assert!(
        out == dump,
        "restic dump differs ({} vs {} bytes)",
        out.len(),
        dump.len()
    );
    restic(&repo_dir, &pw, &["check", "--read-data"]);

    let (_, sn) = repo.load_snapshot(&s.snapshot_id.short()).unwrap();
    assert_eq!(sn.paths, vec!["/db.sql".to_string()]);
    let mut streamed = Vec::new();
    let n = restore_file_to(&repo, &sn, "db.sql", &mut streamed).unwrap();
    assert_eq!(n, dump.len() as u64);
    assert!(streamed == dump);

    // The same stream again adds no data.
    let again = backup_stream(&repo, "db.sql", &dump[..], &BackupOptions::default()).unwrap();
    assert_eq!(again.data_blobs_added, 0);
    assert_eq!(again.data_packs_written, 0);
}

#[test]
fn restic_writes_steward_reads() {
    if !have_restic("restic_writes_steward_reads") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let repo_dir = tmp.path().join("repo");
    let pw = password_file(tmp.path());
    let status = Command::new(RESTIC)
        .arg("-r")
        .arg(&repo_dir)
        .arg("--password-file")
        .arg(&pw)
        .args(["--no-cache", "init", "--repository-version", "2"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    restic_with_path(&repo_dir, &pw, &["backup", "--host", "restichost"], &src);

    let repo = open_repo(&repo_dir);
    assert_eq!(repo.config().version, 2);
    let snaps = repo.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].1.hostname, "restichost");
    assert_eq!(snaps[0].1.paths, vec![src.to_str().unwrap().to_string()]);

    let target = tmp.path().join("restored");
    let rs = restore(&repo, &snaps[0].1, &target, &RestoreOptions::default()).unwrap();
    assert_eq!(rs.files, TREE_FILES);
    assert_same_tree(&src, &under(&target, &src));

    // A sub path, and one file streamed.
    let sub = tmp.path().join("sub");
    let sub_path = format!("{}/a", src.display());
    restore(
        &repo,
        &snaps[0].1,
        &sub,
        &RestoreOptions {
            sub_path: Some(sub_path),
            ..Default::default()
        },
    )
    .unwrap();
    for name in ["b", "small.txt"] {
        assert_same_tree(&src.join("a").join(name), &sub.join(name));
    }
    let mut big = Vec::new();
    restore_file_to(
        &repo,
        &snaps[0].1,
        &format!("{}/big.bin", src.display()),
        &mut big,
    )
    .unwrap();
    assert!(big == fs::read(src.join("big.bin")).unwrap());

    let report = check(&repo).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let report = read_data(&repo, ReadDataSubset::All).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.blobs_verified > 5);

    // Steward adds a backup to restic's repository; restic still checks it.
    let repo = Repository::open(Arc::new(LocalBackend::new(&repo_dir)), PASSWORD).unwrap();
    fs::write(src.join("new file"), b"added later").unwrap();
    let opts = BackupOptions {
        hostname: Some("restichost".into()),
        ..Default::default()
    };
    let s = backup(&repo, &[&src], &opts).unwrap();
    assert_eq!(s.files_new, 1);
    assert_eq!(s.files_unchanged, TREE_FILES);
    assert_eq!(s.parent, Some(snaps[0].0));
    restic(&repo_dir, &pw, &["check", "--read-data"]);
}

#[test]
fn locks_are_understood_both_ways() {
    if !have_restic("locks_are_understood_both_ways") {
        return;
    }
    use std::io::Write as _;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    use steward_repo::{Error, FileType, LockKind, LockOptions};

    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = init_repo(&repo_dir);
    let pw = password_file(tmp.path());
    let quick = || LockOptions {
        recheck_delay: Duration::ZERO,
        ..Default::default()
    };

    // Our exclusive lock stops restic.
    let lock = repo.lock_with(LockKind::Exclusive, quick()).unwrap();
    let out = Command::new(RESTIC)
        .arg("-r")
        .arg(&repo_dir)
        .arg("--password-file")
        .arg(&pw)
        .args(["--no-cache", "snapshots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked exclusively"), "{err}");
    assert!(
        err.contains(&format!("PID {}", std::process::id())),
        "{err}"
    );
    drop(lock);

    // restic's lock (held while it waits for stdin) stops our exclusive lock
    // but not a shared one.
    let mut child = Command::new(RESTIC)
        .arg("-r")
        .arg(&repo_dir)
        .arg("--password-file")
        .arg(&pw)
        .args(["--no-cache", "backup", "--stdin", "--stdin-filename", "x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while repo.backend().list(FileType::Lock).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "restic never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = repo.lock_with(LockKind::Exclusive, quick()).unwrap_err();
    match &err {
        Error::Locked { holder, .. } => {
            assert!(holder.contains(&format!("PID {}", child.id())), "{holder}")
        }
        other => panic!("expected Locked, got {other}"),
    }
    let shared = repo.lock_with(LockKind::Shared, quick()).unwrap();
    drop(shared);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut out = Vec::new();
    let repo = open_repo(&repo_dir);
    let (_, sn) = repo.load_snapshot("latest").unwrap();
    restore_file_to(&repo, &sn, "x", &mut out).unwrap();
    assert_eq!(out, b"from stdin");
}

#[test]
fn restic_version_1_repositories_are_read_and_extended_uncompressed() {
    if !have_restic("restic_version_1_repositories_are_read_and_extended_uncompressed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/text.sql"), text_bytes(700_000, 21)).unwrap();
    fs::write(src.join("rand.bin"), random_bytes(1_500_000, 22)).unwrap();
    let repo_dir = tmp.path().join("repo");
    let pw = password_file(tmp.path());
    restic(&repo_dir, &pw, &["init", "--repository-version", "1"]);
    restic_with_path(&repo_dir, &pw, &["backup", "--host", "h"], &src);

    let repo = open_repo(&repo_dir);
    assert_eq!(repo.config().version, 1);
    let (_, sn) = repo.load_snapshot("latest").unwrap();
    let out = tmp.path().join("out");
    restore(&repo, &sn, &out, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &under(&out, &src));

    // New data in a version-1 repository must not be compressed.
    fs::write(src.join("more.sql"), text_bytes(600_000, 23)).unwrap();
    let opts = BackupOptions {
        hostname: Some("h".into()),
        ..Default::default()
    };
    let s = backup(&repo, &[&src], &opts).unwrap();
    assert_eq!((s.files_new, s.files_unchanged), (1, 2));
    assert!(repo
        .index()
        .iter()
        .all(|(_, e)| e.uncompressed_length.is_none()));
    restic(&repo_dir, &pw, &["check", "--read-data"]);
    assert!(check(&repo).unwrap().is_ok());
}
