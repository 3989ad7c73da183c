//! `steward alerts import-alertmanager`: converts an Alertmanager `alertmanager.yml` into the
//! `[alerting]` section of `steward.toml`, plus notes: the credentials to store as Steward
//! secrets (with the `steward secret put` command for each, never the value) and everything
//! that was not converted.
//!
//! What maps to what:
//!
//! | Alertmanager | Steward |
//! | --- | --- |
//! | `global.resolve_timeout` | `resolve_timeout` |
//! | `route` (`receiver`, `group_by` incl. `...`, `group_wait`, `group_interval`, `repeat_interval`, `continue`, nested `routes`) | `[alerting.route]`, `[[alerting.route.routes]]` |
//! | `matchers`, and the deprecated `match` / `match_re` maps | `matchers` |
//! | `receivers[].*_configs` | `[[alerting.receivers]]` whose `channels` are `[[alerting.channels]]` named `<receiver>-<type>[-N]` |
//! | `webhook_configs` (`url`, `url_file`, `max_alerts`, `timeout`, `http_config.authorization`) | `webhook` (`url`, `url_secret`, `max_alerts`, `timeout`, `bearer_secret`) |
//! | `slack_configs` (`api_url`, `api_url_file`, `global.slack_api_url`) | `slack` (`url_secret`) |
//! | `pagerduty_configs` (`routing_key`, `service_key`, `url`, `severity`, `source`) | `pagerduty` (`routing_key_secret`, `url`, `severity`, `source`) |
//! | `email_configs` (`to`, `from`, `smarthost`, `auth_username`, `auth_password`, `require_tls`, `tls_config.insecure_skip_verify`, and the `global.smtp_*` defaults) | `email` (`to`, `from`, `host`, `port`, `username`, `password_secret`, `tls`, `accept_invalid_certs`) |
//! | `opsgenie_configs` (`api_key`, `api_url`, `priority`, `tags`) | `opsgenie` (`api_key_secret`, `url`, `priority`, `tags`) |
//! | `msteams_configs`, `msteamsv2_configs` (`webhook_url`) | `teams` (`url_secret`) |
//! | `inhibit_rules` (`source_matchers`, `target_matchers`, `source_match(_re)`, `target_match(_re)`, `equal`) | `[[alerting.inhibit_rules]]` |
//!
//! Credentials are never copied: each becomes a reference `ENV/alerting/<channel>#<field>`
//! and a note with the `steward secret put --json ENV/alerting/<channel>` command that stores
//! it. Not converted, and listed in the notes: `templates` and templated fields (Steward's
//! messages have a fixed layout per channel), `time_intervals`, `mute_time_intervals` and a
//! route's `mute_time_intervals` / `active_time_intervals` (use maintenance windows),
//! receivers of other kinds (Discord, Telegram, ...), `send_resolved: false` (Steward always
//! sends the resolve), and any other key it does not know.
//!
//! Matchers are re-quoted in Steward's syntax with Alertmanager's unescaping (`\d` in a quoted
//! regex stays `\d`), so they mean what they meant. The result is checked before it is
//! returned: it parses as `steward.toml`, compiles, and every channel builds.

use std::collections::HashSet;

use serde_yaml_ng::{Mapping, Value};
use steward_core::{config::Config, names::EnvName};

use crate::{
    config::{build_channels, Compiled},
    matchers::Matcher,
};

/// Why a file could not be converted. `line` is set for YAML syntax errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ImportError {}

