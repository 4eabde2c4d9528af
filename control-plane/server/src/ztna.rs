//! ZTNA identity binding: remote users (distinct from admins), their groups and TOTP, the
//! `sase-connect` client's sessions, registered devices with a tunnel address from a per-site
//! pool and their posture, access rules (group → tunnel resources, with posture and MFA
//! freshness), and revocation of a user, a device or a session.
//!
//! The tenant's tunnel peers are compiled from these tables by the pure
//! [`sase_model::ztna::compile`] into every policy version the control plane publishes
//! ([`with_identity_peers`], called by [`crate::api::publish_policy`]): peers whose `session`
//! and `device` are this module's ids (`zs_…`, `zd_…`) are the control plane's, every other
//! peer is the admin's own. Every change here
//! publishes a new signed version and pushes it to the tenant's edges at once ([`republish`]),
//! so disabling a user removes the live tunnel's peer from the edges within the push time. A
//! watch ([`run_watch`]) republishes when a session expires or an MFA freshness window lapses.
//!
//! Admin endpoints live under `/api/tenants/{tenant_id}/ztna/…` (RBAC `policy.read` /
//! `policy.write`, every change in the admin-action trail); the client endpoints under
//! `/api/ztna/…` take the client session token (`zt_…`) that `POST /api/ztna/login` (password +
//! TOTP) hands out. Refusals carry stable codes (`invalid_credentials`, `totp_required`,
//! `totp_invalid`, `totp_not_enrolled`, `user_disabled`, `session_expired`, `session_revoked`,
//! `device_revoked`, `key_in_use`, `no_address_pool`, `pool_exhausted`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use sase_model::tunnel::{IpCidr, TunnelPeer, TunnelPolicy};
use sase_model::ztna::{self as model, AccessRule, LiveDevice, PostureReport, RuleOutcome};
use sase_model::Policy;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use utoipa::ToSchema;

use crate::admin_audit;
use crate::auth::{self, Admin};
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{new_id, now_ms, SharedState};
use crate::store::StoreError;

/// Default client session lifetime (12 hours).
pub const DEFAULT_SESSION_TTL_SECS: i64 = 12 * 3600;
/// Prefix of client session tokens.
pub const TOKEN_PREFIX: &str = "zt_";
/// Most users, devices or rules per tenant.
pub const MAX_PER_TENANT: i64 = 10_000;
/// Issuer shown by authenticator apps for remote users.
pub const TOTP_ISSUER: &str = "SASE remote access";

/// Serialises compiling the peers and storing the version (one replica): a change committed
/// before a publication starts is in it, and versions are stored in the order they were
/// compiled.
pub static PUBLISH_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn db(e: sqlx::Error) -> ApiError {
    ApiError::from(StoreError::from(e))
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn invalid_field(path: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "invalid",
        format!("{path}: {message}"),
        vec![sase_model::ValidationError {
            path: path.into(),
            message: message.into(),
        }],
    )
}

// ---------------------------------------------------------------------------------------
// Compilation and publication
// ---------------------------------------------------------------------------------------

async fn access_rules(state: &SharedState, tenant_id: &str) -> Result<Vec<AccessRule>, ApiError> {
    let rows = sqlx::query(
        "SELECT rule_json FROM ztna_access_rules WHERE tenant_id = $1 ORDER BY created_at_ms, id",
    )
    .bind(tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let text: String = r.try_get("rule_json").map_err(db)?;
            serde_json::from_str(&text).map_err(ApiError::internal)
        })
        .collect()
}

async fn groups_of(state: &SharedState, user_id: &str) -> Result<Vec<String>, ApiError> {
    let rows =
        sqlx::query("SELECT group_name FROM ztna_members WHERE user_id = $1 ORDER BY group_name")
            .bind(user_id)
            .fetch_all(state.store.pool())
            .await
            .map_err(db)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("group_name").map_err(db))
        .collect()
}

fn parse_posture(text: Option<String>) -> Option<PostureReport> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The tenant's devices in force at `now`: not revoked, user enabled, bound to a session that
/// is neither revoked nor expired.
async fn live_devices(
    state: &SharedState,
    tenant_id: &str,
    now: i64,
) -> Result<Vec<LiveDevice>, ApiError> {
    let rows = sqlx::query(
        "SELECT d.id, d.name, d.public_key, d.address, d.posture_json, d.session_id, u.id AS user_id, \
         u.username, s.expires_at_ms, s.mfa_at_ms \
         FROM ztna_devices d JOIN ztna_users u ON u.id = d.user_id \
         JOIN ztna_sessions s ON s.id = d.session_id \
         WHERE d.tenant_id = $1 AND d.revoked = 0 AND u.disabled = 0 AND s.revoked = 0 \
         AND s.expires_at_ms > $2 ORDER BY d.created_at_ms, d.id",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let user_id: String = r.try_get("user_id").map_err(db)?;
        if !groups.contains_key(&user_id) {
            let g = groups_of(state, &user_id).await?;
            groups.insert(user_id.clone(), g);
        }
        let address: String = r.try_get("address").map_err(db)?;
        out.push(LiveDevice {
            id: r.try_get("id").map_err(db)?,
            name: r.try_get("name").map_err(db)?,
            user: r.try_get("username").map_err(db)?,
            groups: groups.get(&user_id).cloned().unwrap_or_default(),
            public_key: r.try_get("public_key").map_err(db)?,
            address: address.parse().map_err(ApiError::internal)?,
            posture: parse_posture(r.try_get("posture_json").map_err(db)?),
            session: r.try_get("session_id").map_err(db)?,
            session_expires_ms: r.try_get("expires_at_ms").map_err(db)?,
            mfa_at_ms: r.try_get("mfa_at_ms").map_err(db)?,
        });
    }
    Ok(out)
}

/// Whether a peer is one this module compiled (its `session` and `device` are ids of
/// `ztna_sessions` / `ztna_devices`: `zs_…` / `zd_…`); other peers, identity fields or not, are
/// the admin's own.
pub fn is_compiled(peer: &TunnelPeer) -> bool {
    peer.session
        .as_deref()
        .is_some_and(|s| s.starts_with("zs_"))
        && peer.device.as_deref().is_some_and(|d| d.starts_with("zd_"))
}

