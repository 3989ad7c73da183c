//! The backup service on a real store and a real repository, driven by a manual clock:
//! schedules, missed backups and catch-ups, RPO breaches and recovery, size changes,
//! retention, runs cut short by a crash, and the DR report.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use steward_core::ManualClock;
use steward_dr::{Backups, Compiled, Op, OwnStore};
use steward_secrets::{Engine, RequestCtx, WriteRequest};
use steward_store::Tx;

const PASSWORD: &str = "repo password that must never be logged 4f1c";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct World {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    clock: ManualClock,
    engine: Arc<Engine>,
    token: String,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let clock = ManualClock::new(t0());
        std::fs::create_dir_all(root.join("store")).unwrap();
        let (engine, token) = steward_test_utils::engine(&root.join("store"), clock.clone()).await;
        let ctx = RequestCtx::new("t".into(), Some(token.clone()), None);
        engine
            .write_secret(
                &ctx,
                "dev",
                "backup/main",
                WriteRequest {
                    value: json!({ "password": PASSWORD }),
                    cas: None,
                    metadata: None,
                },
            )
            .await
            .unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        World {
            _dir: dir,
            root,
            clock,
            engine,
            token,
        }
    }

    fn compiled(&self, extra: &str) -> Compiled {
        let text = format!(
            r#"
[backup]
missed_grace = "10m"
check_schedule = "0 4 * * *"
[[backup.repositories]]
name = "main"
location = "{repo}"
password_secret = "dev/backup/main#password"
[[backup.sources]]
name = "files"
type = "directory"
paths = ["{data}"]
schedule = "every 1h"
rpo_target = "2h"
{extra}
"#,
            repo = self.root.join("repo").display(),
            data = self.root.join("data").display(),
        );
        let cfg = steward_core::config::Config::parse(&text, "t.toml").unwrap();
        Compiled::compile(&cfg.backup, &OwnStore::Sqlite(self.root.join("store/x.db"))).unwrap()
    }

    async fn service(&self, extra: &str) -> Arc<Backups> {
        let b = Backups::new(self.engine.clone(), None, self.compiled(extra));
        b.load().await.unwrap();
        b
    }

    fn write_data(&self, name: &str, len: usize, seed: u64) {
        std::fs::write(
            self.root.join("data").join(name),
            steward_test_utils::fs_tree::random_bytes(len, seed),
        )
        .unwrap();
    }

    async fn events(&self) -> Vec<(String, Value)> {
        self.engine
            .store()
            .read(|tx| tx.events_after(0, 10_000))
            .await
            .unwrap()
            .into_iter()
            .filter(|e| {
                e.kind.starts_with("backup.")
                    || e.kind.starts_with("dr.")
                    || e.kind.starts_with("drill.")
            })
            .map(|e| (e.kind, serde_json::from_str(&e.detail).unwrap()))
            .collect()
    }

    async fn kinds(&self) -> Vec<String> {
        self.events().await.into_iter().map(|(k, _)| k).collect()
    }
}

