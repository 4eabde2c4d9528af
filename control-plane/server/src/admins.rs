//! Admin management within one's scope (create, list, disable, reset MFA), self-service TOTP
//! enrolment, the caller's own view, and the admin-action trail query. Every handler makes
//! one [`crate::rbac`] check.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::admin_audit;
use crate::auth::{self, Admin};
use crate::error::ApiError;
use crate::rbac::{self, Permission, Principal, Role, Scope, Target};
use crate::state::{new_id, now_ms, SharedState};
use crate::store::{AdminAction, AdminRecord};

/// Consecutive wrong TOTP codes at sign-in before MFA sign-in is locked.
pub const MFA_MAX_FAILURES: i64 = 5;
/// How long it stays locked (5 minutes): at most 5 guesses per 5 minutes, about 5e-5 of the
/// code space (3 steps accepted) per hour.
pub const MFA_LOCK_MS: i64 = 5 * 60 * 1000;

/// Issuer shown by authenticator apps.
pub const TOTP_ISSUER: &str = "SASE control plane";

/// An admin as the API shows it (never the password hash or the TOTP seed).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminView {
    /// Admin id.
    pub id: String,
    /// User name.
    pub username: String,
    /// Role.
    pub role: String,
    /// Owning MSP.
    pub msp_id: String,
    /// Customer tenant (customer roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// True once TOTP is confirmed.
    pub mfa_enabled: bool,
    /// True when disabled.
    pub disabled: bool,
    /// When created (Unix ms).
    pub created_at_ms: i64,
}

impl From<&AdminRecord> for AdminView {
    fn from(a: &AdminRecord) -> AdminView {
        AdminView {
            id: a.id.clone(),
            username: a.username.clone(),
            role: a.role.clone(),
            msp_id: a.msp_id.clone(),
            tenant_id: a.tenant_id.clone(),
            mfa_enabled: a.totp_enabled_at_ms.is_some(),
            disabled: a.disabled_at_ms.is_some(),
            created_at_ms: a.created_at_ms,
        }
    }
}

/// The caller: role, place and effective permissions.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// The admin.
    #[serde(flatten)]
    pub admin: AdminView,
    /// What this credential may do (role narrowed by token scopes).
    pub permissions: Vec<String>,
}

/// Request to create an admin.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewAdminRequest {
    /// User name (1-100 printable characters, unique).
    pub username: String,
    /// Initial password (12-1024 characters).
    pub password: String,
    /// `msp_owner`, `msp_engineer`, `customer_admin` or `customer_auditor`; not above the
    /// creator's own role.
    pub role: String,
    /// Customer tenant for customer roles (a customer admin's own tenant by default).
    pub tenant_id: Option<String>,
}

/// TOTP enrolment, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaEnrolment {
    /// The seed, base32.
    pub secret: String,
    /// `otpauth://totp/…` for a QR code.
    pub otpauth_uri: String,
}

/// A TOTP code.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MfaCode {
    /// Six digits.
    pub code: String,
}

/// Admin-action query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ActionsQuery {
    /// Only this customer tenant.
    pub tenant: Option<String>,
    /// Most records (1 to 10000; default 100).
    pub limit: Option<i64>,
}

/// Admin actions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionsPage {
    /// Records.
    pub actions: Vec<AdminAction>,
    /// How many.
    pub count: usize,
}

fn admin_target(a: &AdminRecord) -> Result<Target<'_>, ApiError> {
    let role: Role = a.role.parse()?;
    Ok(match (&a.tenant_id, role.is_msp()) {
        (Some(t), false) => Target::Tenant {
            tenant_id: t,
            msp_id: &a.msp_id,
        },
        _ => Target::Msp(&a.msp_id),
    })
}

/// Loads an admin and authorizes `permission` on it: `404 no such admin` outside the scope.
async fn authorize_admin(
    state: &SharedState,
    principal: &Principal,
    permission: Permission,
    admin_id: &str,
) -> Result<AdminRecord, ApiError> {
    let not_found = || ApiError::not_found("no such admin");
    let target = state.store.admin(admin_id).await?.ok_or_else(not_found)?;
    match rbac::authorize(principal, permission, admin_target(&target)?) {
        Err(rbac::Denied::OutOfScope) => Err(not_found()),
        Err(d) => Err(d.into()),
        Ok(()) => Ok(target),
    }
}

