//! Sustained audit ingest throughput through the real ingest path: a control plane (release
//! build, SQLite or PostgreSQL), devices enrolled with `sase-edge enroll` (real keys and
//! certificates), and one client per device that speaks the device channel protocol exactly as
//! the edge does — WebSocket over TLS with the device certificate, `hello`, then `audit_batch`
//! messages of 500 chained events each signed with the device key, at most 5,000 events
//! unacknowledged (the edge's window) — and counts acknowledged events per second. The control
//! plane verifies every chain link and every batch signature, stores events, positions in the
//! Merkle log and signatures in one transaction per batch.
//!
//! Batches are built and signed before the clock starts (the edge signs as it uploads; that
//! cost is on the edge, not on the ingest being measured). Prints
//! `audit_ingest_eps=<events per second> events=<n> devices=<d> seconds=<s>`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use sase_model::audit::{
    batch_signing_bytes, BatchSignature, ChainWriter, Decision, EventKind, HttpDetails,
    ALG_ECDSA_P256_SHA256,
};
use sase_model::channel::{ControlMessage, EdgeMessage, MAX_AUDIT_BATCH, MAX_FRAME_BYTES};
use sase_model::{AuditEvent, Reason, GENESIS_HASH};
use sase_testkit::control::ControlPlane;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Audit ingest throughput through the device channel")]
struct Args {
    /// Directory holding sase-control and sase-edge.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (wiped at start).
    #[arg(long)]
    work_dir: PathBuf,
    /// Control-plane database URL (default: SQLite in the work dir).
    #[arg(long)]
    database_url: Option<String>,
    /// Devices uploading at once.
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Events in total.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
}

/// Events sent but not acknowledged, at most (as the edge).
const WINDOW: u64 = 5_000;

struct Device {
    id: String,
    frames: Vec<(u64, String)>,
    tls: Arc<rustls::ClientConfig>,
    url: String,
}

