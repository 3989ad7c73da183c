//! `postgres` and `mysql`: connect, run one query in a read-only transaction, and report what
//! came back.
//!
//! # Settings
//!
//! ```toml
//! [[check]]
//! name = "orders-db"
//! type = "postgres"            # or "mysql" (MySQL or MariaDB)
//! host = "db.internal"         # default 127.0.0.1
//! port = 5432                  # default 5432 (postgres) or 3306 (mysql)
//! user = "monitor"             # required
//! database = "orders"          # postgres: default the user name; mysql: default none
//! password_secret = "prod/db/monitor#password"   # optional secret reference
//! sslmode = "prefer"           # disable | prefer (default) | require
//! query = "SELECT count(*) FROM jobs WHERE state = 'stuck'"   # default SELECT 1
//! condition = "value < 10"
//! ```
//!
//! # Facts
//!
//! `connected` (bool: the login succeeded), `rows` (how many rows the query returned), `value`
//! (the first column of the first row: a number for numeric types, a bool, a string for text,
//! dates, times and UUIDs, a duration for a PostgreSQL `interval`, JSON for `json`/`jsonb`,
//! null for SQL NULL, no rows, or a type this probe does not read: cast it in the query, e.g.
//! `::text`), `response_time` (connect plus query). Phases: `connect`, `query`. The default
//! condition is `connected`.
//!
//! # Safety of the query
//!
//! A health check must never write. The query runs as a single statement (PostgreSQL's
//! extended protocol, MySQL's prepared statements: `SELECT 1; DELETE ...` is refused) inside a
//! read-only transaction that is rolled back afterwards; on MySQL the session is read-only as
//! well, so DDL (which commits implicitly there) is refused too. The server stops the query
//! when the check's time is up (`statement_timeout` on PostgreSQL, `max_statement_time` on
//! MariaDB, `max_execution_time` on MySQL). Still, give the check a user that can only read.
//!
//! # TLS
//!
//! `sslmode` follows libpq: `prefer` uses TLS when the server offers it, `require` fails
//! without it, `disable` never uses it. As with libpq's `require`, the server's certificate
//! is not checked against a CA (the connection is encrypted, not authenticated): there is no
//! `verify-full` yet.
//!
//! # Shared helpers
//!
//! [`shared`] holds what the database, `redis` and `queue` probes share on top of the
//! crate's settings reader (`steward_core::settings`): a few more getters (host, port, one of
//! a list, a command line), the run's clock, phases and deadline, running a synchronous
//! client on the blocking pool, and error text helpers that keep credentials out of messages.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio_postgres::{
    config::SslMode,
    error::SqlState,
    tls::MakeTlsConnect,
    types::{FromSql, Kind, Type},
    Client, NoTls, Socket,
};

use self::shared::{resolve_secret, Progress, SettingsExt};
use crate::support::Settings;
use crate::{Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value};
use steward_core::text::redact;

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[
    (
        "postgres",
        "PostgreSQL: log in and run a read-only query (facts rows, value)",
    ),
    (
        "mysql",
        "MySQL or MariaDB: log in and run a read-only query (facts rows, value)",
    ),
];

const FACTS: &[&str] = &["connected", "rows", "value", "response_time"];
const DEFAULT_QUERY: &str = "SELECT 1";
/// Rows fetched per round trip while counting a PostgreSQL result.
const PG_BATCH: i32 = 500;

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    match kind {
        "postgres" => Ok(Arc::new(Postgres(Target::read(
            "postgres", 5432, settings,
        )?))),
        "mysql" => Ok(Arc::new(Mysql(Target::read("mysql", 3306, settings)?))),
        other => Err(ProbeConfigError {
            kind: other.to_string(),
            key: "type".into(),
            message: "not a database check type; use \"postgres\" or \"mysql\"".into(),
        }),
    }
}

/// `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Disable,
    Prefer,
    Require,
}

/// What both database probes read from their settings.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    user: String,
    database: Option<String>,
    /// A secret reference, never the password.
    password_secret: Option<String>,
    tls: Tls,
    query: String,
}

impl Target {
    fn read(
        kind: &'static str,
        default_port: u16,
        v: &serde_json::Value,
    ) -> Result<Self, ProbeConfigError> {
        let mut s = Settings::new("", kind, v)?;
        let host = s.host("host")?;
        let port = s.port("port", default_port)?;
        let user = s.req_str("user", "the user to log in as (e.g. \"monitor\")")?;
        let database = s.opt_str("database")?;
        let password_secret = s.opt_secret_ref("password_secret")?;
        let tls = match s.one_of("sslmode", &["disable", "prefer", "require"], "prefer")? {
            "disable" => Tls::Disable,
            "require" => Tls::Require,
            _ => Tls::Prefer,
        };
        let query = s
            .opt_str("query")?
            .map(|q| q.trim().trim_end_matches(';').trim_end().to_string())
            .unwrap_or_else(|| DEFAULT_QUERY.to_string());
        if query.is_empty() {
            return Err(s.error("query", "is empty; write a query such as \"SELECT 1\""));
        }
        s.finish()?;
        Ok(Target {
            host,
            port,
            user,
            database,
            password_secret,
            tls,
            query,
        })
    }

