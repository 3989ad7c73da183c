//! Steward's own events become alerts through rules (`[[alerting.rules]]` and the built-in
//! ones): a raising event kind, a resolving one, flap control (`fail_after` raising events in a
//! row before the alert is raised, `recover_after` resolving ones before it resolves) and
//! `for` (pending that long before firing). An alert's identity is its alertname with the
//! event's env and path.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use steward_core::alerting::EventRuleConfig;
use steward_store::EventRow;

use crate::{
    model::{fingerprint, Labels},
    pipeline::{dur, AlertDoc},
};

/// Flap counters of one identity (`records` kind `rulecount`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub fails: u32,
    pub recovers: u32,
}

/// What an event asks of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Raise(AlertDoc),
    Resolve(String),
    Change(Labels, String),
}

/// Evaluates rules over events.
#[derive(Debug, Default)]
pub struct RuleEngine {
    rules: Vec<EventRuleConfig>,
    pub counters: HashMap<String, Counter>,
}

impl RuleEngine {
    pub fn new(rules: Vec<EventRuleConfig>, counters: HashMap<String, Counter>) -> Self {
        Self { rules, counters }
    }

    /// The actions for one event, and the counters it changed (to store with the cursor).
    pub fn on_event(
        &mut self,
        ev: &EventRow,
        now: DateTime<Utc>,
    ) -> (Vec<Action>, Vec<(String, Counter)>) {
        let detail: Value = serde_json::from_str(&ev.detail).unwrap_or(Value::Null);
        let mut actions = Vec::new();
        let mut changed = Vec::new();
        for rule in &self.rules {
            let raising = rule.event == ev.kind;
            let resolving = rule.resolve_event.as_deref() == Some(ev.kind.as_str());
            if !raising && !resolving {
                continue;
            }
            let mut labels = Labels::new();
            labels.insert("alertname".into(), rule.alertname.clone());
            if let Some(env) = &ev.env {
                labels.insert("env".into(), env.clone());
            }
            if let Some(path) = &ev.path {
                labels.insert("path".into(), path.clone());
            }
            for (k, v) in &rule.labels {
                labels.insert(k.clone(), render(v, ev, &detail));
            }
            if rule.kind == "change" {
                if raising {
                    let summary = rule
                        .annotations
                        .get("summary")
                        .map(|s| render(s, ev, &detail))
                        .unwrap_or_else(|| format!("{} {}", ev.kind, target(ev)));
                    actions.push(Action::Change(labels, summary));
                }
                continue;
            }
            let fp = fingerprint(&labels);
            let c = self.counters.entry(fp.clone()).or_default();
            if raising {
                c.fails += 1;
                c.recovers = 0;
                if c.fails >= rule.fail_after {
                    let annotations: Labels = rule
                        .annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), render(v, ev, &detail)))
                        .collect();
                    actions.push(Action::Raise(AlertDoc {
                        labels: labels.into(),
                        annotations: annotations.into(),
                        starts_at: now,
                        ends_at: rule.resolve_after.map(|d| now + dur(d)),
                        generator_url: String::new(),
                        updated_at: now,
                        fire_at: (!rule.for_duration.is_zero())
                            .then(|| now + dur(rule.for_duration)),
                        source: "rule".into(),
                    }));
                }
            } else {
                c.recovers += 1;
                c.fails = 0;
                if c.recovers >= rule.recover_after {
                    actions.push(Action::Resolve(fp.clone()));
                }
            }
            changed.push((fp, c.clone()));
        }
        (actions, changed)
    }
}

fn target(ev: &EventRow) -> String {
    match (&ev.env, &ev.path) {
        (Some(e), Some(p)) => format!("{e}/{p}"),
        _ => String::new(),
    }
}

/// Fills `{env}`, `{path}`, `{kind}` and `{detail.FIELD}`; unknown fields become empty.
fn render(template: &str, ev: &EventRow, detail: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = &rest[start + 1..start + end];
        let val = match key {
            "env" => ev.env.clone().unwrap_or_default(),
            "path" => ev.path.clone().unwrap_or_default(),
            "kind" => ev.kind.clone(),
            k => match k.strip_prefix("detail.") {
                Some(f) => match detail.get(f) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                },
                None => format!("{{{k}}}"),
            },
        };
        out.push_str(&val);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str) -> EventRow {
        EventRow {
            seq: 1,
            time: Utc::now(),
            kind: kind.into(),
            env: Some("prod".into()),
            path: Some("db/app".into()),
            detail: r#"{"reason":"connection refused","attempt":3}"#.into(),
        }
    }

    fn rule(fail_after: u32, recover_after: u32) -> EventRuleConfig {
        EventRuleConfig {
            event: "check.failed".into(),
            resolve_event: Some("check.passed".into()),
            resolve_after: None,
            alertname: "CheckDown".into(),
            labels: [("severity".to_string(), "critical".to_string())]
                .into_iter()
                .collect(),
            annotations: [(
                "summary".to_string(),
                "{env}/{path}: {detail.reason} ({detail.attempt})".to_string(),
            )]
            .into_iter()
            .collect(),
            for_duration: std::time::Duration::ZERO,
            fail_after,
            recover_after,
            kind: "alert".into(),
        }
    }

    #[test]
    fn flap_control_needs_n_failures_and_m_recoveries_in_a_row() {
        let mut e = RuleEngine::new(vec![rule(2, 2)], HashMap::new());
        let now = Utc::now();
        assert!(e.on_event(&ev("check.failed"), now).0.is_empty());
        let (a, _) = e.on_event(&ev("check.failed"), now);
        let Action::Raise(doc) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(
            doc.annotations["summary"],
            "prod/db/app: connection refused (3)"
        );
        assert_eq!(doc.labels["severity"], "critical");
        assert!(e.on_event(&ev("check.passed"), now).0.is_empty());
        // A failure in between starts the recovery count again.
        e.on_event(&ev("check.failed"), now);
        assert!(e.on_event(&ev("check.passed"), now).0.is_empty());
        let (a, _) = e.on_event(&ev("check.passed"), now);
        assert!(matches!(a[0], Action::Resolve(_)));
    }
}
