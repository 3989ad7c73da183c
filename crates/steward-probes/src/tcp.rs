//! `tcp`: can a TCP connection be opened to `host:port`? Reports `connected` and the time it
//! took (phases `dns` and `connect`); a refused or unreachable port is `connected = false` with
//! an error that says so. The connection is closed right away; nothing is sent.
//!
//! Settings: `host` and `port`, or `address = "host:port"` (`"[::1]:80"` for IPv6).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::net::TcpStream;

use crate::{
    support::{error_chain, failed, finish, no_answer, static_kind, Settings},
    Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[(
    "tcp",
    "opens a TCP connection to host:port (connected, response time)",
)];

const FACTS: &[&str] = &["connected", "response_time"];

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    let kind = static_kind(kind, KINDS)?;
    let mut s = Settings::new("", kind, settings)?;
    let (host, port) = host_port(&mut s, None)?;
    s.finish()?;
    Ok(Arc::new(Tcp { host, port }))
}

/// Reads `host` + `port` or `address`; `default_port` makes `port` optional.
pub(crate) fn host_port(
    s: &mut Settings,
    default_port: Option<u16>,
) -> Result<(String, u16), ProbeConfigError> {
    let address = s.opt_str("address")?;
    let host = s.opt_str("host")?;
    let port = s.opt_port("port")?;
    match (address, host) {
        (Some(_), Some(_)) => Err(s.error(
            "address",
            "give either address = \"host:port\" or host and port, not both",
        )),
        (Some(a), None) => {
            if port.is_some() {
                return Err(s.error(
                    "port",
                    "address already holds the port; remove port or write host and port",
                ));
            }
            split_address(a.trim()).ok_or_else(|| {
                s.error(
                    "address",
                    format!(
                        "{a:?} is not host:port; write e.g. \"db1.internal:5432\" or \"[::1]:80\""
                    ),
                )
            })
        }
        (None, Some(h)) => {
            let h = h.trim().trim_start_matches('[').trim_end_matches(']');
            if h.contains(char::is_whitespace) || h.contains('/') {
                return Err(s.error("host", format!("{h:?} is not a host name or IP address")));
            }
            match port.or(default_port) {
                Some(p) => Ok((h.to_string(), p)),
                None => Err(s.missing("port", "port, the TCP port to connect to")),
            }
        }
        (None, None) => Err(s.missing("host", "host (and port), or address = \"host:port\"")),
    }
}

/// `host:port` or `[v6]:port`.
fn split_address(a: &str) -> Option<(String, u16)> {
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return (sa.port() != 0).then(|| (sa.ip().to_string(), sa.port()));
    }
    let (host, port) = a.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let ok = !host.is_empty()
        && !host.contains([':', '/', '[', ']'])
        && !host.contains(char::is_whitespace);
    ok.then(|| (host.to_string(), port))
}

struct Tcp {
    host: String,
    port: u16,
}

#[async_trait]
impl Probe for Tcp {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn default_condition(&self) -> &'static str {
        "connected"
    }

    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, _secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let mut phases = Vec::with_capacity(3);
        let attempt = connect(&self.host, self.port, &mut phases);
        let result = tokio::time::timeout(timeout, attempt).await;
        let mut facts = Facts::new();
        match result {
            Ok(Ok(stream)) => {
                drop(stream);
                facts.insert("connected", Value::Bool(true));
                finish(start, facts, phases, None)
            }
            Ok(Err(e)) => {
                facts.insert("connected", Value::Bool(false));
                finish(start, facts, phases, Some(e))
            }
            Err(_) => {
                facts.insert("connected", Value::Bool(false));
                failed(
                    start,
                    facts,
                    format!(
                        "{} (connecting to {}); is a firewall dropping the packets, or is the host down?",
                        no_answer(timeout),
                        show_addr(&self.host, self.port)
                    ),
                )
            }
        }
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn show_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `host` and connects to its addresses in turn; records the `dns` and `connect`
/// phases. The error says what failed, with a hint.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    phases: &mut Vec<(&'static str, Duration)>,
) -> Result<TcpStream, String> {
    let t = Instant::now();
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(e) => {
            return Err(format!(
                "cannot resolve {host:?}: {}; check the host name",
                error_chain(&e)
            ))
        }
    };
    phases.push(("dns", t.elapsed()));
    let t = Instant::now();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                phases.push(("connect", t.elapsed()));
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    phases.push(("connect", t.elapsed()));
    let where_ = show_addr(host, port);
    Err(match last {
        None => format!("{host:?} has no addresses; check the host name"),
        Some(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => format!(
                "cannot connect to {where_}: connection refused; is the service running and listening on port {port}?"
            ),
            _ => format!(
                "cannot connect to {where_}: {}; check the host, the port and any firewall between",
                error_chain(&e)
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(split_address("db1:5432"), Some(("db1".into(), 5432)));
        assert_eq!(split_address("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_address("127.0.0.1:0"), None);
        assert_eq!(split_address("db1"), None);
        assert_eq!(split_address("a:b:80"), None);
        assert_eq!(show_addr("::1", 80), "[::1]:80");
    }

    #[test]
    fn settings() {
        let e = build("tcp", &serde_json::json!({"host": "x"}))
            .err()
            .unwrap();
        assert_eq!(e.key, "port");
        let e = build("tcp", &serde_json::json!({"address": "x:1", "host": "x"}))
            .err()
            .unwrap();
        assert_eq!(e.key, "address");
        let e = build("tcp", &serde_json::json!({"address": "x:1", "bogus": 1}))
            .err()
            .unwrap();
        assert_eq!(e.key, "bogus");
        assert!(e.message.contains("address, host, port"), "{e}");
        assert!(build("tcp", &serde_json::json!({"address": "[::1]:22"})).is_ok());
    }
}