    fn addr(&self) -> String {
        shared::host_port(&self.host, self.port)
    }

    /// The end of a "wrong password" message: where to look.
    fn password_hint(&self) -> String {
        match &self.password_secret {
            Some(r) => format!("check the secret {r}"),
            None => "the server asks for a password: set password_secret".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// postgres

/// The `postgres` probe.
#[derive(Debug)]
struct Postgres(Target);

#[async_trait]
impl Probe for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn default_condition(&self) -> &'static str {
        "connected"
    }
    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let progress = Progress::start(timeout);
        let mut facts = Facts::new();
        let work = self.work(secrets, &progress, &mut facts);
        let error = match tokio::time::timeout_at(progress.deadline().into(), work).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(progress.timed_out()),
        };
        progress.finish(facts, error)
    }
}

impl Postgres {
    async fn work(
        &self,
        secrets: &dyn SecretSource,
        progress: &Progress,
        facts: &mut Facts,
    ) -> Result<(), String> {
        let t = &self.0;
        progress.begin(
            "connect",
            format!("connecting to PostgreSQL at {}", t.addr()),
        );
        let password = match &t.password_secret {
            Some(r) => Some(resolve_secret(secrets, "password_secret", r).await?),
            None => None,
        };
        let hide: Vec<&str> = password.iter().map(|p| p.as_str()).collect();

        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&t.host)
            .port(t.port)
            .user(&t.user)
            .dbname(t.database.as_deref().unwrap_or(&t.user))
            .application_name("steward-probe")
            .connect_timeout(progress.remaining())
            .ssl_mode(match t.tls {
                Tls::Disable => SslMode::Disable,
                Tls::Prefer => SslMode::Prefer,
                Tls::Require => SslMode::Require,
            });
        if let Some(p) = &password {
            cfg.password(p.as_bytes());
        }
        let mut session = match t.tls {
            Tls::Disable => Session::connect(&cfg, NoTls).await,
            Tls::Prefer | Tls::Require => {
                Session::connect(&cfg, pg_tls::connector().map_err(|e| redact(&e, &hide))?).await
            }
        }
        .map_err(|e| redact(&self.connect_error(&e), &hide))?;
        progress.connected();

        progress.begin("query", "running the query".to_string());
        let result = self.query(&mut session.client, progress).await;
        // Still in time (a timeout drops this future and the session aborts instead): let the
        // connection finish on its own, rolling back and saying goodbye.
        session.close();
        let (rows, value) = result.map_err(|e| redact(&self.query_error(&e, progress), &hide))?;
        facts.insert("rows", rows);
        facts.insert("value", value);
        Ok(())
    }

    /// Runs the query in a read-only transaction that is rolled back; returns the row count
    /// and the first column of the first row. The rows come a batch at a time through a
    /// portal, so a large result never sits in memory.
    async fn query(
        &self,
        client: &mut Client,
        progress: &Progress,
    ) -> Result<(u64, Value), tokio_postgres::Error> {
        let tx = client.build_transaction().read_only(true).start().await?;
        let ms = progress.remaining().as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await?;
        // bind prepares the text as one statement: `SELECT 1; DELETE ...` is refused.
        let portal = tx.bind(self.0.query.as_str(), &[]).await?;
        let mut rows = 0u64;
        let mut value = Value::Null;
        loop {
            let batch = tx.query_portal(&portal, PG_BATCH).await?;
            if rows == 0 {
                if let Some(first) = batch.first() {
                    value = first_cell(first);
                }
            }
            rows += batch.len() as u64;
            if batch.len() < PG_BATCH as usize {
                break;
            }
        }
        tx.rollback().await?;
        Ok((rows, value))
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> String {
        let t = &self.0;
        let at = format!("PostgreSQL at {}", t.addr());
        if let Some(db) = e.as_db_error() {
            let msg = shared::one_line(db.message(), 300);
            let code = db.code();
            return if *code == SqlState::INVALID_PASSWORD {
                format!("{msg}; {}", t.password_hint())
            } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
                format!("{at} refused the login: {msg}; check `user` and the server's pg_hba.conf")
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                format!("{at}: {msg}; check `database`")
            } else {
                format!(
                    "{at} refused the connection: {msg} (SQLSTATE {})",
                    code.code()
                )
            };
        }
        let chain = shared::error_chain(e);
        if let Some(io) = shared::find_io(e) {
            return shared::io_error(&at, io, &chain);
        }
        if chain.contains("server does not support TLS") {
            return format!(
                "{at} does not offer TLS but sslmode is \"require\"; enable ssl on the server or set sslmode = \"prefer\""
            );
        }
        if chain.contains("password missing") {
            return format!(
                "{at} asks for a password for user {:?}; set password_secret",
                t.user
            );
        }
        if chain.contains("TLS") {
            return format!("TLS with {at} failed: {chain}; set sslmode = \"disable\" if the server cannot do TLS");
        }
        format!("could not connect to {at}: {chain}")
    }

    fn query_error(&self, e: &tokio_postgres::Error, progress: &Progress) -> String {
        if let Some(db) = e.as_db_error() {
            let msg = shared::one_line(db.message(), 300);
            let code = db.code();
            return if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
                format!(
                    "the query tried to write ({msg}); health-check queries run in a read-only transaction: use a SELECT"
                )
            } else if *code == SqlState::QUERY_CANCELED {
                progress.timed_out()
            } else {
                format!(
                    "the query failed: {msg} (SQLSTATE {}); check `query`",
                    code.code()
                )
            };
        }
        let chain = shared::error_chain(e);
        if let Some(io) = shared::find_io(e) {
            return shared::io_error(&format!("PostgreSQL at {}", self.0.addr()), io, &chain);
        }
        format!("the query failed: {chain}; check `query`")
    }
}

