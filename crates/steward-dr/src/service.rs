//! [`Backups`]: runs each source's backups, drills and each repository's checks on their
//! schedules, records every run, turns outcomes into events for the alerting pipeline, and
//! answers the API (run now, list, restore, copy, prune, the DR report).
//!
//! Runs: every backup, drill, check, prune, copy and restore is a record (`records` kind
//! `backup.run`) written when it starts (`ok` unset) and again when it ends. A run found
//! unfinished at start-up was cut short by a crash and is recorded as failed, so the history
//! never shows a run that is neither done nor going. The repository itself never holds a
//! partial snapshot: a snapshot file is written only after all its data is stored.
//!
//! Scheduling: a source's backup is due at the first schedule time after its last backup
//! started (or after the source was first seen). Due and not started within
//! `missed_grace` (Steward was down, or the previous backup still runs), it is missed: a
//! `backup.missed` event, and the backup runs as soon as it can (a catch-up).
//!
//! Events (kind, detail): `backup.succeeded`/`backup.failed`, `backup.missed`,
//! `backup.size_changed`/`backup.size_normal`, `backup.copy_failed`/`backup.copied`,
//! `drill.passed`/`drill.failed`, `dr.rpo_breached`/`dr.rpo_met`,
//! `dr.rto_breached`/`dr.rto_met`, `backup.check_failed`/`backup.check_passed`. Each
//! carries `source` (or `repository`); the built-in alert rules of `steward-alerting` turn
//! them into `BackupFailed`, `BackupMissed`, ..., resolved by their partner event.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use steward_alerting::Alerting;
use steward_backup::{DrillReport, Facts, Source};
use steward_repo::{Id, Repository};
use steward_secrets::{policy::Capability, Engine, RequestCtx, Result, SecretsError};
use steward_store::{EventRow, RecordRow, Tx};
use tokio::sync::{watch, Notify, Semaphore};
use zeroize::Zeroizing;

use crate::{
    config::{Compiled, RepoSpec, Server, SourceSpec, What},
    report::{self, DrReport},
    retention,
};

/// The record kind of runs.
pub const RUN_KIND: &str = "backup.run";
/// The longest the scheduler sleeps between looks.
const TICK_MAX: Duration = Duration::from_secs(30);
/// Backups kept to compute the usual size.
const SIZE_WINDOW: usize = 7;
/// Fewest earlier backups before sizes are compared.
const SIZE_MIN_HISTORY: usize = 3;
/// How long a maintenance window a backup opens lasts at most (it is closed when the
/// backup ends; this bounds it if Steward dies meanwhile).
const WINDOW_MAX: Duration = Duration::from_secs(6 * 3600);

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Backup,
    Drill,
    Check,
    Prune,
    Copy,
    Restore,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Backup => "backup",
            Op::Drill => "drill",
            Op::Check => "check",
            Op::Prune => "prune",
            Op::Copy => "copy",
            Op::Restore => "restore",
        }
    }

    /// Parses `backup`, `drill`, ...
    pub fn parse(s: &str) -> Option<Op> {
        [
            Op::Backup,
            Op::Drill,
            Op::Check,
            Op::Prune,
            Op::Copy,
            Op::Restore,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One run, as recorded and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub op: Op,
    /// The source (backup, drill, copy, restore) or the repository (check, prune).
    pub target: String,
    /// `schedule`, `catch-up` or `manual`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// None while it runs.
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub error: Option<String>,
    /// The snapshot written (backup), restored (drill, restore) or copied.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// When the snapshot was taken (drill: the backup proven).
    #[serde(default)]
    pub snapshot_time: Option<DateTime<Utc>>,
    /// Bytes read from the source (backup) or restored (drill, restore).
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Drill and restore: how long the restore itself took (the measured RTO).
    #[serde(default)]
    pub restore_s: Option<f64>,
    /// Backup: what a drill checks against.
    #[serde(default)]
    pub facts: Option<Facts>,
    /// Drill: every check.
    #[serde(default)]
    pub drill: Option<DrillReport>,
    /// Anything else worth keeping (check and prune figures, copies, size comparison).
    #[serde(default)]
    pub detail: Value,
}

impl Run {
    fn start(op: Op, target: &str, trigger: &str, now: DateTime<Utc>) -> Self {
        let id = format!(
            "{target}/{}/{:020}-{:04x}",
            op.as_str(),
            now.timestamp_micros().max(0),
            rand::random::<u16>()
        );
        Run {
            id,
            op,
            target: target.to_string(),
            trigger: trigger.to_string(),
            started_at: now,
            finished_at: None,
            ok: None,
            error: None,
            snapshot: None,
            snapshot_time: None,
            bytes: None,
            duration_s: None,
            restore_s: None,
            facts: None,
            drill: None,
            detail: Value::Null,
        }
    }

    fn row(&self) -> RecordRow {
        RecordRow {
            kind: RUN_KIND.into(),
            id: self.id.clone(),
            doc: serde_json::to_string(self).expect("runs serialize"),
            due_at: Some(self.started_at),
        }
    }

    /// Whether it finished and succeeded.
    pub fn passed(&self) -> bool {
        self.ok == Some(true)
    }
}

/// What the API shows per source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub repository: String,
    pub schedule: Option<String>,
    pub next_backup: Option<DateTime<Utc>>,
    pub drill_schedule: Option<String>,
    pub next_drill: Option<DateTime<Utc>>,
    pub retention: Option<String>,
    pub copy_to: Vec<String>,
    pub running: Vec<Op>,
    pub last_backup: Option<Run>,
}

/// A snapshot as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub short_id: String,
    pub time: DateTime<Utc>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

/// Where a restore goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub source: String,
    /// Snapshot id (or prefix); default the newest of the source.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Restore the snapshot's files into this directory (any source).
    #[serde(default)]
    pub target_dir: Option<PathBuf>,
    /// Restore a database source into a new database of this name on its server.
    #[serde(default)]
    pub database: Option<String>,
}

/// How a source is backed up.
enum Runner {
    Source(Source),
    /// A PostgreSQL base backup of the cluster (the database is recorded).
    Base(steward_backup::Endpoint, String),
}

/// Something to run now (the API's requests).
#[derive(Debug, Clone)]
pub enum Job {
    Backup {
        source: String,
    },
    Drill {
        source: String,
        /// A logical backup's snapshot (default: the newest).
        snapshot: Option<String>,
        /// A `mode = "base"` source's recovery target (default: the configured point).
        to_time: Option<DateTime<Utc>>,
    },
    /// `read_data`: `all` or `N/M` (default: the day's share).
    Check {
        repository: String,
        read_data: Option<String>,
    },
    Prune {
        repository: String,
        dry_run: bool,
    },
    Copy {
        source: String,
        to: String,
        snapshot: Option<String>,
    },
    Restore(RestoreRequest),
}

impl Job {
    fn op(&self) -> Op {
        match self {
            Job::Backup { .. } => Op::Backup,
            Job::Drill { .. } => Op::Drill,
            Job::Check { .. } => Op::Check,
            Job::Prune { .. } => Op::Prune,
            Job::Copy { .. } => Op::Copy,
            Job::Restore(_) => Op::Restore,
        }
    }

    /// The audited action.
    fn action(&self) -> &'static str {
        match self {
            Job::Backup { .. } => "backup.run",
            Job::Drill { .. } => "backup.drill",
            Job::Check { .. } => "backup.check",
            Job::Prune { .. } => "backup.prune",
            Job::Copy { .. } => "backup.copy",
            Job::Restore(_) => "backup.restore",
        }
    }
}

/// What [`Backups::api_run`] got.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Outcome {
    /// It ended (well or not): the run.
    Done(Box<Run>),
    /// Still going after the wait: look for the run of `op` on `target` started at or after
    /// `since` in the history.
    Running {
        target: String,
        op: Op,
        since: DateTime<Utc>,
    },
}

