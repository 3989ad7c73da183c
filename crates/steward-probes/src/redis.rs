//! `redis`: connect, log in, and run one read-only command.
//!
//! # Settings
//!
//! ```toml
//! [[check]]
//! name = "cache"
//! type = "redis"
//! host = "cache.internal"     # default 127.0.0.1
//! port = 6379                 # default 6379
//! username = "monitor"        # optional (Redis 6 ACL user)
//! password_secret = "prod/cache#password"   # optional secret reference
//! db = 0                      # default 0
//! command = "INFO memory"     # default PING; a string or a list ["GET", "my key"]
//! condition = "info.used_memory < 1000000000"
//! ```
//!
//! Only commands that read are accepted (checked when the config loads): `PING [message]`,
//! `GET key`, `EXISTS key...`, `LLEN`, `SCARD`, `ZCARD`, `HLEN`, `XLEN` (one key each),
//! `DBSIZE` and `INFO [section]`.
//!
//! # Facts
//!
//! `connected` (the login and `SELECT db` succeeded), `reply` (the command's answer: a number
//! when it is an integer or a bulk string that reads as a number, otherwise a string; null for
//! a missing key), `response_time`; for `INFO`, also `info.FIELD` for each `field:value` line
//! (a number when the value reads as one) and `info.FIELD.SUB` for values like
//! `db0:keys=12,expires=0` (`info.db0.keys`). Phases: `connect`, `command`. The default
//! condition is `connected`.
//!
//! The connection is plain TCP (no `rediss://` TLS yet).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use steward_core::text::redact;

use crate::{
    database::shared::{self, resolve_secret, Progress, SettingsExt},
    support::Settings,
    Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[(
    "redis",
    "Redis: log in and run a read-only command (facts reply, info.*)",
)];

const FACTS: &[&str] = &["connected", "reply", "response_time", "info.*"];

/// Read-only commands: name, fewest and most arguments.
const ALLOWED: &[(&str, usize, usize)] = &[
    ("PING", 0, 1),
    ("GET", 1, 1),
    ("EXISTS", 1, usize::MAX),
    ("LLEN", 1, 1),
    ("SCARD", 1, 1),
    ("ZCARD", 1, 1),
    ("HLEN", 1, 1),
    ("XLEN", 1, 1),
    ("DBSIZE", 0, 0),
    ("INFO", 0, 1),
];

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    if kind != "redis" {
        return Err(ProbeConfigError {
            kind: kind.to_string(),
            key: "type".into(),
            message: "not a Redis check type; use \"redis\"".into(),
        });
    }
    let mut s = Settings::new("", "redis", settings)?;
    let endpoint = Endpoint::read(&mut s)?;
    let command = match s.opt_words("command")? {
        None => vec!["PING".to_string()],
        Some(words) => check_command(&s, words)?,
    };
    s.finish()?;
    Ok(Arc::new(Redis { endpoint, command }))
}

/// Upper-cases the command name and checks it against [`ALLOWED`]. Only the name is ever
/// quoted back (an argument could be anything, even `AUTH`'s password).
fn check_command(s: &Settings, mut words: Vec<String>) -> Result<Vec<String>, ProbeConfigError> {
    let name = words[0].to_ascii_uppercase();
    let names = ALLOWED.iter().map(|a| a.0).collect::<Vec<_>>().join(", ");
    let Some(&(_, min, max)) = ALLOWED.iter().find(|a| a.0 == name) else {
        return Err(s.error(
            "command",
            format!(
                "{:?} is not allowed: a health check may only read; use one of {names}",
                shared::one_line(&name, 32)
            ),
        ));
    };
    let args = words.len() - 1;
    if args < min || args > max {
        let want = match (min, max) {
            (0, 0) => "no arguments".to_string(),
            (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
            (0, b) => format!("at most {b} argument"),
            (a, _) => format!("at least {a} argument"),
        };
        return Err(s.error(
            "command",
            format!("{name} takes {want}, not {args}; e.g. \"GET my:key\" or [\"GET\", \"key with spaces\"]"),
        ));
    }
    words[0] = name;
    Ok(words)
}

/// Where and how to log in to Redis (shared with the `queue` probe's Redis backend).
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    username: Option<String>,
    /// A secret reference, never the password.
    password_secret: Option<String>,
    db: i64,
}

