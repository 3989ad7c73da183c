//! Backups and drills against the real local servers: PostgreSQL on
//! 127.0.0.1:5432 (trust auth, user postgres), MariaDB on 127.0.0.1:3306 (root,
//! no password), Redis on 127.0.0.1:6379, plus SQLite files and directories.
//! Every test makes its own database with a unique name and drops it at the end.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ::mysql::prelude::Queryable;
use steward_backup::{
    Assertion, Directory, Error, Facts, MariaDb, MariaDbDrill, Postgres, PostgresDrill, Redis,
    SourceKind, Sqlite, TableCount,
};
use steward_repo::{
    restore, restore_file_to, InitOptions, KdfParams, LocalBackend, RepoOptions, Repository,
    RestoreOptions,
};
use zeroize::Zeroizing;

const PASSWORD: &str = "repo password for tests";
const PG: (&str, u16) = ("127.0.0.1", 5432);
const MY: (&str, u16) = ("127.0.0.1", 3306);

struct TestRepo {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl TestRepo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            kdf: KdfParams {
                n: 1 << 12,
                r: 8,
                p: 1,
            },
            options: RepoOptions::default(),
        };
        let repo = Repository::init(
            Arc::new(LocalBackend::new(dir.path().join("repo"))),
            PASSWORD,
            opts,
        )
        .unwrap();
        fs::write(dir.path().join("password"), PASSWORD).unwrap();
        TestRepo { dir, repo }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn pg_client(db: &str) -> postgres::Client {
    postgres::Config::new()
        .host(PG.0)
        .port(PG.1)
        .user("postgres")
        .dbname(db)
        .connect(postgres::NoTls)
        .unwrap()
}

/// A PostgreSQL database dropped when the test ends (also on panic).
struct PgDb {
    name: String,
}

