//! The PostgreSQL backend, for running several Steward replicas against one database: one
//! dedicated writer connection (used only by the group-commit writer) and a pool of read
//! connections running `REPEATABLE READ, READ ONLY` transactions.
//!
//! It uses the synchronous `postgres` client, which drives its own small tokio runtime; every
//! call therefore happens off the async workers (`spawn_blocking` for opening and reads, the
//! writer thread for writes), and connections are never dropped on an async worker either (see
//! the `Drop` impl).
//!
//! The schema mirrors the SQLite one: BYTEA for blobs, BIGINT for integers and times
//! (microseconds), BOOLEAN for `destroyed`, and `COLLATE "C"` on every key text column so that
//! ordering and range scans are bytewise whatever the database's default collation.

mod tx;

use std::{collections::HashMap, sync::Mutex, time::Duration};

use postgres::{Client, Config, NoTls, Statement};

use crate::{
    store::{Backend, TxFn},
    StoreError,
};

/// Key of the transaction-scoped advisory lock that serializes migrations across replicas.
const MIGRATION_LOCK: i64 = 0x5374_6577_6172_6400; // "Steward\0"

/// How long to wait for a connection when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Unacknowledged sends and idle connections give up on the server after this long.
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's default `keepalives_idle`, i.e. the URL did not set one.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE sys (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE secrets (
    env TEXT COLLATE "C" NOT NULL, path TEXT COLLATE "C" NOT NULL, meta TEXT NOT NULL,
    current_version BIGINT NOT NULL, oldest_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    PRIMARY KEY (env, path)
);
CREATE TABLE secret_versions (
    env TEXT COLLATE "C" NOT NULL, path TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL,
    created_at BIGINT NOT NULL, deleted_at BIGINT, destroyed BOOLEAN NOT NULL,
    key_id BIGINT NOT NULL, envelope BYTEA,
    PRIMARY KEY (env, path, version)
);
CREATE INDEX secret_versions_key ON secret_versions (key_id);
CREATE TABLE tokens (
    hash BYTEA PRIMARY KEY, accessor TEXT COLLATE "C" NOT NULL UNIQUE, record TEXT NOT NULL
);
CREATE TABLE policies (
    name TEXT COLLATE "C" PRIMARY KEY, document TEXT NOT NULL, updated_at BIGINT NOT NULL
);
CREATE TABLE audit_log (seq BIGINT PRIMARY KEY, entry TEXT NOT NULL, hash BYTEA NOT NULL);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
"#,
    ),
    (
        2,
        r#"
ALTER TABLE tokens ADD COLUMN parent TEXT COLLATE "C";
CREATE INDEX tokens_parent ON tokens (parent);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE rotations (
    env TEXT COLLATE "C" NOT NULL, path TEXT COLLATE "C" NOT NULL, doc TEXT NOT NULL,
    due_at BIGINT, updated_at BIGINT NOT NULL, PRIMARY KEY (env, path)
);
CREATE INDEX rotations_due ON rotations (due_at);
CREATE TABLE events (
    seq BIGINT PRIMARY KEY, time BIGINT NOT NULL, kind TEXT NOT NULL, env TEXT COLLATE "C",
    path TEXT COLLATE "C", detail TEXT NOT NULL
);
CREATE TABLE consumers (
    env TEXT COLLATE "C" NOT NULL, path TEXT COLLATE "C" NOT NULL,
    accessor TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, seen_at BIGINT NOT NULL,
    PRIMARY KEY (env, path, accessor)
);
"#,
    ),
    (
        4,
        r#"
CREATE TABLE records (
    kind TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, doc TEXT NOT NULL,
    due_at BIGINT, PRIMARY KEY (kind, id)
);
CREATE INDEX records_due ON records (kind, due_at);
"#,
    ),
    (
        5,
        r#"
CREATE TABLE check_results (
    check_name TEXT COLLATE "C" NOT NULL, at BIGINT NOT NULL, ok BIGINT NOT NULL,
    duration_us BIGINT NOT NULL, error TEXT, PRIMARY KEY (check_name, at)
);
CREATE INDEX check_results_at ON check_results (at);
CREATE TABLE check_rollups (
    check_name TEXT COLLATE "C" NOT NULL, res TEXT COLLATE "C" NOT NULL,
    bucket BIGINT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (check_name, res, bucket)
);
CREATE INDEX check_rollups_bucket ON check_rollups (res, bucket);
"#,
    ),
];

/// A connection and the statements prepared on it.
pub(crate) struct PgConn {
    client: Client,
    stmts: HashMap<&'static str, Statement>,
}

/// The PostgreSQL backend.
pub struct PgBackend {
    config: Config,
    writer: Mutex<Option<PgConn>>,
    readers: Mutex<Vec<PgConn>>,
    max_idle: usize,
    /// Read connections in use; reads wait for a free one rather than opening more, so a burst
    /// neither churns connections nor exhausts the server's max_connections.
    busy: (Mutex<usize>, std::sync::Condvar),
}

