//! The REST API under `/api`: sign-in and tokens, tenants and sites, claim codes and
//! enrolment, devices, policy, audit queries and alerts. Every handler is annotated for the
//! OpenAPI document served at `/api/openapi.json` (see [`crate::openapi`]).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sase_model::audit::{verify_chain_hashes, AuditEvent};
use sase_model::bundle::{verifying_key_to_b64, BundlePayload, SignedBundle};
use sase_model::canonical::to_canonical_json;
use sase_model::channel::ControlMessage;
use sase_model::fleet::{Device, EnrollRequest, EnrollResponse, Site, Tenant};
use sase_model::merkle::SignedTreeHead;
use sase_model::Policy;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{self, Admin, API_TOKEN_PREFIX, SESSION_COOKIE};
use crate::error::ApiError;
use crate::pki::{self, CertAndKey};
use crate::rbac::{self, Permission, Scope, Target};
use crate::state::{new_id, now_ms, SharedState};
use crate::store::{Alert, AuditFilter, PolicyVersion};

/// Sign-in request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Current TOTP code, required once the admin has enrolled MFA.
    #[serde(default)]
    pub totp: Option<String>,
}

/// Sign-in answer (the session is also set as an HttpOnly cookie).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Signed-in user.
    pub username: String,
    /// Session secret; usable as a bearer token by scripts.
    pub session: String,
    /// When the session ends (Unix ms).
    pub expires_at_ms: i64,
    /// CSRF token: the console sends it as `X-CSRF-Token` on state-changing calls made with
    /// the session cookie (also set as the readable `sase_csrf` cookie; see `crate::csrf`).
    pub csrf_token: String,
}

/// Request for a new API token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewTokenRequest {
    /// What the token is for.
    pub name: String,
    /// Lifetime in hours (1 to 8760; default 24).
    pub ttl_hours: Option<i64>,
    /// Permissions the token carries (`policy.read`, `audit.read`, …), a subset of the
    /// creator's own; default: all of the creator's current permissions.
    pub scopes: Option<Vec<String>>,
}

/// A new API token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenResponse {
    /// The token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// When it stops working (Unix ms).
    pub expires_at_ms: i64,
    /// The permissions it carries.
    pub scopes: Vec<String>,
}

/// Request to create a tenant or a site.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NameRequest {
    /// Display name (1-100 characters).
    pub name: String,
}

/// Request for a claim code.
#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct ClaimCodeRequest {
    /// Minutes until the code expires (1 to 43200; default 1440).
    pub ttl_minutes: Option<i64>,
}

/// A claim code, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimCodeResponse {
    /// The code to hand to whoever installs the device.
    pub code: String,
    /// Site the device will join.
    pub site_id: String,
    /// When it expires (Unix ms).
    pub expires_at_ms: i64,
}

/// A policy version as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// Tenant.
    pub tenant_id: String,
    /// Version number.
    pub version: u64,
    /// The policy.
    #[schema(value_type = Object)]
    pub policy: Policy,
    /// Who made the change.
    pub created_by: String,
    /// When (Unix ms).
    pub created_at_ms: i64,
    /// Devices the new bundle was pushed to right away (only on change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_to: Option<usize>,
}

/// Audit query parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Tenant id.
    pub tenant: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Earliest time (Unix ms, inclusive).
    pub from_ms: Option<i64>,
    /// Latest time (Unix ms, exclusive).
    pub to_ms: Option<i64>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// Identity (`issuer|subject`).
    pub identity: Option<String>,
    /// Resource name.
    pub resource: Option<String>,
    /// Reason code.
    pub reason: Option<String>,
    /// Reference id (as given to the client in an error body).
    pub reference: Option<String>,
    /// Most events to return (1 to 10000; default 100).
    pub limit: Option<i64>,
}

/// Audit events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Matching events, newest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<AuditEvent>,
    /// How many were returned.
    pub count: usize,
}

/// Result of re-verifying a device's stored chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainReport {
    /// Device.
    pub device_id: String,
    /// Events checked.
    pub events: u64,
    /// Highest sequence number stored.
    pub head_seq: u64,
    /// True when every stored event links to the previous one and matches its stored hash.
    pub intact: bool,
    /// The first problem found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid",
            "name must be 1-100 printable characters",
            vec![sase_model::ValidationError {
                path: "name".into(),
                message: "must be 1-100 printable characters".into(),
            }],
        ));
    }
    Ok(name.to_string())
}

