//! The admin-action trail: every change an admin makes (who, what, when, which MSP and
//! tenant, before/after with a field-level diff), appended to the hash-chained
//! `admin_actions` table. Separate from the devices' audit chains (`audit_events`), which it
//! leaves alone.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::rbac::Principal;
use crate::state::{now_ms, SharedState};
use crate::store::AdminAction;

/// Field-level differences between two JSON values: `[{"path", "before", "after"}]`, paths in
/// dotted/indexed form (`resources[0].routes[1].scopes`), in a stable order.
pub fn json_diff(before: &Value, after: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    diff_into("", before, after, &mut out);
    out
}

fn diff_into(path: &str, before: &Value, after: &Value, out: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_into(
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                diff_into(
                    &format!("{path}[{i}]"),
                    a.get(i).unwrap_or(&Value::Null),
                    b.get(i).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(json!({"path": path, "before": a, "after": b})),
        _ => {}
    }
}

/// Records a refused sign-in of an existing admin (`admin.sign_in_failed`, with why: wrong
/// password, disabled, MFA missing, wrong or locked), so that it reaches the tenant's trail and
/// SIEM as an Authentication failure. Unknown user names are not attributable to a tenant and
/// are only logged. Never fails the caller: a sign-in refusal is answered either way.
pub async fn record_failed_sign_in(
    state: &SharedState,
    admin: &crate::store::AdminRecord,
    why: &str,
) {
    let Ok(role) = admin.role.parse::<crate::rbac::Role>() else {
        return;
    };
    let scope = match (role.is_msp(), &admin.tenant_id) {
        (true, _) => crate::rbac::Scope::Msp {
            msp_id: admin.msp_id.clone(),
        },
        (false, Some(tenant_id)) => crate::rbac::Scope::Customer {
            msp_id: admin.msp_id.clone(),
            tenant_id: tenant_id.clone(),
        },
        (false, None) => return,
    };
    let actor = Principal {
        id: admin.id.clone(),
        username: admin.username.clone(),
        role,
        scope,
        token_scopes: None,
    };
    let tenant = actor.scope.tenant_id().map(str::to_string);
    if let Err(err) = record(
        state,
        &actor,
        "admin.sign_in_failed",
        tenant.as_deref(),
        &admin.id,
        Value::Null,
        json!({"reason": why}),
    )
    .await
    {
        tracing::warn!(?err, "cannot record a failed sign-in");
    }
}

/// Records one admin action.
///
/// # Errors
/// Store failures (the caller answers 500: an action that cannot be recorded is reported).
pub async fn record(
    state: &SharedState,
    actor: &Principal,
    action: &str,
    tenant_id: Option<&str>,
    target: &str,
    before: Value,
    after: Value,
) -> Result<(), ApiError> {
    let changes = json_diff(&before, &after);
    record_with_changes(
        state, actor, action, tenant_id, target, before, after, changes,
    )
    .await
}

/// Records one admin action with changes computed by the caller (when `before` and `after`
/// only name the versions and the diff is over documents too large to repeat in full).
///
/// # Errors
/// Store failures.
#[allow(clippy::too_many_arguments)]
pub async fn record_with_changes(
    state: &SharedState,
    actor: &Principal,
    action: &str,
    tenant_id: Option<&str>,
    target: &str,
    before: Value,
    after: Value,
    changes: Vec<Value>,
) -> Result<(), ApiError> {
    let mut row = AdminAction {
        seq: 0,
        ts_ms: now_ms(),
        actor_id: actor.id.clone(),
        actor: actor.username.clone(),
        actor_role: actor.role.as_str().to_string(),
        msp_id: actor.scope.msp_id().to_string(),
        tenant_id: tenant_id.map(str::to_string),
        action: action.to_string(),
        target: target.to_string(),
        diff: json!({"before": before, "after": after, "changes": changes}),
        prev_hash: String::new(),
        hash: String::new(),
    };
    state.store.append_admin_action(&mut row).await?;
    tracing::info!(actor = %actor.username, action, target, "admin action");
    Ok(())
}

/// Records a policy publication: `before`/`after` name the versions, `changes` is the
/// field-level diff between the two policies (paths under `policy.`), so that a large policy
/// is not stored twice more.
///
/// # Errors
/// Store failures.
pub async fn record_policy_change(
    state: &SharedState,
    actor: &Principal,
    stored: &crate::store::PolicyVersion,
) -> Result<(), ApiError> {
    let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(ApiError::internal);
    let previous = match stored.version.checked_sub(1).filter(|v| *v > 0) {
        Some(v) => state.store.policy_version(&stored.tenant_id, v).await?,
        None => None,
    };
    let (before, old_policy) = match &previous {
        Some(prev) => (json!({"version": prev.version}), parse(&prev.policy_json)?),
        None => (Value::Null, Value::Null),
    };
    let new_policy = parse(&stored.policy_json)?;
    let changes = json_diff(
        &json!({"policy": old_policy}),
        &json!({"policy": new_policy}),
    );
    record_with_changes(
        state,
        actor,
        "policy.update",
        Some(&stored.tenant_id),
        &stored.tenant_id,
        before,
        json!({"version": stored.version}),
        changes,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_added_and_removed_fields() {
        let before = json!({"a": 1, "b": {"c": [1, 2]}, "gone": true});
        let after = json!({"a": 1, "b": {"c": [1, 3, 4]}, "new": "x"});
        assert_eq!(
            json_diff(&before, &after),
            vec![
                json!({"path": "b.c[1]", "before": 2, "after": 3}),
                json!({"path": "b.c[2]", "before": null, "after": 4}),
                json!({"path": "gone", "before": true, "after": null}),
                json!({"path": "new", "before": null, "after": "x"}),
            ]
        );
        assert!(json_diff(&before, &before).is_empty());
    }
}
