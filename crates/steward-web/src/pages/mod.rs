//! One module per page. Each takes what the API gathered and returns the whole page.

pub mod alerts;
pub mod audit;
pub mod backups;
pub mod checks;
pub mod overview;
pub mod secrets;
pub mod signin;

use maud::{html, Markup};
use steward_checks::state::Health;

/// A state pill: text plus colour class, never colour alone.
pub fn health_pill(h: Health) -> Markup {
    let (class, text) = match h {
        Health::Up => ("ok", "up"),
        Health::Down => ("bad", "down"),
        Health::Unknown => ("unknown", "unknown"),
    };
    html! { span class=(format!("pill {class}")) { (text) } }
}

/// A section the token may not read, or that failed: says so instead of the data.
pub fn unavailable(what: &str, why: &str) -> Markup {
    html! { p.muted { (what) " is not shown: " (why) } }
}

/// Labels as small code chips.
pub fn labels<'a>(it: impl IntoIterator<Item = (&'a String, &'a String)>) -> Markup {
    html! {
        span.labels {
            @for (k, v) in it { code { (k) "=" (v) } " " }
        }
    }
}