async fn tick(b: &Arc<Backups>) -> usize {
    let (_, jobs) = b.tick().await;
    let n = jobs.len();
    for j in jobs {
        j.await.unwrap();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_catch_up_after_a_miss_and_report_the_recovery_point() {
    let w = World::new().await;
    w.write_data("a.bin", 200_000, 1);
    let b = w.service("").await;
    // Nothing is due before the first hour.
    assert_eq!(tick(&b).await, 0);
    w.clock.advance(chrono::Duration::minutes(61));
    assert_eq!(tick(&b).await, 1, "the hourly backup is due");
    let runs = b.runs_of("files", Op::Backup);
    assert_eq!(runs.len(), 1);
    assert!(runs[0].passed(), "{:?}", runs[0].error);
    assert_eq!(runs[0].trigger, "schedule");
    assert_eq!(w.kinds().await, ["backup.succeeded"]);
    // Steward is "down" for almost three hours (until 03:51, before the 04:00 repository
    // check): the next look finds the backup missed, the recovery point over its 2 h
    // target, and catches up.
    w.clock.advance(chrono::Duration::minutes(170));
    assert_eq!(tick(&b).await, 1);
    let runs = b.runs_of("files", Op::Backup);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].trigger, "catch-up");
    let kinds = w.kinds().await;
    assert_eq!(
        kinds,
        [
            "backup.succeeded",
            "dr.rpo_breached",
            "backup.missed",
            "backup.succeeded",
            "dr.rpo_met"
        ],
        "{kinds:?}"
    );
    let missed = &w.events().await[2].1;
    assert_eq!(missed["source"], "files");
    // The report: fresh backup, basis "backup" (no drill), target met, a note about drills
    // only for database sources.
    let r = b.report_now();
    let s = &r.sources[0];
    assert_eq!(s.rpo_basis, "backup");
    assert_eq!(s.rpo_met, Some(true));
    assert!(s.rpo_s.unwrap() < 60.0, "{:?}", s.rpo_s);
    assert_eq!(s.status, "ok", "{:?}", s.notes);
    // The snapshots are real: restic's format, listed through the service.
    let snaps = b.snapshots("files").await.unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(snaps[0].tags.contains(&"source=files".to_string()));
    // 04:00: the daily repository check, reading that day's share of the data.
    w.clock.advance(chrono::Duration::minutes(10));
    assert_eq!(tick(&b).await, 1);
    let check = b.runs_of("main", Op::Check);
    assert!(check[0].passed(), "{:?}", check[0].error);
    assert!(check[0].detail["subset"].as_str().unwrap().ends_with("/30"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_much_larger_than_usual_raises_a_size_event_and_retention_keeps_the_last() {
    let w = World::new().await;
    w.write_data("a.bin", 100_000, 1);
    let b = w.service("retention = { keep_last = 2 }").await;
    let (i, _) = b.config().source("files").unwrap();
    for _ in 0..4 {
        w.clock.advance(chrono::Duration::minutes(1));
        assert!(b.backup(i, "manual").await.unwrap().passed());
    }
    assert!(!w.kinds().await.contains(&"backup.size_changed".to_string()));
    w.write_data("b.bin", 2_000_000, 2);
    w.clock.advance(chrono::Duration::minutes(1));
    let run = b.backup(i, "manual").await.unwrap();
    assert!(run.passed());
    let ev = w.events().await;
    let changed: Vec<_> = ev
        .iter()
        .filter(|(k, _)| k == "backup.size_changed")
        .collect();
    assert_eq!(changed.len(), 1, "{ev:?}");
    assert_eq!(changed[0].1["source"], "files");
    assert!(changed[0].1["ratio"].as_f64().unwrap() > 3.0);
    // keep_last = 2: older snapshots were forgotten after each backup.
    assert_eq!(b.snapshots("files").await.unwrap().len(), 2);
    // Back to the usual size: a resolving event.
    std::fs::remove_file(w.root.join("data/b.bin")).unwrap();
    w.clock.advance(chrono::Duration::minutes(1));
    assert!(b.backup(i, "manual").await.unwrap().passed());
    assert_eq!(w.kinds().await.last().unwrap(), "backup.size_normal");
    // A repository check after pruning finds nothing wrong.
    let check = b
        .maintain(0, "manual", Some(steward_repo::ReadDataSubset::All))
        .await
        .unwrap();
    assert!(check.passed(), "{:?}", check.error);
    assert!(w.kinds().await.contains(&"backup.check_passed".to_string()));
    let prune = b.runs_of("main", Op::Prune);
    assert_eq!(
        prune.len(),
        1,
        "a repository with retention is pruned after its check"
    );
    assert!(prune[0].passed(), "{:?}", prune[0].error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_is_an_event_and_a_run_cut_short_is_recorded_as_failed() {
    let w = World::new().await;
    let b = w.service("").await;
    let (i, _) = b.config().source("files").unwrap();
    // The data directory is gone: the backup fails, no snapshot is written.
    std::fs::remove_dir_all(w.root.join("data")).unwrap();
    let run = b.backup(i, "manual").await.unwrap();
    assert_eq!(run.ok, Some(false));
    let err = run.error.clone().unwrap();
    assert!(err.contains("data"), "{err}");
    assert!(!err.contains(PASSWORD));
    let ev = w.events().await;
    assert_eq!(ev.last().unwrap().0, "backup.failed");
    assert_eq!(ev.last().unwrap().1["source"], "files");
    assert!(b.snapshots("files").await.unwrap().is_empty());
    // A run recorded as started but never finished (Steward was killed) is failed on load.
    let mut cut = run.clone();
    cut.id = "files/backup/00000000000000000001-0000".into();
    cut.ok = None;
    cut.error = None;
    let doc = serde_json::to_string(&cut).unwrap();
    w.engine
        .store()
        .write(None, move |tx: &mut dyn Tx| {
            tx.record_put(&steward_store::RecordRow {
                kind: steward_dr::service::RUN_KIND.into(),
                id: cut.id.clone(),
                doc: doc.clone(),
                due_at: None,
            })
        })
        .await
        .unwrap();
    let b2 = w.service("").await;
    let runs = b2.runs_of("files", Op::Backup);
    let found = runs.iter().find(|r| r.id.ends_with("0001-0000")).unwrap();
    assert_eq!(found.ok, Some(false));
    assert!(found.error.as_deref().unwrap().contains("interrupted"));
    // The store never holds the repository password.
    for f in std::fs::read_dir(w.root.join("store")).unwrap() {
        let raw = std::fs::read(f.unwrap().path()).unwrap_or_default();
        assert!(!contains(&raw, PASSWORD.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_the_same_source_do_not_overlap() {
    let w = World::new().await;
    w.write_data("a.bin", 30_000_000, 3);
    let b = w.service("").await;
    let (i, _) = b.config().source("files").unwrap();
    let b1 = b.clone();
    let first = tokio::spawn(async move { b1.backup(i, "manual").await });
    // Wait (bounded) until the first has claimed the source.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !b.is_running("files", Op::Backup) && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    let second = b.backup(i, "manual").await;
    let e = second.expect_err("a second backup of the same source while one runs");
    assert!(e.message.contains("already running"), "{}", e.message);
    assert!(first.await.unwrap().unwrap().passed());
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Waits (bounded) until the cluster has archived the WAL file `name`.
fn wait_archived(archive: &std::path::Path, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !archive.join(name).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} was not archived within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The world's repository, opened as the service opens it.
fn open_repo(w: &World) -> steward_repo::Repository {
    steward_repo::Repository::open(
        Arc::new(steward_repo::LocalBackend::new(w.root.join("repo"))),
        PASSWORD,
    )
    .unwrap()
}

/// Pushes every archived WAL file of the cluster into the repository (what `archive_command
/// = "steward repo wal-push ..."` does in production).
fn push_wal(repo: &steward_repo::Repository, archive: &std::path::Path) {
    let mut names: Vec<_> = std::fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        steward_backup::wal_push(repo, "pg", &p).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_drill_recovers_the_wal_to_a_chosen_time_in_a_throwaway_cluster() {
    let w = World::new().await;
    let pg = steward_test_utils::PgCluster::start_archiving();
    w.engine
        .write_secret(
            &RequestCtx::new("t".into(), Some(w.token.clone()), None),
            "dev",
            "pg/super",
            WriteRequest {
                value: json!({ "password": pg.superuser_password }),
                cas: None,
                metadata: None,
            },
        )
        .await
        .unwrap();
    pg.exec("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)")
        .await;
    // Where the throwaway cluster goes must be reachable by the postgres OS user.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let extra = format!(
        r#"
[[backup.sources]]
name = "pg"
type = "postgres"
mode = "base"
host = "127.0.0.1"
port = {port}
user = "postgres"
password_secret = "dev/pg/super#password"
database = "postgres"
rpo_target = "1h"
[backup.sources.drill]
scratch_dir = "{scratch}"
timeout = "2m"
assertions = [{{ sql = "SELECT count(*) FROM t", expect = "150" }}]
"#,
        port = pg.port,
        scratch = scratch.path().display()
    );
    let svc = w.service(&extra).await;
    let base = svc.backup(1, "manual").await.unwrap();
    assert!(base.passed(), "{base:?}");

    pg.exec("INSERT INTO t SELECT generate_series(101, 150)")
        .await;
    // Commit timestamps have microseconds; a little real time on each side of the target
    // keeps the two batches apart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let target = Utc::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.exec("INSERT INTO t SELECT generate_series(151, 170)")
        .await;
    let last = pg
        .value("SELECT pg_walfile_name(pg_switch_wal())")
        .await
        .expect("the WAL file switched away from");
    wait_archived(&pg.archive(), &last);
    push_wal(&open_repo(&w), &pg.archive());
    let snapshots_before = open_repo(&w).list_snapshots().unwrap().len();

    // To the chosen time: the first two batches, not the third.
    let run = svc.drill(1, "manual", None, Some(target)).await.unwrap();
    assert!(run.passed(), "{run:?}");
    assert_eq!(run.snapshot_time, Some(target));
    assert_eq!(run.snapshot.as_deref(), base.snapshot.as_deref());
    assert!(run.restore_s.unwrap() > 0.0);
    assert!(
        run.detail["pitr"]["wal_files"].as_u64().unwrap() >= 1,
        "{run:?}"
    );
    let checks = &run.drill.as_ref().unwrap().checks;
    assert!(
        checks.iter().any(|c| c.name == "recovery" && c.passed),
        "{checks:?}"
    );
    assert!(checks.iter().any(|c| c.name == "amcheck"), "{checks:?}");

    // To the end of the archive: all three batches, so the assertion written for the
    // chosen time fails, and says what it found.
    let latest = svc.drill(1, "manual", None, None).await.unwrap();
    assert!(!latest.passed());
    let why = latest.error.clone().unwrap();
    assert!(why.contains("expected \"150\", got \"170\""), "{why}");
    let recovered = latest.snapshot_time.unwrap();
    assert!(recovered > target, "{recovered} should be after {target}");

    // A target after the end of the archive cannot be reached: a failed recovery check
    // with the server's own words, not a passed drill.
    let late = svc
        .drill(
            1,
            "manual",
            None,
            Some(Utc::now() + chrono::Duration::hours(1)),
        )
        .await
        .unwrap();
    assert!(!late.passed());
    let why = late.error.clone().unwrap();
    assert!(why.contains("recovery"), "{why}");

    // A snapshot is for logical dumps; a base source's drill takes a time.
    let e = svc
        .drill(1, "manual", Some("abc".into()), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("to_time"), "{e}");

    // The drills archived nothing of their own and left nothing behind.
    let snapshots_after = open_repo(&w).list_snapshots().unwrap().len();
    assert_eq!(snapshots_before, snapshots_after);
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    let kinds = w.kinds().await;
    assert!(kinds.contains(&"drill.passed".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"drill.failed".to_string()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_restore_shows_the_bytes_written_of_its_total() {
    let w = World::new().await;
    for i in 0..4 {
        w.write_data(&format!("part{i}.bin"), 40_000_000, 10 + i);
    }
    let b = w.service("").await;
    let (i, _) = b.config().source("files").unwrap();
    assert!(b.backup(i, "manual").await.unwrap().passed());
    let target = w.root.join("restored");
    let b1 = b.clone();
    let t1 = target.clone();
    let restore = tokio::spawn(async move {
        b1.restore(steward_dr::RestoreRequest {
            source: "files".into(),
            snapshot: None,
            target_dir: Some(t1),
            database: None,
        })
        .await
    });
    // Watch the run as `steward backup restore` does, until it is recorded as done.
    let ctx = RequestCtx::new("t".into(), Some(w.token.clone()), None);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !restore.is_finished() && std::time::Instant::now() < deadline {
        for r in b
            .api_runs(&ctx, Some("files"), Some(Op::Restore), 1)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.ok.is_none())
        {
            seen.push((r.bytes, r.detail["expected_bytes"].as_u64()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let run = restore.await.unwrap().unwrap();
    assert!(run.passed(), "{run:?}");
    let total = run.bytes.unwrap();
    assert_eq!(total, 160_000_000);
    // While it ran: bytes written so far, never past its own total, which it showed.
    let with_total: Vec<_> = seen.iter().filter(|(_, e)| e.is_some()).collect();
    assert!(
        !with_total.is_empty(),
        "the running restore never showed its total ({} observations)",
        seen.len()
    );
    for (bytes, expected) in with_total {
        assert_eq!(*expected, Some(total));
        assert!(bytes.unwrap() <= total);
    }
}