struct Live {
    /// Finished and unfinished runs, loaded at start and appended as they happen, newest
    /// last per (target, op).
    runs: HashMap<(String, Op), Vec<Run>>,
    running: HashSet<(String, Op)>,
    first_seen: HashMap<String, DateTime<Utc>>,
    /// (source, due time) already reported missed.
    missed: HashSet<(String, DateTime<Utc>)>,
    /// Sources whose RPO / RTO is breached (as last reported).
    rpo_breached: HashMap<String, bool>,
    /// How far the backups and restores running now are, by run id.
    progress: HashMap<String, Arc<RunProgress>>,
}

/// Bytes done so far by a running backup (read) or restore (written), and the total
/// when the run knows it (a restore, once planned; 0 = not known).
#[derive(Default)]
struct RunProgress {
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

/// The backup service.
pub struct Backups {
    engine: Arc<Engine>,
    alerting: Option<Arc<Alerting>>,
    compiled: Arc<Compiled>,
    live: Mutex<Live>,
    permits: Arc<Semaphore>,
    wake: Notify,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("sources", &self.compiled.sources.len())
            .finish_non_exhaustive()
    }
}

fn bad(code: &'static str, m: impl Into<String>) -> SecretsError {
    SecretsError::invalid(code, m)
}

fn conflict(m: impl Into<String>) -> SecretsError {
    SecretsError::new(steward_secrets::Kind::Conflict, "busy", m)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The median of `xs` (not empty).
fn median(xs: &mut [u64]) -> u64 {
    xs.sort_unstable();
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2
    }
}

/// A backup's size against the source's recent ones.
/// How [`Backups::database_restore`] restores.
enum DbRestore {
    /// Into a scratch database, checked and dropped.
    Drill {
        assertions: Vec<steward_backup::Assertion>,
        amcheck: bool,
    },
    /// Into a new database of this name, kept.
    Into(String),
}

/// A passed backup a drill or restore starts from.
struct Proven {
    snapshot: String,
    started_at: DateTime<Utc>,
    snapshot_time: Option<DateTime<Utc>>,
    facts: Facts,
}

struct SizeCheck {
    usual: u64,
    ratio: f64,
    changed: bool,
    /// The previous passed backup was flagged as changed.
    was_flagged: bool,
}

/// Clears the running flag of a (target, op) when dropped, however the run ends.
struct RunningGuard<'a> {
    svc: &'a Backups,
    key: (String, Op),
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.svc.live().running.remove(&self.key);
    }
}

