//! `steward alerts|silence|notify|maintenance`: the alerting pipeline from the command line.
//! Every listing takes `-o json`; human output is one line per item.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};

use serde_json::{json, Value};

use crate::{
    cli::{AlertsCommand, MaintenanceCommand, NotifyCommand, Output, SilenceCommand},
    client::Client,
    commands::{print_json, UsageError},
};

/// `path?k=v&...` with the values URL-encoded.
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://x").expect("constant URL parses");
    u.set_path(path);
    if !pairs.is_empty() {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

fn labels_line(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn mute_line(m: &Value) -> String {
    let mut parts = Vec::new();
    for (key, word) in [
        ("silenced_by", "silenced"),
        ("inhibited_by", "inhibited"),
        ("maintenance", "maintenance"),
    ] {
        if m[key].as_array().is_some_and(|a| !a.is_empty()) {
            parts.push(word);
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    }
}

fn ids(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `steward alerts ...`.
pub async fn alerts(c: &Client, cmd: AlertsCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        AlertsCommand::List { matchers } => {
            let pairs: Vec<(&str, &str)> =
                matchers.iter().map(|m| ("filter", m.as_str())).collect();
            let v = c
                .call("GET", &with_query("/v1/sys/alerting/alerts", &pairs), None)
                .await?;
            let list = &v["data"]["alerts"];
            match out {
                Output::Json => print_json(list),
                Output::Human => {
                    let items = list.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("no alerts");
                    }
                    for a in items {
                        println!(
                            "{}  {:<8} since {}  {}{}",
                            a["fingerprint"].as_str().unwrap_or_default(),
                            a["state"].as_str().unwrap_or_default(),
                            a["starts_at"].as_str().unwrap_or_default(),
                            labels_line(&a["labels"]),
                            mute_line(&a["mute"])
                        );
                    }
                }
            }
        }
        AlertsCommand::Show { fingerprint } => {
            let v = c
                .call(
                    "GET",
                    &format!("/v1/sys/alerting/alerts/{fingerprint}"),
                    None,
                )
                .await?;
            let a = &v["data"];
            match out {
                Output::Json => print_json(a),
                Output::Human => {
                    println!(
                        "fingerprint: {}",
                        a["fingerprint"].as_str().unwrap_or_default()
                    );
                    println!("state:       {}", a["state"].as_str().unwrap_or_default());
                    println!("labels:      {}", labels_line(&a["labels"]));
                    println!("annotations: {}", labels_line(&a["annotations"]));
                    println!(
                        "starts_at:   {}",
                        a["starts_at"].as_str().unwrap_or_default()
                    );
                    println!(
                        "ends_at:     {}",
                        a["ends_at"].as_str().unwrap_or("(until resolved)")
                    );
                    println!("receivers:   {}", ids(&a["receivers"]));
                    println!("silenced by: {}", ids(&a["mute"]["silenced_by"]));
                    println!("inhibited by:{}", ids(&a["mute"]["inhibited_by"]));
                    println!("maintenance: {}", ids(&a["mute"]["maintenance"]));
                    for k in a["acknowledged"].as_array().cloned().unwrap_or_default() {
                        println!(
                            "acknowledged by {} at {}: {}",
                            k["by"].as_str().unwrap_or_default(),
                            k["at"].as_str().unwrap_or_default(),
                            k["comment"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
        }
        AlertsCommand::Ack { target, comment } => {
            let v = c
                .call(
                    "POST",
                    &format!("/v1/sys/alerting/alerts/{target}/ack"),
                    Some(json!({ "comment": comment })),
                )
                .await?;
            match out {
                Output::Json => print_json(&v["data"]),
                Output::Human => println!(
                    "acknowledged {} group(s): no reminders or escalation; the resolve will still be sent",
                    v["data"]["acknowledged_groups"].as_array().map_or(0, Vec::len)
                ),
            }
        }
        AlertsCommand::DeadLetters { replay, ids: only } => {
            if replay {
                let body = if only.is_empty() {
                    json!({})
                } else {
                    json!({ "ids": only })
                };
                let v = c
                    .call("POST", "/v1/sys/alerting/dead-letters/replay", Some(body))
                    .await?;
                match out {
                    Output::Json => print_json(&v["data"]),
                    Output::Human => println!(
                        "{} notification(s) moved back to the outbox",
                        v["data"]["replayed"].as_u64().unwrap_or(0)
                    ),
                }
            } else {
                let v = c.call("GET", "/v1/sys/alerting/dead-letters", None).await?;
                print_items(&v["data"]["dead_letters"], out, "no dead letters");
            }
        }
        AlertsCommand::Pending => {
            let v = c.call("GET", "/v1/sys/alerting/outbox", None).await?;
            print_items(&v["data"]["pending"], out, "the outbox is empty");
        }
        AlertsCommand::Log { limit } => {
            let v = c
                .call("GET", &format!("/v1/sys/alerting/log?limit={limit}"), None)
                .await?;
            let list = &v["data"]["entries"];
            match out {
                Output::Json => print_json(list),
                Output::Human => {
                    let items = list.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("nothing sent yet");
                    }
                    for e in items {
                        println!(
                            "{}  {:<5} {:<12} -> {:<14} {:<9} {} alert(s) {}{}",
                            e["time"].as_str().unwrap_or_default(),
                            e["outcome"].as_str().unwrap_or_default(),
                            e["kind"].as_str().unwrap_or_default(),
                            e["channel"].as_str().unwrap_or_default(),
                            e["status"].as_str().unwrap_or_default(),
                            e["alerts"].as_u64().unwrap_or(0),
                            e["group_key"].as_str().unwrap_or_default(),
                            e["error"]
                                .as_str()
                                .map(|x| format!("  error: {x}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
        AlertsCommand::ImportAlertmanager { file, env } => import_alertmanager(&file, &env)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward alerts import-alertmanager FILE`: runs locally. The TOML goes to stdout, the notes
/// to stderr, so `> alerting.toml` keeps only the TOML.
fn import_alertmanager(file: &std::path::Path, env: &str) -> anyhow::Result<()> {
    steward_core::names::EnvName::parse(env)
        .map_err(|e| UsageError(format!("--env {env:?}: {e}")))?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (toml, notes) =
        steward_alerting::import::import_alertmanager(&text, &file.display().to_string(), env)
            .map_err(|e| crate::settings::ConfigProblem(e.to_string()))?;
    print!("{toml}");
    if !toml.ends_with('\n') {
        println!();
    }
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(())
}

fn print_items(list: &Value, out: Output, empty: &str) {
    match out {
        Output::Json => print_json(list),
        Output::Human => {
            let items = list.as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("{empty}");
            }
            for d in items {
                let n = &d["notification"];
                println!(
                    "{}  {:<12} {:<9} attempts {}  {}  last error: {}",
                    n["id"].as_str().unwrap_or_default(),
                    n["channel"].as_str().unwrap_or_default(),
                    n["status"].as_str().unwrap_or_default(),
                    d["attempts"].as_u64().unwrap_or(0),
                    n["group_key"].as_str().unwrap_or_default(),
                    d["last_error"].as_str().unwrap_or("-")
                );
            }
        }
    }
}

fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            UsageError(format!(
                "{s:?} is not an RFC 3339 time ({e}); e.g. 2026-12-01T09:00:00Z"
            ))
            .into()
        })
}

fn parse_duration(s: &str) -> anyhow::Result<chrono::Duration> {
    let d = humantime::parse_duration(s)
        .map_err(|e| UsageError(format!("{s:?} is not a duration ({e}); e.g. 30m or 2h")))?;
    chrono::Duration::from_std(d).context("duration too long")
}

/// `steward silence ...`.
pub async fn silence(c: &Client, cmd: SilenceCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        SilenceCommand::Add {
            matchers,
            duration,
            start,
            comment,
            author,
        } => {
            let parsed = steward_alerting::matchers::parse_list(&matchers)
                .map_err(|e| UsageError(e.to_string()))?;
            let api: Vec<_> = parsed
                .iter()
                .map(steward_alerting::mutes::ApiMatcher::from_matcher)
                .collect();
            // The server's clock decides "now"; only an explicit start is sent.
            let starts = start.as_deref().map(parse_time).transpose()?;
            parse_duration(&duration)?;
            let v = c
                .call(
                    "POST",
                    "/api/v2/silences",
                    Some(
                        json!({"matchers": api, "startsAt": starts, "duration": duration,
                                "createdBy": author, "comment": comment}),
                    ),
                )
                .await?;
            match out {
                Output::Json => print_json(&v),
                Output::Human => println!("{}", v["silenceID"].as_str().unwrap_or_default()),
            }
        }
        SilenceCommand::List => {
            let v = c.call("GET", "/api/v2/silences", None).await?;
            match out {
                Output::Json => print_json(&v),
                Output::Human => {
                    let items = v.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("no silences");
                    }
                    for s in items {
                        let m: Vec<String> = s["matchers"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .map(|m| {
                                let op = match (m["isRegex"].as_bool(), m["isEqual"].as_bool()) {
                                    (Some(true), Some(false)) => "!~",
                                    (Some(true), _) => "=~",
                                    (_, Some(false)) => "!=",
                                    _ => "=",
                                };
                                format!(
                                    "{}{op}{:?}",
                                    m["name"].as_str().unwrap_or_default(),
                                    m["value"].as_str().unwrap_or_default()
                                )
                            })
                            .collect();
                        println!(
                            "{}  {:<8} until {}  {}  by {}: {}",
                            s["id"].as_str().unwrap_or_default(),
                            s["status"]["state"].as_str().unwrap_or_default(),
                            s["endsAt"].as_str().unwrap_or_default(),
                            m.join(" "),
                            s["createdBy"].as_str().unwrap_or_default(),
                            s["comment"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
        }
        SilenceCommand::Expire { id } => {
            c.call("DELETE", &format!("/api/v2/silence/{id}"), None)
                .await?;
            if out == Output::Json {
                print_json(&json!({"expired": id}));
            } else {
                println!("silence {id} expired");
            }
        }
    }
    Ok(())
}

/// `steward notify test CHANNEL`. Exit 1 when the channel refused.
pub async fn notify(c: &Client, cmd: NotifyCommand, out: Output) -> anyhow::Result<ExitCode> {
    let NotifyCommand::Test { channel } = cmd;
    let v = c
        .call(
            "POST",
            &format!("/v1/sys/alerting/notify-test/{channel}"),
            None,
        )
        .await?;
    match out {
        Output::Json => print_json(&v["data"]),
        Output::Human => println!("test notification sent through {channel}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward maintenance ...`.
pub async fn maintenance(c: &Client, cmd: MaintenanceCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        MaintenanceCommand::Start {
            matchers,
            duration,
            cron,
            timezone,
            comment,
            name,
            public,
        } => {
            let v = c
                .call(
                    "POST",
                    "/v1/sys/alerting/maintenance",
                    Some(
                        json!({"matchers": matchers, "duration": duration, "cron": cron,
                                "timezone": timezone, "comment": comment, "name": name,
                                "public": public}),
                    ),
                )
                .await?;
            match out {
                Output::Json => print_json(&v["data"]),
                Output::Human => println!("{}", v["data"]["id"].as_str().unwrap_or_default()),
            }
        }
        MaintenanceCommand::End { id } => {
            c.call(
                "DELETE",
                &format!("/v1/sys/alerting/maintenance/{id}"),
                None,
            )
            .await?;
            if out == Output::Json {
                print_json(&json!({"ended": id}));
            } else {
                println!("maintenance window {id} ended");
            }
        }
        MaintenanceCommand::List => {
            let v = c.call("GET", "/v1/sys/alerting/maintenance", None).await?;
            let list = &v["data"]["windows"];
            match out {
                Output::Json => print_json(list),
                Output::Human => {
                    let items = list.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("no maintenance windows");
                    }
                    for w in items {
                        let when = if w["active"].as_bool() == Some(true) {
                            format!(
                                "ACTIVE until {}",
                                w["current_end"].as_str().unwrap_or_default()
                            )
                        } else {
                            format!("next {}", w["next_start"].as_str().unwrap_or("-"))
                        };
                        println!(
                            "{}  {}  {}  {}",
                            w["id"].as_str().unwrap_or_default(),
                            when,
                            w["matchers"],
                            w["comment"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
