//! The account logic the database rotators (`postgres`, `mysql`) share: the `single` and
//! `alternating` strategies, which user a step may touch, and what discard and revoke change.

use serde::Deserialize;
use serde_json::Value;

use crate::{support, Credential, RotatorError};

/// How a database rotator keeps applications connected while it rotates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// One user; each rotation replaces its password. Connections already open stay open, new
    /// logins with the previous password fail as soon as `set` runs.
    #[default]
    Single,
    /// Two users with the same privileges, used in turn: a rotation sets a fresh password on
    /// the user that is not current, so the current credential keeps working through the
    /// grace period; `revoke` then scrambles the previous user's password.
    Alternating,
}

/// The users a rotation may touch, from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accounts {
    Single(String),
    Alternating([String; 2]),
}

impl Accounts {
    /// Checks the `strategy`, `username` and `usernames` settings together.
    pub(crate) fn new(
        kind: &str,
        strategy: Strategy,
        username: Option<&str>,
        usernames: Option<&[String]>,
    ) -> Result<Self, RotatorError> {
        let bad = |m: String| Err(RotatorError::invalid(format!("{kind} rotator: {m}")));
        match strategy {
            Strategy::Single => {
                if usernames.is_some() {
                    return bad(
                        "`usernames` is for strategy \"alternating\"; with strategy \"single\" \
                         set `username` only"
                            .into(),
                    );
                }
                match username {
                    Some(u) => Ok(Self::Single(check_name(kind, u)?)),
                    None => bad(
                        "strategy \"single\" needs `username`: the user whose password rotates"
                            .into(),
                    ),
                }
            }
            Strategy::Alternating => {
                if username.is_some() {
                    return bad(
                        "`username` is for strategy \"single\"; with strategy \"alternating\" \
                         set `usernames` to the two users used in turn"
                            .into(),
                    );
                }
                match usernames {
                    Some([a, b]) if a != b => Ok(Self::Alternating([
                        check_name(kind, a)?,
                        check_name(kind, b)?,
                    ])),
                    Some([_, _]) => bad(
                        "the two `usernames` are the same; name two distinct users with the \
                         same privileges"
                            .into(),
                    ),
                    _ => bad(
                        "strategy \"alternating\" needs `usernames`: exactly two distinct users \
                         with the same privileges, e.g. [\"app_a\", \"app_b\"]"
                            .into(),
                    ),
                }
            }
        }
    }

    /// The user the next credential belongs to: the single user, or the alternating user that
    /// is not the current credential's (the first one when there is no current credential).
    pub(crate) fn next_user(&self, current: Option<&Credential>) -> &str {
        match self {
            Self::Single(u) => u,
            Self::Alternating([a, b]) => {
                match current
                    .and_then(|c| c.0.get("username"))
                    .and_then(Value::as_str)
                {
                    Some(cur) if cur == a => b,
                    _ => a,
                }
            }
        }
    }

    /// Refuses a user the settings do not name: a stored credential never steers the rotator
    /// to another role (such as a superuser).
    pub(crate) fn check_configured(&self, kind: &str, user: &str) -> Result<(), RotatorError> {
        let ok = match self {
            Self::Single(u) => u == user,
            Self::Alternating(pair) => pair.iter().any(|u| u == user),
        };
        if ok {
            Ok(())
        } else {
            Err(RotatorError::invalid(format!(
                "{kind} rotator: the credential's user {user:?} is not one the settings name \
                 ({}); the rotator only changes those users' passwords. Fix the stored secret, \
                 or retire that user's password by hand",
                self.names()
            )))
        }
    }

    fn names(&self) -> String {
        match self {
            Self::Single(u) => format!("{u:?}"),
            Self::Alternating([a, b]) => format!("{a:?}, {b:?}"),
        }
    }
}

fn check_name(kind: &str, u: &str) -> Result<String, RotatorError> {
    if u.is_empty() || u.contains('\0') {
        return Err(RotatorError::invalid(format!(
            "{kind} rotator: user names must be non-empty and must not contain NUL"
        )));
    }
    Ok(u.to_string())
}

