//! Policy signing-key rotation with overlap.
//!
//! Two steps, each an audited call of an owner of the default MSP (the operator):
//!
//! 1. `POST /api/signing-keys/next` — a new key is generated and stored sealed; the current key
//!    endorses it ([`KeyEndorsement`]) and the endorsement goes to every connected edge (and
//!    after each `hello`, before the policy, to edges that were away). Bundles are still
//!    signed with the current key; edges now accept either.
//! 2. `POST /api/signing-keys/activate` — the next key becomes the current one and every
//!    tenant's latest policy is published again as a new version signed with it. An edge that
//!    applies such a bundle retires the old key and refuses bundles signed with it from then on.
//!    Refused (409) while a tenant has a canary rollout in progress.
//!
//! `GET /api/signing-keys` shows the key ids. Settings: `policy_signing_key` (the first key,
//! which also signs the audit checkpoints and retention records — their offline verification
//! names one key per export, see `docs/OPERATIONS.md`), `policy_signing_key_active` (the
//! current bundle key once rotated), `policy_signing_key_next`, all sealed ([`crate::secrets`]),
//! and `policy_signing_key_endorsements` (public).

use std::sync::RwLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use sase_model::bundle::key_id;
use sase_model::channel::ControlMessage;
use sase_model::signing_keys::KeyEndorsement;
use sase_model::Policy;
use serde::Serialize;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission, Role, Target};
use crate::state::{now_ms, SharedState};
use crate::store::{Store, StoreError, StoreResult, DEFAULT_MSP};

const FIRST: &str = "policy_signing_key";
const ACTIVE: &str = "policy_signing_key_active";
const NEXT: &str = "policy_signing_key_next";
const ENDORSEMENTS: &str = "policy_signing_key_endorsements";
/// Endorsements kept (and re-sent after each `hello`): enough for an edge away during several
/// rollovers.
const MAX_ENDORSEMENTS: usize = 8;
/// Author of the policy versions republished at activation.
pub const REPUBLISH_AUTHOR: &str = "signing-key-rotation";

struct Keys {
    current: SigningKey,
    next: Option<SigningKey>,
    endorsements: Vec<KeyEndorsement>,
}

/// The policy signing keys in force (read on every bundle signature; cheap clone).
pub struct PolicyKeys {
    inner: RwLock<Keys>,
}

impl std::fmt::Debug for PolicyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyKeys")
            .field("current", &key_id(&self.current().verifying_key()))
            .finish_non_exhaustive()
    }
}

fn seed_b64(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.to_bytes())
}

fn key_from_b64(name: &str, text: &str) -> StoreResult<SigningKey> {
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| StoreError::Corrupt(format!("{name} is not base64")))?
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{name} must be 32 bytes")))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// Loads (or, on first start, creates) the first signing key and the rotation state.
/// Returns the first key (audit checkpoints and retention records) and the bundle keys.
///
/// # Errors
/// Database failure or a stored key that does not open or decode.
pub async fn load(store: &Store) -> StoreResult<(SigningKey, PolicyKeys)> {
    // Every replica signs with the same keys: they live in the database, sealed.
    let first = store
        .secret_setting_init(FIRST, &seed_b64(&random_key()))
        .await?;
    let first = key_from_b64(FIRST, &first)?;
    let current = match store.secret_setting(ACTIVE).await? {
        Some(text) => key_from_b64(ACTIVE, &text)?,
        None => first.clone(),
    };
    let next = store
        .secret_setting(NEXT)
        .await?
        .map(|t| key_from_b64(NEXT, &t))
        .transpose()?;
    let endorsements = stored_endorsements(store).await?;
    Ok((
        first,
        PolicyKeys {
            inner: RwLock::new(Keys {
                current,
                next,
                endorsements,
            }),
        },
    ))
}

