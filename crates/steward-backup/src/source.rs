//! The data sources: each a struct with its settings and a `backup` method that
//! stores one snapshot in a [`Repository`] and returns a [`SourceBackup`].
//!
//! * [`Postgres`]: exact row counts per user table are taken first, in one
//!   `REPEATABLE READ READ ONLY` transaction that exports its snapshot
//!   (`pg_export_snapshot()`), and `pg_dump --format=custom --snapshot=<that>` then
//!   dumps exactly the data that was counted. The dump's stdout goes straight into
//!   [`backup_stream`] as `<database>.pgdump` (no temporary file).
//! * [`MariaDb`]: row counts in a `START TRANSACTION WITH CONSISTENT SNAPSHOT`,
//!   then `mariadb-dump` (or `mysqldump` when `mariadb-dump` is not installed)
//!   `--single-transaction --routines --events --triggers`, streamed as
//!   `<database>.sql`. The two transactions are not the same snapshot: on a
//!   database written to during the backup the counts may differ slightly from the
//!   dump, and a drill will report the difference.
//! * [`Redis`]: `redis-cli --rdb -` (supported by Debian 12's redis-cli 7.0)
//!   writes an RDB snapshot of the whole instance to stdout; it is streamed as
//!   `dump.rdb` with no temporary file.
//! * [`Sqlite`]: SQLite's online backup API copies the database (consistently,
//!   while other connections keep using it) into a temporary file in a private
//!   0700 directory; the copy's tables are counted, the copy is streamed under the
//!   database file's name and deleted. The copy is made in one backup step under
//!   one read lock: in WAL mode writers carry on meanwhile; in rollback-journal
//!   mode they wait until the copy is done. (A streamed copy is not possible: the
//!   backup API writes to a database file.)
//! * [`Directory`]: [`steward_repo::backup`] of the paths.
//!
//! [`Postgres`] and [`MariaDb`] (and the drills in [`crate::drill`]) reach their
//! server through an [`Endpoint`] (host, port, user, password), which also
//! connects and builds the client tools' command lines. The two database backups
//! share one flow (check the settings, record the facts if `count_rows`, spawn the
//! dump tool, stream its output); only how the counts are taken and how the dump
//! tool is run differ.
//!
//! Snapshots are tagged `steward`, `source=<name>` and `kind=<kind>`. Passwords
//! reach the tools only through `PGPASSWORD`, `MYSQL_PWD` and `REDISCLI_AUTH`;
//! the `Debug` output of every source (and of [`Endpoint`]) hides them.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ::mysql::prelude::Queryable;
use serde::{Deserialize, Serialize};
use steward_repo::{
    backup, backup_stream, BackupOptions, BackupSummary, Id, ProgressFn, Repository,
};
use zeroize::Zeroizing;

use crate::child::{bounded, is_not_found, redact, DumpReader};
use crate::error::{Error, Result};

/// How long connecting to a database server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on the number of tables whose rows are counted.
pub const DEFAULT_MAX_TABLES: usize = 500;

/// What kind of source a backup came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A PostgreSQL database.
    Postgres,
    /// A MariaDB (or MySQL) database.
    Mariadb,
    /// A Redis instance.
    Redis,
    /// A SQLite database file.
    Sqlite,
    /// Files and directories.
    Directory,
}

impl SourceKind {
    /// The lower-case name used in tags (`kind=postgres`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Mariadb => "mariadb",
            SourceKind::Redis => "redis",
            SourceKind::Sqlite => "sqlite",
            SourceKind::Directory => "directory",
        }
    }
}

/// The exact row count of one table at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// Schema (PostgreSQL), database (MariaDB) or `main` (SQLite).
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Rows.
    pub rows: u64,
}

/// Things recorded at backup time that a drill checks the restore against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The kind of source.
    pub kind: SourceKind,
    /// The file holding the dump in the snapshot (streamed sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// The database backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The server's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Exact row counts of the user tables (empty when not counted).
    #[serde(default)]
    pub row_counts: Vec<TableCount>,
    /// True when there were more tables than the bound and only the first ones
    /// (by name) were counted.
    #[serde(default)]
    pub row_counts_truncated: bool,
}

impl Facts {
    pub(crate) fn new(kind: SourceKind) -> Self {
        Facts {
            kind,
            file_name: None,
            database: None,
            server_version: None,
            row_counts: Vec::new(),
            row_counts_truncated: false,
        }
    }
}

/// The outcome of one source's backup.
#[derive(Debug, Clone)]
pub struct SourceBackup {
    /// The snapshot written.
    pub snapshot_id: Id,
    /// Bytes read from the source (the dump's size, or the files' total).
    pub bytes: u64,
    /// How long the whole backup took (counting included).
    pub duration: Duration,
    /// What was recorded for drills.
    pub facts: Facts,
}

impl SourceBackup {
    /// The outcome of a streamed backup that began at `started`.
    fn streamed(summary: BackupSummary, started: Instant, facts: Facts) -> Self {
        SourceBackup {
            snapshot_id: summary.snapshot_id,
            bytes: summary.bytes_read,
            duration: started.elapsed(),
            facts,
        }
    }
}