fn is_unique_violation(err: &crate::store::StoreError) -> bool {
    match err {
        crate::store::StoreError::Db(sqlx::Error::Database(db)) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
        }
        _ => false,
    }
}

/// Signs in with a user name and password.
#[utoipa::path(post, path = "/api/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<SharedState>,
    conn: Option<axum::Extension<crate::tls::ConnInfo>>,
    Json(req): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    if req.username.len() > 200 || req.password.len() > 1024 {
        return Err(ApiError::unauthorized("wrong user name or password"));
    }
    // Throttling and lockout (crate::login_throttle): refused before the password is looked at.
    let address = conn.map(|c| c.0.peer.ip());
    if let Err(refusal) =
        crate::login_throttle::before_sign_in(&state, &req.username, address, now_ms()).await
    {
        return Ok(refusal);
    }
    let found = state.store.admin_by_username(&req.username).await?;
    // Verify against a fixed hash for unknown users too, so timing does not reveal names.
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0dGJ3uTSGx8oXaOQL4cTaSqQ4A8cC2+O1T80HWbD6Zs";
    let (admin_id, hash) = found
        .clone()
        .unwrap_or_else(|| (String::new(), DUMMY.to_string()));
    let password = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    if !ok || found.is_none() {
        tracing::info!(username = %req.username, "failed sign-in");
        let mut known = None;
        if found.is_some() {
            if let Some(record) = state.store.admin(&admin_id).await? {
                crate::admin_audit::record_failed_sign_in(&state, &record, "wrong_password").await;
                known = Some(record);
            }
        }
        crate::login_throttle::after_failed_sign_in(
            &state,
            &req.username,
            known.as_ref(),
            address,
            now_ms(),
        )
        .await;
        return Err(ApiError::unauthorized("wrong user name or password"));
    }
    let record = state
        .store
        .admin(&admin_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("wrong user name or password"))?;
    if let Err(err) = crate::admins::check_sign_in(&state, &record, req.totp.as_deref()).await {
        crate::admin_audit::record_failed_sign_in(&state, &record, err.code()).await;
        return Err(err);
    }
    crate::login_throttle::after_sign_in(&state, &req.username).await;
    let session = auth::random_secret(32);
    let now = now_ms();
    let session_ms = crate::sessions::settings().absolute_ms;
    let expires_at_ms = now + session_ms;
    state
        .store
        .insert_credential(
            &auth::secret_hash(&session),
            &admin_id,
            "session",
            "console",
            now,
            expires_at_ms,
        )
        .await?;
    let principal = auth::principal_from(
        crate::store::CredentialRecord {
            admin: record,
            kind: "session".into(),
            scopes: None,
            expires_at_ms,
        },
        now,
    )?;
    crate::admin_audit::record(
        &state,
        &principal,
        "admin.sign_in",
        principal.scope.tenant_id(),
        &principal.id,
        serde_json::Value::Null,
        serde_json::json!({"session_expires_at_ms": expires_at_ms}),
    )
    .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={session}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        session_ms / 1000
    );
    let csrf_cookie = crate::csrf::cookie_for(&session, session_ms / 1000);
    let body = LoginResponse {
        username: req.username,
        csrf_token: crate::csrf::token_for(&session),
        session,
        expires_at_ms,
    };
    // AppendHeaders: both cookies (an array of pairs would replace the first by the second).
    Ok((
        axum::response::AppendHeaders([
            (header::SET_COOKIE, cookie),
            (header::SET_COOKIE, csrf_cookie),
        ]),
        Json(body),
    )
        .into_response())
}

