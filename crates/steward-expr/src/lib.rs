//! Steward's condition language: the small expression language a health check's `condition`
//! is written in. A condition reads the facts a probe reported and is true (up) or false
//! (down):
//!
//! ```text
//! status == 200
//! response_time < 300ms
//! cert_expires_in > 14d
//! body.json.status == "ok"
//! rows > 0
//! status in [200, 204] && body contains "healthy"
//! exit_code == 0 && !(stdout matches "(?i)error")
//! disk_used_percent < 90%
//! load1 / cpus < 2
//! !exists(body.json.error) || body.json.error == null
//! header["content-type"] startswith "application/json"
//! ```
//!
//! - [`parse`](crate::parse()) turns source text into an [`Expr`] (errors name the column);
//!   [`Expr::eval`] decides it against a probe's [`Facts`]; [`Expr::names`] lists the facts
//!   it reads, so a config can be checked against what a probe reports before it runs.
//! - [`value`]: the values a probe reports ([`Facts`]) and an expression computes with;
//!   [`Facts::lookup`] resolves paths like `body.json.items[0].id`.
//!
//! ```
//! use std::time::Duration;
//! use steward_expr::{parse, Facts};
//!
//! let condition = parse("status == 200 && response_time < 300ms")?;
//! let mut facts = Facts::new();
//! facts.insert("status", 200u64);
//! facts.insert("response_time", Duration::from_millis(120));
//! assert!(condition.eval(&facts)?);
//! assert_eq!(condition.names(), ["status", "response_time"]);
//!
//! let err = parse("status ==").unwrap_err();
//! assert_eq!(err.to_string(), "column 10: expected a value after `==`, but the condition ends there");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Values
//!
//! | Written as | Value |
//! |---|---|
//! | `200`, `0.5`, `-3`, `1e6` | number |
//! | `300ms`, `1.5s`, `10m`, `2h`, `14d`, `250us`, `10ns` | duration (`m` is minutes) |
//! | `512B`, `10KB` (or `kB`), `2MB`, `1GB`, `1TB`, `1PB`; `4KiB`, `2MiB`, `1GiB`, `1TiB`, `1PiB` | number of bytes (`KB` = 1000, `KiB` = 1024) |
//! | `90%` | number (`90`) |
//! | `"ok"`, `'ok'` | string |
//! | `true`, `false` | bool |
//! | `null` | null |
//! | `[200, 204]` | list (any values; a trailing comma is fine) |
//!
//! A unit is written right after the number, without a space. Strings take double or single
//! quotes; the escapes are `\"`, `\'`, `\\`, `\n`, `\r`, `\t` and `\u{e9}`, and any other
//! backslash is kept as written, so regular expressions read naturally: `"^\d+$"`.
//!
//! # Facts
//!
//! A name reads a fact: `status`, `response_time`, `body.json.status`,
//! `body.json.items[0].name`, `header["content-type"]`. Parts are joined by `.`; `[0]` picks
//! a list item (counting from 0) and `["any key"]` a key that is not a plain word. `-` is
//! always minus, so a key with a hyphen is written in brackets: `header["content-type"]`.
//! After a `.` any word is a key, keywords included (`body.json.in`).
//!
//! A fact is found by its full name, else by the longest leading part that is a fact's name,
//! and the rest is looked up inside that fact's JSON document: with a fact `body.json`,
//! `body.json.data.items[0].id` looks up `data`, then item 0, then `id`. JSON numbers,
//! strings, bools and null read as numbers, strings, bools and null; JSON arrays as lists.
//!
//! Reading a fact that is not there is an error (the check is down, with a message saying
//! which fact is missing and what was reported), not `false`. For optional facts, test first:
//! `exists(x) && x > 3`; `&&` and `||` stop as soon as the answer is known, so `x` is not read
//! when it does not exist.
//!
//! # Operators
//!
//! From lowest to highest precedence:
//!
//! | Operator | Meaning |
//! |---|---|
//! | `a \|\| b`, `a or b` | either (stops at the first true) |
//! | `a && b`, `a and b` | both (stops at the first false) |
//! | `!a`, `not a` | not |
//! | `==` `!=` `<` `<=` `>` `>=` | compare |
//! | `x in list`, `list contains x` | list membership (`==` on each item) |
//! | `s in t`, `t contains s` | `t` holds the text `s` |
//! | `"key" in obj`, `obj contains "key"` | a JSON object has the key |
//! | `s matches "regex"` | the regular expression matches somewhere in `s` (anchor with `^…$`; `(?i)` ignores case) |
//! | `s startswith t`, `s endswith t` | text prefix / suffix |
//! | `+` `-` | add, subtract |
//! | `*` `/` | multiply, divide |
//! | `-a` | negate |
//!
//! `in`, `contains`, `matches`, `startswith` and `endswith` can be negated in place:
//! `status not in [500, 503]`, `body not contains "error"`. Comparisons do not chain
//! (`1 < x < 5` is an error; write `x > 1 && x < 5`). `!` binds looser than comparisons:
//! `!x == 1` means `!(x == 1)`. Parentheses group as usual. The keywords (`and`, `or`, `not`,
//! `in`, `contains`, `matches`, `startswith`, `endswith`, `true`, `false`, `null`) are lower
//! case and cannot start a fact name.
//!
//! # Types
//!
//! - `<`, `<=`, `>`, `>=` compare numbers with numbers, durations with durations, and strings
//!   with strings (by character code). Anything else is an error.
//! - `==` and `!=` compare values of the same type; lists compare item by item, JSON objects
//!   as a whole. `null` can be compared with anything and equals only `null`. Comparing other
//!   values of different types is an error, not `false` — `status == "200"` or
//!   `response_time < 300` would otherwise keep a check down without saying why. The message
//!   says how to fix it, e.g. "cannot compare duration `response_time` with number 300; write
//!   the number with a unit, e.g. `300ms` or `300s`".
//! - `x in list` is an error only when no item of the list has `x`'s type.
//! - Arithmetic: numbers with numbers; duration ± duration; duration × or ÷ number (a
//!   duration); duration ÷ duration (a number). Division by zero, overflow and negative
//!   durations are errors.
//! - `&&`, `||`, `!` and the condition as a whole need true or false: `status` alone is an
//!   error unless `status` is a bool.
//!
//! # Functions
//!
//! | Function | Value |
//! |---|---|
//! | `len(x)` | characters in a string, items in a list or JSON array, keys in a JSON object |
//! | `exists(name)` | whether the fact (or JSON path) was reported (even if its value is `null`) |
//! | `lower(s)`, `upper(s)` | the string in lower / upper case |
//!
//! # Grammar
//!
//! ```text
//! condition = or ;
//! or        = and { ( "||" | "or" ) and } ;
//! and       = not { ( "&&" | "and" ) not } ;
//! not       = ( "!" | "not" ) not | compare ;
//! compare   = sum [ compare-op sum ] ;
//! compare-op = "==" | "!=" | "<" | "<=" | ">" | ">="
//!           | [ "not" ] ( "in" | "contains" | "matches" | "startswith" | "endswith" ) ;
//! sum       = product { ( "+" | "-" ) product } ;
//! product   = unary { ( "*" | "/" ) unary } ;
//! unary     = "-" unary | primary ;
//! primary   = number | string | "true" | "false" | "null" | list | call | name
//!           | "(" or ")" ;
//! list      = "[" [ or { "," or } [ "," ] ] "]" ;
//! call      = ( "len" | "lower" | "upper" ) "(" or ")" | "exists" "(" name ")" ;
//! name      = word { "." word | "[" digits "]" | "[" string "]" } ;
//! word      = ( letter | "_" ) { letter | digit | "_" } ;
//! number    = digits [ "." digits ] [ ( "e" | "E" ) [ "+" | "-" ] digits ] [ unit ] ;
//! unit      = "ns" | "us" | "ms" | "s" | "m" | "h" | "d" | "%"
//!           | "B" | "KB" | "kB" | "MB" | "GB" | "TB" | "PB"
//!           | "KiB" | "MiB" | "GiB" | "TiB" | "PiB" ;
//! string    = '"' { char | escape } '"' | "'" { char | escape } "'" ;
//! ```
//!
//! # Checked when the config loads
//!
//! [`parse`](crate::parse()) reports, with the column: syntax errors, unknown units and
//! functions, invalid regular expressions after `matches` (compiled once, here), and any part
//! that reads no fact and cannot work (`300ms > 5`, `1 / 0`, `"a" < 1`, a number where true
//! or false is needed). Conditions are at most [`MAX_SOURCE_LEN`] bytes long and nest at most
//! [`MAX_DEPTH`] levels deep. [`ParseError`] displays its column counting from 1.
//!
//! Evaluation never panics: every failure is an [`EvalError`] saying what is wrong and how to
//! fix it.

