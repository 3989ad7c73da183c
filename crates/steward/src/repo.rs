//! `steward repo ...`: work with a backup repository directly, without a server. The
//! repository is in the restic format (`steward-repo`), so everything here also works with
//! `restic`; these commands are what an operator uses when Steward's server is gone (disaster
//! recovery) and what the backup benchmark times against restic.
//!
//! PostgreSQL point-in-time recovery (`pg-base-backup`, `wal-push`, `wal-fetch`, `pg-restore`)
//! is `steward_backup::pitr`: `wal-push` and `wal-fetch` are made to be PostgreSQL's
//! `archive_command` and `restore_command`.
//!
//! Retention is `forget` (restic's `--keep-*` flags, a plan with reasons per snapshot, then
//! optionally `--prune`), `prune` deletes unreferenced data, and `copy` copies snapshots into
//! another repository (its own password via `--to-password-file`).
//!
//! The password comes from `--password-file` / `STEWARD_REPO_PASSWORD_FILE`, or from
//! `STEWARD_REPO_PASSWORD`; never from argv. `--repo s3:http(s)://host[:port]/bucket/prefix`
//! is an S3 repository (`steward_repo_s3`) whose access key comes from the environment, as with
//! restic: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN` and
//! `AWS_DEFAULT_REGION`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use steward_repo::{
    Backend, BackupOptions, BackupSummary, ForgetOptions, ForgetReport, GroupBy, InitOptions,
    KeepPolicy, LocalBackend, MaxUnused, Progress, PruneOptions, PruneSummary, ReadDataSubset,
    Repository, RestoreOptions, RetentionDuration,
};
use zeroize::Zeroizing;

use crate::cli::{Output, RepoArgs, RepoCommand};
use crate::commands::UsageError;

/// Runs one `steward repo` command. Blocking work runs on a blocking thread.
pub async fn repo(args: RepoArgs, out: Output) -> Result<std::process::ExitCode> {
    tokio::task::spawn_blocking(move || run(args, out))
        .await
        .map_err(|e| anyhow!("the repository command stopped unexpectedly: {e}"))?
}