/// Any source, for callers that hold a list of them.
#[derive(Debug, Clone)]
pub enum Source {
    /// See [`Postgres`].
    Postgres(Postgres),
    /// See [`MariaDb`].
    MariaDb(MariaDb),
    /// See [`Redis`].
    Redis(Redis),
    /// See [`Sqlite`].
    Sqlite(Sqlite),
    /// See [`Directory`].
    Directory(Directory),
}

impl Source {
    /// Backs this source up into `repo` as the source called `name`.
    pub fn backup(&self, repo: &Repository, name: &str) -> Result<SourceBackup> {
        self.backup_with(repo, name, None)
    }

    /// [`Source::backup`], reporting bytes read as it goes to `progress`.
    pub fn backup_with(
        &self,
        repo: &Repository,
        name: &str,
        progress: Option<ProgressFn>,
    ) -> Result<SourceBackup> {
        match self {
            Source::Postgres(s) => backup_database(s, repo, name, progress),
            Source::MariaDb(s) => backup_database(s, repo, name, progress),
            Source::Redis(s) => s.backup_with(repo, name, progress),
            Source::Sqlite(s) => s.backup_with(repo, name, progress),
            Source::Directory(s) => s.backup_with(repo, name, progress),
        }
    }

    /// The kind of source.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Postgres(_) => SourceKind::Postgres,
            Source::MariaDb(_) => SourceKind::Mariadb,
            Source::Redis(_) => SourceKind::Redis,
            Source::Sqlite(_) => SourceKind::Sqlite,
            Source::Directory(_) => SourceKind::Directory,
        }
    }
}

fn options(name: &str, kind: SourceKind, progress: Option<ProgressFn>) -> Result<BackupOptions> {
    if name.is_empty()
        || name.len() > 100
        || name
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidSetting(format!(
            "{name:?} cannot name a backup source: use 1 to 100 characters without spaces or commas"
        )));
    }
    Ok(BackupOptions {
        tags: vec![
            "steward".into(),
            format!("source={name}"),
            format!("kind={}", kind.as_str()),
        ],
        progress,
        ..BackupOptions::default()
    })
}

fn check_host_user(host: &str, user: &str, what: &str) -> Result<()> {
    if host.is_empty() || host.starts_with('-') || host.contains(['\0', '\n']) {
        return Err(Error::InvalidSetting(format!(
            "{what} host {host:?} is not a host name, IP address or socket directory"
        )));
    }
    if user.is_empty() || user.starts_with('-') || user.contains(['\0', '\n']) {
        return Err(Error::InvalidSetting(format!(
            "{what} user {user:?} is not a user name: give the login role"
        )));
    }
    Ok(())
}

fn check_database(db: &str, what: &str) -> Result<()> {
    let lower = db.to_ascii_lowercase();
    if db.is_empty()
        || db.len() > 63
        || db.starts_with('-')
        || db.contains(['/', '\0', '=', '\n', '\\'])
        || lower.starts_with("postgres:")
        || lower.starts_with("postgresql:")
        || db == "."
        || db == ".."
    {
        return Err(Error::InvalidSetting(format!(
            "{db:?} cannot be a {what} database name here: give the plain name (1 to 63 characters, no '/', '=', or '\\', not starting with '-')"
        )));
    }
    Ok(())
}

/// Runs a streamed backup and turns a failure of the tool into [`Error::Dump`].
fn stream(
    repo: &Repository,
    file: &str,
    reader: &mut DumpReader,
    opts: &BackupOptions,
    target: &str,
) -> Result<BackupSummary> {
    match backup_stream(repo, file, &mut *reader, opts) {
        Ok(s) => Ok(s),
        Err(e) => match reader.failure() {
            Some(message) => Err(Error::Dump {
                tool: reader.program_name(),
                target: target.to_string(),
                message: message.to_string(),
            }),
            None => Err(Error::Repo(e)),
        },
    }
}

/// Quotes a PostgreSQL identifier.
pub(crate) fn pg_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a MariaDB identifier.
pub(crate) fn my_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A PostgreSQL client error as text: the server's message (and hint) or the
/// driver's error chain, with `secrets` redacted and a hint how to fix it.
pub(crate) fn pg_error(e: &postgres::Error, secrets: &[&str]) -> String {
    use postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(h) = db.hint() {
            text.push_str("; hint: ");
            text.push_str(h);
        }
        let hint = if *db.code() == SqlState::INVALID_PASSWORD {
            "; check the user and password"
        } else if *db.code() == SqlState::INVALID_CATALOG_NAME {
            "; check the database name"
        } else if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE {
            "; grant the user the privilege named above"
        } else {
            ""
        };
        return bounded(&redact(&format!("{text}{hint}"), secrets), 1000);
    }
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    let hint = if chain.contains("password missing") {
        "; the server asks for a password: set one"
    } else {
        "; check that the server is up and that host and port are right"
    };
    bounded(&redact(&format!("{chain}{hint}"), secrets), 1000)
}