/// Ends the current session.
#[utoipa::path(post, path = "/api/logout", responses((status = 204)))]
pub async fn logout(
    State(state): State<SharedState>,
    _admin: Admin,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| t.trim().to_string()))
        .or_else(|| {
            headers
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.split(';')
                        .filter_map(|c| c.trim().split_once('='))
                        .find(|(n, _)| *n == SESSION_COOKIE)
                        .map(|(_, s)| s.to_string())
                })
        });
    if let Some(secret) = secret {
        state
            .store
            .delete_credential(&auth::secret_hash(&secret))
            .await?;
    }
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    let clear_csrf = format!(
        "{}=; Secure; SameSite=Strict; Path=/; Max-Age=0",
        crate::csrf::CSRF_COOKIE
    );
    Ok((
        StatusCode::NO_CONTENT,
        axum::response::AppendHeaders([
            (header::SET_COOKIE, clear),
            (header::SET_COOKIE, clear_csrf),
        ]),
    )
        .into_response())
}

/// Creates an API token for the signed-in admin.
#[utoipa::path(post, path = "/api/tokens", request_body = NewTokenRequest,
    responses((status = 201, body = NewTokenResponse)))]
pub async fn create_token(
    State(state): State<SharedState>,
    admin: Admin,
    Json(req): Json<NewTokenRequest>,
) -> Result<(StatusCode, Json<NewTokenResponse>), ApiError> {
    rbac::authorize_own(&admin, Permission::TokensCreate)?;
    let name = check_name(&req.name)?;
    let own = admin.effective_permissions();
    let scopes: std::collections::BTreeSet<Permission> = match &req.scopes {
        None => own.clone(),
        Some(names) => names
            .iter()
            .map(|n| {
                Permission::parse(n).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "scope_invalid",
                        format!("unknown scope {n:?}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    if !scopes.is_subset(&own) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "scope_not_allowed",
            "a token's scopes must be a subset of your own permissions",
        ));
    }
    let scopes: Vec<String> = scopes.iter().map(|p| p.as_str().to_string()).collect();
    let hours = req.ttl_hours.unwrap_or(24);
    if !(1..=8760).contains(&hours) {
        return Err(ApiError::bad_request(
            "ttl_hours must be between 1 and 8760",
        ));
    }
    let token = format!("{API_TOKEN_PREFIX}{}", auth::random_secret(32));
    let now = now_ms();
    let expires_at_ms = now + hours * 3_600_000;
    state
        .store
        .insert_scoped_credential(
            &auth::secret_hash(&token),
            &admin.id,
            "api",
            &name,
            Some(&scopes.join(" ")),
            now,
            expires_at_ms,
        )
        .await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "token.create",
        admin.scope.tenant_id(),
        &admin.id,
        serde_json::Value::Null,
        serde_json::json!({"name": name, "scopes": scopes, "expires_at_ms": expires_at_ms}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewTokenResponse {
            token,
            expires_at_ms,
            scopes,
        }),
    ))
}

/// Lists the customer tenants in the caller's scope (an MSP's customers, or a customer's own).
#[utoipa::path(get, path = "/api/tenants", responses((status = 200, body = Vec<Object>)))]
pub async fn list_tenants(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    rbac::authorize_own(&admin, Permission::TenantsRead)?;
    Ok(Json(match &admin.scope {
        Scope::Msp { msp_id } => state.store.tenants_of_msp(msp_id).await?,
        Scope::Customer { tenant_id, .. } => {
            state.store.tenant(tenant_id).await?.into_iter().collect()
        }
    }))
}

/// Creates a customer tenant (and its CA) under the caller's MSP.
#[utoipa::path(post, path = "/api/tenants", request_body = NameRequest,
    responses((status = 201, body = Object), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<SharedState>,
    admin: Admin,
    Json(req): Json<NameRequest>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    let msp_id = admin.scope.msp_id().to_string();
    rbac::authorize(&admin, Permission::TenantsCreate, Target::Msp(&msp_id))?;
    let name = check_name(&req.name)?;
    let tenant = Tenant {
        id: new_id("ten"),
        name,
        created_at_ms: now_ms(),
    };
    let common_name = format!("SASE tenant {} CA", tenant.id);
    let ca = tokio::task::spawn_blocking(move || pki::new_ca(&common_name))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    match state
        .store
        .create_tenant_in(&tenant, &msp_id, &ca.cert_pem, &ca.key_pem)
        .await
    {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("a tenant with this name exists"))
        }
        Err(e) => return Err(e.into()),
    }
    let roots = state.store.all_tenant_ca_certs().await?;
    state
        .device_verifier
        .reload(&roots)
        .map_err(ApiError::internal)?;
    crate::admin_audit::record(
        &state,
        &admin,
        "tenant.create",
        Some(&tenant.id),
        &tenant.id,
        serde_json::Value::Null,
        serde_json::json!(tenant),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

/// Lists a tenant's sites.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/sites",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_sites(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<Site>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::TenantsRead, &tenant_id).await?;
    Ok(Json(state.store.sites(&tenant_id).await?))
}

