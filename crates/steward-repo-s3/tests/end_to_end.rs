//! Steward's repository library on S3 (moto), and restic reading the result.

mod common;

use std::fs;
use std::sync::Arc;

use common::*;
use steward_repo::{
    backup, check, read_data, restore, BackupOptions, ReadDataSubset, Repository, RestoreOptions,
};

#[test]
fn backup_restore_check_on_s3() {
    let Some(moto) = MotoServer::start("backup_restore_check_on_s3") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);

    let b = Arc::new(backend(&moto.endpoint(), "steward-backups", "hosts/db1"));
    let repo = Repository::init(b, PASSWORD, fast_init()).unwrap();
    let summary = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    assert_eq!(summary.files_new, TREE_FILES);
    // The 20 MB file holds 16 MiB of random data of which only 8 MiB is distinct
    // (plus zeros and compressible text); dedup and compression must keep the
    // repository below that (chunks spanning the repeats and a per-repository chunker
    // polynomial leave about 14 MiB).
    assert!(
        summary.bytes_added < 16 << 20,
        "added {} bytes",
        summary.bytes_added
    );

    // A fresh handle on a fresh backend sees the snapshot.
    let reopened = Repository::open(
        Arc::new(backend(&moto.endpoint(), "steward-backups", "hosts/db1")),
        PASSWORD,
    )
    .unwrap();
    let snaps = reopened.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].0, summary.snapshot_id);

    let (_, sn) = reopened.load_snapshot("latest").unwrap();
    let target = tmp.path().join("restored");
    let rs = restore(&reopened, &sn, &target, &RestoreOptions::default()).unwrap();
    assert_eq!(rs.files, TREE_FILES);
    assert_same_tree(&src, &under(&target, &src));

    let report = check(&reopened).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let report = read_data(&reopened, ReadDataSubset::All).unwrap();
    assert!(report.is_ok(), "{report:?}");

    // An unchanged second backup adds no data.
    let second = backup(&reopened, &[&src], &BackupOptions::default()).unwrap();
    assert_eq!(second.data_blobs_added, 0);
    assert_eq!(second.parent, Some(summary.snapshot_id));
    assert_eq!(reopened.list_snapshots().unwrap().len(), 2);
}

#[test]
fn restic_reads_steward_s3_repository() {
    if !have_restic("restic_reads_steward_s3_repository") {
        return;
    }
    let Some(moto) = MotoServer::start("restic_reads_steward_s3_repository") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);

    let b = Arc::new(backend(&moto.endpoint(), "restic-compat", "steward/prefix"));
    let repo = Repository::init(b, PASSWORD, fast_init()).unwrap();
    let summary = backup(&repo, &[&src], &BackupOptions::default()).unwrap();

    let pw = tmp.path().join("password");
    fs::write(&pw, PASSWORD).unwrap();
    let url = format!("s3:{}/restic-compat/steward/prefix", moto.endpoint());

    let json = restic_s3(&url, &pw, &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], summary.snapshot_id.to_hex());
    assert_eq!(snaps[0]["paths"][0], src.to_str().unwrap());

    let out = restic_s3(&url, &pw, &["check", "--read-data"]);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("no errors were found"), "{text}");

    let target = tmp.path().join("restic-restore");
    restic_s3(
        &url,
        &pw,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &under(&target, &src));

    // And the other way: a snapshot restic adds is readable by Steward.
    let more = tmp.path().join("more");
    fs::create_dir_all(&more).unwrap();
    fs::write(more.join("from-restic.txt"), b"written by restic\n").unwrap();
    restic_s3(&url, &pw, &["backup", more.to_str().unwrap()]);
    let reopened = Repository::open(
        Arc::new(backend(&moto.endpoint(), "restic-compat", "steward/prefix")),
        PASSWORD,
    )
    .unwrap();
    assert_eq!(reopened.list_snapshots().unwrap().len(), 2);
    let (_, sn) = reopened.load_snapshot("latest").unwrap();
    let target = tmp.path().join("steward-restore");
    restore(&reopened, &sn, &target, &RestoreOptions::default()).unwrap();
    assert_eq!(
        fs::read(under(&target, &more).join("from-restic.txt")).unwrap(),
        b"written by restic\n"
    );
    assert!(check(&reopened).unwrap().is_ok());
}