/// A MariaDB client error as text, redacted, with a hint.
pub(crate) fn my_error(e: &::mysql::Error, secrets: &[&str]) -> String {
    let (text, hint) = match e {
        ::mysql::Error::MySqlError(db) => (
            db.to_string(),
            match db.code {
                1045 | 1698 => "; check the user and password",
                1049 => "; check the database name",
                1044 | 1142 | 1227 => "; grant the user the privilege named above",
                _ => "",
            },
        ),
        ::mysql::Error::IoError(io) => (
            io.to_string(),
            "; check that the server is up and that host and port are right",
        ),
        other => (other.to_string(), ""),
    };
    bounded(&redact(&format!("{text}{hint}"), secrets), 1000)
}

/// How to reach and log in to a database server. Shared by [`Postgres`],
/// [`MariaDb`], [`crate::PostgresDrill`] and [`crate::MariaDbDrill`]; its `Debug`
/// output hides the password.
#[derive(Clone)]
pub struct Endpoint {
    /// Host name or IP address; for PostgreSQL also a socket directory (starting
    /// with `/`). MariaDB is always reached over TCP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login role (PostgreSQL) or user (MariaDB).
    pub user: String,
    /// Password, given to the tools only as `PGPASSWORD` or `MYSQL_PWD`. `None`
    /// leaves the environment (and PostgreSQL's `~/.pgpass`) to decide.
    pub password: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Endpoint {
    /// The server at `host:port`, as `user`, with no password.
    pub fn new(host: &str, port: u16, user: &str) -> Self {
        Endpoint {
            host: host.into(),
            port,
            user: user.into(),
            password: None,
        }
    }

    fn password(&self) -> Option<&str> {
        self.password.as_ref().map(|p| p.as_str())
    }

    /// The password as a list, for redacting error messages.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        self.password().into_iter().collect()
    }

    /// The password as a list, for the child-process wrappers to redact.
    pub(crate) fn secret_list(&self) -> Vec<Zeroizing<String>> {
        self.password.iter().cloned().collect()
    }

    /// `<host>:<port> as "<user>"`, for messages.
    pub(crate) fn server(&self) -> String {
        format!("{}:{} as {:?}", self.host, self.port, self.user)
    }

    /// `database "<database>" on <host>:<port> as "<user>"`, for messages.
    fn target(&self, database: &str) -> String {
        format!("database {database:?} on {}", self.server())
    }

    pub(crate) fn pg_connect(&self, database: &str) -> Result<postgres::Client> {
        let mut cfg = postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("steward-backup")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(p) = self.password() {
            cfg.password(p);
        }
        cfg.connect(postgres::NoTls).map_err(|e| {
            Error::database(
                format!(
                    "cannot connect to PostgreSQL database {database:?} at {}",
                    self.server()
                ),
                pg_error(&e, &self.secrets()),
            )
        })
    }

    pub(crate) fn my_connect(&self, database: Option<&str>) -> Result<::mysql::Conn> {
        let host = &self.host;
        let h = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let opts = ::mysql::OptsBuilder::new()
            .ip_or_hostname(Some(h))
            .tcp_port(self.port)
            .user(Some(&self.user))
            .pass(self.password())
            .db_name(database)
            .prefer_socket(false)
            .tcp_connect_timeout(Some(CONNECT_TIMEOUT));
        ::mysql::Conn::new(opts).map_err(|e| {
            Error::database(
                format!(
                    "cannot connect to MariaDB{} at {}",
                    database
                        .map(|d| format!(" database {d:?}"))
                        .unwrap_or_default(),
                    self.server()
                ),
                my_error(&e, &self.secrets()),
            )
        })
    }

    /// A PostgreSQL client tool (`pg_dump`, `pg_restore`) aimed at this server:
    /// `--host`, `--port`, `--username`, `--no-password`, the connect timeout, the
    /// application name `app` and the password in `PGPASSWORD`.
    pub(crate) fn pg_command(&self, program: &Path, app: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--username={}", self.user))
            .arg("--no-password")
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
            .env("PGAPPNAME", app);
        if let Some(p) = self.password() {
            cmd.env("PGPASSWORD", p);
        }
        cmd
    }

    /// A MariaDB client tool (`mariadb-dump`, `mariadb`, or their `mysql`
    /// names) aimed at this server over TCP, with the password in `MYSQL_PWD`.
    pub(crate) fn my_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", self.user))
            .arg("--protocol=TCP");
        if let Some(p) = self.password() {
            cmd.env("MYSQL_PWD", p);
        }
        cmd
    }
}

/// Spawns `configured` when set; otherwise `default`, or `fallback` when
/// `default` is not installed (`mariadb-dump`/`mysqldump`, `mariadb`/`mysql`).
pub(crate) fn spawn_first_installed<T>(
    configured: Option<&Path>,
    default: &str,
    fallback: &str,
    mut spawn: impl FnMut(&Path) -> Result<T>,
) -> Result<T> {
    match configured {
        Some(p) => spawn(p),
        None => match spawn(Path::new(default)) {
            Err(e) if is_not_found(&e) => spawn(Path::new(fallback)),
            other => other,
        },
    }
}

