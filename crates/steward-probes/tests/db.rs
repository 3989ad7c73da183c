//! The `postgres`, `mysql`, `redis` and `queue` probes against the real servers on this
//! machine (PostgreSQL 127.0.0.1:5432 trust auth, MariaDB 127.0.0.1:3306 root without a
//! password, Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672 guest/guest), plus a throwaway
//! PostgreSQL cluster with scram-sha-256 for wrong passwords (the shared one trusts everyone).

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde_json::{json, Value as Json};
use steward_probes::{build, Outcome, SecretSource, Value};
use steward_test_utils::{free_port, PgCluster};
use zeroize::Zeroizing;

/// Generous: these must succeed even on a loaded 2-core machine.
const LONG: Duration = Duration::from_secs(30);

// -------------------------------------------------------------------------------------------
// helpers

/// Maps secret references to values.
#[derive(Default)]
struct Secrets(HashMap<String, String>);

impl Secrets {
    fn with(pairs: &[(&str, &str)]) -> Self {
        Secrets(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

#[async_trait]
impl SecretSource for Secrets {
    async fn resolve(&self, reference: &str) -> Result<Zeroizing<String>, String> {
        self.0
            .get(reference)
            .map(|v| Zeroizing::new(v.clone()))
            .ok_or_else(|| format!("no secret {reference}"))
    }
}

async fn run(kind: &str, settings: Json, secrets: &Secrets, timeout: Duration) -> Outcome {
    let probe = build(kind, &settings).unwrap_or_else(|e| panic!("{settings}: {e}"));
    probe.run(secrets, timeout).await
}

/// Runs and expects success; returns the outcome.
async fn ok(kind: &str, settings: Json, secrets: &Secrets) -> Outcome {
    let out = run(kind, settings.clone(), secrets, LONG).await;
    assert_eq!(out.error, None, "{settings}");
    assert_eq!(out.facts.get("connected"), Some(&Value::Bool(true)));
    assert!(matches!(
        out.facts.get("response_time"),
        Some(Value::Duration(_))
    ));
    out
}

/// Runs and expects an error; returns its message after checking that it is one line and
/// free of every `secret`.
async fn err(kind: &str, settings: Json, secrets: &Secrets, hide: &[&str]) -> (Outcome, String) {
    let out = run(kind, settings.clone(), secrets, LONG).await;
    let e = out
        .error
        .clone()
        .unwrap_or_else(|| panic!("{settings}: expected an error, got {:?}", out.facts));
    eprintln!("{kind}: {e}");
    assert!(!e.contains('\n'), "not one line: {e}");
    for s in hide {
        assert!(!e.contains(s), "the error leaks a secret: {e}");
        for (name, v) in out.facts.iter() {
            assert_ne!(
                v,
                &Value::String(s.to_string()),
                "fact {name} leaks a secret"
            );
        }
    }
    assert!(matches!(
        out.facts.get("response_time"),
        Some(Value::Duration(_))
    ));
    (out, e)
}

fn fact<'a>(out: &'a Outcome, name: &str) -> &'a Value {
    out.facts
        .get(name)
        .unwrap_or_else(|| panic!("no fact {name} in {:?}", out.facts))
}

fn phases(out: &Outcome) -> Vec<&'static str> {
    out.phases.iter().map(|p| p.0).collect()
}

/// A name nobody else uses (letters, digits, underscores).
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A server that accepts connections and never says a word: every probe must give up on it
/// in time, with a timeout error.
#[tokio::test]
async fn silent_servers_time_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Holds the accepted connections open until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let s = Secrets::default();
    let cases = [
        ("postgres", json!({"user": "postgres", "port": port})),
        ("mysql", json!({"user": "root", "port": port})),
        ("redis", json!({"port": port})),
        (
            "queue",
            json!({"backend": "redis", "key": "k", "port": port}),
        ),
        (
            "queue",
            json!({"backend": "rabbitmq", "queue": "q", "port": port}),
        ),
    ];
    for (kind, settings) in cases {
        let started = Instant::now();
        let out = run(kind, settings.clone(), &s, Duration::from_secs(1)).await;
        let took = started.elapsed();
        let e = out
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{settings}: no error"));
        eprintln!("{kind}: {e}");
        assert!(e.contains("timed out after 1s"), "{settings}: {e}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{settings}: took {took:?}"
        );
    }
}

