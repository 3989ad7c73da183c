//! The store's integration tests, through its public API only, each run against both backends:
//! SQLite in a temporary directory and PostgreSQL in a fresh database created for the test (and
//! dropped after it).
//!
//! PostgreSQL is reached at `STEWARD_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`; any database the role may connect to and create
//! databases from). Set `STEWARD_TEST_PG=off` to run the SQLite half only.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::PathBuf,
    time::Duration,
};

use chrono::{DateTime, Utc};
use steward_core::config::SqliteSync;
use steward_crypto::SecretKey;
use steward_store::{
    audit::{AuditEntry, AuditRecord, ChainVerifier},
    AuditDraft, ConsumerRow, EventRow, JobError, PolicyRecord, RecordRow, RotationRow, SecretHead,
    SecretMeta, Store, StoreError, TokenRecord, Tx, VersionInfo, VersionRow,
};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const POOL: u32 = 4;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Where a test's store lives; can be opened any number of times.
#[derive(Debug, Clone)]
enum Target {
    Sqlite(PathBuf),
    Postgres { url: String, db: String },
}

impl Target {
    async fn open(&self) -> Result<Store, StoreError> {
        match self {
            Target::Sqlite(dir) => Store::open_sqlite(dir, SqliteSync::Normal, POOL).await,
            Target::Postgres { url, .. } => Store::open_postgres(url, POOL).await,
        }
    }

    /// Records a schema version from the future, as a newer Steward would.
    async fn fake_newer_schema(&self, version: u32) {
        match self {
            Target::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.join(steward_store::sqlite::DB_FILE))
                    .expect("open sqlite db");
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
                    [version],
                )
                .expect("insert schema version");
            }
            Target::Postgres { url, .. } => {
                pg_exec(
                    url.clone(),
                    format!(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES ({version}, 0)"
                    ),
                )
                .await
            }
        }
    }
}

/// The admin URL, or `None` when PostgreSQL tests are switched off.
fn pg_admin_url() -> Option<String> {
    match std::env::var("STEWARD_TEST_PG") {
        Ok(v) if v == "off" => None,
        Ok(v) if !v.is_empty() => Some(v),
        _ => Some(DEFAULT_PG.to_string()),
    }
}

/// Runs `sql` on `url` with the sync client, off the async workers.
async fn pg_exec(url: String, sql: String) {
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL for tests: {e}"));
        c.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .await
    .expect("pg admin task");
}

/// A fresh, uniquely named database; dropped (forcefully) by [`PgDb::drop_db`].
struct PgDb {
    admin: String,
    name: String,
}

impl PgDb {
    async fn create(admin: String) -> Self {
        let name = format!("steward_t_{}", hex::encode(rand::random::<[u8; 8]>()));
        let (a, n) = (admin.clone(), name.clone());
        tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&a, postgres::NoTls).unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at {a} (set STEWARD_TEST_PG, or =off): {e}")
            });
            // Prefer a linguistic default collation, so the schema's `COLLATE "C"` is what
            // makes ordering bytewise; fall back to the server default.
            let icu = format!(
                "CREATE DATABASE {n} TEMPLATE template0 ENCODING 'UTF8' \
                 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            );
            if c.batch_execute(&icu).is_err() {
                c.batch_execute(&format!("CREATE DATABASE {n}"))
                    .expect("create test database");
            }
        })
        .await
        .expect("create database task");
        Self { admin, name }
    }

    fn url(&self) -> String {
        let base = self.admin.split('?').next().unwrap_or(&self.admin);
        let (server, _) = base.rsplit_once('/').expect("admin url names a database");
        format!("{server}/{}", self.name)
    }

    fn target(&self) -> Target {
        Target::Postgres {
            url: self.url(),
            db: self.name.clone(),
        }
    }

    async fn drop_db(self) {
        pg_exec(
            self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

/// Runs `fut` as its own task so a failing assertion can be reported after cleanup.
async fn isolated<Fut>(label: &str, fut: Fut) -> std::thread::Result<()>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    eprintln!("--- running against {label}");
    tokio::spawn(fut)
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(p) => p,
            Err(e) => Box::new(format!("test task failed: {e}")),
        })
}

/// Runs `test` once with an SQLite target and once with a fresh PostgreSQL database.
async fn check_both_targets<F, Fut>(test: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = isolated("sqlite", test(Target::Sqlite(dir.path().join("data")))).await;
    if let Err(p) = sqlite {
        std::panic::resume_unwind(p);
    }
    check_pg_target(test).await;
}

/// Runs `test` against a fresh PostgreSQL database (unless PostgreSQL tests are off).
async fn check_pg_target<F, Fut>(test: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin) = pg_admin_url() else {
        eprintln!("--- STEWARD_TEST_PG=off: skipping the postgres run");
        return;
    };
    let db = PgDb::create(admin).await;
    let result = isolated("postgres", test(db.target())).await;
    db.drop_db().await;
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Runs `test` with a freshly opened store on each backend.
async fn check_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    check_both_targets(move |target| {
        let test = test.clone();
        async move {
            let store = target.open().await.expect("open store");
            test(store).await
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fixed instant with microsecond precision (what both backends store).
fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 123_456_000).expect("valid time")
}

fn head(env: &str, path: &str, current: u64) -> SecretHead {
    SecretHead {
        env: env.into(),
        path: path.into(),
        meta: SecretMeta::default(),
        current_version: current,
        oldest_version: 1,
        created_at: ts(0),
        updated_at: ts(current as i64),
    }
}

fn info(version: u64, key_id: u32) -> VersionInfo {
    VersionInfo {
        version,
        created_at: ts(version as i64),
        deleted_at: None,
        destroyed: false,
        key_id,
    }
}

fn envelope(env: &str, path: &str, version: u64) -> Vec<u8> {
    format!("sealed\0{env}/{path}@{version}").into_bytes()
}

/// Writes (without an audit entry) and expects success.
async fn write<T, F>(store: &Store, f: F) -> T
where
    F: FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    store.write(None, f).await.expect("write")
}

