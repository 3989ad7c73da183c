//! Compiles `[alerting]` ([`AlertingConfig`]) into what the pipeline evaluates, checking every
//! cross-reference (receivers, channels, matchers, cron, time zones) so mistakes stop startup
//! with the key that is wrong.

use std::{collections::HashMap, sync::Arc, time::Duration};

use steward_core::alerting::{AlertingConfig, EventRuleConfig};

use crate::{
    channels::{self, Channel},
    mutes::{CompiledWindow, InhibitRule, Maintenance},
    route::Route,
    ConfigError,
};

/// A receiver: step 0 is `channels` (at once), then each escalation step.
#[derive(Debug, Clone)]
pub struct ReceiverDef {
    pub steps: Vec<(Duration, Vec<String>)>,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub route: Route,
    pub receivers: HashMap<String, ReceiverDef>,
    pub inhibit: Vec<InhibitRule>,
    pub windows: Vec<CompiledWindow>,
    pub rules: Vec<EventRuleConfig>,
    pub external_url: String,
    pub resolve_timeout: Duration,
}

/// Built-in rules for Steward's own events, used when `default_rules` is on.
pub fn default_rules() -> Vec<EventRuleConfig> {
    let rule =
        |event: &str, resolve: &str, name: &str, severity: &str, summary: &str| EventRuleConfig {
            event: event.into(),
            resolve_event: Some(resolve.into()),
            resolve_after: None,
            alertname: name.into(),
            labels: [("severity".to_string(), severity.to_string())]
                .into_iter()
                .collect(),
            annotations: [("summary".to_string(), summary.to_string())]
                .into_iter()
                .collect(),
            for_duration: Duration::ZERO,
            fail_after: 1,
            recover_after: 1,
            kind: "alert".into(),
        };
    let mut rules = vec![
        rule(
            "rotation.failed",
            "rotation.finished",
            "RotationFailed",
            "warning",
            "Rotation of {env}/{path} failed: {detail.reason}",
        ),
        rule(
            "rotation.retire_failed",
            "rotation.retired",
            "RotationRetireFailed",
            "warning",
            "The previous credential of {env}/{path} could not be revoked: {detail.reason}",
        ),
        rule(
            "rotation.overdue",
            "rotation.finished",
            "RotationOverdue",
            "warning",
            "Rotation of {env}/{path} is overdue",
        ),
        rule(
            "secret.expiring",
            "secret.written",
            "SecretExpiring",
            "warning",
            "{env}/{path} expires at {detail.expires_at}",
        ),
        rule(
            "secret.expired",
            "secret.written",
            "SecretExpired",
            "critical",
            "{env}/{path} expired at {detail.expires_at}",
        ),
    ];
    // Backups (steward-dr): identified by the source (or repository) in the event's detail.
    let on = |mut r: EventRuleConfig, label: &str| {
        r.labels
            .insert(label.to_string(), format!("{{detail.{label}}}"));
        r
    };
    for (event, resolve, name, severity, summary, label) in [
        ("backup.failed", "backup.succeeded", "BackupFailed", "critical", "The backup of {detail.source} failed: {detail.reason}", "source"),
        ("backup.missed", "backup.succeeded", "BackupMissed", "warning", "The backup of {detail.source} due at {detail.due_at} did not start", "source"),
        ("backup.size_changed", "backup.size_normal", "BackupSizeChanged", "warning", "The backup of {detail.source} is {detail.bytes} bytes, {detail.ratio} times the usual {detail.usual_bytes}", "source"),
        ("backup.copy_failed", "backup.copied", "BackupCopyFailed", "warning", "Copying the backup of {detail.source} to {detail.repository} failed: {detail.reason}", "source"),
        ("drill.failed", "drill.passed", "DrillFailed", "critical", "The restore drill of {detail.source} failed: {detail.reason}", "source"),
        ("dr.rpo_breached", "dr.rpo_met", "RpoBreached", "critical", "The recovery point of {detail.source} is {detail.rpo_seconds} s old, over the target {detail.target_seconds} s", "source"),
        ("dr.rto_breached", "dr.rto_met", "RtoBreached", "warning", "Restoring {detail.source} took {detail.rto_seconds} s, over the target {detail.target_seconds} s", "source"),
        ("backup.check_failed", "backup.check_passed", "BackupCheckFailed", "critical", "The check of backup repository {detail.repository} failed: {detail.reason}", "repository"),
    ] {
        rules.push(on(rule(event, resolve, name, severity, summary), label));
    }
    rules
}

