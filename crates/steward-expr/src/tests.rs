//! Tests of the language as a whole: parsing, evaluation, error messages and columns,
//! `names()`, limits, and property tests (no panics; numbers compare as in Rust).

use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn facts() -> Facts {
    let mut f = Facts::new();
    f.insert("status", 200u64);
    f.insert("response_time", Duration::from_millis(120));
    f.insert("cert_expires_in", Duration::from_secs(30 * 86400));
    f.insert("uptime", Duration::from_secs(3600));
    f.insert("body", "service is healthy");
    f.insert(
        "body.json",
        json!({
            "status": "ok",
            "count": 4,
            "ratio": 0.25,
            "ok": true,
            "error": null,
            "data": {"items": [{"id": 1, "name": "alpha"}, {"id": 2, "name": "Beta"}], "total": 2},
            "tags": ["x", "y"],
            "codes": [200, 204],
            "empty": [],
            "weird key": 1,
            "in": "kw"
        }),
    );
    f.insert("rows", 5u64);
    f.insert("exit_code", 0i64);
    f.insert("stdout", "all good\nno problems");
    f.insert("disk_used_percent", 42.5);
    f.insert("load1", 1.5);
    f.insert("cpus", 4u64);
    f.insert("zero", 0u64);
    f.insert("free_bytes", 3.0 * 1024.0 * 1024.0 * 1024.0);
    f.insert("header.content-type", "application/json; charset=utf-8");
    f.insert("flag", true);
    f.insert("nothing", Value::Null);
    f.insert("pattern", "^serv");
    f.insert("bad_pattern", "(");
    f.insert(
        "tags",
        Value::List(vec![Value::from("a"), Value::from("b")]),
    );
    f
}

#[track_caller]
fn ev(src: &str) -> bool {
    let e = parse(src).unwrap_or_else(|e| panic!("{src:?} does not parse: {e}"));
    e.eval(&facts())
        .unwrap_or_else(|e| panic!("{src:?} does not evaluate: {e}"))
}

#[track_caller]
fn eval_err(src: &str) -> EvalError {
    let e = parse(src).unwrap_or_else(|e| panic!("{src:?} does not parse: {e}"));
    match e.eval(&facts()) {
        Ok(v) => panic!("{src:?} evaluated to {v}, expected an error"),
        Err(e) => e,
    }
}

