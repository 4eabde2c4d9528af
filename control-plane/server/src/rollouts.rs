//! Staged policy rollouts: a new policy version goes to canary devices first (named, or a
//! percentage of the tenant's active devices); the rest of the fleet keeps the stable version.
//! Each edge checks its health after applying a bundle (every upstream reachable,
//! `sase-edge`'s `health` module) and reports it. The watch decides:
//!
//! * a canary reports unhealthy, or has not reported healthy when the window ends → **rolled
//!   back**: the stable policy is republished as a newer version and pushed to every edge (edge
//!   bundles only move forward), an alert `policy_rollout_rolled_back` is raised; the devices
//!   outside the canary set never receive the failed version;
//! * every canary reported healthy and the window passed → **promoted**: the version is pushed
//!   to every edge.
//!
//! Admins can also promote early or roll back by hand (to any earlier version). Publishing a
//! policy the ordinary way (`PUT …/policy`) while a canary rollout runs supersedes it.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sase_model::bundle::SignedBundle;
use sase_model::channel::ControlMessage;
use sase_model::fleet::DeviceStatus;
use sase_model::Policy;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{new_id, now_ms, SharedState};
use crate::store::{Alert, Store, StoreError, StoreResult};

/// Default canary window.
pub const DEFAULT_WINDOW_SECS: u64 = 300;

/// Which devices get the new version first.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Named devices of the tenant.
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// Or a percentage (1-100) of the tenant's active devices, at least one, picked
    /// deterministically per rollout.
    #[serde(default)]
    pub percent: Option<u8>,
}

/// A rollout to start.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// The new policy (as for `PUT …/policy`, JSON).
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
    /// The canary devices.
    pub canary: Canary,
    /// How long canaries must stay healthy before the version goes to every edge (seconds,
    /// 1-86,400; default 300).
    #[serde(default)]
    pub window_secs: Option<u64>,
}

/// A manual rollback.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose policy to go back to (default: the stable version of the rollout in
    /// progress, else the version before the latest).
    #[serde(default)]
    pub version: Option<u64>,
}

/// One canary's health for the rollout's version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CanaryHealth {
    /// Device.
    pub device_id: String,
    /// `None` until it reports.
    pub healthy: Option<bool>,
    /// Failing upstreams it reported.
    pub failing: Vec<String>,
}

/// A rollout and where it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    /// Rollout id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The version rolled out.
    pub version: u64,
    /// The version the rest of the fleet keeps meanwhile.
    pub stable_version: u64,
    /// `canary`, `promoted`, `rolled_back` or `superseded`.
    pub status: String,
    /// Canary window (ms).
    pub window_ms: i64,
    /// When it started (Unix ms).
    pub started_at_ms: i64,
    /// When it was decided (Unix ms).
    pub decided_at_ms: Option<i64>,
    /// Why it was decided so.
    pub reason: Option<String>,
    /// The version that restored the stable policy, after a rollback.
    pub rollback_version: Option<u64>,
    /// Who started it.
    pub created_by: String,
    /// The canaries and their health.
    pub canaries: Vec<CanaryHealth>,
}

#[derive(Debug, Clone)]
struct RolloutRow {
    id: String,
    tenant_id: String,
    version: u64,
    stable_version: u64,
    canaries: Vec<String>,
    window_ms: i64,
    started_at_ms: i64,
    status: String,
    decided_at_ms: Option<i64>,
    reason: Option<String>,
    rollback_version: Option<u64>,
    created_by: String,
}

const ROLLOUT_COLUMNS: &str = "id, tenant_id, version, stable_version, canary_json, window_ms, started_at_ms, status, decided_at_ms, reason, rollback_version, created_by";

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn row_to_rollout(r: &sqlx::any::AnyRow) -> StoreResult<RolloutRow> {
    let canary_json: String = r.try_get("canary_json")?;
    let rollback: Option<i64> = r.try_get("rollback_version")?;
    Ok(RolloutRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        version: to_u64(r.try_get("version")?),
        stable_version: to_u64(r.try_get("stable_version")?),
        canaries: serde_json::from_str(&canary_json)
            .map_err(|e| StoreError::Corrupt(format!("rollout canaries: {e}")))?,
        window_ms: r.try_get("window_ms")?,
        started_at_ms: r.try_get("started_at_ms")?,
        status: r.try_get("status")?,
        decided_at_ms: r.try_get("decided_at_ms")?,
        reason: r.try_get("reason")?,
        rollback_version: rollback.map(to_u64),
        created_by: r.try_get("created_by")?,
    })
}

