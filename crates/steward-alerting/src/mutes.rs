//! What mutes an alert's new notifications: silences, maintenance windows (one-off or
//! recurring, cron in a time zone) and inhibition. A mute never holds back the resolve of an
//! alert whose firing was already notified (see `pipeline`).

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    matchers::{all_match, parse_list, MatchOp, Matcher},
    model::Labels,
    ConfigError,
};

/// A matcher as the Alertmanager API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl ApiMatcher {
    pub fn compile(&self) -> Result<Matcher, crate::matchers::MatcherError> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => MatchOp::Eq,
            (false, false) => MatchOp::Ne,
            (true, true) => MatchOp::Re,
            (true, false) => MatchOp::NotRe,
        };
        Matcher::new(&self.name, op, &self.value)
    }

    pub fn from_matcher(m: &Matcher) -> Self {
        Self {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: m.is_regex(),
            is_equal: m.is_equal(),
        }
    }
}

/// A silence, stored as `records` kind `silence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub updated_at: DateTime<Utc>,
}

impl Silence {
    /// `pending`, `active` or `expired`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now >= self.ends_at {
            "expired"
        } else {
            "active"
        }
    }
}

/// A maintenance window, stored as `records` kind `maintenance` (one-off, from the API or
/// CLI) or compiled from `[[alerting.maintenance]]` (recurring).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Maintenance {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Matchers in Alertmanager syntax; empty mutes everything.
    pub matchers: Vec<String>,
    /// One-off windows: start and end.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Recurring windows: cron, length, time zone.
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub duration_secs: Option<u64>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub created_by: String,
    /// Shown on the public status page (its name, comment and times; never its matchers or
    /// author). Off by default, so internal windows stay private.
    #[serde(default)]
    pub public: bool,
}

/// A window ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledWindow {
    pub doc: Maintenance,
    matchers: Vec<Matcher>,
    cron: Option<(croner::Cron, chrono_tz::Tz, ChronoDuration)>,
}

impl CompiledWindow {
    pub fn compile(doc: Maintenance, key: &str) -> Result<Self, ConfigError> {
        let matchers = parse_list(&doc.matchers)
            .map_err(|e| ConfigError::new(format!("{key}.matchers"), e.to_string()))?;
        let cron = match &doc.cron {
            None => None,
            Some(expr) => {
                let c = croner::Cron::new(expr)
                    .with_seconds_optional()
                    .parse()
                    .map_err(|e| {
                        ConfigError::new(
                            format!("{key}.cron"),
                            format!(
                                "{expr:?} is not a cron expression ({e}); e.g. \"0 2 * * SUN\""
                            ),
                        )
                    })?;
                let tzname = doc.timezone.as_deref().unwrap_or("UTC");
                let tz: chrono_tz::Tz = tzname.parse().map_err(|_| {
                    ConfigError::new(
                        format!("{key}.timezone"),
                        format!("{tzname:?} is not an IANA time zone; e.g. \"Europe/Berlin\" or \"UTC\""),
                    )
                })?;
                let secs = doc.duration_secs.unwrap_or(0);
                if secs == 0 {
                    return Err(ConfigError::new(
                        format!("{key}.duration"),
                        "a recurring window needs a duration above 0 (e.g. \"1h\")",
                    ));
                }
                Some((c, tz, ChronoDuration::seconds(secs as i64)))
            }
        };
        if cron.is_none() && (doc.starts_at.is_none() || doc.ends_at.is_none()) {
            return Err(ConfigError::new(
                key.to_string(),
                "a window needs either cron and duration, or a start and an end",
            ));
        }
        Ok(Self {
            doc,
            matchers,
            cron,
        })
    }

    /// The window containing `now`, if one does: (start, end).
    pub fn active_span(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match &self.cron {
            None => {
                let (s, e) = (self.doc.starts_at?, self.doc.ends_at?);
                (s <= now && now < e).then_some((s, e))
            }
            Some((cron, tz, len)) => {
                // The first start strictly after (now - len): active when it is not after now
                // (a window covers [start, start + len)).
                let from = (now - *len).with_timezone(tz);
                let start = cron.find_next_occurrence(&from, false).ok()?;
                let start = start.with_timezone(&Utc);
                (start <= now).then(|| (start, start + *len))
            }
        }
    }