/// Replaces the control plane's peers ([`is_compiled`]) in `policy` by the tenant's
/// compiled peers at `now`, keeps the admin's own peers, records when the result next changes
/// on its own, and checks the `tunnel` block (a clash with an admin's peer is refused, 422).
///
/// # Errors
/// Store failures; `tunnel_invalid` when the merged block does not validate.
pub async fn with_identity_peers(
    state: &SharedState,
    tenant_id: &str,
    mut policy: Policy,
) -> Result<Policy, ApiError> {
    let now = now_ms();
    let devices = live_devices(state, tenant_id, now).await?;
    let rules = if devices.is_empty() {
        Vec::new()
    } else {
        access_rules(state, tenant_id).await?
    };
    let (compiled, next) = model::compile(&devices, &rules, now);
    let had_block = policy.tunnel.is_some();
    let mut peers: Vec<TunnelPeer> = policy
        .tunnel
        .take()
        .map(|t| t.peers)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !is_compiled(p))
        .collect();
    let had_identity = !compiled.is_empty();
    peers.extend(compiled);
    if had_block || had_identity {
        policy.tunnel = Some(TunnelPolicy { peers });
    }
    let mut errors = Vec::new();
    sase_model::tunnel::check(&policy, &mut |path, message| {
        errors.push(sase_model::ValidationError {
            path,
            message: message.to_string(),
        });
    });
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "tunnel_invalid",
            "the tunnel peers compiled from users and devices clash with the policy's own peers; see `errors`",
            errors,
        ));
    }
    let next = (next != i64::MAX).then_some(next);
    sqlx::query(
        "INSERT INTO ztna_settings (tenant_id, session_ttl_secs, next_recompile_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET next_recompile_ms = $3",
    )
    .bind(tenant_id)
    .bind(DEFAULT_SESSION_TTL_SECS)
    .bind(next)
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    Ok(policy)
}

/// What a republication did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Published {
    /// The policy version now in force.
    pub version: u64,
    /// Edges connected here that got it at once.
    pub pushed_to: usize,
}

/// Publishes the tenant's current policy again with freshly compiled peers and pushes it to
/// the tenant's edges at once (and announces it to other replicas).
///
/// # Errors
/// Store or signing failures, or a clash with the admin's peers.
pub async fn republish(
    state: &SharedState,
    tenant_id: &str,
    author: &str,
) -> Result<Published, ApiError> {
    let current = match state.store.latest_policy(tenant_id).await? {
        Some(v) => serde_json::from_str::<Policy>(&v.policy_json).map_err(ApiError::internal)?,
        None => Policy::default(),
    };
    let stored = crate::api::publish_policy(state, tenant_id, current, author).await?;
    crate::rollouts::supersede(state, tenant_id, stored.version).await?;
    let pushed_to = crate::fanout::push_policy(state, tenant_id).await;
    crate::fanout::announce(
        state,
        crate::fanout::Change::Policy {
            tenant_id: tenant_id.to_string(),
        },
    )
    .await;
    tracing::info!(tenant = %tenant_id, version = stored.version, pushed_to, author, "tunnel peers republished");
    Ok(Published {
        version: stored.version,
        pushed_to,
    })
}

/// Republishes every tenant whose compiled peers change on their own by now (a session
/// expired, an MFA window lapsed). Returns how many were republished.
///
/// # Errors
/// Store failures.
pub async fn check_expiries(state: &SharedState, now: i64) -> Result<usize, ApiError> {
    let rows = sqlx::query(
        "SELECT tenant_id, next_recompile_ms FROM ztna_settings WHERE next_recompile_ms IS NOT NULL AND next_recompile_ms <= $1",
    )
    .bind(now)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    let mut done = 0;
    for r in &rows {
        let tenant: String = r.try_get("tenant_id").map_err(db)?;
        let due: i64 = r.try_get("next_recompile_ms").map_err(db)?;
        // Claim it (another replica may see the same row).
        let claimed = sqlx::query(
            "UPDATE ztna_settings SET next_recompile_ms = NULL WHERE tenant_id = $1 AND next_recompile_ms = $2",
        )
        .bind(&tenant)
        .bind(due)
        .execute(state.store.pool())
        .await
        .map_err(db)?
        .rows_affected();
        if claimed == 1 {
            republish(state, &tenant, "ztna-expiry").await?;
            done += 1;
        }
    }
    Ok(done)
}

/// Runs [`check_expiries`] every `period`, forever.
pub async fn run_watch(state: SharedState, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        if let Err(err) = check_expiries(&state, now_ms()).await {
            tracing::warn!(%err, "ztna expiry watch");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------------------

/// Tenant settings for remote access.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZtnaSettings {
    /// Client session lifetime in seconds (300 to 604800); the user signs in again after it.
    pub session_ttl_secs: i64,
}

async fn session_ttl(state: &SharedState, tenant_id: &str) -> Result<i64, ApiError> {
    let row = sqlx::query("SELECT session_ttl_secs FROM ztna_settings WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(state.store.pool())
        .await
        .map_err(db)?;
    Ok(match row {
        Some(r) => r.try_get("session_ttl_secs").map_err(db)?,
        None => DEFAULT_SESSION_TTL_SECS,
    })
}

/// The tenant's remote-access settings.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/ztna/settings",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = ZtnaSettings)))]
pub async fn get_settings(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<ZtnaSettings>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    Ok(Json(ZtnaSettings {
        session_ttl_secs: session_ttl(&state, &tenant_id).await?,
    }))
}

/// Sets the session lifetime (sessions already granted keep their expiry).
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/ztna/settings", request_body = ZtnaSettings,
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = ZtnaSettings), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_settings(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<ZtnaSettings>,
) -> Result<Json<ZtnaSettings>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    if !(300..=604_800).contains(&body.session_ttl_secs) {
        return Err(invalid_field("session_ttl_secs", "300 to 604800 seconds"));
    }
    let before = session_ttl(&state, &tenant_id).await?;
    sqlx::query(
        "INSERT INTO ztna_settings (tenant_id, session_ttl_secs) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET session_ttl_secs = $2",
    )
    .bind(&tenant_id)
    .bind(body.session_ttl_secs)
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.settings.update",
        Some(&tenant_id),
        &tenant_id,
        json!({"session_ttl_secs": before}),
        json!({"session_ttl_secs": body.session_ttl_secs}),
    )
    .await?;
    Ok(Json(body))
}

/// A site's tunnel settings: where clients connect and which addresses they get.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteTunnel {
    /// The address pool (CIDR) client tunnel addresses come from; the first host is left for
    /// the edge's own tunnel address.
    #[schema(value_type = String)]
    pub pool: IpCidr,
    /// The edge's WireGuard endpoint as clients reach it (`host:port`).
    pub endpoint: String,
    /// The edge's tunnel public key (`sase-edge` prints it at start, base64).
    pub edge_public_key: String,
}

/// A site's tunnel settings as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SiteTunnelView {
    /// Site.
    pub site_id: String,
    /// Settings.
    #[serde(flatten)]
    pub tunnel: SiteTunnel,
}

fn valid_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|b| b.len() == 32)
}

