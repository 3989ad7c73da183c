//! `email`: mail over SMTP (`lettre`, rustls), one message per notification.
//!
//! ```toml
//! [[alerting.channels]]
//! name = "ops-mail"
//! type = "email"
//! host = "smtp.example.com"                       # required
//! port = 587                                      # default 587 (465 with tls = "tls")
//! tls = "starttls"                                # "starttls" (default) | "tls" | "none"
//! from = "Steward <steward@example.com>"          # required
//! to = ["oncall@example.com", "Ops <ops@example.com>"]   # required: one or more
//! username = "steward"                            # optional (plain: not a secret)
//! password_secret = "prod/alerting/smtp#password" # optional: ENV/PATH#FIELD; needs username
//! accept_invalid_certs = false                    # default false; only for test servers
//! timeout = "30s"                                 # default 30s: the whole SMTP exchange
//! ```
//!
//! `starttls` upgrades the connection with STARTTLS and refuses to go on without it; `tls`
//! speaks TLS from the first byte (SMTPS); `none` sends in the clear and is allowed to loopback
//! hosts only (a relay on the same machine). Certificates are checked against the webpki roots
//! and the host name unless `accept_invalid_certs` is set (then any certificate is taken: for
//! test servers with self-signed certificates only).
//!
//! The subject is the notification's title; the body is `multipart/alternative`: a text/plain
//! part listing each alert (labels, annotations, start and end) and the same as HTML. Every
//! message of one group carries `References: <dedup_key@steward>`, so mail readers thread them.
//!
//! Transient SMTP replies (4xx), connection, network, TLS and timeout failures are retried;
//! permanent replies (5xx: a refused recipient, failed authentication, a server demanding
//! STARTTLS) and client errors go to the dead letters.

use std::{net::IpAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use lettre::{
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
        Error as SmtpError,
    },
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use serde_json::Value;

use steward_core::text::html_escape;

use super::{
    http::{
        alert_name, alert_summary, error_chain, notification_summary, one_line, show_time, Ctx,
        Settings,
    },
    Channel, ChannelConfigError, SecretSource, SendError,
};
use crate::model::{AlertView, Notification, NotifyKind};

const KIND: &str = "email";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most alerts listed in one mail.
const MAX_ALERTS: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    StartTls,
    Tls,
    None,
}

struct Email {
    name: String,
    host: String,
    port: u16,
    mode: Mode,
    tls: Option<TlsParameters>,
    from: Mailbox,
    to: Vec<Mailbox>,
    username: Option<String>,
    password_secret: Option<String>,
    timeout: Duration,
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Builds an `email` channel from its settings.
pub fn build(name: &str, settings: &Value) -> Result<Arc<dyn Channel>, ChannelConfigError> {
    let mut s = Settings::new(name, KIND, settings)?;
    let host = s
        .req_str("host", "host, the SMTP server's name")?
        .trim()
        .to_string();
    let mode = match s.opt_str("tls")?.as_deref() {
        None | Some("starttls") => Mode::StartTls,
        Some("tls") => Mode::Tls,
        Some("none") => Mode::None,
        Some(other) => {
            return Err(s.error(
                "tls",
                format!("{other:?} is not a TLS mode; use \"starttls\", \"tls\" or \"none\""),
            ))
        }
    };
    if mode == Mode::None && !is_loopback(&host) {
        return Err(s.error(
            "tls",
            "\"none\" sends mail and passwords in the clear and is allowed to loopback hosts \
             (localhost, 127.0.0.1, ::1) only; use \"starttls\" or \"tls\"",
        ));
    }
    let default_port = if mode == Mode::Tls { 465 } else { 587 };
    let port = s.u64("port", default_port)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| s.error("port", format!("{port} is not a port number (1 to 65535)")))?;
    let from_text = s.req_str("from", "from, the sender address")?;
    let from: Mailbox = from_text
        .parse()
        .map_err(|e| s.error("from", format!("{from_text:?} is not a mail address ({e})")))?;
    let to_list = s
        .opt_str_list("to")?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            s.error(
                "to",
                "missing; an email channel needs to, a list of one or more addresses",
            )
        })?;
    let mut to = Vec::with_capacity(to_list.len());
    for t in &to_list {
        to.push(
            t.parse::<Mailbox>()
                .map_err(|e| s.error("to", format!("{t:?} is not a mail address ({e})")))?,
        );
    }
    let username = s.opt_str("username")?;
    let password_secret = s.opt_secret_ref("password_secret")?;
    if password_secret.is_some() && username.is_none() {
        return Err(s.error("username", "missing; password_secret needs a username"));
    }
    let accept_invalid_certs = s.bool("accept_invalid_certs", false)?;
    let timeout = s.duration("timeout", DEFAULT_TIMEOUT)?;
    s.finish()?;
    let tls = match mode {
        Mode::None => None,
        Mode::StartTls | Mode::Tls => Some(
            TlsParameters::builder(host.clone())
                .dangerous_accept_invalid_certs(accept_invalid_certs)
                .dangerous_accept_invalid_hostnames(accept_invalid_certs)
                .build_rustls()
                .map_err(|e| ChannelConfigError {
                    channel: name.to_string(),
                    key: "tls".into(),
                    message: format!("cannot set up TLS: {e}"),
                })?,
        ),
    };
    Ok(Arc::new(Email {
        name: name.to_string(),
        host,
        port,
        mode,
        tls,
        from,
        to,
        username,
        password_secret,
        timeout,
    }))
}

fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

fn plain_alert(out: &mut String, a: &AlertView) {
    out.push_str(&format!(
        "* {} [{}]\n",
        alert_name(a),
        a.status.to_uppercase()
    ));
    if let Some(s) = alert_summary(a) {
        out.push_str(&format!("  {s}\n"));
    }
    out.push_str("  Labels:\n");
    for (k, v) in a.labels.iter() {
        out.push_str(&format!("    {k} = {v}\n"));
    }
    if !a.annotations.is_empty() {
        out.push_str("  Annotations:\n");
        for (k, v) in a.annotations.iter() {
            out.push_str(&format!("    {k} = {v}\n"));
        }
    }
    out.push_str(&format!("  Started: {}\n", show_time(&a.starts_at)));
    out.push_str(&format!("  Ended: {}\n", show_time(&a.ends_at)));
    if !a.generator_url.is_empty() {
        out.push_str(&format!("  Source: {}\n", a.generator_url));
    }
    out.push('\n');
}

fn html_alert(out: &mut String, a: &AlertView) {
    let color = if a.status == "firing" {
        "#c0392b"
    } else {
        "#27ae60"
    };
    out.push_str(&format!(
        "<h3 style=\"margin:16px 0 4px\"><span style=\"color:{color}\">[{}]</span> {}</h3>\n",
        html_escape(&a.status.to_uppercase()),
        html_escape(alert_name(a))
    ));
    if let Some(s) = alert_summary(a) {
        out.push_str(&format!(
            "<p style=\"margin:4px 0\">{}</p>\n",
            html_escape(s)
        ));
    }
    out.push_str("<table style=\"border-collapse:collapse;font-size:13px\">\n");
    let mut row = |k: &str, v: &str| {
        out.push_str(&format!(
            "<tr><td style=\"padding:2px 8px;color:#666\">{}</td><td style=\"padding:2px 8px\">{}</td></tr>\n",
            html_escape(k),
            html_escape(v)
        ));
    };
    for (k, v) in a.labels.iter() {
        row(k, v);
    }
    for (k, v) in a.annotations.iter() {
        row(k, v);
    }
    row("started", &show_time(&a.starts_at));
    row("ended", &show_time(&a.ends_at));
    out.push_str("</table>\n");
    if is_http(&a.generator_url) {
        out.push_str(&format!(
            "<p style=\"margin:4px 0\"><a href=\"{}\">Source</a></p>\n",
            html_escape(&a.generator_url)
        ));
    }
}

