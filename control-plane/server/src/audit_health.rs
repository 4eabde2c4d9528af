//! Logging health on the control plane: alerts when an edge's audit trail says its spool was
//! full (events dropped, or requests refused), and when an edge goes silent ("logging
//! stopped") or speaks again ("logging resumed"). Chain gaps and forks are alerted where they
//! are found, at ingest (`channel`).

use std::collections::HashMap;
use std::time::Duration;

use sase_model::audit::{AuditEvent, EventKind};
use sase_model::fleet::DeviceStatus;

use crate::state::{now_ms, SharedState};
use crate::store::Alert;

fn alert_id() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

async fn raise(state: &SharedState, tenant_id: &str, device_id: &str, kind: &str, detail: String) {
    let alert = Alert {
        id: alert_id(),
        tenant_id: Some(tenant_id.to_string()),
        device_id: Some(device_id.to_string()),
        kind: kind.to_string(),
        detail,
        created_at_ms: now_ms(),
    };
    if let Err(err) = state.store.insert_alert(&alert).await {
        tracing::error!(%err, kind, "cannot record a logging-health alert");
    }
}

/// Raises an alert for each logging-health event among newly stored events: `audit_spool_full`
/// when an edge's spool reached its bound, `audit_events_dropped` when it recovered after
/// dropping events or refusing requests.
pub async fn alert_on_logging_health(state: &SharedState, stored: &[(AuditEvent, String)]) {
    for (event, _) in stored {
        let detail = event.detail.clone().unwrap_or_default();
        match event.kind {
            EventKind::SpoolFull => {
                raise(
                    state,
                    &event.tenant_id,
                    &event.device_id,
                    "audit_spool_full",
                    format!("seq {}: audit spool full ({detail})", event.seq),
                )
                .await;
            }
            EventKind::SpoolRecovered => {
                raise(
                    state,
                    &event.tenant_id,
                    &event.device_id,
                    "audit_events_dropped",
                    format!("seq {}: audit spool recovered ({detail})", event.seq),
                )
                .await;
            }
            _ => {}
        }
    }
}

/// Watches for edges that go silent: an active device not heard from (no channel message,
/// heartbeat or upload) for `silence` gets a `logging_stopped` alert, once; when it is heard
/// from again, `logging_resumed` with how long it was silent. Devices that were never seen
/// are not reported (they are pending, not silent).
pub async fn run_silence_watch(state: SharedState, silence: Duration) {
    let silence_ms = i64::try_from(silence.as_millis()).unwrap_or(i64::MAX);
    // Device id -> last_seen_ms at the time it was reported silent.
    let mut silent: HashMap<String, i64> = HashMap::new();
    let period = (silence / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        let tenants = match state.store.tenants().await {
            Ok(tenants) => tenants,
            Err(err) => {
                tracing::warn!(%err, "logging watch cannot list tenants");
                continue;
            }
        };
        let now = now_ms();
        for tenant in tenants {
            let devices = match state.store.devices(&tenant.id).await {
                Ok(devices) => devices,
                Err(err) => {
                    tracing::warn!(%err, "logging watch cannot list devices");
                    continue;
                }
            };
            for device in devices {
                let Some(last_seen) = device.last_seen_ms else {
                    continue;
                };
                if device.status != DeviceStatus::Active {
                    silent.remove(&device.id);
                    continue;
                }
                let quiet_for = now.saturating_sub(last_seen);
                match silent.get(&device.id).copied() {
                    None if quiet_for > silence_ms => {
                        silent.insert(device.id.clone(), last_seen);
                        tracing::warn!(device = %device.id, quiet_for_ms = quiet_for, "logging stopped");
                        raise(
                            &state,
                            &tenant.id,
                            &device.id,
                            "logging_stopped",
                            format!(
                                "device {} ({}) has sent nothing since {last_seen} (Unix ms), {} s ago",
                                device.name,
                                device.id,
                                quiet_for / 1000
                            ),
                        )
                        .await;
                    }
                    Some(reported) if last_seen > reported => {
                        silent.remove(&device.id);
                        raise(
                            &state,
                            &tenant.id,
                            &device.id,
                            "logging_resumed",
                            format!(
                                "device {} ({}) is heard from again after {} s of silence",
                                device.name,
                                device.id,
                                last_seen.saturating_sub(reported) / 1000
                            ),
                        )
                        .await;
                    }
                    _ => {}
                }
            }
        }
    }
}