/// Creates a site.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/sites", request_body = NameRequest,
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 201, body = Object)))]
pub async fn create_site(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(req): Json<NameRequest>,
) -> Result<(StatusCode, Json<Site>), ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::SitesWrite, &tenant_id).await?;
    let site = Site {
        id: new_id("site"),
        tenant_id,
        name: check_name(&req.name)?,
        created_at_ms: now_ms(),
    };
    match state.store.create_site(&site).await {
        Ok(()) => {
            crate::admin_audit::record(
                &state,
                &admin,
                "site.create",
                Some(&site.tenant_id),
                &site.id,
                serde_json::Value::Null,
                serde_json::json!(site),
            )
            .await?;
            Ok((StatusCode::CREATED, Json(site)))
        }
        Err(e) if is_unique_violation(&e) => Err(ApiError::conflict(
            "a site with this name exists in the tenant",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Creates a single-use claim code for a site.
#[utoipa::path(post, path = "/api/sites/{site_id}/claim-codes", request_body = ClaimCodeRequest,
    params(("site_id" = String, Path, description = "site id")),
    responses((status = 201, body = ClaimCodeResponse)))]
pub async fn create_claim_code(
    State(state): State<SharedState>,
    admin: Admin,
    Path(site_id): Path<String>,
    body: Option<Json<ClaimCodeRequest>>,
) -> Result<(StatusCode, Json<ClaimCodeResponse>), ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let minutes = req.ttl_minutes.unwrap_or(1440);
    if !(1..=43_200).contains(&minutes) {
        return Err(ApiError::bad_request(
            "ttl_minutes must be between 1 and 43200",
        ));
    }
    let site = rbac::authorize_site(&state, &admin, Permission::ClaimCodesCreate, &site_id).await?;
    let code = auth::claim_code();
    let now = now_ms();
    let expires_at_ms = now + minutes * 60_000;
    state
        .store
        .insert_claim_code(&auth::secret_hash(&code), &site, now, expires_at_ms)
        .await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "claim_code.create",
        Some(&site.tenant_id),
        &site.id,
        serde_json::Value::Null,
        serde_json::json!({"site_id": site.id, "expires_at_ms": expires_at_ms}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ClaimCodeResponse {
            code,
            site_id,
            expires_at_ms,
        }),
    ))
}

/// Enrols a device: trades a claim code and a CSR for a device certificate and the pinned
/// policy signing key. Unauthenticated (the claim code is the credential).
#[utoipa::path(post, path = "/api/enroll", request_body = Object,
    responses((status = 200, body = Object), (status = 403, body = crate::error::ErrorBody)))]
