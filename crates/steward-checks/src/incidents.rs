//! Incidents of the public status page, opened and closed by the checks' alerts.
//!
//! A component's incident opens when one of its checks goes down (the moment its
//! `CheckDown` alert fires) and closes, with its end time, when none of the checks that went
//! down during it is still down (their alerts resolved). A check that is up after a restart
//! closes its part at its first good run.
//!
//! Storage (`records`, no table of their own):
//!
//! - kind [`OPEN`], id = the component: the open incident. The key makes "one open incident
//!   per component" a property of the store, so a restart can neither duplicate nor lose it.
//! - kind [`CLOSED`], id = [`closed_id`] (newest end first in id order, so the page reads the
//!   first page of ids), `due_at` = the end (pruned after the roll-up retention).
//!
//! [`Book`] is the in-memory side (no IO, time is an argument): the state machine moves it
//! under the monitor's lock, and its [`Op`]s are written with the next batch of results, in
//! order (flushes are serialized), so the store always follows the transitions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_store::{RecordRow, StoreError, Tx};

/// `records` kind of open incidents (id: the component).
pub const OPEN: &str = "incident.open";
/// `records` kind of closed incidents (id: [`closed_id`]).
pub const CLOSED: &str = "incident";
/// Closed incidents kept in memory (and shown at most) for the page.
pub const PAST_KEEP: usize = 50;

/// One incident as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The status-page component (public).
    pub component: String,
    pub started_at: DateTime<Utc>,
    /// None while open.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// The checks of the component that went down during it and are not up again (internal:
    /// never shown on the public page).
    #[serde(default)]
    pub checks: BTreeSet<String>,
}

/// What the public page may show of an incident: the component and the times, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicIncident {
    pub component: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Incident {
    pub fn public(&self) -> PublicIncident {
        PublicIncident {
            component: self.component.clone(),
            started_at: self.started_at,
            ended_at: self.ended_at,
        }
    }

    /// Whether it overlaps `[from, to)` (an open one runs until `now`).
    pub fn overlaps(&self, from: DateTime<Utc>, to: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.started_at < to && self.ended_at.unwrap_or(now) >= from
    }
}

/// The id of a closed incident: the end in microseconds counted down from `i64::MAX`
/// (zero-padded, so ids sort newest end first), then the component (two components closing
/// in the same microsecond stay apart; the same close written twice is the same row).
pub fn closed_id(ended_at: DateTime<Utc>, component: &str) -> String {
    let rev = i64::MAX.saturating_sub(ended_at.timestamp_micros().max(0));
    format!("{rev:019}-{component}")
}

/// A change to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store the open incident (new, or its checks changed).
    Open(Incident),
    /// Remove the open incident and store it closed.
    Close(Incident),
}

impl Op {
    /// Applies the change in `tx` (idempotent: writing it twice leaves the same rows).
    pub fn apply(&self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        let doc = |i: &Incident| serde_json::to_string(i).unwrap_or_default();
        match self {
            Op::Open(i) => tx.record_put(&RecordRow {
                kind: OPEN.into(),
                id: i.component.clone(),
                doc: doc(i),
                due_at: None,
            }),
            Op::Close(i) => {
                let end = i.ended_at.unwrap_or(i.started_at);
                tx.record_delete(OPEN, &i.component)?;
                tx.record_put(&RecordRow {
                    kind: CLOSED.into(),
                    id: closed_id(end, &i.component),
                    doc: doc(i),
                    due_at: Some(end),
                })
            }
        }
    }
}

/// The incidents in memory: open ones by component, the latest closed ones, and the
/// changes not written yet.
#[derive(Debug, Default)]
pub struct Book {
    open: BTreeMap<String, Incident>,
    /// Newest end first, at most [`PAST_KEEP`].
    past: VecDeque<Incident>,
    ops: Vec<Op>,
}

impl Book {
    /// A book restored from the store: `open` as stored, `past` newest end first.
    pub fn restore(open: Vec<Incident>, past: Vec<Incident>) -> Self {
        let mut b = Book {
            open: open
                .into_iter()
                .map(|mut i| {
                    i.ended_at = None;
                    (i.component.clone(), i)
                })
                .collect(),
            past: past.into_iter().filter(|i| i.ended_at.is_some()).collect(),
            ops: Vec::new(),
        };
        b.past.truncate(PAST_KEEP);
        b
    }

    /// Check `check` of `component` went down at `at`: opens the component's incident, or
    /// adds the check to the one open (a restart while it was open reopens nothing).
    pub fn down(&mut self, component: &str, check: &str, at: DateTime<Utc>) {
        match self.open.get_mut(component) {
            Some(i) => {
                if i.checks.insert(check.to_string()) {
                    self.ops.push(Op::Open(i.clone()));
                }
            }
            None => {
                let i = Incident {
                    component: component.to_string(),
                    started_at: at,
                    ended_at: None,
                    checks: BTreeSet::from([check.to_string()]),
                };
                self.ops.push(Op::Open(i.clone()));
                self.open.insert(component.to_string(), i);
            }
        }
    }

