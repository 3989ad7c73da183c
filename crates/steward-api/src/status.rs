//! The public status page (`GET /status`, no sign-in): every component (checks with a
//! `status_page` name), its current state, and 90 days of uptime as bars drawn in SVG on the
//! server. Plain HTML and CSS, no JavaScript: it reads on a phone, works with the keyboard and
//! a screen reader (every bar has a text label), and keeps WCAG AA contrast. It shows
//! component names, states and uptime only; never check settings, errors or facts.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use steward_checks::{service::Component, state::Health};
use steward_core::text::html_escape as esc;

use crate::AppState;

const DAYS: u32 = 90;

/// Bar colour and label for a day's uptime (dark enough on white for AA contrast).
fn day_class(u: Option<f64>) -> (&'static str, String) {
    match u {
        None => ("#8a8f98", "no data".into()),
        Some(u) if u >= 0.999 => ("#1a7f37", format!("{:.2}% up", u * 100.0)),
        Some(u) if u >= 0.99 => ("#9a6700", format!("{:.2}% up", u * 100.0)),
        Some(u) => ("#cf222e", format!("{:.2}% up", u * 100.0)),
    }
}

fn bars(c: &Component) -> String {
    let n = c.days.len().max(1);
    let (w, gap, h) = (6, 2, 34);
    let width = n * (w + gap);
    let mut svg = format!(
        r#"<svg class="bars" viewBox="0 0 {width} {h}" preserveAspectRatio="none" role="img" aria-label="{} uptime, last {n} days">"#,
        esc(&c.name)
    );
    for (i, d) in c.days.iter().enumerate() {
        let (fill, label) = day_class(d.uptime);
        svg.push_str(&format!(
            r#"<rect x="{}" y="0" width="{w}" height="{h}" rx="1" fill="{fill}"><title>{}: {}</title></rect>"#,
            i * (w + gap),
            d.day.format("%Y-%m-%d"),
            esc(&label)
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn state_text(c: &Component) -> (&'static str, &'static str) {
    match c.health {
        Health::Up => ("operational", "ok"),
        Health::Down => ("outage", "down"),
        Health::Unknown => ("no data yet", "unknown"),
    }
}

/// The page for `components` at `now`.
pub fn render(components: &[Component], now: DateTime<Utc>) -> String {
    let down: Vec<&Component> = components
        .iter()
        .filter(|c| c.health == Health::Down)
        .collect();
    let banner = if components.is_empty() {
        r#"<p class="banner unknown">No components are published yet.</p>"#.to_string()
    } else if down.is_empty() {
        r#"<p class="banner ok">All systems operational</p>"#.to_string()
    } else {
        format!(
            r#"<p class="banner down">{} of {} components have an outage</p>"#,
            down.len(),
            components.len()
        )
    };
    let mut incidents = String::new();
    if !down.is_empty() {
        incidents.push_str(r#"<section aria-labelledby="inc"><h2 id="inc">Open incidents</h2><ul class="incidents">"#);
        for c in &down {
            let since = c
                .down_since
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "just now".into());
            incidents.push_str(&format!(
                "<li><strong>{}</strong>: outage since <time>{}</time></li>",
                esc(&c.name),
                since
            ));
        }
        incidents.push_str("</ul></section>");
    }
    let mut rows = String::new();
    for c in components {
        let (text, class) = state_text(c);
        let uptime = c.uptime.map_or("no data".to_string(), |u| {
            format!("{:.3}% uptime", u * 100.0)
        });
        rows.push_str(&format!(
            r#"<li class="component"><div class="head"><h3>{}</h3><span class="state {class}">{text}</span></div>{}<div class="legend"><span>{DAYS} days ago</span><span>{}</span><span>today</span></div></li>"#,
            esc(&c.name),
            bars(c),
            uptime
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
main {{ max-width: 52rem; margin: 0 auto; padding: 1rem; }}
h1 {{ font-size: 1.5rem; margin: .5rem 0 1rem; }}
h2 {{ font-size: 1.15rem; }}
h3 {{ font-size: 1rem; margin: 0; }}
.banner {{ padding: .75rem 1rem; border-radius: .4rem; font-weight: 600; color: #fff; }}
.banner.ok {{ background: #1a7f37; }} .banner.down {{ background: #cf222e; }} .banner.unknown {{ background: #57606a; }}
ul {{ list-style: none; padding: 0; }}
.component {{ border: 1px solid #d0d7de; border-radius: .4rem; padding: .75rem 1rem; margin: .75rem 0; }}
.head {{ display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; }}
.state {{ font-weight: 600; }} .state.ok {{ color: #1a7f37; }} .state.down {{ color: #cf222e; }} .state.unknown {{ color: #57606a; }}
.bars {{ width: 100%; height: 2.2rem; margin: .5rem 0 .25rem; display: block; }}
.legend {{ display: flex; justify-content: space-between; color: #57606a; font-size: .85rem; }}
.incidents li {{ border-left: 4px solid #cf222e; padding-left: .75rem; margin: .5rem 0; }}
footer {{ color: #57606a; font-size: .85rem; margin-top: 2rem; }}
a:focus, [tabindex]:focus {{ outline: 3px solid #0969da; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
<h1>Service status</h1>
{banner}
{incidents}
<section aria-labelledby="comp"><h2 id="comp">Components</h2>
<ul>{rows}</ul>
</section>
<footer>Updated <time datetime="{}">{}</time>. Uptime is the share of good check runs per day (UTC).</footer>
</main>
</body>
</html>
"#,
        now.to_rfc3339(),
        now.format("%Y-%m-%d %H:%M UTC")
    )
}

/// `GET /status`: public, no token.
#[utoipa::path(get, path = "/status", responses((status = 200, description = "the public status page (HTML): components, their state and 90 days of uptime"), (status = 503, description = "the store is unavailable")))]
pub async fn page(State(st): State<AppState>) -> Response {
    let now = st.engine.clock().now();
    match st.checks.status_page(now, DAYS).await {
        Ok(components) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render(&components, now),
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
    use steward_checks::service::DayUptime;

    fn comp(name: &str, health: Health, days: &[Option<f64>]) -> Component {
        Component {
            name: name.into(),
            health,
            down_since: None,
            uptime: Some(0.9995),
            days: days
                .iter()
                .enumerate()
                .map(|(i, u)| DayUptime {
                    day: DateTime::from_timestamp(i as i64 * 86_400, 0).unwrap(),
                    uptime: *u,
                })
                .collect(),
        }
    }

    #[test]
    fn names_are_escaped_and_every_bar_has_a_label() {
        let page = render(
            &[comp(
                "<script>x</script>",
                Health::Down,
                &[Some(1.0), None, Some(0.95)],
            )],
            DateTime::from_timestamp(0, 0).unwrap(),
        );
        assert!(!page.contains("<script>x"), "{page}");
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert_eq!(page.matches("<rect ").count(), 3);
        assert_eq!(
            page.matches("<title>").count(),
            4,
            "page title plus one per bar"
        );
        assert!(page.contains("1970-01-02: no data") && page.contains("1970-01-03: 95.00% up"));
        assert!(page.contains("1 of 1 components have an outage"));
        assert!(page.contains(r#"name="viewport""#));
    }

    #[test]
    fn all_up_and_empty_pages() {
        let now = DateTime::from_timestamp(0, 0).unwrap();
        assert!(render(&[comp("API", Health::Up, &[Some(1.0)])], now)
            .contains("All systems operational"));
        assert!(render(&[], now).contains("No components are published yet"));
    }
}
