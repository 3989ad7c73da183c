//! When a rotation is next due: an interval (`every = "30d"`) or a cron expression, moved into
//! an optional daily window (UTC), or an explicit next time, or never (manual only).

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// A rotation schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// An interval: `30d`, `60d`, `90d` (the presets) or any duration such as `12h`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// A cron expression (5 fields, UTC), e.g. `0 3 * * 1` for Mondays at 03:00.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A daily window `HH:MM-HH:MM` (UTC) the rotation must start in; may span midnight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// An explicit next rotation time; used once, then the interval or cron takes over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// Never rotate on a schedule, only on `steward rotate now`.
    pub manual: bool,
}

/// Shortest interval accepted: rotating more often than this is a mistake, not a policy.
const MIN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Schedule {
    /// Checks the schedule; the message names the field and how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        if self.every.is_some() && self.cron.is_some() {
            return Err("schedule: set either `every` or `cron`, not both".into());
        }
        if self.manual && (self.every.is_some() || self.cron.is_some() || self.next_at.is_some()) {
            return Err(
                "schedule: `manual = true` rotates only on demand; remove every, cron and next_at"
                    .into(),
            );
        }
        self.every_duration()?;
        self.cron_expr()?;
        self.window_bounds()?;
        Ok(())
    }

    fn every_duration(&self) -> Result<Option<Duration>, String> {
        let Some(every) = &self.every else {
            return Ok(None);
        };
        let d = humantime::parse_duration(every).map_err(|e| {
            format!("schedule.every: {every:?} is not a duration ({e}); use e.g. \"30d\", \"90d\" or \"12h\"")
        })?;
        if d < MIN_EVERY {
            return Err(format!(
                "schedule.every: {every:?} is shorter than one minute; rotate less often"
            ));
        }
        Duration::from_std(d)
            .map(Some)
            .map_err(|_| format!("schedule.every: {every:?} is too long"))
    }

    fn cron_expr(&self) -> Result<Option<croner::Cron>, String> {
        let Some(expr) = &self.cron else {
            return Ok(None);
        };
        croner::Cron::new(expr)
            .parse()
            .map(Some)
            .map_err(|e| format!("schedule.cron: {expr:?} is not a cron expression ({e}); use 5 fields, e.g. \"0 3 * * 1\""))
    }

    fn window_bounds(&self) -> Result<Option<(NaiveTime, NaiveTime)>, String> {
        let Some(w) = &self.window else {
            return Ok(None);
        };
        let bad = || {
            format!("schedule.window: {w:?} is not a window; use \"HH:MM-HH:MM\" in UTC, e.g. \"02:00-04:00\"")
        };
        let (a, b) = w.split_once('-').ok_or_else(bad)?;
        let hhmm = |t: &str| {
            let t = t.trim();
            let shaped = t.len() == 5 && t.as_bytes()[2] == b':';
            shaped
                .then(|| NaiveTime::from_str(&format!("{t}:00")).ok())
                .flatten()
                .ok_or_else(bad)
        };
        let (a, b) = (hhmm(a)?, hhmm(b)?);
        if a == b {
            return Err(format!("schedule.window: {w:?} is empty"));
        }
        Ok(Some((a, b)))
    }

    /// The next due time after a rotation (or the configuration) at `last`; `None` when the
    /// schedule is manual or sets nothing.
    pub fn next_due(&self, last: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.manual {
            return None;
        }
        if let Some(at) = self.next_at.filter(|at| *at > last) {
            // An explicit time is exact: it is how two related credentials are kept apart.
            return Some(at);
        }
        let base = if let Ok(Some(every)) = self.every_duration() {
            last + every
        } else if let Ok(Some(cron)) = self.cron_expr() {
            cron.find_next_occurrence(&last, false).ok()?
        } else {
            return None;
        };
        Some(self.into_window(base))
    }

    /// `t`, or the start of the next window when `t` falls outside it.
    pub fn into_window(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let Ok(Some((start, end))) = self.window_bounds() else {
            return t;
        };
        let tod = t.time();
        let inside = if start < end {
            tod >= start && tod < end
        } else {
            tod >= start || tod < end
        };
        if inside {
            return t;
        }
        let today = t.date_naive().and_time(start).and_utc();
        if today > t {
            today
        } else {
            today + Duration::days(1)
        }
    }

    /// Whether `t` is inside the window (always, without one).
    pub fn in_window(&self, t: DateTime<Utc>) -> bool {
        self.into_window(t) == t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_adds_the_interval() {
        let s = Schedule {
            every: Some("30d".into()),
            ..Default::default()
        };
        s.validate().unwrap();
        assert_eq!(
            s.next_due(at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-31T10:00:00Z"))
        );
    }

    #[test]
    fn window_moves_the_due_time_to_its_next_start() {
        let s = Schedule {
            every: Some("1d".into()),
            window: Some("02:00-04:00".into()),
            ..Default::default()
        };
        s.validate().unwrap();
        assert_eq!(
            s.next_due(at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-03T02:00:00Z"))
        );
        assert_eq!(
            s.next_due(at("2026-01-01T03:00:00Z")),
            Some(at("2026-01-02T03:00:00Z"))
        );
        // A window over midnight.
        let s = Schedule {
            window: Some("22:00-01:00".into()),
            ..s
        };
        assert!(s.in_window(at("2026-01-01T23:30:00Z")));
        assert!(s.in_window(at("2026-01-01T00:30:00Z")));
        assert_eq!(
            s.into_window(at("2026-01-01T12:00:00Z")),
            at("2026-01-01T22:00:00Z")
        );
    }

    #[test]
    fn cron_finds_the_next_occurrence() {
        let s = Schedule {
            cron: Some("0 3 * * 1".into()),
            ..Default::default()
        };
        s.validate().unwrap();
        // 2026-01-01 is a Thursday; the next Monday is the 5th.
        assert_eq!(
            s.next_due(at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-05T03:00:00Z"))
        );
    }

    #[test]
    fn explicit_next_time_is_used_once_and_manual_is_never_due() {
        let s = Schedule {
            every: Some("30d".into()),
            next_at: Some(at("2026-01-02T09:30:00Z")),
            ..Default::default()
        };
        assert_eq!(
            s.next_due(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-02T09:30:00Z"))
        );
        assert_eq!(
            s.next_due(at("2026-01-02T09:30:00Z")),
            Some(at("2026-02-01T09:30:00Z"))
        );
        let m = Schedule {
            manual: true,
            ..Default::default()
        };
        m.validate().unwrap();
        assert_eq!(m.next_due(at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn bad_schedules_say_what_to_fix() {
        let cases = [
            (
                Schedule {
                    every: Some("monthly".into()),
                    ..Default::default()
                },
                "every",
            ),
            (
                Schedule {
                    every: Some("10s".into()),
                    ..Default::default()
                },
                "one minute",
            ),
            (
                Schedule {
                    cron: Some("not cron".into()),
                    ..Default::default()
                },
                "cron",
            ),
            (
                Schedule {
                    every: Some("1d".into()),
                    window: Some("2-4".into()),
                    ..Default::default()
                },
                "HH:MM",
            ),
            (
                Schedule {
                    manual: true,
                    every: Some("1d".into()),
                    ..Default::default()
                },
                "manual",
            ),
        ];
        for (s, want) in cases {
            let e = s.validate().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