#![forbid(unsafe_code)]

mod ast;
mod eval;
mod lexer;
mod parser;
mod path;
pub mod value;

use std::{fmt, str::FromStr};

pub use eval::EvalError;
pub use parser::{parse, ParseError, MAX_DEPTH, MAX_SOURCE_LEN};
pub use value::{Facts, Value};

/// A parsed condition. Cheap to evaluate many times; cloneable and shareable across threads.
#[derive(Clone)]
pub struct Expr {
    source: String,
    root: ast::Node,
    names: Vec<String>,
}

impl Expr {
    pub(crate) fn new(source: String, root: ast::Node, names: Vec<String>) -> Self {
        Self {
            source,
            root,
            names,
        }
    }

    /// Decides the condition against what a probe reported. `Err` when it cannot be decided
    /// (a fact it reads is missing, values of the wrong type, division by zero); the message
    /// says what to change.
    pub fn eval(&self, facts: &Facts) -> Result<bool, EvalError> {
        eval::Ctx {
            src: &self.source,
            facts,
        }
        .truth(&self.root)
    }

    /// Every fact path the condition reads, in order of first appearance, without repeats,
    /// including those only tested with `exists(...)`: e.g. `["status", "body.json.status"]`.
    /// Paths are written as [`Facts::lookup`] reads them: `body.json.items[0].id`,
    /// `header.content-type` (for `header["content-type"]`), `body.json["a b"]`.
    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The text the condition was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl FromStr for Expr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Two conditions are equal when their source text is.
impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Expr {}

/// Serialized as its source text.
impl serde::Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Deserialized from source text, which must parse.
impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
