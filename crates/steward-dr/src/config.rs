//! Compiles `[backup]` ([`steward_core::backup::BackupConfig`]) into what the service runs:
//! repositories and sources by index, parsed schedules, each source type's settings read
//! and checked (unknown keys rejected, secret references checked for shape), matchers
//! parsed. Every error names the key (`backup.sources[2].database`) and how to fix it.

use std::{path::PathBuf, time::Duration};

use steward_core::{
    backup::{BackupConfig, RetentionConfig},
    settings::{is_secret_ref, Settings, SettingsError},
};

use crate::schedule::When;

/// A configuration problem: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<SettingsError> for ConfigError {
    fn from(e: SettingsError) -> Self {
        ConfigError::new(e.key, e.message)
    }
}

impl steward_core::settings::ConfigError for ConfigError {
    const NOUN: &'static str = "backup source";
}

/// Where Steward's own store lives, for sources of type `steward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnStore {
    /// The SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL store.
    Postgres {
        host: String,
        port: u16,
        user: String,
        database: String,
    },
}

/// A repository as configured.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    pub name: String,
    pub location: String,
    pub password_secret: String,
    pub access_key_id_secret: Option<String>,
    pub secret_access_key_secret: Option<String>,
    pub region: Option<String>,
    pub create: bool,
}

impl RepoSpec {
    pub fn is_s3(&self) -> bool {
        self.location.starts_with("s3:")
    }
}

/// A database server and login (the password is a secret reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password_secret: Option<String>,
}

/// What a source backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// `base`: physical base backups with `pg_basebackup` (for point-in-time recovery,
    /// with WAL archived by `steward repo wal-push`); otherwise logical dumps.
    Postgres {
        server: Server,
        database: String,
        base: bool,
    },
    MariaDb {
        server: Server,
        database: String,
    },
    Redis {
        server: Server,
        db: u32,
    },
    Sqlite {
        path: PathBuf,
    },
    Directory {
        paths: Vec<PathBuf>,
        excludes: Vec<String>,
    },
}

impl What {
    /// `postgres`, `mariadb`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            What::Postgres { .. } => "postgres",
            What::MariaDb { .. } => "mariadb",
            What::Redis { .. } => "redis",
            What::Sqlite { .. } => "sqlite",
            What::Directory { .. } => "directory",
        }
    }

    /// The database server of a PostgreSQL or MariaDB source.
    pub fn database_server(&self) -> Option<&Server> {
        match self {
            What::Postgres { server, .. } | What::MariaDb { server, .. } => Some(server),
            _ => None,
        }
    }

    /// Whether it restores into a database of a running server (logical dumps).
    pub fn restores_into_database(&self) -> bool {
        matches!(
            self,
            What::Postgres { base: false, .. } | What::MariaDb { .. }
        )
    }
}

/// A drill as configured.
#[derive(Debug, Clone)]
pub struct DrillSpec {
    pub schedule: Option<When>,
    pub schedule_text: Option<String>,
    pub server: Server,
    pub assertions: Vec<steward_backup::Assertion>,
    pub amcheck: bool,
    /// `mode = "base"` sources: how the throwaway cluster is recovered.
    pub pitr: Option<PitrDrillSpec>,
}

/// A PITR drill's settings (`mode = "base"` sources).
#[derive(Debug, Clone, PartialEq)]
pub struct PitrDrillSpec {
    /// Recover to this long before the drill; `None`: to the end of the archive.
    pub point_ago: Option<Duration>,
    pub os_user: Option<String>,
    pub pg_bin: Option<PathBuf>,
    pub scratch_dir: Option<PathBuf>,
    pub timeout: Duration,
}

/// A source as configured.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    /// The type as written (`steward` for Steward's own store).
    pub type_name: String,
    pub what: What,
    pub repository: usize,
    pub schedule: Option<When>,
    pub schedule_text: Option<String>,
    pub copy_to: Vec<usize>,
    pub retention: Option<RetentionConfig>,
    pub rpo_target: Option<Duration>,
    pub rto_target: Option<Duration>,
    pub size_change_factor: f64,
    pub maintenance: Vec<String>,
    pub drill: Option<DrillSpec>,
}

