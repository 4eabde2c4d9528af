//! `sase-audit`: offline verification of audit exports.
//!
//! * [`consistency`] — checks that a later signed tree head extends an earlier one (RFC 6962
//!   consistency proof), for auditors who keep the heads they have seen.
//! * [`device_key`] — device batch signatures (ECDSA P-256 from the device's TLS identity, or
//!   Ed25519); the control plane uses the same check on ingest.
//! * [`verify`] — checks a JSON-lines export (`sase_model::audit_export`): each event's hash,
//!   chain continuity per device, device batch signatures and their coverage, and inclusion of
//!   every event in a checkpoint signed with the control plane's key. Findings name the device,
//!   the sequence number(s) and the line.
//!
//! The binary (`sase-audit verify <export> --control-plane-key <key>`) is a thin shell around
//! [`verify::parse`] and [`verify::verify`].

pub mod consistency;
pub mod device_key;
pub mod verify;
