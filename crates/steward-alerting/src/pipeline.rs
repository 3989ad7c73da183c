//! The in-memory pipeline: alerts, aggregation groups, mutes, and the flush rules. No IO and
//! no clock of its own: the service feeds it alerts and `now`, persists what [`Flush`] says
//! changed, and sends what it produced. Tests drive it with any times they like.
//!
//! Flush rules (Alertmanager's meanings): a new group waits `group_wait`, later flushes come
//! every `group_interval`; a flush notifies when a firing alert is new to the receiver, when
//! an alert it was told about resolved, or when `repeat_interval` passed since the last
//! notification. Mutes (silences, inhibition, maintenance) hold back only *new* firing
//! notifications and reminders: the resolve of an alert whose firing went out is always sent.
//! An acknowledged group gets no reminders and no escalation, but still its resolve.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    config::Compiled,
    model::{fingerprint, zero_time, AlertState, AlertView, Labels, Notification, NotifyKind},
    mutes::{CompiledWindow, InhibitIndex, Silence},
    route::Route,
};

/// The label naming a failing channel on Steward's own `StewardChannelFailing` alert.
pub const CHANNEL_FAILING: &str = "StewardChannelFailing";

/// One alert as stored (`records` kind `alert`, id = fingerprint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDoc {
    /// Shared (not copied) by every notification that shows the alert.
    pub labels: Arc<Labels>,
    pub annotations: Arc<Labels>,
    pub starts_at: DateTime<Utc>,
    /// None: fires until resolved explicitly.
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub generator_url: String,
    pub updated_at: DateTime<Utc>,
    /// Pending until then (a rule's `for`).
    #[serde(default)]
    pub fire_at: Option<DateTime<Utc>>,
    /// `api` (posted), `rule` (from an event) or `steward` (Steward's own).
    pub source: String,
}

impl AlertDoc {
    pub fn state(&self, now: DateTime<Utc>) -> AlertState {
        if self.ends_at.is_some_and(|e| e <= now) {
            AlertState::Resolved
        } else if self.fire_at.is_some_and(|f| f > now) {
            AlertState::Pending
        } else {
            AlertState::Firing
        }
    }

    fn view(&self, fp: &str, now: DateTime<Utc>) -> AlertView {
        let resolved = self.state(now) == AlertState::Resolved;
        AlertView {
            status: if resolved { "resolved" } else { "firing" }.into(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            starts_at: self.starts_at,
            ends_at: if resolved {
                self.ends_at.unwrap_or(now)
            } else {
                zero_time()
            },
            generator_url: self.generator_url.clone(),
            fingerprint: fp.to_string(),
        }
    }
}

/// Who acknowledged a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub comment: String,
}

/// A group's notification state (`records` kind `group`). Membership is not stored: it is
/// rebuilt from the alerts by routing them again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub id: String,
    pub route_id: String,
    pub receiver: String,
    pub group_key: String,
    pub labels: Labels,
    pub created_at: DateTime<Utc>,
    pub next_flush: DateTime<Utc>,
    #[serde(default)]
    pub last_notified: Option<DateTime<Utc>>,
    /// Alerts whose firing was notified and whose resolve was not yet.
    #[serde(default)]
    pub sent_firing: BTreeSet<String>,
    /// Highest escalation step notified (0: the receiver's `channels`).
    #[serde(default)]
    pub level: usize,
    #[serde(default)]
    pub first_fired_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub acked: Option<Ack>,
    /// Whether the first flush (after group_wait) happened.
    #[serde(default)]
    pub flushed: bool,
}

impl GroupState {
    /// Stable for the group's life on its receiver: PagerDuty's dedup_key.
    pub fn dedup_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.receiver.as_bytes());
        h.update([0]);
        h.update(self.group_key.as_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

#[derive(Debug, Clone)]
struct Group {
    state: GroupState,
    members: BTreeSet<String>,
}

/// Why an alert is muted right now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MuteStatus {
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
    pub maintenance: Vec<String>,
}

impl MuteStatus {
    pub fn is_muted(&self) -> bool {
        !(self.silenced_by.is_empty()
            && self.inhibited_by.is_empty()
            && self.maintenance.is_empty())
    }
}