/// How long a read waits for a free connection before answering "unavailable".
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A checked-out read slot; frees itself.
struct Slot<'a>(&'a (Mutex<usize>, std::sync::Condvar));

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0 .1.notify_one();
    }
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password; show nothing of it.
        f.debug_struct("PgBackend")
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

/// Why a transaction did not complete: it could not start (the connection may be stale, so a
/// fresh one is worth a try), or it failed after the closure ran (never retried).
enum TxnError {
    Begin(postgres::Error),
    Failed(StoreError),
}

impl PgBackend {
    /// Connects to `url` (a libpq-style URL or key=value string, without TLS), migrates the schema
    /// and keeps at most `pool` idle read connections. Must not be called on an async worker.
    pub fn open(url: &str, pool: u32) -> Result<Self, StoreError> {
        // The parse error never echoes the URL (which may hold a password).
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid postgres url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // Notice a vanished server (or a network partition) within a minute or so instead of
        // the OS defaults of hours, so requests fail with 503 rather than hang.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(DEAD_PEER_TIMEOUT);
        }
        if config.get_keepalives() && config.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE {
            config.keepalives_idle(DEAD_PEER_TIMEOUT);
            if config.get_keepalives_interval().is_none() {
                config.keepalives_interval(Duration::from_secs(10));
            }
            if config.get_keepalives_retries().is_none() {
                config.keepalives_retries(3);
            }
        }
        if config.get_application_name().is_none() {
            config.application_name("steward");
        }
        let backend = Self {
            config,
            writer: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
            max_idle: pool.max(1) as usize,
            busy: (Mutex::new(0), std::sync::Condvar::new()),
        };
        let mut writer = backend.connect()?;
        migrate(&mut writer.client)?;
        *backend.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        Ok(backend)
    }

    fn connect(&self) -> Result<PgConn, StoreError> {
        let client = self.config.connect(NoTls).map_err(StoreError::pg)?;
        Ok(PgConn {
            client,
            stmts: HashMap::new(),
        })
    }

    /// Runs the write `f` in one transaction on `conn` and commits if it returns `Ok`; on error
    /// the transaction is rolled back (dropping a `postgres::Transaction` rolls it back).
    /// READ COMMITTED: `audit_head` takes a row lock, and after waiting for another replica's
    /// commit it must see that replica's head rather than fail. (Reads use `read_autocommit`.)
    fn in_txn(conn: &mut PgConn, f: &mut TxFn<'_>) -> Result<(), TxnError> {
        let PgConn { client, stmts } = conn;
        let mut txn = client.transaction().map_err(TxnError::Begin)?;
        let mut tx = tx::PgTx {
            txn: &mut txn,
            stmts,
            read_only: false,
        };
        f(&mut tx).map_err(TxnError::Failed)?;
        txn.commit()
            .map_err(|e| TxnError::Failed(StoreError::pg(e)))
    }

    /// Runs a read in autocommit mode: every statement a read issues stands alone (a secret's
    /// head and version come from one statement, `head_and_version`), so no BEGIN/COMMIT
    /// round trips. Reads must therefore be repeatable (`Store::read` takes `Fn`): if a
    /// reused connection turns out to have died (the server restarted), the read runs again
    /// on a fresh one.
    fn read_autocommit(
        &self,
        conn: &mut PgConn,
        reused: bool,
        f: &mut TxFn<'_>,
    ) -> Result<(), StoreError> {
        let attempt = |conn: &mut PgConn, f: &mut TxFn<'_>| {
            let PgConn { client, stmts } = conn;
            let mut tx = tx::PgTx {
                txn: client,
                stmts,
                read_only: true,
            };
            f(&mut tx)
        };
        let first = attempt(conn, f);
        if reused && conn.client.is_closed() {
            *conn = self.connect()?;
            return attempt(conn, f);
        }
        first
    }

    /// Runs a write transaction on `conn`; if it cannot even begin on a connection that was
    /// reused (the server may have restarted or dropped it), retries once on a fresh one.
    fn run_write(
        &self,
        conn: &mut PgConn,
        reused: bool,
        f: &mut TxFn<'_>,
    ) -> Result<(), StoreError> {
        match Self::in_txn(conn, f) {
            Ok(()) => Ok(()),
            Err(TxnError::Failed(e)) => Err(e),
            Err(TxnError::Begin(e)) if !reused => Err(StoreError::pg(e)),
            Err(TxnError::Begin(_)) => {
                *conn = self.connect()?;
                match Self::in_txn(conn, f) {
                    Ok(()) => Ok(()),
                    Err(TxnError::Failed(e)) => Err(e),
                    Err(TxnError::Begin(e)) => Err(StoreError::pg(e)),
                }
            }
        }
    }
}

