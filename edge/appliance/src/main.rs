//! `sase-edge` binary: `enroll` trades a claim code for a device identity; `run` enforces the
//! policy on the published listeners and keeps the management channel up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, Subcommand};
use sase_edge::identity::{self, DataDir};
use sase_edge::policy::PolicyHolder;
use sase_edge::proxy::{Edge, Limits};
use sase_edge::spool::Spool;
use sase_edge::waf::WafStage;
use sase_edge::{channel, listener};

#[derive(Parser)]
#[command(name = "sase-edge", version, about = "SASE branch edge daemon")]
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
    /// Enrol this device with a control plane using a one-time claim code.
    Enroll {
        /// Control-plane URL, e.g. https://cp.example:8443
        #[arg(long = "control-plane")]
        control_plane: String,
        /// The claim code from the control plane.
        #[arg(long, allow_hyphen_values = true)]
        claim: String,
        /// CA certificate (PEM) that the control plane's TLS certificate chains to; default:
        /// the system's CA bundle (for a control plane with a publicly trusted certificate).
        #[arg(long = "ca-cert", default_value = "/etc/ssl/certs/ca-certificates.crt")]
        ca_cert: PathBuf,
        /// Data directory for the device identity.
        #[arg(long, env = "SASE_EDGE_DATA_DIR", default_value = "./sase-edge-data")]
        data_dir: PathBuf,
        /// Device name shown to admins (default: host name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Enforce policy and keep the control-plane channel up.
    Run {
        /// Data directory written by `enroll`.
        #[arg(long, env = "SASE_EDGE_DATA_DIR", default_value = "./sase-edge-data")]
        data_dir: PathBuf,
        /// Plain-HTTP published listener, e.g. 127.0.0.1:8080.
        #[arg(long = "http-listen")]
        http_listen: Option<SocketAddr>,
        /// HTTPS published listener, e.g. 127.0.0.1:8444.
        #[arg(long = "https-listen")]
        https_listen: Option<SocketAddr>,
        /// Listener certificate chain (PEM); generated under a local CA when absent.
        #[arg(long = "tls-cert", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Listener private key (PEM).
        #[arg(long = "tls-key", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Seconds an upstream may take to answer.
        #[arg(long, default_value_t = 30)]
        upstream_timeout_secs: u64,
        /// Also write WAF rule matches to this file in ModSecurity's error-log style.
        #[arg(long = "waf-log")]
        waf_log: Option<PathBuf>,
        /// WAF worker threads (default: two per core). Each runs one inspection at a time;
        /// 32 requests per worker may wait, beyond that the resource's overload setting applies.
        #[arg(long = "waf-workers", env = "SASE_EDGE_WAF_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
        waf_workers: Option<u16>,
        /// UDP address of the published QUIC port (HTTP/3 when the policy inspects QUIC);
        /// default: the HTTPS listener's address with port 443. Bound only when the policy's
        /// `quic` block asks for it (see docs/QUIC.md).
        #[arg(long = "quic-listen")]
        quic_listen: Option<SocketAddr>,
        /// UDP address of the `sni_filter` relay (forwards QUIC flows whose server name is
        /// allowed, refuses the rest).
        #[arg(long = "quic-relay-listen")]
        quic_relay_listen: Option<SocketAddr>,
        /// Most connections one client address (IPv6: one /64) may hold open on the published
        /// listeners; more are closed at once (slowloris).
        #[arg(long = "max-connections-per-ip", env = "SASE_EDGE_MAX_CONNECTIONS_PER_IP", default_value_t = sase_edge::ratelimit_conn::DEFAULT_MAX_CONNECTIONS_PER_IP)]
        max_connections_per_ip: usize,
        /// Most connections open on the published listeners in all.
        #[arg(long = "max-connections", env = "SASE_EDGE_MAX_CONNECTIONS", default_value_t = sase_edge::ratelimit_conn::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Threads serving the published listeners' connections, each with a single-threaded
        /// runtime (default: one per core); 0 serves them on the daemon's own runtime.
        #[arg(long = "connection-threads", env = "SASE_EDGE_CONNECTION_THREADS", value_parser = clap::value_parser!(u16).range(0..=256))]
        connection_threads: Option<u16>,
        /// Bound of the audit spool.
        #[command(flatten)]
        spool: sase_edge::spool::SpoolArgs,
        /// Local ops listener: `/metrics`, `/healthz`, `/readyz` (keep it on loopback).
        #[arg(long = "metrics-listen", env = "SASE_EDGE_METRICS_LISTEN", default_value = sase_edge::ops::DEFAULT_LISTEN)]
        metrics_listen: SocketAddr,
        /// The ZTNA tunnel listener (off unless --tunnel-listen is given).
        #[command(flatten)]
        tunnel: Box<sase_edge::tunnel::TunnelArgs>,
    },
    /// Write a support bundle (.tar.gz): versions, redacted config, policy version, spool
    /// state, metrics and recent logs.
    Diag {
        /// Where to write the bundle.
        #[arg(long)]
        out: PathBuf,
        /// Data directory of the edge.
        #[arg(long, env = "SASE_EDGE_DATA_DIR", default_value = "./sase-edge-data")]
        data_dir: PathBuf,
        /// Process id of the running daemon (its command line and environment are included).
        #[arg(long)]
        pid: Option<u32>,
        /// Base URL of the running edge's ops listener.
        #[arg(long = "ops-url", default_value = "http://127.0.0.1:9464")]
        ops_url: String,
        /// A log file whose last lines are included (repeatable); journald is asked too.
        #[arg(long = "log-file")]
        log_files: Vec<PathBuf>,
        /// Lines kept from the end of each log.
        #[arg(long = "log-lines", default_value_t = 2000)]
        log_lines: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        // Threads started before main (jemalloc's) would keep their capabilities.
        sase_edge::privs::single_threaded_or_reexec()?;
    }
    sase_ops::logs::init(cli.log_format, "info");
    // `run` opens what needs privileges while this is the process's only thread and then drops
    // its capabilities, before the runtime (or the tunnel) starts any other thread (edge::privs).
    let privileged = match &cli.command {
        Command::Run {
            http_listen,
            https_listen,
            quic_listen,
            quic_relay_listen,
            metrics_listen,
            tunnel,
            ..
        } => Some(open_privileged(
            *http_listen,
            *https_listen,
            (*quic_listen, *quic_relay_listen),
            *metrics_listen,
            tunnel,
        )?),
        _ => None,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(async_main(cli, privileged))
}

/// What `run` opened with privileges before dropping them.
struct Privileged {
    tunnel: Option<sase_edge::tunnel::Opened>,
    http: Option<tokio::net::TcpSocket>,
    https: Option<tokio::net::TcpSocket>,
}

/// The published QUIC port: `--quic-listen`, else port 443 on the HTTPS listener's address.
fn quic_addr(quic_listen: Option<SocketAddr>, https: SocketAddr) -> SocketAddr {
    quic_listen.unwrap_or_else(|| SocketAddr::new(https.ip(), 443))
}

/// Opens the TUN device and binds the tunnel socket and the published TCP listeners, then drops
/// every capability the rest of the run does not need (`CAP_NET_BIND_SERVICE` stays only when a
/// socket bound later — the published QUIC port, which follows the policy, the QUIC relay or the
/// ops listener — is on a privileged port) and sets `no_new_privs`.
fn open_privileged(
    http_listen: Option<SocketAddr>,
    https_listen: Option<SocketAddr>,
    (quic_listen, quic_relay_listen): (Option<SocketAddr>, Option<SocketAddr>),
    metrics_listen: SocketAddr,
    tunnel: &sase_edge::tunnel::TunnelArgs,
) -> anyhow::Result<Privileged> {
    if http_listen.is_none() && https_listen.is_none() {
        bail!("give at least one of --http-listen or --https-listen");
    }
    let bind = |addr: SocketAddr| {
        sase_edge::ratelimit_conn::bind_published_socket(addr)
            .with_context(|| format!("binding {addr}"))
    };
    let opened = Privileged {
        tunnel: sase_edge::tunnel::open(tunnel)?,
        http: http_listen.map(bind).transpose()?,
        https: https_listen.map(bind).transpose()?,
    };
    let later: Vec<SocketAddr> = https_listen
        .map(|a| quic_addr(quic_listen, a))
        .into_iter()
        .chain(quic_relay_listen)
        .chain([metrics_listen])
        .collect();
    let keep_bind = sase_edge::privs::bind_needs_capability(
        &later,
        sase_edge::privs::system_unprivileged_port_start(),
    );
    let report = sase_edge::privs::drop_after_setup(keep_bind)
        .context("dropping capabilities after the privileged set-up")?;
    tracing::info!(
        dropped = %report.dropped.join(","),
        kept = %report.kept.join(","),
        bounding_dropped = report.bounding_dropped,
        no_new_privs = true,
        "capabilities dropped after set-up"
    );
    Ok(opened)
}

async fn async_main(cli: Cli, privileged: Option<Privileged>) -> anyhow::Result<()> {
    match cli.command {
        Command::Diag {
            out,
            data_dir,
            pid,
            ops_url,
            log_files,
            log_lines,
        } => {
            let path = sase_edge::diag::write_bundle(&sase_edge::diag::DiagOptions {
                data_dir,
                out,
                pid,
                ops_url,
                log_files,
                log_lines,
            })
            .await?;
            println!("diagnostic bundle written: {}", path.display());
            Ok(())
        }
        Command::Enroll {
            control_plane,
            claim,
            ca_cert,
            data_dir,
            name,
        } => {
            let name = name
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "edge".to_string());
            let dir = DataDir::new(data_dir);
            let id = identity::enroll(&dir, &control_plane, &claim, &ca_cert, &name).await?;
            println!(
                "enrolled: device={} tenant={} site={} data-dir={}",
                id.device_id,
                id.tenant_id,
                id.site_id,
                dir.root().display()
            );
            Ok(())
        }
        Command::Run {
            data_dir,
            http_listen: _,
            https_listen,
            tls_cert,
            tls_key,
            upstream_timeout_secs,
            waf_log,
            waf_workers,
            quic_listen,
            quic_relay_listen,
            max_connections_per_ip,
            max_connections,
            connection_threads,
            spool,
            metrics_listen,
            tunnel,
        } => {
            let privileged = privileged.ok_or_else(|| anyhow!("run without its set-up"))?;
            let dir = DataDir::new(data_dir);
            run(
                dir,
                privileged,
                https_listen,
                tls_cert.zip(tls_key),
                upstream_timeout_secs,
                waf_log,
                waf_workers,
                (quic_listen, quic_relay_listen),
                sase_edge::ratelimit::EdgeLimiter::with_connection_caps(
                    max_connections_per_ip,
                    max_connections,
                ),
                connection_threads,
                spool.bound(),
                metrics_listen,
                *tunnel,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    dir: DataDir,
    privileged: Privileged,
    https_listen: Option<SocketAddr>,
    tls_files: Option<(PathBuf, PathBuf)>,
    upstream_timeout_secs: u64,
    waf_log: Option<PathBuf>,
    waf_workers: Option<u16>,
    (quic_listen, quic_relay_listen): (Option<SocketAddr>, Option<SocketAddr>),
    limiter: sase_edge::ratelimit::EdgeLimiter,
    connection_threads: Option<u16>,
    spool_bound: sase_edge::spool::SpoolBound,
    metrics_listen: SocketAddr,
    tunnel: sase_edge::tunnel::TunnelArgs,
) -> anyhow::Result<()> {
    // Modes of the data dir and key files: tightened and reported, never silently (perms.rs).
    let extra_keys: Vec<PathBuf> = tls_files.iter().map(|(_, k)| k.clone()).collect();
    for fixed in sase_edge::perms::check(dir.root(), &extra_keys)? {
        tracing::warn!(
            path = %fixed.path.display(),
            was = %format!("{:o}", fixed.was),
            now = %format!("{:o}", fixed.now),
            "file mode too open: tightened"
        );
    }
    identity::prepare_data_dir(&dir)?;
    let identity = identity::load_identity(&dir)?;
    let key = sase_model::bundle::verifying_key_from_b64(&identity.policy_signing_key)
        .context("pinned policy signing key in device.json")?;
    let policy = Arc::new(PolicyHolder::new(
        key,
        identity.tenant_id.clone(),
        dir.bundle(),
    ));
    let spool = Arc::new(Spool::open(&dir.spool()).context("opening the audit spool")?);
    spool.set_bound(spool_bound);
    match policy.load_from_disk() {
        Ok(Some(version)) => tracing::info!(version, "enforcing the stored policy bundle"),
        Ok(None) => {
            tracing::warn!("no policy bundle yet: refusing protected requests until one arrives")
        }
        Err(err) => {
            tracing::error!(%err, "stored policy bundle refused: failing closed until a good one arrives");
            // Reported to the control plane through the audit trail.
            spool.append(channel::policy_event(
                &identity.tenant_id,
                &identity.device_id,
                0,
                Err(format!("stored bundle refused at start: {err}")),
            ))?;
        }
    }
    let channel_tls = identity::channel_tls_config(&dir)?;
    // The ZTNA tunnel (UDP + TUN), following the policy's peers; held until shutdown.
    let tunnel_shell = sase_edge::tunnel::start(privileged.tunnel, &tunnel, dir.root(), &policy)?;
    let batch_signer = Arc::new(identity::BatchSigner::load(&dir)?);
    let upstream = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let jwks_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()?;
    // Bind first so the WAF knows the server addresses and `:0` works for tests.
    // Bound before the capabilities were dropped (open_privileged); listening needs none.
    let listen = |socket: tokio::net::TcpSocket| {
        socket
            .listen(sase_edge::ratelimit_conn::LISTEN_BACKLOG)
            .context("listening on a published port")
    };
    let http_listener = privileged.http.map(listen).transpose()?;
    let https_listener = match (https_listen, privileged.https) {
        (Some(addr), Some(socket)) => {
            let tls = match &tls_files {
                Some((cert, key)) => listener::load_tls(cert, key)?,
                None => listener::load_or_create_listener_tls(
                    &dir.tls(),
                    &["localhost".to_string(), addr.ip().to_string()],
                )?,
            };
            Some((listen(socket)?, tls))
        }
        _ => None,
    };
    let edge = Arc::new(Edge {
        identity: identity.clone(),
        policy: policy.clone(),
        spool: spool.clone(),
        upstream,
        jwks_client,
        limits: Limits {
            upstream_timeout: Duration::from_secs(upstream_timeout_secs),
            http_addr: http_listener.as_ref().and_then(|l| l.local_addr().ok()),
            https_addr: https_listener
                .as_ref()
                .and_then(|(l, _)| l.local_addr().ok()),
            ..Limits::default()
        },
        waf: match waf_workers {
            Some(n) => WafStage::with_workers(usize::from(n)),
            None => WafStage::sized_to_cores(),
        },
        waf_log: match &waf_log {
            Some(path) => Some(
                sase_edge::waf::MatchLog::open(path)
                    .with_context(|| format!("opening the WAF log {}", path.display()))?,
            ),
            None => None,
        },
        revocations: Arc::new(sase_edge::revocation::Revocations::load(
            dir.root().join("revocations.json"),
            sase_edge::proxy::now_ms(),
        )),
        inventory: sase_edge::inventory::Inventory::default(),
        limiter,
        trust: sase_edge::translate::UpstreamTrust::new(
            &identity.device_id,
            dir.cert(),
            dir.key(),
        )?,
    });
    // Fetches the keys of `jwks_url` issuers at once for the stored policy, then on schedule.
    tokio::spawn(sase_edge::jwks::run_refresher(edge.clone()));

    let connection_threads = match connection_threads.map(usize::from) {
        Some(0) => None,
        configured => {
            let threads = configured.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            Some(
                listener::ConnectionThreads::start(threads)
                    .context("starting the connection threads")?,
            )
        }
    };
    let mut urls = Vec::new();
    if let Some(shell) = &tunnel_shell {
        // Tunnel flows to plain-HTTP resources, redirected by the shell, into the pipeline.
        let addr = sase_edge::tunnel::serve_http(shell.clone(), edge.clone()).await?;
        urls.push(format!("tunnel-http://{addr}"));
    }
    if let Some(l) = http_listener {
        urls.push(format!("http://{}", l.local_addr()?));
        tokio::spawn(listener::serve(
            l,
            None,
            edge.clone(),
            connection_threads.clone(),
        ));
    }
    if let Some((l, tls)) = https_listener {
        let https_addr = l.local_addr()?;
        urls.push(format!("https://{https_addr}"));
        // QUIC: the published UDP port follows the policy (HTTP/3, ICMP reject, or discard).
        let quic_addr = quic_addr(quic_listen, https_addr);
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(sase_edge::quic::run_published(
            edge.clone(),
            quic_addr,
            tls.clone(),
            port_tx,
        ));
        if let Ok(port) = port_rx.await {
            urls.push(format!("udp://{}", SocketAddr::new(quic_addr.ip(), port)));
        }
        tokio::spawn(listener::serve(
            l,
            Some(tls),
            edge.clone(),
            connection_threads.clone(),
        ));
    }
    if let Some(addr) = quic_relay_listen {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding the QUIC relay on {addr}"))?;
        urls.push(format!("quic-relay://{}", socket.local_addr()?));
        tokio::spawn(sase_edge::quic_relay::run(edge.clone(), socket));
    }
    sase_edge::ops::mark_listeners_up();
    if let Some(l) = sase_edge::ops::bind(metrics_listen).await {
        println!("sase-edge ops listening on http://{}", l.local_addr()?);
        tokio::spawn(sase_edge::ops::serve(l, edge.clone()));
    }
    // Firmware updates (appliance image only): rollback reports, trial confirmation, offers.
    sase_edge::update::start(edge.clone(), channel_tls.clone())?;
    tokio::spawn(channel::run(edge.clone(), channel_tls, batch_signer));
    {
        let spool = spool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let spool = spool.clone();
                if let Ok(Err(err)) = tokio::task::spawn_blocking(move || spool.sync()).await {
                    tracing::error!(%err, "audit spool sync failed");
                }
            }
        });
    }
    tracing::info!(workers = edge.waf.workers(), "WAF pool started");
    println!(
        "sase-edge running: device={} listening on {}",
        identity.device_id,
        urls.join(" ")
    );
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    spool.sync()?;
    Ok(())
}