/// What one evaluation produced: notifications to put in the outbox, and group state to store
/// with them (in the same transaction), plus what to undo if that transaction fails.
#[derive(Debug, Default)]
pub struct Flush {
    pub notifications: Vec<Notification>,
    pub groups_put: Vec<GroupState>,
    pub groups_deleted: Vec<String>,
    /// Resolved alerts nothing refers to any more: delete from the store.
    pub alerts_deleted: Vec<String>,
    undo: Vec<(String, Option<GroupState>)>,
    undo_alerts: Vec<(String, AlertDoc)>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.notifications.is_empty()
            && self.groups_put.is_empty()
            && self.groups_deleted.is_empty()
            && self.alerts_deleted.is_empty()
    }
}

/// One alert with its routing and mute status, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct AlertInfo {
    pub fingerprint: String,
    pub state: AlertState,
    #[serde(flatten)]
    pub doc: AlertDoc,
    pub receivers: Vec<String>,
    pub mute: MuteStatus,
    pub groups: Vec<String>,
    /// Acknowledgements of the alert's groups.
    pub acknowledged: Vec<Ack>,
}

/// The pipeline.
pub struct Pipeline {
    pub cfg: Compiled,
    alerts: HashMap<String, AlertDoc>,
    groups: HashMap<String, Group>,
    alert_groups: HashMap<String, Vec<String>>,
    silences: HashMap<String, (Silence, Vec<crate::matchers::Matcher>)>,
    windows: Vec<CompiledWindow>,
    seq: u64,
    timings: HashMap<String, (std::time::Duration, std::time::Duration)>,
    /// Whether any receiver has escalation steps.
    escalates: bool,
    last_gc: Option<DateTime<Utc>>,
}

impl Pipeline {
    pub fn new(cfg: Compiled) -> Self {
        let windows = cfg.windows.clone();
        let timings = cfg
            .route
            .walk()
            .into_iter()
            .map(|r| (r.id.clone(), (r.group_interval, r.repeat_interval)))
            .collect();
        let escalates = cfg.receivers.values().any(|r| r.steps.len() > 1);
        Self {
            last_gc: None,
            escalates,
            timings,
            cfg,
            alerts: HashMap::new(),
            groups: HashMap::new(),
            alert_groups: HashMap::new(),
            silences: HashMap::new(),
            windows,
            seq: 0,
        }
    }

    /// Restores stored state: group notification state first, then alerts (routed again).
    pub fn restore(
        &mut self,
        groups: Vec<GroupState>,
        alerts: Vec<(String, AlertDoc)>,
        now: DateTime<Utc>,
    ) {
        for g in groups {
            self.groups.insert(
                g.id.clone(),
                Group {
                    state: g,
                    members: BTreeSet::new(),
                },
            );
        }
        for (fp, doc) in alerts {
            self.alerts.insert(fp.clone(), doc);
            self.route_alert(&fp, now);
        }
    }

    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn get(&self, fp: &str) -> Option<&AlertDoc> {
        self.alerts.get(fp)
    }

    /// Adds or updates an alert; returns its fingerprint and whether its stored form changed
    /// enough to write (new, resolved or un-resolved, annotations, or `ends_at` moved by
    /// more than `slack`).
    pub fn upsert(
        &mut self,
        doc: AlertDoc,
        now: DateTime<Utc>,
        slack: ChronoDuration,
    ) -> (String, bool) {
        let fp = fingerprint(&doc.labels);
        let write = match self.alerts.get(&fp) {
            None => true,
            Some(old) => {
                old.state(now) != doc.state(now)
                    || old.annotations != doc.annotations
                    || old.fire_at != doc.fire_at
                    || match (old.ends_at, doc.ends_at) {
                        (Some(a), Some(b)) => (a - b).abs() > slack,
                        (a, b) => a != b,
                    }
            }
        };
        let mut doc = doc;
        if let Some(old) = self.alerts.get(&fp) {
            // A firing alert keeps its start; a resolved one that fires again starts anew.
            if old.state(now) != AlertState::Resolved && doc.starts_at > old.starts_at {
                doc.starts_at = old.starts_at;
            }
        }
        // New, or firing again after it resolved (its groups let go of it when they sent
        // the resolve): route it (again).
        let reroute = self.alerts.get(&fp).is_none_or(|old| {
            old.state(now) == AlertState::Resolved && doc.state(now) != AlertState::Resolved
        });
        self.alerts.insert(fp.clone(), doc);
        if reroute {
            self.route_alert(&fp, now);
        }
        (fp, write)
    }

