//! The `steward.toml` model. Every section denies unknown keys; errors name file, line and key.
//!
//! Precedence is applied by the binary: command-line flag, then environment variable, then this
//! file, then the defaults written here. Later capabilities add their own sections to [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::names::EnvName;

/// The default listen address: loopback, on a port no common service uses.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8731";
/// The default size limit for one secret value.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 512 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub secrets: SecretsConfig,
    pub log: LogConfig,
    pub rotation: RotationConfig,
    pub events: EventsConfig,
    pub alerting: crate::alerting::AlertingConfig,
    pub monitoring: crate::monitoring::MonitoringConfig,
    pub backup: crate::backup::BackupConfig,
}

/// `[rotation]`: the rotation scheduler, expiry warnings and overdue reports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Rotations that run at once.
    pub concurrency: usize,
    /// Scheduled rotations start after a random delay up to this.
    #[serde(deserialize_with = "de_duration")]
    pub jitter: Duration,
    /// First retry delay after a failed step; doubles per attempt up to `retry_max`.
    #[serde(deserialize_with = "de_duration")]
    pub retry_base: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// How long before `expires_at` to warn; `"0s"` warns at expiry.
    #[serde(deserialize_with = "de_durations")]
    pub expiry_warnings: Vec<Duration>,
    /// How often expiry dates are checked.
    #[serde(deserialize_with = "de_duration")]
    pub expiry_scan: Duration,
    /// A rotation this late is reported overdue.
    #[serde(deserialize_with = "de_duration")]
    pub overdue_after: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        let day = 86_400;
        Self {
            concurrency: 4,
            jitter: Duration::from_secs(2),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            expiry_warnings: [7 * day, 3 * day, day, 0]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            expiry_scan: Duration::from_secs(60),
            overdue_after: Duration::from_secs(3600),
        }
    }
}

/// `[events]`: where warnings (expiry, failed or overdue rotations) go besides the log.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// A URL that receives each warning as a JSON POST.
    pub webhook_url: Option<String>,
    /// `ENV/PATH#FIELD` of the Steward secret whose value signs webhook bodies (never the key
    /// itself: config files are not secret).
    pub signing_secret: Option<String>,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Longest time one request may take before it is answered 503.
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// How long in-flight requests get to finish after SIGTERM.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[store]`: where state lives.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory: the embedded SQLite store, the root key file and the root token.
    pub data: PathBuf,
    /// `sqlite` (default) or a `postgres://` URL.
    pub url: String,
    /// SQLite `synchronous` setting: `full` (fsync every commit group) or `normal`.
    pub sqlite_synchronous: SqliteSync,
    /// Read connections kept open.
    pub pool_size: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::from(".steward"),
            url: "sqlite".into(),
            sqlite_synchronous: SqliteSync::Full,
            pool_size: 16,
        }
    }
}

/// SQLite durability level.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    Full,
    Normal,
}

