//! Fact paths (`status`, `body.json.items[0].name`, `header["content-type"]`) and how they are
//! looked up in [`Facts`]: the longest leading part that is a fact's name is found first, and
//! the rest descends into that fact's JSON document (or list).

use std::{borrow::Cow, fmt};

use crate::value::{Facts, Value};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `.name` or `["name"]`: a part of a fact's name, or a JSON object key.
    Key(String),
    /// `[3]`: an item of a list or JSON array (0-based).
    Index(usize),
}

/// A fact path, e.g. `body.json.items[0].name`.
///
/// Its text form (what [`Display`](fmt::Display) writes and [`Path::parse`] reads, and what
/// `Expr::names` returns) joins keys with `.` when they are made of letters, digits, `_` and
/// `-` only (`header.content-type`), writes other keys as `["a b"]`, and indices as `[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    segments: Vec<Segment>,
}

impl Path {
    /// A path from its segments; `None` when it is empty or does not start with a key.
    pub fn new(segments: Vec<Segment>) -> Option<Self> {
        match segments.first() {
            Some(Segment::Key(_)) => Some(Self { segments }),
            _ => None,
        }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Reads a path's text form (see [`Path`]); `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut segments = Vec::new();
        let mut rest = text;
        let mut first = true;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let (seg, tail) = bracket(after)?;
                segments.push(seg);
                rest = tail;
            } else {
                let key_text = if first { rest } else { rest.strip_prefix('.')? };
                let end = key_text
                    .find(|c: char| !is_plain_key_char(c))
                    .unwrap_or(key_text.len());
                if end == 0 {
                    return None;
                }
                segments.push(Segment::Key(key_text[..end].to_string()));
                rest = &key_text[end..];
            }
            first = false;
        }
        Self::new(segments)
    }

    /// The text form of the first `n` segments.
    fn prefix_text(&self, n: usize) -> String {
        let mut out = String::new();
        for (i, seg) in self.segments.iter().take(n).enumerate() {
            write_segment(&mut out, seg, i == 0);
        }
        out
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix_text(self.segments.len()))
    }
}

fn is_plain_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn write_segment(out: &mut String, seg: &Segment, first: bool) {
    match seg {
        Segment::Key(k) if !k.is_empty() && k.chars().all(is_plain_key_char) => {
            if !first {
                out.push('.');
            }
            out.push_str(k);
        }
        Segment::Key(k) => {
            out.push_str("[\"");
            for c in k.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push_str("\"]");
        }
        Segment::Index(i) => {
            out.push('[');
            out.push_str(&i.to_string());
            out.push(']');
        }
    }
}

/// Reads `0]` or `"key"]` (the part after a `[`).
fn bracket(s: &str) -> Option<(Segment, &str)> {
    if let Some(body) = s.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => key.push(chars.next()?.1),
                '"' => {
                    let tail = body[i + 1..].strip_prefix(']')?;
                    return Some((Segment::Key(key), tail));
                }
                c => key.push(c),
            }
        }
        None
    } else {
        let end = s.find(']')?;
        let index = s[..end].parse().ok()?;
        Some((Segment::Index(index), &s[end + 1..]))
    }
}

/// Why a path was not found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Miss {
    /// No fact's name is a leading part of the path.
    NoFact,
    /// A fact was found, but the rest of the path is not in it: `detail` says where it stops.
    Inside { detail: String },
}

/// A JSON value as a [`Value`]: scalars become plain values, arrays and objects stay JSON.
pub(crate) fn from_json(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(s.clone()),
        other => Value::Json(other.clone()),
    }
}

/// A short description of a JSON value's shape, for "the path stops here" messages.
fn json_shape(j: &serde_json::Value) -> String {
    match j {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(_) => "a bool".into(),
        serde_json::Value::Number(_) => "a number".into(),
        serde_json::Value::String(_) => "a string".into(),
        serde_json::Value::Array(a) => format!("a list of {} items", a.len()),
        serde_json::Value::Object(o) => {
            let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
            keys.sort_unstable();
            if keys.len() > 10 {
                keys.truncate(10);
                keys.push("...");
            }
            if keys.is_empty() {
                "an empty object".into()
            } else {
                format!("an object with keys {}", keys.join(", "))
            }
        }
    }
}

impl Facts {
    /// The value at `path` (text form, e.g. `body.json.items[0].id`): the fact of exactly that
    /// name if there is one, else the longest leading part that names a fact, descended into
    /// (JSON objects by key, JSON arrays and lists by index). JSON scalars come back as plain
    /// values (`Number`, `String`, `Bool`, `Null`), JSON arrays and objects as [`Value::Json`].
    pub fn lookup(&self, path: &str) -> Option<Cow<'_, Value>> {
        if let Some(v) = self.get(path) {
            return Some(Cow::Borrowed(v));
        }
        self.resolve(&Path::parse(path)?).ok()
    }

    /// Looks `path` up as [`Facts::lookup`] does, saying why when it is not there.
    pub(crate) fn resolve(&self, path: &Path) -> Result<Cow<'_, Value>, Miss> {
        let segs = path.segments();
        for n in (1..=segs.len()).rev() {
            let name = path.prefix_text(n);
            if let Some(v) = self.get(&name) {
                return descend(v, &segs[n..], name);
            }
        }
        Err(Miss::NoFact)
    }
}