fn run(args: RepoArgs, out: Output) -> Result<std::process::ExitCode> {
    let backend = backend(args.repo.as_deref().unwrap_or_default())?;
    let password = password(args.password_file.as_deref())?;
    match args.command {
        RepoCommand::Init => {
            let repo = Repository::init(backend, &password, InitOptions::default())?;
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"location": repo.location(), "id": repo.config().id})
                ),
                Output::Human => println!(
                    "created repository {} at {}",
                    repo.config().id,
                    repo.location()
                ),
            }
        }
        RepoCommand::Backup {
            paths,
            exclude,
            tag,
            stdin_filename,
            host,
            compression,
        } => {
            let options = steward_repo::RepoOptions {
                compression_level: compression_level(&compression)?,
                ..steward_repo::RepoOptions::default()
            };
            let repo = Repository::open_with(backend, &password, options)?;
            let mut opts = BackupOptions {
                excludes: exclude,
                tags: tag,
                hostname: host,
                ..BackupOptions::default()
            };
            let summary = match stdin_filename {
                Some(name) => {
                    if !paths.is_empty() {
                        return Err(UsageError(
                            "give either paths or --stdin-filename, not both".into(),
                        )
                        .into());
                    }
                    let bar = Bar::new("backup", None);
                    opts.progress = Some(bar.callback());
                    let s =
                        steward_repo::backup_stream(&repo, &name, std::io::stdin().lock(), &opts)?;
                    bar.finish();
                    s
                }
                None => {
                    if paths.is_empty() {
                        return Err(UsageError(
                            "nothing to back up: give one or more paths, or --stdin-filename NAME to read stdin".into(),
                        )
                        .into());
                    }
                    // The total (for the bar's ETA) costs a walk of the tree before the
                    // backup walks it again: only worth it when a bar is drawn.
                    let total = std::io::stderr().is_terminal().then(|| total_size(&paths));
                    let bar = Bar::new("backup", total);
                    opts.progress = Some(bar.callback());
                    let s = steward_repo::backup(&repo, &paths, &opts)?;
                    bar.finish();
                    s
                }
            };
            print_backup(&summary, out);
        }
        RepoCommand::Snapshots => {
            let repo = Repository::open(backend, &password)?;
            let mut list = repo.list_snapshots()?;
            list.sort_by_key(|(_, s)| s.time);
            match out {
                Output::Json => {
                    let rows: Vec<_> = list
                        .iter()
                        .map(|(id, s)| {
                            json!({"id": id, "short_id": id.short(), "time": s.time, "hostname": s.hostname,
                                   "paths": s.paths, "tags": s.tags, "tree": s.tree, "parent": s.parent})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Output::Human => {
                    println!(
                        "{:<10} {:<20} {:<16} {:<24} PATHS",
                        "ID", "TIME", "HOST", "TAGS"
                    );
                    for (id, s) in &list {
                        println!(
                            "{:<10} {:<20} {:<16} {:<24} {}",
                            id.short(),
                            s.time.format("%Y-%m-%d %H:%M:%S"),
                            s.hostname,
                            s.tags.join(","),
                            s.paths.join(" ")
                        );
                    }
                    println!("{} snapshots", list.len());
                }
            }
        }
        RepoCommand::Restore {
            snapshot,
            target,
            include,
        } => {
            let repo = Repository::open(backend, &password)?;
            let (id, sn) = repo.load_snapshot(&snapshot)?;
            let bar = Bar::new("restore", None);
            let opts = RestoreOptions {
                sub_path: include,
                progress: Some(bar.callback()),
                ..RestoreOptions::default()
            };
            let s = steward_repo::restore(&repo, &sn, &target, &opts)?;
            bar.finish();
            let secs = s.duration.as_secs_f64();
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"snapshot": id, "target": target, "files": s.files, "dirs": s.dirs,
                           "symlinks": s.symlinks, "bytes": s.bytes_written, "packs_read": s.packs_read,
                           "seconds": secs, "warnings": s.warnings})
                ),
                Output::Human => {
                    println!(
                        "restored snapshot {} to {}: {} files, {} dirs, {} in {:.2} s ({}/s)",
                        id.short(),
                        target.display(),
                        s.files,
                        s.dirs,
                        human_bytes(s.bytes_written),
                        secs,
                        human_bytes((s.bytes_written as f64 / secs.max(1e-6)) as u64)
                    );
                    for w in &s.warnings {
                        eprintln!("warning: {w}");
                    }
                }
            }
        }
        RepoCommand::Dump { snapshot, path } => {
            let repo = Repository::open(backend, &password)?;
            let (_, sn) = repo.load_snapshot(&snapshot)?;
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            steward_repo::restore_file_to(&repo, &sn, &path, &mut w)?;
            w.flush().context("writing to stdout")?;
        }
        RepoCommand::Check {
            read_data,
            read_data_subset,
        } => {
            let repo = Repository::open(backend, &password)?;
            let mut report = steward_repo::check(&repo)?;
            let subset = match (read_data, read_data_subset) {
                (_, Some(s)) => Some(ReadDataSubset::parse(&s)?),
                (true, None) => Some(ReadDataSubset::All),
                (false, None) => None,
            };
            if let Some(subset) = subset {
                let data = steward_repo::read_data(&repo, subset)?;
                report.problems.extend(data.problems);
                report.warnings.extend(data.warnings);
                report.blobs_verified += data.blobs_verified;
            }
            let ok = report.is_ok();
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"ok": ok, "snapshots": report.snapshots_checked, "trees": report.trees_checked,
                           "packs": report.packs_checked, "blobs_verified": report.blobs_verified,
                           "damaged_packs": report.damaged_packs(),
                           "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                           "warnings": report.warnings})
                ),
                Output::Human => {
                    for w in &report.warnings {
                        eprintln!("warning: {w}");
                    }
                    for p in &report.problems {
                        println!("problem: {p}");
                    }
                    println!(
                        "checked {} snapshots, {} trees, {} packs; {} blobs read and verified: {}",
                        report.snapshots_checked,
                        report.trees_checked,
                        report.packs_checked,
                        report.blobs_verified,
                        if ok {
                            "no errors".to_string()
                        } else {
                            format!("{} problems", report.problems.len())
                        }
                    );
                }
            }
            if !ok {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        RepoCommand::Forget {
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            keep_tag,
            group_by,
            dry_run,
            prune,
            max_unused,
        } => {
            let keep_within = match keep_within.as_deref() {
                Some(d) => Some(d.parse::<RetentionDuration>().map_err(|e| {
                    UsageError(format!(
                        "--keep-within: {}",
                        e.to_string().trim_start_matches("invalid argument: ")
                    ))
                })?),
                None => None,
            };
            let policy = KeepPolicy {
                keep_last,
                keep_hourly,
                keep_daily,
                keep_weekly,
                keep_monthly,
                keep_yearly,
                keep_within,
                keep_tags: keep_tag
                    .iter()
                    .map(|t| {
                        t.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .collect(),
                ..KeepPolicy::default()
            };
            let max_unused = parse_max_unused(max_unused.as_deref())?;
            let opts = ForgetOptions {
                policy,
                group_by: parse_group_by(&group_by)?,
                dry_run,
                ..ForgetOptions::default()
            };
            let repo = Repository::open(backend, &password)?;
            let report = steward_repo::forget(&repo, &opts, chrono::Utc::now())?;
            let pruned = if prune {
                Some(steward_repo::prune(
                    &repo,
                    &PruneOptions {
                        dry_run,
                        max_unused,
                        ..PruneOptions::default()
                    },
                )?)
            } else {
                None
            };
            print_forget(&report, pruned.as_ref(), out)?;
        }
        RepoCommand::Prune {
            dry_run,
            max_unused,
        } => {
            let repo = Repository::open(backend, &password)?;
            let opts = PruneOptions {
                dry_run,
                max_unused: parse_max_unused(max_unused.as_deref())?,
                ..PruneOptions::default()
            };
            let s = steward_repo::prune(&repo, &opts)?;
            match out {
                Output::Json => println!("{}", prune_json(&s)),
                Output::Human => print_prune(&s),
            }
        }
        RepoCommand::Copy {
            to,
            to_password_file,
            snapshots,
        } => {
            let src = Repository::open(backend, &password)?;
            let dst_password = match to_password_file.as_deref() {
                Some(f) => self::password(Some(f))?,
                None => password.clone(),
            };
            let dst = Repository::open(backend_for(&to, "--to")?, &dst_password)
                .context("cannot open the destination repository given with --to")?;
            let ids = if snapshots.is_empty() {
                let mut list = src.list_snapshots()?;
                list.sort_by_key(|(_, s)| s.time);
                list.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
            } else {
                snapshots
                    .iter()
                    .map(|s| src.load_snapshot(s).map(|(id, _)| id))
                    .collect::<steward_repo::Result<Vec<_>>>()?
            };
            let s = steward_repo::copy_snapshots(&src, &dst, &ids)?;
            let secs = s.duration.as_secs_f64();
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"destination": dst.location(), "copied": s.copied, "skipped": s.skipped,
                           "snapshots": s.snapshots.iter().map(|c| json!({"source": c.source,
                               "destination": c.destination, "already_copied": c.already_copied})).collect::<Vec<_>>(),
                           "data_blobs_copied": s.data_blobs_copied, "tree_blobs_copied": s.tree_blobs_copied,
                           "bytes_copied": s.bytes_copied, "bytes_added": s.bytes_added,
                           "packs_written": s.packs_written, "seconds": secs})
                ),
                Output::Human => {
                    for c in &s.snapshots {
                        if c.already_copied {
                            println!(
                                "snapshot {} skipped: already in the destination as {}",
                                c.source.short(),
                                c.destination.short()
                            );
                        } else {
                            println!(
                                "snapshot {} copied as {}",
                                c.source.short(),
                                c.destination.short()
                            );
                        }
                    }
                    println!(
                        "{} snapshots copied, {} skipped; {} copied, {} added to {} in {:.2} s",
                        s.copied,
                        s.skipped,
                        human_bytes(s.bytes_copied),
                        human_bytes(s.bytes_added),
                        dst.location(),
                        secs
                    );
                }
            }
        }
        RepoCommand::PgBaseBackup {
            source,
            host,
            port,
            user,
            database,
            pg_basebackup,
        } => {
            let repo = Repository::open(backend, &password)?;
            let endpoint = steward_backup::Endpoint::new(&host, port, &user);
            let opts = steward_backup::BaseBackupOptions {
                pg_basebackup,
                database,
                hostname: None,
            };
            let done = steward_backup::base_backup(&repo, &endpoint, &source, &opts)
                .map_err(backup_err)?;
            let secs = done.duration.as_secs_f64();
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"snapshot": done.snapshot_id, "source": source, "bytes": done.bytes,
                           "seconds": secs})
                ),
                Output::Human => println!(
                    "base backup of {source} saved as snapshot {}: {} in {:.2} s",
                    done.snapshot_id.short(),
                    human_bytes(done.bytes),
                    secs
                ),
            }
        }
        RepoCommand::WalPush { source, path } => {
            let repo = Repository::open(backend, &password)?;
            let pushed = steward_backup::wal_push(&repo, &source, &path).map_err(backup_err)?;
            if let Output::Json = out {
                let (id, stored) = match pushed {
                    steward_backup::WalPushed::Stored(id) => (id, true),
                    steward_backup::WalPushed::AlreadyArchived(id) => (id, false),
                };
                println!("{}", json!({"snapshot": id, "stored": stored}));
            }
        }
        RepoCommand::WalFetch {
            source,
            segment,
            dest,
        } => {
            let repo = Repository::open(backend, &password)?;
            match steward_backup::wal_fetch(&repo, &source, &segment, &dest).map_err(backup_err)? {
                steward_backup::WalFetched::Restored(_) => {}
                steward_backup::WalFetched::NotFound => {
                    eprintln!("{segment}: not in the archive of source {source}");
                    return Ok(std::process::ExitCode::from(1));
                }
            }
        }
        RepoCommand::PgRestore {
            source,
            target_dir,
            time: target_time,
            restore_password_file,
        } => {
            let absolute = |p: &Path| {
                std::path::absolute(p)
                    .with_context(|| format!("cannot resolve the path {}", p.display()))
            };
            let repo_arg = args.repo.as_deref().unwrap_or_default();
            let repo_path = if repo_arg.starts_with("s3:") {
                repo_arg.to_string()
            } else {
                absolute(Path::new(repo_arg))?
                    .to_string_lossy()
                    .into_owned()
            };
            let password_file = match restore_password_file.or(args.password_file) {
                Some(p) => Some(absolute(&p)?),
                None => None,
            };
            let fetch = steward_backup::WalFetchCommand {
                exe: std::env::current_exe()
                    .context("cannot find the path of the steward executable")?,
                repo: repo_path,
                password_file,
            };
            let repo = Repository::open(backend, &password)?;
            let r =
                steward_backup::restore_to_time(&repo, &source, &target_dir, target_time, &fetch)
                    .map_err(backup_err)?;
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"base_snapshot": r.base_snapshot, "base_time": r.base_time,
                           "bytes": r.bytes, "target_time": r.target_time, "target_dir": r.target_dir})
                ),
                Output::Human => println!(
                    "extracted base backup {} ({}) into {}; start PostgreSQL on it to recover {}",
                    r.base_snapshot.short(),
                    r.base_time.format("%Y-%m-%d %H:%M:%S"),
                    r.target_dir.display(),
                    match r.target_time {
                        Some(t) => format!("to {}", t.to_rfc3339()),
                        None => "to the end of the archive".into(),
                    }
                ),
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A backup-library error, with a repository error kept as itself (for its exit code).
fn backup_err(e: steward_backup::Error) -> anyhow::Error {
    match e {
        steward_backup::Error::Repo(r) => r.into(),
        steward_backup::Error::InvalidSetting(m) => UsageError(m).into(),
        other => other.into(),
    }
}

