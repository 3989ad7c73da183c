//! Point-in-time recovery drills: prove a PostgreSQL base backup and its WAL archive
//! by recovering them into a throwaway cluster, to the newest point archived or to a
//! chosen time, and checking what comes back.
//!
//! [`PitrDrill::run`]:
//!
//! 1. picks the base backup taken at or before the target ([`crate::choose_base`]);
//! 2. makes a private (0700) directory under the scratch directory, extracts the base
//!    backup into `data/` and copies the WAL archived from the segment it starts at
//!    (its `backup_label`) onwards, and every `.history` file, into `wal/`, so the
//!    cluster's `restore_command` is a plain `cp` and never needs the repository or its
//!    password;
//! 3. configures the copy as a throwaway: `recovery.signal`, the recovery target,
//!    `archive_mode = off` (a drill must never archive into the real archive), no TCP
//!    listener (a Unix socket in the private directory only), `pg_hba.conf` replaced
//!    by `local all all trust` (only the cluster's OS user can reach the socket), SSL
//!    and the logging collector off;
//! 4. starts it with the `pg_ctl` of the backup's major version (`PG_VERSION`, found
//!    under `/usr/lib/postgresql/<version>/bin` unless given), as the configured OS
//!    user when Steward runs as root (PostgreSQL refuses to run as root), and waits
//!    until recovery has promoted the cluster: the time from step 2 to here is the
//!    measured recovery time;
//! 5. runs the assertions and `amcheck` on the database, records the last
//!    transaction replayed (`pg_last_xact_replay_timestamp()`: the recovery point
//!    actually proven), stops the cluster (`pg_ctl stop -m immediate`) and removes the
//!    directory, whatever happened.
//!
//! A recovery that fails (a missing WAL file, a target after the end of the archive)
//! is a failed `recovery` check whose detail is the end of the server's log.
//!
//! Each drill directory holds `owner.pid`, the pid of the process that made it. A drill
//! cut short (Steward killed with -9) leaves its directory and maybe its cluster
//! behind: the next drill in the same scratch directory finds directories whose owner
//! is gone, stops their server (SIGQUIT, the immediate shutdown, then SIGKILL; only a
//! process whose command line names that data directory) and removes them
//! ([`sweep_stale`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_repo::{restore_file_to, Id, Repository, Snapshot};

use crate::child::{bounded, describe_status};
use crate::drill::{Assertion, CheckResult, DrillReport, PostgresDrill};
use crate::error::{Error, Result};
use crate::pitr::{
    append_auto_conf, check_source_name, choose_base_in, conf_quote, extract_base, has_tag,
    is_source, recovery_target_lines, tag_value, WAL_KIND_TAG,
};
use crate::source::{Facts, SourceKind};

/// Without a `backup_label` naming the first WAL file, the files archived from this
/// long before the base backup's snapshot time on are copied.
pub const WAL_MARGIN: Duration = Duration::from_secs(600);

/// How long starting the cluster and recovering may take unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// How drill directories are named in the scratch directory.
const DIR_PREFIX: &str = "steward-pitr-drill-";

/// The file in a drill directory naming the process that made it.
const OWNER_FILE: &str = "owner.pid";

/// The port in the cluster's socket name (no TCP listener is opened).
const SOCKET_PORT: u16 = 5432;

/// A PITR drill as configured. See the module docs.
#[derive(Debug, Clone)]
pub struct PitrDrill {
    /// The source whose base backups and WAL are drilled (tag `source=<name>`).
    pub source: String,
    /// The database the checks connect to.
    pub database: String,
    /// The role the checks connect as (any role of the backed-up cluster).
    pub role: String,
    /// Recover to this time; `None`: to the end of the archive.
    pub target_time: Option<DateTime<Utc>>,
    /// Where the throwaway cluster's directory is made.
    pub scratch_dir: PathBuf,
    /// The OS user the cluster runs as. Required when Steward runs as root (default
    /// `postgres` there); otherwise it must be unset or Steward's own user.
    pub os_user: Option<String>,
    /// The directory of `pg_ctl` (default: `/usr/lib/postgresql/<PG_VERSION>/bin`,
    /// then `PATH`).
    pub pg_bin: Option<PathBuf>,
    /// How long starting the cluster and recovering may take.
    pub timeout: Duration,
    /// Queries that must hold on the recovered database.
    pub assertions: Vec<Assertion>,
    /// Run `amcheck` when available.
    pub amcheck: bool,
}