    /// Check `check` of `component` is up at `at` (recovered, or first good run after a
    /// restart): leaves the open incident; the incident closes at `at` when no check is left.
    pub fn up(&mut self, component: &str, check: &str, at: DateTime<Utc>) {
        let Some(i) = self.open.get_mut(component) else {
            return;
        };
        if !i.checks.remove(check) {
            return;
        }
        if i.checks.is_empty() {
            self.close(component, at);
        } else {
            self.ops.push(Op::Open(i.clone()));
        }
    }

    /// Keeps in each open incident only the checks `keep(component, check)` accepts (checks
    /// removed from the config or moved to another component); closes those left empty at
    /// `now`.
    pub fn reconcile(&mut self, now: DateTime<Utc>, keep: impl Fn(&str, &str) -> bool) {
        let comps: Vec<String> = self.open.keys().cloned().collect();
        for comp in comps {
            let Some(i) = self.open.get_mut(&comp) else {
                continue;
            };
            let before = i.checks.len();
            i.checks.retain(|c| keep(&comp, c));
            if i.checks.is_empty() {
                self.close(&comp, now);
            } else if i.checks.len() != before {
                self.ops.push(Op::Open(i.clone()));
            }
        }
    }

    fn close(&mut self, component: &str, at: DateTime<Utc>) {
        let Some(mut i) = self.open.remove(component) else {
            return;
        };
        i.ended_at = Some(at.max(i.started_at));
        self.ops.push(Op::Close(i.clone()));
        self.past.push_front(i);
        self.past.truncate(PAST_KEEP);
    }

    /// The open incident of `component`.
    pub fn open_of(&self, component: &str) -> Option<&Incident> {
        self.open.get(component)
    }

    /// Open incidents, oldest first.
    pub fn open(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.open.values().collect();
        v.sort_by_key(|i| i.started_at);
        v
    }

    /// Closed incidents that ended at or after `since`, newest end first.
    pub fn past(&self, since: DateTime<Utc>) -> impl Iterator<Item = &Incident> {
        self.past
            .iter()
            .filter(move |i| i.ended_at.is_some_and(|e| e >= since))
    }

    /// Forgets closed incidents that ended before `before` (the store prunes its own).
    pub fn prune(&mut self, before: DateTime<Utc>) {
        self.past
            .retain(|i| i.ended_at.is_some_and(|e| e >= before));
    }

    /// The changes not written yet, in order.
    pub fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }

    /// Puts back changes whose write failed, before any made since.
    pub fn put_back(&mut self, mut ops: Vec<Op>) {
        ops.append(&mut self.ops);
        self.ops = ops;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn one_incident_per_component_until_every_check_is_up() {
        let mut b = Book::default();
        b.down("API", "api-eu", t(0));
        b.down("API", "api-us", t(10));
        assert_eq!(b.open().len(), 1);
        assert_eq!(b.open_of("API").unwrap().started_at, t(0));
        b.up("API", "api-eu", t(20));
        assert!(b.open_of("API").is_some(), "api-us is still down");
        b.up("API", "api-other", t(25));
        b.up("API", "api-us", t(30));
        assert!(b.open_of("API").is_none());
        let past: Vec<_> = b.past(t(0)).collect();
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].ended_at, Some(t(30)));
        let ops = b.take_ops();
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(matches!(ops.last(), Some(Op::Close(_))));
        assert!(b.take_ops().is_empty());
    }

    #[test]
    fn a_restored_open_incident_is_not_opened_again() {
        let open = Incident {
            component: "API".into(),
            started_at: t(0),
            ended_at: None,
            checks: BTreeSet::from(["api".to_string()]),
        };
        let mut b = Book::restore(vec![open], vec![]);
        b.down("API", "api", t(100));
        assert!(b.take_ops().is_empty(), "nothing changed");
        assert_eq!(b.open_of("API").unwrap().started_at, t(0));
        b.up("API", "api", t(200));
        assert_eq!(b.past(t(0)).next().unwrap().ended_at, Some(t(200)));
    }

    #[test]
    fn reconcile_drops_checks_no_longer_in_the_component() {
        let mut b = Book::default();
        b.down("API", "gone", t(0));
        b.down("DB", "db", t(0));
        b.take_ops();
        b.reconcile(t(50), |comp, check| comp == "DB" && check == "db");
        assert!(b.open_of("API").is_none());
        assert!(b.open_of("DB").is_some());
        assert_eq!(b.past(t(0)).next().unwrap().ended_at, Some(t(50)));
    }

    #[test]
    fn closed_ids_sort_newest_end_first_and_past_is_bounded() {
        let a = closed_id(t(10), "B");
        let b = closed_id(t(20), "A");
        assert!(b < a, "{b} sorts before {a}");
        assert_eq!(a.len(), 19 + 2);
        let mut book = Book::default();
        for k in 0..(PAST_KEEP as i64 + 10) {
            book.down("API", "api", t(k * 100));
            book.up("API", "api", t(k * 100 + 50));
        }
        assert_eq!(book.past(t(0)).count(), PAST_KEEP);
        assert_eq!(
            book.past(t(0)).next().unwrap().ended_at,
            Some(t((PAST_KEEP as i64 + 9) * 100 + 50))
        );
        book.prune(t(5_900));
        assert!(book.past(t(0)).all(|i| i.ended_at.unwrap() >= t(5_900)));
    }
}
