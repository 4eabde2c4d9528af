//! The self-contained audit export: one JSON object per line, produced by the control plane
//! (`GET /api/tenants/{id}/audit/export`) and checked offline by `sase-audit verify`.
//!
//! Order in a file: one [`ExportRecord::Header`]; then [`ExportRecord::Device`]s (with the key
//! each device signs its batches with); [`ExportRecord::Checkpoint`]s (signed tree heads);
//! [`ExportRecord::Batch`]es (device signatures); [`ExportRecord::Event`]s grouped by device in
//! chain order, each with its recorded chain hash, its leaf index in the tenant's Merkle log and
//! an inclusion proof against a checkpoint; and a closing [`ExportRecord::End`] with counts (a
//! truncated file is detected).

use serde::{Deserialize, Serialize};

use crate::merkle::SignedTreeHead;
use crate::retention::RetentionRecord;

/// Value of [`ExportRecord::Header::format`].
pub const EXPORT_FORMAT: &str = "sase-audit-export-v1";

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportRecord {
    /// First line.
    Header {
        /// [`EXPORT_FORMAT`].
        format: String,
        /// Tenant exported.
        tenant_id: String,
        /// When the export was made (Unix ms, control-plane clock).
        generated_at_ms: i64,
        /// Device filter, if any.
        #[serde(default)]
        device: Option<String>,
        /// Time filter: earliest event time (inclusive), if any.
        #[serde(default)]
        from_ms: Option<i64>,
        /// Time filter: latest event time (exclusive), if any.
        #[serde(default)]
        to_ms: Option<i64>,
    },
    /// A device and the public key its batch signatures verify with.
    Device {
        /// Device id.
        device_id: String,
        /// Its tenant.
        tenant_id: String,
        /// Its name.
        name: String,
        /// Signature algorithm of its key (`ecdsa-p256-sha256` or `ed25519`), when known.
        #[serde(default)]
        key_alg: Option<String>,
        /// Raw public key, base64 (P-256: the uncompressed point; Ed25519: 32 bytes).
        #[serde(default)]
        public_key: Option<String>,
        /// The device certificate the key comes from (issued by the tenant CA at enrolment).
        #[serde(default)]
        certificate_pem: Option<String>,
    },
    /// A signed tree head over the tenant's log.
    Checkpoint(SignedTreeHead),
    /// The latest signed retention record: how far each device's chain was deleted (chains
    /// in the export start right after it).
    Retention(RetentionRecord),
    /// A device's signature over one uploaded batch.
    Batch {
        /// Device.
        device_id: String,
        /// First sequence number of the batch as uploaded.
        first_seq: u64,
        /// Last sequence number of the batch.
        last_seq: u64,
        /// Chain hash of the event `last_seq` that the device signed.
        last_hash: String,
        /// Signature algorithm.
        alg: String,
        /// Signature, base64.
        signature: String,
    },
    /// One stored event.
    Event {
        /// Device (as stored; the event itself names it too).
        device_id: String,
        /// Sequence number (as stored).
        seq: u64,
        /// Chain hash recorded at ingest, hex.
        hash: String,
        /// Position of the event's leaf in the tenant's Merkle log.
        #[serde(default)]
        log_index: Option<u64>,
        /// Size of the checkpoint the proof is for.
        #[serde(default)]
        checkpoint_size: Option<u64>,
        /// Inclusion proof (hex hashes, leaf side first).
        #[serde(default)]
        proof: Option<Vec<String>>,
        /// The event as stored (kept as JSON so that an altered event is reported with its
        /// device and seq rather than as a malformed line).
        event: serde_json::Value,
    },
    /// Last line.
    End {
        /// Number of event lines.
        events: u64,
        /// Number of batch lines.
        batches: u64,
        /// Number of device lines.
        devices: u64,
        /// Number of checkpoint lines.
        checkpoints: u64,
    },
}
