//! Encryption at the repository level, passwords, and locks.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use steward_core::clock::{Clock, ManualClock};
use steward_repo::{
    Error, FileType, Id, LocalBackend, LockKind, LockOptions, MasterKey, Repository, Snapshot,
};

#[test]
fn master_key_round_trip_and_tamper_detection() {
    let key = MasterKey::random();
    let msg = random_bytes(100_000, 1);
    let ct = key.encrypt(&msg);
    assert_eq!(ct.len(), msg.len() + 32);
    assert_eq!(key.decrypt(&ct).unwrap(), msg);
    for at in [0, 15, 16, 5000, ct.len() - 17, ct.len() - 1] {
        let mut bad = ct.clone();
        bad[at] ^= 0x01;
        assert!(key.decrypt(&bad).is_err(), "flip at {at} not detected");
    }
    assert!(!format!("{key:?}").contains(&hex::encode(&ct[..4])));
}

#[test]
fn wrong_password_and_tampered_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_repo(&dir);
    let tree = repo.blob_saver();
    let (root, _) = tree
        .save(
            steward_repo::BlobType::Tree,
            &steward_repo::Tree::default().to_blob().unwrap(),
        )
        .unwrap();
    tree.flush().unwrap();
    let sn_id = repo
        .save_snapshot(&Snapshot::new(Utc::now(), root, vec!["/x".into()]))
        .unwrap();

    let err = Repository::open(Arc::new(LocalBackend::new(&dir)), "not the password").unwrap_err();
    assert!(matches!(err, Error::WrongPassword { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no key in") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );

    let err = Repository::open(
        Arc::new(LocalBackend::new(tmp.path().join("nothing"))),
        PASSWORD,
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // A snapshot file whose bytes were modified (and renamed to match its new
    // hash, so only the MAC can tell) is reported as corrupt, by name.
    let path = dir.join("snapshots").join(sn_id.to_hex());
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x80;
    let forged = Id::hash(&bytes);
    fs::write(dir.join("snapshots").join(forged.to_hex()), &bytes).unwrap();
    let repo = open_repo(&dir);
    let err = repo.load_snapshot(&forged.to_hex()).unwrap_err();
    match &err {
        Error::Corrupt { what, .. } => assert!(what.contains(&forged.to_hex()), "{what}"),
        other => panic!("expected Corrupt, got {other}"),
    }
    // The same bytes under the original name fail the content-hash check.
    fs::write(&path, &bytes).unwrap();
    assert!(repo
        .load_snapshot(&sn_id.to_hex())
        .unwrap_err()
        .is_corrupt());
    // Prefix lookups: ambiguous and missing.
    assert!(matches!(
        repo.load_snapshot("ffffffffffff"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        repo.load_snapshot("zz"),
        Err(Error::InvalidArgument(_))
    ));
}

fn opts(clock: &ManualClock, host: &str) -> LockOptions {
    LockOptions {
        clock: Arc::new(clock.clone()),
        recheck_delay: Duration::ZERO,
        hostname: host.into(),
        ..Default::default()
    }
}

fn lock_count(repo: &Repository) -> usize {
    repo.backend().list(FileType::Lock).unwrap().len()
}

#[test]
fn exclusive_locks_conflict_and_are_released_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_repo(&tmp.path().join("repo"));
    let clock = ManualClock::new(Utc::now());

    let a = repo
        .lock_with(LockKind::Shared, opts(&clock, "h1"))
        .unwrap();
    let b = repo
        .lock_with(LockKind::Shared, opts(&clock, "h2"))
        .unwrap();
    assert_eq!(lock_count(&repo), 2);
    let err = repo
        .lock_with(LockKind::Exclusive, opts(&clock, "h3"))
        .unwrap_err();
    match &err {
        Error::Locked { holder, .. } => assert!(holder.contains("shared"), "{holder}"),
        other => panic!("expected Locked, got {other}"),
    }
    assert_eq!(
        lock_count(&repo),
        2,
        "the failed attempt leaves no lock behind"
    );
    drop(a);
    b.release().unwrap();
    assert_eq!(lock_count(&repo), 0);

    let x = repo
        .lock_with(LockKind::Exclusive, opts(&clock, "h1"))
        .unwrap();
    assert!(x.info().exclusive);
    let err = repo
        .lock_with(LockKind::Shared, opts(&clock, "h2"))
        .unwrap_err();
    assert!(
        err.to_string().contains("exclusive lock held by PID"),
        "{err}"
    );

    // Refreshing replaces the lock file with a newer one.
    let old = x.id();
    clock.advance(chrono::Duration::minutes(5));
    x.refresh().unwrap();
    assert_ne!(x.id(), old);
    assert_eq!(lock_count(&repo), 1);
    assert_eq!(x.info().time, clock.now());
    drop(x);
    assert_eq!(lock_count(&repo), 0);
}

#[test]
fn stale_locks_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_repo(&tmp.path().join("repo"));
    let start = Utc::now();
    let old_clock = ManualClock::new(start);

    // Another host's exclusive lock, 31 minutes old by the newcomer's clock.
    let old = repo
        .lock_with(LockKind::Exclusive, opts(&old_clock, "far-away"))
        .unwrap();
    let now_clock = ManualClock::new(start + chrono::Duration::minutes(29));
    assert!(repo
        .lock_with(LockKind::Shared, opts(&now_clock, "here"))
        .is_err());
    now_clock.advance(chrono::Duration::minutes(2));
    let fresh = repo
        .lock_with(LockKind::Exclusive, opts(&now_clock, "here"))
        .unwrap();
    assert_eq!(lock_count(&repo), 1, "the stale lock was removed");
    drop(fresh);
    drop(old); // its file is already gone; dropping must not fail

    // A lock of this host whose process no longer exists is stale at once.
    let clock = ManualClock::new(Utc::now());
    let dead = repo
        .lock_with(
            LockKind::Exclusive,
            LockOptions {
                pid: 999_999_999,
                ..opts(&clock, "same-host")
            },
        )
        .unwrap();
    let mine = repo
        .lock_with(LockKind::Exclusive, opts(&clock, "same-host"))
        .unwrap();
    assert_eq!(lock_count(&repo), 1);
    assert_eq!(mine.info().pid, i64::from(std::process::id()));
    drop(dead);
    drop(mine);
    assert_eq!(lock_count(&repo), 0);
}