impl Endpoint {
    /// Reads `host`, `port`, `username`, `password_secret` and `db`.
    pub(crate) fn read(s: &mut Settings) -> Result<Self, ProbeConfigError> {
        Ok(Endpoint {
            host: s.host("host")?,
            port: s.port("port", 6379)?,
            username: s.opt_str("username")?,
            password_secret: s.opt_secret_ref("password_secret")?,
            // Redis allows 16 databases by default; configurable up to a large number.
            db: s.u64_at_most("db", 0, 1_000_000)? as i64,
        })
    }

    fn addr(&self) -> String {
        shared::host_port(&self.host, self.port)
    }

    /// Connects (phase `connect`), then runs `command` (phase `phase`) and returns its reply.
    pub(crate) async fn query(
        &self,
        secrets: &dyn SecretSource,
        progress: &Progress,
        phase: &'static str,
        command: Vec<String>,
    ) -> Result<redis::Value, String> {
        progress.begin("connect", format!("connecting to Redis at {}", self.addr()));
        let password = match &self.password_secret {
            Some(r) => {
                let fut = resolve_secret(secrets, "password_secret", r);
                match tokio::time::timeout_at(progress.deadline().into(), fut).await {
                    Ok(r) => Some(r?),
                    Err(_) => return Err(progress.timed_out()),
                }
            }
            None => None,
        };
        let endpoint = self.clone();
        let p = progress.clone();
        shared::blocking(progress, move || {
            let hide: Vec<&str> = password.iter().map(|p| p.as_str()).collect();
            endpoint
                .query_blocking(password.as_deref().map(String::as_str), &p, phase, &command)
                .map_err(|e| redact(&e, &hide))
        })
        .await
    }

    fn query_blocking(
        &self,
        password: Option<&str>,
        progress: &Progress,
        phase: &'static str,
        command: &[String],
    ) -> Result<redis::Value, String> {
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(self.host.clone(), self.port),
            redis: redis::RedisConnectionInfo {
                db: self.db,
                username: self.username.clone(),
                password: password.map(str::to_string),
                ..Default::default()
            },
        };
        let at = format!("Redis at {}", self.addr());
        let client = redis::Client::open(info).map_err(|e| {
            format!(
                "bad Redis address {at}: {}",
                shared::one_line(&e.to_string(), 200)
            )
        })?;
        let mut con = client
            .get_connection_with_timeout(progress.remaining())
            .map_err(|e| self.error(&at, &e, progress, "connect"))?;
        progress.connected();

        progress.begin(phase, format!("running {} on {at}", command[0]));
        let left = Some(progress.remaining());
        con.set_read_timeout(left)
            .and_then(|()| con.set_write_timeout(left))
            .map_err(|e| self.error(&at, &e, progress, phase))?;
        let mut cmd = redis::cmd(&command[0]);
        for arg in &command[1..] {
            cmd.arg(arg);
        }
        cmd.query::<redis::Value>(&mut con)
            .map_err(|e| self.error(&at, &e, progress, phase))
    }

    fn error(&self, at: &str, e: &redis::RedisError, progress: &Progress, phase: &str) -> String {
        let text = shared::one_line(&e.to_string(), 300);
        if e.is_timeout() {
            return progress.timed_out();
        }
        if e.is_connection_refusal() {
            return format!(
                "could not connect to {at}: connection refused; is the server running and listening on that address and port?"
            );
        }
        let code = e.code().unwrap_or("");
        let user = match &self.username {
            Some(u) => format!("user {u:?}"),
            None => "the default user".to_string(),
        };
        if code == "NOPERM" {
            return format!(
                "{at}: {user} may not run this command (NOPERM); allow it in the user's ACL (e.g. +@read)"
            );
        }
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(code, "WRONGPASS" | "NOAUTH")
        {
            return match (&self.password_secret, code) {
                (None, _) | (_, "NOAUTH") => format!(
                    "{at} asks for a password ({user}, NOAUTH); set password_secret"
                ),
                (Some(r), _) => format!(
                    "{at} refused the login for {user}: wrong user name or password; check the secret {r} and `username`"
                ),
            };
        }
        if phase == "connect" {
            if text.contains("DB index") {
                return format!("{at} refused `db` {} ({text}); check `db`", self.db);
            }
            if let Some(io) = shared::find_io(e) {
                return shared::io_error(at, io, &text);
            }
            return format!("could not connect to {at}: {text}");
        }
        if code == "WRONGTYPE" {
            return format!("{at}: the key holds another type ({text}); check the key");
        }
        format!("{at} answered with an error: {text}")
    }
}

/// The `redis` probe.
#[derive(Debug)]
struct Redis {
    endpoint: Endpoint,
    /// Upper-case name, then arguments.
    command: Vec<String>,
}

