//! Restore drills: prove a backup by restoring it into a scratch database and
//! checking what comes back.
//!
//! A drill creates `steward_drill_<random>` on the scratch server, streams the
//! dump out of the repository ([`restore_file_to`]) into the restore tool's stdin
//! (`pg_restore --no-owner --no-privileges --exit-on-error`, or the `mariadb`
//! client), and times that: [`DrillReport::restore_duration`] is the measured
//! recovery time. It then compares the row counts recorded at backup time
//! ([`Facts::row_counts`]) with the restored tables, runs the caller's
//! [`Assertion`]s in read-only transactions, and on PostgreSQL runs `amcheck`'s
//! `bt_index_check` on every btree index when the extension is available (its
//! absence is reported, not a failure). The scratch database is dropped at the end
//! whatever happened; if that fails, the drill fails with a check saying so.
//!
//! [`PostgresDrill`] and [`MariaDbDrill`] reach the scratch server through an
//! [`Endpoint`] and run the same drill; they differ only in the SQL that creates
//! and drops the scratch database, the restore tool, and the checks after the
//! restore (`amcheck`, and a note when the backup counted only some tables, are
//! PostgreSQL's).
//!
//! A restore that fails, a count that differs or an assertion that does not hold
//! is a failed check in the report (`passed == false`); only problems that stop
//! the drill from running at all (cannot connect, cannot create the scratch
//! database, facts from another kind of source) are errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ::mysql::prelude::Queryable;
use serde::{Deserialize, Serialize};
use steward_repo::{restore_file_to, Repository, Snapshot};

use crate::child::{bounded, RestoreSink};
use crate::error::{Error, Result};
use crate::source::{
    my_count, my_error, my_ident, pg_count, pg_error, pg_ident, spawn_first_installed, Endpoint,
    Facts, SourceKind, TableCount, CONNECT_TIMEOUT,
};

/// How long one assertion query may run.
pub const ASSERTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Most indexes `amcheck` verifies in one drill.
pub const MAX_AMCHECK_INDEXES: usize = 1000;

/// What an assertion expects of its query's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// The first column of the first row, as text, is exactly this (`NULL` for
    /// SQL NULL).
    Equals(String),
    /// The query returns at least this many rows.
    MinRows(u64),
}

impl Expect {
    /// Parses `rows >= N`, `rows > N`; anything else is an exact value.
    pub fn parse(text: &str) -> Expect {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("rows") {
            let rest = rest.trim_start();
            if let Some(n) = rest.strip_prefix(">=") {
                if let Ok(n) = n.trim().parse::<u64>() {
                    return Expect::MinRows(n);
                }
            } else if let Some(n) = rest.strip_prefix('>') {
                if let Ok(n) = n.trim().parse::<u64>() {
                    return Expect::MinRows(n.saturating_add(1));
                }
            }
        }
        Expect::Equals(text.to_string())
    }
}

/// A query run against the restored database, and what it must return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assertion {
    /// How the assertion is named in the report (default: the SQL).
    pub name: String,
    /// The query (run in a read-only transaction).
    pub sql: String,
    /// What it must return.
    pub expect: Expect,
}

impl Assertion {
    /// The first column of the first row must be exactly `value`.
    pub fn equals(sql: &str, value: &str) -> Self {
        Assertion {
            name: sql.to_string(),
            sql: sql.to_string(),
            expect: Expect::Equals(value.to_string()),
        }
    }

    /// The query must return at least `n` rows.
    pub fn min_rows(sql: &str, n: u64) -> Self {
        Assertion {
            name: sql.to_string(),
            sql: sql.to_string(),
            expect: Expect::MinRows(n),
        }
    }

