//! Repository locks, compatible with restic's.
//!
//! A lock is an unpacked file in `locks/` holding
//! `{"time","exclusive","hostname","username","pid","uid","gid"}`. Any number of
//! shared locks may coexist; an exclusive lock excludes every other lock. Taking a
//! lock first looks at the existing ones: stale locks (older than 30 minutes, or
//! from this host with a process id that no longer exists) are removed with a log
//! line, and any other conflicting lock makes the attempt fail with
//! [`Error::Locked`]. The new lock is then written and, after a short delay, the
//! check is repeated to catch a competitor that wrote its lock at the same moment.
//!
//! A held lock is refreshed every 5 minutes by a background thread (a new file with
//! the current time replaces the old one) and removed when the [`RepoLock`] is
//! dropped. The clock is injectable so tests need not wait.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_core::clock::{Clock, SystemClock};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::tree::go_time;

/// Shared (backup, restore, check) or exclusive (prune, forget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Many may hold one at once.
    Shared,
    /// Excludes every other lock.
    Exclusive,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The JSON of a lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// When the lock was created or last refreshed.
    #[serde(with = "go_time")]
    pub time: DateTime<Utc>,
    /// True for an exclusive lock.
    pub exclusive: bool,
    /// Host of the holder.
    #[serde(default)]
    pub hostname: String,
    /// User of the holder.
    #[serde(default)]
    pub username: String,
    /// Process id of the holder.
    #[serde(default)]
    pub pid: i64,
    /// User id of the holder.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    /// Group id of the holder.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
}

impl LockInfo {
    /// A human description for error messages.
    pub fn describe(&self) -> String {
        format!(
            "{} lock held by PID {} on host {} (user {}) since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.pid,
            self.hostname,
            self.username,
            self.time.to_rfc3339()
        )
    }

    /// Writes this lock file as is (for tools and tests; normal callers use
    /// [`Repository::lock`]).
    pub fn write(&self, repo: &Repository) -> Result<Id> {
        repo.save_json(FileType::Lock, self)
    }
}

/// Timings and identity used when locking.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Source of "now" for lock times and staleness.
    pub clock: Arc<dyn Clock>,
    /// A lock older than this is stale.
    pub stale_after: Duration,
    /// How often a held lock is refreshed.
    pub refresh_every: Duration,
    /// Wait between writing the lock and checking again for competitors.
    pub recheck_delay: Duration,
    /// Host name written into the lock and compared for the process check.
    pub hostname: String,
    /// Process id written into the lock.
    pub pid: u32,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            clock: Arc::new(SystemClock),
            stale_after: Duration::from_secs(30 * 60),
            refresh_every: Duration::from_secs(5 * 60),
            recheck_delay: Duration::from_millis(200),
            hostname: crate::sys::hostname(),
            pid: std::process::id(),
        }
    }
}

impl LockOptions {
    /// True when `lock` is stale by these options' clock and host.
    pub fn is_stale(&self, lock: &LockInfo) -> bool {
        let age = self.clock.now().signed_duration_since(lock.time);
        if age.to_std().map(|a| a > self.stale_after).unwrap_or(false) {
            return true;
        }
        lock.hostname == self.hostname && !crate::sys::process_exists(lock.pid)
    }
}

struct State {
    id: Id,
    info: LockInfo,
}

/// A held lock; removed on drop.
pub struct RepoLock {
    repo: Repository,
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("RepoLock")
            .field("id", &st.id)
            .field("exclusive", &st.info.exclusive)
            .finish()
    }
}

/// Removes stale locks and fails on a lock that conflicts with `kind`.
fn check_conflicts(
    repo: &Repository,
    kind: LockKind,
    opts: &LockOptions,
    own: Option<Id>,
) -> Result<()> {
    let ids = repo.backend().list(FileType::Lock)?;
    for (id, _) in ids {
        if Some(id) == own {
            continue;
        }
        let info: LockInfo = match repo.load_json(FileType::Lock, &id) {
            Ok(i) => i,
            // Released between list and read.
            Err(Error::Backend(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if opts.is_stale(&info) {
            tracing::warn!(
                lock = %id,
                holder = %info.describe(),
                repository = %repo.location(),
                "removing stale lock"
            );
            match repo.backend().remove(FileType::Lock, &id) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        if kind == LockKind::Exclusive || info.exclusive {
            return Err(Error::Locked {
                location: repo.location(),
                lock: id,
                holder: info.describe(),
            });
        }
    }
    Ok(())
}

fn refresh_once(repo: &Repository, state: &Mutex<State>, clock: &dyn Clock) -> Result<()> {
    let (old, mut info) = {
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        (st.id, st.info.clone())
    };
    info.time = clock.now();
    let new = info.write(repo)?;
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.id = new;
        st.info = info;
    }
    if old != new {
        match repo.backend().remove(FileType::Lock, &old) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl RepoLock {
    /// Takes a lock of `kind` on `repo`.
    pub fn acquire(repo: &Repository, kind: LockKind, opts: LockOptions) -> Result<RepoLock> {
        check_conflicts(repo, kind, &opts, None)?;
        let info = LockInfo {
            time: opts.clock.now(),
            exclusive: kind == LockKind::Exclusive,
            hostname: opts.hostname.clone(),
            username: crate::sys::username(),
            pid: i64::from(opts.pid),
            uid: crate::sys::uid(),
            gid: crate::sys::gid(),
        };
        let id = info.write(repo)?;
        if !opts.recheck_delay.is_zero() {
            std::thread::sleep(opts.recheck_delay);
        }
        if let Err(e) = check_conflicts(repo, kind, &opts, Some(id)) {
            let _ = repo.backend().remove(FileType::Lock, &id);
            return Err(e);
        }
        let state = Arc::new(Mutex::new(State { id, info }));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let refresher = {
            let repo = repo.clone();
            let state = Arc::clone(&state);
            let clock = Arc::clone(&opts.clock);
            let every = opts.refresh_every;
            std::thread::Builder::new()
                .name("steward-repo-lock".into())
                .spawn(move || {
                    // Any message or a dropped sender stops the loop.
                    while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(every) {
                        if let Err(e) = refresh_once(&repo, &state, clock.as_ref()) {
                            tracing::warn!(error = %e, "could not refresh the repository lock");
                        }
                    }
                })
                .map_err(|e| Error::Aborted(format!("cannot start the lock refresh thread: {e}")))?
        };
        Ok(RepoLock {
            repo: repo.clone(),
            state,
            clock: Arc::clone(&opts.clock),
            stop: Some(stop_tx),
            refresher: Some(refresher),
        })
    }

    /// The current lock file id.
    pub fn id(&self) -> Id {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).id
    }

    /// The lock as written.
    pub fn info(&self) -> LockInfo {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .info
            .clone()
    }

    /// Refreshes the lock now (the background thread does this periodically).
    pub fn refresh(&self) -> Result<()> {
        refresh_once(&self.repo, &self.state, self.clock.as_ref())
    }

    fn stop_refresher(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
    }

    /// Removes the lock, reporting a failure (dropping does the same silently).
    pub fn release(mut self) -> Result<()> {
        self.stop_refresher();
        let id = self.id();
        match self.repo.backend().remove(FileType::Lock, &id) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if self.stop.is_none() && self.refresher.is_none() {
            // Already released.
            return;
        }
        self.stop_refresher();
        let id = self.id();
        if let Err(e) = self.repo.backend().remove(FileType::Lock, &id) {
            if !e.is_not_found() {
                tracing::warn!(error = %e, "could not remove the repository lock");
            }
        }
    }
}
