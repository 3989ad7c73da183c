//! PostgreSQL point-in-time recovery (PITR): physical base backups and the WAL
//! archive, kept in the same repository as everything else.
//!
//! * [`base_backup`] runs `pg_basebackup --format=tar --wal-method=fetch
//!   --pgdata=- --checkpoint=fast` (one tar on stdout, with the WAL needed to make
//!   the copy consistent; only clusters with a single tablespace can be written
//!   to stdout) and streams it into [`backup_stream`] as `base.tar`, tagged
//!   `steward`, `kind=pg-base`, `source=<name>`. A failing `pg_basebackup`
//!   never becomes a snapshot ([`DumpReader`]).
//! * [`wal_push`] is PostgreSQL's `archive_command`: one WAL segment (or
//!   `.history` / `.backup` file) becomes one snapshot holding one file named
//!   like the segment, tagged `kind=pg-wal`, `source=<name>`, `wal=<segment>`
//!   and `sha256=<content hash>`. Pushing the same content again succeeds
//!   without writing; different content under a name already archived fails
//!   (the archive never overwrites a different file).
//! * [`wal_fetch`] is PostgreSQL's `restore_command`: the file is written to a
//!   temporary name next to the destination and renamed into place; a file the
//!   archive does not hold is [`WalFetched::NotFound`], not an error
//!   (PostgreSQL asks for files that do not exist, such as the next timeline's
//!   history file).
//! * [`restore_to_time`] picks the latest base backup taken before the target
//!   time ([`choose_base`]), extracts it into an empty data directory (`tar -x`
//!   reading from [`restore_file_to`] through a pipe), makes it 0700, writes
//!   `recovery.signal` and appends `restore_command` (calling `steward repo
//!   wal-fetch`, see [`WalFetchCommand`]), `recovery_target_time` (when given)
//!   and `recovery_target_action = 'promote'` to `postgresql.auto.conf`. The
//!   repository password never goes into the configuration: only the path of a
//!   password file does.
//!
//! Finding a segment lists the repository's snapshots, so pushing and fetching
//! take time proportional to the number of snapshots; forget old WAL snapshots
//! together with the base backups they belong to.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::{DateTime, Utc};
use steward_repo::{backup_stream, restore_file_to, BackupOptions, Id, Repository, Snapshot};

use crate::child::{DumpReader, RestoreSink};
use crate::error::{Error, Result};
use crate::source::{Endpoint, Facts, SourceBackup, SourceKind};

/// The file holding the base backup's tar in a `kind=pg-base` snapshot.
pub const BASE_FILE: &str = "base.tar";

/// The tag of base backup snapshots.
pub const BASE_KIND_TAG: &str = "kind=pg-base";

/// The tag of WAL snapshots.
pub const WAL_KIND_TAG: &str = "kind=pg-wal";

/// The largest WAL file [`wal_push`] accepts (segments are 16 MiB by default and
/// at most 1 GiB).
pub const WAL_MAX_BYTES: u64 = 1 << 30;

/// Options of [`base_backup`].
#[derive(Debug, Clone, Default)]
pub struct BaseBackupOptions {
    /// The `pg_basebackup` to run (default: `pg_basebackup` on `PATH`).
    pub pg_basebackup: Option<PathBuf>,
    /// The database the source is about; only recorded in the facts
    /// (`pg_basebackup` copies the whole cluster).
    pub database: Option<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    pub hostname: Option<String>,
}

/// What [`wal_push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalPushed {
    /// The file was stored as this new snapshot.
    Stored(Id),
    /// The same content was already archived in this snapshot; nothing written.
    AlreadyArchived(Id),
}

/// What [`wal_fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFetched {
    /// The file was written to the destination (this many bytes).
    Restored(u64),
    /// The archive holds no such file.
    NotFound,
}

/// The `restore_command` a restored cluster runs: `<exe> repo wal-fetch --repo
/// <repo> [--password-file <file>] --source <name> %f %p`.
#[derive(Debug, Clone)]
pub struct WalFetchCommand {
    /// The `steward` executable.
    pub exe: PathBuf,
    /// The repository, as `--repo` takes it (an absolute path).
    pub repo: String,
    /// The file holding the repository password. `None` leaves it to
    /// `STEWARD_REPO_PASSWORD_FILE` in the server's environment.
    pub password_file: Option<PathBuf>,
}

/// What [`restore_to_time`] did.
#[derive(Debug, Clone)]
pub struct PitrRestore {
    /// The base backup snapshot extracted.
    pub base_snapshot: Id,
    /// When that base backup was taken.
    pub base_time: DateTime<Utc>,
    /// Bytes of tar extracted.
    pub bytes: u64,
    /// The recovery target, if any.
    pub target_time: Option<DateTime<Utc>>,
    /// The data directory.
    pub target_dir: PathBuf,
}