    fn evaluate(&self, outcome: std::result::Result<QueryOutcome, String>) -> CheckResult {
        let name = format!("assertion {}", self.name);
        let (passed, detail) = match outcome {
            Err(e) => (
                false,
                format!("assertion {:?} failed to run: {e}", self.name),
            ),
            Ok(q) => match &self.expect {
                Expect::Equals(want) => match &q.first {
                    None => (
                        false,
                        format!(
                            "assertion {:?}: expected {want:?}, but the query returned no rows",
                            self.name
                        ),
                    ),
                    Some(got) if got == want => (true, format!("got {got:?}")),
                    Some(got) => (
                        false,
                        format!("assertion {:?}: expected {want:?}, got {got:?}", self.name),
                    ),
                },
                Expect::MinRows(n) => {
                    if q.rows >= *n {
                        (true, format!("{} rows", q.rows))
                    } else {
                        (
                            false,
                            format!(
                                "assertion {:?}: expected at least {n} rows, got {}",
                                self.name, q.rows
                            ),
                        )
                    }
                }
            },
        };
        CheckResult {
            name,
            passed,
            detail,
        }
    }
}

struct QueryOutcome {
    /// First column of the first row as text.
    first: Option<String>,
    rows: u64,
}

/// One check of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What was checked, e.g. `rows in public.users`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

impl CheckResult {
    pub(crate) fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// The outcome of a drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    /// True when every check passed.
    pub passed: bool,
    /// The kind of source restored.
    pub kind: SourceKind,
    /// The scratch database used (dropped by now).
    pub scratch_database: String,
    /// How long the restore took: the measured recovery time.
    pub restore_duration: Duration,
    /// Bytes of dump restored.
    pub bytes_restored: u64,
    /// How long the whole drill took.
    pub duration: Duration,
    /// Every check, in order: `restore`, row counts, assertions, `amcheck`.
    pub checks: Vec<CheckResult>,
}

