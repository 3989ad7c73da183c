//! Retention policies: which snapshots to keep, like `restic forget`.
//!
//! Snapshots are first divided into groups ([`GroupBy`]: by default host name
//! and paths), then a [`KeepPolicy`] is applied to each group on its own,
//! exactly as restic 0.14 does:
//!
//! * The group is sorted newest first.
//! * `keep_last n` keeps the `n` newest snapshots.
//! * `keep_hourly`/`daily`/`weekly`/`monthly`/`yearly n` walk the snapshots from
//!   the newest and keep each one that falls in a period (hour, day, ISO week,
//!   month, year, in local time of a chosen [`PolicyTimeZone`]) other than the
//!   previous kept one of that rule, until `n` periods are kept: the newest
//!   snapshot of each of the `n` newest periods that have a snapshot.
//! * `keep_within d` keeps every snapshot strictly newer than `d` (years,
//!   months, days, hours, written like restic's `1y5m7d2h`) before the newest
//!   snapshot of the group, or before an injected "now" ([`WithinFrom`]).
//!   `keep_within_hourly d` and friends keep the newest snapshot of every
//!   period inside that window.
//! * `keep_tags` keeps every snapshot that has all the tags of any listed set.
//!
//! A snapshot is kept if any rule keeps it, and [`SnapshotDecision::reasons`]
//! lists every rule that did, e.g. `daily 3` (the third daily snapshot kept) or
//! `within 2d`. An empty policy keeps every snapshot (reason `policy is empty`),
//! never removes them all.
//!
//! restic takes the local time from the offset recorded in each snapshot; this
//! crate records times in UTC, so the zone is a parameter instead (restic on a
//! machine whose zone is UTC decides exactly the same for Steward's snapshots).
//! [`apply_policy`] is pure; [`forget`] lists a repository's snapshots, applies
//! the policy and (unless it is a dry run) removes the rest under an exclusive
//! lock, like `restic forget`. Removing snapshots frees no space by itself:
//! [`crate::prune()`] removes the data no snapshot references any more.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, FixedOffset, Local, NaiveDate, NaiveDateTime,
    TimeZone, Timelike, Utc,
};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::{Id, IdSet};
use crate::lock::{LockKind, LockOptions};
use crate::repo::{retry, Repository};
use crate::snapshot::Snapshot;

/// A span of calendar time, restic's `--keep-within` duration: `1y5m7d2h` is one
/// year, five months, seven days and two hours. Years, months and days are
/// calendar steps (taken in local time, with Go's normalisation: one month
/// before 31 March is 3 March in a non-leap year); hours are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetentionDuration {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl RetentionDuration {
    /// True when every part is zero (the rule is off).
    pub fn is_zero(&self) -> bool {
        *self == RetentionDuration::default()
    }

    /// `t` minus this duration, with the calendar steps taken in `zone`.
    pub fn before(&self, t: DateTime<Utc>, zone: PolicyTimeZone) -> DateTime<Utc> {
        let local = zone.local(t);
        // Go's AddDate: subtract, then normalise months into years and
        // overflowing days into the following months.
        let months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = months.div_euclid(12);
        let month0 = months.rem_euclid(12) as u32;
        let shifted = i32::try_from(year)
            .ok()
            .and_then(|y| NaiveDate::from_ymd_opt(y, month0 + 1, 1))
            .and_then(|first| {
                first.checked_add_signed(ChronoDuration::days(
                    i64::from(local.day()) - 1 - i64::from(self.days),
                ))
            })
            .map(|d| d.and_time(local.time()));
        let Some(shifted) = shifted else {
            // Beyond chrono's calendar: everything is "within".
            return DateTime::<Utc>::MIN_UTC;
        };
        zone.to_utc(shifted) - ChronoDuration::hours(i64::from(self.hours))
    }
}

impl fmt::Display for RetentionDuration {
    /// restic's form: the non-zero parts, e.g. `1y2d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.years != 0 {
            write!(f, "{}y", self.years)?;
        }
        if self.months != 0 {
            write!(f, "{}m", self.months)?;
        }
        if self.days != 0 {
            write!(f, "{}d", self.days)?;
        }
        if self.hours != 0 {
            write!(f, "{}h", self.hours)?;
        }
        Ok(())
    }
}

