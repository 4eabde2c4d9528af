//! Firmware updates of the appliance image: upload, offers to selected devices, download by
//! the device, and the devices' reports.
//!
//! The control plane does not sign firmware and is not trusted to: bundles are signed by the
//! vendor (see [`sase_model::update`]) and each device verifies them with the vendor key of its
//! image. Here a bundle is only checked to be one (magic, header); its manifest is shown
//! unverified. Bundles are kept as files under `<data-dir>/updates/` with a JSON record each;
//! offers and the latest reports are kept in `offers.json` there.
//!
//! Scope: an update belongs to the MSP of the admin who uploaded it (MSP roles only, with the
//! `policy.write` permission); it can be offered to devices within the offering admin's scope
//! (`policy.write` on the device's tenant). A device downloads only updates offered to it,
//! identified by its client certificate like on the channel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sase_model::channel::ControlMessage;
use sase_model::fleet::{Device, DeviceStatus};
use sase_model::update::{decode_header, UpdateOffer, UpdateReport, UpdateState};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission, Target};
use crate::state::{new_id, now_ms, SharedState};
use crate::tls::ConnInfo;

/// Largest bundle accepted (slot payload plus header).
pub const MAX_UPDATE_BYTES: usize = 1024 * 1024 * 1024;

/// An uploaded bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// Id (`upd_…`).
    pub id: String,
    /// MSP it belongs to.
    pub msp_id: String,
    /// Version named by the manifest (unverified).
    pub version: u64,
    /// Label named by the manifest (unverified).
    pub label: String,
    /// Key id of the signer named by the header (unverified).
    pub key_id: String,
    /// Size of the bundle file.
    pub size: u64,
    /// SHA-256 of the bundle file.
    pub sha256: String,
    /// Who uploaded it, when.
    pub uploaded_by: String,
    /// Unix milliseconds.
    pub uploaded_at_ms: i64,
}

/// A device's view of one update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceUpdate {
    /// The device.
    pub device_id: String,
    /// The update.
    pub update_id: String,
    /// Latest state reported (`offered` until the device says something).
    pub state: String,
    /// Image version the device runs, as last reported.
    pub running_version: Option<u64>,
    /// Slot it runs.
    pub slot: String,
    /// Details of the latest report.
    pub detail: String,
    /// When the state last changed (Unix milliseconds).
    pub at_ms: i64,
    /// Every state reported, in order.
    pub history: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Offers {
    /// (update id, device id) → status.
    offers: BTreeMap<String, DeviceUpdate>,
    /// device id → last `running` report.
    running: BTreeMap<String, UpdateReport>,
}

struct Registry {
    dir: PathBuf,
    records: Mutex<BTreeMap<String, UpdateRecord>>,
    offers: Mutex<Offers>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn key(update_id: &str, device_id: &str) -> String {
    format!("{update_id}/{device_id}")
}

/// Opens (or creates) the update store under `dir`; called once at start.
///
/// # Errors
/// When the directory cannot be created or a record is damaged.
pub fn init(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut records = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_record = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("upd_") && n.ends_with(".json"));
        if is_record {
            let record: UpdateRecord = serde_json::from_slice(&std::fs::read(&path)?)?;
            records.insert(record.id.clone(), record);
        }
    }
    let offers = match std::fs::read(dir.join("offers.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(_) => Offers::default(),
    };
    let _ = REGISTRY.set(Registry {
        dir: dir.to_path_buf(),
        records: Mutex::new(records),
        offers: Mutex::new(offers),
    });
    Ok(())
}

fn registry() -> Result<&'static Registry, ApiError> {
    REGISTRY.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "updates_unavailable",
            "this control plane has no update store",
        )
    })
}

impl Registry {
    fn save_offers(&self, offers: &Offers) {
        let write = || -> std::io::Result<()> {
            let tmp = self.dir.join("offers.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(offers)?)?;
            std::fs::rename(tmp, self.dir.join("offers.json"))
        };
        if let Err(err) = write() {
            tracing::error!(%err, "could not save update offers");
        }
    }

    fn bundle_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.bundle"))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn require_msp(admin: &Admin) -> Result<(), ApiError> {
    if !admin.role.is_msp() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            "firmware is managed by MSP admins",
        ));
    }
    rbac::authorize(
        admin,
        Permission::PolicyWrite,
        Target::Msp(admin.scope.msp_id()),
    )?;
    Ok(())
}