/// Exact row count of `schema.table` on PostgreSQL.
pub(crate) fn pg_count(
    client: &mut postgres::Client,
    schema: &str,
    table: &str,
) -> std::result::Result<u64, postgres::Error> {
    let n: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.{}",
                pg_ident(schema),
                pg_ident(table)
            ),
            &[],
        )?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Exact row count of `db.table` on MariaDB.
pub(crate) fn my_count(
    conn: &mut ::mysql::Conn,
    db: &str,
    table: &str,
) -> std::result::Result<u64, ::mysql::Error> {
    let n: Option<u64> = conn.query_first(format!(
        "SELECT COUNT(*) FROM {}.{}",
        my_ident(db),
        my_ident(table)
    ))?;
    Ok(n.unwrap_or(0))
}

/// Counts the rows of the first `max` user tables of a PostgreSQL database (in
/// whatever transaction the caller has begun). Returns the counts and whether
/// there were more tables.
pub(crate) fn pg_count_rows(
    client: &mut postgres::Client,
    max: usize,
    secrets: &[&str],
) -> std::result::Result<(Vec<TableCount>, bool), String> {
    let limit = i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' \
             AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2 LIMIT $1",
            &[&limit],
        )
        .map_err(|e| format!("listing tables: {}", pg_error(&e, secrets)))?;
    let truncated = rows.len() > max;
    let mut out = Vec::new();
    for row in rows.iter().take(max) {
        let schema: String = row.get(0);
        let table: String = row.get(1);
        let rows = pg_count(client, &schema, &table).map_err(|e| {
            format!(
                "counting rows of {schema}.{table}: {}",
                pg_error(&e, secrets)
            )
        })?;
        out.push(TableCount {
            schema,
            table,
            rows,
        });
    }
    Ok((out, truncated))
}

/// Counts the rows of the first `max` base tables of MariaDB database `db`.
pub(crate) fn my_count_rows(
    conn: &mut ::mysql::Conn,
    db: &str,
    max: usize,
    secrets: &[&str],
) -> std::result::Result<(Vec<TableCount>, bool), String> {
    let limit = u64::try_from(max.saturating_add(1)).unwrap_or(u64::MAX);
    let tables: Vec<String> = conn
        .exec(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? \
             AND table_type = 'BASE TABLE' ORDER BY table_name LIMIT ?",
            (db, limit),
        )
        .map_err(|e| format!("listing tables: {}", my_error(&e, secrets)))?;
    let truncated = tables.len() > max;
    let mut out = Vec::new();
    for table in tables.into_iter().take(max) {
        let rows = my_count(conn, db, &table)
            .map_err(|e| format!("counting rows of {table}: {}", my_error(&e, secrets)))?;
        out.push(TableCount {
            schema: db.to_string(),
            table,
            rows,
        });
    }
    Ok((out, truncated))
}

/// What [`Postgres`] and [`MariaDb`] do differently; [`backup_database`] is the
/// flow they share.
trait DatabaseDump {
    /// The kind recorded in the facts and tags.
    const KIND: SourceKind;
    /// The server's name in messages (`PostgreSQL`, `MariaDB`).
    const WHAT: &'static str;
    /// What the row counting hands to the dump and keeps alive until the dump is
    /// stored.
    type Counted;
    fn endpoint(&self) -> &Endpoint;
    fn database(&self) -> &str;
    fn file_name(&self) -> String;
    fn count_rows(&self) -> bool;
    /// Connects, records the server version and the row counts in `facts`.
    fn record(&self, facts: &mut Facts) -> Result<Self::Counted>;
    /// Spawns the dump tool, its stdout the dump.
    fn spawn_dump(&self, counted: Option<&Self::Counted>) -> Result<DumpReader>;
    /// Called once the dump is stored.
    fn release(_counted: Self::Counted) {}
}

/// The error for a failed query while recording row counts.
fn counting_error<S: DatabaseDump>(source: &S, reason: String) -> Error {
    Error::database(
        format!(
            "recording row counts of {}",
            source.endpoint().target(source.database())
        ),
        reason,
    )
}

/// Checks the settings, records the facts (when counting rows), runs the dump
/// tool and stores its output as a snapshot of the source called `name`.
fn backup_database<S: DatabaseDump>(
    source: &S,
    repo: &Repository,
    name: &str,
    progress: Option<ProgressFn>,
) -> Result<SourceBackup> {
    let started = Instant::now();
    let opts = options(name, S::KIND, progress)?;
    let endpoint = source.endpoint();
    let database = source.database();
    check_host_user(&endpoint.host, &endpoint.user, S::WHAT)?;
    check_database(database, S::WHAT)?;
    let file_name = source.file_name();
    let mut facts = Facts::new(S::KIND);
    facts.file_name = Some(file_name.clone());
    facts.database = Some(database.to_string());
    let counted = if source.count_rows() {
        Some(source.record(&mut facts)?)
    } else {
        None
    };
    let mut reader = source.spawn_dump(counted.as_ref())?;
    let target = endpoint.target(database);
    let summary = stream(repo, &file_name, &mut reader, &opts, &target)?;
    drop(reader);
    if let Some(c) = counted {
        S::release(c);
    }
    Ok(SourceBackup::streamed(summary, started, facts))
}