/// What a PITR drill recovered, beside its [`DrillReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrRecovery {
    /// The base backup snapshot restored.
    pub base_snapshot: String,
    /// When it was taken.
    pub base_time: DateTime<Utc>,
    /// The target asked for (`None`: the end of the archive).
    pub target_time: Option<DateTime<Utc>>,
    /// The commit time of the last transaction replayed: the recovery point proven.
    pub recovered_to: Option<DateTime<Utc>>,
    /// WAL files copied out of the archive.
    pub wal_files: usize,
}

impl PitrDrill {
    /// A drill of `source` checking `database` as `role`, to the end of the archive,
    /// with the cluster under the system's temporary directory.
    pub fn new(source: &str, database: &str, role: &str) -> Self {
        PitrDrill {
            source: source.into(),
            database: database.into(),
            role: role.into(),
            target_time: None,
            scratch_dir: std::env::temp_dir(),
            os_user: None,
            pg_bin: None,
            timeout: DEFAULT_TIMEOUT,
            assertions: Vec::new(),
            amcheck: true,
        }
    }

    /// Recovers, checks and removes a throwaway cluster. Errors are problems that
    /// stop the drill from starting (no base backup, no server binaries, no such OS
    /// user); a recovery or a check that fails is a failed report.
    pub fn run(&self, repo: &Repository) -> Result<(DrillReport, PitrRecovery)> {
        let started = Instant::now();
        check_source_name(&self.source)?;
        if self.role.is_empty() || self.database.is_empty() {
            return Err(Error::InvalidSetting(
                "a PITR drill needs the database to check and the role to connect as".into(),
            ));
        }
        let owner = Owner::resolve(self.os_user.as_deref())?;
        // One listing for the base backup and the WAL (it reads every snapshot file).
        let snapshots = repo.list_snapshots()?;
        let (base_id, base) = choose_base_in(&snapshots, &self.source, self.target_time)?;
        let mut recovery = PitrRecovery {
            base_snapshot: base_id.to_hex(),
            base_time: base.time,
            target_time: self.target_time,
            recovered_to: None,
            wal_files: 0,
        };

        for warning in sweep_stale(&self.scratch_dir) {
            tracing::warn!("{warning}");
        }
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&self.scratch_dir)
            .map_err(|e| Error::io("create the drill directory in", &self.scratch_dir, e))?;
        let marker = dir.path().join(OWNER_FILE);
        std::fs::write(&marker, std::process::id().to_string())
            .map_err(|e| Error::io("write", &marker, e))?;
        let timer = Instant::now();
        let data = dir.path().join("data");
        let (bytes, wal_files, pg_ctl) =
            self.prepare(repo, &snapshots, &base, &base_id, dir.path(), &owner)?;
        recovery.wal_files = wal_files;
        // Declared after `dir`, so dropped (the server stopped) before it is removed.
        let mut cluster = Cluster {
            dir: dir.path().to_path_buf(),
            data,
            owner,
            pg_ctl,
            started: false,
        };
        let drill = PostgresDrill {
            assertions: self.assertions.clone(),
            amcheck: self.amcheck,
            ..PostgresDrill::new(&cluster.dir.to_string_lossy(), SOCKET_PORT, &self.role)
        };
        let recovered = cluster.start_and_recover(self.timeout, &drill, &self.database);
        let restore_duration = timer.elapsed();
        let mut checks = Vec::new();
        match recovered {
            Err(detail) => checks.push(CheckResult::new("recovery", false, detail)),
            Ok(()) => {
                recovery.recovered_to = drill.last_replayed(&self.database).ok().flatten();
                let point = match (self.target_time, recovery.recovered_to) {
                    (Some(t), _) => format!("the target {}", t.to_rfc3339()),
                    (None, Some(t)) => {
                        format!("the end of the archive (last commit {})", t.to_rfc3339())
                    }
                    (None, None) => "the end of the archive".to_string(),
                };
                checks.push(CheckResult::new(
                    "recovery",
                    true,
                    format!(
                        "base backup {} ({}) and {} WAL files recovered to {point} in {:.1} s",
                        base_id.short(),
                        base.time.to_rfc3339(),
                        recovery.wal_files,
                        restore_duration.as_secs_f64()
                    ),
                ));
                match drill.check_restored(&Facts::new(SourceKind::Postgres), &self.database) {
                    Ok(more) => checks.extend(more),
                    Err(e) => checks.push(CheckResult::new(
                        "connect",
                        false,
                        format!("the recovered cluster does not take connections: {e}"),
                    )),
                }
            }
        }
        if let Err(e) = cluster.stop() {
            checks.push(CheckResult::new("stop cluster", false, e));
        }
        Ok((
            DrillReport {
                passed: checks.iter().all(|c| c.passed),
                kind: SourceKind::Postgres,
                scratch_database: format!("throwaway cluster recovering {}", self.source),
                restore_duration,
                bytes_restored: bytes,
                duration: started.elapsed(),
                checks,
            },
            recovery,
        ))
    }

    /// Extracts the base backup and the WAL, configures the copy, hands it to the
    /// cluster's owner; returns the bytes restored, the WAL files copied and the
    /// `pg_ctl` to run.
    fn prepare(
        &self,
        repo: &Repository,
        snapshots: &[(Id, Snapshot)],
        base: &Snapshot,
        base_id: &Id,
        dir: &Path,
        owner: &Owner,
    ) -> Result<(u64, usize, PathBuf)> {
        let data = dir.join("data");
        let mut bytes = extract_base(repo, base, &data)?;
        let pg_ctl = find_pg_ctl(self.pg_bin.as_deref(), &data)?;
        let start = start_wal_file(&data);
        let wal = wal_for_recovery(snapshots, &self.source, base, start.as_deref());
        let wal_dir = dir.join("wal");
        std::fs::create_dir(&wal_dir).map_err(|e| Error::io("create", &wal_dir, e))?;
        for (name, sn) in &wal {
            let path = wal_dir.join(name);
            let mut f = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            bytes += restore_file_to(repo, sn, name, &mut f)?;
        }
        // A data directory from a Debian cluster keeps its configuration in /etc.
        for name in ["postgresql.conf", "pg_ident.conf"] {
            let p = data.join(name);
            if !p.exists() {
                std::fs::File::create(&p).map_err(|e| Error::io("create", &p, e))?;
            }
        }
        let hba = data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "# steward PITR drill: local connections of the cluster's own OS user only\nlocal all all trust\n",
        )
        .map_err(|e| Error::io("write", &hba, e))?;
        for stale in ["postmaster.pid", "standby.signal"] {
            let _ = std::fs::remove_file(data.join(stale));
        }
        let signal = data.join("recovery.signal");
        std::fs::File::create(&signal).map_err(|e| Error::io("create", &signal, e))?;
        let text = |p: &Path| conf_quote(&p.to_string_lossy());
        let mut conf = format!(
            "\n# steward PITR drill of base backup {}: a throwaway copy\n\
             restore_command = {}\n\
             archive_mode = off\n\
             listen_addresses = ''\n\
             port = {SOCKET_PORT}\n\
             unix_socket_directories = {}\n\
             hba_file = {}\n\
             ident_file = {}\n\
             data_directory = {}\n\
             external_pid_file = ''\n\
             ssl = off\n\
             logging_collector = off\n\
             hot_standby = on\n",
            base_id.short(),
            conf_quote(&format!(
                "cp {}/%f \"%p\"",
                shell_word(&wal_dir.to_string_lossy())
            )),
            text(dir),
            text(&hba),
            text(&data.join("pg_ident.conf")),
            text(&data),
        );
        conf.push_str(&recovery_target_lines(self.target_time));
        append_auto_conf(&data, &conf)?;
        owner.give(dir)?;
        Ok((bytes, wal.len(), pg_ctl))
    }
}

