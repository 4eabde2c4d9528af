//! Dry runs of a draft policy: the tenant's recorded HTTP requests of the last hours are
//! replayed against the draft ([`sase_gateway::replay`]) and every decision that would change
//! is reported — requests the draft would newly refuse, and refused requests it would newly
//! allow — before the draft is rolled out.
//!
//! What is replayed: route matching (by resource name, method and path; requests that matched
//! no route are tried against every resource), public flags, scope and group requirements,
//! with the scopes and groups the caller's token granted as the edge recorded them. Not
//! replayed: the token's own validity, the WAF, rate limits and contracts — requests refused
//! for those reasons are counted as `not_replayable` and left out.

use axum::extract::{Path, State};
use axum::Json;
use sase_gateway::replay::{replay, Recorded, Replayed};
use sase_gateway::CompiledPolicy;
use sase_model::audit::{Decision, EventKind};
use sase_model::{BundlePayload, Policy, Reason};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{now_ms, SharedState};
use crate::store::AuditFilter;

/// Most recorded requests one dry run replays.
pub const MAX_REPLAYED: i64 = 200_000;

/// Most changed decisions listed per kind (all are counted).
pub const MAX_LISTED: usize = 1_000;

/// A dry run to make.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// The draft policy (JSON, as for `PUT …/policy`).
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
    /// How many hours of recorded requests to replay (1-720, default 24).
    #[serde(default)]
    pub hours: Option<u32>,
}

/// One request whose decision would change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChangedDecision {
    /// Reference id of the recorded request.
    pub reference: String,
    /// When (Unix ms).
    pub ts_ms: i64,
    /// Device that served it.
    pub device_id: String,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Caller identity, if any.
    pub identity: Option<String>,
    /// Decision recorded: `allowed` or the refusal reason.
    pub before: String,
    /// The draft's: `allowed` or the refusal reason.
    pub after: String,
    /// Route that decided under the draft (`""` when none matched).
    pub route: String,
}

/// What the dry run found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DryRunReport {
    /// Start of the replayed window (Unix ms).
    pub from_ms: i64,
    /// End (Unix ms).
    pub to_ms: i64,
    /// Recorded HTTP requests replayed.
    pub replayed: u64,
    /// Requests refused for reasons a draft does not change (WAF, limits, token validity…).
    pub not_replayable: u64,
    /// Replayed with the same outcome.
    pub unchanged: u64,
    /// How many the draft would newly refuse.
    pub newly_refused_count: u64,
    /// How many it would newly allow.
    pub newly_allowed_count: u64,
    /// The newly refused ones (at most [`MAX_LISTED`]).
    pub newly_refused: Vec<ChangedDecision>,
    /// The newly allowed ones (at most [`MAX_LISTED`]).
    pub newly_allowed: Vec<ChangedDecision>,
    /// The window held more requests than one dry run replays.
    pub truncated: bool,
}

/// Refusals a draft can change.
fn replayable_refusal(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::RouteNotFound | Reason::TokenMissing | Reason::ScopeMissing | Reason::GroupMissing
    )
}

fn recorded<'a>(
    resource: &'a str,
    http: &'a sase_model::audit::HttpDetails,
    identity: Option<&'a str>,
) -> Recorded<'a> {
    Recorded {
        resource,
        method: &http.method,
        path: &http.path,
        identity,
        scopes: &http.scopes,
        groups: &http.groups,
    }
}

fn outcome(r: &Replayed) -> String {
    match r {
        Replayed::Allow { .. } => "allowed".to_string(),
        Replayed::Deny { reason, .. } => reason.as_str().to_string(),
    }
}

/// Replays the last hours of a tenant's recorded requests against a draft policy.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/policy/dry-run",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = DryRunRequest,
    responses((status = 200, body = DryRunReport), (status = 400), (status = 422)))]
pub async fn dry_run(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(req): Json<DryRunRequest>,
) -> Result<Json<DryRunReport>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    let hours = req.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::bad_request("hours: 1-720"));
    }
    let text = serde_json::to_string(&req.policy).map_err(ApiError::internal)?;
    let policy = Policy::parse_json(&text).map_err(|e| {
        ApiError::invalid(
            "policy_invalid",
            "the draft is not valid; see `errors`",
            e.0,
        )
    })?;
    let to_ms = now_ms();
    let from_ms = to_ms - i64::from(hours) * 3_600_000;
    let compiled = CompiledPolicy::compile(&BundlePayload {
        tenant_id: tenant_id.clone(),
        version: 0,
        issued_at_ms: to_ms,
        policy,
    })
    .map_err(|e| ApiError::bad_request(format!("the draft does not compile: {e}")))?;
    let events = state
        .store
        .audit_events(&AuditFilter {
            tenant_id: Some(tenant_id.clone()),
            from_ms: Some(from_ms),
            to_ms: Some(to_ms + 1),
            limit: MAX_REPLAYED + 1,
            ..AuditFilter::default()
        })
        .await?;
    let truncated = events.len() as i64 > MAX_REPLAYED;
    let mut report = DryRunReport {
        from_ms,
        to_ms,
        replayed: 0,
        not_replayable: 0,
        unchanged: 0,
        newly_refused_count: 0,
        newly_allowed_count: 0,
        newly_refused: Vec::new(),
        newly_allowed: Vec::new(),
        truncated,
    };
    for event in events
        .iter()
        .take(usize::try_from(MAX_REPLAYED).unwrap_or(usize::MAX))
    {
        let Some(http) = event
            .http
            .as_ref()
            .filter(|_| event.kind == EventKind::HttpRequest)
        else {
            continue;
        };
        let allowed_before = event.decision == Decision::Allow;
        if !allowed_before && !replayable_refusal(event.reason) {
            report.not_replayable += 1;
            continue;
        }
        let after = if http.resource.is_empty() {
            // Matched no route when recorded: try the draft's resources.
            let names: Vec<String> = compiled.resource_names().map(str::to_string).collect();
            names
                .iter()
                .map(|name| replay(&compiled, &recorded(name, http, event.identity.as_deref())))
                .find(|r| {
                    !matches!(
                        r,
                        Replayed::Deny {
                            reason: Reason::RouteNotFound,
                            ..
                        }
                    )
                })
                .unwrap_or(Replayed::Deny {
                    reason: Reason::RouteNotFound,
                    route: String::new(),
                })
        } else {
            replay(
                &compiled,
                &recorded(&http.resource, http, event.identity.as_deref()),
            )
        };
        report.replayed += 1;
        let allowed_after = matches!(after, Replayed::Allow { .. });
        let change = |before: String| ChangedDecision {
            reference: event.reference.clone(),
            ts_ms: event.ts_ms,
            device_id: event.device_id.clone(),
            method: http.method.clone(),
            path: http.path.clone(),
            identity: event.identity.clone(),
            before,
            after: outcome(&after),
            route: match &after {
                Replayed::Allow { route } | Replayed::Deny { route, .. } => route.clone(),
            },
        };
        match (allowed_before, allowed_after) {
            (true, false) => {
                report.newly_refused_count += 1;
                if report.newly_refused.len() < MAX_LISTED {
                    report.newly_refused.push(change("allowed".to_string()));
                }
            }
            (false, true) => {
                report.newly_allowed_count += 1;
                if report.newly_allowed.len() < MAX_LISTED {
                    report
                        .newly_allowed
                        .push(change(event.reason.as_str().to_string()));
                }
            }
            _ => report.unchanged += 1,
        }
    }
    Ok(Json(report))
}
