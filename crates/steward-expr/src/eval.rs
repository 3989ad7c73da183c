//! Evaluation: decides a parsed condition against a probe's [`Facts`]. Never panics; every
//! failure is an [`EvalError`] that names the part of the condition and says how to fix it.

use std::{borrow::Cow, cmp::Ordering, time::Duration};

use regex::{Regex, RegexBuilder};

use crate::{
    ast::{ArithOp, CmpOp, Func, Kind, Node, TestOp},
    path::{from_json, Miss, Path},
    value::{Facts, Value},
};

/// Why a condition could not be decided. The check counts as down, with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The condition reads a fact the probe did not report.
    #[error(
        "`{name}` is not reported by this check ({reported}); if it is optional, test for it \
         first: `exists({name}) && ...`"
    )]
    NotReported {
        /// The fact path, as [`Expr::names`](crate::Expr::names) gives it.
        name: String,
        /// Which facts were reported, e.g. `it reported: status, response_time`.
        reported: String,
    },
    /// The path leads into a reported JSON document (or list), but not all the way.
    #[error(
        "`{name}` is not in what this check reported: {detail}; if it is optional, test for \
         it first: `exists({name}) && ...`"
    )]
    NotFound { name: String, detail: String },
    /// Values of the wrong type for an operator or function.
    #[error("{0}")]
    Type(String),
    /// Division by zero, overflow, a negative duration.
    #[error("{0}")]
    Arithmetic(String),
    /// A regular expression computed at run time is invalid.
    #[error("{0}")]
    Regex(String),
}

type R<T> = Result<T, EvalError>;

/// Regular expressions larger than this (compiled) are rejected.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a `matches` pattern; the error is a one-line description.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(text) => text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or("it does not parse")
                .to_string(),
            regex::Error::CompiledTooBig(_) => {
                "it is too large once compiled; simplify it (fewer or smaller repetitions)".into()
            }
            _ => "it does not compile".into(),
        })
}

/// A value's type, as error messages name it.
fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Duration(_) => "duration",
        Value::String(_) => "string",
        Value::List(_) | Value::Json(serde_json::Value::Array(_)) => "list",
        Value::Json(serde_json::Value::Object(_)) => "JSON object",
        Value::Json(_) => "JSON value",
    }
}

/// JSON scalars as plain values (JSON arrays and objects stay as they are).
fn norm(v: Cow<'_, Value>) -> Cow<'_, Value> {
    match &*v {
        Value::Json(j) if !j.is_array() && !j.is_object() => Cow::Owned(from_json(j)),
        _ => v,
    }
}

/// The items of a list or JSON array.
fn items(v: &Value) -> Option<Vec<Cow<'_, Value>>> {
    match v {
        Value::List(items) => Some(items.iter().map(|i| norm(Cow::Borrowed(i))).collect()),
        Value::Json(serde_json::Value::Array(a)) => {
            Some(a.iter().map(|j| Cow::Owned(from_json(j))).collect())
        }
        _ => None,
    }
}

/// `a == b`, or `None` when values of these types cannot be compared. Null equals only null
/// and compares (unequal) with anything; lists compare item by item.
fn equal(a: &Value, b: &Value) -> Option<bool> {
    use Value as V;
    Some(match (a, b) {
        (V::Null, V::Null) => true,
        (V::Null, _) | (_, V::Null) => false,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Number(x), V::Number(y)) => x == y,
        (V::Duration(x), V::Duration(y)) => x == y,
        (V::String(x), V::String(y)) => x == y,
        (V::Json(x @ serde_json::Value::Object(_)), V::Json(y @ serde_json::Value::Object(_))) => {
            x == y
        }
        _ => {
            let (xs, ys) = (items(a)?, items(b)?);
            xs.len() == ys.len() && xs.iter().zip(&ys).all(|(x, y)| equal(x, y) == Some(true))
        }
    })
}

