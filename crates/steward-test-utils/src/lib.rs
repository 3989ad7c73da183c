//! Helpers shared by Steward's tests (dev-dependency only): an initialized engine on a
//! temporary SQLite store with a manual clock, a free loopback port, and a throwaway
//! PostgreSQL cluster with scram-sha-256 authentication. The shared server on 5432
//! trusts every local login, so a wrong or revoked password only really fails on one of these.
//! [`fs_tree`] holds the generated file trees and data of the backup tests.

#![forbid(unsafe_code)]

pub mod fs_tree;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rand::{distributions::Alphanumeric, Rng};
use steward_core::{config::SqliteSync, EnvName, ManualClock};
use steward_secrets::{Engine, EngineConfig, InitRequest};
use steward_store::Store;

/// An initialized, unsealed engine on a SQLite store in `dir`, with environment `dev` and
/// `clock`; returns it with its root token.
pub async fn engine(dir: &Path, clock: ManualClock) -> (std::sync::Arc<Engine>, String) {
    let store = Store::open_sqlite(dir, SqliteSync::Normal, 4)
        .await
        .expect("opening the test store");
    let dev = EnvName::parse("dev").expect("a valid env name");
    let engine = std::sync::Arc::new(Engine::new(
        store,
        std::sync::Arc::new(clock),
        EngineConfig {
            environments: vec![dev.clone()],
            default_environment: dev,
            max_versions: 10,
            max_value_bytes: 65536,
        },
    ));
    let init = engine
        .initialize(
            InitRequest::Key(steward_crypto::UnsealKey::generate()),
            |_| Ok(()),
        )
        .await
        .expect("initializing the test store");
    let token = init.root_token.to_string();
    (engine, token)
}

/// A free TCP port on 127.0.0.1 with nothing listening (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `cmd` and fails the test with its output when it does not succeed.
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

/// `program`, run as the `postgres` user when we are root (initdb refuses root).
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

/// A throwaway cluster with scram-sha-256 authentication on a free port (superuser
/// `postgres`); stopped and deleted on drop.
pub struct PgCluster {
    pub port: u16,
    pub superuser_password: String,
    data: PathBuf,
    bin: PathBuf,
    // Dropped last: removes the cluster's files.
    _dir: tempfile::TempDir,
}

impl PgCluster {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A cluster that archives every finished WAL file into [`PgCluster::archive`]
    /// (`wal_level = replica`, `archive_command = cp`), for point-in-time recovery.
    pub fn start_archiving() -> Self {
        Self::start_with(true)
    }

    /// The directory the archiving cluster copies its WAL files into.
    pub fn archive(&self) -> PathBuf {
        self._dir.path().join("archive")
    }

    fn start_with(archiving: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("archive")).expect("the archive directory");
        let bin = pg_bin();
        let superuser_password: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{superuser_password}\n")).expect("writing the pwfile");
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
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        if archiving {
            opts.push_str(&format!(
                " -c wal_level=replica -c archive_mode=on -c archive_command='cp %p {}/%f'",
                dir.path().join("archive").display()
            ));
        }
        run(as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .arg("start"));
        Self {
            port,
            superuser_password,
            data,
            bin,
            _dir: dir,
        }
    }

    /// A client config for `user` with `password` on database `postgres`.
    pub fn config(&self, user: &str, password: &str) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .dbname("postgres")
            .user(user)
            .password(password)
            .connect_timeout(Duration::from_secs(5));
        c
    }

    /// Runs SQL as the superuser (on the blocking pool: the sync client has its own runtime).
    pub async fn exec(&self, sql: &str) {
        self.value(sql).await;
    }

    /// Runs SQL as the superuser and returns the first column of the first row it
    /// returned, as text (`None` without one).
    pub async fn value(&self, sql: &str) -> Option<String> {
        let (cfg, sql) = (
            self.config("postgres", &self.superuser_password),
            sql.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let mut c = cfg.connect(postgres::NoTls).expect("superuser login");
            c.simple_query(&sql)
                .expect("superuser SQL")
                .into_iter()
                .find_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
        })
        .await
        .expect("the SQL task ran")
    }

    /// Whether `user` can log in with `password`.
    pub async fn can_login(&self, user: &str, password: &str) -> bool {
        let cfg = self.config(user, password);
        tokio::task::spawn_blocking(move || {
            cfg.connect(postgres::NoTls)
                .and_then(|mut c| c.simple_query("SELECT 1"))
                .is_ok()
        })
        .await
        .expect("the login task ran")
    }
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