/// The text/plain and text/html bodies.
pub(crate) fn bodies(n: &Notification) -> (String, String) {
    let title = n.title();
    let mut text = format!("{title}\n\n");
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n<h2>{}</h2>\n",
        html_escape(&title)
    );
    match n.kind {
        NotifyKind::Change | NotifyKind::Test => {
            let summary = notification_summary(n);
            text.push_str(&format!("{summary}\n\n"));
            html.push_str(&format!("<p>{}</p>\n", html_escape(&summary)));
        }
        NotifyKind::Acknowledged => {
            text.push_str("Acknowledged.\n\n");
            html.push_str("<p>Acknowledged.</p>\n");
        }
        _ => {}
    }
    if !n.alerts.is_empty() {
        let firing = n.alerts.iter().filter(|a| a.status == "firing").count();
        let head = format!(
            "Alerts: {firing} firing, {} resolved",
            n.alerts.len() - firing
        );
        text.push_str(&format!("{head}\n\n"));
        html.push_str(&format!("<p>{}</p>\n", html_escape(&head)));
    }
    for a in n.alerts.iter().take(MAX_ALERTS) {
        plain_alert(&mut text, a);
        html_alert(&mut html, a);
    }
    let left_out = n.alerts.len().saturating_sub(MAX_ALERTS) as u64 + n.truncated_alerts;
    if left_out > 0 {
        let line = format!("{left_out} more alerts not shown.");
        text.push_str(&format!("{line}\n\n"));
        html.push_str(&format!("<p><em>{}</em></p>\n", html_escape(&line)));
    }
    if is_http(&n.external_url) {
        text.push_str(&format!("Open in Steward: {}\n", n.external_url));
        html.push_str(&format!(
            "<p><a href=\"{}\">Open in Steward</a></p>\n",
            html_escape(&n.external_url)
        ));
    }
    let footer = format!("Sent by Steward to receiver {} ({}).", n.receiver, n.id);
    text.push_str(&format!("\n-- \n{footer}\n"));
    html.push_str(&format!(
        "<p style=\"color:#888;font-size:12px\">{}</p>\n</body></html>\n",
        html_escape(&footer)
    ));
    (text, html)
}

impl Email {
    fn message(&self, n: &Notification, ctx: &Ctx<'_>) -> Result<Message, SendError> {
        let (text, html) = bodies(n);
        let subject = one_line(&n.title(), 900);
        // A unique Message-ID on the sender's domain (RFC 5322; some providers refuse mail
        // without one), the same for every retry of this notification.
        let domain = self.from.email.domain().to_string();
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!(
                "<{}.{}@{domain}>",
                n.id,
                &n.dedup_key[..8.min(n.dedup_key.len())]
            )))
            .references(format!("<{}@steward>", n.dedup_key));
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| ctx.permanent(&format!("cannot build the message: {e}")))
    }

    fn classify(&self, ctx: &Ctx<'_>, e: SmtpError) -> SendError {
        let text = one_line(&error_chain(&e), 300);
        if e.is_permanent() {
            ctx.permanent(&format!("the SMTP server refused the message: {text}"))
        } else if e.is_transient() {
            ctx.retryable(&format!("the SMTP server deferred the message: {text}"))
        } else if e.is_timeout() {
            ctx.retryable(&format!(
                "the SMTP server did not answer within {}",
                humantime::format_duration(self.timeout)
            ))
        } else if e.is_client() {
            ctx.permanent(&format!("SMTP: {text}"))
        } else {
            ctx.retryable(&format!(
                "cannot talk to the SMTP server at {}:{}: {text}",
                self.host, self.port
            ))
        }
    }
}

#[async_trait]
impl Channel for Email {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn send(&self, n: &Notification, secrets: &dyn SecretSource) -> Result<(), SendError> {
        let mut ctx = Ctx::new(KIND, &self.name);
        let password = match &self.password_secret {
            Some(r) => Some(ctx.resolve(secrets, "password_secret", r).await?),
            None => None,
        };
        let message = self.message(n, &ctx)?;
        let tls = match (self.mode, &self.tls) {
            (Mode::StartTls, Some(p)) => Tls::Required(p.clone()),
            (Mode::Tls, Some(p)) => Tls::Wrapper(p.clone()),
            _ => Tls::None,
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
                .port(self.port)
                .tls(tls)
                .timeout(Some(self.timeout));
        if let Some(user) = &self.username {
            let pass = password.as_ref().map(|p| p.to_string()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), pass));
        }
        let transport = builder.build();
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.classify(&ctx, e)),
            Err(_) => Err(ctx.retryable(&format!(
                "the SMTP exchange did not finish within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}
