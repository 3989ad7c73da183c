//! Dashboard sessions. Signing in exchanges a Steward token for a random session id held in
//! an `HttpOnly`, `SameSite=Strict` cookie; the token itself stays in this process's memory
//! (never on disk, never in the browser) and every page calls the engine with it, so the
//! token's policies, expiry and revocation apply to the dashboard exactly as to the API.
//!
//! Sessions are kept by the SHA-256 of their id, so the map lookup never compares secret
//! bytes; the CSRF token is compared in constant time. A session ends after 30 minutes idle,
//! 12 hours in all, on sign-out, or when the server restarts (sign in again).

use std::{collections::HashMap, sync::Mutex};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The session cookie's name.
pub const COOKIE: &str = "steward_session";
/// Idle time after which a session ends.
pub const IDLE: Duration = Duration::minutes(30);
/// Longest a session lives, however busy.
pub const ABSOLUTE: Duration = Duration::hours(12);
/// Sessions kept at most; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token: Zeroizing<String>,
    csrf: String,
    actor: String,
    created: DateTime<Utc>,
    seen: DateTime<Utc>,
}

/// The signed-in caller of one request.
#[derive(Clone)]
pub struct Current {
    /// The Steward token the session stands for.
    pub token: String,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// The token's display name.
    pub actor: String,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Current {
    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, given: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// Every open session.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for `token`; returns the cookie value.
    pub fn open(&self, now: DateTime<Utc>, token: String, actor: String) -> String {
        let id = random_id();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&id),
            Session {
                token: Zeroizing::new(token),
                csrf: random_id(),
                actor,
                created: now,
                seen: now,
            },
        );
        id
    }

    /// The session behind a cookie value, if it is open; marks it used.
    pub fn get(&self, now: DateTime<Utc>, id: &str) -> Option<Current> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(id);
        let s = map.get_mut(&k)?;
        if !alive(s, now) {
            map.remove(&k);
            return None;
        }
        s.seen = now;
        Some(Current {
            token: s.token.to_string(),
            csrf: s.csrf.clone(),
            actor: s.actor.clone(),
        })
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&key(id));
    }

    /// Open sessions (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn alive(s: &Session, now: DateTime<Utc>) -> bool {
    now - s.seen < IDLE && now - s.created < ABSOLUTE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_session_lives_while_used_and_ends_idle_or_old() {
        let s = Sessions::default();
        let id = s.open(t(0), "tok".into(), "ops".into());
        assert_eq!(id.len(), 43, "32 random bytes, base64url");
        let c = s.get(t(60), &id).unwrap();
        assert_eq!((c.token.as_str(), c.actor.as_str()), ("tok", "ops"));
        assert!(c.csrf_ok(&c.csrf) && !c.csrf_ok("nope") && !c.csrf_ok(""));
        assert!(s.get(t(60), "not-a-session").is_none());
        // Used every 20 minutes: alive until the 12-hour limit.
        let mut at = 60;
        while at + 1200 < 12 * 3600 {
            at += 1200;
            assert!(s.get(t(at), &id).is_some(), "alive at {at}");
        }
        assert!(s.get(t(12 * 3600 + 1), &id).is_none());
        // Idle for 30 minutes: gone.
        let id = s.open(t(0), "tok".into(), "ops".into());
        assert!(s.get(t(29 * 60), &id).is_some());
        assert!(s.get(t(29 * 60 + 30 * 60), &id).is_none());
    }

    #[test]
    fn sign_out_ends_only_that_session() {
        let s = Sessions::default();
        let a = s.open(t(0), "a".into(), "a".into());
        let b = s.open(t(0), "b".into(), "b".into());
        assert_ne!(a, b);
        s.close(&a);
        assert!(s.get(t(1), &a).is_none());
        assert_eq!(s.get(t(1), &b).unwrap().token, "b");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let s = Sessions::default();
        let id = s.open(t(0), "s.secret-token".into(), "ops".into());
        let c = s.get(t(1), &id).unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
        assert!(!format!("{s:?}").contains("secret-token"));
    }
}