/// `[backup]`, compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub repositories: Vec<RepoSpec>,
    pub sources: Vec<SourceSpec>,
    pub check_schedule: When,
    pub read_data_days: u32,
    pub missed_grace: Duration,
    pub concurrency: usize,
    pub history: usize,
}

impl Compiled {
    /// Compiles `cfg`; `own` says where Steward's store is (for `type = "steward"`).
    pub fn compile(cfg: &BackupConfig, own: &OwnStore) -> Result<Self, ConfigError> {
        if !(1..=64).contains(&cfg.concurrency) {
            return Err(ConfigError::new(
                "backup.concurrency",
                "must be between 1 and 64",
            ));
        }
        if !(1..=366).contains(&cfg.read_data_days) {
            return Err(ConfigError::new(
                "backup.read_data_days",
                "must be between 1 and 366 (30 reads the whole repository once a month)",
            ));
        }
        if !(cfg.size_change_factor > 1.0 && cfg.size_change_factor.is_finite()) {
            return Err(ConfigError::new(
                "backup.size_change_factor",
                "must be a number above 1 (e.g. 3.0: alert when a backup is 3 times larger or smaller than usual)",
            ));
        }
        if !(2..=100_000).contains(&cfg.history) {
            return Err(ConfigError::new(
                "backup.history",
                "must be between 2 and 100000",
            ));
        }
        let check_schedule = When::parse(&cfg.check_schedule)
            .map_err(|m| ConfigError::new("backup.check_schedule", m))?;
        let mut repositories: Vec<RepoSpec> = Vec::new();
        for (i, r) in cfg.repositories.iter().enumerate() {
            let key = |k: &str| format!("backup.repositories[{i}].{k}");
            check_name(&r.name).map_err(|m| ConfigError::new(key("name"), m))?;
            if repositories.iter().any(|x| x.name == r.name) {
                return Err(ConfigError::new(
                    key("name"),
                    format!(
                        "two repositories are named {:?}; names must be unique",
                        r.name
                    ),
                ));
            }
            if r.location.trim().is_empty() {
                return Err(ConfigError::new(
                    key("location"),
                    "is empty: give a directory or an s3:https://host/bucket/prefix URL",
                ));
            }
            check_ref(&r.password_secret)
                .map_err(|m| ConfigError::new(key("password_secret"), m))?;
            let s3 = r.location.starts_with("s3:");
            for (k, v) in [
                ("access_key_id_secret", &r.access_key_id_secret),
                ("secret_access_key_secret", &r.secret_access_key_secret),
            ] {
                match v {
                    Some(v) => check_ref(v).map_err(|m| ConfigError::new(key(k), m))?,
                    None if s3 => {
                        return Err(ConfigError::new(
                            key(k),
                            "is needed for an S3 repository: name the Steward secret holding the key (ENV/PATH#FIELD)",
                        ))
                    }
                    None => {}
                }
            }
            if s3 {
                // Only the URL is checked here (endpoint, bucket, prefix); the real keys are
                // secrets, read when the repository is opened.
                steward_repo_s3::S3Config::from_url(
                    &r.location,
                    None,
                    steward_repo_s3::S3Credentials::new("not-used", "not-used"),
                )
                .map_err(|e| ConfigError::new(key("location"), e.to_string()))?;
            } else if !r.location.starts_with('/') {
                return Err(ConfigError::new(
                    key("location"),
                    format!(
                        "{:?} is not an absolute path; write the directory's full path or an s3: URL",
                        r.location
                    ),
                ));
            }
            repositories.push(RepoSpec {
                name: r.name.clone(),
                location: r.location.clone(),
                password_secret: r.password_secret.clone(),
                access_key_id_secret: r.access_key_id_secret.clone(),
                secret_access_key_secret: r.secret_access_key_secret.clone(),
                region: r.region.clone(),
                create: r.create,
            });
        }
        let repo_index = |name: &str, key: String| {
            repositories
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| {
                    ConfigError::new(
                        key,
                        format!(
                            "no repository is named {name:?}; the repositories are: {}",
                            names(&repositories)
                        ),
                    )
                })
        };
        let mut sources: Vec<SourceSpec> = Vec::new();
        for (i, s) in cfg.sources.iter().enumerate() {
            let key = |k: &str| format!("backup.sources[{i}].{k}");
            check_name(&s.name).map_err(|m| ConfigError::new(key("name"), m))?;
            if sources.iter().any(|x| x.name == s.name) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("two sources are named {:?}; names must be unique", s.name),
                ));
            }
            let repository = match &s.repository {
                Some(r) => repo_index(r, key("repository"))?,
                None if repositories.len() == 1 => 0,
                None if repositories.is_empty() => {
                    return Err(ConfigError::new(
                        key("repository"),
                        "no repository is configured: add a [[backup.repositories]] table",
                    ))
                }
                None => {
                    return Err(ConfigError::new(
                        key("repository"),
                        format!(
                            "missing; there are several repositories, name one of: {}",
                            names(&repositories)
                        ),
                    ))
                }
            };
            let mut copy_to = Vec::new();
            for c in &s.copy_to {
                let j = repo_index(c, key("copy_to"))?;
                if j == repository {
                    return Err(ConfigError::new(
                        key("copy_to"),
                        format!("{c:?} is the source's own repository; copy to another one"),
                    ));
                }
                copy_to.push(j);
            }
            let (schedule, schedule_text) = match &s.schedule {
                Some(t) => (
                    Some(When::parse(t).map_err(|m| ConfigError::new(key("schedule"), m))?),
                    Some(t.clone()),
                ),
                None => (None, None),
            };
            let value = serde_json::to_value(&s.settings)
                .map_err(|e| ConfigError::new(key("settings"), format!("cannot be read: {e}")))?;
            let what = read_what(&s.name, &s.kind, &value, own).map_err(|e| ConfigError {
                key: key(&e.key),
                message: e.message,
            })?;
            let drill = match &s.drill {
                None => None,
                Some(d) => {
                    let dk = |k: &str| key(&format!("drill.{k}"));
                    let (server, pitr) = match &what {
                        What::Postgres {
                            server, base: false, ..
                        }
                        | What::MariaDb { server, .. } => {
                            refuse_set(
                                &dk,
                                &[
                                    ("point", d.point.is_some()),
                                    ("os_user", d.os_user.is_some()),
                                    ("pg_bin", d.pg_bin.is_some()),
                                    ("scratch_dir", d.scratch_dir.is_some()),
                                    ("timeout", d.timeout.is_some()),
                                ],
                                "is for drills of mode = \"base\" PostgreSQL sources (point-in-time recovery); remove it",
                            )?;
                            (server.clone(), None)
                        }
                        What::Postgres { server, base: true, .. } => {
                            refuse_set(
                                &dk,
                                &[
                                    ("host", d.host.is_some()),
                                    ("port", d.port.is_some()),
                                    ("password_secret", d.password_secret.is_some()),
                                ],
                                "a drill of a mode = \"base\" source starts its own throwaway cluster, reached over a private socket: remove it (set user to choose the role the checks connect as)",
                            )?;
                            let point_ago = match d.point.as_deref().map(str::trim) {
                                None | Some("latest") => None,
                                Some(p) => Some(humantime::parse_duration(p.trim_end_matches(" ago")).map_err(|_| {
                                    ConfigError::new(
                                        dk("point"),
                                        format!("{p:?} is not a point: use \"latest\" (the end of the WAL archive) or a duration before the drill such as \"1h\""),
                                    )
                                })?),
                            };
                            let pitr = PitrDrillSpec {
                                point_ago,
                                os_user: d.os_user.clone(),
                                pg_bin: d.pg_bin.as_ref().map(PathBuf::from),
                                scratch_dir: d.scratch_dir.as_ref().map(PathBuf::from),
                                timeout: d.timeout.unwrap_or(steward_backup::pitr_drill::DEFAULT_TIMEOUT),
                            };
                            (server.clone(), Some(pitr))
                        }
                        _ => {
                            return Err(ConfigError::new(
                                key("drill"),
                                format!(
                                    "drills restore databases (postgres, mariadb); a {} source cannot have one",
                                    s.kind
                                ),
                            ))
                        }
                    };
                    if let Some(p) = &d.password_secret {
                        check_ref(p).map_err(|m| ConfigError::new(dk("password_secret"), m))?;
                    }
                    let (schedule, schedule_text) = match &d.schedule {
                        Some(t) => (
                            Some(When::parse(t).map_err(|m| ConfigError::new(dk("schedule"), m))?),
                            Some(t.clone()),
                        ),
                        None => (None, None),
                    };
                    let mut assertions = Vec::new();
                    for (j, a) in d.assertions.iter().enumerate() {
                        if a.sql.trim().is_empty() {
                            return Err(ConfigError::new(
                                dk(&format!("assertions[{j}].sql")),
                                "is empty: write the query whose result is checked",
                            ));
                        }
                        assertions.push(steward_backup::Assertion {
                            name: a.sql.clone(),
                            sql: a.sql.clone(),
                            expect: steward_backup::Expect::parse(&a.expect),
                        });
                    }
                    Some(DrillSpec {
                        schedule,
                        schedule_text,
                        server: Server {
                            host: d.host.clone().unwrap_or(server.host),
                            port: d.port.unwrap_or(server.port),
                            password_secret: if d.user.is_some() {
                                d.password_secret.clone()
                            } else {
                                d.password_secret.clone().or(server.password_secret)
                            },
                            user: d.user.clone().unwrap_or(server.user),
                        },
                        assertions,
                        amcheck: d.amcheck,
                        pitr,
                    })
                }
            };
            if let Some(r) = &s.retention {
                if r.pitr.is_some() && !matches!(what, What::Postgres { base: true, .. }) {
                    return Err(ConfigError::new(
                        key("retention.pitr"),
                        "point-in-time windows are for PostgreSQL sources with mode = \"base\" (base backups and WAL)",
                    ));
                }
            }
            let factor = s.size_change_factor.unwrap_or(cfg.size_change_factor);
            if !(factor > 1.0 && factor.is_finite()) {
                return Err(ConfigError::new(
                    key("size_change_factor"),
                    "must be a number above 1",
                ));
            }
            steward_alerting::matchers::parse_list(&s.maintenance)
                .map_err(|e| ConfigError::new(key("maintenance"), e.to_string()))?;
            sources.push(SourceSpec {
                name: s.name.clone(),
                type_name: s.kind.clone(),
                what,
                repository,
                schedule,
                schedule_text,
                copy_to,
                retention: s.retention.clone(),
                rpo_target: s.rpo_target,
                rto_target: s.rto_target,
                size_change_factor: factor,
                maintenance: s.maintenance.clone(),
                drill,
            });
        }
        Ok(Compiled {
            repositories,
            sources,
            check_schedule,
            read_data_days: cfg.read_data_days,
            missed_grace: cfg.missed_grace,
            concurrency: cfg.concurrency,
            history: cfg.history,
        })
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<(usize, &SourceSpec)> {
        self.sources
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
    }
}

