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

/// The root token file inside the data directory.
pub fn root_token_path(cfg: &Config) -> PathBuf {
    cfg.store.data.join("root-token")
}

/// The default key file inside the data directory.
pub fn key_file_path(cfg: &Config) -> PathBuf {
    cfg.store.data.join("root.key")
}
