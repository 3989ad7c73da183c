//! The rotation engine against a real SQLite store, with a fake target that records which
//! passwords it accepts, and an injected clock: full rotations, failures with discard and
//! bounded retries, resuming a run another process left half done, consumer-aware retirement,
//! schedules and exactly-once expiry warnings.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use steward_core::ManualClock;
use steward_rotation::{RotationConfig, RotationSettings, Rotations, Schedule};
use steward_rotators::{Credential, Registry, Rotator, RotatorError, StepContext};
use steward_secrets::{Engine, ReadOptions, RequestCtx, WriteRequest};

/// Which step fails, and how the target looks.
#[derive(Default)]
struct Target {
    /// Passwords the target accepts.
    valid: Mutex<BTreeSet<String>>,
    fail_at: Mutex<Option<&'static str>>,
    /// When set, `set` never returns (a process that stops mid-step).
    hang_set: Mutex<bool>,
    calls: Mutex<Vec<String>>,
    created: AtomicU32,
}

struct Fake(Arc<Target>);

impl Fake {
    fn check(&self, step: &'static str) -> Result<(), RotatorError> {
        self.0.calls.lock().unwrap().push(step.to_string());
        if *self.0.fail_at.lock().unwrap() == Some(step) {
            return Err(RotatorError::rejected(format!(
                "the target refused at {step}"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Rotator for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn check_settings(&self, _: &Value) -> Result<(), RotatorError> {
        Ok(())
    }
    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError> {
        self.check("create")?;
        let n = self.0.created.fetch_add(1, Ordering::SeqCst);
        let base = cx.current.cloned().unwrap_or_default();
        Ok(base.with("password", format!("pw-{n}-{}", cx.attempt_id)))
    }
    async fn set(&self, _: &StepContext<'_>, p: &Credential) -> Result<(), RotatorError> {
        if *self.0.hang_set.lock().unwrap() {
            std::future::pending::<()>().await;
        }
        self.check("set")?;
        self.0
            .valid
            .lock()
            .unwrap()
            .insert(p.str("password")?.to_string());
        Ok(())
    }
    async fn test(&self, _: &StepContext<'_>, p: &Credential) -> Result<(), RotatorError> {
        self.check("test")?;
        if self.0.valid.lock().unwrap().contains(p.str("password")?) {
            Ok(())
        } else {
            Err(RotatorError::rejected("login failed"))
        }
    }
    async fn discard(&self, _: &StepContext<'_>, p: &Credential) -> Result<(), RotatorError> {
        self.check("discard")?;
        self.0.valid.lock().unwrap().remove(p.str("password")?);
        Ok(())
    }
    async fn revoke(&self, _: &StepContext<'_>, old: &Credential) -> Result<(), RotatorError> {
        self.check("revoke")?;
        self.0.valid.lock().unwrap().remove(old.str("password")?);
        Ok(())
    }
}

struct Harness {
    engine: Arc<Engine>,
    clock: ManualClock,
    target: Arc<Target>,
    root: String,
    _dir: tempfile::TempDir,
}

fn settings() -> RotationSettings {
    RotationSettings {
        jitter: Duration::ZERO,
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(2),
        expiry_scan: Duration::ZERO,
        ..Default::default()
    }
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap());
        let (engine, root) = steward_test_utils::engine(dir.path(), clock.clone()).await;
        Self {
            engine,
            clock,
            target: Arc::new(Target::default()),
            root,
            _dir: dir,
        }
    }

    fn rotations(&self) -> Arc<Rotations> {
        let mut reg = Registry::builtin();
        reg.add(Arc::new(Fake(self.target.clone())));
        Rotations::new(self.engine.clone(), reg, settings(), None)
    }

    fn ctx(&self) -> RequestCtx {
        RequestCtx::new("test".into(), Some(self.root.clone()), None)
    }

    fn ctx_with(&self, token: &str) -> RequestCtx {
        RequestCtx::new("test".into(), Some(token.to_string()), None)
    }

    async fn put(&self, password: &str) -> u64 {
        self.target.valid.lock().unwrap().insert(password.into());
        self.engine
            .write_secret(
                &self.ctx(),
                "dev",
                "app/db",
                WriteRequest {
                    value: json!({"username": "app", "password": password}),
                    cas: None,
                    metadata: None,
                },
            )
            .await
            .unwrap()
            .version
    }

    async fn current(&self) -> (u64, String) {
        let d = self
            .engine
            .read_secret(&self.ctx(), "dev", "app/db", ReadOptions::default())
            .await
            .unwrap();
        (
            d.version.version,
            d.value["password"].as_str().unwrap().to_string(),
        )
    }

    async fn events(&self, rot: &Rotations, kind: &str) -> Vec<Value> {
        let page = rot
            .events(&self.ctx(), 0, 1000, Duration::ZERO)
            .await
            .unwrap();
        page.events
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.detail)
            .collect()
    }
}

/// The thresholds of the expiry warnings stored so far, in order.
async fn thresholds(h: &Harness, rot: &Rotations) -> Vec<String> {
    let page = rot.events(&h.ctx(), 0, 1000, Duration::ZERO).await.unwrap();
    page.events
        .into_iter()
        .filter(|e| e.kind == "secret.expiring" || e.kind == "secret.expired")
        .map(|e| e.detail["threshold"].as_str().unwrap().to_string())
        .collect()
}

fn config(schedule: Schedule) -> RotationConfig {
    RotationConfig {
        rotator: "fake".into(),
        settings: Value::Null,
        admin: None,
        schedule,
        grace: "1h".into(),
        retire: Default::default(),
        max_attempts: 3,
    }
}

/// A manual rotation whose previous credential stays until the grace period ends.
fn manual_grace() -> RotationConfig {
    RotationConfig {
        retire: steward_rotation::RetireMode::Grace,
        ..config(manual())
    }
}

fn manual() -> Schedule {
    Schedule {
        manual: true,
        ..Default::default()
    }
}

/// Waits (bounded) until no run is in flight.
async fn settle(rot: &Rotations, h: &Harness) -> steward_rotation::RotationStatus {
    for _ in 0..500 {
        let s = rot.status(&h.ctx(), "dev", "app/db").await.unwrap();
        if s.state != "rotating" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the rotation did not settle");
}

#[tokio::test]
async fn a_rotation_makes_one_new_current_version_and_keeps_the_previous_one_working() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    rot.configure(&h.ctx(), "dev", "app/db", manual_grace())
        .await
        .unwrap();
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    let s = settle(&rot, &h).await;
    assert_eq!(s.last.as_ref().unwrap().outcome, "rotated");
    assert_eq!((s.current_version, s.previous_version), (Some(2), Some(1)));
    assert_eq!(s.state, "retiring");
    let (v, pw) = h.current().await;
    assert_eq!(v, 2);
    assert_ne!(pw, "initial");
    // Both work during the grace period.
    let valid = h.target.valid.lock().unwrap().clone();
    assert!(valid.contains("initial") && valid.contains(&pw));
    assert_eq!(h.events(&rot, "rotation.finished").await.len(), 1);
    let calls = h.target.calls.lock().unwrap().clone();
    assert_eq!(calls, ["create", "set", "test"]);
    let c = rot.counts().await.unwrap();
    assert_eq!((c.idle, c.rotating, c.retiring), (0, 0, 1));
    assert_eq!((c.completed, c.failed), (1, 0));
}

#[tokio::test]
async fn a_rejected_value_is_discarded_retried_fresh_and_then_reported_without_touching_current() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    rot.configure(&h.ctx(), "dev", "app/db", config(manual()))
        .await
        .unwrap();
    *h.target.fail_at.lock().unwrap() = Some("test");
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    // Retries wait for the (injected) clock: move it along until the run ends.
    let mut s = rot.status(&h.ctx(), "dev", "app/db").await.unwrap();
    for _ in 0..200 {
        h.clock.advance(chrono::Duration::seconds(1));
        rot.drive("dev", "app/db").await.unwrap();
        s = rot.status(&h.ctx(), "dev", "app/db").await.unwrap();
        if s.state != "rotating" {
            break;
        }
    }
    let last = s.last.clone().unwrap();
    assert_eq!(last.outcome, "failed");
    assert_eq!(last.attempts, 3);
    assert!(last.error.unwrap().contains("refused at test"));
    assert_eq!(s.failures, 1);
    assert!(!s.pending);
    // Current is untouched and still the only valid password; every pending was undone.
    assert_eq!(h.current().await, (1, "initial".to_string()));
    assert_eq!(
        h.target
            .valid
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        ["initial"]
    );
    let calls = h.target.calls.lock().unwrap().clone();
    assert_eq!(calls.iter().filter(|c| *c == "discard").count(), 3);
    // Each attempt made a fresh value.
    assert_eq!(h.target.created.load(Ordering::SeqCst), 3);
    let failed = h.events(&rot, "rotation.failed").await;
    assert_eq!(failed.len(), 1);
    assert!(!failed[0].to_string().contains("pw-"), "{}", failed[0]);
    assert_eq!(h.events(&rot, "rotation.retrying").await.len(), 2);
}

#[tokio::test]
async fn a_run_left_half_done_by_a_dead_process_is_resumed_and_finishes_once() {
    let h = Harness::new().await;
    let first = h.rotations();
    h.put("initial").await;
    first
        .configure(&h.ctx(), "dev", "app/db", config(manual()))
        .await
        .unwrap();
    // The first process stores create, then hangs inside set (as if killed there).
    *h.target.hang_set.lock().unwrap() = true;
    first.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    for _ in 0..200 {
        let s = first.status(&h.ctx(), "dev", "app/db").await.unwrap();
        if s.step == Some("set") && s.pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pending = first.read_pending(&h.ctx(), "dev", "app/db").await.unwrap();
    // A new process (the embedded store has one owner, so the old lease is void) resumes.
    *h.target.hang_set.lock().unwrap() = false;
    let second = h.rotations();
    second.drive("dev", "app/db").await.unwrap();
    let s = second.status(&h.ctx(), "dev", "app/db").await.unwrap();
    assert_eq!(s.last.unwrap().outcome, "rotated");
    // It finished with the value stored before the crash: no second create.
    let (v, pw) = h.current().await;
    assert_eq!(v, 2);
    assert_eq!(pw, pending["password"].as_str().unwrap());
    assert_eq!(h.target.created.load(Ordering::SeqCst), 1);
    assert_eq!(h.events(&second, "rotation.finished").await.len(), 1);
    // Driving again changes nothing.
    second.drive("dev", "app/db").await.unwrap();
    assert_eq!(h.current().await.0, 2);
}

#[tokio::test]
async fn the_previous_credential_is_revoked_once_every_recent_consumer_read_the_new_one() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    h.engine
        .put_policy(
            &h.ctx(),
            "reader",
            r#"{"rules":[{"env":"dev","path":"app/**","capabilities":["read"]}]}"#,
        )
        .await
        .unwrap();
    let app = h
        .engine
        .create_token(
            &h.ctx(),
            serde_json::from_value(json!({"policies": ["reader"]})).unwrap(),
        )
        .await
        .unwrap();
    let read_as_app = || async {
        h.engine
            .read_secret(
                &h.ctx_with(&app.token),
                "dev",
                "app/db",
                ReadOptions::default(),
            )
            .await
            .unwrap()
    };
    read_as_app().await;
    rot.configure(&h.ctx(), "dev", "app/db", config(manual()))
        .await
        .unwrap();
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    settle(&rot, &h).await;
    rot.flush_reads().await.unwrap();
    let s = rot.status(&h.ctx(), "dev", "app/db").await.unwrap();
    assert_eq!(s.laggards, vec![app.info.accessor.clone()]);
    // Still a laggard: nothing is revoked even when the check comes due.
    h.clock.advance(chrono::Duration::seconds(5));
    rot.drive("dev", "app/db").await.unwrap();
    assert!(h.target.valid.lock().unwrap().contains("initial"));
    // The app reads the new version: the previous credential goes.
    assert_eq!(read_as_app().await.version.version, 2);
    h.clock.advance(chrono::Duration::seconds(5));
    rot.drive("dev", "app/db").await.unwrap();
    let s = rot.status(&h.ctx(), "dev", "app/db").await.unwrap();
    assert_eq!(s.state, "idle");
    assert!(!h.target.valid.lock().unwrap().contains("initial"));
    let retired = h.events(&rot, "rotation.retired").await;
    assert_eq!(retired[0]["reason"], "consumers_moved");
}

#[tokio::test]
async fn a_due_schedule_starts_a_rotation_and_the_next_one_is_planned() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    let sched = Schedule {
        every: Some("1d".into()),
        ..Default::default()
    };
    let s = rot
        .configure(&h.ctx(), "dev", "app/db", config(sched))
        .await
        .unwrap();
    let due = s.next_due.unwrap();
    assert_eq!(
        due,
        steward_core::Clock::now(&h.clock) + chrono::Duration::days(1)
    );
    rot.tick().await.unwrap();
    assert_eq!(
        rot.status(&h.ctx(), "dev", "app/db")
            .await
            .unwrap()
            .rotations,
        0
    );
    h.clock.set(due + chrono::Duration::seconds(1));
    rot.tick().await.unwrap();
    // The tick starts it in the background; drive here too (whichever comes first runs it).
    rot.drive("dev", "app/db").await.unwrap();
    let mut s = settle(&rot, &h).await;
    for _ in 0..500 {
        if s.rotations == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        s = settle(&rot, &h).await;
    }
    assert_eq!(s.rotations, 1);
    assert_eq!(
        s.next_due,
        Some(due + chrono::Duration::seconds(1) + chrono::Duration::days(1))
    );
    let started = h.events(&rot, "rotation.started").await;
    assert_eq!(started[0]["reason"], "schedule");
}