impl Store {
    async fn latest_rollout(&self, tenant_id: &str) -> StoreResult<Option<RolloutRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM policy_rollouts WHERE tenant_id = $1 ORDER BY started_at_ms DESC, id DESC LIMIT 1"
        ))
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_rollout).transpose()
    }

    async fn canary_rollouts(&self) -> StoreResult<Vec<RolloutRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM policy_rollouts WHERE status = 'canary'"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_rollout).collect()
    }

    /// Ends a canary rollout (`promoted`, `rolled_back`, `superseded`); `false` when it was no
    /// longer in the canary stage (someone else decided first).
    async fn decide_rollout(
        &self,
        id: &str,
        status: &str,
        reason: &str,
        rollback_version: Option<u64>,
        now: i64,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE policy_rollouts SET status = $1, reason = $2, rollback_version = $3, decided_at_ms = $4 WHERE id = $5 AND status = 'canary'",
        )
        .bind(status)
        .bind(reason)
        .bind(rollback_version.map(to_i64))
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn health_of(&self, version: u64, devices: &[String]) -> StoreResult<Vec<CanaryHealth>> {
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let row = sqlx::query(
                "SELECT healthy, failing_json FROM policy_health WHERE device_id = $1 AND version = $2",
            )
            .bind(device)
            .bind(to_i64(version))
            .fetch_optional(self.pool())
            .await?;
            let (healthy, failing) = match row {
                Some(r) => {
                    let healthy: i64 = r.try_get("healthy")?;
                    let failing: String = r.try_get("failing_json")?;
                    (
                        Some(healthy != 0),
                        serde_json::from_str(&failing).unwrap_or_default(),
                    )
                }
                None => (None, Vec::new()),
            };
            out.push(CanaryHealth {
                device_id: device.clone(),
                healthy,
                failing,
            });
        }
        Ok(out)
    }
}

async fn view(state: &SharedState, r: &RolloutRow) -> Result<RolloutView, ApiError> {
    Ok(RolloutView {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        version: r.version,
        stable_version: r.stable_version,
        status: r.status.clone(),
        window_ms: r.window_ms,
        started_at_ms: r.started_at_ms,
        decided_at_ms: r.decided_at_ms,
        reason: r.reason.clone(),
        rollback_version: r.rollback_version,
        created_by: r.created_by.clone(),
        canaries: state.store.health_of(r.version, &r.canaries).await?,
    })
}

fn bundle_of(json: &str) -> Result<SignedBundle, ApiError> {
    SignedBundle::from_json(json.as_bytes()).map_err(ApiError::internal)
}

/// The bundle a device should run now: the stable version while it is outside the canary set
/// of a rollout in progress, otherwise the latest.
///
/// # Errors
/// Store failures.
pub async fn bundle_for(
    state: &SharedState,
    tenant_id: &str,
    device_id: &str,
) -> Result<Option<SignedBundle>, ApiError> {
    let Some(latest) = state.store.latest_policy(tenant_id).await? else {
        return Ok(None);
    };
    if let Some(r) = state.store.latest_rollout(tenant_id).await? {
        if r.status == "canary"
            && r.version == latest.version
            && !r.canaries.iter().any(|c| c == device_id)
        {
            if let Some(stable) = state
                .store
                .policy_version(tenant_id, r.stable_version)
                .await?
            {
                return Ok(Some(bundle_of(&stable.bundle_json)?));
            }
        }
    }
    Ok(Some(bundle_of(&latest.bundle_json)?))
}

/// Records an edge's health report for a version.
///
/// # Errors
/// Store failures.
pub async fn on_health(
    state: &SharedState,
    tenant_id: &str,
    device_id: &str,
    version: u64,
    healthy: bool,
    failing: &[String],
) -> Result<(), ApiError> {
    let failing: Vec<String> = failing
        .iter()
        .take(sase_model::channel::MAX_HEALTH_FAILURES)
        .map(|f| f.chars().take(300).collect())
        .collect();
    let json = serde_json::to_string(&failing).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO policy_health (device_id, version, tenant_id, healthy, failing_json, reported_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (device_id, version) DO UPDATE SET healthy = excluded.healthy, failing_json = excluded.failing_json, reported_at_ms = excluded.reported_at_ms",
    )
    .bind(device_id)
    .bind(to_i64(version))
    .bind(tenant_id)
    .bind(i64::from(healthy))
    .bind(&json)
    .bind(now_ms())
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    if !healthy {
        tracing::warn!(device = %device_id, version, ?failing, "edge unhealthy after a policy change");
    }
    Ok(())
}

