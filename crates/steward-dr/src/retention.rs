//! Which snapshots of a source to keep: the keep rules (last, hourly, daily, weekly,
//! monthly, yearly; restic's meaning, see [`steward_repo::apply_policy`]) over the source's
//! backups, combined with a point-in-time window for PostgreSQL. Pure: the caller lists the
//! snapshots and removes what the plan says.
//!
//! The PITR window `W` keeps every base backup taken in the last `W`, the newest base backup
//! before that (recovery to the window's first moment starts from it), and every WAL
//! segment archived since that base backup began. Base backups outside the window are
//! kept only if a keep rule keeps them (each holds the WAL it needs to be consistent, so it
//! still restores to its own end); WAL older than the oldest base backup the window needs is
//! forgotten. So "PITR 7 days + daily 14 + weekly 8 + monthly 12" restores to any second of
//! the last week and to one point per day, week and month before that.

use chrono::{DateTime, Utc};
use steward_core::backup::RetentionConfig;
use steward_repo::{ForgetOptions, GroupBy, Id, KeepPolicy, Snapshot};

/// Tags of PostgreSQL base backups and archived WAL (see [`steward_backup::pitr`]).
const BASE_TAG: &str = steward_backup::pitr::BASE_KIND_TAG;
const WAL_TAG: &str = steward_backup::pitr::WAL_KIND_TAG;

/// A decision about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept (empty when it is not).
    pub reasons: Vec<String>,
}

/// The plan for one source: its snapshots, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// The snapshots to forget.
    pub fn forget(&self) -> Vec<Id> {
        self.decisions
            .iter()
            .filter(|d| !d.keep)
            .filter_map(|d| Id::from_hex(&d.id).ok())
            .collect()
    }
}

fn has_tag(sn: &Snapshot, tag: &str) -> bool {
    sn.tags.iter().any(|t| t == tag)
}

/// The plan for `snapshots` (those of one source) under `r` at `now`. With no rule at all
/// every snapshot is kept.
pub fn plan(snapshots: &[(Id, Snapshot)], r: &RetentionConfig, now: DateTime<Utc>) -> Plan {
    let policy = KeepPolicy {
        keep_last: r.keep_last,
        keep_hourly: r.keep_hourly,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
        keep_yearly: r.keep_yearly,
        ..KeepPolicy::default()
    };
    let (wal, backups): (Vec<_>, Vec<_>) = snapshots
        .iter()
        .cloned()
        .partition(|(_, sn)| has_tag(sn, WAL_TAG));
    let opts = ForgetOptions {
        policy: policy.clone(),
        group_by: GroupBy {
            host: false,
            paths: false,
            tags: false,
        },
        ..ForgetOptions::default()
    };
    let mut decisions: Vec<Decision> = Vec::new();
    if policy.is_empty() {
        decisions.extend(backups.iter().map(|(id, sn)| Decision {
            id: id.to_hex(),
            time: sn.time,
            keep: r.pitr.is_none(),
            reasons: if r.pitr.is_none() {
                vec!["no keep rule".into()]
            } else {
                Vec::new()
            },
        }));
    } else {
        let p = steward_repo::apply_policy(&backups, &opts, now);
        for g in p.groups {
            for d in g.snapshots {
                decisions.push(Decision {
                    id: d.id.to_hex(),
                    time: d.time,
                    keep: d.keep,
                    reasons: d.reasons.iter().map(|r| r.to_string()).collect(),
                });
            }
        }
    }
    let mut wal_from: Option<DateTime<Utc>> = None;
    if let Some(window) = r.pitr {
        let start = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let mut bases: Vec<&(Id, Snapshot)> = backups
            .iter()
            .filter(|(_, sn)| has_tag(sn, BASE_TAG))
            .collect();
        bases.sort_by_key(|b| std::cmp::Reverse(b.1.time));
        let oldest_needed = bases
            .iter()
            .find(|(_, sn)| sn.time <= start)
            .or(bases.last())
            .map(|(id, sn)| (*id, sn.time));
        for (id, sn) in &bases {
            let in_window = sn.time > start;
            let anchor = oldest_needed.is_some_and(|(a, _)| a == *id);
            if in_window || anchor {
                if let Some(d) = decisions.iter_mut().find(|d| d.id == id.to_hex()) {
                    d.keep = true;
                    d.reasons.push(if in_window {
                        format!(
                            "point-in-time window {}",
                            humantime::format_duration(window)
                        )
                    } else {
                        "base of the point-in-time window".into()
                    });
                }
            }
        }
        wal_from = oldest_needed.map(|(_, t)| t);
    }
    for (id, sn) in &wal {
        // WAL is kept while a point-in-time window needs it (archived after the window's
        // base began, with a minute of slack for clocks), or always without a window.
        let keep = match (r.pitr, wal_from) {
            (None, _) => true,
            (Some(_), Some(from)) => sn.time + chrono::Duration::seconds(60) >= from,
            (Some(_), None) => true,
        };
        decisions.push(Decision {
            id: id.to_hex(),
            time: sn.time,
            keep,
            reasons: if keep {
                vec!["WAL for point-in-time recovery".into()]
            } else {
                Vec::new()
            },
        });
    }
    decisions.sort_by(|a, b| b.time.cmp(&a.time).then(a.id.cmp(&b.id)));
    Plan { decisions }
}