async fn stored_endorsements(store: &Store) -> StoreResult<Vec<KeyEndorsement>> {
    match store.setting(ENDORSEMENTS).await? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("{ENDORSEMENTS}: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// Re-reads the rotation state another replica may have changed. Returns the endorsements when
/// they changed (to be sent to the edges connected here), `None` otherwise.
///
/// # Errors
/// Database failure or a stored key that does not open.
pub async fn refresh(store: &Store, keys: &PolicyKeys) -> StoreResult<Option<Vec<KeyEndorsement>>> {
    let (_, fresh) = load(store).await?;
    let fresh = fresh
        .inner
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut held = keys.write();
    let changed = held.endorsements != fresh.endorsements;
    if held.current.to_bytes() != fresh.current.to_bytes() {
        tracing::info!(current = %key_id(&fresh.current.verifying_key()), "policy signing key changed by another replica");
    }
    *held = fresh;
    Ok(changed.then(|| held.endorsements.clone()))
}

/// Replicas on PostgreSQL: every `period`, picks up a rotation made on another replica and
/// sends new endorsements to the edges connected here (this replica's signing follows).
pub async fn run_refresh(state: SharedState, period: std::time::Duration) {
    if state.store.backend() != crate::store::Backend::Postgres {
        return;
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match refresh(&state.store, &state.policy_keys).await {
            Ok(Some(endorsements)) if !endorsements.is_empty() => {
                let message = ControlMessage::SigningKeys { endorsements };
                for device in state.hub.connected() {
                    state.hub.send_to(&device, &message);
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "cannot re-read the policy signing keys"),
        }
    }
}

impl PolicyKeys {
    /// Keys with no rotation history (tests).
    pub fn new(current: SigningKey) -> PolicyKeys {
        PolicyKeys {
            inner: RwLock::new(Keys {
                current,
                next: None,
                endorsements: Vec::new(),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key that signs bundles now.
    pub fn current(&self) -> SigningKey {
        self.read().current.clone()
    }

    /// The endorsements edges are sent (oldest first).
    pub fn endorsements(&self) -> Vec<KeyEndorsement> {
        self.read().endorsements.clone()
    }

    /// What `GET /api/signing-keys` shows.
    pub fn status(&self) -> SigningKeysStatus {
        let keys = self.read();
        SigningKeysStatus {
            current_key_id: key_id(&keys.current.verifying_key()),
            current_public_key: sase_model::bundle::verifying_key_to_b64(
                &keys.current.verifying_key(),
            ),
            next_key_id: keys.next.as_ref().map(|k| key_id(&k.verifying_key())),
            endorsements: keys.endorsements.len(),
        }
    }
}

/// The signing keys as the API shows them (public halves only).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SigningKeysStatus {
    /// Key id of the key that signs bundles now.
    pub current_key_id: String,
    /// Its public key (base64), what newly enrolled edges pin.
    pub current_public_key: String,
    /// Key id of the announced next key, during a rollover.
    pub next_key_id: Option<String>,
    /// Endorsements kept and sent to edges after each `hello`.
    pub endorsements: usize,
}

/// The messages for an edge after its `hello` (before its policy): the endorsement chain.
pub fn hello_messages(state: &SharedState) -> Vec<ControlMessage> {
    let endorsements = state.policy_keys.endorsements();
    if endorsements.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::SigningKeys { endorsements }]
    }
}

fn require_operator(admin: &Admin) -> Result<(), ApiError> {
    rbac::authorize(
        admin,
        Permission::PolicyWrite,
        Target::Msp(admin.scope.msp_id()),
    )?;
    if admin.role != Role::MspOwner || admin.scope.msp_id() != DEFAULT_MSP {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            "the policy signing key is managed by owners of the operator's MSP",
        ));
    }
    Ok(())
}

/// `GET /api/signing-keys`.
///
/// # Errors
/// 403 for anyone but an owner of the default MSP.
#[utoipa::path(get, path = "/api/signing-keys",
    responses((status = 200, body = SigningKeysStatus), (status = 403, body = crate::error::ErrorBody)))]
