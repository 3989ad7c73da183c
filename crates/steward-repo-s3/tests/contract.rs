//! The `Backend` contract against a real S3 emulator (moto in server mode).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use steward_repo::{Backend, BackendError, FileType, Id};

#[test]
fn backend_contract_on_moto() {
    let Some(moto) = MotoServer::start("backend_contract_on_moto") else {
        return;
    };
    let b = Arc::new(backend(&moto.endpoint(), "contract", "repos/one"));
    assert_eq!(
        b.location(),
        format!("s3:{}/contract/repos/one", moto.endpoint())
    );

    // Nothing exists yet: reads are NotFound, lists are empty.
    assert!(b
        .list(FileType::Config)
        .unwrap_err()
        .to_string()
        .contains("bucket contract does not exist"));
    let (r, logs) = capture_logs(|| b.create());
    r.unwrap();
    assert!(
        logs.contains("created S3 bucket contract at http://127.0.0.1:"),
        "{logs}"
    );
    assert_no_credentials(&logs);
    assert!(b.list(FileType::Config).unwrap().is_empty());
    assert!(b.list(FileType::Pack).unwrap().is_empty());
    let missing = Id::hash(b"missing");
    let e = b.read(FileType::Snapshot, &missing).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("snapshot {} at s3:", missing.short())),
        "{e}"
    );
    assert!(b
        .read_range(FileType::Pack, &missing, 0, 10)
        .unwrap_err()
        .is_not_found());
    assert!(b
        .read_range(FileType::Pack, &missing, 0, 0)
        .unwrap_err()
        .is_not_found());
    assert!(b
        .remove(FileType::Lock, &missing)
        .unwrap_err()
        .is_not_found());

    // Write, read, read_range, list.
    let pack: Vec<u8> = random_bytes(3 << 20, 9);
    let pack_id = Id::hash(&pack);
    b.write(FileType::Pack, &pack_id, &pack).unwrap();
    assert!(b.read(FileType::Pack, &pack_id).unwrap() == pack);
    assert_eq!(
        b.read_range(FileType::Pack, &pack_id, 1000, 4096).unwrap(),
        pack[1000..5096]
    );
    assert_eq!(
        b.read_range(FileType::Pack, &pack_id, (3 << 20) - 7, 7)
            .unwrap(),
        pack[(3 << 20) - 7..]
    );
    assert!(b
        .read_range(FileType::Pack, &pack_id, 5, 0)
        .unwrap()
        .is_empty());
    let short = b
        .read_range(FileType::Pack, &pack_id, (3 << 20) - 7, 8)
        .unwrap_err();
    assert!(!short.is_not_found() && !short.is_transient(), "{short}");
    assert!(
        short.to_string().contains("shorter than expected"),
        "{short}"
    );
    let beyond = b
        .read_range(FileType::Pack, &pack_id, 4 << 20, 8)
        .unwrap_err();
    assert!(!beyond.is_transient(), "{beyond}");
    assert_eq!(
        b.list(FileType::Pack).unwrap(),
        vec![(pack_id, pack.len() as u64)]
    );

    let empty_id = Id::hash(b"");
    b.write(FileType::Index, &empty_id, b"").unwrap();
    assert!(b.read(FileType::Index, &empty_id).unwrap().is_empty());
    assert!(b
        .read_range(FileType::Index, &empty_id, 0, 0)
        .unwrap()
        .is_empty());

    b.write(FileType::Config, &Id::default(), b"config bytes")
        .unwrap();
    assert_eq!(
        b.read(FileType::Config, &Id::default()).unwrap(),
        b"config bytes"
    );
    assert_eq!(b.list(FileType::Config).unwrap(), vec![(Id::default(), 12)]);
    // Overwriting replaces.
    b.write(FileType::Config, &Id::default(), b"config v2")
        .unwrap();
    assert_eq!(
        b.read(FileType::Config, &Id::default()).unwrap(),
        b"config v2"
    );

    // More than 1000 objects, so the listing takes two pages.
    let mut expected = BTreeMap::new();
    let ids: Vec<(Id, Vec<u8>)> = (0..1100u32)
        .map(|i| {
            let data = format!("lock {i}").into_bytes();
            (Id::hash(&data), data)
        })
        .collect();
    for (id, data) in &ids {
        expected.insert(*id, data.len() as u64);
    }
    std::thread::scope(|s| {
        for chunk in ids.chunks(ids.len().div_ceil(4)) {
            let b = b.clone();
            s.spawn(move || {
                for (id, data) in chunk {
                    b.write(FileType::Lock, id, data).unwrap();
                }
            });
        }
    });
    let (listed, logs) = capture_logs(|| b.list(FileType::Lock).unwrap());
    let listed: BTreeMap<Id, u64> = listed.into_iter().collect();
    // Two pages: 1000 keys, then 100 fetched with the continuation token.
    assert!(logs.contains("page=1 keys=1000 more=true"), "{logs}");
    assert!(logs.contains("page=2 keys=100 more=false"), "{logs}");
    assert_no_credentials(&logs);
    assert_eq!(listed.len(), 1100);
    assert_eq!(listed, expected);

    // Keys that are not repository files are ignored.
    let other = backend(&moto.endpoint(), "contract", "repos");
    let stray = Id::hash(b"stray");
    other.write(FileType::Lock, &stray, b"x").unwrap(); // repos/locks/<id>: another prefix
    assert_eq!(b.list(FileType::Lock).unwrap().len(), 1100);
    let sibling = backend(&moto.endpoint(), "contract", "repos/one/locks/sub");
    sibling.write(FileType::Lock, &stray, b"x").unwrap(); // repos/one/locks/sub/locks/<id>
    sibling.write(FileType::Config, &stray, b"x").unwrap(); // repos/one/locks/sub/config
    assert_eq!(b.list(FileType::Lock).unwrap().len(), 1100);
    let bare = backend(&moto.endpoint(), "contract", "repos/one/data");
    bare.write(FileType::Config, &stray, b"x").unwrap(); // repos/one/data/config
    assert_eq!(b.list(FileType::Pack).unwrap().len(), 1);

    // Remove.
    b.remove(FileType::Lock, &ids[0].0).unwrap();
    assert!(b
        .read(FileType::Lock, &ids[0].0)
        .unwrap_err()
        .is_not_found());
    assert!(b
        .remove(FileType::Lock, &ids[0].0)
        .unwrap_err()
        .is_not_found());
    assert_eq!(b.list(FileType::Lock).unwrap().len(), 1099);

    // create on an existing repository fails; on a fresh prefix of the same
    // bucket it works (the bucket exists already).
    match b.create() {
        Err(BackendError::AlreadyExists { location }) => assert_eq!(location, b.location()),
        other => panic!("create on an existing repository: {other:?}"),
    }
    let fresh = backend(&moto.endpoint(), "contract", "repos/two");
    let (r, logs) = capture_logs(|| fresh.create());
    r.unwrap();
    assert!(!logs.contains("created S3 bucket"), "{logs}");

    // A repository at the bucket's root.
    let root = backend(&moto.endpoint(), "rootbucket", "");
    root.create().unwrap();
    root.write(FileType::Snapshot, &stray, b"sn").unwrap();
    assert_eq!(root.list(FileType::Snapshot).unwrap(), vec![(stray, 2)]);
    assert!(root.list(FileType::Config).unwrap().is_empty());
}
