//! Label matchers in Alertmanager's syntax: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"` (regexes are anchored; quotes are optional around simple values), and lists
//! of them such as `{alertname="X", severity=~"critical|page"}`. A missing label matches as
//! the empty string, as in Alertmanager.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::Labels;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "=~")]
    Re,
    #[serde(rename = "!~")]
    NotRe,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// One compiled matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

/// A matcher that does not parse, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad matcher {input:?}: {reason}")]
pub struct MatcherError {
    pub input: String,
    pub reason: String,
}

impl Matcher {
    /// Builds a matcher; regexes are anchored (`^(?:...)$`).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        let bad = |reason: String| MatcherError {
            input: format!("{name}{}{value:?}", op.as_str()),
            reason,
        };
        if !valid_label_name(name) {
            return Err(bad(format!(
                "{name:?} is not a label name (letters, digits and '_', not starting with a digit)"
            )));
        }
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| bad(format!("invalid regular expression: {e}")))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Parses one matcher such as `severity=~"critical|page"`.
    pub fn parse(input: &str) -> Result<Self, MatcherError> {
        let s = input.trim();
        let bad = |reason: &str| MatcherError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let pos = s
            .find(['=', '!'])
            .ok_or_else(|| bad("expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"))?;
        let name = s[..pos].trim();
        let rest = &s[pos..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Eq, v)
        } else {
            return Err(bad("expected an operator: =, !=, =~ or !~"));
        };
        let value = unquote(value.trim()).map_err(|r| bad(&r))?;
        Self::new(name, op, &value).map_err(|e| MatcherError {
            input: input.to_string(),
            reason: e.reason,
        })
    }

    /// Whether `labels` satisfy this matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    pub fn is_regex(&self) -> bool {
        matches!(self.op, MatchOp::Re | MatchOp::NotRe)
    }

    pub fn is_equal(&self) -> bool {
        matches!(self.op, MatchOp::Eq | MatchOp::Re)
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// Parses a list: either separate strings, or one `{a="b", c!="d"}` string.
pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<Matcher>, MatcherError> {
    let mut out = Vec::new();
    for item in items {
        let s = item.as_ref().trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            for part in split_top(inner) {
                if !part.trim().is_empty() {
                    out.push(Matcher::parse(&part)?);
                }
            }
        } else {
            out.push(Matcher::parse(s)?);
        }
    }
    Ok(out)
}

/// Whether every matcher matches.
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Letters, digits and `_`, not starting with a digit (Prometheus label names).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits on commas outside double quotes (also used by the importer).
pub(crate) fn split_top(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        let last = parts.last_mut().expect("one part at least");
        match c {
            _ if escaped => {
                escaped = false;
                last.push(c);
            }
            '\\' if quoted => {
                escaped = true;
                last.push(c);
            }
            '"' => {
                quoted = !quoted;
                last.push(c);
            }
            ',' if !quoted => parts.push(String::new()),
            _ => last.push(c),
        }
    }
    parts
}

fn unquote(v: &str) -> Result<String, String> {
    if let Some(inner) = v.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return Err("unterminated quoted value".into());
        };
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                // Like Alertmanager: \" \\ and \n are escapes; any other backslash stays,
                // so regexes such as "db-\d+" keep their meaning.
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(o @ ('"' | '\\')) => out.push(o),
                    Some(o) => {
                        out.push('\\');
                        out.push(o);
                    }
                    None => return Err("value ends with a backslash".into()),
                }
            } else {
                out.push(c);
            }
        }
        Ok(out)
    } else {
        Ok(v.trim_matches('\'').to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_match_like_alertmanager() {
        let l = labels(&[("severity", "critical"), ("service", "api")]);
        assert!(Matcher::parse(r#"severity="critical""#)
            .unwrap()
            .matches(&l));
        assert!(Matcher::parse("severity=critical").unwrap().matches(&l));
        assert!(!Matcher::parse(r#"severity!="critical""#)
            .unwrap()
            .matches(&l));
        assert!(Matcher::parse(r#"service=~"db|api""#).unwrap().matches(&l));
        assert!(
            !Matcher::parse(r#"service=~"ap""#).unwrap().matches(&l),
            "anchored"
        );
        assert!(Matcher::parse(r#"service!~"db""#).unwrap().matches(&l));
        assert!(
            Matcher::parse(r#"team="""#).unwrap().matches(&l),
            "missing = empty"
        );
    }

    #[test]
    fn lists_and_errors() {
        let m = parse_list(&[r#"{alertname="A,B", env!="dev"}"#]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].value, "A,B");
        let m = Matcher::parse(r#"host=~"db-\d+""#).unwrap();
        assert_eq!(m.value, r"db-\d+", "backslashes that are not escapes stay");
        assert!(m.matches(&labels(&[("host", "db-12")])));
        assert_eq!(Matcher::parse(r#"a="x\"y""#).unwrap().value, "x\"y");
        let e = Matcher::parse("severity").unwrap_err();
        assert!(e.reason.contains("NAME=VALUE"), "{e}");
        let e = Matcher::parse(r#"x=~"(""#).unwrap_err();
        assert!(e.reason.contains("regular expression"), "{e}");
        let e = Matcher::parse(r#"1x="a""#).unwrap_err();
        assert!(e.reason.contains("label name"), "{e}");
    }
}
