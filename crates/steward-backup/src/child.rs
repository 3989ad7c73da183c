//! Dump and restore tools run as child processes.
//!
//! [`DumpReader`] is the stdout of a dump tool as a [`Read`]: at end of file it
//! waits for the tool and turns a non-zero exit into an [`io::Error`] carrying the
//! tool's stderr, so [`steward_repo::backup_stream`] fails and a failed dump never
//! becomes a snapshot. [`RestoreSink`] is the stdin of a restore tool. Both drain
//! stderr on a thread (so a chatty tool never blocks on a full pipe), keep at most
//! [`STDERR_KEEP`] bytes of it, and redact the secrets they were given from it.
//! Dropping either before the end kills and reaps the child. (Rust programs
//! ignore `SIGPIPE`, so a restore tool that exits early makes the next write
//! fail with `BrokenPipe`; the tool's own message is then what gets reported.)

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Bytes of a tool's stderr kept for error messages (the rest is read and dropped).
pub const STDERR_KEEP: usize = 16 * 1024;

/// Longest tool message put into an error, in characters.
pub const MESSAGE_MAX: usize = 2000;

/// Replaces every occurrence of each non-empty secret in `text` with `***`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s, "***");
    }
    out
}

/// Trims `text` and cuts it to at most `max` characters (marking the cut).
pub fn bounded(text: &str, max: usize) -> String {
    let t = text.trim();
    match t.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

/// `exit code 1`, `signal 9`...
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

fn drain_stderr(child: &mut Child) -> Option<JoinHandle<Vec<u8>>> {
    let mut stderr = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = STDERR_KEEP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        kept
    }))
}

/// Starts `cmd` with the given stdin/stdout and a piped stderr; `hint` says how
/// to fix a missing program.
/// Credentials Steward itself may hold in its environment (the repository password, its API
/// token, object-store keys). A dump or restore tool needs none of them, so no child inherits
/// them: the tool's own credentials are set explicitly on its command (PGPASSWORD, MYSQL_PWD).
pub const WITHHELD_ENV: &[&str] = &[
    "STEWARD_REPO_PASSWORD",
    "STEWARD_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

fn spawn(cmd: &mut Command, stdin: Stdio, stdout: Stdio, hint: &str) -> Result<Child> {
    for var in WITHHELD_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    cmd.spawn().map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        hint: hint.to_string(),
        source,
    })
}

/// Whether `e` says the program does not exist (to try a fallback name).
pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

fn program_name(program: &str) -> String {
    std::path::Path::new(program)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string())
}

struct Finished {
    status: io::Result<ExitStatus>,
    stderr: String,
}

fn finish(child: &mut Child, stderr: Option<JoinHandle<Vec<u8>>>, secrets: &[&str]) -> Finished {
    let status = child.wait();
    let raw = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    Finished {
        status,
        stderr: bounded(&redact(&text, secrets), MESSAGE_MAX),
    }
}

fn failure_message(program: &str, f: &Finished) -> Option<String> {
    match &f.status {
        Ok(s) if s.success() => None,
        Ok(s) => Some(if f.stderr.is_empty() {
            format!(
                "{program} exited with {} and printed nothing",
                describe_status(s)
            )
        } else {
            format!("{program} exited with {}: {}", describe_status(s), f.stderr)
        }),
        Err(e) => Some(format!("cannot wait for {program}: {e}")),
    }
}

/// The stdout of a running dump tool. See the module docs.
pub struct DumpReader {
    program: String,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
    secrets: Vec<Zeroizing<String>>,
    finished: bool,
    failure: Option<String>,
}

impl std::fmt::Debug for DumpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpReader")
            .field("program", &self.program)
            .field("pid", &self.child.id())
            .field("finished", &self.finished)
            .field("failure", &self.failure)
            .finish()
    }
}

impl DumpReader {
    /// Starts `cmd` with stdout piped to the returned reader. `secrets` are
    /// redacted from its stderr.
    pub fn spawn(cmd: &mut Command, secrets: Vec<Zeroizing<String>>, hint: &str) -> Result<Self> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = spawn(cmd, Stdio::null(), Stdio::piped(), hint)?;
        let stderr = drain_stderr(&mut child);
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Spawn {
                program,
                hint: hint.to_string(),
                source: io::Error::other("no stdout pipe"),
            });
        };
        Ok(DumpReader {
            program,
            child,
            stdout,
            stderr,
            secrets,
            finished: false,
            failure: None,
        })
    }

    /// The program's file name (e.g. `pg_dump`), for messages.
    pub fn program_name(&self) -> String {
        program_name(&self.program)
    }

    /// The tool's failure (exit status and redacted stderr), once it has failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn on_eof(&mut self) -> io::Result<()> {
        self.finished = true;
        let secrets: Vec<&str> = self.secrets.iter().map(|s| s.as_str()).collect();
        let f = finish(&mut self.child, self.stderr.take(), &secrets);
        self.failure = failure_message(&self.program, &f);
        match &self.failure {
            Some(m) => Err(io::Error::other(m.clone())),
            None => {
                if !f.stderr.is_empty() {
                    tracing::debug!(program = %self.program, stderr = %f.stderr, "dump tool finished with messages");
                }
                Ok(())
            }
        }
    }
}