impl Backend for PgBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn read(&self, f: &mut TxFn<'_>) -> Result<(), StoreError> {
        let _slot = {
            let (lock, cv) = &self.busy;
            let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = std::time::Instant::now() + READ_WAIT;
            while *n >= self.max_idle {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(StoreError::Unavailable(format!(
                        "all {} PostgreSQL read connections stayed busy for {}s (raise store.pool_size)",
                        self.max_idle,
                        READ_WAIT.as_secs()
                    )));
                }
                n = cv
                    .wait_timeout(n, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *n += 1;
            Slot(&self.busy)
        };
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut conn, reused) = match pooled {
            Some(c) if !c.client.is_closed() => (c, true),
            _ => (self.connect()?, false),
        };
        let result = self.read_autocommit(&mut conn, reused, f);
        if result.is_ok() && !conn.client.is_closed() {
            let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        result
    }

    fn write(&self, f: &mut TxFn<'_>) -> Result<(), StoreError> {
        let mut slot = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (mut conn, reused) = match slot.take() {
            Some(c) if !c.client.is_closed() => (c, true),
            _ => (self.connect()?, false),
        };
        let result = self.run_write(&mut conn, reused, f);
        if !conn.client.is_closed() {
            *slot = Some(conn);
        }
        result
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Closing a `postgres::Client` blocks on its runtime, which panics on an async worker;
        // the last `Store` handle may well be dropped there, so close connections elsewhere.
        let mut conns = std::mem::take(self.readers.get_mut().unwrap_or_else(|e| e.into_inner()));
        conns.extend(
            self.writer
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if conns.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("steward-store-pg-close".into())
            .spawn(move || drop(conns));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot close postgres connections in the background");
        }
    }
}

/// Applies pending migrations, one transaction each, under a transaction-scoped advisory lock
/// so that replicas starting together neither race nor apply a migration twice.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let current = {
        let mut txn = client.transaction().map_err(StoreError::pg)?;
        let current = locked_version(&mut txn)?;
        txn.commit().map_err(StoreError::pg)?;
        current
    };
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let fail = |e: postgres::Error| StoreError::Migration {
            version: *version,
            message: match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            },
        };
        let mut txn = client.transaction().map_err(StoreError::pg)?;
        // Another replica may have applied it while we waited for the lock.
        let now = locked_version(&mut txn)?;
        if now > known {
            return Err(StoreError::TooNew { found: now, known });
        }
        if now >= *version {
            continue;
        }
        txn.batch_execute(sql).map_err(fail)?;
        txn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&(*version as i32), &chrono::Utc::now().timestamp()],
        )
        .map_err(fail)?;
        txn.commit().map_err(fail)?;
        tracing::info!(version, "postgres store migrated");
    }
    Ok(())
}

/// Takes the migration lock (held until the transaction ends), creates the bookkeeping table
/// if needed and returns the schema version.
fn locked_version(txn: &mut postgres::Transaction<'_>) -> Result<u32, StoreError> {
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(StoreError::pg)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .map_err(StoreError::pg)?;
    let row = txn
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(StoreError::pg)?;
    let v: i32 = row
        .try_get(0)
        .map_err(|e| StoreError::Corrupt(format!("schema version: {e}")))?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v} is negative")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropping the backend on an async worker (where the last `Store` handle may go) must not
    /// panic, although closing a sync client blocks. Needs the test PostgreSQL (see
    /// `tests/store.rs`); skipped with `STEWARD_TEST_PG=off`.
    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_on_an_async_worker_is_safe() {
        let admin = match std::env::var("STEWARD_TEST_PG") {
            Ok(v) if v == "off" => return,
            Ok(v) if !v.is_empty() => v,
            _ => "postgres://postgres@127.0.0.1:5432/test".to_string(),
        };
        let name = format!("steward_t_{}", hex::encode(rand::random::<[u8; 8]>()));
        let (server, _) = admin.rsplit_once('/').expect("admin url names a database");
        let url = format!("{server}/{name}");
        let sql = |sql: String| {
            let admin = admin.clone();
            tokio::task::spawn_blocking(move || {
                Client::connect(&admin, NoTls)
                    .and_then(|mut c| c.batch_execute(&sql))
                    .expect("admin sql")
            })
        };
        sql(format!("CREATE DATABASE {name}")).await.unwrap();
        let opened = tokio::task::spawn_blocking(move || {
            let backend = PgBackend::open(&url, 2)?;
            // Fill the read pool too.
            backend.read(&mut |tx| tx.sys_get("k").map(drop))?;
            Ok::<_, StoreError>(backend)
        })
        .await
        .unwrap();
        let backend = opened.expect("open");
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(backend)));
        sql(format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .unwrap();
        dropped.expect("drop on an async worker does not panic");
    }
}