    /// The next start after `now` (recurring) or the start (one-off, when still ahead).
    pub fn next_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.cron {
            None => self.doc.starts_at.filter(|s| *s > now),
            Some((cron, tz, _)) => cron
                .find_next_occurrence(&now.with_timezone(tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    /// The occurrences (start, end) in progress at `now` or starting before `until`, in
    /// order, at most `max` (a recurring window has one per cron start).
    pub fn occurrences(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut out = Vec::new();
        match &self.cron {
            None => {
                if let (Some(s), Some(e)) = (self.doc.starts_at, self.doc.ends_at) {
                    if now < e && s < until && max > 0 {
                        out.push((s, e));
                    }
                }
            }
            Some((_, _, len)) => {
                if let Some(span) = self.active_span(now) {
                    out.push(span);
                }
                let mut t = now;
                while out.len() < max {
                    match self.next_start(t) {
                        Some(s) if s < until && s > t => {
                            out.push((s, s + *len));
                            t = s;
                        }
                        _ => break,
                    }
                }
                out.truncate(max);
            }
        }
        out
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        all_match(&self.matchers, labels)
    }

    /// Whether it is over for good (a one-off window that ended).
    pub fn is_over(&self, now: DateTime<Utc>) -> bool {
        self.cron.is_none() && self.doc.ends_at.is_some_and(|e| e <= now)
    }
}

/// A compiled inhibit rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    pub fn compile(
        cfg: &steward_core::alerting::InhibitRuleConfig,
        i: usize,
    ) -> Result<Self, ConfigError> {
        let key = format!("alerting.inhibit_rules[{i}]");
        let source = parse_list(&cfg.source_matchers)
            .map_err(|e| ConfigError::new(format!("{key}.source_matchers"), e.to_string()))?;
        let target = parse_list(&cfg.target_matchers)
            .map_err(|e| ConfigError::new(format!("{key}.target_matchers"), e.to_string()))?;
        if source.is_empty() || target.is_empty() {
            return Err(ConfigError::new(
                key,
                "an inhibit rule needs source_matchers and target_matchers",
            ));
        }
        Ok(Self {
            source,
            target,
            equal: cfg.equal.clone(),
        })
    }

    fn key(&self, labels: &Labels) -> Vec<String> {
        self.equal
            .iter()
            .map(|n| labels.get(n).cloned().unwrap_or_default())
            .collect()
    }
}

/// The firing sources of each inhibit rule, computed once per evaluation.
#[derive(Debug, Default)]
pub struct InhibitIndex {
    /// Per rule: equal-label values -> up to two source fingerprints.
    per_rule: Vec<HashMap<Vec<String>, Vec<String>>>,
}

impl InhibitIndex {
    pub fn build<'a>(
        rules: &[InhibitRule],
        firing: impl Iterator<Item = (&'a String, &'a Labels)> + Clone,
    ) -> Self {
        let per_rule = rules
            .iter()
            .map(|r| {
                let mut m: HashMap<Vec<String>, Vec<String>> = HashMap::new();
                for (fp, labels) in firing.clone() {
                    if all_match(&r.source, labels) {
                        let v = m.entry(r.key(labels)).or_default();
                        if v.len() < 2 {
                            v.push(fp.clone());
                        }
                    }
                }
                m
            })
            .collect();
        Self { per_rule }
    }