#[tokio::test]
async fn expiry_warnings_fire_once_per_threshold_and_never_again() {
    let h = Harness::new().await;
    let rot = h.rotations();
    let expires = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    h.engine
        .write_secret(
            &h.ctx(),
            "dev",
            "tls/cert",
            WriteRequest {
                value: json!({"pem": "x"}),
                cas: None,
                metadata: Some(serde_json::from_value(json!({"expires_at": expires})).unwrap()),
            },
        )
        .await
        .unwrap();
    let day = chrono::Duration::days(1);
    h.clock.set(expires - day * 8);
    rot.tick().await.unwrap();
    assert!(thresholds(&h, &rot).await.is_empty());
    h.clock.set(expires - day * 7 + chrono::Duration::hours(1));
    rot.tick().await.unwrap();
    rot.tick().await.unwrap();
    assert_eq!(thresholds(&h, &rot).await, ["7days"]);
    // A second service (a restart, or another replica) does not repeat it.
    let other = h.rotations();
    other.tick().await.unwrap();
    assert_eq!(thresholds(&h, &rot).await, ["7days"]);
    // Down for a while: both 3 and 1 days passed; only the tightest is sent.
    h.clock.set(expires - day + chrono::Duration::hours(1));
    other.tick().await.unwrap();
    rot.tick().await.unwrap();
    assert_eq!(thresholds(&h, &rot).await, ["7days", "1day"]);
    h.clock.set(expires + chrono::Duration::minutes(1));
    rot.tick().await.unwrap();
    other.tick().await.unwrap();
    assert_eq!(thresholds(&h, &rot).await, ["7days", "1day", "expired"]);
    let listed = rot
        .expiring(&h.ctx(), Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].expired);
}

