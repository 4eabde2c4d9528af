//! The edge channel: one long-lived WebSocket per device over HTTPS with mTLS.
//!
//! The device is identified by the SHA-256 of the client certificate it presented (already
//! verified against the tenant CAs by the TLS layer) and must be active. Down the channel go
//! signed policy bundles, audit acknowledgements and revocations (CAEP, all in force after each
//! hello); up come hello, heartbeats, audit batches, policy outcomes and inventory reports. Anything that is not a well-formed [`EdgeMessage`] closes the connection with
//! a policy-violation close code and raises an alert.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use futures_util::StreamExt as _;
use sase_audit::device_key::DeviceKey;
use sase_model::audit::{batch_signing_bytes, BatchSignature, ChainError};
use sase_model::channel::{ControlMessage, EdgeMessage, MAX_AUDIT_BATCH, MAX_FRAME_BYTES};
use sase_model::fleet::{Device, DeviceStatus};
use sase_model::{AuditEvent, ChainVerifier, GENESIS_HASH};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::audit_log::device_key_from_cert;
use crate::error::ApiError;
use crate::state::{now_ms, SharedState};
use crate::store::{IngestOutcome, StoredBatch};
use crate::tls::ConnInfo;

/// A device that sends nothing for this long is considered gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Upgrades an authenticated device to the channel.
#[utoipa::path(get, path = "/api/edge/channel",
    responses((status = 101, description = "WebSocket upgrade"), (status = 401), (status = 403)))]
pub async fn channel(
    State(state): State<SharedState>,
    Extension(conn): Extension<ConnInfo>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Some(cert) = conn.client_cert else {
        return Err(ApiError::unauthorized(
            "the edge channel needs the device's client certificate",
        ));
    };
    let fingerprint = hex::encode(Sha256::digest(&cert));
    let device = match state.store.device_by_cert(&fingerprint).await? {
        Some(device) if device.status == DeviceStatus::Active => device,
        Some(device) => {
            state
                .alert(
                    Some(&device.tenant_id),
                    Some(&device.id),
                    "channel_revoked_device",
                    format!("revoked device connected from {}", conn.peer),
                )
                .await;
            return Err(ApiError::forbidden("this device has been decommissioned"));
        }
        None => {
            state
                .alert(
                    None,
                    None,
                    "channel_unknown_certificate",
                    format!(
                        "certificate {fingerprint} from {} names no device",
                        conn.peer
                    ),
                )
                .await;
            return Err(ApiError::forbidden("this certificate belongs to no device"));
        }
    };
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| run(state, device, socket)))
}

async fn send(socket: &mut WebSocket, message: &ControlMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// Per-connection state of the audit ingest.
struct Conn {
    /// The key the device's batch signatures verify with (from its certificate).
    key: Option<DeviceKey>,
    /// Whether the "unsigned batches" alert was raised on this connection.
    warned_unsigned: bool,
}

async fn run(state: SharedState, device: Device, mut socket: WebSocket) {
    let key = match state.store.device_cert_pem(&device.id).await {
        Ok(Some(pem)) => device_key_from_cert(&pem),
        Ok(None) => None,
        Err(err) => {
            tracing::error!(device = %device.id, %err, "loading the device certificate failed");
            return;
        }
    };
    let mut conn = Conn {
        key,
        warned_unsigned: false,
    };
    let (sender, mut outbox) = mpsc::channel::<ControlMessage>(64);
    let conn_id = state.hub.register(&device.id, &device.tenant_id, sender);
    tracing::info!(device = %device.id, "edge channel open");
    loop {
        tokio::select! {
            queued = outbox.recv() => match queued {
                Some(message) => {
                    if !send(&mut socket, &message).await {
                        break;
                    }
                }
                // Replaced by a newer connection of the same device.
                None => break,
            },
            frame = tokio::time::timeout(IDLE_TIMEOUT, socket.next()) => {
                let text = match frame {
                    Err(_) => {
                        tracing::info!(device = %device.id, "edge channel idle, closing");
                        break;
                    }
                    Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Binary(_)))) => {
                        protocol_error(&state, &device, &mut socket, "binary frame".into()).await;
                        break;
                    }
                };
                let message = match serde_json::from_str::<EdgeMessage>(text.as_str()) {
                    Ok(message) => message,
                    Err(err) => {
                        protocol_error(&state, &device, &mut socket, err.to_string()).await;
                        break;
                    }
                };
                match handle(&state, &device, &mut conn, message).await {
                    Ok(replies) => {
                        let mut ok = true;
                        for reply in replies {
                            ok = ok && send(&mut socket, &reply).await;
                        }
                        if !ok {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::error!(device = %device.id, %err, "edge channel handling failed");
                        break;
                    }
                }
            }
        }
    }
    state.hub.unregister(&device.id, conn_id);
    tracing::info!(device = %device.id, "edge channel closed");
}