pub async fn enroll(
    State(state): State<SharedState>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    // Codes are read out and typed by people: ignore case and surrounding blanks.
    let code_hash = auth::secret_hash(&req.claim_code.trim().to_ascii_uppercase());
    let now = now_ms();
    let refused = || ApiError::forbidden("claim code is unknown, used or expired");
    let (tenant_id, site_id) = state
        .store
        .claim_code_target(&code_hash, now)
        .await?
        .ok_or_else(refused)?;
    let (ca_cert_pem, ca_key_pem) = state
        .store
        .tenant_ca(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::internal("claim code names a missing tenant"))?;
    // A re-enrolment code keeps the device's id: new key and certificate, same device.
    let reenrol = crate::provisioning::code_target_device(&state, &code_hash).await?;
    let device_id = reenrol.clone().unwrap_or_else(|| new_id("dev"));
    let ca = CertAndKey {
        cert_pem: ca_cert_pem.clone(),
        key_pem: ca_key_pem,
    };
    let csr = req.csr_pem.clone();
    let id = device_id.clone();
    let (cert_pem, cert_sha256) =
        tokio::task::spawn_blocking(move || pki::issue_device_cert(&ca, &csr, &id))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let name: String = req
        .name
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let device = Device {
        id: device_id.clone(),
        tenant_id: tenant_id.clone(),
        site_id: site_id.clone(),
        name: if name.is_empty() {
            device_id.clone()
        } else {
            name
        },
        status: sase_model::fleet::DeviceStatus::Active,
        cert_sha256,
        enrolled_at_ms: now,
        last_seen_ms: None,
        applied_version: None,
        edge_version: None,
    };
    let enrolled = if reenrol.is_some() {
        crate::provisioning::complete_reenrolment(
            &state,
            &code_hash,
            &device_id,
            &cert_pem,
            &device.cert_sha256,
            now,
        )
        .await?
    } else {
        state
            .store
            .enroll_device(&code_hash, &device, &cert_pem, now)
            .await?
    };
    if !enrolled {
        return Err(refused());
    }
    tracing::info!(device = %device_id, tenant = %tenant_id, "device enrolled");
    let channel_url = format!(
        "{}/api/edge/channel",
        state.public_url.replacen("https://", "wss://", 1)
    );
    Ok(Json(EnrollResponse {
        device_id,
        tenant_id,
        site_id,
        certificate_pem: cert_pem,
        tenant_ca_pem: ca_cert_pem,
        policy_signing_key: verifying_key_to_b64(&state.policy_keys.current().verifying_key()),
        channel_url,
    }))
}

/// Lists a tenant's devices.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/devices",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_devices(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<Device>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::DevicesRead, &tenant_id).await?;
    Ok(Json(state.store.devices(&tenant_id).await?))
}

fn policy_view(version: PolicyVersion, pushed_to: Option<usize>) -> Result<PolicyView, ApiError> {
    let policy: Policy = serde_json::from_str(&version.policy_json).map_err(ApiError::internal)?;
    Ok(PolicyView {
        tenant_id: version.tenant_id,
        version: version.version,
        policy,
        created_by: version.created_by,
        created_at_ms: version.created_at_ms,
        pushed_to,
    })
}

/// The tenant's current policy.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/policy",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = PolicyView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_policy(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let latest = state
        .store
        .latest_policy(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("this tenant has no policy yet"))?;
    Ok(Json(policy_view(latest, None)?))
}

/// All versions of the tenant's policy, newest first.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/policy/versions",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = Vec<PolicyView>)))]
pub async fn list_policy_versions(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<PolicyView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let versions = state.store.policy_versions(&tenant_id).await?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| policy_view(v, None))
            .collect::<Result<_, _>>()?,
    ))
}

/// Replaces the tenant's policy (JSON, or YAML with a YAML content type). A valid change
/// becomes a new signed bundle version and is pushed to the tenant's connected edges at once.
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/policy", request_body(content = Object, content_type = "application/json"),
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = PolicyView), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_policy(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<PolicyView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("policy must be UTF-8 text"))?;
    let parsed = if content_type.contains("yaml") {
        Policy::parse_yaml(text)
    } else if content_type.contains("json") {
        Policy::parse_json(text)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the policy as application/json or application/yaml",
        ));
    };
    let policy = parsed.map_err(|e| {
        ApiError::invalid(
            "policy_invalid",
            "the policy is not valid; see `errors`",
            e.0,
        )
    })?;
    check_waf_loads(&state, &policy).await?;
    // OpenAPI documents compile into validators exactly as the edge will compile them.
    sase_gateway::check_contracts(&policy).map_err(|errors| {
        ApiError::invalid(
            "contract_invalid",
            "an API contract (OpenAPI document) does not compile; see `errors`",
            errors,
        )
    })?;
    let stored = publish_policy(&state, &tenant_id, policy, &admin.username).await?;
    crate::rollouts::supersede(&state, &tenant_id, stored.version).await?;
    // A policy written directly replaces an inherited one: the tenant stops inheriting.
    crate::templates::detach(&state, &tenant_id).await?;
    let pushed = state.hub.broadcast(
        &tenant_id,
        &ControlMessage::Policy {
            bundle: SignedBundle::from_json(stored.bundle_json.as_bytes())
                .map_err(ApiError::internal)?,
        },
    );
    tracing::info!(tenant = %tenant_id, version = stored.version, pushed, "policy published");
    crate::fanout::announce(
        &state,
        crate::fanout::Change::Policy {
            tenant_id: tenant_id.clone(),
        },
    )
    .await;
    crate::admin_audit::record_policy_change(&state, &admin, &stored).await?;
    Ok(Json(policy_view(stored, Some(pushed))?))
}

