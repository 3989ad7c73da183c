//! Service level objectives: the share of good runs of one or more checks over a window
//! (e.g. 99.9% over 30 days), the error budget left, and burn-rate alerts with the
//! multiwindow rules of the Google SRE workbook (chapter "Alerting on SLOs"):
//!
//! - fast burn: the budget burns 14.4 times too fast over the last hour *and* the last five
//!   minutes (2% of a 30-day budget in one hour) → `SLOBurnRate{slo, speed="fast"}`, critical;
//! - slow burn: 6 times too fast over six hours *and* thirty minutes (5% in six hours) →
//!   `SLOBurnRate{slo, speed="slow"}`, warning.
//!
//! The short window makes an alert resolve soon after the burning stops. Burn rate is the
//! error rate divided by the budget (1 - objective): 1 spends the budget exactly over the
//! window.

use std::time::Duration;

use serde::Serialize;
use steward_core::monitoring::SloConfig;

use crate::config::CheckConfigError;

/// The alert a burning SLO raises.
pub const ALERT_NAME: &str = "SLOBurnRate";

/// (speed, long window, short window, burn-rate threshold, severity).
pub const RULES: [(&str, Duration, Duration, f64, &str); 2] = [
    (
        "fast",
        Duration::from_secs(3600),
        Duration::from_secs(300),
        14.4,
        "critical",
    ),
    (
        "slow",
        Duration::from_secs(6 * 3600),
        Duration::from_secs(1800),
        6.0,
        "warning",
    ),
];

/// A compiled SLO.
#[derive(Debug, Clone)]
pub struct Slo {
    pub name: String,
    pub checks: Vec<String>,
    /// The share of good runs, 0 < objective < 1.
    pub objective: f64,
    pub window: Duration,
    pub alerts: bool,
}

/// Good and total runs in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub good: u64,
    pub total: u64,
}

impl Counts {
    pub fn add(&mut self, ok: bool) {
        self.total += 1;
        self.good += u64::from(ok);
    }

    /// The error rate (0 without runs).
    pub fn error_rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.total - self.good) as f64 / self.total as f64
        }
    }
}

impl Slo {
    /// The error budget: the share of runs that may fail.
    pub fn budget(&self) -> f64 {
        1.0 - self.objective
    }

    /// How fast the budget burns at this error rate (1: exactly on budget).
    pub fn burn_rate(&self, c: Counts) -> f64 {
        c.error_rate() / self.budget()
    }

    /// The share of the window's budget left (1 untouched, 0 spent, below 0 overspent).
    pub fn budget_left(&self, window: Counts) -> f64 {
        1.0 - self.burn_rate(window)
    }
}

/// Reads `"99.9%"`, `99.9` or `0.999`.
fn objective(v: &toml::Value) -> Option<f64> {
    let x = match v {
        toml::Value::String(s) => {
            let s = s.trim();
            let (num, pct) = match s.strip_suffix('%') {
                Some(n) => (n.trim(), true),
                None => (s, false),
            };
            let n: f64 = num.parse().ok()?;
            // A percentage, or a plain number of 1 or more, is in percent.
            if pct || n >= 1.0 {
                n / 100.0
            } else {
                n
            }
        }
        toml::Value::Float(f) if *f >= 1.0 => f / 100.0,
        toml::Value::Float(f) => *f,
        toml::Value::Integer(i) => *i as f64 / 100.0,
        _ => return None,
    };
    (x > 0.0 && x < 1.0).then_some(x)
}

