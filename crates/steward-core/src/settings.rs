//! Reading a settings table (an alert channel's, a health check's) key by key: typed getters
//! whose errors name the key and say what it takes, secret references checked for shape (and
//! never quoted back), and [`Settings::finish`], which rejects every key nobody read, listing
//! the keys the kind takes.
//!
//! The reader is generic over its caller's error type `E` ([`ConfigError`]): a channel's
//! `ChannelConfigError`, a probe's `ProbeConfigError`. Every getter returns `E`, so callers
//! use `?` and [`Settings::error`] for their own checks without mapping anything.
//!
//! ```
//! use steward_core::settings::{ConfigError, Settings, SettingsError};
//!
//! #[derive(Debug)]
//! struct MyError(String);
//! impl From<SettingsError> for MyError {
//!     fn from(e: SettingsError) -> Self {
//!         MyError(e.to_string())
//!     }
//! }
//! impl ConfigError for MyError {
//!     const NOUN: &'static str = "widget";
//! }
//!
//! let value = serde_json::json!({"host": "db1", "port": 5432, "colour": "red"});
//! let mut s = Settings::<MyError>::new("main", "pg", &value).unwrap();
//! assert_eq!(s.req_str("host", "host, the server's name").unwrap(), "db1");
//! assert_eq!(s.opt_port("port").unwrap(), Some(5432));
//! let e = s.finish().unwrap_err();
//! assert!(e.0.contains("colour: unknown setting for a pg widget; it takes: host, port"));
//! ```

use std::{collections::BTreeMap, collections::BTreeSet, fmt, marker::PhantomData, time::Duration};

use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// Resolves the `ENV/PATH#FIELD` references that settings hold (checked for shape by
/// [`Settings::opt_secret_ref`]) to the secret's value, at the moment it is needed. Alert
/// channels and health-check probes take one; the secrets engine is the implementation.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    /// The field's value; the error says which reference failed and why, without any value.
    async fn resolve(&self, reference: &str) -> Result<Zeroizing<String>, String>;
}

/// A setting that does not fit: `key` is the setting's name as written in the config, `owner`
/// the name of what is configured (a channel's or check's name; may be empty), `kind` its type
/// (`slack`, `http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub owner: String,
    pub kind: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.owner.is_empty() {
            write!(f, "{}: {}: {}", self.kind, self.key, self.message)
        } else {
            write!(
                f,
                "{} {:?}: {}: {}",
                self.kind, self.owner, self.key, self.message
            )
        }
    }
}

impl std::error::Error for SettingsError {}

/// The caller's configuration error type.
pub trait ConfigError: From<SettingsError> {
    /// What the settings configure, as written in messages: `"channel"` gives
    /// "missing; a slack channel needs ...".
    const NOUN: &'static str;
}

/// One settings table, read key by key. Every key read is remembered; [`Settings::finish`]
/// rejects whatever was not read. `null` counts as absent.
pub struct Settings<E> {
    owner: String,
    kind: String,
    map: Map<String, Value>,
    known: BTreeSet<&'static str>,
    _error: PhantomData<fn() -> E>,
}

/// Shows the keys, never the values (someone may have pasted a credential into a setting).
impl<E> fmt::Debug for Settings<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("owner", &self.owner)
            .field("kind", &self.kind)
            .field("unread_keys", &self.map.keys().collect::<Vec<_>>())
            .field("read_keys", &self.known)
            .finish()
    }
}

impl<E: ConfigError> Settings<E> {
    /// `value` is the table minus the keys the caller owns (`name`, `type`, ...): a JSON object
    /// (or null, read as an empty one). `owner` names what is configured (may be empty),
    /// `kind` is its type.
    pub fn new(owner: &str, kind: &str, value: &Value) -> Result<Self, E> {
        let map = match value {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            _ => {
                return Err(E::from(SettingsError {
                    owner: owner.to_string(),
                    kind: kind.to_string(),
                    key: "settings".into(),
                    message: format!(
                        "the settings of a {kind} {noun} must be a table of keys; see the `{kind}` {noun} docs",
                        noun = E::NOUN
                    ),
                }))
            }
        };
        Ok(Settings {
            owner: owner.to_string(),
            kind: kind.to_string(),
            map,
            known: BTreeSet::new(),
            _error: PhantomData,
        })
    }

    /// The name of what is configured, as given to [`Settings::new`].
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The kind, as given to [`Settings::new`].
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// An error about `key`, for the caller's own checks.
    pub fn error(&self, key: &str, message: impl Into<String>) -> E {
        E::from(SettingsError {
            owner: self.owner.clone(),
            kind: self.kind.clone(),
            key: key.to_string(),
            message: message.into(),
        })
    }

    /// "missing; a `kind` `noun` needs `what`".
    pub fn missing(&self, key: &str, what: &str) -> E {
        self.error(
            key,
            format!("missing; a {} {} needs {what}", self.kind, E::NOUN),
        )
    }