/// Refuses (422, with libmodsecurity's message and the path of the settings at fault) a policy
/// whose WAF settings do not load into a CRS rule set. Configurations already known to load are
/// not compiled again.
///
/// # Errors
/// 422 when the rule set does not load.
pub async fn check_waf_loads(state: &SharedState, policy: &Policy) -> Result<(), ApiError> {
    let scopes = policy.waf_scopes();
    if scopes.is_empty() {
        return Ok(());
    }
    let digest = sase_waf::RuleSet::config_digest(&scopes);
    if state
        .waf_known_good
        .lock()
        .map(|known| known.contains(&digest))
        .unwrap_or(false)
    {
        return Ok(());
    }
    let crs = state.crs.clone();
    let checked = policy.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let all = sase_waf::RuleSet::compile(&crs, &scopes);
        let Err(err) = all else {
            return Ok(());
        };
        // Name the first resource or route whose settings fail on their own.
        let mut path = "resources".to_string();
        'find: for (r, resource) in checked.resources.iter().enumerate() {
            for (o, route) in resource.routes.iter().enumerate() {
                let key = sase_model::policy::waf_scope_key(&resource.name, &route.id);
                let Some(one) = scopes.iter().find(|(k, _)| *k == key) else {
                    continue;
                };
                if sase_waf::RuleSet::compile(&crs, std::slice::from_ref(one)).is_err() {
                    path = if route.waf.is_some() {
                        format!("resources[{r}].routes[{o}].waf")
                    } else {
                        format!("resources[{r}].waf")
                    };
                    break 'find;
                }
            }
        }
        Err((path, err.to_string()))
    })
    .await
    .map_err(ApiError::internal)?;
    match outcome {
        Ok(()) => {
            if let Ok(mut known) = state.waf_known_good.lock() {
                known.insert(digest);
            }
            Ok(())
        }
        Err((path, message)) => Err(ApiError::invalid(
            "waf_invalid",
            format!("the WAF settings do not load: {message}"),
            vec![sase_model::ValidationError { path, message }],
        )),
    }
}

/// Signs and stores the next version of a tenant's policy.
///
/// # Errors
/// Store failures, or persistent version races.
pub async fn publish_policy(
    state: &SharedState,
    tenant_id: &str,
    policy: Policy,
    author: &str,
) -> Result<PolicyVersion, ApiError> {
    // The tunnel peers compiled from remote users and devices go into every version (see
    // crate::ztna); compiling and storing happen under one lock so that versions follow the
    // order of the changes they include.
    let _publishing = crate::ztna::PUBLISH_LOCK.lock().await;
    let policy = crate::ztna::with_identity_peers(state, tenant_id, policy).await?;
    let policy_json = String::from_utf8(to_canonical_json(&policy).map_err(ApiError::internal)?)
        .map_err(ApiError::internal)?;
    for _ in 0..5 {
        let next = state
            .store
            .latest_policy(tenant_id)
            .await?
            .map_or(1, |p| p.version + 1);
        let now = now_ms();
        let payload = BundlePayload {
            tenant_id: tenant_id.to_string(),
            version: next,
            issued_at_ms: now,
            policy: policy.clone(),
        };
        let bundle = SignedBundle::sign(&payload, &state.policy_keys.current())
            .map_err(ApiError::internal)?;
        let version = PolicyVersion {
            tenant_id: tenant_id.to_string(),
            version: next,
            policy_json: policy_json.clone(),
            bundle_json: bundle.to_json(),
            created_by: author.to_string(),
            created_at_ms: now,
        };
        if state.store.insert_policy(&version).await? {
            return Ok(version);
        }
    }
    Err(ApiError::conflict(
        "the policy changed concurrently too often; try again",
    ))
}