impl DrillReport {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

fn dump_file(snapshot: &Snapshot, facts: &Facts, kind: SourceKind) -> Result<String> {
    if facts.kind != kind {
        return Err(Error::InvalidSetting(format!(
            "these facts come from a {} backup, but this drill restores {} backups: pass the facts recorded with the snapshot being drilled",
            facts.kind.as_str(),
            kind.as_str()
        )));
    }
    if let Some(f) = &facts.file_name {
        return Ok(f.clone());
    }
    match snapshot.paths.as_slice() {
        [one] => Ok(one.trim_start_matches('/').to_string()),
        _ => Err(Error::InvalidSetting(
            "the facts name no dump file and the snapshot holds more than one path: pass the facts recorded at backup time".into(),
        )),
    }
}

fn scratch_name() -> String {
    format!("steward_drill_{:016x}", rand::random::<u64>())
}

/// Streams `file` from the snapshot into `sink` and waits for the tool. Returns
/// the restore check and the bytes written.
fn restore_into(
    repo: &Repository,
    snapshot: &Snapshot,
    file: &str,
    mut sink: RestoreSink,
    tool: &str,
) -> (CheckResult, u64) {
    let started = Instant::now();
    let written = restore_file_to(repo, snapshot, file, &mut sink);
    let finished = sink.finish();
    match (written, finished) {
        (Ok(n), Ok(())) => (
            CheckResult::new(
                "restore",
                true,
                format!(
                    "{n} bytes restored with {tool} in {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
            ),
            n,
        ),
        (Ok(n), Err(m)) => (CheckResult::new("restore", false, m), n),
        (Err(steward_repo::Error::Io { .. }), Err(m)) => {
            // The tool stopped reading: its own message says why.
            (CheckResult::new("restore", false, m), 0)
        }
        (Err(e), tool_result) => {
            let mut detail = format!("reading {file} from the snapshot failed: {e}");
            if let Err(m) = tool_result {
                detail.push_str(&format!("; {m}"));
            }
            (CheckResult::new("restore", false, detail), 0)
        }
    }
}

fn finish_report(
    kind: SourceKind,
    scratch: String,
    started: Instant,
    restore_duration: Duration,
    bytes: u64,
    mut checks: Vec<CheckResult>,
    dropped: std::result::Result<(), String>,
) -> DrillReport {
    if let Err(e) = dropped {
        checks.push(CheckResult::new(
            "drop scratch database",
            false,
            format!("cannot drop {scratch}: {e}; drop it by hand"),
        ));
    }
    DrillReport {
        passed: checks.iter().all(|c| c.passed),
        kind,
        scratch_database: scratch,
        restore_duration,
        bytes_restored: bytes,
        duration: started.elapsed(),
        checks,
    }
}

fn count_check(
    schema_table: &str,
    want: u64,
    got: std::result::Result<u64, String>,
) -> CheckResult {
    let name = format!("rows in {schema_table}");
    match got {
        Ok(n) if n == want => CheckResult::new(name, true, format!("{n} rows, as at backup time")),
        Ok(n) => CheckResult::new(
            name,
            false,
            format!("expected {want} rows (counted at backup time), found {n}"),
        ),
        Err(e) => CheckResult::new(name, false, format!("cannot count the restored rows: {e}")),
    }
}

/// One row-count check per table counted at backup time, `label` naming the
/// table in the check and `count` counting its restored rows.
fn row_count_checks(
    facts: &Facts,
    label: impl Fn(&TableCount) -> String,
    mut count: impl FnMut(&TableCount) -> std::result::Result<u64, String>,
) -> Vec<CheckResult> {
    facts
        .row_counts
        .iter()
        .map(|t| count_check(&label(t), t.rows, count(t)))
        .collect()
}

/// One check per assertion, `run` running its query.
fn assertion_checks(
    assertions: &[Assertion],
    mut run: impl FnMut(&str) -> std::result::Result<QueryOutcome, String>,
) -> Vec<CheckResult> {
    assertions.iter().map(|a| a.evaluate(run(&a.sql))).collect()
}

/// What [`PostgresDrill`] and [`MariaDbDrill`] do differently; [`run_drill`] is
/// the drill they share.
trait ScratchServer {
    /// The kind of backup drilled.
    const KIND: SourceKind;
    /// The connection that creates and drops the scratch database.
    type Admin;
    fn endpoint(&self) -> &Endpoint;
    fn connect_admin(&self) -> Result<Self::Admin>;
    fn create_scratch(
        &self,
        admin: &mut Self::Admin,
        scratch: &str,
    ) -> std::result::Result<(), String>;
    fn drop_scratch(
        &self,
        admin: &mut Self::Admin,
        scratch: &str,
    ) -> std::result::Result<(), String>;
    /// Spawns the restore tool writing its stdin into `scratch`, and names it
    /// for the report.
    fn restore_sink(&self, scratch: &str) -> Result<(RestoreSink, &'static str)>;
    /// The checks after a successful restore: row counts, assertions, etc.
    fn check(&self, facts: &Facts, scratch: &str) -> Result<Vec<CheckResult>>;
}

/// Creates the scratch database, restores and checks it, drops it, and reports.
fn run_drill<S: ScratchServer>(
    server: &S,
    repo: &Repository,
    snapshot: &Snapshot,
    facts: &Facts,
) -> Result<DrillReport> {
    let started = Instant::now();
    let file = dump_file(snapshot, facts, S::KIND)?;
    let endpoint = server.endpoint();
    if endpoint.user.is_empty() || endpoint.user.starts_with('-') || endpoint.host.starts_with('-')
    {
        return Err(Error::InvalidSetting(
            "the drill's host and user must be set and must not start with '-'".into(),
        ));
    }
    let scratch = scratch_name();
    let mut admin = server.connect_admin()?;
    server
        .create_scratch(&mut admin, &scratch)
        .map_err(|reason| {
            Error::database(
                format!(
                    "cannot create the scratch database {scratch} on {}",
                    endpoint.server()
                ),
                reason,
            )
        })?;
    let result = restore_and_check(server, repo, snapshot, facts, &file, &scratch);
    let dropped = server.drop_scratch(&mut admin, &scratch);
    if dropped.is_ok() {
        tracing::debug!(scratch, "scratch database dropped");
    }
    let (restore_duration, bytes, checks) = result?;
    Ok(finish_report(
        S::KIND,
        scratch,
        started,
        restore_duration,
        bytes,
        checks,
        dropped,
    ))
}

/// Restores into a new database `name` that is kept (a real restore, not a drill):
/// the database must not exist; a failed restore drops it again, so a failure never
/// leaves a half-restored database behind. The report's checks are the restore and
/// the row counts (assertions and amcheck are for drills).
fn restore_database<S: ScratchServer>(
    server: &S,
    repo: &Repository,
    snapshot: &Snapshot,
    facts: &Facts,
    name: &str,
) -> Result<DrillReport> {
    let started = Instant::now();
    let file = dump_file(snapshot, facts, S::KIND)?;
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(Error::InvalidSetting(format!(
            "{name:?} cannot name the restored database: use up to 63 letters, digits and '_', not starting with a digit"
        )));
    }
    let endpoint = server.endpoint();
    let mut admin = server.connect_admin()?;
    server.create_scratch(&mut admin, name).map_err(|reason| {
        Error::database(
            format!(
                "cannot create the database {name} on {} (restores go into a new database; drop or rename an existing one first)",
                endpoint.server()
            ),
            reason,
        )
    })?;
    let result = restore_and_check(server, repo, snapshot, facts, &file, name);
    let passed = matches!(&result, Ok((_, _, checks)) if checks.iter().all(|c| c.passed));
    let dropped = if passed {
        Ok(())
    } else {
        server.drop_scratch(&mut admin, name)
    };
    let (restore_duration, bytes, checks) = result?;
    Ok(finish_report(
        S::KIND,
        name.to_string(),
        started,
        restore_duration,
        bytes,
        checks,
        dropped,
    ))
}

/// Restores `file` into `scratch`, timing it, and checks the result if the
/// restore worked.
fn restore_and_check<S: ScratchServer>(
    server: &S,
    repo: &Repository,
    snapshot: &Snapshot,
    facts: &Facts,
    file: &str,
    scratch: &str,
) -> Result<(Duration, u64, Vec<CheckResult>)> {
    let timer = Instant::now();
    let (sink, tool) = server.restore_sink(scratch)?;
    let (restore, bytes) = restore_into(repo, snapshot, file, sink, tool);
    let restore_duration = timer.elapsed();
    let passed = restore.passed;
    let mut checks = vec![restore];
    if passed {
        checks.extend(server.check(facts, scratch)?);
    }
    Ok((restore_duration, bytes, checks))
}

/// A restore drill of a [`crate::Postgres`] backup.
#[derive(Debug, Clone)]
pub struct PostgresDrill {
    /// The scratch server, and a role that may create databases (and
    /// extensions, for `amcheck`), with its password (sent as `PGPASSWORD`).
    pub endpoint: Endpoint,
    /// The database to connect to for `CREATE/DROP DATABASE` (default `postgres`).
    pub maintenance_database: String,
    /// The pg_restore to run (default: `pg_restore` on `PATH`).
    pub pg_restore: Option<PathBuf>,
    /// Queries that must hold on the restored data.
    pub assertions: Vec<Assertion>,
    /// Run `amcheck` when available (default true).
    pub amcheck: bool,
}

impl PostgresDrill {
    /// A drill on the scratch server at `host:port` as `user`, with no assertions.
    pub fn new(host: &str, port: u16, user: &str) -> Self {
        PostgresDrill {
            endpoint: Endpoint::new(host, port, user),
            maintenance_database: "postgres".into(),
            pg_restore: None,
            assertions: Vec::new(),
            amcheck: true,
        }
    }

    /// Restores `snapshot` (a backup whose `facts` were recorded by
    /// [`crate::Postgres::backup`]) into a scratch database, checks it, and drops
    /// it.
    pub fn run(
        &self,
        repo: &Repository,
        snapshot: &Snapshot,
        facts: &Facts,
    ) -> Result<DrillReport> {
        run_drill(self, repo, snapshot, facts)
    }

    /// Restores `snapshot` into a new database `name` and keeps it (see
    /// [`restore_database`]); assertions and amcheck are not run.
    pub fn restore_into_database(
        &self,
        repo: &Repository,
        snapshot: &Snapshot,
        facts: &Facts,
        name: &str,
    ) -> Result<DrillReport> {
        let plain = PostgresDrill {
            assertions: Vec::new(),
            amcheck: false,
            ..self.clone()
        };
        restore_database(&plain, repo, snapshot, facts, name)
    }
}

impl PostgresDrill {
    /// The checks after a restore into `database`: row counts of `facts`,
    /// assertions, `amcheck`.
    pub(crate) fn check_restored(&self, facts: &Facts, database: &str) -> Result<Vec<CheckResult>> {
        ScratchServer::check(self, facts, database)
    }

    /// Whether the server is still recovering (`pg_is_in_recovery()`).
    pub(crate) fn is_in_recovery(&self, database: &str) -> Result<bool> {
        Ok(self
            .query_one(
                database,
                "SELECT pg_catalog.pg_is_in_recovery()",
                "ask whether the cluster recovers",
            )?
            .get(0))
    }

    /// The commit time of the last transaction replayed by recovery, if any.
    pub(crate) fn last_replayed(
        &self,
        database: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let secs: Option<f64> = self
            .query_one(
                database,
                "SELECT extract(epoch FROM pg_catalog.pg_last_xact_replay_timestamp())::float8",
                "read the last replayed commit",
            )?
            .get(0);
        Ok(secs.and_then(|s| chrono::DateTime::from_timestamp_micros((s * 1e6).round() as i64)))
    }

    /// Connects to `database` and runs `sql`, which returns one row.
    fn query_one(&self, database: &str, sql: &str, what: &str) -> Result<postgres::Row> {
        self.endpoint
            .pg_connect(database)?
            .query_one(sql, &[])
            .map_err(|e| {
                Error::database(
                    format!("cannot {what}"),
                    pg_error(&e, &self.endpoint.secrets()),
                )
            })
    }
}

impl ScratchServer for PostgresDrill {
    const KIND: SourceKind = SourceKind::Postgres;
    type Admin = postgres::Client;

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn connect_admin(&self) -> Result<postgres::Client> {
        self.endpoint.pg_connect(&self.maintenance_database)
    }

    fn create_scratch(
        &self,
        admin: &mut postgres::Client,
        scratch: &str,
    ) -> std::result::Result<(), String> {
        admin
            .batch_execute(&format!("CREATE DATABASE {}", pg_ident(scratch)))
            .map_err(|e| pg_error(&e, &self.endpoint.secrets()))
    }

    fn drop_scratch(
        &self,
        admin: &mut postgres::Client,
        scratch: &str,
    ) -> std::result::Result<(), String> {
        let name = pg_ident(scratch);
        let forced = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        match forced {
            Ok(()) => Ok(()),
            // Before PostgreSQL 13 there is no FORCE; a broken admin connection is
            // replaced.
            Err(_) => match self.connect_admin() {
                Ok(mut fresh) => fresh
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .map_err(|e| pg_error(&e, &self.endpoint.secrets())),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    fn restore_sink(&self, scratch: &str) -> Result<(RestoreSink, &'static str)> {
        let program = self
            .pg_restore
            .clone()
            .unwrap_or_else(|| PathBuf::from("pg_restore"));
        let mut cmd = self.endpoint.pg_command(&program, "steward-drill");
        cmd.arg(format!("--dbname={scratch}")).args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
        ]);
        let sink = RestoreSink::spawn(
            &mut cmd,
            self.endpoint.secret_list(),
            "install the PostgreSQL client tools (postgresql-client) or set the pg_restore path",
        )?;
        Ok((sink, "pg_restore"))
    }

    fn check(&self, facts: &Facts, scratch: &str) -> Result<Vec<CheckResult>> {
        let secrets = self.endpoint.secrets();
        let mut db = self.endpoint.pg_connect(scratch)?;
        let mut checks = row_count_checks(
            facts,
            |t| format!("{}.{}", t.schema, t.table),
            |t| pg_count(&mut db, &t.schema, &t.table).map_err(|e| pg_error(&e, &secrets)),
        );
        if facts.row_counts_truncated {
            checks.push(CheckResult::new(
                "row counts",
                true,
                format!(
                    "only the first {} tables were counted at backup time",
                    facts.row_counts.len()
                ),
            ));
        }
        checks.extend(assertion_checks(&self.assertions, |sql| {
            pg_assertion(&mut db, sql).map_err(|e| pg_error(&e, &secrets))
        }));
        if self.amcheck {
            checks.push(amcheck(&mut db, &secrets));
        }
        Ok(checks)
    }
}

fn pg_assertion(
    db: &mut postgres::Client,
    sql: &str,
) -> std::result::Result<QueryOutcome, postgres::Error> {
    let mut tx = db.build_transaction().read_only(true).start()?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        ASSERTION_TIMEOUT.as_millis()
    ))?;
    let messages = tx.simple_query(sql)?;
    tx.rollback()?;
    let mut first = None;
    let mut rows = 0u64;
    for m in messages {
        if let postgres::SimpleQueryMessage::Row(row) = m {
            if rows == 0 {
                first = Some(row.get(0).unwrap_or("NULL").to_string());
            }
            rows += 1;
        }
    }
    Ok(QueryOutcome { first, rows })
}

fn amcheck(db: &mut postgres::Client, secrets: &[&str]) -> CheckResult {
    if let Err(e) = db.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck") {
        return CheckResult::new(
            "amcheck",
            true,
            format!("amcheck not available: {}", pg_error(&e, secrets)),
        );
    }
    let limit = i64::try_from(MAX_AMCHECK_INDEXES).unwrap_or(i64::MAX);
    let indexes: Vec<String> = match db.query(
        "SELECT c.oid::regclass::text FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
         JOIN pg_catalog.pg_am a ON a.oid = c.relam \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.amname = 'btree' AND n.nspname <> 'information_schema' \
         AND n.nspname NOT LIKE 'pg\\_%' AND i.indisvalid AND i.indisready \
         AND c.relpersistence <> 't' ORDER BY 1 LIMIT $1",
        &[&limit],
    ) {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            return CheckResult::new(
                "amcheck",
                false,
                format!("cannot list the btree indexes: {}", pg_error(&e, secrets)),
            )
        }
    };
    let mut problems = Vec::new();
    for idx in &indexes {
        if let Err(e) = db.execute("SELECT bt_index_check($1::text::regclass)", &[idx]) {
            problems.push(format!("{idx}: {}", pg_error(&e, secrets)));
        }
    }
    if problems.is_empty() {
        CheckResult::new(
            "amcheck",
            true,
            format!(
                "{} btree indexes verified with bt_index_check",
                indexes.len()
            ),
        )
    } else {
        CheckResult::new(
            "amcheck",
            false,
            bounded(
                &format!(
                    "{} of {} btree indexes are corrupt: {}",
                    problems.len(),
                    indexes.len(),
                    problems.join("; ")
                ),
                2000,
            ),
        )
    }
}

