//! API inventory (OWASP API9): the counts edges report over the channel, stored per device and
//! endpoint, and the tenant's list of endpoints classified against its policy in force:
//!
//! * **shadow** — seen but undocumented: the request matched no declared route (it was refused,
//!   and counted under its path made into a template), or its route has no operation in the
//!   resource's OpenAPI document (`api.openapi`), or the route is no longer declared;
//! * **zombie** — documented but retired and still called: the route says `retired: true` or
//!   its OpenAPI operation says `deprecated: true`;
//! * **documented** — the rest.
//!
//! `GET /api/tenants/{tenant_id}/inventory[?status=shadow|zombie|documented]` (permission
//! `policy.read`, scoped like every tenant read).

use axum::extract::{Path, Query, State};
use axum::Json;
use sase_model::fleet::Device;
use sase_model::inventory::{EndpointStatus, InventoryEntry, MAX_INVENTORY_ENTRIES};
use sase_model::policy::{PathTemplate, Policy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row as _;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::SharedState;

/// Most distinct endpoints stored per device; beyond it only known endpoints are counted (and
/// an alert is raised).
pub const MAX_ROWS_PER_DEVICE: i64 = 5_000;

/// Stores one inventory report of a device.
///
/// # Errors
/// Store failures.
pub async fn ingest(
    state: &SharedState,
    device: &Device,
    entries: &[InventoryEntry],
    dropped: u64,
) -> Result<(), ApiError> {
    let entries = &entries[..entries.len().min(MAX_INVENTORY_ENTRIES)];
    let pool = state.store.pool();
    let rows: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_inventory WHERE device_id = $1")
        .bind(&device.id)
        .fetch_one(pool)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(ApiError::internal)?;
    let full = rows >= MAX_ROWS_PER_DEVICE;
    let clip = |s: &str, n: usize| -> String { s.chars().take(n).collect() };
    let mut tx = pool.begin().await.map_err(ApiError::internal)?;
    for e in entries {
        let count = i64::try_from(e.count).unwrap_or(i64::MAX);
        let denied = i64::try_from(e.denied).unwrap_or(i64::MAX);
        let (resource, route, method, template) = (
            clip(&e.resource, 128),
            clip(&e.route, 128),
            clip(&e.method, 16),
            clip(&e.template, 300),
        );
        if full {
            sqlx::query(
                "UPDATE api_inventory SET count = count + $1, denied = denied + $2, last_seen_ms = CASE WHEN last_seen_ms > $3 THEN last_seen_ms ELSE $3 END WHERE device_id = $4 AND resource = $5 AND route = $6 AND method = $7 AND template = $8",
            )
            .bind(count)
            .bind(denied)
            .bind(e.last_seen_ms)
            .bind(&device.id)
            .bind(&resource)
            .bind(&route)
            .bind(&method)
            .bind(&template)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
        } else {
            sqlx::query(
                "INSERT INTO api_inventory (tenant_id, device_id, resource, route, method, template, count, denied, first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (device_id, resource, route, method, template) DO UPDATE SET count = api_inventory.count + excluded.count, denied = api_inventory.denied + excluded.denied, \
                 last_seen_ms = CASE WHEN api_inventory.last_seen_ms > excluded.last_seen_ms THEN api_inventory.last_seen_ms ELSE excluded.last_seen_ms END",
            )
            .bind(&device.tenant_id)
            .bind(&device.id)
            .bind(&resource)
            .bind(&route)
            .bind(&method)
            .bind(&template)
            .bind(count)
            .bind(denied)
            .bind(e.last_seen_ms)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
        }
    }
    tx.commit().await.map_err(ApiError::internal)?;
    if (full || dropped > 0) && truncation_alert_due(&device.id, crate::state::now_ms()) {
        state
            .alert(
                Some(&device.tenant_id),
                Some(&device.id),
                "inventory_truncated",
                format!(
                    "the API inventory of this device is full ({MAX_ROWS_PER_DEVICE} endpoints stored, {dropped} requests to new endpoints not counted by the edge): many distinct unknown paths are being requested"
                ),
            )
            .await;
    }
    Ok(())
}

/// At most one `inventory_truncated` alert per device and hour (reports come every 2 s).
fn truncation_alert_due(device_id: &str, now_ms: i64) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static LAST: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let at = last.entry(device_id.to_string()).or_insert(i64::MIN);
    if now_ms.saturating_sub(*at) >= 3_600_000 {
        *at = now_ms;
        true
    } else {
        false
    }
}

