//! Test-only hooks, compiled into debug builds only (release builds ignore the variables):
//!
//! - `STEWARD_TEST_CLOCK_FILE=PATH`: the server's clock reads an RFC 3339 time from PATH on
//!   every call (the expiry tests move time forward by rewriting the file, without sleeping).
//! - `STEWARD_TEST_CRASH_AFTER=STEP`: the process kills itself with SIGKILL right after a
//!   rotation step (`create`, `set`, `test`, `finish`) is stored (the crash-safety tests).

use std::{path::PathBuf, sync::Arc};

use chrono::{DateTime, Utc};
use steward_core::Clock;

/// A clock read from a file; falls back to the system time when the file is unreadable.
#[derive(Debug)]
struct FileClock(PathBuf);

impl Clock for FileClock {
    fn now(&self) -> DateTime<Utc> {
        std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now)
    }
}

fn var(name: &str) -> Option<String> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The injected clock, if the test asked for one.
pub fn clock() -> Option<Arc<dyn Clock>> {
    let path = var("STEWARD_TEST_CLOCK_FILE")?;
    tracing::warn!(path = %path, "TEST HOOK: the clock is read from a file");
    Some(Arc::new(FileClock(PathBuf::from(path))))
}

/// The crash hook, if the test asked for one.
pub fn fault_hook() -> Option<steward_rotation::FaultHook> {
    let step = var("STEWARD_TEST_CRASH_AFTER")?;
    tracing::warn!(step = %step, "TEST HOOK: the process kills itself after this rotation step");
    Some(Arc::new(move |point: &str| {
        if point == step {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }))
}