/// The backend a `--repo` value names: a local directory or an `s3:` URL.
fn backend(repo: &str) -> Result<Arc<dyn Backend>> {
    if repo.is_empty() {
        return Err(
            UsageError("no repository given: pass --repo DIR or set STEWARD_REPO".into()).into(),
        );
    }
    backend_for(repo, "--repo")
}

/// The backend for a repository location given with `flag`: an `s3:` URL (credentials from
/// the environment, as restic) or a local directory.
fn backend_for(location: &str, flag: &str) -> Result<Arc<dyn Backend>> {
    if location.is_empty() {
        return Err(UsageError(format!("{flag} is empty: give a directory or an s3: URL")).into());
    }
    if !location.starts_with("s3:") {
        return Ok(Arc::new(LocalBackend::new(location)));
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let required = |name: &str| {
        var(name).ok_or_else(|| {
            UsageError(format!(
                "{name} is not set: the S3 repository given with {flag} takes its access key from the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials); set them and run again"
            ))
        })
    };
    let id = required("AWS_ACCESS_KEY_ID")?;
    let secret = Zeroizing::new(required("AWS_SECRET_ACCESS_KEY")?);
    let mut creds = steward_repo_s3::S3Credentials::new(id, secret.as_str());
    if let Some(token) = var("AWS_SESSION_TOKEN") {
        creds = creds.with_session_token(token);
    }
    let bad = |e: steward_repo_s3::ConfigError| UsageError(format!("{flag}: {e}"));
    let mut config = steward_repo_s3::S3Config::from_url(location, None, creds).map_err(bad)?;
    if let Some(region) = var("AWS_DEFAULT_REGION") {
        config.region = region.trim().to_string();
    }
    Ok(Arc::new(
        steward_repo_s3::S3Backend::new(config).map_err(bad)?,
    ))
}

/// `--group-by host,paths,tags` (any subset; empty: one group).
fn parse_group_by(s: &str) -> Result<GroupBy> {
    let mut by = GroupBy {
        host: false,
        paths: false,
        tags: false,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "host" => by.host = true,
            "paths" => by.paths = true,
            "tags" => by.tags = true,
            other => {
                return Err(UsageError(format!(
                    "--group-by {s:?}: unknown field {other:?}; use any of host, paths, tags separated by commas (or \"\" for one group)"
                ))
                .into())
            }
        }
    }
    Ok(by)
}