/// Reads and expects success.
async fn read<T, F>(store: &Store, f: F) -> T
where
    F: Fn(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    store.read(f).await.expect("read")
}

/// Creates `env/path` with versions `1..=n`, each under key 1.
async fn seed_secret(store: &Store, env: &'static str, path: &'static str, n: u64) {
    write(store, move |tx| {
        tx.put_head(&head(env, path, n))?;
        for v in 1..=n {
            tx.insert_version(env, path, &info(v, 1), &envelope(env, path, v))?;
        }
        Ok(())
    })
    .await
}

fn draft(request_id: &str) -> AuditDraft {
    AuditDraft {
        time: ts(42),
        request_id: request_id.into(),
        actor: "acc-tester".into(),
        action: "test.action".into(),
        env: Some("dev".into()),
        path: Some("app/db".into()),
        remote_addr: Some("127.0.0.1".into()),
        hmacs: BTreeMap::from([("value".to_string(), "hmac-sha256:abcd".to_string())]),
    }
}

/// The whole audit log and its head, from one snapshot.
async fn audit_log(store: &Store) -> (Vec<AuditRecord>, (u64, [u8; 32])) {
    read(store, |tx| {
        Ok((tx.audit_range(0, 100_000)?, tx.audit_head()?))
    })
    .await
}

/// Checks the chain end to end against the head and returns the entries by request id.
fn verify_chain(
    key: &SecretKey,
    recs: &[AuditRecord],
    head: (u64, [u8; 32]),
) -> BTreeMap<String, AuditEntry> {
    let mut v = ChainVerifier::new(key);
    recs.iter().for_each(|r| v.push(r));
    v.finish(head);
    assert_eq!(v.first_break, None, "the audit chain is broken");
    assert_eq!(v.checked, recs.len() as u64);
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=recs.len() as u64).collect::<Vec<_>>());
    let mut by_id = BTreeMap::new();
    for r in recs {
        let e: AuditEntry = serde_json::from_str(&r.entry).expect("entry json");
        assert_eq!(e.seq, r.seq);
        assert!(
            by_id.insert(e.request_id.clone(), e).is_none(),
            "request id logged twice"
        );
    }
    by_id
}

/// An engine-style error: store failures plus a refusal with its own audit code.
#[derive(Debug)]
enum TestError {
    Store(StoreError),
    Refused,
}

impl From<StoreError> for TestError {
    fn from(e: StoreError) -> Self {
        TestError::Store(e)
    }
}

impl JobError for TestError {
    fn audit_code(&self) -> String {
        match self {
            TestError::Store(e) => e.audit_code(),
            TestError::Refused => "refused".into(),
        }
    }
}