    /// Resolves an alert now (internal sources); returns whether it was active.
    pub fn resolve(&mut self, fp: &str, now: DateTime<Utc>) -> bool {
        match self.alerts.get_mut(fp) {
            Some(a) if a.state(now) != AlertState::Resolved => {
                a.ends_at = Some(now);
                a.updated_at = now;
                true
            }
            _ => false,
        }
    }

    fn route_alert(&mut self, fp: &str, now: DateTime<Utc>) {
        let Some(doc) = self.alerts.get(fp) else {
            return;
        };
        let mut gids = Vec::new();
        for route in self.cfg.route.matching(&doc.labels) {
            let labels = route.group_labels(&doc.labels);
            let group_key = format!("{}:{}", route.id, render_labels(&labels));
            let id = hex::encode(&Sha256::digest(group_key.as_bytes())[..12]);
            let g = self.groups.entry(id.clone()).or_insert_with(|| Group {
                state: GroupState {
                    id: id.clone(),
                    route_id: route.id.clone(),
                    receiver: route.receiver.clone(),
                    group_key,
                    labels,
                    created_at: now,
                    next_flush: now + dur(route.group_wait),
                    last_notified: None,
                    sent_firing: BTreeSet::new(),
                    level: 0,
                    first_fired_at: None,
                    acked: None,
                    flushed: false,
                },
                members: BTreeSet::new(),
            });
            g.members.insert(fp.to_string());
            gids.push(id);
        }
        self.alert_groups.insert(fp.to_string(), gids);
    }

    /// A route's (group_interval, repeat_interval), looked up by id.
    fn timing_of(&self, id: &str) -> Option<(std::time::Duration, std::time::Duration)> {
        self.timings.get(id).copied()
    }

    // ---- silences and windows ------------------------------------------------------------

    pub fn set_silence(&mut self, s: Silence) -> Result<(), crate::matchers::MatcherError> {
        let m = s
            .matchers
            .iter()
            .map(|m| m.compile())
            .collect::<Result<Vec<_>, _>>()?;
        self.silences.insert(s.id.clone(), (s, m));
        Ok(())
    }

    pub fn silences(&self) -> Vec<Silence> {
        let mut v: Vec<Silence> = self.silences.values().map(|s| s.0.clone()).collect();
        v.sort_by(|a, b| a.starts_at.cmp(&b.starts_at).then(a.id.cmp(&b.id)));
        v
    }

    pub fn silence(&self, id: &str) -> Option<Silence> {
        self.silences.get(id).map(|s| s.0.clone())
    }

    pub fn set_window(&mut self, w: CompiledWindow) {
        self.windows.retain(|x| x.doc.id != w.doc.id);
        self.windows.push(w);
    }

    pub fn remove_window(&mut self, id: &str) -> bool {
        let n = self.windows.len();
        self.windows.retain(|x| x.doc.id != id);
        n != self.windows.len()
    }

    pub fn windows(&self) -> &[CompiledWindow] {
        &self.windows
    }

