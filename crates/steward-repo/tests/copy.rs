//! Copying snapshots between repositories with different keys.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use steward_repo::{
    backup, backup_stream, check, copy_snapshots, copy_snapshots_with, read_data, restore,
    BackupOptions, BlobType, CopyOptions, Error, Id, LocalBackend, LockOptions, ReadDataSubset,
    Repository, RestoreOptions,
};

fn copy_opts() -> CopyOptions {
    CopyOptions {
        lock: LockOptions {
            recheck_delay: Duration::ZERO,
            ..Default::default()
        },
        workers: Some(3),
    }
}

#[test]
fn copies_snapshots_restic_restores_them_and_copying_twice_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("files");
    make_tree(&src_dir);
    let shared = random_bytes(3 << 20, 40);
    fs::write(src_dir.join("shared.bin"), &shared).unwrap();

    let src = init_repo(&tmp.path().join("src"));
    let at = |d| Some(Utc.with_ymd_and_hms(2024, 3, d, 1, 2, 3).unwrap());
    let first = backup(
        &src,
        &[&src_dir],
        &BackupOptions {
            time: at(1),
            tags: vec!["daily".into()],
            ..Default::default()
        },
    )
    .unwrap();
    fs::write(
        src_dir.join("a/small.txt"),
        b"changed after the first backup",
    )
    .unwrap();
    let second = backup(
        &src,
        &[&src_dir],
        &BackupOptions {
            time: at(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(second.parent, Some(first.snapshot_id));
    let dump = text_bytes(1_500_000, 41);
    let third = backup_stream(
        &src,
        "db.sql",
        &dump[..],
        &BackupOptions {
            time: at(3),
            hostname: Some("db1".into()),
            ..Default::default()
        },
    )
    .unwrap();

    // The destination is a different repository (its own master key) that
    // already holds some of the data.
    let dst_dir = tmp.path().join("dst");
    let dst = init_repo(&dst_dir);
    let pre_dir = tmp.path().join("pre");
    fs::create_dir_all(&pre_dir).unwrap();
    fs::write(pre_dir.join("same-content.bin"), &shared).unwrap();
    let pre = backup(&dst, &[&pre_dir], &BackupOptions::default()).unwrap();
    assert_ne!(src.config().id, dst.config().id);

    let s = copy_snapshots_with(&src, &dst, &[], &copy_opts()).unwrap();
    println!("{s:#?}");
    assert_eq!((s.copied, s.skipped), (3, 0));
    let src_data_blobs = src.index().count(BlobType::Data) as u64;
    assert!(s.data_blobs_copied > 0);
    assert_eq!(
        s.data_blobs_copied + pre.data_blobs_added,
        src_data_blobs,
        "the shared file must not be copied again: {s:?}"
    );
    assert!(s.packs_written >= 2);
    let order: Vec<Id> = s.snapshots.iter().map(|c| c.source).collect();
    assert_eq!(
        order,
        vec![first.snapshot_id, second.snapshot_id, third.snapshot_id]
    );

    // The copies: new ids, same tree, `original` set, no parent.
    let dst = Repository::open(Arc::new(LocalBackend::new(&dst_dir)), PASSWORD).unwrap();
    for c in &s.snapshots {
        assert!(!c.already_copied);
        assert_ne!(c.source, c.destination);
        let (_, orig) = src.load_snapshot(&c.source.to_hex()).unwrap();
        let (_, copy) = dst.load_snapshot(&c.destination.to_hex()).unwrap();
        assert_eq!(copy.original, Some(c.source));
        assert_eq!(copy.parent, None);
        assert_eq!(copy.tree, orig.tree);
        assert_eq!(
            (copy.time, &copy.paths, &copy.tags, &copy.hostname),
            (orig.time, &orig.paths, &orig.tags, &orig.hostname)
        );
        // Steward restores the copy exactly like the original.
        let a = tmp.path().join(format!("from-src-{}", c.source.short()));
        let b = tmp
            .path()
            .join(format!("from-dst-{}", c.destination.short()));
        restore(&src, &orig, &a, &RestoreOptions::default()).unwrap();
        restore(&dst, &copy, &b, &RestoreOptions::default()).unwrap();
        for p in &orig.paths {
            assert_same_tree(&under(&a, p.as_ref()), &under(&b, p.as_ref()));
        }
    }
    let report = check(&dst).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(read_data(&dst, ReadDataSubset::All).unwrap().is_ok());

    // Copying again adds nothing.
    let again = copy_snapshots_with(&src, &dst, &[], &copy_opts()).unwrap();
    assert_eq!((again.copied, again.skipped), (0, 3));
    assert_eq!(
        (
            again.data_blobs_copied,
            again.tree_blobs_copied,
            again.packs_written
        ),
        (0, 0, 0)
    );
    for (c, a) in s.snapshots.iter().zip(&again.snapshots) {
        assert!(a.already_copied);
        assert_eq!(c.destination, a.destination);
    }
    assert_eq!(dst.snapshot_ids().unwrap().len(), 4);
    // Also when asked for one snapshot by id.
    let one = copy_snapshots_with(&src, &dst, &[second.snapshot_id], &copy_opts()).unwrap();
    assert_eq!((one.copied, one.skipped), (0, 1));

    // Copying back: the copies are recognised as the source's own snapshots;
    // only the destination's own backup goes over.
    let back = copy_snapshots_with(&dst, &src, &[], &copy_opts()).unwrap();
    assert_eq!((back.copied, back.skipped), (1, 3));
    assert_eq!(src.snapshot_ids().unwrap().len(), 4);

    if have_restic("copies_snapshots_restic_restores_them_and_copying_twice_adds_nothing") {
        let pw = password_file(tmp.path());
        let out = restic(&dst_dir, &pw, &["check", "--read-data"]);
        assert!(String::from_utf8_lossy(&out).contains("no errors were found"));
        for c in &s.snapshots {
            let (_, orig) = src.load_snapshot(&c.source.to_hex()).unwrap();
            let ours = tmp.path().join(format!("from-src-{}", c.source.short()));
            let target = tmp.path().join(format!("restic-{}", c.destination.short()));
            restic(
                &dst_dir,
                &pw,
                &[
                    "restore",
                    &c.destination.to_hex(),
                    "--target",
                    target.to_str().unwrap(),
                ],
            );
            for p in &orig.paths {
                assert_same_tree(&under(&ours, p.as_ref()), &under(&target, p.as_ref()));
            }
            if orig.paths == vec!["/db.sql".to_string()] {
                assert!(fs::read(target.join("db.sql")).unwrap() == dump);
            }
        }
        // restic's copy sees Steward's copies as copies too.
        let out = restic(
            &dst_dir,
            &pw,
            &[
                "copy",
                "--from-repo",
                tmp.path().join("src").to_str().unwrap(),
                "--from-password-file",
                pw.to_str().unwrap(),
            ],
        );
        let text = String::from_utf8_lossy(&out);
        assert_eq!(
            dst.snapshot_ids().unwrap().len(),
            4,
            "restic copied again:\n{text}"
        );
    }
}

#[test]
fn copy_refuses_unknown_ids_and_the_same_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("files");
    fs::create_dir_all(&src_dir).unwrap();
    fs::write(src_dir.join("f"), b"content").unwrap();
    let src = init_repo(&tmp.path().join("src"));
    backup(&src, &[&src_dir], &BackupOptions::default()).unwrap();
    let dst = init_repo(&tmp.path().join("dst"));

    let err = copy_snapshots(&src, &dst, &[Id::hash(b"missing")]).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nothing was copied"), "{err}");
    assert!(dst.snapshot_ids().unwrap().is_empty());

    let same = open_repo(&tmp.path().join("src"));
    let err = copy_snapshots(&src, &same, &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("same repository"), "{err}");

    // No locks are left behind by the failures or by a successful copy.
    let s = copy_snapshots(&src, &dst, &[]).unwrap();
    assert_eq!(s.copied, 1);
    for r in [&src, &dst] {
        assert!(r
            .backend()
            .list(steward_repo::FileType::Lock)
            .unwrap()
            .is_empty());
    }
}
