//! Facts about the running system that snapshots, locks and nodes record: host
//! name, user, ids, user/group names, whether a process exists; and the page-cache
//! advice that keeps data read or written once from filling the cache.

use std::collections::HashMap;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// Tells the kernel that `len` bytes at `offset` of `file` will not be needed again
/// (`POSIX_FADV_DONTNEED`): clean pages are dropped at once, dirty ones start their
/// writeback (advise again later to drop them). Only advice: ignored where the system
/// has no such call or the file system does not take it.
pub fn drop_cached(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        let (Ok(offset), Ok(len)) = (
            nix::libc::off_t::try_from(offset),
            nix::libc::off_t::try_from(len),
        ) else {
            return;
        };
        let _ = nix::fcntl::posix_fadvise(
            file,
            offset,
            len,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let _ = (file, offset, len);
}

/// This machine's host name (`localhost` if it cannot be read).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The effective user's id.
pub fn uid() -> u32 {
    Uid::effective().as_raw()
}

/// The effective group's id.
pub fn gid() -> u32 {
    Gid::effective().as_raw()
}

/// The effective user's name (or `$USER`, or the uid).
pub fn username() -> String {
    User::from_uid(Uid::effective())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid().to_string())
}

/// True when process `pid` exists on this machine. Without `/proc` it answers
/// true (a lock is then never considered stale because of its pid).
pub fn process_exists(pid: i64) -> bool {
    if pid <= 0 {
        return false;
    }
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Caches user and group names by id (lookups go through NSS and can be slow).
#[derive(Debug, Default)]
pub struct NameCache {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl NameCache {
    /// The name of user `uid` (empty if unknown).
    pub fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The name of group `gid` (empty if unknown).
    pub fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}