/// The tenant's sites with tunnel settings.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/ztna/sites",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [SiteTunnelView])))]
pub async fn list_sites(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<SiteTunnelView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let rows = sqlx::query(
        "SELECT site_id, pool, endpoint, edge_public_key FROM ztna_sites WHERE tenant_id = $1 ORDER BY site_id",
    )
    .bind(&tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    let mut out = Vec::new();
    for r in &rows {
        let pool: String = r.try_get("pool").map_err(db)?;
        out.push(SiteTunnelView {
            site_id: r.try_get("site_id").map_err(db)?,
            tunnel: SiteTunnel {
                pool: pool.parse().map_err(ApiError::internal)?,
                endpoint: r.try_get("endpoint").map_err(db)?,
                edge_public_key: r.try_get("edge_public_key").map_err(db)?,
            },
        });
    }
    Ok(Json(out))
}

/// Sets a site's tunnel settings (pool, endpoint, edge key).
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/ztna/sites/{site_id}", request_body = SiteTunnel,
    params(("tenant_id" = String, Path, description = "tenant id"), ("site_id" = String, Path, description = "site id")),
    responses((status = 200, body = SiteTunnelView), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_site(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, site_id)): Path<(String, String)>,
    Json(body): Json<SiteTunnel>,
) -> Result<Json<SiteTunnelView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let sites = state.store.sites(&tenant_id).await?;
    if !sites.iter().any(|s| s.id == site_id) {
        return Err(ApiError::not_found("no such site in this tenant"));
    }
    if body.endpoint.is_empty()
        || body.endpoint.len() > 255
        || body
            .endpoint
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        || !body.endpoint.contains(':')
    {
        return Err(invalid_field(
            "endpoint",
            "host:port, at most 255 characters",
        ));
    }
    if !valid_key(&body.edge_public_key) {
        return Err(invalid_field(
            "edge_public_key",
            "a WireGuard public key: base64 of 32 bytes",
        ));
    }
    let max_prefix = if body.pool.addr().is_ipv4() { 30 } else { 126 };
    if body.pool.prefix() > max_prefix {
        return Err(invalid_field(
            "pool",
            "too small a pool (IPv4 /30 at least)",
        ));
    }
    sqlx::query(
        "INSERT INTO ztna_sites (site_id, tenant_id, pool, endpoint, edge_public_key, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (site_id) DO UPDATE SET pool = $3, endpoint = $4, edge_public_key = $5, updated_at_ms = $6",
    )
    .bind(&site_id)
    .bind(&tenant_id)
    .bind(body.pool.to_string())
    .bind(&body.endpoint)
    .bind(body.edge_public_key.trim())
    .bind(now_ms())
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.site.update",
        Some(&tenant_id),
        &site_id,
        Value::Null,
        serde_json::to_value(&body).map_err(ApiError::internal)?,
    )
    .await?;
    Ok(Json(SiteTunnelView {
        site_id,
        tunnel: body,
    }))
}

/// A remote user to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Name (1-64 of a-z 0-9 - _ . @), unique in the tenant.
    pub username: String,
    /// Password (12 to 256 characters).
    pub password: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A remote user as listed (never the password hash or the TOTP seed).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// Id.
    pub id: String,
    /// Name.
    pub username: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Whether TOTP is enrolled (sign-in needs it).
    pub totp_enrolled: bool,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// Created (Unix ms).
    pub created_at_ms: i64,
}

/// Group membership to set.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupsBody {
    /// The user's groups (replaces the current list).
    pub groups: Vec<String>,
}

fn check_groups(groups: &[String]) -> Result<Vec<String>, ApiError> {
    if groups.len() > 64 {
        return Err(invalid_field("groups", "at most 64 groups"));
    }
    for g in groups {
        if !model::is_name(g) {
            return Err(invalid_field(
                "groups",
                "group names are 1-64 characters of a-z, 0-9, '-', '_', '.', '@'",
            ));
        }
    }
    let set: BTreeSet<String> = groups.iter().cloned().collect();
    Ok(set.into_iter().collect())
}

async fn user_view(state: &SharedState, r: &sqlx::any::AnyRow) -> Result<UserView, ApiError> {
    let id: String = r.try_get("id").map_err(db)?;
    let totp: Option<String> = r.try_get("totp_secret").map_err(db)?;
    let disabled: i64 = r.try_get("disabled").map_err(db)?;
    Ok(UserView {
        groups: groups_of(state, &id).await?,
        id,
        username: r.try_get("username").map_err(db)?,
        totp_enrolled: totp.is_some(),
        disabled: disabled != 0,
        created_at_ms: r.try_get("created_at_ms").map_err(db)?,
    })
}

const USER_COLUMNS: &str =
    "id, tenant_id, username, password_hash, totp_secret, disabled, created_at_ms";

async fn load_user(
    state: &SharedState,
    tenant_id: &str,
    user_id: &str,
) -> Result<sqlx::any::AnyRow, ApiError> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM ztna_users WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(user_id)
    .bind(tenant_id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?
    .ok_or_else(|| ApiError::not_found("no such remote user in this tenant"))
}

async fn set_groups(
    state: &SharedState,
    tenant_id: &str,
    user_id: &str,
    groups: &[String],
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM ztna_members WHERE user_id = $1")
        .bind(user_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    for g in groups {
        sqlx::query(
            "INSERT INTO ztna_members (tenant_id, user_id, group_name) VALUES ($1, $2, $3)",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(g)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    }
    Ok(())
}

async fn count(state: &SharedState, table: &str, tenant_id: &str) -> Result<i64, ApiError> {
    sqlx::query(&format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE tenant_id = $1"
    ))
    .bind(tenant_id)
    .fetch_one(state.store.pool())
    .await
    .map_err(db)?
    .try_get("n")
    .map_err(db)
}

/// The tenant's remote users.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/ztna/users",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [UserView])))]
pub async fn list_users(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM ztna_users WHERE tenant_id = $1 ORDER BY username"
    ))
    .bind(&tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(user_view(&state, r).await?);
    }
    Ok(Json(out))
}

/// Creates a remote user (TOTP is enrolled next: `POST …/users/{user_id}/totp`).
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/ztna/users", request_body = NewUser,
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 201, body = UserView), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_user(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    if !model::is_name(&body.username) {
        return Err(invalid_field(
            "username",
            "1-64 characters of a-z, 0-9, '-', '_', '.', '@'",
        ));
    }
    if body.password.chars().count() < 12 || body.password.len() > 256 {
        return Err(invalid_field("password", "12 to 256 characters"));
    }
    let groups = check_groups(&body.groups)?;
    if count(&state, "ztna_users", &tenant_id).await? >= MAX_PER_TENANT {
        return Err(ApiError::conflict(
            "a tenant has at most 10000 remote users",
        ));
    }
    let id = new_id("zu");
    let hash = auth::hash_password(&body.password)?;
    let inserted = sqlx::query(
        "INSERT INTO ztna_users (id, tenant_id, username, password_hash, disabled, created_at_ms) VALUES ($1, $2, $3, $4, 0, $5)",
    )
    .bind(&id)
    .bind(&tenant_id)
    .bind(&body.username)
    .bind(&hash)
    .bind(now_ms())
    .execute(state.store.pool())
    .await;
    if let Err(e) = inserted {
        let err = StoreError::from(e);
        if let StoreError::Db(sqlx::Error::Database(d)) = &err {
            if d.kind() == sqlx::error::ErrorKind::UniqueViolation {
                return Err(refused(
                    StatusCode::CONFLICT,
                    "user_exists",
                    "a remote user with this name exists in the tenant",
                ));
            }
        }
        return Err(err.into());
    }
    set_groups(&state, &tenant_id, &id, &groups).await?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.user.create",
        Some(&tenant_id),
        &id,
        Value::Null,
        json!({"username": body.username, "groups": groups}),
    )
    .await?;
    let row = load_user(&state, &tenant_id, &id).await?;
    Ok((StatusCode::CREATED, Json(user_view(&state, &row).await?)))
}