/// `--max-unused 5%|500M|unlimited` (default 5%).
fn parse_max_unused(s: Option<&str>) -> Result<MaxUnused> {
    match s {
        None => Ok(MaxUnused::default()),
        Some(s) => s
            .parse()
            .map_err(|e: steward_repo::Error| UsageError(format!("--max-unused: {e}")).into()),
    }
}

fn print_forget(r: &ForgetReport, pruned: Option<&PruneSummary>, out: Output) -> Result<()> {
    let removed = r.plan.remove_ids().len();
    match out {
        Output::Json => {
            let groups: Vec<_> = r
                .plan
                .groups
                .iter()
                .map(|g| {
                    json!({"key": {"hostname": g.key.hostname, "paths": g.key.paths, "tags": g.key.tags},
                           "snapshots": g.snapshots.iter().map(|d| json!({
                               "id": d.id, "short_id": d.id.short(), "time": d.time,
                               "action": if d.keep { "keep" } else { "remove" },
                               "reasons": d.reasons.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                           })).collect::<Vec<_>>()})
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "dry_run": r.dry_run, "policy_empty": r.plan.policy_empty, "groups": groups,
                    "removed": r.removed, "prune": pruned.map(prune_json),
                }))?
            );
        }
        Output::Human => {
            if r.plan.policy_empty {
                println!("no --keep-* rule given: the policy is empty, so every snapshot is kept and nothing is removed");
            }
            for g in &r.plan.groups {
                println!("group {}:", g.key);
                println!("  {:<10} {:<20} {:<8} REASONS", "ID", "TIME", "ACTION");
                for d in &g.snapshots {
                    let line = format!(
                        "  {:<10} {:<20} {:<8} {}",
                        d.id.short(),
                        d.time.format("%Y-%m-%d %H:%M:%S"),
                        if d.keep { "keep" } else { "remove" },
                        d.reasons
                            .iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    println!("{}", line.trim_end());
                }
            }
            let kept = r.plan.keep_ids().len();
            if r.dry_run {
                println!("dry run: would keep {kept} and remove {removed} snapshots");
            } else {
                println!("kept {kept} snapshots, removed {}", r.removed.len());
            }
            if let Some(s) = pruned {
                print_prune(s);
            }
        }
    }
    Ok(())
}