pub async fn status(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<Json<SigningKeysStatus>, ApiError> {
    require_operator(&admin)?;
    Ok(Json(state.policy_keys.status()))
}

/// `POST /api/signing-keys/next`: announce a new key (step 1).
///
/// # Errors
/// 403 as above, 409 when a next key is already announced, store failures.
#[utoipa::path(post, path = "/api/signing-keys/next",
    responses((status = 201, body = SigningKeysStatus), (status = 403, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn announce(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<(StatusCode, Json<SigningKeysStatus>), ApiError> {
    require_operator(&admin)?;
    let before = state.policy_keys.status();
    if before.next_key_id.is_some() {
        return Err(ApiError::conflict(
            "a next signing key is already announced; activate it first",
        ));
    }
    let next = random_key();
    let (endorsement, endorsements) = {
        let keys = state.policy_keys.read();
        let e = KeyEndorsement::sign(&keys.current, &next.verifying_key(), now_ms());
        let mut all = keys.endorsements.clone();
        all.push(e.clone());
        let skip = all.len().saturating_sub(MAX_ENDORSEMENTS);
        (e, all.split_off(skip))
    };
    let json = serde_json::to_string(&endorsements).map_err(ApiError::internal)?;
    state
        .store
        .set_secret_setting(NEXT, Some(&seed_b64(&next)))
        .await?;
    set_public_setting(&state.store, ENDORSEMENTS, &json).await?;
    {
        let mut keys = state.policy_keys.write();
        keys.next = Some(next);
        keys.endorsements = endorsements;
    }
    let message = ControlMessage::SigningKeys {
        endorsements: vec![endorsement],
    };
    let told = state
        .hub
        .connected()
        .iter()
        .filter(|d| state.hub.send_to(d, &message))
        .count();
    let after = state.policy_keys.status();
    crate::admin_audit::record(
        &state,
        &admin,
        "signing_key.announce",
        None,
        "policy_signing_key",
        serde_json::json!({"current_key_id": before.current_key_id}),
        serde_json::json!({"current_key_id": after.current_key_id, "next_key_id": after.next_key_id}),
    )
    .await?;
    tracing::info!(next = ?after.next_key_id, edges_told = told, "next policy signing key announced");
    Ok((StatusCode::CREATED, Json(after)))
}

/// `POST /api/signing-keys/activate`: sign with the announced key from now on (step 2); every
/// tenant's latest policy is published again, signed with it, and pushed.
///
/// # Errors
/// 403 as above, 409 when no next key is announced, store failures.
#[utoipa::path(post, path = "/api/signing-keys/activate",
    responses((status = 200, body = SigningKeysStatus), (status = 403, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn activate(
    State(state): State<SharedState>,
    admin: Admin,
) -> Result<Json<SigningKeysStatus>, ApiError> {
    require_operator(&admin)?;
    let before = state.policy_keys.status();
    let Some(next) = state.policy_keys.read().next.clone() else {
        return Err(ApiError::conflict("no next signing key is announced"));
    };
    // Republishing a tenant in the middle of a canary rollout would hand the canary version to
    // every edge: such a rollout must end first.
    let tenants = state.store.tenants().await?;
    let canary: Option<String> =
        sqlx::query("SELECT tenant_id FROM policy_rollouts WHERE status = 'canary' LIMIT 1")
            .fetch_optional(state.store.pool())
            .await
            .map_err(StoreError::from)?
            .map(|row| sqlx::Row::try_get(&row, "tenant_id"))
            .transpose()
            .map_err(StoreError::from)?;
    if let Some(tenant) = canary {
        return Err(ApiError::conflict(format!(
            "tenant {tenant} has a rollout in progress; promote or roll it back first"
        )));
    }
    state
        .store
        .set_secret_setting(ACTIVE, Some(&seed_b64(&next)))
        .await?;
    state.store.set_secret_setting(NEXT, None).await?;
    {
        let mut keys = state.policy_keys.write();
        keys.current = next;
        keys.next = None;
    }
    let mut republished = Vec::new();
    for tenant in tenants {
        let Some(latest) = state.store.latest_policy(&tenant.id).await? else {
            continue;
        };
        let policy = Policy::parse_json(&latest.policy_json).map_err(ApiError::internal)?;
        let version =
            crate::api::publish_policy(&state, &tenant.id, policy, REPUBLISH_AUTHOR).await?;
        crate::fanout::push_policy(&state, &tenant.id).await;
        crate::fanout::announce(
            &state,
            crate::fanout::Change::Policy {
                tenant_id: tenant.id.clone(),
            },
        )
        .await;
        republished.push(serde_json::json!({"tenant_id": tenant.id, "version": version.version}));
    }
    let after = state.policy_keys.status();
    crate::admin_audit::record(
        &state,
        &admin,
        "signing_key.activate",
        None,
        "policy_signing_key",
        serde_json::json!({"current_key_id": before.current_key_id, "next_key_id": before.next_key_id}),
        serde_json::json!({"current_key_id": after.current_key_id, "republished": republished}),
    )
    .await?;
    tracing::info!(current = %after.current_key_id, tenants = republished.len(), "policy signing key activated");
    Ok(Json(after))
}

async fn set_public_setting(store: &Store, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(store.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replica_picks_up_a_rotation_made_by_another() {
        let dir = std::env::temp_dir().join(format!("sase-keyrot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}?mode=rwc", dir.join("control.db").display());
        let sealer = std::sync::Arc::new(crate::secrets::Sealer::new(&[4u8; 32]));
        let a = Store::connect(&url)
            .await
            .expect("a")
            .with_sealer(sealer.clone());
        let b = Store::connect(&url).await.expect("b").with_sealer(sealer);
        let (first_a, keys_a) = load(&a).await.expect("load a");
        let (first_b, keys_b) = load(&b).await.expect("load b");
        assert_eq!(
            first_a.to_bytes(),
            first_b.to_bytes(),
            "one key for all replicas"
        );
        assert_eq!(refresh(&b, &keys_b).await.expect("refresh"), None);
        // Replica A announces and activates (as the handlers do, without the HTTP layer).
        let next = random_key();
        let e = KeyEndorsement::sign(&keys_a.current(), &next.verifying_key(), 1);
        a.set_secret_setting(NEXT, Some(&seed_b64(&next)))
            .await
            .expect("next");
        set_public_setting(
            &a,
            ENDORSEMENTS,
            &serde_json::to_string(&vec![e.clone()]).expect("json"),
        )
        .await
        .expect("endorsements");
        let sent = refresh(&b, &keys_b).await.expect("refresh");
        assert_eq!(sent, Some(vec![e]));
        assert_eq!(
            keys_b.status().next_key_id,
            Some(key_id(&next.verifying_key()))
        );
        a.set_secret_setting(ACTIVE, Some(&seed_b64(&next)))
            .await
            .expect("active");
        a.set_secret_setting(NEXT, None).await.expect("clear");
        assert_eq!(refresh(&b, &keys_b).await.expect("refresh"), None);
        assert_eq!(keys_b.current().to_bytes(), next.to_bytes());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
