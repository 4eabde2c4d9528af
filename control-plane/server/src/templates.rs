//! MSP policy templates: an MSP writes a policy once (issuers, groups, resources, WAF
//! defaults…); each customer tenant may inherit it with explicit overrides, as a JSON merge
//! patch (RFC 7396) over the template. The tenant's effective policy — template ⊕ overrides —
//! is validated like any policy and published as a signed version of the tenant's own.
//!
//! * `POST /api/policy-templates`, `PUT …/{id}`, `GET …` — MSP admins (`policy.write` on their
//!   MSP) write templates; everyone in the MSP with `policy.read` can list them.
//! * `PUT /api/tenants/{id}/policy/source` `{template_id, overrides}` — the tenant inherits;
//!   `GET` shows template, overrides and versions; `DELETE` stops inheriting (the current
//!   policy stays). A direct `PUT …/policy` also stops inheriting.
//! * Changing a template republishes every inheriting tenant (each through its overrides). If
//!   the result would be invalid for any tenant the change is refused (422, naming the tenants)
//!   and nothing changes.
//!
//! Merge patch semantics: objects merge key by key, `null` removes a key, anything else
//! (arrays included) replaces. Written here (about 15 lines) rather than taken from a crate:
//! the project needs only this function.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sase_model::Policy;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission, Target};
use crate::state::{new_id, now_ms, SharedState};
use crate::store::StoreError;

/// RFC 7396 JSON merge patch: applies `patch` to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(object) = target {
        for (key, value) in patch {
            if value.is_null() {
                object.remove(key);
            } else {
                merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A template to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Name (1-100 characters), unique in the MSP.
    pub name: String,
    /// The template: a policy document, possibly partial (completed by the overrides).
    #[schema(value_type = Object)]
    pub policy: Value,
}

/// A template as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version (1, 2, … on each change).
    pub version: u64,
    /// The template document.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// Tenants inheriting it.
    pub tenants: Vec<String>,
    /// Last change (Unix ms).
    pub updated_at_ms: i64,
}

/// A tenant's inheritance.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    /// The template.
    pub template_id: String,
    /// Overrides: a JSON merge patch over the template (default: none).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub overrides: Value,
}

/// Where a tenant's policy comes from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    /// The template.
    pub template_id: String,
    /// Its name.
    pub template_name: String,
    /// The template version the current policy was built from.
    pub template_version: u64,
    /// The overrides.
    #[schema(value_type = Object)]
    pub overrides: Value,
    /// The tenant's policy version built from them.
    pub policy_version: u64,
}

struct TemplateRow {
    id: String,
    msp_id: String,
    name: String,
    version: u64,
    policy: Value,
    updated_at_ms: i64,
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::from(StoreError::from(e))
}

async fn template(state: &SharedState, id: &str) -> Result<Option<TemplateRow>, ApiError> {
    let row = sqlx::query(
        "SELECT id, msp_id, name, version, policy_json, updated_at_ms FROM policy_templates WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?;
    row.map(|r| {
        let json: String = r.try_get("policy_json").map_err(db)?;
        let version: i64 = r.try_get("version").map_err(db)?;
        Ok(TemplateRow {
            id: r.try_get("id").map_err(db)?,
            msp_id: r.try_get("msp_id").map_err(db)?,
            name: r.try_get("name").map_err(db)?,
            version: u64::try_from(version).unwrap_or(0),
            policy: serde_json::from_str(&json).map_err(ApiError::internal)?,
            updated_at_ms: r.try_get("updated_at_ms").map_err(db)?,
        })
    })
    .transpose()
}

/// Tenants inheriting a template, with their overrides.
async fn inheritors(
    state: &SharedState,
    template_id: &str,
) -> Result<Vec<(String, Value)>, ApiError> {
    let rows = sqlx::query(
        "SELECT tenant_id, overrides_json FROM policy_sources WHERE template_id = $1 ORDER BY tenant_id",
    )
    .bind(template_id)
    .fetch_all(state.store.pool())
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let json: String = r.try_get("overrides_json").map_err(db)?;
            Ok((
                r.try_get("tenant_id").map_err(db)?,
                serde_json::from_str(&json).map_err(ApiError::internal)?,
            ))
        })
        .collect()
}