/// The window in days, for display.
pub fn describe(r: &RetentionConfig) -> String {
    let mut parts = Vec::new();
    if let Some(w) = r.pitr {
        parts.push(format!("PITR {}", humantime::format_duration(w)));
    }
    for (n, what) in [
        (r.keep_last, "last"),
        (r.keep_hourly, "hourly"),
        (r.keep_daily, "daily"),
        (r.keep_weekly, "weekly"),
        (r.keep_monthly, "monthly"),
        (r.keep_yearly, "yearly"),
    ] {
        if n > 0 {
            parts.push(format!("{what} {n}"));
        }
    }
    if parts.is_empty() {
        "keep everything".into()
    } else {
        parts.join(" + ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use steward_repo::Snapshot;

    fn snap(time: DateTime<Utc>, tags: &[&str]) -> (Id, Snapshot) {
        let mut sn = Snapshot::new(time, Id::hash(b"tree"), vec!["/x".into()]);
        sn.tags = tags.iter().map(|t| t.to_string()).collect();
        let id = Id::hash(format!("{time}{tags:?}").as_bytes());
        (id, sn)
    }

    fn day(n: i64) -> chrono::Duration {
        chrono::Duration::days(n)
    }

    /// 60 days of daily base backups and hourly WAL; "PITR 7d + daily 14 + weekly 8".
    #[test]
    fn a_pitr_window_combines_with_daily_and_weekly_rules() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut all = Vec::new();
        for d in 0..60 {
            let t = now - day(d) - chrono::Duration::hours(9);
            all.push(snap(t, &["steward", BASE_TAG]));
            for h in 0..24 {
                all.push(snap(
                    t + chrono::Duration::hours(h) + chrono::Duration::minutes(5),
                    &["steward", WAL_TAG],
                ));
            }
        }
        let r = RetentionConfig {
            keep_daily: 14,
            keep_weekly: 8,
            pitr: Some(Duration::from_secs(7 * 86_400)),
            ..Default::default()
        };
        let p = plan(&all, &r, now);
        let kept_bases: Vec<&Decision> = p
            .decisions
            .iter()
            .filter(|d| d.keep && !d.reasons.iter().any(|r| r.starts_with("WAL")))
            .collect();
        // 14 dailies (the window's 7 among them, plus its base on day 7), and weekly ones
        // beyond 14 days up to 8 weeks.
        let start = now - day(7);
        assert!(kept_bases.iter().filter(|d| d.time > start).count() == 7);
        let anchor = p
            .decisions
            .iter()
            .find(|d| {
                d.reasons
                    .iter()
                    .any(|r| r.contains("base of the point-in-time"))
            })
            .unwrap();
        assert!(
            anchor.time <= start && anchor.time > start - day(1),
            "{anchor:?}"
        );
        assert!(kept_bases.len() >= 14 + 5, "{}", kept_bases.len());
        assert!(kept_bases.iter().all(|d| d.time > now - day(60)));
        assert!(p
            .decisions
            .iter()
            .any(|d| !d.keep && d.time < now - day(56)));
        // WAL: every segment since the anchor is kept; nothing older is.
        for d in &p.decisions {
            let is_wal = all
                .iter()
                .any(|(id, sn)| id.to_hex() == d.id && has_tag(sn, WAL_TAG));
            if is_wal {
                assert_eq!(
                    d.keep,
                    d.time + chrono::Duration::seconds(60) >= anchor.time,
                    "{d:?}"
                );
            }
        }
        let forgotten = p.forget();
        assert!(!forgotten.is_empty());
        assert_eq!(
            forgotten.len(),
            p.decisions.iter().filter(|d| !d.keep).count()
        );
    }

    #[test]
    fn no_rule_keeps_everything_and_keep_last_counts_backups_not_wal() {
        let now = Utc::now();
        let all: Vec<_> = (0..5)
            .map(|i| snap(now - chrono::Duration::hours(i), &["steward"]))
            .collect();
        let p = plan(&all, &RetentionConfig::default(), now);
        assert!(p.decisions.iter().all(|d| d.keep));
        let r = RetentionConfig {
            keep_last: 2,
            ..Default::default()
        };
        let p = plan(&all, &r, now);
        assert_eq!(p.forget().len(), 3);
        assert!(p.decisions[0].keep && p.decisions[1].keep && !p.decisions[2].keep);
        assert_eq!(describe(&r), "last 2");
    }
}
