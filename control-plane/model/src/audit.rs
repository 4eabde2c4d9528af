//! Audit events and their per-device hash chain.
//!
//! Each device numbers its events `seq = 1, 2, 3, …` and links each to the previous one by
//! `prev_hash` (the [`AuditEvent::hash`] of event `seq - 1`; [`GENESIS_HASH`] for `seq = 1`). The
//! hash is SHA-256 over the canonical JSON of the whole event, so changing, removing, reordering
//! or inserting any event breaks the chain at a point that [`ChainVerifier`] names.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::canonical::to_canonical_json;
use crate::reason::Reason;

/// `prev_hash` of a device's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The action was allowed.
    Allow,
    /// The action was refused.
    Deny,
}

impl Decision {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An HTTP request through the edge.
    HttpRequest,
    /// The edge applied a new policy bundle.
    PolicyApplied,
    /// The edge refused a policy bundle.
    PolicyRejected,
    /// A QUIC flow decision (inspect, SNI filter, block, drop); details in `quic`.
    QuicFlow,
    /// A firmware update was verified and written to the inactive slot (appliance image).
    UpdateInstalled,
    /// A firmware update was refused (bad signature, changed payload, not applicable).
    UpdateRefused,
    /// The updated slot came up healthy and was made the active one.
    UpdateConfirmed,
    /// The updated slot did not confirm in time; the device booted the previous slot again.
    UpdateRolledBack,
    /// Logging health: the edge's audit spool reached its bound (detail: `pending=… limit=…
    /// when_full=alert|fail_closed`).
    SpoolFull,
    /// Logging health: the spool has room again (detail: `dropped=…` or `refused=…`,
    /// `first_ts_ms=… last_ts_ms=… limit=… when_full=…`).
    SpoolRecovered,
    /// A ZTNA tunnel peer completed its first handshake (no session before); details in
    /// `tunnel`.
    TunnelConnect,
    /// A tunnel peer's session ended (expired without a new handshake, or the peer was
    /// removed from the policy); details in `tunnel` with the totals of the session.
    TunnelDisconnect,
    /// Bytes a tunnel peer sent and received during one summary interval (only intervals with
    /// traffic); details in `tunnel`.
    TunnelTraffic,
    /// Flows of a tunnel peer refused during one summary interval, counted by cause (ACL,
    /// spoofed source, malformed inner packet); details in `tunnel`.
    TunnelDenied,
}

impl EventKind {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HttpRequest => "http_request",
            EventKind::PolicyApplied => "policy_applied",
            EventKind::PolicyRejected => "policy_rejected",
            EventKind::QuicFlow => "quic_flow",
            EventKind::UpdateInstalled => "update_installed",
            EventKind::UpdateRefused => "update_refused",
            EventKind::UpdateConfirmed => "update_confirmed",
            EventKind::UpdateRolledBack => "update_rolled_back",
            EventKind::SpoolFull => "spool_full",
            EventKind::SpoolRecovered => "spool_recovered",
            EventKind::TunnelConnect => "tunnel_connect",
            EventKind::TunnelDisconnect => "tunnel_disconnect",
            EventKind::TunnelTraffic => "tunnel_traffic",
            EventKind::TunnelDenied => "tunnel_denied",
        }
    }
}