/// A short rendering of a value for messages.
fn preview(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Duration(d) => format!("{d:?}"),
        Value::String(s) => {
            let mut short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                short.push('…');
            }
            format!("{short:?}")
        }
        other => match items(other) {
            Some(items) => format!("{} items", items.len()),
            None => "an object".into(),
        },
    }
}

fn scale(d: Duration, k: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(d.as_secs_f64() * k).ok()
}

/// Evaluation of nodes against facts; `src` is the condition's source, for messages.
pub(crate) struct Ctx<'a> {
    pub src: &'a str,
    pub facts: &'a Facts,
}

impl<'a> Ctx<'a> {
    fn text(&self, n: &Node) -> &'a str {
        self.src.get(n.start..n.end).unwrap_or("?")
    }

    /// `number 300` for a literal, `duration `response_time`` for anything else.
    fn describe(&self, n: &Node, v: &Value) -> String {
        if n.is_literal() {
            format!("{} {}", kind_name(v), self.text(n))
        } else {
            format!("{} `{}`", kind_name(v), self.text(n))
        }
    }

    /// The node as true or false.
    pub(crate) fn truth(&self, n: &'a Node) -> R<bool> {
        match &n.kind {
            Kind::And(items) => {
                for item in items {
                    if !self.truth(item)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Kind::Or(items) => {
                for item in items {
                    if self.truth(item)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Kind::Not(x) => Ok(!self.truth(x)?),
            Kind::Compare(op, a, b) => self.compare(*op, a, b),
            Kind::Test {
                op,
                negated,
                lhs,
                rhs,
                regex,
            } => Ok(self.test(*op, lhs, rhs, regex.as_ref())? != *negated),
            Kind::Exists(path) => Ok(self.facts.resolve(path).is_ok()),
            _ => match &*self.value(n)? {
                Value::Bool(b) => Ok(*b),
                other => {
                    let text = self.text(n);
                    let example = match other {
                        Value::Null => format!("`exists({text})` or `{text} != null`"),
                        Value::String(_) => format!("`{text} == \"ok\"`"),
                        Value::Duration(_) => format!("`{text} < 1s`"),
                        Value::List(_) | Value::Json(_) => format!("`len({text}) > 0`"),
                        _ => format!("`{text} > 0`"),
                    };
                    Err(EvalError::Type(format!(
                        "`{text}` is {} ({}), not true or false; compare it, e.g. {example}",
                        match other {
                            Value::Null => "null".to_string(),
                            v => format!("a {}", kind_name(v)),
                        },
                        preview(other)
                    )))
                }
            },
        }
    }

    /// The node's value (JSON scalars come back as plain values).
    pub(crate) fn value(&self, n: &'a Node) -> R<Cow<'a, Value>> {
        match &n.kind {
            Kind::Lit(v) => Ok(norm(Cow::Borrowed(v))),
            Kind::List(items) => Ok(Cow::Owned(Value::List(
                items
                    .iter()
                    .map(|i| self.value(i).map(Cow::into_owned))
                    .collect::<R<_>>()?,
            ))),
            Kind::Path(path, name) => self.lookup(path, name),
            Kind::Not(_)
            | Kind::And(_)
            | Kind::Or(_)
            | Kind::Compare(..)
            | Kind::Test { .. }
            | Kind::Exists(..) => Ok(Cow::Owned(Value::Bool(self.truth(n)?))),
            Kind::Neg(x) => {
                let v = self.value(x)?;
                match &*v {
                    Value::Number(k) => Ok(Cow::Owned(Value::Number(-k))),
                    Value::Duration(_) => Err(EvalError::Arithmetic(format!(
                        "`{}` would be a negative duration, and durations cannot be negative",
                        self.text(n)
                    ))),
                    other => Err(EvalError::Type(format!(
                        "cannot negate {}; `-` works on numbers",
                        self.describe(x, other)
                    ))),
                }
            }
            Kind::Arith(op, a, b) => self.arith(n, *op, a, b).map(Cow::Owned),
            Kind::Call(f, x) => self.call(*f, x).map(Cow::Owned),
        }
    }

    fn lookup(&self, path: &Path, name: &str) -> R<Cow<'a, Value>> {
        match self.facts.resolve(path) {
            Ok(v) => Ok(norm(v)),
            Err(Miss::NoFact) => {
                let mut names: Vec<&str> = self.facts.iter().map(|(k, _)| k.as_str()).collect();
                let reported = if names.is_empty() {
                    "it reported nothing".to_string()
                } else {
                    if names.len() > 15 {
                        names.truncate(15);
                        names.push("...");
                    }
                    format!("it reported: {}", names.join(", "))
                };
                Err(EvalError::NotReported {
                    name: name.to_string(),
                    reported,
                })
            }
            Err(Miss::Inside { detail }) => Err(EvalError::NotFound {
                name: name.to_string(),
                detail,
            }),
        }
    }

    fn compare(&self, op: CmpOp, a_n: &'a Node, b_n: &'a Node) -> R<bool> {
        let a = self.value(a_n)?;
        let b = self.value(b_n)?;
        let ordering = match op {
            CmpOp::Eq | CmpOp::Ne => {
                return match equal(&a, &b) {
                    Some(eq) => Ok(eq == (op == CmpOp::Eq)),
                    None => Err(self.mismatch(op, a_n, &a, b_n, &b)),
                }
            }
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => match (&*a, &*b) {
                (Value::Number(x), Value::Number(y)) => x.partial_cmp(y),
                (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
                (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                _ => return Err(self.mismatch(op, a_n, &a, b_n, &b)),
            },
        };
        // Numbers that do not compare (NaN) make every ordering false, as in Rust.
        Ok(ordering.is_some_and(|o| match op {
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            CmpOp::Eq | CmpOp::Ne => false,
        }))
    }

    fn mismatch(&self, op: CmpOp, a_n: &Node, a: &Value, b_n: &Node, b: &Value) -> EvalError {
        let mut msg = format!(
            "cannot compare {} with {}",
            self.describe(a_n, a),
            self.describe(b_n, b)
        );
        let number_side = |x: &Value| matches!(x, Value::Number(_));
        match (a, b) {
            (Value::Duration(_), Value::Number(_)) | (Value::Number(_), Value::Duration(_)) => {
                let num = if number_side(a) { a_n } else { b_n };
                msg.push_str(&self.unit_hint(num));
            }
            (Value::String(s), Value::Number(_)) | (Value::Number(_), Value::String(s)) => {
                let (str_n, num_n) = if number_side(a) {
                    (b_n, a_n)
                } else {
                    (a_n, b_n)
                };
                if str_n.is_literal() && s.trim().parse::<f64>().is_ok() {
                    msg.push_str(&format!("; write {} without quotes", s.trim()));
                } else if num_n.is_literal() {
                    msg.push_str(&format!(
                        "; to compare text, quote the number: \"{}\"",
                        self.text(num_n)
                    ));
                }
            }
            _ if op != CmpOp::Eq && op != CmpOp::Ne && kind_name(a) == kind_name(b) => {
                msg.push_str(&format!(
                    "; `{}` works on numbers, durations and strings",
                    op.symbol()
                ));
            }
            _ => {}
        }
        EvalError::Type(msg)
    }

    /// `; write the number with a unit, e.g. `300ms` or `300s`` for a literal number.
    fn unit_hint(&self, num: &Node) -> String {
        let t = self.text(num);
        if num.is_literal() && t.parse::<f64>().is_ok() {
            format!("; write the number with a unit, e.g. `{t}ms` or `{t}s`")
        } else {
            "; durations go with durations, written with a unit such as `300ms` or `2s`".into()
        }
    }

    fn test(&self, op: TestOp, lhs: &'a Node, rhs: &'a Node, regex: Option<&Regex>) -> R<bool> {
        let a = self.value(lhs)?;
        let b = self.value(rhs)?;
        match op {
            TestOp::In => self.contains(op, rhs, &b, lhs, &a),
            TestOp::Contains => self.contains(op, lhs, &a, rhs, &b),
            TestOp::StartsWith => Ok(self
                .string(op, lhs, &a)?
                .starts_with(self.string(op, rhs, &b)?)),
            TestOp::EndsWith => Ok(self
                .string(op, lhs, &a)?
                .ends_with(self.string(op, rhs, &b)?)),
            TestOp::Matches => {
                let s = self.string(op, lhs, &a)?;
                match regex {
                    Some(re) => Ok(re.is_match(s)),
                    None => {
                        let pattern = self.string(op, rhs, &b)?;
                        let re = compile_regex(pattern).map_err(|m| {
                            EvalError::Regex(format!(
                                "`{}` is not a valid regular expression: {m}",
                                self.text(rhs)
                            ))
                        })?;
                        Ok(re.is_match(s))
                    }
                }
            }
        }
    }

    fn string<'v>(&self, op: TestOp, n: &Node, v: &'v Value) -> R<&'v str> {
        match v {
            Value::String(s) => Ok(s),
            other => {
                let mut msg = format!(
                    "`{}` works on strings, but {} is not one",
                    op.word(),
                    self.describe(n, other)
                );
                if n.is_literal() && matches!(other, Value::Number(_)) {
                    msg.push_str(&format!("; write it in quotes: \"{}\"", self.text(n)));
                }
                Err(EvalError::Type(msg))
            }
        }
    }

    /// Whether `hay` holds `needle`: text in text, an item in a list, a key in an object.
    fn contains(
        &self,
        op: TestOp,
        hay_n: &Node,
        hay: &Value,
        needle_n: &Node,
        needle: &Value,
    ) -> R<bool> {
        let cannot = |why: &str| {
            EvalError::Type(format!(
                "cannot look for {} in {}: {why}",
                self.describe(needle_n, needle),
                self.describe(hay_n, hay)
            ))
        };
        match hay {
            Value::String(h) => match needle {
                Value::String(n) => Ok(h.contains(n.as_str())),
                Value::Number(_) if needle_n.is_literal() => Err(cannot(&format!(
                    "text holds only text; write it in quotes: \"{}\"",
                    self.text(needle_n)
                ))),
                _ => Err(cannot("text holds only text")),
            },
            Value::Json(serde_json::Value::Object(o)) => match needle {
                Value::String(k) => Ok(o.contains_key(k)),
                _ => Err(cannot("the keys of a JSON object are strings")),
            },
            _ => {
                let Some(items) = items(hay) else {
                    let side = if op == TestOp::In { "right" } else { "left" };
                    return Err(EvalError::Type(format!(
                        "`{}` needs a list, a string or a JSON object on its {side}, but {} is \
                         not one",
                        op.word(),
                        self.describe(hay_n, hay)
                    )));
                };
                let mut comparable = items.is_empty();
                for item in &items {
                    match equal(item, needle) {
                        Some(true) => return Ok(true),
                        Some(false) => comparable = true,
                        None => {}
                    }
                }
                if comparable {
                    return Ok(false);
                }
                let mut kinds: Vec<&str> = items.iter().map(|i| kind_name(i)).collect();
                kinds.sort_unstable();
                kinds.dedup();
                Err(cannot(&format!(
                    "the list holds only {} values",
                    kinds.join(" and ")
                )))
            }
        }
    }

    fn arith(&self, n: &Node, op: ArithOp, a_n: &'a Node, b_n: &'a Node) -> R<Value> {
        let a = self.value(a_n)?;
        let b = self.value(b_n)?;
        let text = self.text(n);
        let zero = || {
            EvalError::Arithmetic(if b_n.is_literal() {
                format!("division by zero in `{text}`")
            } else {
                format!("division by zero in `{text}`: `{}` is 0", self.text(b_n))
            })
        };
        let bad_duration = || {
            EvalError::Arithmetic(format!(
                "`{text}` is not a valid duration (negative, or too long)"
            ))
        };
        let mismatch = |hint: String| {
            EvalError::Type(format!(
                "cannot {} {} and {}{hint}",
                match op {
                    ArithOp::Add => "add",
                    ArithOp::Sub => "subtract",
                    ArithOp::Mul => "multiply",
                    ArithOp::Div => "divide",
                },
                self.describe(a_n, &a),
                self.describe(b_n, &b)
            ))
        };
        use Value as V;
        Ok(match (&*a, &*b) {
            (V::Number(x), V::Number(y)) => {
                let r = match op {
                    ArithOp::Add => x + y,
                    ArithOp::Sub => x - y,
                    ArithOp::Mul => x * y,
                    ArithOp::Div if *y == 0.0 => return Err(zero()),
                    ArithOp::Div => x / y,
                };
                if !r.is_finite() && x.is_finite() && y.is_finite() {
                    return Err(EvalError::Arithmetic(format!(
                        "`{text}` is too large to compute"
                    )));
                }
                V::Number(r)
            }
            (V::Duration(x), V::Duration(y)) => match op {
                ArithOp::Add => V::Duration(x.checked_add(*y).ok_or_else(bad_duration)?),
                ArithOp::Sub => V::Duration(x.checked_sub(*y).ok_or_else(|| {
                    EvalError::Arithmetic(format!(
                        "`{text}` would be negative ({x:?} - {y:?}), and durations cannot be \
                         negative; compare them instead: `{} > {}`",
                        self.text(a_n),
                        self.text(b_n)
                    ))
                })?),
                ArithOp::Div if y.is_zero() => return Err(zero()),
                ArithOp::Div => V::Number(x.as_secs_f64() / y.as_secs_f64()),
                ArithOp::Mul => {
                    return Err(mismatch(
                        "; multiply a duration by a plain number, e.g. `2 * 300ms`".into(),
                    ))
                }
            },
            (V::Duration(d), V::Number(k)) => match op {
                ArithOp::Mul => V::Duration(scale(*d, *k).ok_or_else(bad_duration)?),
                ArithOp::Div if *k == 0.0 => return Err(zero()),
                ArithOp::Div => V::Duration(scale(*d, 1.0 / k).ok_or_else(bad_duration)?),
                ArithOp::Add | ArithOp::Sub => return Err(mismatch(self.unit_hint(b_n))),
            },
            (V::Number(k), V::Duration(d)) => match op {
                ArithOp::Mul => V::Duration(scale(*d, *k).ok_or_else(bad_duration)?),
                _ => return Err(mismatch(self.unit_hint(a_n))),
            },
            _ => {
                return Err(mismatch(format!(
                    "; `{}` works on numbers and durations",
                    op.symbol()
                )))
            }
        })
    }

    fn call(&self, f: Func, x: &'a Node) -> R<Value> {
        let v = self.value(x)?;
        let bad = |want: &str| {
            EvalError::Type(format!(
                "{}() takes {want}, but {} is not one",
                f.name(),
                self.describe(x, &v)
            ))
        };
        match f {
            Func::Len => match &*v {
                Value::String(s) => Ok(Value::Number(s.chars().count() as f64)),
                Value::List(items) => Ok(Value::Number(items.len() as f64)),
                Value::Json(serde_json::Value::Array(a)) => Ok(Value::Number(a.len() as f64)),
                Value::Json(serde_json::Value::Object(o)) => Ok(Value::Number(o.len() as f64)),
                _ => Err(bad("a string, a list or a JSON object")),
            },
            Func::Lower => match &*v {
                Value::String(s) => Ok(Value::String(s.to_lowercase())),
                _ => Err(bad("a string")),
            },
            Func::Upper => match &*v {
                Value::String(s) => Ok(Value::String(s.to_uppercase())),
                _ => Err(bad("a string")),
            },
        }
    }
}
