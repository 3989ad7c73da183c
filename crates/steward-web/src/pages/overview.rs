//! The overview: what is down, what fired, what expires soon, and what was sent lately.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use steward_alerting::{model::AlertState, outbox::LogEntry, pipeline::AlertInfo};
use steward_checks::{service::CheckInfo, state::Health};
use steward_rotation::ExpiringSecret;

use super::{health_pill, labels, unavailable};
use crate::{layout::page, span, when, Section, Shell};

/// What the overview shows; each part may be missing for lack of permission.
pub struct Overview {
    pub now: DateTime<Utc>,
    pub checks: Section<Vec<CheckInfo>>,
    pub alerts: Section<Vec<AlertInfo>>,
    pub expiring: Section<Vec<ExpiringSecret>>,
    pub log: Section<Vec<LogEntry>>,
}

/// The page.
pub fn render(shell: &Shell, o: &Overview) -> Markup {
    let body = html! {
        h1 { "Overview" }
        div.grid {
            section.card aria-labelledby="h-checks" {
                h2 #h-checks { "Checks" }
                @match &o.checks {
                    Ok(list) => {
                        @let down = list.iter().filter(|c| c.health == Health::Down).count();
                        @let up = list.iter().filter(|c| c.health == Health::Up).count();
                        p { span.big.bad[down > 0].ok[down == 0] { (down) } " down, " (up) " up of " (list.len()) }
                    }
                    Err(e) => (unavailable("Checks", e)),
                }
            }
            section.card aria-labelledby="h-firing" {
                h2 #h-firing { "Alerts" }
                @match &o.alerts {
                    Ok(list) => {
                        @let firing = list.iter().filter(|a| a.state == AlertState::Firing).count();
                        @let muted = list.iter().filter(|a| a.state == AlertState::Firing && a.mute.is_muted()).count();
                        p { span.big.bad[firing > muted].ok[firing == muted] { (firing) } " firing (" (muted) " silenced or inhibited)" }
                    }
                    Err(e) => (unavailable("Alerts", e)),
                }
            }
            section.card aria-labelledby="h-exp" {
                h2 #h-exp { "Secrets expiring in 14 days" }
                @match &o.expiring {
                    Ok(list) => { p { span.big.warn[!list.is_empty()].ok[list.is_empty()] { (list.len()) } } }
                    Err(e) => (unavailable("Expiring secrets", e)),
                }
            }
        }

        h2 { "Down now" }
        @match &o.checks {
            Ok(list) => {
                @let down: Vec<&CheckInfo> = list.iter().filter(|c| c.health == Health::Down).collect();
                @if down.is_empty() { p.ok { "Every check is up (or has not run yet)." } }
                @else {
                    div.table-wrap { table {
                        thead { tr { th { "Check" } th { "State" } th { "Since" } th.hide-sm { "Last error" } } }
                        tbody {
                            @for c in down {
                                tr {
                                    td { a href=(format!("/ui/checks/{}", c.name)) { (c.name) } }
                                    td { (health_pill(c.health)) }
                                    td { @if let Some(s) = c.since { (when(s)) " (" (span((o.now - s).num_seconds())) ")" } }
                                    td.hide-sm { (c.last.as_ref().and_then(|l| l.error.clone()).unwrap_or_default()) }
                                }
                            }
                        }
                    } }
                }
            }
            Err(e) => (unavailable("Checks", e)),
        }

        h2 { "Firing alerts" }
        @match &o.alerts {
            Ok(list) => {
                @let firing: Vec<&AlertInfo> = list.iter().filter(|a| a.state == AlertState::Firing).collect();
                @if firing.is_empty() { p.ok { "Nothing is firing." } }
                @else {
                    div.table-wrap { table {
                        thead { tr { th { "Alert" } th { "Since" } th.hide-sm { "Labels" } th { "Muted" } } }
                        tbody {
                            @for a in firing.iter().take(20) {
                                tr {
                                    td { (a.doc.labels.get("alertname").map_or("(unnamed)", String::as_str)) }
                                    td { (when(a.doc.starts_at)) }
                                    td.hide-sm { (labels(a.doc.labels.iter().filter(|(k, _)| *k != "alertname"))) }
                                    td { @if a.mute.is_muted() { "yes" } @else { "no" } }
                                }
                            }
                        }
                    } }
                    p { a href="/ui/alerts" { "All alerts and silences" } }
                }
            }
            Err(e) => (unavailable("Alerts", e)),
        }

        h2 { "Expiring soon" }
        @match &o.expiring {
            Ok(list) if list.is_empty() => { p.ok { "No secret expires in the next 14 days." } }
            Ok(list) => {
                div.table-wrap { table {
                    thead { tr { th { "Secret" } th { "Expires" } th.hide-sm { "Owner" } } }
                    tbody {
                        @for s in list {
                            tr {
                                td { a href=(format!("/ui/secrets/{}/{}", s.env, s.path)) { (s.env) "/" (s.path) } }
                                td.bad[s.expired] { (when(s.expires_at)) @if s.expired { " (expired)" } @else { " (in " (span(s.seconds_left)) ")" } }
                                td.hide-sm { (s.owner) }
                            }
                        }
                    }
                } }
            }
            Err(e) => (unavailable("Expiring secrets", e)),
        }

        h2 { "Recent notifications" }
        @match &o.log {
            Ok(list) if list.is_empty() => { p.muted { "No notification was sent yet." } }
            Ok(list) => {
                div.table-wrap { table {
                    thead { tr { th { "Time" } th { "Channel" } th { "Kind" } th { "Outcome" } th.num.hide-sm { "Alerts" } } }
                    tbody {
                        @for e in list {
                            tr {
                                td { (when(e.time)) }
                                td { (e.receiver) " / " (e.channel) }
                                td { (e.kind) " " (e.status) }
                                td.bad[e.outcome != "sent"] { (e.outcome) }
                                td.num.hide-sm { (e.alerts) }
                            }
                        }
                    }
                } }
            }
            Err(e) => (unavailable("The notification log", e)),
        }
    };
    page(shell, body)
}
