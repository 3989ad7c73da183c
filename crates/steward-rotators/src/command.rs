//! `command`: rotates a credential through an executable the operator provides, for targets
//! no built-in rotator knows. The program does the work; Steward runs it once per step and
//! stores what it prints on create.
//!
//! # Settings
//!
//! ```json
//! {"command": ["/usr/local/lib/steward/rotate-acme", "--account", "prod"],
//!  "timeout": "30s", "env": {"PATH": "/usr/bin:/bin", "ACME_API": "https://api.acme.test"}}
//! ```
//!
//! `command` is the program (an absolute path) and its arguments; `timeout` bounds each run
//! (humantime, default `30s`); `env` is the program's whole environment: it does not inherit
//! Steward's (which may hold secrets), so set `PATH` there if the program needs it. `admin`
//! (the secret holding the admin credential) is resolved by the engine and ignored here.
//!
//! # Protocol
//!
//! Each step runs the program once and writes one JSON object and a newline to its stdin,
//! then closes it:
//!
//! ```json
//! {"action": "create", "env": "prod", "path": "acme/key", "attempt_id": "...",
//!  "credential": null, "current": {...}, "admin": {...}}
//! ```
//!
//! `action` is `create`, `test`, `discard` or `revoke`; `credential` is the pending credential
//! (test, discard) or the old one (revoke), null for create; `current` and `admin` are the
//! current and admin credentials, or null. Secrets travel only on stdin, never in argv or the
//! environment. `attempt_id` is an idempotency key: the engine repeats a step after a crash,
//! and a repeated `create` should answer the same credential.
//!
//! Exit code 0 is success; for `create`, stdout must be `{"credential": {...}}`. Any other
//! exit is Rejected with the code and the end of stderr (credential values blanked out). A run
//! longer than `timeout` is killed, with its whole process group, and reported Unavailable.
//!
//! # Steps and zero downtime
//!
//! - `create`: the program issues a new credential, valid at once alongside the current one.
//! - `set`: does nothing (the program activated the credential on create); nothing runs.
//! - `test`: the program checks the pending credential works.
//! - `discard`: the program deletes the pending credential.
//! - `revoke`: the program deletes the old credential after the grace period.

use std::{
    collections::BTreeMap, os::unix::process::ExitStatusExt, process::Stdio, time::Duration,
};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::{support, Credential, Rotator, RotatorError, StepContext};

const KIND: &str = "command";
/// The most stdout kept (a credential is small).
const MAX_STDOUT: usize = 1 << 20;
/// How much of the end of stderr an error message quotes.
const STDERR_TAIL: usize = 500;

/// The `command` rotator.
#[derive(Debug, Clone, Copy)]
pub struct CommandRotator;

/// Settings of the `command` rotator (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSettings {
    pub command: Vec<String>,
    #[serde(default = "default_timeout", deserialize_with = "support::duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The secret holding the admin credential; the engine resolves it.
    pub admin: Option<Value>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl CommandSettings {
    /// Parses and checks the settings.
    pub fn parse(v: &Value) -> Result<Self, RotatorError> {
        let s: Self = support::parse_settings(KIND, v)?;
        let Some(program) = s.command.first() else {
            return Err(RotatorError::invalid(
                "command rotator: `command` is empty; give the program's absolute path and its \
                 arguments, e.g. [\"/usr/local/bin/rotate\", \"--prod\"]",
            ));
        };
        if !program.starts_with('/') {
            return Err(RotatorError::invalid(format!(
                "command rotator: the program {program:?} is not an absolute path; write its \
                 full path (the environment is not searched)"
            )));
        }
        if s.command.iter().any(|a| a.contains('\0')) {
            return Err(RotatorError::invalid(
                "command rotator: an argument of `command` contains NUL",
            ));
        }
        for (k, v) in &s.env {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err(RotatorError::invalid(format!(
                    "command rotator: `env` entry {k:?} is not a valid variable: names must be \
                     non-empty without '=', and neither may contain NUL"
                )));
            }
        }
        Ok(s)
    }
}

/// Reads all of `r`, keeping the first `max` bytes; the flag says whether more came.
async fn read_head(mut r: impl AsyncRead + Unpin, max: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut over = false;
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
        over |= n > room;
    }
    (out, over)
}

/// Reads all of `r`, keeping the last `max` bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 2 * max {
            out.drain(..out.len() - max);
        }
    }
    let cut = out.len().saturating_sub(max);
    out.drain(..cut);
    out
}

