//! `queue`: the depth of a job queue: a Redis list or a RabbitMQ queue.
//!
//! # Settings
//!
//! ```toml
//! [[check]]
//! name = "mail-jobs"
//! type = "queue"
//! backend = "redis"          # required: "redis" or "rabbitmq"
//! key = "queue:mail"         # the list (LLEN); a missing key has depth 0
//! host = "cache.internal"    # default 127.0.0.1; port (6379), username, password_secret, db (0)
//!
//! [[check]]
//! name = "billing-jobs"
//! type = "queue"
//! backend = "rabbitmq"
//! queue = "billing"          # required
//! url_secret = "prod/rabbit#url"   # a secret holding amqp[s]://user:password@host:port/vhost
//! # ...or instead of url_secret: host (127.0.0.1), port (5672), user (guest),
//! # password_secret, vhost ("/")
//! condition = "depth < 500 && consumers > 0"
//! ```
//!
//! # Facts
//!
//! `depth` (messages waiting: the list's length, or the queue's ready messages), `consumers`
//! (RabbitMQ only), `connected`, `response_time`. Phases: `connect`, `depth`. The default
//! condition is `depth < 1000`.
//!
//! RabbitMQ is asked with a passive `queue.declare`, which creates nothing: a queue that does
//! not exist is an error saying so. The management API is not needed.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use lapin::{
    options::QueueDeclareOptions,
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
    types::FieldTable,
    uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo},
    Connection, ConnectionProperties,
};
use zeroize::Zeroizing;

use steward_core::text::redact;

use crate::{
    database::shared::{self, resolve_secret, Progress, SettingsExt},
    redis::Endpoint,
    support::Settings,
    Facts, Outcome, Probe, ProbeConfigError, SecretSource,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[(
    "queue",
    "Queue depth: a Redis list or a RabbitMQ queue (facts depth, consumers)",
)];

const REDIS_FACTS: &[&str] = &["connected", "depth", "response_time"];
const RABBIT_FACTS: &[&str] = &["connected", "depth", "consumers", "response_time"];

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    if kind != "queue" {
        return Err(ProbeConfigError {
            kind: kind.to_string(),
            key: "type".into(),
            message: "not a queue check type; use \"queue\"".into(),
        });
    }
    let mut s = Settings::new("", "queue", settings)?;
    let backend = match s.opt_str("backend")? {
        None => {
            return Err(s.error(
                "backend",
                "missing; a queue check needs backend = \"redis\" or \"rabbitmq\"",
            ))
        }
        Some(b) => b,
    };
    let probe = match backend.trim().to_ascii_lowercase().as_str() {
        "redis" => {
            let endpoint = Endpoint::read(&mut s)?;
            let key = s.req_str("key", "the list's key (e.g. \"queue:mail\")")?;
            Queue::Redis { endpoint, key }
        }
        "rabbitmq" | "amqp" => Queue::Rabbit(Rabbit::read(&mut s)?),
        other => {
            return Err(s.error(
                "backend",
                format!(
                    "{:?} is not a queue backend; use \"redis\" or \"rabbitmq\"",
                    shared::one_line(other, 32)
                ),
            ))
        }
    };
    s.finish()?;
    Ok(Arc::new(probe))
}

/// The `queue` probe.
#[derive(Debug)]
enum Queue {
    Redis { endpoint: Endpoint, key: String },
    Rabbit(Rabbit),
}

#[async_trait]
impl Probe for Queue {
    fn kind(&self) -> &'static str {
        "queue"
    }
    fn default_condition(&self) -> &'static str {
        "depth < 1000"
    }
    fn facts(&self) -> &'static [&'static str] {
        match self {
            Queue::Redis { .. } => REDIS_FACTS,
            Queue::Rabbit(_) => RABBIT_FACTS,
        }
    }

    async fn run(&self, secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let progress = Progress::start(timeout);
        let mut facts = Facts::new();
        let error = match self {
            Queue::Redis { endpoint, key } => {
                let command = vec!["LLEN".to_string(), key.clone()];
                match endpoint.query(secrets, &progress, "depth", command).await {
                    Ok(redis::Value::Int(n)) => {
                        facts.insert("depth", n);
                        None
                    }
                    Ok(_) => Some("Redis answered LLEN with something other than a number; is this a Redis server?".into()),
                    Err(e) if e.contains("WRONGTYPE") => Some(format!(
                        "the key {key:?} is not a list (WRONGTYPE); the redis backend reads a list's length: check `key`"
                    )),
                    Err(e) => Some(e),
                }
            }
            Queue::Rabbit(r) => {
                let work = r.depth(secrets, &progress, &mut facts);
                match tokio::time::timeout_at(progress.deadline().into(), work).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(progress.timed_out()),
                }
            }
        };
        progress.finish(facts, error)
    }
}

/// Where a RabbitMQ queue is and how to log in.
#[derive(Debug)]
struct Rabbit {
    queue: String,
    login: RabbitLogin,
}