async fn protocol_error(
    state: &SharedState,
    device: &Device,
    socket: &mut WebSocket,
    detail: String,
) {
    let detail: String = detail.chars().take(300).collect();
    state
        .alert(
            Some(&device.tenant_id),
            Some(&device.id),
            "channel_protocol_error",
            format!("malformed message on the edge channel: {detail}"),
        )
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::POLICY,
            reason: "protocol error".into(),
        })))
        .await;
}

async fn handle(
    state: &SharedState,
    device: &Device,
    conn: &mut Conn,
    message: EdgeMessage,
) -> Result<Vec<ControlMessage>, ApiError> {
    let now = now_ms();
    match message {
        EdgeMessage::Hello {
            applied_version,
            edge_version,
        } => {
            let edge_version: String = edge_version.chars().take(64).collect();
            state
                .store
                .device_seen(&device.id, now, applied_version, Some(&edge_version))
                .await?;
            // Signing-key endorsements first, so a bundle signed by a new key verifies.
            let mut replies = crate::key_rotation::hello_messages(state);
            // Outside the canaries of a rollout in progress, the stable version.
            if let Some(bundle) =
                crate::rollouts::bundle_for(state, &device.tenant_id, &device.id).await?
            {
                replies.push(ControlMessage::Policy { bundle });
            }
            let head = state
                .store
                .audit_head(&device.id)
                .await?
                .map_or(0, |(s, _)| s);
            replies.push(ControlMessage::AuditAck { up_to_seq: head });
            replies.extend(crate::caep::hello_messages(state, &device.tenant_id).await?);
            replies.extend(crate::updates::pending_offers(&device.id));
            Ok(replies)
        }
        EdgeMessage::PolicyHealth {
            version,
            healthy,
            failing,
        } => {
            crate::rollouts::on_health(
                state,
                &device.tenant_id,
                &device.id,
                version,
                healthy,
                &failing,
            )
            .await?;
            Ok(Vec::new())
        }
        EdgeMessage::Heartbeat {
            applied_version,
            spooled_events,
            system,
        } => {
            state
                .store
                .device_seen(&device.id, now, applied_version, None)
                .await?;
            crate::fleet_health::record(state, &device.id, spooled_events, system, now).await?;
            Ok(Vec::new())
        }
        EdgeMessage::Inventory { entries, dropped } => {
            crate::inventory::ingest(state, device, &entries, dropped).await?;
            Ok(Vec::new())
        }
        EdgeMessage::PolicyApplied { version } => {
            state
                .store
                .device_seen(&device.id, now, Some(version), None)
                .await?;
            Ok(Vec::new())
        }
        EdgeMessage::UpdateStatus { report } => {
            crate::updates::on_report(state, device, report).await;
            Ok(Vec::new())
        }
        EdgeMessage::PolicyRejected { version, reason } => {
            if let Some(version) = version {
                // A bundle an edge refuses is as bad for a canary as a failing health check.
                crate::rollouts::on_health(
                    state,
                    &device.tenant_id,
                    &device.id,
                    version,
                    false,
                    &[format!("bundle refused: {reason}")],
                )
                .await?;
            }
            state
                .alert(
                    Some(&device.tenant_id),
                    Some(&device.id),
                    "policy_rejected",
                    format!(
                        "edge refused policy version {}: {}",
                        version.map_or("?".to_string(), |v| v.to_string()),
                        reason.chars().take(300).collect::<String>()
                    ),
                )
                .await;
            Ok(Vec::new())
        }
        EdgeMessage::AuditBatch { events, signature } => {
            if events.len() > MAX_AUDIT_BATCH {
                return Ok(vec![ControlMessage::AuditNack {
                    resend_from: events.first().map_or(1, |e| e.seq),
                    reason: format!("batch larger than {MAX_AUDIT_BATCH} events"),
                }]);
            }
            let batch = match verify_batch_signature(
                device,
                conn.key.as_ref(),
                &events,
                signature.as_ref(),
            ) {
                Ok(batch) => batch,
                Err(why) => {
                    state
                        .alert(
                            Some(&device.tenant_id),
                            Some(&device.id),
                            "audit_batch_signature_invalid",
                            why.clone(),
                        )
                        .await;
                    return Ok(vec![ControlMessage::AuditNack {
                        resend_from: events.first().map_or(1, |e| e.seq),
                        reason: why,
                    }]);
                }
            };
            if batch.is_none() && !events.is_empty() && !conn.warned_unsigned {
                conn.warned_unsigned = true;
                state
                    .alert(
                        Some(&device.tenant_id),
                        Some(&device.id),
                        "audit_batch_unsigned",
                        "the edge uploads audit batches without a device signature (an edge older than batch signatures); they are stored, and exports flag them as unsigned",
                    )
                    .await;
            }
            match ingest_batch(state, device, &events, batch.as_ref()).await? {
                Ok(outcome) => {
                    // Counted for /metrics (sase_control_audit_ingest_events_total).
                    crate::metrics::ingested(outcome.stored);
                    Ok(vec![ControlMessage::AuditAck {
                        up_to_seq: outcome.head_seq,
                    }])
                }
                Err((head, err)) => {
                    let kind = match err {
                        ChainError::Gap { .. } => "audit_chain_gap",
                        _ => "audit_chain_fork",
                    };
                    state
                        .alert(
                            Some(&device.tenant_id),
                            Some(&device.id),
                            kind,
                            err.to_string(),
                        )
                        .await;
                    Ok(vec![
                        ControlMessage::AuditAck { up_to_seq: head },
                        ControlMessage::AuditNack {
                            resend_from: head + 1,
                            reason: err.to_string(),
                        },
                    ])
                }
            }
        }
    }
}