fn role_above_own() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "role_above_own",
        "you cannot act on an admin whose role is above your own",
    )
}

/// The caller.
#[utoipa::path(get, path = "/api/me", responses((status = 200, body = MeView)))]
pub async fn me(State(state): State<SharedState>, admin: Admin) -> Result<Json<MeView>, ApiError> {
    let record = state
        .store
        .admin(&admin.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("credential is not valid"))?;
    Ok(Json(MeView {
        admin: AdminView::from(&record),
        permissions: admin
            .effective_permissions()
            .into_iter()
            .map(|p| p.as_str().to_string())
            .collect(),
    }))
}

/// Lists the admins in the caller's scope (an MSP: its own and its customers'; a customer
/// admin: its tenant's).
#[utoipa::path(get, path = "/api/admins", responses((status = 200, body = Vec<AdminView>)))]
pub async fn list_admins(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<Json<Vec<AdminView>>, ApiError> {
    rbac::authorize_own(&admin, Permission::AdminsRead)?;
    let rows = state
        .store
        .admins_in(admin.scope.msp_id(), admin.scope.tenant_id())
        .await?;
    Ok(Json(rows.iter().map(AdminView::from).collect()))
}

/// Creates an admin within the caller's scope, with a role not above the caller's.
#[utoipa::path(post, path = "/api/admins", request_body = NewAdminRequest,
    responses((status = 201, body = AdminView), (status = 403, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_admin(
    State(state): State<SharedState>,
    admin: Admin,
    Json(req): Json<NewAdminRequest>,
) -> Result<(StatusCode, Json<AdminView>), ApiError> {
    let role: Role = req.role.parse()?;
    if role > admin.role {
        return Err(role_above_own());
    }
    // Where the new admin goes: the caller's MSP for MSP roles, a customer tenant otherwise.
    let (msp_id, tenant_id) = if role.is_msp() {
        if req.tenant_id.is_some() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "tenant_not_allowed",
                "MSP roles belong to the MSP, not to a tenant",
            ));
        }
        let msp = admin.scope.msp_id().to_string();
        rbac::authorize(&admin, Permission::AdminsManage, Target::Msp(&msp))?;
        (msp, None)
    } else {
        let tenant_id = match (&req.tenant_id, &admin.scope) {
            (Some(t), _) => t.clone(),
            (None, Scope::Customer { tenant_id, .. }) => tenant_id.clone(),
            (None, Scope::Msp { .. }) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "tenant_required",
                    "customer roles need a tenant_id",
                ))
            }
        };
        let (_, msp) =
            rbac::authorize_tenant(&state, &admin, Permission::AdminsManage, &tenant_id).await?;
        (msp, Some(tenant_id))
    };
    let username = req.username.trim().to_string();
    if username.is_empty()
        || username.chars().count() > 100
        || username.chars().any(char::is_control)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "username must be 1-100 printable characters",
        ));
    }
    if !(12..=1024).contains(&req.password.chars().count()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "password_weak",
            "password must be 12-1024 characters",
        ));
    }
    let password = req.password.clone();
    let password_hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)??;
    let record = AdminRecord {
        id: new_id("adm"),
        username,
        password_hash,
        role: role.as_str().to_string(),
        msp_id,
        tenant_id,
        created_by: Some(admin.id.clone()),
        created_at_ms: now_ms(),
        disabled_at_ms: None,
        totp_secret: None,
        totp_enabled_at_ms: None,
        totp_last_step: None,
    };
    if state
        .store
        .admin_record_by_username(&record.username)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict("an admin with this user name exists"));
    }
    state
        .store
        .insert_admin(&record)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Db(sqlx::Error::Database(db))
                if db.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                ApiError::conflict("an admin with this user name exists")
            }
            e => e.into(),
        })?;
    let view = AdminView::from(&record);
    admin_audit::record(
        &state,
        &admin,
        "admin.create",
        record.tenant_id.as_deref(),
        &record.id,
        serde_json::Value::Null,
        json!(view),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Disables an admin in the caller's scope (role not above the caller's, never oneself) and
