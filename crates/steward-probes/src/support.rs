//! What the probes share: the settings reader (`steward_core::settings`, with its errors as
//! [`ProbeConfigError`]s), the wording of timeouts and of error chains, cutting captured text,
//! resolving secrets, and reading a certificate's names and expiry.

use std::{
    error::Error,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use steward_core::settings::{ConfigError, SettingsError};
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use zeroize::Zeroizing;

use crate::{Facts, Outcome, ProbeConfigError, SecretSource, Value};

/// One check's settings, read key by key; every error is a [`ProbeConfigError`].
pub(crate) type Settings = steward_core::settings::Settings<ProbeConfigError>;

impl From<SettingsError> for ProbeConfigError {
    fn from(e: SettingsError) -> Self {
        ProbeConfigError {
            kind: e.kind,
            key: e.key,
            message: e.message,
        }
    }
}

impl ConfigError for ProbeConfigError {
    const NOUN: &'static str = "check";
}

/// The `&'static` name of `kind` among `kinds` (a module's `KINDS`), or the error `build`
/// returns for a kind the module does not provide.
pub(crate) fn static_kind(
    kind: &str,
    kinds: &'static [(&'static str, &'static str)],
) -> Result<&'static str, ProbeConfigError> {
    kinds
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(k, _)| *k)
        .ok_or_else(|| ProbeConfigError {
            kind: kind.to_string(),
            key: "type".into(),
            message: format!(
                "this module provides {}, not {kind:?}",
                kinds.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            ),
        })
}

/// A duration for messages: `1s`, `1s 500ms`, `250ms` (rounded to milliseconds).
pub(crate) fn show_duration(d: Duration) -> String {
    let ms = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(ms).to_string()
}

/// "no answer within 5s".
pub(crate) fn no_answer(timeout: Duration) -> String {
    format!("no answer within {}", show_duration(timeout))
}

/// A run that got no answer: `response_time` is the time spent, `total` the only phase.
pub(crate) fn failed(start: Instant, facts: Facts, error: String) -> Outcome {
    finish(start, facts, Vec::new(), Some(error))
}

/// Adds `response_time` (time since `start`) and the `total` phase.
pub(crate) fn finish(
    start: Instant,
    mut facts: Facts,
    mut phases: Vec<(&'static str, Duration)>,
    error: Option<String>,
) -> Outcome {
    let elapsed = start.elapsed();
    facts.insert("response_time", Value::Duration(elapsed));
    phases.push(("total", elapsed));
    Outcome {
        facts,
        phases,
        error,
    }
}

pub(crate) use steward_core::text::one_line;

/// An error and its sources as one line ([`steward_core::text::error_chain`]), at most 300
/// bytes.
pub(crate) fn error_chain(e: &(dyn Error + 'static)) -> String {
    one_line(&steward_core::text::error_chain(e), 300)
}

/// Captured bytes as text: invalid UTF-8 is replaced, and a multi-byte character cut by a
/// size limit at the very end is dropped rather than shown as a replacement character.
pub(crate) fn text_of(bytes: &[u8], cut: bool) -> String {
    let bytes = match std::str::from_utf8(bytes) {
        Ok(s) => return s.to_string(),
        Err(e) if cut && e.error_len().is_none() => &bytes[..e.valid_up_to()],
        Err(_) => bytes,
    };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Resolves the secret that setting `key` names. The error names the key and the reference,
/// never a value.
pub(crate) async fn resolve_secret(
    secrets: &dyn SecretSource,
    key: &str,
    reference: &str,
) -> Result<Zeroizing<String>, String> {
    match secrets.resolve(reference).await {
        Ok(v) if v.trim().is_empty() => Err(format!(
            "the secret {key} {reference:?} is empty; store the credential in it"
        )),
        Ok(v) => Ok(v),
        Err(e) => Err(format!(
            "cannot resolve {key} {reference:?}: {}; check that the secret exists and Steward may read it",
            one_line(&e, 300)
        )),
    }
}

/// What a probe reports about a certificate.
pub(crate) struct CertInfo {
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    pub subject: String,
    pub issuer: String,
}

impl CertInfo {
    /// Parses a DER certificate; `None` when it is not one.
    pub(crate) fn parse(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(CertInfo {
            not_after: cert.validity().not_after.timestamp(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
        })
    }

    /// Time left until `notAfter` (zero once passed) and whether it has passed.
    pub(crate) fn expires_in(&self) -> (Duration, bool) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let left = self.not_after.saturating_sub(now);
        if left <= 0 {
            (Duration::ZERO, true)
        } else {
            (Duration::from_secs(left.unsigned_abs()), false)
        }
    }
}

/// A certificate verifier that accepts any certificate during the handshake but still checks
/// the handshake signatures, so the server proves it holds the certificate's key. The `tls`
/// probe uses it to report a bad certificate's facts (it checks the chain and the name
/// afterwards); PostgreSQL's `sslmode = prefer|require` uses it for libpq's meaning of those
/// modes (encrypted, certificate not checked against a CA).
#[derive(Debug)]
pub(crate) struct AnyCertificate {
    algs: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    pub(crate) fn new(algs: WebPkiSupportedAlgorithms) -> Self {
        Self { algs }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_and_text() {
        assert_eq!(one_line("a\r\nb\tc\n\n", 100), "a | b c");
        assert!(one_line(&"é".repeat(200), 11).len() <= 11);
        assert_eq!(text_of("ab\u{e9}".as_bytes(), false), "abé");
        let cut = &"ab\u{e9}".as_bytes()[..3];
        assert_eq!(text_of(cut, true), "ab");
        assert_eq!(text_of(cut, false), "ab\u{fffd}");
        assert_eq!(
            no_answer(Duration::from_millis(1500)),
            "no answer within 1s 500ms"
        );
        assert_eq!(show_duration(Duration::from_nanos(5_000_123_456)), "5s");
    }
}
