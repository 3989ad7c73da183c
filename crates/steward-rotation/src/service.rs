//! [`Rotations`]: configuration, the step driver, the scheduler and retirement.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use steward_core::SecretPath;
use steward_rotators::{Credential, Registry, RotatorError, StepContext};
use steward_secrets::{
    policy::Capability, rewrap_aux, Engine, Kind, RequestCtx, Result, SecretsError,
};
use steward_store::{AuditDraft, EventRow, RotationRow, Tx};
use tokio::sync::Semaphore;

use crate::{
    events::SinkConfig,
    model::{
        pending_context, previous_context, LastRun, Lease, Retire, RetireMode, RotationConfig,
        RotationDoc, Run, RunKind, Step,
    },
};

/// Called after each step's state is stored, with the step's name. Tests use it to kill the
/// process at exact points (crash safety); production passes none.
pub type FaultHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Tuning of the rotation service (from `[rotation]` in steward.toml).
#[derive(Debug, Clone)]
pub struct RotationSettings {
    /// Rotations running at once.
    pub concurrency: usize,
    /// Scheduled rotations start after a random delay up to this, so many due at once spread.
    pub jitter: StdDuration,
    /// How often the scheduler looks for due work.
    pub tick: StdDuration,
    /// How long a replica holds a run between steps.
    pub lease: StdDuration,
    /// First retry delay; doubles per attempt up to `retry_max`.
    pub retry_base: StdDuration,
    pub retry_max: StdDuration,
    /// How often a retiring secret's consumers are checked.
    pub consumer_check: StdDuration,
    /// Expiry warning thresholds (before `expires_at`; zero means "at expiry").
    pub expiry_warnings: Vec<StdDuration>,
    pub expiry_scan: StdDuration,
    /// A rotation due longer ago than this is reported overdue (once per due time).
    pub overdue_after: StdDuration,
    pub sink: SinkConfig,
}

impl Default for RotationSettings {
    fn default() -> Self {
        let day = 86_400;
        Self {
            concurrency: 4,
            jitter: StdDuration::from_secs(2),
            tick: StdDuration::from_secs(1),
            lease: StdDuration::from_secs(60),
            retry_base: StdDuration::from_secs(1),
            retry_max: StdDuration::from_secs(300),
            consumer_check: StdDuration::from_secs(2),
            expiry_warnings: vec![
                StdDuration::from_secs(7 * day),
                StdDuration::from_secs(3 * day),
                StdDuration::from_secs(day),
                StdDuration::ZERO,
            ],
            expiry_scan: StdDuration::from_secs(60),
            overdue_after: StdDuration::from_secs(3600),
            sink: SinkConfig::default(),
        }
    }
}

/// A secret's rotation as the API and CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct RotationStatus {
    pub env: String,
    pub path: String,
    pub rotator: String,
    pub config: RotationConfig,
    /// `idle`, `rotating` or `retiring`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub next_due: Option<DateTime<Utc>>,
    pub last_rotated_at: Option<DateTime<Utc>>,
    pub current_version: Option<u64>,
    pub previous_version: Option<u64>,
    pub pending: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retire_deadline: Option<DateTime<Utc>>,
    /// Consumers seen in the grace window that have not read the current version yet.
    pub laggards: Vec<String>,
    pub last: Option<LastRun>,
    pub rotations: u64,
    pub failures: u64,
}

/// Rotation counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationCounts {
    pub idle: u64,
    pub rotating: u64,
    pub retiring: u64,
    pub completed: u64,
    pub failed: u64,
}

/// The rotation service. One per process; cheap to share behind an `Arc`.
pub struct Rotations {
    pub(crate) engine: Arc<Engine>,
    registry: Registry,
    pub(crate) cfg: RotationSettings,
    /// This process's lease owner id.
    owner: String,
    /// Whether this process owns the store alone (SQLite): leases of dead processes are void.
    exclusive: bool,
    in_flight: InFlightSet,
    permits: Arc<Semaphore>,
    fault: Option<FaultHook>,
    pub(crate) last_expiry_scan: Mutex<Option<DateTime<Utc>>>,
    /// Held from taking the noted reads until they are committed, so a retirement check that
    /// flushes never reads `consumers` while another flush's rows are still on their way.
    flushing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Rotations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotations")
            .field("owner", &self.owner)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| SecretsError::internal("a sealed rotation value is not base64"))
}

fn parse_doc(row: &RotationRow) -> Result<RotationDoc> {
    serde_json::from_str(&row.doc).map_err(|e| {
        SecretsError::internal(format!(
            "rotation state of {}/{} is unreadable: {e}",
            row.env, row.path
        ))
    })
}

fn to_row(env: &str, path: &str, doc: &RotationDoc, now: DateTime<Utc>) -> RotationRow {
    RotationRow {
        env: env.into(),
        path: path.into(),
        doc: serde_json::to_string(doc).expect("rotation docs serialize"),
        due_at: doc.due_at(),
        updated_at: now,
    }
}

fn conflict(code: &'static str, msg: impl Into<String>) -> SecretsError {
    SecretsError::new(Kind::Conflict, code, msg)
}

fn no_rotation(env: &str, path: &str) -> SecretsError {
    SecretsError::not_found(format!(
        "{env}/{path} has no rotation config; set one with `steward rotate configure {env}/{path} ...`"
    ))
}

