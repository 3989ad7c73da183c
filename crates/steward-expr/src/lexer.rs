//! The lexer: turns a condition's source text into tokens, each with the byte span it came
//! from. Number literals get their unit here (`300ms`, `2MiB`, `90%`), strings their escapes.

use std::time::Duration;

use crate::value::Value;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A number, duration, byte size or percentage, already converted to its value.
    /// `plain` is true for a bare integer without unit, fraction or exponent (usable as an index).
    Num {
        value: Value,
        plain: bool,
    },
    Str(String),
    /// A word: a name segment, a keyword (`and`, `in`, `true`, ...) or a function name.
    Word(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Bang,
    AndAnd,
    OrOr,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Eof,
}

impl Tok {
    /// How the token is shown in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Num { .. } => "a number".into(),
            Tok::Str(_) => "a string".into(),
            Tok::Word(w) => format!("`{w}`"),
            Tok::Eof => "the end of the condition".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    /// The punctuation a token is written as (empty for literals and words).
    pub(crate) fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Bang => "!",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Num { .. } | Tok::Str(_) | Tok::Word(_) | Tok::Eof => "",
        }
    }
}

/// A token and the byte range of the source it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// A lexing error: byte offset into the source and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub at: usize,
    pub message: String,
}

fn err<T>(at: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        at,
        message: message.into(),
    })
}

/// Splits `src` into tokens; the last one is always [`Tok::Eof`].
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, SyntaxError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let two = |a: u8, b: u8| c == a && bytes.get(i + 1) == Some(&b);
        let (tok, len) = if c.is_ascii_digit() {
            let (tok, end) = number(src, i)?;
            (tok, end - i)
        } else if c == b'"' || c == b'\'' {
            let (s, end) = string(src, i)?;
            (Tok::Str(s), end - i)
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = word_end(bytes, i);
            (Tok::Word(src[i..end].to_string()), end - i)
        } else if two(b'&', b'&') {
            (Tok::AndAnd, 2)
        } else if two(b'|', b'|') {
            (Tok::OrOr, 2)
        } else if two(b'=', b'=') {
            (Tok::EqEq, 2)
        } else if two(b'!', b'=') {
            (Tok::NotEq, 2)
        } else if two(b'<', b'=') {
            (Tok::Le, 2)
        } else if two(b'>', b'=') {
            (Tok::Ge, 2)
        } else {
            let tok =
                match c {
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b'[' => Tok::LBracket,
                    b']' => Tok::RBracket,
                    b',' => Tok::Comma,
                    b'.' => Tok::Dot,
                    b'!' => Tok::Bang,
                    b'<' => Tok::Lt,
                    b'>' => Tok::Gt,
                    b'+' => Tok::Plus,
                    b'-' => Tok::Minus,
                    b'*' => Tok::Star,
                    b'/' => Tok::Slash,
                    b'=' => return err(i, "`=` is not an operator; write `==` to compare"),
                    b'&' => return err(i, "`&` is not an operator; write `&&` (or `and`)"),
                    b'|' => return err(i, "`|` is not an operator; write `||` (or `or`)"),
                    b'%' => return err(
                        i,
                        "`%` only follows a number, as in `90%` (there is no remainder operator)",
                    ),
                    _ => {
                        let ch = src[i..].chars().next().unwrap_or('?');
                        return err(
                            i,
                            format!(
                            "unexpected character {ch:?}; names are letters, digits and `_`, and \
                             text goes in double quotes, e.g. \"ok\""
                        ),
                        );
                    }
                };
            (tok, 1)
        };
        i += len;
        out.push(Token { tok, start, end: i });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: src.len(),
        end: src.len(),
    });
    Ok(out)
}

fn word_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    i
}

/// Duration units and their length in nanoseconds.
const TIME_UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Byte-size units and their size in bytes.
const SIZE_UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("KB", 1e3),
    ("kB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("PB", 1e15),
    ("KiB", 1024.0),
    ("MiB", 1_048_576.0),
    ("GiB", 1_073_741_824.0),
    ("TiB", 1_099_511_627_776.0),
    ("PiB", 1_125_899_906_842_624.0),
];

