//! Tenants, sites and devices as the API and the console see them, and the enrolment exchange.

use serde::{Deserialize, Serialize};

/// A customer (or the MSP itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// When it was created (Unix milliseconds).
    pub created_at_ms: i64,
}

/// A branch location of a tenant; devices enrol into a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// Stable id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// When it was created (Unix milliseconds).
    pub created_at_ms: i64,
}

/// Lifecycle of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Enrolled and allowed to connect.
    Active,
    /// Decommissioned: its certificate is no longer accepted.
    Revoked,
}

/// An enrolled edge appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Stable id (also the certificate's common name).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Site it enrolled into.
    pub site_id: String,
    /// Name the device gave itself (host name).
    pub name: String,
    /// Lifecycle state.
    pub status: DeviceStatus,
    /// SHA-256 of the device certificate (DER), hex.
    pub cert_sha256: String,
    /// When it enrolled (Unix milliseconds).
    pub enrolled_at_ms: i64,
    /// Last message on the channel (Unix milliseconds).
    pub last_seen_ms: Option<i64>,
    /// Policy version the device last reported as applied.
    pub applied_version: Option<u64>,
    /// Software version the device last reported.
    pub edge_version: Option<String>,
}

/// Sent by a new device to trade a claim code for an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time claim code.
    pub claim_code: String,
    /// PKCS#10 certificate signing request (PEM) for the key the device generated.
    pub csr_pem: String,
    /// The device's name (host name), for people.
    pub name: String,
    /// Software version.
    pub edge_version: String,
}

/// What the device gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// Device id assigned by the control plane.
    pub device_id: String,
    /// Tenant of the device.
    pub tenant_id: String,
    /// Site of the device.
    pub site_id: String,
    /// Device certificate (PEM), signed by the tenant CA.
    pub certificate_pem: String,
    /// Tenant CA certificate (PEM).
    pub tenant_ca_pem: String,
    /// Control-plane policy signing key (Ed25519, base64) to pin.
    pub policy_signing_key: String,
    /// WebSocket URL of the edge channel.
    pub channel_url: String,
}