/// `[secrets]`: the secrets engine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Environments that exist; each is mounted at `/v1/<name>/`.
    pub environments: Vec<EnvName>,
    /// The environment the Vault-style `secret` mount maps to.
    pub default_environment: EnvName,
    /// Versions kept per secret unless the secret's metadata says otherwise (0 = unlimited).
    pub max_versions: u32,
    /// Largest accepted value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        let env = |s: &str| EnvName::parse(s).expect("default names are valid");
        Self {
            environments: vec![env("dev"), env("staging"), env("prod")],
            default_environment: env("dev"),
            max_versions: 10,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `steward=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// A configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Config {
    /// Parses and validates `text`, which was read from `file` (used only in messages).
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            let mut message = e.message().trim().to_string();
            // Name the key when the error is about a value written as `key = value`.
            if let Some(key) = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !k.starts_with('[') && !message.contains(*k))
            {
                message = format!("{key}: {message}");
            }
            ConfigError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        })?;
        cfg.validate().map_err(|(key, message)| {
            let (line, column) = find_key(text, key);
            ConfigError {
                file: file.to_string(),
                line,
                column,
                message: format!("{key}: {message}"),
            }
        })?;
        Ok(cfg)
    }

    /// Checks rules that span several keys. Returns the offending key and the message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let s = &self.secrets;
        if s.environments.is_empty() {
            return Err((
                "environments",
                "at least one environment is needed, e.g. environments = [\"dev\", \"prod\"]"
                    .into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for env in &s.environments {
            if !seen.insert(env) {
                return Err(("environments", format!("{env:?} is listed twice")));
            }
        }
        if !s.environments.contains(&s.default_environment) {
            return Err((
                "default_environment",
                format!(
                    "{:?} is not one of the environments {:?}; add it to environments or pick one of those",
                    s.default_environment.as_str(),
                    s.environments.iter().map(|e| e.as_str()).collect::<Vec<_>>()
                ),
            ));
        }
        if s.max_value_bytes == 0 || s.max_value_bytes > 16 * 1024 * 1024 {
            return Err((
                "max_value_bytes",
                "must be between 1 and 16777216 (16 MiB)".into(),
            ));
        }
        if self.store.pool_size == 0 || self.store.pool_size > 256 {
            return Err(("pool_size", "must be between 1 and 256".into()));
        }
        if self.store.url != "sqlite"
            && !self.store.url.starts_with("postgres://")
            && !self.store.url.starts_with("postgresql://")
        {
            return Err(("url", "must be \"sqlite\" or a postgres:// URL".into()));
        }
        if !(1..=256).contains(&self.rotation.concurrency) {
            return Err(("concurrency", "must be between 1 and 256".into()));
        }
        if let Some(url) = &self.events.webhook_url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(("webhook_url", "must be an http:// or https:// URL".into()));
            }
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// Finds where `key = ...` is written, for errors found after parsing.
fn find_key(text: &str, key: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return (i + 1, line.len() - t.len() + 1);
            }
        }
    }
    (1, 1)
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write it like \"30s\", \"5m\" or \"1h\""
        ))
    })
}

fn de_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write it like \"7d\", \"1d\" or \"0s\""
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(text: &str, line: usize, fragment: &str) {
        let err = Config::parse(text, "steward.toml").unwrap_err();
        assert_eq!(err.line, line, "{err}");
        assert!(
            err.to_string().contains(fragment),
            "{err} lacks {fragment:?}"
        );
        assert!(err.to_string().starts_with("steward.toml:"), "{err}");
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("", "x").unwrap(), Config::default());
    }

    #[test]
    fn full_file_parses() {
        let cfg = Config::parse(
            r#"
[server]
listen = "127.0.0.1:9000"
request_timeout = "5s"

[store]
data = "/var/lib/steward"
url = "postgres://postgres@127.0.0.1/test"
sqlite_synchronous = "normal"

[secrets]
environments = ["dev", "prod"]
default_environment = "prod"
max_versions = 3

[log]
format = "json"
level = "debug"
"#,
            "x",
        )
        .unwrap();
        assert_eq!(cfg.server.listen.port(), 9000);
        assert_eq!(cfg.server.request_timeout, Duration::from_secs(5));
        assert_eq!(cfg.secrets.default_environment.as_str(), "prod");
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.store.sqlite_synchronous, SqliteSync::Normal);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        check_err(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n",
            3,
            "lisen",
        );
        check_err("[server]\nlisten = \"nope\"\n", 2, "invalid socket address");
        check_err("[serer]\n", 1, "serer");
        check_err("[server]\nrequest_timeout = \"ten\"\n", 2, "write it like");
        check_err(
            "[server]\nrequest_timeout = \"ten\"\n",
            2,
            "request_timeout",
        );
        check_err("[secrets]\nenvironments = [\"dev\", \"Prod\"]\n", 2, "Prod");
        check_err(
            "[secrets]\nenvironments = [\"dev\"]\ndefault_environment = \"prod\"\n",
            3,
            "default_environment",
        );
        check_err("[secrets]\nmax_value_bytes = 0\n", 2, "max_value_bytes");
        check_err("[store]\nurl = \"mysql://x\"\n", 2, "url");
        check_err("[secrets]\nenvironments = [\"dev\", \"dev\"]\n", 2, "twice");
    }
}
