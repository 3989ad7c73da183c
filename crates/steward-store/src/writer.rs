//! The group-commit writer: one thread owns the write connection, drains queued jobs into one
//! transaction (each job in its own savepoint, followed by its audit entry), commits once, and
//! only then acknowledges every job in the batch. This is what lets audited requests run at
//! thousands per second while staying fail closed: no response goes out before its audit entry
//! is durable, and if the commit fails every request in the batch fails.

use std::sync::{Arc, RwLock};

use steward_crypto::SecretKey;
use tokio::sync::{mpsc, oneshot};

use crate::{audit::AuditRecord, store::Backend, AuditDraft, StoreError, Tx};

/// Jobs that may wait for the writer before senders are slowed down.
pub(crate) const QUEUE_DEPTH: usize = 8192;
/// Largest number of jobs in one transaction.
const MAX_BATCH: usize = 512;
/// A batch slower than this is logged (every request in it waited that long).
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(50);

type RunFn = Box<dyn FnOnce(&mut dyn Tx) -> Result<(), String> + Send>;

/// One queued write.
pub(crate) struct Job {
    pub run: Option<RunFn>,
    /// Whether `run` touches the database (and so needs its own savepoint).
    pub writes: bool,
    pub audit: Option<AuditDraft>,
    pub done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

pub(crate) fn spawn(
    backend: Arc<dyn Backend>,
    mut rx: mpsc::Receiver<Job>,
    audit_key: Arc<RwLock<Option<SecretKey>>>,
    commits: tokio::sync::watch::Sender<u64>,
) {
    std::thread::Builder::new()
        .name("steward-store-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let key = audit_key.read().unwrap_or_else(|e| e.into_inner()).clone();
                if run_batch(&*backend, &mut batch, key.as_ref()) {
                    // Wakes watchers (long polls, event streams) after every commit.
                    commits.send_modify(|n| *n += 1);
                }
            }
        })
        .expect("spawning the store writer thread");
}

/// Runs one batch; returns whether it committed.
fn run_batch(backend: &dyn Backend, batch: &mut [Job], key: Option<&SecretKey>) -> bool {
    let size = batch.len();
    // Jobs refused before the transaction (sealed) are answered on their own.
    let mut refused = vec![false; size];
    let started = std::time::Instant::now();
    let mut jobs_done = std::time::Duration::ZERO;
    let result = backend.write(&mut |tx| {
        let needs_audit = batch.iter().any(|j| j.audit.is_some());
        let mut head = match (needs_audit, key) {
            (true, Some(_)) => Some(tx.audit_head()?),
            _ => None,
        };
        let mut records = Vec::new();
        for (i, job) in batch.iter_mut().enumerate() {
            let Some(run) = job.run.take() else { continue };
            if job.audit.is_some() && key.is_none() {
                refused[i] = true;
                continue;
            }
            if job.writes {
                tx.savepoint()?;
            }
            // A panicking job must not take the writer (and every later write) down with it.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(tx)))
                .unwrap_or_else(|_| Err("internal_error".to_string()));
            if job.writes {
                match outcome {
                    Ok(()) => tx.release_savepoint()?,
                    Err(_) => tx.rollback_savepoint()?,
                }
            }
            if let (Some(draft), Some(key), Some((seq, prev))) = (&job.audit, key, head.as_mut()) {
                let code = outcome.err().unwrap_or_else(|| "ok".to_string());
                let rec = AuditRecord::seal(key, draft, &code, *seq + 1, prev);
                *seq += 1;
                *prev = rec.hash;
                records.push(rec);
            }
        }
        tx.audit_append(&records)?;
        jobs_done = started.elapsed();
        Ok(())
    });
    let took = started.elapsed();
    if took > SLOW_BATCH {
        tracing::info!(
            jobs = size,
            jobs_ms = jobs_done.as_millis() as u64,
            commit_ms = (took - jobs_done).as_millis() as u64,
            "store: slow write batch"
        );
    }
    if let Err(e) = &result {
        tracing::error!(error = %e, jobs = size, "store write batch failed; every request in it is answered 503");
    }
    for (i, job) in batch.iter_mut().enumerate() {
        let answer = if refused[i] {
            Err(StoreError::Sealed)
        } else {
            result.clone()
        };
        if let Some(done) = job.done.take() {
            let _ = done.send(answer);
        }
    }
    result.is_ok()
}
