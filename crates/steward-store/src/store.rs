//! [`Store`]: the async face of a backend. Reads run on the blocking pool against pooled
//! connections; writes are queued to the group-commit writer (see `writer.rs`).

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use steward_core::config::SqliteSync;
use steward_crypto::SecretKey;
use tokio::sync::{mpsc, oneshot};

use crate::{
    writer::{self, Job},
    AuditDraft, RecordRow, StoreError, Tx,
};

/// A closure run inside a transaction. `FnMut` so backends can take it by reference; callers
/// wrap their `FnOnce` (see [`once`]).
pub(crate) type TxFn<'a> = dyn FnMut(&mut dyn Tx) -> Result<(), StoreError> + 'a;

/// What a backend offers the store: a read transaction on a pooled connection and a write
/// transaction on the single writer connection.
pub(crate) trait Backend: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn read(&self, f: &mut TxFn<'_>) -> Result<(), StoreError>;
    /// Whether reads are quick, local and never wait on locks, so they may run on the async
    /// worker itself instead of hopping to the blocking pool (SQLite in WAL mode: yes).
    fn inline_reads(&self) -> bool {
        false
    }
    /// Runs `f` in one transaction and commits if it returns `Ok`.
    fn write(&self, f: &mut TxFn<'_>) -> Result<(), StoreError>;
}

/// Errors that engine closures return: convertible from store errors, and able to name the
/// outcome code recorded in the audit log when the job fails.
pub trait JobError: From<StoreError> + Send + 'static {
    fn audit_code(&self) -> String;
}

impl JobError for StoreError {
    fn audit_code(&self) -> String {
        match self {
            StoreError::Sealed => "sealed".into(),
            _ => "store_unavailable".into(),
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind()).finish()
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    jobs: mpsc::Sender<Job>,
    audit_key: Arc<RwLock<Option<SecretKey>>>,
    commits: tokio::sync::watch::Receiver<u64>,
}

impl Store {
    /// Opens (creating if needed) the embedded SQLite store at `dir/steward.db` and migrates it.
    pub async fn open_sqlite(dir: &Path, sync: SqliteSync, pool: u32) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        let backend = tokio::task::spawn_blocking(move || {
            crate::sqlite::SqliteBackend::open(&dir, sync, pool)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("open task failed: {e}")))??;
        Ok(Self::start(Arc::new(backend)))
    }

    /// Connects to PostgreSQL at `url` and migrates the schema.
    pub async fn open_postgres(url: &str, pool: u32) -> Result<Self, StoreError> {
        let url = url.to_string();
        let backend =
            tokio::task::spawn_blocking(move || crate::postgres::PgBackend::open(&url, pool))
                .await
                .map_err(|e| StoreError::Unavailable(format!("open task failed: {e}")))??;
        Ok(Self::start(Arc::new(backend)))
    }

    fn start(backend: Arc<dyn Backend>) -> Self {
        let (tx, rx) = mpsc::channel(writer::QUEUE_DEPTH);
        let audit_key = Arc::new(RwLock::new(None));
        let (commits_tx, commits) = tokio::sync::watch::channel(0);
        writer::spawn(backend.clone(), rx, audit_key.clone(), commits_tx);
        Self {
            inner: Arc::new(Inner {
                backend,
                jobs: tx,
                audit_key,
                commits,
            }),
        }
    }

    /// A receiver that changes after every committed write batch of this process: watchers
    /// wait on it instead of polling (other replicas' commits still need a periodic look).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.commits.clone()
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.inner.backend.kind()
    }

    /// Loads (or, when sealing, clears) the key that chains audit entries. Until it is set, any
    /// write that carries an audit entry fails with [`StoreError::Sealed`].
    pub fn set_audit_key(&self, key: Option<SecretKey>) {
        *self
            .inner
            .audit_key
            .write()
            .unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// Runs `f` as a read: in a read transaction (SQLite) or with every statement standing
    /// alone (PostgreSQL; use the one-statement primitives such as `head_and_version` where
    /// consistency across rows matters). `f` must be safe to run twice.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: Fn(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let backend = self.inner.backend.clone();
        let run = move || {
            let mut slot = None;
            // A backend may run a read twice (a connection found dead); the last run counts.
            backend.read(&mut |tx: &mut dyn Tx| {
                slot = Some(f(tx));
                Ok(())
            })?;
            slot.ok_or_else(|| E::from(StoreError::Unavailable("read did not run".into())))?
        };
        if self.inner.backend.inline_reads() {
            // Same containment as the blocking pool gives: a panicking closure fails the read.
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(
                |_| {
                    Err(E::from(StoreError::Unavailable(
                        "read task failed: it panicked".into(),
                    )))
                },
            );
        }
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| E::from(StoreError::Unavailable(format!("read task failed: {e}"))))?
    }

    /// Every record of `kind`, by id, read in pages of 5,000 (each page its own read).
    pub async fn records(&self, kind: &'static str) -> Result<Vec<RecordRow>, StoreError> {
        const PAGE: u32 = 5000;
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let a = after.clone();
            let page = self.read(move |tx| tx.record_list(kind, &a, PAGE)).await?;
            let done = page.len() < PAGE as usize;
            if let Some(last) = page.last() {
                after = last.id.clone();
            }
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Runs `f` in the next group-commit transaction, inside its own savepoint, and appends
    /// `audit` (with `ok` or the error's audit code as outcome) in the same transaction. Resolves
    /// only after the commit; if the commit fails, the result is that failure.
    pub async fn write<T, E, F>(&self, audit: Option<AuditDraft>, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: JobError,
    {
        let slot: Arc<Mutex<Option<Result<T, E>>>> = Arc::new(Mutex::new(None));
        let job_slot = slot.clone();
        let (done_tx, done_rx) = oneshot::channel();
        let job = Job {
            run: Some(Box::new(move |tx: &mut dyn Tx| {
                let r = f(tx);
                let outcome = r.as_ref().map(|_| ()).map_err(|e| e.audit_code());
                *job_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                outcome
            })),
            writes: true,
            audit,
            done: Some(done_tx),
        };
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| E::from(StoreError::Closed))?;
        let committed = done_rx.await.map_err(|_| E::from(StoreError::Closed))?;
        committed.map_err(E::from)?;
        let result = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        result.unwrap_or_else(|| Err(E::from(StoreError::Unavailable("write did not run".into()))))
    }

    /// Appends an audit entry for a request that changed nothing (a read, or a refusal), with
    /// `outcome` (`ok` or an error code). Resolves after the entry is committed.
    pub async fn audit(&self, draft: AuditDraft, outcome: String) -> Result<(), StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        let job = Job {
            run: Some(Box::new(move |_tx: &mut dyn Tx| {
                if outcome == "ok" {
                    Ok(())
                } else {
                    Err(outcome)
                }
            })),
            writes: false,
            audit: Some(draft),
            done: Some(done_tx),
        };
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        done_rx.await.map_err(|_| StoreError::Closed)?
    }
}