/// Details of an HTTP decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpDetails {
    /// Resource name (empty when no resource matched).
    pub resource: String,
    /// Route id (empty when no route matched).
    pub route: String,
    /// Request method.
    pub method: String,
    /// Request path without the query.
    pub path: String,
    /// Status answered to the client.
    pub status: u16,
    /// Time from request start to response headers, in microseconds.
    pub latency_us: u64,
    /// Client address.
    pub client_ip: String,
    /// Scopes the caller's verified token granted (sorted, at most 64): what a dry run of a
    /// draft policy replays scope requirements against. Absent when none (events without them
    /// hash as they always did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Groups the caller's token listed in its `groups` claim (sorted, at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// One audit record, as produced by an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the device's chain, from 1.
    pub seq: u64,
    /// Hash of the previous event ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// When it happened (Unix milliseconds, edge clock).
    pub ts_ms: i64,
    /// Tenant of the device.
    pub tenant_id: String,
    /// Device that produced it.
    pub device_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Allowed or refused.
    pub decision: Decision,
    /// Why.
    pub reason: Reason,
    /// Reference id given to the client (error bodies carry it), unique per event.
    pub reference: String,
    /// Policy version in force.
    pub policy_version: u64,
    /// Caller identity (`iss` + `sub`), when one was established.
    #[serde(default)]
    pub identity: Option<String>,
    /// HTTP details, for HTTP events.
    #[serde(default)]
    pub http: Option<HttpDetails>,
    /// Free-form detail: why a bundle was rejected (non-HTTP events), or what the API contract
    /// stage found or changed for an HTTP request (the JSON pointer of a violation, scrubbed
    /// properties, a replaced upstream error) — never request values.
    #[serde(default)]
    pub detail: Option<String>,
    /// What the web application firewall found, when it inspected the request. Absent (not
    /// null) otherwise, so events without it hash as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waf: Option<WafVerdict>,
    /// What was read from a QUIC flow and decided (QUIC events only). Absent (not null)
    /// otherwise, so events without it hash as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<crate::quic::QuicDetails>,
    /// The ZTNA tunnel identity and counters: on `tunnel_*` events, and on `http_request`
    /// events of requests that came through a tunnel (the principal). Absent (not null)
    /// otherwise, so events without it hash as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelDetails>,
}

/// The tunnel part of an audit event: who (the peer and the identity the policy bound to it)
/// and, for summaries, how much. Counters are for the event's interval (`tunnel_traffic`,
/// `tunnel_denied`) or the whole session (`tunnel_disconnect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TunnelDetails {
    /// The peer's name in the policy.
    pub peer: String,
    /// The peer's tunnel address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The signed-in user the peer is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The registered device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The sign-in session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The outer UDP endpoint the peer was last seen at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Length of the summary interval, milliseconds (summaries only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval_ms: u64,
    /// Bytes received from the peer (UDP payloads).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx_bytes: u64,
    /// Refused packets by cause (`acl_denied`, `spoofed_source`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub denied: BTreeMap<String, u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The WAF's part of an audit event: rule ids, messages and scores, never the matched data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WafVerdict {
    /// `detect` or `block`.
    pub mode: String,
    /// Paranoia level in force.
    pub paranoia_level: u8,
    /// Inbound anomaly score of the request.
    pub inbound_score: u32,
    /// Outbound anomaly score of the response (when responses are inspected).
    #[serde(default)]
    pub outbound_score: u32,
    /// Ids of the rules that matched.
    pub rule_ids: Vec<u32>,
    /// Their messages (at most one per rule).
    pub messages: Vec<String>,
    /// Whether the WAF refused the exchange.
    pub blocked: bool,
    /// Set when the WAF could not inspect (overload or engine error) and the resource fails open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl AuditEvent {
    /// SHA-256 over the canonical JSON of the event, hex.
    pub fn hash(&self) -> String {
        // A struct of strings, numbers and enums always serialises.
        let bytes = to_canonical_json(self).unwrap_or_default();
        line_hash(&bytes)
    }
}

/// The chain hash of an event's canonical JSON (what [`AuditEvent::hash`] computes, for a
/// writer that already holds the bytes): SHA-256, lower-case hex.
pub fn line_hash(canonical: &[u8]) -> String {
    hex_lower(&Sha256::digest(canonical))
}

/// `bytes` as lower-case hex, the form of chain hashes and reference ids. The same text as
/// `hex::encode`, written through its table (`encode_to_slice`) instead of one `char` at a time:
/// the edge does this for every request's reference and event.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut text = vec![0u8; bytes.len() * 2];
    match hex::encode_to_slice(bytes, &mut text)
        .ok()
        .and_then(|()| String::from_utf8(text).ok())
    {
        Some(text) => text,
        // Not reached: the buffer has the exact length and hex digits are ASCII.
        None => hex::encode(bytes),
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainError {
    /// One or more events are missing before this one.
    #[error("chain gap: expected seq {expected}, got {got}")]
    Gap {
        /// Next sequence number expected.
        expected: u64,
        /// Sequence number received.
        got: u64,
    },
    /// The event does not link to the previous one (changed, reordered or forked history).
    #[error("chain fork at seq {seq}: it does not link to the stored event before it")]
    Fork {
        /// Sequence number of the event that does not link.
        seq: u64,
    },
    /// The event repeats a sequence number already accepted.
    #[error("duplicate seq {seq}")]
    Duplicate {
        /// The repeated sequence number.
        seq: u64,
    },
    /// The event's content no longer hashes to the value recorded when it was accepted.
    #[error("event seq {seq} was altered after it was stored (hash mismatch)")]
    HashMismatch {
        /// Sequence number of the altered event.
        seq: u64,
    },
    /// The event belongs to another device than the chain.
    #[error("event seq {seq} belongs to another device")]
    WrongDevice {
        /// Sequence number of the stray event.
        seq: u64,
    },
}

/// Incremental verifier of one device's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerifier {
    device_id: String,
    last_seq: u64,
    last_hash: String,
}