impl FromStr for RetentionDuration {
    type Err = Error;

    /// Parses restic's form: numbers each followed by `y`, `m`, `d` or `h`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "{s:?} is not a retention duration ({why}): write numbers followed by y (years), m (months), d (days) or h (hours), e.g. 1y6m or 7d12h"
            ))
        };
        let mut d = RetentionDuration::default();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad("it is empty"));
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("a unit without a number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("a number is too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| bad("a number without a unit"))?;
            match unit {
                'y' => d.years = n,
                'm' => d.months = n,
                'd' => d.days = n,
                'h' => d.hours = n,
                _ => return Err(bad("unknown unit")),
            }
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }
}

/// The time zone whose local calendar defines hours, days, weeks, months and
/// years for a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyTimeZone {
    /// UTC.
    Utc,
    /// This machine's zone (the `TZ` variable or `/etc/localtime`), with its
    /// daylight-saving rules. What restic uses for snapshots it wrote itself.
    #[default]
    Local,
    /// A fixed offset from UTC.
    Fixed(FixedOffset),
}

impl PolicyTimeZone {
    /// The local wall-clock time of `t`.
    pub fn local(self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            PolicyTimeZone::Utc => t.naive_utc(),
            PolicyTimeZone::Local => t.with_timezone(&Local).naive_local(),
            PolicyTimeZone::Fixed(o) => t.with_timezone(&o).naive_local(),
        }
    }

    /// The instant of a local wall-clock time. An ambiguous time (a clock set
    /// back) is the earlier instant; a time in a gap (a clock set forward) is
    /// taken an hour later.
    pub fn to_utc(self, local: NaiveDateTime) -> DateTime<Utc> {
        fn pick<Tz: TimeZone>(tz: &Tz, local: NaiveDateTime) -> DateTime<Utc> {
            tz.from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    tz.from_local_datetime(&(local + ChronoDuration::hours(1)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&local))
        }
        match self {
            PolicyTimeZone::Utc => Utc.from_utc_datetime(&local),
            PolicyTimeZone::Local => pick(&Local, local),
            PolicyTimeZone::Fixed(o) => pick(&o, local),
        }
    }
}

/// Where `keep_within*` windows end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WithinFrom {
    /// The newest snapshot of the group (restic's behaviour), ignoring
    /// snapshots dated after "now" (a wrong clock must not push every real
    /// snapshot out of the window).
    #[default]
    NewestSnapshot,
    /// The injected "now".
    Now,
}

/// Which snapshots to keep. All zero (the default) is the empty policy, which
/// keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// Keep the `n` newest snapshots.
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the `n` newest hours with one.
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the `n` newest days with one.
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the `n` newest ISO weeks with one.
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the `n` newest months with one.
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the `n` newest years with one.
    pub keep_yearly: u32,
    /// Keep every snapshot newer than this before the newest (or now).
    pub keep_within: Option<RetentionDuration>,
    /// Keep the newest snapshot of every hour within this window.
    pub keep_within_hourly: Option<RetentionDuration>,
    /// Keep the newest snapshot of every day within this window.
    pub keep_within_daily: Option<RetentionDuration>,
    /// Keep the newest snapshot of every ISO week within this window.
    pub keep_within_weekly: Option<RetentionDuration>,
    /// Keep the newest snapshot of every month within this window.
    pub keep_within_monthly: Option<RetentionDuration>,
    /// Keep the newest snapshot of every year within this window.
    pub keep_within_yearly: Option<RetentionDuration>,
    /// Keep every snapshot that has all the tags of one of these sets. (An
    /// empty set matches every snapshot, as in restic.)
    pub keep_tags: Vec<Vec<String>>,
}

fn active(d: &Option<RetentionDuration>) -> Option<RetentionDuration> {
    d.filter(|d| !d.is_zero())
}

impl KeepPolicy {
    /// True when no rule is set: such a policy keeps every snapshot.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && active(&self.keep_within).is_none()
            && self.within_periods().iter().all(|(_, d)| d.is_none())
            && self.keep_tags.is_empty()
    }

    fn within_periods(&self) -> [(Period, Option<RetentionDuration>); 5] {
        [
            (Period::Hour, active(&self.keep_within_hourly)),
            (Period::Day, active(&self.keep_within_daily)),
            (Period::Week, active(&self.keep_within_weekly)),
            (Period::Month, active(&self.keep_within_monthly)),
            (Period::Year, active(&self.keep_within_yearly)),
        ]
    }
}