/// Reads a number literal with its optional unit starting at `start`; returns the token and
/// the byte offset just past it.
fn number(src: &str, start: usize) -> Result<(Tok, usize), SyntaxError> {
    let bytes = src.as_bytes();
    let digits = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    let mut integer = true;
    // A fraction needs a digit after the dot: `5.name` is not a number followed by a name.
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i = digits(i + 1);
        integer = false;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            i = digits(j);
            integer = false;
        }
    }
    let text = &src[start..i];
    let n: f64 = match text.parse() {
        Ok(n) if f64::is_finite(n) => n,
        _ => return err(start, format!("the number `{text}` is too large")),
    };

    if bytes.get(i) == Some(&b'%') {
        let value = Value::Number(n);
        return Ok((
            Tok::Num {
                value,
                plain: false,
            },
            i + 1,
        ));
    }
    let unit_end = word_end(bytes, i);
    let unit = &src[i..unit_end];
    if unit.is_empty() {
        let value = Value::Number(n);
        return Ok((
            Tok::Num {
                value,
                plain: integer,
            },
            i,
        ));
    }
    if let Some(&(_, ns)) = TIME_UNITS.iter().find(|(u, _)| *u == unit) {
        let d = duration(text, n, integer, ns).ok_or_else(|| SyntaxError {
            at: start,
            message: format!("the duration `{text}{unit}` is too long"),
        })?;
        let value = Value::Duration(d);
        return Ok((
            Tok::Num {
                value,
                plain: false,
            },
            unit_end,
        ));
    }
    if let Some(&(_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) {
        let bytes_n = n * mult;
        if !bytes_n.is_finite() {
            return err(start, format!("the size `{text}{unit}` is too large"));
        }
        let value = Value::Number(bytes_n);
        return Ok((
            Tok::Num {
                value,
                plain: false,
            },
            unit_end,
        ));
    }
    err(
        i,
        format!(
            "unknown unit `{unit}` in `{text}{unit}`; durations take ns, us, ms, s, m, h, d \
             (e.g. `300ms`, `14d`), sizes take B, KB, MB, GB, TB, KiB, MiB, GiB, TiB \
             (e.g. `10MiB`), percentages take % (e.g. `90%`)"
        ),
    )
}

/// `n` units of `unit_ns` nanoseconds; exact for integers, rounded to the nanosecond otherwise.
fn duration(text: &str, n: f64, integer: bool, unit_ns: u64) -> Option<Duration> {
    if integer {
        if let Ok(k) = text.parse::<u64>() {
            const NS: u64 = 1_000_000_000;
            return if unit_ns >= NS {
                k.checked_mul(unit_ns / NS).map(Duration::from_secs)
            } else {
                k.checked_mul(unit_ns).map(Duration::from_nanos)
            };
        }
    }
    Duration::try_from_secs_f64(n * unit_ns as f64 / 1e9).ok()
}

