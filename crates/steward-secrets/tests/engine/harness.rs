//! The test harness: an engine over a fresh store (SQLite in a temp dir, or a fresh PostgreSQL
//! database), a manual clock, the root token, and helpers to poke at the raw database.
//!
//! [`check_both`] runs a test body once per backend. PostgreSQL is reached at
//! `STEWARD_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`; a database named `test`
//! must exist to connect to); set `STEWARD_TEST_PG=off` to run on SQLite only.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use chrono::{DateTime, Utc};
use serde_json::Value;
use steward_core::{config::SqliteSync, EnvName, ManualClock};
use steward_crypto::UnsealKey;
use steward_secrets::{
    Engine, EngineConfig, InitRequest, Kind, ReadOptions, RequestCtx, SecretsError, TokenCreate,
    WriteRequest, WriteResult,
};
use steward_store::{audit::AuditRecord, Store, StoreError};

/// Versions kept per secret by the test engines unless metadata says otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 5;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432";

pub fn config() -> EngineConfig {
    let env = |s: &str| EnvName::parse(s).unwrap();
    EngineConfig {
        environments: vec![env("dev"), env("staging"), env("prod")],
        default_environment: env("dev"),
        max_versions: DEFAULT_MAX_VERSIONS,
        max_value_bytes: 64 * 1024,
    }
}

pub fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn pg_base() -> Option<String> {
    match std::env::var("STEWARD_TEST_PG") {
        Ok(v) if v == "off" => None,
        Ok(v) if !v.is_empty() => Some(v.trim_end_matches('/').to_string()),
        _ => Some(DEFAULT_PG.to_string()),
    }
}

/// Runs `f` off the async workers: the sync `postgres` client panics on a tokio worker.
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .expect("helper thread panicked")
}

/// Where the store lives; removes it on drop.
pub enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { base: String, db: String },
}

impl Backend {
    fn sqlite() -> Self {
        Backend::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn postgres(base: String) -> Self {
        let db = format!("steward_e_{:016x}", rand::random::<u64>());
        let (b, d) = (base.clone(), db.clone());
        off_runtime(move || {
            let mut c = postgres::Client::connect(&format!("{b}/test"), postgres::NoTls)
                .unwrap_or_else(|e| {
                    panic!("cannot reach PostgreSQL at {b}/test ({e}); set STEWARD_TEST_PG=off to skip the PostgreSQL runs")
                });
            c.batch_execute(&format!("CREATE DATABASE {d}")).unwrap();
        });
        Backend::Postgres { base, db }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    pub fn pg_url(&self) -> Option<String> {
        match self {
            Backend::Postgres { base, db } => Some(format!("{base}/{db}")),
            Backend::Sqlite { .. } => None,
        }
    }

    pub async fn open(&self) -> Store {
        match self {
            Backend::Sqlite { dir } => Store::open_sqlite(dir.path(), SqliteSync::Normal, 4)
                .await
                .unwrap(),
            Backend::Postgres { .. } => Store::open_postgres(&self.pg_url().unwrap(), 4)
                .await
                .unwrap(),
        }
    }

    /// Runs SQL directly on the database, behind the engine's back; returns affected rows.
    pub fn exec_sql(&self, sql: &str) -> u64 {
        let sql = sql.to_string();
        match self {
            Backend::Sqlite { dir } => {
                let conn = rusqlite::Connection::open(dir.path().join("steward.db")).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .unwrap();
                conn.execute(&sql, []).unwrap() as u64
            }
            Backend::Postgres { .. } => {
                let url = self.pg_url().unwrap();
                off_runtime(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    c.execute(&sql, &[]).unwrap()
                })
            }
        }
    }

    /// Every byte the database holds at rest: the SQLite file and its WAL, or a PostgreSQL
    /// data dump.
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Backend::Sqlite { dir } => {
                let mut out = std::fs::read(dir.path().join("steward.db")).unwrap();
                for extra in ["steward.db-wal", "steward.db-journal"] {
                    if let Ok(b) = std::fs::read(dir.path().join(extra)) {
                        out.extend_from_slice(&b);
                    }
                }
                out
            }
            Backend::Postgres { .. } => {
                let url = self.pg_url().unwrap();
                let out = std::process::Command::new("pg_dump")
                    .arg("--data-only")
                    .arg(format!("--dbname={url}"))
                    .output()
                    .expect("running pg_dump");
                assert!(
                    out.status.success(),
                    "pg_dump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { base, db } = self {
            let (b, d) = (base.clone(), db.clone());
            let _ = std::thread::spawn(move || {
                if let Ok(mut c) = postgres::Client::connect(&format!("{b}/test"), postgres::NoTls)
                {
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)"));
                }
            })
            .join();
        }
    }
}

/// One engine under test.
pub struct H {
    pub engine: Arc<Engine>,
    pub clock: ManualClock,
    /// The root token ("" until initialized).
    pub root: String,
    /// The unseal key, for key-mode engines.
    pub unseal: Option<UnsealKey>,
    // Declared last: the engine (and its store) go before the database does.
    pub backend: Backend,
    requests: AtomicU64,
}