/// Queries audit events.
#[utoipa::path(get, path = "/api/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage)))]
pub async fn query_audit(
    State(state): State<SharedState>,
    admin: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let tenant_ids =
        rbac::visible_tenants(&state, &admin, Permission::AuditRead, q.tenant.as_deref()).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    if let Some(d) = &q.decision {
        if d != "allow" && d != "deny" {
            return Err(ApiError::bad_request("decision must be `allow` or `deny`"));
        }
    }
    let filter = AuditFilter {
        tenant_id: q.tenant,
        tenant_ids: Some(tenant_ids),
        device_id: q.device,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        decision: q.decision,
        identity: q.identity,
        resource: q.resource,
        reason: q.reason,
        reference: q.reference,
        limit,
    };
    let events = state.store.audit_events(&filter).await?;
    Ok(Json(AuditPage {
        count: events.len(),
        events,
    }))
}

/// Re-verifies a device's whole stored chain: every event must link to the previous one and
/// hash to the value stored at ingest.
#[utoipa::path(get, path = "/api/devices/{device_id}/audit/verify",
    params(("device_id" = String, Path, description = "device id")),
    responses((status = 200, body = ChainReport)))]
pub async fn verify_device_chain(
    State(state): State<SharedState>,
    admin: Admin,
    Path(device_id): Path<String>,
) -> Result<Json<ChainReport>, ApiError> {
    rbac::authorize_device(&state, &admin, Permission::AuditRead, &device_id).await?;
    let head = state.store.audit_head(&device_id).await?;
    // Events deleted by retention keep their hashes: the check starts after the last of them.
    let mut verifier = match state.store.pruned_through(&device_id).await? {
        Some((seq, hash)) => sase_model::ChainVerifier::resume(&device_id, seq, hash),
        None => sase_model::ChainVerifier::new(&device_id),
    };
    let mut first_error = None;
    'pages: loop {
        let page = state
            .store
            .device_chain(&device_id, verifier.last_seq(), 1000)
            .await?;
        if page.is_empty() {
            break;
        }
        if let Err(err) = verify_chain_hashes(&mut verifier, &page) {
            first_error = Some(err.to_string());
            break 'pages;
        }
    }
    // Seqs start at 1 and are contiguous up to the last verified one.
    let checked = verifier.last_seq();
    let head_seq = head.as_ref().map_or(0, |(s, _)| *s);
    if first_error.is_none() {
        if let Some((seq, hash)) = &head {
            if verifier.last_seq() != *seq || verifier.last_hash() != hash {
                first_error = Some(format!(
                    "stored events end at seq {} but the recorded head is seq {seq}",
                    verifier.last_seq()
                ));
            }
        }
    }
    Ok(Json(ChainReport {
        device_id,
        events: checked,
        head_seq,
        intact: first_error.is_none(),
        first_error,
    }))
}

/// A tenant's latest signed checkpoint and the key it verifies with.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// The signed tree head (absent while the tenant has no stored events).
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<SignedTreeHead>,
    /// The control plane's Ed25519 public key (base64): `sase-audit verify --control-plane-key`.
    pub public_key: String,
}

/// Parameters of an inclusion proof.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ProofQuery {
    /// Device id.
    pub device: String,
    /// Sequence number of the event.
    pub seq: u64,
}

/// An event's inclusion proof against the latest checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProofView {
    /// Device.
    pub device_id: String,
    /// Sequence number.
    pub seq: u64,
    /// The event's chain hash (hex).
    pub hash: String,
    /// Its position in the tenant's log.
    pub log_index: u64,
    /// The checkpoint the proof is for.
    #[schema(value_type = Object)]
    pub checkpoint: SignedTreeHead,
    /// Audit path (hex hashes, leaf side first), RFC 6962.
    pub proof: Vec<String>,
}

/// Export parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// Only this device.
    pub device: Option<String>,
    /// Events at or after this time (Unix ms).
    pub from_ms: Option<i64>,
    /// Events before this time (Unix ms).
    pub to_ms: Option<i64>,
}