impl ChainVerifier {
    /// A verifier for a device with no events yet.
    pub fn new(device_id: &str) -> ChainVerifier {
        ChainVerifier::resume(device_id, 0, GENESIS_HASH.to_string())
    }

    /// A verifier that continues after an already verified `(seq, hash)`.
    pub fn resume(device_id: &str, last_seq: u64, last_hash: String) -> ChainVerifier {
        ChainVerifier {
            device_id: device_id.to_string(),
            last_seq,
            last_hash,
        }
    }

    /// Last accepted sequence number (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Hash of the last accepted event.
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// Checks that `event` is the next link and, if so, advances. Returns the event's hash.
    ///
    /// # Errors
    /// Where and how the chain breaks; the verifier does not advance.
    pub fn push(&mut self, event: &AuditEvent) -> Result<String, ChainError> {
        if event.device_id != self.device_id {
            return Err(ChainError::WrongDevice { seq: event.seq });
        }
        if event.seq <= self.last_seq {
            return Err(ChainError::Duplicate { seq: event.seq });
        }
        if event.seq != self.last_seq + 1 {
            return Err(ChainError::Gap {
                expected: self.last_seq + 1,
                got: event.seq,
            });
        }
        if event.prev_hash != self.last_hash {
            return Err(ChainError::Fork { seq: event.seq });
        }
        let hash = event.hash();
        self.last_seq = event.seq;
        self.last_hash.clone_from(&hash);
        Ok(hash)
    }
}

/// Verifies a whole chain from genesis; returns the hash of the last event.
///
/// # Errors
/// The first break found.
pub fn verify_chain(device_id: &str, events: &[AuditEvent]) -> Result<String, ChainError> {
    let mut verifier = ChainVerifier::new(device_id);
    for event in events {
        verifier.push(event)?;
    }
    Ok(verifier.last_hash)
}

/// Continues `verifier` over stored `(event, recorded hash)` pairs, also checking that each
/// event still hashes to the value recorded at ingest.
///
/// # Errors
/// The first break found.
pub fn verify_chain_hashes(
    verifier: &mut ChainVerifier,
    events: &[(AuditEvent, String)],
) -> Result<(), ChainError> {
    for (event, recorded) in events {
        if event.hash() != *recorded {
            return Err(ChainError::HashMismatch { seq: event.seq });
        }
        verifier.push(event)?;
    }
    Ok(())
}

/// Domain separator of a device's signature over an uploaded batch.
pub const BATCH_SIGNATURE_DOMAIN: &str = "sase-audit-batch-v1";

/// Signature algorithm of batches signed with the device's TLS key (ECDSA P-256, SHA-256,
/// ASN.1 DER signature), the key the tenant CA certified at enrolment.
pub const ALG_ECDSA_P256_SHA256: &str = "ecdsa-p256-sha256";

/// Signature algorithm of batches signed with an Ed25519 device key.
pub const ALG_ED25519: &str = "ed25519";

/// A device's signature over one uploaded batch.
///
/// The device signs [`batch_signing_bytes`]: its tenant and id, the batch's first and last
/// sequence numbers and the chain hash of the last event. Because each event's hash covers the
/// previous one's, the signature vouches for the device's whole chain up to `last_seq`: a stored
/// event changed later (even with every following hash recomputed) no longer leads to the
/// signed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSignature {
    /// [`ALG_ECDSA_P256_SHA256`] or [`ALG_ED25519`].
    pub alg: String,
    /// The signature, base64.
    pub sig: String,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    domain: &'a str,
    tenant_id: &'a str,
    device_id: &'a str,
    first_seq: u64,
    last_seq: u64,
    last_hash: &'a str,
}