/// Converts the text of an `alertmanager.yml` (`file` names it in errors and notes) into the
/// `[alerting]` TOML, with secret references in environment `env`. Returns the TOML and the
/// notes (credentials to store, things not converted).
pub fn import_alertmanager(
    yaml: &str,
    file: &str,
    env: &str,
) -> Result<(String, Vec<String>), ImportError> {
    let err = |message: String| ImportError {
        file: file.to_string(),
        line: None,
        column: None,
        message,
    };
    let env = EnvName::parse(env).map_err(|e| {
        err(format!(
            "environment {env:?} for the secret references: {e}"
        ))
    })?;
    let mut doc: Value = serde_yaml_ng::from_str(yaml).map_err(|e| {
        let loc = e.location();
        ImportError {
            file: file.to_string(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message: format!("invalid YAML: {e}"),
        }
    })?;
    doc.apply_merge()
        .map_err(|e| err(format!("invalid YAML merge key (<<): {e}")))?;
    if doc.is_null() {
        return Err(err(
            "the file is empty; expected an Alertmanager configuration (route, receivers)".into(),
        ));
    }
    let mut conv = Converter {
        env: env.as_str().to_string(),
        ..Converter::default()
    };
    let out = conv.convert(&doc).map_err(err)?;
    let text = render(&out, file);
    // The result must be something Steward starts with.
    let cfg = Config::parse(&text, "converted").map_err(|e| {
        err(format!(
            "the converted configuration does not parse ({e}); this is a bug in the importer"
        ))
    })?;
    Compiled::compile(&cfg.alerting)
        .map_err(|e| err(format!("the converted configuration does not check: {e}")))?;
    build_channels(&cfg.alerting, &reqwest::Client::new())
        .map_err(|e| err(format!("the converted configuration does not check: {e}")))?;
    let mut notes = conv.credential_notes();
    notes.append(&mut conv.notes);
    Ok((text, notes))
}

// ---- the output model --------------------------------------------------------------------

#[derive(Debug, Default)]
struct Out {
    resolve_timeout: Option<String>,
    route: RouteOut,
    receivers: Vec<(String, Vec<String>)>,
    channels: Vec<ChannelOut>,
    inhibit: Vec<InhibitOut>,
}

#[derive(Debug, Default)]
struct RouteOut {
    /// Where it came from (`route.routes[1]`), written as a comment.
    origin: String,
    receiver: Option<String>,
    matchers: Vec<String>,
    group_by: Option<Vec<String>>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    continue_matching: bool,
    routes: Vec<RouteOut>,
}

#[derive(Debug)]
enum Setting {
    Str(String),
    Int(u64),
    Bool(bool),
    List(Vec<String>),
}

#[derive(Debug)]
struct ChannelOut {
    name: String,
    kind: &'static str,
    origin: String,
    settings: Vec<(&'static str, Setting)>,
}

#[derive(Debug)]
struct InhibitOut {
    origin: String,
    source: Vec<String>,
    target: Vec<String>,
    equal: Vec<String>,
}

// ---- rendering ---------------------------------------------------------------------------

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", inner.join(", "))
}

fn render(out: &Out, file: &str) -> String {
    let mut t = String::new();
    let source: String = file
        .rsplit('/')
        .next()
        .unwrap_or(file)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    t.push_str(&format!(
        "# Converted from {source} by `steward alerts import-alertmanager`.\n\
         # Put it into steward.toml (in place of any [alerting] section), store the credentials\n\
         # the notes list with `steward secret put`, then run `steward config check`.\n\n"
    ));
    t.push_str("[alerting]\n");
    if let Some(r) = &out.resolve_timeout {
        t.push_str(&format!("resolve_timeout = {}\n", q(r)));
    }
    t.push('\n');
    render_route(&mut t, &out.route, "alerting.route", true);
    for (name, channels) in &out.receivers {
        t.push_str("[[alerting.receivers]]\n");
        t.push_str(&format!("name = {}\n", q(name)));
        t.push_str(&format!("channels = {}\n\n", list(channels)));
    }
    for c in &out.channels {
        t.push_str(&format!("# {}\n", c.origin));
        t.push_str("[[alerting.channels]]\n");
        t.push_str(&format!("name = {}\n", q(&c.name)));
        t.push_str(&format!("type = {}\n", q(c.kind)));
        for (k, v) in &c.settings {
            let v = match v {
                Setting::Str(s) => q(s),
                Setting::Int(n) => n.to_string(),
                Setting::Bool(b) => b.to_string(),
                Setting::List(l) => list(l),
            };
            t.push_str(&format!("{k} = {v}\n"));
        }
        t.push('\n');
    }
    for r in &out.inhibit {
        t.push_str(&format!("# {}\n", r.origin));
        t.push_str("[[alerting.inhibit_rules]]\n");
        t.push_str(&format!("source_matchers = {}\n", list(&r.source)));
        t.push_str(&format!("target_matchers = {}\n", list(&r.target)));
        if !r.equal.is_empty() {
            t.push_str(&format!("equal = {}\n", list(&r.equal)));
        }
        t.push('\n');
    }
    while t.ends_with("\n\n") {
        t.pop();
    }
    t
}

/// Pre-order, so each `[[...routes]]` header appends to the routes of the table just above it.
fn render_route(t: &mut String, r: &RouteOut, header: &str, root: bool) {
    if root {
        t.push_str(&format!("[{header}]\n"));
    } else {
        t.push_str(&format!("# {}\n", r.origin));
        t.push_str(&format!("[[{header}]]\n"));
    }
    if !r.matchers.is_empty() {
        t.push_str(&format!("matchers = {}\n", list(&r.matchers)));
    }
    if let Some(x) = &r.receiver {
        t.push_str(&format!("receiver = {}\n", q(x)));
    }
    if r.continue_matching {
        t.push_str("continue = true\n");
    }
    if let Some(g) = &r.group_by {
        t.push_str(&format!("group_by = {}\n", list(g)));
    }
    for (k, v) in [
        ("group_wait", &r.group_wait),
        ("group_interval", &r.group_interval),
        ("repeat_interval", &r.repeat_interval),
    ] {
        if let Some(v) = v {
            t.push_str(&format!("{k} = {}\n", q(v)));
        }
    }
    t.push('\n');
    let child = format!("{header}.routes");
    for c in &r.routes {
        render_route(t, c, &child, false);
    }
}

// ---- reading YAML ------------------------------------------------------------------------

/// A YAML mapping read key by key; the keys never read are what was not converted.
struct Obj<'a> {
    path: String,
    map: Option<&'a Mapping>,
    used: HashSet<String>,
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl<'a> Obj<'a> {
    fn new(path: impl Into<String>, v: &'a Value) -> Result<Self, String> {
        let path = path.into();
        let map = match v {
            Value::Null => None,
            Value::Mapping(m) => Some(m),
            other => {
                return Err(format!(
                    "{path}: expected a mapping, found {}",
                    describe(other)
                ))
            }
        };
        Ok(Self {
            path,
            map,
            used: HashSet::new(),
        })
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.used.insert(key.to_string());
        self.map?.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.map
            .and_then(|m| m.get(key))
            .is_some_and(|v| !v.is_null())
    }

    /// A scalar as text (numbers and booleans too: `match: {code: 500}`).
    fn str(&mut self, key: &str) -> Result<Option<String>, String> {
        let at = self.at(key);
        match self.get(key) {
            None => Ok(None),
            Some(v) => scalar(v)
                .map(Some)
                .ok_or_else(|| format!("{at}: expected a string, found {}", describe(v))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        let at = self.at(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!(
                "{at}: expected true or false, found {}",
                describe(v)
            )),
        }
    }

    fn strs(&mut self, key: &str) -> Result<Option<Vec<String>>, String> {
        let at = self.at(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    scalar(v).ok_or_else(|| {
                        format!("{at}[{i}]: expected a string, found {}", describe(v))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(format!(
                "{at}: expected a list of strings, found {}",
                describe(v)
            )),
        }
    }

    /// A mapping of label name to value (`match`, `match_re`).
    fn pairs(&mut self, key: &str) -> Result<Vec<(String, String)>, String> {
        let at = self.at(key);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| match (scalar(k), scalar(v)) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(format!("{at}: expected label names mapped to values")),
                })
                .collect(),
            Some(v) => Err(format!("{at}: expected a mapping, found {}", describe(v))),
        }
    }

    fn obj(&mut self, key: &str) -> Result<Option<Obj<'a>>, String> {
        let at = self.at(key);
        match self.get(key) {
            None => Ok(None),
            Some(v) => Obj::new(at, v).map(Some),
        }
    }

    fn objs(&mut self, key: &str) -> Result<Vec<Obj<'a>>, String> {
        let at = self.at(key);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Obj::new(format!("{at}[{i}]"), v))
                .collect(),
            Some(v) => Err(format!("{at}: expected a list, found {}", describe(v))),
        }
    }

    /// The keys with a value that were never read, in file order.
    fn leftover(&self) -> Vec<String> {
        let Some(m) = self.map else {
            return Vec::new();
        };
        m.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| scalar(k).unwrap_or_else(|| "?".into()))
            .filter(|k| !self.used.contains(k))
            .collect()
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn templated(s: &str) -> bool {
    s.contains("{{")
}

// ---- durations and matchers --------------------------------------------------------------

/// A Prometheus duration (`30s`, `1h30m`, `1d`, `2w`, `1y` = 365d, `500ms`, `0`) in a form
/// Steward reads (one unit, the largest that is exact).
fn duration(s: &str, at: &str) -> Result<String, String> {
    let bad = || {
        format!("{at}: {s:?} is not a duration; Alertmanager writes them like \"30s\", \"5m\" or \"1h30m\"")
    };
    let text = s.trim();
    if text == "0" {
        return Ok("0s".into());
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut ms: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        ms = n
            .checked_mul(unit)
            .and_then(|x| x.checked_add(ms))
            .ok_or_else(bad)?;
    }
    if ms == 0 {
        return Ok("0s".into());
    }
    for (unit, name) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ] {
        if ms.is_multiple_of(unit) {
            return Ok(format!("{}{name}", ms / unit));
        }
    }
    Ok(format!("{ms}ms"))
}

/// Writes one matcher in Steward's syntax, quoting the value so Steward reads it back exactly.
fn matcher_text(name: &str, op: &str, value: &str) -> String {
    let mut v = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => v.push_str("\\\\"),
            '"' => v.push_str("\\\""),
            '\n' => v.push_str("\\n"),
            c => v.push(c),
        }
    }
    format!("{name}{op}\"{v}\"")
}

/// Checks a matcher with Steward's parser, and that it reads back the value we meant.
fn checked(name: &str, op: &str, value: &str, at: &str) -> Result<String, String> {
    let text = matcher_text(name, op, value);
    match Matcher::parse(&text) {
        Ok(m) if m.value == value && m.name == name => Ok(text),
        Ok(_) => Err(format!("{at}: {text} does not survive conversion")),
        Err(e) => Err(format!("{at}: {}", e.reason)),
    }
}

/// Parses Alertmanager matchers (`name="value"`, `!=`, `=~`, `!~`; one or a `{...}` list per
/// string) with Alertmanager's unescaping: `\"`, `\\` and `\n` are escapes, any other
/// backslash is kept (`"db-\d+"` is the regex `db-\d+`).
fn am_matchers(input: &str, at: &str) -> Result<Vec<String>, String> {
    let mut s = input.trim();
    if let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        s = inner;
    }
    let mut out = Vec::new();
    for part in crate::matchers::split_top(s) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let bad = |why: &str| format!("{at}: {part:?} is not a matcher ({why})");
        let pos = part
            .find(['=', '!'])
            .ok_or_else(|| bad("expected name=\"value\", !=, =~ or !~"))?;
        let name = part[..pos].trim();
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or(name);
        let rest = &part[pos..];
        let (op, raw) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r.trim())))
            .ok_or_else(|| bad("expected an operator: =, !=, =~ or !~"))?;
        let raw = match raw.strip_prefix('"') {
            Some(r) => r
                .strip_suffix('"')
                .ok_or_else(|| bad("the value has no closing quote"))?,
            None => raw,
        };
        out.push(checked(name, op, &am_unescape(raw), at)?);
    }
    Ok(out)
}