/// The first column of a row as a fact value.
fn first_cell(row: &tokio_postgres::Row) -> Value {
    if row.columns().is_empty() {
        return Value::Null;
    }
    row.try_get::<_, Cell>(0)
        .map(|c| c.0)
        .unwrap_or(Value::Null)
}

/// Reads any PostgreSQL value into a [`Value`] (see the module docs for the mapping).
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(pg_value(ty, raw).unwrap_or(Value::Null)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decodes one value in PostgreSQL's binary format; `None` for types this probe does not read.
fn pg_value(ty: &Type, raw: &[u8]) -> Option<Value> {
    use postgres_protocol::types as pt;
    let v = match *ty {
        Type::BOOL => Value::Bool(pt::bool_from_sql(raw).ok()?),
        Type::INT2 => Value::Number(f64::from(pt::int2_from_sql(raw).ok()?)),
        Type::INT4 => Value::Number(f64::from(pt::int4_from_sql(raw).ok()?)),
        Type::INT8 => Value::Number(pt::int8_from_sql(raw).ok()? as f64),
        Type::OID => Value::Number(f64::from(pt::oid_from_sql(raw).ok()?)),
        Type::FLOAT4 => Value::Number(f64::from(pt::float4_from_sql(raw).ok()?)),
        Type::FLOAT8 => Value::Number(pt::float8_from_sql(raw).ok()?),
        Type::NUMERIC => pg_numeric(raw)?,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            Value::String(pt::text_from_sql(raw).ok()?.to_string())
        }
        Type::JSON => Value::Json(serde_json::from_slice(raw).ok()?),
        // jsonb: a version byte (1), then the text.
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => Value::Json(serde_json::from_slice(rest).ok()?),
            _ => return None,
        },
        Type::TIMESTAMP => Value::String(pg_timestamp(pt::timestamp_from_sql(raw).ok()?, "")),
        Type::TIMESTAMPTZ => Value::String(pg_timestamp(pt::timestamp_from_sql(raw).ok()?, "Z")),
        Type::DATE => Value::String(pg_date(pt::date_from_sql(raw).ok()?)),
        Type::UUID => Value::String(uuid_text(&pt::uuid_from_sql(raw).ok()?)),
        Type::INTERVAL => pg_interval(raw)?,
        _ => match ty.kind() {
            // Enum labels and text-like extension types (citext) come as plain text.
            Kind::Enum(_) => Value::String(pt::text_from_sql(raw).ok()?.to_string()),
            _ if ty.name() == "citext" => Value::String(pt::text_from_sql(raw).ok()?.to_string()),
            _ => return None,
        },
    };
    Some(v)
}

