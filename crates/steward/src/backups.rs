//! `steward backup ...`, `steward drill ...`, `steward dr report`: the server's backup
//! service from the command line. Runs wait for their result; a run that outlasts one
//! request (202) is followed by polling its history, with a spinner on a terminal and a
//! line every 10 s otherwise. Every listing takes `-o json`. Exit code 1 when a run fails
//! (or, for `dr report`, when a target is missed).

use std::{
    io::IsTerminal,
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    cli::{BackupCommand, DrCommand, DrillCommand, Output},
    client::Client,
    commands::print_json,
    repo::human_bytes,
};
use steward_dr::report::human;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn secs(v: &Value) -> String {
    v.as_f64().map_or("-".into(), human)
}

fn bytes(v: &Value) -> String {
    v.as_u64().map_or("-".into(), human_bytes)
}

fn short(v: &Value) -> String {
    v.as_str()
        .map_or("-".into(), |s| s.chars().take(8).collect())
}

/// One line for a run.
fn run_line(r: &Value) -> String {
    let state = match r["ok"].as_bool() {
        Some(true) => "ok",
        Some(false) => "FAILED",
        None => "running",
    };
    let mut line = format!(
        "{:<8} {:<7} {:<16} {} {:<7} snapshot {} {} in {}",
        r["op"].as_str().unwrap_or("-"),
        state,
        r["target"].as_str().unwrap_or("-"),
        s(&r["started_at"]),
        r["trigger"].as_str().unwrap_or("-"),
        short(&r["snapshot"]),
        bytes(&r["bytes"]),
        secs(&r["duration_s"]),
    );
    if let Some(x) = r["restore_s"].as_f64() {
        line.push_str(&format!(", restore {}", human(x)));
    }
    if let Some(e) = r["error"].as_str() {
        line.push_str(": ");
        line.push_str(e);
    }
    line
}

/// Posts a job and waits for its run (following it when it outlasts the request).
async fn run_job(c: &Client, path: &str, body: Value, what: &str) -> anyhow::Result<Value> {
    let v = c.call("POST", path, Some(body)).await?;
    if !v["data"]["run"].is_null() {
        return Ok(v["data"]["run"].clone());
    }
    let running = v["data"]["running"].clone();
    let target = running["target"].as_str().unwrap_or_default().to_string();
    let op = running["op"].as_str().unwrap_or_default().to_string();
    let since = time_of(&running["since"]);
    let started = Instant::now();
    let spinner = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.set_message(format!("{what} of {target} running"));
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    // Plain lines (not a terminal): the first poll, then every 10 s.
    let mut last_line: Option<u64> = None;
    let path = format!(
        "/v1/sys/backup/runs?target={}&op={}&limit=5",
        urlencode(&target),
        urlencode(&op)
    );
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let v = c.call("GET", &path, None).await?;
        let mine: Vec<Value> = v["data"]["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| time_of(&r["started_at"]) >= since)
            .cloned()
            .collect();
        if mine.is_empty() && started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "the server accepted the {what} of {target} but has not recorded it after a minute; see `steward backup list {target}` and the server's log"
            );
        }
        if let Some(run) = mine.iter().find(|r| !r["ok"].is_null()) {
            if let Some(b) = &spinner {
                b.finish_and_clear();
            }
            return Ok(run.clone());
        }
        // A running backup reports the bytes it has read (and, from the last backup, the
        // bytes to expect): show them, the rate and the time left.
        let el = started.elapsed().as_secs_f64();
        let read = mine.iter().find_map(|r| r["bytes"].as_u64());
        let expected = mine
            .iter()
            .find_map(|r| r["detail"]["expected_bytes"].as_u64());
        let verb = if op == "restore" { "written" } else { "read" };
        let status = match read {
            Some(n) => progress_text(n, expected, el, verb),
            None => "running".to_string(),
        };
        match &spinner {
            Some(b) => {
                // Against the last backup's size, a bar; otherwise the spinner goes on.
                if let (Some(n), Some(e)) = (read, expected.filter(|&e| e > 0)) {
                    if b.length().is_none() {
                        b.set_style(
                            indicatif::ProgressStyle::with_template("{bar:30} {msg} {elapsed}")
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                        );
                    }
                    b.set_length(e.max(n));
                    b.set_position(n);
                }
                b.set_message(format!("{what} of {target}: {status}"))
            }
            None => {
                if last_line.is_none_or(|l| el as u64 >= l + 10) {
                    last_line = Some(el as u64);
                    eprintln!("{what} of {target}: {status} ({} s)", el as u64);
                }
            }
        }
    }
}