impl Backups {
    /// Builds the service; [`Backups::load`] reads its history, [`Backups::run`] schedules.
    pub fn new(
        engine: Arc<Engine>,
        alerting: Option<Arc<Alerting>>,
        compiled: Compiled,
    ) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(compiled.concurrency));
        Arc::new(Backups {
            engine,
            alerting,
            compiled: Arc::new(compiled),
            live: Mutex::new(Live {
                runs: HashMap::new(),
                running: HashSet::new(),
                first_seen: HashMap::new(),
                missed: HashSet::new(),
                rpo_breached: HashMap::new(),
                progress: HashMap::new(),
            }),
            permits,
            wake: Notify::new(),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        self.engine.clock().now()
    }

    /// The compiled configuration.
    pub fn config(&self) -> &Compiled {
        &self.compiled
    }

    /// Reads the run history, marks runs a crash cut short as failed, and notes when each
    /// source was first seen (the start of its schedule).
    pub async fn load(&self) -> Result<()> {
        let now = self.now();
        let rows = self
            .engine
            .store()
            .records(RUN_KIND)
            .await
            .map_err(SecretsError::from)?;
        let mut runs: HashMap<(String, Op), Vec<Run>> = HashMap::new();
        let mut interrupted = Vec::new();
        for row in rows {
            let Ok(mut run) = serde_json::from_str::<Run>(&row.doc) else {
                tracing::warn!(id = row.id, "unreadable backup run record skipped");
                continue;
            };
            if run.ok.is_none() {
                run.ok = Some(false);
                run.finished_at = Some(now);
                run.error = Some(
                    "interrupted: Steward stopped during the run (no snapshot was recorded for it)"
                        .into(),
                );
                interrupted.push(run.row());
            }
            runs.entry((run.target.clone(), run.op))
                .or_default()
                .push(run);
        }
        for list in runs.values_mut() {
            list.sort_by_key(|a| a.started_at);
        }
        let names: Vec<String> = self
            .compiled
            .sources
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let stamp = now.to_rfc3339();
        let first_seen = self
            .engine
            .store()
            .write(
                None,
                move |tx: &mut dyn Tx| -> Result<Vec<(String, String)>> {
                    for r in &interrupted {
                        tx.record_put(r)?;
                    }
                    let mut out = Vec::new();
                    for n in &names {
                        let key = format!("backup/first_seen/{n}");
                        tx.sys_insert_new(&key, stamp.as_bytes())?;
                        let v = tx.sys_get(&key)?.unwrap_or_default();
                        out.push((n.clone(), String::from_utf8_lossy(&v).into_owned()));
                    }
                    Ok(out)
                },
            )
            .await?;
        let mut live = self.live();
        live.runs = runs;
        for (n, t) in first_seen {
            let t = DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now);
            live.first_seen.insert(n, t);
        }
        Ok(())
    }

    /// The scheduler: looks every [`TICK_MAX`] (or when woken) and starts what is due.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.load().await {
            tracing::error!(error = %e, "cannot load the backup history; backups are not scheduled");
            return;
        }
        loop {
            let (wait, _) = self.tick().await;
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn last(&self, target: &str, op: Op) -> Option<Run> {
        self.live()
            .runs
            .get(&(target.to_string(), op))
            .and_then(|l| l.last().cloned())
    }

    fn last_passed(&self, target: &str, op: Op) -> Option<Run> {
        self.live()
            .runs
            .get(&(target.to_string(), op))
            .and_then(|l| l.iter().rev().find(|r| r.passed()).cloned())
    }

    /// When `schedule` is next due for (target, op): after the last run started, or after
    /// the source was first seen.
    fn due(&self, target: &str, op: Op, schedule: &crate::schedule::When) -> Option<DateTime<Utc>> {
        let from = self
            .last(target, op)
            .map(|r| r.started_at)
            .or_else(|| self.live().first_seen.get(target).copied())
            .unwrap_or_else(|| self.now());
        schedule.next_after(from)
    }

    /// One look: starts every due backup, drill and check, reports missed backups and
    /// RPO breaches. Returns how long to wait before the next look, and the jobs started
    /// (tests drive it with a manual clock and await them).
    pub async fn tick(self: &Arc<Self>) -> (Duration, Vec<tokio::task::JoinHandle<()>>) {
        let now = self.now();
        let mut jobs = Vec::new();
        // Judged before anything starts, so a catch-up does not hide how late it was.
        self.evaluate_rpo().await;
        let mut next = now + chrono::Duration::from_std(TICK_MAX).unwrap_or_default();
        for (i, s) in self.compiled.sources.iter().enumerate() {
            if let Some(when) = &s.schedule {
                if let Some(due) = self.due(&s.name, Op::Backup, when) {
                    if due <= now {
                        let late = now - due
                            > chrono::Duration::from_std(self.compiled.missed_grace)
                                .unwrap_or_default();
                        if late {
                            self.report_missed(s, due).await;
                        }
                        if !self.is_running(&s.name, Op::Backup) {
                            let trigger = if late { "catch-up" } else { "schedule" };
                            let me = self.clone();
                            jobs.push(tokio::spawn(async move {
                                let _ = me.backup(i, trigger).await;
                            }));
                        }
                    } else {
                        next = next.min(due);
                    }
                }
            }
            if let Some(when) = s.drill.as_ref().and_then(|d| d.schedule.as_ref()) {
                if let Some(due) = self.due(&s.name, Op::Drill, when) {
                    if due <= now {
                        if !self.is_running(&s.name, Op::Drill) {
                            let me = self.clone();
                            jobs.push(tokio::spawn(async move {
                                let _ = me.drill(i, "schedule", None, None).await;
                            }));
                        }
                    } else {
                        next = next.min(due);
                    }
                }
            }
        }
        for (r, spec) in self.compiled.repositories.iter().enumerate() {
            let used = self.compiled.sources.iter().any(|s| s.repository == r)
                || self.compiled.sources.iter().any(|s| s.copy_to.contains(&r));
            if !used {
                continue;
            }
            let from = self
                .last(&spec.name, Op::Check)
                .map(|r| r.started_at)
                .unwrap_or_else(|| {
                    self.live()
                        .first_seen
                        .values()
                        .min()
                        .copied()
                        .unwrap_or(now)
                });
            if let Some(due) = self.compiled.check_schedule.next_after(from) {
                if due <= now {
                    if !self.is_running(&spec.name, Op::Check) {
                        let me = self.clone();
                        jobs.push(tokio::spawn(async move {
                            let _ = me.maintain(r, "schedule", None).await;
                        }));
                    }
                } else {
                    next = next.min(due);
                }
            }
        }
        let wait = (next - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(TICK_MAX)
            .max(Duration::from_millis(200));
        (wait, jobs)
    }

    /// Whether a run of `op` on `target` (a source or repository) is going.
    pub fn is_running(&self, target: &str, op: Op) -> bool {
        self.live().running.contains(&(target.to_string(), op))
    }

    /// The recorded runs of `op` on `target`, oldest first.
    pub fn runs_of(&self, target: &str, op: Op) -> Vec<Run> {
        self.live()
            .runs
            .get(&(target.to_string(), op))
            .cloned()
            .unwrap_or_default()
    }

    /// Marks (target, op) running, or says it already is.
    fn claim(&self, target: &str, op: Op) -> Result<RunningGuard<'_>> {
        let key = (target.to_string(), op);
        if !self.live().running.insert(key.clone()) {
            return Err(conflict(format!(
                "a {} of {target} is already running; wait for it to finish (see `steward backup list`)",
                op.as_str()
            )));
        }
        Ok(RunningGuard { svc: self, key })
    }

    async fn report_missed(&self, s: &SourceSpec, due: DateTime<Utc>) {
        if !self.live().missed.insert((s.name.clone(), due)) {
            return;
        }
        let last = self.last_passed(&s.name, Op::Backup).map(|r| r.started_at);
        self.emit(
            "backup.missed",
            json!({"source": s.name, "due_at": due, "last_backup": last,
                   "schedule": s.schedule_text}),
        )
        .await;
    }

    /// Stores an event (the alerting pipeline reads it from the store).
    async fn emit(&self, kind: &'static str, detail: Value) {
        let now = self.now();
        tracing::info!(event = kind, %detail, "backup event");
        let row = EventRow {
            seq: 0,
            time: now,
            kind: kind.into(),
            env: None,
            path: None,
            detail: detail.to_string(),
        };
        if let Err(e) = self
            .engine
            .store()
            .write(None, move |tx: &mut dyn Tx| tx.event_append(&row).map(drop))
            .await
        {
            tracing::error!(event = kind, error = %e, "cannot store a backup event");
        }
    }

    /// Records a run (at its start and its end), keeping the history bounded.
    async fn record(&self, run: &Run) -> Result<()> {
        let row = run.row();
        let key = (run.target.clone(), run.op);
        let stale: Vec<String> = {
            let mut live = self.live();
            let list = live.runs.entry(key).or_default();
            match list.iter_mut().find(|r| r.id == run.id) {
                Some(r) => *r = run.clone(),
                None => list.push(run.clone()),
            }
            let over = list.len().saturating_sub(self.compiled.history);
            list.drain(..over).map(|r| r.id).collect()
        };
        self.engine
            .store()
            .write(None, move |tx: &mut dyn Tx| -> Result<()> {
                tx.record_put(&row)?;
                for id in &stale {
                    tx.record_delete(RUN_KIND, id)?;
                }
                Ok(())
            })
            .await
    }

    async fn finish(
        &self,
        mut run: Run,
        started: Instant,
        result: std::result::Result<(), String>,
    ) -> Run {
        run.finished_at = Some(self.now());
        run.duration_s = Some(secs(started.elapsed()));
        match result {
            Ok(()) => run.ok = Some(true),
            Err(e) => {
                run.ok = Some(false);
                run.error = Some(e);
            }
        }
        if let Err(e) = self.record(&run).await {
            tracing::error!(run = run.id, error = %e, "cannot record a backup run");
        }
        run
    }

    // ---- repositories and credentials ----

    async fn secret(
        &self,
        reference: &str,
        what: &str,
    ) -> std::result::Result<Zeroizing<String>, String> {
        self.engine
            .resolve_reference(reference)
            .await
            .map_err(|e| format!("cannot read the {what} from the secret {reference}: {e}"))
    }

    /// Opens (or, when allowed, creates) repository `r`. Blocking IO runs on the blocking
    /// pool.
    async fn open_repo(&self, r: usize) -> std::result::Result<Arc<Repository>, String> {
        let spec = self.compiled.repositories[r].clone();
        let password = self
            .secret(&spec.password_secret, "repository password")
            .await?;
        let creds = match (&spec.access_key_id_secret, &spec.secret_access_key_secret) {
            (Some(a), Some(b)) => Some((
                self.secret(a, "S3 access key id").await?,
                self.secret(b, "S3 secret access key").await?,
            )),
            _ => None,
        };
        tokio::task::spawn_blocking(move || open_repo_blocking(&spec, &password, creds))
            .await
            .map_err(|e| format!("the repository task failed: {e}"))?
    }

    async fn password_of(
        &self,
        server: &Server,
    ) -> std::result::Result<Option<Zeroizing<String>>, String> {
        match &server.password_secret {
            Some(r) => self.secret(r, "database password").await.map(Some),
            None => Ok(None),
        }
    }

    async fn source_of(&self, s: &SourceSpec) -> std::result::Result<Runner, String> {
        Ok(Runner::Source(match &s.what {
            What::Postgres {
                server,
                database,
                base: true,
            } => {
                let mut e = steward_backup::Endpoint::new(&server.host, server.port, &server.user);
                e.password = self.password_of(server).await?;
                return Ok(Runner::Base(e, database.clone()));
            }
            What::Postgres {
                server, database, ..
            } => {
                let mut p = steward_backup::Postgres::new(
                    &server.host,
                    server.port,
                    &server.user,
                    database,
                );
                p.endpoint.password = self.password_of(server).await?;
                Source::Postgres(p)
            }
            What::MariaDb { server, database } => {
                let mut p =
                    steward_backup::MariaDb::new(&server.host, server.port, &server.user, database);
                p.endpoint.password = self.password_of(server).await?;
                Source::MariaDb(p)
            }
            What::Redis { server, db } => {
                let mut p = steward_backup::Redis::new(&server.host, server.port);
                if !server.user.is_empty() {
                    p.username = Some(server.user.clone());
                }
                p.password = self.password_of(server).await?;
                p.db = *db;
                Source::Redis(p)
            }
            What::Sqlite { path } => Source::Sqlite(steward_backup::Sqlite::new(path.clone())),
            What::Directory { paths, excludes } => {
                let mut d = steward_backup::Directory::new(paths.clone());
                d.excludes = excludes.clone();
                Source::Directory(d)
            }
        }))
    }

    // ---- the operations ----

    /// Backs source `i` up now: maintenance window, backup, size comparison, copies,
    /// retention. Returns the recorded run (failed runs too).
    pub async fn backup(&self, i: usize, trigger: &str) -> Result<Run> {
        let s = self.compiled.sources[i].clone();
        let _guard = self.claim(&s.name, Op::Backup)?;
        let _permit = self.permits.clone().acquire_owned().await.ok();
        let started = Instant::now();
        let mut run = Run::start(Op::Backup, &s.name, trigger, self.now());
        self.record(&run).await?;
        let window = self.open_window(&s).await;
        let result = self.backup_steps(&s, &mut run).await;
        self.untrack(&run.id);
        // Compared before the run is recorded as done, so it is written once, with the result.
        let size = match (&result, run.bytes) {
            (Ok(()), Some(bytes)) => self.size_check(&s, bytes),
            _ => None,
        };
        if let (Some(c), Value::Object(m)) = (&size, &mut run.detail) {
            m.insert("size_changed".into(), json!(c.changed));
            m.insert("usual_bytes".into(), json!(c.usual));
        }
        if let (Some(id), Some(a)) = (window, &self.alerting) {
            if let Err(e) = a.close_window(&id).await {
                tracing::warn!(source = s.name, error = %e, "cannot close the backup's maintenance window");
            }
        }
        let run = self.finish(run, started, result).await;
        match run.ok {
            Some(true) => {
                self.emit(
                    "backup.succeeded",
                    json!({"source": s.name, "snapshot": run.snapshot, "bytes": run.bytes,
                           "seconds": run.duration_s}),
                )
                .await;
                if let Some(c) = size {
                    self.report_size(&s, run.bytes.unwrap_or(0), &c).await;
                }
            }
            _ => {
                self.emit(
                    "backup.failed",
                    json!({"source": s.name, "reason": run.error}),
                )
                .await;
            }
        }
        self.evaluate_rpo().await;
        Ok(run)
    }

    async fn open_window(&self, s: &SourceSpec) -> Option<String> {
        let a = self.alerting.as_ref()?;
        if s.maintenance.is_empty() {
            return None;
        }
        match a
            .open_window(
                &format!("backup of {}", s.name),
                s.maintenance.clone(),
                WINDOW_MAX,
            )
            .await
        {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(source = s.name, error = %e, "cannot open the backup's maintenance window");
                None
            }
        }
    }

    /// Makes the run's progress visible in `/v1/sys/backup/runs` (for `steward backup
    /// list` and the CLI's progress line) until [`Self::untrack`], through the callback
    /// returned.
    fn track(&self, run_id: &str) -> steward_repo::ProgressFn {
        let live = Arc::new(RunProgress::default());
        self.live()
            .progress
            .insert(run_id.to_string(), live.clone());
        Arc::new(move |p: &steward_repo::Progress| {
            use std::sync::atomic::Ordering::Relaxed;
            live.done.store(p.bytes_done, Relaxed);
            if let Some(t) = p.bytes_total {
                live.total.store(t, Relaxed);
            }
        })
    }

    fn untrack(&self, run_id: &str) {
        self.live().progress.remove(run_id);
    }

    async fn backup_steps(&self, s: &SourceSpec, run: &mut Run) -> std::result::Result<(), String> {
        let repo = self.open_repo(s.repository).await?;
        let source = self.source_of(s).await?;
        let name = s.name.clone();
        let r2 = repo.clone();
        let progress = self.track(&run.id);
        let done = tokio::task::spawn_blocking(move || match source {
            Runner::Source(src) => src.backup_with(&r2, &name, Some(progress)),
            Runner::Base(endpoint, database) => steward_backup::base_backup(
                &r2,
                &endpoint,
                &name,
                &steward_backup::BaseBackupOptions {
                    database: Some(database),
                    ..Default::default()
                },
            ),
        })
        .await
        .map_err(|e| format!("the backup task failed: {e}"))?
        .map_err(|e| e.to_string())?;
        let id = done.snapshot_id;
        run.snapshot = Some(id.to_hex());
        run.bytes = Some(done.bytes);
        run.facts = Some(done.facts.clone());
        let r3 = repo.clone();
        run.snapshot_time = tokio::task::spawn_blocking(move || {
            r3.load_snapshot(&id.to_hex()).map(|(_, sn)| sn.time).ok()
        })
        .await
        .ok()
        .flatten();
        let mut detail = serde_json::Map::new();
        // Off-site copies: a failed copy is its own alert; the backup itself stands.
        let mut copies = Vec::new();
        for &c in &s.copy_to {
            let dest = self.compiled.repositories[c].name.clone();
            let outcome = self.copy_one(&repo, c, id).await;
            match &outcome {
                Ok(()) => {
                    self.emit(
                        "backup.copied",
                        json!({"source": s.name, "repository": dest, "snapshot": id.to_hex()}),
                    )
                    .await;
                }
                Err(e) => {
                    self.emit(
                        "backup.copy_failed",
                        json!({"source": s.name, "repository": dest, "reason": e}),
                    )
                    .await;
                }
            }
            copies.push(json!({"repository": dest, "ok": outcome.is_ok(), "error": outcome.err()}));
        }
        if !copies.is_empty() {
            detail.insert("copies".into(), Value::Array(copies));
        }
        if let Some(r) = &s.retention {
            let now = self.now();
            let policy = r.clone();
            let name = s.name.clone();
            let r4 = repo.clone();
            let forgotten =
                tokio::task::spawn_blocking(move || -> std::result::Result<usize, String> {
                    let snaps = source_snapshots(&r4, &name).map_err(|e| e.to_string())?;
                    let plan = retention::plan(&snaps, &policy, now);
                    r4.remove_snapshots(&plan.forget())
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| format!("the retention task failed: {e}"))?;
            match forgotten {
                Ok(n) => {
                    detail.insert("forgotten".into(), json!(n));
                }
                Err(e) => {
                    detail.insert("retention_error".into(), json!(e));
                    tracing::warn!(source = s.name, error = %e, "retention failed; the backup stands");
                }
            }
        }
        run.detail = Value::Object(detail);
        Ok(())
    }

    async fn copy_one(
        &self,
        src: &Arc<Repository>,
        to: usize,
        id: Id,
    ) -> std::result::Result<(), String> {
        let dst = self.open_repo(to).await?;
        let src = src.clone();
        tokio::task::spawn_blocking(move || {
            steward_repo::copy_snapshots(&src, &dst, &[id])
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the copy task failed: {e}"))?
    }

    /// How a backup of `bytes` compares with the source's recent passed backups (None with
    /// fewer than [`SIZE_MIN_HISTORY`] of them).
    fn size_check(&self, s: &SourceSpec, bytes: u64) -> Option<SizeCheck> {
        let live = self.live();
        let passed: Vec<&Run> = live
            .runs
            .get(&(s.name.clone(), Op::Backup))
            .map(|l| l.iter().filter(|r| r.passed()).collect())
            .unwrap_or_default();
        let was_flagged = passed
            .last()
            .is_some_and(|r| r.detail.get("size_changed").and_then(Value::as_bool) == Some(true));
        let mut earlier: Vec<u64> = passed
            .iter()
            .rev()
            .take(SIZE_WINDOW)
            .filter_map(|r| r.bytes)
            .collect();
        if earlier.len() < SIZE_MIN_HISTORY {
            return None;
        }
        let usual = median(&mut earlier).max(1);
        let ratio = bytes.max(1) as f64 / usual as f64;
        Some(SizeCheck {
            usual,
            ratio,
            changed: ratio > s.size_change_factor || ratio < 1.0 / s.size_change_factor,
            was_flagged,
        })
    }

    /// The size events: changed, or back to normal after a change.
    async fn report_size(&self, s: &SourceSpec, bytes: u64, c: &SizeCheck) {
        if c.changed {
            self.emit(
                "backup.size_changed",
                json!({"source": s.name, "bytes": bytes, "usual_bytes": c.usual,
                       "ratio": (c.ratio * 100.0).round() / 100.0, "factor": s.size_change_factor}),
            )
            .await;
        } else if c.was_flagged {
            self.emit(
                "backup.size_normal",
                json!({"source": s.name, "bytes": bytes, "usual_bytes": c.usual}),
            )
            .await;
        }
    }

    /// Drills source `i` now: restores its newest backup (or `snapshot`) into a scratch
    /// database, checks it, drops it; a `mode = "base"` source is recovered in a throwaway
    /// cluster to `to_time` (default: the configured point).
    pub async fn drill(
        &self,
        i: usize,
        trigger: &str,
        snapshot: Option<String>,
        to_time: Option<DateTime<Utc>>,
    ) -> Result<Run> {
        let s = self.compiled.sources[i].clone();
        let Some(d) = s.drill.clone() else {
            return Err(bad(
                "no_drill",
                format!(
                    "source {} has no drill configured: add a [backup.sources.drill] table (database sources only)",
                    s.name
                ),
            ));
        };
        match (&d.pitr, &snapshot, &to_time) {
            (Some(_), Some(_), _) => {
                return Err(bad(
                    "invalid_drill",
                    format!("{} takes base backups: its drill recovers to a time (to_time), not a snapshot", s.name),
                ))
            }
            (None, _, Some(_)) => {
                return Err(bad(
                    "invalid_drill",
                    format!("{} takes logical dumps: its drill restores a snapshot; to_time is for mode = \"base\" sources", s.name),
                ))
            }
            _ => {}
        }
        let _guard = self.claim(&s.name, Op::Drill)?;
        let _permit = self.permits.clone().acquire_owned().await.ok();
        let started = Instant::now();
        let mut run = Run::start(Op::Drill, &s.name, trigger, self.now());
        self.record(&run).await?;
        let result = match &d.pitr {
            Some(p) => self.pitr_drill_steps(&s, &d, p, to_time, &mut run).await,
            None => self.drill_steps(&s, &d, snapshot, &mut run).await,
        };
        let run = self.finish(run, started, result).await;
        if run.passed() {
            self.emit(
                "drill.passed",
                json!({"source": s.name, "snapshot": run.snapshot, "restore_seconds": run.restore_s}),
            )
            .await;
        } else {
            self.emit(
                "drill.failed",
                json!({"source": s.name, "reason": run.error, "snapshot": run.snapshot}),
            )
            .await;
        }
        if let (Some(target), Some(measured)) =
            (s.rto_target, run.restore_s.filter(|_| run.passed()))
        {
            if measured > target.as_secs_f64() {
                self.emit(
                    "dr.rto_breached",
                    json!({"source": s.name, "rto_seconds": measured, "target_seconds": target.as_secs_f64()}),
                )
                .await;
            } else {
                self.emit(
                    "dr.rto_met",
                    json!({"source": s.name, "rto_seconds": measured, "target_seconds": target.as_secs_f64()}),
                )
                .await;
            }
        }
        self.evaluate_rpo().await;
        Ok(run)
    }

    /// The passed backup that recorded `snapshot` (or the newest one), with its facts.
    fn backup_for(
        &self,
        source: &str,
        snapshot: Option<&str>,
    ) -> std::result::Result<Proven, String> {
        let live = self.live();
        let found = live
            .runs
            .get(&(source.to_string(), Op::Backup))
            .and_then(|l| {
                l.iter().rev().find_map(|r| match (&r.facts, &r.snapshot) {
                    (Some(facts), Some(id))
                        if r.passed() && snapshot.is_none_or(|want| id.starts_with(want)) =>
                    {
                        Some(Proven {
                            snapshot: id.clone(),
                            started_at: r.started_at,
                            snapshot_time: r.snapshot_time,
                            facts: facts.clone(),
                        })
                    }
                    _ => None,
                })
            });
        found.ok_or_else(|| match snapshot {
            Some(s) => format!("no backup of {source} recorded snapshot {s}; list them with `steward backup list {source}`"),
            None => format!("{source} has no successful backup yet: run `steward backup run {source}` first"),
        })
    }

    async fn drill_steps(
        &self,
        s: &SourceSpec,
        d: &crate::config::DrillSpec,
        snapshot: Option<String>,
        run: &mut Run,
    ) -> std::result::Result<(), String> {
        let proven = self.backup_for(&s.name, snapshot.as_deref())?;
        // The recovery point proven: when that backup began (the service's clock).
        run.snapshot_time = Some(proven.started_at);
        let how = DbRestore::Drill {
            assertions: d.assertions.clone(),
            amcheck: d.amcheck,
        };
        self.database_restore(s, &d.server, proven, how, run).await
    }

    /// Restores a database backup with steward-backup's drill machinery, on `server`: as a
    /// drill (scratch database, checked, dropped) or into a new database that is kept. Fills
    /// the run's snapshot, bytes, restore time and checks; fails when a check failed.
    async fn database_restore(
        &self,
        s: &SourceSpec,
        server: &Server,
        proven: Proven,
        how: DbRestore,
        run: &mut Run,
    ) -> std::result::Result<(), String> {
        run.snapshot = Some(proven.snapshot.clone());
        let repo = self.open_repo(s.repository).await?;
        let password = self.password_of(server).await?;
        let server = server.clone();
        let kind = s.what.clone();
        let verb = match how {
            DbRestore::Drill { .. } => "drill",
            DbRestore::Into(_) => "restore",
        };
        let report =
            tokio::task::spawn_blocking(move || -> std::result::Result<DrillReport, String> {
                let (_, sn) = repo
                    .load_snapshot(&proven.snapshot)
                    .map_err(|e| e.to_string())?;
                let facts = &proven.facts;
                let r = match kind {
                    What::Postgres { .. } => {
                        let mut d = steward_backup::PostgresDrill::new(
                            &server.host,
                            server.port,
                            &server.user,
                        );
                        d.endpoint.password = password;
                        match how {
                            DbRestore::Drill {
                                assertions,
                                amcheck,
                            } => {
                                d.assertions = assertions;
                                d.amcheck = amcheck;
                                d.run(&repo, &sn, facts)
                            }
                            DbRestore::Into(db) => d.restore_into_database(&repo, &sn, facts, &db),
                        }
                    }
                    What::MariaDb { .. } => {
                        let mut d = steward_backup::MariaDbDrill::new(
                            &server.host,
                            server.port,
                            &server.user,
                        );
                        d.endpoint.password = password;
                        match how {
                            DbRestore::Drill { assertions, .. } => {
                                d.assertions = assertions;
                                d.run(&repo, &sn, facts)
                            }
                            DbRestore::Into(db) => d.restore_into_database(&repo, &sn, facts, &db),
                        }
                    }
                    _ => return Err("only database sources restore into a database".into()),
                };
                r.map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("the {verb} task failed: {e}"))??;
        take_report(run, report, verb)
    }

    /// Recovers a `mode = "base"` source's base backup and WAL in a throwaway cluster to
    /// `to_time` (or the configured point), checks it and removes it (see
    /// [`steward_backup::PitrDrill`]). The recovery point proven is the target, or
    /// without one the last commit replayed (at least the base backup's time).
    async fn pitr_drill_steps(
        &self,
        s: &SourceSpec,
        d: &crate::config::DrillSpec,
        p: &crate::config::PitrDrillSpec,
        to_time: Option<DateTime<Utc>>,
        run: &mut Run,
    ) -> std::result::Result<(), String> {
        let What::Postgres { database, .. } = &s.what else {
            return Err("only PostgreSQL base backups recover to a point in time".into());
        };
        let target = to_time.or_else(|| {
            p.point_ago
                .and_then(|ago| chrono::Duration::from_std(ago).ok())
                .map(|ago| self.now() - ago)
        });
        let mut drill = steward_backup::PitrDrill::new(&s.name, database, &d.server.user);
        drill.target_time = target;
        drill.os_user = p.os_user.clone();
        drill.pg_bin = p.pg_bin.clone();
        if let Some(dir) = &p.scratch_dir {
            drill.scratch_dir = dir.clone();
        }
        drill.timeout = p.timeout;
        drill.assertions = d.assertions.clone();
        drill.amcheck = d.amcheck;
        let repo = self.open_repo(s.repository).await?;
        let (report, recovery) = tokio::task::spawn_blocking(move || drill.run(&repo))
            .await
            .map_err(|e| format!("the drill task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        run.snapshot = Some(recovery.base_snapshot.clone());
        run.snapshot_time = Some(match recovery.target_time {
            Some(t) => t,
            None => recovery
                .recovered_to
                .map_or(recovery.base_time, |t| t.max(recovery.base_time)),
        });
        run.detail = json!({ "pitr": recovery });
        take_report(run, report, "drill")
    }

    /// Checks repository `r` (structure, then the day's share of the data, or `subset`)
    /// and prunes it when a source in it has retention rules.
    pub async fn maintain(
        &self,
        r: usize,
        trigger: &str,
        subset: Option<steward_repo::ReadDataSubset>,
    ) -> Result<Run> {
        let name = self.compiled.repositories[r].name.clone();
        let _guard = self.claim(&name, Op::Check)?;
        let _permit = self.permits.clone().acquire_owned().await.ok();
        let started = Instant::now();
        let now = self.now();
        let mut run = Run::start(Op::Check, &name, trigger, now);
        self.record(&run).await?;
        let days = self.compiled.read_data_days;
        let subset = subset.unwrap_or_else(|| {
            let day = (now.timestamp().div_euclid(86_400)) as u64;
            steward_repo::ReadDataSubset::Part {
                n: (day % u64::from(days)) as u32 + 1,
                m: days,
            }
        });
        let result: std::result::Result<(), String> = async {
            let repo = self.open_repo(r).await?;
            let sub = subset.clone();
            let (structure, data) = tokio::task::spawn_blocking(move || {
                let s = steward_repo::check(&repo);
                let d = steward_repo::read_data(&repo, sub);
                (s, d)
            })
            .await
            .map_err(|e| format!("the check task failed: {e}"))?;
            let structure = structure.map_err(|e| e.to_string())?;
            let data = data.map_err(|e| e.to_string())?;
            let mut problems: Vec<String> =
                structure.problems.iter().map(|p| p.to_string()).collect();
            problems.extend(data.problems.iter().map(|p| p.to_string()));
            run.detail = json!({
                "subset": subset_text(&subset),
                "snapshots_checked": structure.snapshots_checked,
                "packs_checked": structure.packs_checked,
                "packs_read": data.packs_checked,
                "blobs_verified": data.blobs_verified,
                "problems": problems,
                "warnings": structure.warnings,
            });
            if problems.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "the repository {name} is damaged: {}",
                    problems.join("; ")
                ))
            }
        }
        .await;
        let run = self.finish(run, started, result).await;
        if run.passed() {
            self.emit("backup.check_passed", json!({"repository": name}))
                .await;
            let prunes = self
                .compiled
                .sources
                .iter()
                .any(|s| s.repository == r && s.retention.is_some());
            if prunes {
                let _ = self.prune(r, "schedule", false).await;
            }
        } else {
            self.emit(
                "backup.check_failed",
                json!({"repository": name, "reason": run.error}),
            )
            .await;
        }
        Ok(run)
    }

    /// Frees the data no snapshot of repository `r` uses any more (restic's prune).
    pub async fn prune(&self, r: usize, trigger: &str, dry_run: bool) -> Result<Run> {
        let name = self.compiled.repositories[r].name.clone();
        let _guard = self.claim(&name, Op::Prune)?;
        let started = Instant::now();
        let mut run = Run::start(Op::Prune, &name, trigger, self.now());
        self.record(&run).await?;
        let result: std::result::Result<(), String> = async {
            let repo = self.open_repo(r).await?;
            let summary = tokio::task::spawn_blocking(move || {
                steward_repo::prune(
                    &repo,
                    &steward_repo::PruneOptions {
                        dry_run,
                        ..Default::default()
                    },
                )
            })
            .await
            .map_err(|e| format!("the prune task failed: {e}"))?
            .map_err(|e| e.to_string())?;
            run.detail = json!({
                "dry_run": summary.dry_run,
                "snapshots": summary.snapshots,
                "blobs_removed": summary.blobs_removed,
                "packs_before": summary.packs_before,
                "packs_deleted": summary.packs_deleted,
                "packs_repacked": summary.packs_repacked,
                "packs_after": summary.packs_after,
            });
            Ok(())
        }
        .await;
        Ok(self.finish(run, started, result).await)
    }

    /// Copies snapshots of source `i` (the newest, or `snapshot`) to repository `to`.
    pub async fn copy(&self, i: usize, to: usize, snapshot: Option<String>) -> Result<Run> {
        let s = self.compiled.sources[i].clone();
        if to == s.repository {
            return Err(bad(
                "same_repository",
                "the snapshot is already in that repository; copy to another one",
            ));
        }
        let _guard = self.claim(&s.name, Op::Copy)?;
        let started = Instant::now();
        let mut run = Run::start(Op::Copy, &s.name, "manual", self.now());
        self.record(&run).await?;
        let dest = self.compiled.repositories[to].name.clone();
        let result: std::result::Result<(), String> = async {
            let src = self.open_repo(s.repository).await?;
            let name = s.name.clone();
            let src2 = src.clone();
            let id = tokio::task::spawn_blocking(move || -> std::result::Result<Id, String> {
                match snapshot {
                    Some(sp) => src2
                        .load_snapshot(&sp)
                        .map(|(id, _)| id)
                        .map_err(|e| e.to_string()),
                    None => source_snapshots(&src2, &name)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .filter(|(_, sn)| {
                            !sn.tags
                                .iter()
                                .any(|t| t == steward_backup::pitr::WAL_KIND_TAG)
                        })
                        .max_by_key(|(_, sn)| sn.time)
                        .map(|(id, _)| id)
                        .ok_or_else(|| format!("{name} has no snapshot to copy")),
                }
            })
            .await
            .map_err(|e| format!("the copy task failed: {e}"))??;
            run.snapshot = Some(id.to_hex());
            self.copy_one(&src, to, id).await?;
            run.detail = json!({"repository": dest});
            Ok(())
        }
        .await;
        Ok(self.finish(run, started, result).await)
    }

    /// Restores a snapshot of a source into a directory, or a database source into a new
    /// database. A failed database restore drops the database it created.
    pub async fn restore(&self, req: RestoreRequest) -> Result<Run> {
        let s = self.source_index(&req.source)?.1.clone();
        if req.target_dir.is_some() == req.database.is_some() {
            return Err(bad(
                "invalid_restore",
                "give exactly one of target_dir (restore the files) or database (restore a database source into a new database)",
            ));
        }
        if let Some(dir) = &req.target_dir {
            if !dir.is_absolute() {
                return Err(bad(
                    "invalid_restore",
                    "target_dir must be an absolute path",
                ));
            }
            // A restore never overwrites: it goes into a new or empty directory.
            if let Ok(mut entries) = std::fs::read_dir(dir) {
                if entries.next().is_some() {
                    return Err(bad(
                        "invalid_restore",
                        format!(
                            "{} is not empty; restore into a new or empty directory, then move what you need",
                            dir.display()
                        ),
                    ));
                }
            }
        }
        if req.database.is_some() && !s.what.restores_into_database() {
            return Err(bad(
                "invalid_restore",
                format!(
                    "{} is a {} source; restore it with target_dir",
                    s.name,
                    s.what.kind()
                ),
            ));
        }
        let _guard = self.claim(&s.name, Op::Restore)?;
        let started = Instant::now();
        let mut run = Run::start(Op::Restore, &s.name, "manual", self.now());
        self.record(&run).await?;
        let result: std::result::Result<(), String> = async {
            let repo = self.open_repo(s.repository).await?;
            match (&req.target_dir, &req.database) {
                (Some(dir), _) => {
                    let dir = dir.clone();
                    let name = s.name.clone();
                    let want = req.snapshot.clone();
                    let opts = steward_repo::RestoreOptions {
                        progress: Some(self.track(&run.id)),
                        ..Default::default()
                    };
                    let restored =
                        tokio::task::spawn_blocking(move || -> std::result::Result<_, String> {
                            let (id, sn) = match want {
                                Some(w) => repo.load_snapshot(&w).map_err(|e| e.to_string())?,
                                None => newest_backup(&repo, &name)?,
                            };
                            let summary = steward_repo::restore(&repo, &sn, &dir, &opts)
                                .map_err(|e| e.to_string())?;
                            Ok((id, sn.time, summary))
                        })
                        .await;
                    self.untrack(&run.id);
                    let (id, time, summary) =
                        restored.map_err(|e| format!("the restore task failed: {e}"))??;
                    run.snapshot = Some(id.to_hex());
                    run.snapshot_time = Some(time);
                    run.bytes = Some(summary.bytes_written);
                    run.restore_s = Some(secs(summary.duration));
                    run.detail = json!({"target_dir": req.target_dir, "files": summary.files});
                    Ok(())
                }
                (None, Some(db)) => {
                    let proven = self.backup_for(&s.name, req.snapshot.as_deref())?;
                    let server = s
                        .what
                        .database_server()
                        .ok_or("only database sources restore into a database")?
                        .clone();
                    run.snapshot_time = proven.snapshot_time;
                    run.detail = json!({"database": db});
                    let how = DbRestore::Into(db.clone());
                    self.database_restore(&s, &server, proven, how, &mut run)
                        .await
                }
                (None, None) => Err("nothing to restore into".into()),
            }
        }
        .await;
        Ok(self.finish(run, started, result).await)
    }

    /// Snapshots of a source, newest first.
    pub async fn snapshots(&self, source: &str) -> Result<Vec<SnapshotInfo>> {
        let (_, s) = self.source_index(source)?;
        let repo = self.open_repo(s.repository).await.map_err(|e| {
            SecretsError::new(
                steward_secrets::Kind::Unavailable,
                "repository_unavailable",
                e,
            )
        })?;
        let name = s.name.clone();
        let list = tokio::task::spawn_blocking(move || source_snapshots(&repo, &name))
            .await
            .map_err(|e| SecretsError::internal(e.to_string()))?
            .map_err(|e| {
                SecretsError::new(
                    steward_secrets::Kind::Unavailable,
                    "repository_unavailable",
                    e.to_string(),
                )
            })?;
        let mut out: Vec<SnapshotInfo> = list
            .into_iter()
            .map(|(id, sn)| SnapshotInfo {
                short_id: id.short(),
                id: id.to_hex(),
                time: sn.time,
                tags: sn.tags.clone(),
                paths: sn.paths.clone(),
            })
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.time));
        Ok(out)
    }

    fn source_index(&self, name: &str) -> Result<(usize, &SourceSpec)> {
        self.compiled.source(name).ok_or_else(|| {
            SecretsError::not_found(format!(
                "no backup source is named {name:?}; the sources are: {}",
                self.compiled
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    fn repo_index(&self, name: &str) -> Result<usize> {
        self.compiled
            .repositories
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| {
                SecretsError::not_found(format!("no backup repository is named {name:?}"))
            })
    }

    /// Compares each source's recovery point with its target and reports changes.
    async fn evaluate_rpo(&self) {
        let rep = self.report_now();
        for src in &rep.sources {
            let Some(met) = src.rpo_met else { continue };
            let before = self.live().rpo_breached.insert(src.name.clone(), !met);
            if before == Some(!met) {
                continue;
            }
            let kind = if met { "dr.rpo_met" } else { "dr.rpo_breached" };
            // A first look that finds the target met needs no event.
            if before.is_none() && met {
                continue;
            }
            self.emit(
                kind,
                json!({"source": src.name, "rpo_seconds": src.rpo_s, "target_seconds": src.rpo_target_s}),
            )
            .await;
        }
    }

    /// The DR report, unauthenticated (for the dashboard, which authorizes its session).
    pub fn report_now(&self) -> DrReport {
        let now = self.now();
        let live = self.live();
        report::build(&self.compiled, &live.runs, &live.first_seen, now)
    }

    // ---- API (authorized and audited) ----

    async fn authorize(
        &self,
        ctx: &RequestCtx,
        action: &str,
        cap: Capability,
    ) -> Result<steward_store::AuditDraft> {
        let (caller, draft) = self.engine.authorize(ctx, action, None, cap).await?;
        if let Err(e) = caller.require(cap, "sys", "backup") {
            return self.engine.complete(ctx, draft, Err(e)).await;
        }
        Ok(draft)
    }

    /// `GET /v1/backup/sources`.
    pub async fn api_sources(&self, ctx: &RequestCtx) -> Result<Vec<SourceInfo>> {
        let draft = self
            .authorize(ctx, "backup.sources", Capability::Read)
            .await?;
        let out = self.source_infos();
        self.engine.complete(ctx, draft, Ok(out)).await
    }

    fn source_infos(&self) -> Vec<SourceInfo> {
        self.compiled
            .sources
            .iter()
            .map(|s| {
                let running: Vec<Op> = {
                    let live = self.live();
                    live.running
                        .iter()
                        .filter(|(t, _)| *t == s.name)
                        .map(|(_, o)| *o)
                        .collect()
                };
                SourceInfo {
                    name: s.name.clone(),
                    kind: s.type_name.clone(),
                    repository: self.compiled.repositories[s.repository].name.clone(),
                    schedule: s.schedule_text.clone(),
                    next_backup: s
                        .schedule
                        .as_ref()
                        .and_then(|w| self.due(&s.name, Op::Backup, w)),
                    drill_schedule: s.drill.as_ref().and_then(|d| d.schedule_text.clone()),
                    next_drill: s
                        .drill
                        .as_ref()
                        .and_then(|d| d.schedule.as_ref())
                        .and_then(|w| self.due(&s.name, Op::Drill, w)),
                    retention: s.retention.as_ref().map(retention::describe),
                    copy_to: s
                        .copy_to
                        .iter()
                        .map(|&c| self.compiled.repositories[c].name.clone())
                        .collect(),
                    running,
                    last_backup: self.last(&s.name, Op::Backup),
                }
            })
            .collect()
    }

    /// `GET /v1/backup/runs`: newest first.
    pub async fn api_runs(
        &self,
        ctx: &RequestCtx,
        target: Option<&str>,
        op: Option<Op>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        let draft = self.authorize(ctx, "backup.runs", Capability::Read).await?;
        let mut out: Vec<Run> = self
            .live()
            .runs
            .iter()
            .filter(|((t, o), _)| target.is_none_or(|x| x == t) && op.is_none_or(|x| x == *o))
            .flat_map(|(_, l)| l.iter().cloned())
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.started_at));
        out.truncate(limit.clamp(1, 10_000));
        {
            // A running backup shows the bytes it has read so far, and the size of the
            // source's last passed backup as the bytes to expect (for an ETA); a running
            // restore the bytes written and its own total.
            use std::sync::atomic::Ordering::Relaxed;
            let live = self.live();
            for r in out.iter_mut().filter(|r| r.ok.is_none()) {
                if let Some(p) = live.progress.get(&r.id) {
                    r.bytes = Some(p.done.load(Relaxed));
                    let expected = Some(p.total.load(Relaxed)).filter(|&t| t > 0).or_else(|| {
                        live.runs
                            .get(&(r.target.clone(), Op::Backup))
                            .and_then(|l| l.iter().rev().find(|p| p.passed()))
                            .and_then(|p| p.bytes)
                    });
                    if let Some(n) = expected {
                        r.detail = json!({ "expected_bytes": n });
                    }
                }
            }
        }
        self.engine.complete(ctx, draft, Ok(out)).await
    }

    /// Runs `job` now for an API caller: checks access, starts it on its own task (so it
    /// finishes even if the caller goes away) and waits up to `wait` for it. A job still
    /// going then is [`Outcome::Running`]: its run appears in the history when it ends.
    pub async fn api_run(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        job: Job,
        wait: Duration,
    ) -> Result<Outcome> {
        let draft = self.authorize(ctx, job.action(), Capability::Write).await?;
        let r = self.start(job, wait).await;
        self.engine.complete(ctx, draft, r).await
    }

    async fn start(self: &Arc<Self>, job: Job, wait: Duration) -> Result<Outcome> {
        let since = self.now();
        let me = self.clone();
        let (target, op) = match &job {
            Job::Backup { source } | Job::Drill { source, .. } | Job::Copy { source, .. } => {
                (self.source_index(source)?.1.name.clone(), job.op())
            }
            Job::Restore(req) => (self.source_index(&req.source)?.1.name.clone(), Op::Restore),
            Job::Check { repository, .. } | Job::Prune { repository, .. } => {
                self.repo_index(repository)?;
                (repository.clone(), job.op())
            }
        };
        // A run of the same kind already going: the job's own claim answers 409 at once.
        let handle = tokio::spawn(async move {
            match job {
                Job::Backup { source } => {
                    let (i, _) = me.source_index(&source)?;
                    me.backup(i, "manual").await
                }
                Job::Drill {
                    source,
                    snapshot,
                    to_time,
                } => {
                    let (i, _) = me.source_index(&source)?;
                    me.drill(i, "manual", snapshot, to_time).await
                }
                Job::Check {
                    repository,
                    read_data,
                } => {
                    let r = me.repo_index(&repository)?;
                    let subset = read_data.as_deref().map(parse_subset).transpose()?;
                    me.maintain(r, "manual", subset).await
                }
                Job::Prune {
                    repository,
                    dry_run,
                } => {
                    let r = me.repo_index(&repository)?;
                    me.prune(r, "manual", dry_run).await
                }
                Job::Copy {
                    source,
                    to,
                    snapshot,
                } => {
                    let (i, _) = me.source_index(&source)?;
                    let to = me.repo_index(&to)?;
                    me.copy(i, to, snapshot).await
                }
                Job::Restore(req) => me.restore(req).await,
            }
        });
        match tokio::time::timeout(wait, handle).await {
            Ok(Ok(r)) => r.map(|run| Outcome::Done(Box::new(run))),
            Ok(Err(e)) => Err(SecretsError::internal(format!(
                "the {} task failed: {e}",
                op.as_str()
            ))),
            Err(_) => Ok(Outcome::Running { target, op, since }),
        }
    }

    /// `GET /v1/backup/snapshots?source=`.
    pub async fn api_snapshots(&self, ctx: &RequestCtx, source: &str) -> Result<Vec<SnapshotInfo>> {
        let draft = self
            .authorize(ctx, "backup.snapshots", Capability::Read)
            .await?;
        let r = self.snapshots(source).await;
        self.engine.complete(ctx, draft, r).await
    }

    /// `GET /v1/dr/report`.
    pub async fn api_report(&self, ctx: &RequestCtx) -> Result<DrReport> {
        let draft = self.authorize(ctx, "dr.report", Capability::Read).await?;
        let r = self.report_now();
        self.engine.complete(ctx, draft, Ok(r)).await
    }

    /// Checks that `ctx` may read backup state (for the dashboard).
    pub async fn authorize_read(&self, ctx: &RequestCtx) -> Result<()> {
        let draft = self.authorize(ctx, "dr.report", Capability::Read).await?;
        self.engine.complete(ctx, draft, Ok(())).await
    }
}

fn subset_text(s: &steward_repo::ReadDataSubset) -> String {
    match s {
        steward_repo::ReadDataSubset::All => "all".into(),
        steward_repo::ReadDataSubset::Part { n, m } => format!("{n}/{m}"),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

fn parse_subset(s: &str) -> Result<steward_repo::ReadDataSubset> {
    let s = s.trim();
    if s == "all" {
        return Ok(steward_repo::ReadDataSubset::All);
    }
    let parsed = s
        .split_once('/')
        .and_then(|(n, m)| Some((n.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?)))
        .filter(|(n, m)| *m >= 1 && (1..=*m).contains(n));
    match parsed {
        Some((n, m)) => Ok(steward_repo::ReadDataSubset::Part { n, m }),
        None => Err(bad(
            "invalid_read_data",
            format!("read_data {s:?} must be all or N/M with 1 <= N <= M (e.g. 3/30)"),
        )),
    }
}

/// Opens or creates a repository (blocking).
fn open_repo_blocking(
    spec: &RepoSpec,
    password: &str,
    creds: Option<(Zeroizing<String>, Zeroizing<String>)>,
) -> std::result::Result<Arc<Repository>, String> {
    let backend: Arc<dyn steward_repo::Backend> = if spec.is_s3() {
        let (id, key) = creds.ok_or("the S3 repository needs its access key secrets")?;
        let creds = steward_repo_s3::S3Credentials::new(id.as_str(), key.as_str());
        let mut config = steward_repo_s3::S3Config::from_url(&spec.location, None, creds)
            .map_err(|e| format!("repository {}: {e}", spec.name))?;
        if let Some(region) = &spec.region {
            config.region = region.clone();
        }
        Arc::new(
            steward_repo_s3::S3Backend::new(config)
                .map_err(|e| format!("repository {}: {e}", spec.name))?,
        )
    } else {
        Arc::new(steward_repo::LocalBackend::new(&spec.location))
    };
    match Repository::open(backend.clone(), password) {
        Ok(r) => Ok(Arc::new(r)),
        Err(e) if is_missing(&e) && spec.create => {
            tracing::info!(
                repository = spec.name,
                location = spec.location,
                "creating the backup repository"
            );
            Repository::init(backend, password, Default::default())
                .map(Arc::new)
                .map_err(|e| format!("cannot create the repository {}: {e}", spec.name))
        }
        Err(e) => Err(format!("cannot open the repository {}: {e}", spec.name)),
    }
}

/// Fills a drill's or restore's run from its report: bytes, restore time, checks; fails
/// when a check failed.
fn take_report(run: &mut Run, report: DrillReport, verb: &str) -> std::result::Result<(), String> {
    run.bytes = Some(report.bytes_restored);
    run.restore_s = Some(secs(report.restore_duration));
    let failures: Vec<String> = report
        .failures()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let passed = report.passed;
    run.drill = Some(report);
    if passed {
        Ok(())
    } else {
        Err(format!("{verb} failed: {}", failures.join("; ")))
    }
}

fn is_missing(e: &steward_repo::Error) -> bool {
    matches!(e, steward_repo::Error::NotFound { .. })
        || matches!(e, steward_repo::Error::Backend(b) if b.is_not_found())
}

/// A source's snapshots (tag `source=NAME`).
fn source_snapshots(
    repo: &Repository,
    name: &str,
) -> steward_repo::Result<Vec<(Id, steward_repo::Snapshot)>> {
    let tag = format!("source={name}");
    Ok(repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, sn)| sn.tags.contains(&tag))
        .collect())
}

fn newest_backup(
    repo: &Repository,
    name: &str,
) -> std::result::Result<(Id, steward_repo::Snapshot), String> {
    source_snapshots(repo, name)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(_, sn)| {
            !sn.tags
                .iter()
                .any(|t| t == steward_backup::pitr::WAL_KIND_TAG)
        })
        .max_by_key(|(_, sn)| sn.time)
        .ok_or_else(|| format!("{name} has no snapshot yet: run `steward backup run {name}` first"))
}