/// Replaces a user's groups; the tunnel peers follow at once.
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/ztna/users/{user_id}/groups", request_body = GroupsBody,
    params(("tenant_id" = String, Path, description = "tenant id"), ("user_id" = String, Path, description = "remote user id")),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn put_groups(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, user_id)): Path<(String, String)>,
    Json(body): Json<GroupsBody>,
) -> Result<Json<UserView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    load_user(&state, &tenant_id, &user_id).await?;
    let groups = check_groups(&body.groups)?;
    let before = groups_of(&state, &user_id).await?;
    set_groups(&state, &tenant_id, &user_id, &groups).await?;
    republish(&state, &tenant_id, &admin.username).await?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.user.groups",
        Some(&tenant_id),
        &user_id,
        json!({"groups": before}),
        json!({"groups": groups}),
    )
    .await?;
    let row = load_user(&state, &tenant_id, &user_id).await?;
    Ok(Json(user_view(&state, &row).await?))
}

/// A TOTP seed, shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32 seed for the authenticator app.
    pub secret: String,
    /// `otpauth://` URI (QR code content).
    pub otpauth_uri: String,
}

/// Enrols (or replaces) a user's TOTP seed; the seed is sealed at rest and shown only here.
/// The user's sessions end (they sign in again with the new codes).
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/ztna/users/{user_id}/totp",
    params(("tenant_id" = String, Path, description = "tenant id"), ("user_id" = String, Path, description = "remote user id")),
    responses((status = 200, body = TotpEnrolment), (status = 404, body = crate::error::ErrorBody)))]
pub async fn enrol_totp(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, user_id)): Path<(String, String)>,
) -> Result<Json<TotpEnrolment>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let row = load_user(&state, &tenant_id, &user_id).await?;
    let username: String = row.try_get("username").map_err(db)?;
    let secret = crate::totp::new_secret();
    let sealed = state
        .store
        .seal_text(&crate::secrets::ztna_totp_purpose(&user_id), &secret);
    sqlx::query("UPDATE ztna_users SET totp_secret = $1, totp_last_step = NULL WHERE id = $2")
        .bind(&sealed)
        .bind(&user_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    let ended = end_sessions(&state, &user_id).await?;
    if ended > 0 {
        republish(&state, &tenant_id, &admin.username).await?;
    }
    admin_audit::record(
        &state,
        &admin,
        "ztna.user.totp_enrol",
        Some(&tenant_id),
        &user_id,
        Value::Null,
        json!({"sessions_ended": ended}),
    )
    .await?;
    Ok(Json(TotpEnrolment {
        otpauth_uri: crate::totp::otpauth_uri(TOTP_ISSUER, &username, &secret),
        secret,
    }))
}

async fn end_sessions(state: &SharedState, user_id: &str) -> Result<u64, ApiError> {
    Ok(
        sqlx::query("UPDATE ztna_sessions SET revoked = 1 WHERE user_id = $1 AND revoked = 0")
            .bind(user_id)
            .execute(state.store.pool())
            .await
            .map_err(db)?
            .rows_affected(),
    )
}

/// The outcome of a revocation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revoked {
    /// What was revoked (user, device or session id).
    pub id: String,
    /// Sessions ended by it.
    pub sessions_ended: u64,
    /// The policy version without its tunnels, already pushed.
    pub version: u64,
    /// Edges connected here that got it at once.
    pub pushed_to: usize,
}

/// Disables a user: sign-in refused, every session ended, its tunnels removed from the edges
/// at once.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/ztna/users/{user_id}/disable",
    params(("tenant_id" = String, Path, description = "tenant id"), ("user_id" = String, Path, description = "remote user id")),
    responses((status = 200, body = Revoked), (status = 404, body = crate::error::ErrorBody)))]
pub async fn disable_user(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, user_id)): Path<(String, String)>,
) -> Result<Json<Revoked>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    load_user(&state, &tenant_id, &user_id).await?;
    sqlx::query("UPDATE ztna_users SET disabled = 1 WHERE id = $1")
        .bind(&user_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    let ended = end_sessions(&state, &user_id).await?;
    let published = republish(&state, &tenant_id, &admin.username).await?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.user.disable",
        Some(&tenant_id),
        &user_id,
        json!({"disabled": false}),
        json!({"disabled": true, "sessions_ended": ended, "version": published.version}),
    )
    .await?;
    Ok(Json(Revoked {
        id: user_id,
        sessions_ended: ended,
        version: published.version,
        pushed_to: published.pushed_to,
    }))
}

/// Enables a disabled user again (they sign in anew; ended sessions stay ended).
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/ztna/users/{user_id}/enable",
    params(("tenant_id" = String, Path, description = "tenant id"), ("user_id" = String, Path, description = "remote user id")),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn enable_user(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, user_id)): Path<(String, String)>,
) -> Result<Json<UserView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    load_user(&state, &tenant_id, &user_id).await?;
    sqlx::query("UPDATE ztna_users SET disabled = 0 WHERE id = $1")
        .bind(&user_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.user.enable",
        Some(&tenant_id),
        &user_id,
        json!({"disabled": true}),
        json!({"disabled": false}),
    )
    .await?;
    let row = load_user(&state, &tenant_id, &user_id).await?;
    Ok(Json(user_view(&state, &row).await?))
}

/// An access rule as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    /// Id.
    pub id: String,
    /// The rule.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rule: AccessRule,
}