fn am_unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(e @ ('"' | '\\')) => out.push(e),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// `matchers` plus the deprecated `match` / `match_re` maps of one object, in Steward's syntax.
fn all_matchers(o: &mut Obj<'_>, new: &str, eq: &str, re: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let at = o.at(eq);
    for (k, v) in o.pairs(eq)? {
        out.push(checked(&k, "=", &v, &at)?);
    }
    let at = o.at(re);
    for (k, v) in o.pairs(re)? {
        out.push(checked(&k, "=~", &v, &at)?);
    }
    let at = o.at(new);
    for (i, m) in o.strs(new)?.unwrap_or_default().iter().enumerate() {
        out.extend(am_matchers(m, &format!("{at}[{i}]"))?);
    }
    Ok(out)
}

// ---- the conversion ----------------------------------------------------------------------

/// Where a credential's value is in the Alertmanager setup (never the value itself).
#[derive(Debug, Clone)]
enum Source {
    /// A key in alertmanager.yml.
    Key(String),
    /// A file a `*_file` key names.
    File { key: String, path: String },
    /// Nowhere: the user has to find it.
    Missing(&'static str),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Key(k) => format!("the value of {k}"),
            Source::File { key, path } => format!("the contents of {path} ({key})"),
            Source::Missing(what) => format!("{what}: alertmanager.yml has none"),
        }
    }
}