fn names(repos: &[RepoSpec]) -> String {
    if repos.is_empty() {
        return "(none)".into();
    }
    repos
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names go into snapshot tags and record ids: 1 to 100 of letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "{name:?} cannot be a name: use 1 to 100 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

fn check_ref(r: &str) -> Result<(), String> {
    if is_secret_ref(r.trim()) {
        Ok(())
    } else {
        Err("is not a secret reference; write ENV/PATH#FIELD (e.g. \"ops/backup/main#password\") and keep the credential in that Steward secret".into())
    }
}

fn server(
    s: &mut Settings<ConfigError>,
    default_port: u16,
    default_user: &str,
) -> Result<Server, ConfigError> {
    Ok(Server {
        host: s
            .opt_str("host")?
            .unwrap_or_else(|| "127.0.0.1".to_string()),
        port: s.opt_port("port")?.unwrap_or(default_port),
        user: s
            .opt_str("user")?
            .unwrap_or_else(|| default_user.to_string()),
        password_secret: s.opt_secret_ref("password_secret")?,
    })
}

/// Reads one source type's settings.
fn read_what(
    name: &str,
    kind: &str,
    value: &serde_json::Value,
    own: &OwnStore,
) -> Result<What, ConfigError> {
    let mut s = Settings::<ConfigError>::new(name, kind, value)?;
    let what = match kind {
        "postgres" => {
            let server = server(&mut s, 5432, "postgres")?;
            let database = s.req_str("database", "the database to back up")?;
            let base = match s.opt_str("mode")?.as_deref() {
                None | Some("logical") => false,
                Some("base") => true,
                Some(other) => {
                    return Err(s.error(
                        "mode",
                        format!("{other:?} is not a mode; use \"logical\" (pg_dump, the default) or \"base\" (pg_basebackup, for point-in-time recovery)"),
                    ))
                }
            };
            What::Postgres {
                server,
                database,
                base,
            }
        }
        "mariadb" | "mysql" => What::MariaDb {
            server: server(&mut s, 3306, "root")?,
            database: s.req_str("database", "the database to back up")?,
        },
        "redis" => {
            let server = server(&mut s, 6379, "")?;
            let db = s.u64("db", 0)?;
            What::Redis {
                server,
                db: u32::try_from(db).map_err(|_| s.error("db", "is too large"))?,
            }
        }
        "sqlite" => {
            let path = s.req_str("path", "the database file")?;
            if !path.starts_with('/') {
                return Err(s.error("path", "must be an absolute path"));
            }
            What::Sqlite { path: path.into() }
        }
        "directory" => {
            let paths = s
                .opt_str_list("paths")?
                .ok_or_else(|| s.missing("paths", "the directories and files to back up"))?;
            if let Some(p) = paths.iter().find(|p| !p.starts_with('/')) {
                return Err(s.error("paths", format!("{p:?} is not an absolute path")));
            }
            What::Directory {
                paths: paths.into_iter().map(PathBuf::from).collect(),
                excludes: s.opt_str_list("excludes")?.unwrap_or_default(),
            }
        }
        "steward" => match own {
            OwnStore::Sqlite(p) => What::Sqlite { path: p.clone() },
            OwnStore::Postgres {
                host,
                port,
                user,
                database,
            } => What::Postgres {
                server: Server {
                    host: host.clone(),
                    port: *port,
                    user: user.clone(),
                    password_secret: s.opt_secret_ref("password_secret")?,
                },
                database: database.clone(),
                base: false,
            },
        },
        other => {
            return Err(ConfigError::new(
                "type",
                format!(
                    "{other:?} is not a source type; use postgres, mariadb, redis, sqlite, directory or steward"
                ),
            ))
        }
    };
    s.finish()?;
    Ok(what)
}

/// Fails on the first of `keys` that is set, naming it: settings that do not apply here.
fn refuse_set(
    key: &dyn Fn(&str) -> String,
    keys: &[(&str, bool)],
    why: &str,
) -> Result<(), ConfigError> {
    match keys.iter().find(|(_, set)| *set) {
        Some((k, _)) => Err(ConfigError::new(key(k), why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Compiled, ConfigError> {
        let cfg = steward_core::config::Config::parse(text, "t.toml").unwrap();
        Compiled::compile(&cfg.backup, &OwnStore::Sqlite("/data/steward.db".into()))
    }

    const REPO: &str = "[[backup.repositories]]\nname = \"main\"\nlocation = \"/srv/b\"\npassword_secret = \"ops/b#pw\"\n";

    #[test]
    fn sources_compile_with_defaults_and_the_own_store() {
        let c = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"db\"\ntype = \"postgres\"\ndatabase = \"app\"\nschedule = \"0 3 * * *\"\n[backup.sources.drill]\nuser = \"drill\"\nassertions = [{{ sql = \"SELECT 1\", expect = \"1\" }}]\n[[backup.sources]]\nname = \"self\"\ntype = \"steward\"\n"
        ))
        .unwrap();
        let db = &c.sources[0];
        assert_eq!(db.repository, 0);
        let What::Postgres {
            server, database, ..
        } = &db.what
        else {
            panic!("{:?}", db.what)
        };
        assert_eq!(
            (server.host.as_str(), server.port, database.as_str()),
            ("127.0.0.1", 5432, "app")
        );
        let d = db.drill.as_ref().unwrap();
        assert_eq!(d.server.user, "drill");
        assert_eq!(
            d.server.password_secret, None,
            "another login needs its own password"
        );
        assert_eq!(
            c.sources[1].what,
            What::Sqlite {
                path: "/data/steward.db".into()
            }
        );
    }

    #[test]
    fn base_backups_take_a_pitr_window_and_a_recovery_drill() {
        let c = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"pg\"\ntype = \"postgres\"\nmode = \"base\"\ndatabase = \"app\"\nretention = {{ pitr = \"7d\", keep_daily = 14 }}\n"
        ))
        .unwrap();
        assert!(matches!(
            c.sources[0].what,
            What::Postgres { base: true, .. }
        ));
        assert!(!c.sources[0].what.restores_into_database());
        let base = |drill: &str| {
            compile(&format!(
                "{REPO}[[backup.sources]]\nname = \"pg\"\ntype = \"postgres\"\nmode = \"base\"\ndatabase = \"app\"\n[backup.sources.drill]\n{drill}"
            ))
        };
        let c = base("").unwrap();
        let d = c.sources[0].drill.as_ref().unwrap();
        let p = d.pitr.as_ref().unwrap();
        assert_eq!(p.point_ago, None);
        assert_eq!(p.timeout, Duration::from_secs(1800));
        let c = base("point = \"90m\"\nos_user = \"postgres\"\nuser = \"app\"\ntimeout = \"5m\"\n")
            .unwrap();
        let d = c.sources[0].drill.as_ref().unwrap();
        assert_eq!(d.server.user, "app");
        let p = d.pitr.as_ref().unwrap();
        assert_eq!(p.point_ago, Some(Duration::from_secs(5400)));
        assert_eq!(p.os_user.as_deref(), Some("postgres"));
        assert_eq!(p.timeout, Duration::from_secs(300));
        let e = base("point = \"yesterday\"\n").unwrap_err();
        assert_eq!(e.key, "backup.sources[0].drill.point", "{e}");
        assert!(e.message.contains("latest"), "{e}");
        let e = base("host = \"db2\"\n").unwrap_err();
        assert_eq!(e.key, "backup.sources[0].drill.host", "{e}");
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"db\"\ntype = \"postgres\"\ndatabase = \"app\"\n[backup.sources.drill]\npoint = \"1h\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "backup.sources[0].drill.point", "{e}");
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"pg\"\ntype = \"postgres\"\nmode = \"physical\"\ndatabase = \"app\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
    }

    #[test]
    fn s3_locations_are_checked_without_their_keys() {
        let repo = |loc: &str| {
            format!("[[backup.repositories]]\nname = \"off\"\nlocation = \"{loc}\"\npassword_secret = \"ops/b#pw\"\naccess_key_id_secret = \"ops/s3#id\"\nsecret_access_key_secret = \"ops/s3#key\"\n")
        };
        let c = compile(&repo("s3:http://127.0.0.1:9000/bucket/steward")).unwrap();
        assert!(c.repositories[0].is_s3());
        let e = compile(&repo("s3://bucket-without-endpoint")).unwrap_err();
        assert_eq!(e.key, "backup.repositories[0].location", "{e}");
        let e = compile("[[backup.repositories]]\nname = \"off\"\nlocation = \"s3:http://127.0.0.1:9000/b\"\npassword_secret = \"ops/b#pw\"\n").unwrap_err();
        assert_eq!(e.key, "backup.repositories[0].access_key_id_secret", "{e}");
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"db\"\ntype = \"postgres\"\ndatabase = \"app\"\ncolour = \"red\"\n"
        ))
        .unwrap_err();
        assert!(e.key.starts_with("backup.sources[0]"), "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"db\"\ntype = \"postgres\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("database"), "{e}");
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"db\"\ntype = \"directory\"\npaths = [\"/x\"]\nrepository = \"offsite\"\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("main"), "{e}");
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"f\"\ntype = \"directory\"\npaths = [\"/x\"]\n[backup.sources.drill]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "backup.sources[0].drill", "{e}");
        let e = compile("[[backup.repositories]]\nname = \"main\"\nlocation = \"/srv/b\"\npassword_secret = \"hunter2\"\n").unwrap_err();
        assert_eq!(e.key, "backup.repositories[0].password_secret");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"db\"\ntype = \"directory\"\npaths = [\"/x\"]\nschedule = \"3am\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "backup.sources[0].schedule");
        let e = compile(&format!(
            "{REPO}[[backup.sources]]\nname = \"d\"\ntype = \"directory\"\npaths = [\"/x\"]\nretention = {{ pitr = \"7d\" }}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "backup.sources[0].retention.pitr");
    }
}