/// `POST /api/updates`: stores a vendor-signed bundle (the raw file as the body).
///
/// # Errors
/// 403 for non-MSP admins, 400 when the body is not an update bundle.
#[utoipa::path(post, path = "/api/updates",
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the vendor-signed update bundle file"),
    responses((status = 201, body = Object), (status = 400, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub async fn upload(
    State(state): State<SharedState>,
    admin: Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<UpdateRecord>), ApiError> {
    require_msp(&admin)?;
    let reg = registry()?;
    let (header, _) = decode_header(&body)
        .map_err(|e| ApiError::bad_request(format!("not an update bundle: {e}")))?;
    let manifest = header
        .unverified()
        .map_err(|e| ApiError::bad_request(format!("not an update bundle: {e}")))?;
    let record = UpdateRecord {
        id: new_id("upd"),
        msp_id: admin.scope.msp_id().to_string(),
        version: manifest.version,
        label: manifest.label.chars().take(64).collect(),
        key_id: header.key_id.chars().take(64).collect(),
        size: body.len() as u64,
        sha256: hex::encode(Sha256::digest(&body)),
        uploaded_by: admin.username.clone(),
        uploaded_at_ms: now_ms(),
    };
    let path = reg.bundle_path(&record.id);
    tokio::fs::write(&path, &body)
        .await
        .map_err(ApiError::internal)?;
    let json = serde_json::to_vec_pretty(&record).map_err(ApiError::internal)?;
    tokio::fs::write(reg.dir.join(format!("{}.json", record.id)), json)
        .await
        .map_err(ApiError::internal)?;
    lock(&reg.records).insert(record.id.clone(), record.clone());
    crate::admin_audit::record(
        &state,
        &admin,
        "update.upload",
        None,
        &record.id,
        serde_json::Value::Null,
        serde_json::json!({"version": record.version, "label": record.label, "sha256": record.sha256}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// `GET /api/updates`: the bundles of the caller's MSP.
///
/// # Errors
/// 403 for non-MSP admins.
#[utoipa::path(get, path = "/api/updates",
    responses((status = 200, body = [Object]), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list(admin: Admin) -> Result<Json<Vec<UpdateRecord>>, ApiError> {
    require_msp(&admin)?;
    let reg = registry()?;
    let msp = admin.scope.msp_id();
    Ok(Json(
        lock(&reg.records)
            .values()
            .filter(|r| r.msp_id == msp)
            .cloned()
            .collect(),
    ))
}

fn record_in_scope(admin: &Admin, id: &str) -> Result<UpdateRecord, ApiError> {
    let reg = registry()?;
    lock(&reg.records)
        .get(id)
        .filter(|r| r.msp_id == admin.scope.msp_id())
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such update"))
}

/// Body of an offer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferRequest {
    /// Devices to offer the update to.
    pub devices: Vec<String>,
}

/// Outcome of an offer for one device.
#[derive(Debug, Serialize)]
pub struct Offered {
    /// The device.
    pub device_id: String,
    /// Whether it was connected and got the offer now (otherwise at its next connection).
    pub sent: bool,
}

/// `POST /api/updates/{id}/offer`: offers an update to devices.
///
/// # Errors
/// 404 for an unknown update or a device outside the caller's scope.
#[utoipa::path(post, path = "/api/updates/{update_id}/offer",
    params(("update_id" = String, Path, description = "update id")),
    request_body = Object,
    responses((status = 200, body = [Object]), (status = 400, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn offer(
    State(state): State<SharedState>,
    admin: Admin,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<OfferRequest>,
) -> Result<Json<Vec<Offered>>, ApiError> {
    require_msp(&admin)?;
    let record = record_in_scope(&admin, &id)?;
    if req.devices.is_empty() || req.devices.len() > 10_000 {
        return Err(ApiError::bad_request("devices: 1 to 10000 device ids"));
    }
    for device_id in &req.devices {
        rbac::authorize_device(&state, &admin, Permission::PolicyWrite, device_id).await?;
    }
    let reg = registry()?;
    let message = ControlMessage::UpdateOffer {
        offer: UpdateOffer {
            id: record.id.clone(),
            version: record.version,
            size: record.size,
        },
    };
    let mut out = Vec::new();
    {
        let mut offers = lock(&reg.offers);
        for device_id in &req.devices {
            let running = offers.running.get(device_id).cloned();
            offers.offers.insert(
                key(&record.id, device_id),
                DeviceUpdate {
                    device_id: device_id.clone(),
                    update_id: record.id.clone(),
                    state: "offered".into(),
                    running_version: running.as_ref().map(|r| r.running_version),
                    slot: running.map_or(String::new(), |r| r.slot),
                    detail: String::new(),
                    at_ms: now_ms(),
                    history: vec!["offered".into()],
                },
            );
        }
        reg.save_offers(&offers);
    }
    for device_id in &req.devices {
        out.push(Offered {
            device_id: device_id.clone(),
            sent: state.hub.send_to(device_id, &message),
        });
    }
    crate::admin_audit::record(
        &state,
        &admin,
        "update.offer",
        None,
        &record.id,
        serde_json::Value::Null,
        serde_json::json!({"version": record.version, "devices": req.devices}),
    )
    .await?;
    Ok(Json(out))
}

/// `GET /api/updates/{id}/devices`: where each device offered the update is.
///
/// # Errors
/// 404 for an unknown update.
#[utoipa::path(get, path = "/api/updates/{update_id}/devices",
    params(("update_id" = String, Path, description = "update id")),
    responses((status = 200, body = [Object]), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn status(
    admin: Admin,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Vec<DeviceUpdate>>, ApiError> {
    require_msp(&admin)?;
    let record = record_in_scope(&admin, &id)?;
    let reg = registry()?;
    let offers = lock(&reg.offers);
    Ok(Json(
        offers
            .offers
            .values()
            .filter(|o| o.update_id == record.id)
            .cloned()
            .collect(),
    ))
}

/// `GET /api/edge/updates/{id}`: the bundle, for a device it was offered to (client
/// certificate as on the channel).
///
/// # Errors
/// 401 without a certificate, 403 for an unknown or decommissioned device, 404 when the update
/// was not offered to it.
#[utoipa::path(get, path = "/api/edge/updates/{update_id}",
    params(("update_id" = String, Path, description = "update id")),
    responses((status = 200, content_type = "application/octet-stream",
        description = "the update bundle"), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn download(
    State(state): State<SharedState>,
    Extension(conn): Extension<ConnInfo>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let device = device_of(&state, &conn).await?;
    let reg = registry()?;
    if !lock(&reg.offers).offers.contains_key(&key(&id, &device.id)) {
        return Err(ApiError::not_found("no such update for this device"));
    }
    let bytes = tokio::fs::read(reg.bundle_path(&id))
        .await
        .map_err(|_| ApiError::not_found("no such update for this device"))?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Bytes::from(bytes),
    )
        .into_response())
}

async fn device_of(state: &SharedState, conn: &ConnInfo) -> Result<Device, ApiError> {
    let Some(cert) = &conn.client_cert else {
        return Err(ApiError::unauthorized("a device certificate is needed"));
    };
    let fingerprint = hex::encode(Sha256::digest(cert));
    match state.store.device_by_cert(&fingerprint).await? {
        Some(device) if device.status == DeviceStatus::Active => Ok(device),
        _ => Err(ApiError::forbidden(
            "this certificate names no active device",
        )),
    }
}

/// Offers still open for a device (sent again after its `hello`).
pub fn pending_offers(device_id: &str) -> Vec<ControlMessage> {
    let Some(reg) = REGISTRY.get() else {
        return Vec::new();
    };
    let offers = lock(&reg.offers);
    let records = lock(&reg.records);
    offers
        .offers
        .values()
        .filter(|o| o.device_id == device_id)
        .filter(|o| matches!(o.state.as_str(), "offered" | "downloading" | "installed"))
        .filter_map(|o| records.get(&o.update_id))
        .map(|r| ControlMessage::UpdateOffer {
            offer: UpdateOffer {
                id: r.id.clone(),
                version: r.version,
                size: r.size,
            },
        })
        .collect()
}

/// Records a device's report; refusals and rollbacks raise alerts.
pub async fn on_report(state: &SharedState, device: &Device, report: UpdateReport) {
    let Some(reg) = REGISTRY.get() else { return };
    let now = now_ms();
    let detail: String = report.detail.chars().take(400).collect();
    {
        let mut offers = lock(&reg.offers);
        if report.state == UpdateState::Running {
            offers.running.insert(device.id.clone(), report.clone());
        }
        if let Some(update_id) = &report.update_id {
            if let Some(o) = offers.offers.get_mut(&key(update_id, &device.id)) {
                o.state = report.state.as_str().to_string();
                o.running_version = Some(report.running_version);
                o.slot = report.slot.chars().take(8).collect();
                o.detail.clone_from(&detail);
                o.at_ms = now;
                if o.history.len() < 64 {
                    o.history.push(o.state.clone());
                }
            }
        }
        reg.save_offers(&offers);
    }
    let alert = match report.state {
        UpdateState::Refused => Some("update_refused"),
        UpdateState::RolledBack => Some("update_rolled_back"),
        UpdateState::Failed => Some("update_failed"),
        _ => None,
    };
    if let Some(kind) = alert {
        state
            .alert(Some(&device.tenant_id), Some(&device.id), kind, detail)
            .await;
    }
}
