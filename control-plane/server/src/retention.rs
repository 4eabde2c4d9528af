//! Audit retention per tenant (default 18 months, [`sase_model::retention`]): a daily job
//! (and `POST …/audit/retention/run`) deletes whole expired months, per device the longest
//! chain prefix older than the cutoff, keeping of each deleted event only its integrity
//! skeleton (device, seq, time, log position, chain hash), and records what it deleted in a
//! [`RetentionRecord`] signed with the control plane's key over the checkpoint it was made
//! against. Exports carry the latest record so `sase-audit verify` accepts chains that start
//! after it, and nothing else.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sase_model::retention::{
    cutoff_ms, PrunedChain, RetentionRecord, DEFAULT_MONTHS, MONTHS_RANGE,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{now_ms, SharedState};
use crate::store::{Store, StoreError, StoreResult};

/// A tenant's retention.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSetting {
    /// Months the trail is kept (1-120; default 18).
    pub months: u32,
}

/// A tenant's retention and where it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RetentionView {
    /// Months the trail is kept.
    pub months: u32,
    /// Whether this is the default (no explicit setting).
    pub default: bool,
    /// Events older than this (Unix ms) are in expired months now.
    pub cutoff_ms: i64,
    /// The latest retention record, if any run deleted something.
    #[schema(value_type = Option<Object>)]
    pub latest_record: Option<RetentionRecord>,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// The tenant's retention in months, and whether it was set explicitly.
    ///
    /// # Errors
    /// Database failure.
    pub async fn retention_months(&self, tenant_id: &str) -> StoreResult<(u32, bool)> {
        let row = sqlx::query("SELECT months FROM audit_retention_settings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => {
                let months: i64 = r.try_get("months")?;
                (u32::try_from(months).unwrap_or(DEFAULT_MONTHS), true)
            }
            None => (DEFAULT_MONTHS, false),
        })
    }

    /// The tenant's latest retention record.
    ///
    /// # Errors
    /// Database failure or a record that does not parse.
    pub async fn latest_retention_record(
        &self,
        tenant_id: &str,
    ) -> StoreResult<Option<RetentionRecord>> {
        let row = sqlx::query(
            "SELECT record_json FROM audit_retention_records WHERE tenant_id = $1 ORDER BY executed_at_ms DESC, id DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let json: String = r.try_get("record_json")?;
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("retention record: {e}")))
        })
        .transpose()
    }

    /// How far a device's chain has been deleted: the last deleted seq and its hash.
    ///
    /// # Errors
    /// Database failure.
    pub async fn pruned_through(&self, device_id: &str) -> StoreResult<Option<(u64, String)>> {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE device_id = $1 AND pruned_at_ms IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok((to_u64(r.try_get("seq")?), r.try_get("hash")?)))
            .transpose()
    }
}

/// Runs retention for one tenant at `now`: deletes what has expired and returns the signed
/// record, or `None` when nothing had expired.
///
/// # Errors
/// Store failures (nothing is deleted then: one transaction).
pub async fn run_for_tenant(
    state: &SharedState,
    tenant_id: &str,
    now: i64,
) -> Result<Option<RetentionRecord>, ApiError> {
    let (months, _) = state.store.retention_months(tenant_id).await?;
    let cutoff = cutoff_ms(now, months);
    // The checkpoint the record is made against (deleting content changes no leaf).
    let (head, _) = crate::audit_log::checkpoint(state, tenant_id, now).await?;
    let devices = state.store.devices(tenant_id).await?;
    let pool = state.store.pool();
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let mut deleted = 0u64;
    let mut chains = Vec::new();
    for device in &devices {
        let first_kept = sqlx::query(
            "SELECT MIN(seq) AS m FROM audit_events WHERE device_id = $1 AND ts_ms >= $2",
        )
        .bind(&device.id)
        .bind(cutoff)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let first_kept: Option<i64> = first_kept.try_get("m").map_err(StoreError::from)?;
        let last = sqlx::query("SELECT MAX(seq) AS m FROM audit_events WHERE device_id = $1")
            .bind(&device.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let Some(last): Option<i64> = last.try_get("m").map_err(StoreError::from)? else {
            continue;
        };
        // The longest prefix older than the cutoff.
        let through = first_kept.map_or(last, |m| m - 1);
        if through >= 1 {
            let result = sqlx::query(
                "UPDATE audit_events SET event_json = '', reference = '', identity = NULL, resource = NULL, route = NULL, method = NULL, path = NULL, status = NULL, pruned_at_ms = $1 \
                 WHERE device_id = $2 AND seq <= $3 AND pruned_at_ms IS NULL",
            )
            .bind(now)
            .bind(&device.id)
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            deleted += result.rows_affected();
        }
        let anchor = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE device_id = $1 AND pruned_at_ms IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )
        .bind(&device.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if let Some(row) = anchor {
            chains.push(PrunedChain {
                device_id: device.id.clone(),
                through_seq: to_u64(row.try_get("seq").map_err(StoreError::from)?),
                through_hash: row.try_get("hash").map_err(StoreError::from)?,
            });
        }
    }
    if deleted == 0 {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(None);
    }
    let mut record = RetentionRecord {
        id: {
            use rand::RngCore as _;
            let mut b = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut b);
            hex::encode(b)
        },
        tenant_id: tenant_id.to_string(),
        months,
        cutoff_ms: cutoff,
        executed_at_ms: now,
        deleted_events: deleted,
        devices: chains,
        tree_size: head.as_ref().map_or(0, |h| h.tree_size),
        root_hash: head
            .as_ref()
            .map(|h| h.root_hash.clone())
            .unwrap_or_default(),
        signature: String::new(),
    };
    record.sign(&state.signing_key);
    let json = serde_json::to_string(&record).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO audit_retention_records (id, tenant_id, executed_at_ms, record_json) VALUES ($1, $2, $3, $4)",
    )
    .bind(&record.id)
    .bind(tenant_id)
    .bind(now)
    .bind(&json)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(tenant = %tenant_id, deleted, months, cutoff, "audit retention deleted expired months");
    Ok(Some(record))
}

