//! The API's answers that `sase-model` does not type (they are the control plane's own views);
//! field names as in `control-plane/server/src` (see `/api/openapi.json`). Tenants, sites,
//! devices and audit events come from `sase-model` itself.

use serde::{Deserialize, Serialize};

/// `GET /api/me`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Me {
    /// Admin id.
    pub id: String,
    /// User name.
    pub username: String,
    /// `msp_owner`, `msp_engineer`, `customer_admin` or `customer_auditor`.
    pub role: String,
    /// Owning MSP.
    pub msp_id: String,
    /// Customer tenant (customer roles).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// True once TOTP is confirmed.
    pub mfa_enabled: bool,
    /// Effective permissions (`devices.read`, …).
    pub permissions: Vec<String>,
}

impl Me {
    /// True when the admin holds `permission`.
    pub fn can(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// True for MSP roles.
    pub fn is_msp(&self) -> bool {
        self.role.starts_with("msp_")
    }
}

/// `POST /api/login` body.
#[derive(Debug, Clone, Serialize)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// TOTP code, when MFA is enrolled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
}

/// `POST /api/login` answer (only what the console uses; the session is the HttpOnly cookie).
#[derive(Debug, Clone, Deserialize)]
pub struct LoginAnswer {
    /// Signed-in user.
    pub username: String,
}

/// A name for a new tenant or site.
#[derive(Debug, Clone, Serialize)]
pub struct NameRequest {
    /// Display name.
    pub name: String,
}

/// `GET /api/tenants/{id}/fleet/health` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeviceHealth {
    /// Device.
    pub device_id: String,
    /// Name.
    pub name: String,
    /// Site.
    pub site_id: String,
    /// `ok`, `lagging`, `silent`, `pending` or `decommissioned`.
    pub state: String,
    /// Last heard from (Unix ms).
    pub last_seen_ms: Option<i64>,
    /// Bundle version it runs.
    pub applied_version: Option<u64>,
    /// Bundle version it should run.
    pub expected_version: Option<u64>,
    /// Edge software version.
    pub edge_version: Option<String>,
    /// Audit events waiting in its spool.
    pub spooled_events: Option<u64>,
    /// One-minute load average.
    pub load1: Option<f64>,
    /// CPUs.
    pub cpus: Option<u32>,
    /// Memory in use, percent.
    pub mem_used_percent: Option<f64>,
}

/// `POST /api/sites/{id}/claim-codes` body.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimCodeRequest {
    /// Minutes until the code expires.
    pub ttl_minutes: i64,
}

/// A new claim code, shown once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NewClaimCode {
    /// The code.
    pub code: String,
    /// Site the device will join.
    pub site_id: String,
    /// Expiry (Unix ms).
    pub expires_at_ms: i64,
}

/// `GET /api/sites/{id}/claim-codes` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClaimCode {
    /// Public id.
    pub id: String,
    /// Label.
    #[serde(default)]
    pub label: Option<String>,
    /// `pending`, `used`, `expired` or `revoked`.
    pub status: String,
    /// Created (Unix ms).
    pub created_at_ms: i64,
    /// Expires (Unix ms).
    pub expires_at_ms: i64,
    /// The device it enrolled.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// `POST /api/devices/{id}/decommission` body.
#[derive(Debug, Clone, Serialize)]
pub struct Decommission {
    /// Why.
    pub reason: String,
}

/// `GET /api/audit` answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuditPage {
    /// Events, newest first.
    pub events: Vec<sase_model::AuditEvent>,
}

/// `GET /api/devices/{id}/audit/verify` answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// Highest sequence number stored.
    pub head_seq: u64,
    /// Every stored event links to the previous one.
    pub intact: bool,
    /// The first problem found.
    #[serde(default)]
    pub first_error: Option<String>,
}

/// The part of a signed checkpoint the console shows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Checkpoint {
    /// Events covered.
    pub tree_size: u64,
    /// Signed at (Unix ms).
    #[serde(default)]
    pub timestamp_ms: Option<i64>,
}

/// `GET /api/tenants/{id}/audit/proof` answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InclusionProof {
    /// Position in the tenant's log.
    pub log_index: u64,
    /// The checkpoint the proof is for.
    pub checkpoint: Checkpoint,
    /// Audit path length is what the console shows.
    pub proof: Vec<String>,
}