impl PgDb {
    fn create() -> Self {
        let name = unique("stwbk_pg");
        pg_client("test")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        PgDb { name }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = pg_client("test").batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn pg_database_exists(name: &str) -> bool {
    let n: i64 = pg_client("test")
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    n > 0
}

fn my_conn(db: Option<&str>) -> ::mysql::Conn {
    ::mysql::Conn::new(
        ::mysql::OptsBuilder::new()
            .ip_or_hostname(Some(MY.0))
            .tcp_port(MY.1)
            .user(Some("root"))
            .db_name(db)
            .prefer_socket(false),
    )
    .unwrap()
}

/// A MariaDB database dropped when the test ends.
struct MyDb {
    name: String,
}

impl MyDb {
    fn create() -> Self {
        let name = unique("stwbk_my");
        my_conn(None)
            .query_drop(format!("CREATE DATABASE {name}"))
            .unwrap();
        MyDb { name }
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = my_conn(None).query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

#[test]
fn postgres_backup_restic_and_drill() {
    let db = PgDb::create();
    pg_client(&db.name)
        .batch_execute(
            "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
             INSERT INTO users (name) VALUES ('ada'), ('grace'), ('linus');
             CREATE TABLE big (id int PRIMARY KEY, v text);
             INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
             CREATE INDEX big_v ON big (v);
             CREATE TABLE empty (x int);
             CREATE SCHEMA other;
             CREATE TABLE other.\"Mixed Case\" (x int);
             INSERT INTO other.\"Mixed Case\" VALUES (1), (2);",
        )
        .unwrap();
    let t = TestRepo::new();
    let source = Postgres::new(PG.0, PG.1, "postgres", &db.name);
    let done = source.backup(&t.repo, "pg-test").unwrap();
    assert!(done.bytes > 0);
    let counts: Vec<(String, u64)> = done
        .facts
        .row_counts
        .iter()
        .map(|c| (format!("{}.{}", c.schema, c.table), c.rows))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("other.Mixed Case".to_string(), 2),
            ("public.big".to_string(), 100_000),
            ("public.empty".to_string(), 0),
            ("public.users".to_string(), 3),
        ]
    );
    let (_, snapshot) = t.repo.load_snapshot(&done.snapshot_id.to_hex()).unwrap();
    assert!(snapshot.tags.contains(&"source=pg-test".to_string()));
    assert!(snapshot.tags.contains(&"kind=postgres".to_string()));

    // restic itself reads the dump back, and pg_restore understands it.
    // (No pipefail: pg_restore --list stops reading after the table of contents,
    // so restic may die of SIGPIPE; the full read is checked with wc below.)
    let file = format!("/{}.pgdump", db.name);
    let restic = format!(
        "/usr/bin/restic -r '{}' --password-file '{}' --no-cache dump latest '{file}'",
        t.path().display(),
        t.password_file().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{restic} | pg_restore --list"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?} {} {listing}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing.contains("TABLE DATA public big"), "{listing}");
    let out = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(format!("{restic} | wc -c"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        done.bytes.to_string()
    );
    let out = Command::new("/usr/bin/restic")
        .arg("-r")
        .arg(t.path())
        .arg("--password-file")
        .arg(t.password_file())
        .args(["--no-cache", "snapshots", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&done.snapshot_id.to_hex()));

    // A drill with assertions that hold passes.
    let mut drill = PostgresDrill::new(PG.0, PG.1, "postgres");
    drill.assertions = vec![
        Assertion::equals("SELECT count(*) FROM big", "100000"),
        Assertion::min_rows("SELECT * FROM users", 3),
        Assertion::equals("SELECT name FROM users ORDER BY id LIMIT 1", "ada"),
    ];
    let report = drill.run(&t.repo, &snapshot, &done.facts).unwrap();
    assert!(report.passed, "{report:#?}");
    assert!(report.restore_duration.as_nanos() > 0);
    assert!(report.bytes_restored > 0);
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"restore"), "{names:?}");
    assert!(names.contains(&"rows in public.big"), "{names:?}");
    assert!(names.contains(&"rows in other.Mixed Case"), "{names:?}");
    let amcheck = report.checks.iter().find(|c| c.name == "amcheck").unwrap();
    assert!(amcheck.passed, "{amcheck:?}");
    assert!(!pg_database_exists(&report.scratch_database));

    // An assertion that does not hold fails the drill, naming the assertion.
    drill.assertions = vec![Assertion::equals("SELECT count(*) FROM big", "99999")];
    let report = drill.run(&t.repo, &snapshot, &done.facts).unwrap();
    assert!(!report.passed);
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].detail.contains("SELECT count(*) FROM big")
            && failures[0].detail.contains("99999")
            && failures[0].detail.contains("100000"),
        "{failures:?}"
    );
    assert!(!pg_database_exists(&report.scratch_database));

    // Row counts that differ from the restore fail the drill.
    let mut facts = done.facts.clone();
    facts.row_counts[3].rows = 4;
    drill.assertions.clear();
    let report = drill.run(&t.repo, &snapshot, &facts).unwrap();
    assert!(!report.passed);
    let f: Vec<_> = report.failures().collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].name, "rows in public.users");
    assert!(f[0].detail.contains("expected 4"), "{f:?}");
    assert!(!pg_database_exists(&report.scratch_database));
}

#[test]
fn postgres_counts_and_dump_share_a_snapshot() {
    let db = PgDb::create();
    pg_client(&db.name)
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 50);")
        .unwrap();
    let t = TestRepo::new();
    // A pg_dump that first commits 10 more rows: they come after the counts, and
    // the dump (taken in the counting transaction's exported snapshot) must not
    // hold them either.
    let script = t.dir.path().join("pg_dump_after_insert");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\npsql -h {} -p {} -U postgres -d {} -qc 'INSERT INTO t SELECT generate_series(1, 10)' >&2 || exit 9\nexec pg_dump \"$@\"\n",
            PG.0, PG.1, db.name
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    let mut source = Postgres::new(PG.0, PG.1, "postgres", &db.name);
    source.pg_dump = Some(script);
    let done = source.backup(&t.repo, "pg-snap").unwrap();
    assert_eq!(done.facts.row_counts[0].rows, 50);
    let n: i64 = pg_client(&db.name)
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 60);
    let (_, snapshot) = t.repo.load_snapshot(&done.snapshot_id.to_hex()).unwrap();
    let mut drill = PostgresDrill::new(PG.0, PG.1, "postgres");
    drill.assertions = vec![Assertion::equals("SELECT count(*) FROM t", "50")];
    let report = drill.run(&t.repo, &snapshot, &done.facts).unwrap();
    assert!(report.passed, "{report:#?}");
}