/// One endpoint of the inventory.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Endpoint {
    /// Resource name (`""` when the request matched none).
    pub resource: String,
    /// Route id (`""` when the request matched none).
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Path template.
    pub template: String,
    /// Classification.
    #[schema(value_type = String)]
    pub status: EndpointStatus,
    /// Why it is classified so.
    pub why: String,
    /// Requests seen.
    pub count: i64,
    /// Of which refused by the edge.
    pub denied: i64,
    /// Devices that saw it.
    pub devices: i64,
    /// First seen (Unix ms).
    pub first_seen_ms: i64,
    /// Last seen (Unix ms).
    pub last_seen_ms: i64,
}

/// The inventory answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryView {
    /// Version of the policy the endpoints were classified against (0: none).
    pub policy_version: u64,
    /// Endpoints (shadow first, then zombie, then documented; by template).
    pub endpoints: Vec<Endpoint>,
    /// How many are shadow endpoints.
    pub shadow: usize,
    /// How many are zombie endpoints.
    pub zombie: usize,
}

/// Inventory query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct InventoryQuery {
    /// Only endpoints of this status (`shadow`, `zombie`, `documented`).
    pub status: Option<String>,
}

/// Classifies an endpoint of a matched route against the policy; its template and status.
fn classify(
    policy: &Policy,
    resource: &str,
    route: &str,
    method: &str,
) -> (String, EndpointStatus, String) {
    let Some(res) = policy.resources.iter().find(|r| r.name == resource) else {
        return (
            String::new(),
            EndpointStatus::Shadow,
            "its resource is no longer declared".into(),
        );
    };
    let Some(rt) = res.routes.iter().find(|r| r.id == route) else {
        return (
            String::new(),
            EndpointStatus::Shadow,
            "its route is no longer declared".into(),
        );
    };
    let template = rt.path.clone();
    if rt.retired {
        return (
            template,
            EndpointStatus::Zombie,
            "the route is retired".into(),
        );
    }
    let Some(doc) = res.api.as_ref().and_then(|a| a.openapi.as_ref()) else {
        return (
            template,
            EndpointStatus::Documented,
            "declared route (no OpenAPI document)".into(),
        );
    };
    let shape = PathTemplate::parse(&rt.path).map(|t| t.shape()).ok();
    let operation = doc
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(p, _)| PathTemplate::parse(p).ok().map(|t| t.shape()) == shape)
        .find_map(|(_, item)| item.get(method.to_ascii_lowercase()));
    match operation {
        None => (
            template,
            EndpointStatus::Shadow,
            "the route has no operation in the OpenAPI document".into(),
        ),
        Some(op) if op.get("deprecated").and_then(Value::as_bool) == Some(true) => (
            template,
            EndpointStatus::Zombie,
            "the OpenAPI operation is deprecated".into(),
        ),
        Some(_) => (
            template,
            EndpointStatus::Documented,
            "documented operation".into(),
        ),
    }
}

/// The tenant's API inventory: endpoints its edges saw, classified as shadow, zombie or
/// documented against the policy in force.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/inventory",
    params(("tenant_id" = String, Path, description = "tenant id"), InventoryQuery),
    responses((status = 200, body = InventoryView)))]