    /// The fingerprints of firing alerts that inhibit this one (none when it is not).
    pub fn inhibited_by(&self, rules: &[InhibitRule], fp: &str, labels: &Labels) -> Vec<String> {
        let mut out = Vec::new();
        for (rule, sources) in rules.iter().zip(&self.per_rule) {
            if sources.is_empty() || !all_match(&rule.target, labels) {
                continue;
            }
            if let Some(fps) = sources.get(&rule.key(labels)) {
                // An alert never inhibits itself.
                out.extend(fps.iter().filter(|s| s.as_str() != fp).cloned());
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A recurring window: every day at 02:00 for an hour, in `timezone` (UTC when None).
    fn nightly(timezone: Option<&str>, public: bool) -> Maintenance {
        Maintenance {
            id: "w".into(),
            name: "nightly".into(),
            matchers: vec![],
            starts_at: None,
            ends_at: None,
            cron: Some("0 2 * * *".into()),
            duration_secs: Some(3600),
            timezone: timezone.map(str::to_string),
            comment: String::new(),
            created_by: String::new(),
            public,
        }
    }

    #[test]
    fn recurring_windows_follow_cron_in_their_time_zone() {
        let w = CompiledWindow::compile(nightly(Some("Europe/Berlin"), false), "m").unwrap();
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert!(w.active_span(t("2026-12-01T00:59:59Z")).is_none());
        let (s, e) = w.active_span(t("2026-12-01T01:00:00Z")).unwrap();
        assert_eq!(
            (s, e),
            (t("2026-12-01T01:00:00Z"), t("2026-12-01T02:00:00Z"))
        );
        assert!(w.active_span(t("2026-12-01T01:59:59Z")).is_some());
        assert!(w.active_span(t("2026-12-01T02:00:00Z")).is_none());
        // Summer time: 02:00 CEST is 00:00 UTC.
        assert!(w.active_span(t("2026-07-01T00:30:00Z")).is_some());
        assert_eq!(
            w.next_start(t("2026-12-01T03:00:00Z")),
            Some(t("2026-12-02T01:00:00Z"))
        );
    }

    #[test]
    fn occurrences_in_progress_and_ahead() {
        let daily = CompiledWindow::compile(nightly(None, true), "m").unwrap();
        let now = t("2026-12-01T02:30:00Z");
        let week = now + ChronoDuration::days(7);
        let occ = daily.occurrences(now, week, 100);
        assert_eq!(occ.len(), 8, "the one in progress and seven ahead: {occ:?}");
        assert_eq!(
            occ[0],
            (t("2026-12-01T02:00:00Z"), t("2026-12-01T03:00:00Z"))
        );
        assert_eq!(occ[1].0, t("2026-12-02T02:00:00Z"));
        assert_eq!(occ[7].0, t("2026-12-08T02:00:00Z"));
        assert_eq!(daily.occurrences(now, week, 3).len(), 3);

        let once = |s: &str, e: &str| {
            CompiledWindow::compile(
                Maintenance {
                    starts_at: Some(t(s)),
                    ends_at: Some(t(e)),
                    cron: None,
                    duration_secs: None,
                    ..daily.doc.clone()
                },
                "m",
            )
            .unwrap()
        };
        assert_eq!(
            once("2026-12-01T02:00:00Z", "2026-12-01T04:00:00Z")
                .occurrences(now, week, 5)
                .len(),
            1,
            "in progress"
        );
        assert_eq!(
            once("2026-12-05T00:00:00Z", "2026-12-05T01:00:00Z")
                .occurrences(now, week, 5)
                .len(),
            1,
            "ahead within the horizon"
        );
        assert!(once("2026-12-20T00:00:00Z", "2026-12-20T01:00:00Z")
            .occurrences(now, week, 5)
            .is_empty());
        assert!(once("2026-11-30T00:00:00Z", "2026-12-01T01:00:00Z")
            .occurrences(now, week, 5)
            .is_empty());
    }

    #[test]
    fn bad_windows_are_config_errors() {
        let base = nightly(Some("Mars/Olympus"), false);
        let e = CompiledWindow::compile(base.clone(), "m").unwrap_err();
        assert_eq!(e.key, "m.timezone");
        let e = CompiledWindow::compile(
            Maintenance {
                cron: Some("every day".into()),
                timezone: None,
                ..base
            },
            "m",
        )
        .unwrap_err();
        assert_eq!(e.key, "m.cron");
    }

    #[test]
    fn inhibition_needs_equal_labels_and_never_self() {
        let rule = InhibitRule {
            source: parse_list(&["alertname=\"DatabaseDown\""]).unwrap(),
            target: parse_list(&["tier=\"app\""]).unwrap(),
            equal: vec!["cluster".into()],
        };
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let db = l(&[
            ("alertname", "DatabaseDown"),
            ("cluster", "a"),
            ("tier", "app"),
        ]);
        let firing = [("db".to_string(), db.clone())];
        let idx = InhibitIndex::build(
            std::slice::from_ref(&rule),
            firing.iter().map(|(f, l)| (f, l)),
        );
        let app_a = l(&[("alertname", "Slow"), ("cluster", "a"), ("tier", "app")]);
        let app_b = l(&[("alertname", "Slow"), ("cluster", "b"), ("tier", "app")]);
        let rules = [rule];
        assert_eq!(idx.inhibited_by(&rules, "x", &app_a), ["db"]);
        assert!(idx.inhibited_by(&rules, "y", &app_b).is_empty());
        assert!(idx.inhibited_by(&rules, "db", &db).is_empty(), "not itself");
    }
}
