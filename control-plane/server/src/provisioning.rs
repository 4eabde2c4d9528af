//! Provisioning at fleet scale: claim codes listed per site with their state, created in bulk
//! from CSV (one code per row, returned as CSV once), revoked before use; devices
//! decommissioned (their certificate refused from then on, the live channel cut); and the
//! diff between any two policy versions.
//!
//! Re-enrolment: a claim code bound to an existing device (`POST …/devices/{id}/reenroll`);
//! enrolling with it keeps the device's id, name and history but replaces its key and
//! certificate — the old certificate is refused from then on and its live channel is cut.
//!
//! A claim code is stored only as a hash; its public id is the first 16 hex characters of that
//! hash (it names the code without revealing it).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::{self, Admin};
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{now_ms, SharedState};
use crate::store::StoreError;

/// Most rows one CSV import creates.
pub const MAX_BULK_CODES: usize = 1_000;

/// A claim code as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClaimCodeView {
    /// Public id (a prefix of the code's hash; the code itself is never shown again).
    pub id: String,
    /// Label given at creation (e.g. the box it is meant for).
    pub label: Option<String>,
    /// `pending`, `used`, `expired` or `revoked`.
    pub status: String,
    /// Created (Unix ms).
    pub created_at_ms: i64,
    /// Expires (Unix ms).
    pub expires_at_ms: i64,
    /// Used (Unix ms).
    pub used_at_ms: Option<i64>,
    /// The device it enrolled.
    pub device_id: Option<String>,
    /// Revoked (Unix ms).
    pub revoked_at_ms: Option<i64>,
}

/// Options of a bulk import.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct BulkQuery {
    /// Validity of each code in minutes (1-43,200; default 10,080 = one week).
    #[serde(default)]
    pub ttl_minutes: Option<i64>,
}

/// Decommissioning.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decommission {
    /// Why (kept with the device and in the admin-action trail).
    pub reason: String,
}

/// Versions to compare (both required; optional here only so that a caller without access
/// is told so first).
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
pub struct DiffQuery {
    /// The earlier version.
    #[serde(default)]
    pub from: Option<u64>,
    /// The later version.
    #[serde(default)]
    pub to: Option<u64>,
}

fn code_id(hash: &str) -> String {
    hash.chars().take(16).collect()
}

/// Lists a site's claim codes with their state.
#[utoipa::path(get, path = "/api/sites/{site_id}/claim-codes",
    params(("site_id" = String, Path, description = "site id")),
    responses((status = 200, body = [ClaimCodeView])))]
pub async fn list_codes(
    State(state): State<SharedState>,
    admin: Admin,
    Path(site_id): Path<String>,
) -> Result<Json<Vec<ClaimCodeView>>, ApiError> {
    let site = rbac::authorize_site(&state, &admin, Permission::DevicesRead, &site_id).await?;
    let rows = sqlx::query(
        "SELECT code_hash, label, created_at_ms, expires_at_ms, used_at_ms, device_id, revoked_at_ms FROM claim_codes WHERE site_id = $1 ORDER BY created_at_ms DESC",
    )
    .bind(&site.id)
    .fetch_all(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    let now = now_ms();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let hash: String = r.try_get("code_hash").map_err(StoreError::from)?;
        let expires_at_ms: i64 = r.try_get("expires_at_ms").map_err(StoreError::from)?;
        let used_at_ms: Option<i64> = r.try_get("used_at_ms").map_err(StoreError::from)?;
        let revoked_at_ms: Option<i64> = r.try_get("revoked_at_ms").map_err(StoreError::from)?;
        let status = match (used_at_ms, revoked_at_ms) {
            (Some(_), _) => "used",
            (None, Some(_)) => "revoked",
            (None, None) if expires_at_ms <= now => "expired",
            (None, None) => "pending",
        };
        out.push(ClaimCodeView {
            id: code_id(&hash),
            label: r.try_get("label").map_err(StoreError::from)?,
            status: status.to_string(),
            created_at_ms: r.try_get("created_at_ms").map_err(StoreError::from)?,
            expires_at_ms,
            used_at_ms,
            device_id: r.try_get("device_id").map_err(StoreError::from)?,
            revoked_at_ms,
        });
    }
    Ok(Json(out))
}

