//! `steward checks list|show|run` and `steward beat`: health checks from the command line.
//! Every listing takes `-o json`; human output is one line per item.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::{
    cli::{ChecksCommand, Output},
    client::Client,
    commands::print_json,
};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.1}ms"))
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.3}%", x * 100.0))
}

/// One line for a run: `ok 12.3ms` or `FAIL 5000.0ms: no answer within 5s`.
fn run_line(r: &Value) -> String {
    let ok = r["ok"].as_bool().unwrap_or(false);
    let mut line = format!(
        "{} {}",
        if ok { "ok" } else { "FAIL" },
        ms(&r["duration_ms"])
    );
    if let Some(e) = r["error"].as_str() {
        line.push_str(": ");
        line.push_str(e);
    }
    line
}

/// `steward checks ...`.
pub async fn checks(c: &Client, cmd: ChecksCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ChecksCommand::List => {
            let v = c.call("GET", "/v1/checks", None).await?;
            let list = &v["data"]["checks"];
            match out {
                Output::Json => print_json(list),
                Output::Human => {
                    let items = list.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("no checks configured (add [[monitoring.checks]] to the config)");
                    }
                    for ch in items {
                        let last = if ch["last"].is_null() {
                            "not run yet".to_string()
                        } else {
                            format!("{} at {}", run_line(&ch["last"]), s(&ch["last"]["at"]))
                        };
                        println!(
                            "{:<24} {:<9} {:<8} {}",
                            s(&ch["name"]),
                            s(&ch["type"]),
                            s(&ch["health"]),
                            last
                        );
                    }
                }
            }
        }
        ChecksCommand::Show { name, res, buckets } => {
            let v = c
                .call(
                    "GET",
                    &format!("/v1/checks/{name}?res={res}&buckets={buckets}"),
                    None,
                )
                .await?;
            let d = &v["data"];
            match out {
                Output::Json => print_json(d),
                Output::Human => {
                    let ch = &d["check"];
                    println!("check:      {} ({})", s(&ch["name"]), s(&ch["type"]));
                    println!(
                        "state:      {} since {}",
                        s(&ch["health"]),
                        ch["since"].as_str().unwrap_or("-")
                    );
                    println!("condition:  {}", s(&ch["condition"]));
                    println!("every:      {}s", ch["interval_s"]);
                    if let Some(deps) = ch["depends_on"].as_array().filter(|a| !a.is_empty()) {
                        let names: Vec<&str> = deps.iter().filter_map(Value::as_str).collect();
                        println!("depends on: {}", names.join(", "));
                    }
                    if !ch["last"].is_null() {
                        println!(
                            "last run:   {} at {}",
                            run_line(&ch["last"]),
                            s(&ch["last"]["at"])
                        );
                        if let Some(facts) = ch["last"]["facts"].as_object() {
                            for (k, v) in facts {
                                let shown = match v {
                                    Value::String(t) => t.clone(),
                                    other => other.to_string(),
                                };
                                let mut shown = shown.replace('\n', " ");
                                if shown.len() > 100 {
                                    shown.truncate(97);
                                    shown.push_str("...");
                                }
                                println!("  {k} = {shown}");
                            }
                        }
                    }
                    println!("\n{res:<8} runs    uptime      p50      p95      p99");
                    for r in d["rollups"].as_array().cloned().unwrap_or_default() {
                        println!(
                            "{}  {:>5}  {:>9}  {:>7}  {:>7}  {:>7}",
                            s(&r["start"]),
                            r["runs"],
                            pct(&r["uptime"]),
                            ms(&r["p50_ms"]),
                            ms(&r["p95_ms"]),
                            ms(&r["p99_ms"])
                        );
                    }
                    println!("\nlatest runs:");
                    for r in d["latest"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .take(10)
                    {
                        println!("  {}  {}", s(&r["at"]), run_line(r));
                    }
                }
            }
        }
        ChecksCommand::Slos => {
            let v = c.call("GET", "/v1/slos", None).await?;
            let list = &v["data"]["slos"];
            match out {
                Output::Json => print_json(list),
                Output::Human => {
                    let items = list.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("no SLOs configured (add [[monitoring.slos]] to the config)");
                    }
                    for slo in items {
                        let burn: Vec<String> = slo["burn"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .map(|b| format!("{}={:.1}", s(&b[0]), b[1].as_f64().unwrap_or(0.0)))
                            .collect();
                        let burning = slo["burning"]
                            .as_array()
                            .filter(|a| !a.is_empty())
                            .map(|a| {
                                let v: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
                                format!("  BURNING ({})", v.join(", "))
                            })
                            .unwrap_or_default();
                        println!(
                            "{:<24} objective {}  attained {}  budget left {:.1}%  burn {}{}",
                            s(&slo["name"]),
                            pct(&slo["objective"]),
                            pct(&slo["attained"]),
                            slo["budget_left"].as_f64().unwrap_or(0.0) * 100.0,
                            burn.join(" "),
                            burning
                        );
                    }
                }
            }
        }
        ChecksCommand::Run { name } => {
            let v = c
                .call("POST", &format!("/v1/checks/{name}/run"), Some(json!({})))
                .await?;
            let r = &v["data"]["run"];
            match out {
                Output::Json => print_json(r),
                Output::Human => println!("{name}: {}", run_line(r)),
            }
            if !r["ok"].as_bool().unwrap_or(false) {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward beat NAME [--fail] [--message M]`.
pub async fn beat(c: &Client, name: &str, ok: bool, message: Option<String>) -> anyhow::Result<()> {
    c.call(
        "POST",
        &format!("/v1/checks/{name}/beat"),
        Some(json!({ "ok": ok, "message": message })),
    )
    .await?;
    Ok(())
}