/// Quotes a path for `sh` inside `restore_command` (`%` doubled for PostgreSQL).
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''")).replace('%', "%%")
}

/// The WAL file a base backup starts from, from its `backup_label`
/// (`START WAL LOCATION: 0/2000028 (file 000000010000000000000002)`).
fn start_wal_file(data: &Path) -> Option<String> {
    let label = std::fs::read_to_string(data.join("backup_label")).ok()?;
    let line = label
        .lines()
        .find(|l| l.starts_with("START WAL LOCATION:"))?;
    let name = line.split("(file ").nth(1)?.trim_end_matches(')').trim();
    (name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit())).then(|| name.to_string())
}

/// The WAL files a recovery from the base backup may ask for, in name order: every
/// `.history` file, and every file from the segment the base backup starts at (from its
/// `backup_label`; without one, the files archived from [`WAL_MARGIN`] before it). All
/// of them, whatever the target: the time a file was archived says too little about
/// the transactions in it to cut the list short safely.
fn wal_for_recovery(
    snapshots: &[(Id, Snapshot)],
    source: &str,
    base: &Snapshot,
    start: Option<&str>,
) -> Vec<(String, Snapshot)> {
    let from = base.time - chrono::Duration::from_std(WAL_MARGIN).unwrap_or_default();
    let mut newest: std::collections::BTreeMap<String, &Snapshot> = Default::default();
    for (_, sn) in snapshots {
        if !(has_tag(sn, WAL_KIND_TAG) && is_source(sn, source)) {
            continue;
        }
        let Some(name) = tag_value(sn, "wal").map(str::to_string) else {
            continue;
        };
        let wanted = name.ends_with(".history")
            || match start {
                Some(first) => name.as_str() >= first,
                None => sn.time >= from,
            };
        // One file per name: the newest archived copy.
        if wanted && newest.get(&name).is_none_or(|old| old.time <= sn.time) {
            newest.insert(name, sn);
        }
    }
    newest
        .into_iter()
        .map(|(name, sn)| (name, sn.clone()))
        .collect()
}

