//! Commands that follow change events: `steward rotate ...`, `steward events`,
//! `steward secret expiring`, `steward agent`, and the watcher behind `steward run --watch`.
//! Every watcher long-polls `/v1/sys/events` with a cursor, so none misses a change made
//! while it was between polls.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::{
    cli::{AgentArgs, EventsArgs, Output, RotateCommand},
    client::Client,
    commands::{print_json, target, UsageError},
};

/// How long one long poll waits (below the server's default 30 s request timeout).
const POLL: &str = "25s";

/// The next page of events after `cursor` (waiting up to [`POLL`] when `wait`); moves the cursor.
pub async fn next_events(
    c: &Client,
    cursor: &mut String,
    wait: bool,
) -> anyhow::Result<Vec<Value>> {
    let w = if wait {
        format!("&wait={POLL}")
    } else {
        String::new()
    };
    let v = c
        .call(
            "GET",
            &format!("/v1/sys/events?after={cursor}&limit=500{w}"),
            None,
        )
        .await?;
    if let Some(n) = v["data"]["next"].as_u64() {
        *cursor = n.to_string();
    }
    Ok(v["data"]["events"].as_array().cloned().unwrap_or_default())
}

fn parse_duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s).map_err(|e| {
        UsageError(format!(
            "{what}: {s:?} is not a duration ({e}); use e.g. 30s, 1h, 30d"
        ))
        .into()
    })
}