/// Reads a quoted string starting at the quote at `start`; returns its text and the byte
/// offset just past the closing quote.
///
/// `\"`, `\'`, `\\`, `\n`, `\r`, `\t` and `\u{...}` are escapes; any other backslash is kept
/// as it is, so regular expressions read naturally (`"^\d+$"`).
fn string(src: &str, start: usize) -> Result<(String, usize), SyntaxError> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices().peekable();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        if c == quote {
            return Ok((out, at + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '\\')) => out.push('\\'),
            Some((_, '"')) => out.push('"'),
            Some((_, '\'')) => out.push('\''),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 'r')) => out.push('\r'),
            Some((_, 't')) => out.push('\t'),
            Some((_, 'u')) if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                let mut hex = String::new();
                let mut closed = false;
                for (_, h) in chars.by_ref() {
                    if h == '}' {
                        closed = true;
                        break;
                    }
                    hex.push(h);
                    if hex.len() > 6 {
                        break;
                    }
                }
                let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                match (closed, ch) {
                    (true, Some(ch)) => out.push(ch),
                    _ => {
                        return err(
                            at,
                            "bad `\\u{...}` escape; write 1 to 6 hex digits naming a character, \
                             e.g. `\\u{e9}`",
                        )
                    }
                }
            }
            Some((_, other)) => {
                out.push('\\');
                out.push(other);
            }
            None => break,
        }
    }
    err(
        start,
        format!("this string has no closing {quote}; end it with {quote}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src)
            .unwrap_or_else(|e| panic!("{src:?}: {e:?}"))
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    fn one(src: &str) -> Value {
        match toks(src).as_slice() {
            [Tok::Num { value, .. }, Tok::Eof] => value.clone(),
            other => panic!("{src:?} lexed as {other:?}"),
        }
    }

    #[test]
    fn numbers_and_units() {
        assert_eq!(one("200"), Value::Number(200.0));
        assert_eq!(one("0.5"), Value::Number(0.5));
        assert_eq!(one("1e3"), Value::Number(1000.0));
        assert_eq!(one("2.5E-1"), Value::Number(0.25));
        assert_eq!(one("300ms"), Value::Duration(Duration::from_millis(300)));
        assert_eq!(one("1.5s"), Value::Duration(Duration::from_millis(1500)));
        assert_eq!(one("10m"), Value::Duration(Duration::from_secs(600)));
        assert_eq!(one("2h"), Value::Duration(Duration::from_secs(7200)));
        assert_eq!(one("14d"), Value::Duration(Duration::from_secs(14 * 86400)));
        assert_eq!(one("250us"), Value::Duration(Duration::from_micros(250)));
        assert_eq!(one("7ns"), Value::Duration(Duration::from_nanos(7)));
        assert_eq!(one("0.1s"), Value::Duration(Duration::from_millis(100)));
        assert_eq!(one("512B"), Value::Number(512.0));
        assert_eq!(one("10KB"), Value::Number(10_000.0));
        assert_eq!(one("10kB"), Value::Number(10_000.0));
        assert_eq!(one("2MiB"), Value::Number(2.0 * 1024.0 * 1024.0));
        assert_eq!(one("1GB"), Value::Number(1e9));
        assert_eq!(one("1.5KiB"), Value::Number(1536.0));
        assert_eq!(one("90%"), Value::Number(90.0));
        assert_eq!(one("12.5%"), Value::Number(12.5));
    }

    #[test]
    fn plain_marks_bare_integers() {
        assert_eq!(
            toks("3"),
            vec![
                Tok::Num {
                    value: Value::Number(3.0),
                    plain: true
                },
                Tok::Eof
            ]
        );
        for src in ["3.0", "3ms", "3%", "3e0"] {
            assert!(
                matches!(toks(src)[0], Tok::Num { plain: false, .. }),
                "{src}"
            );
        }
    }

    #[test]
    fn bad_numbers() {
        let e = lex("5sec").unwrap_err();
        assert_eq!(e.at, 1);
        assert!(e.message.contains("unknown unit `sec`"), "{}", e.message);
        assert!(e.message.contains("ms"), "{}", e.message);
        assert!(lex("1e400").unwrap_err().message.contains("too large"));
        assert!(lex("99999999999999999999d")
            .unwrap_err()
            .message
            .contains("too long"));
        assert!(lex("1e300PiB").unwrap_err().message.contains("too large"));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(toks(r#""ok""#), vec![Tok::Str("ok".into()), Tok::Eof]);
        assert_eq!(toks(r#""a\"b""#), vec![Tok::Str("a\"b".into()), Tok::Eof]);
        assert_eq!(toks(r#"'it\'s'"#), vec![Tok::Str("it's".into()), Tok::Eof]);
        assert_eq!(
            toks(r#"'say "hi"'"#),
            vec![Tok::Str("say \"hi\"".into()), Tok::Eof]
        );
        assert_eq!(
            toks(r#""t\tn\nr\r\\""#),
            vec![Tok::Str("t\tn\nr\r\\".into()), Tok::Eof]
        );
        assert_eq!(toks(r#""\u{e9}""#), vec![Tok::Str("é".into()), Tok::Eof]);
        // Other escapes stay as written, for regular expressions.
        assert_eq!(
            toks(r#""^\d+\.$""#),
            vec![Tok::Str(r"^\d+\.$".into()), Tok::Eof]
        );
        assert_eq!(toks(r#""héllo""#), vec![Tok::Str("héllo".into()), Tok::Eof]);
    }

    #[test]
    fn bad_strings() {
        let e = lex(r#"x == "abc"#).unwrap_err();
        assert_eq!(e.at, 5);
        assert!(e.message.contains("no closing"));
        assert!(lex(r#""\u{zz}""#).unwrap_err().message.contains("\\u{"));
        assert!(lex(r#""\u{110000}""#).is_err());
        assert!(lex(r#""abc\"#).is_err());
    }

    #[test]
    fn operators() {
        use Tok::*;
        assert_eq!(
            toks("a&&b||!c==d!=e<f<=g>h>=i+j-k*l/m"),
            vec![
                Word("a".into()),
                AndAnd,
                Word("b".into()),
                OrOr,
                Bang,
                Word("c".into()),
                EqEq,
                Word("d".into()),
                NotEq,
                Word("e".into()),
                Lt,
                Word("f".into()),
                Le,
                Word("g".into()),
                Gt,
                Word("h".into()),
                Ge,
                Word("i".into()),
                Plus,
                Word("j".into()),
                Minus,
                Word("k".into()),
                Star,
                Word("l".into()),
                Slash,
                Word("m".into()),
                Eof
            ]
        );
        assert_eq!(
            toks("a.b[0](\"x\"),"),
            vec![
                Word("a".into()),
                Dot,
                Word("b".into()),
                LBracket,
                Num {
                    value: Value::Number(0.0),
                    plain: true
                },
                RBracket,
                LParen,
                Str("x".into()),
                RParen,
                Comma,
                Eof
            ]
        );
    }

    #[test]
    fn single_char_mistakes() {
        assert!(lex("a = 1").unwrap_err().message.contains("=="));
        assert!(lex("a & b").unwrap_err().message.contains("&&"));
        assert!(lex("a | b").unwrap_err().message.contains("||"));
        assert!(lex("a % 2").unwrap_err().message.contains("90%"));
        let e = lex("a == é").unwrap_err();
        assert_eq!(e.at, 5);
    }

    #[test]
    fn spans() {
        let t = lex("  ab == 300ms").unwrap();
        assert_eq!((t[0].start, t[0].end), (2, 4));
        assert_eq!((t[1].start, t[1].end), (5, 7));
        assert_eq!((t[2].start, t[2].end), (8, 13));
        assert_eq!((t[3].start, t[3].end), (13, 13));
    }
}