#[derive(Debug)]
struct Credential {
    channel: String,
    target: String,
    fields: Vec<(&'static str, Source)>,
}

#[derive(Debug, Default)]
struct Globals {
    smtp_from: Option<String>,
    smtp_smarthost: Option<String>,
    smtp_hello: Option<String>,
    smtp_auth_username: Option<String>,
    smtp_auth_password: Option<Source>,
    smtp_require_tls: Option<bool>,
    slack_api_url: Option<Source>,
    pagerduty_url: Option<String>,
    opsgenie_api_key: Option<Source>,
    opsgenie_api_url: Option<String>,
}

#[derive(Debug, Default)]
struct Converter {
    env: String,
    notes: Vec<String>,
    credentials: Vec<Credential>,
    channel_names: HashSet<String>,
    globals: Globals,
    /// Receivers the routes name, with where.
    referenced: Vec<(String, String)>,
}

const AM_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const AM_OPSGENIE_URL: &str = "https://api.opsgenie.com";

/// A credential key and its `_file` twin, as a [`Source`].
fn secret_source(o: &mut Obj<'_>, key: &str) -> Result<Option<Source>, String> {
    let file_key = format!("{key}_file");
    let at = o.at(key);
    let file_at = o.at(&file_key);
    // Read both, so neither is reported as not converted.
    let inline = o.get(key).is_some();
    let file = o.str(&file_key)?;
    Ok(if inline {
        Some(Source::Key(at))
    } else {
        file.map(|path| Source::File { key: file_at, path })
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Converter {
    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn leftover(&mut self, o: &Obj<'_>, why: &str) {
        let keys = o.leftover();
        if !keys.is_empty() {
            let what = if o.path.is_empty() {
                "top level"
            } else {
                &o.path
            };
            self.note(format!("{what}: not converted: {}{why}", keys.join(", ")));
        }
    }

    /// A reference to `ENV/alerting/<channel>#<field>`, recorded for the notes.
    fn secret(&mut self, channel: &str, field: &'static str, source: Source) -> String {
        let target = format!("{}/alerting/{channel}", self.env);
        match self.credentials.iter_mut().find(|c| c.target == target) {
            Some(c) => c.fields.push((field, source)),
            None => self.credentials.push(Credential {
                channel: channel.to_string(),
                target: target.clone(),
                fields: vec![(field, source)],
            }),
        }
        format!("{target}#{field}")
    }

    fn credential_notes(&self) -> Vec<String> {
        self.credentials
            .iter()
            .map(|c| {
                let fields: Vec<String> = c
                    .fields
                    .iter()
                    .map(|(f, s)| format!("{f:?}: \"<{}>\"", s.describe()))
                    .collect();
                format!(
                    "secret: channel {:?} reads {}; store it with: steward secret put --json {} \
                     (the JSON object on stdin: {{{}}})",
                    c.channel,
                    c.fields
                        .iter()
                        .map(|(f, _)| format!("{}#{f}", c.target))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    c.target,
                    fields.join(", ")
                )
            })
            .collect()
    }

    fn convert(&mut self, doc: &Value) -> Result<Out, String> {
        let mut top = Obj::new("", doc)?;
        let mut out = Out::default();
        if let Some(mut g) = top.obj("global")? {
            out.resolve_timeout = g
                .str("resolve_timeout")?
                .map(|d| duration(&d, "global.resolve_timeout"))
                .transpose()?;
            self.globals = Globals {
                smtp_from: g.str("smtp_from")?,
                smtp_smarthost: g.str("smtp_smarthost")?,
                smtp_hello: g.str("smtp_hello")?,
                smtp_auth_username: g.str("smtp_auth_username")?,
                smtp_auth_password: secret_source(&mut g, "smtp_auth_password")?,
                smtp_require_tls: g.bool("smtp_require_tls")?,
                slack_api_url: secret_source(&mut g, "slack_api_url")?,
                pagerduty_url: g.str("pagerduty_url")?,
                opsgenie_api_key: secret_source(&mut g, "opsgenie_api_key")?,
                opsgenie_api_url: g.str("opsgenie_api_url")?,
            };
            if g.has("smtp_auth_identity") || g.has("smtp_auth_secret") {
                g.get("smtp_auth_identity");
                g.get("smtp_auth_secret");
                self.note(
                    "global.smtp_auth_identity / smtp_auth_secret: not converted: Steward \
                     authenticates to SMTP servers with a username and password only",
                );
            }
            self.leftover(&g, "");
        }
        let Some(route) = top.obj("route")? else {
            return Err("route: missing; an Alertmanager configuration needs a root route".into());
        };
        out.route = self.route(route, true)?;
        let receivers = top.objs("receivers")?;
        if receivers.is_empty() {
            return Err("receivers: missing; an Alertmanager configuration needs receivers".into());
        }
        for r in receivers {
            let (name, channels) = self.receiver(r, &mut out.channels)?;
            out.receivers.push((name, channels));
        }
        for (name, at) in &self.referenced {
            if !out.receivers.iter().any(|(n, _)| n == name) {
                return Err(format!("{at}: no receiver is named {name:?} in receivers"));
            }
        }
        for r in top.objs("inhibit_rules")? {
            out.inhibit.push(self.inhibit(r)?);
        }
        if top.has("templates") {
            top.get("templates");
            self.note(
                "templates: not converted: Steward's notifications have a fixed layout per channel \
                 (title, alerts with their labels and annotations, a link)",
            );
        }
        for key in ["time_intervals", "mute_time_intervals"] {
            let names: Vec<String> = top
                .objs(key)?
                .iter_mut()
                .map(|t| t.str("name").map(Option::unwrap_or_default))
                .collect::<Result<_, _>>()?;
            if !names.is_empty() {
                self.note(format!(
                    "{key} ({}): not supported: Steward has no time intervals; mute alerts at \
                     recurring times with [[alerting.maintenance]] windows (cron, duration, \
                     timezone, matchers)",
                    names.join(", ")
                ));
            }
        }
        self.leftover(&top, "");
        Ok(out)
    }

    fn route(&mut self, mut o: Obj<'_>, root: bool) -> Result<RouteOut, String> {
        let mut r = RouteOut {
            origin: o.path.clone(),
            ..RouteOut::default()
        };
        r.receiver = o.str("receiver")?;
        match &r.receiver {
            Some(name) => self.referenced.push((name.clone(), o.at("receiver"))),
            None if root => {
                return Err("route.receiver: missing; the root route needs a receiver".into())
            }
            None => {}
        }
        r.matchers = all_matchers(&mut o, "matchers", "match", "match_re")?;
        r.group_by = o.strs("group_by")?;
        r.continue_matching = o.bool("continue")?.unwrap_or(false);
        for (key, slot) in [
            ("group_wait", &mut r.group_wait),
            ("group_interval", &mut r.group_interval),
            ("repeat_interval", &mut r.repeat_interval),
        ] {
            let at = o.at(key);
            *slot = o.str(key)?.map(|d| duration(&d, &at)).transpose()?;
        }
        for key in ["mute_time_intervals", "active_time_intervals"] {
            if let Some(names) = o.strs(key)? {
                self.note(format!(
                    "{}: not supported: {} ({}); the route is converted without it: use \
                     [[alerting.maintenance]] windows instead",
                    o.at(key),
                    key,
                    names.join(", ")
                ));
            }
        }
        for child in o.objs("routes")? {
            r.routes.push(self.route(child, false)?);
        }
        self.leftover(&o, "");
        Ok(r)
    }

    fn inhibit(&mut self, mut o: Obj<'_>) -> Result<InhibitOut, String> {
        let mut source =
            all_matchers(&mut o, "source_matchers", "source_match", "source_match_re")?;
        let mut target =
            all_matchers(&mut o, "target_matchers", "target_match", "target_match_re")?;
        for (side, list) in [("source", &mut source), ("target", &mut target)] {
            if list.is_empty() {
                // Alertmanager: no matchers match every alert; Steward wants one at least.
                list.push(matcher_text("alertname", "=~", ".*"));
                self.notes.push(format!(
                    "{}: no {side} matchers (every alert): written as alertname=~\".*\"",
                    o.path
                ));
            }
        }
        let equal = o.strs("equal")?.unwrap_or_default();
        self.leftover(&o, "");
        Ok(InhibitOut {
            origin: o.path.clone(),
            source,
            target,
            equal,
        })
    }

    fn unique_name(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut n = 2;
        while !self.channel_names.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }

    fn receiver(
        &mut self,
        mut o: Obj<'_>,
        channels: &mut Vec<ChannelOut>,
    ) -> Result<(String, Vec<String>), String> {
        let name = o
            .str("name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{}.name: missing; every receiver needs a name", o.path))?;
        o.path = format!("receivers[{name:?}]");
        let slug = slug(&name);
        const KINDS: [(&str, &str); 7] = [
            ("webhook_configs", "webhook"),
            ("slack_configs", "slack"),
            ("pagerduty_configs", "pagerduty"),
            ("email_configs", "email"),
            ("opsgenie_configs", "opsgenie"),
            ("msteams_configs", "teams"),
            ("msteamsv2_configs", "teams"),
        ];
        let mut configs = Vec::new();
        for (key, kind) in KINDS {
            for c in o.objs(key)? {
                configs.push((kind, c));
            }
        }
        let total = |kind: &str| configs.iter().filter(|(k, _)| *k == kind).count();
        let totals: Vec<(&str, usize)> = KINDS.iter().map(|(_, k)| (*k, total(k))).collect();
        let mut seen: Vec<(&str, usize)> = Vec::new();
        let mut names = Vec::new();
        for (kind, c) in configs {
            let n = match seen.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    seen.push((kind, 1));
                    1
                }
            };
            let many = totals.iter().any(|(k, t)| *k == kind && *t > 1);
            let base = if many {
                format!("{slug}-{kind}-{n}")
            } else {
                format!("{slug}-{kind}")
            };
            let ch_name = self.unique_name(base);
            let converted = match kind {
                "webhook" => self.webhook(c, &ch_name)?,
                "slack" => self.slack(c, &ch_name)?,
                "pagerduty" => self.pagerduty(c, &ch_name)?,
                "email" => self.email(c, &ch_name)?,
                "opsgenie" => self.opsgenie(c, &ch_name)?,
                _ => self.teams(c, &ch_name)?,
            };
            if let Some(ch) = converted {
                names.push(ch.name.clone());
                channels.push(ch);
            }
        }
        for key in o.leftover() {
            if key.ends_with("_configs") {
                o.get(&key);
                self.note(format!(
                    "{}.{key}: not converted: Steward has no such channel type (it has webhook, \
                     slack, pagerduty, email, opsgenie and teams); a webhook channel can feed a relay",
                    o.path
                ));
            }
        }
        self.leftover(&o, "");
        Ok((name, names))
    }

    /// A config that cannot become a channel: noted, and its name freed.
    fn skip(
        &mut self,
        origin: &str,
        name: &str,
        why: String,
    ) -> Result<Option<ChannelOut>, String> {
        self.note(format!("{origin}: skipped: {why}"));
        self.channel_names.remove(name);
        Ok(None)
    }

    fn send_resolved(&mut self, o: &mut Obj<'_>, default: bool) -> Result<(), String> {
        let at = o.at("send_resolved");
        match o.bool("send_resolved")? {
            Some(true) => {}
            Some(false) => self.note(format!(
                "{at}: false is not converted: Steward always sends the resolve of an alert whose \
                 firing it sent"
            )),
            None if !default => self.note(format!(
                "{at}: false by default here, not converted: Steward always sends the resolve of \
                 an alert whose firing it sent"
            )),
            None => {}
        }
        Ok(())
    }

    fn http_config(&mut self, o: &mut Obj<'_>, channel: &str) -> Result<Option<String>, String> {
        let Some(mut h) = o.obj("http_config")? else {
            return Ok(None);
        };
        let mut bearer = None;
        if let Some(mut a) = h.obj("authorization")? {
            let kind = a.str("type")?.unwrap_or_else(|| "Bearer".into());
            let src = secret_source(&mut a, "credentials")?;
            if kind.eq_ignore_ascii_case("bearer") {
                if let Some(src) = src {
                    bearer = Some(self.secret(channel, "token", src));
                }
            } else {
                self.note(format!(
                    "{}: not converted: authorization type {kind:?} (Steward sends Bearer tokens only)",
                    a.path
                ));
            }
            self.leftover(&a, "");
        }
        if let Some(src) = secret_source(&mut h, "bearer_token")? {
            if bearer.is_none() {
                bearer = Some(self.secret(channel, "token", src));
            }
        }
        self.leftover(&h, " (Steward's channels use their own HTTP client: TLS verified against the system roots, no proxy)");
        Ok(bearer)
    }

    fn webhook(&mut self, mut o: Obj<'_>, name: &str) -> Result<Option<ChannelOut>, String> {
        let origin = o.path.clone();
        let mut settings = Vec::new();
        let url_at = o.at("url");
        match (o.str("url")?, o.str("url_file")?) {
            (Some(url), _) => {
                let parsed = reqwest::Url::parse(url.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                let Some(parsed) = parsed else {
                    return Err(format!(
                        "{url_at}: not an http:// or https:// URL with a host"
                    ));
                };
                if parsed.password().is_some() {
                    // A password in the URL: the URL is a credential.
                    let r = self.secret(name, "url", Source::Key(url_at));
                    settings.push(("url_secret", Setting::Str(r)));
                } else {
                    settings.push(("url", Setting::Str(url.trim().to_string())));
                }
            }
            (None, Some(path)) => {
                let r = self.secret(
                    name,
                    "url",
                    Source::File {
                        key: o.at("url_file"),
                        path,
                    },
                );
                settings.push(("url_secret", Setting::Str(r)));
            }
            (None, None) => {
                return self.skip(&origin, name, "it has neither url nor url_file".into());
            }
        }
        if let Some(b) = self.http_config(&mut o, name)? {
            settings.push(("bearer_secret", Setting::Str(b)));
        }
        if let Some(n) = o.str("max_alerts")? {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("{}: {n:?} is not a whole number", o.at("max_alerts")))?;
            settings.push(("max_alerts", Setting::Int(n)));
        }
        self.timeout(&mut o, &mut settings)?;
        self.send_resolved(&mut o, true)?;
        self.leftover(&o, "");
        Ok(Some(ChannelOut {
            name: name.into(),
            kind: "webhook",
            origin,
            settings,
        }))
    }

    fn timeout(
        &mut self,
        o: &mut Obj<'_>,
        settings: &mut Vec<(&'static str, Setting)>,
    ) -> Result<(), String> {
        let at = o.at("timeout");
        if let Some(t) = o.str("timeout")? {
            let d = duration(&t, &at)?;
            if d.starts_with('0') {
                self.note(format!(
                    "{at}: 0 (no limit) is not converted: Steward's default applies"
                ));
            } else {
                settings.push(("timeout", Setting::Str(d)));
            }
        }
        Ok(())
    }

    fn slack(&mut self, mut o: Obj<'_>, name: &str) -> Result<Option<ChannelOut>, String> {
        let origin = o.path.clone();
        let src = match secret_source(&mut o, "api_url")? {
            Some(s) => s,
            None => match self.globals.slack_api_url.clone() {
                Some(Source::Key(_)) => Source::Key("global.slack_api_url".into()),
                Some(s) => s,
                None => Source::Missing("a Slack incoming webhook URL"),
            },
        };
        let r = self.secret(name, "url", src);
        self.send_resolved(&mut o, false)?;
        self.leftover(
            &o,
            " (Steward's Slack messages have a fixed layout and go to the webhook's own channel)",
        );
        Ok(Some(ChannelOut {
            name: name.into(),
            kind: "slack",
            origin,
            settings: vec![("url_secret", Setting::Str(r))],
        }))
    }

    fn pagerduty(&mut self, mut o: Obj<'_>, name: &str) -> Result<Option<ChannelOut>, String> {
        let origin = o.path.clone();
        let mut settings = Vec::new();
        let src = match secret_source(&mut o, "routing_key")? {
            Some(s) => Some(s),
            None => {
                let s = secret_source(&mut o, "service_key")?;
                if s.is_some() {
                    self.note(format!(
                        "{origin}: service_key is an Events API v1 integration key; Steward speaks \
                         Events API v2: if PagerDuty refuses it, add an \"Events API V2\" \
                         integration to the service and store its integration key instead"
                    ));
                }
                s
            }
        };
        let src = src.unwrap_or(Source::Missing("a PagerDuty integration key"));
        let r = self.secret(name, "routing_key", src);
        settings.push(("routing_key_secret", Setting::Str(r)));
        let url = match o.str("url")? {
            Some(u) => Some((u, o.at("url"))),
            None => self
                .globals
                .pagerduty_url
                .clone()
                .map(|u| (u, "global.pagerduty_url".to_string())),
        };
        if let Some((u, at)) = url {
            let u = u.trim().to_string();
            if u.contains("/generic/2010-04-15/") {
                self.note(format!(
                    "{at}: the Events API v1 URL is not converted: Steward posts to the v2 endpoint"
                ));
            } else if u.trim_end_matches('/') != AM_PAGERDUTY_URL {
                settings.push(("url", Setting::Str(u)));
            }
        }
        if let Some(sev) = o.str("severity")? {
            let s = sev.trim().to_ascii_lowercase();
            if ["critical", "error", "warning", "info"].contains(&s.as_str()) {
                settings.push(("severity", Setting::Str(s)));
            } else {
                self.note(format!(
                    "{}: {sev:?} not converted: Steward takes the severity from the alerts' \
                     severity label (or a fixed critical, error, warning or info)",
                    o.at("severity")
                ));
            }
        }
        if let Some(src) = o.str("source")? {
            if templated(&src) {
                self.note(format!(
                    "{}: templated, not converted: Steward sends source = \"steward\"",
                    o.at("source")
                ));
            } else {
                settings.push(("source", Setting::Str(src)));
            }
        }
        self.timeout(&mut o, &mut settings)?;
        self.send_resolved(&mut o, true)?;
        self.leftover(
            &o,
            " (Steward fills summary, custom_details and component/group/class from the alerts)",
        );
        Ok(Some(ChannelOut {
            name: name.into(),
            kind: "pagerduty",
            origin,
            settings,
        }))
    }

    fn email(&mut self, mut o: Obj<'_>, name: &str) -> Result<Option<ChannelOut>, String> {
        let origin = o.path.clone();
        let skip = |this: &mut Self, why: String| this.skip(&origin, name, why);
        let Some(to) = o.str("to")? else {
            return skip(self, "it has no to".into());
        };
        if templated(&to) {
            return skip(
                self,
                format!("to {to:?} is a template; Steward needs fixed addresses"),
            );
        }
        let to: Vec<String> = crate::matchers::split_top(&to)
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for t in &to {
            if t.parse::<lettre::message::Mailbox>().is_err() {
                return Err(format!("{}: {t:?} is not a mail address", o.at("to")));
            }
        }
        let from = match o.str("from")? {
            Some(f) => f,
            None => match self.globals.smtp_from.clone() {
                Some(f) => f,
                None => return skip(self, "no from, and no global.smtp_from".into()),
            },
        };
        if templated(&from) || from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(format!("{}: {from:?} is not a mail address", o.at("from")));
        }
        let Some(smarthost) = o.str("smarthost")?.or(self.globals.smtp_smarthost.clone()) else {
            return skip(self, "no smarthost, and no global.smtp_smarthost".into());
        };
        let (host, port) = match smarthost.trim().rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok_and(|p| p > 0) => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>().ok(),
            ),
            _ => {
                self.note(format!(
                    "{origin}: smarthost {smarthost:?} has no port; Steward's default (587) applies"
                ));
                (smarthost.trim().to_string(), None)
            }
        };
        let require_tls = o
            .bool("require_tls")?
            .or(self.globals.smtp_require_tls)
            .unwrap_or(true);
        let tls = if port == Some(465) {
            "tls"
        } else if require_tls {
            "starttls"
        } else if is_loopback(&host) {
            "none"
        } else {
            self.note(format!(
                "{origin}: require_tls: false is not converted: Steward insists on STARTTLS \
                 (or TLS) for any host but a loopback one"
            ));
            "starttls"
        };
        let mut settings = vec![("host", Setting::Str(host))];
        if let Some(p) = port {
            settings.push(("port", Setting::Int(u64::from(p))));
        }
        settings.push(("tls", Setting::Str(tls.into())));
        settings.push(("from", Setting::Str(from)));
        settings.push(("to", Setting::List(to)));
        let username = o
            .str("auth_username")?
            .or(self.globals.smtp_auth_username.clone());
        let password = match secret_source(&mut o, "auth_password")? {
            Some(s) => Some(s),
            None => match self.globals.smtp_auth_password.clone() {
                Some(Source::Key(_)) => Some(Source::Key("global.smtp_auth_password".into())),
                other => other,
            },
        };
        match (username, password) {
            (Some(u), p) => {
                settings.push(("username", Setting::Str(u)));
                if let Some(p) = p {
                    let r = self.secret(name, "password", p);
                    settings.push(("password_secret", Setting::Str(r)));
                }
            }
            (None, Some(_)) => self.note(format!(
                "{origin}: auth_password without auth_username is not converted: Steward needs \
                 both to log in"
            )),
            (None, None) => {}
        }
        if let Some(mut t) = o.obj("tls_config")? {
            if t.bool("insecure_skip_verify")? == Some(true) {
                settings.push(("accept_invalid_certs", Setting::Bool(true)));
            }
            self.leftover(
                &t,
                " (Steward checks certificates against the webpki roots)",
            );
        }
        let hello_at = o.at("hello");
        if let Some(h) = o.str("hello")?.or(self.globals.smtp_hello.clone()) {
            self.note(format!(
                "{hello_at}: {h:?} not converted: Steward says HELO with this machine's host name"
            ));
        }
        if o.has("auth_identity") || o.has("auth_secret") || o.has("auth_secret_file") {
            for k in ["auth_identity", "auth_secret", "auth_secret_file"] {
                o.get(k);
            }
            self.note(format!(
                "{origin}: auth_identity / auth_secret not converted: Steward logs in with \
                 username and password only"
            ));
        }
        self.timeout(&mut o, &mut settings)?;
        self.send_resolved(&mut o, false)?;
        self.leftover(
            &o,
            " (Steward's mail has a fixed subject and body, text and HTML)",
        );
        Ok(Some(ChannelOut {
            name: name.into(),
            kind: "email",
            origin,
            settings,
        }))
    }

    fn opsgenie(&mut self, mut o: Obj<'_>, name: &str) -> Result<Option<ChannelOut>, String> {
        let origin = o.path.clone();
        let mut settings = Vec::new();
        let src = match secret_source(&mut o, "api_key")? {
            Some(s) => s,
            None => match self.globals.opsgenie_api_key.clone() {
                Some(Source::Key(_)) => Source::Key("global.opsgenie_api_key".into()),
                Some(s) => s,
                None => Source::Missing("an Opsgenie API integration key"),
            },
        };
        let r = self.secret(name, "api_key", src);
        settings.push(("api_key_secret", Setting::Str(r)));
        if let Some(u) = o.str("api_url")?.or(self.globals.opsgenie_api_url.clone()) {
            let u = u.trim().trim_end_matches('/').to_string();
            if u != AM_OPSGENIE_URL {
                settings.push(("url", Setting::Str(u)));
            }
        }
        if let Some(p) = o.str("priority")? {
            let p = p.trim().to_string();
            if ["P1", "P2", "P3", "P4", "P5"].contains(&p.as_str()) {
                settings.push(("priority", Setting::Str(p)));
            } else {
                self.note(format!(
                    "{}: {p:?} not converted: Steward takes the priority from the alerts' severity \
                     label (or a fixed P1..P5)",
                    o.at("priority")
                ));
            }
        }
        if let Some(tags) = o.str("tags")? {
            if templated(&tags) {
                self.note(format!(
                    "{}: templated, not converted: Steward tags alerts with their group labels",
                    o.at("tags")
                ));
            } else {
                let list: Vec<String> = tags
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty() && t.chars().count() <= 50)
                    .collect();
                if !list.is_empty() {
                    settings.push(("tags", Setting::List(list)));
                }
            }
        }
        self.send_resolved(&mut o, true)?;
        self.leftover(
            &o,
            " (Steward fills message, description and details from the alerts)",
        );
        Ok(Some(ChannelOut {
            name: name.into(),
            kind: "opsgenie",
            origin,
            settings,
        }))
    }

    fn teams(&mut self, mut o: Obj<'_>, name: &str) -> Result<Option<ChannelOut>, String> {
        let origin = o.path.clone();
        let src =
            secret_source(&mut o, "webhook_url")?.unwrap_or(Source::Missing("a Teams webhook URL"));
        let r = self.secret(name, "url", src);
        self.send_resolved(&mut o, true)?;
        self.leftover(&o, " (Steward's Teams messages are a fixed Adaptive Card)");
        Ok(Some(ChannelOut {
            name: name.into(),
            kind: "teams",
            origin,
            settings: vec![("url_secret", Setting::Str(r))],
        }))
    }
}