/// Occupies the writer thread for a while, so that writes submitted meanwhile queue up and
/// are committed together in the next batch.
fn block_writer(store: &Store) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .write(None, |_tx| {
                std::thread::sleep(Duration::from_millis(400));
                Ok::<_, StoreError>(())
            })
            .await
            .expect("blocking write");
    })
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn heads_and_versions_round_trip() {
    check_both(|store| async move {
        assert!(matches!(store.kind(), "sqlite" | "postgres"));
        let mut h = head("dev", "app/db", 3);
        h.oldest_version = 2;
        h.meta = SecretMeta {
            description: "the database password".into(),
            owner: "team-db".into(),
            tags: vec!["db".into(), "prod-like".into()],
            expires_at: Some(ts(9_999)),
            custom: BTreeMap::from([("ticket".into(), "OPS-1".into())]),
            max_versions: Some(5),
            cas_required: true,
        };
        let infos = vec![info(2, 1), info(3, u32::MAX)];
        let (h2, infos2) = (h.clone(), infos.clone());
        write(&store, move |tx| {
            tx.put_head(&h2)?;
            for i in &infos2 {
                tx.insert_version("dev", "app/db", i, &envelope("dev", "app/db", i.version))?;
            }
            // The same path in another environment is another secret.
            tx.put_head(&head("prod", "app/db", 7))
        })
        .await;

        let (got, versions, v3, missing, unknown, prod) = read(&store, |tx| {
            Ok((
                tx.head("dev", "app/db")?,
                tx.versions("dev", "app/db")?,
                tx.version("dev", "app/db", 3)?,
                tx.version("dev", "app/db", 9)?,
                tx.head("dev", "app/nope")?,
                tx.head("prod", "app/db")?,
            ))
        })
        .await;
        assert_eq!(got, Some(h.clone()));
        assert_eq!(versions, infos);
        assert_eq!(
            v3,
            Some(VersionRow {
                info: infos[1].clone(),
                envelope: Some(envelope("dev", "app/db", 3)),
            })
        );
        assert_eq!(missing, None);
        assert_eq!(unknown, None);
        assert_eq!(prod.map(|p| p.current_version), Some(7));

        // The one-statement read agrees with head + version (PostgreSQL overrides it).
        let (latest, v2, v9, absent, bare) = read(&store, |tx| {
            Ok((
                tx.head_and_version("dev", "app/db", None)?,
                tx.head_and_version("dev", "app/db", Some(2))?,
                tx.head_and_version("dev", "app/db", Some(9))?,
                tx.head_and_version("dev", "app/nope", None)?,
                tx.head_and_version("prod", "app/db", None)?,
            ))
        })
        .await;
        assert_eq!(latest, Some((h.clone(), v3.clone())));
        assert_eq!(
            v2.map(|(hd, row)| (hd, row.map(|r| r.info))),
            Some((h.clone(), Some(infos[0].clone())))
        );
        assert_eq!(v9, Some((h.clone(), None)));
        assert_eq!(absent, None);
        assert_eq!(
            bare.map(|(hd, row)| (hd.current_version, row)),
            Some((7, None))
        );

        // Updating a head keeps its creation time.
        let mut newer = h.clone();
        newer.current_version = 4;
        newer.created_at = ts(5_000);
        newer.updated_at = ts(5_000);
        newer.meta.description = "rotated".into();
        let n2 = newer.clone();
        write(&store, move |tx| tx.put_head(&n2)).await;
        let got = read(&store, |tx| tx.head("dev", "app/db")).await.unwrap();
        assert_eq!(got.current_version, 4);
        assert_eq!(got.updated_at, ts(5_000));
        assert_eq!(got.created_at, h.created_at);
        assert_eq!(got.meta.description, "rotated");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn update_version_soft_deletes_and_destroy_erases_the_envelope() {
    check_both(|store| async move {
        seed_secret(&store, "dev", "svc/key", 2).await;

        // Soft delete keeps the ciphertext (it can be undeleted).
        let mut deleted = info(1, 1);
        deleted.deleted_at = Some(ts(100));
        let d = deleted.clone();
        write(&store, move |tx| tx.update_version("dev", "svc/key", &d)).await;
        let row = read(&store, |tx| tx.version("dev", "svc/key", 1))
            .await
            .unwrap();
        assert_eq!(row.info, deleted);
        assert_eq!(row.envelope, Some(envelope("dev", "svc/key", 1)));

        // Destroy erases it.
        let mut destroyed = deleted.clone();
        destroyed.destroyed = true;
        let d = destroyed.clone();
        write(&store, move |tx| tx.update_version("dev", "svc/key", &d)).await;
        let row = read(&store, |tx| tx.version("dev", "svc/key", 1))
            .await
            .unwrap();
        assert_eq!(row.info, destroyed);
        assert_eq!(row.envelope, None);

        // ... for good: clearing the flags does not bring it back.
        write(&store, |tx| {
            tx.update_version("dev", "svc/key", &info(1, 1))
        })
        .await;
        let row = read(&store, |tx| tx.version("dev", "svc/key", 1))
            .await
            .unwrap();
        assert_eq!(row.info.deleted_at, None);
        assert_eq!(row.envelope, None);

        // The other version is untouched.
        let row = read(&store, |tx| tx.version("dev", "svc/key", 2))
            .await
            .unwrap();
        assert_eq!(row.info, info(2, 1));
        assert_eq!(row.envelope, Some(envelope("dev", "svc/key", 2)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_versions_drops_only_older_versions() {
    check_both(|store| async move {
        seed_secret(&store, "dev", "a", 5).await;
        seed_secret(&store, "dev", "b", 5).await;
        let pruned = write(&store, |tx| tx.prune_versions("dev", "a", 3)).await;
        assert_eq!(pruned, 2);
        let again = write(&store, |tx| tx.prune_versions("dev", "a", 3)).await;
        assert_eq!(again, 0);
        let (a, b) = read(&store, |tx| {
            Ok((tx.versions("dev", "a")?, tx.versions("dev", "b")?))
        })
        .await;
        assert_eq!(a.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(b.len(), 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_paths_is_prefix_bounded_and_bytewise_sorted() {
    check_both(|store| async move {
        const PATHS: &[&str] = &[
            "a", "a-b", "a.b", "a/b", "a/B", "a/_x", "a/b/c", "a/b-c", "a0", "ab", "B", "b/1", "Z",
            "z/9", "A/a",
        ];
        write(&store, |tx| {
            for p in PATHS {
                tx.put_head(&head("dev", p, 1))?;
            }
            tx.put_head(&head("other", "a/zzz", 1))
        })
        .await;

        let expect = |prefix: &str, limit: usize| -> Vec<String> {
            let mut v: Vec<String> = PATHS
                .iter()
                .filter(|p| p.starts_with(prefix))
                .map(|p| p.to_string())
                .collect();
            v.sort(); // bytewise, like the stores
            v.truncate(limit);
            v
        };
        for (prefix, limit) in [
            ("", 100),
            ("", 3),
            ("a", 100),
            ("a/", 100),
            ("a/b", 100),
            ("a/b/", 100),
            ("a/", 2),
            ("B", 100),
            ("zz", 100),
            ("nope/", 100),
        ] {
            let p = prefix.to_string();
            let got = read(&store, move |tx| tx.list_paths("dev", &p, limit as u32)).await;
            assert_eq!(
                got,
                expect(prefix, limit),
                "prefix {prefix:?} limit {limit}"
            );
        }
        // Spelled out once, so the expectation is not just "whatever sort() does".
        let got = read(&store, |tx| tx.list_paths("dev", "a/", 100)).await;
        assert_eq!(got, ["a/B", "a/_x", "a/b", "a/b-c", "a/b/c"]);
        let got = read(&store, |tx| tx.list_paths("other", "", 100)).await;
        assert_eq!(got, ["a/zzz"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_secret_removes_head_and_versions() {
    check_both(|store| async move {
        seed_secret(&store, "dev", "app/db", 3).await;
        seed_secret(&store, "dev", "app/dbx", 2).await;
        seed_secret(&store, "prod", "app/db", 1).await;
        let existed = write(&store, |tx| tx.delete_secret("dev", "app/db")).await;
        assert!(existed);
        let again = write(&store, |tx| tx.delete_secret("dev", "app/db")).await;
        assert!(!again);
        let (h, vs, v1, sibling, sibling_versions, prod) = read(&store, |tx| {
            Ok((
                tx.head("dev", "app/db")?,
                tx.versions("dev", "app/db")?,
                tx.version("dev", "app/db", 1)?,
                tx.head("dev", "app/dbx")?,
                tx.versions("dev", "app/dbx")?,
                tx.head("prod", "app/db")?,
            ))
        })
        .await;
        assert_eq!(h, None);
        assert!(vs.is_empty());
        assert_eq!(v1, None);
        assert!(sibling.is_some());
        assert_eq!(sibling_versions.len(), 2);
        assert!(prod.is_some());
        let listed = read(&store, |tx| tx.list_paths("dev", "", 10)).await;
        assert_eq!(listed, ["app/dbx"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn envelopes_not_under_finds_rewrap_work() {
    check_both(|store| async move {
        write(&store, |tx| {
            tx.put_head(&head("dev", "s", 4))?;
            for (v, key) in [(1, 1), (2, 1), (3, 2), (4, 1)] {
                tx.insert_version("dev", "s", &info(v, key), &envelope("dev", "s", v))?;
            }
            let mut gone = info(4, 1);
            gone.destroyed = true;
            tx.update_version("dev", "s", &gone)
        })
        .await;
        let mut todo = read(&store, |tx| tx.envelopes_not_under(2, 100)).await;
        todo.sort();
        assert_eq!(
            todo,
            [
                (
                    "dev".to_string(),
                    "s".to_string(),
                    1,
                    envelope("dev", "s", 1)
                ),
                (
                    "dev".to_string(),
                    "s".to_string(),
                    2,
                    envelope("dev", "s", 2)
                ),
            ]
        );
        let limited = read(&store, |tx| tx.envelopes_not_under(2, 1)).await;
        assert_eq!(limited.len(), 1);

        write(&store, move |tx| {
            for (env, path, v, _) in &todo {
                tx.set_envelope(env, path, *v, 2, b"rewrapped")?;
            }
            // A destroyed version stays destroyed.
            tx.set_envelope("dev", "s", 4, 2, b"resurrected")
        })
        .await;
        let (todo, v1, v4) = read(&store, |tx| {
            Ok((
                tx.envelopes_not_under(2, 100)?,
                tx.version("dev", "s", 1)?.unwrap(),
                tx.version("dev", "s", 4)?.unwrap(),
            ))
        })
        .await;
        assert!(todo.is_empty());
        assert_eq!(v1.info.key_id, 2);
        assert_eq!(v1.envelope.as_deref(), Some(&b"rewrapped"[..]));
        assert_eq!(v4.envelope, None);
        assert_eq!(v4.info.key_id, 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Tokens, policies, sys
// ---------------------------------------------------------------------------------------------

fn token(n: u8, accessor: &str) -> TokenRecord {
    TokenRecord {
        hash: [n; 32],
        accessor: accessor.into(),
        display_name: format!("token {n}"),
        policies: vec!["default".into(), format!("p{n}")],
        created_at: ts(1),
        expires_at: Some(ts(3_600)),
        ttl_secs: Some(3_600),
        max_expires_at: Some(ts(86_400)),
        renewable: true,
        revoked_at: None,
        parent: None,
        mac: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_found_by_hash_and_accessor() {
    check_both(|store| async move {
        let (t1, t2) = (token(1, "acc-b"), token(2, "acc-a"));
        let (c1, c2) = (t1.clone(), t2.clone());
        write(&store, move |tx| {
            tx.token_put(&c1)?;
            tx.token_put(&c2)
        })
        .await;
        let (by_hash, by_acc, no_hash, no_acc, list) = read(&store, |tx| {
            Ok((
                tx.token_get(&[1; 32])?,
                tx.token_by_accessor("acc-a")?,
                tx.token_get(&[9; 32])?,
                tx.token_by_accessor("acc-z")?,
                tx.token_list()?,
            ))
        })
        .await;
        assert_eq!(by_hash, Some(t1.clone()));
        assert_eq!(by_acc, Some(t2.clone()));
        assert_eq!(no_hash, None);
        assert_eq!(no_acc, None);
        assert_eq!(list, [t2.clone(), t1.clone()], "sorted by accessor");

        // Revocation rewrites the record in place.
        let mut revoked = t1.clone();
        revoked.revoked_at = Some(ts(50));
        revoked.expires_at = None;
        let r = revoked.clone();
        write(&store, move |tx| tx.token_put(&r)).await;
        let (got, list) = read(&store, |tx| {
            Ok((tx.token_by_accessor("acc-b")?, tx.token_list()?))
        })
        .await;
        assert_eq!(got, Some(revoked));
        assert_eq!(list.len(), 2);

        // Accessors are unique.
        let dup = token(3, "acc-a");
        let err = store
            .write(None, move |tx| tx.token_put(&dup))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_crud() {
    check_both(|store| async move {
        let policy = |name: &str, doc: &str, t: i64| PolicyRecord {
            name: name.into(),
            document: doc.into(),
            updated_at: ts(t),
        };
        let (p1, p2) = (
            policy("readers", r#"{"rules":[]}"#, 1),
            policy("admins", r#"{"rules":["*"]}"#, 2),
        );
        let (c1, c2) = (p1.clone(), p2.clone());
        write(&store, move |tx| {
            tx.policy_put(&c1)?;
            tx.policy_put(&c2)
        })
        .await;
        let (got, none, list) = read(&store, |tx| {
            Ok((
                tx.policy_get("readers")?,
                tx.policy_get("writers")?,
                tx.policy_list()?,
            ))
        })
        .await;
        assert_eq!(got, Some(p1.clone()));
        assert_eq!(none, None);
        assert_eq!(list, [p2.clone(), p1.clone()], "sorted by name");

        let updated = policy("readers", r#"{"rules":["dev/*"]}"#, 10);
        let u = updated.clone();
        write(&store, move |tx| tx.policy_put(&u)).await;
        assert_eq!(
            read(&store, |tx| tx.policy_get("readers")).await,
            Some(updated)
        );

        assert!(write(&store, |tx| tx.policy_delete("readers")).await);
        assert!(!write(&store, |tx| tx.policy_delete("readers")).await);
        let (got, list) = read(&store, |tx| {
            Ok((tx.policy_get("readers")?, tx.policy_list()?))
        })
        .await;
        assert_eq!(got, None);
        assert_eq!(list, [p2]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sys_insert_new_is_insert_once() {
    check_both(|store| async move {
        let bin = vec![0u8, 1, 2, 255, 0];
        assert_eq!(read(&store, |tx| tx.sys_get("init")).await, None);
        let b = bin.clone();
        assert!(write(&store, move |tx| tx.sys_insert_new("init", &b)).await);
        assert!(!write(&store, |tx| tx.sys_insert_new("init", b"second")).await);
        assert_eq!(read(&store, |tx| tx.sys_get("init")).await, Some(bin));

        write(&store, |tx| tx.sys_put("init", b"replaced")).await;
        write(&store, |tx| tx.sys_put("other", b"")).await;
        let (init, other) =
            read(&store, |tx| Ok((tx.sys_get("init")?, tx.sys_get("other")?))).await;
        assert_eq!(init.as_deref(), Some(&b"replaced"[..]));
        assert_eq!(other, Some(vec![]));

        // Concurrent initializers: exactly one wins.
        let mut tasks = vec![];
        for i in 0..16u8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.write(None, move |tx| tx.sys_insert_new("once", &[i]))
                    .await
                    .unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Rotation rows, events, consumers
// ---------------------------------------------------------------------------------------------

fn rotation(env: &str, path: &str, due: Option<i64>) -> RotationRow {
    RotationRow {
        env: env.into(),
        path: path.into(),
        doc: format!("{{\"p\":\"{path}\"}}"),
        due_at: due.map(ts),
        updated_at: ts(0),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_rows_are_found_by_due_time() {
    check_both(|store| async move {
        write(&store, |tx| {
            tx.rotation_put(&rotation("prod", "b", Some(30)))?;
            tx.rotation_put(&rotation("prod", "a", Some(10)))?;
            tx.rotation_put(&rotation("dev", "manual", None))?;
            tx.rotation_put(&rotation("prod", "later", Some(99)))
        })
        .await;
        let due = read(&store, |tx| tx.rotation_due(ts(30), 10)).await;
        let names: Vec<_> = due.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(names, ["a", "b"], "earliest first, only those due");
        assert_eq!(read(&store, |tx| tx.rotation_due(ts(30), 1)).await.len(), 1);
        // Upsert replaces the doc and the due time.
        write(&store, |tx| {
            tx.rotation_put(&rotation("prod", "a", Some(50)))
        })
        .await;
        let a = read(&store, |tx| tx.rotation_get("prod", "a"))
            .await
            .unwrap();
        assert_eq!(a.due_at, Some(ts(50)));
        let all = read(&store, |tx| tx.rotation_list()).await;
        let keys: Vec<_> = all
            .iter()
            .map(|r| format!("{}/{}", r.env, r.path))
            .collect();
        assert_eq!(keys, ["dev/manual", "prod/a", "prod/b", "prod/later"]);
        assert!(write(&store, |tx| tx.rotation_delete("prod", "a")).await);
        assert!(!write(&store, |tx| tx.rotation_delete("prod", "a")).await);
        assert_eq!(read(&store, |tx| tx.rotation_get("prod", "a")).await, None);
    })
    .await;
}

fn record(kind: &str, id: &str, due: Option<i64>) -> RecordRow {
    RecordRow {
        kind: kind.into(),
        id: id.into(),
        doc: format!("{{\"id\":\"{id}\"}}"),
        due_at: due.map(ts),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_listed_by_id_and_found_by_due_time_per_kind() {
    check_both(|store| async move {
        write(&store, |tx| {
            tx.record_put(&record("outbox", "b", Some(30)))?;
            tx.record_put(&record("outbox", "a", Some(10)))?;
            tx.record_put(&record("outbox", "c", None))?;
            tx.record_put(&record("alert", "a", Some(1)))
        })
        .await;
        let due = read(&store, |tx| tx.record_due("outbox", ts(30), 10)).await;
        let ids: Vec<_> = due.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "earliest first, only due rows of the kind");
        let page = read(&store, |tx| tx.record_list("outbox", "a", 10)).await;
        let ids: Vec<_> = page.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"], "after the cursor, by id");
        assert_eq!(read(&store, |tx| tx.record_count("outbox")).await, 3);
        write(&store, |tx| tx.record_put(&record("outbox", "a", Some(50)))).await;
        let a = read(&store, |tx| tx.record_get("outbox", "a"))
            .await
            .unwrap();
        assert_eq!(a.due_at, Some(ts(50)), "upsert replaces");
        assert_eq!(
            write(&store, |tx| tx.record_delete_due("outbox", ts(40))).await,
            1
        );
        assert!(write(&store, |tx| tx.record_delete("outbox", "a")).await);
        assert!(!write(&store, |tx| tx.record_delete("outbox", "a")).await);
        assert_eq!(read(&store, |tx| tx.record_count("outbox")).await, 1);
        assert_eq!(read(&store, |tx| tx.record_count("alert")).await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_get_consecutive_seqs_in_commit_order() {
    check_both(|store| async move {
        assert_eq!(read(&store, |tx| tx.events_last_seq()).await, 0);
        let mut tasks = vec![];
        for i in 0..20u8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.write(None, move |tx| {
                    tx.event_append(&EventRow {
                        seq: 0,
                        time: ts(i64::from(i)),
                        kind: "test.event".into(),
                        env: Some("dev".into()),
                        path: Some(format!("p{i}")),
                        detail: format!("{{\"i\":{i}}}"),
                    })
                })
                .await
                .unwrap()
            }));
        }
        let mut seqs = vec![];
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
        assert_eq!(read(&store, |tx| tx.events_last_seq()).await, 20);
        let page = read(&store, |tx| tx.events_after(5, 3)).await;
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8]);
        assert_eq!(page[0].kind, "test.event");
        assert!(read(&store, |tx| tx.events_after(20, 10)).await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_keep_the_highest_version_and_latest_time() {
    check_both(|store| async move {
        let row = |acc: &str, version: u64, t: i64| ConsumerRow {
            env: "prod".into(),
            path: "db".into(),
            accessor: acc.into(),
            version,
            seen_at: ts(t),
        };
        let (a, b, c) = (row("acc.a", 3, 10), row("acc.a", 2, 20), row("acc.b", 1, 5));
        write(&store, move |tx| {
            tx.consumer_put(&a)?;
            tx.consumer_put(&b)?;
            tx.consumer_put(&c)
        })
        .await;
        let rows = read(&store, |tx| tx.consumers("prod", "db")).await;
        assert_eq!(rows, vec![row("acc.a", 3, 20), row("acc.b", 1, 5)]);
        assert!(read(&store, |tx| tx.consumers("prod", "other"))
            .await
            .is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heads_with_expiry_lists_only_secrets_that_expire() {
    check_both(|store| async move {
        let mut expiring = head("prod", "cert", 1);
        expiring.meta.expires_at = Some(ts(1000));
        write(&store, move |tx| {
            tx.put_head(&head("prod", "plain", 1))?;
            tx.put_head(&expiring)
        })
        .await;
        let heads = read(&store, |tx| tx.heads_with_expiry()).await;
        assert_eq!(heads.len(), 1);
        assert_eq!(heads[0].path, "cert");
        assert_eq!(heads[0].meta.expires_at, Some(ts(1000)));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Audit log and the group-commit writer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn audited_writes_are_refused_while_sealed_and_write_nothing() {
    check_both(|store| async move {
        let err = store
            .write(Some(draft("w1")), |tx| {
                tx.put_head(&head("dev", "sealed/1", 1))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Sealed), "{err:?}");
        let err = store.audit(draft("a1"), "ok".into()).await.unwrap_err();
        assert!(matches!(err, StoreError::Sealed), "{err:?}");

        let (h, (recs, chain_head)) = (
            read(&store, |tx| tx.head("dev", "sealed/1")).await,
            audit_log(&store).await,
        );
        assert_eq!(h, None);
        assert!(recs.is_empty());
        assert_eq!(chain_head, (0, [0; 32]));

        // Unaudited writes (e.g. initialization) still go through while sealed.
        write(&store, |tx| tx.sys_put("k", b"v")).await;

        let key = SecretKey::generate();
        store.set_audit_key(Some(key.clone()));
        store
            .write(Some(draft("w2")), |tx| {
                tx.put_head(&head("dev", "sealed/2", 1))
            })
            .await
            .unwrap();
        // Sealing again refuses again.
        store.set_audit_key(None);
        let err = store.audit(draft("a2"), "ok".into()).await.unwrap_err();
        assert!(matches!(err, StoreError::Sealed), "{err:?}");

        let (recs, chain_head) = audit_log(&store).await;
        let entries = verify_chain(&key, &recs, chain_head);
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["w2"]);
        let e = &entries["w2"];
        assert_eq!(e.outcome, "ok");
        assert_eq!(e.actor, "acc-tester");
        assert_eq!(e.path.as_deref(), Some("app/db"));
        assert_eq!(e.hmacs["value"], "hmac-sha256:abcd");
        assert_eq!(e.time, ts(42));
        assert!(read(&store, |tx| tx.head("dev", "sealed/2"))
            .await
            .is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_audits_form_one_intact_chain() {
    check_both(|store| async move {
        let key = SecretKey::generate();
        store.set_audit_key(Some(key.clone()));
        let mut tasks = vec![];
        for i in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = if i % 10 == 0 { "forbidden" } else { "ok" };
                s.audit(draft(&format!("req-{i}")), outcome.into()).await
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("audit");
        }
        let (recs, head) = audit_log(&store).await;
        assert_eq!(recs.len(), 200);
        assert_eq!(head.0, 200);
        let entries = verify_chain(&key, &recs, head);
        for i in 0..200 {
            let e = &entries[&format!("req-{i}")];
            let want = if i % 10 == 0 { "forbidden" } else { "ok" };
            assert_eq!(e.outcome, want);
        }
        // Paging through the log sees the same records.
        let page = read(&store, |tx| tx.audit_range(150, 20)).await;
        assert_eq!(page, recs[150..170]);

        // A wrong key does not verify.
        let wrong = SecretKey::generate();
        let mut v = ChainVerifier::new(&wrong);
        recs.iter().for_each(|r| v.push(r));
        assert_eq!(v.first_break.map(|b| b.seq), Some(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_job_rolls_back_alone_but_is_still_audited() {
    check_both(|store| async move {
        let key = SecretKey::generate();
        store.set_audit_key(Some(key.clone()));
        seed_secret(&store, "dev", "dup", 1).await;

        let blocker = block_writer(&store);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Queued behind the blocker, these share the next transaction.
        let mut tasks = vec![];
        for i in 0..20u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.write(Some(draft(&format!("job-{i}"))), move |tx| {
                    let path = format!("batch/{i}");
                    tx.put_head(&head("dev", &path, 1))?;
                    tx.insert_version("dev", &path, &info(1, 1), b"x")?;
                    match i {
                        // The closure refuses after writing: its writes must vanish.
                        7 => Err(TestError::Refused),
                        // A database-level failure (duplicate key) after writing: on
                        // PostgreSQL this aborts the transaction up to the job's savepoint.
                        11 => {
                            tx.insert_version("dev", "dup", &info(1, 1), b"again")?;
                            Ok(i)
                        }
                        _ => Ok(i),
                    }
                })
                .await
            }));
        }
        blocker.await.unwrap();
        let mut results = vec![];
        for t in tasks {
            results.push(t.await.unwrap());
        }
        for (i, r) in results.iter().enumerate() {
            match i {
                7 => assert!(matches!(r, Err(TestError::Refused)), "{r:?}"),
                11 => assert!(
                    matches!(r, Err(TestError::Store(StoreError::Unavailable(_)))),
                    "{r:?}"
                ),
                _ => assert_eq!(r.as_ref().unwrap(), &(i as u64)),
            }
        }

        let heads = read(&store, |tx| {
            (0..20)
                .map(|i| tx.head("dev", &format!("batch/{i}")).map(|h| h.is_some()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        for (i, present) in heads.into_iter().enumerate() {
            assert_eq!(present, i != 7 && i != 11, "batch/{i}");
        }
        let dup = read(&store, |tx| tx.version("dev", "dup", 1))
            .await
            .unwrap();
        assert_eq!(dup.envelope, Some(envelope("dev", "dup", 1)));

        let (recs, head) = audit_log(&store).await;
        let entries = verify_chain(&key, &recs, head);
        assert_eq!(entries.len(), 20);
        for i in 0..20 {
            let want = match i {
                7 => "refused",
                11 => "store_unavailable",
                _ => "ok",
            };
            assert_eq!(entries[&format!("job-{i}")].outcome, want, "job-{i}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panicking_job_fails_only_itself() {
    check_both(|store| async move {
        let key = SecretKey::generate();
        store.set_audit_key(Some(key.clone()));

        let blocker = block_writer(&store);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut tasks = vec![];
        for i in 0..8u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.write(Some(draft(&format!("job-{i}"))), move |tx| {
                    tx.put_head(&head("dev", &format!("p/{i}"), 1))?;
                    if i == 3 {
                        panic!("job 3 blows up (expected by the test)");
                    }
                    Ok::<_, StoreError>(())
                })
                .await
            }));
        }
        blocker.await.unwrap();
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.expect("the caller's task survives");
            if i == 3 {
                assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
            } else {
                r.expect("batchmates commit");
            }
        }
        let listed = read(&store, |tx| tx.list_paths("dev", "p/", 100)).await;
        assert_eq!(listed, ["p/0", "p/1", "p/2", "p/4", "p/5", "p/6", "p/7"]);
        let (recs, head) = audit_log(&store).await;
        let entries = verify_chain(&key, &recs, head);
        assert_eq!(entries["job-3"].outcome, "internal_error");
        assert_eq!(entries["job-2"].outcome, "ok");

        // The writer lives on, and so do reads after a panicking read.
        write(&store, |tx| tx.sys_put("after", b"1")).await;
        let err = store
            .read(|_tx| -> Result<(), StoreError> { panic!("read blows up (expected)") })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        for _ in 0..POOL * 2 {
            let v = read(&store, |tx| tx.sys_get("after")).await;
            assert_eq!(v.as_deref(), Some(&b"1"[..]));
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Opening, migrations
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_idempotent_and_newer_schemas_are_refused() {
    check_both_targets(|target| async move {
        let first = target.open().await.expect("first open");
        write(&first, |tx| tx.sys_put("marker", b"1")).await;
        match target.open().await {
            // PostgreSQL: a second open (another replica) migrates nothing and sees the data.
            Ok(second) => {
                assert_eq!(
                    read(&second, |tx| tx.sys_get("marker")).await.as_deref(),
                    Some(&b"1"[..])
                );
                write(&second, |tx| tx.sys_put("marker", b"2")).await;
                assert_eq!(
                    read(&first, |tx| tx.sys_get("marker")).await.as_deref(),
                    Some(&b"2"[..])
                );
                drop(second);
            }
            // SQLite: an embedded store has one owner; a second opener is refused clearly.
            Err(StoreError::Locked(msg)) if msg.contains("another steward process") => {
                write(&first, |tx| tx.sys_put("marker", b"2")).await;
            }
            Err(e) => panic!("second open failed: {e:?}"),
        }
        drop(first);
        // The owner's writer thread releases the store as it winds down.
        let mut third = None;
        for _ in 0..100 {
            match target.open().await {
                Ok(s) => {
                    third = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let third = third.expect("reopen after the owner is gone");
        assert_eq!(
            read(&third, |tx| tx.sys_get("marker")).await.as_deref(),
            Some(&b"2"[..])
        );
        drop(third);
        tokio::time::sleep(Duration::from_millis(200)).await;

        target.fake_newer_schema(999).await;
        let err = target.open().await.unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 999, known } if known < 999),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_an_unusable_location_fails_cleanly() {
    // SQLite: a data "directory" that is a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Store::open_sqlite(&file.join("data"), SqliteSync::Full, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    if let Some(admin) = pg_admin_url() {
        // PostgreSQL: a database that does not exist, and a port nobody listens on.
        let db = PgDb {
            admin,
            name: "steward_t_does_not_exist".into(),
        };
        let err = Store::open_postgres(&db.url(), 1).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = Store::open_postgres("postgres://postgres@127.0.0.1:1/test", 1)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = Store::open_postgres("postgres://[::1", 1)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: replicas and outages
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn pg_replicas_migrate_together_and_share_one_audit_chain() {
    check_pg_target(|target| async move {
        // Replicas starting at once: the advisory lock serializes their migrations.
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let t = target.clone();
                tokio::spawn(async move { t.open().await })
            })
            .collect();
        let mut replicas = vec![];
        for o in opens {
            replicas.push(o.await.unwrap().expect("concurrent open"));
        }
        let key = SecretKey::generate();
        for r in &replicas {
            r.set_audit_key(Some(key.clone()));
        }
        let mut tasks = vec![];
        for i in 0..200 {
            let s = replicas[i % replicas.len()].clone();
            tasks.push(tokio::spawn(async move {
                s.write(Some(draft(&format!("req-{i}"))), move |tx| {
                    tx.sys_put(&format!("k{i}"), b"v")
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("replica write");
        }
        let (recs, head) = audit_log(&replicas[0]).await;
        assert_eq!(recs.len(), 200);
        let entries = verify_chain(&key, &recs, head);
        assert_eq!(entries.len(), 200);
    })
    .await;
}

/// Terminates every other session on `db` (all of the store's connections).
async fn terminate_sessions(db: &str) {
    let admin = pg_admin_url().expect("postgres tests are on");
    pg_exec(
        admin.clone(),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ),
    )
    .await;
    // pg_terminate_backend only signals: wait until the sessions are really gone, so the test
    // sees dead idle connections and not one dying in the middle of its next query.
    let db = db.to_string();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("admin connection");
        for _ in 0..200 {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&db],
                )
                .expect("count sessions")
                .get(0);
            if n == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("sessions of {db} did not end after pg_terminate_backend");
    })
    .await
    .expect("wait task");
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_terminated_connections_are_replaced() {
    check_pg_target(|target| async move {
        let Target::Postgres { db, .. } = &target else {
            unreachable!()
        };
        let store = target.open().await.unwrap();
        write(&store, |tx| tx.sys_put("k", b"1")).await;
        assert!(read(&store, |tx| tx.sys_get("k")).await.is_some());

        terminate_sessions(db).await;
        // Idle connections that died are noticed when a transaction cannot begin, and
        // replaced; nothing had been sent yet, so retrying is safe.
        assert!(read(&store, |tx| tx.sys_get("k")).await.is_some());
        write(&store, |tx| tx.sys_put("k", b"2")).await;
        assert_eq!(
            read(&store, |tx| tx.sys_get("k")).await.as_deref(),
            Some(&b"2"[..])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_store_is_unavailable_once_its_database_is_gone() {
    check_pg_target(|target| async move {
        let Target::Postgres { db, .. } = &target else {
            unreachable!()
        };
        let store = target.open().await.unwrap();
        let key = SecretKey::generate();
        store.set_audit_key(Some(key));
        write(&store, |tx| tx.sys_put("k", b"1")).await;
        assert!(read(&store, |tx| tx.sys_get("k")).await.is_some());

        let admin = pg_admin_url().expect("postgres tests are on");
        pg_exec(admin, format!("DROP DATABASE {db} WITH (FORCE)")).await;

        let limit = Duration::from_secs(30);
        for _ in 0..2 {
            let r = tokio::time::timeout(limit, store.read(|tx| tx.sys_get("k")))
                .await
                .expect("read does not hang");
            assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
            let w = tokio::time::timeout(limit, store.write(None, |tx| tx.sys_put("k", b"2")))
                .await
                .expect("write does not hang");
            assert!(matches!(w, Err(StoreError::Unavailable(_))), "{w:?}");
            let a = tokio::time::timeout(limit, store.audit(draft("gone"), "ok".into()))
                .await
                .expect("audit does not hang");
            assert!(matches!(a, Err(StoreError::Unavailable(_))), "{a:?}");
        }
        // Dropping the store here, on an async worker, must not panic either.
        drop(store);
    })
    .await;
}

/// The SQL-level guarantees behind `list_paths` ordering hold even where the database's
/// default collation is linguistic (the harness creates test databases with an ICU default
/// when the server supports it).
#[tokio::test(flavor = "multi_thread")]
async fn pg_text_keys_are_bytewise_collated() {
    check_pg_target(|target| async move {
        let Target::Postgres { url, .. } = target.clone() else {
            unreachable!()
        };
        drop(target.open().await.unwrap());
        let collations = tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query(
                "SELECT table_name, column_name, collation_name FROM information_schema.columns \
                 WHERE table_schema = 'public' AND data_type = 'text' \
                 AND column_name IN ('key', 'env', 'path', 'accessor', 'name')",
                &[],
            )
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1)),
                    r.get::<_, Option<String>>(2),
                )
            })
            .collect::<BTreeSet<_>>()
        })
        .await
        .unwrap();
        // sys, secrets, secret_versions, tokens, policies; rotations, events, consumers.
        assert_eq!(collations.len(), 14, "{collations:?}");
        for (col, coll) in collations {
            assert_eq!(coll.as_deref(), Some("C"), "{col}");
        }
    })
    .await;
}
