//! Policy push latency to a fleet: N simulated edges — real WebSocket clients over TLS with
//! genuine device certificates (each enrolled with `sase-edge enroll`), all in this process —
//! hold the device channel open to a control plane; a policy change is published and each
//! client notes when the new bundle arrives. Reports p50 / p99 / max of (arrival − publish)
//! over several changes. With `--database-url` (PostgreSQL) it then starts a second replica on
//! the same database, moves every edge to it, publishes on the first and measures again
//! (fan-out through LISTEN/NOTIFY).
//!
//! Ends with `policy_push_p99_ms=<worst p99> edges=<n>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use sase_model::channel::{ControlMessage, EdgeMessage, MAX_FRAME_BYTES};
use sase_testkit::control::ControlPlane;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Policy push latency to N simulated edges")]
struct Args {
    /// Directory with sase-control and sase-edge.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Work directory (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
    /// PostgreSQL URL; also measures through a second replica.
    #[arg(long)]
    database_url: Option<String>,
    /// Simulated edges.
    #[arg(long, default_value_t = 1000)]
    edges: usize,
    /// Policy changes measured per setting.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Arrival times of bundle versions, per edge.
type Arrivals = Arc<Mutex<Vec<HashMap<u64, Instant>>>>;

struct Device {
    url: String,
    tls: Arc<rustls::ClientConfig>,
}

fn load_device(dir: &Path) -> Result<Device> {
    let identity: Value = serde_json::from_slice(&std::fs::read(dir.join("device.json"))?)?;
    let url = identity["channel_url"]
        .as_str()
        .ok_or_else(|| anyhow!("channel url"))?
        .to_string();
    let key = rustls_pemfile::private_key(&mut std::fs::read(dir.join("device.key"))?.as_slice())?
        .ok_or_else(|| anyhow!("no key"))?;
    let certs = rustls_pemfile::certs(&mut std::fs::read(dir.join("device.pem"))?.as_slice())
        .collect::<Result<Vec<_>, _>>()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(dir.join("control-ca.pem"))?.as_slice()) {
        roots.add(c?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)?;
    Ok(Device {
        url,
        tls: Arc::new(tls),
    })
}

fn url_parts(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("wss://")
        .ok_or_else(|| anyhow!("not wss: {url}"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("no port in {url}"))?;
    Ok((host.to_string(), port.parse()?))
}

fn bundle_version(message: &ControlMessage) -> Option<u64> {
    let ControlMessage::Policy { bundle } = message else {
        return None;
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&bundle.payload)
        .ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["version"].as_u64()
}

/// Connects one simulated edge to `port` and records every bundle version it receives until
/// `stop` is set. Returns once the hello was answered.
async fn connect(
    device: &Device,
    port: u16,
    index: usize,
    arrivals: Arrivals,
) -> Result<tokio::task::JoinHandle<()>> {
    let (host, _) = url_parts(&device.url)?;
    let path = device
        .url
        .trim_start_matches("wss://")
        .split_once('/')
        .map_or("", |(_, p)| p);
    let url = format!("wss://{host}:{port}/{path}");
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(device.tls.clone())
        .connect(name, tcp)
        .await
        .context("TLS with the device certificate")?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), tls, Some(config)).await?;
    ws.send(Message::Text(
        serde_json::to_string(&EdgeMessage::Hello {
            applied_version: None,
            edge_version: "push-perf".into(),
        })?
        .into(),
    ))
    .await?;
    // Until the hello is answered (its audit ack), so that "connected" means "listening".
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let m: ControlMessage = serde_json::from_str(t.as_str())?;
                if let Some(v) = bundle_version(&m) {
                    if let Ok(mut a) = arrivals.lock() {
                        a[index].insert(v, Instant::now());
                    }
                }
                if matches!(m, ControlMessage::AuditAck { .. }) {
                    break;
                }
            }
            Some(Ok(_)) => continue,
            other => bail!("channel ended before the hello was answered: {other:?}"),
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Text(t) = frame {
                if let Ok(m) = serde_json::from_str::<ControlMessage>(t.as_str()) {
                    if let Some(v) = bundle_version(&m) {
                        if let Ok(mut a) = arrivals.lock() {
                            a[index].entry(v).or_insert_with(Instant::now);
                        }
                    }
                }
            }
        }
    }))
}

fn policy(n: usize) -> Value {
    json!({"resources": [{"name": "app", "upstream": "http://127.0.0.1:9",
        "routes": [{"id": format!("r{n}"), "methods": ["GET"], "path": "/health", "public": true}]}]})
}

