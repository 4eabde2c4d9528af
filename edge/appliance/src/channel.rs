//! The edge side of the management channel: dials the control plane (WebSocket over TLS with
//! the device certificate), applies the bundles it pushes, uploads the audit spool in batches
//! and deletes spooled events only once acknowledged. Reconnects with capped exponential backoff;
//! enforcement never waits on it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use sase_model::audit::{Decision, EventKind};
use sase_model::channel::{ControlMessage, EdgeMessage, MAX_AUDIT_BATCH, MAX_FRAME_BYTES};
use sase_model::{AuditEvent, Reason};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::policy::ApplyOutcome;
use crate::proxy::{new_reference, now_ms, Edge};

/// Events sent but not yet acknowledged, at most.
const UPLOAD_WINDOW: u64 = 5_000;
/// Heartbeat period.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long the uploader waits after being woken by a new event before reading the spool, so
/// that events arriving together travel together.
const UPLOAD_COALESCE: Duration = Duration::from_millis(20);

/// Runs the channel forever.
pub async fn run(
    edge: Arc<Edge>,
    tls: Arc<rustls::ClientConfig>,
    signer: Arc<crate::identity::BatchSigner>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(&edge, &tls, &signer).await {
            Ok(()) => {
                tracing::info!("control-plane channel closed; reconnecting");
                backoff = Duration::from_millis(200);
            }
            Err(err) => tracing::warn!("control-plane channel: {err:#}"),
        }
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 4);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The audit event recording that a bundle was applied or refused.
pub fn policy_event(
    tenant_id: &str,
    device_id: &str,
    version: u64,
    outcome: Result<u64, String>,
) -> AuditEvent {
    let (kind, decision, reason, detail) = match outcome {
        Ok(v) => (
            EventKind::PolicyApplied,
            Decision::Allow,
            Reason::Allowed,
            format!("policy version {v} applied"),
        ),
        Err(why) => (
            EventKind::PolicyRejected,
            Decision::Deny,
            Reason::NoPolicy,
            why,
        ),
    };
    AuditEvent {
        seq: 0,
        prev_hash: String::new(),
        ts_ms: now_ms(),
        tenant_id: tenant_id.to_string(),
        device_id: device_id.to_string(),
        kind,
        decision,
        reason,
        reference: new_reference(),
        policy_version: version,
        identity: None,
        http: None,
        detail: Some(detail),
        waf: None,
        quic: None,
        tunnel: None,
    }
}