impl fmt::Display for KeepPolicy {
    /// A one-line description, e.g. `keep 7 daily, 4 weekly, within 2d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("empty policy (keep everything)");
        }
        let mut parts = Vec::new();
        for (n, name) in [
            (self.keep_last, "last"),
            (self.keep_hourly, "hourly"),
            (self.keep_daily, "daily"),
            (self.keep_weekly, "weekly"),
            (self.keep_monthly, "monthly"),
            (self.keep_yearly, "yearly"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {name}"));
            }
        }
        if let Some(d) = active(&self.keep_within) {
            parts.push(format!("within {d}"));
        }
        for (p, d) in self.within_periods() {
            if let Some(d) = d {
                parts.push(format!("{} within {d}", p.adjective()));
            }
        }
        for t in &self.keep_tags {
            parts.push(format!("tags {}", t.join(",")));
        }
        write!(f, "keep {}", parts.join(", "))
    }
}

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// An hour of local time.
    Hour,
    /// A local day.
    Day,
    /// An ISO 8601 week (Monday to Sunday; week 1 holds the year's first Thursday).
    Week,
    /// A month.
    Month,
    /// A year.
    Year,
}

impl Period {
    /// `hourly`, `daily`, ...
    pub fn adjective(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// A number naming the period of local time `t` (restic's buckets:
    /// YYYYMMDDHH, YYYYMMDD, ISO YYYYWW, YYYYMM, YYYY).
    fn bucket(self, t: NaiveDateTime) -> i64 {
        let y = i64::from(t.year());
        let m = i64::from(t.month());
        let d = i64::from(t.day());
        match self {
            Period::Hour => ((y * 100 + m) * 100 + d) * 100 + i64::from(t.hour()),
            Period::Day => (y * 100 + m) * 100 + d,
            Period::Week => {
                let w = t.date().iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Month => y * 100 + m,
            Period::Year => y,
        }
    }
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeepReason {
    /// The policy is empty, so everything is kept.
    PolicyEmpty,
    /// The `n`-th newest snapshot (`keep_last`).
    Last(u32),
    /// The newest snapshot of the `n`-th newest period kept by a
    /// `keep_hourly`..`keep_yearly` rule.
    Periodic {
        /// The rule's period.
        period: Period,
        /// 1 for the newest period kept.
        n: u32,
    },
    /// Newer than `keep_within` before the reference time.
    Within(RetentionDuration),
    /// The newest snapshot of its period inside a `keep_within_*` window.
    PeriodicWithin {
        /// The rule's period.
        period: Period,
        /// The window.
        within: RetentionDuration,
    },
    /// It has all of these tags (`keep_tags`).
    Tags(Vec<String>),
}

impl KeepReason {
    /// The text `restic forget --json` prints for this reason (its `matches`).
    pub fn restic_text(&self) -> String {
        match self {
            KeepReason::PolicyEmpty => "policy is empty".into(),
            KeepReason::Last(_) => "last snapshot".into(),
            KeepReason::Periodic { period, .. } => format!("{} snapshot", period.adjective()),
            KeepReason::Within(d) => format!("within {d}"),
            KeepReason::PeriodicWithin { period, within } => {
                format!("{} within {within}", period.adjective())
            }
            KeepReason::Tags(t) => format!("has tags [{}]", t.join(", ")),
        }
    }
}

impl fmt::Display for KeepReason {
    /// `last 1`, `daily 3`, `within 2d`, `daily within 1m`, `tags a,b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::PolicyEmpty => f.write_str("policy is empty"),
            KeepReason::Last(n) => write!(f, "last {n}"),
            KeepReason::Periodic { period, n } => write!(f, "{} {n}", period.adjective()),
            KeepReason::Within(d) => write!(f, "within {d}"),
            KeepReason::PeriodicWithin { period, within } => {
                write!(f, "{} within {within}", period.adjective())
            }
            KeepReason::Tags(t) => write!(f, "tags {}", t.join(",")),
        }
    }
}

/// How snapshots are grouped before the policy is applied (restic's
/// `--group-by`). All false puts every snapshot in one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// By host name.
    pub host: bool,
    /// By the (sorted) list of paths.
    pub paths: bool,
    /// By the (sorted) list of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// Host and paths, as restic.
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

/// What the snapshots of a group share; `None` for what is not grouped by.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Host name.
    pub hostname: Option<String>,
    /// Paths, sorted.
    pub paths: Option<Vec<String>>,
    /// Tags, sorted.
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(sn: &Snapshot, by: GroupBy) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            hostname: by.host.then(|| sn.hostname.clone()),
            paths: by.paths.then(|| sorted(&sn.paths)),
            tags: by.tags.then(|| sorted(&sn.tags)),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.hostname {
            parts.push(format!("host {h:?}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDecision {
    /// The snapshot.
    pub id: Id,
    /// Its time.
    pub time: DateTime<Utc>,
    /// True to keep it.
    pub keep: bool,
    /// Every rule that keeps it (empty when it is removed).
    pub reasons: Vec<KeepReason>,
}

/// The decisions for one group, newest snapshot first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetGroup {
    /// What the group's snapshots share.
    pub key: GroupKey,
    /// Newest first.
    pub snapshots: Vec<SnapshotDecision>,
}

/// The outcome of applying a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetPlan {
    /// True when the policy was empty (everything kept).
    pub policy_empty: bool,
    /// The groups, ordered by key.
    pub groups: Vec<ForgetGroup>,
}

impl ForgetPlan {
    /// Every decision.
    pub fn decisions(&self) -> impl Iterator<Item = &SnapshotDecision> {
        self.groups.iter().flat_map(|g| g.snapshots.iter())
    }