// -------------------------------------------------------------------------------------------
// postgres

/// Runs SQL on the shared server as the superuser.
async fn pg_exec(sql: &str) {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("the shared PostgreSQL on 127.0.0.1:5432");
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
    drop(client);
    let _ = task.await;
}

async fn pg_count(table: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn pg(query: &str) -> Json {
    json!({"user": "postgres", "database": "test", "query": query})
}

#[tokio::test]
async fn postgres_reports_rows_and_the_first_value() {
    let s = Secrets::default();
    let out = ok(
        "postgres",
        json!({"user": "postgres", "database": "test"}),
        &s,
    )
    .await;
    assert_eq!(fact(&out, "rows"), &Value::Number(1.0));
    assert_eq!(fact(&out, "value"), &Value::Number(1.0));
    assert_eq!(phases(&out), ["connect", "query"]);

    let cases = [
        ("SELECT 42, 'second column'", 1.0, Value::Number(42.0)),
        ("SELECT 'hello'::text", 1.0, Value::String("hello".into())),
        ("SELECT 12.50::numeric", 1.0, Value::Number(12.5)),
        (
            "SELECT count(*) FROM pg_class WHERE false",
            1.0,
            Value::Number(0.0),
        ),
        ("SELECT true", 1.0, Value::Bool(true)),
        ("SELECT NULL", 1.0, Value::Null),
        ("SELECT 1 WHERE false", 0.0, Value::Null),
        (
            "SELECT interval '5 minutes'",
            1.0,
            Value::Duration(Duration::from_secs(300)),
        ),
        (
            "SELECT date '2024-02-29'",
            1.0,
            Value::String("2024-02-29".into()),
        ),
        (
            "SELECT '{\"a\": [1, 2]}'::jsonb",
            1.0,
            Value::Json(json!({"a": [1, 2]})),
        ),
        // More rows than one fetch batch, and a trailing semicolon.
        (
            "SELECT g FROM generate_series(7, 1240) g;",
            1234.0,
            Value::Number(7.0),
        ),
    ];
    for (query, rows, value) in cases {
        let out = ok("postgres", pg(query), &s).await;
        assert_eq!(fact(&out, "rows"), &Value::Number(rows), "{query}");
        assert_eq!(fact(&out, "value"), &value, "{query}");
    }
}

#[tokio::test]
async fn postgres_sslmode_controls_tls() {
    let s = Secrets::default();
    let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let mut settings = pg(ssl);
    settings["sslmode"] = json!("require");
    let out = ok("postgres", settings.clone(), &s).await;
    assert_eq!(fact(&out, "value"), &Value::Bool(true), "require uses TLS");
    settings["sslmode"] = json!("disable");
    let out = ok("postgres", settings, &s).await;
    assert_eq!(fact(&out, "value"), &Value::Bool(false), "disable does not");
}

#[tokio::test]
async fn postgres_queries_cannot_write() {
    let table = unique("probe_ro");
    pg_exec(&format!("CREATE TABLE {table} (x int)")).await;
    let s = Secrets::default();

    let (out, e) = err(
        "postgres",
        pg(&format!("INSERT INTO {table} VALUES (1)")),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("read-only"), "{e}");
    assert!(e.contains("use a SELECT"), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(true));
    // Two statements in one: refused as a whole.
    let (_, e) = err(
        "postgres",
        pg(&format!("SELECT 1; DELETE FROM {table}")),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("query failed"), "{e}");
    let (_, e) = err("postgres", pg(&format!("DROP TABLE {table}")), &s, &[]).await;
    assert!(e.contains("read-only"), "{e}");
    // A query that may not even run in a read-only transaction does not either.
    let (_, e) = err(
        "postgres",
        pg(&format!("SELECT 1 FROM {table} FOR UPDATE")),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("read-only"), "{e}");

    assert_eq!(pg_count(&table).await, 0, "nothing was written");
    pg_exec(&format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn postgres_timeout_ends_the_query_in_time() {
    let s = Secrets::default();
    let started = Instant::now();
    let out = run(
        "postgres",
        pg("SELECT pg_sleep(10)"),
        &s,
        Duration::from_secs(1),
    )
    .await;
    let took = started.elapsed();
    let e = out.error.as_deref().expect("a timeout error");
    eprintln!("timeout: {e}");
    assert!(e.contains("timed out after 1s"), "{e}");
    assert!(e.contains("running the query"), "{e}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(fact(&out, "connected"), &Value::Bool(true));
}

#[tokio::test]
async fn postgres_connection_refused_and_unknown_database() {
    let s = Secrets::default();
    let port = free_port();
    let (out, e) = err(
        "postgres",
        json!({"user": "postgres", "port": port}),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("connection refused"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(false));

    let (_, e) = err(
        "postgres",
        json!({"user": "postgres", "database": "no_such_db_here"}),
        &s,
        &[],
    )
    .await;
    assert!(
        e.contains("no_such_db_here") && e.contains("check `database`"),
        "{e}"
    );
}

#[tokio::test]
async fn postgres_wrong_password_names_the_user_not_the_password() {
    let cluster = PgCluster::start();
    let right = unique("Right");
    let wrong = unique("Wrong");
    cluster
        .exec(&format!("CREATE ROLE app LOGIN PASSWORD '{right}'"))
        .await;
    let settings = json!({
        "port": cluster.port, "user": "app", "database": "postgres",
        "password_secret": "prod/db#password", "sslmode": "disable",
    });

    let s = Secrets::with(&[("prod/db#password", &wrong)]);
    let (out, e) = err("postgres", settings.clone(), &s, &[&wrong, &right]).await;
    assert!(
        e.contains("password authentication failed for user \"app\""),
        "{e}"
    );
    assert!(e.contains("check the secret prod/db#password"), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(false));

    // No password at all: says which setting is missing.
    let mut no_pw = settings.clone();
    no_pw.as_object_mut().unwrap().remove("password_secret");
    let (_, e) = err("postgres", no_pw, &s, &[]).await;
    assert!(e.contains("set password_secret"), "{e}");

    // An unresolvable secret names the reference, not a value.
    let (_, e) = err("postgres", settings.clone(), &Secrets::default(), &[]).await;
    assert!(e.contains("prod/db#password"), "{e}");

    let s = Secrets::with(&[("prod/db#password", &right)]);
    let out = ok("postgres", settings, &s).await;
    assert_eq!(fact(&out, "value"), &Value::Number(1.0));
}

// -------------------------------------------------------------------------------------------
// mysql

fn my_conn() -> mysql::Conn {
    mysql::Conn::new(
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(3306)
            .user(Some("root"))
            .db_name(Some("test"))
            .prefer_socket(false),
    )
    .expect("the shared MariaDB on 127.0.0.1:3306")
}

async fn my_exec(sql: String) {
    tokio::task::spawn_blocking(move || {
        use mysql::prelude::Queryable;
        my_conn().query_drop(&sql).expect("setup SQL");
    })
    .await
    .unwrap();
}

async fn my_count(table: String) -> u64 {
    tokio::task::spawn_blocking(move || {
        use mysql::prelude::Queryable;
        my_conn()
            .query_first::<u64, _>(format!("SELECT count(*) FROM {table}"))
            .unwrap()
            .unwrap()
    })
    .await
    .unwrap()
}

fn my(query: &str) -> Json {
    json!({"user": "root", "database": "test", "query": query})
}

#[tokio::test]
async fn mysql_reports_rows_and_the_first_value() {
    let s = Secrets::default();
    let out = ok("mysql", json!({"user": "root"}), &s).await;
    assert_eq!(fact(&out, "rows"), &Value::Number(1.0));
    assert_eq!(fact(&out, "value"), &Value::Number(1.0));
    assert_eq!(phases(&out), ["connect", "query"]);

    let cases = [
        ("SELECT 42, 'x'", 1.0, Value::Number(42.0)),
        ("SELECT 'hello'", 1.0, Value::String("hello".into())),
        ("SELECT 12.50", 1.0, Value::Number(12.5)),
        ("SELECT NULL", 1.0, Value::Null),
        ("SELECT 1 FROM DUAL WHERE false", 0.0, Value::Null),
        (
            "SELECT DATE '2024-02-29'",
            1.0,
            Value::String("2024-02-29".into()),
        ),
        ("SELECT seq FROM seq_1_to_1500;", 1500.0, Value::Number(1.0)),
        (
            "SHOW VARIABLES LIKE 'port'",
            1.0,
            Value::String("port".into()),
        ),
    ];
    for (query, rows, value) in cases {
        let out = ok("mysql", my(query), &s).await;
        assert_eq!(fact(&out, "rows"), &Value::Number(rows), "{query}");
        assert_eq!(fact(&out, "value"), &value, "{query}");
    }
}

#[tokio::test]
async fn mysql_sslmode_require_fails_cleanly_without_server_tls() {
    // The local MariaDB has TLS off: prefer (the default) falls back, require says why not.
    let s = Secrets::default();
    ok("mysql", json!({"user": "root", "sslmode": "prefer"}), &s).await;
    let (_, e) = err(
        "mysql",
        json!({"user": "root", "sslmode": "require"}),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("does not offer TLS"), "{e}");
}

#[tokio::test]
async fn mysql_queries_cannot_write() {
    let table = unique("probe_ro");
    my_exec(format!("CREATE TABLE {table} (x int)")).await;
    let s = Secrets::default();
    let (out, e) = err(
        "mysql",
        my(&format!("INSERT INTO {table} VALUES (1)")),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(true));
    // DDL commits implicitly in MySQL: the read-only session stops it all the same.
    let other = unique("probe_ddl");
    let (_, e) = err(
        "mysql",
        my(&format!("CREATE TABLE {other} (x int)")),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("read-only"), "{e}");
    let (_, e) = err(
        "mysql",
        my(&format!("SELECT 1; DELETE FROM {table}")),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("query failed"), "{e}");
    assert_eq!(my_count(table.clone()).await, 0, "nothing was written");
    my_exec(format!("DROP TABLE {table}")).await;
    my_exec(format!("DROP TABLE IF EXISTS {other}")).await;
}

#[tokio::test]
async fn mysql_timeout_ends_the_query_in_time() {
    let s = Secrets::default();
    let started = Instant::now();
    let out = run("mysql", my("SELECT SLEEP(10)"), &s, Duration::from_secs(1)).await;
    let took = started.elapsed();
    let e = out.error.as_deref().expect("a timeout error");
    eprintln!("timeout: {e}");
    assert!(e.contains("timed out after 1s"), "{e}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}

#[tokio::test]
async fn mysql_refused_and_wrong_password() {
    let s = Secrets::default();
    let (out, e) = err(
        "mysql",
        json!({"user": "root", "port": free_port()}),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("connection refused"), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(false));

    // root logs in without a password here, so any password is wrong.
    let wrong = unique("Wrong");
    let s = Secrets::with(&[("prod/mysql#password", &wrong)]);
    let (_, e) = err(
        "mysql",
        json!({"user": "root", "password_secret": "prod/mysql#password"}),
        &s,
        &[&wrong],
    )
    .await;
    assert!(e.contains("Access denied for user 'root'"), "{e}");
    assert!(e.contains("check the secret prod/mysql#password"), "{e}");
}

// -------------------------------------------------------------------------------------------
// redis

fn redis_conn() -> redis::Connection {
    redis::Client::open("redis://127.0.0.1:6379/")
        .and_then(|c| c.get_connection())
        .expect("the shared Redis on 127.0.0.1:6379")
}

async fn redis_do(args: Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        cmd.query::<redis::Value>(&mut redis_conn())
            .expect("setup command");
    })
    .await
    .unwrap();
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[tokio::test]
async fn redis_ping_get_llen_info() {
    let s = Secrets::default();
    let out = ok("redis", json!({}), &s).await;
    assert_eq!(fact(&out, "reply"), &Value::String("PONG".into()));
    assert_eq!(phases(&out), ["connect", "command"]);

    let (text, number, list) = (unique("probe_s"), unique("probe_n"), unique("probe_l"));
    redis_do(words(&format!("SET {text} hello EX 60"))).await;
    redis_do(words(&format!("SET {number} 17 EX 60"))).await;
    redis_do(words(&format!("RPUSH {list} a b c"))).await;
    redis_do(words(&format!("EXPIRE {list} 60"))).await;

    let reply = |out: &Outcome| fact(out, "reply").clone();
    let out = ok("redis", json!({"command": format!("GET {text}")}), &s).await;
    assert_eq!(reply(&out), Value::String("hello".into()));
    let out = ok("redis", json!({"command": ["get", number]}), &s).await;
    assert_eq!(reply(&out), Value::Number(17.0));
    let out = ok(
        "redis",
        json!({"command": format!("GET {}", unique("missing"))}),
        &s,
    )
    .await;
    assert_eq!(reply(&out), Value::Null);
    let out = ok("redis", json!({"command": format!("LLEN {list}")}), &s).await;
    assert_eq!(reply(&out), Value::Number(3.0));
    let out = ok(
        "redis",
        json!({"command": format!("EXISTS {text} {list} nope")}),
        &s,
    )
    .await;
    assert_eq!(reply(&out), Value::Number(2.0));

    let out = ok("redis", json!({"command": "INFO clients"}), &s).await;
    match fact(&out, "info.connected_clients") {
        Value::Number(n) => assert!(*n >= 1.0),
        other => panic!("connected_clients: {other:?}"),
    }
    let out = ok("redis", json!({"command": "INFO server"}), &s).await;
    assert!(matches!(fact(&out, "info.redis_version"), Value::String(_)));

    // db selects the database.
    let out = ok(
        "redis",
        json!({"command": format!("GET {text}"), "db": 1}),
        &s,
    )
    .await;
    assert_eq!(reply(&out), Value::Null);
}

#[test]
fn redis_write_commands_are_refused_when_the_config_loads() {
    for cmd in ["SET a b", "DEL a", "FLUSHALL", "CONFIG SET x y", "EVAL x 0"] {
        let e = build("redis", &json!({"command": cmd})).err().expect(cmd);
        assert_eq!(e.key, "command");
        assert!(e.message.contains("may only read"), "{e}");
    }
}

#[tokio::test]
async fn redis_refused_and_wrong_password() {
    let s = Secrets::default();
    let (out, e) = err("redis", json!({"port": free_port()}), &s, &[]).await;
    assert!(e.contains("connection refused"), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(false));

    // An ACL user with a password we know, then the wrong one.
    let user = unique("probe_user");
    let right = unique("Right");
    let wrong = unique("Wrong");
    redis_do(vec![
        "ACL".into(),
        "SETUSER".into(),
        user.clone(),
        "on".into(),
        format!(">{right}"),
        "~*".into(),
        "+@read".into(),
        "+ping".into(),
        "+select".into(),
    ])
    .await;
    let settings = json!({"username": user, "password_secret": "prod/cache#password"});
    let s = Secrets::with(&[("prod/cache#password", &wrong)]);
    let (_, e) = err("redis", settings.clone(), &s, &[&wrong, &right]).await;
    assert!(e.contains("refused the login"), "{e}");
    assert!(e.contains("prod/cache#password"), "{e}");
    let s = Secrets::with(&[("prod/cache#password", &right)]);
    let out = ok("redis", settings, &s).await;
    assert_eq!(fact(&out, "reply"), &Value::String("PONG".into()));
    redis_do(vec!["ACL".into(), "DELUSER".into(), user]).await;
}

// -------------------------------------------------------------------------------------------
// queue

#[tokio::test]
async fn queue_depth_of_a_redis_list() {
    let s = Secrets::default();
    let key = unique("probe_q");
    redis_do(words(&format!("RPUSH {key} 1 2 3 4 5"))).await;
    redis_do(words(&format!("EXPIRE {key} 60"))).await;
    let out = ok("queue", json!({"backend": "redis", "key": key}), &s).await;
    assert_eq!(fact(&out, "depth"), &Value::Number(5.0));
    assert_eq!(phases(&out), ["connect", "depth"]);

    let out = ok(
        "queue",
        json!({"backend": "redis", "key": unique("none")}),
        &s,
    )
    .await;
    assert_eq!(
        fact(&out, "depth"),
        &Value::Number(0.0),
        "a missing list is empty"
    );

    let text = unique("probe_s");
    redis_do(words(&format!("SET {text} x EX 60"))).await;
    let (_, e) = err("queue", json!({"backend": "redis", "key": text}), &s, &[]).await;
    assert!(e.contains("is not a list"), "{e}");
}

/// Declares `queue` on the local RabbitMQ and publishes `n` confirmed messages to it.
async fn rabbit_fill(queue: &str, n: usize) -> lapin::Connection {
    use lapin::{options::*, types::FieldTable, BasicProperties};
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("the shared RabbitMQ on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            format!("job {i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    conn
}

async fn rabbit_delete(conn: &lapin::Connection, queue: &str) {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn queue_depth_of_a_rabbitmq_queue() {
    let queue = unique("probe_q");
    let conn = rabbit_fill(&queue, 7).await;
    let s = Secrets::with(&[
        ("prod/mq#url", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("prod/mq#password", "guest"),
    ]);
    let by_url = ok(
        "queue",
        json!({"backend": "rabbitmq", "queue": queue, "url_secret": "prod/mq#url"}),
        &s,
    )
    .await;
    let by_parts = ok(
        "queue",
        json!({"backend": "rabbitmq", "queue": queue, "user": "guest",
               "password_secret": "prod/mq#password"}),
        &s,
    )
    .await;
    rabbit_delete(&conn, &queue).await;
    for out in [by_url, by_parts] {
        assert_eq!(fact(&out, "depth"), &Value::Number(7.0));
        assert_eq!(fact(&out, "consumers"), &Value::Number(0.0));
        assert_eq!(phases(&out), ["connect", "depth"]);
    }
}

#[tokio::test]
async fn queue_missing_rabbitmq_queue_and_bad_logins() {
    let s = Secrets::with(&[
        ("prod/mq#password", "guest"),
        ("prod/mq#wrong", "not-the-guest-password"),
        ("prod/mq#garbage", "http://guest:not-the-guest-password@h/"),
    ]);
    let missing = unique("probe_missing");
    let (out, e) = err(
        "queue",
        json!({"backend": "rabbitmq", "queue": missing, "password_secret": "prod/mq#password"}),
        &s,
        &["guest@", ":guest"],
    )
    .await;
    assert!(
        e.contains(&format!("queue {missing:?} does not exist")),
        "{e}"
    );
    assert!(e.contains("404 NOT_FOUND"), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(true));

    let (out, e) = err(
        "queue",
        json!({"backend": "rabbitmq", "queue": "q", "password_secret": "prod/mq#wrong"}),
        &s,
        &["not-the-guest-password"],
    )
    .await;
    assert!(e.contains("\"guest\""), "{e}");
    assert_eq!(fact(&out, "connected"), &Value::Bool(false));

    let (_, e) = err(
        "queue",
        json!({"backend": "rabbitmq", "queue": "q", "url_secret": "prod/mq#garbage"}),
        &s,
        &["not-the-guest-password"],
    )
    .await;
    assert!(e.contains("does not hold a usable RabbitMQ URL"), "{e}");

    let (_, e) = err(
        "queue",
        json!({"backend": "rabbitmq", "queue": "q", "port": free_port()}),
        &s,
        &[],
    )
    .await;
    assert!(e.contains("connection refused"), "{e}");
}