/// Supersedes a canary rollout in progress (an ordinary publish goes to every edge).
///
/// # Errors
/// Store failures.
pub async fn supersede(
    state: &SharedState,
    tenant_id: &str,
    by_version: u64,
) -> Result<(), ApiError> {
    if let Some(r) = state.store.latest_rollout(tenant_id).await? {
        if r.status == "canary" {
            state
                .store
                .decide_rollout(
                    &r.id,
                    "superseded",
                    &format!("version {by_version} was published to every edge"),
                    None,
                    now_ms(),
                )
                .await?;
        }
    }
    Ok(())
}

async fn announce_policy(state: &SharedState, tenant_id: &str) {
    crate::fanout::announce(
        state,
        crate::fanout::Change::Policy {
            tenant_id: tenant_id.to_string(),
        },
    )
    .await;
}

/// Republishes the policy of `version` as a new version and pushes it to every edge.
async fn republish(
    state: &SharedState,
    tenant_id: &str,
    version: u64,
    author: &str,
) -> Result<u64, ApiError> {
    let old = state
        .store
        .policy_version(tenant_id, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no policy version {version}")))?;
    let policy = Policy::parse_json(&old.policy_json).map_err(|e| {
        ApiError::internal(format!("stored policy {version} no longer parses: {e:?}"))
    })?;
    let stored = crate::api::publish_policy(state, tenant_id, policy, author).await?;
    state.hub.broadcast(
        tenant_id,
        &ControlMessage::Policy {
            bundle: bundle_of(&stored.bundle_json)?,
        },
    );
    announce_policy(state, tenant_id).await;
    Ok(stored.version)
}

async fn roll_back(
    state: &SharedState,
    r: &RolloutRow,
    reason: &str,
    now: i64,
) -> Result<(), ApiError> {
    let restored = republish(state, &r.tenant_id, r.stable_version, "rollout:rollback").await?;
    if state
        .store
        .decide_rollout(&r.id, "rolled_back", reason, Some(restored), now)
        .await?
    {
        tracing::warn!(tenant = %r.tenant_id, version = r.version, restored, %reason, "policy rollout rolled back");
        state
            .store
            .insert_alert(&Alert {
                id: new_id("alert"),
                tenant_id: Some(r.tenant_id.clone()),
                device_id: None,
                kind: "policy_rollout_rolled_back".into(),
                detail: format!(
                    "version {} rolled back (stable policy of version {} restored as version {restored}): {reason}",
                    r.version, r.stable_version
                ),
                created_at_ms: now,
            })
            .await?;
    }
    Ok(())
}

async fn promote(
    state: &SharedState,
    r: &RolloutRow,
    reason: &str,
    now: i64,
) -> Result<(), ApiError> {
    if !state
        .store
        .decide_rollout(&r.id, "promoted", reason, None, now)
        .await?
    {
        return Ok(());
    }
    if let Some(v) = state.store.policy_version(&r.tenant_id, r.version).await? {
        let pushed = state.hub.broadcast(
            &r.tenant_id,
            &ControlMessage::Policy {
                bundle: bundle_of(&v.bundle_json)?,
            },
        );
        tracing::info!(tenant = %r.tenant_id, version = r.version, pushed, "policy rollout promoted");
    }
    announce_policy(state, &r.tenant_id).await;
    Ok(())
}

/// One pass of the watch at `now`: rolls back rollouts with an unhealthy canary, promotes
/// those whose canaries stayed healthy for the window, rolls back those whose canaries did not
/// report within it. Returns how many were decided.
///
/// # Errors
/// Store failures.
pub async fn check_rollouts(state: &SharedState, now: i64) -> Result<u32, ApiError> {
    let mut decided = 0;
    for r in state.store.canary_rollouts().await? {
        let health = state.store.health_of(r.version, &r.canaries).await?;
        let unhealthy: Vec<String> = health
            .iter()
            .filter(|h| h.healthy == Some(false))
            .map(|h| format!("{} ({})", h.device_id, h.failing.join("; ")))
            .collect();
        if !unhealthy.is_empty() {
            let reason = format!("canary unhealthy: {}", unhealthy.join(", "));
            roll_back(state, &r, &reason, now).await?;
            decided += 1;
        } else if now.saturating_sub(r.started_at_ms) >= r.window_ms {
            let silent: Vec<&str> = health
                .iter()
                .filter(|h| h.healthy.is_none())
                .map(|h| h.device_id.as_str())
                .collect();
            if silent.is_empty() {
                promote(state, &r, "every canary healthy for the window", now).await?;
            } else {
                let reason = format!(
                    "canary did not report health within the window: {}",
                    silent.join(", ")
                );
                roll_back(state, &r, &reason, now).await?;
            }
            decided += 1;
        }
    }
    Ok(decided)
}

/// Runs [`check_rollouts`] every `period`, forever.
pub async fn run_watch(state: SharedState, period: Duration) {
    loop {
        if let Err(err) = check_rollouts(&state, now_ms()).await {
            tracing::warn!(?err, "policy rollout watch failed");
        }
        tokio::time::sleep(period).await;
    }
}

/// Starts a canary rollout of a new policy.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/policy/rollouts",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = NewRollout,
    responses((status = 201, body = RolloutView), (status = 400), (status = 409), (status = 422)))]