fn prune_json(s: &PruneSummary) -> serde_json::Value {
    json!({"dry_run": s.dry_run, "snapshots": s.snapshots, "blobs_used": s.blobs_used,
           "blobs_removed": s.blobs_removed, "blobs_kept": s.blobs_kept,
           "unused_blobs_kept": s.unused_blobs_kept, "packs_before": s.packs_before,
           "packs_deleted": s.packs_deleted, "packs_repacked": s.packs_repacked,
           "packs_written": s.packs_written, "unreferenced_packs_deleted": s.unreferenced_packs_deleted,
           "packs_after": s.packs_after, "index_files_deleted": s.index_files_deleted,
           "index_files_written": s.index_files_written, "bytes_before": s.bytes_before,
           "bytes_after": s.bytes_after, "bytes_freed": s.bytes_freed,
           "bytes_unused_after": s.bytes_unused_after, "seconds": s.duration.as_secs_f64()})
}

fn print_prune(s: &PruneSummary) {
    let verb = if s.dry_run { "would" } else { "did" };
    println!(
        "prune{}: {} snapshots, {} blobs in use, {} unused blobs removed, {} unused kept",
        if s.dry_run {
            " (dry run, nothing changed)"
        } else {
            ""
        },
        s.snapshots,
        s.blobs_used,
        s.blobs_removed,
        s.unused_blobs_kept
    );
    println!(
        "  packs: {} before; {verb} delete {} ({} unreferenced), repack {}, write {}; {} after",
        s.packs_before,
        s.packs_deleted,
        s.unreferenced_packs_deleted,
        s.packs_repacked,
        s.packs_written,
        s.packs_after
    );
    println!(
        "  size: {} before, {} after, {} freed, {} unused remaining, in {:.2} s",
        human_bytes(s.bytes_before),
        human_bytes(s.bytes_after),
        human_bytes(s.bytes_freed),
        human_bytes(s.bytes_unused_after),
        s.duration.as_secs_f64()
    );
}