/// The effective policy of template ⊕ overrides, validated as the edge will see it.
async fn effective(
    state: &SharedState,
    template: &Value,
    overrides: &Value,
) -> Result<Policy, ApiError> {
    let mut merged = template.clone();
    merge_patch(&mut merged, overrides);
    let text = serde_json::to_string(&merged).map_err(ApiError::internal)?;
    let policy = Policy::parse_json(&text).map_err(|e| {
        ApiError::invalid(
            "policy_invalid",
            "the template with these overrides is not a valid policy; see `errors`",
            e.0,
        )
    })?;
    crate::api::check_waf_loads(state, &policy).await?;
    sase_gateway::check_contracts(&policy).map_err(|errors| {
        ApiError::invalid(
            "contract_invalid",
            "an API contract (OpenAPI document) does not compile; see `errors`",
            errors,
        )
    })?;
    Ok(policy)
}

/// Publishes a tenant's policy built from a template and pushes it to its edges.
async fn publish(
    state: &SharedState,
    tenant_id: &str,
    policy: Policy,
    author: &str,
) -> Result<u64, ApiError> {
    let stored = crate::api::publish_policy(state, tenant_id, policy, author).await?;
    crate::rollouts::supersede(state, tenant_id, stored.version).await?;
    crate::fanout::push_policy(state, tenant_id).await;
    crate::fanout::announce(
        state,
        crate::fanout::Change::Policy {
            tenant_id: tenant_id.to_string(),
        },
    )
    .await;
    Ok(stored.version)
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name: 1-100 printable characters"));
    }
    Ok(name.to_string())
}

fn msp_of(admin: &Admin) -> Result<String, ApiError> {
    rbac::authorize(
        admin,
        Permission::PolicyWrite,
        Target::Msp(admin.scope.msp_id()),
    )
    .map_err(ApiError::from)?;
    Ok(admin.scope.msp_id().to_string())
}

async fn view(state: &SharedState, t: &TemplateRow) -> Result<TemplateView, ApiError> {
    Ok(TemplateView {
        id: t.id.clone(),
        name: t.name.clone(),
        version: t.version,
        policy: t.policy.clone(),
        tenants: inheritors(state, &t.id)
            .await?
            .into_iter()
            .map(|(tenant, _)| tenant)
            .collect(),
        updated_at_ms: t.updated_at_ms,
    })
}

/// Creates an MSP policy template.
#[utoipa::path(post, path = "/api/policy-templates", request_body = TemplateBody,
    responses((status = 201, body = TemplateView), (status = 400), (status = 409)))]
pub async fn create(
    State(state): State<SharedState>,
    admin: Admin,
    Json(body): Json<TemplateBody>,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let msp_id = msp_of(&admin)?;
    let name = check_name(&body.name)?;
    if !body.policy.is_object() {
        return Err(ApiError::bad_request("policy: a JSON object"));
    }
    let row = TemplateRow {
        id: new_id("tpl"),
        msp_id: msp_id.clone(),
        name,
        version: 1,
        policy: body.policy,
        updated_at_ms: now_ms(),
    };
    let inserted = sqlx::query(
        "INSERT INTO policy_templates (id, msp_id, name, version, policy_json, updated_at_ms) VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&row.id)
    .bind(&msp_id)
    .bind(&row.name)
    .bind(row.policy.to_string())
    .bind(row.updated_at_ms)
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    if inserted.rows_affected() != 1 {
        return Err(ApiError::conflict(
            "the MSP already has a template of that name",
        ));
    }
    crate::admin_audit::record(
        &state,
        &admin,
        "policy_template.create",
        None,
        &row.id,
        Value::Null,
        serde_json::json!({"name": row.name, "policy": row.policy}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &row).await?)))
}

/// Lists the caller's MSP's templates.
#[utoipa::path(get, path = "/api/policy-templates",
    responses((status = 200, body = [TemplateView])))]
