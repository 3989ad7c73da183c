//! `steward up` and `steward init`: open the store, initialize or unseal it, serve the API.
//! Signals are handled here: SIGTERM and SIGINT stop accepting connections, let in-flight
//! requests finish for `server.shutdown_grace`, then exit.

use std::{io::Write, path::Path, sync::Arc};

use anyhow::{bail, Context};
use steward_core::{config::Config, SystemClock};
use steward_crypto::UnsealKey;
use steward_secrets::{Engine, EngineConfig, InitRequest, SealMode};
use steward_store::Store;
use tracing_subscriber::EnvFilter;

use crate::settings::{key_file_path, root_token_path};

/// How long a stopping server keeps serving before it closes idle connections.
const LAME_DUCK: std::time::Duration = std::time::Duration::from_millis(500);

/// Environment variable holding the root key (base64), instead of the key file.
pub const ROOT_KEY_ENV: &str = "STEWARD_ROOT_KEY";

/// Sets up logging. Dependencies that could echo query parameters stay at info or quieter.
pub fn init_logging(cfg: &Config) {
    let filter = format!(
        "{},tokio_postgres=info,postgres=info,hyper=info,h2=info,rustls=info",
        cfg.log.level
    );
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        steward_core::config::LogFormat::Json => builder.json().flatten_event(true).init(),
        steward_core::config::LogFormat::Human => builder.init(),
    }
}

/// Opens the configured store.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let s = &cfg.store;
    if s.url == "sqlite" {
        Store::open_sqlite(&s.data, s.sqlite_synchronous, s.pool_size)
            .await
            .with_context(|| format!("cannot open the embedded store in {}", s.data.display()))
    } else {
        Store::open_postgres(&s.url, s.pool_size)
            .await
            .context("cannot open the PostgreSQL store")
    }
}

fn ensure_data_dir(cfg: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = &cfg.store.data;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    Ok(())
}

/// Writes the root token file (0600), replacing a stale one from an interrupted init.
fn write_token_file(path: &Path, token: &str) -> std::io::Result<()> {
    let line = zeroize::Zeroizing::new(format!("{token}\n"));
    crate::files::write_private_file(path, line.as_bytes())
}

/// The unseal key from STEWARD_ROOT_KEY or the key file. `create` makes a key file if neither
/// exists (first start).
fn unseal_key(cfg: &Config, create: bool) -> anyhow::Result<UnsealKey> {
    if let Ok(v) = std::env::var(ROOT_KEY_ENV) {
        let key = steward_crypto::SecretKey::from_base64(v.trim()).map_err(|e| {
            anyhow::anyhow!("{ROOT_KEY_ENV} does not hold a valid root key ({e}); it must be the base64 key from the key file")
        })?;
        return Ok(UnsealKey::from_secret(key));
    }
    let path = key_file_path(cfg);
    if create && !path.exists() {
        let key = UnsealKey::generate();
        steward_crypto::write_key_file(&path, &key)
            .with_context(|| format!("cannot write the root key file {}", path.display()))?;
        return Ok(key);
    }
    steward_crypto::read_key_file(&path).map_err(|e| {
        anyhow::anyhow!("{e}").context(format!(
            "cannot load the root key (from {} or {ROOT_KEY_ENV})",
            path.display()
        ))
    })
}

fn engine_for(cfg: &Config, store: Store) -> Arc<Engine> {
    Arc::new(Engine::new(
        store,
        crate::testhooks::clock().unwrap_or_else(|| Arc::new(SystemClock)),
        EngineConfig::from(&cfg.secrets),
    ))
}

fn rotation_settings(cfg: &Config) -> steward_rotation::RotationSettings {
    let r = &cfg.rotation;
    steward_rotation::RotationSettings {
        concurrency: r.concurrency,
        jitter: r.jitter,
        retry_base: r.retry_base,
        retry_max: r.retry_max,
        expiry_warnings: r.expiry_warnings.clone(),
        expiry_scan: r.expiry_scan,
        overdue_after: r.overdue_after,
        sink: steward_rotation::SinkConfig {
            webhook_url: cfg.events.webhook_url.clone(),
            signing_secret: cfg.events.signing_secret.clone(),
        },
        ..Default::default()
    }
}

fn print_init(cfg: &Config, token: &str, shares: &[zeroize::Zeroizing<String>], threshold: u8) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Steward initialized.\n");
    if !shares.is_empty() {
        let _ = writeln!(
            out,
            "Unseal key shares ({threshold} of {} needed; give each to a different person, they are shown only now):",
            shares.len()
        );
        for (i, s) in shares.iter().enumerate() {
            let _ = writeln!(out, "  share {}: {}", i + 1, s.as_str());
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "Root token (shown once; also saved to {}):",
        root_token_path(cfg).display()
    );
    let _ = writeln!(out, "  {token}\n");
    let _ = writeln!(
        out,
        "Use it to create narrower tokens and policies, then revoke it: steward token revoke"
    );
    let _ = out.flush();
}

/// Initializes the store (unless it already is). Returns the engine, unsealed in key mode.
pub async fn init(cfg: &Config, shamir: Option<(u8, u8)>) -> anyhow::Result<Arc<Engine>> {
    ensure_data_dir(cfg)?;
    let store = open_store(cfg).await?;
    let engine = engine_for(cfg, store);
    if engine.is_initialized().await? {
        bail!("this store is already initialized; start it with `steward up`");
    }
    do_init(cfg, &engine, shamir).await?;
    Ok(engine)
}