/// `pg_ctl` for the data directory's major version.
fn find_pg_ctl(pg_bin: Option<&Path>, data: &Path) -> Result<PathBuf> {
    if let Some(dir) = pg_bin {
        let p = dir.join("pg_ctl");
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::InvalidSetting(format!(
                "{} has no pg_ctl: set the drill's pg_bin to the directory of the PostgreSQL server binaries",
                dir.display()
            )))
        };
    }
    let version = std::fs::read_to_string(data.join("PG_VERSION"))
        .map_err(|e| Error::io("read the base backup's PG_VERSION in", data, e))?;
    let version = version.trim();
    let p = Path::new("/usr/lib/postgresql")
        .join(version)
        .join("bin/pg_ctl");
    if p.is_file() {
        return Ok(p);
    }
    // A pg_ctl on PATH counts only if it is of the backup's major version: another
    // version's server refuses the data directory with a message about PG_VERSION
    // that would read like a broken backup.
    let mut other = None;
    for p in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("pg_ctl"))
        .filter(|p| p.is_file())
    {
        let out = std::process::Command::new(&p)
            .arg("--version")
            .env_clear()
            .output();
        let said = out
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if is_major_version(&said, version) {
            return Ok(p);
        }
        other.get_or_insert(format!(" ({} is \"{said}\")", p.display()));
    }
    Err(Error::InvalidSetting(format!(
        "the base backup is of PostgreSQL {version}, and no pg_ctl of that version was found{}: install postgresql-{version} (server) or set the drill's pg_bin",
        other.unwrap_or_default()
    )))
}

/// Whether `pg_ctl --version` output (`pg_ctl (PostgreSQL) 15.19 (Debian ...)`, or
/// `9.6.24` for a release before 10) is of the major version `major` as `PG_VERSION` writes it (`15`,
/// `9.6`).
fn is_major_version(output: &str, major: &str) -> bool {
    let Some(v) = output
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return false;
    };
    !major.is_empty()
        && v.strip_prefix(major).is_some_and(|rest| {
            rest.is_empty()
                || rest.starts_with('.')
                || rest.starts_with(|c: char| c.is_ascii_alphabetic())
        })
}

/// Who the throwaway cluster runs as.
#[derive(Debug, Clone)]
struct Owner {
    /// `None`: Steward's own user.
    ids: Option<(u32, u32)>,
}