pub(crate) fn check_source_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 100
        || name
            .chars()
            .any(|c| c == ',' || c == '\'' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidSetting(format!(
            "{name:?} cannot name a backup source: use 1 to 100 characters without spaces, quotes or commas"
        )));
    }
    Ok(())
}

/// Checks that `name` can be a WAL file name (`000000010000000000000001`,
/// `00000002.history`, `...0028.backup`, `.partial`): a plain file name of
/// letters, digits, `.` and `_`.
pub fn check_wal_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
    {
        return Err(Error::InvalidSetting(format!(
            "{name:?} is not a WAL file name: give the file name PostgreSQL passes as %f (like 000000010000000000000001 or 00000002.history)"
        )));
    }
    Ok(())
}

pub(crate) fn tag_value<'a>(sn: &'a Snapshot, key: &str) -> Option<&'a str> {
    sn.tags
        .iter()
        .find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

pub(crate) fn has_tag(sn: &Snapshot, tag: &str) -> bool {
    sn.tags.iter().any(|t| t == tag)
}

pub(crate) fn is_source(sn: &Snapshot, source: &str) -> bool {
    tag_value(sn, "source") == Some(source)
}

/// The newest snapshot of WAL file `segment` of `source`, if archived.
fn find_wal(repo: &Repository, source: &str, segment: &str) -> Result<Option<(Id, Snapshot)>> {
    Ok(repo.list_snapshots()?.into_iter().rev().find(|(_, sn)| {
        has_tag(sn, WAL_KIND_TAG) && is_source(sn, source) && tag_value(sn, "wal") == Some(segment)
    }))
}

/// Takes a base backup of the cluster at `endpoint` with `pg_basebackup` and
/// stores it as `base.tar` in a snapshot of the source called `name`.
pub fn base_backup(
    repo: &Repository,
    endpoint: &Endpoint,
    name: &str,
    opts: &BaseBackupOptions,
) -> Result<SourceBackup> {
    let started = Instant::now();
    check_source_name(name)?;
    if endpoint.host.is_empty() || endpoint.host.starts_with('-') || endpoint.host.contains('\0') {
        return Err(Error::InvalidSetting(format!(
            "PostgreSQL host {:?} is not a host name, IP address or socket directory",
            endpoint.host
        )));
    }
    if endpoint.user.is_empty() || endpoint.user.starts_with('-') || endpoint.user.contains('\0') {
        return Err(Error::InvalidSetting(format!(
            "PostgreSQL user {:?} is not a user name: give a role with the REPLICATION attribute",
            endpoint.user
        )));
    }
    let backup_opts = BackupOptions {
        tags: vec![
            "steward".into(),
            format!("source={name}"),
            BASE_KIND_TAG.into(),
        ],
        hostname: opts.hostname.clone(),
        ..BackupOptions::default()
    };
    let program = opts
        .pg_basebackup
        .clone()
        .unwrap_or_else(|| PathBuf::from("pg_basebackup"));
    let mut cmd = endpoint.pg_command(&program, "steward-pg-basebackup");
    cmd.args([
        "--format=tar",
        "--wal-method=fetch",
        "--pgdata=-",
        "--checkpoint=fast",
    ]);
    let mut reader = DumpReader::spawn(
        &mut cmd,
        endpoint.secret_list(),
        "install the PostgreSQL client tools (postgresql-client) or give the pg_basebackup path",
    )?;
    let target = format!("the cluster at {}", endpoint.server());
    let summary = match backup_stream(repo, BASE_FILE, &mut reader, &backup_opts) {
        Ok(s) => s,
        Err(e) => {
            return Err(match reader.failure() {
                Some(message) => Error::Dump {
                    tool: reader.program_name(),
                    target,
                    message: message.to_string(),
                },
                None => Error::Repo(e),
            })
        }
    };
    let mut facts = Facts::new(SourceKind::Postgres);
    facts.file_name = Some(BASE_FILE.into());
    facts.database = opts.database.clone();
    Ok(SourceBackup {
        snapshot_id: summary.snapshot_id,
        bytes: summary.bytes_read,
        duration: started.elapsed(),
        facts,
    })
}

