//! Policy drafts: a tenant's policy being worked on, stored and validated (with field paths)
//! but not published — compared with the deployed version, dry-run against recorded traffic,
//! then published directly or through a canary rollout, or discarded.
//!
//! `POST /api/tenants/{id}/policy/drafts` saves one (an invalid draft is saved too, with its
//! errors, so work is never lost); `GET …/drafts[/{draft_id}]` reads them with their validation
//! result and the diff against the deployed version; `PUT …/{draft_id}` replaces the content;
//! `POST …/{draft_id}/dry-run` replays recorded requests against it ([`crate::dryrun`]);
//! `POST …/{draft_id}/publish` publishes it (or starts a canary rollout when `canary` is given,
//! [`crate::rollouts`]); `DELETE` discards it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sase_model::Policy;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{new_id, now_ms, SharedState};
use crate::store::StoreError;

/// Most drafts per tenant.
pub const MAX_DRAFTS: usize = 50;

/// A draft to save.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftBody {
    /// The draft policy (JSON).
    #[schema(value_type = Object)]
    pub policy: Value,
    /// What it is for.
    #[serde(default)]
    pub note: String,
}

/// Publishing a draft.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// Roll out through canaries instead of publishing to every edge.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub canary: Option<Value>,
    /// Canary window (seconds).
    #[serde(default)]
    pub window_secs: Option<u64>,
}

/// A draft with its validation and diff.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DraftView {
    /// Id.
    pub id: String,
    /// Note.
    pub note: String,
    /// The draft.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// Whether it is a valid policy.
    pub valid: bool,
    /// Its validation errors (field paths).
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Value>,
    /// The deployed version it is compared with.
    pub deployed_version: Option<u64>,
    /// Changes against the deployed version: `[{path, before, after}]`.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<Value>,
    /// Who saved it last.
    pub updated_by: String,
    /// When (Unix ms).
    pub updated_at_ms: i64,
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::from(StoreError::from(e))
}

fn validate(policy: &Value) -> (bool, Vec<Value>) {
    let text = policy.to_string();
    match Policy::parse_json(&text) {
        Ok(_) => (true, Vec::new()),
        Err(e) => (
            false,
            e.0.iter()
                .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
                .collect(),
        ),
    }
}

async fn view(
    state: &SharedState,
    tenant_id: &str,
    row: &sqlx::any::AnyRow,
) -> Result<DraftView, ApiError> {
    let json: String = row.try_get("policy_json").map_err(db)?;
    let policy: Value = serde_json::from_str(&json).map_err(ApiError::internal)?;
    let (valid, errors) = validate(&policy);
    let deployed = state.store.latest_policy(tenant_id).await?;
    let changes = match &deployed {
        Some(d) => {
            let before: Value = serde_json::from_str(&d.policy_json).map_err(ApiError::internal)?;
            crate::admin_audit::json_diff(&before, &policy)
        }
        None => Vec::new(),
    };
    Ok(DraftView {
        id: row.try_get("id").map_err(db)?,
        note: row.try_get("note").map_err(db)?,
        policy,
        valid,
        errors,
        deployed_version: deployed.map(|d| d.version),
        changes,
        updated_by: row.try_get("updated_by").map_err(db)?,
        updated_at_ms: row.try_get("updated_at_ms").map_err(db)?,
    })
}

async fn load(
    state: &SharedState,
    tenant_id: &str,
    id: &str,
) -> Result<sqlx::any::AnyRow, ApiError> {
    sqlx::query(
        "SELECT id, note, policy_json, updated_by, updated_at_ms FROM policy_drafts WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?
    .ok_or_else(|| ApiError::not_found("no such draft"))
}

fn check_body(body: &DraftBody) -> Result<(), ApiError> {
    if !body.policy.is_object() {
        return Err(ApiError::bad_request("policy: a JSON object"));
    }
    if body.note.chars().count() > 500 {
        return Err(ApiError::bad_request("note: at most 500 characters"));
    }
    if body.policy.to_string().len() > sase_model::policy::MAX_POLICY_BYTES {
        return Err(ApiError::bad_request("policy: too large"));
    }
    Ok(())
}

/// Saves a new draft (valid or not; the answer carries its validation and diff).
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/policy/drafts",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = DraftBody,
    responses((status = 201, body = DraftView), (status = 400)))]
pub async fn create(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<DraftBody>,
) -> Result<(StatusCode, Json<DraftView>), ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    check_body(&body)?;
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM policy_drafts WHERE tenant_id = $1")
        .bind(&tenant_id)
        .fetch_one(state.store.pool())
        .await
        .map_err(db)?
        .try_get("n")
        .map_err(db)?;
    if count as usize >= MAX_DRAFTS {
        return Err(ApiError::bad_request(format!(
            "a tenant keeps at most {MAX_DRAFTS} drafts: discard some"
        )));
    }
    let id = new_id("draft");
    sqlx::query(
        "INSERT INTO policy_drafts (id, tenant_id, note, policy_json, updated_by, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&tenant_id)
    .bind(&body.note)
    .bind(body.policy.to_string())
    .bind(&admin.username)
    .bind(now_ms())
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    let row = load(&state, &tenant_id, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&state, &tenant_id, &row).await?),
    ))
}