/// A restore drill of a [`crate::MariaDb`] backup.
#[derive(Debug, Clone)]
pub struct MariaDbDrill {
    /// The scratch server (reached over TCP), and a user that may create and
    /// drop databases, with its password (sent as `MYSQL_PWD`).
    pub endpoint: Endpoint,
    /// The client to run (default: `mariadb`, then `mysql`).
    pub client_program: Option<PathBuf>,
    /// Queries that must hold on the restored data.
    pub assertions: Vec<Assertion>,
}

impl MariaDbDrill {
    /// A drill on the scratch server at `host:port` as `user`, with no assertions.
    pub fn new(host: &str, port: u16, user: &str) -> Self {
        MariaDbDrill {
            endpoint: Endpoint::new(host, port, user),
            client_program: None,
            assertions: Vec::new(),
        }
    }

    /// Restores `snapshot` (a backup whose `facts` were recorded by
    /// [`crate::MariaDb::backup`]) into a scratch database, checks it, and drops
    /// it.
    pub fn run(
        &self,
        repo: &Repository,
        snapshot: &Snapshot,
        facts: &Facts,
    ) -> Result<DrillReport> {
        run_drill(self, repo, snapshot, facts)
    }

    fn command(&self, program: &Path, scratch: &str) -> Command {
        let mut cmd = self.endpoint.my_command(program);
        cmd.arg(format!("--connect-timeout={}", CONNECT_TIMEOUT.as_secs()))
            .arg("--batch")
            .arg("--default-character-set=utf8mb4")
            .arg(format!("--database={scratch}"));
        cmd
    }

