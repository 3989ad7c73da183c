//! Alerts and silences: the alerts that are not resolved, the silences, a form to create a
//! silence (pre-filled from an alert's labels), and a button to expire one.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use steward_alerting::{model::AlertState, mutes::Silence, pipeline::AlertInfo};

use super::{labels, unavailable};
use crate::{
    layout::{csrf_field, page},
    when, Section, Shell,
};

/// The new-silence form's values (kept after a failed submit).
#[derive(Debug, Clone, Default)]
pub struct SilenceForm {
    pub matchers: String,
    pub duration: String,
    pub comment: String,
}

/// What the page shows.
pub struct AlertsPage<'a> {
    pub now: DateTime<Utc>,
    pub alerts: &'a Section<Vec<AlertInfo>>,
    pub silences: &'a Section<Vec<Silence>>,
    pub form: SilenceForm,
    pub csrf: &'a str,
}

/// `name="value"` matchers for an alert's labels, one per line: the silence form's pre-fill.
pub fn matchers_for(a: &AlertInfo) -> String {
    a.doc
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::from(v.as_str())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn state_text(a: &AlertInfo) -> (&'static str, &'static str) {
    match (a.state, a.mute.is_muted()) {
        (AlertState::Pending, _) => ("warn", "pending"),
        (AlertState::Firing, true) => ("unknown", "firing, muted"),
        (AlertState::Firing, false) => ("bad", "firing"),
        (AlertState::Resolved, _) => ("ok", "resolved"),
    }
}

/// Active and pending silences first, then by end, latest first.
fn sorted(list: &[Silence], now: DateTime<Utc>) -> Vec<&Silence> {
    let mut v: Vec<&Silence> = list.iter().collect();
    v.sort_by_key(|s| (s.state(now) == "expired", std::cmp::Reverse(s.ends_at)));
    v
}

/// The page.
pub fn render(shell: &Shell, p: &AlertsPage) -> Markup {
    page(
        shell,
        html! {
            h1 { "Alerts and silences" }
            h2 { "Alerts" }
            @match p.alerts {
                Ok(list) => {
                    @let open: Vec<&AlertInfo> = list.iter().filter(|a| a.state != AlertState::Resolved).collect();
                    @if open.is_empty() { p.ok { "No alert is pending or firing." } }
                    @else {
                        div.table-wrap { table {
                            thead { tr { th { "Alert" } th { "State" } th { "Since" } th.hide-sm { "Labels" } th.hide-sm { "Summary" } th { span.muted { "Action" } } } }
                            tbody {
                                @for a in open {
                                    @let (class, text) = state_text(a);
                                    tr {
                                        td { (a.doc.labels.get("alertname").map_or("(unnamed)", String::as_str)) }
                                        td { span class=(format!("pill {class}")) { (text) }
                                             @if !a.acknowledged.is_empty() { " " span.muted { "acknowledged" } } }
                                        td { (when(a.doc.starts_at)) }
                                        td.hide-sm { (labels(a.doc.labels.iter().filter(|(k, _)| *k != "alertname"))) }
                                        td.hide-sm { (a.doc.annotations.get("summary").cloned().unwrap_or_default()) }
                                        td { a href=(format!("/ui/alerts?silence={}#new-silence", a.fingerprint)) aria-label=(format!("Silence {}", a.doc.labels.get("alertname").map_or("this alert", String::as_str))) { "Silence" } }
                                    }
                                }
                            }
                        } }
                    }
                }
                Err(e) => (unavailable("Alerts", e)),
            }

            h2 { "Silences" }
            @match p.silences {
                Ok(list) => {
                    @let list = sorted(list, p.now);
                    @if list.is_empty() { p.muted { "No silence yet." } }
                    @else {
                        div.table-wrap { table {
                            thead { tr { th { "Matchers" } th { "State" } th.hide-sm { "Starts" } th { "Ends" } th.hide-sm { "By" } th.hide-sm { "Comment" } th { span.muted { "Action" } } } }
                            tbody {
                                @for s in list.iter().take(100) {
                                    @let state = s.state(p.now);
                                    tr {
                                        td { span.labels { @for m in &s.matchers {
                                            code { (m.name) (match (m.is_equal, m.is_regex) { (true, false) => "=", (false, false) => "!=", (true, true) => "=~", (false, true) => "!~" }) (serde_json::Value::from(m.value.as_str()).to_string()) } " "
                                        } } }
                                        td { (state) }
                                        td.hide-sm { (when(s.starts_at)) }
                                        td { (when(s.ends_at)) }
                                        td.hide-sm { (s.created_by) }
                                        td.hide-sm { (s.comment) }
                                        td {
                                            @if state != "expired" {
                                                form method="post" action=(format!("/ui/silences/{}/expire", s.id)) data-confirm="Expire this silence now? Its alerts notify again." {
                                                    (csrf_field(p.csrf))
                                                    button.danger type="submit" aria-label=(format!("Expire silence {}", s.id)) { "Expire" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        } }
                    }
                }
                Err(e) => (unavailable("Silences", e)),
            }

            h2 #new-silence { "New silence" }
            form.stack method="post" action="/ui/silences" {
                (csrf_field(p.csrf))
                div {
                    label for="matchers" { "Matchers" span.hint { "One per line, e.g. " code { "alertname=\"CheckDown\"" } " or " code { "check=~\"api-.*\"" } "; every one must match." } }
                    textarea #matchers name="matchers" rows="4" required spellcheck="false" { (p.form.matchers) }
                }
                div {
                    label for="duration" { "Duration" span.hint { "From now, e.g. " code { "30m" } ", " code { "2h" } ", " code { "1d" } "." } }
                    input #duration name="duration" required value=(if p.form.duration.is_empty() { "2h" } else { p.form.duration.as_str() });
                }
                div {
                    label for="comment" { "Comment" span.hint { "Why, for whoever looks later." } }
                    input #comment name="comment" required value=(p.form.comment);
                }
                div { button type="submit" { "Create silence" } }
            }
        },
    )
}