#[derive(Debug)]
enum RabbitLogin {
    /// A secret reference to a whole `amqp://` URL (which holds the password).
    Url(String),
    Parts {
        host: String,
        port: u16,
        user: String,
        password_secret: Option<String>,
        vhost: String,
    },
}

impl Rabbit {
    fn read(s: &mut Settings) -> Result<Self, ProbeConfigError> {
        let queue = s.req_str("queue", "the queue's name")?;
        if queue.len() > 255 {
            return Err(s.error("queue", "is longer than 255 bytes, the AMQP limit"));
        }
        let login = match s.opt_secret_ref("url_secret")? {
            Some(url) => {
                for key in ["host", "port", "user", "password_secret", "vhost"] {
                    if s.opt_raw(key).is_some() {
                        return Err(s.error(
                            key,
                            "cannot be given with url_secret (the URL says it); remove one of them",
                        ));
                    }
                }
                RabbitLogin::Url(url)
            }
            None => RabbitLogin::Parts {
                host: s.host("host")?,
                port: s.port("port", 5672)?,
                user: s.opt_str("user")?.unwrap_or_else(|| "guest".into()),
                password_secret: s.opt_secret_ref("password_secret")?,
                vhost: s.opt_str("vhost")?.unwrap_or_else(|| "/".into()),
            },
        };
        Ok(Rabbit { queue, login })
    }

    /// The URI to connect to, the password to keep out of messages, and where the secret for
    /// the login is (for hints).
    async fn uri(
        &self,
        secrets: &dyn SecretSource,
    ) -> Result<(AMQPUri, Zeroizing<String>, String), String> {
        match &self.login {
            RabbitLogin::Url(reference) => {
                let url = resolve_secret(secrets, "url_secret", reference).await?;
                let uri = parse_amqp_url(url.trim()).map_err(|what| {
                    format!(
                        "the secret {reference} does not hold a usable RabbitMQ URL ({what}); \
                         store amqp://user:password@host:port/vhost (or amqps://)"
                    )
                })?;
                let password = Zeroizing::new(uri.authority.userinfo.password.clone());
                Ok((uri, password, format!("the secret {reference}")))
            }
            RabbitLogin::Parts {
                host,
                port,
                user,
                password_secret,
                vhost,
            } => {
                let password = match password_secret {
                    Some(r) => resolve_secret(secrets, "password_secret", r).await?,
                    None => Zeroizing::new(String::new()),
                };
                let uri = AMQPUri {
                    scheme: AMQPScheme::AMQP,
                    authority: AMQPAuthority {
                        userinfo: AMQPUserInfo {
                            username: user.clone(),
                            password: password.to_string(),
                        },
                        host: host.clone(),
                        port: *port,
                    },
                    vhost: vhost.clone(),
                    query: AMQPQueryString::default(),
                };
                let hint = match password_secret {
                    Some(r) => format!("the secret {r} and `user`"),
                    None => "`user` and password_secret".to_string(),
                };
                Ok((uri, password, hint))
            }
        }
    }

    async fn depth(
        &self,
        secrets: &dyn SecretSource,
        progress: &Progress,
        facts: &mut Facts,
    ) -> Result<(), String> {
        progress.begin("connect", "connecting to RabbitMQ".to_string());
        let (uri, password, hint) = self.uri(secrets).await?;
        let hide = [password.as_str()];
        let at = format!(
            "RabbitMQ at {}",
            shared::host_port(&uri.authority.host, uri.authority.port)
        );
        let user = uri.authority.userinfo.username.clone();
        let vhost = uri.vhost.clone();
        progress.begin("connect", format!("connecting to {at}"));
        let props = ConnectionProperties::default().with_connection_name("steward-probe".into());
        let conn = Connection::connect_uri(uri, props)
            .await
            .map_err(|e| redact(&connect_error(&at, &user, &vhost, &hint, &e), &hide))?;
        progress.connected();

        progress.begin("depth", format!("asking {at} about queue {:?}", self.queue));
        let result = async {
            let channel = conn.create_channel().await?;
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(self.queue.as_str().into(), options, FieldTable::default())
                .await
        }
        .await;
        // Close politely, but never past the deadline.
        let close = conn.close(200, "steward probe done".into());
        let _ = tokio::time::timeout(progress.remaining().min(Duration::from_secs(1)), close).await;
        let queue = result.map_err(|e| redact(&self.declare_error(&at, &vhost, &e), &hide))?;
        facts.insert("depth", u64::from(queue.message_count()));
        facts.insert("consumers", u64::from(queue.consumer_count()));
        Ok(())
    }

    fn declare_error(&self, at: &str, vhost: &str, e: &lapin::Error) -> String {
        if let lapin::ErrorKind::ProtocolError(amqp) = e.kind() {
            let text = shared::one_line(amqp.get_message().as_str(), 200);
            match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                    return format!(
                        "queue {:?} does not exist in vhost {vhost:?} on {at} (404 NOT_FOUND); check `queue` and the vhost",
                        self.queue
                    )
                }
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                    return format!(
                        "{at} refused access to queue {:?} ({text}); give the user configure permission on it",
                        self.queue
                    )
                }
                _ => return format!("{at} refused the queue check: {text}"),
            }
        }
        format!(
            "checking queue {:?} on {at} failed: {}",
            self.queue,
            shared::error_chain(e)
        )
    }
}

