//! `[monitoring]` compiled: every check's probe built from its settings, its condition parsed
//! and checked against the facts the probe reports, names unique, dependencies known and
//! free of cycles. Errors name the config key (`monitoring.checks[2].condition`) so the
//! binary can point at the file and line.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use steward_core::{
    alerting::InhibitRuleConfig,
    monitoring::{CheckConfig, MonitoringConfig},
};
use steward_expr::Expr;
use steward_probes::Probe;

/// The alert a down check raises.
pub const ALERT_NAME: &str = "CheckDown";

/// A problem in `[monitoring]`, at `key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CheckConfigError {
    pub key: String,
    pub message: String,
}

/// What a check does when it runs.
#[derive(Clone)]
pub enum Runner {
    Probe(Arc<dyn Probe>),
    /// Passive: a cron job or worker calls Steward; a beat missing for `grace` is a failure.
    Heartbeat {
        grace: Duration,
    },
}

/// One compiled check.
#[derive(Clone)]
pub struct Check {
    pub name: String,
    pub kind: String,
    pub runner: Runner,
    pub interval: Duration,
    pub jitter: f64,
    pub timeout: Duration,
    pub condition: Expr,
    pub fail_after: u32,
    pub recover_after: u32,
    pub depends_on: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub status_page: Option<String>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// The compiled `[monitoring]` section.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub checks: Vec<Check>,
    pub slos: Vec<crate::slo::Slo>,
    pub concurrency: usize,
    pub raw_retention: Duration,
    pub rollup_retention: Duration,
}

fn err(key: String, message: impl Into<String>) -> CheckConfigError {
    CheckConfigError {
        key,
        message: message.into(),
    }
}

/// Whether `name` is among the probe's facts (`x.*` stands for anything below `x`).
fn known_fact(known: &[&str], name: &str) -> bool {
    known.iter().any(|k| match k.strip_suffix(".*") {
        Some(prefix) => {
            name == prefix
                || name
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with(['.', '[']))
        }
        None => *k == name,
    })
}

/// Facts a heartbeat check reports.
const HEARTBEAT_FACTS: &[&str] = &["since_last_beat", "beats", "response_time"];

/// The built-in host checks: the disk holding the data directory, memory and load.
fn host_checks(data_dir: &str) -> Vec<CheckConfig> {
    let mk = |name: &str, kind: &str, settings: BTreeMap<String, toml::Value>| CheckConfig {
        name: name.into(),
        kind: kind.into(),
        interval: Some(Duration::from_secs(60)),
        jitter: None,
        timeout: Some(Duration::from_secs(5)),
        condition: None,
        fail_after: Some(3),
        recover_after: Some(2),
        depends_on: Vec::new(),
        labels: [("severity".to_string(), "warning".to_string())].into(),
        grace: None,
        status_page: None,
        settings,
    };
    vec![
        mk(
            "host-disk",
            "disk",
            [("path".to_string(), toml::Value::String(data_dir.into()))].into(),
        ),
        mk("host-memory", "memory", BTreeMap::new()),
        mk("host-load", "load", BTreeMap::new()),
    ]
}