impl Owner {
    fn resolve(os_user: Option<&str>) -> Result<Owner> {
        let me = nix::unistd::geteuid();
        let lookup = |name: &str| -> Result<nix::unistd::User> {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    Error::InvalidSetting(format!(
                        "there is no OS user {name:?} to run the drill's PostgreSQL cluster: set the drill's os_user to the user PostgreSQL runs as"
                    ))
                })
        };
        if me.is_root() {
            let name = os_user.unwrap_or("postgres");
            let user = lookup(name)?;
            if user.uid.is_root() {
                return Err(Error::InvalidSetting(
                    "PostgreSQL refuses to run as root: set the drill's os_user to an unprivileged user (e.g. postgres)".into(),
                ));
            }
            return Ok(Owner {
                ids: Some((user.uid.as_raw(), user.gid.as_raw())),
            });
        }
        let own = nix::unistd::User::from_uid(me)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| me.to_string());
        match os_user {
            Some(name) if name != own => Err(Error::InvalidSetting(format!(
                "the drill's os_user is {name:?}, but Steward runs as {own:?} and can only start a cluster as another user when it runs as root: remove os_user"
            ))),
            _ => Ok(Owner { ids: None }),
        }
    }

    /// Makes `dir` and everything under it the owner's.
    fn give(&self, dir: &Path) -> Result<()> {
        let Some((uid, gid)) = self.ids else {
            return Ok(());
        };
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(|e| Error::io("hand over to the drill's OS user", &p, e))?;
            let meta = std::fs::symlink_metadata(&p).map_err(|e| Error::io("read", &p, e))?;
            if meta.is_dir() {
                for entry in std::fs::read_dir(&p).map_err(|e| Error::io("read", &p, e))? {
                    stack.push(entry.map_err(|e| Error::io("read", &p, e))?.path());
                }
            }
        }
        Ok(())
    }

    /// `program` as the owner, with an environment of its own: Steward's may hold
    /// secrets (`STEWARD_REPO_PASSWORD`, `PGPASSWORD`, cloud keys) that must not reach
    /// a server run as another OS user, whose environment that user can read.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }
}

/// The throwaway cluster; stopped (immediately) when dropped if still running.
struct Cluster {
    dir: PathBuf,
    data: PathBuf,
    owner: Owner,
    pg_ctl: PathBuf,
    started: bool,
}