/// The tenant's latest signed checkpoint (RFC 6962 tree head over all its stored events).
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/audit/checkpoint",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = CheckpointView)))]
pub async fn get_audit_checkpoint(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<CheckpointView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    Ok(Json(CheckpointView {
        checkpoint: state.store.latest_checkpoint(&tenant_id).await?,
        public_key: verifying_key_to_b64(&state.signing_key.verifying_key()),
    }))
}

/// Signs a checkpoint now if the tenant's log grew (otherwise returns the latest). Refuses to
/// sign (the latest stays in force, an alert is raised) when stored events no longer match
/// the latest checkpoint.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/audit/checkpoint",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = CheckpointView)))]
pub async fn sign_audit_checkpoint(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<CheckpointView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditSign, &tenant_id).await?;
    let (checkpoint, _) = crate::audit_log::checkpoint(&state, &tenant_id, now_ms()).await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "audit.checkpoint_sign",
        Some(&tenant_id),
        &tenant_id,
        serde_json::Value::Null,
        serde_json::json!({"tree_size": checkpoint.as_ref().map(|c| c.tree_size)}),
    )
    .await?;
    Ok(Json(CheckpointView {
        checkpoint,
        public_key: verifying_key_to_b64(&state.signing_key.verifying_key()),
    }))
}

/// The inclusion proof of one event in the tenant's latest checkpoint.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/audit/proof", params(("tenant_id" = String, Path, description = "tenant id"), ProofQuery),
    responses((status = 200, body = ProofView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_audit_proof(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Query(q): Query<ProofQuery>,
) -> Result<Json<ProofView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    let not_found = || ApiError::not_found("no such event in this tenant's log");
    let (_, hash, log_index, event_json) = state
        .store
        .audit_export_events(&q.device, q.seq, q.seq)
        .await?
        .into_iter()
        .next()
        .ok_or_else(not_found)?;
    if event_json.is_empty() {
        return Err(ApiError::not_found("this event was deleted by retention"));
    }
    let event: AuditEvent = serde_json::from_str(&event_json).map_err(ApiError::internal)?;
    if event.tenant_id != tenant_id {
        return Err(not_found());
    }
    let log_index = log_index.ok_or_else(not_found)?;
    let (checkpoint, tree) = crate::audit_log::checkpoint(&state, &tenant_id, now_ms()).await?;
    let missing = || ApiError::not_found("no signed checkpoint covers this event yet");
    let checkpoint = checkpoint.ok_or_else(missing)?;
    let proof = tree
        .and_then(|t| t.prefix(checkpoint.tree_size))
        .and_then(|t| t.inclusion_proof(log_index))
        .ok_or_else(missing)?;
    Ok(Json(ProofView {
        device_id: q.device,
        seq: q.seq,
        hash,
        log_index,
        checkpoint,
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// Self-contained JSON-lines export of a tenant's audit trail: events with their chain hashes,
/// device batch signatures and device public keys, the latest signed checkpoint and an
/// inclusion proof per event. Check it offline with `sase-audit verify`.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/audit/export", params(("tenant_id" = String, Path, description = "tenant id"), ExportQuery),
    responses((status = 200, description = "JSON lines (application/x-ndjson)")))]
pub async fn export_audit(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    let body = crate::audit_log::export(
        &state,
        &tenant_id,
        &crate::audit_log::ExportFilter {
            device_id: q.device,
            from_ms: q.from_ms,
            to_ms: q.to_ms,
        },
    )
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Newest alerts first, within the caller's scope.
#[utoipa::path(get, path = "/api/alerts", responses((status = 200, body = Vec<Alert>)))]
pub async fn list_alerts(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<Json<Vec<Alert>>, ApiError> {
    rbac::authorize_own(&admin, Permission::AlertsRead)?;
    let visible = rbac::visible_tenants(&state, &admin, Permission::AlertsRead, None).await?;
    // Alerts about no tenant (e.g. an unknown client on the channel) belong to the operator of
    // the control plane: the default MSP.
    let operator =
        matches!(&admin.scope, Scope::Msp { msp_id } if msp_id == crate::store::DEFAULT_MSP);
    Ok(Json(state.store.alerts_in(&visible, operator, 500).await?))
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Object)))]
pub async fn healthz(
    State(state): State<SharedState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "connected_edges": state.hub.connected().len(),
    })))
}
