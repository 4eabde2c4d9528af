//! Shared server state: the store, the policy signing key, the hub of connected edges and the
//! dynamic verifier of device certificates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use sase_model::channel::ControlMessage;
use tokio::sync::mpsc;

use crate::store::{Alert, Store};
use crate::tls::DeviceCertVerifier;

/// State shared by every handler.
pub type SharedState = Arc<AppState>;

/// Everything a handler may need.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The first Ed25519 signing key: audit checkpoints and retention records (and policy
    /// bundles until the first rotation).
    pub signing_key: SigningKey,
    /// The key that signs policy bundles now, and the rotation state (`key_rotation`).
    pub policy_keys: crate::key_rotation::PolicyKeys,
    /// Connected edges.
    pub hub: Hub,
    /// Base URL edges and admins use to reach this control plane (`https://host:port`).
    pub public_url: String,
    /// Verifier of device client certificates; reloaded when a tenant CA is added.
    pub device_verifier: Arc<DeviceCertVerifier>,
    /// Where CRS is, to check that a policy's WAF settings load before accepting it.
    pub crs: sase_waf::CrsPaths,
    /// Digests of WAF configurations already known to load (no need to compile them again).
    pub waf_known_good: Mutex<std::collections::HashSet<String>>,
}

impl AppState {
    /// Records an alert; failures to record are logged, never propagated (an alert must not
    /// break the path that raised it).
    pub async fn alert(
        &self,
        tenant_id: Option<&str>,
        device_id: Option<&str>,
        kind: &str,
        detail: impl Into<String>,
    ) {
        let alert = Alert {
            id: new_id("alr"),
            tenant_id: tenant_id.map(str::to_string),
            device_id: device_id.map(str::to_string),
            kind: kind.to_string(),
            detail: detail.into(),
            created_at_ms: now_ms(),
        };
        tracing::warn!(kind = %alert.kind, device = ?alert.device_id, detail = %alert.detail, "alert");
        if let Err(err) = self.store.insert_alert(&alert).await {
            tracing::error!(%err, "could not record alert");
        }
    }
}

/// Wall-clock time in Unix milliseconds (the shell's clock; cores take `now` as input).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new random id with a readable prefix, e.g. `dev_3f9a…`.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

struct Connection {
    tenant_id: String,
    conn_id: u64,
    sender: mpsc::Sender<ControlMessage>,
}

/// Registry of live edge channels, to push messages to a tenant's devices.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    next_conn: u64,
    by_device: HashMap<String, Connection>,
}

impl Hub {
    /// Registers a device's channel, replacing (and thereby closing) an older one. Returns a
    /// connection id for [`Hub::unregister`].
    pub fn register(
        &self,
        device_id: &str,
        tenant_id: &str,
        sender: mpsc::Sender<ControlMessage>,
    ) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.next_conn += 1;
        let conn_id = inner.next_conn;
        inner.by_device.insert(
            device_id.to_string(),
            Connection {
                tenant_id: tenant_id.to_string(),
                conn_id,
                sender,
            },
        );
        conn_id
    }

    /// Removes a device's channel if it is still the one registered under `conn_id`.
    pub fn unregister(&self, device_id: &str, conn_id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner
            .by_device
            .get(device_id)
            .is_some_and(|c| c.conn_id == conn_id)
        {
            inner.by_device.remove(device_id);
        }
    }

    /// Sends a message to every connected device of a tenant; returns how many got it queued.
    /// A device whose queue is full misses it and gets the current state when it reconnects.
    pub fn broadcast(&self, tenant_id: &str, message: &ControlMessage) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_device
            .values()
            .filter(|c| c.tenant_id == tenant_id)
            .filter(|c| c.sender.try_send(message.clone()).is_ok())
            .count()
    }

    /// Sends a message to one connected device; false when it is not connected (or its queue
    /// is full).
    pub fn send_to(&self, device_id: &str, message: &ControlMessage) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_device
            .get(device_id)
            .is_some_and(|c| c.sender.try_send(message.clone()).is_ok())
    }

    /// Cuts a device's channel (its sender is dropped, the connection ends); whether it was
    /// connected here.
    pub fn disconnect(&self, device_id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.by_device.remove(device_id).is_some()
    }

    /// Ids of a tenant's devices connected here.
    pub fn connected_in(&self, tenant_id: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> = inner
            .by_device
            .iter()
            .filter(|(_, c)| c.tenant_id == tenant_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Ids of connected devices.
    pub fn connected(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> = inner.by_device.keys().cloned().collect();
        ids.sort();
        ids
    }
}