    /// Ids of the snapshots kept, sorted.
    pub fn keep_ids(&self) -> Vec<Id> {
        let mut v: Vec<Id> = self.decisions().filter(|d| d.keep).map(|d| d.id).collect();
        v.sort();
        v
    }

    /// Ids of the snapshots to remove, sorted.
    pub fn remove_ids(&self) -> Vec<Id> {
        let mut v: Vec<Id> = self.decisions().filter(|d| !d.keep).map(|d| d.id).collect();
        v.sort();
        v
    }

    /// The decision for a snapshot.
    pub fn decision(&self, id: &Id) -> Option<&SnapshotDecision> {
        self.decisions().find(|d| d.id == *id)
    }
}

/// How [`apply_policy`] and [`forget`] work.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// The rules.
    pub policy: KeepPolicy,
    /// Grouping (default host and paths).
    pub group_by: GroupBy,
    /// The zone whose calendar defines the periods (default: local).
    pub time_zone: PolicyTimeZone,
    /// Where `keep_within*` windows end (default: the newest snapshot).
    pub within_from: WithinFrom,
    /// [`forget`] only: decide and report, remove nothing.
    pub dry_run: bool,
    /// [`forget`] only: lock timings and identity.
    pub lock: LockOptions,
}

fn has_tags(sn: &Snapshot, wanted: &[String]) -> bool {
    wanted.iter().all(|t| sn.tags.contains(t))
}

