//! Shared test helpers: step contexts, random names, secret-leak assertions, and a throwaway
//! PostgreSQL cluster that asks for passwords (the shared server on 5432 trusts every login).

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use rand::{distributions::Alphanumeric, Rng};
use serde_json::{json, Value};
use steward_rotators::{Credential, ErrorKind, RotatorError, StepContext};

/// A step context for secret `test/app` with the given settings and credentials.
pub fn cx<'a>(
    settings: &'a Value,
    current: Option<&'a Credential>,
    admin: Option<&'a Credential>,
) -> StepContext<'a> {
    StepContext {
        env: "test",
        path: "app/db",
        settings,
        current,
        previous: None,
        admin,
        attempt_id: "attempt-0001",
    }
}

pub fn cred(v: Value) -> Credential {
    Credential::from_value(v)
}

/// A user/password credential.
pub fn login(user: &str, password: &str) -> Credential {
    cred(json!({"username": user, "password": password}))
}

/// Lower-case letters and digits, for user names.
pub fn suffix() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(10)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect()
}

/// A password nobody else uses.
pub fn password() -> String {
    format!("Pw{}", suffix())
}

/// Asserts the error has `kind` and mentions none of `secrets`; returns its message.
pub fn expect_err(
    r: Result<impl std::fmt::Debug, RotatorError>,
    kind: ErrorKind,
    secrets: &[&str],
) -> String {
    let e = r.expect_err("the step should fail");
    assert_eq!(e.kind, kind, "wrong kind for: {e}");
    for s in secrets {
        assert!(!e.message.contains(s), "the message leaks a secret: {e}");
    }
    e.message
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PostgreSQL's server binaries (the newest installed version).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a command as the `postgres` user (initdb refuses root) when we are root.
fn as_postgres(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A throwaway cluster with scram-sha-256 authentication on a free port; stopped and deleted
/// on drop.
pub struct PgCluster {
    pub port: u16,
    pub admin_password: String,
    data: PathBuf,
    bin: PathBuf,
    // Dropped last: removes the cluster's files.
    _dir: tempfile::TempDir,
}

impl PgCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = pg_bin();
        let admin_password = password();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{admin_password}\n")).unwrap();
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:")
            .arg(dir.path()));
        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display())));
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        run(as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .arg("start"));
        Self {
            port,
            admin_password,
            data,
            bin,
            _dir: dir,
        }
    }

    /// The superuser's credential, as a rotation's admin secret holds it.
    pub fn admin(&self) -> Credential {
        cred(json!({"username": "postgres", "password": self.admin_password}))
    }

    /// Runs SQL as the superuser (on the blocking pool: the sync client has its own runtime).
    pub async fn exec(&self, sql: &str) {
        let (port, pw, sql) = (self.port, self.admin_password.clone(), sql.to_string());
        tokio::task::spawn_blocking(move || {
            let mut c = pg_config(port, "postgres", &pw)
                .connect(postgres::NoTls)
                .expect("admin login");
            c.batch_execute(&sql).expect("admin SQL");
        })
        .await
        .unwrap();
    }

    /// Whether `user` can log in with `password`.
    pub async fn can_login(&self, user: &str, password: &str) -> bool {
        let (port, user, pw) = (self.port, user.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            pg_config(port, &user, &pw)
                .connect(postgres::NoTls)
                .and_then(|mut c| c.simple_query("SELECT 1"))
                .is_ok()
        })
        .await
        .unwrap()
    }
}

fn pg_config(port: u16, user: &str, password: &str) -> postgres::Config {
    let mut c = postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .dbname("postgres")
        .user(user)
        .password(password)
        .connect_timeout(std::time::Duration::from_secs(5));
    c
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