fn status_line(s: &Value) -> String {
    let last = match &s["last"] {
        Value::Null => "never".to_string(),
        l => format!(
            "{} at {}{}",
            l["outcome"].as_str().unwrap_or("?"),
            l["at"].as_str().unwrap_or("?"),
            l["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
    };
    let step = s["step"]
        .as_str()
        .map(|st| {
            let err = s["last_error"]
                .as_str()
                .map(|e| format!(" last_error={e:?}"))
                .unwrap_or_default();
            format!(" step={st} attempt={}{err}", s["attempt"])
        })
        .unwrap_or_default();
    let laggards = s["laggards"].as_array().map(|a| a.len()).unwrap_or(0);
    let lag = if laggards > 0 {
        format!(
            " laggards={}",
            s["laggards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        )
    } else {
        String::new()
    };
    format!(
        "{}/{}  rotator={} state={}{}  current={} previous={}  next_due={}  last={}{}",
        s["env"].as_str().unwrap_or(""),
        s["path"].as_str().unwrap_or(""),
        s["rotator"].as_str().unwrap_or(""),
        s["state"].as_str().unwrap_or(""),
        step,
        version_label(&s["current_version"]),
        version_label(&s["previous_version"]),
        s["next_due"].as_str().unwrap_or("manual"),
        last,
        lag
    )
}

fn version_label(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_string(), |n| format!("v{n}"))
}

/// `steward rotate ...`. Exit 1 when a waited-for rotation failed.
pub async fn rotate(c: &Client, cmd: RotateCommand, out: Output) -> anyhow::Result<ExitCode> {
    let show = |v: &Value| match out {
        Output::Json => print_json(v),
        Output::Human => println!("{}", status_line(v)),
    };
    match cmd {
        RotateCommand::Configure {
            target: t,
            rotator,
            settings,
            admin,
            every,
            cron,
            window,
            next_at,
            manual,
            grace,
            retire,
            max_attempts,
        } => {
            let (env, path) = target(&t)?;
            let settings: Value = match settings.as_deref() {
                None => Value::Null,
                Some(s) => {
                    let text = match s.strip_prefix('@') {
                        Some(file) => std::fs::read_to_string(file)
                            .with_context(|| format!("cannot read settings file {file}"))?,
                        None => s.to_string(),
                    };
                    serde_json::from_str(&text).map_err(|e| {
                        UsageError(format!(
                            "--settings is not JSON ({e}); e.g. --settings '{{\"length\": 32}}'"
                        ))
                    })?
                }
            };
            let mut schedule = json!({ "manual": manual });
            for (k, v) in [("every", every), ("cron", cron), ("window", window)] {
                if let Some(v) = v {
                    schedule[k] = json!(v);
                }
            }
            if let Some(t) = next_at {
                schedule["next_at"] = json!(t);
            }
            let mut body = json!({
                "rotator": rotator, "settings": settings, "schedule": schedule,
                "grace": grace, "retire": retire, "max_attempts": max_attempts,
            });
            if let Some(a) = admin {
                body["admin"] = json!(a);
            }
            let v = c
                .call(
                    "PUT",
                    &format!("/v1/sys/rotation/config/{env}/{path}"),
                    Some(body),
                )
                .await?;
            show(&v["data"]);
        }
        RotateCommand::Now { target: t, wait } => return start(c, &t, "rotate", wait, out).await,
        RotateCommand::Rollback { target: t, wait } => {
            return start(c, &t, "rollback", wait, out).await
        }
        RotateCommand::Status { target: Some(t) } => {
            let (env, path) = target(&t)?;
            let v = c
                .call(
                    "GET",
                    &format!("/v1/sys/rotation/status/{env}/{path}"),
                    None,
                )
                .await?;
            show(&v["data"]);
        }
        RotateCommand::Status { target: None } => {
            let v = c.call("GET", "/v1/sys/rotation/status", None).await?;
            let all = v["data"]["rotations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match out {
                Output::Json => print_json(&json!(all)),
                Output::Human if all.is_empty() => println!("no rotations configured"),
                Output::Human => all.iter().for_each(|s| println!("{}", status_line(s))),
            }
        }
        RotateCommand::Remove { target: t } => {
            let (env, path) = target(&t)?;
            c.call(
                "DELETE",
                &format!("/v1/sys/rotation/config/{env}/{path}"),
                None,
            )
            .await?;
            println!("rotation of {env}/{path} removed (the secret is unchanged)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn start(c: &Client, t: &str, op: &str, wait: bool, out: Output) -> anyhow::Result<ExitCode> {
    let (env, path) = target(t)?;
    let v = c
        .call("POST", &format!("/v1/sys/rotation/{op}/{env}/{path}"), None)
        .await?;
    let before =
        v["data"]["rotations"].as_u64().unwrap_or(0) + v["data"]["failures"].as_u64().unwrap_or(0);
    if !wait {
        match out {
            Output::Json => print_json(&v["data"]),
            Output::Human => println!(
                "rotation of {env}/{path} started; follow it with `steward rotate status {env}/{path}`"
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Wait until the run ends: the rotation or failure counter moves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let s = c
            .call(
                "GET",
                &format!("/v1/sys/rotation/status/{env}/{path}"),
                None,
            )
            .await?;
        let d = &s["data"];
        let now = d["rotations"].as_u64().unwrap_or(0) + d["failures"].as_u64().unwrap_or(0);
        if now > before && d["state"] != "rotating" {
            match out {
                Output::Json => print_json(d),
                Output::Human => println!("{}", status_line(d)),
            }
            let failed = d["last"]["outcome"] == "failed";
            return Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the rotation of {env}/{path} has not finished after 10 minutes; see `steward rotate status {env}/{path}`");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `steward secret expiring --within D`.
pub async fn expiring(c: &Client, within: &str, out: Output) -> anyhow::Result<()> {
    parse_duration("--within", within)?;
    let v = c
        .call("GET", &format!("/v1/sys/expiring?within={within}"), None)
        .await?;
    let list = v["data"]["secrets"].as_array().cloned().unwrap_or_default();
    match out {
        Output::Json => print_json(&json!(list)),
        Output::Human if list.is_empty() => println!("nothing expires within {within}"),
        Output::Human => {
            for s in list {
                let left = s["seconds_left"].as_i64().unwrap_or(0);
                let when = if left <= 0 {
                    "EXPIRED".to_string()
                } else {
                    format!(
                        "in {}",
                        humantime::format_duration(Duration::from_secs(left as u64))
                    )
                };
                println!(
                    "{}/{}  expires {} ({when})  owner={}",
                    s["env"].as_str().unwrap_or(""),
                    s["path"].as_str().unwrap_or(""),
                    s["expires_at"].as_str().unwrap_or(""),
                    s["owner"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// `steward events [--after N] [--follow]`.
pub async fn events(c: &Client, args: EventsArgs, out: Output) -> anyhow::Result<()> {
    if args.after != "latest" && args.after.parse::<u64>().is_err() {
        return Err(UsageError(format!(
            "--after {:?} must be a number or `latest`",
            args.after
        ))
        .into());
    }
    let mut cursor = args.after;
    loop {
        let page = next_events(c, &mut cursor, args.follow).await?;
        for e in &page {
            match out {
                Output::Json => println!("{}", serde_json::to_string(e).unwrap_or_default()),
                Output::Human => println!(
                    "{:>6}  {}  {:<22} {}/{}  {}",
                    e["seq"],
                    e["time"].as_str().unwrap_or(""),
                    e["kind"].as_str().unwrap_or(""),
                    e["env"].as_str().unwrap_or("-"),
                    e["path"].as_str().unwrap_or("-"),
                    e["detail"]
                ),
            }
        }
        if page.is_empty() && !args.follow {
            return Ok(());
        }
    }
}

/// One `SRC:DEST` template.
struct Template {
    source: PathBuf,
    dest: PathBuf,
}

fn parse_templates(specs: &[String]) -> anyhow::Result<Vec<Template>> {
    specs
        .iter()
        .map(|s| {
            let (a, b) = s.split_once(':').ok_or_else(|| {
                UsageError(format!("--template {s:?} must be SOURCE:DESTINATION"))
            })?;
            Ok(Template {
                source: a.into(),
                dest: b.into(),
            })
        })
        .collect()
}

/// Renders every template; returns whether any destination changed.
async fn render_all(c: &Client, templates: &[Template]) -> anyhow::Result<bool> {
    let mut changed = false;
    for t in templates {
        let text = std::fs::read_to_string(&t.source)
            .with_context(|| format!("cannot read template {}", t.source.display()))?;
        let v = c
            .call(
                "POST",
                "/v1/sys/template/render",
                Some(json!({ "template": text })),
            )
            .await
            .with_context(|| format!("rendering {}", t.source.display()))?;
        let rendered = Zeroizing::new(
            v["data"]["rendered"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        let old = Zeroizing::new(std::fs::read(&t.dest).unwrap_or_default());
        if old.as_slice() == rendered.as_bytes() {
            continue;
        }
        crate::files::write_private_file(&t.dest, rendered.as_bytes())
            .with_context(|| format!("cannot write {}", t.dest.display()))?;
        eprintln!("steward agent: rendered {}", t.dest.display());
        changed = true;
    }
    Ok(changed)
}

async fn reload(command: &str) {
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
    {
        Ok(s) if s.success() => eprintln!("steward agent: reload command succeeded"),
        Ok(s) => eprintln!("steward agent: reload command failed ({s})"),
        Err(e) => eprintln!("steward agent: cannot run the reload command: {e}"),
    }
}

/// `steward agent`: render, then re-render on every secret change; reload when a file changed.
pub async fn agent(c: &Client, args: AgentArgs) -> anyhow::Result<()> {
    let templates = parse_templates(&args.templates)?;
    // Take the cursor before the first render, so a change in between is not missed.
    let mut cursor = "latest".to_string();
    if !args.once {
        next_events(c, &mut cursor, false).await?;
    }
    let changed = render_all(c, &templates).await?;
    if changed {
        if let Some(cmd) = &args.command {
            reload(cmd).await;
        }
    }
    if args.once {
        return Ok(());
    }
    loop {
        let page = match next_events(c, &mut cursor, true).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("steward agent: {e:#}; retrying in 5s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if !page.iter().any(|e| e["kind"] == "secret.written") {
            continue;
        }
        match render_all(c, &templates).await {
            Ok(true) => {
                if let Some(cmd) = &args.command {
                    reload(cmd).await;
                }
            }
            Ok(false) => {}
            Err(e) => eprintln!("steward agent: {e:#}; the files keep their last good content"),
        }
    }
}

/// `steward run --watch`: a task that sends the new variables whenever a secret under
/// `env/prefix` changes them.
pub fn watch_vars(
    c: Client,
    env: String,
    prefix: String,
    mut current: std::collections::BTreeMap<String, Zeroizing<String>>,
    mut cursor: String,
) -> tokio::sync::mpsc::Receiver<std::collections::BTreeMap<String, Zeroizing<String>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let page = match next_events(&c, &mut cursor, true).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("steward run: watching for changes failed ({e:#}); retrying in 5s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let relevant = page.iter().any(|e| {
                e["kind"] == "secret.written"
                    && e["env"] == env.as_str()
                    && e["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with(prefix.as_str()))
            });
            if !relevant {
                continue;
            }
            match crate::commands::fetch_vars(&c, &env, &prefix).await {
                Ok(vars) if vars != current => {
                    current = vars.clone();
                    if tx.send(vars).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!(
                    "steward run: cannot read the new values ({e:#}); keeping the old ones"
                ),
            }
        }
    });
    rx
}