    /// The raw value of `key` (absent or null: `None`), for shapes the typed getters do not
    /// cover. The key counts as read.
    pub fn opt_raw(&mut self, key: &'static str) -> Option<Value> {
        self.known.insert(key);
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// An optional string; an empty (or all white space) one is an error.
    pub fn opt_str(&mut self, key: &'static str) -> Result<Option<String>, E> {
        match self.opt_raw(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(self.error(key, "is empty; remove the key or give it a value"))
            }
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.error(key, format!("must be a string, not {}", type_name(&other))))
            }
        }
    }

    /// A required string; `what` says what it is for the error ("url, the address to check").
    pub fn req_str(&mut self, key: &'static str, what: &str) -> Result<String, E> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key, what))
    }

    /// An optional secret reference (`ENV/PATH#FIELD` or `ENV/PATH`), checked for shape only:
    /// the caller resolves it when it needs the value. The value is never quoted back: someone
    /// may have pasted the credential itself.
    pub fn opt_secret_ref(&mut self, key: &'static str) -> Result<Option<String>, E> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(None);
        };
        let s = s.trim().to_string();
        if !is_secret_ref(&s) {
            return Err(self.error(
                key,
                "is not a secret reference; write ENV/PATH#FIELD (e.g. \"prod/alerting/slack#url\") \
                 and keep the credential itself in that Steward secret",
            ));
        }
        Ok(Some(s))
    }

    /// A required secret reference.
    pub fn req_secret_ref(&mut self, key: &'static str, what: &str) -> Result<String, E> {
        self.opt_secret_ref(key)?
            .ok_or_else(|| self.missing(key, what))
    }

    /// An optional humantime duration (`"10s"`, `"1m 30s"`), not zero.
    pub fn opt_duration(&mut self, key: &'static str) -> Result<Option<Duration>, E> {
        match self.opt_raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => match humantime::parse_duration(s.trim()) {
                Ok(d) if d.is_zero() => {
                    Err(self.error(key, "must be more than zero; write e.g. \"10s\""))
                }
                Ok(d) => Ok(Some(d)),
                Err(e) => Err(self.error(
                    key,
                    format!("{s:?} is not a duration ({e}); write e.g. \"10s\" or \"1m\""),
                )),
            },
            Some(other) => Err(self.error(
                key,
                format!(
                    "must be a duration string such as \"10s\", not {}",
                    type_name(&other)
                ),
            )),
        }
    }

    /// A humantime duration with a default.
    pub fn duration(&mut self, key: &'static str, default: Duration) -> Result<Duration, E> {
        Ok(self.opt_duration(key)?.unwrap_or(default))
    }

    /// A boolean with a default.
    pub fn bool(&mut self, key: &'static str, default: bool) -> Result<bool, E> {
        match self.opt_raw(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(self.error(
                key,
                format!("must be true or false, not {}", type_name(&other)),
            )),
        }
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&mut self, key: &'static str) -> Result<Option<u64>, E> {
        match self.opt_raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                self.error(key, format!("must be a whole number of 0 or more, not {n}"))
            }),
            Some(other) => Err(self.error(
                key,
                format!("must be a whole number, not {}", type_name(&other)),
            )),
        }
    }

    /// A non-negative integer with a default.
    pub fn u64(&mut self, key: &'static str, default: u64) -> Result<u64, E> {
        Ok(self.opt_u64(key)?.unwrap_or(default))
    }

    /// An optional TCP/UDP port number (1 to 65535).
    pub fn opt_port(&mut self, key: &'static str) -> Result<Option<u16>, E> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(n) => u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .map(Some)
                .ok_or_else(|| self.error(key, format!("{n} is not a port number (1 to 65535)"))),
        }
    }

    /// A list of non-empty strings (a single string is read as a list of one).
    pub fn opt_str_list(&mut self, key: &'static str) -> Result<Option<Vec<String>>, E> {
        match self.opt_raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s])),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) if !s.trim().is_empty() => out.push(s),
                        other => {
                            return Err(self.error(
                                key,
                                format!(
                                    "item {} must be a non-empty string, not {}",
                                    i + 1,
                                    type_name(&other)
                                ),
                            ))
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(other) => Err(self.error(
                key,
                format!("must be a list of strings, not {}", type_name(&other)),
            )),
        }
    }

    /// A table of strings (`{ Accept = "application/json" }`), in key order. Values must be
    /// strings (may be empty); numbers and booleans are refused with a hint to quote them.
    pub fn opt_str_map(
        &mut self,
        key: &'static str,
    ) -> Result<Option<BTreeMap<String, String>>, E> {
        match self.opt_raw(key) {
            None => Ok(None),
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k, s);
                        }
                        other => {
                            return Err(self.error(
                                key,
                                format!(
                                    "{k:?} must be a string, not {}; write the value in quotes",
                                    type_name(&other)
                                ),
                            ))
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(other) => Err(self.error(
                key,
                format!(
                    "must be a table of strings (e.g. {{ name = \"value\" }}), not {}",
                    type_name(&other)
                ),
            )),
        }
    }

    /// Rejects every key that was not read, naming it and listing the keys that were.
    pub fn finish(self) -> Result<(), E> {
        if let Some(key) = self.map.keys().next() {
            let known: Vec<&str> = self.known.iter().copied().collect();
            let takes = if known.is_empty() {
                "it takes no settings".to_string()
            } else {
                format!("it takes: {}", known.join(", "))
            };
            return Err(self.error(
                key,
                format!("unknown setting for a {} {}; {takes}", self.kind, E::NOUN),
            ));
        }
        Ok(())
    }
}