    /// Restores `snapshot` into a new database `name` and keeps it; assertions
    /// are not run.
    pub fn restore_into_database(
        &self,
        repo: &Repository,
        snapshot: &Snapshot,
        facts: &Facts,
        name: &str,
    ) -> Result<DrillReport> {
        let plain = MariaDbDrill {
            assertions: Vec::new(),
            ..self.clone()
        };
        restore_database(&plain, repo, snapshot, facts, name)
    }
}

impl ScratchServer for MariaDbDrill {
    const KIND: SourceKind = SourceKind::Mariadb;
    type Admin = ::mysql::Conn;

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn connect_admin(&self) -> Result<::mysql::Conn> {
        self.endpoint.my_connect(None)
    }

    fn create_scratch(
        &self,
        admin: &mut ::mysql::Conn,
        scratch: &str,
    ) -> std::result::Result<(), String> {
        admin
            .query_drop(format!(
                "CREATE DATABASE {} CHARACTER SET utf8mb4",
                my_ident(scratch)
            ))
            .map_err(|e| my_error(&e, &self.endpoint.secrets()))
    }

    fn drop_scratch(
        &self,
        admin: &mut ::mysql::Conn,
        scratch: &str,
    ) -> std::result::Result<(), String> {
        let drop_sql = format!("DROP DATABASE IF EXISTS {}", my_ident(scratch));
        match admin.query_drop(&drop_sql) {
            Ok(()) => Ok(()),
            // A broken admin connection is replaced.
            Err(_) => self
                .connect_admin()
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    c.query_drop(&drop_sql)
                        .map_err(|e| my_error(&e, &self.endpoint.secrets()))
                }),
        }
    }

    fn restore_sink(&self, scratch: &str) -> Result<(RestoreSink, &'static str)> {
        let hint = "install the MariaDB client (mariadb-client) or set the client program path";
        let sink = spawn_first_installed(
            self.client_program.as_deref(),
            "mariadb",
            "mysql",
            |program| {
                RestoreSink::spawn(
                    &mut self.command(program, scratch),
                    self.endpoint.secret_list(),
                    hint,
                )
            },
        )?;
        Ok((sink, "the mariadb client"))
    }

    fn check(&self, facts: &Facts, scratch: &str) -> Result<Vec<CheckResult>> {
        let secrets = self.endpoint.secrets();
        let mut db = self.endpoint.my_connect(Some(scratch))?;
        let mut checks = row_count_checks(
            facts,
            |t| t.table.clone(),
            |t| my_count(&mut db, scratch, &t.table).map_err(|e| my_error(&e, &secrets)),
        );
        checks.extend(assertion_checks(&self.assertions, |sql| {
            my_assertion(&mut db, sql).map_err(|e| my_error(&e, &secrets))
        }));
        Ok(checks)
    }
}