#[test]
fn postgres_drill_of_a_broken_dump_fails_and_cleans_up() {
    let t = TestRepo::new();
    let summary = steward_repo::backup_stream(
        &t.repo,
        "broken.pgdump",
        &b"this is not a pg_dump archive"[..],
        &Default::default(),
    )
    .unwrap();
    let (_, snapshot) = t.repo.load_snapshot(&summary.snapshot_id.to_hex()).unwrap();
    let facts = Facts {
        kind: SourceKind::Postgres,
        file_name: Some("broken.pgdump".into()),
        database: Some("broken".into()),
        server_version: None,
        row_counts: vec![TableCount {
            schema: "public".into(),
            table: "t".into(),
            rows: 1,
        }],
        row_counts_truncated: false,
    };
    let drill = PostgresDrill::new(PG.0, PG.1, "postgres");
    let report = drill.run(&t.repo, &snapshot, &facts).unwrap();
    assert!(!report.passed);
    assert_eq!(report.checks.len(), 1, "{report:#?}");
    assert_eq!(report.checks[0].name, "restore");
    assert!(
        report.checks[0].detail.contains("pg_restore"),
        "{report:#?}"
    );
    assert!(!pg_database_exists(&report.scratch_database));

    // Facts of another kind of backup are refused before anything is created.
    let mut other = facts.clone();
    other.kind = SourceKind::Redis;
    let err = drill.run(&t.repo, &snapshot, &other).unwrap_err();
    assert!(err.to_string().contains("redis"), "{err}");
}

#[test]
fn postgres_dump_failure_records_no_snapshot() {
    let t = TestRepo::new();
    let missing = unique("stwbk_missing");
    let mut source = Postgres::new(PG.0, PG.1, "postgres", &missing);
    source.count_rows = false;
    let err = source.backup(&t.repo, "pg-missing").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Dump { .. }), "{err:?}");
    assert!(text.contains(&missing), "{text}");
    assert!(text.contains("pg_dump"), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    assert!(t.repo.list_snapshots().unwrap().is_empty());

    // With row counting on, the connection fails first, also naming the database.
    source.count_rows = true;
    let err = source.backup(&t.repo, "pg-missing").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&missing) && text.contains("does not exist"),
        "{text}"
    );
    assert!(t.repo.list_snapshots().unwrap().is_empty());
}

#[test]
fn passwords_never_appear_in_errors() {
    let secret = "Sup3r-Secret-Pa55word";
    let t = TestRepo::new();
    // Nothing listens on port 1: the connection is refused.
    let mut source = Postgres::new("127.0.0.1", 1, "postgres", "app");
    source.endpoint.password = Some(Zeroizing::new(secret.to_string()));
    let err = source.backup(&t.repo, "pg-pw").unwrap_err();
    for text in [err.to_string(), format!("{err:?}"), format!("{source:?}")] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    source.count_rows = false;
    let err = source.backup(&t.repo, "pg-pw").unwrap_err();
    assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));

    // A tool that prints the password: it is redacted, and it was never in argv.
    let script = t.dir.path().join("fake_pg_dump");
    fs::write(
        &script,
        "#!/bin/sh\ncase \"$*\" in *\"$PGPASSWORD\"*) echo ARGV-LEAK >&2;; esac\necho \"login failed for $PGPASSWORD\" >&2\nexit 2\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    source.pg_dump = Some(script);
    let err = source.backup(&t.repo, "pg-pw").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("login failed for ***"), "{text}");
    assert!(text.contains("exit code 2"), "{text}");
    assert!(!text.contains("ARGV-LEAK"), "{text}");
    assert!(!text.contains(secret) && !format!("{err:?}").contains(secret));
    assert!(t.repo.list_snapshots().unwrap().is_empty());

    let mut my = MariaDb::new("127.0.0.1", 1, "root", "app");
    my.endpoint.password = Some(Zeroizing::new(secret.to_string()));
    let err = my.backup(&t.repo, "my-pw").unwrap_err();
    assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));
    let mut drill = PostgresDrill::new("127.0.0.1", 1, "postgres");
    drill.endpoint.password = Some(Zeroizing::new(secret.to_string()));
    assert!(!format!("{drill:?}").contains(secret));
}

