//! The parser: tokens to a [`Node`] tree by recursive descent, one function per precedence
//! level (see the grammar in the crate docs). Nesting is bounded, literal regular expressions
//! are compiled here, and every part that reads no fact is evaluated once here so that
//! mistakes like `300ms > 5` or `1 / 0` are reported when the config loads.

use crate::{
    ast::{ArithOp, CmpOp, Func, Kind, Node, TestOp, KEYWORDS},
    eval::{compile_regex, Ctx},
    lexer::{lex, SyntaxError, Tok, Token},
    path::{Path, Segment},
    value::{Facts, Value},
    Expr,
};

/// The longest condition accepted, in bytes.
pub const MAX_SOURCE_LEN: usize = 4096;

/// How deeply a condition may nest (parentheses, `!`, lists, function calls, operators).
pub const MAX_DEPTH: usize = 64;

/// Why a condition does not parse: where (`offset`, the 0-based character column) and what
/// is wrong. Displays as `column 12: expected a value after `==``, with the column counted
/// from 1 as editors do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {}: {}", .offset + 1, .message)]
pub struct ParseError {
    /// 0-based character (not byte) column of the problem.
    pub offset: usize,
    pub message: String,
}

type R<T> = Result<T, SyntaxError>;

fn err<T>(at: usize, message: impl Into<String>) -> R<T> {
    Err(SyntaxError {
        at,
        message: message.into(),
    })
}

/// Parses a condition. See the crate docs for the language.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let to_parse_error = |e: SyntaxError| ParseError {
        offset: src
            .get(..e.at)
            .map_or_else(|| src.chars().count(), |s| s.chars().count()),
        message: e.message,
    };
    if src.len() > MAX_SOURCE_LEN {
        return Err(ParseError {
            offset: 0,
            message: format!(
                "the condition is {} bytes long, more than the limit of {MAX_SOURCE_LEN}; \
                 simplify it or split it into several checks",
                src.len()
            ),
        });
    }
    let tokens = lex(src).map_err(to_parse_error)?;
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
        names: Vec::new(),
    };
    let (root, names) = p.parse_all().map_err(to_parse_error)?;
    Ok(Expr::new(src.to_string(), root, names))
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    /// Current nesting of the recursive descent, bounded by [`MAX_DEPTH`].
    depth: usize,
    /// Fact paths read, in order of first appearance.
    names: Vec<String>,
}

/// A comparison-level operator found at the current position.
#[derive(Clone, Copy)]
enum CmpLike {
    Cmp(CmpOp),
    Test(TestOp, bool),
}

impl<'s> Parser<'s> {
    fn parse_all(&mut self) -> R<(Node, Vec<String>)> {
        if self.peek() == &Tok::Eof {
            return err(0, "the condition is empty; write one, e.g. `status == 200`");
        }
        let root = self.parse_or()?;
        if self.peek() != &Tok::Eof {
            let t = self.token();
            let text = self.text(t.start, t.end);
            let hint = if KEYWORDS.contains(&text.to_ascii_lowercase().as_str())
                && text != text.to_ascii_lowercase()
            {
                format!(
                    "; keywords are lower case: write `{}`",
                    text.to_ascii_lowercase()
                )
            } else if t.tok == Tok::RParen {
                "; it has no matching `(`".to_string()
            } else {
                "; join conditions with `&&` or `||`".to_string()
            };
            return err(
                t.start,
                format!(
                    "unexpected {} after a complete condition{hint}",
                    t.tok.describe()
                ),
            );
        }
        self.check(&root, true)?;
        Ok((root, std::mem::take(&mut self.names)))
    }

    // ---- token access -------------------------------------------------------------------