/// Checks a batch's device signature with the device's key; returns what to store with the
/// batch (`None` for an unsigned batch from an older edge).
///
/// # Errors
/// Why the signature is refused.
pub fn verify_batch_signature(
    device: &Device,
    key: Option<&DeviceKey>,
    events: &[AuditEvent],
    signature: Option<&BatchSignature>,
) -> Result<Option<StoredBatch>, String> {
    let (Some(signature), Some(first), Some(last)) = (signature, events.first(), events.last())
    else {
        return Ok(None);
    };
    let Some(key) = key else {
        return Err(
            "the device's certificate holds no key that batch signatures can be checked with"
                .into(),
        );
    };
    let last_hash = last.hash();
    let message = batch_signing_bytes(
        &device.tenant_id,
        &device.id,
        first.seq,
        last.seq,
        &last_hash,
    );
    key.verify(&signature.alg, &message, &signature.sig)
        .map_err(|e| format!("audit batch seq {}..{}: {e}", first.seq, last.seq))?;
    Ok(Some(StoredBatch {
        first_seq: first.seq,
        last_seq: last.seq,
        last_hash,
        alg: signature.alg.clone(),
        signature: signature.sig.clone(),
    }))
}

/// [`ingest_batch`] of an unsigned batch.
///
/// # Errors
/// As [`ingest_batch`].
pub async fn ingest(
    state: &SharedState,
    device: &Device,
    events: &[AuditEvent],
) -> Result<Result<IngestOutcome, (u64, ChainError)>, ApiError> {
    ingest_batch(state, device, events, None).await
}

/// Verifies and stores a batch of a device's events. Re-delivered events (seq at or below the
/// stored head) are skipped: ingest is idempotent on `(device, seq)`. The valid prefix of a
/// batch is stored even when a later event breaks the chain; the break is returned with the
/// head after storing. The batch's (already verified) device signature is stored when the
/// batch's last event is stored by this call.
///
/// # Errors
/// Store failures (outer); chain breaks (inner, with the head seq after the valid prefix).
pub async fn ingest_batch(
    state: &SharedState,
    device: &Device,
    events: &[AuditEvent],
    batch: Option<&StoredBatch>,
) -> Result<Result<IngestOutcome, (u64, ChainError)>, ApiError> {
    let head = state.store.audit_head(&device.id).await?;
    let (head_seq, head_hash) = head
        .clone()
        .unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
    let mut verifier = ChainVerifier::resume(&device.id, head_seq, head_hash);
    let mut accepted = Vec::with_capacity(events.len());
    let mut duplicates = 0;
    let mut failure = None;
    // A re-delivered event must be the very event stored under its seq; anything else is a
    // rewritten history (fork), not a duplicate.
    let redelivered: Vec<u64> = events
        .iter()
        .filter(|e| e.device_id == device.id && e.seq <= head_seq)
        .map(|e| e.seq)
        .collect();
    let stored_hashes = match (redelivered.iter().min(), redelivered.iter().max()) {
        (Some(&lo), Some(&hi)) => state.store.audit_hashes(&device.id, lo, hi).await?,
        _ => Default::default(),
    };
    for event in events {
        if event.device_id == device.id && event.seq <= head_seq {
            if stored_hashes.get(&event.seq) != Some(&event.hash()) {
                failure = Some(ChainError::Fork { seq: event.seq });
                break;
            }
            duplicates += 1;
            continue;
        }
        if event.tenant_id != device.tenant_id {
            failure = Some(ChainError::WrongDevice { seq: event.seq });
            break;
        }
        match verifier.push(event) {
            Ok(hash) => accepted.push((event.clone(), hash)),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    if !accepted.is_empty() {
        let complete = failure.is_none()
            && batch.is_some_and(|b| accepted.last().is_some_and(|(e, _)| e.seq == b.last_seq));
        state
            .store
            .store_audit_batch(
                &device.id,
                head,
                &accepted,
                batch.filter(|_| complete),
                now_ms(),
            )
            .await?;
        crate::audit_health::alert_on_logging_health(state, &accepted).await;
    }
    let stored_head = verifier.last_seq();
    Ok(match failure {
        Some(err) => Err((stored_head, err)),
        None => Ok(IngestOutcome {
            stored: accepted.len(),
            duplicates,
            head_seq: stored_head,
        }),
    })
}