/// The tenant's access rules.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/ztna/rules",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [RuleView])))]
pub async fn list_rules(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<RuleView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let rows = sqlx::query(
        "SELECT id, rule_json FROM ztna_access_rules WHERE tenant_id = $1 ORDER BY created_at_ms, id",
    )
    .bind(&tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    let mut out = Vec::new();
    for r in &rows {
        let text: String = r.try_get("rule_json").map_err(db)?;
        out.push(RuleView {
            id: r.try_get("id").map_err(db)?,
            rule: serde_json::from_str(&text).map_err(ApiError::internal)?,
        });
    }
    Ok(Json(out))
}

/// Adds an access rule (group → resources, with optional posture and MFA freshness); the
/// tunnel peers follow at once.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/ztna/rules", request_body(content = Object, content_type = "application/json"),
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 201, body = RuleView), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_rule(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let rule: AccessRule = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "rule_invalid",
            format!("the access rule is not valid: {e}"),
            Vec::new(),
        )
    })?;
    rule.validate().map_err(|e| match e {
        model::ZtnaError::Invalid { path, message } => ApiError::invalid(
            "rule_invalid",
            format!("{path}: {message}"),
            vec![sase_model::ValidationError { path, message }],
        ),
    })?;
    if count(&state, "ztna_access_rules", &tenant_id).await? >= 1000 {
        return Err(ApiError::conflict("a tenant has at most 1000 access rules"));
    }
    let id = new_id("zr");
    let inserted = sqlx::query(
        "INSERT INTO ztna_access_rules (id, tenant_id, name, rule_json, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(&tenant_id)
    .bind(&rule.name)
    .bind(serde_json::to_string(&rule).map_err(ApiError::internal)?)
    .bind(now_ms())
    .execute(state.store.pool())
    .await;
    if let Err(e) = inserted {
        let err = StoreError::from(e);
        if let StoreError::Db(sqlx::Error::Database(d)) = &err {
            if d.kind() == sqlx::error::ErrorKind::UniqueViolation {
                return Err(refused(
                    StatusCode::CONFLICT,
                    "rule_exists",
                    "an access rule with this name exists in the tenant",
                ));
            }
        }
        return Err(err.into());
    }
    republish(&state, &tenant_id, &admin.username).await?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.rule.create",
        Some(&tenant_id),
        &id,
        Value::Null,
        serde_json::to_value(&rule).map_err(ApiError::internal)?,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(RuleView { id, rule })))
}

/// Deletes an access rule; the tunnel peers follow at once.
#[utoipa::path(delete, path = "/api/tenants/{tenant_id}/ztna/rules/{rule_id}",
    params(("tenant_id" = String, Path, description = "tenant id"), ("rule_id" = String, Path, description = "rule id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_rule(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, rule_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let row =
        sqlx::query("SELECT rule_json FROM ztna_access_rules WHERE id = $1 AND tenant_id = $2")
            .bind(&rule_id)
            .bind(&tenant_id)
            .fetch_optional(state.store.pool())
            .await
            .map_err(db)?
            .ok_or_else(|| ApiError::not_found("no such access rule in this tenant"))?;
    let before: String = row.try_get("rule_json").map_err(db)?;
    sqlx::query("DELETE FROM ztna_access_rules WHERE id = $1")
        .bind(&rule_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    republish(&state, &tenant_id, &admin.username).await?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.rule.delete",
        Some(&tenant_id),
        &rule_id,
        serde_json::from_str(&before).unwrap_or(Value::Null),
        Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A registered device as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Owner (remote user id).
    pub user_id: String,
    /// Site whose pool gave the address.
    pub site_id: String,
    /// Name the user gave.
    pub name: String,
    /// WireGuard public key.
    pub public_key: String,
    /// Assigned tunnel address.
    pub address: String,
    /// The session it is bound to.
    pub session_id: Option<String>,
    /// Last posture report.
    #[schema(value_type = Option<Object>)]
    pub posture: Option<PostureReport>,
    /// When it was reported (Unix ms).
    pub posture_at_ms: Option<i64>,
    /// Whether it is revoked.
    pub revoked: bool,
}

const DEVICE_COLUMNS: &str = "id, tenant_id, user_id, site_id, name, public_key, address, session_id, posture_json, posture_at_ms, revoked";

fn device_view(r: &sqlx::any::AnyRow) -> Result<DeviceView, ApiError> {
    let revoked: i64 = r.try_get("revoked").map_err(db)?;
    Ok(DeviceView {
        id: r.try_get("id").map_err(db)?,
        user_id: r.try_get("user_id").map_err(db)?,
        site_id: r.try_get("site_id").map_err(db)?,
        name: r.try_get("name").map_err(db)?,
        public_key: r.try_get("public_key").map_err(db)?,
        address: r.try_get("address").map_err(db)?,
        session_id: r.try_get("session_id").map_err(db)?,
        posture: parse_posture(r.try_get("posture_json").map_err(db)?),
        posture_at_ms: r.try_get("posture_at_ms").map_err(db)?,
        revoked: revoked != 0,
    })
}

/// The tenant's registered devices.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/ztna/devices",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [DeviceView])))]
pub async fn list_devices(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM ztna_devices WHERE tenant_id = $1 ORDER BY created_at_ms, id"
    ))
    .bind(&tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    Ok(Json(
        rows.iter().map(device_view).collect::<Result<_, _>>()?,
    ))
}

/// Revokes a device: its tunnel is removed from the edges at once and its key can never
/// register again.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/ztna/devices/{device_id}/revoke",
    params(("tenant_id" = String, Path, description = "tenant id"), ("device_id" = String, Path, description = "registered device id")),
    responses((status = 200, body = Revoked), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_device(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, device_id)): Path<(String, String)>,
) -> Result<Json<Revoked>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let changed =
        sqlx::query("UPDATE ztna_devices SET revoked = 1 WHERE id = $1 AND tenant_id = $2")
            .bind(&device_id)
            .bind(&tenant_id)
            .execute(state.store.pool())
            .await
            .map_err(db)?
            .rows_affected();
    if changed == 0 {
        return Err(ApiError::not_found(
            "no such registered device in this tenant",
        ));
    }
    let published = republish(&state, &tenant_id, &admin.username).await?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.device.revoke",
        Some(&tenant_id),
        &device_id,
        json!({"revoked": false}),
        json!({"revoked": true, "version": published.version}),
    )
    .await?;
    Ok(Json(Revoked {
        id: device_id,
        sessions_ended: 0,
        version: published.version,
        pushed_to: published.pushed_to,
    }))
}

