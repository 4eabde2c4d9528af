//! Fleet health: per device, what its heartbeats say (spool depth, load, memory) next to what
//! the control plane knows (last seen, applied and expected bundle version, edge version), with
//! a verdict — `ok`, `lagging` (not running the version it should for longer than
//! [`LAG_GRACE_MS`]), `silent` (not heard from for [`SILENT_AFTER_MS`]), `pending` (never
//! connected) or `decommissioned` — and alerts when a device lags (`device_lagging`, once per
//! expected version). Silent edges are alerted by `audit_health` (`logging_stopped`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use sase_model::channel::SystemLoad;
use sase_model::fleet::DeviceStatus;
use serde::Serialize;
use sqlx::Row;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{new_id, now_ms, SharedState};
use crate::store::{Alert, StoreError};

/// How long a device may run an older version than it should before it counts as lagging
/// (time to receive and apply a push, or to reconnect).
pub const LAG_GRACE_MS: i64 = 120_000;

/// No word for this long: silent (heartbeats come every 10 s).
pub const SILENT_AFTER_MS: i64 = 60_000;

/// One device's health.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceHealth {
    /// Device.
    pub device_id: String,
    /// Name.
    pub name: String,
    /// Site.
    pub site_id: String,
    /// `ok`, `lagging`, `silent`, `pending` or `decommissioned`.
    pub state: String,
    /// Last heard from (Unix ms).
    pub last_seen_ms: Option<i64>,
    /// Bundle version it runs.
    pub applied_version: Option<u64>,
    /// Bundle version it should run (the stable one outside a rollout's canaries).
    pub expected_version: Option<u64>,
    /// Edge software version.
    pub edge_version: Option<String>,
    /// Audit events waiting in its spool.
    pub spooled_events: Option<u64>,
    /// One-minute load average.
    pub load1: Option<f64>,
    /// CPUs.
    pub cpus: Option<u32>,
    /// Memory in use, percent.
    pub mem_used_percent: Option<f64>,
}

/// Stores the figures of a heartbeat.
///
/// # Errors
/// Store failures.
pub async fn record(
    state: &SharedState,
    device_id: &str,
    spooled_events: u64,
    system: Option<SystemLoad>,
    now: i64,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO device_health (device_id, spooled_events, load1_milli, cpus, mem_total_kib, mem_available_kib, reported_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (device_id) DO UPDATE SET spooled_events = excluded.spooled_events, load1_milli = excluded.load1_milli, cpus = excluded.cpus, \
         mem_total_kib = excluded.mem_total_kib, mem_available_kib = excluded.mem_available_kib, reported_at_ms = excluded.reported_at_ms",
    )
    .bind(device_id)
    .bind(i64::try_from(spooled_events).unwrap_or(i64::MAX))
    .bind(system.map(|s| i64::from(s.load1_milli)))
    .bind(system.map(|s| i64::from(s.cpus)))
    .bind(system.and_then(|s| i64::try_from(s.mem_total_kib).ok()))
    .bind(system.and_then(|s| i64::try_from(s.mem_available_kib).ok()))
    .bind(now)
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

fn bundle_version(bundle: &sase_model::SignedBundle) -> Option<u64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&bundle.payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["version"].as_u64()
}