/// Archives the WAL file at `wal_path` for the source called `source`
/// (PostgreSQL's `archive_command`, `%p`). See the module docs.
pub fn wal_push(repo: &Repository, source: &str, wal_path: &Path) -> Result<WalPushed> {
    check_source_name(source)?;
    let segment = wal_path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| {
            Error::InvalidSetting(format!(
                "{} has no file name: give the WAL file's path (%p)",
                wal_path.display()
            ))
        })?
        .to_string();
    check_wal_name(&segment)?;
    let file = File::open(wal_path).map_err(|e| Error::io("read the WAL file", wal_path, e))?;
    let mut data = Vec::new();
    file.take(WAL_MAX_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("read the WAL file", wal_path, e))?;
    if data.len() as u64 > WAL_MAX_BYTES {
        return Err(Error::InvalidSetting(format!(
            "{} is larger than 1 GiB, so it is not a WAL file: check the path given to wal-push",
            wal_path.display()
        )));
    }
    let hash = Id::hash(&data).to_hex();
    if let Some((id, sn)) = find_wal(repo, source, &segment)? {
        return if tag_value(&sn, "sha256") == Some(hash.as_str()) {
            Ok(WalPushed::AlreadyArchived(id))
        } else {
            Err(Error::InvalidSetting(format!(
                "WAL file {segment} of source {source:?} is already archived (snapshot {}) with different content; refusing to overwrite it: check that no other cluster archives under the same source name",
                id.short()
            )))
        };
    }
    let opts = BackupOptions {
        tags: vec![
            "steward".into(),
            format!("source={source}"),
            WAL_KIND_TAG.into(),
            format!("wal={segment}"),
            format!("sha256={hash}"),
        ],
        ..BackupOptions::default()
    };
    let summary = backup_stream(repo, &segment, std::io::Cursor::new(data), &opts)?;
    Ok(WalPushed::Stored(summary.snapshot_id))
}

/// Restores the archived WAL file `segment` of `source` to `dest`
/// (PostgreSQL's `restore_command`, `%f` and `%p`). See the module docs.
pub fn wal_fetch(
    repo: &Repository,
    source: &str,
    segment: &str,
    dest: &Path,
) -> Result<WalFetched> {
    check_source_name(source)?;
    check_wal_name(segment)?;
    let Some((_, sn)) = find_wal(repo, source, segment)? else {
        return Ok(WalFetched::NotFound);
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".steward-wal-")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("create a temporary file in", &dir, e))?;
    let bytes = restore_file_to(repo, &sn, segment, tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("write", tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| Error::io("move the WAL file into place at", dest, e.error))?;
    Ok(WalFetched::Restored(bytes))
}

/// The latest base backup of `source` taken at or before `target_time` (the
/// latest of all when `None`).
pub fn choose_base(
    repo: &Repository,
    source: &str,
    target_time: Option<DateTime<Utc>>,
) -> Result<(Id, Snapshot)> {
    choose_base_in(&repo.list_snapshots()?, source, target_time)
}

/// [`choose_base`] among `snapshots` (as [`Repository::list_snapshots`] gives them), for
/// a caller that has listed them already.
pub(crate) fn choose_base_in(
    snapshots: &[(Id, Snapshot)],
    source: &str,
    target_time: Option<DateTime<Utc>>,
) -> Result<(Id, Snapshot)> {
    check_source_name(source)?;
    snapshots
        .iter()
        .rev()
        .find(|(_, sn)| {
            has_tag(sn, BASE_KIND_TAG)
                && is_source(sn, source)
                && target_time.is_none_or(|t| sn.time <= t)
        })
        .cloned()
        .ok_or_else(|| {
            Error::InvalidSetting(match target_time {
                Some(t) => format!(
                    "no base backup of source {source:?} was taken before {}: choose a later time or take base backups more often",
                    t.to_rfc3339()
                ),
                None => format!(
                    "source {source:?} has no base backup: take one with `steward repo pg-base-backup` first"
                ),
            })
        })
}

/// Quotes `s` for `sh` (PostgreSQL runs `restore_command` through the shell).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Quotes `s` as a `postgresql.conf` string value.
pub(crate) fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn path_text<'a>(p: &'a Path, what: &str) -> Result<&'a str> {
    p.to_str()
        .filter(|s| !s.contains(['\n', '\r', '\0']))
        .ok_or_else(|| {
            Error::InvalidSetting(format!(
                "the {what} path {} cannot go into postgresql.auto.conf: use a path of printable UTF-8",
                p.display()
            ))
        })
}

impl WalFetchCommand {
    /// The shell command line (with `%f` and `%p` left for PostgreSQL).
    pub fn command_line(&self, source: &str) -> Result<String> {
        check_source_name(source)?;
        let mut parts = vec![
            shell_quote(path_text(&self.exe, "steward executable")?),
            "repo".into(),
            "wal-fetch".into(),
            "--repo".into(),
            shell_quote(path_text(Path::new(&self.repo), "repository")?),
        ];
        if let Some(pw) = &self.password_file {
            parts.push("--password-file".into());
            parts.push(shell_quote(path_text(pw, "password file")?));
        }
        parts.push("--source".into());
        parts.push(shell_quote(source));
        parts.push("%f".into());
        parts.push("%p".into());
        // `%` is PostgreSQL's escape: a literal one is `%%`.
        Ok(parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if i + 2 >= parts.len() {
                    p.clone()
                } else {
                    p.replace('%', "%%")
                }
            })
            .collect::<Vec<_>>()
            .join(" "))
    }
}

