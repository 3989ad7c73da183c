//! One function per command. Client commands go through [`Client`]; `up` and `init` run the
//! server side in-process.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Read, Write},
    os::unix::fs::OpenOptionsExt,
    process::ExitCode,
};

use anyhow::{bail, Context};
use clap::CommandFactory;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::{
    cli::{
        AuditCommand, Cli, Command, ConfigCommand, ExportArgs, ExportFormat, KeysCommand, Output,
        PolicyCommand, RunArgs, SecretCommand, TemplateCommand, TokenCommand,
    },
    client::{ApiFailure, Client, Unreachable},
    server,
    settings::{self, ConfigProblem},
};

/// Maps an error to the documented exit code.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ConfigProblem>().is_some() {
            return 3;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<Unreachable>().is_some() {
            return 7;
        }
        if let Some(f) = cause.downcast_ref::<ApiFailure>() {
            return match f.status {
                404 => 4,
                401 | 403 => 5,
                409 => 6,
                503 => 7,
                _ => 1,
            };
        }
        if let Some(r) = cause.downcast_ref::<steward_repo::Error>() {
            return match r {
                steward_repo::Error::WrongPassword { .. } => 5,
                steward_repo::Error::NotFound { .. } => 4,
                steward_repo::Error::Locked { .. } => 6,
                steward_repo::Error::InvalidArgument(_) => 2,
                steward_repo::Error::Backend(b) if b.is_temporary() => 7,
                _ => 1,
            };
        }
        if let Some(s) = cause.downcast_ref::<steward_secrets::SecretsError>() {
            return match s.kind {
                steward_secrets::Kind::NotFound => 4,
                steward_secrets::Kind::Unauthenticated | steward_secrets::Kind::Forbidden => 5,
                steward_secrets::Kind::Conflict => 6,
                steward_secrets::Kind::Unavailable => 7,
                _ => 1,
            };
        }
    }
    1
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "steward",
            &mut std::io::stdout(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (cfg, cfg_path) = settings::load(&g)?;
    let out = g.output;
    let client = || Client::new(&g, &cfg);
    match cli.command {
        Command::Up(args) => {
            settings::check_alerting(&cfg, cfg_path.as_deref())?;
            settings::check_monitoring(&cfg, cfg_path.as_deref())?;
            let mut cfg = cfg;
            if let Some(l) = args.listen {
                cfg.server.listen = l;
            }
            server::up(cfg).await?;
        }
        Command::Init(args) => {
            server::init(&cfg, args.shares.zip(args.threshold)).await?;
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            settings::check_alerting(&cfg, cfg_path.as_deref())?;
            settings::check_monitoring(&cfg, cfg_path.as_deref())?;
            match cfg_path {
                Some(p) => println!("{}: ok", p.display()),
                None => println!("no steward.toml found; the defaults apply (ok)"),
            }
        }
        Command::Unseal => unseal(&client()?).await?,
        Command::Secret { command } => return secret(&client()?, command, out).await,
        Command::Token { command } => token(&client()?, command, out).await?,
        Command::Policy { command } => policy(&client()?, command, out).await?,
        Command::Audit { command } => return audit(&client()?, command, out).await,
        Command::Keys { command } => keys(&client()?, command, out).await?,
        Command::Run(args) => return run(&client()?, args).await,
        Command::Rotate { command } => return crate::watch::rotate(&client()?, command, out).await,
        Command::Events(args) => crate::watch::events(&client()?, args, out).await?,
        Command::Agent(args) => crate::watch::agent(&client()?, args).await?,
        Command::Template {
            command: TemplateCommand::Render { input, out: dest },
        } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read template {}", input.display()))?;
            let v = client()?
                .call(
                    "POST",
                    "/v1/sys/template/render",
                    Some(json!({ "template": text })),
                )
                .await?;
            let rendered = Zeroizing::new(
                v["data"]["rendered"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            write_private(dest.as_deref(), rendered.as_bytes())?;
        }
        Command::Export(args) => export(&client()?, args).await?,
        Command::Repo(args) => return crate::repo::repo(args, out).await,
        Command::Checks { command } => {
            return crate::checks::checks(&client()?, command, out).await
        }
        Command::Backup { command } => {
            return crate::backups::backup(&client()?, command, out).await
        }
        Command::Drill { command } => return crate::backups::drill(&client()?, command, out).await,
        Command::Dr { command } => return crate::backups::dr(&client()?, command, out).await,
        Command::Beat {
            name,
            fail,
            message,
        } => crate::checks::beat(&client()?, &name, !fail, message).await?,
        Command::Alerts { command } => {
            return crate::alerts::alerts(&client()?, command, out).await
        }
        Command::Silence { command } => crate::alerts::silence(&client()?, command, out).await?,
        Command::Notify { command } => {
            return crate::alerts::notify(&client()?, command, out).await
        }
        Command::Maintenance { command } => {
            crate::alerts::maintenance(&client()?, command, out).await?
        }
        Command::Completions { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A malformed argument (exit code 2, like clap's own usage errors).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Splits `ENV/PATH`.
pub(crate) fn target(s: &str) -> anyhow::Result<(String, String)> {
    let (env, path) =
        steward_core::names::parse_reference(s).map_err(|e| UsageError(e.to_string()))?;
    Ok((env.to_string(), path.to_string()))
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Reads a value from a file or stdin; a single trailing newline is dropped.
fn read_value(file: Option<&std::path::Path>) -> anyhow::Result<Zeroizing<String>> {
    let mut buf = Zeroizing::new(String::new());
    match file {
        Some(p) => {
            *buf = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("Enter the value, then Ctrl-D:");
            }
            std::io::stdin()
                .read_to_string(&mut buf)
                .context("cannot read the value from stdin")?;
        }
    }
    if buf.ends_with('\n') {
        buf.pop();
        if buf.ends_with('\r') {
            buf.pop();
        }
    }
    Ok(buf)
}

/// Writes to `dest` (0600, atomically) or stdout.
fn write_private(dest: Option<&std::path::Path>, data: &[u8]) -> anyhow::Result<()> {
    match dest {
        None => {
            std::io::stdout().write_all(data)?;
            std::io::stdout().flush()?;
        }
        Some(p) => crate::files::write_private_file(p, data)
            .with_context(|| format!("cannot write {}", p.display()))?,
    }
    Ok(())
}

async fn unseal(c: &Client) -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        eprintln!("Paste key shares, one per line, then Ctrl-D:");
    }
    let mut input = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut input)?;
    let mut last = Value::Null;
    for share in input.lines().map(str::trim).filter(|l| !l.is_empty()) {
        last = c
            .call("PUT", "/v1/sys/unseal", Some(json!({ "key": share })))
            .await?;
        if last["sealed"] == json!(false) {
            break;
        }
    }
    if last["sealed"] == json!(false) {
        println!("unsealed");
    } else {
        println!(
            "still sealed: {} of {} shares given",
            last["progress"], last["t"]
        );
    }
    Ok(())
}

async fn secret(c: &Client, cmd: SecretCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretCommand::Put {
            target: t,
            file,
            json: is_json,
            cas,
            description,
            owner,
            expires_at,
        } => {
            let (env, path) = target(&t)?;
            let raw = read_value(file.as_deref())?;
            let value: Value = if is_json {
                let v: Value =
                    serde_json::from_str(&raw).context("--json: the value is not valid JSON")?;
                if !v.is_object() {
                    bail!("--json: the value must be a JSON object");
                }
                v
            } else {
                Value::String(raw.to_string())
            };
            let mut body = json!({ "value": value, "options": { "cas": cas } });
            let mut meta = serde_json::Map::new();
            if let Some(d) = description {
                meta.insert("description".into(), d.into());
            }
            if let Some(o) = owner {
                meta.insert("owner".into(), o.into());
            }
            if let Some(e) = expires_at {
                meta.insert("expires_at".into(), json!(e));
            }
            if !meta.is_empty() {
                body["metadata"] = Value::Object(meta);
            }
            let v = c
                .call("PUT", &format!("/v1/{env}/data/{path}"), Some(body))
                .await?;
            match out {
                Output::Json => print_json(&v["data"]),
                Output::Human => println!("{env}/{path}: version {}", v["data"]["version"]),
            }
        }
        SecretCommand::Get {
            target: t,
            version,
            field,
            raw,
        } => {
            let (env, path) = target(&t)?;
            let mut q = vec![];
            if let Some(v) = version {
                q.push(format!("version={v}"));
            }
            if raw {
                q.push("resolve=false".into());
            }
            let qs = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            let v = c
                .call("GET", &format!("/v1/{env}/data/{path}{qs}"), None)
                .await?;
            let d = &v["data"];
            if out == Output::Json {
                print_json(d);
                return Ok(ExitCode::SUCCESS);
            }
            let text = match (&field, d["value_type"].as_str()) {
                (None, Some("string")) => {
                    d["data"]["value"].as_str().unwrap_or_default().to_string()
                }
                (None, _) => serde_json::to_string_pretty(&d["data"])?,
                (Some(f), _) => match &d["data"][f] {
                    Value::Null => bail!("{env}/{path} has no field {f:?}"),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            };
            let text = Zeroizing::new(text);
            println!("{}", text.as_str());
        }
        SecretCommand::Expiring { within } => crate::watch::expiring(c, &within, out).await?,
        SecretCommand::List { target: t } => {
            let (env, prefix) = t.split_once('/').unwrap_or((t.as_str(), ""));
            let r = c
                .call("LIST", &format!("/v1/{env}/metadata/{prefix}"), None)
                .await;
            let keys = match r {
                Ok(v) => v["data"]["keys"].clone(),
                Err(e)
                    if e.downcast_ref::<ApiFailure>()
                        .is_some_and(|f| f.status == 404 && f.code == "not_found") =>
                {
                    json!([])
                }
                Err(e) => return Err(e),
            };
            match out {
                Output::Json => print_json(&keys),
                Output::Human => {
                    for k in keys.as_array().into_iter().flatten() {
                        println!("{}", k.as_str().unwrap_or_default());
                    }
                }
            }
        }
        SecretCommand::History { target: t } => {
            let (env, path) = target(&t)?;
            let v = c
                .call("GET", &format!("/v1/{env}/metadata/{path}"), None)
                .await?;
            let d = &v["data"];
            match out {
                Output::Json => print_json(d),
                Output::Human => {
                    println!(
                        "{env}/{path}: current version {}, keeping {}",
                        d["current_version"], d["max_versions"]
                    );
                    if let Some(desc) = d["description"].as_str().filter(|s| !s.is_empty()) {
                        println!("description: {desc}");
                    }
                    println!("{:>8}  {:<32}  STATE", "VERSION", "CREATED");
                    if let Some(vs) = d["versions"].as_object() {
                        let mut rows: Vec<_> = vs.iter().collect();
                        rows.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(0));
                        for (k, v) in rows {
                            let state = if v["destroyed"] == json!(true) {
                                "destroyed".to_string()
                            } else if v["deletion_time"].as_str().is_some_and(|s| !s.is_empty()) {
                                format!(
                                    "deleted {}",
                                    v["deletion_time"].as_str().unwrap_or_default()
                                )
                            } else {
                                "live".to_string()
                            };
                            println!(
                                "{:>8}  {:<32}  {state}",
                                k,
                                v["created_time"].as_str().unwrap_or_default()
                            );
                        }
                    }
                }
            }
        }
        SecretCommand::Rollback { target: t, to } => {
            let (env, path) = target(&t)?;
            let v = c
                .call(
                    "POST",
                    &format!("/v1/{env}/rollback/{path}"),
                    Some(json!({ "version": to })),
                )
                .await?;
            println!(
                "{env}/{path}: version {} now holds version {to}'s value",
                v["data"]["version"]
            );
        }
        SecretCommand::Delete {
            target: t,
            versions,
        } => {
            let (env, path) = target(&t)?;
            if versions.is_empty() {
                c.call("DELETE", &format!("/v1/{env}/data/{path}"), None)
                    .await?;
            } else {
                version_op(c, "delete", &t, &versions).await?;
            }
            println!("deleted (undelete restores it)");
        }
        SecretCommand::Undelete {
            target: t,
            versions,
        } => {
            version_op(c, "undelete", &t, &versions).await?;
            println!("undeleted");
        }
        SecretCommand::Destroy {
            target: t,
            versions,
        } => {
            version_op(c, "destroy", &t, &versions).await?;
            println!("destroyed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `POST /v1/<env>/<op>/<path>` with `{"versions": [...]}` (delete, undelete, destroy).
async fn version_op(c: &Client, op: &str, t: &str, versions: &[u64]) -> anyhow::Result<()> {
    let (env, path) = target(t)?;
    c.call(
        "POST",
        &format!("/v1/{env}/{op}/{path}"),
        Some(json!({ "versions": versions })),
    )
    .await?;
    Ok(())
}

fn print_token_rows(rows: &[Value]) {
    println!(
        "{:<30}  {:<16}  {:<26}  POLICIES",
        "ACCESSOR", "NAME", "EXPIRES"
    );
    for t in rows {
        println!(
            "{:<30}  {:<16}  {:<26}  {}{}",
            t["accessor"].as_str().unwrap_or_default(),
            t["display_name"].as_str().unwrap_or_default(),
            t["expire_time"].as_str().unwrap_or("never"),
            t["policies"]
                .as_array()
                .map(|p| p
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            if t["revoked"] == json!(true) {
                " (revoked)"
            } else {
                ""
            },
        );
    }
}

async fn token(c: &Client, cmd: TokenCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            policies,
            ttl,
            max_ttl,
            name,
        } => {
            let v = c
                .call("POST", "/v1/auth/token/create", Some(json!({ "policies": policies, "ttl": ttl, "max_ttl": max_ttl, "display_name": name })))
                .await?;
            match out {
                Output::Json => print_json(&v["auth"]),
                Output::Human => {
                    println!(
                        "token:    {}",
                        v["auth"]["client_token"].as_str().unwrap_or_default()
                    );
                    println!(
                        "accessor: {}",
                        v["auth"]["accessor"].as_str().unwrap_or_default()
                    );
                    println!(
                        "expires:  {}",
                        v["auth"]["expire_time"].as_str().unwrap_or("never")
                    );
                }
            }
        }
        TokenCommand::Lookup { accessor } => {
            let v = match accessor {
                None => c.call("GET", "/v1/auth/token/lookup-self", None).await?,
                Some(a) => {
                    c.call(
                        "POST",
                        "/v1/auth/token/lookup-accessor",
                        Some(json!({ "accessor": a })),
                    )
                    .await?
                }
            };
            match out {
                Output::Json => print_json(&v["data"]),
                Output::Human => print_token_rows(&[v["data"].clone()]),
            }
        }
        TokenCommand::List => {
            let v = c.call("LIST", "/v1/auth/token/accessors", None).await?;
            let rows = v["data"]["tokens"].as_array().cloned().unwrap_or_default();
            match out {
                Output::Json => print_json(&Value::Array(rows)),
                Output::Human => print_token_rows(&rows),
            }
        }
        TokenCommand::Renew { increment } => {
            let v = c
                .call(
                    "POST",
                    "/v1/auth/token/renew-self",
                    Some(json!({ "increment": increment })),
                )
                .await?;
            println!(
                "renewed until {}",
                v["auth"]["expire_time"].as_str().unwrap_or("never")
            );
        }
        TokenCommand::Revoke { accessor } => {
            match accessor {
                None => c.call("POST", "/v1/auth/token/revoke-self", None).await?,
                Some(a) => {
                    c.call(
                        "POST",
                        "/v1/auth/token/revoke-accessor",
                        Some(json!({ "accessor": a })),
                    )
                    .await?
                }
            };
            println!("revoked");
        }
    }
    Ok(())
}

async fn policy(c: &Client, cmd: PolicyCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Put { name, file } => {
            let doc = read_value(file.as_deref())?;
            let v: Value = serde_json::from_str(&doc).context("the policy is not valid JSON")?;
            c.call("PUT", &format!("/v1/sys/policies/{name}"), Some(v))
                .await?;
            println!("policy {name} saved");
        }
        PolicyCommand::Get { name } => {
            let v = c
                .call("GET", &format!("/v1/sys/policies/{name}"), None)
                .await?;
            print_json(&v["data"]["policy"]);
        }
        PolicyCommand::List => {
            let v = c.call("LIST", "/v1/sys/policies", None).await?;
            match out {
                Output::Json => print_json(&v["data"]["policies"]),
                Output::Human => {
                    for k in v["data"]["keys"].as_array().into_iter().flatten() {
                        println!("{}", k.as_str().unwrap_or_default());
                    }
                }
            }
        }
        PolicyCommand::Delete { name } => {
            c.call("DELETE", &format!("/v1/sys/policies/{name}"), None)
                .await?;
            println!("policy {name} deleted");
        }
    }
    Ok(())
}

async fn audit(c: &Client, cmd: AuditCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify => {
            let v = c.call("POST", "/v1/sys/audit/verify", None).await?;
            let d = &v["data"];
            if out == Output::Json {
                print_json(d);
            } else if d["ok"] == json!(true) {
                println!("audit log intact: {} entries verified", d["entries"]);
            } else {
                println!(
                    "audit log BROKEN at entry {}: {}",
                    d["first_bad"]["seq"],
                    d["first_bad"]["reason"].as_str().unwrap_or_default()
                );
            }
            if d["ok"] != json!(true) {
                return Ok(ExitCode::from(1));
            }
        }
        AuditCommand::Export { after, out: dest } => {
            let mut sink: Box<dyn Write> = match &dest {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut after = after;
            let mut total = 0u64;
            loop {
                let (headers, body) = c
                    .send(
                        "GET",
                        &format!("/v1/sys/audit/export?after={after}&limit=5000"),
                        None,
                    )
                    .await?;
                sink.write_all(body.as_bytes())?;
                total += body.lines().count() as u64;
                if dest.is_some() {
                    eprint!("\rexported {total} entries");
                }
                match headers
                    .get("x-steward-next-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                {
                    Some(n) => after = n,
                    None => break,
                }
            }
            sink.flush()?;
            if dest.is_some() {
                eprintln!();
            }
        }
        AuditCommand::Hash => {
            let input = read_value(None)?;
            let v = c
                .call(
                    "POST",
                    "/v1/sys/audit-hash",
                    Some(json!({ "input": input.as_str() })),
                )
                .await?;
            println!("{}", v["data"]["hash"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(c: &Client, cmd: KeysCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Rotate => {
            let v = c.call("POST", "/v1/sys/keys/rotate", None).await?;
            println!(
                "new active encryption key {} in the keyring; data keys are being re-wrapped (see `steward keys status`). The root key that unseals the store is unchanged.",
                v["data"]["active_key_id"]
            );
        }
        KeysCommand::Status => {
            let v = c.call("GET", "/v1/sys/keys/status", None).await?;
            match out {
                Output::Json => print_json(&v["data"]),
                Output::Human => println!(
                    "active key {}; keys in ring {}; data keys still to re-wrap {}",
                    v["data"]["active_key_id"], v["data"]["key_ids"], v["data"]["pending_rewrap"]
                ),
            }
        }
    }
    Ok(())
}

/// Environment variable name for a secret path relative to the prefix: upper case, anything
/// but letters and digits becomes '_'.
pub fn env_name(rel: &str) -> String {
    let mut n: String = rel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert(0, '_');
    }
    n
}

/// Flattens exported secrets into environment variables (objects become NAME_FIELD).
fn to_env_vars(
    secrets: &Value,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, Zeroizing<String>>> {
    let prefix =
        steward_core::SecretPath::parse_prefix(prefix).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut vars = BTreeMap::new();
    let mut put = |name: String, val: String, from: &str| -> anyhow::Result<()> {
        if vars.insert(name.clone(), Zeroizing::new(val)).is_some() {
            bail!("two secrets map to the environment variable {name} (the second is {from}); rename one");
        }
        Ok(())
    };
    for (path, value) in secrets.as_object().into_iter().flatten() {
        let rel = path.strip_prefix(&prefix).unwrap_or(path);
        let base = env_name(rel);
        match value {
            Value::String(s) => put(base, s.clone(), path)?,
            Value::Object(m) => {
                for (k, v) in m {
                    let val = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    put(format!("{base}_{}", env_name(k)), val, path)?;
                }
            }
            _ => {}
        }
    }
    Ok(vars)
}

pub(crate) async fn fetch_vars(
    c: &Client,
    env: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, Zeroizing<String>>> {
    let v = c
        .call(
            "GET",
            &format!("/v1/sys/export/{env}?prefix={prefix}"),
            None,
        )
        .await?;
    for s in v["data"]["skipped"].as_array().into_iter().flatten() {
        eprintln!(
            "steward: skipped {env}/{} (no read permission or deleted)",
            s.as_str().unwrap_or_default()
        );
    }
    to_env_vars(&v["data"]["secrets"], prefix)
}

/// Starts the child with `vars` in its environment (and without our token).
fn spawn_child(
    prog: &str,
    rest: &[String],
    vars: &BTreeMap<String, Zeroizing<String>>,
) -> anyhow::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(rest);
    for (k, v) in vars {
        cmd.env(k, v.as_str());
    }
    // The token stays with us; the child gets secrets, not the means to read more.
    cmd.env_remove("STEWARD_TOKEN");
    cmd.spawn().with_context(|| format!("cannot run {prog:?}"))
}

fn pid_of(child: &tokio::process::Child) -> Option<nix::unistd::Pid> {
    child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(nix::unistd::Pid::from_raw)
}

/// What `--on-change` asks for.
enum OnChange {
    Restart(std::time::Duration),
    Signal(nix::sys::signal::Signal),
}

fn on_change(args: &RunArgs) -> anyhow::Result<OnChange> {
    if args.on_change == "restart" {
        let grace = humantime::parse_duration(&args.restart_grace)
            .map_err(|e| UsageError(format!("--restart-grace {:?}: {e}", args.restart_grace)))?;
        return Ok(OnChange::Restart(grace));
    }
    let name = args.on_change.strip_prefix("signal:").ok_or_else(|| {
        UsageError(format!(
            "--on-change {:?} must be `restart` or `signal:NAME` (e.g. signal:SIGHUP)",
            args.on_change
        ))
    })?;
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    let sig: nix::sys::signal::Signal = full.parse().map_err(|_| {
        UsageError(format!(
            "--on-change: unknown signal {name:?}; use e.g. signal:SIGHUP or signal:SIGUSR1"
        ))
    })?;
    Ok(OnChange::Signal(sig))
}

async fn run(c: &Client, args: RunArgs) -> anyhow::Result<ExitCode> {
    let change = on_change(&args)?;
    // The cursor is taken before the values are read, so no change in between is missed.
    let mut cursor = "latest".to_string();
    if args.watch {
        crate::watch::next_events(c, &mut cursor, false).await?;
    }
    let mut vars = fetch_vars(c, &args.env, &args.prefix).await?;
    let (prog, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let mut child = spawn_child(prog, rest, &vars)?;
    let mut updates = if args.watch {
        Some(crate::watch::watch_vars(
            c.clone(),
            args.env.clone(),
            args.prefix.clone(),
            std::mem::take(&mut vars),
            cursor,
        ))
    } else {
        drop(vars);
        None
    };
    // Signals: SIGTERM and SIGHUP sent to `steward run` (by a supervisor, `kill`) are passed
    // on, so the child stops or reloads with us instead of being orphaned. SIGINT is not
    // forwarded: from a terminal it already reaches the whole process group, and a second copy
    // would make many programs quit hard.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let forward = |child: &tokio::process::Child, sig: nix::sys::signal::Signal| {
        if let Some(pid) = pid_of(child) {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    };
    let status = loop {
        let next_update = async {
            match updates.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            st = child.wait() => break st.context("waiting for the command")?,
            _ = term.recv() => forward(&child, nix::sys::signal::Signal::SIGTERM),
            _ = hup.recv() => forward(&child, nix::sys::signal::Signal::SIGHUP),
            _ = int.recv() => {}
            new = next_update => {
                let Some(new) = new else { updates = None; continue };
                match &change {
                    OnChange::Signal(sig) => {
                        eprintln!("steward run: secrets changed; sending {sig} to the command");
                        forward(&child, *sig);
                    }
                    OnChange::Restart(grace) => {
                        eprintln!("steward run: secrets changed; restarting the command");
                        forward(&child, nix::sys::signal::Signal::SIGTERM);
                        if tokio::time::timeout(*grace, child.wait()).await.is_err() {
                            eprintln!("steward run: the command did not stop within {}; killing it", humantime::format_duration(*grace));
                            let _ = child.kill().await;
                        }
                        child = spawn_child(prog, rest, &new)?;
                    }
                }
            }
        }
    };
    // A child killed by a signal exits like a shell reports it: 128 + signal number.
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

async fn export(c: &Client, args: ExportArgs) -> anyhow::Result<()> {
    let vars = fetch_vars(c, &args.env, &args.prefix).await?;
    let mut text = Zeroizing::new(String::new());
    match args.format {
        ExportFormat::Dotenv => {
            for (k, v) in &vars {
                let escaped = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
                    .replace('$', "\\$")
                    .replace('`', "\\`");
                text.push_str(&format!("{k}=\"{escaped}\"\n"));
            }
        }
        ExportFormat::Json => {
            let m: BTreeMap<&str, &str> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            text.push_str(&serde_json::to_string_pretty(&m)?);
            text.push('\n');
        }
    }
    write_private(None, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(env_name("db_password"), "DB_PASSWORD");
        assert_eq!(env_name("smtp/pass-word.v2"), "SMTP_PASS_WORD_V2");
        assert_eq!(env_name("1key"), "_1KEY");
    }

    #[test]
    fn vars_flatten_objects_and_detect_collisions() {
        let v = json!({"billing/db": "x", "billing/smtp": {"user": "u", "port": 25}});
        let vars = to_env_vars(&v, "billing/").unwrap();
        assert_eq!(vars["DB"].as_str(), "x");
        assert_eq!(vars["SMTP_USER"].as_str(), "u");
        assert_eq!(vars["SMTP_PORT"].as_str(), "25");
        let clash = json!({"a/b-c": "1", "a/b_c": "2"});
        assert!(to_env_vars(&clash, "a/").is_err());
    }
}