pub async fn list(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<Json<Vec<TemplateView>>, ApiError> {
    rbac::authorize_own(&admin, Permission::PolicyRead)?;
    let ids: Vec<String> =
        sqlx::query("SELECT id FROM policy_templates WHERE msp_id = $1 ORDER BY name")
            .bind(admin.scope.msp_id())
            .fetch_all(state.store.pool())
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(db)?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(t) = template(&state, &id).await? {
            let mut v = view(&state, &t).await?;
            // A customer sees only whether its own tenant inherits.
            if let Some(own) = admin.scope.tenant_id() {
                v.tenants.retain(|t| t == own);
            }
            out.push(v);
        }
    }
    Ok(Json(out))
}

/// Replaces a template; every inheriting tenant is republished through its overrides — or,
/// when that would be invalid for any of them, nothing changes (422).
#[utoipa::path(put, path = "/api/policy-templates/{template_id}",
    params(("template_id" = String, Path, description = "template id")),
    request_body = TemplateBody,
    responses((status = 200, body = TemplateView), (status = 404), (status = 422)))]
pub async fn update(
    State(state): State<SharedState>,
    admin: Admin,
    Path(template_id): Path<String>,
    Json(body): Json<TemplateBody>,
) -> Result<Json<TemplateView>, ApiError> {
    let msp_id = msp_of(&admin)?;
    let name = check_name(&body.name)?;
    let old = template(&state, &template_id)
        .await?
        .filter(|t| t.msp_id == msp_id)
        .ok_or_else(|| ApiError::not_found("no such template"))?;
    if !body.policy.is_object() {
        return Err(ApiError::bad_request("policy: a JSON object"));
    }
    let taken = sqlx::query(
        "SELECT 1 AS one FROM policy_templates WHERE msp_id = $1 AND name = $2 AND id <> $3",
    )
    .bind(&msp_id)
    .bind(&name)
    .bind(&template_id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?;
    if taken.is_some() {
        return Err(ApiError::conflict(
            "the MSP already has another template of that name",
        ));
    }
    // Every inheriting tenant's new effective policy must be valid before anything changes.
    let mut planned = Vec::new();
    let mut failing = Vec::new();
    for (tenant, overrides) in inheritors(&state, &template_id).await? {
        match effective(&state, &body.policy, &overrides).await {
            Ok(policy) => planned.push((tenant, policy)),
            Err(_) => failing.push(tenant),
        }
    }
    if !failing.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_breaks_tenants",
            format!(
                "with this change the policy of these tenants would not be valid (nothing was changed): {}",
                failing.join(", ")
            ),
        ));
    }
    let version = old.version + 1;
    let now = now_ms();
    sqlx::query(
        "UPDATE policy_templates SET name = $1, version = $2, policy_json = $3, updated_at_ms = $4 WHERE id = $5",
    )
    .bind(&name)
    .bind(i64::try_from(version).unwrap_or(i64::MAX))
    .bind(body.policy.to_string())
    .bind(now)
    .bind(&template_id)
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    for (tenant, policy) in planned {
        let published = publish(
            &state,
            &tenant,
            policy,
            &format!("template {name} v{version} ({})", admin.username),
        )
        .await?;
        sqlx::query(
            "UPDATE policy_sources SET template_version = $1, policy_version = $2 WHERE tenant_id = $3",
        )
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(i64::try_from(published).unwrap_or(i64::MAX))
        .bind(&tenant)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    }
    crate::admin_audit::record(
        &state,
        &admin,
        "policy_template.update",
        None,
        &template_id,
        serde_json::json!({"name": old.name, "policy": old.policy}),
        serde_json::json!({"name": name, "policy": body.policy}),
    )
    .await?;
    let new = template(&state, &template_id)
        .await?
        .ok_or_else(|| ApiError::internal("template vanished"))?;
    Ok(Json(view(&state, &new).await?))
}