/// The health of every device of a tenant at `now`.
///
/// # Errors
/// Store failures.
pub async fn tenant_health(
    state: &SharedState,
    tenant_id: &str,
    now: i64,
) -> Result<Vec<DeviceHealth>, ApiError> {
    let mut out = Vec::new();
    for d in state.store.devices(tenant_id).await? {
        let expected = crate::rollouts::bundle_for(state, tenant_id, &d.id)
            .await?
            .as_ref()
            .and_then(bundle_version);
        let row = sqlx::query(
            "SELECT spooled_events, load1_milli, cpus, mem_total_kib, mem_available_kib FROM device_health WHERE device_id = $1",
        )
        .bind(&d.id)
        .fetch_optional(state.store.pool())
        .await
        .map_err(StoreError::from)?;
        let (spooled, load1, cpus, mem) = match row {
            Some(r) => {
                let spooled: i64 = r.try_get("spooled_events").map_err(StoreError::from)?;
                let load: Option<i64> = r.try_get("load1_milli").map_err(StoreError::from)?;
                let cpus: Option<i64> = r.try_get("cpus").map_err(StoreError::from)?;
                let total: Option<i64> = r.try_get("mem_total_kib").map_err(StoreError::from)?;
                let avail: Option<i64> =
                    r.try_get("mem_available_kib").map_err(StoreError::from)?;
                let mem = match (total, avail) {
                    (Some(t), Some(a)) if t > 0 => {
                        Some(((t - a) as f64 / t as f64 * 1000.0).round() / 10.0)
                    }
                    _ => None,
                };
                (
                    u64::try_from(spooled).ok(),
                    load.map(|l| l as f64 / 1000.0),
                    cpus.and_then(|c| u32::try_from(c).ok()),
                    mem,
                )
            }
            None => (None, None, None, None),
        };
        let state_name = if d.status == DeviceStatus::Revoked {
            "decommissioned"
        } else {
            match d.last_seen_ms {
                None => "pending",
                Some(seen) if now - seen > SILENT_AFTER_MS => "silent",
                Some(_) if expected.is_some() && d.applied_version < expected => "lagging",
                Some(_) => "ok",
            }
        };
        out.push(DeviceHealth {
            device_id: d.id,
            name: d.name,
            site_id: d.site_id,
            state: state_name.to_string(),
            last_seen_ms: d.last_seen_ms,
            applied_version: d.applied_version,
            expected_version: expected,
            edge_version: d.edge_version,
            spooled_events: spooled,
            load1,
            cpus,
            mem_used_percent: mem,
        });
    }
    Ok(out)
}

/// The health of a tenant's fleet.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/fleet/health",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [DeviceHealth])))]
pub async fn get_health(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<DeviceHealth>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::DevicesRead, &tenant_id).await?;
    Ok(Json(tenant_health(&state, &tenant_id, now_ms()).await?))
}

/// Raises `device_lagging` for devices that have run an older version than they should for
/// longer than [`LAG_GRACE_MS`] (once per expected version). Returns how many were raised.
///
/// # Errors
/// Store failures.
pub async fn check_lag(state: &SharedState, now: i64) -> Result<u32, ApiError> {
    let mut raised = 0;
    for tenant in state.store.tenants().await? {
        // When did the tenant's latest version appear? Lag counts from there.
        let Some(latest) = state.store.latest_policy(&tenant.id).await? else {
            continue;
        };
        if now - latest.created_at_ms < LAG_GRACE_MS {
            continue;
        }
        for h in tenant_health(state, &tenant.id, now).await? {
            if h.state != "lagging" {
                continue;
            }
            let Some(expected) = h.expected_version else {
                continue;
            };
            let expected_i = i64::try_from(expected).unwrap_or(i64::MAX);
            let updated = sqlx::query(
                "UPDATE device_health SET lag_alerted_version = $1 WHERE device_id = $2 AND (lag_alerted_version IS NULL OR lag_alerted_version < $1)",
            )
            .bind(expected_i)
            .bind(&h.device_id)
            .execute(state.store.pool())
            .await
            .map_err(StoreError::from)?;
            if updated.rows_affected() == 0 {
                continue;
            }
            state
                .store
                .insert_alert(&Alert {
                    id: new_id("alert"),
                    tenant_id: Some(tenant.id.clone()),
                    device_id: Some(h.device_id.clone()),
                    kind: "device_lagging".into(),
                    detail: format!(
                        "device {} ({}) runs policy version {} but should run {expected}",
                        h.name,
                        h.device_id,
                        h.applied_version
                            .map_or("none".to_string(), |v| v.to_string())
                    ),
                    created_at_ms: now,
                })
                .await?;
            raised += 1;
        }
    }
    Ok(raised)
}

/// Runs [`check_lag`] every `period`, forever.
pub async fn run_watch(state: SharedState, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        if let Err(err) = check_lag(&state, now_ms()).await {
            tracing::warn!(?err, "fleet health watch failed");
        }
    }
}