/// A receiver name as a secret path segment (letters, digits, `-`, `_`, `.`).
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(['-', '.']);
    let s: String = s.chars().take(100).collect();
    if s.is_empty() {
        "receiver".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::Labels, route::GroupBy};

    /// A realistic alertmanager.yml: nested routes with match, match_re and matchers, continue,
    /// inhibit rules in both syntaxes, and several receivers of every kind Steward has.
    const AM: &str = r#"
global:
  resolve_timeout: 10m
  smtp_smarthost: 'smtp.example.org:587'
  smtp_from: 'alertmanager@example.org'
  smtp_auth_username: 'alertmanager'
  smtp_auth_password: 'SMTP-PASSWORD-VALUE'
  slack_api_url: 'https://hooks.slack.com/services/T000/B000/GLOBALSLACKSECRET'
  opsgenie_api_key: 'OPSGENIE-GLOBAL-KEY'

templates:
  - '/etc/alertmanager/template/*.tmpl'

route:
  group_by: ['alertname', 'cluster', 'service']
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 3h
  receiver: team-X-mails
  routes:
    - matchers:
        - 'service=~"foo1|foo2|baz"'
      receiver: team-X-mails
      routes:
        - matchers:
            - severity="critical"
          receiver: team-X-pager
    - match_re:
        service: ^(database|db-\d+)$
      receiver: team-DB-pager
      group_by: [alertname, cluster, database]
      continue: true
      routes:
        - match:
            owner: team-X
          receiver: team-X-pager
          continue: true
        - match:
            owner: team-Y
          receiver: team-Y-pager
    - matchers: ['{env="prod", team!="ops"}']
      receiver: chat
      group_by: ['...']
      group_wait: 0s
      repeat_interval: 1d12h
      mute_time_intervals: [offhours]
    - receiver: blackhole
      matchers: [alertname="Watchdog"]

inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname, cluster, service]
  - source_match:
      alertname: DatabaseDown
    target_match_re:
      service: 'api|web'
    equal: ['cluster']

receivers:
  - name: 'team-X-mails'
    email_configs:
      - to: 'team-X+alerts@example.org, team-X-lead@example.org'
      - to: 'audit@example.org'
        smarthost: 'mail.internal:465'
        auth_username: auditor
        auth_password_file: /etc/am/audit-smtp-password
        send_resolved: true
        headers:
          Subject: 'custom'
  - name: 'team-X-pager'
    pagerduty_configs:
      - routing_key: 'PD-ROUTING-KEY-X'
        severity: critical
      - service_key: 'PD-SERVICE-KEY-X'
        url: https://events.pagerduty.com/generic/2010-04-15/create_event.json
  - name: 'team-Y-pager'
    opsgenie_configs:
      - priority: P2
        tags: 'db, team-y'
      - api_key_file: /etc/am/opsgenie-y
        api_url: https://api.eu.opsgenie.com/
        responders:
          - name: team-y
            type: team
  - name: 'team-DB-pager'
    pagerduty_configs:
      - routing_key_file: /etc/am/pd-db
        client: '{{ template "pagerduty.default.client" . }}'
  - name: chat
    slack_configs:
      - channel: '#alerts'
        send_resolved: true
      - api_url: 'https://hooks.slack.com/services/T000/B000/CHATSLACKSECRET'
        title: '{{ .CommonLabels.alertname }}'
    msteams_configs:
      - webhook_url: 'https://example.webhook.office.com/TEAMSV1SECRET'
    msteamsv2_configs:
      - webhook_url_file: /etc/am/teams-v2
    webhook_configs:
      - url: 'http://127.0.0.1:5001/hook'
        max_alerts: 20
        http_config:
          authorization:
            credentials: 'WEBHOOK-BEARER-SECRET'
          proxy_url: http://proxy:3128
      - url: 'https://user:URLPASSWORDSECRET@hooks.example.org/am'
        send_resolved: false
        timeout: 15s
    discord_configs:
      - webhook_url: 'https://discord.com/api/webhooks/x/DISCORDSECRET'
  - name: blackhole

