//! Helpers shared by the integration tests: repositories with cheap KDF parameters and
//! running restic against them. The generated tree, its comparison, the password and
//! the restic binary come from [`steward_test_utils::fs_tree`], re-exported here.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use steward_repo::{InitOptions, KdfParams, LocalBackend, RepoOptions, Repository};
pub use steward_test_utils::fs_tree::*;

/// Cheap scrypt parameters so tests do not spend their time in the KDF.
pub fn fast_init() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            n: 1 << 12,
            r: 8,
            p: 1,
        },
        options: RepoOptions::default(),
    }
}

pub fn init_repo(dir: &Path) -> Repository {
    Repository::init(Arc::new(LocalBackend::new(dir)), PASSWORD, fast_init()).unwrap()
}

pub fn open_repo(dir: &Path) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(dir)), PASSWORD).unwrap()
}

pub fn password_file(dir: &Path) -> PathBuf {
    let p = dir.join("password");
    fs::write(&p, PASSWORD).unwrap();
    p
}

/// Runs restic against `repo`; panics with its output if it fails.
pub fn restic(repo: &Path, pw: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(RESTIC)
        .arg("-r")
        .arg(repo)
        .arg("--password-file")
        .arg(pw)
        .arg("--no-cache")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restic {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs restic with an extra path argument that may not be UTF-8.
pub fn restic_with_path(repo: &Path, pw: &Path, args: &[&str], path: &Path) -> Vec<u8> {
    let out = Command::new(RESTIC)
        .arg("-r")
        .arg(repo)
        .arg("--password-file")
        .arg(pw)
        .arg("--no-cache")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restic {args:?} {} failed ({}):\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