/// The tenant's drafts, newest first.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/policy/drafts",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [DraftView])))]
pub async fn list(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<DraftView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let rows = sqlx::query(
        "SELECT id, note, policy_json, updated_by, updated_at_ms FROM policy_drafts WHERE tenant_id = $1 ORDER BY updated_at_ms DESC, id",
    )
    .bind(&tenant_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(view(&state, &tenant_id, r).await?);
    }
    Ok(Json(out))
}

/// One draft.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/policy/drafts/{draft_id}",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("draft_id" = String, Path, description = "draft id")),
    responses((status = 200, body = DraftView), (status = 404)))]
pub async fn get(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
) -> Result<Json<DraftView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let row = load(&state, &tenant_id, &id).await?;
    Ok(Json(view(&state, &tenant_id, &row).await?))
}

/// Replaces a draft's content.
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/policy/drafts/{draft_id}",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("draft_id" = String, Path, description = "draft id")),
    request_body = DraftBody,
    responses((status = 200, body = DraftView), (status = 404)))]
pub async fn update(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
    Json(body): Json<DraftBody>,
) -> Result<Json<DraftView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    check_body(&body)?;
    let result = sqlx::query(
        "UPDATE policy_drafts SET note = $1, policy_json = $2, updated_by = $3, updated_at_ms = $4 WHERE tenant_id = $5 AND id = $6",
    )
    .bind(&body.note)
    .bind(body.policy.to_string())
    .bind(&admin.username)
    .bind(now_ms())
    .bind(&tenant_id)
    .bind(&id)
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    if result.rows_affected() == 0 {
        return Err(ApiError::not_found("no such draft"));
    }
    let row = load(&state, &tenant_id, &id).await?;
    Ok(Json(view(&state, &tenant_id, &row).await?))
}

/// Discards a draft.
#[utoipa::path(delete, path = "/api/tenants/{tenant_id}/policy/drafts/{draft_id}",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("draft_id" = String, Path, description = "draft id")),
    responses((status = 204), (status = 404)))]
pub async fn discard(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let result = sqlx::query("DELETE FROM policy_drafts WHERE tenant_id = $1 AND id = $2")
        .bind(&tenant_id)
        .bind(&id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    if result.rows_affected() == 0 {
        return Err(ApiError::not_found("no such draft"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Replays the last 24 hours of recorded requests against a draft.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/policy/drafts/{draft_id}/dry-run",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("draft_id" = String, Path, description = "draft id")),
    responses((status = 200, body = crate::dryrun::DryRunReport), (status = 404), (status = 422)))]
pub async fn dry_run(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
) -> Result<Json<crate::dryrun::DryRunReport>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let row = load(&state, &tenant_id, &id).await?;
    let json: String = row.try_get("policy_json").map_err(db)?;
    let policy: Value = serde_json::from_str(&json).map_err(ApiError::internal)?;
    crate::dryrun::dry_run(
        State(state),
        admin,
        Path(tenant_id),
        Json(crate::dryrun::DryRunRequest {
            policy,
            hours: None,
        }),
    )
    .await
}

/// Publishes a draft to every edge, or as a canary rollout when `canary` is given; the draft
/// is discarded once published.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/policy/drafts/{draft_id}/publish",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("draft_id" = String, Path, description = "draft id")),
    request_body = PublishBody,
    responses((status = 200, description = "the published version (or the rollout)"), (status = 404), (status = 422)))]
pub async fn publish(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
    body: Option<Json<PublishBody>>,
) -> Result<Json<Value>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let row = load(&state, &tenant_id, &id).await?;
    let json: String = row.try_get("policy_json").map_err(db)?;
    let result = match body.canary {
        Some(canary) => {
            let canary: crate::rollouts::Canary = serde_json::from_value(canary)
                .map_err(|e| ApiError::bad_request(format!("canary: {e}")))?;
            let (_, Json(rollout)) = crate::rollouts::create(
                State(state.clone()),
                admin.clone(),
                Path(tenant_id.clone()),
                Json(crate::rollouts::NewRollout {
                    policy: serde_json::from_str(&json).map_err(ApiError::internal)?,
                    canary,
                    window_secs: body.window_secs,
                }),
            )
            .await?;
            serde_json::json!({"rollout": rollout})
        }
        None => {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            let Json(view) = crate::api::put_policy(
                State(state.clone()),
                admin.clone(),
                Path(tenant_id.clone()),
                headers,
                axum::body::Bytes::from(json),
            )
            .await?;
            serde_json::json!({"policy": view})
        }
    };
    sqlx::query("DELETE FROM policy_drafts WHERE tenant_id = $1 AND id = $2")
        .bind(&tenant_id)
        .bind(&id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    Ok(Json(result))
}