pub async fn create(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(new): Json<NewRollout>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let window_secs = new.window_secs.unwrap_or(DEFAULT_WINDOW_SECS);
    if !(1..=86_400).contains(&window_secs) {
        return Err(ApiError::bad_request("window_secs: 1-86400"));
    }
    let text = serde_json::to_string(&new.policy).map_err(ApiError::internal)?;
    let policy = Policy::parse_json(&text).map_err(|e| {
        ApiError::invalid(
            "policy_invalid",
            "the policy is not valid; see `errors`",
            e.0,
        )
    })?;
    crate::api::check_waf_loads(&state, &policy).await?;
    sase_gateway::check_contracts(&policy).map_err(|errors| {
        ApiError::invalid(
            "contract_invalid",
            "an API contract (OpenAPI document) does not compile; see `errors`",
            errors,
        )
    })?;
    let Some(stable) = state.store.latest_policy(&tenant_id).await? else {
        return Err(ApiError::conflict(
            "the tenant has no policy yet: publish a first one before a canary rollout",
        ));
    };
    if state
        .store
        .latest_rollout(&tenant_id)
        .await?
        .is_some_and(|r| r.status == "canary")
    {
        return Err(ApiError::conflict(
            "a rollout is in progress: promote it or roll it back first",
        ));
    }
    let mut active: Vec<String> = state
        .store
        .devices(&tenant_id)
        .await?
        .into_iter()
        .filter(|d| d.status == DeviceStatus::Active)
        .map(|d| d.id)
        .collect();
    active.sort();
    let id = new_id("rollout");
    let canaries: Vec<String> = match (&new.canary.devices, new.canary.percent) {
        (Some(devices), None) => {
            if devices.is_empty() {
                return Err(ApiError::bad_request("canary.devices: at least one device"));
            }
            if let Some(unknown) = devices.iter().find(|d| !active.contains(d)) {
                return Err(ApiError::bad_request(format!(
                    "canary.devices: {unknown} is not an active device of this tenant"
                )));
            }
            let mut d = devices.clone();
            d.sort();
            d.dedup();
            d
        }
        (None, Some(percent)) if (1..=100).contains(&percent) => {
            if active.is_empty() {
                return Err(ApiError::conflict("the tenant has no active devices"));
            }
            let n = (active.len() * usize::from(percent)).div_ceil(100).max(1);
            let mut ranked: Vec<(String, String)> = active
                .iter()
                .map(|d| (hex::encode(Sha256::digest(format!("{id}/{d}"))), d.clone()))
                .collect();
            ranked.sort();
            let mut d: Vec<String> = ranked.into_iter().take(n).map(|(_, d)| d).collect();
            d.sort();
            d
        }
        _ => {
            return Err(ApiError::bad_request(
                "canary: give either devices (a list) or percent (1-100)",
            ))
        }
    };
    let stored = crate::api::publish_policy(&state, &tenant_id, policy, &admin.username).await?;
    let now = now_ms();
    let canary_json = serde_json::to_string(&canaries).map_err(ApiError::internal)?;
    let window_ms = i64::try_from(window_secs * 1000).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO policy_rollouts (id, tenant_id, version, stable_version, canary_json, window_ms, started_at_ms, status, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'canary', $8)",
    )
    .bind(&id)
    .bind(&tenant_id)
    .bind(to_i64(stored.version))
    .bind(to_i64(stable.version))
    .bind(&canary_json)
    .bind(window_ms)
    .bind(now)
    .bind(&admin.username)
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    let bundle = bundle_of(&stored.bundle_json)?;
    let pushed = canaries
        .iter()
        .filter(|d| {
            state.hub.send_to(
                d,
                &ControlMessage::Policy {
                    bundle: bundle.clone(),
                },
            )
        })
        .count();
    tracing::info!(tenant = %tenant_id, version = stored.version, canaries = canaries.len(), pushed, "policy rollout started");
    announce_policy(&state, &tenant_id).await;
    crate::admin_audit::record_policy_change(&state, &admin, &stored).await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "policy.rollout_start",
        Some(&tenant_id),
        &id,
        serde_json::Value::Null,
        serde_json::json!({"version": stored.version, "stable_version": stable.version,
                           "canaries": canaries, "window_secs": window_secs}),
    )
    .await?;
    let row = state
        .store
        .latest_rollout(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::internal("rollout not stored"))?;
    Ok((StatusCode::CREATED, Json(view(&state, &row).await?)))
}