#[tokio::test]
async fn after_a_key_rotation_the_sealed_previous_value_still_rolls_back() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    rot.configure(&h.ctx(), "dev", "app/db", config(manual()))
        .await
        .unwrap();
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    settle(&rot, &h).await;
    // New keyring key; re-wrapping retires the old one (the spawned re-wrap may race ours).
    h.engine.rotate_keys(&h.ctx()).await.unwrap();
    h.engine.rewrap_all().await.unwrap();
    let (_, keys, pending) = h.engine.key_status(&h.ctx()).await.unwrap();
    assert_eq!((keys.len(), pending), (1, 0), "the old key is retired");
    rot.rollback(&h.ctx(), "dev", "app/db").await.unwrap();
    let s = settle(&rot, &h).await;
    assert_eq!(s.last.unwrap().outcome, "rolled_back");
    assert_eq!(h.current().await, (3, "initial".to_string()));
}

#[tokio::test]
async fn a_secret_that_requires_check_and_set_still_rotates() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    h.engine
        .update_metadata(
            &h.ctx(),
            "dev",
            "app/db",
            serde_json::from_value(json!({"cas_required": true})).unwrap(),
        )
        .await
        .unwrap();
    rot.configure(&h.ctx(), "dev", "app/db", config(manual()))
        .await
        .unwrap();
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    let s = settle(&rot, &h).await;
    assert_eq!(s.last.unwrap().outcome, "rotated");
    assert_eq!(h.current().await.0, 2);
}