impl Compiled {
    /// Compiles `[monitoring]`; `data_dir` is watched by the built-in disk check.
    pub fn compile(cfg: &MonitoringConfig, data_dir: &str) -> Result<Self, CheckConfigError> {
        let mut all: Vec<(String, CheckConfig)> = cfg
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("monitoring.checks[{i}]"), c.clone()))
            .collect();
        if cfg.host_checks {
            for c in host_checks(data_dir) {
                if !all.iter().any(|(_, x)| x.name == c.name) {
                    all.push((format!("monitoring.host_checks ({})", c.name), c));
                }
            }
        }
        if cfg.concurrency == 0 {
            return Err(err(
                "monitoring.concurrency".into(),
                "must be at least 1 (probes that run at once)",
            ));
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (key, c) in &all {
            if !valid_name(&c.name) {
                return Err(err(
                    format!("{key}.name"),
                    format!(
                        "{:?} is not a check name; use letters, digits, '-', '_' and '.' (1-64), starting with a letter or digit",
                        c.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(&c.name, key) {
                return Err(err(
                    format!("{key}.name"),
                    format!(
                        "check {:?} is defined twice (also at {first}); names must be unique",
                        c.name
                    ),
                ));
            }
        }
        let mut checks = Vec::new();
        for (key, c) in &all {
            checks.push(compile_check(key, c, cfg)?);
        }
        // Dependencies: known names, no cycles.
        let index: HashMap<&str, usize> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        for ((key, _), c) in all.iter().zip(&checks) {
            for d in &c.depends_on {
                if !index.contains_key(d.as_str()) {
                    return Err(err(
                        format!("{key}.depends_on"),
                        format!("no check is named {d:?}; depends_on lists names of other checks"),
                    ));
                }
                if d == &c.name {
                    return Err(err(
                        format!("{key}.depends_on"),
                        "a check cannot depend on itself",
                    ));
                }
            }
        }
        for ((key, _), c) in all.iter().zip(&checks) {
            // Depth-first walk from each check; meeting it again is a cycle.
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(c.name.as_str(), vec![c.name.as_str()])];
            while let Some((at, path)) = stack.pop() {
                for d in &checks[index[at]].depends_on {
                    if d == &c.name {
                        let mut p = path.clone();
                        p.push(d);
                        return Err(err(
                            format!("{key}.depends_on"),
                            format!("dependencies form a cycle: {}", p.join(" -> ")),
                        ));
                    }
                    if !path.contains(&d.as_str()) && path.len() < checks.len() {
                        let mut p = path.clone();
                        p.push(d);
                        stack.push((d, p));
                    }
                }
            }
        }
        let names: Vec<String> = checks.iter().map(|c| c.name.clone()).collect();
        let slos = crate::slo::compile(&cfg.slos, &names)?;
        Ok(Self {
            checks,
            slos,
            concurrency: cfg.concurrency,
            raw_retention: cfg.raw_retention,
            rollup_retention: cfg.rollup_retention,
        })
    }

    /// Inhibit rules that let a down dependency mute the alerts of the checks that depend on
    /// it (they still run, record results and show as down).
    pub fn inhibit_rules(&self) -> Vec<InhibitRuleConfig> {
        let mut out = Vec::new();
        for c in &self.checks {
            for d in &c.depends_on {
                out.push(InhibitRuleConfig {
                    source_matchers: vec![
                        format!("alertname=\"{ALERT_NAME}\""),
                        format!("check=\"{d}\""),
                    ],
                    target_matchers: vec![
                        format!("alertname=\"{ALERT_NAME}\""),
                        format!("check=\"{}\"", c.name),
                    ],
                    equal: Vec::new(),
                });
            }
        }
        out
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn compile_check(
    key: &str,
    c: &CheckConfig,
    cfg: &MonitoringConfig,
) -> Result<Check, CheckConfigError> {
    let interval = c.interval.unwrap_or(cfg.interval);
    if interval < Duration::from_secs(1) {
        return Err(err(
            format!("{key}.interval"),
            "must be at least 1s; write e.g. \"30s\"",
        ));
    }
    let timeout = c.timeout.unwrap_or(cfg.timeout.min(interval));
    if timeout.is_zero() || timeout > interval {
        return Err(err(
            format!("{key}.timeout"),
            format!(
                "must be more than 0 and at most the interval ({}); a run must end before the next starts",
                humantime::format_duration(interval)
            ),
        ));
    }
    let jitter = c.jitter.unwrap_or(0.05);
    if !(0.0..=0.5).contains(&jitter) {
        return Err(err(
            format!("{key}.jitter"),
            "must be between 0 and 0.5 (a share of the interval)",
        ));
    }
    let (runner, facts, default_condition): (Runner, &[&str], &str) = if c.kind == "heartbeat" {
        if let Some(k) = c.settings.keys().next() {
            return Err(err(
                format!("{key}.{k}"),
                "unknown key for a heartbeat check (it takes grace, interval and the common keys)",
            ));
        }
        let grace = c.grace.unwrap_or(interval);
        (
            Runner::Heartbeat { grace },
            HEARTBEAT_FACTS,
            "since_last_beat <= 0s",
        )
    } else {
        if c.grace.is_some() {
            return Err(err(
                format!("{key}.grace"),
                "only heartbeat checks take grace",
            ));
        }
        let settings = serde_json::to_value(&c.settings)
            .map_err(|e| err(key.to_string(), format!("settings cannot be read: {e}")))?;
        let probe = steward_probes::build(&c.kind, &settings).map_err(|e| {
            let k = if e.key == "type" {
                "type".to_string()
            } else {
                e.key.clone()
            };
            err(format!("{key}.{k}"), e.message)
        })?;
        let facts = probe.facts();
        let default = probe.default_condition();
        (Runner::Probe(probe), facts, default)
    };
    let src = c.condition.as_deref().unwrap_or(default_condition);
    let condition = steward_expr::parse(src)
        .map_err(|e| err(format!("{key}.condition"), format!("{e} in {src:?}")))?;
    for name in condition.names() {
        if !known_fact(facts, &name) {
            return Err(err(
                format!("{key}.condition"),
                format!(
                    "a {} check does not report {name:?}; it reports: {}",
                    c.kind,
                    facts.join(", ")
                ),
            ));
        }
    }
    for (k, v) in &c.labels {
        if !steward_alerting::matchers::valid_label_name(k) || v.is_empty() {
            return Err(err(
                format!("{key}.labels"),
                format!(
                    "{k:?} is not a label name or its value is empty (letters, digits and '_')"
                ),
            ));
        }
    }
    Ok(Check {
        name: c.name.clone(),
        kind: c.kind.clone(),
        runner,
        interval,
        jitter,
        timeout,
        condition,
        fail_after: c.fail_after.unwrap_or(1).max(1),
        recover_after: c.recover_after.unwrap_or(1).max(1),
        depends_on: c.depends_on.clone(),
        labels: c.labels.clone(),
        status_page: c.status_page.clone(),
    })
}