fn apply_to_group(
    list: &[(Id, &Snapshot)],
    opts: &ForgetOptions,
    now: DateTime<Utc>,
) -> Vec<SnapshotDecision> {
    let p = &opts.policy;
    if p.is_empty() {
        return list
            .iter()
            .map(|(id, sn)| SnapshotDecision {
                id: *id,
                time: sn.time,
                keep: true,
                reasons: vec![KeepReason::PolicyEmpty],
            })
            .collect();
    }
    let reference = match opts.within_from {
        WithinFrom::Now => now,
        WithinFrom::NewestSnapshot => list
            .iter()
            .map(|(_, sn)| sn.time)
            .filter(|t| *t <= now)
            .max()
            .or_else(|| list.iter().map(|(_, sn)| sn.time).max())
            .unwrap_or(now),
    };
    let zone = opts.time_zone;
    let within_cutoff = active(&p.keep_within).map(|d| (d, d.before(reference, zone)));
    // (period or None for "last", remaining count, last bucket, kept so far)
    struct Counter {
        period: Option<Period>,
        left: u32,
        last: Option<i64>,
        kept: u32,
    }
    let mut counters: Vec<Counter> = [
        (None, p.keep_last),
        (Some(Period::Hour), p.keep_hourly),
        (Some(Period::Day), p.keep_daily),
        (Some(Period::Week), p.keep_weekly),
        (Some(Period::Month), p.keep_monthly),
        (Some(Period::Year), p.keep_yearly),
    ]
    .into_iter()
    .map(|(period, left)| Counter {
        period,
        left,
        last: None,
        kept: 0,
    })
    .collect();
    let mut within_buckets: Vec<(Period, RetentionDuration, DateTime<Utc>, Option<i64>)> = p
        .within_periods()
        .into_iter()
        .filter_map(|(period, d)| d.map(|d| (period, d, d.before(reference, zone), None)))
        .collect();

    let mut out = Vec::with_capacity(list.len());
    for (nr, (id, sn)) in list.iter().enumerate() {
        let local = zone.local(sn.time);
        let mut reasons = Vec::new();
        for tags in &p.keep_tags {
            if has_tags(sn, tags) {
                reasons.push(KeepReason::Tags(tags.clone()));
            }
        }
        if let Some((d, cutoff)) = within_cutoff {
            if sn.time > cutoff {
                reasons.push(KeepReason::Within(d));
            }
        }
        for c in &mut counters {
            if c.left == 0 {
                continue;
            }
            let bucket = match c.period {
                Some(period) => period.bucket(local),
                None => nr as i64,
            };
            if c.last != Some(bucket) {
                c.last = Some(bucket);
                c.left -= 1;
                c.kept += 1;
                reasons.push(match c.period {
                    None => KeepReason::Last(c.kept),
                    Some(period) => KeepReason::Periodic { period, n: c.kept },
                });
            }
        }
        for (period, within, cutoff, last) in &mut within_buckets {
            if sn.time > *cutoff {
                let bucket = period.bucket(local);
                if *last != Some(bucket) {
                    *last = Some(bucket);
                    reasons.push(KeepReason::PeriodicWithin {
                        period: *period,
                        within: *within,
                    });
                }
            }
        }
        out.push(SnapshotDecision {
            id: *id,
            time: sn.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

/// Applies `opts.policy` to `snapshots` (grouped by `opts.group_by`). `now` is
/// the reference for [`WithinFrom::Now`] and bounds which snapshots count as
/// the newest for [`WithinFrom::NewestSnapshot`]. Pure: nothing is read or
/// removed.
pub fn apply_policy(
    snapshots: &[(Id, Snapshot)],
    opts: &ForgetOptions,
    now: DateTime<Utc>,
) -> ForgetPlan {
    let mut groups: BTreeMap<GroupKey, Vec<(Id, &Snapshot)>> = BTreeMap::new();
    for (id, sn) in snapshots {
        groups
            .entry(GroupKey::of(sn, opts.group_by))
            .or_default()
            .push((*id, sn));
    }
    let groups = groups
        .into_iter()
        .map(|(key, mut list)| {
            // Newest first; equal times in id order so the result is stable.
            list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(&b.0)));
            ForgetGroup {
                key,
                snapshots: apply_to_group(&list, opts, now),
            }
        })
        .collect();
    ForgetPlan {
        policy_empty: opts.policy.is_empty(),
        groups,
    }
}

/// What [`forget`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetReport {
    /// The decisions.
    pub plan: ForgetPlan,
    /// Snapshots removed (empty for a dry run or when all are kept).
    pub removed: Vec<Id>,
    /// True when nothing was removed because it was a dry run.
    pub dry_run: bool,
}

/// Applies a policy to the repository's snapshots and removes those it does
/// not keep, under an exclusive lock (a shared one for a dry run). Damaged
/// snapshot files stop it: a policy decided without them could remove the
/// wrong snapshots.
pub fn forget(repo: &Repository, opts: &ForgetOptions, now: DateTime<Utc>) -> Result<ForgetReport> {
    let kind = if opts.dry_run {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    let lock = repo.lock_with(kind, opts.lock.clone())?;
    let mut snapshots = Vec::new();
    for id in repo.snapshot_ids()? {
        let sn = repo.load_json::<Snapshot>(FileType::Snapshot, &id).map_err(|e| {
            if e.is_corrupt() {
                Error::corrupt(
                    format!("snapshot {id}"),
                    format!("{e}; forget stopped without removing anything (remove that snapshot file, or repair it, first)"),
                )
            } else {
                e
            }
        })?;
        snapshots.push((id, sn));
    }
    let plan = apply_policy(&snapshots, opts, now);
    let mut removed = Vec::new();
    if !opts.dry_run && !plan.policy_empty {
        removed = plan.remove_ids();
        remove_snapshot_files(repo, &removed)?;
    }
    lock.release()?;
    Ok(ForgetReport {
        plan,
        removed,
        dry_run: opts.dry_run,
    })
}

/// Removes snapshot files; the caller holds an exclusive lock. A file already
/// gone counts as removed.
fn remove_snapshot_files(repo: &Repository, ids: &[Id]) -> Result<()> {
    for id in ids {
        match retry(|| repo.backend().remove(FileType::Snapshot, id)) {
            Ok(()) => tracing::info!(snapshot = %id, "removed snapshot"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Repository {
    /// Removes these snapshots (their files only; [`crate::prune()`] frees the
    /// data) under an exclusive lock with default lock options. Every id must
    /// exist: otherwise nothing is removed.
    pub fn remove_snapshots(&self, ids: &[Id]) -> Result<usize> {
        self.remove_snapshots_with(ids, LockOptions::default())
    }

    /// [`Repository::remove_snapshots`] with explicit lock options.
    pub fn remove_snapshots_with(&self, ids: &[Id], lock: LockOptions) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let lock = self.lock_with(LockKind::Exclusive, lock)?;
        let present: IdSet<Id> = self.snapshot_ids()?.into_iter().collect();
        let mut unique: Vec<Id> = ids.to_vec();
        unique.sort();
        unique.dedup();
        if let Some(missing) = unique.iter().find(|id| !present.contains(*id)) {
            return Err(Error::NotFound {
                what: format!("snapshot {missing}"),
                hint: "nothing was removed; list the snapshots to find the right ids".into(),
            });
        }
        remove_snapshot_files(self, &unique)?;
        lock.release()?;
        Ok(unique.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn snap(i: u8, time: &str) -> (Id, Snapshot) {
        let mut sn = Snapshot::new(t(time), Id::hash(b"tree"), vec!["/data".into()]);
        sn.hostname = "h".into();
        (Id([i; 32]), sn)
    }

    fn opts(policy: KeepPolicy) -> ForgetOptions {
        ForgetOptions {
            policy,
            time_zone: PolicyTimeZone::Utc,
            ..Default::default()
        }
    }

    fn kept(plan: &ForgetPlan) -> Vec<u8> {
        let mut v: Vec<u8> = plan.keep_ids().iter().map(|id| id.0[0]).collect();
        v.sort();
        v
    }

    fn reasons(plan: &ForgetPlan, i: u8) -> Vec<String> {
        plan.decision(&Id([i; 32]))
            .unwrap()
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    const NOW: &str = "2030-01-01T00:00:00Z";

    fn sample() -> Vec<(Id, Snapshot)> {
        vec![
            snap(1, "2021-01-01T10:00:00Z"),
            snap(2, "2021-01-01T11:30:00Z"),
            snap(3, "2021-01-01T11:45:00Z"),
            snap(4, "2021-01-02T09:00:00Z"),
            snap(5, "2021-01-04T09:00:00Z"),
            snap(6, "2021-02-15T09:00:00Z"),
            snap(7, "2022-03-01T00:00:00Z"),
        ]
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let plan = apply_policy(&sample(), &opts(KeepPolicy::default()), t(NOW));
        assert!(plan.policy_empty);
        assert_eq!(kept(&plan), vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(plan.remove_ids().is_empty());
        assert_eq!(reasons(&plan, 3), vec!["policy is empty"]);
        // Zero durations are "off", not rules.
        let p = KeepPolicy {
            keep_within: Some(RetentionDuration::default()),
            ..Default::default()
        };
        assert!(p.is_empty());
    }

    #[test]
    fn keep_last() {
        let p = KeepPolicy {
            keep_last: 2,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![6, 7]);
        assert_eq!(reasons(&plan, 7), vec!["last 1"]);
        assert_eq!(reasons(&plan, 6), vec!["last 2"]);
        assert!(reasons(&plan, 5).is_empty());
    }

    #[test]
    fn keep_hourly_and_daily() {
        let p = KeepPolicy {
            keep_hourly: 3,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![5, 6, 7]);
        let p = KeepPolicy {
            keep_hourly: 10,
            ..Default::default()
        };
        // 11:30 and 11:45 share an hour: the newer (3) is kept.
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![1, 3, 4, 5, 6, 7]);
        assert_eq!(reasons(&plan, 1), vec!["hourly 6"]);

        let p = KeepPolicy {
            keep_daily: 4,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![4, 5, 6, 7]);
        assert_eq!(reasons(&plan, 4), vec!["daily 4"]);
        let p = KeepPolicy {
            keep_daily: 5,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn keep_weekly_monthly_yearly() {
        // 2021-01-01 (Fri) and 01-02 are ISO week 2020-53; 01-04 is 2021-01.
        let p = KeepPolicy {
            keep_weekly: 3,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![5, 6, 7]);
        let p = KeepPolicy {
            keep_weekly: 4,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![4, 5, 6, 7]);

        let p = KeepPolicy {
            keep_monthly: 3,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![5, 6, 7]);
        assert_eq!(reasons(&plan, 5), vec!["monthly 3"]);

        let p = KeepPolicy {
            keep_yearly: 5,
            ..Default::default()
        };
        let plan = apply_policy(&sample(), &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![6, 7]);
    }

    #[test]
    fn periods_follow_the_time_zone() {
        // 23:30 UTC on 1 Jan is 00:30 on 2 Jan at +01:00.
        let list = vec![
            snap(1, "2021-01-01T23:30:00Z"),
            snap(2, "2021-01-02T08:00:00Z"),
        ];
        let p = KeepPolicy {
            keep_daily: 5,
            ..Default::default()
        };
        let plan = apply_policy(&list, &opts(p.clone()), t(NOW));
        assert_eq!(kept(&plan), vec![1, 2]);
        let mut o = opts(p);
        o.time_zone = PolicyTimeZone::Fixed(FixedOffset::east_opt(3600).unwrap());
        let plan = apply_policy(&list, &o, t(NOW));
        assert_eq!(kept(&plan), vec![2]);
    }

    #[test]
    fn keep_within_from_newest_or_now() {
        let p = KeepPolicy {
            keep_within: Some("1d".parse().unwrap()),
            ..Default::default()
        };
        let list = vec![
            snap(1, "2021-01-01T08:59:00Z"),
            snap(2, "2021-01-01T09:00:00Z"),
            snap(3, "2021-01-01T09:01:00Z"),
            snap(4, "2021-01-02T09:00:00Z"),
        ];
        let plan = apply_policy(&list, &opts(p.clone()), t(NOW));
        // Strictly newer than the newest minus one day.
        assert_eq!(kept(&plan), vec![3, 4]);
        assert_eq!(reasons(&plan, 3), vec!["within 1d"]);

        let mut o = opts(p.clone());
        o.within_from = WithinFrom::Now;
        let plan = apply_policy(&list, &o, t("2021-01-02T12:00:00Z"));
        assert_eq!(kept(&plan), vec![4]);
        let plan = apply_policy(&list, &o, t(NOW));
        assert!(kept(&plan).is_empty(), "nothing is within a day of now");
        assert!(!plan.policy_empty);

        // A snapshot from the future does not move the window.
        let mut future = list.clone();
        future.push(snap(9, "2040-01-01T00:00:00Z"));
        let plan = apply_policy(&future, &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![3, 4, 9]);
    }

    #[test]
    fn keep_within_periods() {
        let p = KeepPolicy {
            keep_within_daily: Some("2d".parse().unwrap()),
            ..Default::default()
        };
        let list = vec![
            snap(1, "2020-12-30T10:00:00Z"),
            snap(2, "2021-01-01T10:00:00Z"),
            snap(3, "2021-01-01T12:00:00Z"),
            snap(4, "2021-01-02T09:00:00Z"),
        ];
        let plan = apply_policy(&list, &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![3, 4]);
        assert_eq!(reasons(&plan, 3), vec!["daily within 2d"]);
        assert_eq!(
            plan.decision(&Id([3; 32])).unwrap().reasons[0].restic_text(),
            "daily within 2d"
        );
    }

    #[test]
    fn keep_tags_and_several_reasons() {
        let mut list = sample();
        list[0].1.tags = vec!["monthly".into(), "db".into()];
        list[1].1.tags = vec!["db".into()];
        let p = KeepPolicy {
            keep_last: 1,
            keep_daily: 1,
            keep_tags: vec![vec!["db".into(), "monthly".into()]],
            ..Default::default()
        };
        let plan = apply_policy(&list, &opts(p), t(NOW));
        assert_eq!(kept(&plan), vec![1, 7]);
        assert_eq!(reasons(&plan, 1), vec!["tags db,monthly"]);
        assert_eq!(reasons(&plan, 7), vec!["last 1", "daily 1"]);
        assert_eq!(
            plan.decision(&Id([1; 32])).unwrap().reasons[0].restic_text(),
            "has tags [db, monthly]"
        );
    }

    #[test]
    fn groups_are_separate() {
        let mut list = sample();
        for (i, (_, sn)) in list.iter_mut().enumerate() {
            if i % 2 == 0 {
                sn.hostname = "other".into();
            }
        }
        let p = KeepPolicy {
            keep_last: 1,
            ..Default::default()
        };
        let plan = apply_policy(&list, &opts(p.clone()), t(NOW));
        assert_eq!(plan.groups.len(), 2);
        assert_eq!(kept(&plan), vec![6, 7]);
        let mut o = opts(p);
        o.group_by = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        let plan = apply_policy(&list, &o, t(NOW));
        assert_eq!(plan.groups.len(), 1);
        assert_eq!(kept(&plan), vec![7]);
        assert_eq!(plan.groups[0].key.to_string(), "all snapshots");
    }

    #[test]
    fn durations_parse_print_and_subtract_like_go() {
        let d: RetentionDuration = "1y5m7d2h".parse().unwrap();
        assert_eq!(
            d,
            RetentionDuration {
                years: 1,
                months: 5,
                days: 7,
                hours: 2
            }
        );
        assert_eq!(d.to_string(), "1y5m7d2h");
        assert_eq!("3d".parse::<RetentionDuration>().unwrap().to_string(), "3d");
        for bad in ["", "5", "d", "5x", "-1d", "1d 2h"] {
            let e = bad.parse::<RetentionDuration>().unwrap_err().to_string();
            assert!(e.contains("e.g. 1y6m"), "{bad:?}: {e}");
        }
        let utc = PolicyTimeZone::Utc;
        // Go: 2021-03-31 minus one month is 2021-02-31, i.e. 3 March.
        let m: RetentionDuration = "1m".parse().unwrap();
        assert_eq!(
            m.before(t("2021-03-31T10:00:00Z"), utc),
            t("2021-03-03T10:00:00Z")
        );
        let y: RetentionDuration = "1y".parse().unwrap();
        assert_eq!(
            y.before(t("2020-02-29T00:00:00Z"), utc),
            t("2019-03-01T00:00:00Z")
        );
        let dh: RetentionDuration = "1d3h".parse().unwrap();
        assert_eq!(
            dh.before(t("2021-01-01T02:00:00Z"), utc),
            t("2020-12-30T23:00:00Z")
        );
        // Day steps are local: at +02:00 one day before 00:30 local is 00:30 local.
        let plus2 = PolicyTimeZone::Fixed(FixedOffset::east_opt(7200).unwrap());
        let one_day: RetentionDuration = "1d".parse().unwrap();
        assert_eq!(
            one_day.before(t("2021-01-01T22:30:00Z"), plus2),
            t("2020-12-31T22:30:00Z")
        );
    }

    #[test]
    fn policy_descriptions() {
        assert_eq!(
            KeepPolicy::default().to_string(),
            "empty policy (keep everything)"
        );
        let p = KeepPolicy {
            keep_daily: 7,
            keep_weekly: 4,
            keep_within: Some("2d".parse().unwrap()),
            keep_within_hourly: Some("1d".parse().unwrap()),
            keep_tags: vec![vec!["a".into(), "b".into()]],
            ..Default::default()
        };
        assert_eq!(
            p.to_string(),
            "keep 7 daily, 4 weekly, within 2d, hourly within 1d, tags a,b"
        );
    }
}