fn std_to_chrono(d: StdDuration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// Parses the grace period.
fn grace_of(cfg: &RotationConfig) -> Result<Duration> {
    humantime::parse_duration(&cfg.grace)
        .map(std_to_chrono)
        .map_err(|e| {
            SecretsError::invalid(
                "invalid_rotation",
                format!(
                    "grace: {:?} is not a duration ({e}); use e.g. \"1h\"",
                    cfg.grace
                ),
            )
        })
}

type InFlightSet = Arc<Mutex<HashSet<(String, String)>>>;

/// Removes its key from the in-flight set when dropped, also on panic.
struct InFlight {
    set: InFlightSet,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// The values a step works with, decrypted.
struct Material {
    current: Option<(u64, Credential)>,
    previous: Option<Credential>,
    admin: Option<Credential>,
}

/// What an update closure may append besides the row: events.
type Events = Vec<(&'static str, Value)>;

impl Rotations {
    pub fn new(
        engine: Arc<Engine>,
        registry: Registry,
        cfg: RotationSettings,
        fault: Option<FaultHook>,
    ) -> Arc<Self> {
        let exclusive = engine.store().kind() == "sqlite";
        engine.register_aux_rewrap(Arc::new(rewrap_rows));
        Arc::new(Self {
            engine,
            registry,
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            owner: format!("{:016x}", rand::random::<u64>()),
            exclusive,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            fault,
            last_expiry_scan: Mutex::new(None),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    fn now(&self) -> DateTime<Utc> {
        self.engine.clock().now()
    }

    fn fault(&self, point: &str) {
        if let Some(hook) = &self.fault {
            hook(point);
        }
    }

    async fn load(&self, env: &str, path: &str) -> Result<Option<RotationDoc>> {
        let (e, p) = (env.to_string(), path.to_string());
        let row = self
            .engine
            .store()
            .read(move |tx| tx.rotation_get(&e, &p))
            .await?;
        row.as_ref().map(parse_doc).transpose()
    }

    /// Changes a stored doc in one write transaction, with `audit` and the events `f` returns.
    /// `f` sees the transaction too (the finish step writes the new version in it).
    async fn update<F>(
        &self,
        env: &str,
        path: &str,
        audit: Option<AuditDraft>,
        f: F,
    ) -> Result<RotationDoc>
    where
        F: FnOnce(&mut dyn Tx, &mut Option<RotationDoc>) -> Result<Events> + Send + 'static,
    {
        let (e, p) = (env.to_string(), path.to_string());
        let now = self.now();
        self.engine
            .store()
            .write(audit, move |tx: &mut dyn Tx| -> Result<RotationDoc> {
                let mut doc = tx
                    .rotation_get(&e, &p)?
                    .as_ref()
                    .map(parse_doc)
                    .transpose()?;
                let events = f(tx, &mut doc)?;
                let doc = doc.ok_or_else(|| no_rotation(&e, &p))?;
                tx.rotation_put(&to_row(&e, &p, &doc, now))?;
                for (kind, detail) in events {
                    tx.event_append(&EventRow {
                        seq: 0,
                        time: now,
                        kind: kind.into(),
                        env: Some(e.clone()),
                        path: Some(p.clone()),
                        detail: detail.to_string(),
                    })?;
                }
                Ok(doc)
            })
            .await
    }

    // ---- API operations (authorized and audited) ----

    /// Sets or replaces a secret's rotation config. An in-flight run keeps going.
    pub async fn configure(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        cfg: RotationConfig,
    ) -> Result<RotationStatus> {
        let (caller, draft) = self
            .engine
            .authorize(
                ctx,
                "rotation.configure",
                Some((env, path)),
                Capability::Rotate,
            )
            .await?;
        let checked = self.validate(env, &cfg).and_then(|()| {
            // The rotator acts with the admin credential: configuring one must not hand a
            // caller a credential it could not read itself.
            if let Some(admin) = &cfg.admin {
                let (ae, ap) = self.admin_target(env, admin)?;
                caller.require(Capability::Read, &ae, &ap)?;
            }
            // The command rotator runs a program on the server: that takes admin.
            if cfg.rotator == "command" {
                caller.require(Capability::Admin, env, path)?;
            }
            Ok(())
        });
        if let Err(e) = checked {
            return self.engine.complete(ctx, draft, Err(e)).await;
        }
        self.engine.mark_audited(ctx);
        let now = self.now();
        let doc = self
            .update(env, path, Some(draft), move |_, doc| {
                let d = doc.get_or_insert_with(|| RotationDoc {
                    config: cfg.clone(),
                    configured_at: now,
                    last_rotated_at: None,
                    next_due: None,
                    run: None,
                    retire: None,
                    current_version: None,
                    previous_version: None,
                    previous_sealed: None,
                    last: None,
                    rotations: 0,
                    failures: 0,
                });
                d.config = cfg;
                d.next_due = d.config.schedule.next_due(d.last_rotated_at.unwrap_or(now));
                Ok(vec![(
                    "rotation.configured",
                    json!({"rotator": d.config.rotator}),
                )])
            })
            .await?;
        self.status_of(env, path, doc).await
    }

    fn validate(&self, env: &str, cfg: &RotationConfig) -> Result<()> {
        let invalid = |m: String| SecretsError::invalid("invalid_rotation", m);
        let rotator = self
            .registry
            .get(&cfg.rotator)
            .map_err(|e| invalid(e.message))?;
        rotator
            .check_settings(&cfg.settings)
            .map_err(|e| invalid(e.message))?;
        cfg.schedule.validate().map_err(invalid)?;
        grace_of(cfg)?;
        if !(1..=20).contains(&cfg.max_attempts) {
            return Err(invalid(format!(
                "max_attempts: {} is out of range; use 1 to 20",
                cfg.max_attempts
            )));
        }
        if let Some(admin) = &cfg.admin {
            self.admin_target(env, admin)?;
        }
        Ok(())
    }

    /// `PATH` (same env) or `ENV/PATH` of the admin credential.
    fn admin_target(&self, env: &str, admin: &str) -> Result<(String, String)> {
        if let Some((first, rest)) = admin.split_once('/') {
            if self.engine.env(first).is_ok() {
                let p = SecretPath::parse(rest)?;
                return Ok((first.to_string(), p.as_str().to_string()));
            }
        }
        let p = SecretPath::parse(admin)?;
        Ok((env.to_string(), p.as_str().to_string()))
    }

    /// Removes a rotation config (refused while a rotation runs).
    pub async fn remove(&self, ctx: &RequestCtx, env: &str, path: &str) -> Result<()> {
        let (_, draft) = self
            .engine
            .authorize(
                ctx,
                "rotation.remove",
                Some((env, path)),
                Capability::Rotate,
            )
            .await?;
        self.engine.mark_audited(ctx);
        let (e, p) = (env.to_string(), path.to_string());
        self.engine
            .store()
            .write(Some(draft), move |tx: &mut dyn Tx| -> Result<()> {
                let doc = tx.rotation_get(&e, &p)?.ok_or_else(|| no_rotation(&e, &p))?;
                if parse_doc(&doc)?.run.is_some() {
                    return Err(conflict(
                        "rotation_in_progress",
                        format!("{e}/{p} is being rotated; wait for it to finish, then remove the config"),
                    ));
                }
                tx.rotation_delete(&e, &p)?;
                Ok(())
            })
            .await
    }

    /// Counts by state and outcome over every configured secret (for `/metrics`, which is
    /// not authenticated: numbers only, no names).
    pub async fn counts(&self) -> Result<RotationCounts> {
        if self.engine.is_sealed() {
            return Err(SecretsError::sealed());
        }
        let rows = self.engine.store().read(|tx| tx.rotation_list()).await?;
        let mut c = RotationCounts::default();
        for row in &rows {
            let doc = parse_doc(row)?;
            match (&doc.run, &doc.retire) {
                (Some(_), _) => c.rotating += 1,
                (None, Some(_)) => c.retiring += 1,
                (None, None) => c.idle += 1,
            }
            c.completed += doc.rotations;
            c.failed += doc.failures;
        }
        Ok(c)
    }

    /// One secret's rotation status.
    pub async fn status(&self, ctx: &RequestCtx, env: &str, path: &str) -> Result<RotationStatus> {
        let (_, draft) = self
            .engine
            .authorize(ctx, "rotation.status", Some((env, path)), Capability::Read)
            .await?;
        let r = async {
            let doc = self
                .load(env, path)
                .await?
                .ok_or_else(|| no_rotation(env, path))?;
            self.status_of(env, path, doc).await
        }
        .await;
        self.engine.complete(ctx, draft, r).await
    }

    /// Every rotation the caller may read.
    pub async fn list(&self, ctx: &RequestCtx) -> Result<Vec<RotationStatus>> {
        let (caller, draft) = self
            .engine
            .authorize(ctx, "rotation.list", None, Capability::Read)
            .await?;
        let r = async {
            let rows = self.engine.store().read(|tx| tx.rotation_list()).await?;
            let mut out = Vec::new();
            for row in rows {
                if !caller.allows(&row.env, &row.path, Capability::Read) {
                    continue;
                }
                let doc = parse_doc(&row)?;
                out.push(self.status_of(&row.env, &row.path, doc).await?);
            }
            Ok(out)
        }
        .await;
        self.engine.complete(ctx, draft, r).await
    }

    /// Starts a rotation now (`steward rotate now`).
    pub async fn rotate_now(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
    ) -> Result<RotationStatus> {
        self.start(ctx, env, path, RunKind::Rotate).await
    }

    /// Makes the previous value current again, in the target system too.
    pub async fn rollback(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
    ) -> Result<RotationStatus> {
        self.start(ctx, env, path, RunKind::Rollback).await
    }

    async fn start(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        env: &str,
        path: &str,
        kind: RunKind,
    ) -> Result<RotationStatus> {
        let action = match kind {
            RunKind::Rotate => "rotation.start",
            RunKind::Rollback => "rotation.rollback",
        };
        let (_, draft) = self
            .engine
            .authorize(ctx, action, Some((env, path)), Capability::Rotate)
            .await?;
        self.engine.mark_audited(ctx);
        let now = self.now();
        let (e, p) = (env.to_string(), path.to_string());
        let doc = self
            .update(env, path, Some(draft), move |_, doc| {
                let d = doc.as_mut().ok_or_else(|| no_rotation(&e, &p))?;
                if let Some(run) = &d.run {
                    return Err(conflict(
                        "rotation_in_progress",
                        format!(
                            "{e}/{p} is already being rotated (step {}, attempt {}); see `steward rotate status {e}/{p}`",
                            run.step.as_str(),
                            run.attempt
                        ),
                    ));
                }
                if kind == RunKind::Rollback && d.previous_sealed.is_none() {
                    return Err(conflict(
                        "no_previous_version",
                        format!("{e}/{p} has no previous credential to roll back to; it has not been rotated yet"),
                    ));
                }
                let reason = match kind {
                    RunKind::Rotate => "manual",
                    RunKind::Rollback => "rollback",
                };
                d.run = Some(new_run(kind, reason, now));
                let id = d.run.as_ref().map(|r| r.id.clone());
                Ok(vec![("rotation.started", json!({"run": id, "reason": reason}))])
            })
            .await?;
        self.spawn_drive(env.to_string(), path.to_string(), false);
        self.status_of(env, path, doc).await
    }

    /// The pending value, decrypted (read by label `pending`).
    pub async fn read_pending(&self, ctx: &RequestCtx, env: &str, path: &str) -> Result<Value> {
        let (_, draft) = self
            .engine
            .authorize(ctx, "secret.read", Some((env, path)), Capability::Read)
            .await?;
        let r = async {
            let doc = self.load(env, path).await?;
            let run = doc.and_then(|d| d.run).filter(|r| r.pending.is_some());
            let Some(run) = run else {
                return Err(SecretsError::not_found(format!(
                    "{env}/{path} has no pending version (no rotation is between create and finish)"
                )));
            };
            let blob = unb64(run.pending.as_deref().unwrap_or_default())?;
            self.engine
                .open_aux(&pending_context(env, path, &run.id), &blob)
                .await
        }
        .await;
        self.engine.complete(ctx, draft, r).await
    }

    /// The version a label points at: `current` (None: the latest), `previous`.
    pub async fn label_version(&self, env: &str, path: &str, label: &str) -> Result<Option<u64>> {
        match label {
            "current" => Ok(None),
            "previous" => {
                let doc = self.load(env, path).await?;
                doc.and_then(|d| d.previous_version)
                    .map(Some)
                    .ok_or_else(|| {
                        SecretsError::not_found(format!(
                            "{env}/{path} has no previous version (it has not been rotated)"
                        ))
                    })
            }
            other => Err(SecretsError::invalid(
                "invalid_label",
                format!("unknown label {other:?}; use current, pending or previous"),
            )),
        }
    }

    async fn status_of(&self, env: &str, path: &str, doc: RotationDoc) -> Result<RotationStatus> {
        let laggards = match &doc.retire {
            Some(r) => self.laggards(env, path, &doc, r).await?,
            None => vec![],
        };
        let state = if doc.run.is_some() {
            "rotating"
        } else if doc.retire.is_some() {
            "retiring"
        } else {
            "idle"
        };
        Ok(RotationStatus {
            env: env.into(),
            path: path.into(),
            rotator: doc.config.rotator.clone(),
            state,
            step: doc.run.as_ref().map(|r| r.step.as_str()),
            attempt: doc.run.as_ref().map(|r| r.attempt),
            last_error: doc.run.as_ref().and_then(|r| r.last_error.clone()),
            next_due: doc.next_due,
            last_rotated_at: doc.last_rotated_at,
            current_version: doc.current_version,
            previous_version: doc.previous_version,
            pending: doc.run.as_ref().is_some_and(|r| r.pending.is_some()),
            retire_deadline: doc.retire.as_ref().map(|r| r.deadline),
            laggards,
            last: doc.last.clone(),
            rotations: doc.rotations,
            failures: doc.failures,
            config: doc.config,
        })
    }

    /// Consumers seen in the grace window before the rotation that have not read its version.
    async fn laggards(
        &self,
        env: &str,
        path: &str,
        doc: &RotationDoc,
        retire: &Retire,
    ) -> Result<Vec<String>> {
        let grace = grace_of(&doc.config)?;
        let (e, p) = (env.to_string(), path.to_string());
        let rows = self
            .engine
            .store()
            .read(move |tx| tx.consumers(&e, &p))
            .await?;
        let window_start = retire.since - grace;
        Ok(rows
            .into_iter()
            .filter(|c| c.seen_at >= window_start && c.version < retire.current_version)
            .map(|c| c.accessor)
            .collect())
    }

    // ---- the driver ----

    /// Marks a secret as being driven here; None if it already is.
    fn enter(&self, env: &str, path: &str) -> Option<InFlight> {
        let key = (env.to_string(), path.to_string());
        let inserted = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        // The guard is built only after the lock is released, and only when this call took
        // the key: dropping one would lock the set again and remove another driver's key.
        inserted.then(|| InFlight {
            set: self.in_flight.clone(),
            key,
        })
    }

    /// Runs `drive` in the background unless this secret is already being driven here.
    pub fn spawn_drive(self: &Arc<Self>, env: String, path: String, jitter: bool) {
        // The guard travels with the task: a secret waiting for a permit is not queued twice.
        let Some(guard) = self.enter(&env, &path) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            if jitter && !this.cfg.jitter.is_zero() {
                let ms = rand::thread_rng().gen_range(0..=this.cfg.jitter.as_millis() as u64);
                tokio::time::sleep(StdDuration::from_millis(ms)).await;
            }
            let Ok(_permit) = this.permits.clone().acquire_owned().await else {
                return;
            };
            if let Err(e) = this.drive_held(&env, &path).await {
                tracing::warn!(env = %env, path = %path, error = %e, "rotation step could not be stored; it will be retried");
            }
        });
    }

    /// Advances one secret's rotation as far as it can go now. Returns at once when the
    /// secret is already being driven in this process; a step another replica completed
    /// meanwhile is not an error.
    pub async fn drive(self: &Arc<Self>, env: &str, path: &str) -> Result<()> {
        let Some(_guard) = self.enter(env, path) else {
            return Ok(());
        };
        self.drive_held(env, path).await
    }

    async fn drive_held(self: &Arc<Self>, env: &str, path: &str) -> Result<()> {
        match self.drive_steps(env, path).await {
            Err(e) if e.code == "rotation_moved" => Ok(()),
            other => other,
        }
    }

    async fn drive_steps(self: &Arc<Self>, env: &str, path: &str) -> Result<()> {
        // Bounded: each pass either advances the state or returns.
        for _ in 0..64 {
            if self.engine.is_sealed() {
                return Ok(());
            }
            let now = self.now();
            let Some(doc) = self.load(env, path).await? else {
                return Ok(());
            };
            let Some(run) = doc.run.clone() else {
                let due = doc.next_due.is_some_and(|t| t <= now);
                if doc.retire.is_some() {
                    if !self.retire_step(env, path, &doc, due).await? {
                        return Ok(());
                    }
                    continue;
                }
                if !due {
                    return Ok(());
                }
                self.start_scheduled(env, path, &doc).await?;
                continue;
            };
            if run.not_before > now {
                return Ok(());
            }
            if run.step == Step::Create && doc.retire.is_some() {
                // A new rotation (e.g. `rotate now` while retiring) replaces the previous
                // credential: revoke the one waiting for retirement first, or it never would be.
                self.retire_step(env, path, &doc, true).await?;
                continue;
            }
            if !self.claim(env, path, &run).await? {
                return Ok(());
            }
            self.step(env, path, &doc, &run).await?;
        }
        Ok(())
    }

    async fn start_scheduled(&self, env: &str, path: &str, doc: &RotationDoc) -> Result<()> {
        let now = self.now();
        if !doc.config.schedule.in_window(now) {
            // Due outside its window: wait for the window to open.
            let next = doc.config.schedule.into_window(now);
            self.update(env, path, None, move |_, d| {
                if let Some(d) = d.as_mut() {
                    d.next_due = Some(next);
                }
                Ok(vec![])
            })
            .await?;
            return Ok(());
        }
        let draft = self.engine.system_draft("rotation.start", env, path);
        self.update(env, path, Some(draft), move |_, d| {
            let Some(d) = d.as_mut() else {
                return Ok(vec![]);
            };
            if d.run.is_some() || d.next_due.is_none_or(|t| t > now) {
                return Ok(vec![]);
            }
            d.run = Some(new_run(RunKind::Rotate, "schedule", now));
            let id = d.run.as_ref().map(|r| r.id.clone());
            Ok(vec![(
                "rotation.started",
                json!({"run": id, "reason": "schedule"}),
            )])
        })
        .await?;
        Ok(())
    }

    /// Takes (or renews) the run's lease; false if another live replica holds it.
    async fn claim(&self, env: &str, path: &str, run: &Run) -> Result<bool> {
        if self.exclusive {
            // One process owns an embedded store: there is nobody to keep out, so no write.
            return Ok(true);
        }
        let now = self.now();
        let (owner, lease) = (self.owner.clone(), self.cfg.lease);
        let (id, step) = (run.id.clone(), run.step);
        let doc = self
            .update(env, path, None, move |_, d| {
                let Some(run) = d.as_mut().and_then(|d| d.run.as_mut()) else {
                    return Ok(vec![]);
                };
                if run.id != id || run.step != step {
                    return Ok(vec![]);
                }
                let held = run
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.owner != owner && l.until > now);
                if !held {
                    run.lease = Some(Lease {
                        owner,
                        until: now + std_to_chrono(lease),
                    });
                }
                Ok(vec![])
            })
            .await?;
        // Claimed when the stored run is still this step and its lease names this process.
        Ok(doc
            .run
            .filter(|r| r.id == run.id && r.step == run.step)
            .and_then(|r| r.lease)
            .is_some_and(|l| l.owner == self.owner))
    }

    /// The current, previous and admin credentials, decrypted.
    async fn material(&self, env: &str, path: &str, doc: &RotationDoc) -> Result<Material> {
        let current = match self.engine.system_read(env, path, None).await {
            Ok((_, v, value)) => Some((v, Credential::from_value(value))),
            Err(e) if e.kind == Kind::NotFound => None,
            Err(e) => return Err(e),
        };
        let previous = match &doc.previous_sealed {
            Some(s) => Some(Credential::from_value(
                self.engine
                    .open_aux(&previous_context(env, path), &unb64(s)?)
                    .await?,
            )),
            None => None,
        };
        let admin = match &doc.config.admin {
            Some(a) => {
                let (ae, ap) = self.admin_target(env, a)?;
                let (_, _, value) = self.engine.system_read(&ae, &ap, None).await.map_err(|e| {
                    SecretsError::new(
                        e.kind,
                        e.code,
                        format!("admin credential {ae}/{ap}: {}", e.message),
                    )
                })?;
                Some(Credential::from_value(value))
            }
            None => None,
        };
        Ok(Material {
            current,
            previous,
            admin,
        })
    }

    async fn pending_of(&self, env: &str, path: &str, run: &Run) -> Result<Option<Credential>> {
        match &run.pending {
            Some(s) => Ok(Some(Credential::from_value(
                self.engine
                    .open_aux(&pending_context(env, path, &run.id), &unb64(s)?)
                    .await?,
            ))),
            None => Ok(None),
        }
    }

    /// Runs the run's stored step and stores the outcome.
    async fn step(&self, env: &str, path: &str, doc: &RotationDoc, run: &Run) -> Result<()> {
        let rotator = match self.registry.get(&doc.config.rotator) {
            Ok(r) => r,
            Err(e) => return self.step_failed(env, path, run, e).await,
        };
        let m = match self.material(env, path, doc).await {
            Ok(m) => m,
            Err(e) if e.kind == Kind::Unavailable => return Err(e),
            Err(e) => {
                return self
                    .step_failed(env, path, run, RotatorError::invalid(e.message))
                    .await
            }
        };
        let pending = self.pending_of(env, path, run).await?;
        let attempt_id = format!("{}-{}", run.id, run.attempt);
        let cx = StepContext {
            env,
            path,
            settings: &doc.config.settings,
            current: m.current.as_ref().map(|c| &c.1),
            previous: m.previous.as_ref(),
            admin: m.admin.as_ref(),
            attempt_id: &attempt_id,
        };
        tracing::info!(env, path, run = %run.id, step = run.step.as_str(), attempt = run.attempt, "rotation step");
        match (run.step, pending) {
            (Step::Create, _) => {
                let made = match run.kind {
                    RunKind::Rotate => rotator.create(&cx).await,
                    RunKind::Rollback => m.previous.clone().ok_or_else(|| {
                        RotatorError::invalid(
                            "the previous credential is gone; nothing to roll back to",
                        )
                    }),
                };
                let value = match made {
                    Ok(v) => v,
                    Err(e) => return self.step_failed(env, path, run, e).await,
                };
                let sealed = b64(&self
                    .engine
                    .seal_aux(&pending_context(env, path, &run.id), &value.into_value())?);
                self.advance(env, path, run, Step::Set, Some(sealed))
                    .await?;
            }
            (Step::Set, Some(p)) => match rotator.set(&cx, &p).await {
                Ok(()) => self.advance(env, path, run, Step::Test, None).await?,
                Err(e) => return self.step_failed(env, path, run, e).await,
            },
            (Step::Test, Some(p)) => match rotator.test(&cx, &p).await {
                Ok(()) => self.advance(env, path, run, Step::Finish, None).await?,
                Err(e) => return self.step_failed(env, path, run, e).await,
            },
            (Step::Finish, Some(p)) => self.finish(env, path, doc, run, p, m.current).await?,
            (Step::Discard, Some(p)) => match rotator.discard(&cx, &p).await {
                Ok(()) => {
                    let draft = self.engine.system_draft("rotation.discard", env, path);
                    self.retry_or_fail(env, path, run, draft).await?;
                }
                Err(e) => self.discard_failed(env, path, run, e).await?,
            },
            (_, None) => {
                // A step after create without a pending value cannot happen unless the row
                // was edited; start the attempt over.
                let draft = self.engine.system_draft("rotation.discard", env, path);
                self.retry_or_fail(env, path, run, draft).await?;
            }
        }
        self.fault(run.step.as_str());
        Ok(())
    }

    /// Stores the move to `next` (and the pending value after create), audited.
    async fn advance(
        &self,
        env: &str,
        path: &str,
        run: &Run,
        next: Step,
        pending: Option<String>,
    ) -> Result<()> {
        let mut draft =
            self.engine
                .system_draft(&format!("rotation.{}", run.step.as_str()), env, path);
        draft.hmacs.insert("run".into(), run.id.clone());
        let (id, step) = (run.id.clone(), run.step);
        self.update(env, path, Some(draft), move |_, d| {
            let run = d
                .as_mut()
                .and_then(|d| d.run.as_mut())
                .filter(|r| r.id == id && r.step == step)
                .ok_or_else(|| conflict("rotation_moved", "the rotation moved on meanwhile"))?;
            run.step = next;
            if pending.is_some() {
                run.pending = pending;
            }
            run.last_error = None;
            Ok(vec![])
        })
        .await?;
        Ok(())
    }

    /// A step failed: undo it in the target (discard) when something may have been applied,
    /// else retry or give up.
    async fn step_failed(&self, env: &str, path: &str, run: &Run, err: RotatorError) -> Result<()> {
        tracing::warn!(env, path, run = %run.id, step = run.step.as_str(), attempt = run.attempt, error = %err.message, "rotation step failed");
        let mut draft =
            self.engine
                .system_draft(&format!("rotation.{}.failed", run.step.as_str()), env, path);
        draft.hmacs.insert("run".into(), run.id.clone());
        if run.pending.is_some() && matches!(run.step, Step::Set | Step::Test) {
            let (id, step, msg) = (run.id.clone(), run.step, err.message.clone());
            let give_up = err.kind == steward_rotators::ErrorKind::Invalid;
            let now = self.now();
            self.update(env, path, Some(draft), move |_, d| {
                let run = d
                    .as_mut()
                    .and_then(|d| d.run.as_mut())
                    .filter(|r| r.id == id && r.step == step)
                    .ok_or_else(|| conflict("rotation_moved", "the rotation moved on meanwhile"))?;
                run.step = Step::Discard;
                run.give_up |= give_up;
                run.last_error = Some(format!("{}: {msg}", step.as_str()));
                run.not_before = now;
                Ok(vec![])
            })
            .await?;
            return Ok(());
        }
        let mut run = run.clone();
        run.last_error = Some(format!("{}: {}", run.step.as_str(), err.message));
        run.give_up |= err.kind == steward_rotators::ErrorKind::Invalid;
        self.retry_or_fail(env, path, &run, draft).await
    }

    /// After an attempt was undone: start a fresh attempt after a backoff, or give up.
    async fn retry_or_fail(
        &self,
        env: &str,
        path: &str,
        run: &Run,
        draft: AuditDraft,
    ) -> Result<()> {
        let now = self.now();
        let delay = self.backoff(run.attempt);
        let (id, error, give_up) = (run.id.clone(), run.last_error.clone(), run.give_up);
        self.update(env, path, Some(draft), move |_, d| {
            let d = d.as_mut().ok_or_else(|| conflict("rotation_moved", "the rotation config was removed"))?;
            let max = d.config.max_attempts;
            let Some(run) = d.run.as_mut().filter(|r| r.id == id) else {
                return Ok(vec![]);
            };
            run.last_error = error.clone().or(run.last_error.take());
            if run.attempt < max && !give_up && !run.give_up {
                run.attempt += 1;
                run.step = Step::Create;
                run.pending = None;
                run.discard_failures = 0;
                run.not_before = now + delay;
                return Ok(vec![(
                    "rotation.retrying",
                    json!({"run": id, "attempt": run.attempt, "error": run.last_error, "at": run.not_before}),
                )]);
            }
            let reason = run.last_error.clone().unwrap_or_else(|| "unknown".into());
            Ok(fail_run(d, now, reason))
        })
        .await?;
        Ok(())
    }

    async fn discard_failed(
        &self,
        env: &str,
        path: &str,
        run: &Run,
        err: RotatorError,
    ) -> Result<()> {
        tracing::warn!(env, path, run = %run.id, error = %err.message, "undoing a failed rotation attempt failed; retrying");
        let now = self.now();
        let delay = self.backoff(run.discard_failures + 1);
        let id = run.id.clone();
        let draft = self
            .engine
            .system_draft("rotation.discard.failed", env, path);
        self.update(env, path, Some(draft), move |_, d| {
            let d = d.as_mut().ok_or_else(|| conflict("rotation_moved", "the rotation config was removed"))?;
            let max = d.config.max_attempts;
            let Some(run) = d.run.as_mut().filter(|r| r.id == id) else {
                return Ok(vec![]);
            };
            run.discard_failures += 1;
            if run.discard_failures < max {
                run.not_before = now + delay;
                return Ok(vec![]);
            }
            let reason = format!(
                "{}; undoing it in the target failed too ({}): check the target by hand (docs/secret-rotation.md, manual runbook)",
                run.last_error.clone().unwrap_or_default(),
                err.message
            );
            Ok(fail_run(d, now, reason))
        })
        .await?;
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.retry_base.as_millis() as u64;
        let max = self.cfg.retry_max.as_millis() as u64;
        let exp = base
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(max);
        // Equal jitter: half fixed, half random, so retries of many secrets spread out.
        let ms = exp / 2 + rand::thread_rng().gen_range(0..=exp / 2);
        Duration::milliseconds(ms as i64)
    }

    /// Pending becomes current (a new version), current becomes previous; one transaction.
    async fn finish(
        &self,
        env: &str,
        path: &str,
        doc: &RotationDoc,
        run: &Run,
        pending: Credential,
        current: Option<(u64, Credential)>,
    ) -> Result<()> {
        let now = self.now();
        let grace = grace_of(&doc.config)?;
        let prepared = self
            .engine
            .prepare_write(env, path, &pending.into_value())?;
        let prev_sealed = match &current {
            Some((_, c)) => Some(b64(&self
                .engine
                .seal_aux(&previous_context(env, path), &c.clone().into_value())?)),
            None => None,
        };
        let mut draft = self.engine.system_draft("rotation.finish", env, path);
        draft.hmacs.insert("run".into(), run.id.clone());
        let (id, kind) = (run.id.clone(), run.kind);
        self.update(env, path, Some(draft), move |tx, d| {
            let d = d.as_mut().ok_or_else(|| conflict("rotation_moved", "the rotation config was removed"))?;
            let attempts = match d.run.as_ref().filter(|r| r.id == id && r.step == Step::Finish) {
                Some(r) => r.attempt,
                None => return Err(conflict("rotation_moved", "the rotation moved on meanwhile")),
            };
            let written = prepared.apply(tx)?;
            // A new version is always the one after the head's: the replaced one is derived.
            let old = Some(written.version - 1).filter(|v| *v > 0);
            d.previous_version = old;
            d.current_version = Some(written.version);
            if prev_sealed.is_some() {
                d.previous_sealed = prev_sealed;
                d.retire = Some(Retire {
                    current_version: written.version,
                    since: now,
                    deadline: now + grace,
                    attempts: 0,
                    next_try: match d.config.retire {
                        // Checked right away: with no laggard the previous credential goes now.
                        RetireMode::Consumers => now,
                        RetireMode::Grace => now + grace,
                    },
                    last_error: None,
                });
            }
            d.run = None;
            d.rotations += 1;
            d.last_rotated_at = Some(now);
            d.next_due = d.config.schedule.next_due(now);
            let outcome = match kind {
                RunKind::Rotate => "rotated",
                RunKind::Rollback => "rolled_back",
            };
            d.last = Some(LastRun {
                at: now,
                outcome: outcome.into(),
                version: Some(written.version),
                error: None,
                attempts,
            });
            Ok(vec![(
                "rotation.finished",
                json!({"run": id, "outcome": outcome, "version": written.version, "previous_version": old}),
            )])
        })
        .await?;
        Ok(())
    }

    /// Revokes the previous credential when its time has come. Returns whether it changed
    /// anything (so the driver looks again).
    async fn retire_step(
        &self,
        env: &str,
        path: &str,
        doc: &RotationDoc,
        superseded: bool,
    ) -> Result<bool> {
        let Some(retire) = doc.retire.clone() else {
            return Ok(false);
        };
        let now = self.now();
        if retire.next_try > now && !superseded {
            return Ok(false);
        }
        self.flush_reads().await?;
        let laggards = self.laggards(env, path, doc, &retire).await?;
        let reason = if superseded {
            "superseded"
        } else if now >= retire.deadline {
            "grace_ended"
        } else if doc.config.retire == RetireMode::Consumers && laggards.is_empty() {
            "consumers_moved"
        } else {
            let next = (now + std_to_chrono(self.cfg.consumer_check)).min(retire.deadline);
            self.update(env, path, None, move |_, d| {
                if let Some(r) = d.as_mut().and_then(|d| d.retire.as_mut()) {
                    r.next_try = next;
                }
                Ok(vec![])
            })
            .await?;
            return Ok(false);
        };
        let rotator = self
            .registry
            .get(&doc.config.rotator)
            .map_err(|e| SecretsError::invalid("invalid_rotation", e.message))?;
        let m = self.material(env, path, doc).await?;
        let Some(old) = m.previous.clone() else {
            return Ok(false);
        };
        let attempt_id = format!("retire-{}", retire.current_version);
        let cx = StepContext {
            env,
            path,
            settings: &doc.config.settings,
            current: m.current.as_ref().map(|c| &c.1),
            previous: m.previous.as_ref(),
            admin: m.admin.as_ref(),
            attempt_id: &attempt_id,
        };
        let result = rotator.revoke(&cx, &old).await;
        let version = retire.current_version;
        let retired = doc.previous_version;
        let max = doc.config.max_attempts;
        let delay = self.backoff(retire.attempts + 1);
        let draft = self.engine.system_draft(
            if result.is_ok() {
                "rotation.retire"
            } else {
                "rotation.retire.failed"
            },
            env,
            path,
        );
        let reason = reason.to_string();
        self.update(env, path, Some(draft), move |_, d| {
            let Some(d) = d.as_mut() else { return Ok(vec![]) };
            if d.retire.as_ref().map(|r| r.current_version) != Some(version) {
                return Ok(vec![]);
            }
            match result {
                Ok(()) => {
                    d.retire = None;
                    Ok(vec![("rotation.retired", json!({"current_version": version, "retired_version": retired, "reason": reason, "laggards": laggards}))])
                }
                Err(e) => {
                    let r = d.retire.as_mut().expect("checked above");
                    r.attempts += 1;
                    r.last_error = Some(e.message.clone());
                    if r.attempts >= max {
                        d.retire = None;
                        return Ok(vec![(
                            "rotation.retire_failed",
                            json!({"version": version, "reason": e.message, "hint": "revoke the previous credential by hand (docs/secret-rotation.md)"}),
                        )]);
                    }
                    r.next_try = now + delay;
                    Ok(vec![])
                }
            }
        })
        .await?;
        Ok(true)
    }

    /// Stores the reads noted since the last flush (who read which version).
    pub async fn flush_reads(&self) -> Result<()> {
        let _flushing = self.flushing.lock().await;
        let reads = self.engine.take_reads();
        if reads.is_empty() {
            return Ok(());
        }
        self.engine
            .store()
            .write(None, move |tx: &mut dyn Tx| -> Result<()> {
                for r in &reads {
                    tx.consumer_put(r)?;
                }
                Ok(())
            })
            .await
    }

    // ---- the scheduler ----

    /// Runs the scheduler, the expiry scan and the event sink until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sink = tokio::spawn(crate::events::run_sink(self.clone()));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    if let Err(e) = self.tick().await {
                        tracing::warn!(error = %e, "rotation scheduler pass failed; retrying next tick");
                    }
                }
            }
        }
        sink.abort();
    }

    /// One scheduler pass: store reads, start due work, scan expiry dates.
    pub async fn tick(self: &Arc<Self>) -> Result<()> {
        if self.engine.is_sealed() {
            return Ok(());
        }
        self.flush_reads().await?;
        let now = self.now();
        let due = self
            .engine
            .store()
            .read(move |tx| tx.rotation_due(now, 1024))
            .await?;
        let overdue_after = std_to_chrono(self.cfg.overdue_after);
        for row in due {
            let doc = parse_doc(&row)?;
            if let Some(at) = row.due_at.filter(|at| *at + overdue_after < now) {
                if doc.run.is_none() && doc.next_due == Some(at) {
                    self.warn_overdue(&row.env, &row.path, at).await?;
                }
            }
            // Jitter spreads scheduled starts; retries and retirements are already spread
            // by their own times and go at once.
            let scheduled_start = doc.run.is_none() && doc.retire.is_none();
            self.spawn_drive(row.env, row.path, scheduled_start);
        }
        crate::expiry::scan_if_due(self).await
    }

    async fn warn_overdue(&self, env: &str, path: &str, due: DateTime<Utc>) -> Result<()> {
        let key = format!("warned/overdue/{env}/{path}/{}", due.timestamp_micros());
        crate::events::once(
            &self.engine,
            key,
            EventRow {
                seq: 0,
                time: self.now(),
                kind: "rotation.overdue".into(),
                env: Some(env.into()),
                path: Some(path.into()),
                detail: json!({"due_at": due}).to_string(),
            },
        )
        .await
        .map(drop)
    }
}