#[tokio::test]
async fn configuring_a_rotation_cannot_borrow_credentials_or_run_programs() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    h.engine
        .put_policy(
            &h.ctx(),
            "rotator",
            r#"{"rules":[{"env":"dev","path":"app/**","capabilities":["read","rotate"]}]}"#,
        )
        .await
        .unwrap();
    let t = h
        .engine
        .create_token(
            &h.ctx(),
            serde_json::from_value(json!({"policies": ["rotator"]})).unwrap(),
        )
        .await
        .unwrap();
    let ctx = h.ctx_with(&t.token);
    // The admin credential lives where this token cannot read.
    let mut cfg = config(manual());
    cfg.admin = Some("db/admin".into());
    let e = rot.configure(&ctx, "dev", "app/db", cfg).await.unwrap_err();
    assert_eq!(e.code, "permission_denied", "{e:?}");
    let mut cfg = config(manual());
    cfg.rotator = "command".into();
    cfg.settings = json!({"command": ["/bin/sh", "-c", "true"]});
    let e = rot.configure(&ctx, "dev", "app/db", cfg).await.unwrap_err();
    assert_eq!(e.code, "permission_denied", "{e:?}");
    // Its own secret with a rotator that needs nothing else: fine.
    rot.configure(&ctx, "dev", "app/db", config(manual()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_manual_rotation_while_retiring_revokes_the_waiting_credential_first() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    rot.configure(&h.ctx(), "dev", "app/db", manual_grace())
        .await
        .unwrap();
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    settle(&rot, &h).await;
    assert!(h.target.valid.lock().unwrap().contains("initial"));
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    let s = settle(&rot, &h).await;
    assert_eq!(s.rotations, 2);
    let valid = h.target.valid.lock().unwrap().clone();
    assert!(!valid.contains("initial"), "{valid:?}");
    assert_eq!(valid.len(), 2, "current and one previous: {valid:?}");
    let retired = h.events(&rot, "rotation.retired").await;
    assert_eq!(retired[0]["reason"], "superseded");
}

#[tokio::test]
async fn with_no_recent_consumer_the_previous_credential_is_revoked_at_once() {
    let h = Harness::new().await;
    let rot = h.rotations();
    h.put("initial").await;
    rot.configure(&h.ctx(), "dev", "app/db", config(manual()))
        .await
        .unwrap();
    rot.rotate_now(&h.ctx(), "dev", "app/db").await.unwrap();
    let mut s = settle(&rot, &h).await;
    for _ in 0..500 {
        if s.state == "idle" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        s = rot.status(&h.ctx(), "dev", "app/db").await.unwrap();
    }
    assert_eq!(s.state, "idle");
    assert!(!h.target.valid.lock().unwrap().contains("initial"));
    let retired = h.events(&rot, "rotation.retired").await;
    assert_eq!(retired[0]["reason"], "consumers_moved");
    assert_eq!(retired[0]["retired_version"], 1);
}