/// Publishes `rounds` changes on `cp`; returns every edge's delivery latency (ms).
async fn measure(
    cp: &ControlPlane,
    tenant: &str,
    arrivals: &Arrivals,
    edges: usize,
    rounds: usize,
    base: usize,
) -> Result<Vec<f64>> {
    let mut latencies = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let (status, body) = cp
            .api_json(
                reqwest::Method::PUT,
                &format!("/api/tenants/{tenant}/policy"),
                Some(policy(base + round)),
            )
            .await?;
        if !status.is_success() {
            bail!("publish: {status} {body}");
        }
        let version = body["version"]
            .as_u64()
            .ok_or_else(|| anyhow!("no version"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = arrivals
                .lock()
                .map(|a| a.iter().filter(|m| m.contains_key(&version)).count())
                .unwrap_or(0);
            if got == edges {
                break;
            }
            if Instant::now() > deadline {
                bail!("version {version} reached {got} of {edges} edges within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Ok(a) = arrivals.lock() {
            latencies.extend(
                a.iter()
                    .filter_map(|m| m.get(&version))
                    .map(|t| t.saturating_duration_since(started).as_secs_f64() * 1000.0),
            );
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(latencies)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    let a = ControlPlane::start(bins, work, args.database_url.as_deref(), &[]).await?;
    let (tenant, site) = a.tenant_and_site("Push Co").await?;
    let (status, _) = a
        .api_json(
            reqwest::Method::PUT,
            &format!("/api/tenants/{tenant}/policy"),
            Some(policy(0)),
        )
        .await?;
    if !status.is_success() {
        bail!("first policy: {status}");
    }

    // Enrol the fleet (real keys and certificates), eight at a time.
    let started = Instant::now();
    let a = Arc::new(a);
    let mut dirs = Vec::with_capacity(args.edges);
    for chunk in (0..args.edges).collect::<Vec<_>>().chunks(8) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let dir = work.join(format!("edges/e{i}"));
            dirs.push(dir.clone());
            let (a, bins, site) = (a.clone(), bins.clone(), site.clone());
            tasks.push(tokio::spawn(async move {
                a.enrol(&bins, &site, &dir, &format!("edge-{i}")).await
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    println!(
        "     {} edges enrolled in {:.1} s",
        args.edges,
        started.elapsed().as_secs_f64()
    );
    let devices: Vec<Device> = dirs.iter().map(|d| load_device(d)).collect::<Result<_>>()?;
    let port_a = url_parts(&devices[0].url)?.1;

    let arrivals: Arrivals = Arc::new(Mutex::new(vec![HashMap::new(); args.edges]));
    let started = Instant::now();
    let mut readers = Vec::new();
    for chunk in (0..args.edges).collect::<Vec<_>>().chunks(50) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let (arrivals, device) = (arrivals.clone(), &devices[i]);
            tasks.push(connect(device, port_a, i, arrivals));
        }
        for t in futures_util::future::join_all(tasks).await {
            readers.push(t?);
        }
    }
    println!(
        "     {} edges connected in {:.1} s",
        args.edges,
        started.elapsed().as_secs_f64()
    );
    let single = measure(&a, &tenant, &arrivals, args.edges, args.rounds, 1).await?;
    println!(
        "push one replica:  p50={:.1} ms p99={:.1} ms max={:.1} ms deliveries={}",
        pct(&single, 0.5),
        pct(&single, 0.99),
        pct(&single, 1.0),
        single.len()
    );
    let mut worst = pct(&single, 0.99);

    if let Some(url) = &args.database_url {
        for r in readers.drain(..) {
            r.abort();
        }
        // A second replica on the same database and the same TLS identity.
        let work_b = work.join("replica-b");
        std::fs::create_dir_all(work_b.join("control"))?;
        let copy = std::process::Command::new("cp")
            .arg("-r")
            .arg(work.join("control/tls"))
            .arg(work_b.join("control/tls"))
            .status()?;
        if !copy.success() {
            bail!("copying the TLS identity for replica B");
        }
        // Replicas of one database share its secrets key (docs/OPERATIONS.md "Secrets and
        // keys"); replica A generated it in its data dir.
        std::fs::copy(
            work.join("control/secrets.key"),
            work_b.join("control/secrets.key"),
        )
        .context("copying the secrets key for replica B")?;
        let b = ControlPlane::start(bins, &work_b, Some(url), &[]).await?;
        let port_b: u16 =
            b.cp.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow!("replica B address {}", b.cp))?;
        let arrivals_b: Arrivals = Arc::new(Mutex::new(vec![HashMap::new(); args.edges]));
        for chunk in (0..args.edges).collect::<Vec<_>>().chunks(50) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|&i| connect(&devices[i], port_b, i, arrivals_b.clone()))
                .collect();
            for t in futures_util::future::join_all(tasks).await {
                readers.push(t?);
            }
        }
        println!("     {} edges moved to replica B", args.edges);
        // Published on A, delivered by B.
        let replicas = measure(&a, &tenant, &arrivals_b, args.edges, args.rounds, 100).await?;
        println!(
            "push two replicas (change on A, edges on B): p50={:.1} ms p99={:.1} ms max={:.1} ms deliveries={}",
            pct(&replicas, 0.5), pct(&replicas, 0.99), pct(&replicas, 1.0), replicas.len()
        );
        worst = worst.max(pct(&replicas, 0.99));
        drop(b);
    }
    for r in readers {
        r.abort();
    }
    println!("policy_push_p99_ms={worst:.1} edges={}", args.edges);
    Ok(())
}
