//! Messages on the edge <-> control-plane channel (JSON text frames over a WebSocket with mTLS).
//!
//! The edge always dials out. Down: signed policy bundles, acknowledgements of audit batches and
//! revocations (CAEP). Up: hello, heartbeats, audit batches, the outcome of applying a bundle and
//! the API inventory.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, BatchSignature};
use crate::bundle::SignedBundle;

/// Most events the edge sends in one batch.
pub const MAX_AUDIT_BATCH: usize = 500;

/// Largest channel frame accepted, in bytes.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// An appliance's load and memory, as reported with each heartbeat (fleet health).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemLoad {
    /// One-minute load average × 1000.
    pub load1_milli: u32,
    /// CPUs.
    pub cpus: u32,
    /// Memory in total (KiB).
    pub mem_total_kib: u64,
    /// Memory available (KiB).
    pub mem_available_kib: u64,
}

/// Most failing upstreams a health report lists.
pub const MAX_HEALTH_FAILURES: usize = 32;

/// From the edge to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EdgeMessage {
    /// First message after connecting.
    Hello {
        /// Version of the bundle the edge enforces, if any.
        applied_version: Option<u64>,
        /// Edge software version.
        edge_version: String,
    },
    /// Periodic liveness report.
    Heartbeat {
        /// Version of the bundle the edge enforces, if any.
        applied_version: Option<u64>,
        /// Events waiting in the edge's spool.
        spooled_events: u64,
        /// The appliance's load and memory, when it can read them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<SystemLoad>,
    },
    /// Audit events in chain order.
    AuditBatch {
        /// The events (at most [`MAX_AUDIT_BATCH`]).
        events: Vec<AuditEvent>,
        /// The device's signature over the batch (absent from edges older than batch
        /// signatures; such batches are stored unsigned and flagged by `sase-audit verify`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<BatchSignature>,
    },
    /// The edge applied a bundle.
    PolicyApplied {
        /// Its version.
        version: u64,
    },
    /// The edge refused a bundle.
    PolicyRejected {
        /// Version offered (if readable).
        version: Option<u64>,
        /// Why.
        reason: String,
    },
    /// The edge's health check after applying a bundle: every upstream of the policy
    /// reachable (canary rollouts are decided on it).
    PolicyHealth {
        /// The version applied.
        version: u64,
        /// All upstreams reachable.
        healthy: bool,
        /// Upstreams that were not, with why (at most [`MAX_HEALTH_FAILURES`]).
        #[serde(default)]
        failing: Vec<String>,
    },
    /// API inventory (OWASP API9): requests seen since the last report, aggregated (at most
    /// [`crate::inventory::MAX_INVENTORY_ENTRIES`] entries).
    Inventory {
        /// The counts.
        entries: Vec<crate::inventory::InventoryEntry>,
        /// Distinct endpoints not reported because the edge's table was full.
        #[serde(default)]
        dropped: u64,
    },
    /// Where the device is with firmware updates of the appliance image: the image it runs
    /// (after each `hello`) and the progress of an offered update.
    UpdateStatus {
        /// The report.
        report: crate::update::UpdateReport,
    },
}

/// From the control plane to the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// The tenant's current policy.
    Policy {
        /// The signed bundle.
        bundle: SignedBundle,
    },
    /// Events up to and including `seq` are stored; the edge may delete them.
    AuditAck {
        /// Highest stored sequence number of this device.
        up_to_seq: u64,
    },
    /// The last batch could not be accepted (gap or fork); the edge should resend from
    /// `resend_from`.
    AuditNack {
        /// Next sequence number the control plane expects.
        resend_from: u64,
        /// Why the batch was refused.
        reason: String,
    },
    /// Continuous access evaluation: subjects and sessions to refuse from now on (from CAEP
    /// Security Event Tokens). Sent when a SET is accepted and, with every revocation still
    /// in force, after each `hello`; the edge merges them into its table.
    Revocations {
        /// The revocations (at most [`crate::caep::MAX_REVOCATIONS_PER_MESSAGE`]).
        revocations: Vec<crate::caep::Revocation>,
    },
    /// A firmware update for this device (see [`crate::update`]); sent when an admin offers
    /// one and again after each `hello` until the device reports an outcome.
    UpdateOffer {
        /// What to download.
        offer: crate::update::UpdateOffer,
    },
    /// Policy signing-key rollover: endorsements of the next key(s), each signed by the key
    /// before it ([`crate::signing_keys`]). Sent when a rollover is announced and after each
    /// `hello` (before the policy) while the control plane keeps any.
    SigningKeys {
        /// Oldest first.
        endorsements: Vec<crate::signing_keys::KeyEndorsement>,
    },
}
