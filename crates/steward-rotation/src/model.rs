//! The rotation document stored per secret (`rotations.doc`): configuration, the in-flight run
//! (the persisted state machine, which is also the per-secret lock), the pending retirement of
//! the previous credential, and the outcome of the last run. Sealed values are base64 of
//! envelopes; nothing here is plaintext.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schedule::Schedule;

/// How the previous credential is retired after a rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireMode {
    /// When every consumer seen in the grace window has read the new version, or when the
    /// grace period ends, whichever comes first.
    #[default]
    Consumers,
    /// When the grace period ends.
    Grace,
}

/// A secret's rotation configuration (`PUT /v1/sys/rotation/config/ENV/PATH`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// `random`, `postgres`, `mysql`, `redis`, `webhook` or `command`.
    pub rotator: String,
    /// The rotator's settings (never secrets: those live in the `admin` secret).
    #[serde(default)]
    pub settings: Value,
    /// The secret holding the rotator's admin credential: `PATH` in the same environment or
    /// `ENV/PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    #[serde(default)]
    pub schedule: Schedule,
    /// How long the previous credential keeps working after a rotation.
    #[serde(default = "default_grace")]
    pub grace: String,
    #[serde(default)]
    pub retire: RetireMode,
    /// Attempts before a rotation is declared failed (each with a fresh value).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_grace() -> String {
    "1h".into()
}

fn default_attempts() -> u32 {
    5
}

/// The four steps, plus the undo step a failed attempt runs before it retries or gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
    Discard,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Set => "set",
            Step::Test => "test",
            Step::Finish => "finish",
            Step::Discard => "discard",
        }
    }
}

/// Whether a run makes a new credential or brings the previous one back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Rotate,
    Rollback,
}

/// Who holds a run: a process instance, until a time (renewed by each step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until: DateTime<Utc>,
}

/// An in-flight rotation. Its presence is the per-secret lock; it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub kind: RunKind,
    /// `schedule`, `manual` or `rollback`.
    pub reason: String,
    /// The next step to run (already stored before it runs: a restart runs it again).
    pub step: Step,
    /// Attempts started so far (1 for the first).
    pub attempt: u32,
    /// The pending value, sealed (base64 envelope), once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    pub not_before: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// Failures of the discard step in a row.
    #[serde(default)]
    pub discard_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Set when a step failed in a way retrying cannot fix (bad settings or credential): the
    /// attempt is undone and the rotation fails without further attempts.
    #[serde(default)]
    pub give_up: bool,
}

/// The previous credential, waiting to be revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retire {
    /// The version that became current when the previous one was replaced.
    pub current_version: u64,
    pub since: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub attempts: u32,
    pub next_try: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// How the last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub at: DateTime<Utc>,
    /// `rotated`, `rolled_back` or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: u32,
}

/// Everything stored about one secret's rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationDoc {
    pub config: RotationConfig,
    pub configured_at: DateTime<Utc>,
    #[serde(default)]
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// The next scheduled rotation.
    #[serde(default)]
    pub next_due: Option<DateTime<Utc>>,
    #[serde(default)]
    pub run: Option<Run>,
    #[serde(default)]
    pub retire: Option<Retire>,
    /// Version labels: the version a rotation made current, and the one it replaced.
    #[serde(default)]
    pub current_version: Option<u64>,
    #[serde(default)]
    pub previous_version: Option<u64>,
    /// The previous credential, sealed, so retirement and rollback never depend on version
    /// history (which `max_versions` may prune).
    #[serde(default)]
    pub previous_sealed: Option<String>,
    #[serde(default)]
    pub last: Option<LastRun>,
    #[serde(default)]
    pub rotations: u64,
    #[serde(default)]
    pub failures: u64,
}

impl RotationDoc {
    /// When the scheduler should look at this row next.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        let run = self.run.as_ref().map(|r| r.not_before);
        let retire = self.retire.as_ref().map(|r| r.next_try);
        [run, retire, self.next_due].into_iter().flatten().min()
    }
}

/// Seal contexts: each sealed value is bound to its secret and role.
pub fn pending_context(env: &str, path: &str, run_id: &str) -> String {
    format!("rotation-pending:{env}/{path}:{run_id}")
}

pub fn previous_context(env: &str, path: &str) -> String {
    format!("rotation-previous:{env}/{path}")
}