impl std::fmt::Debug for H {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl H {
    /// A fresh store and a sealed, uninitialized engine over it.
    pub async fn uninitialized(backend: Backend) -> Self {
        let store = backend.open().await;
        let clock = ManualClock::new(start_time());
        let engine = Arc::new(Engine::new(store, Arc::new(clock.clone()), config()));
        H {
            engine,
            clock,
            root: String::new(),
            unseal: None,
            backend,
            requests: AtomicU64::new(0),
        }
    }

    /// A fresh store and an engine initialized (and unsealed) with a key.
    pub async fn initialized(backend: Backend) -> Self {
        let mut h = Self::uninitialized(backend).await;
        let key = UnsealKey::generate();
        let mut saw = String::new();
        let init = h
            .engine
            .initialize(InitRequest::Key(key.clone()), |t| {
                saw = t.to_string();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            saw,
            init.root_token.as_str(),
            "persist_token sees the root token"
        );
        assert!(!h.engine.is_sealed());
        h.root = init.root_token.to_string();
        h.unseal = Some(key);
        h
    }

    pub fn clock_now(&self) -> DateTime<Utc> {
        steward_core::Clock::now(&self.clock)
    }

    pub fn store(&self) -> &Store {
        self.engine.store()
    }

    pub fn ctx(&self, token: &str) -> RequestCtx {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        RequestCtx::new(format!("req-{n}"), Some(token.to_string()), None)
    }

    pub fn root_ctx(&self) -> RequestCtx {
        self.ctx(&self.root)
    }

    pub fn anon_ctx(&self) -> RequestCtx {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        RequestCtx::new(format!("req-{n}"), None, None)
    }

    /// Writes as root; panics on error.
    pub async fn write(&self, env: &str, path: &str, value: Value) -> WriteResult {
        self.engine
            .write_secret(
                &self.root_ctx(),
                env,
                path,
                WriteRequest {
                    value,
                    cas: None,
                    metadata: None,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("write {env}/{path}: {e:?}"))
    }

    /// Reads as root.
    pub async fn try_read(
        &self,
        env: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<(Value, u64), SecretsError> {
        self.engine
            .read_secret(
                &self.root_ctx(),
                env,
                path,
                ReadOptions {
                    version,
                    resolve: true,
                },
            )
            .await
            .map(|d| (d.value, d.version.version))
    }

    /// Reads as root; panics on error; returns the value.
    pub async fn read(&self, env: &str, path: &str, version: Option<u64>) -> Value {
        self.try_read(env, path, version)
            .await
            .unwrap_or_else(|e| panic!("read {env}/{path} {version:?}: {e:?}"))
            .0
    }

    /// Stores a policy as root.
    pub async fn policy(&self, name: &str, doc: Value) {
        self.engine
            .put_policy(&self.root_ctx(), name, &doc.to_string())
            .await
            .unwrap_or_else(|e| panic!("policy {name}: {e:?}"));
    }

    /// A 24h token with `policies`, made by root; returns (token, accessor).
    pub async fn token(&self, policies: &[&str]) -> (String, String) {
        let t = self
            .engine
            .create_token(
                &self.root_ctx(),
                TokenCreate {
                    policies: policies.iter().map(|p| p.to_string()).collect(),
                    ttl: Some("24h".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        (t.token, t.info.accessor)
    }

    /// Every audit record, straight from the store.
    pub async fn audit_rows(&self) -> Vec<AuditRecord> {
        self.store()
            .read(|tx| tx.audit_range(0, 100_000))
            .await
            .map_err(|e: StoreError| e)
            .unwrap()
    }

    pub async fn audit_count(&self) -> usize {
        self.audit_rows().await.len()
    }

    /// The last audit entry, parsed.
    pub async fn last_audit(&self) -> Value {
        let rows = self.audit_rows().await;
        serde_json::from_str(&rows.last().expect("an audit entry").entry).unwrap()
    }
}

/// Which engine state [`check_both_with`] starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Initialized,
    Uninitialized,
}

/// Runs `f` on an initialized engine over SQLite, then over PostgreSQL.
pub async fn check_both<F, Fut>(f: F)
where
    F: Fn(H) -> Fut,
    Fut: Future<Output = ()>,
{
    check_both_with(Start::Initialized, f).await
}

pub async fn check_both_with<F, Fut>(start: Start, f: F)
where
    F: Fn(H) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut runs = vec![None];
    if let Some(base) = pg_base() {
        runs.push(Some(base));
    }
    for pg in runs {
        let backend = match pg {
            None => Backend::sqlite(),
            Some(base) => Backend::postgres(base),
        };
        eprintln!("--- running on {}", backend.name());
        let h = match start {
            Start::Initialized => H::initialized(backend).await,
            Start::Uninitialized => H::uninitialized(backend).await,
        };
        f(h).await;
    }
}

/// Asserts `r` failed with `code` and returns the error.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, SecretsError>, code: &str) -> SecretsError {
    match r {
        Ok(v) => panic!("expected error {code}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code, code, "wrong error: {e:?}");
            e
        }
    }
}

/// Asserts `r` failed with `kind` and `code`.
#[track_caller]
pub fn expect_kind<T: std::fmt::Debug>(
    r: Result<T, SecretsError>,
    kind: Kind,
    code: &str,
) -> SecretsError {
    let e = expect_err(r, code);
    assert_eq!(e.kind, kind, "wrong kind: {e:?}");
    e
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
