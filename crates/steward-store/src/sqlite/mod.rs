//! The embedded SQLite backend: one writer connection (used only by the group-commit writer)
//! and a pool of read connections, in WAL mode so reads never wait for the writer.

mod tx;

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rusqlite::Connection;
use steward_core::config::SqliteSync;

use crate::{
    store::{Backend, TxFn},
    StoreError,
};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "steward.db";

const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE sys (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE secrets (
    env TEXT NOT NULL, path TEXT NOT NULL, meta TEXT NOT NULL,
    current_version INTEGER NOT NULL, oldest_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (env, path)
);
CREATE TABLE secret_versions (
    env TEXT NOT NULL, path TEXT NOT NULL, version INTEGER NOT NULL,
    created_at INTEGER NOT NULL, deleted_at INTEGER, destroyed INTEGER NOT NULL,
    key_id INTEGER NOT NULL, envelope BLOB,
    PRIMARY KEY (env, path, version)
);
CREATE INDEX secret_versions_key ON secret_versions (key_id);
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY, accessor TEXT NOT NULL UNIQUE, record TEXT NOT NULL
);
CREATE TABLE policies (name TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL, hash BLOB NOT NULL);
CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
"#,
    ),
    (
        2,
        r#"
ALTER TABLE tokens ADD COLUMN parent TEXT;
CREATE INDEX tokens_parent ON tokens (parent);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE rotations (
    env TEXT NOT NULL, path TEXT NOT NULL, doc TEXT NOT NULL, due_at INTEGER,
    updated_at INTEGER NOT NULL, PRIMARY KEY (env, path)
);
CREATE INDEX rotations_due ON rotations (due_at);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, kind TEXT NOT NULL, env TEXT, path TEXT,
    detail TEXT NOT NULL
);
CREATE TABLE consumers (
    env TEXT NOT NULL, path TEXT NOT NULL, accessor TEXT NOT NULL, version INTEGER NOT NULL,
    seen_at INTEGER NOT NULL, PRIMARY KEY (env, path, accessor)
);
"#,
    ),
    (
        4,
        r#"
CREATE TABLE records (
    kind TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL, due_at INTEGER,
    PRIMARY KEY (kind, id)
);
CREATE INDEX records_due ON records (kind, due_at);
"#,
    ),
    (
        5,
        r#"
CREATE TABLE check_results (
    check_name TEXT NOT NULL, at INTEGER NOT NULL, ok INTEGER NOT NULL,
    duration_us INTEGER NOT NULL, error TEXT, PRIMARY KEY (check_name, at)
);
CREATE INDEX check_results_at ON check_results (at);
CREATE TABLE check_rollups (
    check_name TEXT NOT NULL, res TEXT NOT NULL, bucket INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (check_name, res, bucket)
);
CREATE INDEX check_rollups_bucket ON check_rollups (res, bucket);
"#,
    ),
];

/// The SQLite backend.
pub struct SqliteBackend {
    /// Held for the backend's life: one process owns an embedded store (caches rely on it).
    _lock: fs::File,
    path: PathBuf,
    sync: SqliteSync,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// Tells the checkpointer thread to stop (set on drop).
    stop: Arc<AtomicBool>,
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Checkpoints the WAL on its own thread and connection, so that no commit pays for it.
/// SQLite's automatic checkpoint runs inside the commit that crosses 1000 WAL pages: under
/// load that made one write batch in ~30 take 40-50 ms instead of ~10 (every request in that
/// batch waited). A PASSIVE checkpoint never blocks the writer or readers; once it has
/// copied every frame, the next write starts the WAL over, so the file stays small.
fn spawn_checkpointer(path: PathBuf, sync: SqliteSync, stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("steward-store-checkpoint".into())
        .spawn(move || {
            let Ok(conn) = SqliteBackend::connect(&path, sync) else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "store: WAL checkpoint failed; retrying");
                }
            }
        });
}

impl SqliteBackend {
    /// Opens `dir/steward.db`, creating the directory (0700) and file (0600) if needed.
    pub fn open(dir: &Path, sync: SqliteSync, pool: u32) -> Result<Self, StoreError> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::Unavailable(format!("{what} {}: {e}", dir.display()))
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("cannot create data directory", e))?;
        }
        let lock = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("steward.lock"))
            .map_err(|e| io("cannot create the lock file in", e))?;
        lock.try_lock().map_err(|_| {
            StoreError::Locked(format!(
                "another steward process is using the data directory {}; stop it first (an embedded store has one owner)",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        if !path.exists() {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io("cannot create database in", e))?;
        } else {
            // Tighten a database file someone loosened; it holds ciphertext and token hashes.
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        }
        let writer = Self::connect(&path, sync)?;
        migrate(&writer)?;
        // Checkpoints run on their own thread (see `spawn_checkpointer`).
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(StoreError::sqlite)?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_checkpointer(path.clone(), sync, stop.clone());
        Ok(Self {
            stop,
            _lock: lock,
            path,
            sync,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            max_idle: pool as usize,
        })
    }

    fn connect(path: &Path, sync: SqliteSync) -> Result<Connection, StoreError> {
        let conn = Connection::open(path).map_err(StoreError::sqlite)?;
        let sync = match sync {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        // temp_store = MEMORY: the group-commit writer runs every job in a savepoint, and
        // SQLite keeps each savepoint's page copies in a statement journal; in memory that
        // costs no temp-file writes (measured: 9% of the writer's time under alert ingest).
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;"
        ))
        .map_err(StoreError::sqlite)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `f` between `begin` and COMMIT, rolling back on error.
    fn in_txn(conn: &Connection, begin: &str, f: &mut TxFn<'_>) -> Result<(), StoreError> {
        // Cached statements: a read transaction per request should not re-parse its SQL.
        let exec = |sql: &str| {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute([]))
                .map(drop)
        };
        exec(begin).map_err(StoreError::sqlite)?;
        let mut tx = tx::SqliteTx { conn };
        match f(&mut tx) {
            Ok(()) => exec("COMMIT").map_err(|e| {
                let _ = exec("ROLLBACK");
                StoreError::sqlite(e)
            }),
            Err(e) => {
                let _ = exec("ROLLBACK");
                Err(e)
            }
        }
    }
}

impl Backend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn inline_reads(&self) -> bool {
        true
    }

    fn read(&self, f: &mut TxFn<'_>) -> Result<(), StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Self::connect(&self.path, self.sync)?;
                // Reads must never write behind the group-commit writer's back.
                c.execute_batch("PRAGMA query_only = ON")
                    .map_err(StoreError::sqlite)?;
                c
            }
        };
        let result = Self::in_txn(&conn, "BEGIN", f);
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        result
    }

    fn write(&self, f: &mut TxFn<'_>) -> Result<(), StoreError> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        Self::in_txn(&conn, "BEGIN IMMEDIATE", f)
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(StoreError::sqlite)?;
    let current: u32 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(StoreError::sqlite)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let fail = |e: rusqlite::Error| StoreError::Migration {
            version: *version,
            message: e.to_string(),
        };
        let script = format!(
            "BEGIN IMMEDIATE; {sql}; INSERT INTO schema_migrations (version, applied_at) VALUES ({version}, {}); COMMIT;",
            chrono::Utc::now().timestamp()
        );
        if let Err(e) = conn.execute_batch(&script) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(fail(e));
        }
    }
    Ok(())
}
