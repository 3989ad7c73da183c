//! `dns`: one DNS query. Reports `values` (the answers of the asked type as strings, sorted:
//! addresses, names without the final dot, `"10 mail.example.com"` for MX, the joined text of
//! each TXT record), `count` and `response_time`. A name that does not exist (NXDOMAIN) or
//! has no record of the type is `count = 0`, not an error; a server that does not answer,
//! refuses or fails (SERVFAIL) is an error.
//!
//! Settings: `name` (always asked as a full name: no search domains, no hosts file),
//! `record` (A, AAAA, CNAME, MX, TXT, NS; default A), `server` (`"ip"` or `"ip:port"`,
//! default the system resolver from /etc/resolv.conf). Answers are never cached between runs.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use hickory_resolver::{
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    net::{runtime::TokioRuntimeProvider, DnsError, NetError},
    proto::rr::{Name, RData, RecordType},
    Resolver, TokioResolver,
};

use crate::{
    support::{error_chain, failed, finish, no_answer, static_kind, Settings},
    Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[(
    "dns",
    "a DNS query (the answers, their count, response time)",
)];

const FACTS: &[&str] = &["values", "count", "response_time"];

const RECORDS: &[(&str, RecordType)] = &[
    ("A", RecordType::A),
    ("AAAA", RecordType::AAAA),
    ("CNAME", RecordType::CNAME),
    ("MX", RecordType::MX),
    ("TXT", RecordType::TXT),
    ("NS", RecordType::NS),
];

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    let kind = static_kind(kind, KINDS)?;
    let mut s = Settings::new("", kind, settings)?;
    let name_text = s.req_str("name", "name, the DNS name to look up")?;
    let mut name = Name::from_utf8(name_text.trim()).map_err(|e| {
        s.error(
            "name",
            format!("{name_text:?} is not a DNS name ({e}); write e.g. \"api.example.com\""),
        )
    })?;
    name.set_fqdn(true);
    let record = match s.opt_str("record")? {
        None => RecordType::A,
        Some(r) => {
            let upper = r.trim().to_ascii_uppercase();
            RECORDS
                .iter()
                .find(|(n, _)| *n == upper)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    s.error(
                        "record",
                        format!(
                            "{r:?} is not a record type this check asks; use one of {}",
                            RECORDS.iter().map(|r| r.0).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?
        }
    };
    let server = match s.opt_str("server")? {
        None => None,
        Some(text) => Some(parse_server(text.trim()).ok_or_else(|| {
            s.error(
                "server",
                format!("{text:?} is not an IP address with an optional port; write e.g. \"10.0.0.2\" or \"10.0.0.2:53\""),
            )
        })?),
    };
    s.finish()?;

    let builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| ProbeConfigError {
            kind: kind.to_string(),
            key: "server".into(),
            message: format!(
                "cannot read the system resolver configuration (/etc/resolv.conf): {}; give server",
                error_chain(&e)
            ),
        })?,
    };
    let mut builder = builder;
    let opts = builder.options_mut();
    // A health check asks the server every time.
    opts.cache_size = 0;
    opts.positive_max_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 1;
    let resolver = builder.build().map_err(|e| ProbeConfigError {
        kind: kind.to_string(),
        key: "server".into(),
        message: format!("cannot set up the resolver: {}", error_chain(&e)),
    })?;

    let server_text = match server {
        Some(a) => format!("the DNS server {a}"),
        None => "the system resolver".to_string(),
    };
    Ok(Arc::new(Dns {
        resolver,
        name,
        record,
        server: server_text,
    }))
}

/// `ip`, `ip:port` or `[v6]:port`.
fn parse_server(text: &str) -> Option<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return (a.port() != 0).then_some(a);
    }
    let ip = text.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

struct Dns {
    resolver: TokioResolver,
    name: Name,
    record: RecordType,
    /// "the DNS server 10.0.0.2:53" or "the system resolver", for errors.
    server: String,
}