/// Compiles `[[monitoring.slos]]`; `checks` are the configured check names.
pub fn compile(slos: &[SloConfig], checks: &[String]) -> Result<Vec<Slo>, CheckConfigError> {
    let mut out: Vec<Slo> = Vec::new();
    for (i, s) in slos.iter().enumerate() {
        let key = format!("monitoring.slos[{i}]");
        let err = |k: &str, m: String| CheckConfigError {
            key: format!("{key}.{k}"),
            message: m,
        };
        if s.name.trim().is_empty() || out.iter().any(|o| o.name == s.name) {
            return Err(err(
                "name",
                format!("{:?} is empty or used twice; SLO names are unique", s.name),
            ));
        }
        if s.checks.is_empty() {
            return Err(err("checks", "lists no checks; name at least one".into()));
        }
        if let Some(c) = s.checks.iter().find(|c| !checks.contains(c)) {
            return Err(err("checks", format!("no check is named {c:?}")));
        }
        let objective = objective(&s.objective).ok_or_else(|| {
            err(
                "objective",
                "must be a share of good runs between 0 and 100%, e.g. \"99.9%\"".into(),
            )
        })?;
        let window = s.window.unwrap_or(Duration::from_secs(30 * 86_400));
        if window < Duration::from_secs(3600) {
            return Err(err(
                "window",
                "must be at least 1h; write e.g. \"30d\"".into(),
            ));
        }
        out.push(Slo {
            name: s.name.clone(),
            checks: s.checks.clone(),
            objective,
            window,
            alerts: s.alerts,
        });
    }
    Ok(out)
}

/// One SLO's state, as listed and as the alerts see it.
#[derive(Debug, Clone, Serialize)]
pub struct SloStatus {
    pub name: String,
    pub checks: Vec<String>,
    pub objective: f64,
    pub window_days: f64,
    /// Good runs over total in the window (None without runs).
    pub attained: Option<f64>,
    pub runs: u64,
    pub budget_left: f64,
    /// Burn rate per window: 5m, 30m, 1h, 6h.
    pub burn: Vec<(String, f64)>,
    /// Speeds whose rule fires now (`fast`, `slow`).
    pub burning: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo(obj: f64) -> Slo {
        Slo {
            name: "s".into(),
            checks: vec!["a".into()],
            objective: obj,
            window: Duration::from_secs(30 * 86_400),
            alerts: true,
        }
    }

    #[test]
    fn objectives_in_every_spelling() {
        for (v, want) in [
            (toml::Value::String("99.9%".into()), 0.999),
            (toml::Value::String("99.9".into()), 0.999),
            (toml::Value::String("0.995".into()), 0.995),
            (toml::Value::Float(99.5), 0.995),
            (toml::Value::Float(0.9), 0.9),
            (toml::Value::Integer(99), 0.99),
        ] {
            assert!((objective(&v).unwrap() - want).abs() < 1e-12, "{v:?}");
        }
        for bad in ["100%", "0", "abc", "-5%"] {
            assert_eq!(objective(&toml::Value::String(bad.into())), None, "{bad}");
        }
    }

    #[test]
    fn burn_rate_and_budget() {
        let s = slo(0.999);
        // 1 failure in 1000 runs spends the budget exactly.
        let c = Counts {
            good: 999,
            total: 1000,
        };
        assert!((s.burn_rate(c) - 1.0).abs() < 1e-9);
        assert!(s.budget_left(c).abs() < 1e-9);
        // 1.44% errors burn 14.4 times too fast: the fast rule's threshold.
        let c = Counts {
            good: 9856,
            total: 10_000,
        };
        assert!((s.burn_rate(c) - 14.4).abs() < 1e-6);
        assert_eq!(s.burn_rate(Counts::default()), 0.0);
        assert_eq!(
            s.budget_left(Counts {
                good: 10,
                total: 10
            }),
            1.0
        );
    }

    #[test]
    fn config_mistakes_name_the_key() {
        let cfg = |checks: Vec<&str>, obj: &str| SloConfig {
            name: "api".into(),
            checks: checks.into_iter().map(String::from).collect(),
            objective: toml::Value::String(obj.into()),
            window: None,
            alerts: true,
        };
        let known = vec!["api".to_string()];
        assert!(compile(&[cfg(vec!["api"], "99.9%")], &known).is_ok());
        let e = compile(&[cfg(vec!["nope"], "99.9%")], &known).unwrap_err();
        assert_eq!(e.key, "monitoring.slos[0].checks");
        let e = compile(&[cfg(vec!["api"], "101%")], &known).unwrap_err();
        assert_eq!(e.key, "monitoring.slos[0].objective");
        let e = compile(&[cfg(vec!["api"], "99%"), cfg(vec!["api"], "99%")], &known).unwrap_err();
        assert_eq!(e.key, "monitoring.slos[1].name");
    }
}