/// A PostgreSQL database, dumped with `pg_dump --format=custom`.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// The server, role and password (`None` leaves the environment and
    /// `~/.pgpass` to decide).
    pub endpoint: Endpoint,
    /// Database to dump.
    pub database: String,
    /// The pg_dump to run (default: `pg_dump` on `PATH`).
    pub pg_dump: Option<PathBuf>,
    /// Extra pg_dump arguments (e.g. `--exclude-table-data=audit_*`). If they
    /// narrow the dump to some tables, set `count_rows` to false or drills will
    /// miss the tables left out.
    pub extra_args: Vec<String>,
    /// Record exact row counts before the dump (default true).
    pub count_rows: bool,
    /// Most tables counted (default [`DEFAULT_MAX_TABLES`]).
    pub max_tables: usize,
}

impl Postgres {
    /// A source with no password and the defaults.
    pub fn new(host: &str, port: u16, user: &str, database: &str) -> Self {
        Postgres {
            endpoint: Endpoint::new(host, port, user),
            database: database.into(),
            pg_dump: None,
            extra_args: Vec::new(),
            count_rows: true,
            max_tables: DEFAULT_MAX_TABLES,
        }
    }

    /// The file name of the dump in the snapshot: `<database>.pgdump`.
    pub fn file_name(&self) -> String {
        format!("{}.pgdump", self.database)
    }

    /// Counts rows (if asked), dumps the database and stores the dump as a
    /// snapshot of the source called `name`.
    pub fn backup(&self, repo: &Repository, name: &str) -> Result<SourceBackup> {
        backup_database(self, repo, name, None)
    }
}

/// The counting transaction, kept open until pg_dump is done, and the snapshot
/// it exported (if it could).
struct PgCounted {
    client: postgres::Client,
    exported: Option<String>,
}

impl DatabaseDump for Postgres {
    const KIND: SourceKind = SourceKind::Postgres;
    const WHAT: &'static str = "PostgreSQL";
    type Counted = PgCounted;

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn database(&self) -> &str {
        &self.database
    }

    fn file_name(&self) -> String {
        Postgres::file_name(self)
    }

    fn count_rows(&self) -> bool {
        self.count_rows
    }

    fn record(&self, facts: &mut Facts) -> Result<PgCounted> {
        let secrets = self.endpoint.secrets();
        let query_err = |reason: String| counting_error(self, reason);
        let mut c = self.endpoint.pg_connect(&self.database)?;
        // The counts and the dump share one snapshot: this transaction exports
        // it and stays open until pg_dump is done. Exporting is not possible
        // everywhere (some poolers, old servers); the counts are then only as close
        // to the dump as the time between them. A failed statement aborts the
        // transaction, so a fresh one is begun in that case.
        const BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
        let mut exported = None;
        c.batch_execute(BEGIN)
            .map_err(|e| query_err(pg_error(&e, &secrets)))?;
        match c.query_one("SELECT pg_catalog.pg_export_snapshot()", &[]) {
            Ok(row) => exported = Some(row.get::<_, String>(0)),
            Err(e) => {
                tracing::warn!(
                    error = %pg_error(&e, &secrets),
                    "cannot export a snapshot; row counts and dump are taken separately"
                );
                c.batch_execute(&format!("ROLLBACK; {BEGIN}"))
                    .map_err(|e| query_err(pg_error(&e, &secrets)))?;
            }
        }
        let version: String = c
            .query_one("SHOW server_version", &[])
            .map_err(|e| query_err(pg_error(&e, &secrets)))?
            .get(0);
        facts.server_version = Some(version);
        let (counts, truncated) =
            pg_count_rows(&mut c, self.max_tables, &secrets).map_err(query_err)?;
        facts.row_counts = counts;
        facts.row_counts_truncated = truncated;
        Ok(PgCounted {
            client: c,
            exported,
        })
    }

    fn spawn_dump(&self, counted: Option<&PgCounted>) -> Result<DumpReader> {
        let program = self
            .pg_dump
            .clone()
            .unwrap_or_else(|| PathBuf::from("pg_dump"));
        let mut cmd = self.endpoint.pg_command(&program, "steward-backup");
        cmd.arg("--format=custom");
        if let Some(s) = counted.and_then(|c| c.exported.as_ref()) {
            cmd.arg(format!("--snapshot={s}"));
        }
        cmd.args(&self.extra_args)
            .arg(format!("--dbname={}", self.database));
        DumpReader::spawn(
            &mut cmd,
            self.endpoint.secret_list(),
            "install the PostgreSQL client tools (postgresql-client) or set the pg_dump path",
        )
    }

    fn release(mut counted: PgCounted) {
        let _ = counted.client.batch_execute("ROLLBACK");
    }
}