impl Compiled {
    pub fn compile(cfg: &AlertingConfig) -> Result<Self, ConfigError> {
        let channel_names: Vec<String> = cfg.channels.iter().map(|c| c.name.clone()).collect();
        for (i, c) in cfg.channels.iter().enumerate() {
            if channel_names.iter().filter(|n| **n == c.name).count() > 1 {
                return Err(ConfigError::new(
                    format!("alerting.channels[{i}].name"),
                    format!("two channels are named {:?}; names must be unique", c.name),
                ));
            }
        }
        let mut receivers = HashMap::new();
        for (i, r) in cfg.receivers.iter().enumerate() {
            let key = format!("alerting.receivers[{i}]");
            if r.name.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    "a receiver needs a name",
                ));
            }
            if receivers.contains_key(&r.name) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("two receivers are named {:?}", r.name),
                ));
            }
            let mut steps = vec![(Duration::ZERO, r.channels.clone())];
            let mut last = Duration::ZERO;
            for (j, s) in r.escalation.iter().enumerate() {
                if s.after <= last {
                    return Err(ConfigError::new(
                        format!("{key}.escalation[{j}].after"),
                        "escalation steps must come later than the previous one (e.g. \"10m\", then \"30m\")",
                    ));
                }
                last = s.after;
                steps.push((s.after, s.channels.clone()));
            }
            for (j, (_, chans)) in steps.iter().enumerate() {
                for ch in chans {
                    if !channel_names.contains(ch) {
                        let k = if j == 0 {
                            format!("{key}.channels")
                        } else {
                            format!("{key}.escalation[{}].channels", j - 1)
                        };
                        return Err(ConfigError::new(
                            k,
                            format!("no channel is named {ch:?}; add [[alerting.channels]] name = {ch:?}"),
                        ));
                    }
                }
            }
            receivers.insert(r.name.clone(), ReceiverDef { steps });
        }
        let names: Vec<String> = cfg.receivers.iter().map(|r| r.name.clone()).collect();
        let route = if cfg.receivers.is_empty() && cfg.route.receiver.is_none() {
            // Nothing configured: one empty receiver, so alerts are still listed and silenced.
            receivers.insert(
                "default".into(),
                ReceiverDef {
                    steps: vec![(Duration::ZERO, vec![])],
                },
            );
            let mut r = cfg.route.clone();
            r.receiver = Some("default".into());
            Route::compile(&r, &["default".to_string()])?
        } else {
            Route::compile(&cfg.route, &names)?
        };
        let inhibit = cfg
            .inhibit_rules
            .iter()
            .enumerate()
            .map(|(i, r)| InhibitRule::compile(r, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut windows = Vec::new();
        for (i, m) in cfg.maintenance.iter().enumerate() {
            windows.push(CompiledWindow::compile(
                Maintenance {
                    id: format!("config:{}", m.name),
                    name: m.name.clone(),
                    matchers: m.matchers.clone(),
                    starts_at: None,
                    ends_at: None,
                    cron: Some(m.cron.clone()),
                    duration_secs: Some(m.duration.as_secs()),
                    timezone: Some(m.timezone.clone()),
                    comment: m.comment.clone(),
                    created_by: "config".into(),
                    public: m.public,
                },
                &format!("alerting.maintenance[{i}]"),
            )?);
        }
        let mut rules = if cfg.default_rules {
            default_rules()
        } else {
            Vec::new()
        };
        for (i, r) in cfg.rules.iter().enumerate() {
            let key = format!("alerting.rules[{i}]");
            if r.alertname.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.alertname"),
                    "a rule needs an alertname",
                ));
            }
            if r.fail_after == 0 || r.recover_after == 0 {
                return Err(ConfigError::new(
                    key,
                    "fail_after and recover_after start at 1",
                ));
            }
            if r.kind != "alert" && r.kind != "change" {
                return Err(ConfigError::new(
                    format!("{key}.kind"),
                    format!(
                        "{:?} is not a rule kind; use \"alert\" or \"change\"",
                        r.kind
                    ),
                ));
            }
            rules.retain(|d| d.event != r.event);
        }
        rules.extend(cfg.rules.iter().cloned());
        Ok(Self {
            route,
            receivers,
            inhibit,
            windows,
            rules,
            external_url: cfg.external_url.clone(),
            resolve_timeout: cfg.resolve_timeout,
        })
    }
}

/// Checks a configuration fully (compiles it and builds its channels) without starting
/// anything: what `steward config check` and `up` report before serving.
pub fn check(cfg: &AlertingConfig) -> Result<(), ConfigError> {
    prepare(cfg, &reqwest::Client::new()).map(drop)
}

/// Channels by name.
pub type Channels = HashMap<String, Arc<dyn Channel>>;

/// Compiles the config and builds its channels on `http`.
pub fn prepare(
    cfg: &AlertingConfig,
    http: &reqwest::Client,
) -> Result<(Compiled, Channels), ConfigError> {
    let compiled = Compiled::compile(cfg)?;
    let channels = build_channels(cfg, http)?;
    if let Some(h) = &cfg.heartbeat {
        if h.url.is_none() == h.url_secret.is_none() {
            return Err(ConfigError::new(
                "alerting.heartbeat",
                "set exactly one of url and url_secret",
            ));
        }
    }
    Ok((compiled, channels))
}

/// Builds every configured channel.
pub fn build_channels(
    cfg: &AlertingConfig,
    http: &reqwest::Client,
) -> Result<Channels, ConfigError> {
    let mut out = HashMap::new();
    for (i, c) in cfg.channels.iter().enumerate() {
        let settings = serde_json::to_value(&c.settings)
            .map_err(|e| ConfigError::new(format!("alerting.channels[{i}]"), e.to_string()))?;
        let ch = channels::build(&c.name, &c.kind, &settings, http).map_err(|e| {
            ConfigError::new(format!("alerting.channels[{i}].{}", e.key), e.message)
        })?;
        out.insert(c.name.clone(), ch);
    }
    Ok(out)
}