/// Follows `rest` down from `v` (found at path text `at`).
fn descend<'a>(v: &'a Value, rest: &[Segment], mut at: String) -> Result<Cow<'a, Value>, Miss> {
    let Some((seg, tail)) = rest.split_first() else {
        return Ok(match v {
            Value::Json(j) => Cow::Owned(from_json(j)),
            other => Cow::Borrowed(other),
        });
    };
    match (v, seg) {
        (Value::List(items), Segment::Index(i)) => match items.get(*i) {
            Some(item) => {
                write_segment(&mut at, seg, false);
                descend(item, tail, at)
            }
            None => Err(Miss::Inside {
                detail: format!("`{at}` is a list of {} items", items.len()),
            }),
        },
        (Value::Json(j), _) => descend_json(j, rest, at),
        (other, _) => Err(Miss::Inside {
            detail: format!(
                "`{at}` is a {}, which has nothing inside",
                other.type_name()
            ),
        }),
    }
}

fn descend_json<'a>(
    mut j: &'a serde_json::Value,
    rest: &[Segment],
    mut at: String,
) -> Result<Cow<'a, Value>, Miss> {
    for seg in rest {
        let next = match (j, seg) {
            (serde_json::Value::Object(o), Segment::Key(k)) => o.get(k),
            (serde_json::Value::Array(a), Segment::Index(i)) => a.get(*i),
            _ => None,
        };
        match next {
            Some(n) => {
                write_segment(&mut at, seg, false);
                j = n;
            }
            None => {
                return Err(Miss::Inside {
                    detail: format!("`{at}` is {}", json_shape(j)),
                })
            }
        }
    }
    Ok(Cow::Owned(from_json(j)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(s: &str) -> Segment {
        Segment::Key(s.into())
    }

    #[test]
    fn text_form_round_trips() {
        let p = Path::new(vec![
            key("body"),
            key("json"),
            key("items"),
            Segment::Index(0),
            key("content-type"),
            key("a b"),
            key("q\"\\"),
            key(""),
        ])
        .unwrap();
        let text = p.to_string();
        assert_eq!(
            text,
            r#"body.json.items[0].content-type["a b"]["q\"\\"][""]"#
        );
        assert_eq!(Path::parse(&text), Some(p));
        assert_eq!(
            Path::parse("status").unwrap().segments(),
            &[key("status")][..]
        );
        for bad in [
            "", ".a", "a.", "a..b", "[0]", "a[x]", "a[\"x]", "a[-1]", "a b",
        ] {
            assert_eq!(Path::parse(bad), None, "{bad:?}");
        }
    }

    fn facts() -> Facts {
        let mut f = Facts::new();
        f.insert("status", 200u64);
        f.insert("body", "{\"status\":\"ok\"}");
        f.insert(
            "body.json",
            Value::Json(json!({
                "status": "ok",
                "count": 4,
                "data": {"items": [{"id": 7, "tags": ["a", "b"]}, {"id": 8}], "empty": null},
                "a.b": true
            })),
        );
        f.insert("header.content-type", "text/html");
        f.insert(
            "list",
            Value::List(vec![
                Value::Number(1.0),
                Value::Json(json!({"x": [10, 20]})),
            ]),
        );
        f
    }

    #[test]
    fn lookup_exact_and_nested() {
        let f = facts();
        let get = |p: &str| f.lookup(p).map(Cow::into_owned);
        assert_eq!(get("status"), Some(Value::Number(200.0)));
        assert_eq!(get("body.json.status"), Some(Value::String("ok".into())));
        assert_eq!(get("body.json.count"), Some(Value::Number(4.0)));
        assert_eq!(get("body.json.data.items[0].id"), Some(Value::Number(7.0)));
        assert_eq!(
            get("body.json.data.items[0].tags[1]"),
            Some(Value::String("b".into()))
        );
        assert_eq!(get("body.json.data.items[1].id"), Some(Value::Number(8.0)));
        assert_eq!(get("body.json.data.empty"), Some(Value::Null));
        assert_eq!(get(r#"body.json["a.b"]"#), Some(Value::Bool(true)));
        assert_eq!(
            get(r#"header["content-type"]"#),
            Some(Value::String("text/html".into()))
        );
        assert_eq!(get("list[0]"), Some(Value::Number(1.0)));
        assert_eq!(get("list[1].x[1]"), Some(Value::Number(20.0)));
        assert_eq!(
            get("body.json.data.items[0].tags"),
            Some(Value::Json(json!(["a", "b"])))
        );
    }

    #[test]
    fn lookup_misses() {
        let f = facts();
        for p in [
            "nope",
            "body.json.nope",
            "body.json.data.items[2]",
            "body.json.data.items.x",
            "body.json.status.x",
            "body.json.data[0]",
            "status.x",
            "list[5]",
            "list[0].x",
            "header",
        ] {
            assert_eq!(f.lookup(p), None, "{p}");
        }
        let miss = |p: &str| f.resolve(&Path::parse(p).unwrap()).unwrap_err();
        assert_eq!(miss("nope"), Miss::NoFact);
        assert_eq!(
            miss("body.json.data.items[5].id"),
            Miss::Inside {
                detail: "`body.json.data.items` is a list of 2 items".into()
            }
        );
        assert_eq!(
            miss("body.json.data.nope"),
            Miss::Inside {
                detail: "`body.json.data` is an object with keys empty, items".into()
            }
        );
        assert_eq!(
            miss("status.x"),
            Miss::Inside {
                detail: "`status` is a number, which has nothing inside".into()
            }
        );
        assert_eq!(
            miss("list[9]"),
            Miss::Inside {
                detail: "`list` is a list of 2 items".into()
            }
        );
    }
}
