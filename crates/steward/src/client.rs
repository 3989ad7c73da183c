//! The HTTP client the CLI commands use to talk to a running server.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use steward_core::config::Config;

use crate::{cli::Global, settings::root_token_path};

/// An error answer from the server (exit code by status, see `commands::exit_code_for`).
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{} {}]", self.message, self.status, self.code)
    }
}

impl std::error::Error for ApiFailure {}

/// The server could not be reached (exit code 7).
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// Server address from --addr/STEWARD_ADDR or the configured listen address; token from
    /// STEWARD_TOKEN or the root token file in the data directory.
    pub fn new(global: &Global, cfg: &Config) -> anyhow::Result<Self> {
        let base = global
            .addr
            .clone()
            .unwrap_or_else(|| format!("http://{}", cfg.server.listen))
            .trim_end_matches('/')
            .to_string();
        let token = std::env::var("STEWARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| {
                std::fs::read_to_string(root_token_path(cfg))
                    .ok()
                    .map(|t| t.trim().to_string())
            });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base, token })
    }

    /// Sends a request and returns the JSON answer (Null for 204).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (_, text) = self.send(method, path, body).await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the server answered with invalid JSON")
    }

    /// Sends a request and returns headers and body text.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, String)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).context("bad HTTP method")?;
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            Unreachable(format!(
                "cannot reach the Steward server at {} ({}); is `steward up` running? set STEWARD_ADDR to point elsewhere",
                self.base,
                e.without_url()
            ))
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.context("reading the server's answer")?;
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let err = &v["error"];
            return Err(ApiFailure {
                status: status.as_u16(),
                code: err["code"].as_str().unwrap_or("unknown").to_string(),
                message: err["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("the server answered {status}")),
            }
            .into());
        }
        Ok((headers, text))
    }
}
