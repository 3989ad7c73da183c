//! The parsed form of a condition: a tree of [`Node`]s, each remembering the part of the
//! source it came from (for error messages) and how deep it is (bounded at parse time).

use regex::Regex;

use crate::{path::Path, value::Value};

/// One node of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: Kind,
    /// Byte range of the source this node was parsed from.
    pub start: usize,
    pub end: usize,
    /// 1 for a leaf, else 1 + the deepest child.
    pub depth: usize,
    /// True when no fact is read below this node, so its value is known at parse time.
    pub constant: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Lit(Value),
    List(Vec<Node>),
    /// A fact path and its text form (as `Expr::names` reports it).
    Path(Path, String),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Compare(CmpOp, Box<Node>, Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    /// `in`, `contains`, `matches`, `startswith`, `endswith`, possibly negated (`not in`).
    /// `regex` is compiled at parse time when the right side of `matches` is a literal.
    Test {
        op: TestOp,
        negated: bool,
        lhs: Box<Node>,
        rhs: Box<Node>,
        regex: Option<Regex>,
    },
    Call(Func, Box<Node>),
    Exists(Path),
}

impl Node {
    /// The node's children, in source order.
    pub fn children(&self) -> Vec<&Node> {
        match &self.kind {
            Kind::Lit(_) | Kind::Path(..) | Kind::Exists(..) => Vec::new(),
            Kind::List(items) | Kind::And(items) | Kind::Or(items) => items.iter().collect(),
            Kind::Not(n) | Kind::Neg(n) | Kind::Call(_, n) => vec![n],
            Kind::Compare(_, a, b) | Kind::Arith(_, a, b) => vec![a, b],
            Kind::Test { lhs, rhs, .. } => vec![lhs, rhs],
        }
    }

    pub fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Lit(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestOp {
    In,
    Contains,
    Matches,
    StartsWith,
    EndsWith,
}

impl TestOp {
    pub fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "in" => TestOp::In,
            "contains" => TestOp::Contains,
            "matches" => TestOp::Matches,
            "startswith" => TestOp::StartsWith,
            "endswith" => TestOp::EndsWith,
            _ => return None,
        })
    }

    pub fn word(self) -> &'static str {
        match self {
            TestOp::In => "in",
            TestOp::Contains => "contains",
            TestOp::Matches => "matches",
            TestOp::StartsWith => "startswith",
            TestOp::EndsWith => "endswith",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Len,
    Lower,
    Upper,
}

impl Func {
    pub fn name(self) -> &'static str {
        match self {
            Func::Len => "len",
            Func::Lower => "lower",
            Func::Upper => "upper",
        }
    }
}

/// Words with a meaning of their own; they cannot start a fact name (but may follow a dot:
/// `body.json.in` is fine).
pub(crate) const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "contains",
    "matches",
    "startswith",
    "endswith",
    "true",
    "false",
    "null",
];
