//! The audit log viewer: filters (actor, action, environment, path, outcome, time range),
//! newest first, a page at a time.

use maud::{html, Markup};
use steward_secrets::AuditPage;

use crate::{layout::page, when, Shell};

/// The filter form's values, as typed (echoed back into the form).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: String,
    pub action: String,
    pub env: String,
    pub path: String,
    pub outcome: String,
    pub since: String,
    pub until: String,
}

impl AuditQuery {
    /// The query string for the same filters (for the "older" link).
    pub fn to_query(&self) -> String {
        [
            ("actor", &self.actor),
            ("action", &self.action),
            ("env", &self.env),
            ("path", &self.path),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn field(id: &str, label: &str, hint: &str, value: &str) -> Markup {
    html! {
        div {
            label for=(id) { (label) span.hint { (hint) } }
            input id=(id) name=(id) value=(value);
        }
    }
}

/// The page; `result` is the search's outcome or why it could not run.
pub fn render(shell: &Shell, q: &AuditQuery, result: &Result<AuditPage, String>) -> Markup {
    page(
        shell,
        html! {
            h1 { "Audit log" }
            form.inline method="get" action="/ui/audit" role="search" {
                div {
                    label for="actor" { "Actor" span.hint { "token accessor, exact" } }
                    input #actor name="actor" value=(q.actor) data-filter;
                }
                (field("action", "Action", "prefix, e.g. secret.read", &q.action))
                (field("env", "Environment", "exact", &q.env))
                (field("path", "Path", "prefix", &q.path))
                div {
                    label for="outcome" { "Outcome" span.hint { "ok, failed or a code" } }
                    select #outcome name="outcome" {
                        option value="" selected[q.outcome.is_empty()] { "any" }
                        option value="ok" selected[q.outcome == "ok"] { "ok" }
                        option value="failed" selected[q.outcome == "failed"] { "failed" }
                        option value="permission_denied" selected[q.outcome == "permission_denied"] { "permission_denied" }
                    }
                }
                (field("since", "Since", "2026-12-01 or RFC 3339", &q.since))
                (field("until", "Until", "exclusive", &q.until))
                button type="submit" { "Search" }
            }
            @match result {
                Err(e) => p.flash.bad role="alert" { (e) },
                Ok(page) => {
                    p.muted { (page.entries.len()) " entries shown, newest first (" (page.scanned) " read)." }
                    @if page.entries.is_empty() { p { "No entry matches." } }
                    @else {
                        div.table-wrap { table {
                            thead { tr {
                                th.num { "#" } th { "Time" } th { "Actor" } th { "Action" } th { "Target" } th { "Outcome" }
                                th.hide-sm { "From" } th.hide-sm { "Request" }
                            } }
                            tbody {
                                @for e in &page.entries {
                                    tr {
                                        td.num { (e.seq) }
                                        td { (when(e.time)) }
                                        td { (e.actor) }
                                        td { code { (e.action) } }
                                        td { (e.env.clone().unwrap_or_default()) @if let Some(p) = &e.path { "/" (p) } }
                                        td.ok[e.outcome == "ok"].bad[e.outcome != "ok"] { (e.outcome) }
                                        td.hide-sm { (e.remote_addr.clone().unwrap_or_default()) }
                                        td.hide-sm { code { (e.request_id) } }
                                    }
                                }
                            }
                        } }
                    }
                    @if let Some(b) = page.next_before {
                        @let qs = q.to_query();
                        p.pager { a href=(format!("/ui/audit?{}{}before={b}", qs, if qs.is_empty() { "" } else { "&" })) { "Older entries" } }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_encoded() {
        let q = AuditQuery {
            actor: "ops team".into(),
            action: "secret.read".into(),
            path: "a&b=c".into(),
            ..Default::default()
        };
        assert_eq!(
            q.to_query(),
            "actor=ops%20team&action=secret.read&path=a%26b%3Dc"
        );
    }
}
