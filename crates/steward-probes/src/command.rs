//! `command`: runs a program (no shell) and reports `exit_code` (128 + the signal number when
//! a signal ended it), `stdout` and `stderr` (each cut at 64 KiB; the rest is read and
//! dropped so the program never blocks on a full pipe) and `response_time`.
//!
//! Settings: `argv` (a list: the program, then its arguments; required), `env` (a table of
//! variables), `workdir`. The program gets a clean environment: `PATH`, `HOME` and `LANG`
//! from Steward's own (so its secrets and settings do not leak into checks), then `env`.
//! Its standard input is empty.
//!
//! The program runs in a process group of its own. On timeout the whole group is killed
//! (SIGKILL) and the run is an error; when the program exits, whatever it left running in its
//! group is killed too, so a check never leaves processes behind.

use std::{
    collections::BTreeMap,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use tokio::{io::AsyncRead, io::AsyncReadExt, process::Command, task::JoinHandle};

use crate::{
    support::{error_chain, failed, finish, show_duration, static_kind, text_of, Settings},
    Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[(
    "command",
    "runs a program without a shell (exit code, stdout, stderr, response time)",
)];

const FACTS: &[&str] = &["exit_code", "stdout", "stderr", "response_time"];

/// Most bytes of stdout and of stderr kept.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long output is still awaited after the program ended or was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    let kind = static_kind(kind, KINDS)?;
    let mut s = Settings::new("", kind, settings)?;
    let argv = match s.opt_raw("argv") {
        None => {
            return Err(s.missing(
                "argv",
                "argv, the program and its arguments as a list, e.g. [\"/usr/bin/test\", \"-f\", \"/run/app.pid\"]",
            ))
        }
        Some(serde_json::Value::String(line)) => {
            let words: Vec<String> = line.split_whitespace().map(|w| format!("{w:?}")).collect();
            return Err(s.error(
                "argv",
                format!(
                    "must be a list (commands run without a shell), e.g. argv = [{}]",
                    words.join(", ")
                ),
            ));
        }
        Some(serde_json::Value::Array(items)) => {
            let mut argv = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    serde_json::Value::String(a) if !a.contains('\0') => argv.push(a),
                    serde_json::Value::String(_) => {
                        return Err(s.error("argv", format!("item {} holds a NUL character", i + 1)))
                    }
                    other => {
                        return Err(s.error(
                            "argv",
                            format!(
                                "item {} must be a string, not {}",
                                i + 1,
                                steward_core::settings::type_name(&other)
                            ),
                        ))
                    }
                }
            }
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(s.error(
                    "argv",
                    "needs at least the program, e.g. [\"/usr/bin/test\", \"-f\", \"/run/app.pid\"]",
                ));
            }
            argv
        }
        Some(other) => {
            return Err(s.error(
                "argv",
                format!(
                    "must be a list of strings, not {}",
                    steward_core::settings::type_name(&other)
                ),
            ))
        }
    };
    let env = s.opt_str_map("env")?.unwrap_or_default();
    for name in env.keys() {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(s.error(
                "env",
                format!("{name:?} is not a variable name (no '=' or NUL)"),
            ));
        }
    }
    if env.values().any(|v| v.contains('\0')) {
        return Err(s.error("env", "a value holds a NUL character"));
    }
    let workdir = s.opt_str("workdir")?;
    s.finish()?;
    Ok(Arc::new(CommandProbe { argv, env, workdir }))
}

struct CommandProbe {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
}

#[async_trait]
impl Probe for CommandProbe {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn default_condition(&self) -> &'static str {
        "exit_code == 0"
    }

    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, _secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let program = &self.argv[0];
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..])
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .envs(
                ["HOME", "LANG"]
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let hint = match (e.kind(), &self.workdir) {
                    (std::io::ErrorKind::NotFound, Some(_)) => {
                        "check argv[0] (a full path, or a program on PATH) and that workdir exists"
                    }
                    (std::io::ErrorKind::NotFound, None) => {
                        "check argv[0]: give a full path or a program on PATH"
                    }
                    (std::io::ErrorKind::PermissionDenied, _) => {
                        "check that Steward's user may run it (and enter workdir)"
                    }
                    _ => "check argv and workdir",
                };
                return failed(
                    start,
                    Facts::new(),
                    format!("cannot start {program:?}: {}; {hint}", error_chain(&e)),
                );
            }
        };
        let group = KillGroup(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        );
        let stdout = child.stdout.take().map(|o| tokio::spawn(read_capped(o)));
        let stderr = child.stderr.take().map(|e| tokio::spawn(read_capped(e)));

        let waited = tokio::time::timeout(timeout, child.wait()).await;
        // Whatever is left in the group goes: after a timeout, the program itself; after an
        // exit, anything it started and left running (which would also hold the pipes open).
        drop(group);
        let mut facts = Facts::new();
        let error = match waited {
            Ok(Ok(status)) => {
                facts.insert("exit_code", Value::Number(f64::from(exit_code(status))));
                None
            }
            Ok(Err(e)) => Some(format!("cannot wait for {program:?}: {}", error_chain(&e))),
            Err(_) => {
                // Reap it; SIGKILL cannot be ignored, so this is quick.
                let _ = tokio::time::timeout(DRAIN_GRACE, child.wait()).await;
                Some(format!(
                    "{program:?} did not finish within {}; killed it and its process group (raise the check's timeout or look at why it hangs)",
                    show_duration(timeout)
                ))
            }
        };
        for (name, task) in [("stdout", stdout), ("stderr", stderr)] {
            if let Some(text) = collect(task).await {
                facts.insert(name, Value::String(text));
            }
        }
        finish(start, facts, Vec::new(), error)
    }
}

/// Kills a process group (SIGKILL) when dropped: at the end of a run, or when the run is
/// cancelled (`kill_on_drop` only reaches the program itself, not what it started).
struct KillGroup(Option<Pid>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // ESRCH (nothing left in the group) is the usual answer after a clean exit.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// The exit code, or 128 + the signal that ended the program (as shells report it).
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Reads everything, keeping the first [`OUTPUT_LIMIT`] bytes; says whether it cut.
async fn read_capped(mut pipe: impl AsyncRead + Unpin) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT - kept.len();
                if n > room {
                    cut = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, cut)
}

/// The captured text of one pipe, waiting at most [`DRAIN_GRACE`].
async fn collect(task: Option<JoinHandle<(Vec<u8>, bool)>>) -> Option<String> {
    let mut task = task?;
    match tokio::time::timeout(DRAIN_GRACE, &mut task).await {
        Ok(Ok((bytes, cut))) => Some(text_of(&bytes, cut)),
        Ok(Err(_)) => None,
        Err(_) => {
            task.abort();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings() {
        let e = build("command", &json!({"argv": "curl -f http://x"}))
            .err()
            .unwrap();
        assert!(e.message.contains(r#"["curl", "-f", "http://x"]"#), "{e}");
        assert_eq!(build("command", &json!({})).err().unwrap().key, "argv");
        assert_eq!(
            build("command", &json!({"argv": []})).err().unwrap().key,
            "argv"
        );
        let e = build("command", &json!({"argv": ["true"], "env": {"A=B": "x"}}))
            .err()
            .unwrap();
        assert_eq!(e.key, "env");
        assert!(build(
            "command",
            &json!({"argv": ["true"], "env": {"A": ""}, "workdir": "/"})
        )
        .is_ok());
    }
}