impl Read for DumpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished {
            return match &self.failure {
                Some(m) => Err(io::Error::other(m.clone())),
                None => Ok(0),
            };
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.on_eof()?;
        }
        Ok(n)
    }
}

impl Drop for DumpReader {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if let Some(h) = self.stderr.take() {
                let _ = h.join();
            }
        }
    }
}

/// The stdin of a running restore tool. See the module docs.
pub struct RestoreSink {
    program: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    secrets: Vec<Zeroizing<String>>,
    finished: bool,
}

impl std::fmt::Debug for RestoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreSink")
            .field("program", &self.program)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl RestoreSink {
    /// Starts `cmd` with stdin piped from the returned writer and stdout dropped.
    pub fn spawn(cmd: &mut Command, secrets: Vec<Zeroizing<String>>, hint: &str) -> Result<Self> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = spawn(cmd, Stdio::piped(), Stdio::null(), hint)?;
        let stderr = drain_stderr(&mut child);
        let stdin = child.stdin.take();
        Ok(RestoreSink {
            program,
            child,
            stdin,
            stderr,
            secrets,
            finished: false,
        })
    }

    /// Closes stdin, waits for the tool and returns its failure (exit status and
    /// redacted stderr) if it failed.
    pub fn finish(mut self) -> std::result::Result<(), String> {
        self.stdin = None;
        self.finished = true;
        let secrets: Vec<&str> = self.secrets.iter().map(|s| s.as_str()).collect();
        let f = finish(&mut self.child, self.stderr.take(), &secrets);
        match failure_message(&self.program, &f) {
            Some(m) => Err(m),
            None => Ok(()),
        }
    }
}

impl Write for RestoreSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stdin {
            Some(s) => s.write(buf),
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stdin {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for RestoreSink {
    fn drop(&mut self) {
        if !self.finished {
            self.stdin = None;
            let _ = self.child.kill();
            let _ = self.child.wait();
            if let Some(h) = self.stderr.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_bounds() {
        assert_eq!(redact("pw=hunter2 x", &["hunter2", ""]), "pw=*** x");
        assert_eq!(bounded("  abcdef \n", 3), "abc...");
        assert_eq!(bounded("éé", 5), "éé");
    }

    #[test]
    fn failing_tool_fails_the_stream() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf data; echo 'bad thing hunter2' >&2; exit 3"]);
        let mut r =
            DumpReader::spawn(&mut cmd, vec![Zeroizing::new("hunter2".into())], "x").unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err().to_string();
        assert_eq!(out, b"data");
        assert!(
            e.contains("exit code 3") && e.contains("bad thing ***"),
            "{e}"
        );
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn succeeding_tool_ends_cleanly() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf data; echo note >&2"]);
        let mut r = DumpReader::spawn(&mut cmd, vec![], "x").unwrap();
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "data");
        assert!(r.failure().is_none());
    }

    #[test]
    fn missing_program_is_reported() {
        let e = DumpReader::spawn(&mut Command::new("/nonexistent/tool"), vec![], "install it")
            .unwrap_err();
        assert!(is_not_found(&e));
        assert!(e.to_string().contains("install it"), "{e}");
    }

    #[test]
    fn restore_sink_reports_failure() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat >/dev/null; echo nope >&2; exit 1"]);
        let mut w = RestoreSink::spawn(&mut cmd, vec![], "x").unwrap();
        w.write_all(b"hello").unwrap();
        let e = w.finish().unwrap_err();
        assert!(e.contains("nope") && e.contains("exit code 1"), "{e}");
    }

    #[test]
    fn children_do_not_inherit_stewards_credentials() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("env")
            .env("STEWARD_REPO_PASSWORD", "repo-pw-must-not-pass")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-must-not-pass")
            .env("PGPASSWORD", "tool-password-passes");
        let mut r = DumpReader::spawn(&mut cmd, vec![], "install sh").unwrap();
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert!(!out.contains("must-not-pass"), "{out}");
        assert!(out.contains("PGPASSWORD=tool-password-passes"), "{out}");
    }
}