/// A client session as listed (never its token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    /// Id.
    pub id: String,
    /// Remote user id.
    pub user_id: String,
    /// Started (Unix ms).
    pub created_at_ms: i64,
    /// Ends (Unix ms).
    pub expires_at_ms: i64,
    /// Last TOTP check (Unix ms).
    pub mfa_at_ms: i64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// The tenant's client sessions, newest first (at most 1000).
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/ztna/sessions",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [SessionView])))]
pub async fn list_sessions(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let rows = sqlx::query(
        "SELECT id, user_id, created_at_ms, expires_at_ms, mfa_at_ms, revoked FROM ztna_sessions WHERE tenant_id = $1 ORDER BY created_at_ms DESC, id LIMIT 1000",
    )
    .bind(&tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    let mut out = Vec::new();
    for r in &rows {
        let revoked: i64 = r.try_get("revoked").map_err(db)?;
        out.push(SessionView {
            id: r.try_get("id").map_err(db)?,
            user_id: r.try_get("user_id").map_err(db)?,
            created_at_ms: r.try_get("created_at_ms").map_err(db)?,
            expires_at_ms: r.try_get("expires_at_ms").map_err(db)?,
            mfa_at_ms: r.try_get("mfa_at_ms").map_err(db)?,
            revoked: revoked != 0,
        });
    }
    Ok(Json(out))
}

/// Revokes a client session: its tunnels are removed from the edges at once; the user signs in
/// again.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/ztna/sessions/{session_id}/revoke",
    params(("tenant_id" = String, Path, description = "tenant id"), ("session_id" = String, Path, description = "client session id")),
    responses((status = 200, body = Revoked), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_session(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, session_id)): Path<(String, String)>,
) -> Result<Json<Revoked>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let changed =
        sqlx::query("UPDATE ztna_sessions SET revoked = 1 WHERE id = $1 AND tenant_id = $2")
            .bind(&session_id)
            .bind(&tenant_id)
            .execute(state.store.pool())
            .await
            .map_err(db)?
            .rows_affected();
    if changed == 0 {
        return Err(ApiError::not_found("no such client session in this tenant"));
    }
    let published = republish(&state, &tenant_id, &admin.username).await?;
    admin_audit::record(
        &state,
        &admin,
        "ztna.session.revoke",
        Some(&tenant_id),
        &session_id,
        json!({"revoked": false}),
        json!({"revoked": true, "version": published.version}),
    )
    .await?;
    Ok(Json(Revoked {
        id: session_id,
        sessions_ended: 1,
        version: published.version,
        pushed_to: published.pushed_to,
    }))
}

// ---------------------------------------------------------------------------------------
// Client API (sase-connect)
// ---------------------------------------------------------------------------------------

/// Client sign-in.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientLogin {
    /// Tenant id.
    pub tenant_id: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Current TOTP code.
    #[serde(default)]
    pub totp: Option<String>,
}

/// A client session token, shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClientSession {
    /// Send as `Authorization: Bearer <token>` to the client endpoints.
    pub token: String,
    /// Session id (what admins see and revoke).
    pub session_id: String,
    /// When it ends (Unix ms); sign in again after.
    pub expires_at_ms: i64,
}

/// The signed-in client (from a `zt_…` bearer token).
#[derive(Debug, Clone)]
pub struct Client {
    /// Session id.
    pub session_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Remote user id.
    pub user_id: String,
    /// User name.
    pub username: String,
    /// Session end (Unix ms).
    pub expires_at_ms: i64,
}

impl FromRequestParts<SharedState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() <= 128)
            .ok_or_else(|| {
                refused(
                    StatusCode::UNAUTHORIZED,
                    "client_token_required",
                    "sign in with sase-connect first: send the client session token as a bearer token",
                )
            })?;
        let row = sqlx::query(
            "SELECT s.id, s.tenant_id, s.user_id, s.expires_at_ms, s.revoked, u.username, u.disabled \
             FROM ztna_sessions s JOIN ztna_users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(auth::secret_hash(token))
        .fetch_optional(state.store.pool())
        .await
        .map_err(db)?
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "session_unknown",
                "this client session is not known: sign in again",
            )
        })?;
        let revoked: i64 = row.try_get("revoked").map_err(db)?;
        let disabled: i64 = row.try_get("disabled").map_err(db)?;
        let expires_at_ms: i64 = row.try_get("expires_at_ms").map_err(db)?;
        if disabled != 0 {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "user_disabled",
                "this user is disabled: ask an administrator",
            ));
        }
        if revoked != 0 {
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "session_revoked",
                "this client session was ended: sign in again",
            ));
        }
        if expires_at_ms <= now_ms() {
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "session_expired",
                "this client session has expired: sign in again",
            ));
        }
        Ok(Client {
            session_id: row.try_get("id").map_err(db)?,
            tenant_id: row.try_get("tenant_id").map_err(db)?,
            user_id: row.try_get("user_id").map_err(db)?,
            username: row.try_get("username").map_err(db)?,
            expires_at_ms,
        })
    }
}

/// Signs a remote user in (password and TOTP) and hands out a client session token.
#[utoipa::path(post, path = "/api/ztna/login", request_body = ClientLogin,
    responses((status = 200, body = ClientSession), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn client_login(
    State(state): State<SharedState>,
    conn: Option<axum::Extension<crate::tls::ConnInfo>>,
    Json(body): Json<ClientLogin>,
) -> Result<Response, ApiError> {
    let bad = || {
        refused(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "unknown user or wrong password",
        )
    };
    if body.tenant_id.len() > 128 || body.username.len() > 64 || body.password.len() > 256 {
        return Err(bad());
    }
    // Throttling and lockout as for admins (crate::login_throttle), under the remote user's own
    // key: refused before the password is looked at; unknown names, wrong passwords and wrong
    // TOTP codes count.
    let address = conn.map(|c| c.0.peer.ip());
    let (tenant_id, username) = (body.tenant_id.as_str(), body.username.as_str());
    if let Err(refusal) = crate::login_throttle::before_remote_user_sign_in(
        &state,
        tenant_id,
        username,
        address,
        now_ms(),
    )
    .await
    {
        return Ok(refusal);
    }
    let failed = || async {
        crate::login_throttle::after_failed_remote_user_sign_in(
            &state,
            tenant_id,
            username,
            address,
            now_ms(),
        )
        .await;
    };
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM ztna_users WHERE tenant_id = $1 AND username = $2"
    ))
    .bind(&body.tenant_id)
    .bind(&body.username)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?;
    let Some(row) = row else {
        // Same work as for a known user, so timing does not tell names apart.
        let _ = auth::verify_password(&body.password, dummy_hash());
        tracing::warn!(tenant = %body.tenant_id, "ztna sign-in: unknown user");
        failed().await;
        return Err(bad());
    };
    let user_id: String = row.try_get("id").map_err(db)?;
    let hash: String = row.try_get("password_hash").map_err(db)?;
    if !auth::verify_password(&body.password, &hash) {
        tracing::warn!(tenant = %body.tenant_id, user = %user_id, "ztna sign-in: wrong password");
        failed().await;
        return Err(bad());
    }
    let disabled: i64 = row.try_get("disabled").map_err(db)?;
    if disabled != 0 {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "user_disabled",
            "this user is disabled: ask an administrator",
        ));
    }
    let Some(sealed) = row
        .try_get::<Option<String>, _>("totp_secret")
        .map_err(db)?
    else {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "totp_not_enrolled",
            "this user has no TOTP enrolled: ask an administrator to enrol it",
        ));
    };
    let Some(code) = body.totp.as_deref().filter(|c| !c.trim().is_empty()) else {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "totp_required",
            "send the current TOTP code",
        ));
    };
    let secret = state
        .store
        .open_text(&crate::secrets::ztna_totp_purpose(&user_id), sealed)?;
    let now = now_ms();
    // A code is good once: its step must come after the last one used (a code seen on the wire
    // or over a shoulder cannot open a second session within its 90-second window).
    let accepted = match crate::totp::verify(&secret, code, now) {
        Some(step) => {
            let step = i64::try_from(step).map_err(ApiError::internal)?;
            state.store.use_ztna_totp_step(&user_id, step).await?
        }
        None => false,
    };
    if !accepted {
        tracing::warn!(tenant = %body.tenant_id, user = %user_id, "ztna sign-in: wrong or reused TOTP code");
        failed().await;
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "totp_invalid",
            "the TOTP code is wrong, too old or already used: wait for the next code",
        ));
    }
    let ttl = session_ttl(&state, &body.tenant_id).await?;
    let token = format!("{TOKEN_PREFIX}{}", auth::random_secret(32));
    let session_id = new_id("zs");
    let expires_at_ms = now + ttl * 1000;
    sqlx::query(
        "INSERT INTO ztna_sessions (id, tenant_id, user_id, token_hash, created_at_ms, expires_at_ms, mfa_at_ms, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
    )
    .bind(&session_id)
    .bind(&body.tenant_id)
    .bind(&user_id)
    .bind(auth::secret_hash(&token))
    .bind(now)
    .bind(expires_at_ms)
    .bind(now)
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    crate::login_throttle::after_remote_user_sign_in(&state, tenant_id, username).await;
    tracing::info!(tenant = %body.tenant_id, user = %user_id, session = %session_id, "ztna sign-in");
    Ok(Json(ClientSession {
        token,
        session_id,
        expires_at_ms,
    })
    .into_response())
}

