//! `random`: passwords and tokens from a charset, a length and required character classes.
//! Nothing to apply in a target: set, test, discard and revoke do nothing.

use async_trait::async_trait;
use rand::{seq::SliceRandom, Rng};
use serde::Deserialize;
use serde_json::Value;

use crate::{Credential, Rotator, RotatorError, StepContext};

/// The `random` rotator.
#[derive(Debug, Clone, Copy)]
pub struct RandomRotator;

/// Settings for random values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomSettings {
    /// Field of the secret's object that receives the value.
    pub field: String,
    pub length: usize,
    /// `alnum`, `alnum_symbols`, `hex`, or a literal set of characters.
    pub charset: String,
    /// Classes that must each appear at least once: lower, upper, digit, symbol.
    pub require: Vec<String>,
}

impl Default for RandomSettings {
    fn default() -> Self {
        Self {
            field: "password".into(),
            length: 32,
            charset: "alnum".into(),
            require: vec![],
        }
    }
}

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGIT: &str = "0123456789";
const SYMBOL: &str = "!#%+-.:=@^_~";

impl RandomSettings {
    pub fn parse(v: &Value) -> Result<Self, RotatorError> {
        let s: Self = if v.is_null() {
            Self::default()
        } else {
            serde_json::from_value(v.clone())
                .map_err(|e| RotatorError::invalid(format!("random rotator settings: {e}")))?
        };
        if !(8..=1024).contains(&s.length) {
            return Err(RotatorError::invalid(format!(
                "random rotator: length {} is out of range; use 8 to 1024",
                s.length
            )));
        }
        let chars = s.chars();
        if chars.len() < 2 {
            return Err(RotatorError::invalid(
                "random rotator: the charset needs at least two distinct characters",
            ));
        }
        for class in &s.require {
            let set = class_set(class).ok_or_else(|| {
                RotatorError::invalid(format!(
                    "random rotator: unknown class {class:?} in require; use lower, upper, digit or symbol"
                ))
            })?;
            if !set.chars().any(|c| chars.contains(&c)) {
                return Err(RotatorError::invalid(format!(
                    "random rotator: the charset has no {class} character, but require names it"
                )));
            }
        }
        if s.require.len() > s.length {
            return Err(RotatorError::invalid(
                "random rotator: more required classes than characters",
            ));
        }
        Ok(s)
    }

    fn chars(&self) -> Vec<char> {
        let set = match self.charset.as_str() {
            "alnum" => format!("{LOWER}{UPPER}{DIGIT}"),
            "alnum_symbols" => format!("{LOWER}{UPPER}{DIGIT}{SYMBOL}"),
            "hex" => "0123456789abcdef".to_string(),
            other => other.to_string(),
        };
        let mut v: Vec<char> = set.chars().collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// A fresh value meeting the settings.
    pub fn generate(&self) -> String {
        let chars = self.chars();
        let mut rng = rand::rngs::OsRng;
        let mut out: Vec<char> = Vec::with_capacity(self.length);
        // One character from each required class, the rest from the whole set, then shuffle.
        for class in &self.require {
            let pool: Vec<char> = class_set(class)
                .unwrap_or_default()
                .chars()
                .filter(|c| chars.contains(c))
                .collect();
            out.push(pool[rng.gen_range(0..pool.len())]);
        }
        while out.len() < self.length {
            out.push(chars[rng.gen_range(0..chars.len())]);
        }
        out.shuffle(&mut rng);
        out.into_iter().collect()
    }
}

fn class_set(class: &str) -> Option<&'static str> {
    match class {
        "lower" => Some(LOWER),
        "upper" => Some(UPPER),
        "digit" => Some(DIGIT),
        "symbol" => Some(SYMBOL),
        _ => None,
    }
}

#[async_trait]
impl Rotator for RandomRotator {
    fn kind(&self) -> &'static str {
        "random"
    }

    fn check_settings(&self, settings: &Value) -> Result<(), RotatorError> {
        RandomSettings::parse(settings).map(drop)
    }

    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError> {
        let s = RandomSettings::parse(cx.settings)?;
        let base = cx.current.cloned().unwrap_or_default();
        Ok(base.with(&s.field, s.generate()))
    }

    async fn set(&self, _: &StepContext<'_>, _: &Credential) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn test(&self, _: &StepContext<'_>, _: &Credential) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn discard(&self, _: &StepContext<'_>, _: &Credential) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn revoke(&self, _: &StepContext<'_>, _: &Credential) -> Result<(), RotatorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_meet_length_charset_and_classes() {
        let s = RandomSettings::parse(&serde_json::json!({
            "length": 12, "charset": "alnum_symbols", "require": ["lower", "upper", "digit", "symbol"]
        }))
        .unwrap();
        for _ in 0..200 {
            let v = s.generate();
            assert_eq!(v.chars().count(), 12);
            assert!(v.chars().any(|c| c.is_ascii_lowercase()));
            assert!(v.chars().any(|c| c.is_ascii_uppercase()));
            assert!(v.chars().any(|c| c.is_ascii_digit()));
            assert!(v.chars().any(|c| SYMBOL.contains(c)));
        }
        assert_ne!(s.generate(), s.generate());
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let e = RandomSettings::parse(&serde_json::json!({"length": 4})).unwrap_err();
        assert!(e.message.contains("8 to 1024"), "{e}");
        let e = RandomSettings::parse(&serde_json::json!({"charset": "hex", "require": ["upper"]}))
            .unwrap_err();
        assert!(e.message.contains("no upper"), "{e}");
        let e = RandomSettings::parse(&serde_json::json!({"lenght": 10})).unwrap_err();
        assert!(e.message.contains("lenght"), "{e}");
    }
}