time_intervals:
  - name: offhours
    time_intervals:
      - times:
          - start_time: '18:00'
            end_time: '24:00'
"#;

    const SECRETS: &[&str] = &[
        "SMTP-PASSWORD-VALUE",
        "GLOBALSLACKSECRET",
        "OPSGENIE-GLOBAL-KEY",
        "PD-ROUTING-KEY-X",
        "PD-SERVICE-KEY-X",
        "CHATSLACKSECRET",
        "TEAMSV1SECRET",
        "WEBHOOK-BEARER-SECRET",
        "URLPASSWORDSECRET",
        "DISCORDSECRET",
    ];

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_realistic_alertmanager_yml_converts_parses_and_compiles() {
        let (text, notes) = import_alertmanager(AM, "alertmanager.yml", "prod").unwrap();
        let all_notes = notes.join("\n");
        for s in SECRETS {
            assert!(
                !text.contains(s),
                "credential {s} copied into the TOML:\n{text}"
            );
            assert!(
                !all_notes.contains(s),
                "credential {s} in the notes:\n{all_notes}"
            );
        }

        let cfg = Config::parse(&text, "steward.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let a = &cfg.alerting;
        let compiled = Compiled::compile(a).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let channels = build_channels(a, &reqwest::Client::new()).unwrap();
        assert_eq!(a.resolve_timeout.as_secs(), 600);

        // The route tree.
        let root = &a.route;
        assert_eq!(root.receiver.as_deref(), Some("team-X-mails"));
        assert_eq!(root.repeat_interval.map(|d| d.as_secs()), Some(3 * 3600));
        assert_eq!(root.routes.len(), 4);
        assert_eq!(root.routes[0].matchers, [r#"service=~"foo1|foo2|baz""#]);
        assert_eq!(
            root.routes[0].routes[0].matchers,
            [r#"severity="critical""#]
        );
        let db = &root.routes[1];
        assert!(db.continue_matching);
        assert_eq!(db.routes.len(), 2);
        assert!(db.routes[0].continue_matching);
        assert_eq!(db.routes[1].matchers, [r#"owner="team-Y""#]);
        let chat = &root.routes[2];
        assert_eq!(chat.matchers, [r#"env="prod""#, r#"team!="ops""#]);
        assert_eq!(chat.group_by.as_deref(), Some(&["...".to_string()][..]));
        assert_eq!(chat.group_wait.map(|d| d.as_secs()), Some(0));
        assert_eq!(chat.repeat_interval.map(|d| d.as_secs()), Some(36 * 3600));

        // Routing behaves as in Alertmanager (match_re's `\d` is still a digit class).
        let dest = |l: &Labels| -> Vec<String> {
            compiled
                .route
                .matching(l)
                .iter()
                .map(|r| r.receiver.clone())
                .collect()
        };
        assert_eq!(
            dest(&labels(&[("service", "foo1"), ("severity", "critical")])),
            ["team-X-pager"]
        );
        assert_eq!(
            dest(&labels(&[("service", "db-12"), ("owner", "team-X")])),
            ["team-X-pager"]
        );
        assert_eq!(
            dest(&labels(&[("service", "db-1"), ("env", "prod")])),
            ["team-DB-pager", "chat"]
        );
        assert_eq!(dest(&labels(&[("service", "db-x")])), ["team-X-mails"]);
        assert_eq!(
            dest(&labels(&[("service", "database"), ("owner", "team-Y")])),
            ["team-Y-pager"]
        );
        assert_eq!(dest(&labels(&[("env", "prod"), ("team", "web")])), ["chat"]);
        assert_eq!(dest(&labels(&[("alertname", "Watchdog")])), ["blackhole"]);
        let chat_route = compiled.route.matching(&labels(&[("env", "prod")]))[0];
        assert_eq!(chat_route.group_by, GroupBy::All);

        // Receivers and their channels.
        let rx = |n: &str| {
            a.receivers
                .iter()
                .find(|r| r.name == n)
                .unwrap()
                .channels
                .clone()
        };
        assert_eq!(
            rx("team-X-mails"),
            ["team-X-mails-email-1", "team-X-mails-email-2"]
        );
        assert_eq!(
            rx("team-X-pager"),
            ["team-X-pager-pagerduty-1", "team-X-pager-pagerduty-2"]
        );
        assert_eq!(
            rx("team-Y-pager"),
            ["team-Y-pager-opsgenie-1", "team-Y-pager-opsgenie-2"]
        );
        assert_eq!(rx("team-DB-pager"), ["team-DB-pager-pagerduty"]);
        assert_eq!(
            rx("chat"),
            [
                "chat-webhook-1",
                "chat-webhook-2",
                "chat-slack-1",
                "chat-slack-2",
                "chat-teams-1",
                "chat-teams-2"
            ]
        );
        assert!(rx("blackhole").is_empty());
        assert_eq!(channels.len(), 13);

        let ch = |n: &str| a.channels.iter().find(|c| c.name == n).unwrap();
        let get = |n: &str, k: &str| ch(n).settings.get(k).cloned();
        let s = |v: &str| Some(toml::Value::String(v.into()));
        assert_eq!(ch("chat-slack-1").kind, "slack");
        assert_eq!(
            get("chat-slack-1", "url_secret"),
            s("prod/alerting/chat-slack-1#url")
        );
        assert_eq!(
            get("chat-teams-2", "url_secret"),
            s("prod/alerting/chat-teams-2#url")
        );
        assert_eq!(
            get("chat-webhook-1", "url"),
            s("http://127.0.0.1:5001/hook")
        );
        assert_eq!(
            get("chat-webhook-1", "bearer_secret"),
            s("prod/alerting/chat-webhook-1#token")
        );
        assert_eq!(
            get("chat-webhook-1", "max_alerts"),
            Some(toml::Value::Integer(20))
        );
        assert_eq!(
            get("chat-webhook-2", "url"),
            None,
            "a URL with a password is a credential"
        );
        assert_eq!(
            get("chat-webhook-2", "url_secret"),
            s("prod/alerting/chat-webhook-2#url")
        );
        assert_eq!(get("chat-webhook-2", "timeout"), s("15s"));
        assert_eq!(
            get("team-X-pager-pagerduty-1", "routing_key_secret"),
            s("prod/alerting/team-X-pager-pagerduty-1#routing_key")
        );
        assert_eq!(get("team-X-pager-pagerduty-1", "severity"), s("critical"));
        assert_eq!(
            get("team-X-pager-pagerduty-2", "url"),
            None,
            "v1 URL dropped"
        );
        let mail = "team-X-mails-email-1";
        assert_eq!(get(mail, "host"), s("smtp.example.org"));
        assert_eq!(get(mail, "port"), Some(toml::Value::Integer(587)));
        assert_eq!(get(mail, "tls"), s("starttls"));
        assert_eq!(get(mail, "from"), s("alertmanager@example.org"));
        assert_eq!(
            get(mail, "to"),
            Some(toml::Value::Array(vec![
                "team-X+alerts@example.org".into(),
                "team-X-lead@example.org".into()
            ]))
        );
        assert_eq!(get(mail, "username"), s("alertmanager"));
        assert_eq!(
            get(mail, "password_secret"),
            s("prod/alerting/team-X-mails-email-1#password")
        );
        let audit = "team-X-mails-email-2";
        assert_eq!(get(audit, "host"), s("mail.internal"));
        assert_eq!(get(audit, "tls"), s("tls"), "port 465 is SMTPS");
        assert_eq!(get(audit, "username"), s("auditor"));
        assert_eq!(
            get("team-Y-pager-opsgenie-1", "api_key_secret"),
            s("prod/alerting/team-Y-pager-opsgenie-1#api_key")
        );
        assert_eq!(get("team-Y-pager-opsgenie-1", "priority"), s("P2"));
        assert_eq!(
            get("team-Y-pager-opsgenie-1", "tags"),
            Some(toml::Value::Array(vec!["db".into(), "team-y".into()]))
        );
        assert_eq!(
            get("team-Y-pager-opsgenie-2", "url"),
            s("https://api.eu.opsgenie.com")
        );

        // Inhibit rules, both syntaxes.
        assert_eq!(a.inhibit_rules.len(), 2);
        assert_eq!(
            a.inhibit_rules[0].source_matchers,
            [r#"severity="critical""#]
        );
        assert_eq!(
            a.inhibit_rules[0].equal,
            ["alertname", "cluster", "service"]
        );
        assert_eq!(
            a.inhibit_rules[1].source_matchers,
            [r#"alertname="DatabaseDown""#]
        );
        assert_eq!(
            a.inhibit_rules[1].target_matchers,
            [r#"service=~"api|web""#]
        );
        assert_eq!(compiled.inhibit.len(), 2);

        // Notes: one `secret put` per credential-holding channel, and what was not converted.
        let puts: Vec<&String> = notes
            .iter()
            .filter(|n| n.contains("steward secret put --json"))
            .collect();
        for target in [
            "prod/alerting/team-X-mails-email-1",
            "prod/alerting/team-X-mails-email-2",
            "prod/alerting/team-X-pager-pagerduty-1",
            "prod/alerting/team-X-pager-pagerduty-2",
            "prod/alerting/team-Y-pager-opsgenie-1",
            "prod/alerting/team-Y-pager-opsgenie-2",
            "prod/alerting/team-DB-pager-pagerduty",
            "prod/alerting/chat-slack-1",
            "prod/alerting/chat-slack-2",
            "prod/alerting/chat-teams-1",
            "prod/alerting/chat-teams-2",
            "prod/alerting/chat-webhook-1",
            "prod/alerting/chat-webhook-2",
        ] {
            assert!(
                puts.iter()
                    .any(|n| n.contains(&format!("steward secret put --json {target} "))),
                "no secret note for {target}:\n{all_notes}"
            );
        }
        assert_eq!(puts.len(), 13, "{all_notes}");
        let slack1 = puts.iter().find(|n| n.contains("chat-slack-1")).unwrap();
        assert!(slack1.contains("global.slack_api_url"), "{slack1}");
        let og2 = puts.iter().find(|n| n.contains("opsgenie-2")).unwrap();
        assert!(og2.contains("/etc/am/opsgenie-y"), "{og2}");
        for expected in [
            "templates",
            "time_intervals (offhours)",
            "mute_time_intervals (offhours)",
            "discord_configs",
            "service_key is an Events API v1",
            "responders",
            "proxy_url",
            "headers",
            "channel",
            "client",
            r#"receivers["chat"].webhook_configs[1].send_resolved: false"#,
            r#"receivers["chat"].slack_configs[1].send_resolved: false by default"#,
        ] {
            assert!(
                all_notes.contains(expected),
                "no note about {expected}:\n{all_notes}"
            );
        }
    }

    #[test]
    fn the_environment_goes_into_the_references() {
        let am = "route: {receiver: s}\nreceivers:\n  - name: s\n    slack_configs: [{api_url: 'https://hooks.slack.com/x'}]\n";
        let (text, notes) = import_alertmanager(am, "am.yml", "staging").unwrap();
        assert!(
            text.contains(r#"url_secret = "staging/alerting/s-slack#url""#),
            "{text}"
        );
        assert_eq!(notes.len(), 2, "{notes:?}"); // the secret, and send_resolved
        assert!(
            notes[0].contains("steward secret put --json staging/alerting/s-slack "),
            "{notes:?}"
        );
        let e = import_alertmanager(am, "am.yml", "Not An Env").unwrap_err();
        assert!(e.message.contains("environment"), "{e}");
    }

    #[test]
    fn invalid_yaml_names_the_line() {
        let bad = "route:\n  receiver: a\n  group_by: [alertname\nreceivers:\n  - name: a\n";
        let e = import_alertmanager(bad, "alertmanager.yml", "prod").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("alertmanager.yml:"), "{shown}");
        assert!(shown.contains("invalid YAML"), "{shown}");

        let e = import_alertmanager("route: [\n", "am.yml", "prod").unwrap_err();
        assert!(e.to_string().contains("am.yml:"), "{e}");
        let e = import_alertmanager("", "am.yml", "prod").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn mistakes_in_the_file_are_named_by_key() {
        let e = import_alertmanager("receivers: [{name: a}]\n", "am.yml", "prod").unwrap_err();
        assert!(e.message.starts_with("route:"), "{e}");
        let e = import_alertmanager(
            "route: {receiver: a, routes: [{receiver: nope}]}\nreceivers: [{name: a}]\n",
            "am.yml",
            "prod",
        )
        .unwrap_err();
        assert!(
            e.message.contains("route.routes[0].receiver") && e.message.contains("nope"),
            "{e}"
        );
        let e = import_alertmanager(
            "route: {receiver: a, group_wait: soon}\nreceivers: [{name: a}]\n",
            "am.yml",
            "prod",
        )
        .unwrap_err();
        assert!(e.message.contains("route.group_wait"), "{e}");
        let e = import_alertmanager(
            "route: {receiver: a, matchers: ['severity']}\nreceivers: [{name: a}]\n",
            "am.yml",
            "prod",
        )
        .unwrap_err();
        assert!(e.message.contains("route.matchers[0]"), "{e}");
    }

    #[test]
    fn durations_and_matchers_convert_exactly() {
        assert_eq!(duration("1h30m", "x").unwrap(), "90m");
        assert_eq!(duration("2w", "x").unwrap(), "14d");
        assert_eq!(duration("1y", "x").unwrap(), "365d");
        assert_eq!(duration("1500ms", "x").unwrap(), "1500ms");
        assert_eq!(duration("0", "x").unwrap(), "0s");
        assert_eq!(duration("0m", "x").unwrap(), "0s");
        assert!(duration("5 minutes", "x").is_err());
        for (am, steward) in [
            (r#"instance=~"db-\d+""#, r#"instance=~"db-\\d+""#),
            (r#"msg="say \"hi\"""#, r#"msg="say \"hi\"""#),
            ("severity = critical", r#"severity="critical""#),
            (r#"a!~"x|y""#, r#"a!~"x|y""#),
        ] {
            let got = am_matchers(am, "m").unwrap();
            assert_eq!(got, [steward], "{am}");
        }
        let m = Matcher::parse(&am_matchers(r#"instance=~"db-\d+""#, "m").unwrap()[0]).unwrap();
        assert!(m.matches(&labels(&[("instance", "db-42")])));
        assert!(!m.matches(&labels(&[("instance", "db-d")])));
    }
}