    fn token(&self) -> &Token {
        // The token list always ends with Eof and `pos` never moves past it.
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.pos.min(last)]
    }

    fn peek(&self) -> &Tok {
        &self.token().tok
    }

    fn peek_second(&self) -> &Tok {
        self.tokens.get(self.pos + 1).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn bump(&mut self) -> Token {
        let t = self.token().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }

    fn text(&self, start: usize, end: usize) -> &'s str {
        self.src.get(start..end).unwrap_or("")
    }

    /// The source text of the token before the current one.
    fn prev_text(&self) -> Option<&'s str> {
        let prev = self.tokens.get(self.pos.checked_sub(1)?)?;
        Some(self.text(prev.start, prev.end))
    }

    fn expect_value_error<T>(&self) -> R<T> {
        let t = self.token();
        let after = self
            .prev_text()
            .map(|p| format!(" after `{p}`"))
            .unwrap_or_default();
        let found = match &t.tok {
            Tok::Eof => ", but the condition ends there".to_string(),
            Tok::Bang => ", found `!`; put the negated part in parentheses: `(!...)`".to_string(),
            Tok::Word(w) if w == "not" => {
                ", found `not`; put the negated part in parentheses: `(not ...)`".to_string()
            }
            Tok::Word(w) => format!(", found the keyword `{w}`"),
            other => format!(", found {}", other.describe()),
        };
        err(t.start, format!("expected a value{after}{found}"))
    }

    fn enter(&mut self, at: usize) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(at, too_deep());
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn mk(&self, kind: Kind, start: usize, end: usize) -> R<Node> {
        let mut node = Node {
            kind,
            start,
            end,
            depth: 1,
            constant: true,
        };
        let (depth, constant) = match &node.kind {
            Kind::Path(..) | Kind::Exists(..) => (1, false),
            _ => {
                let children = node.children();
                (
                    1 + children.iter().map(|c| c.depth).max().unwrap_or(0),
                    children.iter().all(|c| c.constant),
                )
            }
        };
        if depth > MAX_DEPTH {
            return err(start, too_deep());
        }
        node.depth = depth;
        node.constant = constant;
        Ok(node)
    }

    // ---- precedence levels, lowest first --------------------------------------------------

    fn at_or(&self) -> bool {
        self.peek() == &Tok::OrOr || self.is_word("or")
    }

    fn at_and(&self) -> bool {
        self.peek() == &Tok::AndAnd || self.is_word("and")
    }

    fn parse_or(&mut self) -> R<Node> {
        self.enter(self.token().start)?;
        let first = self.parse_and()?;
        let node = if self.at_or() {
            let start = first.start;
            let mut items = vec![first];
            while self.at_or() {
                self.bump();
                items.push(self.parse_and()?);
            }
            let end = items.last().map_or(start, |n| n.end);
            self.mk(Kind::Or(items), start, end)?
        } else {
            first
        };
        self.leave();
        Ok(node)
    }

    fn parse_and(&mut self) -> R<Node> {
        let first = self.parse_not()?;
        if !self.at_and() {
            return Ok(first);
        }
        let start = first.start;
        let mut items = vec![first];
        while self.at_and() {
            self.bump();
            items.push(self.parse_not()?);
        }
        let end = items.last().map_or(start, |n| n.end);
        self.mk(Kind::And(items), start, end)
    }

    fn parse_not(&mut self) -> R<Node> {
        if self.peek() != &Tok::Bang && !self.is_word("not") {
            return self.parse_cmp();
        }
        let start = self.bump().start;
        self.enter(start)?;
        let operand = self.parse_not()?;
        self.leave();
        let end = operand.end;
        self.mk(Kind::Not(Box::new(operand)), start, end)
    }

    /// The comparison-level operator at the current position, and how many tokens it takes.
    fn cmp_here(&self) -> Option<(CmpLike, usize)> {
        let op = match self.peek() {
            Tok::EqEq => CmpLike::Cmp(CmpOp::Eq),
            Tok::NotEq => CmpLike::Cmp(CmpOp::Ne),
            Tok::Lt => CmpLike::Cmp(CmpOp::Lt),
            Tok::Le => CmpLike::Cmp(CmpOp::Le),
            Tok::Gt => CmpLike::Cmp(CmpOp::Gt),
            Tok::Ge => CmpLike::Cmp(CmpOp::Ge),
            Tok::Word(w) if w == "not" => {
                let Tok::Word(next) = self.peek_second() else {
                    return None;
                };
                return TestOp::from_word(next).map(|op| (CmpLike::Test(op, true), 2));
            }
            Tok::Word(w) => CmpLike::Test(TestOp::from_word(w)?, false),
            _ => return None,
        };
        Some((op, 1))
    }

    fn parse_cmp(&mut self) -> R<Node> {
        let lhs = self.parse_add()?;
        let Some((op, width)) = self.cmp_here() else {
            return Ok(lhs);
        };
        for _ in 0..width {
            self.bump();
        }
        let rhs = self.parse_add()?;
        let (start, end) = (lhs.start, rhs.end);
        let node = match op {
            CmpLike::Cmp(op) => {
                self.mk(Kind::Compare(op, Box::new(lhs), Box::new(rhs)), start, end)?
            }
            CmpLike::Test(op, negated) => {
                let regex = self.literal_right_side(op, &rhs)?;
                let kind = Kind::Test {
                    op,
                    negated,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                    regex,
                };
                self.mk(kind, start, end)?
            }
        };
        if self.cmp_here().is_some() {
            let t = self.token();
            return err(
                t.start,
                format!(
                    "comparisons cannot be chained (`{}` follows a complete comparison); join \
                     them with `&&`, e.g. `a > 1 && a < 5`",
                    self.text(t.start, t.end)
                ),
            );
        }
        Ok(node)
    }

    /// Checks a literal right side of `matches`/`startswith`/`endswith`/`in`, and compiles a
    /// literal regular expression.
    fn literal_right_side(&self, op: TestOp, rhs: &Node) -> R<Option<regex::Regex>> {
        let Kind::Lit(v) = &rhs.kind else {
            return Ok(None);
        };
        match (op, v) {
            (TestOp::Matches, Value::String(pattern)) => compile_regex(pattern)
                .map(Some)
                .or_else(|m| err(rhs.start, format!("invalid regular expression: {m}"))),
            (TestOp::Matches, _) => err(
                rhs.start,
                "`matches` needs a regular expression in quotes, e.g. `stdout matches \"(?i)error\"`",
            ),
            (TestOp::StartsWith | TestOp::EndsWith, Value::String(_)) => Ok(None),
            (TestOp::StartsWith | TestOp::EndsWith, _) => err(
                rhs.start,
                format!(
                    "`{}` needs text in quotes on its right, e.g. `body {} \"ok\"`",
                    op.word(),
                    op.word()
                ),
            ),
            (TestOp::In, Value::String(_)) => Ok(None),
            (TestOp::In, _) => err(
                rhs.start,
                "`in` needs a list (or text) on its right, e.g. `status in [200, 204]`",
            ),
            (TestOp::Contains, _) => Ok(None),
        }
    }

    fn parse_add(&mut self) -> R<Node> {
        let mut lhs = self.parse_mul()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => return Ok(lhs),
            };
            let op_tok = self.bump();
            let rhs = self.parse_mul()?;
            self.check_hyphenated_name(&lhs, &op_tok, &rhs)?;
            let (start, end) = (lhs.start, rhs.end);
            lhs = self.mk(Kind::Arith(op, Box::new(lhs), Box::new(rhs)), start, end)?;
        }
    }

    /// `header.content-type` reads as `header.content - type`: almost surely meant as one
    /// name when a dotted name and a name touch the `-` on both sides.
    fn check_hyphenated_name(&self, lhs: &Node, op: &Token, rhs: &Node) -> R<()> {
        let dotted = matches!(&lhs.kind, Kind::Path(p, _) if p.segments().len() > 1);
        let touching = lhs.end == op.start && op.end == rhs.start;
        if op.tok != Tok::Minus || !dotted || !touching {
            return Ok(());
        }
        let (Kind::Path(left, _), Kind::Path(right, _)) = (&lhs.kind, &rhs.kind) else {
            return Ok(());
        };
        let (Some(Segment::Key(last)), Some(Segment::Key(first))) =
            (left.segments().last(), right.segments().first())
        else {
            return Ok(());
        };
        let parent = Path::new(left.segments()[..left.segments().len() - 1].to_vec())
            .map(|p| p.to_string())
            .unwrap_or_default();
        let text = self.text(lhs.start, rhs.end);
        err(
            lhs.start,
            format!(
                "`-` is minus, so `{text}` subtracts `{}` from `{}`; write a name that \
                 contains a hyphen in brackets: `{parent}[\"{last}-{first}\"]`",
                self.text(rhs.start, rhs.end),
                self.text(lhs.start, lhs.end)
            ),
        )
    }

    fn parse_mul(&mut self) -> R<Node> {
        let mut lhs = self.parse_unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.parse_unary()?;
            let (start, end) = (lhs.start, rhs.end);
            lhs = self.mk(Kind::Arith(op, Box::new(lhs), Box::new(rhs)), start, end)?;
        }
    }

    fn parse_unary(&mut self) -> R<Node> {
        if self.peek() != &Tok::Minus {
            return self.parse_primary();
        }
        let start = self.bump().start;
        self.enter(start)?;
        let operand = self.parse_unary()?;
        self.leave();
        let end = operand.end;
        if let Kind::Lit(Value::Number(n)) = operand.kind {
            return self.mk(Kind::Lit(Value::Number(-n)), start, end);
        }
        self.mk(Kind::Neg(Box::new(operand)), start, end)
    }

    fn parse_primary(&mut self) -> R<Node> {
        let t = self.token().clone();
        match &t.tok {
            Tok::Num { value, .. } => {
                self.bump();
                self.mk(Kind::Lit(value.clone()), t.start, t.end)
            }
            Tok::Str(s) => {
                self.bump();
                self.mk(Kind::Lit(Value::String(s.clone())), t.start, t.end)
            }
            Tok::LParen => {
                self.bump();
                let mut inner = self.parse_or()?;
                let close = self.token().clone();
                if close.tok != Tok::RParen {
                    return err(
                        close.start,
                        format!(
                            "expected `)` to close the `(` at column {}, found {}",
                            self.column(t.start) + 1,
                            close.tok.describe()
                        ),
                    );
                }
                self.bump();
                inner.start = t.start;
                inner.end = close.end;
                Ok(inner)
            }
            Tok::LBracket => self.parse_list(),
            Tok::Word(w) => match w.as_str() {
                "true" => {
                    self.bump();
                    self.mk(Kind::Lit(Value::Bool(true)), t.start, t.end)
                }
                "false" => {
                    self.bump();
                    self.mk(Kind::Lit(Value::Bool(false)), t.start, t.end)
                }
                "null" => {
                    self.bump();
                    self.mk(Kind::Lit(Value::Null), t.start, t.end)
                }
                w if KEYWORDS.contains(&w) => self.expect_value_error(),
                w if KEYWORDS.contains(&w.to_ascii_lowercase().as_str()) => err(
                    t.start,
                    format!(
                        "keywords are lower case: write `{}` instead of `{w}`",
                        w.to_ascii_lowercase()
                    ),
                ),
                _ if self.peek_second() == &Tok::LParen => self.parse_call(),
                _ => self.parse_path(),
            },
            _ => self.expect_value_error(),
        }
    }

    fn column(&self, byte: usize) -> usize {
        self.src.get(..byte).map_or(0, |s| s.chars().count())
    }

    fn parse_list(&mut self) -> R<Node> {
        let open = self.bump();
        self.enter(open.start)?;
        let mut items = Vec::new();
        loop {
            if self.peek() == &Tok::RBracket {
                break;
            }
            items.push(self.parse_or()?);
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RBracket => break,
                other => {
                    return err(
                        self.token().start,
                        format!(
                            "expected `,` or `]` in the list opened at column {}, found {}",
                            self.column(open.start) + 1,
                            other.describe()
                        ),
                    )
                }
            }
        }
        let close = self.bump();
        self.leave();
        self.mk(Kind::List(items), open.start, close.end)
    }

    fn parse_call(&mut self) -> R<Node> {
        let name_tok = self.bump();
        let name = self.text(name_tok.start, name_tok.end);
        let func = match name {
            "len" => Some(Func::Len),
            "lower" => Some(Func::Lower),
            "upper" => Some(Func::Upper),
            "exists" => None,
            other => {
                return err(
                    name_tok.start,
                    format!(
                        "unknown function `{other}`; the functions are len(x), exists(name), \
                         lower(s) and upper(s)"
                    ),
                )
            }
        };
        let example = match func {
            None => "exists(body.json.error)",
            Some(Func::Len) => "len(body) > 0",
            Some(Func::Lower) => "lower(body) contains \"ok\"",
            Some(Func::Upper) => "upper(body) contains \"OK\"",
        };
        self.bump(); // `(`
        if self.peek() == &Tok::RParen {
            return err(
                self.token().start,
                format!("`{name}` takes one argument, e.g. `{example}`"),
            );
        }
        self.enter(name_tok.start)?;
        let arg = self.parse_or()?;
        self.leave();
        let close = self.token().clone();
        match close.tok {
            Tok::RParen => {
                self.bump();
            }
            Tok::Comma => {
                return err(
                    close.start,
                    format!("`{name}` takes one argument, e.g. `{example}`"),
                )
            }
            other => {
                return err(
                    close.start,
                    format!(
                        "expected `)` to close `{name}(`, found {}",
                        other.describe()
                    ),
                )
            }
        }
        let kind = match func {
            Some(f) => Kind::Call(f, Box::new(arg)),
            None => match arg.kind {
                Kind::Path(path, _) => Kind::Exists(path),
                _ => {
                    return err(
                        arg.start,
                        "exists() takes a fact name, e.g. `exists(body.json.error)`",
                    )
                }
            },
        };
        self.mk(kind, name_tok.start, close.end)
    }

    fn parse_path(&mut self) -> R<Node> {
        let first = self.bump();
        let mut segments = vec![Segment::Key(self.text(first.start, first.end).to_string())];
        let mut end = first.end;
        loop {
            match self.peek() {
                Tok::Dot => {
                    let dot = self.bump();
                    let t = self.token().clone();
                    match &t.tok {
                        Tok::Word(w) => segments.push(Segment::Key(w.clone())),
                        Tok::Num { .. } => {
                            return err(
                                t.start,
                                format!(
                                    "write list items with brackets: `[{}]` instead of `.{}`",
                                    self.text(t.start, t.end),
                                    self.text(t.start, t.end)
                                ),
                            )
                        }
                        other => {
                            return err(
                                dot.end,
                                format!("expected a name after `.`, found {}", other.describe()),
                            )
                        }
                    }
                    self.bump();
                    end = t.end;
                }
                Tok::LBracket => {
                    self.bump();
                    let t = self.token().clone();
                    let seg = match &t.tok {
                        Tok::Num { plain: true, .. } => {
                            match self.text(t.start, t.end).parse::<usize>() {
                                Ok(i) => Segment::Index(i),
                                Err(_) => return err(t.start, "this list index is too large"),
                            }
                        }
                        Tok::Str(s) => Segment::Key(s.clone()),
                        _ => {
                            return err(
                                t.start,
                                "expected a list index like `[0]` or a key like \
                                 `[\"content-type\"]` after `[`",
                            )
                        }
                    };
                    self.bump();
                    let close = self.token().clone();
                    if close.tok != Tok::RBracket {
                        return err(
                            close.start,
                            format!("expected `]`, found {}", close.tok.describe()),
                        );
                    }
                    self.bump();
                    segments.push(seg);
                    end = close.end;
                }
                _ => break,
            }
        }
        let Some(path) = Path::new(segments) else {
            return err(first.start, "expected a fact name");
        };
        let text = path.to_string();
        if !self.names.contains(&text) {
            self.names.push(text.clone());
        }
        self.mk(Kind::Path(path, text), first.start, end)
    }

    // ---- checks after parsing -------------------------------------------------------------

    /// Evaluates every part that reads no fact (so its errors show now, with a column), and
    /// rejects values that can never be true or false where a condition is needed.
    fn check(&self, node: &Node, need_bool: bool) -> R<()> {
        if node.constant {
            let facts = Facts::new();
            let ctx = Ctx {
                src: self.src,
                facts: &facts,
            };
            let result = if need_bool {
                ctx.truth(node).map(drop)
            } else {
                ctx.value(node).map(drop)
            };
            return result.or_else(|e| err(node.start, e.to_string()));
        }
        if need_bool {
            let what = match &node.kind {
                Kind::Arith(..) | Kind::Neg(_) => Some("a number or duration"),
                Kind::Call(Func::Len, _) => Some("a number"),
                Kind::Call(Func::Lower | Func::Upper, _) => Some("a string"),
                Kind::List(_) => Some("a list"),
                _ => None,
            };
            if let Some(what) = what {
                let text = self.text(node.start, node.end);
                return err(
                    node.start,
                    format!("`{text}` is {what}, not true or false; compare it, e.g. `{text} > 0`"),
                );
            }
        }
        let child_needs_bool = matches!(node.kind, Kind::And(_) | Kind::Or(_) | Kind::Not(_));
        for child in node.children() {
            self.check(child, child_needs_bool)?;
        }
        Ok(())
    }
}

fn too_deep() -> String {
    format!(
        "the condition nests more than {MAX_DEPTH} levels deep; simplify it (fewer \
         parentheses, `!` or operators inside each other)"
    )
}