/// Re-seals every rotation row's pending and previous values under the active key (called in
/// the transaction that retires old keys after `steward keys rotate`).
fn rewrap_rows(tx: &mut dyn Tx, ring: &steward_crypto::Keyring) -> Result<()> {
    for row in tx.rotation_list()? {
        let mut doc = parse_doc(&row)?;
        let before = doc.clone();
        if let Some(run) = doc.run.as_mut() {
            if let Some(p) = run.pending.as_deref() {
                let ctx = pending_context(&row.env, &row.path, &run.id);
                run.pending = Some(b64(&rewrap_aux(ring, &ctx, &unb64(p)?)?));
            }
        }
        if let Some(p) = doc.previous_sealed.as_deref() {
            let ctx = previous_context(&row.env, &row.path);
            doc.previous_sealed = Some(b64(&rewrap_aux(ring, &ctx, &unb64(p)?)?));
        }
        if doc != before {
            tx.rotation_put(&RotationRow {
                doc: serde_json::to_string(&doc).expect("rotation docs serialize"),
                ..row
            })?;
        }
    }
    Ok(())
}

/// Ends the doc's run as failed (current untouched), plans the next scheduled try, and returns
/// the `rotation.failed` event.
fn fail_run(d: &mut RotationDoc, now: DateTime<Utc>, reason: String) -> Events {
    let Some(run) = d.run.take() else {
        return vec![];
    };
    d.failures += 1;
    d.last = Some(LastRun {
        at: now,
        outcome: "failed".into(),
        version: None,
        error: Some(reason.clone()),
        attempts: run.attempt,
    });
    d.next_due = d.config.schedule.next_due(now);
    vec![(
        "rotation.failed",
        json!({"run": run.id, "attempts": run.attempt, "reason": reason}),
    )]
}

fn new_run(kind: RunKind, reason: &str, now: DateTime<Utc>) -> Run {
    Run {
        id: format!("{:016x}", rand::random::<u64>()),
        kind,
        reason: reason.into(),
        step: Step::Create,
        attempt: 1,
        pending: None,
        not_before: now,
        started_at: now,
        discard_failures: 0,
        last_error: None,
        lease: None,
        give_up: false,
    }
}
