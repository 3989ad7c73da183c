//! Steward's signed-in web dashboard, rendered on the server.
//!
//! Every page is a pure function from the data the API gathered to HTML ([`maud`] escapes
//! every value), so pages are tested without a server. Charts are SVG drawn here, each with a
//! text alternative; the one small script ([`APP_JS`]) only adds keyboard shortcuts and
//! confirmations, and every page works without it. No Node build step: the stylesheet and the
//! script are plain files compiled into the binary.
//!
//! The HTTP side (sessions, CSRF, fetching, authorization) lives in `steward-api`'s `ui`
//! module; nothing here decides who may see what.
#![forbid(unsafe_code)]

pub mod charts;
pub mod layout;
pub mod pages;

pub use layout::{Flash, Nav, Shell};

/// The dashboard's stylesheet, served at `/ui/static/app.css`.
pub const APP_CSS: &str = include_str!("../assets/app.css");
/// The dashboard's only script, served at `/ui/static/app.js`.
pub const APP_JS: &str = include_str!("../assets/app.js");

/// What a section shows when the caller's token may not read it, or it failed.
pub type Section<T> = Result<T, String>;

/// `2026-12-01 10:57 UTC`.
pub fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `3d 4h`, `12m`, `45s`: a short, rounded length of time.
pub fn span(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(45), "45s");
        assert_eq!(span(12 * 60 + 5), "12m");
        assert_eq!(span(2 * 3600 + 60), "2h 1m");
        assert_eq!(span(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(span(-90), "1m");
    }
}