/// A MariaDB (or MySQL) database, dumped with `mariadb-dump` or `mysqldump`.
#[derive(Debug, Clone)]
pub struct MariaDb {
    /// The server (always reached over TCP), user and password.
    pub endpoint: Endpoint,
    /// Database to dump.
    pub database: String,
    /// The dump program (default: `mariadb-dump`, then `mysqldump`).
    pub dump_program: Option<PathBuf>,
    /// Extra dump arguments.
    pub extra_args: Vec<String>,
    /// Record exact row counts before the dump (default true).
    pub count_rows: bool,
    /// Most tables counted (default [`DEFAULT_MAX_TABLES`]).
    pub max_tables: usize,
}

impl MariaDb {
    /// A source with no password and the defaults.
    pub fn new(host: &str, port: u16, user: &str, database: &str) -> Self {
        MariaDb {
            endpoint: Endpoint::new(host, port, user),
            database: database.into(),
            dump_program: None,
            extra_args: Vec::new(),
            count_rows: true,
            max_tables: DEFAULT_MAX_TABLES,
        }
    }

    /// The file name of the dump in the snapshot: `<database>.sql`.
    pub fn file_name(&self) -> String {
        format!("{}.sql", self.database)
    }

    /// Counts rows (if asked), dumps the database and stores the dump as a
    /// snapshot of the source called `name`.
    pub fn backup(&self, repo: &Repository, name: &str) -> Result<SourceBackup> {
        backup_database(self, repo, name, None)
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = self.endpoint.my_command(program);
        cmd.args([
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
            "--default-character-set=utf8mb4",
        ])
        .args(&self.extra_args)
        .arg("--")
        .arg(&self.database);
        cmd
    }
}

impl DatabaseDump for MariaDb {
    const KIND: SourceKind = SourceKind::Mariadb;
    const WHAT: &'static str = "MariaDB";
    type Counted = ();

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn database(&self) -> &str {
        &self.database
    }

    fn file_name(&self) -> String {
        MariaDb::file_name(self)
    }

    fn count_rows(&self) -> bool {
        self.count_rows
    }

    fn record(&self, facts: &mut Facts) -> Result<()> {
        let secrets = self.endpoint.secrets();
        let query_err = |reason: String| counting_error(self, reason);
        let mut conn = self.endpoint.my_connect(Some(&self.database))?;
        facts.server_version = conn
            .query_first::<String, _>("SELECT VERSION()")
            .map_err(|e| query_err(my_error(&e, &secrets)))?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .map_err(|e| query_err(my_error(&e, &secrets)))?;
        let (counts, truncated) =
            my_count_rows(&mut conn, &self.database, self.max_tables, &secrets)
                .map_err(query_err)?;
        let _ = conn.query_drop("ROLLBACK");
        facts.row_counts = counts;
        facts.row_counts_truncated = truncated;
        Ok(())
    }

    fn spawn_dump(&self, _counted: Option<&()>) -> Result<DumpReader> {
        let hint = "install the MariaDB client (mariadb-client) or set the dump program path";
        spawn_first_installed(
            self.dump_program.as_deref(),
            "mariadb-dump",
            "mysqldump",
            |program| {
                DumpReader::spawn(
                    &mut self.command(program),
                    self.endpoint.secret_list(),
                    hint,
                )
            },
        )
    }
}

/// A Redis instance, saved as an RDB snapshot with `redis-cli --rdb -`.
#[derive(Clone)]
pub struct Redis {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user (Redis 6+); `None` for the default user.
    pub username: Option<String>,
    /// Password (sent as `REDISCLI_AUTH`).
    pub password: Option<Zeroizing<String>>,
    /// The database number the source is about. The RDB file always holds every
    /// database of the instance; this is recorded in the facts and passed to
    /// redis-cli with `-n`.
    pub db: u32,
    /// The redis-cli to run (default: `redis-cli` on `PATH`).
    pub redis_cli: Option<PathBuf>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("redis_cli", &self.redis_cli)
            .finish()
    }
}

impl Redis {
    /// A source for the default user, no password, database 0.
    pub fn new(host: &str, port: u16) -> Self {
        Redis {
            host: host.into(),
            port,
            username: None,
            password: None,
            db: 0,
            redis_cli: None,
        }
    }

    /// The file name of the dump in the snapshot.
    pub const FILE_NAME: &'static str = "dump.rdb";

    /// Saves an RDB snapshot of the instance as a snapshot of the source called
    /// `name`.
    pub fn backup(&self, repo: &Repository, name: &str) -> Result<SourceBackup> {
        self.backup_with(repo, name, None)
    }

