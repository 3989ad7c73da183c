//! Generated test data and file trees for the backup tests (`steward-repo`,
//! `steward-repo-s3`, and their examples): deterministic pseudo-random and text-like
//! bytes, a tree with awkward names, modes, symlinks and repeated regions
//! ([`make_tree`]), a byte-for-byte tree comparison that includes mtimes
//! ([`assert_same_tree`]), and the restic binary ([`RESTIC`], [`have_restic`]).
//! Unix only, like the backup code it tests.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The password of the test repositories (restic reads it from a password file).
pub const PASSWORD: &str = "correct horse battery staple";

/// Where the restic binary is installed.
pub const RESTIC: &str = "/usr/bin/restic";

/// Deterministic pseudo-random (incompressible) bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Deterministic text-like, compressible bytes (SQL-dump-like words).
pub fn text_bytes(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "INSERT",
        "INTO",
        "users",
        "VALUES",
        "(",
        ")",
        "'alice'",
        "'bob'",
        "42",
        "NULL",
        ";\n",
        "COPY",
        "public.orders",
        "FROM",
        "stdin",
        "\t",
        "2024-01-01",
        "true",
    ];
    let r = random_bytes(n / 3 + 16, seed);
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(words[r[i % r.len()] as usize % words.len()].as_bytes());
        out.push(b' ');
        i += 1;
    }
    out.truncate(n);
    out
}

/// Builds the test tree under `root` (about 22 MB): nested directories, an empty
/// file, a 20 MB file `big.bin` whose 4 MiB regions repeat (A A B A zeros: 8 MiB of
/// distinct random data), 2 MB of text (`dump.sql`), a symlink and a dangling one,
/// odd names (spaces, unicode, quotes, backslash, tab, invalid UTF-8) and various
/// modes (0755, 0600, 0444, 0750 and 01777 directories).
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::write(root.join("a/b/c/deep.txt"), b"deep inside\n").unwrap();
    fs::write(root.join("a/small.txt"), text_bytes(3000, 1)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let block_a = random_bytes(4 << 20, 2);
    let block_b = random_bytes(4 << 20, 3);
    let mut big = Vec::with_capacity(20 << 20);
    big.extend_from_slice(&block_a);
    big.extend_from_slice(&block_a);
    big.extend_from_slice(&block_b);
    big.extend_from_slice(&block_a);
    big.extend_from_slice(&vec![0u8; 4 << 20]);
    fs::write(root.join("big.bin"), &big).unwrap();
    fs::write(root.join("dump.sql"), text_bytes(2 << 20, 4)).unwrap();
    fs::write(root.join("name with spaces.txt"), b"spaces").unwrap();
    fs::write(root.join("ünïcödé ✓ 日本.txt"), "unicode".as_bytes()).unwrap();
    fs::write(root.join("quote\"and\\backslash"), b"quote").unwrap();
    fs::write(root.join("tab\tname"), b"tab").unwrap();
    fs::write(
        root.join(OsString::from_vec(b"bad\xffutf8".to_vec())),
        b"not utf-8",
    )
    .unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("secret"), b"s3cr3t").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("readonly"), b"ro").unwrap();
    fs::set_permissions(root.join("readonly"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("empty dir"), fs::Permissions::from_mode(0o1777)).unwrap();
}

/// Number of regular files [`make_tree`] creates.
pub const TREE_FILES: u64 = 13;

/// Asserts two trees have the same names, types, contents (byte for byte), modes,
/// link targets and file/directory mtimes (to the nanosecond).
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let me = fs::symlink_metadata(expected).unwrap();
    let ma = fs::symlink_metadata(actual)
        .unwrap_or_else(|e| panic!("{} missing: {e}", actual.display()));
    assert_eq!(
        me.file_type(),
        ma.file_type(),
        "type of {}",
        actual.display()
    );
    if me.file_type().is_symlink() {
        assert_eq!(
            fs::read_link(expected).unwrap(),
            fs::read_link(actual).unwrap(),
            "target of {}",
            actual.display()
        );
        return;
    }
    assert_eq!(
        me.mode() & 0o7777,
        ma.mode() & 0o7777,
        "mode of {}",
        actual.display()
    );
    assert_eq!(
        (me.mtime(), me.mtime_nsec()),
        (ma.mtime(), ma.mtime_nsec()),
        "mtime of {}",
        actual.display()
    );
    if me.is_file() {
        assert!(
            fs::read(expected).unwrap() == fs::read(actual).unwrap(),
            "content of {} differs",
            actual.display()
        );
    } else if me.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<OsString> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            v
        };
        let ne = names(expected);
        assert_eq!(ne, names(actual), "entries of {}", actual.display());
        for n in ne {
            assert_same_tree(&expected.join(&n), &actual.join(&n));
        }
    }
}

/// Where a restore (Steward's or restic's) puts absolute `path` below `target`.
pub fn under(target: &Path, path: &Path) -> PathBuf {
    target.join(path.strip_prefix("/").unwrap())
}

/// True when the restic binary is installed. A missing restic fails the test
/// (scripts/test.sh installs it), unless STEWARD_SKIP_RESTIC=1 says to skip, which
/// is printed.
pub fn have_restic(test: &str) -> bool {
    if Path::new(RESTIC).exists() {
        return true;
    }
    if std::env::var("STEWARD_SKIP_RESTIC").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: {RESTIC} is not installed and STEWARD_SKIP_RESTIC=1");
        return false;
    }
    panic!("{test}: {RESTIC} is not installed: apt-get install restic (or STEWARD_SKIP_RESTIC=1 to skip)");
}