/// Runs the program for one step and returns its stdout on exit code 0.
async fn run(
    cx: &StepContext<'_>,
    action: &str,
    credential: Option<&Credential>,
) -> Result<Vec<u8>, RotatorError> {
    let s = CommandSettings::parse(cx.settings)?;
    let mut body = support::request_body(cx, action, credential);
    body.insert(
        "admin".into(),
        cx.admin.map_or(Value::Null, |a| Value::Object(a.0.clone())),
    );
    let mut input = serde_json::to_vec(&body).map_err(|e| {
        RotatorError::invalid(format!("command rotator: encoding the request: {e}"))
    })?;
    input.push(b'\n');
    let secrets = support::secret_values(&[cx.current, credential, cx.admin]);
    let program = &s.command[0];

    let mut child = tokio::process::Command::new(program)
        .args(&s.command[1..])
        .env_clear()
        .envs(&s.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let m = format!("command rotator: cannot run {program:?}: {e}");
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    RotatorError::invalid(format!(
                        "{m}; check `command` (the file must exist and be executable)"
                    ))
                }
                _ => RotatorError::unavailable(m),
            }
        })?;
    let pid = child.id();
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let work = async {
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A program that exits without reading its input is not an error here; its
                // exit code says how it went.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let out = async move {
            match stdout {
                Some(o) => read_head(o, MAX_STDOUT).await,
                None => (Vec::new(), false),
            }
        };
        let err = async move {
            match stderr {
                Some(e) => read_tail(e, STDERR_TAIL).await,
                None => Vec::new(),
            }
        };
        let ((), out, err) = tokio::join!(write, out, err);
        (child.wait().await, out, err)
    };
    let (status, (stdout, over), stderr) = match tokio::time::timeout(s.timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            return Err(RotatorError::unavailable(format!(
                "command rotator: {program:?} did not finish {action} within {} and was killed; \
                 raise `timeout` or find what it waits for",
                humantime::format_duration(s.timeout)
            )));
        }
    };
    let status = status.map_err(|e| {
        RotatorError::unavailable(format!("command rotator: waiting for {program:?}: {e}"))
    })?;
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => "failed".to_string(),
        };
        let tail = support::redact(&support::tail_text(&stderr, STDERR_TAIL), &secrets);
        return Err(RotatorError::rejected(format!(
            "command rotator: {program:?} {how} on {action}{}",
            if tail.is_empty() {
                "; it wrote nothing to stderr".to_string()
            } else {
                format!("; stderr ends: {tail}")
            }
        )));
    }
    if over {
        return Err(RotatorError::rejected(format!(
            "command rotator: {program:?} wrote more than {MAX_STDOUT} bytes on {action}; a \
             credential should be small"
        )));
    }
    Ok(stdout)
}

#[async_trait]
impl Rotator for CommandRotator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check_settings(&self, settings: &Value) -> Result<(), RotatorError> {
        CommandSettings::parse(settings).map(drop)
    }

    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError> {
        let out = run(cx, "create", None).await?;
        support::issued_credential(KIND, "the program's output for create", &out)
    }

    /// Nothing to do: the program activated the credential when it issued it.
    async fn set(&self, _: &StepContext<'_>, _: &Credential) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn test(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        run(cx, "test", Some(pending)).await.map(drop)
    }

    async fn discard(
        &self,
        cx: &StepContext<'_>,
        pending: &Credential,
    ) -> Result<(), RotatorError> {
        run(cx, "discard", Some(pending)).await.map(drop)
    }

    async fn revoke(&self, cx: &StepContext<'_>, old: &Credential) -> Result<(), RotatorError> {
        run(cx, "revoke", Some(old)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_need_an_absolute_program() {
        let s = CommandSettings::parse(&json!({"command": ["/bin/true"]})).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(30));
        let e = CommandSettings::parse(&json!({"command": []})).unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let e = CommandSettings::parse(&json!({"command": ["rotate.sh"]})).unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
        let e =
            CommandSettings::parse(&json!({"command": ["/x"], "env": {"A=B": "c"}})).unwrap_err();
        assert!(e.message.contains("A=B"), "{e}");
    }

    #[tokio::test]
    async fn stderr_tail_keeps_the_end() {
        let data = vec![b'x'; 5000]
            .into_iter()
            .chain(b"THE END".iter().copied())
            .collect::<Vec<_>>();
        let tail = read_tail(&data[..], 100).await;
        assert_eq!(tail.len(), 100);
        assert!(tail.ends_with(b"THE END"));
        let (head, over) = read_head(&data[..], 10).await;
        assert_eq!((head.len(), over), (10, true));
    }
}
