//! The public status page (`GET /status`, no sign-in): every component (checks with a
//! `status_page` name) and its current state, open incidents, scheduled maintenance (windows
//! marked `public`, in progress or starting within 7 days), 90 days of uptime as bars drawn in
//! SVG on the server, and the incidents closed in those days. Plain HTML and CSS, no
//! JavaScript: it reads on a phone, works with the keyboard and a screen reader (every bar has
//! a text label, and the days with downtime are also listed as text), and keeps WCAG AA
//! contrast. Times are in UTC. It shows component names, states, uptime, incident times and
//! public windows' names and comments only; never check names, settings, errors, facts,
//! labels, matchers or who opened a window.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use steward_checks::{
    incidents::PublicIncident,
    service::{Component, DayUptime, ScheduledMaintenance},
    state::Health,
    StatusPage,
};
use steward_core::text::html_escape as esc;
use steward_web::charts::{uptime_bars, Bar};

use crate::AppState;

const DAYS: u32 = 90;

/// A time as the page writes it (viewer-neutral UTC), in a `<time>` element.
fn time(t: DateTime<Utc>) -> String {
    format!(
        r#"<time datetime="{}">{}</time>"#,
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

/// A length for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => {
            let (h, m) = (s / 3600, s % 3600 / 60);
            if m == 0 {
                format!("{h} h")
            } else {
                format!("{h} h {m} min")
            }
        }
        s => {
            let (d, h) = (s / 86_400, s % 86_400 / 3600);
            if h == 0 {
                format!("{d} d")
            } else {
                format!("{d} d {h} h")
            }
        }
    }
}

/// A day's bar: `2026-03-01: 99.50% up, 1 incident` as its label.
fn day_bar(d: &DayUptime) -> Bar {
    Bar {
        label: d.day.format("%Y-%m-%d").to_string(),
        uptime: d.uptime,
        note: match d.incidents {
            0 => String::new(),
            1 => ", 1 incident".into(),
            n => format!(", {n} incidents"),
        },
    }
}

fn bars(c: &Component) -> String {
    let days: Vec<Bar> = c.days.iter().map(day_bar).collect();
    let what = format!("{} uptime, last {} days", c.name, days.len().max(1));
    uptime_bars(&days, &what, false).into_string()
}

/// The days with downtime or an incident, as a text list (keyboard and screen readers get
/// what the bars' tooltips say); empty when there are none.
fn bad_days(c: &Component) -> String {
    let days: Vec<&DayUptime> = c
        .days
        .iter()
        .filter(|d| d.incidents > 0 || d.uptime.is_some_and(|u| u < 1.0))
        .collect();
    if days.is_empty() {
        return String::new();
    }
    let mut out = format!(
        r#"<details><summary>Days with downtime ({})</summary><ul class="days">"#,
        days.len()
    );
    for d in days.iter().rev() {
        out.push_str(&format!("<li>{}</li>", esc(&day_bar(d).text())));
    }
    out.push_str("</ul></details>");
    out
}

fn state_text(c: &Component) -> (&'static str, &'static str) {
    if c.maintenance {
        return ("under maintenance", "maint");
    }
    match c.health {
        Health::Up => ("operational", "ok"),
        Health::Down => ("outage", "down"),
        Health::Unknown => ("no data yet", "unknown"),
    }
}

fn open_incidents(page: &StatusPage, now: DateTime<Utc>) -> String {
    if page.open_incidents.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        r#"<section aria-labelledby="inc"><h2 id="inc">Open incidents</h2><ul class="incidents">"#,
    );
    for i in &page.open_incidents {
        let maint = page
            .components
            .iter()
            .any(|c| c.name == i.component && c.maintenance);
        out.push_str(&format!(
            "<li><strong>{}</strong>: outage since {}, for {}{}</li>",
            esc(&i.component),
            time(i.started_at),
            span((now - i.started_at).num_seconds()),
            if maint {
                " (during scheduled maintenance)"
            } else {
                ""
            }
        ));
    }
    out.push_str("</ul></section>");
    out
}