/// One CSV field, quoted when needed (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// Labels from a CSV body: a header row naming a `label` (or `name`) column, then one code
/// per row. Quoted fields (RFC 4180) are understood; empty rows are skipped.
fn parse_labels(text: &str) -> Result<Vec<String>, String> {
    let mut rows = Vec::new();
    let mut field = String::new();
    let mut row = Vec::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    let mut rows = rows
        .into_iter()
        .filter(|r| r.iter().any(|f| !f.trim().is_empty()));
    let header = rows
        .next()
        .ok_or("empty CSV: a header row with a label column is needed")?;
    let column = header
        .iter()
        .position(|h| matches!(h.trim().to_ascii_lowercase().as_str(), "label" | "name"))
        .ok_or("the header row has no label (or name) column")?;
    let mut labels = Vec::new();
    for (i, r) in rows.enumerate() {
        let label = r
            .get(column)
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        if label.is_empty() || label.chars().count() > 200 || label.chars().any(char::is_control) {
            return Err(format!(
                "row {}: the label must be 1-200 printable characters",
                i + 2
            ));
        }
        labels.push(label);
    }
    if labels.is_empty() {
        return Err("no rows after the header".into());
    }
    Ok(labels)
}

/// Creates one claim code per CSV row (header with a `label` column); answers CSV
/// `label,code,expires_at_ms` — the only time the codes are shown.
#[utoipa::path(post, path = "/api/sites/{site_id}/claim-codes/bulk",
    params(("site_id" = String, Path, description = "site id"), BulkQuery),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 201, description = "text/csv: label,code,expires_at_ms"), (status = 400)))]
pub async fn bulk_codes(
    State(state): State<SharedState>,
    admin: Admin,
    Path(site_id): Path<String>,
    Query(q): Query<BulkQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let site = rbac::authorize_site(&state, &admin, Permission::ClaimCodesCreate, &site_id).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("text/csv") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the rows as text/csv",
        ));
    }
    let minutes = q.ttl_minutes.unwrap_or(10_080);
    if !(1..=43_200).contains(&minutes) {
        return Err(ApiError::bad_request(
            "ttl_minutes must be between 1 and 43200",
        ));
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("CSV must be UTF-8"))?;
    let labels = parse_labels(text).map_err(ApiError::bad_request)?;
    if labels.len() > MAX_BULK_CODES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BULK_CODES} rows per import"
        )));
    }
    let now = now_ms();
    let expires_at_ms = now + minutes * 60_000;
    let mut tx = state.store.pool().begin().await.map_err(StoreError::from)?;
    let mut out = String::from("label,code,expires_at_ms\n");
    for label in &labels {
        let code = auth::claim_code();
        sqlx::query(
            "INSERT INTO claim_codes (code_hash, tenant_id, site_id, created_at_ms, expires_at_ms, label) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(auth::secret_hash(&code))
        .bind(&site.tenant_id)
        .bind(&site.id)
        .bind(now)
        .bind(expires_at_ms)
        .bind(label)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        out.push_str(&format!("{},{code},{expires_at_ms}\n", csv_field(label)));
    }
    tx.commit().await.map_err(StoreError::from)?;
    crate::admin_audit::record(
        &state,
        &admin,
        "claim_code.bulk_create",
        Some(&site.tenant_id),
        &site.id,
        serde_json::Value::Null,
        serde_json::json!({"count": labels.len(), "expires_at_ms": expires_at_ms}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        out,
    )
        .into_response())
}

/// Revokes an unused claim code (enrolment refuses it from then on).
#[utoipa::path(delete, path = "/api/sites/{site_id}/claim-codes/{code_id}",
    params(("site_id" = String, Path, description = "site id"),
           ("code_id" = String, Path, description = "claim code id")),
    responses((status = 204), (status = 404), (status = 409)))]