/// Extracts the base backup `base` into `target_dir` (missing or empty; made 0700)
/// with `tar -x`, streaming `base.tar` out of the repository. Returns the tar's size.
pub(crate) fn extract_base(repo: &Repository, base: &Snapshot, target_dir: &Path) -> Result<u64> {
    match std::fs::read_dir(target_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidSetting(format!(
                    "{} is not empty: restore into a new or empty directory",
                    target_dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target_dir)
                .map_err(|e| Error::io("create the data directory", target_dir, e))?;
        }
        Err(e) => return Err(Error::io("read the data directory", target_dir, e)),
    }
    std::fs::set_permissions(target_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("restrict the permissions of", target_dir, e))?;

    let extract_error = |message| Error::Extract {
        tool: "tar".into(),
        what: format!("the base backup into {}", target_dir.display()),
        message,
    };
    let mut cmd = Command::new("tar");
    cmd.args(["-x", "-f", "-", "-C"]).arg(target_dir);
    let mut sink = RestoreSink::spawn(&mut cmd, Vec::new(), "install tar")?;
    let bytes = match restore_file_to(repo, base, BASE_FILE, &mut sink) {
        Ok(n) => n,
        // tar's own message (if it stopped first) says more than the broken pipe.
        Err(e) => {
            return Err(match sink.finish() {
                Err(m) => extract_error(m),
                Ok(()) => Error::Repo(e),
            })
        }
    };
    sink.finish().map_err(extract_error)?;
    Ok(bytes)
}

/// Appends `lines` to the data directory's `postgresql.auto.conf` (made if missing)
/// and syncs it.
pub(crate) fn append_auto_conf(target_dir: &Path, lines: &str) -> Result<()> {
    let auto = target_dir.join("postgresql.auto.conf");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .map_err(|e| Error::io("open", &auto, e))?;
    f.write_all(lines.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write", &auto, e))
}

/// `recovery_target_time` (when given) and the promote action, as configuration lines.
pub(crate) fn recovery_target_lines(target_time: Option<DateTime<Utc>>) -> String {
    let mut conf = String::new();
    if let Some(t) = target_time {
        conf.push_str(&format!(
            "recovery_target_time = {}\n",
            conf_quote(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        ));
    }
    conf.push_str("recovery_target_action = 'promote'\n");
    conf
}

/// Prepares `target_dir` (missing or empty) as a data directory that recovers
/// `source` to `target_time` (or to the end of the archive). See the module
/// docs. Start PostgreSQL on it (as the OS user that owns it) to run the
/// recovery; it promotes itself when the target is reached.
pub fn restore_to_time(
    repo: &Repository,
    source: &str,
    target_dir: &Path,
    target_time: Option<DateTime<Utc>>,
    fetch: &WalFetchCommand,
) -> Result<PitrRestore> {
    let restore_command = fetch.command_line(source)?;
    let (base_id, base) = choose_base(repo, source, target_time)?;
    let bytes = extract_base(repo, &base, target_dir)?;

    let signal = target_dir.join("recovery.signal");
    File::create(&signal).map_err(|e| Error::io("create", &signal, e))?;
    let mut conf = format!(
        "\n# Point-in-time recovery set up by steward repo pg-restore from base backup {}\nrestore_command = {}\n",
        base_id.short(),
        conf_quote(&restore_command)
    );
    conf.push_str(&recovery_target_lines(target_time));
    append_auto_conf(target_dir, &conf)?;
    Ok(PitrRestore {
        base_snapshot: base_id,
        base_time: base.time,
        bytes,
        target_time,
        target_dir: target_dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names() {
        for ok in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(check_wal_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", "a,b"] {
            assert!(check_wal_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restore_command_is_quoted() {
        let c = WalFetchCommand {
            exe: "/usr/bin/steward".into(),
            repo: "/srv/my repo/it's".into(),
            password_file: Some("/etc/steward/pw%1".into()),
        };
        let line = c.command_line("main").unwrap();
        assert_eq!(
            line,
            "/usr/bin/steward repo wal-fetch --repo '/srv/my repo/it'\\''s' --password-file /etc/steward/pw%%1 --source main %f %p"
        );
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
        assert!(c.command_line("a b").is_err());
    }
}