#[async_trait]
impl Probe for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }
    fn default_condition(&self) -> &'static str {
        "connected"
    }
    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let progress = Progress::start(timeout);
        let mut facts = Facts::new();
        let reply = self
            .endpoint
            .query(secrets, &progress, "command", self.command.clone())
            .await;
        let error = match reply {
            Ok(reply) => {
                let reply = reply_value(&reply);
                if self.command[0] == "INFO" {
                    if let Value::String(text) = &reply {
                        info_facts(text, &mut facts);
                    }
                }
                facts.insert("reply", reply);
                None
            }
            Err(e) => Some(e),
        };
        progress.finish(facts, error)
    }
}

/// A reply as a fact value: integers and numeric text as numbers, other text as strings,
/// nil as null, arrays as lists.
pub(crate) fn reply_value(v: &redis::Value) -> Value {
    match v {
        redis::Value::Nil => Value::Null,
        redis::Value::Int(i) => Value::Number(*i as f64),
        redis::Value::Double(f) => Value::Number(*f),
        redis::Value::Boolean(b) => Value::Bool(*b),
        redis::Value::Okay => Value::String("OK".into()),
        redis::Value::SimpleString(s) => text_value(s),
        redis::Value::BulkString(b) => text_value(&String::from_utf8_lossy(b)),
        redis::Value::VerbatimString { text, .. } => text_value(text),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            Value::List(items.iter().map(reply_value).collect())
        }
        _ => Value::Null,
    }
}

fn text_value(s: &str) -> Value {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && !s.trim().is_empty() => Value::Number(n),
        _ => Value::String(s.to_string()),
    }
}

/// `info.FIELD` for each `field:value` line of an `INFO` reply, and `info.FIELD.SUB` for
/// `sub=value,...` lists.
fn info_facts(text: &str, facts: &mut Facts) {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if field.is_empty() {
            continue;
        }
        if value.contains('=') {
            for pair in value.split(',') {
                if let Some((sub, v)) = pair.split_once('=') {
                    if !sub.is_empty() {
                        facts.insert(format!("info.{field}.{sub}"), text_value(v));
                    }
                }
            }
        }
        facts.insert(format!("info.{field}"), text_value(value));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_read_commands_are_accepted() {
        for ok in [
            json!({}),
            json!({"command": "ping"}),
            json!({"command": "GET a"}),
            json!({"command": ["GET", "key with spaces"]}),
            json!({"command": "EXISTS a b c"}),
            json!({"command": "INFO memory"}),
            json!({"command": "DBSIZE"}),
        ] {
            build("redis", &ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = build("redis", &json!({"command": "SET a b"}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "command");
        assert!(e.message.contains("\"SET\" is not allowed"), "{e}");
        let e = build("redis", &json!({"command": "AUTH hunter2"}))
            .err()
            .expect("a config error");
        assert!(!e.message.contains("hunter2"), "{e}");
        let e = build("redis", &json!({"command": "GET"}))
            .err()
            .expect("a config error");
        assert!(e.message.contains("GET takes 1 argument, not 0"), "{e}");
        let e = build("redis", &json!({"command": "DBSIZE x"}))
            .err()
            .expect("a config error");
        assert!(e.message.contains("no arguments"), "{e}");
        let e = build("redis", &json!({"command": ""}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "command");
        let e = build("redis", &json!({"db": -1}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "db");
    }

    #[test]
    fn info_lines_become_facts() {
        let mut f = Facts::new();
        info_facts(
            "# Clients\r\nconnected_clients:3\r\nredis_mode:standalone\r\ndb0:keys=12,expires=0\r\n",
            &mut f,
        );
        assert_eq!(f.get("info.connected_clients"), Some(&Value::Number(3.0)));
        assert_eq!(
            f.get("info.redis_mode"),
            Some(&Value::String("standalone".into()))
        );
        assert_eq!(f.get("info.db0.keys"), Some(&Value::Number(12.0)));
    }

    #[test]
    fn replies_become_values() {
        assert_eq!(reply_value(&redis::Value::Nil), Value::Null);
        assert_eq!(
            reply_value(&redis::Value::BulkString(b"42".to_vec())),
            Value::Number(42.0)
        );
        assert_eq!(
            reply_value(&redis::Value::SimpleString("PONG".into())),
            Value::String("PONG".into())
        );
        assert_eq!(
            reply_value(&redis::Value::BulkString(b"nan".to_vec())),
            Value::String("nan".into())
        );
    }
}