/// ends all of its sessions and tokens.
#[utoipa::path(post, path = "/api/admins/{admin_id}/disable",
    params(("admin_id" = String, Path, description = "admin id")),
    responses((status = 200, body = AdminView), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn disable_admin(
    State(state): State<SharedState>,
    admin: Admin,
    Path(admin_id): Path<String>,
) -> Result<Json<AdminView>, ApiError> {
    let target = authorize_admin(&state, &admin, Permission::AdminsManage, &admin_id).await?;
    if target.role.parse::<Role>()? > admin.role {
        return Err(role_above_own());
    }
    if target.id == admin.id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_disable_self",
            "you cannot disable yourself",
        ));
    }
    let before = AdminView::from(&target);
    let now = now_ms();
    state.store.disable_admin(&target.id, now).await?;
    let mut after_record = target.clone();
    after_record.disabled_at_ms = after_record.disabled_at_ms.or(Some(now));
    let after = AdminView::from(&after_record);
    admin_audit::record(
        &state,
        &admin,
        "admin.disable",
        target.tenant_id.as_deref(),
        &target.id,
        json!(before),
        json!(after),
    )
    .await?;
    Ok(Json(after))
}

/// Resets an admin's MFA (the admin enrols again). Needs a role above the target's, or MSP
/// owner for another MSP owner.
#[utoipa::path(delete, path = "/api/admins/{admin_id}/mfa",
    params(("admin_id" = String, Path, description = "admin id")),
    responses((status = 200, body = AdminView), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn reset_mfa(
    State(state): State<SharedState>,
    admin: Admin,
    Path(admin_id): Path<String>,
) -> Result<Json<AdminView>, ApiError> {
    let target = authorize_admin(&state, &admin, Permission::AdminsManage, &admin_id).await?;
    let target_role: Role = target.role.parse()?;
    let higher = admin.role > target_role
        || (admin.role == Role::MspOwner && target_role == Role::MspOwner && target.id != admin.id);
    if !higher {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mfa_reset_needs_higher_role",
            "MFA is reset by a role above the admin's own",
        ));
    }
    let before = AdminView::from(&target);
    state.store.set_totp(&target.id, None, None, None).await?;
    state.store.mfa_clear_failures(&target.id).await?;
    // Sessions signed in with the old factor end (crate::sessions).
    crate::sessions::revoke_sessions(&state, &target.id, None).await?;
    let mut after_record = target.clone();
    after_record.totp_secret = None;
    after_record.totp_enabled_at_ms = None;
    let after = AdminView::from(&after_record);
    admin_audit::record(
        &state,
        &admin,
        "admin.mfa_reset",
        target.tenant_id.as_deref(),
        &target.id,
        json!(before),
        json!(after),
    )
    .await?;
    Ok(Json(after))
}

/// Starts TOTP enrolment for the caller: a new seed, shown once as an `otpauth://` URI. MFA is
/// enforced once a first code is confirmed (`POST /api/me/mfa/confirm`).
#[utoipa::path(post, path = "/api/me/mfa",
    responses((status = 201, body = MfaEnrolment), (status = 409, body = crate::error::ErrorBody)))]
pub async fn enrol_mfa(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<(StatusCode, Json<MfaEnrolment>), ApiError> {
    let record = state
        .store
        .admin(&admin.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("credential is not valid"))?;
    if record.totp_enabled_at_ms.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "mfa_already_enrolled",
            "MFA is already enrolled; a higher role can reset it",
        ));
    }
    let secret = crate::totp::new_secret();
    state
        .store
        .set_totp(&admin.id, Some(&secret), None, None)
        .await?;
    admin_audit::record(
        &state,
        &admin,
        "admin.mfa_enrol",
        admin.scope.tenant_id(),
        &admin.id,
        json!({"mfa": "none"}),
        json!({"mfa": "pending"}),
    )
    .await?;
    let otpauth_uri = crate::totp::otpauth_uri(TOTP_ISSUER, &admin.username, &secret);
    Ok((
        StatusCode::CREATED,
        Json(MfaEnrolment {
            secret,
            otpauth_uri,
        }),
    ))
}

fn mfa_invalid(status: StatusCode) -> ApiError {
    ApiError::new(status, "mfa_invalid", "the MFA code is not valid")
}

/// Confirms TOTP enrolment with a first code; from then on sign-in needs a code.
#[utoipa::path(post, path = "/api/me/mfa/confirm", request_body = MfaCode,
    responses((status = 204), (status = 422, body = crate::error::ErrorBody)))]
