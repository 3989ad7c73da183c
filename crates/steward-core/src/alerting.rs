//! `[alerting]`: the alerting pipeline's configuration as written in `steward.toml`. The
//! shapes follow Alertmanager's (route tree, receivers, inhibit rules), in TOML; matchers use
//! Alertmanager's syntax (`name="value"`, `!=`, `=~`, `!~`). `steward-alerting` compiles and
//! checks them (matchers, receiver and channel names, cron and time zones) at startup.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::config::de_duration;

/// The whole `[alerting]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Steward's URL as people reach it; put in notifications as `externalURL`.
    pub external_url: String,
    /// An alert posted without `endsAt` resolves this long after it was last posted.
    #[serde(deserialize_with = "de_duration")]
    pub resolve_timeout: Duration,
    /// Adds the built-in rules that turn Steward's own events (failed rotations, expiring
    /// secrets) into alerts. Rules in `rules` with the same event replace a built-in one.
    pub default_rules: bool,
    pub route: RouteConfig,
    pub receivers: Vec<ReceiverConfig>,
    pub channels: Vec<ChannelConfig>,
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    pub rules: Vec<EventRuleConfig>,
    pub maintenance: Vec<MaintenanceConfig>,
    pub delivery: DeliveryConfig,
    pub heartbeat: Option<HeartbeatConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            external_url: String::new(),
            resolve_timeout: Duration::from_secs(300),
            default_rules: true,
            route: RouteConfig::default(),
            receivers: Vec::new(),
            channels: Vec::new(),
            inhibit_rules: Vec::new(),
            rules: Vec::new(),
            maintenance: Vec::new(),
            delivery: DeliveryConfig::default(),
            heartbeat: None,
        }
    }
}

/// One node of the routing tree. Unset fields inherit from the parent; the root's defaults
/// are Alertmanager's (group_wait 30s, group_interval 5m, repeat_interval 4h).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub receiver: Option<String>,
    /// All must match (`name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`).
    pub matchers: Vec<String>,
    /// Labels that split alerts into groups; `["..."]` groups by every label.
    pub group_by: Option<Vec<String>>,
    #[serde(deserialize_with = "de_opt_duration")]
    pub group_wait: Option<Duration>,
    #[serde(deserialize_with = "de_opt_duration")]
    pub group_interval: Option<Duration>,
    #[serde(deserialize_with = "de_opt_duration")]
    pub repeat_interval: Option<Duration>,
    /// Keep looking at the following sibling routes after this one matched.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
    pub routes: Vec<RouteConfig>,
}

/// A named set of channels, with optional escalation steps.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    pub name: String,
    /// Notified at once.
    pub channels: Vec<String>,
    /// Later steps, each notified when the group is still firing and unacknowledged `after`
    /// its first notification.
    pub escalation: Vec<EscalationStep>,
}

/// One escalation step.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    #[serde(deserialize_with = "de_duration")]
    pub after: Duration,
    pub channels: Vec<String>,
}

/// One channel: a name, a `type` and the type's settings (checked by the channel).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub settings: BTreeMap<String, toml::Value>,
}

/// Mutes new notifications of `target` alerts while a `source` alert fires with the same
/// values of `equal` (a database down silences the app alerts that depend on it).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InhibitRuleConfig {
    pub source_matchers: Vec<String>,
    pub target_matchers: Vec<String>,
    pub equal: Vec<String>,
}

/// Turns Steward's events into alerts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventRuleConfig {
    /// The event kind that raises the alert (e.g. `rotation.failed`).
    pub event: String,
    /// The event kind that resolves it (for the same env and path); none: the alert resolves
    /// `resolve_after` after the last raising event.
    #[serde(default)]
    pub resolve_event: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub resolve_after: Option<Duration>,
    pub alertname: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Values may use `{env}`, `{path}`, `{kind}` and `{detail.FIELD}`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The alert stays pending this long before it fires.
    #[serde(default = "zero", rename = "for", deserialize_with = "de_duration")]
    pub for_duration: Duration,
    /// Raising events needed (in a row, without a resolving one) before the alert is raised.
    #[serde(default = "one")]
    pub fail_after: u32,
    /// Resolving events needed in a row before the alert resolves.
    #[serde(default = "one")]
    pub recover_after: u32,
    /// `alert` (default) or `change`: a change is sent once as an informational notification
    /// (PagerDuty change events) to the receiver its labels route to, never as an incident.
    #[serde(default = "alert_kind")]
    pub kind: String,
}

/// A recurring maintenance window from the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    pub name: String,
    /// Cron expression (5 fields, or 6 with seconds) for each window's start.
    pub cron: String,
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
    /// IANA time zone the cron expression is read in.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Alerts it mutes; empty mutes every alert.
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub comment: String,
    /// Shown on the public status page (name, comment, times; never matchers). Default false.
    #[serde(default)]
    pub public: bool,
}

/// `[alerting.delivery]`: the outbox.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts before a notification goes to the dead letters.
    pub max_attempts: u32,
    #[serde(deserialize_with = "de_duration")]
    pub retry_base: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// How long the notification log keeps entries.
    #[serde(deserialize_with = "de_duration")]
    pub log_retention: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            concurrency: 8,
            log_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// `[alerting.heartbeat]`: a dead man's switch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Where to POST while the pipeline is healthy (not secret).
    #[serde(default)]
    pub url: Option<String>,
    /// Or a Steward secret reference holding the URL.
    #[serde(default)]
    pub url_secret: Option<String>,
    #[serde(default = "minute", deserialize_with = "de_duration")]
    pub interval: Duration,
}

fn zero() -> Duration {
    Duration::ZERO
}
fn minute() -> Duration {
    Duration::from_secs(60)
}
fn one() -> u32 {
    1
}
fn utc() -> String {
    "UTC".into()
}
fn alert_kind() -> String {
    "alert".into()
}

pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_full_alerting_section_parses() {
        let text = r#"
[alerting]
external_url = "http://steward.example"
[alerting.route]
receiver = "hook"
group_by = ["alertname"]
group_wait = "10s"
[[alerting.route.routes]]
matchers = ['severity="critical"']
receiver = "oncall"
continue = true
[[alerting.receivers]]
name = "hook"
channels = ["hook"]
[[alerting.receivers]]
name = "oncall"
channels = ["hook"]
escalation = [{ after = "10m", channels = ["pd"] }]
[[alerting.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/"
[[alerting.rules]]
event = "rotation.failed"
resolve_event = "rotation.finished"
alertname = "RotationFailed"
for = "1m"
[[alerting.maintenance]]
name = "nightly"
cron = "0 2 * * *"
duration = "1h"
timezone = "Europe/Berlin"
"#;
        let c = Config::parse(text, "steward.toml").unwrap();
        let a = &c.alerting;
        assert_eq!(a.route.group_wait, Some(std::time::Duration::from_secs(10)));
        assert!(a.route.routes[0].continue_matching);
        assert_eq!(a.receivers[1].escalation[0].channels, ["pd"]);
        assert_eq!(
            a.channels[0].settings["url"].as_str(),
            Some("http://127.0.0.1:9/")
        );
        assert_eq!(a.rules[0].for_duration.as_secs(), 60);
        assert_eq!(a.rules[0].fail_after, 1);
        assert_eq!(a.maintenance[0].timezone, "Europe/Berlin");
    }

    #[test]
    fn unknown_keys_and_bad_durations_name_the_line() {
        let e = Config::parse("[alerting.route]\ngroup_wait = \"soon\"\n", "s.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = Config::parse("[alerting]\nroutes = 1\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("routes"), "{e}");
    }
}