fn my_text(v: &::mysql::Value) -> String {
    match v {
        ::mysql::Value::NULL => "NULL".into(),
        ::mysql::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        ::mysql::Value::Int(i) => i.to_string(),
        ::mysql::Value::UInt(u) => u.to_string(),
        ::mysql::Value::Float(f) => f.to_string(),
        ::mysql::Value::Double(d) => d.to_string(),
        other => other.as_sql(true).trim_matches('\'').to_string(),
    }
}

fn my_assertion(
    db: &mut ::mysql::Conn,
    sql: &str,
) -> std::result::Result<QueryOutcome, ::mysql::Error> {
    db.query_drop(format!(
        "SET SESSION max_statement_time = {}",
        ASSERTION_TIMEOUT.as_secs()
    ))
    .ok();
    db.query_drop("START TRANSACTION READ ONLY")?;
    let mut first = None;
    let mut rows = 0u64;
    let outcome = (|| {
        let mut result = db.query_iter(sql)?;
        if let Some(set) = result.iter() {
            for row in set {
                let row = row?;
                if rows == 0 {
                    first = Some(row.as_ref(0).map(my_text).unwrap_or_else(|| "NULL".into()));
                }
                rows += 1;
            }
        }
        Ok(())
    })();
    let _ = db.query_drop("ROLLBACK");
    outcome.map(|()| QueryOutcome { first, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expectations() {
        assert_eq!(Expect::parse("rows > 0"), Expect::MinRows(1));
        assert_eq!(Expect::parse("rows >= 5"), Expect::MinRows(5));
        assert_eq!(Expect::parse("100000"), Expect::Equals("100000".into()));
        assert_eq!(Expect::parse("rows > x"), Expect::Equals("rows > x".into()));
    }

    #[test]
    fn debug_hides_passwords() {
        let mut p = PostgresDrill::new("h", 1, "u");
        p.endpoint.password = Some(zeroize::Zeroizing::new("hunter2".into()));
        assert!(!format!("{p:?}").contains("hunter2"));
        let mut m = MariaDbDrill::new("h", 1, "u");
        m.endpoint.password = p.endpoint.password.clone();
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    #[test]
    fn counts_and_assertions_become_checks() {
        let mut facts = Facts::new(SourceKind::Postgres);
        for (table, rows) in [("a", 1), ("b", 2)] {
            facts.row_counts.push(TableCount {
                schema: "s".into(),
                table: table.into(),
                rows,
            });
        }
        let checks = row_count_checks(
            &facts,
            |t| t.table.clone(),
            |t| {
                if t.table == "a" {
                    Ok(1)
                } else {
                    Err("gone".into())
                }
            },
        );
        assert_eq!(checks.len(), 2);
        assert!(
            checks[0].passed && checks[0].name == "rows in a",
            "{checks:?}"
        );
        assert!(
            !checks[1].passed && checks[1].detail.contains("gone"),
            "{checks:?}"
        );
        let checks = assertion_checks(&[Assertion::min_rows("SELECT 1", 1)], |sql| {
            assert_eq!(sql, "SELECT 1");
            Ok(QueryOutcome {
                first: Some("1".into()),
                rows: 1,
            })
        });
        assert!(checks[0].passed, "{checks:?}");
    }

    #[test]
    fn evaluates_assertions() {
        let a = Assertion::equals("SELECT 1", "1");
        assert!(
            a.evaluate(Ok(QueryOutcome {
                first: Some("1".into()),
                rows: 1
            }))
            .passed
        );
        let bad = a.evaluate(Ok(QueryOutcome {
            first: Some("2".into()),
            rows: 1,
        }));
        assert!(!bad.passed && bad.detail.contains("SELECT 1"), "{bad:?}");
        let m = Assertion::min_rows("SELECT * FROM t", 2);
        assert!(
            !m.evaluate(Ok(QueryOutcome {
                first: None,
                rows: 1
            }))
            .passed
        );
        assert!(!m.evaluate(Err("boom".into())).passed);
    }
}