/// `1.2 GiB of ~2.0 GiB (60%), 150 MiB/s, about 6 s left`: the bytes read (a backup) or
/// written (a restore, `verb`), and against the expected total (a backup: the last
/// backup's size; a restore: its own) the share and the time left at the rate so far
/// (none once past it: this backup is larger than the last).
fn progress_text(read: u64, expected: Option<u64>, elapsed_s: f64, verb: &str) -> String {
    let rate = read as f64 / elapsed_s.max(0.001);
    match expected.filter(|&e| e > 0 && read < e) {
        Some(e) if rate > 0.0 => format!(
            "{} of ~{} ({}%), {}/s, about {} left",
            human_bytes(read),
            human_bytes(e),
            read * 100 / e,
            human_bytes(rate as u64),
            human((e - read) as f64 / rate)
        ),
        _ => format!(
            "{} {verb}, {}/s",
            human_bytes(read),
            human_bytes(rate as u64)
        ),
    }
}

/// A time the server sent (RFC 3339), or the earliest time when absent.
fn time_of(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// `s` escaped for a query string.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn print_run(run: &Value, out: Output) -> ExitCode {
    match out {
        Output::Json => print_json(run),
        Output::Human => {
            println!("{}", run_line(run));
            if let Some(checks) = run["drill"]["checks"].as_array() {
                for ch in checks {
                    let ok = ch["passed"].as_bool().unwrap_or(false);
                    println!(
                        "  {} {}: {}",
                        if ok { "ok  " } else { "FAIL" },
                        s(&ch["name"]),
                        s(&ch["detail"])
                    );
                }
            }
            if let Some(copies) = run["detail"]["copies"].as_array() {
                for c in copies {
                    println!(
                        "  copy to {}: {}",
                        s(&c["repository"]),
                        c["error"].as_str().unwrap_or("ok")
                    );
                }
            }
        }
    }
    if run["ok"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_runs(v: &Value, out: Output, empty: &str) {
    let runs = &v["data"]["runs"];
    match out {
        Output::Json => print_json(runs),
        Output::Human => {
            let list = runs.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("{empty}");
            }
            for r in list {
                println!("{}", run_line(&r));
            }
        }
    }
}

/// `steward backup ...`.
pub async fn backup(c: &Client, cmd: BackupCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        BackupCommand::Sources => {
            let v = c.call("GET", "/v1/sys/backup/sources", None).await?;
            let list = &v["data"]["sources"];
            match out {
                Output::Json => print_json(list),
                Output::Human => {
                    let items = list.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!(
                            "no backup sources configured (add [[backup.sources]] to the config)"
                        );
                    }
                    for src in items {
                        let last = if src["last_backup"].is_null() {
                            "never backed up".to_string()
                        } else {
                            run_line(&src["last_backup"])
                        };
                        println!(
                            "{:<16} {:<10} repo {:<10} schedule {:<14} next {}  | {}",
                            s(&src["name"]),
                            s(&src["type"]),
                            s(&src["repository"]),
                            src["schedule"].as_str().unwrap_or("manual"),
                            s(&src["next_backup"]),
                            last
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Run { source } => {
            let run = run_job(
                c,
                "/v1/sys/backup/run",
                json!({ "source": source }),
                "backup",
            )
            .await?;
            Ok(print_run(&run, out))
        }
        BackupCommand::List { target, op, limit } => {
            let mut path = format!("/v1/sys/backup/runs?limit={limit}");
            if let Some(t) = &target {
                path.push_str(&format!("&target={}", urlencode(t)));
            }
            if let Some(o) = &op {
                path.push_str(&format!("&op={}", urlencode(o)));
            }
            let v = c.call("GET", &path, None).await?;
            print_runs(&v, out, "no runs yet");
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Snapshots { source } => {
            let v = c
                .call(
                    "GET",
                    &format!("/v1/sys/backup/snapshots?source={}", urlencode(&source)),
                    None,
                )
                .await?;
            let list = &v["data"]["snapshots"];
            match out {
                Output::Json => print_json(list),
                Output::Human => {
                    let items = list.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("{source} has no snapshots yet");
                    }
                    for sn in items {
                        let tags: Vec<&str> = sn["tags"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        println!(
                            "{}  {}  {}",
                            s(&sn["short_id"]),
                            s(&sn["time"]),
                            tags.join(",")
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Check {
            repository,
            read_data,
        } => {
            let run = run_job(
                c,
                "/v1/sys/backup/check",
                json!({ "repository": repository, "read_data": read_data }),
                "check",
            )
            .await?;
            if out == Output::Human {
                let d = &run["detail"];
                println!(
                    "checked {} snapshots, {} packs; read {} packs ({}), {} blobs verified",
                    d["snapshots_checked"],
                    d["packs_checked"],
                    d["packs_read"],
                    s(&d["subset"]),
                    d["blobs_verified"]
                );
            }
            Ok(print_run(&run, out))
        }
        BackupCommand::Prune {
            repository,
            dry_run,
        } => {
            let run = run_job(
                c,
                "/v1/sys/backup/prune",
                json!({ "repository": repository, "dry_run": dry_run }),
                "prune",
            )
            .await?;
            if out == Output::Human {
                let d = &run["detail"];
                println!(
                    "{}packs: {} before, {} deleted, {} repacked, {} after",
                    if dry_run { "(dry run) " } else { "" },
                    d["packs_before"],
                    d["packs_deleted"],
                    d["packs_repacked"],
                    d["packs_after"]
                );
            }
            Ok(print_run(&run, out))
        }
        BackupCommand::Restore {
            source,
            snapshot,
            target_dir,
            database,
        } => {
            if target_dir.is_none() && database.is_none() {
                anyhow::bail!(crate::commands::UsageError(
                    "give --target-dir DIR (restore the files) or --database NAME (restore a database source into a new database)".into()
                ));
            }
            let target_dir = match target_dir {
                Some(d) if d.is_relative() => Some(std::env::current_dir()?.join(d)),
                other => other,
            };
            let run = run_job(
                c,
                "/v1/sys/backup/restore",
                json!({ "source": source, "snapshot": snapshot, "target_dir": target_dir, "database": database }),
                "restore",
            )
            .await?;
            Ok(print_run(&run, out))
        }
        BackupCommand::Copy {
            source,
            to,
            snapshot,
        } => {
            let run = run_job(
                c,
                "/v1/sys/backup/copy",
                json!({ "source": source, "to": to, "snapshot": snapshot }),
                "copy",
            )
            .await?;
            Ok(print_run(&run, out))
        }
    }
}

/// `steward drill ...`.
pub async fn drill(c: &Client, cmd: DrillCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        DrillCommand::Run {
            source,
            snapshot,
            to_time,
        } => {
            let run = run_job(
                c,
                "/v1/sys/drill/run",
                json!({ "source": source, "snapshot": snapshot, "to_time": to_time }),
                "drill",
            )
            .await?;
            Ok(print_run(&run, out))
        }
        DrillCommand::List { source, limit } => {
            let mut path = format!("/v1/sys/backup/runs?op=drill&limit={limit}");
            if let Some(t) = &source {
                path.push_str(&format!("&target={}", urlencode(t)));
            }
            let v = c.call("GET", &path, None).await?;
            print_runs(&v, out, "no drills yet");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn target_text(value: &Value, target: &Value, met: &Value) -> String {
    let v = secs(value);
    match (target.as_f64(), met.as_bool()) {
        (Some(t), Some(true)) => format!("{v} (target {}, met)", human(t)),
        (Some(t), Some(false)) => format!("{v} (target {}, MISSED)", human(t)),
        (Some(t), None) => format!("{v} (target {})", human(t)),
        (None, _) => format!("{v} (no target)"),
    }
}

/// `steward dr report`.
pub async fn dr(c: &Client, cmd: DrCommand, out: Output) -> anyhow::Result<ExitCode> {
    let DrCommand::Report = cmd;
    let v = c.call("GET", "/v1/sys/dr/report", None).await?;
    let r = &v["data"]["report"];
    let sources = r["sources"].as_array().cloned().unwrap_or_default();
    let missed = sources
        .iter()
        .any(|x| x["rpo_met"] == json!(false) || x["rto_met"] == json!(false));
    match out {
        Output::Json => print_json(r),
        Output::Human => {
            println!("Disaster recovery report, {}", s(&r["generated_at"]));
            if sources.is_empty() {
                println!("no backup sources configured (add [[backup.sources]] to the config)");
            }
            for x in &sources {
                println!();
                println!(
                    "{} ({}, repository {}): {}",
                    s(&x["name"]),
                    s(&x["type"]),
                    s(&x["repository"]),
                    s(&x["status"]).to_uppercase()
                );
                let when = |b: &Value| {
                    if b.is_null() {
                        "never".to_string()
                    } else {
                        format!("{} ({})", s(&b["at"]), short(&b["snapshot"]))
                    }
                };
                println!(
                    "  last backup:        {}",
                    when(&x["last_successful_backup"])
                );
                println!("  last passed drill:  {}", when(&x["last_passed_drill"]));
                println!(
                    "  RPO ({}):{}{}",
                    s(&x["rpo_basis"]),
                    if x["rpo_basis"] == "drill" {
                        "     "
                    } else {
                        "    "
                    },
                    target_text(&x["rpo_s"], &x["rpo_target_s"], &x["rpo_met"])
                );
                println!(
                    "  RTO (measured):     {}",
                    target_text(&x["rto_s"], &x["rto_target_s"], &x["rto_met"])
                );
                for n in x["notes"].as_array().into_iter().flatten() {
                    println!("  ! {}", s(n));
                }
            }
            let repos = r["repositories"].as_array().cloned().unwrap_or_default();
            if !repos.is_empty() {
                println!();
            }
            for repo in repos {
                let check = &repo["last_check"];
                println!(
                    "repository {} ({}): last check {}",
                    s(&repo["name"]),
                    s(&repo["location"]),
                    if check.is_null() {
                        "never".to_string()
                    } else {
                        format!(
                            "{} {}",
                            s(&check["at"]),
                            if check["ok"] == json!(true) {
                                "ok"
                            } else {
                                "FAILED"
                            }
                        )
                    }
                );
            }
        }
    }
    Ok(if missed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::progress_text;

    #[test]
    fn progress_shows_the_time_left_against_the_last_backup() {
        let gib = 1u64 << 30;
        assert_eq!(
            progress_text(gib, Some(4 * gib), 10.0, "read"),
            "1.0 GiB of ~4.0 GiB (25%), 102.4 MiB/s, about 30.0 s left"
        );
        // Past the last size, or with none: bytes and rate only.
        assert_eq!(
            progress_text(5 * gib, Some(4 * gib), 10.0, "read"),
            "5.0 GiB read, 512.0 MiB/s"
        );
        assert_eq!(
            progress_text(gib, None, 10.0, "read"),
            "1.0 GiB read, 102.4 MiB/s"
        );
        assert_eq!(
            progress_text(gib, None, 10.0, "written"),
            "1.0 GiB written, 102.4 MiB/s"
        );
    }
}