    /// [`Self::backup`], reporting bytes read as it goes to `progress`.
    pub fn backup_with(
        &self,
        repo: &Repository,
        name: &str,
        progress: Option<ProgressFn>,
    ) -> Result<SourceBackup> {
        let started = Instant::now();
        let opts = options(name, SourceKind::Redis, progress)?;
        check_host_user(
            &self.host,
            self.username.as_deref().unwrap_or("default"),
            "Redis",
        )?;
        let program = self
            .redis_cli
            .clone()
            .unwrap_or_else(|| PathBuf::from("redis-cli"));
        let mut cmd = Command::new(&program);
        cmd.arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-n")
            .arg(self.db.to_string());
        if let Some(u) = &self.username {
            cmd.arg("--user").arg(u);
        }
        cmd.args(["--rdb", "-"]);
        match &self.password {
            Some(p) => {
                cmd.env("REDISCLI_AUTH", p.as_str());
            }
            None => {
                cmd.env_remove("REDISCLI_AUTH");
            }
        }
        let mut reader = DumpReader::spawn(
            &mut cmd,
            self.password.iter().cloned().collect(),
            "install redis-tools (redis-cli 7.0 or later) or set the redis-cli path",
        )?;
        let target = format!("Redis at {}:{}", self.host, self.port);
        let summary = stream(repo, Self::FILE_NAME, &mut reader, &opts, &target)?;
        if summary.bytes_read == 0 {
            tracing::warn!(%target, "redis-cli wrote an empty RDB file");
        }
        let mut facts = Facts::new(SourceKind::Redis);
        facts.file_name = Some(Self::FILE_NAME.into());
        facts.database = Some(self.db.to_string());
        Ok(SourceBackup::streamed(summary, started, facts))
    }
}

/// A SQLite database file, copied with SQLite's online backup API.
#[derive(Debug, Clone)]
pub struct Sqlite {
    /// The database file.
    pub path: PathBuf,
    /// Most tables counted (default [`DEFAULT_MAX_TABLES`]).
    pub max_tables: usize,
    /// Where the private temporary directory for the copy is made (default: the
    /// system's temporary directory). It needs room for a full copy.
    pub temp_dir: Option<PathBuf>,
}