/// The zstd level `--compression` names: auto = the library's default (fast), max = 19, off = 0.
fn compression_level(v: &str) -> Result<i32> {
    match v {
        "auto" => Ok(steward_repo::RepoOptions::default().compression_level),
        "max" => Ok(19),
        "off" => Ok(0),
        n => match n.parse::<i32>() {
            Ok(l) if (-7..=22).contains(&l) && l != 0 => Ok(l),
            _ => Err(UsageError(format!(
                "--compression {v:?}: use auto, max, off, or a zstd level from -7 to 22"
            ))
            .into()),
        },
    }
}

/// The repository password: from the file, or STEWARD_REPO_PASSWORD; trailing newline dropped.
fn password(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let raw = match file {
        Some(f) => Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
            UsageError(format!(
                "cannot read the password file {}: {e}",
                f.display()
            ))
        })?),
        None => match std::env::var("STEWARD_REPO_PASSWORD") {
            Ok(p) => Zeroizing::new(p),
            Err(_) => {
                return Err(UsageError(
                    "no repository password: pass --password-file FILE (or set STEWARD_REPO_PASSWORD_FILE or STEWARD_REPO_PASSWORD)".into(),
                )
                .into())
            }
        },
    };
    let trimmed = Zeroizing::new(raw.trim_end_matches(['\r', '\n']).to_string());
    if trimmed.is_empty() {
        return Err(UsageError("the repository password is empty".into()).into());
    }
    Ok(trimmed)
}

