//! Validated names: environments (`prod`) and secret paths (`billing/db_password`).
//!
//! Every path that reaches the store went through [`SecretPath::parse`], so the store never sees
//! `..`, empty segments, control characters or oversize keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted secret path, in bytes.
pub const MAX_PATH_LEN: usize = 512;
/// Longest accepted path segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 128;
/// Longest accepted environment name.
pub const MAX_ENV_LEN: usize = 32;
/// Names that would collide with API routes, so no environment may take them.
pub const RESERVED_ENV_NAMES: &[&str] = &[
    "sys",
    "auth",
    "secret",
    "audit",
    "identity",
    "cubbyhole",
    "metrics",
    "v1",
];

/// Why a name or path was refused. Messages say what is wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("environment name is empty; use lowercase letters, digits, '-' or '_' (e.g. prod)")]
    EmptyEnv,
    #[error("environment name {0:?} is invalid: use 1-{MAX_ENV_LEN} lowercase letters, digits, '-' or '_', starting with a letter or digit")]
    BadEnv(String),
    #[error("environment name {0:?} is reserved (it is an API route); choose another name")]
    ReservedEnv(String),
    #[error("secret path is empty; give a path like billing/db_password")]
    EmptyPath,
    #[error("secret path is {0} bytes long; the limit is {MAX_PATH_LEN}")]
    PathTooLong(usize),
    #[error("secret path {path:?} has an empty segment (a leading, trailing or doubled '/'); write segments joined by single '/' like billing/db_password")]
    EmptySegment { path: String },
    #[error("secret path segment {segment:?} is not allowed; segments use letters, digits, '.', '-' or '_' (at most {MAX_SEGMENT_LEN} bytes) and cannot be '.' or '..'")]
    BadSegment { segment: String },
    #[error("secret reference {0:?} must look like ENV/PATH, e.g. prod/billing/db_password")]
    BadReference(String),
}

/// An environment name such as `dev`, `staging` or `prod`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::EmptyEnv);
        }
        let ok_first = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_rest = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok_first || !ok_rest || s.len() > MAX_ENV_LEN {
            return Err(NameError::BadEnv(truncate(s)));
        }
        if RESERVED_ENV_NAMES.contains(&s) {
            return Err(NameError::ReservedEnv(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EnvName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret's path inside an environment: `billing/db_password`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SecretPath(String);

impl SecretPath {
    /// Parses a full secret path (no leading or trailing '/').
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::EmptyPath);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(NameError::PathTooLong(s.len()));
        }
        for seg in s.split('/') {
            check_segment(s, seg)?;
        }
        Ok(Self(s.to_string()))
    }

    /// Parses a listing prefix: empty (everything) or segments ending in '/', e.g. `billing/`.
    /// A prefix without the trailing '/' is accepted and gets one.
    pub fn parse_prefix(s: &str) -> Result<String, NameError> {
        let trimmed = s.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(String::new());
        }
        Ok(format!("{}/", Self::parse(trimmed)?.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `ENV/PATH`, as used by references `${secret:prod/shared/smtp_password}` and the CLI.
pub fn parse_reference(s: &str) -> Result<(EnvName, SecretPath), NameError> {
    let (env, path) = s
        .split_once('/')
        .ok_or_else(|| NameError::BadReference(truncate(s)))?;
    Ok((EnvName::parse(env)?, SecretPath::parse(path)?))
}

fn check_segment(path: &str, seg: &str) -> Result<(), NameError> {
    if seg.is_empty() {
        return Err(NameError::EmptySegment {
            path: truncate(path),
        });
    }
    let ok = seg.len() <= MAX_SEGMENT_LEN
        && seg != "."
        && seg != ".."
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(NameError::BadSegment {
            segment: truncate(seg),
        })
    }
}

/// Keeps error messages short when someone sends a megabyte of garbage as a name.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_path(input: &str, expect: Result<&str, &str>) {
        match (SecretPath::parse(input), expect) {
            (Ok(p), Ok(want)) => assert_eq!(p.as_str(), want),
            (Err(e), Err(fragment)) => assert!(
                e.to_string().contains(fragment),
                "{input:?}: error {e} lacks {fragment:?}"
            ),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn paths() {
        check_path("billing/db_password", Ok("billing/db_password"));
        check_path("a", Ok("a"));
        check_path("a.b-c_d/E9", Ok("a.b-c_d/E9"));
        check_path("", Err("empty"));
        check_path("/a", Err("empty segment"));
        check_path("a/", Err("empty segment"));
        check_path("a//b", Err("empty segment"));
        check_path("a/../b", Err("'..'"));
        check_path("a/./b", Err("'..'"));
        check_path("a b", Err("not allowed"));
        check_path("a/\u{0}", Err("not allowed"));
        check_path("ünï", Err("not allowed"));
        check_path(&"x".repeat(129), Err("not allowed"));
        check_path(&"abc/".repeat(200), Err("limit is 512"));
    }

    #[test]
    fn envs() {
        assert_eq!(EnvName::parse("prod").unwrap().as_str(), "prod");
        assert_eq!(EnvName::parse("eu-west_2").unwrap().as_str(), "eu-west_2");
        assert!(matches!(EnvName::parse(""), Err(NameError::EmptyEnv)));
        assert!(matches!(EnvName::parse("Prod"), Err(NameError::BadEnv(_))));
        assert!(matches!(EnvName::parse("-x"), Err(NameError::BadEnv(_))));
        assert!(matches!(
            EnvName::parse("sys"),
            Err(NameError::ReservedEnv(_))
        ));
        assert!(matches!(
            EnvName::parse(&"a".repeat(33)),
            Err(NameError::BadEnv(_))
        ));
    }

    #[test]
    fn prefixes_and_references() {
        assert_eq!(SecretPath::parse_prefix("").unwrap(), "");
        assert_eq!(SecretPath::parse_prefix("/").unwrap(), "");
        assert_eq!(SecretPath::parse_prefix("billing").unwrap(), "billing/");
        assert_eq!(SecretPath::parse_prefix("billing/").unwrap(), "billing/");
        assert!(SecretPath::parse_prefix("../").is_err());
        let (env, path) = parse_reference("prod/shared/smtp_password").unwrap();
        assert_eq!(
            (env.as_str(), path.as_str()),
            ("prod", "shared/smtp_password")
        );
        assert!(parse_reference("prod").is_err());
    }

    #[test]
    fn long_garbage_is_truncated_in_errors() {
        let err = SecretPath::parse(&format!("{}é", "x ".repeat(40))).unwrap_err();
        assert!(err.to_string().len() < 300);
    }

    proptest! {
        // The path parser is fed raw URL segments: it must never panic, and whatever it
        // accepts must be free of traversal and round-trip unchanged.
        #[test]
        fn path_parser_total(s in "\\PC{0,80}") {
            if let Ok(p) = SecretPath::parse(&s) {
                prop_assert_eq!(p.as_str(), s.as_str());
                prop_assert!(!p.as_str().split('/').any(|seg| seg == ".." || seg.is_empty()));
            }
        }

        #[test]
        fn path_parser_accepts_valid(segs in proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", 1..6)) {
            let joined = segs.join("/");
            prop_assert!(SecretPath::parse(&joined).is_ok());
        }

        #[test]
        fn env_parser_total(s in "\\PC{0,40}") {
            let _ = EnvName::parse(&s);
        }
    }
}
