//! Tamper evidence on the control plane: device keys for batch signatures, signed checkpoints
//! over each tenant's Merkle log of stored events, inclusion proofs and the self-contained
//! export checked offline by `sase-audit verify`.
//!
//! Each stored event gets the next leaf position in its tenant's log in the ingest
//! transaction. A checkpoint recomputes the tree over all leaves, first checking that the
//! leaves a previous checkpoint covered still give its signed root (otherwise it refuses to
//! sign, raises `audit_checkpoint_mismatch` and keeps the last good checkpoint as the latest),
//! then signs `(tenant, size, root, now)` with the control plane's Ed25519 key (the key edges
//! pin for policy bundles; the signed bytes carry their own domain string).

use std::time::Duration;

use sase_audit::device_key::DeviceKey;
use sase_model::audit::{ALG_ECDSA_P256_SHA256, ALG_ED25519};
use sase_model::audit_export::{ExportRecord, EXPORT_FORMAT};
use sase_model::merkle::{leaf_hash, parse_hash, MerkleTree, SignedTreeHead};

use crate::error::ApiError;
use crate::state::{now_ms, SharedState};

/// The public key of a device certificate (PEM), in the form batch signatures verify with.
/// `None` for a certificate that does not parse or holds another kind of key.
pub fn device_key_from_cert(cert_pem: &str) -> Option<DeviceKey> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let key = spki.subject_public_key.data.to_vec();
    match alg.as_str() {
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            (curve.as_deref() == Some("1.2.840.10045.3.1.7")).then(|| DeviceKey {
                alg: ALG_ECDSA_P256_SHA256.to_string(),
                public_key: key,
            })
        }
        "1.3.101.112" => Some(DeviceKey {
            alg: ALG_ED25519.to_string(),
            public_key: key,
        }),
        _ => None,
    }
}

/// The tenant's whole log as a tree, checked to be gap-free (`0..n`).
async fn load_tree(state: &SharedState, tenant_id: &str) -> Result<MerkleTree, String> {
    let leaves = state
        .store
        .audit_log_leaves(tenant_id)
        .await
        .map_err(|e| e.to_string())?;
    let mut hashes = Vec::with_capacity(leaves.len());
    for (expected, (index, hash)) in leaves.iter().enumerate() {
        if *index != expected as u64 {
            return Err(format!(
                "log position {expected} is missing (next stored position is {index})"
            ));
        }
        let Some(h) = parse_hash(hash) else {
            return Err(format!("log position {index} holds a malformed hash"));
        };
        hashes.push(leaf_hash(&h));
    }
    Ok(MerkleTree::from_leaf_hashes(hashes))
}

/// Signs a new checkpoint of a tenant's log if it grew since the last one; returns the latest
/// checkpoint in force and the tree it was computed from. When the stored log no longer
/// matches the last signed checkpoint, nothing is signed: an alert is raised and the last good
/// checkpoint stays the latest.
///
/// # Errors
/// Store failures.
pub async fn checkpoint(
    state: &SharedState,
    tenant_id: &str,
    now: i64,
) -> Result<(Option<SignedTreeHead>, Option<MerkleTree>), ApiError> {
    let latest = state.store.latest_checkpoint(tenant_id).await?;
    let tree = match load_tree(state, tenant_id).await {
        Ok(tree) => tree,
        Err(why) => {
            state
                .alert(
                    Some(tenant_id),
                    None,
                    "audit_checkpoint_mismatch",
                    format!("the stored audit log is damaged, no checkpoint signed: {why}"),
                )
                .await;
            return Ok((latest, None));
        }
    };
    if let Some(head) = &latest {
        let consistent = head.root().ok() == tree.prefix(head.tree_size).map(|t| t.root());
        if !consistent {
            state
                .alert(
                    Some(tenant_id),
                    None,
                    "audit_checkpoint_mismatch",
                    format!(
                        "the stored audit log ({} events) no longer matches the signed checkpoint of size {}: stored events were changed or removed; no checkpoint signed",
                        tree.size(),
                        head.tree_size
                    ),
                )
                .await;
            return Ok((latest, Some(tree)));
        }
        if head.tree_size == tree.size() {
            return Ok((latest, Some(tree)));
        }
    }
    if tree.size() == 0 {
        return Ok((None, Some(tree)));
    }
    let head = SignedTreeHead::sign(
        tenant_id,
        tree.size(),
        &tree.root(),
        now,
        &state.signing_key,
    );
    state.store.insert_checkpoint(&head).await?;
    Ok((Some(head), Some(tree)))
}

/// Signs checkpoints for every tenant with a log, every `period`, forever.
pub async fn run_checkpointer(state: SharedState, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let tenants = match state.store.audit_log_tenants().await {
            Ok(t) => t,
            Err(err) => {
                tracing::warn!(%err, "audit checkpoint: listing tenants failed");
                continue;
            }
        };
        for tenant in tenants {
            if let Err(err) = checkpoint(&state, &tenant, now_ms()).await {
                tracing::warn!(tenant = %tenant, ?err, "audit checkpoint failed");
            }
        }
    }
}

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Only this device.
    pub device_id: Option<String>,
    /// Events at or after (Unix ms).
    pub from_ms: Option<i64>,
    /// Events before (Unix ms).
    pub to_ms: Option<i64>,
}