/// The bytes a device signs for a batch (canonical JSON with [`BATCH_SIGNATURE_DOMAIN`]).
pub fn batch_signing_bytes(
    tenant_id: &str,
    device_id: &str,
    first_seq: u64,
    last_seq: u64,
    last_hash: &str,
) -> Vec<u8> {
    let body = BatchBody {
        domain: BATCH_SIGNATURE_DOMAIN,
        tenant_id,
        device_id,
        first_seq,
        last_seq,
        last_hash,
    };
    // A struct of strings and integers always serialises.
    to_canonical_json(&body).unwrap_or_default()
}

/// Builds a device's chain as events are produced (used by the edge).
#[derive(Debug, Clone)]
pub struct ChainWriter {
    next_seq: u64,
    last_hash: String,
}

impl ChainWriter {
    /// Continues a chain whose last event was `(last_seq, last_hash)` (`(0, GENESIS_HASH)` for new).
    pub fn resume(last_seq: u64, last_hash: String) -> ChainWriter {
        ChainWriter {
            next_seq: last_seq + 1,
            last_hash,
        }
    }

    /// Fills `seq` and `prev_hash` of `event`, advances, and returns the event's hash.
    pub fn link(&mut self, event: &mut AuditEvent) -> String {
        event.seq = self.next_seq;
        event.prev_hash.clone_from(&self.last_hash);
        let hash = event.hash();
        self.next_seq += 1;
        self.last_hash.clone_from(&hash);
        hash
    }

    /// Sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_hash_is_lower_case_sha256_hex() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            line_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex_lower(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex_lower(&[]), "");
        let event = chain(1).remove(0);
        let bytes = to_canonical_json(&event).expect("canonical");
        assert_eq!(line_hash(&bytes), event.hash());
    }

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut writer = ChainWriter::resume(0, GENESIS_HASH.into());
        (0..n)
            .map(|i| {
                let mut event = AuditEvent {
                    seq: 0,
                    prev_hash: String::new(),
                    ts_ms: 1_000 + i as i64,
                    tenant_id: "t".into(),
                    device_id: "d".into(),
                    kind: EventKind::HttpRequest,
                    decision: Decision::Allow,
                    reason: Reason::Allowed,
                    reference: format!("r{i}"),
                    policy_version: 1,
                    identity: None,
                    http: Some(HttpDetails::default()),
                    detail: None,
                    waf: None,
                    quic: None,
                    tunnel: None,
                };
                writer.link(&mut event);
                event
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert!(verify_chain("d", &chain(5)).is_ok());
    }

    #[test]
    fn edit_delete_reorder_insert_are_each_detected_at_the_right_place() {
        let events = chain(5);
        let mut edited = events.clone();
        edited[2].reason = Reason::ScopeMissing;
        assert_eq!(verify_chain("d", &edited), Err(ChainError::Fork { seq: 4 }));

        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(
            verify_chain("d", &deleted),
            Err(ChainError::Gap {
                expected: 2,
                got: 3
            })
        );

        let mut reordered = events.clone();
        reordered.swap(1, 2);
        assert_eq!(
            verify_chain("d", &reordered),
            Err(ChainError::Gap {
                expected: 2,
                got: 3
            })
        );

        let mut inserted = events.clone();
        inserted.insert(2, events[1].clone());
        assert_eq!(
            verify_chain("d", &inserted),
            Err(ChainError::Duplicate { seq: 2 })
        );
    }

    #[test]
    fn stored_hash_mismatch_names_the_altered_record() {
        let events = chain(3);
        let mut stored: Vec<(AuditEvent, String)> =
            events.iter().map(|e| (e.clone(), e.hash())).collect();
        stored[2].0.decision = Decision::Deny;
        let mut verifier = ChainVerifier::new("d");
        assert_eq!(
            verify_chain_hashes(&mut verifier, &stored),
            Err(ChainError::HashMismatch { seq: 3 })
        );
    }

    #[test]
    fn resumed_verifier_continues_and_refuses_other_devices() {
        let events = chain(3);
        let mut verifier = ChainVerifier::resume("d", 2, events[1].hash());
        assert!(verifier.push(&events[2]).is_ok());
        let mut stray = events[2].clone();
        stray.device_id = "other".into();
        stray.seq = 4;
        assert_eq!(
            verifier.push(&stray),
            Err(ChainError::WrongDevice { seq: 4 })
        );
    }
}