async fn session(
    edge: &Arc<Edge>,
    tls: &Arc<rustls::ClientConfig>,
    signer: &Arc<crate::identity::BatchSigner>,
) -> anyhow::Result<()> {
    let url = url::Url::parse(&edge.identity.channel_url).context("channel URL")?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("channel URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .context("connect timed out")??;
    tcp.set_nodelay(true)?;
    let server_name = rustls::pki_types::ServerName::try_from(host.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(server_name, tcp)
        .await
        .context("TLS handshake with the control plane")?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    let (mut sink, mut stream) = ws.split();
    tracing::info!(url = %url, "control-plane channel open");

    let send = |message: &EdgeMessage| -> anyhow::Result<Message> {
        Ok(Message::Text(serde_json::to_string(message)?.into()))
    };
    let applied = edge.policy.snapshot().map(|p| p.version);
    sink.send(send(&EdgeMessage::Hello {
        applied_version: applied,
        edge_version: env!("CARGO_PKG_VERSION").to_string(),
    })?)
    .await?;
    crate::update::session_started();

    let mut acked: Option<u64> = None;
    let mut sent_up_to = 0u64;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut inventory = tokio::time::interval(crate::inventory::REPORT_INTERVAL);
    inventory.tick().await;
    loop {
        // Upload what is pending, within the window, once the control plane told us its head.
        if let Some(acked_seq) = acked {
            let head = edge.spool.head_seq();
            while sent_up_to < head && sent_up_to.saturating_sub(acked_seq) < UPLOAD_WINDOW {
                let spool = edge.spool.clone();
                let after = sent_up_to;
                let signer = signer.clone();
                let identity = edge.identity.clone();
                let (batch, signature) = tokio::task::spawn_blocking(move || {
                    let batch = spool.read_after(after, MAX_AUDIT_BATCH)?;
                    let signature = signer.sign(&identity, &batch)?;
                    anyhow::Ok((batch, signature))
                })
                .await??;
                let Some(last) = batch.last().map(|e| e.seq) else {
                    break;
                };
                sink.send(send(&EdgeMessage::AuditBatch {
                    events: batch,
                    signature,
                })?)
                .await?;
                sent_up_to = last;
            }
        }
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    None => return Ok(()),
                    Some(Err(err)) => bail!("channel read: {err}"),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        tracing::info!(?frame, "control plane closed the channel");
                        return Ok(());
                    }
                    Some(Ok(_)) => continue,
                };
                let message: ControlMessage = match serde_json::from_str(text.as_str()) {
                    Ok(m) => m,
                    Err(err) => bail!("malformed message from the control plane: {err}"),
                };
                match message {
                    ControlMessage::Policy { bundle } => {
                        let offered = bundle_version(&bundle);
                        let upstreams = crate::health::upstreams_of(&bundle);
                        let outcome = {
                            let policy = edge.policy.clone();
                            tokio::task::spawn_blocking(move || policy.apply(&bundle)).await?
                        };
                        match outcome {
                            Ok(ApplyOutcome::Applied(version)) => {
                                tracing::info!(version, "policy applied");
                                edge.spool.append(policy_event(&edge.identity.tenant_id, &edge.identity.device_id, version, Ok(version)))?;
                                if let Some(active) = edge.policy.snapshot() {
                                    let edge = edge.clone();
                                    tokio::spawn(async move { crate::jwks::refresh_all(&edge, &active).await });
                                }
                                sink.send(send(&EdgeMessage::PolicyApplied { version })?).await?;
                                // Health after the change: canary rollouts are decided on it.
                                let failing = crate::health::probe(&upstreams).await;
                                if !failing.is_empty() {
                                    tracing::warn!(version, ?failing, "upstreams unreachable after the policy change");
                                }
                                sink.send(send(&EdgeMessage::PolicyHealth { version, healthy: failing.is_empty(), failing })?).await?;
                            }
                            Ok(ApplyOutcome::Unchanged(version)) => {
                                sink.send(send(&EdgeMessage::PolicyApplied { version })?).await?;
                            }
                            Err(reason) => {
                                tracing::error!(%reason, "policy bundle refused");
                                edge.spool.append(policy_event(&edge.identity.tenant_id, &edge.identity.device_id, offered.unwrap_or(0), Err(reason.clone())))?;
                                sink.send(send(&EdgeMessage::PolicyRejected { version: offered, reason })?).await?;
                            }
                        }
                    }
                    ControlMessage::AuditAck { up_to_seq } => {
                        let spool = edge.spool.clone();
                        tokio::task::spawn_blocking(move || spool.ack(up_to_seq)).await??;
                        if acked.is_none() {
                            sent_up_to = up_to_seq;
                        }
                        acked = Some(acked.map_or(up_to_seq, |a| a.max(up_to_seq)));
                    }
                    ControlMessage::Revocations { revocations } => {
                        let received = revocations.len();
                        match edge.revocations.apply(revocations, now_ms()) {
                            Ok(added) => tracing::info!(received, added, held = edge.revocations.len(), "revocations applied"),
                            Err(err) => tracing::error!(%err, "revocations enforced but not persisted"),
                        }
                    }
                    ControlMessage::UpdateOffer { offer } => crate::update::offered(edge.clone(), offer),
                    ControlMessage::SigningKeys { endorsements } => {
                        match edge.policy.accept_endorsements(&endorsements) {
                            Ok(0) => {}
                            Ok(added) => tracing::info!(added, trusted = ?edge.policy.trusted_keys(), "next policy signing key announced"),
                            Err(err) => tracing::error!(%err, "signing-key endorsement refused"),
                        }
                    }
                    ControlMessage::AuditNack { resend_from, reason } => {
                        tracing::warn!(resend_from, %reason, "control plane refused an audit batch");
                        sent_up_to = resend_from.saturating_sub(1);
                        // Do not spin: give the control plane a moment before resending.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            () = edge.spool.appended() => {
                // Let a busy edge gather events into bigger batches: one wake-up and one spool
                // read per batch instead of one per request (events are already on disk).
                tokio::time::sleep(UPLOAD_COALESCE).await;
            }
            reports = crate::update::outgoing() => {
                for report in reports {
                    sink.send(send(&report)?).await?;
                }
            }
            _ = inventory.tick() => {
                edge.revocations.prune(now_ms());
                if let Some((entries, dropped)) = edge.inventory.take_report() {
                    sink.send(send(&EdgeMessage::Inventory { entries, dropped })?).await?;
                }
            }
            _ = heartbeat.tick() => {
                sink.send(send(&EdgeMessage::Heartbeat {
                    applied_version: edge.policy.snapshot().map(|p| p.version),
                    spooled_events: edge.spool.pending(),
                    system: crate::health::system_load(),
                })?).await?;
            }
        }
    }
}

/// Best-effort version of a bundle for reporting a refusal (unverified; never trusted).
fn bundle_version(bundle: &sase_model::SignedBundle) -> Option<u64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&bundle.payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("version")?.as_u64()
}