impl Cluster {
    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The end of the server's log, for a failure's detail.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        bounded(&tail, 1500)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::result::Result<String, String> {
        let out = self
            .owner
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.pg_ctl.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "pg_ctl {} {}: {}",
                args.first().copied().unwrap_or(""),
                describe_status(&out.status),
                bounded(
                    &format!("{text} {}", String::from_utf8_lossy(&out.stderr).trim()),
                    500
                )
            ))
        }
    }

    /// Starts the server and waits until recovery has promoted it, asking `probe`
    /// (connected to `database`) whether it still recovers.
    fn start_and_recover(
        &mut self,
        timeout: Duration,
        probe: &PostgresDrill,
        database: &str,
    ) -> std::result::Result<(), String> {
        let deadline = Instant::now() + timeout;
        let log = self.log();
        // The log is the owner's so the server can write it.
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        self.owner
            .give(&log)
            .map_err(|e| format!("cannot prepare the server log: {e}"))?;
        self.started = true;
        let secs = timeout.as_secs().max(1).to_string();
        let log_text = log.to_string_lossy().to_string();
        if let Err(e) = self.pg_ctl(&["-l", &log_text, "-w", "-t", &secs, "start"]) {
            return Err(format!(
                "the cluster did not start ({e}); its log ends: {}",
                self.log_tail()
            ));
        }
        loop {
            match probe.is_in_recovery(database).ok() {
                Some(false) => return Ok(()),
                Some(true) => {}
                None if !self.data.join("postmaster.pid").exists() => {
                    return Err(format!(
                        "recovery failed and the server stopped; its log ends: {}",
                        self.log_tail()
                    ))
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "recovery did not finish within {} s; the log ends: {}",
                    timeout.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) -> std::result::Result<(), String> {
        if !self.started {
            return Ok(());
        }
        self.started = false;
        if !self.data.join("postmaster.pid").exists() {
            return Ok(());
        }
        self.pg_ctl(&["-m", "immediate", "-w", "-t", "60", "stop"])
            .map(|_| ())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot stop the drill's cluster");
        }
    }
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    if pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // `pid (comm) S ...`: the state follows the last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Stops and removes the drill directories in `scratch_dir` whose owner process is
/// gone (see the module docs). Returns what it did, as warnings.
pub fn sweep_stale(scratch_dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(entries) = std::fs::read_dir(scratch_dir) else {
        return done;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !named || !dir.is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        // No marker yet: a drill being set up this instant, or not ours.
        let Some(owner) = owner else { continue };
        if alive(owner) {
            continue;
        }
        let data = dir.join("data");
        let server = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .filter(|&pid| {
                // Only the server of this directory: its command line names it.
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let want = data.to_string_lossy();
                    c.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
                })
            });
        if let Some(pid) = server {
            let p = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            }
            done.push(format!(
                "stopped the cluster (pid {pid}) of a drill cut short in {}",
                dir.display()
            ));
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => done.push(format!(
                "removed the directory of a drill cut short: {}",
                dir.display()
            )),
            Err(e) => done.push(format!(
                "cannot remove the directory of a drill cut short, {}: {e}; remove it by hand",
                dir.display()
            )),
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_ctl_on_path_must_be_of_the_backups_major_version() {
        assert!(is_major_version("pg_ctl (PostgreSQL) 15.19", "15"));
        assert!(is_major_version(
            "pg_ctl (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)",
            "15"
        ));
        assert!(is_major_version("pg_ctl (PostgreSQL) 9.6.24", "9.6"));
        assert!(is_major_version("pg_ctl (PostgreSQL) 17beta2", "17"));
        assert!(!is_major_version("pg_ctl (PostgreSQL) 16.4", "15"));
        assert!(!is_major_version("pg_ctl (PostgreSQL) 150.1", "15"));
        assert!(!is_major_version("", "15"));
        assert!(!is_major_version("pg_ctl (PostgreSQL) 15.1", ""));
    }

    #[test]
    fn a_drill_cut_short_is_stopped_and_removed_by_the_next() {
        let scratch = tempfile::tempdir().unwrap();
        // A dead owner: a process that has exited (its pid is reaped).
        let dead = {
            let mut c = Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let stale = scratch.path().join(format!("{DIR_PREFIX}old"));
        let data = stale.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(stale.join(OWNER_FILE), dead.to_string()).unwrap();
        // Its "server": a process whose command line names the data directory.
        let mut server = Command::new("sh")
            .args(["-c", "sleep 60; :"])
            .arg(&data)
            .spawn()
            .unwrap();
        std::fs::write(
            data.join("postmaster.pid"),
            format!("{}\n{}\n", server.id(), data.display()),
        )
        .unwrap();
        // A live owner's directory, and one without a marker: both left alone.
        let live = scratch.path().join(format!("{DIR_PREFIX}live"));
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join(OWNER_FILE), std::process::id().to_string()).unwrap();
        let fresh = scratch.path().join(format!("{DIR_PREFIX}fresh"));
        std::fs::create_dir_all(&fresh).unwrap();

        // The spawn returns while the child may still be setting up its new image
        // (its command line reads empty): wait (bounded) until it names the directory.
        let named = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|a| a == data.as_os_str().as_encoded_bytes())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !named(server.id()) {
            assert!(
                Instant::now() < deadline,
                "the stand-in server never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        let done = sweep_stale(scratch.path());
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(!stale.exists());
        assert!(live.exists() && fresh.exists());
        // The server was signalled (SIGQUIT ends sleep).
        let status = server.wait().unwrap();
        assert!(!status.success());
    }

    #[test]
    fn the_wal_directory_is_quoted_for_the_shell_and_postgresql() {
        assert_eq!(shell_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_word("/tmp/it's%"), "'/tmp/it'\\''s%%'");
    }

    #[test]
    fn the_first_wal_file_comes_from_the_backup_label() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(start_wal_file(dir.path()), None);
        std::fs::write(
            dir.path().join("backup_label"),
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n",
        )
        .unwrap();
        assert_eq!(
            start_wal_file(dir.path()).as_deref(),
            Some("000000010000000000000002")
        );
        std::fs::write(
            dir.path().join("backup_label"),
            "START WAL LOCATION: 0/2 (file ../x)\n",
        )
        .unwrap();
        assert_eq!(start_wal_file(dir.path()), None);
    }

    #[test]
    fn the_cluster_gets_none_of_stewards_environment() {
        // cargo runs tests with CARGO_* and more in the environment: none may pass.
        assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
        let owner = Owner::resolve(None).unwrap();
        let out = owner.command(Path::new("/usr/bin/env")).output().unwrap();
        assert!(out.status.success());
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        keys.sort();
        assert_eq!(keys, ["LC_ALL", "PATH"]);
    }

    #[test]
    fn an_os_user_other_than_our_own_needs_root() {
        if nix::unistd::geteuid().is_root() {
            assert!(Owner::resolve(Some("root")).is_err());
            assert!(Owner::resolve(Some("no-such-user-steward")).is_err());
        } else {
            assert!(Owner::resolve(Some("root")).is_err());
            assert!(Owner::resolve(None).is_ok());
        }
    }
}