fn print_backup(s: &BackupSummary, out: Output) {
    let secs = s.duration.as_secs_f64();
    match out {
        Output::Json => println!(
            "{}",
            json!({"snapshot": s.snapshot_id, "parent": s.parent, "files_new": s.files_new,
                   "files_changed": s.files_changed, "files_unchanged": s.files_unchanged, "dirs": s.dirs,
                   "bytes_read": s.bytes_read, "total_bytes": s.total_bytes, "bytes_added": s.bytes_added,
                   "data_blobs_added": s.data_blobs_added, "packs_written": s.packs_written,
                   "seconds": secs, "warnings": s.warnings})
        ),
        Output::Human => {
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "snapshot {} saved: {} new, {} changed, {} unchanged files; {} read, {} added to the repository in {:.2} s ({}/s)",
                s.snapshot_id.short(),
                s.files_new,
                s.files_changed,
                s.files_unchanged,
                human_bytes(s.bytes_read),
                human_bytes(s.bytes_added),
                secs,
                human_bytes((s.bytes_read as f64 / secs.max(1e-6)) as u64)
            );
        }
    }
}

/// Bytes under `paths` (for the progress bar's total and ETA); unreadable entries count 0.
fn total_size(paths: &[PathBuf]) -> u64 {
    fn walk(p: &Path) -> u64 {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        }
    }
    paths.iter().map(|p| walk(p)).sum()
}

/// The bar of a run whose total is known: bytes, rate and ETA.
fn bar_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Progress on stderr: a bar with throughput and ETA on a terminal, a plain line every 10 s
/// otherwise (logs stay readable).
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    state: Arc<Plain>,
}

struct Plain {
    what: &'static str,
    started: Instant,
    last: AtomicU64,
    total: Option<u64>,
}

impl Bar {
    fn new(what: &'static str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = match total {
                Some(t) => indicatif::ProgressBar::new(t).with_style(bar_style()),
                None => indicatif::ProgressBar::new_spinner().with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {spinner} {bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                ),
            };
            b.set_message(what);
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Bar {
            bar,
            state: Arc::new(Plain {
                what,
                started: Instant::now(),
                last: AtomicU64::new(0),
                total,
            }),
        }
    }

    fn callback(&self) -> steward_repo::ProgressFn {
        let bar = self.bar.clone();
        let st = self.state.clone();
        Arc::new(move |p: &Progress| match &bar {
            Some(b) => {
                // A restore learns its total once it has planned: the spinner becomes a bar.
                if let Some(t) = p.bytes_total.filter(|&t| b.length() != Some(t)) {
                    b.set_length(t);
                    b.set_style(bar_style());
                }
                b.set_position(p.bytes_done)
            }
            None => {
                let secs = st.started.elapsed().as_secs();
                let last = st.last.load(Ordering::Relaxed);
                if secs >= last + 10
                    && st
                        .last
                        .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    let rate = p.bytes_done as f64 / st.started.elapsed().as_secs_f64().max(1e-6);
                    let of = st
                        .total
                        .or(p.bytes_total)
                        .map(|t| format!(" of {}", human_bytes(t)))
                        .unwrap_or_default();
                    eprintln!(
                        "{}: {} files, {}{} done, {}/s",
                        st.what,
                        p.files_done,
                        human_bytes(p.bytes_done),
                        of,
                        human_bytes(rate as u64)
                    );
                }
            }
        })
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