/// `numeric`: a header (digit count, weight, sign, display scale) then base-10000 digits.
/// Rebuilt as decimal text and parsed, so the result is the closest f64.
fn pg_numeric(raw: &[u8]) -> Option<Value> {
    let word = |i: usize| -> Option<u16> {
        let b = raw.get(i * 2..i * 2 + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    match sign {
        0x0000 | 0x4000 => {}
        0xD000 => return Some(Value::Number(f64::INFINITY)),
        0xF000 => return Some(Value::Number(f64::NEG_INFINITY)),
        _ => return Some(Value::Null), // NaN
    }
    if ndigits == 0 {
        return Some(Value::Number(0.0));
    }
    let mut text = String::with_capacity(ndigits * 4 + 8);
    if sign == 0x4000 {
        text.push('-');
    }
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d > 9999 {
            return None;
        }
        text.push_str(&format!("{d:04}"));
    }
    // The digits read as an integer are worth 10000^(weight - ndigits + 1) each.
    let exp = 4 * (weight - ndigits as i64 + 1);
    text.push_str(&format!("e{exp}"));
    text.parse::<f64>().ok().map(Value::Number)
}

/// `interval`: microseconds, days, months. Months count as 30 days. Negative intervals have no
/// duration value and read as null.
fn pg_interval(raw: &[u8]) -> Option<Value> {
    let micros = i64::from_be_bytes(raw.get(0..8)?.try_into().ok()?);
    let days = i32::from_be_bytes(raw.get(8..12)?.try_into().ok()?);
    let months = i32::from_be_bytes(raw.get(12..16)?.try_into().ok()?);
    let total =
        i128::from(micros) + (i128::from(days) + i128::from(months) * 30) * 86_400 * 1_000_000;
    if total < 0 {
        return Some(Value::Null);
    }
    let total = u64::try_from(total).ok()?;
    Some(Value::Duration(Duration::from_micros(total)))
}

/// Microseconds since 2000-01-01 as `YYYY-MM-DDTHH:MM:SS[.ffffff]` plus `suffix`.
fn pg_timestamp(micros: i64, suffix: &str) -> String {
    match micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days + DAYS_1970_TO_2000);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    );
    if frac != 0 {
        s.push_str(&format!(".{frac:06}"));
    }
    s.push_str(suffix);
    s
}

/// Days since 2000-01-01 as `YYYY-MM-DD`.
fn pg_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        _ => {
            let (y, m, d) = civil_from_days(i64::from(days) + DAYS_1970_TO_2000);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

const DAYS_1970_TO_2000: i64 = 10_957;

/// The proleptic Gregorian date of a day count since 1970-01-01 (the usual era arithmetic:
/// 400-year eras of 146097 days, years starting in March).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn uuid_text(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// A client with its connection task; the task is stopped when the session is dropped early
/// (a timeout), and left to finish on its own (sending Terminate) after [`Session::close`].
struct Session {
    client: Client,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    async fn connect<T>(cfg: &tokio_postgres::Config, tls: T) -> Result<Self, tokio_postgres::Error>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: Send + 'static,
    {
        let (client, connection) = cfg.connect(tls).await?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Session {
            client,
            task: Some(task),
        })
    }

    fn close(mut self) {
        // Dropping the handle detaches the task; dropping the client lets it end cleanly.
        self.task.take();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// TLS for PostgreSQL with libpq's `prefer`/`require` meaning: encrypted, certificate not
/// checked against a CA (handshake signatures are still verified).
mod pg_tls {
    use std::sync::Arc;

    use tokio_postgres_rustls::MakeRustlsConnect;

    use crate::support::AnyCertificate;

    pub(super) fn connector() -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("could not set up TLS: {e}; set sslmode = \"disable\""))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

// ---------------------------------------------------------------------------------------------
// mysql

/// The `mysql` probe (MySQL and MariaDB).
#[derive(Debug)]
struct Mysql(Target);

#[async_trait]
impl Probe for Mysql {
    fn kind(&self) -> &'static str {
        "mysql"
    }
    fn default_condition(&self) -> &'static str {
        "connected"
    }
    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let progress = Progress::start(timeout);
        let mut facts = Facts::new();
        let t = self.0.clone();
        progress.begin("connect", format!("connecting to MySQL at {}", t.addr()));
        let result = match &t.password_secret {
            Some(r) => {
                let fut = resolve_secret(secrets, "password_secret", r);
                match tokio::time::timeout_at(progress.deadline().into(), fut).await {
                    Ok(Ok(p)) => Ok(Some(p)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(progress.timed_out()),
                }
            }
            None => Ok(None),
        };
        let result = match result {
            Ok(password) => {
                let p = progress.clone();
                shared::blocking(&progress, move || mysql_work(&t, password, &p)).await
            }
            Err(e) => Err(e),
        };
        let error = match result {
            Ok((rows, value)) => {
                facts.insert("rows", rows);
                facts.insert("value", value);
                None
            }
            Err(e) => Some(e),
        };
        progress.finish(facts, error)
    }
}