/// An Argon2 hash of a random password (made once), checked against when the user name is
/// unknown.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| auth::hash_password(&auth::random_secret(16)).unwrap_or_default())
}

/// Ends the caller's client session (its tunnels go at once).
#[utoipa::path(post, path = "/api/ztna/logout",
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub async fn client_logout(
    State(state): State<SharedState>,
    client: Client,
) -> Result<StatusCode, ApiError> {
    sqlx::query("UPDATE ztna_sessions SET revoked = 1 WHERE id = $1")
        .bind(&client.session_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    republish(
        &state,
        &client.tenant_id,
        &format!("ztna:{}", client.username),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Registering a device (or refreshing a registration with the same key).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// The site whose edge the tunnel goes to.
    pub site_id: String,
    /// A name for the device (1-64 of a-z 0-9 - _ . @).
    pub name: String,
    /// The device's WireGuard public key (base64).
    pub public_key: String,
    /// Its posture now (optional; rules that need posture are withheld without one).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub posture: Option<PostureReport>,
}

/// A posture report.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureBody {
    /// The report.
    #[schema(value_type = Object)]
    pub posture: PostureReport,
}

/// What a client needs to bring its tunnel up.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TunnelConfig {
    /// Registered device id.
    pub device_id: String,
    /// The device's tunnel address.
    pub address: String,
    /// The edge's WireGuard endpoint (`host:port`).
    pub endpoint: String,
    /// The edge's public key.
    pub edge_public_key: String,
    /// Networks to route into the tunnel (the allowed resources' destinations).
    pub allowed_ips: Vec<String>,
    /// Every access rule of the user's groups: allowed now, or refused and why.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<RuleOutcome>,
    /// The session's end (Unix ms).
    pub session_expires_at_ms: i64,
    /// The policy version carrying this tunnel.
    pub policy_version: u64,
}

async fn load_device(
    state: &SharedState,
    client: &Client,
    device_id: &str,
) -> Result<sqlx::any::AnyRow, ApiError> {
    let row = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM ztna_devices WHERE id = $1 AND tenant_id = $2 AND user_id = $3"
    ))
    .bind(device_id)
    .bind(&client.tenant_id)
    .bind(&client.user_id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?
    .ok_or_else(|| {
        refused(
            StatusCode::NOT_FOUND,
            "device_unknown",
            "no such device registered by this user",
        )
    })?;
    let revoked: i64 = row.try_get("revoked").map_err(db)?;
    if revoked != 0 {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "device_revoked",
            "this device was revoked by an administrator",
        ));
    }
    Ok(row)
}

async fn tunnel_config(
    state: &SharedState,
    client: &Client,
    device_id: &str,
    policy_version: Option<u64>,
) -> Result<TunnelConfig, ApiError> {
    let row = load_device(state, client, device_id).await?;
    let d = device_view(&row)?;
    let site = sqlx::query("SELECT endpoint, edge_public_key FROM ztna_sites WHERE site_id = $1")
        .bind(&d.site_id)
        .fetch_optional(state.store.pool())
        .await
        .map_err(db)?
        .ok_or_else(no_pool)?;
    let rules = access_rules(state, &client.tenant_id).await?;
    let mfa_at_ms: i64 = sqlx::query("SELECT mfa_at_ms FROM ztna_sessions WHERE id = $1")
        .bind(&client.session_id)
        .fetch_one(state.store.pool())
        .await
        .map_err(db)?
        .try_get("mfa_at_ms")
        .map_err(db)?;
    let live = LiveDevice {
        id: d.id.clone(),
        name: d.name.clone(),
        user: client.username.clone(),
        groups: groups_of(state, &client.user_id).await?,
        public_key: d.public_key.clone(),
        address: d.address.parse().map_err(ApiError::internal)?,
        posture: d.posture.clone(),
        session: client.session_id.clone(),
        session_expires_ms: client.expires_at_ms,
        mfa_at_ms,
    };
    let eval = model::evaluate(&live, &rules, now_ms());
    let mut allowed_ips: Vec<String> = Vec::new();
    for r in eval.rules.iter().filter(|r| r.allowed) {
        for res in &r.resources {
            let net = res.destination.to_string();
            if !allowed_ips.contains(&net) {
                allowed_ips.push(net);
            }
        }
    }
    let policy_version = match policy_version {
        Some(v) => v,
        None => state
            .store
            .latest_policy(&client.tenant_id)
            .await?
            .map_or(0, |p| p.version),
    };
    Ok(TunnelConfig {
        device_id: d.id,
        address: d.address,
        endpoint: site.try_get("endpoint").map_err(db)?,
        edge_public_key: site.try_get("edge_public_key").map_err(db)?,
        allowed_ips,
        rules: eval.rules,
        session_expires_at_ms: client.expires_at_ms,
        policy_version,
    })
}

fn no_pool() -> ApiError {
    refused(
        StatusCode::CONFLICT,
        "no_address_pool",
        "this site has no tunnel address pool: ask an administrator to set the site's tunnel settings",
    )
}