pub async fn revoke_code(
    State(state): State<SharedState>,
    admin: Admin,
    Path((site_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let site = rbac::authorize_site(&state, &admin, Permission::ClaimCodesCreate, &site_id).await?;
    if id.len() != 16 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("no such claim code"));
    }
    let now = now_ms();
    let result = sqlx::query(
        "UPDATE claim_codes SET revoked_at_ms = $1, expires_at_ms = $1 WHERE site_id = $2 AND substr(code_hash, 1, 16) = $3 AND used_at_ms IS NULL AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(&site.id)
    .bind(id.to_ascii_lowercase())
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    if result.rows_affected() == 0 {
        let exists = sqlx::query(
            "SELECT 1 AS one FROM claim_codes WHERE site_id = $1 AND substr(code_hash, 1, 16) = $2",
        )
        .bind(&site.id)
        .bind(id.to_ascii_lowercase())
        .fetch_optional(state.store.pool())
        .await
        .map_err(StoreError::from)?;
        return Err(match exists {
            Some(_) => ApiError::conflict("the claim code was already used or revoked"),
            None => ApiError::not_found("no such claim code"),
        });
    }
    crate::admin_audit::record(
        &state,
        &admin,
        "claim_code.revoke",
        Some(&site.tenant_id),
        &id,
        serde_json::json!({"status": "pending"}),
        serde_json::json!({"status": "revoked"}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Decommissions a device: its certificate is refused from then on and its live channel is
/// cut. Irreversible: a replacement box enrols with a new claim code.
#[utoipa::path(post, path = "/api/devices/{device_id}/decommission",
    params(("device_id" = String, Path, description = "device id")),
    request_body = Decommission,
    responses((status = 204), (status = 404), (status = 409)))]
pub async fn decommission(
    State(state): State<SharedState>,
    admin: Admin,
    Path(device_id): Path<String>,
    Json(req): Json<Decommission>,
) -> Result<StatusCode, ApiError> {
    let tenant_id =
        rbac::authorize_device(&state, &admin, Permission::SitesWrite, &device_id).await?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::bad_request("reason: 1-500 characters"));
    }
    let now = now_ms();
    let result = sqlx::query(
        "UPDATE devices SET status = 'revoked', decommissioned_at_ms = $1, decommission_reason = $2 WHERE id = $3 AND status <> 'revoked'",
    )
    .bind(now)
    .bind(reason)
    .bind(&device_id)
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    if result.rows_affected() == 0 {
        return Err(ApiError::conflict("the device is already decommissioned"));
    }
    let cut = state.hub.disconnect(&device_id);
    tracing::info!(device = %device_id, cut, "device decommissioned");
    crate::admin_audit::record(
        &state,
        &admin,
        "device.decommission",
        Some(&tenant_id),
        &device_id,
        serde_json::json!({"status": "active"}),
        serde_json::json!({"status": "revoked", "reason": reason}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The difference between two policy versions: each changed field with its JSON path and
/// both values.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/policy/diff",
    params(("tenant_id" = String, Path, description = "tenant id"), DiffQuery),
    responses((status = 200, description = "{from, to, changes: [{path, before, after}]}"), (status = 404)))]
pub async fn policy_diff(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let (Some(from), Some(to)) = (q.from, q.to) else {
        return Err(ApiError::bad_request(
            "from and to: the two versions to compare",
        ));
    };
    let load = |v: u64| {
        let state = state.clone();
        let tenant_id = tenant_id.clone();
        async move {
            let version = state
                .store
                .policy_version(&tenant_id, v)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no policy version {v}")))?;
            serde_json::from_str::<serde_json::Value>(&version.policy_json)
                .map_err(ApiError::internal)
        }
    };
    let before = load(from).await?;
    let after = load(to).await?;
    let changes = crate::admin_audit::json_diff(&before, &after);
    Ok(Json(serde_json::json!({
        "from": from, "to": to, "changes": changes,
    })))
}

/// A re-enrolment code.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReenrolCode {
    /// The claim code (shown once).
    pub code: String,
    /// The device it re-enrols.
    pub device_id: String,
    /// Expires (Unix ms).
    pub expires_at_ms: i64,
}

/// Creates a claim code that re-enrols an existing device (new key and certificate, same
/// device). Valid 24 hours.
#[utoipa::path(post, path = "/api/devices/{device_id}/reenroll",
    params(("device_id" = String, Path, description = "device id")),
    responses((status = 201, body = ReenrolCode), (status = 404), (status = 409)))]