/// A password change a step makes in the target.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PasswordChange {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The pending credential `create` returns: the current one's fields, then the user, a fresh
/// password and the connection fields from the settings.
pub(crate) fn pending(
    current: Option<&Credential>,
    user: &str,
    password_length: usize,
    connection: &[(&str, Value)],
) -> Credential {
    let mut c = current
        .cloned()
        .unwrap_or_default()
        .with("username", user)
        .with("password", support::generate_password(password_length));
    for (k, v) in connection {
        c = c.with(k, v.clone());
    }
    c
}

/// Undoing `set`: the pending user gets the current password back if the current credential
/// is the same user (strategy single), otherwise a fresh password nobody knows.
pub(crate) fn discard_change(
    kind: &str,
    accounts: &Accounts,
    current: Option<&Credential>,
    pending: &Credential,
    password_length: usize,
) -> Result<PasswordChange, RotatorError> {
    let user = pending.str("username")?;
    accounts.check_configured(kind, user)?;
    let password = match current {
        Some(cur) if cur.str("username").ok() == Some(user) => cur.str("password")?.to_string(),
        _ => support::generate_password(password_length),
    };
    Ok(PasswordChange {
        user: user.to_string(),
        password,
    })
}

/// Retiring `old`: nothing when it is the current credential's user (its password was already
/// replaced by `set`), otherwise its user gets a fresh password nobody knows.
pub(crate) fn revoke_change(
    kind: &str,
    accounts: &Accounts,
    current: Option<&Credential>,
    old: &Credential,
    password_length: usize,
) -> Result<Option<PasswordChange>, RotatorError> {
    let user = old.str("username")?;
    if let Some(cur) = current {
        if cur.str("username")? == user {
            return Ok(None);
        }
    }
    accounts.check_configured(kind, user)?;
    Ok(Some(PasswordChange {
        user: user.to_string(),
        password: support::generate_password(password_length),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cred(user: &str, pw: &str) -> Credential {
        Credential::from_value(json!({"username": user, "password": pw}))
    }

    #[test]
    fn settings_combinations_are_checked() {
        let pair = vec!["a".to_string(), "b".to_string()];
        assert!(Accounts::new("t", Strategy::Single, Some("app"), None).is_ok());
        let e = Accounts::new("t", Strategy::Single, None, None).unwrap_err();
        assert!(e.message.contains("needs `username`"), "{e}");
        let e = Accounts::new("t", Strategy::Single, Some("a"), Some(&pair)).unwrap_err();
        assert!(e.message.contains("`usernames` is for"), "{e}");
        let e = Accounts::new("t", Strategy::Alternating, None, Some(&pair[..1])).unwrap_err();
        assert!(e.message.contains("exactly two"), "{e}");
        let same = vec!["a".to_string(), "a".to_string()];
        let e = Accounts::new("t", Strategy::Alternating, None, Some(&same)).unwrap_err();
        assert!(e.message.contains("the same"), "{e}");
    }

    #[test]
    fn alternating_picks_the_user_that_is_not_current() {
        let pair = vec!["a".to_string(), "b".to_string()];
        let acc = Accounts::new("t", Strategy::Alternating, None, Some(&pair)).unwrap();
        assert_eq!(acc.next_user(None), "a");
        assert_eq!(acc.next_user(Some(&cred("a", "x"))), "b");
        assert_eq!(acc.next_user(Some(&cred("b", "x"))), "a");
        assert!(acc.check_configured("t", "postgres").is_err());
    }

    #[test]
    fn discard_and_revoke_plans() {
        let single = Accounts::Single("app".into());
        let cur = cred("app", "current-pw");
        let d = discard_change("t", &single, Some(&cur), &cred("app", "new"), 20).unwrap();
        assert_eq!(d.password, "current-pw");
        assert!(
            revoke_change("t", &single, Some(&cur), &cred("app", "old"), 20)
                .unwrap()
                .is_none()
        );

        let alt = Accounts::Alternating(["a".into(), "b".into()]);
        let cur = cred("a", "current-pw");
        let d = discard_change("t", &alt, Some(&cur), &cred("b", "new"), 20).unwrap();
        assert_eq!(d.user, "b");
        assert!(d.password != "new" && d.password.len() == 20);
        let r = revoke_change("t", &alt, Some(&cur), &cred("b", "old"), 20)
            .unwrap()
            .unwrap();
        assert_eq!(r.user, "b");
        assert!(format!("{r:?}").contains("\"b\"") && !format!("{r:?}").contains(&r.password));
    }
}
