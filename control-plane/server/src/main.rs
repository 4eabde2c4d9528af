//! `sase-control` binary: parses the command line, opens the store, loads or creates keys and
//! the TLS identity, bootstraps the first admin and serves the API and the edge channel.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sase_control::state::{AppState, Hub};
use sase_control::tls::{self, DeviceCertVerifier};
use sase_control::{auth, openapi, router, store::Store};

#[derive(Parser)]
#[command(name = "sase-control", version, about = "SASE control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as JSON objects or text (default: JSON unless stderr is a terminal).
    #[arg(
        long = "log-format",
        global = true,
        value_enum,
        env = "SASE_LOG_FORMAT"
    )]
    log_format: Option<sase_ops::logs::LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(ServeArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Write a support bundle (.tar.gz): versions, redacted config, database statistics,
    /// metrics and recent logs.
    Diag(DiagArgs),
    /// Back up a control plane (running or not) into a new directory: SQLite copy taken with
    /// `VACUUM INTO`, TLS identity, firmware store, manifest with SHA-256 of every file.
    Backup(BackupArgs),
    /// Restore a backup into a new data dir (checked against its manifest first).
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
struct BackupArgs {
    /// Data dir of the control plane to back up.
    #[arg(long, env = "SASE_DATA_DIR", default_value = "./sase-control-data")]
    data_dir: PathBuf,
    /// Database URL; default the SQLite file `<data-dir>/control.db` (PostgreSQL: the files
    /// are backed up, the database with `pg_dump`).
    #[arg(long, env = "SASE_DATABASE_URL")]
    database_url: Option<String>,
    /// New (or empty) directory to write the backup into.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup directory.
    #[arg(long)]
    from: PathBuf,
    /// New data dir to restore into (must not hold a database).
    #[arg(long)]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory for the SQLite database, TLS files and keys (created if missing).
    #[arg(long, env = "SASE_DATA_DIR", default_value = "./sase-control-data")]
    data_dir: PathBuf,
    /// Database URL; default is the SQLite file `<data-dir>/control.db`.
    /// Use `postgres://user:pass@host/db` for PostgreSQL.
    #[arg(long, env = "SASE_DATABASE_URL")]
    database_url: Option<String>,
    /// Address to listen on (HTTPS).
    #[arg(long, env = "SASE_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// URL edges and admins use to reach this server; default `https://<listen>`.
    #[arg(long, env = "SASE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Extra DNS names or IPs for the generated TLS certificate (repeatable).
    #[arg(long = "tls-name", env = "SASE_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,
    /// Seconds between signed audit checkpoints (Merkle tree heads over each tenant's log).
    #[arg(long, env = "SASE_AUDIT_CHECKPOINT_SECS", default_value_t = 60)]
    audit_checkpoint_secs: u64,
    /// Milliseconds between looks for new events to forward to SIEM sinks when all are caught up.
    #[arg(long, env = "SASE_SIEM_POLL_MS", default_value_t = 500)]
    siem_poll_ms: u64,
    /// Seconds without a word from an active edge before a `logging_stopped` alert.
    #[arg(long, env = "SASE_LOGGING_SILENCE_SECS", default_value_t = 300)]
    logging_silence_secs: u64,
    /// User name of the first admin (created only when there is no admin).
    #[arg(long, env = "SASE_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// File holding the secrets key (32 random bytes, base64 or hex) that seals private keys
    /// and TOTP seeds in the database; env `SASE_SECRETS_KEY` may hold the key itself. Default:
    /// `<data-dir>/secrets.key`, generated on first start (development only).
    #[arg(long, env = "SASE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Ops listener: `/metrics`, `/healthz`, `/readyz` (plain HTTP; keep it on loopback or a
    /// management network, never the public API address).
    #[arg(long = "metrics-listen", env = "SASE_METRICS_LISTEN", default_value = sase_control::metrics::DEFAULT_LISTEN)]
    metrics_listen: SocketAddr,
    /// Control-plane security settings (sign-in throttling, sessions, certificate reload).
    #[command(flatten)]
    security: SecurityArgs,
}

/// Sign-in throttling, session lifetimes and TLS certificate reload (docs/OPERATIONS.md,
/// "Control-plane security").
#[derive(clap::Args)]
struct SecurityArgs {
    /// Failed sign-ins for one user name, within the window, that lock it.
    #[arg(long, env = "SASE_LOGIN_ACCOUNT_FAILURES", default_value_t = 5)]
    login_account_failures: i64,
    /// Failed sign-ins from one address (IPv6 /64), across accounts, that lock it.
    #[arg(long, env = "SASE_LOGIN_ADDRESS_FAILURES", default_value_t = 30)]
    login_address_failures: i64,
    /// Window over which failed sign-ins are counted, in seconds.
    #[arg(long, env = "SASE_LOGIN_WINDOW_SECS", default_value_t = 900)]
    login_window_secs: i64,
    /// First lockout, in seconds (doubled for each further episode).
    #[arg(long, env = "SASE_LOGIN_LOCK_SECS", default_value_t = 900)]
    login_lock_secs: i64,
    /// Longest lockout, in seconds.
    #[arg(long, env = "SASE_LOGIN_MAX_LOCK_SECS", default_value_t = 86_400)]
    login_max_lock_secs: i64,
    /// A console session unused this long ends (seconds).
    #[arg(long, env = "SASE_SESSION_IDLE_SECS", default_value_t = 1800)]
    session_idle_secs: i64,
    /// A console session ends this long after sign-in (seconds).
    #[arg(long, env = "SASE_SESSION_MAX_SECS", default_value_t = 43_200)]
    session_max_secs: i64,
    /// Seconds between looks at the TLS certificate files (also reloaded on SIGHUP).
    #[arg(long, env = "SASE_TLS_RELOAD_SECS", default_value_t = 5)]
    tls_reload_secs: u64,
}

impl SecurityArgs {
    fn apply(&self) -> anyhow::Result<()> {
        use sase_control::{login_throttle, sessions};
        let positive = [
            self.login_account_failures,
            self.login_address_failures,
            self.login_window_secs,
            self.login_lock_secs,
            self.login_max_lock_secs,
            self.session_idle_secs,
            self.session_max_secs,
        ];
        if positive.iter().any(|v| *v <= 0) {
            anyhow::bail!("sign-in and session limits must be positive");
        }
        let policy = |max_failures| login_throttle::Policy {
            max_failures,
            window_ms: self.login_window_secs * 1000,
            lock_ms: self.login_lock_secs * 1000,
            max_lock_ms: self.login_max_lock_secs.max(self.login_lock_secs) * 1000,
        };
        login_throttle::configure(login_throttle::Settings {
            account: policy(self.login_account_failures),
            address: policy(self.login_address_failures),
        });
        sessions::configure(sessions::Settings {
            idle_ms: self.session_idle_secs * 1000,
            absolute_ms: self.session_max_secs * 1000,
        });
        Ok(())
    }
}

#[derive(clap::Args)]
struct DiagArgs {
    /// Where to write the bundle.
    #[arg(long)]
    out: PathBuf,
    /// The control plane's data directory.
    #[arg(long, env = "SASE_DATA_DIR", default_value = "./sase-control-data")]
    data_dir: PathBuf,
    /// Database URL; default is the SQLite file `<data-dir>/control.db`.
    #[arg(long, env = "SASE_DATABASE_URL")]
    database_url: Option<String>,
    /// Process id of the running server (its command line and environment are included).
    #[arg(long)]
    pid: Option<u32>,
    /// Base URL of the running server's ops listener.
    #[arg(long = "ops-url", default_value = "http://127.0.0.1:9465")]
    ops_url: String,
    /// A log file whose last lines are included (repeatable); journald is asked too.
    #[arg(long = "log-file")]
    log_files: Vec<PathBuf>,
    /// Lines kept from the end of each log.
    #[arg(long = "log-lines", default_value_t = 2000)]
    log_lines: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sase_ops::logs::init(cli.log_format, "info,sqlx=warn");
    match cli.command {
        Command::Diag(args) => {
            let database_url = args.database_url.unwrap_or_else(|| {
                format!(
                    "sqlite://{}?mode=rw",
                    args.data_dir.join("control.db").display()
                )
            });
            let path = sase_control::diag::write_bundle(&sase_control::diag::DiagOptions {
                data_dir: args.data_dir,
                database_url,
                out: args.out,
                pid: args.pid,
                ops_url: args.ops_url,
                log_files: args.log_files,
                log_lines: args.log_lines,
            })
            .await?;
            println!("diagnostic bundle written: {}", path.display());
            Ok(())
        }
        Command::Openapi => {
            println!("{}", openapi::document_json());
            Ok(())
        }
        Command::Serve(args) => serve(args).await,
        Command::Backup(args) => {
            let database_url = args.database_url.unwrap_or_else(|| {
                format!(
                    "sqlite://{}?mode=rw",
                    args.data_dir.join("control.db").display()
                )
            });
            let store = Store::connect(&database_url)
                .await
                .context("opening the database")?;
            let manifest = sase_control::backup::backup(&store, &args.data_dir, &args.out).await?;
            if manifest.database == "postgres" {
                println!("PostgreSQL: the database is not in the backup; dump it with pg_dump --format=custom (docs/OPERATIONS.md)");
            }
            if manifest.secrets_key_included {
                println!("the backup includes secrets.key from the data dir: it opens every sealed secret, keep the backup as safe as the key");
            }
            println!(
                "backup written: {} ({} files, database {}, secrets key id {})",
                args.out.display(),
                manifest.files.len(),
                manifest.database,
                manifest.secrets_key_id.as_deref().unwrap_or("-")
            );
            Ok(())
        }
        Command::Restore(args) => {
            let manifest = sase_control::backup::restore(&args.from, &args.data_dir)?;
            println!(
                "restored {} files into {} (database {}, secrets key id {}{})",
                manifest.files.len(),
                args.data_dir.display(),
                manifest.database,
                manifest.secrets_key_id.as_deref().unwrap_or("-"),
                if manifest.secrets_key_included {
                    ", key included"
                } else {
                    "; start with the same --secrets-key-file / SASE_SECRETS_KEY"
                }
            );
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.security.apply()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let database_url = args.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            args.data_dir.join("control.db").display()
        )
    });
    let store = Store::connect(&database_url)
        .await
        .with_context(|| "opening the database")?;

    // Private keys and seeds in the database are sealed with the operator's secrets key; a
    // wrong key stops here with a clear message.
    let store =
        sase_control::secrets::init(store, &args.data_dir, args.secrets_key_file.as_deref())
            .await
            .context("secrets at rest")?;
    // The signing keys live in the database (sealed) so that every replica signs with them.
    let (signing_key, policy_keys) = sase_control::key_rotation::load(&store)
        .await
        .context("loading the policy signing keys")?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ip = args.listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names.extend(args.tls_names.iter().cloned());
    let tls_dir = args.data_dir.join("tls");
    // Creates the identity on first start; the files are then served and watched for changes.
    let _ = tls::load_or_create_server_identity(&tls_dir, &names)?;
    let server_cert = Arc::new(sase_control::tls_reload::ReloadingCert::load(
        &tls_dir.join("server.pem"),
        &tls_dir.join("server.key"),
    )?);
    let verifier = Arc::new(DeviceCertVerifier::new(
        &store.all_tenant_ca_certs().await?,
    )?);
    let config = sase_control::tls_reload::server_config(server_cert.clone(), verifier.clone())?;
    tokio::spawn(sase_control::tls_reload::watch(
        server_cert,
        std::time::Duration::from_secs(args.security.tls_reload_secs.max(1)),
    ));

    // Bind before anything is announced, so `--listen 127.0.0.1:0` works (tests) and the
    // public URL names the real port.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{bound}"));
    sase_control::updates::init(&args.data_dir.join("updates"))
        .context("opening the firmware update store")?;
    let state = Arc::new(AppState {
        store,
        signing_key,
        policy_keys,
        hub: Hub::default(),
        public_url: public_url.clone(),
        device_verifier: verifier,
        crs: sase_waf::CrsPaths::default(),
        waf_known_good: Default::default(),
    });
    if let Some(password) = auth::bootstrap_admin(
        &state,
        &args.admin_user,
        std::env::var("SASE_ADMIN_PASSWORD").ok(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the first admin: {e:?}"))?
    {
        println!(
            "first admin created: user={} password={password}  (shown once; store it now)",
            args.admin_user
        );
    }
    // The ops listener (/metrics, /healthz, /readyz) on its own address; a failure to bind it
    // is reported and the control plane serves on without it.
    match tokio::net::TcpListener::bind(args.metrics_listen).await {
        Ok(ops) => {
            println!("sase-control ops listening on http://{}", ops.local_addr()?);
            tokio::spawn(sase_control::metrics::serve(ops, state.clone()));
        }
        Err(err) => {
            tracing::error!(addr = %args.metrics_listen, %err, "cannot bind the ops listener; running without it")
        }
    }
    println!(
        "sase-control listening on https://{bound} (public URL {public_url}; CA certificate {})",
        tls_dir.join("ca.pem").display()
    );
    use std::io::Write as _;
    std::io::stdout().flush()?;
    tokio::spawn(sase_control::audit_log::run_checkpointer(
        state.clone(),
        std::time::Duration::from_secs(args.audit_checkpoint_secs.max(1)),
    ));
    tokio::spawn(sase_control::audit_health::run_silence_watch(
        state.clone(),
        std::time::Duration::from_secs(args.logging_silence_secs.max(1)),
    ));
    tokio::spawn(sase_control::incidents::run_deadline_watch(
        state.clone(),
        std::time::Duration::from_secs(60),
    ));
    tokio::spawn(sase_control::retention::run_job(
        state.clone(),
        std::time::Duration::from_secs(86_400),
    ));
    // Sessions expiring and MFA windows lapsing republish the tunnel peers (crate::ztna).
    tokio::spawn(sase_control::ztna::run_watch(
        state.clone(),
        std::time::Duration::from_millis(250),
    ));
    tokio::spawn(sase_control::rollouts::run_watch(
        state.clone(),
        std::time::Duration::from_millis(500),
    ));
    tokio::spawn(sase_control::fanout::run_listener(
        state.clone(),
        database_url.clone(),
    ));
    tokio::spawn(sase_control::key_rotation::run_refresh(
        state.clone(),
        std::time::Duration::from_secs(5),
    ));
    tokio::spawn(sase_control::fleet_health::run_watch(
        state.clone(),
        std::time::Duration::from_secs(30),
    ));
    tokio::spawn(sase_control::siem::run_forwarder(
        state.clone(),
        std::time::Duration::from_millis(args.siem_poll_ms.clamp(50, 60_000)),
    ));
    let app = router(state);
    tokio::select! {
        () = tls::serve(listener, config, app) => {}
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}

#[cfg(unix)]
async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