fn maintenance(items: &[ScheduledMaintenance]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        r#"<section aria-labelledby="maint"><h2 id="maint">Scheduled maintenance</h2><ul class="maintenance">"#,
    );
    for m in items {
        let when = if m.in_progress {
            r#"<span class="tag maint">in progress</span>"#
        } else {
            r#"<span class="tag">upcoming</span>"#
        };
        out.push_str(&format!(
            "<li><strong>{}</strong> {when}<br>{} to {} ({}{})",
            esc(&m.title),
            time(m.starts_at),
            time(m.ends_at),
            span((m.ends_at - m.starts_at).num_seconds()),
            if m.recurring { ", recurring" } else { "" }
        ));
        if !m.comment.trim().is_empty() {
            out.push_str(&format!(r#"<p class="note">{}</p>"#, esc(&m.comment)));
        }
        if !m.components.is_empty() {
            let names: Vec<String> = m.components.iter().map(|c| esc(c)).collect();
            out.push_str(&format!(
                r#"<p class="note">Affects: {}</p>"#,
                names.join(", ")
            ));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul></section>");
    out
}

fn past_incidents(items: &[PublicIncident]) -> String {
    let mut out = format!(
        r#"<section aria-labelledby="past"><h2 id="past">Past incidents</h2><p class="note">Incidents resolved in the last {DAYS} days, newest first.</p>"#
    );
    if items.is_empty() {
        out.push_str(&format!(
            "<p>No incidents in the last {DAYS} days.</p></section>"
        ));
        return out;
    }
    out.push_str(r#"<ul class="incidents past">"#);
    for i in items {
        let Some(end) = i.ended_at else { continue };
        out.push_str(&format!(
            "<li><strong>{}</strong>: outage from {} to {}, lasted {}</li>",
            esc(&i.component),
            time(i.started_at),
            time(end),
            span((end - i.started_at).num_seconds())
        ));
    }
    out.push_str("</ul></section>");
    out
}

/// The page for `page` at `now`.
pub fn render(page: &StatusPage, now: DateTime<Utc>) -> String {
    let components = &page.components;
    let down = components
        .iter()
        .filter(|c| c.health == Health::Down && !c.maintenance)
        .count();
    let in_maintenance = components.iter().any(|c| c.maintenance);
    let banner = if components.is_empty() {
        r#"<p class="banner unknown">No components are published yet.</p>"#.to_string()
    } else if down > 0 {
        format!(
            r#"<p class="banner down">{down} of {} components have an outage</p>"#,
            components.len()
        )
    } else if in_maintenance {
        r#"<p class="banner maint">Scheduled maintenance in progress</p>"#.to_string()
    } else {
        r#"<p class="banner ok">All systems operational</p>"#.to_string()
    };
    let mut rows = String::new();
    for c in components {
        let (text, class) = state_text(c);
        let uptime = c.uptime.map_or("no data".to_string(), |u| {
            format!("{:.3}% uptime", u * 100.0)
        });
        rows.push_str(&format!(
            r#"<li class="component"><div class="head"><h3>{}</h3><span class="state {class}">{text}</span></div>{}<div class="legend"><span>{DAYS} days ago</span><span>{}</span><span>today</span></div>{}</li>"#,
            esc(&c.name),
            bars(c),
            uptime,
            bad_days(c)
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Status</title>
<style>
:root {{ color-scheme: light; }}
body {{ font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; background: #fff; }}
main {{ max-width: 52rem; margin: 0 auto; padding: 1rem; overflow-wrap: anywhere; }}
h1 {{ font-size: 1.5rem; margin: .5rem 0 1rem; }}
h2 {{ font-size: 1.15rem; }}
h3 {{ font-size: 1rem; margin: 0; }}
.banner {{ padding: .75rem 1rem; border-radius: .4rem; font-weight: 600; color: #fff; }}
.banner.ok {{ background: #1a7f37; }} .banner.down {{ background: #cf222e; }} .banner.unknown {{ background: #57606a; }} .banner.maint {{ background: #0550ae; }}
ul {{ list-style: none; padding: 0; }}
.component {{ border: 1px solid #d0d7de; border-radius: .4rem; padding: .75rem 1rem; margin: .75rem 0; }}
.head {{ display: flex; flex-wrap: wrap; justify-content: space-between; align-items: baseline; gap: 0 1rem; }}
.state {{ font-weight: 600; }} .state.ok {{ color: #1a7f37; }} .state.down {{ color: #cf222e; }} .state.unknown {{ color: #57606a; }} .state.maint {{ color: #0550ae; }}
.bars {{ width: 100%; height: 2.2rem; margin: .5rem 0 .25rem; display: block; }}
.legend {{ display: flex; justify-content: space-between; gap: .5rem; color: #57606a; font-size: .85rem; }}
.incidents li, .maintenance li {{ border-left: 4px solid #cf222e; padding-left: .75rem; margin: .5rem 0; }}
.incidents.past li {{ border-left-color: #57606a; }}
.maintenance li {{ border-left-color: #0550ae; }}
.tag {{ font-size: .85rem; font-weight: 600; color: #57606a; }} .tag.maint {{ color: #0550ae; }}
.note {{ color: #57606a; font-size: .9rem; margin: .25rem 0; }}
details {{ margin-top: .5rem; font-size: .9rem; }}
.days li {{ margin: .1rem 0; }}
footer {{ color: #57606a; font-size: .85rem; margin-top: 2rem; }}
a:focus-visible, summary:focus-visible {{ outline: 3px solid #0969da; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
<h1>Service status</h1>
{banner}
{}
{}
<section aria-labelledby="comp"><h2 id="comp">Components</h2>
<ul>{rows}</ul>
</section>
{}
<footer>Updated {}. Times are UTC. Uptime is the share of good check runs per day (UTC).</footer>
</main>
</body>
</html>
"#,
        open_incidents(page, now),
        maintenance(&page.maintenance),
        past_incidents(&page.past_incidents),
        time(now),
    )
}

/// `GET /status`: public, no token.
#[utoipa::path(get, path = "/status", responses((status = 200, description = "the public status page (HTML): components and their state, open and past incidents, scheduled maintenance, 90 days of uptime"), (status = 503, description = "the store is unavailable")))]
pub async fn page(State(st): State<AppState>) -> Response {
    let now = st.engine.clock().now();
    match st.checks.status_page(now, DAYS).await {
        Ok(page) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render(&page, now),
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><title>Status</title><p>The status page is unavailable right now; try again in a minute.</p>",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn comp(name: &str, health: Health, days: &[Option<f64>]) -> Component {
        Component {
            name: name.into(),
            health,
            down_since: None,
            maintenance: false,
            uptime: Some(0.9995),
            days: days
                .iter()
                .enumerate()
                .map(|(i, u)| DayUptime {
                    day: at(i as i64 * 86_400),
                    uptime: *u,
                    incidents: 0,
                })
                .collect(),
        }
    }

    fn page(components: Vec<Component>) -> StatusPage {
        StatusPage {
            components,
            ..StatusPage::default()
        }
    }

    #[test]
    fn names_are_escaped_and_every_bar_has_a_label() {
        let html = render(
            &page(vec![comp(
                "<script>x</script>",
                Health::Down,
                &[Some(1.0), None, Some(0.95)],
            )]),
            at(0),
        );
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert_eq!(html.matches("<rect ").count(), 3);
        assert_eq!(
            html.matches("<title>").count(),
            4,
            "page title plus one per bar"
        );
        assert!(html.contains("1970-01-02: no data") && html.contains("1970-01-03: 95.00% up"));
        assert!(html.contains("1 of 1 components have an outage"));
        assert!(html.contains(r#"name="viewport""#));
        assert!(
            html.contains("<summary>Days with downtime (1)</summary>"),
            "the bad day is listed as text too"
        );
    }

    #[test]
    fn all_up_and_empty_pages() {
        let html = render(&page(vec![comp("API", Health::Up, &[Some(1.0)])]), at(0));
        assert!(html.contains("All systems operational"));
        assert!(html.contains("No incidents in the last 90 days."));
        assert!(!html.contains("Open incidents") && !html.contains("Scheduled maintenance"));
        assert!(render(&page(vec![]), at(0)).contains("No components are published yet"));
    }

    #[test]
    fn incidents_open_and_past_with_durations() {
        let now = at(86_400 * 3 + 3600);
        let mut c = comp("API", Health::Down, &[Some(1.0), Some(0.98)]);
        c.days[1].incidents = 2;
        let p = StatusPage {
            components: vec![c],
            open_incidents: vec![PublicIncident {
                component: "API".into(),
                started_at: now - chrono::Duration::minutes(65),
                ended_at: None,
            }],
            past_incidents: vec![PublicIncident {
                component: "API".into(),
                started_at: at(86_400 + 600),
                ended_at: Some(at(86_400 + 600 + 45)),
            }],
            maintenance: vec![],
        };
        let html = render(&p, now);
        assert!(html.contains("Open incidents"), "{html}");
        assert!(
            html.contains("outage since <time datetime=\"1970-01-03T23:55:00Z\">1970-01-03 23:55 UTC</time>, for 1 h 5 min"),
            "{html}"
        );
        assert!(html.contains("Past incidents"));
        assert!(html.contains("to <time datetime=\"1970-01-02T00:10:45Z\">1970-01-02 00:10 UTC</time>, lasted 45 s"), "{html}");
        assert!(html.contains("1970-01-02: 98.00% up, 2 incidents"));
    }

    #[test]
    fn maintenance_in_progress_is_not_an_outage() {
        let now = at(86_400 * 10);
        let mut c = comp("API", Health::Down, &[Some(1.0)]);
        c.maintenance = true;
        let p = StatusPage {
            components: vec![c, comp("DB", Health::Up, &[Some(1.0)])],
            maintenance: vec![
                ScheduledMaintenance {
                    title: "Database <upgrade>".into(),
                    comment: "a few minutes of read-only".into(),
                    starts_at: now - chrono::Duration::minutes(10),
                    ends_at: now + chrono::Duration::minutes(20),
                    in_progress: true,
                    recurring: false,
                    components: vec!["API".into()],
                },
                ScheduledMaintenance {
                    title: "Scheduled maintenance".into(),
                    comment: String::new(),
                    starts_at: now + chrono::Duration::days(2),
                    ends_at: now + chrono::Duration::days(2) + chrono::Duration::hours(2),
                    in_progress: false,
                    recurring: true,
                    components: vec![],
                },
            ],
            ..StatusPage::default()
        };
        let html = render(&p, now);
        assert!(html.contains("Scheduled maintenance in progress"), "{html}");
        assert!(!html.contains("have an outage"));
        assert!(html.contains(r#"<span class="state maint">under maintenance</span>"#));
        assert!(html.contains("Database &lt;upgrade&gt;"));
        assert!(html.contains("in progress") && html.contains("upcoming"));
        assert!(html.contains("Affects: API") && html.contains("(30 min)"));
        assert!(html.contains("(2 h, recurring)"));
    }

    #[test]
    fn spans_read_like_people_write_them() {
        assert_eq!(span(-5), "0 s");
        assert_eq!(span(59), "59 s");
        assert_eq!(span(600), "10 min");
        assert_eq!(span(7200), "2 h");
        assert_eq!(span(3 * 86_400 + 4 * 3600 + 59), "3 d 4 h");
    }
}
