//! Checks: the list with a day of hourly uptime bars each, and one check with 90 days of
//! daily uptime, a 48-hour latency chart, its latest runs and the facts of its last run.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use steward_checks::service::{CheckInfo, RollupInfo};
use steward_store::CheckResultRow;

use super::{health_pill, labels};
use crate::{
    charts::{latency_chart, uptime_bars, Bar, LatencyPoint},
    layout::{csrf_field, page},
    span, when, Shell,
};

fn bars(rollups: &[RollupInfo], fmt: &str) -> Vec<Bar> {
    rollups
        .iter()
        .map(|r| Bar {
            label: r.start.format(fmt).to_string(),
            uptime: r.uptime,
            note: String::new(),
        })
        .collect()
}

/// Share of good runs over all the roll-ups.
fn uptime_of(rollups: &[RollupInfo]) -> Option<f64> {
    let runs: u64 = rollups.iter().map(|r| r.runs).sum();
    let up: u64 = rollups.iter().map(|r| r.up).sum();
    (runs > 0).then(|| up as f64 / runs as f64)
}

fn pct(u: Option<f64>) -> String {
    u.map_or("–".into(), |u| format!("{:.2}%", u * 100.0))
}

/// The list: every check with its state, last run and the last 24 hours as bars.
pub fn list(
    shell: &Shell,
    now: DateTime<Utc>,
    checks: &[(CheckInfo, Vec<RollupInfo>)],
    filter: &str,
) -> Markup {
    let shown: Vec<&(CheckInfo, Vec<RollupInfo>)> = checks
        .iter()
        .filter(|(c, _)| filter.is_empty() || c.name.contains(filter) || c.kind.contains(filter))
        .collect();
    page(
        shell,
        html! {
            h1 { "Checks" }
            form.inline method="get" action="/ui/checks" role="search" {
                div {
                    label for="q" { "Filter by name or type" }
                    input #q type="search" name="q" value=(filter) data-filter;
                }
                button.secondary type="submit" { "Filter" }
            }
            p.muted { (shown.len()) " of " (checks.len()) " checks. Bars: uptime per hour over the last 24 hours." }
            div.table-wrap { table {
                thead { tr {
                    th { "Check" } th { "State" } th.hide-sm { "Type" } th.hide-sm { "Last run" }
                    th { "Last 24 hours" } th.num { "Uptime" }
                } }
                tbody {
                    @for (c, r) in shown {
                        tr {
                            td { a href=(format!("/ui/checks/{}", c.name)) { (c.name) } }
                            td { (health_pill(c.health)) @if let Some(s) = c.since { br; span.muted { "for " (span((now - s).num_seconds())) } } }
                            td.hide-sm { (c.kind) }
                            td.hide-sm {
                                @if let Some(l) = &c.last {
                                    span.ok[l.ok].bad[!l.ok] { @if l.ok { "ok" } @else { "failed" } }
                                    " " (format!("{:.0} ms", l.duration_ms)) br;
                                    span.muted { (when(l.at)) }
                                } @else { span.muted { "not run yet" } }
                            }
                            td { (uptime_bars(&bars(r, "%Y-%m-%d %H:00 UTC"), &format!("{} hourly uptime", c.name), true)) }
                            td.num { (pct(uptime_of(r))) }
                        }
                    }
                }
            } }
        },
    )
}

/// What the check page shows.
pub struct CheckPage<'a> {
    pub now: DateTime<Utc>,
    pub check: &'a CheckInfo,
    pub hours: &'a [RollupInfo],
    pub days: &'a [RollupInfo],
    pub latest: &'a [CheckResultRow],
    pub csrf: &'a str,
}

/// One check.
pub fn show(shell: &Shell, p: &CheckPage) -> Markup {
    let c = p.check;
    let points: Vec<LatencyPoint> = p
        .hours
        .iter()
        .map(|r| LatencyPoint {
            at: r.start,
            p50_ms: r.p50_ms,
            p95_ms: r.p95_ms,
        })
        .collect();
    page(
        shell,
        html! {
            h1 { "Check " (c.name) " " (health_pill(c.health)) }
            dl.facts {
                dt { "Type" } dd { (c.kind) }
                dt { "Every" } dd { (span(c.interval_s as i64)) }
                dt { "Condition" } dd { code { (c.condition) } }
                @if let Some(s) = c.since { dt { "State since" } dd { (when(s)) " (" (span((p.now - s).num_seconds())) ")" } }
                @if !c.depends_on.is_empty() { dt { "Depends on" } dd { @for d in &c.depends_on { a href=(format!("/ui/checks/{d}")) { (d) } " " } } }
                @if !c.labels.is_empty() { dt { "Labels" } dd { (labels(c.labels.iter())) } }
                @if let Some(sp) = &c.status_page { dt { "Status page" } dd { (sp) } }
                dt { "Failed runs in a row" } dd { (c.fails_in_a_row) }
            }
            form method="post" action=(format!("/ui/checks/{}/run", c.name)) {
                (csrf_field(p.csrf))
                p { button type="submit" { "Run now" } }
            }

            h2 { "Uptime, last 90 days" }
            (uptime_bars(&bars(p.days, "%Y-%m-%d"), &format!("{} daily uptime", c.name), false))
            div.legend { span { "90 days ago" } span { (pct(uptime_of(p.days))) " uptime" } span { "today" } }

            h2 { "Latency, last 48 hours" }
            (latency_chart(&points, &format!("{} latency by hour", c.name)))

            @if let Some(l) = &c.last {
                h2 { "Last run" }
                dl.facts {
                    dt { "At" } dd { (when(l.at)) }
                    dt { "Outcome" } dd.ok[l.ok].bad[!l.ok] { @if l.ok { "ok" } @else { "failed" } }
                    dt { "Duration" } dd { (format!("{:.1} ms", l.duration_ms)) }
                    @if let Some(e) = &l.error { dt { "Error" } dd { (e) } }
                    @for (phase, ms) in &l.phases { dt { "Phase " (phase) } dd { (format!("{ms:.1} ms")) } }
                    @for (k, v) in &l.facts { dt { code { (k) } } dd { code { (v.to_string()) } } }
                }
            }

            h2 { "Latest runs" }
            @if p.latest.is_empty() { p.muted { "No run is stored yet." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th { "At" } th { "Outcome" } th.num { "Duration" } th.hide-sm { "Error" } } }
                    tbody {
                        @for r in p.latest.iter().take(20) {
                            tr {
                                td { (when(r.at)) }
                                td.ok[r.ok].bad[!r.ok] { @if r.ok { "ok" } @else { "failed" } }
                                td.num { (format!("{:.1} ms", r.duration_us as f64 / 1000.0)) }
                                td.hide-sm { (r.error.clone().unwrap_or_default()) }
                            }
                        }
                    }
                } }
            }
        },
    )
}
