//! `[backup]`: backup repositories, the sources backed up into them, their schedules,
//! retention, off-site copies, restore drills and the recovery targets (RPO, RTO) the DR
//! plan promises, as written in `steward.toml`. `steward-dr` compiles and checks them
//! (source settings, schedules, repository names, secret references) at startup.
//!
//! ```toml
//! [[backup.repositories]]
//! name = "main"
//! location = "/var/lib/steward/backups"          # or "s3:https://host/bucket/prefix"
//! password_secret = "ops/backup/main#password"   # a Steward secret, never plaintext
//!
//! [[backup.sources]]
//! name = "app-db"
//! type = "postgres"
//! repository = "main"
//! schedule = "0 3 * * *"                         # cron (UTC), or "every 6h"
//! host = "127.0.0.1"
//! database = "app"
//! password_secret = "prod/db/backup#password"
//! retention = { keep_daily = 14, keep_weekly = 8, keep_monthly = 12 }
//! rpo_target = "26h"
//! rto_target = "15m"
//! [backup.sources.drill]
//! schedule = "0 5 * * *"
//! assertions = [{ sql = "SELECT id FROM users", expect = "rows >= 1" }]
//! ```

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::{alerting::de_opt_duration, config::de_duration};

/// The whole `[backup]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Backups and drills that run at once.
    pub concurrency: usize,
    /// When each repository is checked (structure, and a rotating share of its data) and
    /// pruned: a cron expression (UTC) or `every DURATION`.
    pub check_schedule: String,
    /// The share of pack data read by each scheduled check is 1/`read_data_days`, a
    /// different share each day, so that every pack is read once in that many days.
    pub read_data_days: u32,
    /// A backup whose size differs from the median of the source's recent backups by more
    /// than this factor (larger or smaller) raises `BackupSizeChanged`.
    pub size_change_factor: f64,
    /// A scheduled backup that has not started this long after it was due is missed.
    #[serde(deserialize_with = "de_duration")]
    pub missed_grace: Duration,
    /// Runs kept per source and kind (backup, drill) in the run history.
    pub history: usize,
    pub repositories: Vec<RepositoryConfig>,
    pub sources: Vec<SourceConfig>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            check_schedule: "0 4 * * *".into(),
            read_data_days: 30,
            size_change_factor: 3.0,
            missed_grace: Duration::from_secs(3600),
            history: 200,
            repositories: Vec::new(),
            sources: Vec::new(),
        }
    }
}

/// Where backups are stored.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub name: String,
    /// A local directory, or `s3:http(s)://host[:port]/bucket[/prefix]`.
    pub location: String,
    /// `ENV/PATH#FIELD` of the Steward secret holding the repository password.
    pub password_secret: String,
    /// For S3: secrets holding the access key id and secret access key.
    #[serde(default)]
    pub access_key_id_secret: Option<String>,
    #[serde(default)]
    pub secret_access_key_secret: Option<String>,
    /// For S3: the region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Create the repository on first use when it does not exist (default true).
    #[serde(default = "yes")]
    pub create: bool,
}

fn yes() -> bool {
    true
}

/// Which snapshots of a source are kept. The keep rules apply to the source's backups;
/// `pitr` keeps, for a PostgreSQL source with WAL archiving, every base backup and WAL
/// segment needed to restore to any point in that window.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    #[serde(deserialize_with = "de_opt_duration")]
    pub pitr: Option<Duration>,
}

