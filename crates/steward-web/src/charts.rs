//! Charts drawn as SVG on the server: uptime bars and a latency line chart. Each has a text
//! alternative (an `aria-label` summary, a `<title>` per bar, and a data table for the line
//! chart) so it reads with a screen reader and without colour.

use chrono::{DateTime, Utc};
use maud::{html, Markup};

/// One bar: a label for its period, the share of good runs, and an optional note for the
/// label (e.g. `, 1 incident`).
#[derive(Debug, Clone, Default)]
pub struct Bar {
    pub label: String,
    pub uptime: Option<f64>,
    pub note: String,
}

impl Bar {
    /// The bar's text: `2026-03-01: 99.50% up, 1 incident`.
    pub fn text(&self) -> String {
        format!(
            "{}: {}{}",
            self.label,
            uptime_class(self.uptime).1,
            self.note
        )
    }
}

/// Colour and text for an uptime share (dark enough for AA contrast on white).
pub fn uptime_class(u: Option<f64>) -> (&'static str, String) {
    match u {
        None => ("#8a8f98", "no data".into()),
        Some(u) if u >= 0.999 => ("#1a7f37", format!("{:.2}% up", u * 100.0)),
        Some(u) if u >= 0.99 => ("#9a6700", format!("{:.2}% up", u * 100.0)),
        Some(u) => ("#cf222e", format!("{:.2}% up", u * 100.0)),
    }
}

/// Uptime bars, oldest on the left; `what` names them for the screen reader.
pub fn uptime_bars(bars: &[Bar], what: &str, small: bool) -> Markup {
    let (w, gap, h) = (6usize, 2usize, 34usize);
    let width = bars.len().max(1) * (w + gap);
    let known: Vec<f64> = bars.iter().filter_map(|b| b.uptime).collect();
    let summary = if known.is_empty() {
        format!("{what}: no data yet")
    } else {
        let worst = known.iter().copied().fold(1.0, f64::min);
        format!(
            "{what}: {} periods, lowest {:.2}% up",
            bars.len(),
            worst * 100.0
        )
    };
    html! {
        svg.bars.small[small] viewBox=(format!("0 0 {width} {h}")) preserveAspectRatio="none" role="img" aria-label=(summary) {
            @for (i, b) in bars.iter().enumerate() {
                rect x=(i * (w + gap)) y="0" width=(w) height=(h) rx="1" fill=(uptime_class(b.uptime).0) {
                    title { (b.text()) }
                }
            }
        }
    }
}

/// One point of the latency chart: a period start and its p50 and p95 in milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyPoint {
    pub at: DateTime<Utc>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// A round upper bound for the y axis: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// `0 ms`, `0.5 ms`, `250 ms`: whole numbers unless the value is small.
fn axis_label(v: f64) -> String {
    if v == 0.0 || v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// Polyline point lists, broken where a period has no data.
fn segments(
    points: &[LatencyPoint],
    pick: fn(&LatencyPoint) -> Option<f64>,
    x: impl Fn(usize) -> f64,
    y: impl Fn(f64) -> f64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, p) in points.iter().enumerate() {
        match pick(p) {
            Some(v) => {
                if !cur.is_empty() {
                    cur.push(' ');
                }
                cur.push_str(&format!("{:.1},{:.1}", x(i), y(v)));
            }
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Latency p50 and p95 over time, with the numbers in a table under a disclosure.
pub fn latency_chart(points: &[LatencyPoint], what: &str) -> Markup {
    let (w, h, left, right, top, bottom) = (720.0, 200.0, 48.0, 8.0, 8.0, 22.0);
    let max = points
        .iter()
        .flat_map(|p| [p.p50_ms, p.p95_ms])
        .flatten()
        .fold(0.0f64, f64::max);
    let ceil = nice_ceiling(max);
    let n = points.len().max(2);
    let x = |i: usize| left + (w - left - right) * i as f64 / (n - 1) as f64;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v / ceil).min(1.0));
    let p50 = segments(points, |p| p.p50_ms, x, y);
    let p95 = segments(points, |p| p.p95_ms, x, y);
    let summary = if max == 0.0 {
        format!("{what}: no latency data yet")
    } else {
        format!(
            "{what}: highest p95 {max:.1} ms over {} periods",
            points.len()
        )
    };
    let fmt = |t: DateTime<Utc>| t.format("%m-%d %H:%M").to_string();
    html! {
        figure {
            svg.chart viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(summary) {
                @for frac in [0.0, 0.5, 1.0] {
                    @let gy = y(ceil * frac);
                    line x1=(left) x2=(w - right) y1=(gy) y2=(gy) stroke="#d0d7de" stroke-width="1" {}
                    text x=(left - 4.0) y=(gy + 4.0) text-anchor="end" { (axis_label(ceil * frac)) }
                }
                @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                    text x=(left) y=(h - 6.0) { (fmt(first.at)) }
                    text x=(w - right) y=(h - 6.0) text-anchor="end" { (fmt(last.at)) }
                }
                @for s in &p95 {
                    polyline points=(s) fill="none" stroke="#9a6700" stroke-width="2" stroke-dasharray="5 3" {}
                }
                @for s in &p50 {
                    polyline points=(s) fill="none" stroke="#0550ae" stroke-width="2" {}
                }
            }
            figcaption.legend {
                span { span.key.p50 {} "p50" }
                span { span.key.p95 {} "p95 (dashed)" }
                span { "highest p95: " (format!("{max:.1} ms")) }
            }
            details {
                summary { "Latency as a table" }
                div.table-wrap {
                    table {
                        thead { tr { th { "Period start" } th.num { "p50 ms" } th.num { "p95 ms" } } }
                        tbody {
                            @for p in points {
                                tr {
                                    td { (crate::when(p.at)) }
                                    td.num { (p.p50_ms.map_or("–".into(), |v| format!("{v:.1}"))) }
                                    td.num { (p.p95_ms.map_or("–".into(), |v| format!("{v:.1}"))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }

    #[test]
    fn bars_have_a_label_each_and_a_summary() {
        let bars = vec![
            Bar {
                label: "d1".into(),
                uptime: Some(1.0),
                ..Default::default()
            },
            Bar {
                label: "d2".into(),
                uptime: None,
                ..Default::default()
            },
            Bar {
                label: "d3".into(),
                uptime: Some(0.5),
                note: ", 1 incident".into(),
            },
        ];
        let svg = uptime_bars(&bars, "api", false).into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("<title>d2: no data</title>"));
        assert!(svg.contains("d3: 50.00% up, 1 incident") && svg.contains("#cf222e"));
        assert!(svg.contains(r#"aria-label="api: 3 periods, lowest 50.00% up""#));
    }

    #[test]
    fn gaps_break_the_latency_line() {
        let t = DateTime::from_timestamp(0, 0).unwrap();
        let pts: Vec<LatencyPoint> = [Some(10.0), Some(20.0), None, Some(40.0), Some(30.0)]
            .iter()
            .enumerate()
            .map(|(i, v)| LatencyPoint {
                at: t + chrono::Duration::hours(i as i64),
                p50_ms: *v,
                p95_ms: v.map(|v| v * 2.0),
            })
            .collect();
        let svg = latency_chart(&pts, "api").into_string();
        assert_eq!(svg.matches("<polyline").count(), 4, "two segments per line");
        assert!(svg.contains("100 ms"), "axis rounds 80 up to 100: {svg}");
        assert!(svg.contains("highest p95 80.0 ms"));
        assert_eq!(
            svg.matches("<tr>").count(),
            6,
            "header plus one row per point"
        );
    }
}