fn connect_error(at: &str, user: &str, vhost: &str, hint: &str, e: &lapin::Error) -> String {
    if let lapin::ErrorKind::ProtocolError(amqp) = e.kind() {
        let text = shared::one_line(amqp.get_message().as_str(), 200);
        return match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
                if text.contains("vhost") =>
            {
                format!("{at} refused user {user:?} access to vhost {vhost:?} ({text}); check the vhost and the user's permissions")
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                format!("{at} refused the login for user {user:?} ({text}); check {hint}")
            }
            _ => format!("{at} refused the connection: {text}"),
        };
    }
    let chain = shared::error_chain(e);
    if let Some(io) = shared::find_io(e) {
        return shared::io_error(at, io, &chain);
    }
    format!("could not connect to {at}: {chain}")
}

/// Parses `amqp[s]://user:password@host:port/vhost`. The error says what is wrong without
/// quoting the URL (it holds the password).
fn parse_amqp_url(s: &str) -> Result<AMQPUri, &'static str> {
    let url = reqwest::Url::parse(s).map_err(|_| "not a URL")?;
    let scheme = match url.scheme() {
        "amqp" => AMQPScheme::AMQP,
        "amqps" => AMQPScheme::AMQPS,
        _ => return Err("the scheme is not amqp:// or amqps://"),
    };
    // IPv6 hosts come bracketed; the connection wants the bare address.
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err("there is no host"),
    };
    let port = url.port().unwrap_or(match scheme {
        AMQPScheme::AMQP => 5672,
        AMQPScheme::AMQPS => 5671,
    });
    let username = match url.username() {
        "" => "guest".to_string(),
        u => percent_decode(u).ok_or("the user name is not valid percent-encoding")?,
    };
    let password = match url.password() {
        None => "guest".to_string(),
        Some(p) => percent_decode(p).ok_or("the password is not valid percent-encoding")?,
    };
    // As RabbitMQ's own clients read it: no path is the default vhost "/", "/" is the vhost
    // "", and "/%2f" is "/".
    let vhost = match url.path() {
        "" => "/".to_string(),
        p => percent_decode(p.strip_prefix('/').unwrap_or(p))
            .ok_or("the vhost is not valid percent-encoding")?,
    };
    Ok(AMQPUri {
        scheme,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo { username, password },
            host,
            port,
        },
        vhost,
        query: AMQPQueryString::default(),
    })
}

/// Decodes `%XX` escapes; `None` when an escape is broken or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn amqp_urls_parse_like_rabbitmq_clients() {
        let u = parse_amqp_url("amqp://app:p%40ss@10.0.0.5:5673/%2f").unwrap();
        assert_eq!(u.authority.host, "10.0.0.5");
        assert_eq!(u.authority.port, 5673);
        assert_eq!(u.authority.userinfo.username, "app");
        assert_eq!(u.authority.userinfo.password, "p@ss");
        assert_eq!(u.vhost, "/");
        let u = parse_amqp_url("amqps://mq.internal").unwrap();
        assert_eq!(u.authority.port, 5671);
        assert_eq!(u.vhost, "/");
        assert_eq!(parse_amqp_url("amqp://h/").unwrap().vhost, "");
        assert_eq!(parse_amqp_url("amqp://h/jobs").unwrap().vhost, "jobs");
        assert!(parse_amqp_url("http://h/").is_err());
        assert!(parse_amqp_url("amqp://u:%zz@h/").is_err());
        assert!(parse_amqp_url("nonsense").is_err());
    }

    #[test]
    fn settings_are_checked() {
        let e = build("queue", &json!({"key": "k"}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "backend");
        let e = build("queue", &json!({"backend": "kafka"}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "backend");
        let e = build("queue", &json!({"backend": "redis"}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "key");
        let e = build(
            "queue",
            &json!({"backend": "redis", "key": "k", "queue": "q"}),
        )
        .err()
        .expect("a config error");
        assert_eq!(e.key, "queue");
        let e = build("queue", &json!({"backend": "rabbitmq"}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "queue");
        let e = build(
            "queue",
            &json!({"backend": "rabbitmq", "queue": "q", "url_secret": "prod/mq#url", "host": "h"}),
        )
        .err()
        .expect("a config error");
        assert_eq!(e.key, "host");
        let p = build("queue", &json!({"backend": "rabbitmq", "queue": "q"})).unwrap();
        assert_eq!(p.default_condition(), "depth < 1000");
        assert!(p.facts().contains(&"consumers"));
        let p = build("queue", &json!({"backend": "redis", "key": "k"})).unwrap();
        assert!(!p.facts().contains(&"consumers"));
    }
}