fn line(out: &mut Vec<u8>, record: &ExportRecord) -> Result<(), ApiError> {
    serde_json::to_writer(&mut *out, record).map_err(ApiError::internal)?;
    out.push(b'\n');
    Ok(())
}

/// Builds the JSON-lines export of a tenant (see `sase_model::audit_export`). A checkpoint is
/// signed first when the log grew, so that every exported event has an inclusion proof. Each
/// device's range is widened to the end of the signed batch covering its last selected event,
/// so that the batch signature can be checked.
///
/// # Errors
/// Store failures.
pub async fn export(
    state: &SharedState,
    tenant_id: &str,
    filter: &ExportFilter,
) -> Result<Vec<u8>, ApiError> {
    let now = now_ms();
    let (head, tree) = checkpoint(state, tenant_id, now).await?;
    let mut out = Vec::new();
    line(
        &mut out,
        &ExportRecord::Header {
            format: EXPORT_FORMAT.to_string(),
            tenant_id: tenant_id.to_string(),
            generated_at_ms: now,
            device: filter.device_id.clone(),
            from_ms: filter.from_ms,
            to_ms: filter.to_ms,
        },
    )?;
    let ranges = state
        .store
        .audit_export_ranges(
            tenant_id,
            filter.device_id.as_deref(),
            filter.from_ms,
            filter.to_ms,
        )
        .await?;
    let devices = state.store.devices(tenant_id).await?;
    let (mut n_events, mut n_batches, mut n_devices, mut n_checkpoints) = (0u64, 0u64, 0u64, 0u64);
    for device in devices
        .iter()
        .filter(|d| ranges.iter().any(|(id, _, _)| *id == d.id))
    {
        let cert = state.store.device_cert_pem(&device.id).await?;
        let key = cert.as_deref().and_then(device_key_from_cert);
        line(
            &mut out,
            &ExportRecord::Device {
                device_id: device.id.clone(),
                tenant_id: device.tenant_id.clone(),
                name: device.name.clone(),
                key_alg: key.as_ref().map(|k| k.alg.clone()),
                public_key: key.as_ref().map(DeviceKey::public_key_b64),
                certificate_pem: cert,
            },
        )?;
        n_devices += 1;
    }
    if let Some(head) = &head {
        line(&mut out, &ExportRecord::Checkpoint(head.clone()))?;
        n_checkpoints += 1;
    }
    // Chains start after what retention deleted; the signed record says where.
    if let Some(record) = state.store.latest_retention_record(tenant_id).await? {
        line(&mut out, &ExportRecord::Retention(record))?;
    }
    let mut widened = Vec::with_capacity(ranges.len());
    for (device_id, lo, hi) in &ranges {
        let hi = state
            .store
            .audit_covering_batch(device_id, *hi)
            .await?
            .unwrap_or(*hi);
        for b in state.store.audit_batches(device_id, *lo, hi).await? {
            line(
                &mut out,
                &ExportRecord::Batch {
                    device_id: device_id.clone(),
                    first_seq: b.first_seq,
                    last_seq: b.last_seq,
                    last_hash: b.last_hash,
                    alg: b.alg,
                    signature: b.signature,
                },
            )?;
            n_batches += 1;
        }
        widened.push((device_id.clone(), *lo, hi));
    }
    // Proofs are against the latest checkpoint, which may cover fewer leaves than are stored.
    let proof_tree = match (&head, tree) {
        (Some(head), Some(tree)) if head.tree_size == tree.size() => Some(tree),
        (Some(head), Some(tree)) => tree.prefix(head.tree_size),
        _ => None,
    };
    for (device_id, lo, hi) in widened {
        for (seq, hash, log_index, event_json) in
            state.store.audit_export_events(&device_id, lo, hi).await?
        {
            if event_json.is_empty() {
                // Deleted by retention: only its hash and log position remain.
                continue;
            }
            let event = serde_json::from_str::<serde_json::Value>(&event_json)
                .unwrap_or(serde_json::Value::String(event_json));
            let proof = match (&proof_tree, log_index) {
                (Some(tree), Some(i)) => tree
                    .inclusion_proof(i)
                    .map(|p| p.iter().map(hex::encode).collect::<Vec<_>>()),
                _ => None,
            };
            line(
                &mut out,
                &ExportRecord::Event {
                    device_id: device_id.clone(),
                    seq,
                    hash,
                    log_index,
                    checkpoint_size: proof.as_ref().and(head.as_ref().map(|h| h.tree_size)),
                    proof,
                    event,
                },
            )?;
            n_events += 1;
        }
    }
    line(
        &mut out,
        &ExportRecord::End {
            events: n_events,
            batches: n_batches,
            devices: n_devices,
            checkpoints: n_checkpoints,
        },
    )?;
    Ok(out)
}
