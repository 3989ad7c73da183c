//! Retention policies: our decisions against `restic forget --dry-run --json`,
//! and removing snapshots.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use steward_repo::{
    apply_policy, backup, forget, BackupOptions, Error, ForgetOptions, GroupBy, Id, KeepPolicy,
    LockKind, LockOptions, PolicyTimeZone, Repository, Snapshot,
};

fn quick_lock() -> LockOptions {
    LockOptions {
        recheck_delay: Duration::ZERO,
        ..Default::default()
    }
}

/// Snapshot times: clusters within hours and days, around the ISO-week year
/// boundary 2020/2021 (2021-01-01 is in week 53 of 2020), month ends, and a
/// sparse tail over several years. All distinct, all in the past.
fn times() -> Vec<DateTime<Utc>> {
    let at = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
    let mut v = vec![
        at(2020, 12, 27, 23, 59, 1),
        at(2020, 12, 28, 0, 0, 1),
        at(2020, 12, 31, 10, 0, 0),
        at(2020, 12, 31, 23, 30, 0),
        at(2021, 1, 1, 0, 15, 0),
        at(2021, 1, 1, 0, 45, 0),
        at(2021, 1, 3, 12, 0, 0),
        at(2021, 1, 4, 0, 0, 5),
        at(2021, 1, 31, 23, 59, 59),
        at(2021, 2, 1, 0, 0, 1),
        at(2021, 2, 28, 12, 0, 0),
        at(2021, 3, 31, 8, 0, 0),
        at(2019, 6, 15, 6, 0, 0),
        at(2018, 1, 1, 0, 0, 0),
        at(2016, 2, 29, 12, 0, 0),
    ];
    // A dense run of hourly-ish snapshots over four days.
    let base = at(2021, 3, 10, 0, 0, 0);
    let rnd = random_bytes(64, 77);
    for i in 0..40i64 {
        let jitter = i64::from(rnd[i as usize]) * 7;
        v.push(
            base + chrono::Duration::minutes(i * 137 + jitter % 60) + chrono::Duration::seconds(i),
        );
    }
    // Weekly over half a year.
    for i in 0..26i64 {
        v.push(at(2020, 6, 1, 3, 0, 0) + chrono::Duration::days(i * 7 + i % 3));
    }
    v.sort();
    v.dedup();
    v
}

fn variant(base: &Snapshot, time: DateTime<Utc>, i: usize) -> Snapshot {
    let mut sn = base.clone();
    sn.time = time;
    sn.parent = None;
    sn.hostname = match i % 3 {
        0 => "db2",
        _ => "db1",
    }
    .into();
    if matches!(i % 5, 0) {
        sn.paths = vec!["/srv/other".into()];
    }
    sn.tags = match i % 4 {
        0 => vec![],
        1 => vec!["a".into()],
        2 => vec!["b".into(), "c".into()],
        _ => vec!["c".into()],
    };
    sn
}