/// Registers the caller's device for a site (or refreshes it: same key, same address), binds
/// it to the caller's session, records its posture, and publishes its tunnel peer at once.
#[utoipa::path(post, path = "/api/ztna/devices", request_body = RegisterDevice,
    responses((status = 200, body = TunnelConfig), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn register_device(
    State(state): State<SharedState>,
    client: Client,
    Json(body): Json<RegisterDevice>,
) -> Result<Json<TunnelConfig>, ApiError> {
    if !model::is_name(&body.name) {
        return Err(invalid_field(
            "name",
            "1-64 characters of a-z, 0-9, '-', '_', '.', '@'",
        ));
    }
    let key = body.public_key.trim().to_string();
    if !valid_key(&key) {
        return Err(invalid_field(
            "public_key",
            "a WireGuard public key: base64 of 32 bytes",
        ));
    }
    if let Some(p) = &body.posture {
        p.validate()
            .map_err(|model::ZtnaError::Invalid { path, message }| {
                invalid_field(&path, &message)
            })?;
    }
    let site = sqlx::query("SELECT pool FROM ztna_sites WHERE site_id = $1 AND tenant_id = $2")
        .bind(&body.site_id)
        .bind(&client.tenant_id)
        .fetch_optional(state.store.pool())
        .await
        .map_err(db)?
        .ok_or_else(no_pool)?;
    let pool: IpCidr = site
        .try_get::<String, _>("pool")
        .map_err(db)?
        .parse()
        .map_err(ApiError::internal)?;
    let posture_json = body
        .posture
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(ApiError::internal)?;
    let now = now_ms();
    let existing = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM ztna_devices WHERE tenant_id = $1 AND public_key = $2"
    ))
    .bind(&client.tenant_id)
    .bind(&key)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?;
    let device_id = if let Some(row) = existing {
        let d = device_view(&row)?;
        if d.user_id != client.user_id {
            return Err(refused(
                StatusCode::CONFLICT,
                "key_in_use",
                "this public key is registered to another user: generate a new key",
            ));
        }
        if d.revoked {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "device_revoked",
                "this device was revoked by an administrator: it cannot register again",
            ));
        }
        if d.site_id != body.site_id {
            return Err(refused(
                StatusCode::CONFLICT,
                "key_in_use",
                "this key is registered for another site: use one key per site",
            ));
        }
        sqlx::query("UPDATE ztna_devices SET session_id = $1, name = $2 WHERE id = $3")
            .bind(&client.session_id)
            .bind(&body.name)
            .bind(&d.id)
            .execute(state.store.pool())
            .await
            .map_err(db)?;
        if let Some(p) = &posture_json {
            sqlx::query(
                "UPDATE ztna_devices SET posture_json = $1, posture_at_ms = $2 WHERE id = $3",
            )
            .bind(p)
            .bind(now)
            .bind(&d.id)
            .execute(state.store.pool())
            .await
            .map_err(db)?;
        }
        d.id
    } else {
        if count(&state, "ztna_devices", &client.tenant_id).await? >= MAX_PER_TENANT {
            return Err(ApiError::conflict("a tenant has at most 10000 devices"));
        }
        let id = new_id("zd");
        let mut placed = false;
        for _ in 0..5 {
            let taken: BTreeSet<IpAddr> =
                sqlx::query("SELECT address FROM ztna_devices WHERE site_id = $1")
                    .bind(&body.site_id)
                    .fetch_all(state.store.pool())
                    .await
                    .map_err(db)?
                    .iter()
                    .filter_map(|r| r.try_get::<String, _>("address").ok())
                    .filter_map(|a| a.parse().ok())
                    .collect();
            let Some(address) = model::allocate(pool, &taken) else {
                return Err(refused(
                    StatusCode::CONFLICT,
                    "pool_exhausted",
                    "the site's tunnel address pool has no free address",
                ));
            };
            let inserted = sqlx::query(
                "INSERT INTO ztna_devices (id, tenant_id, user_id, site_id, name, public_key, address, session_id, posture_json, posture_at_ms, revoked, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11)",
            )
            .bind(&id)
            .bind(&client.tenant_id)
            .bind(&client.user_id)
            .bind(&body.site_id)
            .bind(&body.name)
            .bind(&key)
            .bind(address.to_string())
            .bind(&client.session_id)
            .bind(posture_json.clone())
            .bind(posture_json.as_ref().map(|_| now))
            .bind(now)
            .execute(state.store.pool())
            .await;
            match inserted {
                Ok(_) => {
                    placed = true;
                    break;
                }
                Err(sqlx::Error::Database(d))
                    if d.kind() == sqlx::error::ErrorKind::UniqueViolation =>
                {
                    continue
                }
                Err(e) => return Err(db(e)),
            }
        }
        if !placed {
            return Err(ApiError::conflict(
                "the address pool changed concurrently too often; try again",
            ));
        }
        id
    };
    let published = republish(
        &state,
        &client.tenant_id,
        &format!("ztna:{}", client.username),
    )
    .await?;
    Ok(Json(
        tunnel_config(&state, &client, &device_id, Some(published.version)).await?,
    ))
}

/// Records a device's posture; the peer's rules follow at once.
#[utoipa::path(put, path = "/api/ztna/devices/{device_id}/posture", request_body = PostureBody,
    params(("device_id" = String, Path, description = "registered device id")),
    responses((status = 200, body = TunnelConfig), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn report_posture(
    State(state): State<SharedState>,
    client: Client,
    Path(device_id): Path<String>,
    Json(body): Json<PostureBody>,
) -> Result<Json<TunnelConfig>, ApiError> {
    body.posture
        .validate()
        .map_err(|model::ZtnaError::Invalid { path, message }| invalid_field(&path, &message))?;
    load_device(&state, &client, &device_id).await?;
    sqlx::query("UPDATE ztna_devices SET posture_json = $1, posture_at_ms = $2 WHERE id = $3")
        .bind(serde_json::to_string(&body.posture).map_err(ApiError::internal)?)
        .bind(now_ms())
        .bind(&device_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    let published = republish(
        &state,
        &client.tenant_id,
        &format!("ztna:{}", client.username),
    )
    .await?;
    Ok(Json(
        tunnel_config(&state, &client, &device_id, Some(published.version)).await?,
    ))
}

/// The tunnel configuration of one of the caller's devices.
#[utoipa::path(get, path = "/api/ztna/devices/{device_id}/config",
    params(("device_id" = String, Path, description = "registered device id")),
    responses((status = 200, body = TunnelConfig), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_config(
    State(state): State<SharedState>,
    client: Client,
    Path(device_id): Path<String>,
) -> Result<Json<TunnelConfig>, ApiError> {
    Ok(Json(
        tunnel_config(&state, &client, &device_id, None).await?,
    ))
}