/// Whether `s` has the shape of a secret reference: `ENV/PATH` with an optional `#FIELD` (a
/// non-empty field without `/` or `#`).
pub fn is_secret_ref(s: &str) -> bool {
    let (target, field) = match s.split_once('#') {
        Some((t, f)) => (t, Some(f)),
        None => (s, None),
    };
    let field_ok = field.is_none_or(|f| !f.is_empty() && !f.contains(['/', '#']));
    field_ok && crate::names::parse_reference(target).is_ok()
}

/// "a string", "a list", ... for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug)]
    struct TestError(SettingsError);
    impl From<SettingsError> for TestError {
        fn from(e: SettingsError) -> Self {
            TestError(e)
        }
    }
    impl ConfigError for TestError {
        const NOUN: &'static str = "thing";
    }

    fn settings(v: serde_json::Value) -> Settings<TestError> {
        match Settings::new("t1", "kind1", &v) {
            Ok(s) => s,
            Err(e) => panic!("{}", e.0),
        }
    }

    #[test]
    fn typed_getters_and_defaults() {
        let mut s = settings(json!({
            "a": "x", "n": 7, "b": true, "d": "1m 30s", "l": ["p", "q"], "one": "r",
            "m": {"K": "v", "E": ""}, "p": 443, "nothing": null
        }));
        assert_eq!(s.opt_str("a").unwrap().as_deref(), Some("x"));
        assert_eq!(s.u64("n", 1).unwrap(), 7);
        assert_eq!(s.u64("n2", 1).unwrap(), 1);
        assert!(s.bool("b", false).unwrap());
        assert_eq!(
            s.duration("d", Duration::ZERO).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(s.opt_str_list("l").unwrap().unwrap(), vec!["p", "q"]);
        assert_eq!(s.opt_str_list("one").unwrap().unwrap(), vec!["r"]);
        let m = s.opt_str_map("m").unwrap().unwrap();
        assert_eq!(m.get("K").map(String::as_str), Some("v"));
        assert_eq!(m.get("E").map(String::as_str), Some(""));
        assert_eq!(s.opt_port("p").unwrap(), Some(443));
        assert_eq!(s.opt_str("nothing").unwrap(), None);
        s.finish().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let mut s = settings(json!({"a": 1, "p": 70000, "d": "soon", "m": {"x": 1}, "e": " "}));
        let e = s.opt_str("a").unwrap_err().0;
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("a", "must be a string, not a number")
        );
        let e = s.opt_port("p").unwrap_err().0;
        assert!(e.message.contains("not a port number"), "{e}");
        let e = s.opt_duration("d").unwrap_err().0;
        assert!(e.message.contains("write e.g."), "{e}");
        let e = s.opt_str_map("m").unwrap_err().0;
        assert!(e.message.contains("in quotes"), "{e}");
        let e = s.opt_str("e").unwrap_err().0;
        assert!(e.message.contains("is empty"), "{e}");
        let e = s.req_str("host", "host, the server").unwrap_err().0;
        assert_eq!(e.message, "missing; a kind1 thing needs host, the server");
        assert_eq!(
            e.to_string(),
            "kind1 \"t1\": host: missing; a kind1 thing needs host, the server"
        );
    }

    #[test]
    fn finish_lists_known_keys() {
        let mut s = settings(json!({"x": 1, "y": 2}));
        let _ = s.opt_raw("x");
        let e = s.finish().unwrap_err().0;
        assert_eq!(e.key, "y");
        assert_eq!(e.message, "unknown setting for a kind1 thing; it takes: x");
        let s = settings(json!({"y": 2}));
        let e = s.finish().unwrap_err().0;
        assert!(e.message.ends_with("it takes no settings"), "{e}");
    }

    #[test]
    fn not_a_table() {
        let e = Settings::<TestError>::new("", "k", &json!([1]))
            .unwrap_err()
            .0;
        assert_eq!(e.key, "settings");
        assert_eq!(e.to_string(), "k: settings: the settings of a k thing must be a table of keys; see the `k` thing docs");
    }

    #[test]
    fn secret_refs_are_checked_and_never_quoted() {
        let mut s = settings(
            json!({"ok": " prod/db/main#password ", "bad": "hunter2-sekrit", "nofield": "prod/x#"}),
        );
        assert_eq!(
            s.opt_secret_ref("ok").unwrap().as_deref(),
            Some("prod/db/main#password")
        );
        let e = s.opt_secret_ref("bad").unwrap_err().0;
        assert!(!e.to_string().contains("sekrit"), "{e}");
        assert!(s.opt_secret_ref("nofield").is_err());
        assert!(is_secret_ref("prod/a/b"));
        assert!(!is_secret_ref("https://hooks.example.com/x"));
    }
}
