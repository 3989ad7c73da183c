//! `tls`: a TLS handshake with `host:port`, to watch a certificate. Reports `cert_expires_in`
//! (zero once expired, with `cert_expired`), `chain_valid` (the chain leads to a trusted
//! root and every certificate in it is in date), `chain_error` (why not, else empty),
//! `hostname_valid` (the certificate names `server_name`), `issuer`, `subject`,
//! `tls_version` (`TLSv1.3`) and `response_time`; phases `dns`, `connect`, `tls`.
//!
//! A certificate that does not verify still gets its facts: the handshake accepts any
//! certificate (while still checking the server's handshake signature with the certificate's
//! key), then the chain and the name are verified separately, and the condition decides.
//! Nothing is sent over the connection; it is closed after the handshake. Every run makes a
//! full handshake (no session resumption), so a renewed certificate shows at once.
//!
//! Settings: `host`, `port` (443) or `address = "host:port"`, `server_name` (SNI and the name
//! checked; default `host`), `ca_file` (a PEM file of CA certificates to trust instead of the
//! built-in web roots).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio_rustls::{
    rustls::{
        self,
        client::{verify_server_cert_signed_by_trust_anchor, verify_server_name, Resumption},
        crypto::WebPkiSupportedAlgorithms,
        pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
        server::ParsedCertificate,
        CertificateError, ClientConfig, ProtocolVersion, RootCertStore,
    },
    TlsConnector,
};

use crate::{
    support::{error_chain, finish, no_answer, static_kind, AnyCertificate, CertInfo, Settings},
    tcp::{connect, host_port, show_addr},
    Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[(
    "tls",
    "a TLS handshake: certificate expiry, chain and host name validity, issuer, version",
)];

const FACTS: &[&str] = &[
    "cert_expires_in",
    "cert_expired",
    "chain_valid",
    "chain_error",
    "hostname_valid",
    "issuer",
    "subject",
    "tls_version",
    "response_time",
];

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    let kind = static_kind(kind, KINDS)?;
    let mut s = Settings::new("", kind, settings)?;
    let (host, port) = host_port(&mut s, Some(443))?;
    let name_text = s.opt_str("server_name")?.map(|n| n.trim().to_string());
    let ca_file = s.opt_str("ca_file")?;
    s.finish()?;
    let err = |key: &str, message: String| ProbeConfigError {
        kind: kind.to_string(),
        key: key.to_string(),
        message,
    };

    let (name_key, name_text) = match name_text {
        Some(n) => ("server_name", n),
        None => ("host", host.clone()),
    };
    let server_name = ServerName::try_from(name_text.clone()).map_err(|_| {
        err(
            name_key,
            format!(
                "{name_text:?} is not a DNS name or IP address to check the certificate against"
            ),
        )
    })?;

    let mut roots = RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let path = path.trim();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    err(
                        "ca_file",
                        format!(
                            "cannot read {path:?}: {e}; give the path of a PEM file of CA certificates"
                        ),
                    )
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(err(
                    "ca_file",
                    format!(
                        "{path:?} holds no usable PEM certificate (-----BEGIN CERTIFICATE-----)"
                    ),
                ));
            }
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("type", format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(algs)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();

    Ok(Arc::new(Tls {
        host,
        port,
        server_name,
        roots: Arc::new(roots),
        algs,
        connector: TlsConnector::from(Arc::new(config)),
    }))
}

struct Tls {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    connector: TlsConnector,
}

#[async_trait]
impl Probe for Tls {
    fn kind(&self) -> &'static str {
        "tls"
    }

    fn default_condition(&self) -> &'static str {
        "chain_valid && hostname_valid && cert_expires_in > 14d"
    }

    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, _secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let mut facts = Facts::new();
        let mut phases = Vec::with_capacity(4);
        let handshake = self.handshake(&mut facts, &mut phases);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(error) => finish(start, facts, phases, error),
            Err(_) => {
                let stage = match phases.last() {
                    Some(("connect", _)) => "TLS handshake with",
                    _ => "connecting to",
                };
                let error = format!(
                    "{} ({stage} {}); check that the port speaks TLS and the host is up",
                    no_answer(timeout),
                    show_addr(&self.host, self.port)
                );
                finish(start, facts, phases, Some(error))
            }
        }
    }
}

impl Tls {
    async fn handshake(
        &self,
        facts: &mut Facts,
        phases: &mut Vec<(&'static str, Duration)>,
    ) -> Option<String> {
        let tcp = match connect(&self.host, self.port, phases).await {
            Ok(t) => t,
            Err(e) => return Some(e),
        };
        let t = Instant::now();
        let mut stream = match self.connector.connect(self.server_name.clone(), tcp).await {
            Ok(s) => s,
            Err(e) => {
                return Some(format!(
                    "TLS handshake with {} failed: {}; check that the port speaks TLS \
                     (not plain text or STARTTLS) and that server_name is right",
                    show_addr(&self.host, self.port),
                    error_chain(&e)
                ))
            }
        };
        phases.push(("tls", t.elapsed()));
        let error = self.judge(stream.get_ref().1, facts);
        // Best effort close_notify; the verdict is in.
        let _ = stream.shutdown().await;
        error
    }

    /// Fills in the certificate facts from an established connection.
    fn judge(&self, conn: &rustls::ClientConnection, facts: &mut Facts) -> Option<String> {
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        facts.insert("tls_version", Value::String(version));
        let certs = conn.peer_certificates().unwrap_or_default();
        let Some(leaf) = certs.first() else {
            return Some("the server sent no certificate".into());
        };
        match CertInfo::parse(leaf) {
            Some(info) => {
                let (left, expired) = info.expires_in();
                facts.insert("cert_expires_in", Value::Duration(left));
                facts.insert("cert_expired", Value::Bool(expired));
                facts.insert("issuer", Value::String(info.issuer));
                facts.insert("subject", Value::String(info.subject));
            }
            None => {
                return Some("the server's certificate cannot be parsed (not X.509 DER)".into())
            }
        }
        let parsed = match ParsedCertificate::try_from(leaf) {
            Ok(p) => p,
            Err(e) => {
                facts.insert("chain_valid", Value::Bool(false));
                facts.insert("chain_error", Value::String(describe(&e)));
                facts.insert("hostname_valid", Value::Bool(false));
                return None;
            }
        };
        let chain = verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            &certs[1..],
            UnixTime::now(),
            self.algs.all,
        );
        facts.insert("chain_valid", Value::Bool(chain.is_ok()));
        facts.insert(
            "chain_error",
            Value::String(chain.err().map(|e| describe(&e)).unwrap_or_default()),
        );
        let name_ok = verify_server_name(&parsed, &self.server_name).is_ok();
        facts.insert("hostname_valid", Value::Bool(name_ok));
        None
    }
}

/// A certificate error in a few plain words.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "issued by an authority that is not trusted (give its CA in ca_file)".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "a certificate in the chain has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "a certificate in the chain is not valid yet".into()
            }
            CertificateError::BadSignature => "a signature in the chain does not verify".into(),
            CertificateError::Revoked => "revoked".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}
