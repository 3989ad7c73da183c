//! Steward's rotation engine.
//!
//! Each secret with a rotation config has one row in `rotations` holding a [`RotationDoc`]:
//! the config, and while a rotation runs, its [`model::Run`], a persisted state machine with the
//! steps create, set, test and finish (as AWS Secrets Manager's rotation functions). The run is
//! stored before each step and advanced after it, in the same transaction as the step's audit
//! entry, so after a crash the next start runs the stored step again (every step is
//! idempotent). The run's presence is the per-secret lock; its lease keeps two replicas apart.
//!
//! A failed step undoes itself in the target (`discard`), waits with exponential backoff and
//! jitter, and starts over with a fresh value; when attempts run out, current is untouched and
//! a `rotation.failed` event is stored. After a rotation the previous credential keeps working
//! until every consumer seen in the grace window has read the new version, or the grace period
//! ends; then the rotator revokes it.
//!
//! The same service scans expiry dates and overdue rotations, storing each warning once (a
//! unique key in the same transaction as the event), and delivers events to the log and to an
//! optional webhook from a durable cursor.
#![forbid(unsafe_code)]

mod events;
mod expiry;
pub mod model;
pub mod schedule;
mod service;

pub use events::{EventPage, EventView, SinkConfig};
pub use expiry::ExpiringSecret;
pub use model::{RetireMode, RotationConfig, RotationDoc};
pub use schedule::Schedule;
pub use service::{FaultHook, RotationCounts, RotationSettings, RotationStatus, Rotations};
