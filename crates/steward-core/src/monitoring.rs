//! `[monitoring]`: health checks and SLOs as written in `steward.toml`. Each check names a
//! probe type (`http`, `tcp`, `tls`, `dns`, `postgres`, `mysql`, `redis`, `queue`,
//! `command`, `disk`, `memory`, `load`, or `heartbeat`), its schedule, and the condition
//! that decides up or down; the probe's own settings sit in the same table. `steward-checks`
//! compiles and checks them (probe settings, conditions, dependencies) at startup.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::config::de_duration;

/// The whole `[monitoring]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Probes that run at once.
    pub concurrency: usize,
    /// Defaults for checks that do not set their own.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Raw results are kept this long; per-minute, per-hour and per-day roll-ups longer.
    #[serde(deserialize_with = "de_duration")]
    pub raw_retention: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub rollup_retention: Duration,
    /// Checks of the machine Steward runs on (disk of the data directory, memory, load),
    /// added unless a check of the same name is configured.
    pub host_checks: bool,
    pub checks: Vec<CheckConfig>,
    pub slos: Vec<SloConfig>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            raw_retention: Duration::from_secs(48 * 3600),
            rollup_retention: Duration::from_secs(400 * 86_400),
            host_checks: true,
            checks: Vec::new(),
            slos: Vec::new(),
        }
    }
}

/// One check. Keys other than the ones below are the probe's settings (e.g. `url` for
/// `http`), checked by the probe when the config loads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CheckConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// How often it runs (default `[monitoring] interval`). Each check starts at its own
    /// offset within the interval (from its name), so checks do not all run at once.
    #[serde(default, deserialize_with = "crate::alerting::de_opt_duration")]
    pub interval: Option<Duration>,
    /// Jitter added to every run, as a share of the interval (0 to 0.5; default 0.05).
    #[serde(default)]
    pub jitter: Option<f64>,
    #[serde(default, deserialize_with = "crate::alerting::de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Up when true (default: the probe's own, e.g. `status >= 200 && status < 400`).
    #[serde(default)]
    pub condition: Option<String>,
    /// Down after this many failed runs in a row (default 1).
    #[serde(default)]
    pub fail_after: Option<u32>,
    /// Up again after this many good runs in a row (default 1).
    #[serde(default)]
    pub recover_after: Option<u32>,
    /// Checks this one depends on: while one of them is down, this check's alert is
    /// inhibited (it still runs and records results).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Extra labels on the check's alert (e.g. `team`, `severity`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// For `heartbeat`: a beat missing this long after the last one is a failure.
    #[serde(default, deserialize_with = "crate::alerting::de_opt_duration")]
    pub grace: Option<Duration>,
    /// On the public status page: the component's name (default: not shown).
    #[serde(default)]
    pub status_page: Option<String>,
    /// The probe's settings.
    #[serde(flatten)]
    pub settings: BTreeMap<String, toml::Value>,
}

/// A service level objective over one or more checks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    pub name: String,
    pub checks: Vec<String>,
    /// The share of good runs, e.g. `"99.9%"` or `99.9`.
    pub objective: toml::Value,
    /// The window the objective is measured over (default 30 days).
    #[serde(default, deserialize_with = "crate::alerting::de_opt_duration")]
    pub window: Option<Duration>,
    /// Burn-rate alerts (fast 1h/5m at 14.4x, slow 6h/30m at 6x; default true).
    #[serde(default = "yes")]
    pub alerts: bool,
}

fn yes() -> bool {
    true
}