async fn source_view(state: &SharedState, tenant_id: &str) -> Result<Option<SourceView>, ApiError> {
    let row = sqlx::query(
        "SELECT template_id, overrides_json, template_version, policy_version FROM policy_sources WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(db)?;
    let Some(r) = row else {
        return Ok(None);
    };
    let template_id: String = r.try_get("template_id").map_err(db)?;
    let overrides: String = r.try_get("overrides_json").map_err(db)?;
    let template_version: i64 = r.try_get("template_version").map_err(db)?;
    let policy_version: i64 = r.try_get("policy_version").map_err(db)?;
    let name = template(state, &template_id)
        .await?
        .map(|t| t.name)
        .unwrap_or_default();
    Ok(Some(SourceView {
        template_id,
        template_name: name,
        template_version: u64::try_from(template_version).unwrap_or(0),
        overrides: serde_json::from_str(&overrides).map_err(ApiError::internal)?,
        policy_version: u64::try_from(policy_version).unwrap_or(0),
    }))
}

/// Makes the tenant inherit a template of its MSP, with overrides; publishes the result.
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/policy/source",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = SourceBody,
    responses((status = 200, body = SourceView), (status = 404), (status = 422)))]
pub async fn put_source(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<SourceBody>,
) -> Result<Json<SourceView>, ApiError> {
    let (_, msp_id) =
        rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let t = template(&state, &body.template_id)
        .await?
        .filter(|t| t.msp_id == msp_id)
        .ok_or_else(|| ApiError::not_found("no such template in this tenant's MSP"))?;
    let overrides = if body.overrides.is_null() {
        Value::Object(Map::new())
    } else {
        body.overrides.clone()
    };
    if !overrides.is_object() {
        return Err(ApiError::bad_request(
            "overrides: a JSON object (a merge patch)",
        ));
    }
    let policy = effective(&state, &t.policy, &overrides).await?;
    let published = publish(
        &state,
        &tenant_id,
        policy,
        &format!("template {} v{} ({})", t.name, t.version, admin.username),
    )
    .await?;
    sqlx::query(
        "INSERT INTO policy_sources (tenant_id, template_id, overrides_json, template_version, policy_version) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id) DO UPDATE SET template_id = excluded.template_id, overrides_json = excluded.overrides_json, \
         template_version = excluded.template_version, policy_version = excluded.policy_version",
    )
    .bind(&tenant_id)
    .bind(&t.id)
    .bind(overrides.to_string())
    .bind(i64::try_from(t.version).unwrap_or(i64::MAX))
    .bind(i64::try_from(published).unwrap_or(i64::MAX))
    .execute(state.store.pool())
    .await
    .map_err(db)?;
    crate::admin_audit::record(
        &state,
        &admin,
        "policy.source_set",
        Some(&tenant_id),
        &tenant_id,
        Value::Null,
        serde_json::json!({"template_id": t.id, "overrides": overrides, "policy_version": published}),
    )
    .await?;
    source_view(&state, &tenant_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::internal("source vanished"))
}

/// Where the tenant's policy comes from (404 when it is the tenant's own).
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/policy/source",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = SourceView), (status = 404)))]
pub async fn get_source(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<SourceView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    source_view(&state, &tenant_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("the tenant's policy is its own (no template)"))
}

/// Stops inheriting (the current policy stays, as the tenant's own).
#[utoipa::path(delete, path = "/api/tenants/{tenant_id}/policy/source",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 204), (status = 404)))]
pub async fn delete_source(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    if !detach(&state, &tenant_id).await? {
        return Err(ApiError::not_found(
            "the tenant's policy is its own (no template)",
        ));
    }
    crate::admin_audit::record(
        &state,
        &admin,
        "policy.source_detach",
        Some(&tenant_id),
        &tenant_id,
        Value::Null,
        Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends a tenant's inheritance (a direct policy publish does this); whether it had one.
///
/// # Errors
/// Store failures.
pub async fn detach(state: &SharedState, tenant_id: &str) -> Result<bool, ApiError> {
    let result = sqlx::query("DELETE FROM policy_sources WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(state.store.pool())
        .await
        .map_err(db)?;
    Ok(result.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // RFC 7396 §3 example.
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        // Arrays are replaced, scalars replace objects, objects replace scalars.
        let mut t = json!({"list": [1, 2], "x": {"y": 1}, "s": 1});
        merge_patch(&mut t, &json!({"list": [3], "x": 2, "s": {"k": true}}));
        assert_eq!(t, json!({"list": [3], "x": 2, "s": {"k": true}}));
    }
}