pub async fn confirm_mfa(
    State(state): State<SharedState>,
    admin: Admin,
    headers: axum::http::HeaderMap,
    Json(req): Json<MfaCode>,
) -> Result<StatusCode, ApiError> {
    let record = state
        .store
        .admin(&admin.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("credential is not valid"))?;
    let (Some(secret), None) = (&record.totp_secret, record.totp_enabled_at_ms) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "mfa_not_pending",
            "start enrolment first (POST /api/me/mfa)",
        ));
    };
    let now = now_ms();
    let step = crate::totp::verify(secret, &req.code, now)
        .ok_or_else(|| mfa_invalid(StatusCode::UNPROCESSABLE_ENTITY))?;
    let step = i64::try_from(step).map_err(ApiError::internal)?;
    state
        .store
        .set_totp(&admin.id, Some(secret), Some(now), Some(step))
        .await?;
    // Other sessions were signed in without the new factor: they end (crate::sessions).
    let keep = crate::sessions::current_credential_hash(&headers);
    crate::sessions::revoke_sessions(&state, &admin.id, keep.as_deref()).await?;
    admin_audit::record(
        &state,
        &admin,
        "admin.mfa_confirm",
        admin.scope.tenant_id(),
        &admin.id,
        json!({"mfa": "pending"}),
        json!({"mfa": "enabled"}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The sign-in checks after a correct password: the admin is not disabled and, when MFA is
/// enrolled, a fresh valid code was given (`401 mfa_required` without one, `401 mfa_invalid`
/// for a wrong or reused one, `429 mfa_locked` for [`MFA_LOCK_MS`] after
/// [`MFA_MAX_FAILURES`] wrong ones in a row).
///
/// # Errors
/// As above.
pub async fn check_sign_in(
    state: &SharedState,
    admin: &AdminRecord,
    code: Option<&str>,
) -> Result<(), ApiError> {
    if admin.disabled_at_ms.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_disabled",
            "this admin has been disabled",
        ));
    }
    let (Some(secret), Some(_)) = (&admin.totp_secret, admin.totp_enabled_at_ms) else {
        return Ok(());
    };
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "mfa_required",
            "this admin signs in with a TOTP code: send `totp`",
        ));
    };
    let now = now_ms();
    let locked = || {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "mfa_locked",
            "too many wrong MFA codes; try again later",
        )
    };
    if state
        .store
        .mfa_locked_until(&admin.id)
        .await?
        .is_some_and(|until| until > now)
    {
        return Err(locked());
    }
    let accepted = match crate::totp::verify(secret, code, now) {
        Some(step) => {
            let step = i64::try_from(step).map_err(ApiError::internal)?;
            state.store.use_totp_step(&admin.id, step).await?
        }
        None => false,
    };
    if !accepted {
        if state
            .store
            .mfa_failure(&admin.id, MFA_MAX_FAILURES, now + MFA_LOCK_MS)
            .await?
        {
            tracing::warn!(admin = %admin.username, "MFA sign-in locked after wrong codes");
            return Err(locked());
        }
        return Err(mfa_invalid(StatusCode::UNAUTHORIZED));
    }
    state.store.mfa_clear_failures(&admin.id).await?;
    Ok(())
}

/// The admin-action trail in the caller's scope, newest first.
#[utoipa::path(get, path = "/api/admin-actions", params(ActionsQuery),
    responses((status = 200, body = ActionsPage)))]
pub async fn list_actions(
    State(state): State<SharedState>,
    admin: Admin,
    Query(q): Query<ActionsQuery>,
) -> Result<Json<ActionsPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let tenant = match (&q.tenant, admin.scope.tenant_id()) {
        (Some(t), _) => {
            rbac::authorize_tenant(&state, &admin, Permission::AdminActionsRead, t).await?;
            Some(t.clone())
        }
        (None, own) => {
            rbac::authorize_own(&admin, Permission::AdminActionsRead)?;
            own.map(str::to_string)
        }
    };
    let actions = state
        .store
        .admin_actions(admin.scope.msp_id(), tenant.as_deref(), limit)
        .await?;
    Ok(Json(ActionsPage {
        count: actions.len(),
        actions,
    }))
}