    fn firing_index(&self, now: DateTime<Utc>) -> InhibitIndex {
        if self.cfg.inhibit.is_empty() {
            return InhibitIndex::default();
        }
        let firing: Vec<(&String, &Labels)> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.state(now) == AlertState::Firing)
            .map(|(f, a)| (f, &*a.labels))
            .collect();
        InhibitIndex::build(&self.cfg.inhibit, firing.iter().copied())
    }

    fn mute_of(
        &self,
        idx: &InhibitIndex,
        fp: &str,
        labels: &Labels,
        now: DateTime<Utc>,
    ) -> MuteStatus {
        let mut m = MuteStatus::default();
        for (s, matchers) in self.silences.values() {
            if s.state(now) == "active" && crate::matchers::all_match(matchers, labels) {
                m.silenced_by.push(s.id.clone());
            }
        }
        m.silenced_by.sort();
        for w in &self.windows {
            if w.active_span(now).is_some() && w.matches(labels) {
                m.maintenance.push(w.doc.id.clone());
            }
        }
        m.inhibited_by = idx.inhibited_by(&self.cfg.inhibit, fp, labels);
        m
    }

    // ---- listings ------------------------------------------------------------------------

    /// Every alert, with receivers and mute status, sorted by start then fingerprint.
    pub fn list(&self, now: DateTime<Utc>) -> Vec<AlertInfo> {
        let idx = self.firing_index(now);
        let mut out: Vec<AlertInfo> = self
            .alerts
            .iter()
            .map(|(fp, doc)| self.info(&idx, fp, doc, now))
            .collect();
        out.sort_by(|a, b| {
            a.doc
                .starts_at
                .cmp(&b.doc.starts_at)
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        out
    }

    /// (firing, pending, suppressed) without copying any alert (for /metrics).
    pub fn counts(&self, now: DateTime<Utc>) -> (u64, u64, u64) {
        let idx = self.firing_index(now);
        let (mut firing, mut pending, mut suppressed) = (0, 0, 0);
        for (fp, a) in &self.alerts {
            match a.state(now) {
                AlertState::Firing if self.mute_of(&idx, fp, &a.labels, now).is_muted() => {
                    suppressed += 1
                }
                AlertState::Firing => firing += 1,
                AlertState::Pending => pending += 1,
                AlertState::Resolved => {}
            }
        }
        (firing, pending, suppressed)
    }

    pub fn info_of(&self, fp: &str, now: DateTime<Utc>) -> Option<AlertInfo> {
        let doc = self.alerts.get(fp)?;
        Some(self.info(&self.firing_index(now), fp, doc, now))
    }

    fn info(&self, idx: &InhibitIndex, fp: &str, doc: &AlertDoc, now: DateTime<Utc>) -> AlertInfo {
        let groups = self.alert_groups.get(fp).cloned().unwrap_or_default();
        let mut receivers: Vec<String> = groups
            .iter()
            .filter_map(|g| self.groups.get(g).map(|g| g.state.receiver.clone()))
            .collect();
        receivers.sort();
        receivers.dedup();
        let acknowledged = groups
            .iter()
            .filter_map(|g| self.groups.get(g).and_then(|g| g.state.acked.clone()))
            .collect();
        AlertInfo {
            acknowledged,
            fingerprint: fp.to_string(),
            state: doc.state(now),
            doc: doc.clone(),
            receivers,
            mute: self.mute_of(idx, fp, &doc.labels, now),
            groups,
        }
    }

    /// Groups with their state and member fingerprints.
    pub fn group_list(&self) -> Vec<(GroupState, Vec<String>)> {
        let mut v: Vec<_> = self
            .groups
            .values()
            .map(|g| (g.state.clone(), g.members.iter().cloned().collect()))
            .collect();
        v.sort_by(|a, b| a.0.group_key.cmp(&b.0.group_key));
        v
    }

    // ---- acknowledge ---------------------------------------------------------------------

    /// Acknowledges every group `target` (a fingerprint or a group id) belongs to; returns
    /// the Acknowledged notifications for the channels already notified, and the states to
    /// store. Empty when nothing matched.
    pub fn ack(&mut self, target: &str, ack: Ack, now: DateTime<Utc>) -> Flush {
        let gids: Vec<String> = match self.alert_groups.get(target) {
            Some(g) => g.clone(),
            None if self.groups.contains_key(target) => vec![target.to_string()],
            None => Vec::new(),
        };
        let mut flush = Flush::default();
        for gid in gids {
            let Some(g) = self.groups.get(&gid) else {
                continue;
            };
            if g.state.acked.is_some() {
                continue;
            }
            flush.undo.push((gid.clone(), Some(g.state.clone())));
            let channels = self.notified_channels(&g.state);
            let alerts = self.payload_alerts(g, now, true);
            let notified = g.state.last_notified.is_some();
            let g = self.groups.get_mut(&gid).expect("present");
            g.state.acked = Some(ack.clone());
            let state = g.state.clone();
            if notified {
                for ch in channels {
                    flush.notifications.push(self.notification(
                        &state,
                        &ch,
                        NotifyKind::Acknowledged,
                        alerts.clone(),
                        now,
                    ));
                }
            }
            flush.groups_put.push(state);
        }
        flush
    }

    // ---- evaluation ----------------------------------------------------------------------

    /// One evaluation at `now`: flush due groups, escalate, collect garbage.
    pub fn evaluate(&mut self, now: DateTime<Utc>) -> Flush {
        let mut flush = Flush::default();
        let idx = self.firing_index(now);
        let mut muted: HashMap<String, bool> = HashMap::new();
        let gids: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.state.next_flush <= now || self.escalation_due(&g.state, now))
            .map(|(id, _)| id.clone())
            .collect();
        // Without silences, windows or inhibit rules nothing can be muted: skip the lookups.
        let may_mute =
            !self.silences.is_empty() || !self.windows.is_empty() || !self.cfg.inhibit.is_empty();
        for gid in gids {
            let before = self.groups.get(&gid).map(|g| g.state.clone());
            if may_mute {
                for fp in &self.groups[&gid].members {
                    if !muted.contains_key(fp) {
                        let m = self
                            .alerts
                            .get(fp)
                            .map(|a| self.mute_of(&idx, fp, &a.labels, now).is_muted())
                            .unwrap_or(false);
                        muted.insert(fp.clone(), m);
                    }
                }
            }
            let changed = self.flush_group(&gid, &muted, now, &mut flush);
            if changed {
                flush.undo.push((gid.clone(), before));
                match self.groups.get(&gid) {
                    Some(g) => flush.groups_put.push(g.state.clone()),
                    None => flush.groups_deleted.push(gid.clone()),
                }
            }
        }
        // Collection scans every alert: once a second is enough (a resolved alert waits at
        // most that long to leave memory and the store).
        if self
            .last_gc
            .is_none_or(|t| now - t >= ChronoDuration::seconds(1) || now < t)
        {
            self.last_gc = Some(now);
            self.collect_garbage(now, &mut flush);
        }
        flush
    }

    fn escalation_due(&self, g: &GroupState, now: DateTime<Utc>) -> bool {
        // Cheap checks first: this runs for every group on every pass.
        if !self.escalates
            || g.acked.is_some()
            || g.first_fired_at.is_none()
            || g.sent_firing.is_empty()
        {
            return false;
        }
        let Some(rx) = self.cfg.receivers.get(&g.receiver) else {
            return false;
        };
        let Some(step) = rx.steps.get(g.level + 1) else {
            return false;
        };
        g.acked.is_none()
            && !g.sent_firing.is_empty()
            && g.first_fired_at.is_some_and(|f| f + dur(step.0) <= now)
    }

    /// Channels of the steps notified so far.
    fn notified_channels(&self, g: &GroupState) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(rx) = self.cfg.receivers.get(&g.receiver) {
            for (_, chans) in rx.steps.iter().take(g.level + 1) {
                for c in chans {
                    if !out.contains(c) {
                        out.push(c.clone());
                    }
                }
            }
        }
        out
    }

    /// Firing members (muted ones only if already announced, unless `all`), for payloads.
    fn payload_alerts(&self, g: &Group, now: DateTime<Utc>, all: bool) -> Vec<AlertView> {
        g.members
            .iter()
            .filter_map(|fp| self.alerts.get(fp).map(|a| (fp, a)))
            .filter(|(fp, a)| {
                a.state(now) == AlertState::Firing && (all || g.state.sent_firing.contains(*fp))
            })
            .map(|(fp, a)| a.view(fp, now))
            .collect()
    }

    /// Returns whether the group's stored state changed.
    fn flush_group(
        &mut self,
        gid: &str,
        muted: &HashMap<String, bool>,
        now: DateTime<Utc>,
        flush: &mut Flush,
    ) -> bool {
        let Some(g) = self.groups.get(gid) else {
            return false;
        };
        let (group_interval, repeat) = self.timing_of(&g.state.route_id).unwrap_or((
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(14400),
        ));
        let mut firing = Vec::new();
        let mut firing_new = false;
        let mut firing_unmuted = false;
        let mut resolved_sent = Vec::new();
        let mut resolved_all = Vec::new();
        for fp in &g.members {
            let Some(a) = self.alerts.get(fp) else {
                continue;
            };
            let sent = g.state.sent_firing.contains(fp);
            let is_muted = muted.get(fp).copied().unwrap_or(false);
            match a.state(now) {
                AlertState::Pending => {}
                AlertState::Firing => {
                    if !is_muted {
                        firing_unmuted = true;
                        if !sent {
                            firing_new = true;
                        }
                    }
                    if !is_muted || sent {
                        firing.push(a.view(fp, now));
                    }
                }
                AlertState::Resolved => {
                    resolved_all.push(fp.clone());
                    if sent {
                        resolved_sent.push(a.view(fp, now));
                    }
                }
            }
        }
        // Sent firing alerts that vanished (deleted) count as resolved too.
        let vanished: Vec<String> = g
            .state
            .sent_firing
            .iter()
            .filter(|fp| !self.alerts.contains_key(*fp))
            .cloned()
            .collect();

        let mut st = g.state.clone();
        let mut changed = false;
        let mut out = Vec::new();

        // Escalation first: a step due gets the current firing alerts.
        if self.escalation_due(&st, now) && firing_unmuted {
            st.level += 1;
            changed = true;
            let chans = self
                .cfg
                .receivers
                .get(&st.receiver)
                .and_then(|r| r.steps.get(st.level))
                .map(|s| s.1.clone())
                .unwrap_or_default();
            for ch in chans {
                out.push((
                    ch,
                    NotifyKind::Firing,
                    firing.clone(),
                    resolved_sent.clone(),
                ));
            }
        }

        if st.next_flush <= now {
            let repeat_due = st.last_notified.is_some_and(|t| t + dur(repeat) <= now)
                && firing_unmuted
                && st.acked.is_none();
            let notify =
                firing_new || !resolved_sent.is_empty() || !vanished.is_empty() || repeat_due;
            if notify && (!firing.is_empty() || !resolved_sent.is_empty()) {
                let kind = if firing.is_empty() {
                    NotifyKind::Resolved
                } else {
                    NotifyKind::Firing
                };
                for ch in self.notified_channels(&st) {
                    out.push((ch, kind, firing.clone(), resolved_sent.clone()));
                }
                st.last_notified = Some(now);
                if !firing.is_empty() && st.first_fired_at.is_none() {
                    st.first_fired_at = Some(now);
                }
                for a in &firing {
                    st.sent_firing.insert(a.fingerprint.clone());
                }
            }
            for a in &resolved_sent {
                st.sent_firing.remove(&a.fingerprint);
            }
            for fp in &vanished {
                st.sent_firing.remove(fp);
            }
            st.flushed = true;
            st.next_flush = now + dur(group_interval);
            changed = true;
        }

        for (ch, kind, f, r) in out {
            let mut alerts = f;
            alerts.extend(r);
            if skip_channel(&ch, &alerts) {
                continue;
            }
            flush
                .notifications
                .push(self.notification(&st, &ch, kind, alerts, now));
        }

        let g = self.groups.get_mut(gid).expect("present");
        for fp in &resolved_all {
            g.members.remove(fp);
        }
        g.state = st;
        if g.members.is_empty() && g.state.sent_firing.is_empty() {
            self.groups.remove(gid);
            changed = true;
        }
        changed
    }

    fn notification(
        &mut self,
        st: &GroupState,
        channel: &str,
        kind: NotifyKind,
        alerts: Vec<AlertView>,
        now: DateTime<Utc>,
    ) -> Notification {
        self.seq += 1;
        let common_labels = common(alerts.iter().map(|a| &*a.labels));
        let common_annotations = common(alerts.iter().map(|a| &*a.annotations));
        let firing = alerts.iter().any(|a| a.status == "firing");
        Notification {
            id: format!("{:016x}{:08x}", now.timestamp_micros().max(0), self.seq),
            kind,
            receiver: st.receiver.clone(),
            channel: channel.to_string(),
            group_key: st.group_key.clone(),
            dedup_key: st.dedup_key(),
            status: if firing || kind == NotifyKind::Acknowledged {
                "firing"
            } else {
                "resolved"
            }
            .into(),
            group_labels: st.labels.clone(),
            common_labels,
            common_annotations,
            alerts,
            truncated_alerts: 0,
            external_url: self.cfg.external_url.clone(),
            created_at: now,
            summary: None,
        }
    }

    /// A one-off informational notification (deploys, rotations) to the step-0 channels of
    /// the receivers `labels` route to.
    pub fn change(
        &mut self,
        labels: Labels,
        summary: String,
        now: DateTime<Utc>,
    ) -> Vec<Notification> {
        let fp = fingerprint(&labels);
        let view = AlertView {
            status: "firing".into(),
            labels: Arc::new(labels.clone()),
            annotations: Arc::new(
                [("summary".to_string(), summary.clone())]
                    .into_iter()
                    .collect(),
            ),
            starts_at: now,
            ends_at: now,
            generator_url: String::new(),
            fingerprint: fp.clone(),
        };
        let mut out = Vec::new();
        let routes: Vec<Route> = self
            .cfg
            .route
            .matching(&labels)
            .into_iter()
            .cloned()
            .collect();
        for r in routes {
            let gl = r.group_labels(&labels);
            let st = GroupState {
                id: fp.clone(),
                route_id: r.id.clone(),
                receiver: r.receiver.clone(),
                group_key: format!("{}:{}", r.id, render_labels(&gl)),
                labels: gl,
                created_at: now,
                next_flush: now,
                last_notified: None,
                sent_firing: BTreeSet::new(),
                level: 0,
                first_fired_at: None,
                acked: None,
                flushed: true,
            };
            for ch in self.notified_channels(&st) {
                let mut n =
                    self.notification(&st, &ch, NotifyKind::Change, vec![view.clone()], now);
                n.summary = Some(summary.clone());
                out.push(n);
            }
        }
        out
    }

    fn collect_garbage(&mut self, now: DateTime<Utc>, flush: &mut Flush) {
        // A resolved alert goes once no group still has it to flush or owes its resolve (the
        // check looks only at the alert's own groups: no scan over every group per pass).
        let dead: Vec<String> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.state(now) == AlertState::Resolved)
            .filter(|(fp, _)| {
                self.alert_groups.get(*fp).is_none_or(|gs| {
                    gs.iter().all(|g| {
                        self.groups.get(g).is_none_or(|g| {
                            !g.members.contains(*fp) && !g.state.sent_firing.contains(*fp)
                        })
                    })
                })
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        for fp in dead {
            if let Some(doc) = self.alerts.remove(&fp) {
                flush.undo_alerts.push((fp.clone(), doc));
            }
            self.alert_groups.remove(&fp);
            flush.alerts_deleted.push(fp);
        }
        let ended: Vec<String> = self
            .silences
            .values()
            .filter(|(s, _)| now - s.ends_at > ChronoDuration::days(5))
            .map(|(s, _)| s.id.clone())
            .collect();
        for id in ended {
            self.silences.remove(&id);
        }
        self.windows.retain(|w| !w.is_over(now));
    }

    /// Puts back the group states a failed store write would have recorded, so the next
    /// evaluation produces the same notifications again.
    pub fn undo(&mut self, flush: Flush, now: DateTime<Utc>) {
        for (gid, before) in flush.undo.into_iter().rev() {
            match before {
                Some(st) => {
                    let members = self.groups.get(&gid).map(|g| g.members.clone());
                    self.groups.insert(
                        gid,
                        Group {
                            state: st,
                            members: members.unwrap_or_default(),
                        },
                    );
                }
                None => {
                    self.groups.remove(&gid);
                }
            }
        }
        for (fp, doc) in flush.undo_alerts {
            self.alerts.insert(fp.clone(), doc);
            self.route_alert(&fp, now);
        }
    }
}

/// A channel does not carry the news of its own failure.
fn skip_channel(channel: &str, alerts: &[AlertView]) -> bool {
    !alerts.is_empty()
        && alerts.iter().all(|a| {
            a.labels.get("alertname").map(String::as_str) == Some(CHANNEL_FAILING)
                && a.labels.get("channel").map(String::as_str) == Some(channel)
        })
}

fn common<'a>(mut sets: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = sets.next() else {
        return Labels::new();
    };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// `{a="1", b="2"}`.
pub fn render_labels(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

pub(crate) fn dur(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}