fn load_device(dir: &std::path::Path, per_device: u64) -> Result<Device> {
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("device.json"))?)?;
    let id = identity["device_id"]
        .as_str()
        .ok_or_else(|| anyhow!("device id"))?
        .to_string();
    let tenant = identity["tenant_id"]
        .as_str()
        .ok_or_else(|| anyhow!("tenant id"))?
        .to_string();
    let url = identity["channel_url"]
        .as_str()
        .ok_or_else(|| anyhow!("channel url"))?
        .to_string();
    let key_pem = std::fs::read(dir.join("device.key"))?;
    let key =
        rustls_pemfile::private_key(&mut key_pem.as_slice())?.ok_or_else(|| anyhow!("no key"))?;
    let der = match &key {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => bail!("device.key is not PKCS#8"),
    };
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &der,
        &rng,
    )
    .map_err(|e| anyhow!("device key: {e}"))?;
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

    // The events a busy edge produces: one per HTTP request, chained, in signed batches.
    let mut writer = ChainWriter::resume(0, GENESIS_HASH.into());
    let mut frames = Vec::new();
    let mut produced = 0;
    while produced < per_device {
        let n = (per_device - produced).min(MAX_AUDIT_BATCH as u64);
        let events: Vec<AuditEvent> = (0..n)
            .map(|i| {
                let mut e = AuditEvent {
                    seq: 0,
                    prev_hash: String::new(),
                    ts_ms: 1_700_000_000_000 + (produced + i) as i64,
                    tenant_id: tenant.clone(),
                    device_id: id.clone(),
                    kind: EventKind::HttpRequest,
                    decision: Decision::Allow,
                    reason: Reason::Allowed,
                    reference: format!("{:024x}", produced + i),
                    policy_version: 3,
                    identity: Some("https://idp.example|alice".into()),
                    http: Some(HttpDetails {
                        resource: "orders-api".into(),
                        route: "list-orders".into(),
                        method: "GET".into(),
                        path: "/orders".into(),
                        status: 200,
                        latency_us: 850,
                        client_ip: "192.0.2.10".into(),
                        scopes: Vec::new(),
                        groups: Vec::new(),
                    }),
                    detail: None,
                    waf: None,
                    quic: None,
                    tunnel: None,
                };
                writer.link(&mut e);
                e
            })
            .collect();
        let (first, last) = (&events[0], &events[events.len() - 1]);
        let message = batch_signing_bytes(&tenant, &id, first.seq, last.seq, &last.hash());
        let sig = signer
            .sign(&rng, &message)
            .map_err(|_| anyhow!("signing"))?;
        let last_seq = last.seq;
        let frame = serde_json::to_string(&EdgeMessage::AuditBatch {
            events,
            signature: Some(BatchSignature {
                alg: ALG_ECDSA_P256_SHA256.into(),
                sig: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
            }),
        })?;
        frames.push((last_seq, frame));
        produced += n;
    }
    Ok(Device {
        id,
        frames,
        tls: Arc::new(tls),
        url,
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn connect(device: &Device) -> Result<Ws> {
    let url = url_parts(&device.url)?;
    let tcp = tokio::net::TcpStream::connect((url.0.as_str(), url.1)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(url.0.clone())?;
    let tls = tokio_rustls::TlsConnector::from(device.tls.clone())
        .connect(name, tcp)
        .await
        .context("TLS with the device certificate")?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(device.url.as_str(), tls, Some(config)).await?;
    ws.send(Message::Text(
        serde_json::to_string(&EdgeMessage::Hello {
            applied_version: None,
            edge_version: "perf".into(),
        })?
        .into(),
    ))
    .await?;
    // The control plane answers hello with its head for this device.
    loop {
        if let ControlMessage::AuditAck { up_to_seq } = next_message(&mut ws).await? {
            if up_to_seq != 0 {
                bail!("device {} already has events", device.id);
            }
            return Ok(ws);
        }
    }
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

async fn next_message(ws: &mut Ws) -> Result<ControlMessage> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
            Some(Ok(Message::Close(f))) => bail!("control plane closed the channel: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("channel: {e}"),
            None => bail!("channel ended"),
        }
    }
}

/// Uploads all frames within the window; returns when the last one is acknowledged.
async fn upload(mut ws: Ws, frames: Vec<(u64, String)>) -> Result<()> {
    let last = frames.last().map_or(0, |f| f.0);
    let mut acked = 0u64;
    let mut next = 0usize;
    while acked < last {
        while next < frames.len() && frames[next].0.saturating_sub(acked) <= WINDOW {
            ws.send(Message::Text(frames[next].1.clone().into()))
                .await?;
            next += 1;
        }
        match next_message(&mut ws).await? {
            ControlMessage::AuditAck { up_to_seq } => acked = acked.max(up_to_seq),
            ControlMessage::AuditNack {
                resend_from,
                reason,
            } => {
                bail!("batch refused at {resend_from}: {reason}")
            }
            // Neither policies, revocations nor update offers matter to the upload.
            _ => {}
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let control = ControlPlane::start(
        &args.bin_dir,
        &args.work_dir,
        args.database_url.as_deref(),
        &[("SASE_AUDIT_CHECKPOINT_SECS", "3600"), ("RUST_LOG", "warn")],
    )
    .await?;
    let (_, site) = control.tenant_and_site("Perf").await?;
    let per_device = args.events / args.devices as u64;
    let mut devices = Vec::new();
    for i in 0..args.devices {
        let dir = args.work_dir.join(format!("edge-{i}"));
        control
            .enrol(&args.bin_dir, &site, &dir, &format!("perf-{i}"))
            .await?;
        devices.push(load_device(&dir, per_device)?);
    }
    let mut sockets = Vec::new();
    for d in &devices {
        sockets.push(connect(d).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (d, ws) in devices.iter_mut().zip(sockets) {
        let frames = std::mem::take(&mut d.frames);
        tasks.push(tokio::spawn(upload(ws, frames)));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    let total = per_device * args.devices as u64;
    // Evidence that what was counted is stored and intact.
    for d in &devices {
        let (_, report) = control
            .api_json(
                reqwest::Method::GET,
                &format!("/api/devices/{}/audit/verify", d.id),
                None,
            )
            .await?;
        if report["intact"] != true || report["head_seq"].as_u64() != Some(per_device) {
            bail!("device {} after the run: {report}", d.id);
        }
    }
    let eps = total as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "audit_ingest_eps={eps:.0} events={total} devices={} seconds={:.2}",
        args.devices,
        elapsed.as_secs_f64()
    );
    drop(control);
    Ok(())
}
