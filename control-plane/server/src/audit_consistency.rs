//! Consistency proofs between a tenant's signed checkpoints (RFC 6962 §2.1.2): an auditor who
//! kept an earlier signed tree head asks for the proof that the latest (or any later) signed
//! head's tree extends it, and checks it offline with `sase-audit consistency`. A control
//! plane whose stored log was rewritten cannot produce one, even with its signing key: the
//! earlier root the auditor holds pins every event it covered.

use axum::extract::{Path, Query, State};
use axum::Json;
use sase_model::merkle::SignedTreeHead;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{now_ms, SharedState};
use crate::store::{Store, StoreResult};

/// Parameters of a consistency proof.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ConsistencyQuery {
    /// Size of the earlier tree (the `tree_size` of the signed head the caller holds).
    /// Required; optional here only so that a caller without access is told so first.
    #[serde(default)]
    pub first: Option<u64>,
    /// Size of the later tree: a signed checkpoint's size (default: the latest checkpoint).
    #[serde(default)]
    pub second: Option<u64>,
}

/// A consistency proof with the signed heads it connects.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsistencyView {
    /// Tenant.
    pub tenant_id: String,
    /// Size of the earlier tree.
    pub first: u64,
    /// The control plane's signed head of that size, when it signed one (the caller should
    /// compare its own copy, not trust this one).
    #[schema(value_type = Option<Object>)]
    pub first_checkpoint: Option<SignedTreeHead>,
    /// The later signed head.
    #[schema(value_type = Object)]
    pub second_checkpoint: SignedTreeHead,
    /// The proof: node hashes, hex, in RFC 6962 order.
    pub proof: Vec<String>,
    /// The control plane's public key (base64), for convenience; pin your own copy.
    pub public_key: String,
}

impl Store {
    /// The tenant's signed checkpoint of exactly `size` leaves, if one was signed.
    ///
    /// # Errors
    /// Database failure.
    pub async fn checkpoint_of_size(
        &self,
        tenant_id: &str,
        size: u64,
    ) -> StoreResult<Option<SignedTreeHead>> {
        let row = sqlx::query(
            "SELECT tenant_id, tree_size, root_hash, timestamp_ms, signature FROM audit_checkpoints WHERE tenant_id = $1 AND tree_size = $2",
        )
        .bind(tenant_id)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let size: i64 = r.try_get("tree_size")?;
            Ok(SignedTreeHead {
                tenant_id: r.try_get("tenant_id")?,
                tree_size: u64::try_from(size).unwrap_or(0),
                root_hash: r.try_get("root_hash")?,
                timestamp_ms: r.try_get("timestamp_ms")?,
                signature: r.try_get("signature")?,
            })
        })
        .transpose()
    }
}

/// The consistency proof from the tree of `first` leaves to a later signed checkpoint.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/audit/consistency",
    params(("tenant_id" = String, Path, description = "tenant id"), ConsistencyQuery),
    responses((status = 200, body = ConsistencyView), (status = 400), (status = 404)))]
pub async fn get_consistency(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    let first = q
        .first
        .ok_or_else(|| ApiError::bad_request("first: the size of the earlier tree is required"))?;
    let (latest, tree) = crate::audit_log::checkpoint(&state, &tenant_id, now_ms()).await?;
    let second_checkpoint = match q.second {
        Some(size) => state
            .store
            .checkpoint_of_size(&tenant_id, size)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no signed checkpoint of size {size}")))?,
        None => latest.ok_or_else(|| ApiError::not_found("no signed checkpoint yet"))?,
    };
    if first == 0 || first > second_checkpoint.tree_size {
        return Err(ApiError::bad_request(format!(
            "first: between 1 and the later checkpoint's size ({})",
            second_checkpoint.tree_size
        )));
    }
    // Built over the stored log: if it no longer matches the later head, the proof will not
    // verify, which is the point.
    let proof = tree
        .and_then(|t| t.consistency_proof(first, second_checkpoint.tree_size))
        .ok_or_else(|| {
            ApiError::internal("the stored audit log is shorter than its signed checkpoint")
        })?;
    Ok(Json(ConsistencyView {
        first_checkpoint: state.store.checkpoint_of_size(&tenant_id, first).await?,
        tenant_id,
        first,
        second_checkpoint,
        proof: proof.iter().map(hex::encode).collect(),
        public_key: sase_model::bundle::verifying_key_to_b64(&state.signing_key.verifying_key()),
    }))
}
