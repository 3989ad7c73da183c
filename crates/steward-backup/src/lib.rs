//! Backs up real data sources into Steward's backup repositories
//! ([`steward_repo`], restic repository format v2) and proves the backups with
//! restore drills.
//!
//! # Sources ([`source`])
//!
//! | source | how | file in the snapshot |
//! |---|---|---|
//! | [`Postgres`] | `pg_dump --format=custom`, streamed | `<database>.pgdump` |
//! | [`MariaDb`] | `mariadb-dump` (or `mysqldump`) `--single-transaction --routines --events`, streamed | `<database>.sql` |
//! | [`Redis`] | `redis-cli --rdb -` (an RDB snapshot on stdout), streamed | `dump.rdb` |
//! | [`Sqlite`] | SQLite's online backup API into a private temporary copy | the database file's name |
//! | [`Directory`] | [`steward_repo::backup`] | the paths themselves |
//!
//! Every backup returns a [`SourceBackup`]: the snapshot id, the bytes read, how
//! long it took and [`Facts`] recorded at backup time (exact row counts per table
//! for the databases) that a drill later compares against. A dump tool that fails
//! never becomes a snapshot: its exit status is checked before the snapshot is
//! written. Passwords go to the tools through their environment variables
//! (`PGPASSWORD`, `MYSQL_PWD`, `REDISCLI_AUTH`), never through argv, and never
//! appear in an error message. [`Postgres`], [`MariaDb`] and their drills keep
//! host, port, user and password in one [`Endpoint`] (`source.endpoint.password`),
//! whose `Debug` output hides the password.
//!
//! # Point-in-time recovery ([`pitr`])
//!
//! [`base_backup`] streams `pg_basebackup` (tar, WAL fetched) into a snapshot,
//! [`wal_push`] and [`wal_fetch`] are PostgreSQL's `archive_command` and
//! `restore_command`, and [`restore_to_time`] prepares a data directory that
//! recovers to a point in time.
//!
//! # Drills ([`drill`])
//!
//! [`PostgresDrill`] and [`MariaDbDrill`] restore a snapshot into a scratch
//! database (`steward_drill_<random>`), time the restore (the measured RTO),
//! compare the row counts recorded at backup time, run the caller's
//! [`Assertion`]s (and `amcheck` on PostgreSQL when available), and always drop
//! the scratch database at the end.
//!
//! ```no_run
//! use std::sync::Arc;
//! use steward_backup::{Assertion, Postgres, PostgresDrill};
//! use steward_repo::{LocalBackend, Repository};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = Repository::open(Arc::new(LocalBackend::new("/srv/backups/app")), "pw")?;
//! let source = Postgres::new("127.0.0.1", 5432, "postgres", "app");
//! let done = source.backup(&repo, "app-db")?;
//! let (_, snapshot) = repo.load_snapshot(&done.snapshot_id.to_hex())?;
//! let mut drill = PostgresDrill::new("127.0.0.1", 5432, "postgres");
//! drill.assertions.push(Assertion::min_rows("SELECT * FROM users", 1));
//! let report = drill.run(&repo, &snapshot, &done.facts)?;
//! assert!(report.passed, "{report:?}");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod child;
pub mod drill;
pub mod error;
pub mod pitr;
pub mod pitr_drill;
pub mod source;

pub use drill::{Assertion, CheckResult, DrillReport, Expect, MariaDbDrill, PostgresDrill};
pub use error::{Error, Result};
pub use pitr::{
    base_backup, choose_base, restore_to_time, wal_fetch, wal_push, BaseBackupOptions, PitrRestore,
    WalFetchCommand, WalFetched, WalPushed,
};
pub use pitr_drill::{PitrDrill, PitrRecovery};
pub use source::{
    Directory, Endpoint, Facts, MariaDb, Postgres, Redis, Source, SourceBackup, SourceKind, Sqlite,
    TableCount,
};