/// Connects, runs the query read-only, and rolls back (on the blocking pool: the client is
/// synchronous, with socket timeouts set from the time left).
fn mysql_work(
    t: &Target,
    password: Option<zeroize::Zeroizing<String>>,
    progress: &Progress,
) -> Result<(u64, Value), String> {
    use mysql::prelude::Queryable;

    let hide: Vec<&str> = password.iter().map(|p| p.as_str()).collect();
    let at = format!("MySQL at {}", t.addr());
    let opts = |tls: bool| {
        let left = progress.remaining();
        let mut b = mysql::OptsBuilder::new()
            .ip_or_hostname(Some(t.host.as_str()))
            .tcp_port(t.port)
            .user(Some(t.user.as_str()))
            .db_name(t.database.as_deref())
            // The client would otherwise switch to the server's Unix socket when it can.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(left))
            .read_timeout(Some(left))
            .write_timeout(Some(left))
            .stmt_cache_size(Some(0));
        if let Some(p) = &password {
            b = b.pass(Some(p.as_str()));
        }
        if tls {
            b = b.ssl_opts(Some(
                mysql::SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ));
        }
        b
    };
    let connect_error = |e: &mysql::Error| redact(&mysql_connect_error(t, &at, e, progress), &hide);
    let mut conn = match t.tls {
        Tls::Disable => mysql::Conn::new(opts(false)),
        Tls::Require => mysql::Conn::new(opts(true)),
        Tls::Prefer => match mysql::Conn::new(opts(true)) {
            Err(mysql::Error::DriverError(mysql::DriverError::TlsNotSupported)) => {
                mysql::Conn::new(opts(false))
            }
            other => other,
        },
    }
    .map_err(|e| connect_error(&e))?;
    progress.connected();

    progress.begin("query", "running the query".to_string());
    let query_error = |e: &mysql::Error| redact(&mysql_query_error(&at, e, progress), &hide);
    // Session-wide read-only too: DDL commits implicitly and would escape the transaction.
    conn.query_drop("SET SESSION TRANSACTION READ ONLY")
        .map_err(|e| query_error(&e))?;
    let left = progress.remaining();
    let mariadb = format!(
        "SET SESSION max_statement_time = {:.3}",
        left.as_secs_f64().max(0.001)
    );
    match conn.query_drop(mariadb) {
        Ok(()) => {}
        // Unknown system variable: MySQL, which counts in milliseconds (SELECTs only).
        Err(mysql::Error::MySqlError(ref e)) if e.code == 1193 => {
            let ms = left.as_millis().max(1);
            conn.query_drop(format!("SET SESSION max_execution_time = {ms}"))
                .map_err(|e| query_error(&e))?;
        }
        Err(e) => return Err(query_error(&e)),
    }
    conn.query_drop("START TRANSACTION READ ONLY")
        .map_err(|e| query_error(&e))?;
    let counted = (|| {
        let mut rows = 0u64;
        let mut value = Value::Null;
        let mut result = conn.exec_iter(t.query.as_str(), ())?;
        if let Some(mut set) = result.iter() {
            for row in set.by_ref() {
                let row = row?;
                if rows == 0 {
                    value = mysql_first_cell(&row);
                }
                rows += 1;
            }
        }
        drop(result);
        Ok::<_, mysql::Error>((rows, value))
    })();
    let counted = counted.map_err(|e| query_error(&e))?;
    let _ = conn.query_drop("ROLLBACK");
    Ok(counted)
}

fn mysql_connect_error(t: &Target, at: &str, e: &mysql::Error, progress: &Progress) -> String {
    match e {
        mysql::Error::MySqlError(m) => {
            let msg = shared::one_line(&m.message, 300);
            match m.code {
                // ER_ACCESS_DENIED_ERROR
                1045 => format!("{msg}; {}", t.password_hint()),
                // ER_DBACCESS_DENIED_ERROR, ER_BAD_DB_ERROR
                1044 | 1049 => format!("{at}: {msg}; check `database`"),
                code => format!("{at} refused the connection: {msg} (error {code})"),
            }
        }
        mysql::Error::DriverError(mysql::DriverError::TlsNotSupported) => format!(
            "{at} does not offer TLS but sslmode is \"require\"; enable TLS on the server or set sslmode = \"prefer\""
        ),
        mysql::Error::DriverError(mysql::DriverError::ConnectTimeout) => progress.timed_out(),
        mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((_, desc, kind)))) => {
            let io = std::io::Error::new(*kind, desc.clone());
            shared::io_error(at, &io, desc)
        }
        other => match mysql_io(other) {
            Some(io) if is_timeout(io) => progress.timed_out(),
            Some(io) => shared::io_error(at, io, &io.to_string()),
            None => format!(
                "could not connect to {at}: {}",
                shared::one_line(&other.to_string(), 300)
            ),
        },
    }
}

fn mysql_query_error(at: &str, e: &mysql::Error, progress: &Progress) -> String {
    match e {
        mysql::Error::MySqlError(m) => {
            let msg = shared::one_line(&m.message, 300);
            match m.code {
                // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, ER_OPTION_PREVENTS_STATEMENT
                1792 | 1290 => format!(
                    "the query tried to write ({msg}); health-check queries run in a read-only transaction: use a SELECT"
                ),
                // MariaDB max_statement_time, MySQL max_execution_time, query interrupted
                1969 | 3024 | 1317 => progress.timed_out(),
                // ER_UNSUPPORTED_PS: not preparable
                1295 => format!(
                    "the query cannot run as a prepared statement ({msg}); use a SELECT or SHOW"
                ),
                code => format!("the query failed: {msg} (error {code}); check `query`"),
            }
        }
        other => match mysql_io(other) {
            Some(io) if is_timeout(io) => progress.timed_out(),
            Some(io) => shared::io_error(at, io, &io.to_string()),
            None => format!(
                "the query failed: {}; check `query`",
                shared::one_line(&other.to_string(), 300)
            ),
        },
    }
}

