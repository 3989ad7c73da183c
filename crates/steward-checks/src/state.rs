//! A check's up/down state. A new check is `unknown` until its first run. It goes `down`
//! after `fail_after` failed runs in a row and back `up` after `recover_after` good runs in
//! a row; from `unknown`, one good run is enough to be `up` (there is nothing to recover
//! from) and `fail_after` failures make it `down`.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// One check's state.
#[derive(Debug, Clone, Serialize)]
pub struct CheckState {
    pub health: Health,
    /// When `health` last changed.
    pub since: Option<DateTime<Utc>>,
    /// Failed runs in a row.
    pub fails: u32,
    /// Good runs in a row.
    pub oks: u32,
}

impl Default for CheckState {
    fn default() -> Self {
        Self {
            health: Health::Unknown,
            since: None,
            fails: 0,
            oks: 0,
        }
    }
}

impl CheckState {
    /// Records one run; returns the new health when it changed.
    pub fn record(
        &mut self,
        ok: bool,
        at: DateTime<Utc>,
        fail_after: u32,
        recover_after: u32,
    ) -> Option<Health> {
        if ok {
            self.oks = self.oks.saturating_add(1);
            self.fails = 0;
        } else {
            self.fails = self.fails.saturating_add(1);
            self.oks = 0;
        }
        let next = match self.health {
            Health::Unknown if ok => Health::Up,
            Health::Down if ok && self.oks >= recover_after.max(1) => Health::Up,
            Health::Unknown | Health::Up if !ok && self.fails >= fail_after.max(1) => Health::Down,
            h => h,
        };
        (next != self.health).then(|| {
            self.health = next;
            self.since = Some(at);
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn fail_after_and_recover_after() {
        let mut s = CheckState::default();
        assert_eq!(s.record(true, t(0), 3, 2), Some(Health::Up));
        assert_eq!(s.record(false, t(1), 3, 2), None);
        assert_eq!(s.record(false, t(2), 3, 2), None);
        assert_eq!(
            s.record(true, t(3), 3, 2),
            None,
            "a good run resets the failures"
        );
        assert_eq!(s.record(false, t(4), 3, 2), None);
        assert_eq!(s.record(false, t(5), 3, 2), None);
        assert_eq!(s.record(false, t(6), 3, 2), Some(Health::Down));
        assert_eq!(s.since, Some(t(6)));
        assert_eq!(s.record(false, t(7), 3, 2), None);
        assert_eq!(s.record(true, t(8), 3, 2), None);
        assert_eq!(
            s.record(false, t(9), 3, 2),
            None,
            "a failure resets the recovery"
        );
        assert_eq!(s.record(true, t(10), 3, 2), None);
        assert_eq!(s.record(true, t(11), 3, 2), Some(Health::Up));
    }

    #[test]
    fn unknown_goes_down_after_fail_after() {
        let mut s = CheckState::default();
        assert_eq!(s.record(false, t(0), 2, 1), None);
        assert_eq!(s.health, Health::Unknown);
        assert_eq!(s.record(false, t(1), 2, 1), Some(Health::Down));
        let mut s = CheckState::default();
        assert_eq!(
            s.record(false, t(0), 0, 0),
            Some(Health::Down),
            "0 counts as 1"
        );
    }
}