impl Sqlite {
    /// A source for the database file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Sqlite {
            path: path.into(),
            max_tables: DEFAULT_MAX_TABLES,
            temp_dir: None,
        }
    }

    fn sqlite_err(&self, what: &str, e: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.clone(),
            reason: format!("{what}: {e}"),
        }
    }

    /// Copies the database consistently into a private temporary file, counts its
    /// tables, and stores the copy as a snapshot of the source called `name`.
    pub fn backup(&self, repo: &Repository, name: &str) -> Result<SourceBackup> {
        self.backup_with(repo, name, None)
    }

    /// [`Self::backup`], reporting bytes read as it goes to `progress`.
    pub fn backup_with(
        &self,
        repo: &Repository,
        name: &str,
        progress: Option<ProgressFn>,
    ) -> Result<SourceBackup> {
        use rusqlite::backup::{Backup, StepResult};
        use rusqlite::OpenFlags;

        let started = Instant::now();
        let opts = options(name, SourceKind::Sqlite, progress)?;
        let file_name = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                Error::InvalidSetting(format!(
                    "{} is not a database file path: give the path of the SQLite file",
                    self.path.display()
                ))
            })?;
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| Error::io("read the SQLite database", &self.path, e))?;
        if !meta.is_file() {
            return Err(Error::InvalidSetting(format!(
                "{} is not a file: give the path of the SQLite database file",
                self.path.display()
            )));
        }
        let src = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sqlite_err("cannot open it read-only", e))?;
        src.busy_timeout(Duration::from_secs(30))
            .map_err(|e| self.sqlite_err("cannot set a busy timeout", e))?;

        let parent = self.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("steward-sqlite-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io("create a temporary directory in", &parent, e))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("restrict the permissions of", dir.path(), e))?;
        let copy_path = dir.path().join(&file_name);
        {
            let mut dst = rusqlite::Connection::open(&copy_path)
                .map_err(|e| self.sqlite_err("cannot create the temporary copy", e))?;
            let backup = Backup::new(&src, &mut dst)
                .map_err(|e| self.sqlite_err("cannot start the online backup", e))?;
            let mut busy = 0u32;
            loop {
                // -1: every page in one step, under one read lock: a consistent copy
                // that never restarts because of concurrent writers.
                match backup
                    .step(-1)
                    .map_err(|e| self.sqlite_err("online backup failed", e))?
                {
                    StepResult::Done => break,
                    StepResult::More => {}
                    StepResult::Busy | StepResult::Locked => {
                        busy += 1;
                        if busy > 300 {
                            return Err(Error::Sqlite {
                                path: self.path.clone(),
                                reason: "the database stayed locked for 30 s; retry when the writer holding it is done".into(),
                            });
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    _ => {}
                }
            }
        }
        drop(src);

        let mut facts = Facts::new(SourceKind::Sqlite);
        facts.file_name = Some(file_name.clone());
        {
            let copy = rusqlite::Connection::open_with_flags(
                &copy_path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| self.sqlite_err("cannot open the temporary copy", e))?;
            let (counts, truncated) = sqlite_count_rows(&copy, self.max_tables)
                .map_err(|e| self.sqlite_err("cannot count the rows of the copy", e))?;
            facts.row_counts = counts;
            facts.row_counts_truncated = truncated;
            facts.server_version = Some(rusqlite::version().to_string());
        }
        let file = File::open(&copy_path)
            .map_err(|e| Error::io("read the temporary copy", &copy_path, e))?;
        let summary = backup_stream(repo, &file_name, file, &opts)?;
        drop(dir);
        Ok(SourceBackup::streamed(summary, started, facts))
    }
}

/// Counts the rows of the first `max` tables of a SQLite database.
pub fn sqlite_count_rows(
    conn: &rusqlite::Connection,
    max: usize,
) -> rusqlite::Result<(Vec<TableCount>, bool)> {
    let limit = i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name LIMIT ?1",
    )?;
    let names: Vec<String> = stmt
        .query_map([limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let truncated = names.len() > max;
    let mut out = Vec::new();
    for table in names.into_iter().take(max) {
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM main.{}", pg_ident(&table)),
            [],
            |r| r.get(0),
        )?;
        out.push(TableCount {
            schema: "main".into(),
            table,
            rows: u64::try_from(n).unwrap_or(0),
        });
    }
    Ok((out, truncated))
}

/// Files and directories, backed up with [`steward_repo::backup`].
#[derive(Debug, Clone)]
pub struct Directory {
    /// What to back up.
    pub paths: Vec<PathBuf>,
    /// Glob patterns to leave out (see [`BackupOptions::excludes`]).
    pub excludes: Vec<String>,
}

impl Directory {
    /// A source for `paths` with no excludes.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Directory {
            paths,
            excludes: Vec::new(),
        }
    }

    /// Backs the paths up as a snapshot of the source called `name`.
    pub fn backup(&self, repo: &Repository, name: &str) -> Result<SourceBackup> {
        self.backup_with(repo, name, None)
    }

    /// [`Self::backup`], reporting bytes read as it goes to `progress`.
    pub fn backup_with(
        &self,
        repo: &Repository,
        name: &str,
        progress: Option<ProgressFn>,
    ) -> Result<SourceBackup> {
        let started = Instant::now();
        let mut opts = options(name, SourceKind::Directory, progress)?;
        opts.excludes = self.excludes.clone();
        let summary = backup(repo, &self.paths, &opts)?;
        for w in &summary.warnings {
            tracing::warn!(source = name, warning = %w, "directory backup");
        }
        Ok(SourceBackup {
            snapshot_id: summary.snapshot_id,
            bytes: summary.total_bytes,
            duration: started.elapsed(),
            facts: Facts::new(SourceKind::Directory),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_settings_are_checked() {
        assert!(options("db-1", SourceKind::Postgres, None).is_ok());
        assert!(options("a,b", SourceKind::Postgres, None).is_err());
        assert!(options("", SourceKind::Postgres, None).is_err());
        assert!(check_database("app", "PostgreSQL").is_ok());
        for bad in ["", "-x", "host=evil", "postgresql://x", "a/b"] {
            assert!(check_database(bad, "PostgreSQL").is_err(), "{bad}");
        }
        assert!(check_host_user("-oProxy", "u", "x").is_err());
    }

    #[test]
    fn debug_hides_passwords() {
        let mut e = Endpoint::new("h", 1, "u");
        e.password = Some(Zeroizing::new("hunter2".into()));
        let text = format!("{e:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<redacted>"),
            "{text}"
        );
        let mut p = Postgres::new("h", 1, "u", "d");
        p.endpoint = e.clone();
        assert!(!format!("{p:?}").contains("hunter2"));
        let mut m = MariaDb::new("h", 1, "u", "d");
        m.endpoint = e;
        assert!(!format!("{m:?}").contains("hunter2"));
        let mut r = Redis::new("h", 1);
        r.password = Some(Zeroizing::new("hunter2".into()));
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn facts_round_trip_as_json() {
        let mut f = Facts::new(SourceKind::Postgres);
        f.file_name = Some("app.pgdump".into());
        f.row_counts.push(TableCount {
            schema: "public".into(),
            table: "users".into(),
            rows: 3,
        });
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"kind\":\"postgres\""), "{json}");
        let back: Facts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn endpoint_commands_keep_the_password_out_of_argv() {
        let mut e = Endpoint::new("db.example", 5433, "backup");
        e.password = Some(Zeroizing::new("hunter2".into()));
        assert_eq!(
            e.target("app"),
            "database \"app\" on db.example:5433 as \"backup\""
        );
        for cmd in [
            e.pg_command(Path::new("pg_dump"), "steward-backup"),
            e.my_command(Path::new("mariadb-dump")),
        ] {
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert!(args.contains(&"--host=db.example".to_string()), "{args:?}");
            assert!(args.contains(&"--port=5433".to_string()), "{args:?}");
            assert!(!args.iter().any(|a| a.contains("hunter2")), "{args:?}");
            assert!(cmd
                .get_envs()
                .any(|(_, v)| v.is_some_and(|v| v == "hunter2")));
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(pg_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(my_ident("a`b"), "`a``b`");
    }
}