/// Makes the repository: one real backup with a chosen time, then snapshots of
/// the same tree at the other times (hosts, paths and tags varied).
fn populate(tmp: &std::path::Path) -> (Repository, BTreeMap<Id, Snapshot>) {
    let src = tmp.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"retention").unwrap();
    let repo = init_repo(&tmp.join("repo"));
    let ts = times();
    let first = backup(
        &repo,
        &[&src],
        &BackupOptions {
            time: Some(ts[0]),
            hostname: Some("db1".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let (_, base) = repo.load_snapshot(&first.snapshot_id.to_hex()).unwrap();
    let mut all = BTreeMap::new();
    all.insert(first.snapshot_id, base.clone());
    for (i, t) in ts.iter().enumerate().skip(1) {
        let sn = variant(&base, *t, i);
        let id = repo.save_snapshot(&sn).unwrap();
        all.insert(id, sn);
    }
    (repo, all)
}

struct Case {
    args: &'static [&'static str],
    policy: KeepPolicy,
    group_by: GroupBy,
}

fn cases() -> Vec<Case> {
    let d = |s: &str| Some(s.parse().unwrap());
    let host_paths = GroupBy::default();
    vec![
        Case {
            args: &["--keep-last", "3"],
            policy: KeepPolicy {
                keep_last: 3,
                ..Default::default()
            },
            group_by: host_paths,
        },
        Case {
            args: &["--keep-hourly", "7"],
            policy: KeepPolicy {
                keep_hourly: 7,
                ..Default::default()
            },
            group_by: host_paths,
        },
        Case {
            args: &[
                "--keep-daily",
                "7",
                "--keep-weekly",
                "5",
                "--keep-monthly",
                "6",
                "--keep-yearly",
                "3",
            ],
            policy: KeepPolicy {
                keep_daily: 7,
                keep_weekly: 5,
                keep_monthly: 6,
                keep_yearly: 3,
                ..Default::default()
            },
            group_by: host_paths,
        },
        Case {
            args: &["--keep-within", "1m15d", "--keep-last", "1"],
            policy: KeepPolicy {
                keep_within: d("1m15d"),
                keep_last: 1,
                ..Default::default()
            },
            group_by: host_paths,
        },
        Case {
            args: &["--keep-within", "2d12h"],
            policy: KeepPolicy {
                keep_within: d("2d12h"),
                ..Default::default()
            },
            group_by: host_paths,
        },
        Case {
            args: &[
                "--keep-within-hourly",
                "1d",
                "--keep-within-daily",
                "10d",
                "--keep-within-weekly",
                "2m",
                "--keep-within-monthly",
                "1y",
                "--keep-within-yearly",
                "5y",
            ],
            policy: KeepPolicy {
                keep_within_hourly: d("1d"),
                keep_within_daily: d("10d"),
                keep_within_weekly: d("2m"),
                keep_within_monthly: d("1y"),
                keep_within_yearly: d("5y"),
                ..Default::default()
            },
            group_by: host_paths,
        },
        Case {
            args: &["--keep-tag", "a", "--keep-tag", "b,c", "--keep-last", "1"],
            policy: KeepPolicy {
                keep_tags: vec![vec!["a".into()], vec!["b".into(), "c".into()]],
                keep_last: 1,
                ..Default::default()
            },
            group_by: host_paths,
        },
        Case {
            args: &["--keep-daily", "4", "--group-by", "host"],
            policy: KeepPolicy {
                keep_daily: 4,
                ..Default::default()
            },
            group_by: GroupBy {
                host: true,
                paths: false,
                tags: false,
            },
        },
        Case {
            args: &["--keep-weekly", "6", "--group-by", "host,tags"],
            policy: KeepPolicy {
                keep_weekly: 6,
                ..Default::default()
            },
            group_by: GroupBy {
                host: true,
                paths: false,
                tags: true,
            },
        },
        Case {
            args: &[
                "--keep-monthly",
                "4",
                "--keep-hourly",
                "3",
                "--group-by",
                "",
            ],
            policy: KeepPolicy {
                keep_monthly: 4,
                keep_hourly: 3,
                ..Default::default()
            },
            group_by: GroupBy {
                host: false,
                paths: false,
                tags: false,
            },
        },
    ]
}

/// restic's decisions: kept id -> its `matches`, and the removed ids.
fn restic_forget(
    repo: &std::path::Path,
    pw: &std::path::Path,
    args: &[&str],
) -> (BTreeMap<Id, Vec<String>>, BTreeSet<Id>) {
    let mut full = vec!["forget", "--dry-run", "--json"];
    full.extend_from_slice(args);
    let out = restic(repo, pw, &full);
    // restic prints the JSON on one line (older versions may print text first).
    let line = String::from_utf8_lossy(&out)
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| {
            panic!(
                "no JSON from restic forget: {}",
                String::from_utf8_lossy(&out)
            )
        })
        .to_string();
    let groups: serde_json::Value = serde_json::from_str(&line).unwrap();
    let mut keep = BTreeMap::new();
    let mut remove = BTreeSet::new();
    for g in groups.as_array().unwrap() {
        let kept = g["keep"].as_array().cloned().unwrap_or_default();
        let reasons = g["reasons"].as_array().cloned().unwrap_or_default();
        assert_eq!(kept.len(), reasons.len());
        for (k, r) in kept.iter().zip(&reasons) {
            let id: Id = k["id"].as_str().unwrap().parse().unwrap();
            assert_eq!(k["time"], r["snapshot"]["time"]);
            let matches = r["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
            keep.insert(id, matches);
        }
        for r in g["remove"].as_array().cloned().unwrap_or_default() {
            remove.insert(r["id"].as_str().unwrap().parse().unwrap());
        }
    }
    (keep, remove)
}

#[test]
fn decisions_match_restic_forget() {
    if !have_restic("decisions_match_restic_forget") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, all) = populate(tmp.path());
    let pw = password_file(tmp.path());
    let snapshots = repo.list_snapshots().unwrap();
    assert_eq!(snapshots.len(), all.len());
    let now = Utc::now();
    for case in cases() {
        let opts = ForgetOptions {
            policy: case.policy.clone(),
            group_by: case.group_by,
            // Steward writes snapshot times in UTC, so restic buckets in UTC.
            time_zone: PolicyTimeZone::Utc,
            ..Default::default()
        };
        let plan = apply_policy(&snapshots, &opts, now);
        let (restic_keep, restic_remove) = restic_forget(&tmp.path().join("repo"), &pw, case.args);
        let ours_keep: BTreeSet<Id> = plan.keep_ids().into_iter().collect();
        let ours_remove: BTreeSet<Id> = plan.remove_ids().into_iter().collect();
        let theirs_keep: BTreeSet<Id> = restic_keep.keys().copied().collect();
        assert_eq!(
            ours_keep, theirs_keep,
            "kept snapshots differ for {:?} ({})",
            case.args, case.policy
        );
        assert_eq!(
            ours_remove, restic_remove,
            "removed differ for {:?}",
            case.args
        );
        assert!(
            !ours_remove.is_empty(),
            "{:?} should remove something",
            case.args
        );
        for (id, matches) in &restic_keep {
            let d = plan.decision(id).unwrap();
            let ours: Vec<String> = d.reasons.iter().map(|r| r.restic_text()).collect();
            assert_eq!(
                &ours,
                matches,
                "reasons for {} under {:?}",
                id.short(),
                case.args
            );
        }
    }

    // An empty policy keeps everything, as restic's does (restic prints nothing).
    let plan = apply_policy(
        &snapshots,
        &ForgetOptions {
            time_zone: PolicyTimeZone::Utc,
            ..Default::default()
        },
        now,
    );
    assert!(plan.policy_empty);
    assert_eq!(plan.keep_ids().len(), all.len());

    // Now really forget with one policy; restic sees exactly the kept snapshots.
    let case = &cases()[2];
    let opts = ForgetOptions {
        policy: case.policy.clone(),
        time_zone: PolicyTimeZone::Utc,
        lock: quick_lock(),
        ..Default::default()
    };
    let report = forget(&repo, &opts, now).unwrap();
    assert!(!report.dry_run);
    assert_eq!(report.removed, report.plan.remove_ids());
    let json = restic(&tmp.path().join("repo"), &pw, &["snapshots", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let listed: BTreeSet<Id> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed, report.plan.keep_ids().into_iter().collect());
    // Applying the same policy again removes nothing more.
    let again = forget(&repo, &opts, now).unwrap();
    assert!(again.removed.is_empty(), "{:?}", again.removed);
    restic(&tmp.path().join("repo"), &pw, &["check"]);
}

#[test]
fn forget_dry_run_empty_policy_and_remove_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, all) = populate(tmp.path());
    let now = Utc::now();
    let count = || repo.snapshot_ids().unwrap().len();

    // A dry run removes nothing but reports what it would.
    let opts = ForgetOptions {
        policy: KeepPolicy {
            keep_last: 2,
            ..Default::default()
        },
        dry_run: true,
        lock: quick_lock(),
        ..Default::default()
    };
    let report = forget(&repo, &opts, now).unwrap();
    assert!(report.dry_run && report.removed.is_empty());
    assert!(report.plan.remove_ids().len() > 10);
    assert_eq!(count(), all.len());
    let kept_reasons: Vec<String> = report
        .plan
        .decisions()
        .filter(|d| d.keep)
        .flat_map(|d| d.reasons.iter().map(|r| r.to_string()))
        .collect();
    assert!(kept_reasons.iter().all(|r| r == "last 1" || r == "last 2"));

    // An empty policy removes nothing, and says so.
    let report = forget(
        &repo,
        &ForgetOptions {
            lock: quick_lock(),
            ..Default::default()
        },
        now,
    )
    .unwrap();
    assert!(report.plan.policy_empty);
    assert!(report.removed.is_empty());
    assert_eq!(count(), all.len());

    // Removing needs an exclusive lock: a backup's shared lock stops it.
    let ids: Vec<Id> = all.keys().take(3).copied().collect();
    let shared = repo.lock_with(LockKind::Shared, quick_lock()).unwrap();
    let err = repo.remove_snapshots_with(&ids, quick_lock()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("a shared lock held by PID"),
        "{err}"
    );
    drop(shared);
    assert_eq!(count(), all.len());

    // An unknown id removes nothing.
    let mut with_unknown = ids.clone();
    with_unknown.push(Id::hash(b"no such snapshot"));
    let err = repo
        .remove_snapshots_with(&with_unknown, quick_lock())
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(count(), all.len());

    assert_eq!(repo.remove_snapshots_with(&ids, quick_lock()).unwrap(), 3);
    assert_eq!(count(), all.len() - 3);
    assert!(repo
        .backend()
        .list(steward_repo::FileType::Lock)
        .unwrap()
        .is_empty());
}