pub async fn list_inventory(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Query(query): Query<InventoryQuery>,
) -> Result<Json<InventoryView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let wanted = match query.status.as_deref() {
        None => None,
        Some("shadow") => Some(EndpointStatus::Shadow),
        Some("zombie") => Some(EndpointStatus::Zombie),
        Some("documented") => Some(EndpointStatus::Documented),
        Some(_) => {
            return Err(ApiError::bad_request(
                "status must be shadow, zombie or documented",
            ))
        }
    };
    let latest = state.store.latest_policy(&tenant_id).await?;
    let (policy_version, policy) = match &latest {
        Some(v) => (
            v.version,
            serde_json::from_str::<Policy>(&v.policy_json).map_err(ApiError::internal)?,
        ),
        None => (0, Policy::default()),
    };
    let rows = sqlx::query(
        "SELECT resource, route, method, template, CAST(SUM(count) AS BIGINT) AS count, CAST(SUM(denied) AS BIGINT) AS denied, COUNT(DISTINCT device_id) AS devices, MIN(first_seen_ms) AS first_seen_ms, MAX(last_seen_ms) AS last_seen_ms \
         FROM api_inventory WHERE tenant_id = $1 GROUP BY resource, route, method, template",
    )
    .bind(&tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(ApiError::internal)?;
    let mut endpoints = Vec::with_capacity(rows.len());
    for row in rows {
        let get_i64 = |name: &str| -> Result<i64, ApiError> {
            row.try_get::<i64, _>(name)
                .or_else(|_| row.try_get::<f64, _>(name).map(|f| f as i64))
                .map_err(ApiError::internal)
        };
        let resource: String = row.try_get("resource").map_err(ApiError::internal)?;
        let route: String = row.try_get("route").map_err(ApiError::internal)?;
        let method: String = row.try_get("method").map_err(ApiError::internal)?;
        let template: String = row.try_get("template").map_err(ApiError::internal)?;
        let (template, status, why) = if route.is_empty() {
            (
                template,
                EndpointStatus::Shadow,
                "matches no declared route".to_string(),
            )
        } else {
            classify(&policy, &resource, &route, &method)
        };
        if wanted.is_some_and(|w| w != status) {
            continue;
        }
        endpoints.push(Endpoint {
            resource,
            route,
            method,
            template,
            status,
            why,
            count: get_i64("count")?,
            denied: get_i64("denied")?,
            devices: get_i64("devices")?,
            first_seen_ms: get_i64("first_seen_ms")?,
            last_seen_ms: get_i64("last_seen_ms")?,
        });
    }
    endpoints.sort_by(|a, b| {
        (a.status, &a.template, &a.method, &a.resource).cmp(&(
            b.status,
            &b.template,
            &b.method,
            &b.resource,
        ))
    });
    endpoints.sort_by_key(|e| match e.status {
        EndpointStatus::Shadow => 0,
        EndpointStatus::Zombie => 1,
        EndpointStatus::Documented => 2,
    });
    let shadow = endpoints
        .iter()
        .filter(|e| e.status == EndpointStatus::Shadow)
        .count();
    let zombie = endpoints
        .iter()
        .filter(|e| e.status == EndpointStatus::Zombie)
        .count();
    Ok(Json(InventoryView {
        policy_version,
        endpoints,
        shadow,
        zombie,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let yaml = r#"
issuers:
  - {id: idp, issuer: "https://idp", audiences: [a], algorithms: [EdDSA],
     keys: {jwks: {keys: [{kty: OKP, crv: Ed25519, kid: k, x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}
resources:
  - name: orders
    upstream: http://127.0.0.1:9
    issuers: [idp]
    routes:
      - {id: orders, methods: [GET], path: /orders}
      - {id: order, methods: [GET, DELETE], path: "/orders/{id}"}
      - {id: old, methods: [GET], path: /v1/orders, retired: true}
      - {id: export, methods: [GET], path: /export}
    api:
      openapi:
        openapi: 3.1.0
        info: {title: t, version: "1"}
        paths:
          /orders: {get: {responses: {"200": {description: ok}}}}
          /orders/{orderId}: {get: {responses: {"200": {description: ok}}}}
          /export: {get: {deprecated: true, responses: {"200": {description: ok}}}}
  - name: plain
    upstream: http://127.0.0.1:9
    issuers: [idp]
    routes:
      - {id: all, methods: [GET], path: /plain}
"#;
        Policy::parse_yaml(yaml).expect("policy")
    }

    #[test]
    fn routes_are_classified_against_the_document_and_retirement() {
        let p = policy();
        let status = |res: &str, route: &str, method: &str| classify(&p, res, route, method);
        assert_eq!(
            status("orders", "orders", "GET").1,
            EndpointStatus::Documented
        );
        let (template, s, _) = status("orders", "order", "GET");
        assert_eq!(
            (template.as_str(), s),
            ("/orders/{id}", EndpointStatus::Documented)
        );
        // DELETE is routed but not in the document.
        assert_eq!(
            status("orders", "order", "DELETE").1,
            EndpointStatus::Shadow
        );
        assert_eq!(status("orders", "old", "GET").1, EndpointStatus::Zombie);
        assert_eq!(status("orders", "export", "GET").1, EndpointStatus::Zombie);
        assert_eq!(status("orders", "gone", "GET").1, EndpointStatus::Shadow);
        assert_eq!(status("nope", "orders", "GET").1, EndpointStatus::Shadow);
        // A resource without a document: its routes document themselves.
        assert_eq!(status("plain", "all", "GET").1, EndpointStatus::Documented);
    }
}
