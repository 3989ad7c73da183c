//! The DR report: per source, the last backup, the last passed drill, the measured recovery
//! time (RTO: how long the last passed drill's restore took) and recovery point (RPO: the
//! age of the newest backup a drill proved, or of the newest backup for sources without
//! drills), each against its target; per repository, the last check. Pure: built from the
//! run history and the time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    config::Compiled,
    service::{Op, Run},
};

/// A run in brief.
#[derive(Debug, Clone, Serialize)]
pub struct Brief {
    pub at: DateTime<Utc>,
    pub ok: Option<bool>,
    pub snapshot: Option<String>,
    pub snapshot_time: Option<DateTime<Utc>>,
    pub bytes: Option<u64>,
    pub duration_s: Option<f64>,
    pub restore_s: Option<f64>,
    pub error: Option<String>,
}

impl From<&Run> for Brief {
    fn from(r: &Run) -> Self {
        Brief {
            at: r.started_at,
            ok: r.ok,
            snapshot: r.snapshot.clone(),
            snapshot_time: r.snapshot_time,
            bytes: r.bytes,
            duration_s: r.duration_s,
            restore_s: r.restore_s,
            error: r.error.clone(),
        }
    }
}

/// One source in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub repository: String,
    pub schedule: Option<String>,
    pub last_backup: Option<Brief>,
    pub last_successful_backup: Option<Brief>,
    pub last_drill: Option<Brief>,
    pub last_passed_drill: Option<Brief>,
    /// Seconds: the age of the newest backup a drill proved (or of the newest backup when
    /// the source has no drill), from when that backup began. None when there is none.
    pub rpo_s: Option<f64>,
    /// `drill` (proven by a restore) or `backup` (not proven: the source has no drill).
    pub rpo_basis: &'static str,
    pub rpo_target_s: Option<f64>,
    /// None: no target, or too early to judge.
    pub rpo_met: Option<bool>,
    /// Seconds the last passed drill's restore took.
    pub rto_s: Option<f64>,
    pub rto_target_s: Option<f64>,
    pub rto_met: Option<bool>,
    /// `ok`, `at_risk` (a target missed or the last run failed) or `unproven` (nothing to
    /// judge yet).
    pub status: &'static str,
    /// What needs attention, in words.
    pub notes: Vec<String>,
}

/// One repository in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RepoReport {
    pub name: String,
    pub location: String,
    pub last_check: Option<Brief>,
    pub last_prune: Option<Brief>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct DrReport {
    pub generated_at: DateTime<Utc>,
    pub sources: Vec<SourceReport>,
    pub repositories: Vec<RepoReport>,
}

fn age_s(now: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    ((now - t).num_milliseconds().max(0) as f64 / 1000.0).round()
}

/// Builds the report from the run history (per target and op, oldest first).
pub fn build(
    compiled: &Compiled,
    runs: &HashMap<(String, Op), Vec<Run>>,
    first_seen: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DrReport {
    let list = |t: &str, op: Op| -> &[Run] {
        runs.get(&(t.to_string(), op))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    };
    let finished_last = |l: &[Run]| l.iter().rev().find(|r| r.ok.is_some()).map(Brief::from);
    let passed_last = |l: &[Run]| l.iter().rev().find(|r| r.passed()).map(Brief::from);
    let mut sources = Vec::new();
    for s in &compiled.sources {
        let backups = list(&s.name, Op::Backup);
        let drills = list(&s.name, Op::Drill);
        let last_backup = finished_last(backups);
        let last_ok = passed_last(backups);
        let last_drill = finished_last(drills);
        let last_passed_drill = passed_last(drills);
        let mut notes = Vec::new();
        let (rpo_from, rpo_basis) = if s.drill.is_some() {
            (
                last_passed_drill
                    .as_ref()
                    .and_then(|d| d.snapshot_time.or(Some(d.at))),
                "drill",
            )
        } else {
            (last_ok.as_ref().map(|b| b.at), "backup")
        };
        let rpo_s = rpo_from.map(|t| age_s(now, t));
        let seen = first_seen.get(&s.name).copied().unwrap_or(now);
        let rpo_met = s.rpo_target.and_then(|target| match rpo_s {
            Some(r) => Some(r <= target.as_secs_f64()),
            // Nothing proven yet: judged once the source has existed longer than the target.
            None => (age_s(now, seen) > target.as_secs_f64()).then_some(false),
        });
        let rto_s = last_passed_drill.as_ref().and_then(|d| d.restore_s);
        let rto_met = s
            .rto_target
            .and_then(|t| rto_s.map(|r| r <= t.as_secs_f64()));
        let backup_failed = last_backup.as_ref().is_some_and(|b| b.ok == Some(false));
        let drill_failed = last_drill.as_ref().is_some_and(|d| d.ok == Some(false));
        if backup_failed {
            notes.push("the last backup failed".into());
        }
        if drill_failed {
            notes.push("the last drill failed".into());
        }
        if rpo_met == Some(false) {
            notes.push(match rpo_s {
                Some(r) => format!(
                    "recovery point {} is older than the target {}",
                    human(r),
                    human(s.rpo_target.map_or(0.0, |t| t.as_secs_f64()))
                ),
                None if s.drill.is_some() => {
                    "no drill has passed yet: no backup is proven to restore".into()
                }
                None => "no successful backup yet".into(),
            });
        }
        if rto_met == Some(false) {
            notes.push(format!(
                "the last restore took {}, over the target {}",
                human(rto_s.unwrap_or(0.0)),
                human(s.rto_target.map_or(0.0, |t| t.as_secs_f64()))
            ));
        }
        if s.drill.is_none() && s.what.database_server().is_some() {
            notes.push("no drill configured: the backups are not proven to restore".into());
        }
        if s.rto_target.is_some() && rto_s.is_none() && s.drill.is_some() {
            notes.push("no passed drill has measured the restore time yet".into());
        }
        let status =
            if backup_failed || drill_failed || rpo_met == Some(false) || rto_met == Some(false) {
                "at_risk"
            } else if last_ok.is_none() || (s.drill.is_some() && last_passed_drill.is_none()) {
                "unproven"
            } else {
                "ok"
            };
        sources.push(SourceReport {
            name: s.name.clone(),
            kind: s.type_name.clone(),
            repository: compiled.repositories[s.repository].name.clone(),
            schedule: s.schedule_text.clone(),
            last_backup,
            last_successful_backup: last_ok,
            last_drill,
            last_passed_drill,
            rpo_s,
            rpo_basis,
            rpo_target_s: s.rpo_target.map(|t| t.as_secs_f64()),
            rpo_met,
            rto_s,
            rto_target_s: s.rto_target.map(|t| t.as_secs_f64()),
            rto_met,
            status,
            notes,
        });
    }
    let repositories = compiled
        .repositories
        .iter()
        .map(|r| RepoReport {
            name: r.name.clone(),
            location: r.location.clone(),
            last_check: finished_last(list(&r.name, Op::Check)),
            last_prune: finished_last(list(&r.name, Op::Prune)),
        })
        .collect();
    DrReport {
        generated_at: now,
        sources,
        repositories,
    }
}

/// `90 s`, `12 min`, `26.0 h`, `3.5 d`.
pub fn human(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 3.0 * 86_400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} d", secs / 86_400.0)
    }
}