pub async fn reenrol_code(
    State(state): State<SharedState>,
    admin: Admin,
    Path(device_id): Path<String>,
) -> Result<(StatusCode, Json<ReenrolCode>), ApiError> {
    let tenant_id =
        rbac::authorize_device(&state, &admin, Permission::ClaimCodesCreate, &device_id).await?;
    let device = state
        .store
        .devices(&tenant_id)
        .await?
        .into_iter()
        .find(|d| d.id == device_id)
        .ok_or_else(|| ApiError::not_found("no such device"))?;
    if device.status == sase_model::fleet::DeviceStatus::Revoked {
        return Err(ApiError::conflict(
            "the device is decommissioned: enrol a replacement with a new claim code",
        ));
    }
    let code = auth::claim_code();
    let now = now_ms();
    let expires_at_ms = now + 24 * 3_600_000;
    sqlx::query(
        "INSERT INTO claim_codes (code_hash, tenant_id, site_id, created_at_ms, expires_at_ms, label, target_device_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(auth::secret_hash(&code))
    .bind(&tenant_id)
    .bind(&device.site_id)
    .bind(now)
    .bind(expires_at_ms)
    .bind(format!("re-enrol {}", device.name))
    .bind(&device_id)
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    crate::admin_audit::record(
        &state,
        &admin,
        "device.reenrol_code",
        Some(&tenant_id),
        &device_id,
        serde_json::Value::Null,
        serde_json::json!({"expires_at_ms": expires_at_ms}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ReenrolCode {
            code,
            device_id,
            expires_at_ms,
        }),
    ))
}

/// The device a live claim code re-enrols, if it is a re-enrolment code.
///
/// # Errors
/// Store failures.
pub async fn code_target_device(
    state: &SharedState,
    code_hash: &str,
) -> Result<Option<String>, ApiError> {
    let row = sqlx::query("SELECT target_device_id FROM claim_codes WHERE code_hash = $1")
        .bind(code_hash)
        .fetch_optional(state.store.pool())
        .await
        .map_err(StoreError::from)?;
    Ok(match row {
        Some(r) => r.try_get("target_device_id").map_err(StoreError::from)?,
        None => None,
    })
}

/// Consumes a re-enrolment code and gives the device its new certificate, in one
/// transaction; then cuts the channel of the old certificate. `false` (nothing changed) when
/// the code is no longer usable or the device was decommissioned meanwhile.
///
/// # Errors
/// Store failures.
pub async fn complete_reenrolment(
    state: &SharedState,
    code_hash: &str,
    device_id: &str,
    cert_pem: &str,
    cert_sha256: &str,
    now: i64,
) -> Result<bool, ApiError> {
    let mut tx = state.store.pool().begin().await.map_err(StoreError::from)?;
    let claimed = sqlx::query(
        "UPDATE claim_codes SET used_at_ms = $1, device_id = $2 WHERE code_hash = $3 AND used_at_ms IS NULL AND expires_at_ms > $1 AND target_device_id = $2",
    )
    .bind(now)
    .bind(device_id)
    .bind(code_hash)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    let updated = sqlx::query(
        "UPDATE devices SET cert_pem = $1, cert_sha256 = $2, enrolled_at_ms = $3 WHERE id = $4 AND status <> 'revoked'",
    )
    .bind(cert_pem)
    .bind(cert_sha256)
    .bind(now)
    .bind(device_id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    if claimed.rows_affected() != 1 || updated.rows_affected() != 1 {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(false);
    }
    tx.commit().await.map_err(StoreError::from)?;
    let cut = state.hub.disconnect(device_id);
    tracing::info!(device = %device_id, cut, "device re-enrolled: new key and certificate");
    state
        .alert(
            None,
            Some(device_id),
            "device_reenrolled",
            format!("device {device_id} re-enrolled with a new key; its previous certificate is no longer accepted"),
        )
        .await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_labels_are_read_with_quotes_and_a_named_column() {
        let csv = "site,label\r\nA,\"box 1, rack \"\"east\"\"\"\nB,box-2\n\n";
        assert_eq!(
            parse_labels(csv),
            Ok(vec![
                "box 1, rack \"east\"".to_string(),
                "box-2".to_string()
            ])
        );
        assert!(parse_labels("label\n").is_err());
        assert!(parse_labels("x,y\n1,2\n").is_err());
        assert!(parse_labels("label\n\"open").is_err());
        assert!(parse_labels("label\n,\n").is_err());
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