#[test]
fn mariadb_backup_and_drill() {
    let db = MyDb::create();
    let mut c = my_conn(Some(&db.name));
    c.query_drop("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL)")
        .unwrap();
    c.query_drop(
        "INSERT INTO items WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000) SELECT n, CONCAT('item ', n) FROM s",
    )
    .unwrap();
    c.query_drop("CREATE TABLE notes (body TEXT)").unwrap();
    c.query_drop("INSERT INTO notes VALUES ('it''s'), (NULL)")
        .unwrap();
    c.query_drop("CREATE PROCEDURE answer() SELECT 42").unwrap();
    let t = TestRepo::new();
    let source = MariaDb::new(MY.0, MY.1, "root", &db.name);
    let done = source.backup(&t.repo, "my-test").unwrap();
    let counts: Vec<(&str, u64)> = done
        .facts
        .row_counts
        .iter()
        .map(|c| (c.table.as_str(), c.rows))
        .collect();
    assert_eq!(counts, vec![("items", 1000), ("notes", 2)]);
    let (_, snapshot) = t.repo.load_snapshot(&done.snapshot_id.to_hex()).unwrap();
    let mut dump = Vec::new();
    restore_file_to(&t.repo, &snapshot, &format!("{}.sql", db.name), &mut dump).unwrap();
    let dump = String::from_utf8_lossy(&dump);
    assert!(dump.contains("CREATE TABLE `items`"), "{dump:.500}");
    assert!(dump.contains("PROCEDURE `answer`"));

    let mut drill = MariaDbDrill::new(MY.0, MY.1, "root");
    drill.assertions = vec![
        Assertion::equals("SELECT COUNT(*) FROM items", "1000"),
        Assertion::equals("SELECT name FROM items WHERE id = 7", "item 7"),
        Assertion::equals("SELECT body FROM notes WHERE body IS NULL", "NULL"),
        Assertion::min_rows("SELECT * FROM notes", 2),
    ];
    let report = drill.run(&t.repo, &snapshot, &done.facts).unwrap();
    assert!(report.passed, "{report:#?}");
    assert!(report.checks.iter().any(|c| c.name == "rows in items"));
    let exists = |name: &str| -> bool {
        let n: Option<u64> = my_conn(None)
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
                (name,),
            )
            .unwrap();
        n.unwrap_or(0) > 0
    };
    assert!(!exists(&report.scratch_database));

    drill.assertions = vec![Assertion::equals("SELECT COUNT(*) FROM items", "7")];
    let report = drill.run(&t.repo, &snapshot, &done.facts).unwrap();
    assert!(!report.passed);
    let f: Vec<_> = report.failures().collect();
    assert_eq!(f.len(), 1);
    assert!(f[0].detail.contains("SELECT COUNT(*) FROM items"), "{f:?}");
    assert!(!exists(&report.scratch_database));

    // A missing database: the dump fails and nothing is stored.
    let t2 = TestRepo::new();
    let missing = unique("stwbk_missing");
    let mut source = MariaDb::new(MY.0, MY.1, "root", &missing);
    source.count_rows = false;
    let err = source.backup(&t2.repo, "my-missing").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Dump { .. }), "{err:?}");
    assert!(text.contains(&missing), "{text}");
    assert!(t2.repo.list_snapshots().unwrap().is_empty());
}

