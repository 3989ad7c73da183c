//! Snapshots: the JSON restic stores in `snapshots/`.
//!
//! Only fields restic 0.14 knows are written, plus `program_version` (newer restic
//! reads it; Go ignores unknown fields). Fields restic omits when empty are
//! omitted here too.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::id::Id;
use crate::tree::go_time;

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started.
    #[serde(with = "go_time")]
    pub time: DateTime<Utc>,
    /// The snapshot this one was based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// The root tree.
    pub tree: Id,
    /// What was backed up.
    #[serde(default, deserialize_with = "null_as_default")]
    pub paths: Vec<String>,
    /// Host name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// User name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// User id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    /// Group id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
    /// Exclude patterns used.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub excludes: Vec<String>,
    /// Tags.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    /// The snapshot this one is a modified copy of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// The program that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_version: Option<String>,
}

impl Snapshot {
    /// A snapshot of `tree` taken at `time` with everything else empty.
    pub fn new(time: DateTime<Utc>, tree: Id, paths: Vec<String>) -> Self {
        Snapshot {
            time,
            parent: None,
            tree,
            paths,
            hostname: String::new(),
            username: String::new(),
            uid: 0,
            gid: 0,
            excludes: Vec::new(),
            tags: Vec::new(),
            original: None,
            program_version: Some(concat!("steward-repo ", env!("CARGO_PKG_VERSION")).into()),
        }
    }

    /// True when `other` has the same host and (order-insensitive) paths: what
    /// restic uses to pick a parent snapshot.
    pub fn same_source(&self, hostname: &str, paths: &[String]) -> bool {
        if self.hostname != hostname {
            return false;
        }
        let mut a = self.paths.clone();
        let mut b = paths.to_vec();
        a.sort();
        b.sort();
        a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restic_and_writes_compatible_json() {
        let restic = r#"{"time":"2015-01-02T18:10:50.895208559+01:00","tree":"2da81727b6585232894cfbb8f8bdab8d1eccd3d8f7c92bc934d62e62e618ffdf","paths":["/tmp/testdata"],"hostname":"kasimir","username":"fd0","uid":1000,"gid":100,"tags":["NL"]}"#;
        let sn: Snapshot = serde_json::from_str(restic).unwrap();
        assert_eq!(sn.tags, vec!["NL"]);
        assert_eq!(sn.uid, 1000);
        let out = serde_json::to_string(&sn).unwrap();
        assert!(
            out.contains("\"time\":\"2015-01-02T17:10:50.895208559Z\""),
            "{out}"
        );
        assert!(!out.contains("parent"));
        let back: Snapshot = serde_json::from_str(&out).unwrap();
        assert_eq!(back, sn);
        let nulls = r#"{"time":"2015-01-02T18:10:50Z","tree":"2da81727b6585232894cfbb8f8bdab8d1eccd3d8f7c92bc934d62e62e618ffdf","paths":null,"tags":null}"#;
        let sn: Snapshot = serde_json::from_str(nulls).unwrap();
        assert!(sn.paths.is_empty());
    }
}