async fn do_init(cfg: &Config, engine: &Engine, shamir: Option<(u8, u8)>) -> anyhow::Result<()> {
    let req = match shamir {
        Some((shares, threshold)) => InitRequest::Shamir { shares, threshold },
        None => InitRequest::Key(unseal_key(cfg, true)?),
    };
    let token_path = root_token_path(cfg);
    let res = engine
        .initialize(req, |t| write_token_file(&token_path, t))
        .await?;
    print_init(cfg, &res.root_token, &res.shares, shamir.map_or(1, |s| s.1));
    Ok(())
}

/// `steward up`.
pub async fn up(cfg: Config) -> anyhow::Result<()> {
    init_logging(&cfg);
    ensure_data_dir(&cfg)?;
    let store = open_store(&cfg).await?;
    let engine = engine_for(&cfg, store);
    match engine.seal_mode().await? {
        None => {
            do_init(&cfg, &engine, None).await?;
        }
        Some(SealMode::Key) => {
            let key = unseal_key(&cfg, false)?;
            engine.unseal_with_key(key).await?;
        }
        Some(SealMode::Shamir) => {
            tracing::warn!("the store is sealed with key shares: run `steward unseal` to open it");
        }
    }
    serve(cfg, engine).await
}

async fn serve(cfg: Config, engine: Arc<Engine>) -> anyhow::Result<()> {
    let settings = steward_api::Settings {
        request_timeout: cfg.server.request_timeout,
        max_body_bytes: cfg.secrets.max_value_bytes * 2 + 64 * 1024,
        version: env!("CARGO_PKG_VERSION"),
    };
    let rotations = steward_rotation::Rotations::new(
        engine.clone(),
        steward_rotators::Registry::builtin(),
        rotation_settings(&cfg),
        crate::testhooks::fault_hook(),
    );
    let monitoring =
        steward_checks::Compiled::compile(&cfg.monitoring, &cfg.store.data.display().to_string())
            .map_err(|e| anyhow::anyhow!("invalid [monitoring] configuration: {e}"))?;
    let backup_cfg = steward_dr::Compiled::compile(&cfg.backup, &own_store(&cfg)?)
        .map_err(|e| anyhow::anyhow!("invalid [backup] configuration: {e}"))?;
    // A down dependency mutes the alerts of the checks that depend on it.
    let mut alerting_cfg = cfg.alerting.clone();
    alerting_cfg
        .inhibit_rules
        .extend(monitoring.inhibit_rules());
    let alerting = steward_alerting::Alerting::new(engine.clone(), &alerting_cfg)
        .map_err(|e| anyhow::anyhow!("invalid [alerting] configuration: {e}"))?;
    let (sched_stop_tx, mut sched_stop_rx) = tokio::sync::watch::channel(false);
    let alerting_task = tokio::spawn(alerting.clone().run(sched_stop_tx.subscribe()));
    let checks = steward_checks::Monitor::new(engine.clone(), Some(alerting.clone()), monitoring);
    let checks_task = tokio::spawn(checks.clone().run(sched_stop_tx.subscribe()));
    let backups = steward_dr::Backups::new(engine.clone(), Some(alerting.clone()), backup_cfg);
    let backups_task = tokio::spawn(backups.clone().run(sched_stop_tx.subscribe()));
    let scheduler = tokio::spawn(rotations.clone().run(async move {
        let _ = sched_stop_rx.wait_for(|s| *s).await;
    }));
    let state = steward_api::AppState {
        engine,
        rotations,
        alerting,
        checks,
        backups,
        metrics: Arc::new(steward_api::Metrics::default()),
        settings: Arc::new(settings),
        ui: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (in use? change it with --listen or STEWARD_LISTEN)",
                cfg.server.listen
            )
        })?;
    tracing::info!(
        listen = %cfg.server.listen,
        store = state.engine.store().kind(),
        sealed = state.engine.is_sealed(),
        "steward is up"
    );
    let app = steward_api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grace = cfg.server.shutdown_grace;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Lame-duck period: requests already on the wire (sent on kept-alive connections but not
        // yet read) are still served; only then are connections closed as they go idle.
        let drain = LAME_DUCK.min(grace);
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "stop signal received: serving requests already sent"
        );
        tokio::time::sleep(drain).await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections; finishing in-flight requests"
        );
        let _ = stop_tx.send(true);
    });
    let mut stop_rx2 = stop_rx.clone();
    tokio::select! {
        r = server => r.context("server failed")?,
        _ = async move {
            let _ = stop_rx2.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; exiting with requests still in flight");
        }
    }
    drop(stop_rx);
    let _ = sched_stop_tx.send(true);
    let _ = scheduler.await;
    let _ = alerting_task.await;
    let _ = checks_task.await;
    let _ = backups_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Where Steward's own store is, for backup sources of type `steward`.
fn own_store(cfg: &Config) -> anyhow::Result<steward_dr::OwnStore> {
    if cfg.store.url == "sqlite" {
        return Ok(steward_dr::OwnStore::Sqlite(
            cfg.store.data.join(steward_store::sqlite::DB_FILE),
        ));
    }
    let u = url::Url::parse(&cfg.store.url).context("the store URL is not a URL")?;
    Ok(steward_dr::OwnStore::Postgres {
        host: u.host_str().unwrap_or("127.0.0.1").to_string(),
        port: u.port().unwrap_or(5432),
        user: if u.username().is_empty() {
            "postgres".into()
        } else {
            u.username().to_string()
        },
        database: u.path().trim_start_matches('/').to_string(),
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