/// Runs retention for every tenant every `period`, forever.
pub async fn run_job(state: SharedState, period: Duration) {
    loop {
        match state.store.tenants().await {
            Ok(tenants) => {
                for tenant in tenants {
                    if let Err(err) = run_for_tenant(&state, &tenant.id, now_ms()).await {
                        tracing::warn!(tenant = %tenant.id, ?err, "audit retention run failed");
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "audit retention cannot list tenants"),
        }
        tokio::time::sleep(period).await;
    }
}

async fn view(state: &SharedState, tenant_id: &str) -> Result<RetentionView, ApiError> {
    let (months, explicit) = state.store.retention_months(tenant_id).await?;
    Ok(RetentionView {
        months,
        default: !explicit,
        cutoff_ms: cutoff_ms(now_ms(), months),
        latest_record: state.store.latest_retention_record(tenant_id).await?,
    })
}

/// The tenant's audit retention.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/audit/retention",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = RetentionView)))]
pub async fn get_retention(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<RetentionView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    Ok(Json(view(&state, &tenant_id).await?))
}

/// Sets the tenant's audit retention (months).
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/audit/retention",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = RetentionSetting,
    responses((status = 200, body = RetentionView), (status = 400)))]
pub async fn put_retention(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(setting): Json<RetentionSetting>,
) -> Result<Json<RetentionView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditSign, &tenant_id).await?;
    if !MONTHS_RANGE.contains(&setting.months) {
        return Err(ApiError::bad_request(format!(
            "months: between {} and {}",
            MONTHS_RANGE.start(),
            MONTHS_RANGE.end()
        )));
    }
    let (before, _) = state.store.retention_months(&tenant_id).await?;
    sqlx::query(
        "INSERT INTO audit_retention_settings (tenant_id, months, updated_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET months = excluded.months, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(&tenant_id)
    .bind(i64::from(setting.months))
    .bind(now_ms())
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    crate::admin_audit::record(
        &state,
        &admin,
        "audit.retention_set",
        Some(&tenant_id),
        &tenant_id,
        serde_json::json!({"months": before}),
        serde_json::json!({"months": setting.months}),
    )
    .await?;
    Ok(Json(view(&state, &tenant_id).await?))
}

/// Runs retention for the tenant now; 200 with the signed record, 204 when nothing expired.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/audit/retention/run",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, description = "the signed retention record"), (status = 204)))]
pub async fn run_now(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    rbac::authorize_tenant(&state, &admin, Permission::AuditSign, &tenant_id).await?;
    match run_for_tenant(&state, &tenant_id, now_ms()).await? {
        Some(record) => {
            crate::admin_audit::record(
                &state,
                &admin,
                "audit.retention_run",
                Some(&tenant_id),
                &record.id,
                serde_json::Value::Null,
                serde_json::json!({"deleted_events": record.deleted_events, "cutoff_ms": record.cutoff_ms}),
            )
            .await?;
            Ok(Json(record).into_response())
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