#[test]
fn redis_backup_is_an_rdb_file() {
    let key = unique("stwbk:key");
    let set = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "SET", &key, "hello"])
        .output()
        .unwrap();
    assert!(set.status.success());
    let t = TestRepo::new();
    let done = Redis::new("127.0.0.1", 6379)
        .backup(&t.repo, "cache")
        .unwrap();
    let _ = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "DEL", &key])
        .output();
    let (_, snapshot) = t.repo.load_snapshot(&done.snapshot_id.to_hex()).unwrap();
    let mut rdb = Vec::new();
    restore_file_to(&t.repo, &snapshot, "dump.rdb", &mut rdb).unwrap();
    assert!(rdb.starts_with(b"REDIS"), "{:?}", &rdb[..rdb.len().min(16)]);
    assert_eq!(rdb.len() as u64, done.bytes);
    assert!(rdb.windows(key.len()).any(|w| w == key.as_bytes()));

    // Nothing listening: an error, and no snapshot.
    let t2 = TestRepo::new();
    let err = Redis::new("127.0.0.1", 1)
        .backup(&t2.repo, "cache")
        .unwrap_err();
    assert!(err.to_string().contains("redis-cli"), "{err}");
    assert!(t2.repo.list_snapshots().unwrap().is_empty());
}

#[test]
fn sqlite_backup_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000)
         INSERT INTO t SELECT n, 'v' || n FROM s;
         CREATE TABLE u (x);",
    )
    .unwrap();
    // A write in progress, not committed: the backup must not see it.
    conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('pending');")
        .unwrap();

    let t = TestRepo::new();
    let done = Sqlite::new(&path).backup(&t.repo, "app-sqlite").unwrap();
    conn.execute_batch("COMMIT").unwrap();
    let counts: Vec<(&str, u64)> = done
        .facts
        .row_counts
        .iter()
        .map(|c| (c.table.as_str(), c.rows))
        .collect();
    assert_eq!(counts, vec![("t", 1000), ("u", 0)]);

    let (_, snapshot) = t.repo.load_snapshot(&done.snapshot_id.to_hex()).unwrap();
    let out = dir.path().join("restored");
    restore(&t.repo, &snapshot, &out, &RestoreOptions::default()).unwrap();
    let restored = rusqlite::Connection::open(out.join("app.db")).unwrap();
    let n: i64 = restored
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1000);
    let v: String = restored
        .query_row("SELECT v FROM t WHERE id = 500", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "v500");
    let ok: String = restored
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // No temporary copy is left behind in the temp directory.
    assert!(!fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .any(|e| e.path().join("app.db").exists()
            && e.file_name()
                .to_string_lossy()
                .starts_with("steward-sqlite-")));

    let err = Sqlite::new(dir.path().join("missing.db"))
        .backup(&t.repo, "x")
        .unwrap_err();
    assert!(err.to_string().contains("missing.db"), "{err}");
}

fn find(root: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if e.file_name() == name {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

#[test]
fn directory_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("top.txt"), "top").unwrap();
    fs::write(src.join("a/b/deep.bin"), vec![7u8; 100_000]).unwrap();
    fs::write(src.join("a/skip.tmp"), "excluded").unwrap();
    let mut f = fs::File::create(src.join("a/log.txt")).unwrap();
    writeln!(f, "line").unwrap();
    let t = TestRepo::new();
    let mut source = Directory::new(vec![src.clone()]);
    source.excludes = vec!["*.tmp".into()];
    let done = source.backup(&t.repo, "files").unwrap();
    assert_eq!(done.bytes, 3 + 100_000 + 5);
    let (_, snapshot) = t.repo.load_snapshot(&done.snapshot_id.to_hex()).unwrap();
    assert!(snapshot.tags.contains(&"kind=directory".to_string()));
    let out = dir.path().join("out");
    restore(&t.repo, &snapshot, &out, &RestoreOptions::default()).unwrap();
    let tree = find(&out, "tree").unwrap();
    assert_eq!(fs::read_to_string(tree.join("top.txt")).unwrap(), "top");
    assert_eq!(
        fs::read(tree.join("a/b/deep.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(
        fs::read_to_string(tree.join("a/log.txt")).unwrap(),
        "line\n"
    );
    assert!(!tree.join("a/skip.tmp").exists());
}
