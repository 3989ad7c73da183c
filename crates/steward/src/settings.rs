//! Effective settings: defaults, then steward.toml, then environment variables and flags (clap
//! already merged those two). The only place that reads the process environment besides clap.

use std::path::{Path, PathBuf};

use anyhow::Context;
use steward_core::config::{Config, ConfigError};

use crate::cli::Global;

/// A configuration problem (exit code 3).
#[derive(Debug)]
pub struct ConfigProblem(pub String);

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigProblem {}

/// Loads the configuration file (explicit, or ./steward.toml when present) and applies the
/// global flags.
pub fn load(global: &Global) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let path = match &global.config {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from("steward.toml")).filter(|p| p.exists()),
    };
    let mut cfg = match &path {
        Some(p) => parse_file(p)?,
        None => Config::default(),
    };
    if let Some(d) = &global.data {
        cfg.store.data = d.clone();
    }
    if let Some(s) = &global.store {
        cfg.store.url = s.clone();
    }
    if let Ok(level) = std::env::var("STEWARD_LOG") {
        cfg.log.level = level;
    }
    if let Ok(fmt) = std::env::var("STEWARD_LOG_FORMAT") {
        cfg.log.format = match fmt.as_str() {
            "json" => steward_core::config::LogFormat::Json,
            "human" => steward_core::config::LogFormat::Human,
            other => {
                return Err(ConfigProblem(format!(
                    "STEWARD_LOG_FORMAT={other:?} is not valid; use human or json"
                ))
                .into())
            }
        };
    }
    cfg.validate()
        .map_err(|(key, msg)| ConfigProblem(format!("{key}: {msg}")))?;
    Ok((cfg, path))
}

fn parse_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigProblem(format!("cannot read {}: {e}", path.display())))?;
    Config::parse(&text, &path.display().to_string())
        .map_err(|e: ConfigError| anyhow::Error::new(ConfigProblem(e.to_string())))
        .context("invalid configuration")
}

/// Checks `[alerting]` fully (references, matchers, cron, time zones, channel settings) and
/// reports a mistake with file and line. Only `up` and `config check` call it: client
/// commands do not pay for building channels they never use.
pub fn check_alerting(cfg: &Config, path: Option<&Path>) -> anyhow::Result<()> {
    let Err(e) = steward_alerting::config::check(&cfg.alerting) else {
        return Ok(());
    };
    config_problem(path, &e.key, &e.message)
}

/// Compiles `[monitoring]` (probe settings, conditions, dependencies); an error names the
/// file and line of the key at fault.
pub fn check_monitoring(cfg: &Config, path: Option<&Path>) -> anyhow::Result<()> {
    let data = cfg.store.data.display().to_string();
    let Err(e) = steward_checks::Compiled::compile(&cfg.monitoring, &data) else {
        return Ok(());
    };
    config_problem(path, &e.key, &e.message)
}

/// An invalid-configuration error for `key`, with `file:line:` when the file is known.
fn config_problem(path: Option<&Path>, key: &str, message: &str) -> anyhow::Result<()> {
    let place = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            format!("{}:{}: ", p.display(), locate(&text, key))
        }
        None => String::new(),
    };
    Err(anyhow::Error::new(ConfigProblem(format!(
        "{place}{key}: {message}"
    ))))
    .context("invalid configuration")
}

/// The line a dotted key such as `alerting.receivers[2].channels` is written on: the Nth
/// `[[alerting.receivers]]` header, then the key's line below it (or the header's line).
fn locate(text: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut table = String::new();
    let mut from = 0;
    let mut found = 1;
    for seg in key.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        table = if table.is_empty() {
            name.to_string()
        } else {
            format!("{table}.{name}")
        };
        let header = match index {
            Some(_) => format!("[[{table}]]"),
            None => format!("[{table}]"),
        };
        let mut seen = 0;
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(from) {
            let t = l.trim();
            if t == header {
                if index.is_none_or(|n| seen == n) {
                    hit = Some(i);
                    break;
                }
                seen += 1;
            } else if index.is_none()
                && (t.starts_with(&format!("{name} ")) || t.starts_with(&format!("{name}=")))
            {
                hit = Some(i);
                break;
            }
        }
        if let Some(i) = hit {
            from = i + 1;
            found = i + 1;
        }
    }
    found
}

/// The root token file inside the data directory.
pub fn root_token_path(cfg: &Config) -> PathBuf {
    cfg.store.data.join("root-token")
}

/// The default key file inside the data directory.
pub fn key_file_path(cfg: &Config) -> PathBuf {
    cfg.store.data.join("root.key")
}