#[async_trait]
impl Probe for Dns {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn default_condition(&self) -> &'static str {
        "count > 0"
    }

    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, _secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let lookup = self.resolver.lookup(self.name.clone(), self.record);
        let result = match tokio::time::timeout(timeout, lookup).await {
            Ok(r) => r,
            Err(_) => {
                return failed(
                    start,
                    Facts::new(),
                    format!(
                        "{} from {} for {} {}; is the server up and reachable over UDP?",
                        no_answer(timeout),
                        self.server,
                        self.record,
                        show_name(&self.name)
                    ),
                )
            }
        };
        let mut values: Vec<String> = match result {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| show(&r.data, self.record))
                .collect(),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return failed(start, Facts::new(), self.explain(&e)),
        };
        values.sort_unstable();
        let mut facts = Facts::new();
        facts.insert("count", Value::Number(values.len() as f64));
        facts.insert(
            "values",
            Value::List(values.into_iter().map(Value::String).collect()),
        );
        finish(start, facts, Vec::new(), None)
    }
}

impl Dns {
    fn explain(&self, e: &NetError) -> String {
        let what = format!("{} {}", self.record, show_name(&self.name));
        match e {
            NetError::Timeout => format!(
                "{} did not answer the query for {what}; is the server up and reachable over UDP?",
                self.server
            ),
            NetError::Dns(DnsError::ResponseCode(code)) => format!(
                "{} answered {} to the query for {what}; check that it serves this name and accepts queries from this host",
                self.server,
                // The mnemonic (REFUSED, SERVFAIL), as dig shows it.
                format!("{code:?}").to_ascii_uppercase()
            ),
            NetError::Io(io) => format!(
                "cannot reach {}: {}; is the server up and listening?",
                self.server,
                error_chain(io.as_ref())
            ),
            other => format!(
                "the query for {what} to {} failed: {}",
                self.server,
                error_chain(other)
            ),
        }
    }
}

/// A name without its final dot.
fn show_name(name: &Name) -> String {
    let mut s = name.to_utf8();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

/// One answer of the asked type as text; answers of other types (a CNAME met on the way to
/// an A record) are left out.
fn show(data: &RData, asked: RecordType) -> Option<String> {
    let text = match (data, asked) {
        (RData::A(a), RecordType::A) => a.0.to_string(),
        (RData::AAAA(a), RecordType::AAAA) => a.0.to_string(),
        (RData::CNAME(n), RecordType::CNAME) => show_name(&n.0),
        (RData::NS(n), RecordType::NS) => show_name(&n.0),
        (RData::MX(mx), RecordType::MX) => format!("{} {}", mx.preference, show_name(&mx.exchange)),
        (RData::TXT(txt), RecordType::TXT) => txt
            .txt_data
            .iter()
            .map(|part| String::from_utf8_lossy(part))
            .collect(),
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_settings() {
        assert_eq!(parse_server("10.0.0.2"), "10.0.0.2:53".parse().ok());
        assert_eq!(parse_server("10.0.0.2:5353"), "10.0.0.2:5353".parse().ok());
        assert_eq!(parse_server("[::1]:53"), "[::1]:53".parse().ok());
        assert_eq!(parse_server("::1"), "[::1]:53".parse().ok());
        assert_eq!(parse_server("dns.example.com"), None);
        let e = build(
            "dns",
            &serde_json::json!({"name": "a.example", "record": "SOA", "server": "127.0.0.1"}),
        )
        .err()
        .unwrap();
        assert_eq!(e.key, "record");
        let e = build(
            "dns",
            &serde_json::json!({"name": "a.example", "server": "resolver"}),
        )
        .err()
        .unwrap();
        assert_eq!(e.key, "server");
        assert!(build(
            "dns",
            &serde_json::json!({"name": "a.example", "record": "mx", "server": "127.0.0.1"})
        )
        .is_ok());
    }
}