/// One source: what is backed up, where, and when. Keys other than the ones below are the
/// source type's settings (e.g. `host`, `database`, `paths`), checked when the config loads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    /// `postgres`, `mariadb`, `redis`, `sqlite`, `directory` or `steward` (Steward's own
    /// store).
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository's name (default: the only repository, when there is one).
    #[serde(default)]
    pub repository: Option<String>,
    /// When it is backed up: a cron expression (UTC) or `every DURATION`. Without one the
    /// source is backed up only on `steward backup run`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Repositories each new snapshot is copied to (off-site copies).
    #[serde(default)]
    pub copy_to: Vec<String>,
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
    /// The recovery point objective: the newest backup whose drill passed (or, without
    /// drills, the newest backup) may be at most this old.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub rpo_target: Option<Duration>,
    /// The recovery time objective: the restore measured by the last drill may take at most
    /// this long.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub rto_target: Option<Duration>,
    /// Overrides `[backup] size_change_factor` for this source.
    #[serde(default)]
    pub size_change_factor: Option<f64>,
    /// Alert matchers (e.g. `check="app-db"`) muted while the backup runs: the checks a
    /// backup would disturb. The window opens when the backup starts and closes when it ends.
    #[serde(default)]
    pub maintenance: Vec<String>,
    #[serde(default)]
    pub drill: Option<DrillConfig>,
    /// The source type's settings.
    #[serde(flatten)]
    pub settings: BTreeMap<String, toml::Value>,
}

/// A restore drill of a database source: restore the newest backup into a scratch database
/// on a schedule, check it, drop it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// When the drill runs (cron, UTC, or `every DURATION`); without one, only on
    /// `steward drill run`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The scratch server (default: the source's own server and login).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_secret: Option<String>,
    /// Queries run on the restored database: `expect` is the exact first value (`"42"`) or
    /// `"rows >= N"`.
    #[serde(default)]
    pub assertions: Vec<AssertionConfig>,
    /// Run `amcheck` on the restored PostgreSQL database when available (default true).
    #[serde(default = "yes")]
    pub amcheck: bool,
    /// `mode = "base"` sources: the point recovered, `"latest"` (the end of the WAL
    /// archive, the default) or a duration before the drill (`"1h"`).
    #[serde(default)]
    pub point: Option<String>,
    /// `mode = "base"` sources: the OS user the throwaway cluster runs as when Steward
    /// runs as root (default `postgres`).
    #[serde(default)]
    pub os_user: Option<String>,
    /// `mode = "base"` sources: the directory of the PostgreSQL server binaries
    /// (default `/usr/lib/postgresql/<version>/bin`).
    #[serde(default)]
    pub pg_bin: Option<String>,
    /// `mode = "base"` sources: where the throwaway cluster is made (default: the
    /// system's temporary directory).
    #[serde(default)]
    pub scratch_dir: Option<String>,
    /// `mode = "base"` sources: how long starting the cluster and recovering may take
    /// (default `30m`).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
}

/// One drill assertion.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    pub sql: String,
    pub expect: String,
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_backup_section_parses_with_settings_kept_for_the_source_type() {
        let text = r#"
[[backup.repositories]]
name = "main"
location = "/srv/backups"
password_secret = "ops/backup#password"

[[backup.sources]]
name = "app-db"
type = "postgres"
schedule = "0 3 * * *"
host = "127.0.0.1"
database = "app"
retention = { keep_daily = 14, pitr = "7d" }
rpo_target = "26h"
[backup.sources.drill]
assertions = [{ sql = "SELECT 1", expect = "1" }]
"#;
        let cfg = Config::parse(text, "steward.toml").unwrap();
        let b = &cfg.backup;
        assert_eq!(b.repositories[0].name, "main");
        assert!(b.repositories[0].create);
        let s = &b.sources[0];
        assert_eq!(s.kind, "postgres");
        assert_eq!(s.settings["database"].as_str(), Some("app"));
        assert!(!s.settings.contains_key("schedule"));
        let r = s.retention.as_ref().unwrap();
        assert_eq!(r.keep_daily, 14);
        assert_eq!(r.pitr, Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(
            s.rpo_target,
            Some(std::time::Duration::from_secs(26 * 3600))
        );
        let d = s.drill.as_ref().unwrap();
        assert!(d.amcheck);
        assert_eq!(d.assertions[0].expect, "1");
    }

    #[test]
    fn an_unknown_key_in_a_repository_is_reported_with_its_line() {
        let text = "[[backup.repositories]]\nname = \"main\"\nlocation = \"/x\"\npassword_secret = \"a/b#c\"\npasword = \"oops\"\n";
        let e = Config::parse(text, "steward.toml").unwrap_err();
        assert!(e.message.contains("pasword"), "{e}");
        assert_eq!(e.line, 5, "{e}");
    }
}