#[track_caller]
fn parse_err(src: &str) -> ParseError {
    match parse(src) {
        Ok(e) => panic!("{src:?} parsed as {e:?}, expected an error"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_parse_err(src: &str, offset: usize, needle: &str) {
    let e = parse_err(src);
    assert_eq!(e.offset, offset, "{src:?}: {e}");
    assert!(e.message.contains(needle), "{src:?}: {e}");
}

#[test]
fn examples_from_the_docs() {
    for src in [
        "status == 200",
        "response_time < 300ms",
        "cert_expires_in > 14d",
        "body.json.status == \"ok\"",
        "rows > 0",
        "status in [200, 204] && body contains \"healthy\"",
        "exit_code == 0 && !(stdout matches \"(?i)error\")",
        "disk_used_percent < 90%",
        "load1 / cpus < 2",
        "!exists(body.json.error) || body.json.error == null",
        "header[\"content-type\"] startswith \"application/json\"",
    ] {
        assert!(ev(src), "{src}");
    }
}

#[test]
fn literals() {
    assert!(ev("200 == 200.0"));
    assert!(ev("0.5 == 1 / 2"));
    assert!(ev("-3 < 0"));
    assert!(ev("-3 == 0 - 3"));
    assert!(ev("1e3 == 1000"));
    assert!(ev("300ms == 0.3s"));
    assert!(ev("1.5s == 1500ms"));
    assert!(ev("10m == 600s"));
    assert!(ev("2h == 120m"));
    assert!(ev("14d == 336h"));
    assert!(ev("1000us == 1ms"));
    assert!(ev("1000ns == 1us"));
    assert!(ev("10KB == 10000"));
    assert!(ev("10kB == 10000"));
    assert!(ev("2MiB == 2097152"));
    assert!(ev("1GB == 1000MB"));
    assert!(ev("1GiB == 1024MiB"));
    assert!(ev("1TB == 1000GB"));
    assert!(ev("1TiB == 1024GiB"));
    assert!(ev("1PiB == 1024TiB"));
    assert!(ev("512B == 512"));
    assert!(ev("90% == 90"));
    assert!(ev("\"ok\" == 'ok'"));
    assert!(ev(r#""a\"b" == 'a"b'"#));
    assert!(ev(r#"len("a\"b") == 3"#));
    assert!(ev(r#""\u{e9}" == "é""#));
    assert!(ev("true"));
    assert!(!ev("false"));
    assert!(ev("null == null"));
    assert!(ev("[200, 204] == [200, 204]"));
    assert!(ev("[200, 204,] == [200, 204]"));
    assert!(ev("[] == []"));
    assert!(!ev("[1, 2] == [2, 1]"));
    assert!(ev("[1, [2, \"x\"]] == [1, [2, \"x\"]]"));
    assert!(ev("free_bytes > 2GiB && free_bytes < 4GiB"));
}

#[test]
fn comparisons() {
    // numbers
    assert!(ev("status == 200"));
    assert!(!ev("status != 200"));
    assert!(ev("status < 201"));
    assert!(!ev("status < 200"));
    assert!(ev("status <= 200"));
    assert!(ev("status > 199"));
    assert!(!ev("status > 200"));
    assert!(ev("status >= 200"));
    assert!(ev("disk_used_percent < 90%"));
    assert!(ev("exit_code == 0"));
    // durations
    assert!(ev("response_time < 300ms"));
    assert!(ev("response_time == 120ms"));
    assert!(ev("response_time != 121ms"));
    assert!(ev("response_time >= 0.12s"));
    assert!(!ev("response_time > 1s"));
    assert!(ev("cert_expires_in > 14d"));
    assert!(ev("cert_expires_in <= 30d"));
    // strings, by character code
    assert!(ev("\"abc\" < \"abd\""));
    assert!(ev("\"B\" < \"a\""));
    assert!(ev("\"b\" >= \"a\""));
    assert!(ev("body == \"service is healthy\""));
    assert!(ev("body != \"down\""));
    // bools and null
    assert!(ev("flag == true"));
    assert!(ev("flag != false"));
    assert!(ev("nothing == null"));
    assert!(!ev("status == null"));
    assert!(ev("status != null"));
    assert!(ev("null != \"x\""));
    assert!(ev("body.json.error == null"));
}

#[test]
fn tests_in_contains_matches_starts_ends() {
    assert!(ev("status in [200, 204]"));
    assert!(!ev("status in [201, 204]"));
    assert!(ev("status not in [500, 503]"));
    assert!(ev("[200, 204] contains status"));
    assert!(!ev("[] contains status"));
    assert!(!ev("status in []"));
    assert!(ev("\"heal\" in body"));
    assert!(ev("body contains \"healthy\""));
    assert!(!ev("body contains \"Healthy\""));
    assert!(ev("body not contains \"error\""));
    assert!(ev("lower(body) contains \"service\""));
    assert!(ev("upper(body) == \"SERVICE IS HEALTHY\""));
    assert!(ev("tags contains \"a\""));
    assert!(ev("\"c\" not in tags"));
    assert!(ev("body matches \"^serv.*y$\""));
    assert!(ev("body matches \"heal\""));
    assert!(!ev("body matches \"^heal\""));
    assert!(ev("body matches \"(?i)HEALTHY\""));
    assert!(!ev("stdout matches \"^no problems$\""));
    assert!(ev("stdout matches \"(?m)^no problems$\""));
    assert!(ev("body not matches \"error\""));
    assert!(ev(r#""12345" matches "^\d+$""#));
    assert!(ev("body matches pattern"));
    assert!(ev("body startswith \"service\""));
    assert!(!ev("body startswith \"healthy\""));
    assert!(ev("body endswith \"healthy\""));
    assert!(ev("body not endswith \"sick\""));
    assert!(ev("body not startswith \"x\""));
    assert!(ev("exit_code == 0 && !(stdout matches \"(?i)error\")"));
    assert!(ev("null in [1, null]"));
    assert!(ev("[1, 2] in [[1, 2], [3]]"));
}

#[test]
fn arithmetic_and_precedence() {
    assert!(ev("1 + 2 * 3 == 7"));
    assert!(ev("(1 + 2) * 3 == 9"));
    assert!(ev("10 - 2 - 3 == 5"));
    assert!(ev("8 / 2 / 2 == 2"));
    assert!(ev("-2 * 3 == -6"));
    assert!(ev("2 - -3 == 5"));
    assert!(ev("-(1 + 2) == -3"));
    assert!(ev("--3 == 3"));
    assert!(ev("load1 / cpus < 2"));
    assert!(ev("load1 / cpus == 0.375"));
    assert!(ev("rows * 2 + 1 == 11"));
    assert!(ev("-rows == -5"));
    assert!(ev("1 + 2 < 4"));
    // durations
    assert!(ev("response_time + 80ms == 200ms"));
    assert!(ev("response_time - 20ms == 100ms"));
    assert!(ev("response_time * 2 == 240ms"));
    assert!(ev("2 * response_time == 240ms"));
    assert!(ev("response_time / 2 == 60ms"));
    assert!(ev("uptime / 30m == 2"));
    assert!(ev("cert_expires_in - 14d > 14d"));
    // logic: && binds tighter than ||, ! looser than comparisons
    assert!(ev("true || false && false"));
    assert!(!ev("(true || false) && false"));
    assert!(!ev("!false && false"));
    assert!(ev("!status == 500"));
    assert!(ev("not status == 500"));
    assert!(ev("!!true"));
    assert!(ev("not not true"));
    assert!(ev("status == 200 && rows > 0 || false"));
    assert!(ev("false || status == 200 && rows > 0"));
    // word aliases
    assert!(ev("status == 200 and rows > 0"));
    assert!(ev("status == 500 or rows > 0"));
    assert!(!ev("not (status == 200 and rows > 0)"));
    assert!(ev("not false"));
    // a bool fact alone is a condition
    assert!(ev("flag"));
    assert!(ev("body.json.ok"));
    assert!(!ev("!flag"));
}

#[test]
fn functions() {
    assert!(ev("len(body) == 18"));
    assert!(ev("len(\"héllo\") == 5"));
    assert!(ev("len(tags) == 2"));
    assert!(ev("len([1, 2, 3]) == 3"));
    assert!(ev("len(body.json.codes) == 2"));
    assert!(ev("len(body.json.data) == 2"));
    assert!(ev("len(body.json.empty) == 0"));
    assert!(ev("lower(\"ÀB\") == \"àb\""));
    assert!(ev("exists(status)"));
    assert!(ev("exists(body.json.data.items[1].name)"));
    assert!(ev("exists(body.json.error)"), "null is reported");
    assert!(!ev("exists(missing)"));
    assert!(!ev("exists(body.json.nope)"));
    assert!(!ev("exists(body.json.data.items[2])"));
    assert!(ev("exists((status))"));
}

#[test]
fn json_paths() {
    assert!(ev("body.json.status == \"ok\""));
    assert!(ev("body.json.count > 3"));
    assert!(ev("body.json.count == 4"));
    assert!(ev("body.json.ratio < 0.5"));
    assert!(ev("body.json.ok == true"));
    assert!(ev("body.json.data.total == 2"));
    assert!(ev("body.json.data.items[0].id == 1"));
    assert!(ev("body.json.data.items[1].name == \"Beta\""));
    assert!(ev("lower(body.json.data.items[1].name) == \"beta\""));
    assert!(ev("body.json[\"weird key\"] == 1"));
    assert!(ev(
        "body.json[\"data\"][\"items\"][0][\"name\"] == \"alpha\""
    ));
    assert!(
        ev("body.json.in == \"kw\""),
        "keywords are keys after a dot"
    );
    assert!(ev("body.json.codes == [200, 204]"));
    assert!(ev("status in body.json.codes"));
    assert!(ev("body.json.codes contains 204"));
    assert!(ev("body.json.tags contains \"x\""));
    assert!(ev("\"x\" in body.json.tags"));
    assert!(ev("\"status\" in body.json"));
    assert!(ev("body.json contains \"data\""));
    assert!(!ev("\"nope\" in body.json"));
    assert!(ev("body.json.data == body.json.data"));
    assert!(ev("tags[1] == \"b\""));
    assert!(ev("header[\"content-type\"] contains \"json\""));

    let e = eval_err("body.json.nope == 1");
    assert!(matches!(e, EvalError::NotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "`body.json.nope` is not in what this check reported: `body.json` is an object with \
         keys codes, count, data, empty, error, in, ok, ratio, status, tags, ...; if it is \
         optional, test for it first: `exists(body.json.nope) && ...`"
    );
    let e = eval_err("body.json.data.items[7].id == 1");
    assert!(
        e.to_string()
            .contains("`body.json.data.items` is a list of 2 items"),
        "{e}"
    );
    let e = eval_err("body.json.status.x == 1");
    assert!(
        e.to_string().contains("`body.json.status` is a string"),
        "{e}"
    );
    let e = eval_err("status.x == 1");
    assert!(
        e.to_string()
            .contains("`status` is a number, which has nothing inside"),
        "{e}"
    );
}

#[test]
fn missing_facts_are_errors_and_short_circuit() {
    let e = eval_err("missing == 1");
    assert!(
        matches!(&e, EvalError::NotReported { name, .. } if name == "missing"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("`missing` is not reported by this check (it reported: "),
        "{text}"
    );
    assert!(text.contains("body, body.json"), "{text}");
    assert!(
        text.ends_with("test for it first: `exists(missing) && ...`"),
        "{text}"
    );
    let empty = parse("status == 200")
        .unwrap()
        .eval(&Facts::new())
        .unwrap_err();
    assert!(
        empty.to_string().contains("(it reported nothing)"),
        "{empty}"
    );

    assert!(!ev("exists(missing) && missing > 3"));
    assert!(ev("!exists(missing) || missing > 3"));
    assert!(ev("true || missing > 1"));
    assert!(!ev("false && missing > 1"));
    assert!(!ev("false and 1 / zero > 1"));
    assert!(ev("status == 200 or missing"));
    assert!(matches!(
        eval_err("missing > 1 || true"),
        EvalError::NotReported { .. }
    ));
    assert!(matches!(
        eval_err("true && missing"),
        EvalError::NotReported { .. }
    ));
}

#[test]
fn type_error_messages() {
    let cases = [
        (
            "response_time < 300",
            "cannot compare duration `response_time` with number 300; write the number with \
             a unit, e.g. `300ms` or `300s`",
        ),
        (
            "300 > response_time",
            "cannot compare number 300 with duration `response_time`; write the number with \
             a unit, e.g. `300ms` or `300s`",
        ),
        (
            "response_time == rows",
            "cannot compare duration `response_time` with number `rows`; durations go with \
             durations, written with a unit such as `300ms` or `2s`",
        ),
        (
            "status == \"200\"",
            "cannot compare number `status` with string \"200\"; write 200 without quotes",
        ),
        (
            "body == 200",
            "cannot compare string `body` with number 200; to compare text, quote the \
             number: \"200\"",
        ),
        (
            "flag < true",
            "cannot compare bool `flag` with bool true; `<` works on numbers, durations and \
             strings",
        ),
        ("flag == 1", "cannot compare bool `flag` with number 1"),
        (
            "response_time < 90%",
            "cannot compare duration `response_time` with number 90%; durations go with \
             durations, written with a unit such as `300ms` or `2s`",
        ),
        (
            "status",
            "`status` is a number (200), not true or false; compare it, e.g. `status > 0`",
        ),
        (
            "body",
            "`body` is a string (\"service is healthy\"), not true or false; compare it, e.g. \
             `body == \"ok\"`",
        ),
        (
            "nothing && true",
            "`nothing` is null (null), not true or false; compare it, e.g. `exists(nothing)` \
             or `nothing != null`",
        ),
        (
            "status matches \"2..\"",
            "`matches` works on strings, but number `status` is not one",
        ),
        (
            "body startswith status",
            "`startswith` works on strings, but number `status` is not one",
        ),
        (
            "body contains 200",
            "cannot look for number 200 in string `body`: text holds only text; write it in \
             quotes: \"200\"",
        ),
        (
            "status in [\"200\", \"204\"]",
            "cannot look for number `status` in list `[\"200\", \"204\"]`: the list holds only \
             string values",
        ),
        (
            "status in rows",
            "`in` needs a list, a string or a JSON object on its right, but number `rows` is \
             not one",
        ),
        (
            "body.json contains 1",
            "cannot look for number 1 in JSON object `body.json`: the keys of a JSON object \
             are strings",
        ),
        (
            "load1 / zero > 1",
            "division by zero in `load1 / zero`: `zero` is 0",
        ),
        (
            "uptime - 2h > 0s",
            "`uptime - 2h` would be negative (3600s - 7200s), and durations cannot be \
             negative; compare them instead: `uptime > 2h`",
        ),
        (
            "response_time + 5 > 1s",
            "cannot add duration `response_time` and number 5; write the number with a unit, \
             e.g. `5ms` or `5s`",
        ),
        (
            "body + 1 > 1",
            "cannot add string `body` and number 1; `+` works on numbers and durations",
        ),
        (
            "response_time * response_time > 1s",
            "cannot multiply duration `response_time` and duration `response_time`; multiply \
             a duration by a plain number, e.g. `2 * 300ms`",
        ),
        (
            "-response_time < 1s",
            "`-response_time` would be a negative duration, and durations cannot be negative",
        ),
        (
            "len(status) > 1",
            "len() takes a string, a list or a JSON object, but number `status` is not one",
        ),
        (
            "lower(status) == \"x\"",
            "lower() takes a string, but number `status` is not one",
        ),
        (
            "body matches bad_pattern",
            "`bad_pattern` is not a valid regular expression: unclosed group",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(eval_err(src).to_string(), want, "{src}");
    }
    assert!(matches!(
        eval_err("body matches bad_pattern"),
        EvalError::Regex(_)
    ));
    assert!(matches!(
        eval_err("load1 / zero > 1"),
        EvalError::Arithmetic(_)
    ));
    assert!(matches!(
        eval_err("status matches \"x\""),
        EvalError::Type(_)
    ));
}

#[test]
fn parse_error_columns() {
    assert_parse_err("status ==", 9, "expected a value after `==`");
    assert_eq!(
        parse_err("status ==").to_string(),
        "column 10: expected a value after `==`, but the condition ends there"
    );
    assert_parse_err("status == 200 &&", 16, "expected a value after `&&`");
    assert_parse_err("status == 200 and", 17, "expected a value after `and`");
    assert_parse_err("status = 200", 7, "write `==`");
    assert_parse_err("a & b", 2, "`&&`");
    assert_parse_err(
        "(status == 200",
        14,
        "expected `)` to close the `(` at column 1",
    );
    assert_parse_err("status == 200)", 13, "no matching `(`");
    assert_parse_err(
        "status == 200 status",
        14,
        "join conditions with `&&` or `||`",
    );
    assert_parse_err(
        "a == 1 AND b == 2",
        7,
        "keywords are lower case: write `and`",
    );
    assert_parse_err("1 < x < 5", 6, "cannot be chained");
    assert_parse_err("x < 5sec", 5, "unknown unit `sec`");
    assert_parse_err("x == \"abc", 5, "no closing \"");
    assert_parse_err("x == 1 % 2", 7, "`%` only follows a number");
    assert_parse_err("x == #", 5, "unexpected character '#'");
    assert_parse_err("foo(1) == 1", 0, "unknown function `foo`");
    assert_parse_err("exists(1)", 7, "exists() takes a fact name");
    assert_parse_err("len() > 1", 4, "`len` takes one argument");
    assert_parse_err("len(a, b) > 1", 5, "`len` takes one argument");
    assert_parse_err("len(a > 1", 9, "expected `)` to close `len(`");
    assert_parse_err("items.0 == 1", 6, "`[0]` instead of `.0`");
    assert_parse_err("items. == 1", 6, "expected a name after `.`");
    assert_parse_err("items[x] == 1", 6, "expected a list index like `[0]`");
    assert_parse_err("items[1.5] == 1", 6, "expected a list index");
    assert_parse_err("items[0 == 1", 8, "expected `]`");
    assert_parse_err(
        "x in [1, 2",
        10,
        "expected `,` or `]` in the list opened at column 6",
    );
    assert_parse_err("x in [1 2]", 8, "expected `,` or `]`");
    assert_parse_err("", 0, "the condition is empty");
    assert_parse_err("   ", 0, "the condition is empty");
    assert_parse_err("in", 0, "expected a value, found the keyword `in`");
    assert_parse_err("x == !y", 5, "put the negated part in parentheses");
    assert_parse_err("x not y", 2, "unexpected `not`");
    assert_parse_err(
        "NOT flag",
        0,
        "keywords are lower case: write `not` instead of `NOT`",
    );
    assert_parse_err("flag == True", 8, "write `true`");
    assert_parse_err(
        "header.content-type == \"text/html\"",
        0,
        "`-` is minus, so `header.content-type` subtracts `type` from `header.content`; \
         write a name that contains a hyphen in brackets: `header[\"content-type\"]`",
    );
    assert_parse_err("a.x-y.z > 1", 0, "`a[\"x-y\"]`");
    // Spaced or undotted minus is arithmetic.
    assert!(parse("a.b - c > 1").is_ok());
    assert!(parse("load1-load5 > 1").is_ok());
    // columns count characters, not bytes
    assert_parse_err("\"é\" == ", 7, "expected a value after `==`");
    assert_eq!(
        parse_err("\"é\" == ").to_string().split(':').next(),
        Some("column 8")
    );
    assert_parse_err("\"ééé\" == 1 ==", 11, "cannot be chained");
}

#[test]
fn literal_right_sides_are_checked_at_parse_time() {
    assert_parse_err(
        "body matches \"(abc\"",
        13,
        "invalid regular expression: unclosed group",
    );
    assert_parse_err(
        "x == 1 && body matches \"[z-a]\"",
        23,
        "invalid regular expression",
    );
    assert_parse_err(
        "body matches 5",
        13,
        "`matches` needs a regular expression in quotes",
    );
    assert_parse_err("body startswith 5", 16, "`startswith` needs text in quotes");
    assert_parse_err("body endswith true", 14, "`endswith` needs text in quotes");
    assert_parse_err("status in 5", 10, "`in` needs a list");
    assert_parse_err(
        "body matches \"a{1000}{1000}\"",
        13,
        "invalid regular expression",
    );
}

#[test]
fn constant_parts_are_evaluated_at_parse_time() {
    assert_parse_err(
        "300ms > 5",
        0,
        "cannot compare duration 300ms with number 5; write the number with a unit, e.g. `5ms`",
    );
    assert_parse_err(
        "x == 1 && (2 > \"a\")",
        10,
        "cannot compare number 2 with string \"a\"",
    );
    assert_parse_err("1 / 0 > 0", 0, "division by zero in `1 / 0`");
    assert_parse_err("-5ms < 1s", 0, "`-5ms` would be a negative duration");
    assert_parse_err("1e308 * 10 > 1", 0, "`1e308 * 10` is too large to compute");
    assert_parse_err("5", 0, "`5` is a number (5), not true or false");
    assert_parse_err(
        "\"ok\"",
        0,
        "`\"ok\"` is a string (\"ok\"), not true or false",
    );
    assert_parse_err("status == 200 && 5", 17, "`5` is a number");
    assert_parse_err("!3", 0, "`3` is a number");
    assert_parse_err(
        "status == 200 && len(body)",
        17,
        "`len(body)` is a number, not true or false",
    );
    assert_parse_err("load1 / cpus", 0, "`load1 / cpus` is a number or duration");
    assert_parse_err("lower(body)", 0, "`lower(body)` is a string");
    assert_parse_err("[status]", 0, "`[status]` is a list");
    assert_parse_err("len(5) > 1", 0, "len() takes a string");
    // Constant parts that work are fine, and a constant condition is allowed.
    assert!(ev("2 > 1"));
    assert!(ev("len(\"abc\") == 3 && status == 200"));
}

#[test]
fn names_lists_fact_paths_in_order_without_repeats() {
    let e = parse("status == 200 && body.json.status == \"ok\" || status == 204").unwrap();
    assert_eq!(e.names(), vec!["status", "body.json.status"]);
    let e = parse(
        "exists(body.json.data.items[0].name) && len(tags) > 0 && header[\"content-type\"] \
         contains \"json\" && body.json[\"weird key\"] == 1 && body.json.in == 1",
    )
    .unwrap();
    assert_eq!(
        e.names(),
        vec![
            "body.json.data.items[0].name",
            "tags",
            "header.content-type",
            "body.json[\"weird key\"]",
            "body.json.in",
        ]
    );
    assert!(parse("1 < 2 && \"a\" in [\"a\"]")
        .unwrap()
        .names()
        .is_empty());
    // Every name reads back through `Facts::lookup`.
    let f = facts();
    for name in e.names() {
        assert!(f.lookup(&name).is_some(), "{name}");
    }
}

#[test]
fn limits() {
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("{}1{} == 1", "(".repeat(2000), ")".repeat(2000));
    assert_parse_err(&deep, 64, "nests more than 64 levels");
    let deep_not = format!("{}true", "!".repeat(2000));
    assert_parse_err(&deep_not, 63, "nests more than 64 levels");
    let deep_neg = format!("{}1 == 1", "-".repeat(2000));
    assert_parse_err(&deep_neg, 63, "nests more than 64 levels");
    let deep_list = format!("{}1{} == 1", "[".repeat(2000), "]".repeat(2000));
    assert!(parse_err(&deep_list)
        .message
        .contains("nests more than 64 levels"));
    let deep_call = format!("{}body{} == 1", "len(".repeat(500), ")".repeat(500));
    assert!(parse_err(&deep_call)
        .message
        .contains("nests more than 64 levels"));
    let long_sum = format!("{} == 1", vec!["1"; 500].join(" + "));
    assert!(parse_err(&long_sum)
        .message
        .contains("nests more than 64 levels"));
    // Long flat chains of && and || are fine.
    let chain = vec!["status == 200"; 200].join(" && ");
    assert!(ev(&chain));
    let chain = vec!["status == 1"; 200].join(" || ") + " || true";
    assert!(ev(&chain));
    // Moderate nesting is fine.
    let ok = format!("{}status == 200{}", "(".repeat(30), ")".repeat(30));
    assert!(ev(&ok));
    // Source length.
    let long = format!("status == 200 {}", " ".repeat(MAX_SOURCE_LEN));
    let e = parse_err(&long);
    assert_eq!(e.offset, 0);
    assert!(e.message.contains("limit of 4096"), "{e}");
}

#[test]
fn expr_traits() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    assert_traits::<Expr>();
    assert_traits::<ParseError>();
    assert_traits::<EvalError>();

    let e: Expr = "status == 200".parse().unwrap();
    assert_eq!(e.source(), "status == 200");
    assert_eq!(e.to_string(), "status == 200");
    assert_eq!(format!("{e:?}"), "Expr(\"status == 200\")");
    assert_eq!(e.clone(), e);
    assert!("status ==".parse::<Expr>().is_err());

    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(json, "\"status == 200\"");
    let back: Expr = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);
    let bad = serde_json::from_str::<Expr>("\"status ==\"").unwrap_err();
    assert!(bad.to_string().contains("column 10"), "{bad}");

    // One parsed condition used from several threads.
    let e = std::sync::Arc::new(parse("body matches \"healthy\" && status == 200").unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || e.eval(&facts()))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().ok().and_then(Result::ok), Some(true));
    }
}

#[test]
fn json_scalars_stored_directly_are_plain_values() {
    let mut f = Facts::new();
    f.insert("n", json!(5));
    f.insert("s", json!("x"));
    f.insert("list", json!([1, 2]));
    let e = parse("n > 4 && s == \"x\" && list == [1, 2] && 2 in list").unwrap();
    assert_eq!(e.eval(&f), Ok(true));
}

#[test]
fn nan_compares_like_rust() {
    let mut f = Facts::new();
    f.insert("x", f64::NAN);
    for (src, want) in [
        ("x == x", false),
        ("x != x", true),
        ("x < 1", false),
        ("x >= 1", false),
        ("x + 1 > 0", false),
    ] {
        assert_eq!(parse(src).unwrap().eval(&f), Ok(want), "{src}");
    }
}

fn cmp_op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="])
}

fn rust_cmp<T: PartialOrd>(a: T, op: &str, b: T) -> bool {
    match op {
        "==" => a == b,
        "!=" => a != b,
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        _ => a >= b,
    }
}

/// Words and symbols of the language, for token soup.
const VOCAB: &[&str] = &[
    "status",
    "body",
    "body.json",
    ".",
    "[",
    "]",
    "(",
    ")",
    ",",
    "0",
    "1",
    "200",
    "-",
    "+",
    "*",
    "/",
    "==",
    "!=",
    "<",
    ">=",
    "&&",
    "||",
    "!",
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
    "\"ok\"",
    "\"(\"",
    "300ms",
    "14d",
    "90%",
    "2MiB",
    "len",
    "exists",
    "lower",
    "upper",
    "x",
    "data",
    "items",
    "[0]",
    "[\"k\"]",
    "tags",
    "zero",
    "pattern",
    "response_time",
    "missing",
    "1e400",
    "'",
    "\"",
    "é",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics(src in "\\PC{0,200}") {
        if let Ok(e) = parse(&src) {
            let _ = e.eval(&facts());
            let _ = e.names();
        }
    }

    #[test]
    fn parse_never_panics_on_any_string(src in any::<String>()) {
        let _ = parse(&src);
    }

    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(prop::sample::select(VOCAB), 0..40), glue in prop::bool::ANY) {
        let src = words.join(if glue { " " } else { "" });
        if let Ok(e) = parse(&src) {
            let _ = e.eval(&facts());
            let _ = e.eval(&Facts::new());
            for name in e.names() {
                let _ = facts().lookup(&name);
            }
        }
    }

    #[test]
    fn number_literals_compare_like_rust(a in any::<f64>().prop_filter("finite", |v| v.is_finite()), b in any::<f64>().prop_filter("finite", |v| v.is_finite()), op in cmp_op()) {
        let src = format!("{a} {op} {b}");
        let e = parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        prop_assert_eq!(e.eval(&Facts::new()), Ok(rust_cmp(a, op, b)), "{}", src);
    }

    #[test]
    fn integer_literals_compare_like_rust(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000, op in cmp_op()) {
        let src = format!("{a} {op} {b}");
        let e = parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        prop_assert_eq!(e.eval(&Facts::new()), Ok(rust_cmp(a, op, b)), "{}", src);
    }

    #[test]
    fn number_facts_compare_like_rust(a in any::<f64>(), b in any::<f64>(), op in cmp_op()) {
        let mut f = Facts::new();
        f.insert("a", a);
        f.insert("b.json", json!({"v": b}));
        let src = format!("a {op} b.json.v");
        let e = parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        // JSON cannot hold NaN or infinities: those become null.
        let b_json = if b.is_finite() { Some(b) } else { None };
        match b_json {
            Some(b) => prop_assert_eq!(e.eval(&f), Ok(rust_cmp(a, op, b)), "{} with a={} b={}", src, a, b),
            None => prop_assert!(op == "==" || op == "!=" || e.eval(&f).is_err()),
        }
    }

    #[test]
    fn durations_compare_like_rust(a in 0u64..10_000_000, b in 0u64..10_000_000, op in cmp_op(), unit in prop::sample::select(vec![("ms", 1_000_000u64), ("s", 1_000_000_000), ("us", 1_000)])) {
        let (name, ns) = unit;
        let mut f = Facts::new();
        f.insert("t", Duration::from_nanos(a * ns));
        let src = format!("t {op} {b}{name}");
        let e = parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        prop_assert_eq!(e.eval(&f), Ok(rust_cmp(a, op, b)), "{}", src);
    }

    #[test]
    fn arithmetic_agrees_with_rust(a in -1e6f64..1e6, b in -1e6f64..1e6) {
        let mut f = Facts::new();
        f.insert("a", a);
        f.insert("b", b);
        for (op, want) in [("+", a + b), ("-", a - b), ("*", a * b)] {
            let mut g = f.clone();
            g.insert("want", want);
            let src = format!("a {op} b == want");
            prop_assert_eq!(parse(&src).map_err(|e| TestCaseError::fail(e.to_string()))?.eval(&g), Ok(true), "{}", src);
        }
    }

    #[test]
    fn paths_round_trip(keys in prop::collection::vec("[a-z][a-z0-9_]{0,5}|[0-9]{1,3}", 1..5), odd in "[ -~]{0,6}") {
        // Build `root.k1[3]["odd"]` from parts, read it back via names() and Facts::lookup.
        let mut src = String::from("root");
        let mut inner = json!(true);
        let mut path_json = Vec::new();
        for k in &keys {
            if k.chars().all(|c| c.is_ascii_digit()) {
                let i: usize = k.parse().unwrap_or(0) % 4;
                src.push_str(&format!("[{i}]"));
                path_json.push(serde_json::Value::from(i));
            } else {
                src.push('.');
                src.push_str(k);
                path_json.push(serde_json::Value::from(k.clone()));
            }
        }
        let escaped: String = odd.chars().flat_map(|c| match c { '"' | '\\' => vec!['\\', c], c => vec![c] }).collect();
        src.push_str(&format!("[\"{escaped}\"]"));
        path_json.push(serde_json::Value::from(odd.clone()));
        for step in path_json.iter().rev() {
            inner = match step {
                serde_json::Value::Number(n) => {
                    let i = n.as_u64().unwrap_or(0) as usize;
                    let mut arr = vec![serde_json::Value::Null; i + 1];
                    arr[i] = inner;
                    serde_json::Value::Array(arr)
                }
                serde_json::Value::String(k) => json!({ k.clone(): inner }),
                _ => inner,
            };
        }
        let mut f = Facts::new();
        f.insert("root", Value::Json(inner));
        let e = parse(&format!("exists({src}) && {src} == true")).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        prop_assert_eq!(e.eval(&f), Ok(true), "{}", src);
        let names = e.names();
        prop_assert_eq!(names.len(), 1);
        prop_assert_eq!(f.lookup(&names[0]).map(|v| v.into_owned()), Some(Value::Bool(true)), "{}", names[0]);
    }
}