/// The I/O error under a MySQL client error, if that is what it is.
fn mysql_io(e: &mysql::Error) -> Option<&std::io::Error> {
    match e {
        mysql::Error::IoError(io) => Some(io),
        mysql::Error::CodecError(c) => shared::find_io(c),
        _ => None,
    }
}

/// A socket read or write that ran into its timeout.
fn is_timeout(io: &std::io::Error) -> bool {
    matches!(
        io.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// The first column of a MySQL row as a fact value.
fn mysql_first_cell(row: &mysql::Row) -> Value {
    use mysql::consts::ColumnType as C;
    let Some(column) = row.columns_ref().first() else {
        return Value::Null;
    };
    let Some(v) = row.as_ref(0) else {
        return Value::Null;
    };
    match v {
        mysql::Value::NULL => Value::Null,
        mysql::Value::Int(i) => Value::Number(*i as f64),
        mysql::Value::UInt(u) => Value::Number(*u as f64),
        mysql::Value::Float(f) => Value::Number(f64::from(*f)),
        mysql::Value::Double(f) => Value::Number(*f),
        mysql::Value::Bytes(b) => {
            let text = String::from_utf8_lossy(b);
            match column.column_type() {
                C::MYSQL_TYPE_DECIMAL | C::MYSQL_TYPE_NEWDECIMAL => text
                    .trim()
                    .parse::<f64>()
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                C::MYSQL_TYPE_JSON => serde_json::from_str(&text)
                    .map(Value::Json)
                    .unwrap_or_else(|_| Value::String(text.into_owned())),
                _ => Value::String(text.into_owned()),
            }
        }
        mysql::Value::Date(y, mo, d, h, mi, s, us) => {
            if column.column_type() == C::MYSQL_TYPE_DATE {
                Value::String(format!("{y:04}-{mo:02}-{d:02}"))
            } else if *us == 0 {
                Value::String(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
            } else {
                Value::String(format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
                ))
            }
        }
        mysql::Value::Time(negative, days, h, mi, s, us) => {
            if *negative {
                Value::Null
            } else {
                let secs = u64::from(*days) * 86_400
                    + u64::from(*h) * 3600
                    + u64::from(*mi) * 60
                    + u64::from(*s);
                Value::Duration(Duration::from_secs(secs) + Duration::from_micros(u64::from(*us)))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// shared by the database, redis and queue probes

/// What the database, `redis` and `queue` probes share.
pub(crate) mod shared {
    use std::{
        sync::{Arc, Mutex, PoisonError},
        time::{Duration, Instant},
    };

    pub(crate) use crate::support::{error_chain, one_line, resolve_secret, show_duration};
    use crate::{support::Settings, Facts, Outcome, ProbeConfigError};

    /// Extra time a blocking worker gets past the deadline to report its own (more precise)
    /// timeout before the run gives up on it.
    const BLOCKING_GRACE: Duration = Duration::from_millis(150);

    // -- settings ---------------------------------------------------------------------------

    /// Getters for shapes the shared settings reader does not have.
    pub(crate) trait SettingsExt {
        /// A host name or address (default 127.0.0.1).
        fn host(&mut self, key: &'static str) -> Result<String, ProbeConfigError>;
        /// A port with a default.
        fn port(&mut self, key: &'static str, default: u16) -> Result<u16, ProbeConfigError>;
        /// A whole number from 0 to `max`.
        fn u64_at_most(
            &mut self,
            key: &'static str,
            default: u64,
            max: u64,
        ) -> Result<u64, ProbeConfigError>;
        /// One of `choices` (case-insensitive).
        fn one_of(
            &mut self,
            key: &'static str,
            choices: &[&'static str],
            default: &'static str,
        ) -> Result<&'static str, ProbeConfigError>;
        /// A command line: a string split on white space, or a list of strings.
        fn opt_words(&mut self, key: &'static str)
            -> Result<Option<Vec<String>>, ProbeConfigError>;
    }

    impl SettingsExt for Settings {
        fn host(&mut self, key: &'static str) -> Result<String, ProbeConfigError> {
            let host = self.opt_str(key)?.unwrap_or_else(|| "127.0.0.1".into());
            let host = host.trim().to_string();
            if host.contains(|c: char| c.is_whitespace() || c == '/') || host.len() > 253 {
                return Err(self.error(
                    key,
                    "is not a host name or IP address; write e.g. \"db.internal\" or \"10.0.0.5\"",
                ));
            }
            Ok(host)
        }

        fn port(&mut self, key: &'static str, default: u16) -> Result<u16, ProbeConfigError> {
            Ok(self.opt_port(key)?.unwrap_or(default))
        }

        fn u64_at_most(
            &mut self,
            key: &'static str,
            default: u64,
            max: u64,
        ) -> Result<u64, ProbeConfigError> {
            let v = self.u64(key, default)?;
            if v > max {
                return Err(self.error(key, format!("{v} is out of range; use 0 to {max}")));
            }
            Ok(v)
        }

        fn one_of(
            &mut self,
            key: &'static str,
            choices: &[&'static str],
            default: &'static str,
        ) -> Result<&'static str, ProbeConfigError> {
            let Some(s) = self.opt_str(key)? else {
                return Ok(default);
            };
            choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(s.trim()))
                .copied()
                .ok_or_else(|| {
                    let names: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
                    self.error(
                        key,
                        format!("{:?} is not one of {}", one_line(&s, 40), names.join(", ")),
                    )
                })
        }

        fn opt_words(
            &mut self,
            key: &'static str,
        ) -> Result<Option<Vec<String>>, ProbeConfigError> {
            use serde_json::Value as Json;
            match self.opt_raw(key) {
                None => Ok(None),
                Some(Json::String(s)) => {
                    let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
                    if words.is_empty() {
                        return Err(self.error(key, "is empty; remove the key or give it a value"));
                    }
                    Ok(Some(words))
                }
                Some(Json::Array(items)) if !items.is_empty() => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.into_iter().enumerate() {
                        match item {
                            Json::String(s) if !s.is_empty() => out.push(s),
                            other => {
                                return Err(self.error(
                                    key,
                                    format!(
                                        "item {} must be a non-empty string, not {}",
                                        i + 1,
                                        steward_core::settings::type_name(&other)
                                    ),
                                ))
                            }
                        }
                    }
                    Ok(Some(out))
                }
                Some(other) => Err(self.error(
                    key,
                    format!(
                        "must be a string or a non-empty list of strings, not {}",
                        steward_core::settings::type_name(&other)
                    ),
                )),
            }
        }
    }

    // -- the run's clock ----------------------------------------------------------------------

    #[derive(Debug, Clone)]
    struct State {
        current: Option<(&'static str, Instant)>,
        doing: String,
        phases: Vec<(&'static str, Duration)>,
        connected: bool,
    }

    /// One run's start, deadline, phases and whether it got connected. Cheap to clone and
    /// shared with a blocking worker.
    #[derive(Debug, Clone)]
    pub(crate) struct Progress {
        start: Instant,
        deadline: Instant,
        timeout: Duration,
        state: Arc<Mutex<State>>,
    }

    impl Progress {
        pub(crate) fn start(timeout: Duration) -> Self {
            let start = Instant::now();
            Progress {
                start,
                deadline: start + timeout,
                timeout,
                state: Arc::new(Mutex::new(State {
                    current: None,
                    doing: "starting".into(),
                    phases: Vec::new(),
                    connected: false,
                })),
            }
        }

        fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
            let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        }

        pub(crate) fn deadline(&self) -> Instant {
            self.deadline
        }

        /// Time left before the deadline (at least a millisecond, so it can be handed to
        /// clients that refuse zero).
        pub(crate) fn remaining(&self) -> Duration {
            self.deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        }

        /// Ends the current phase (if any) and starts `phase`; `doing` says what happens in it
        /// for a timeout message ("connecting to ..."). Beginning the current phase again only
        /// updates `doing`.
        pub(crate) fn begin(&self, phase: &'static str, doing: String) {
            let now = Instant::now();
            self.with(|s| {
                match s.current {
                    // Same phase, more detail: the clock keeps running.
                    Some((name, _)) if name == phase => {}
                    Some((name, since)) => {
                        s.phases.push((name, now - since));
                        s.current = Some((phase, now));
                    }
                    None => s.current = Some((phase, now)),
                }
                s.doing = doing;
            });
        }

        /// Marks the login as done.
        pub(crate) fn connected(&self) {
            self.with(|s| s.connected = true);
        }

        /// The message of a run that ran out of time.
        pub(crate) fn timed_out(&self) -> String {
            let doing = self.with(|s| s.doing.clone());
            format!(
                "timed out after {} while {doing}; check the server's load and network, or raise the check's timeout",
                show_duration(self.timeout)
            )
        }

        /// The outcome: `facts` plus `connected` and `response_time`, the phases so far.
        pub(crate) fn finish(&self, mut facts: Facts, error: Option<String>) -> Outcome {
            let now = Instant::now();
            let (phases, connected) = self.with(|s| {
                if let Some((name, since)) = s.current.take() {
                    s.phases.push((name, now - since));
                }
                (std::mem::take(&mut s.phases), s.connected)
            });
            facts.insert("connected", connected);
            facts.insert("response_time", now - self.start);
            Outcome {
                facts,
                phases,
                error,
            }
        }
    }

    /// Runs synchronous client code on the blocking pool, giving up on it shortly after the
    /// deadline (its socket timeouts end it soon after).
    pub(crate) async fn blocking<T: Send + 'static>(
        progress: &Progress,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let handle = tokio::task::spawn_blocking(f);
        let until = progress.deadline() + BLOCKING_GRACE;
        match tokio::time::timeout_at(until.into(), handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(
                "internal error: the probe's worker stopped unexpectedly; this is a bug, please report it"
                    .into(),
            ),
            Err(_) => Err(progress.timed_out()),
        }
    }

    // -- error text -----------------------------------------------------------------------

    /// The first I/O error in an error's source chain.
    pub(crate) fn find_io<'a>(
        e: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a std::io::Error> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            cur = err.source();
        }
        None
    }

    /// A connection-level I/O failure talking to `at` ("PostgreSQL at host:port").
    pub(crate) fn io_error(at: &str, io: &std::io::Error, detail: &str) -> String {
        use std::io::ErrorKind as K;
        match io.kind() {
            K::ConnectionRefused => format!(
                "could not connect to {at}: connection refused; is the server running and listening on that address and port?"
            ),
            K::TimedOut | K::WouldBlock => format!(
                "{at} did not answer in time; check the address, firewalls and the server's load"
            ),
            K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => format!(
                "{at} closed the connection ({}); check the server's log and its TLS settings",
                one_line(detail, 200)
            ),
            _ => format!("could not connect to {at}: {}", one_line(detail, 300)),
        }
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub(crate) fn host_port(host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numeric_decodes_to_the_nearest_float() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3.
        let mut raw = Vec::new();
        for w in [3u16, 1, 0x0000, 3, 1, 2345, 6780] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(pg_numeric(&raw), Some(Value::Number(12345.678)));
        // -0.0005: weight -1, digits [5], negative.
        let mut raw = Vec::new();
        for w in [1u16, (-1i16) as u16, 0x4000, 4, 5] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(pg_numeric(&raw), Some(Value::Number(-0.0005)));
        // NaN reads as null; truncated input as unreadable.
        let nan: Vec<u8> = [0u16, 0, 0xC000, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(pg_numeric(&nan), Some(Value::Null));
        assert_eq!(pg_numeric(&[0, 1]), None);
    }

    #[test]
    fn dates_and_times_format_like_postgres() {
        assert_eq!(pg_date(0), "2000-01-01");
        assert_eq!(pg_date(-1), "1999-12-31");
        assert_eq!(pg_date(9190), "2025-02-28");
        assert_eq!(pg_date(9191), "2025-03-01");
        assert_eq!(pg_timestamp(0, "Z"), "2000-01-01T00:00:00Z");
        assert_eq!(pg_timestamp(-1, ""), "1999-12-31T23:59:59.999999");
        assert_eq!(pg_timestamp(i64::MAX, "Z"), "infinity");
        assert_eq!(
            uuid_text(&[0xab; 16]),
            "abababab-abab-abab-abab-abababababab"
        );
    }

    #[test]
    fn intervals_are_durations() {
        let raw: Vec<u8> = [
            1_500_000i64.to_be_bytes().to_vec(),
            1i32.to_be_bytes().to_vec(),
            0i32.to_be_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(
            pg_interval(&raw),
            Some(Value::Duration(Duration::from_millis(86_401_500)))
        );
        let neg: Vec<u8> = [
            (-1i64).to_be_bytes().to_vec(),
            0i32.to_be_bytes().to_vec(),
            0i32.to_be_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(pg_interval(&neg), Some(Value::Null));
    }

    #[test]
    fn settings_errors_name_the_key() {
        let e = build("postgres", &json!({"user": "m", "prot": 1}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "prot");
        assert!(e.message.contains("it takes:"), "{e}");
        let e = build("postgres", &json!({})).err().expect("a config error");
        assert_eq!(e.key, "user");
        let e = build("mysql", &json!({"user": "m", "port": 70000}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "port");
        let e = build("mysql", &json!({"user": "m", "sslmode": "verify-full"}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "sslmode");
        let e = build(
            "postgres",
            &json!({"user": "m", "password_secret": "hunter2"}),
        )
        .err()
        .expect("a config error");
        assert_eq!(e.key, "password_secret");
        assert!(!e.message.contains("hunter2"), "{e}");
        let e = build("postgres", &json!({"user": "m", "query": " ; "}))
            .err()
            .expect("a config error");
        assert_eq!(e.key, "query");
        let p = build(
            "postgres",
            &json!({"user": "m", "password_secret": "prod/db/m#password"}),
        )
        .unwrap();
        assert_eq!(p.kind(), "postgres");
        assert_eq!(p.default_condition(), "connected");
    }
}