/// The tenant's latest rollout.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/policy/rollouts/latest",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = RolloutView), (status = 404)))]
pub async fn latest(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let row = state
        .store
        .latest_rollout(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no rollout yet"))?;
    Ok(Json(view(&state, &row).await?))
}

/// Promotes the rollout in progress now (the version goes to every edge).
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/policy/rollouts/promote",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = RolloutView), (status = 409)))]
pub async fn promote_now(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let r = state
        .store
        .latest_rollout(&tenant_id)
        .await?
        .filter(|r| r.status == "canary")
        .ok_or_else(|| ApiError::conflict("no rollout in progress"))?;
    promote(
        &state,
        &r,
        &format!("promoted by {}", admin.username),
        now_ms(),
    )
    .await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "policy.rollout_promote",
        Some(&tenant_id),
        &r.id,
        serde_json::json!({"status": "canary"}),
        serde_json::json!({"status": "promoted", "version": r.version}),
    )
    .await?;
    let row = state
        .store
        .latest_rollout(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::internal("rollout vanished"))?;
    Ok(Json(view(&state, &row).await?))
}

/// Rolls back by hand: republishes an earlier version's policy as a new version, to every
/// edge; a rollout in progress ends as rolled back.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/policy/rollback",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = RollbackRequest,
    responses((status = 200, description = "the new version"), (status = 404), (status = 409)))]
pub async fn rollback(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(req): Json<RollbackRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let latest = state
        .store
        .latest_policy(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("this tenant has no policy yet"))?;
    let rollout = state
        .store
        .latest_rollout(&tenant_id)
        .await?
        .filter(|r| r.status == "canary");
    let target = match (req.version, &rollout) {
        (Some(v), _) => v,
        (None, Some(r)) => r.stable_version,
        (None, None) if latest.version > 1 => latest.version - 1,
        (None, None) => return Err(ApiError::conflict("there is no earlier version")),
    };
    if target >= latest.version {
        return Err(ApiError::bad_request(format!(
            "version: an earlier version than the latest ({})",
            latest.version
        )));
    }
    let now = now_ms();
    let reason = format!(
        "rolled back by {} to the policy of version {target}",
        admin.username
    );
    let restored = republish(&state, &tenant_id, target, &admin.username).await?;
    if let Some(r) = &rollout {
        state
            .store
            .decide_rollout(&r.id, "rolled_back", &reason, Some(restored), now)
            .await?;
    }
    crate::admin_audit::record(
        &state,
        &admin,
        "policy.rollback",
        Some(&tenant_id),
        &tenant_id,
        serde_json::json!({"version": latest.version}),
        serde_json::json!({"version": restored, "policy_of_version": target}),
    )
    .await?;
    Ok(Json(
        serde_json::json!({"version": restored, "policy_of_version": target}),
    ))
}
