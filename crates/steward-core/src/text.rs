//! Small text helpers shared across crates: HTML escaping (the email channel, the status
//! page), and the error text of everything that talks to other systems (alert channels,
//! rotators, health-check probes): an error's source chain on one line, cut to a length, with
//! secrets redacted.

use std::borrow::Cow;

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` with every occurrence of each non-empty secret replaced by `***`, longest first (a
/// secret containing another is replaced whole). A second line of defence behind "never
/// format a secret into a message", for messages that quote another system's output.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut by_len: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    by_len.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in by_len {
        out = out.replace(s, "***");
    }
    out
}

/// An error and its sources, joined with `: ` (client errors often keep the useful part,
/// such as "Connection refused", in a source). A source whose text the chain already holds is
/// left out, and so is a part that repeats the one before it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        next = s.source();
    }
    // Some errors repeat their own kind in their source ("Connection error: Connection error:").
    let mut parts: Vec<&str> = Vec::new();
    for p in out.split(": ") {
        if parts.last() != Some(&p) {
            parts.push(p);
        }
    }
    parts.join(": ")
}

/// `text` as one line of at most `max` bytes: line breaks become ` | `, other control
/// characters spaces, blank lines go, and the end is cut on a character boundary with `…`.
pub fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(|l| {
            l.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    truncate_bytes(&line, max).into_owned()
}

/// `s` cut on a character boundary to at most `max` bytes of UTF-8, ending in `…` (3 bytes)
/// when anything was cut.
pub fn truncate_bytes(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let ellipsis = '…'.len_utf8();
    if max < ellipsis {
        return Cow::Borrowed("");
    }
    let mut end = max - ellipsis;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_is_longest_first_and_misses_nothing() {
        assert_eq!(
            redact(
                "key abcdef in abcdefgh, pw ab",
                &["abcdef", "abcdefgh", "ab", ""]
            ),
            "key *** in ***, pw ***"
        );
    }

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chains_skip_repeats() {
        let e = E(
            "request failed",
            Some(Box::new(E(
                "Connection error",
                Some(Box::new(E("Connection refused (os error 111)", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "request failed: Connection error: Connection refused (os error 111)"
        );
        let twice = E(
            "Connection error",
            Some(Box::new(E("Connection error", None))),
        );
        assert_eq!(error_chain(&twice), "Connection error");
    }

    #[test]
    fn one_line_and_truncation() {
        assert_eq!(
            one_line("line one\r\nline\ttwo\n\n", 100),
            "line one | line two"
        );
        assert!(one_line(&"x".repeat(500), 50).len() <= 50);
        assert_eq!(truncate_bytes("hello", 5), "hello");
        let t = truncate_bytes("aéééé", 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
        assert_eq!(truncate_bytes("abcdef", 2), "");
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            super::html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
