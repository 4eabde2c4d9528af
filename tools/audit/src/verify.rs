//! The export verifier: a pure function from parsed export lines and the control plane's public
//! key to a report of findings.
//!
//! Findings are ordered by how precisely they locate a change, then by position in the file:
//! structure (header, counts, checkpoint signatures), then per-event chain checks (content
//! hash, sequence, links — these name the altered record itself), then device batch signatures
//! (these name the range of records a signature no longer vouches for), then coverage by a
//! device signature, then inclusion in the signed checkpoint (an inclusion path is shared with
//! neighbouring leaves, so a failing proof says the log changed without always saying where).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use ed25519_dalek::VerifyingKey;
use sase_model::audit::{batch_signing_bytes, AuditEvent, GENESIS_HASH};
use sase_model::audit_export::{ExportRecord, EXPORT_FORMAT};
use sase_model::merkle::{leaf_hash, parse_hash, verify_inclusion, Hash, SignedTreeHead};
use sase_model::retention::RetentionRecord;

use crate::device_key::DeviceKey;

/// A file that is not an export at all.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct Malformed {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// How a finding locates the problem (lower sorts first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The file as a whole: header, counts, checkpoint signatures.
    Structure,
    /// One event: its hash, its sequence number, its link to the previous one.
    Chain,
    /// A device's batch signature.
    Signature,
    /// Events no device signature vouches for.
    Coverage,
    /// Inclusion in the signed checkpoint.
    Inclusion,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How it locates the problem.
    pub class: Class,
    /// 1-based line of the record at fault.
    pub line: usize,
    /// Device, when the problem belongs to one.
    pub device: Option<String>,
    /// First sequence number concerned.
    pub seq_from: Option<u64>,
    /// Last sequence number concerned (equal to `seq_from` for one record).
    pub seq_to: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(device) = &self.device {
            write!(f, "device={device} ")?;
        }
        match (self.seq_from, self.seq_to) {
            (Some(a), Some(b)) if a != b => write!(f, "seq={a}..{b} ")?,
            (Some(a), _) => write!(f, "seq={a} ")?,
            _ => {}
        }
        write!(f, "line={}: {}", self.line, self.what)
    }
}

/// What was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tenant of the export.
    pub tenant_id: String,
    /// Devices with events, and their first and last seq.
    pub devices: BTreeMap<String, (u64, u64)>,
    /// Event records.
    pub events: u64,
    /// Batch signatures that verified and match the events.
    pub batches_verified: u64,
    /// Batch records not checkable because their last event is outside the export.
    pub batches_outside: u64,
    /// The checkpoint used: size, root, time.
    pub checkpoint: Option<(u64, String, i64)>,
    /// Events accepted without a device signature (`--allow-unsigned`).
    pub unsigned_events: u64,
    /// Events deleted by retention, per the signed retention record (chains start after them).
    pub retention_deleted: u64,
}

/// The outcome.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What was checked.
    pub summary: Summary,
    /// Problems, most precise first.
    pub findings: Vec<Finding>,
}

/// Options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control plane's public key (checkpoint signatures).
    pub control_plane_key: VerifyingKey,
    /// Accept events that no device signature covers (uploads from edges older than batch
    /// signatures, or stored before them), reporting them only in the summary.
    pub allow_unsigned: bool,
}

/// Parses an export: one JSON record per non-empty line.
///
/// # Errors
/// The first line that is not an export record.
pub fn parse(text: &str) -> Result<Vec<(usize, ExportRecord)>, Malformed> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportRecord = serde_json::from_str(line).map_err(|e| Malformed {
            line: i + 1,
            message: format!("not an audit export record: {e}"),
        })?;
        out.push((i + 1, record));
    }
    if out.is_empty() {
        return Err(Malformed {
            line: 1,
            message: "empty file: not an audit export".into(),
        });
    }
    Ok(out)
}

struct EventLine<'a> {
    line: usize,
    seq: u64,
    hash: &'a str,
    log_index: Option<u64>,
    checkpoint_size: Option<u64>,
    proof: Option<&'a [String]>,
    event: &'a serde_json::Value,
}

struct BatchLine<'a> {
    line: usize,
    first_seq: u64,
    last_seq: u64,
    last_hash: &'a str,
    alg: &'a str,
    signature: &'a str,
}

/// Checks an export. Never panics on any input.
pub fn verify(records: &[(usize, ExportRecord)], options: &Options) -> Report {
    let mut report = Report::default();
    let mut findings = Vec::new();
    let structure = |line: usize, what: String| Finding {
        class: Class::Structure,
        line,
        device: None,
        seq_from: None,
        seq_to: None,
        what,
    };

    // ---- header, devices, checkpoints, batches, events, end ---------------------------------
    let mut tenant = String::new();
    let mut time_filtered = false;
    match records.first() {
        Some((
            _,
            ExportRecord::Header {
                format,
                tenant_id,
                from_ms,
                to_ms,
                ..
            },
        )) => {
            if format != EXPORT_FORMAT {
                findings.push(structure(
                    1,
                    format!("unknown export format {format:?} (expected {EXPORT_FORMAT})"),
                ));
            }
            tenant.clone_from(tenant_id);
            time_filtered = from_ms.is_some() || to_ms.is_some();
        }
        Some((line, _)) => {
            findings.push(structure(*line, "the first record is not a header".into()))
        }
        None => {}
    }
    report.summary.tenant_id.clone_from(&tenant);

    let mut keys: HashMap<&str, Option<DeviceKey>> = HashMap::new();
    let mut checkpoints: BTreeMap<u64, (usize, &SignedTreeHead, Option<Hash>)> = BTreeMap::new();
    let mut batches: BTreeMap<&str, Vec<BatchLine>> = BTreeMap::new();
    let mut device_order: Vec<&str> = Vec::new();
    let mut events: HashMap<&str, Vec<EventLine>> = HashMap::new();
    let mut counts = (0u64, 0u64, 0u64, 0u64); // events, batches, devices, checkpoints
    let mut end_seen = None;
    // The latest retention record that verifies: chains may start right after its points.
    let mut retention: Option<&RetentionRecord> = None;
    for (line, record) in records {
        if end_seen.is_some() {
            findings.push(structure(*line, "record after the end record".into()));
            break;
        }
        match record {
            ExportRecord::Header { .. } => {
                if *line != records[0].0 {
                    findings.push(structure(*line, "a second header".into()));
                }
            }
            ExportRecord::Device {
                device_id,
                tenant_id,
                key_alg,
                public_key,
                ..
            } => {
                counts.2 += 1;
                if *tenant_id != tenant {
                    findings.push(structure(
                        *line,
                        format!("device {device_id} belongs to tenant {tenant_id}, not {tenant}"),
                    ));
                }
                let key = match (key_alg, public_key) {
                    (Some(alg), Some(key)) => match DeviceKey::from_b64(alg, key) {
                        Ok(k) => Some(k),
                        Err(e) => {
                            findings.push(structure(
                                *line,
                                format!("device {device_id}: unusable public key: {e}"),
                            ));
                            None
                        }
                    },
                    _ => None,
                };
                keys.insert(device_id.as_str(), key);
            }
            ExportRecord::Checkpoint(head) => {
                counts.3 += 1;
                let root = match (head.verify(&options.control_plane_key), head.root()) {
                    (Ok(()), Ok(root)) if head.tenant_id == tenant => Some(root),
                    (Ok(()), Ok(_)) => {
                        findings.push(structure(
                            *line,
                            format!(
                                "checkpoint of size {} is for tenant {}, not {tenant}",
                                head.tree_size, head.tenant_id
                            ),
                        ));
                        None
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        findings.push(structure(
                            *line,
                            format!("checkpoint of size {}: {e}", head.tree_size),
                        ));
                        None
                    }
                };
                checkpoints.insert(head.tree_size, (*line, head, root));
            }
            ExportRecord::Retention(record) => match record.verify(&options.control_plane_key) {
                Ok(()) if record.tenant_id == tenant => {
                    if retention.is_none_or(|r| r.executed_at_ms < record.executed_at_ms) {
                        retention = Some(record);
                    }
                }
                Ok(()) => findings.push(structure(
                    *line,
                    format!(
                        "retention record {} is for tenant {}, not {tenant}",
                        record.id, record.tenant_id
                    ),
                )),
                Err(e) => findings.push(structure(
                    *line,
                    format!("retention record {}: {e}", record.id),
                )),
            },
            ExportRecord::Batch {
                device_id,
                first_seq,
                last_seq,
                last_hash,
                alg,
                signature,
            } => {
                counts.1 += 1;
                batches
                    .entry(device_id.as_str())
                    .or_default()
                    .push(BatchLine {
                        line: *line,
                        first_seq: *first_seq,
                        last_seq: *last_seq,
                        last_hash,
                        alg,
                        signature,
                    });
            }
            ExportRecord::Event {
                device_id,
                seq,
                hash,
                log_index,
                checkpoint_size,
                proof,
                event,
            } => {
                counts.0 += 1;
                let list = events.entry(device_id.as_str()).or_insert_with(|| {
                    device_order.push(device_id.as_str());
                    Vec::new()
                });
                list.push(EventLine {
                    line: *line,
                    seq: *seq,
                    hash,
                    log_index: *log_index,
                    checkpoint_size: *checkpoint_size,
                    proof: proof.as_deref(),
                    event,
                });
            }
            ExportRecord::End {
                events,
                batches,
                devices,
                checkpoints,
            } => {
                end_seen = Some(*line);
                if (*events, *batches, *devices, *checkpoints) != counts {
                    findings.push(structure(
                        *line,
                        format!(
                            "the end record announces {events} events, {batches} batches, {devices} devices and {checkpoints} checkpoints; the file holds {}, {}, {} and {} (records removed or added)",
                            counts.0, counts.1, counts.2, counts.3
                        ),
                    ));
                }
            }
        }
    }
    if end_seen.is_none() {
        let last = records.last().map_or(1, |(l, _)| *l);
        findings.push(structure(
            last,
            "no end record: the export is truncated".into(),
        ));
    }
    report.summary.events = counts.0;
    report.summary.retention_deleted =
        retention.map_or(0, |r| r.devices.iter().map(|d| d.through_seq).sum());

    // ---- per device: content hashes, sequence, links ------------------------------------------
    let mut leaf_owner: HashMap<u64, usize> = HashMap::new();
    let checkpoint_used = checkpoints
        .iter()
        .rev()
        .find(|(_, (_, _, root))| root.is_some())
        .map(|(size, (_, head, _))| (*size, head.root_hash.clone(), head.timestamp_ms));
    report.summary.checkpoint = checkpoint_used.clone();
    if counts.0 > 0 && checkpoint_used.is_none() {
        findings.push(Finding {
            class: Class::Inclusion,
            line: records.last().map_or(1, |(l, _)| *l),
            device: None,
            seq_from: None,
            seq_to: None,
            what: "no checkpoint signed by the given control-plane key: inclusion cannot be shown"
                .into(),
        });
    }
    for device in &device_order {
        let list = events.get(device).map(Vec::as_slice).unwrap_or_default();
        let at = |line: usize, class: Class, a: u64, b: u64, what: String| Finding {
            class,
            line,
            device: Some((*device).to_string()),
            seq_from: Some(a),
            seq_to: Some(b),
            what,
        };
        let present: BTreeSet<u64> = list.iter().map(|e| e.seq).collect();
        // seq -> (line, recomputed hash), for events that parse.
        let mut computed: BTreeMap<u64, (usize, String)> = BTreeMap::new();
        let mut prev: Option<(u64, Option<String>)> = None;
        for e in list {
            let parsed: Result<AuditEvent, _> = serde_json::from_value(e.event.clone());
            let hash = match &parsed {
                Ok(ev) => Some(ev.hash()),
                Err(err) => {
                    findings.push(at(
                        e.line,
                        Class::Chain,
                        e.seq,
                        e.seq,
                        format!("the stored event does not parse as an audit event: {err}"),
                    ));
                    None
                }
            };
            if let Ok(ev) = &parsed {
                if ev.seq != e.seq || ev.device_id != *device {
                    findings.push(at(
                        e.line,
                        Class::Chain,
                        e.seq,
                        e.seq,
                        format!(
                            "stored under device {device} seq {} but the event itself says device {} seq {} (moved)",
                            e.seq, ev.device_id, ev.seq
                        ),
                    ));
                }
                if ev.tenant_id != tenant {
                    findings.push(at(
                        e.line,
                        Class::Chain,
                        e.seq,
                        e.seq,
                        format!("the event belongs to tenant {}", ev.tenant_id),
                    ));
                }
            }
            if let Some(h) = &hash {
                if h != e.hash {
                    findings.push(at(
                        e.line,
                        Class::Chain,
                        e.seq,
                        e.seq,
                        format!(
                            "content altered after ingest: the event hashes to {h}, the hash recorded at ingest is {}",
                            e.hash
                        ),
                    ));
                }
            }
            let own_prev = parsed.as_ref().ok().map(|ev| ev.prev_hash.as_str());
            match &prev {
                None => {
                    let pruned = retention.and_then(|r| r.device(device));
                    if let Some(pruned) =
                        pruned.filter(|p| p.through_seq.checked_add(1) == Some(e.seq))
                    {
                        // The chain was deleted by retention up to here: it must continue from
                        // the hash the signed record names.
                        if own_prev.is_some_and(|p| p != pruned.through_hash) {
                            findings.push(at(
                                e.line,
                                Class::Chain,
                                e.seq,
                                e.seq,
                                format!(
                                    "does not link to seq {}, deleted by retention: its prev_hash is not the hash the signed retention record names",
                                    pruned.through_seq
                                ),
                            ));
                        }
                    } else if e.seq == 1 {
                        if own_prev.is_some_and(|p| p != GENESIS_HASH) {
                            findings.push(at(
                                e.line,
                                Class::Chain,
                                1,
                                1,
                                "the first event does not start from the genesis hash".into(),
                            ));
                        }
                    } else if !time_filtered {
                        let from = pruned.map_or(1, |p| p.through_seq.saturating_add(1));
                        findings.push(at(
                            e.line,
                            Class::Chain,
                            from,
                            e.seq.saturating_sub(1),
                            format!(
                                "missing: the device's chain starts at seq {} instead of {from}",
                                e.seq
                            ),
                        ));
                    }
                }
                Some((p, p_hash)) => {
                    let p = *p;
                    if p.checked_add(1) == Some(e.seq) {
                        if let (Some(own), Some(ph)) = (own_prev, p_hash) {
                            if own != ph {
                                findings.push(at(
                                    e.line,
                                    Class::Chain,
                                    e.seq,
                                    e.seq,
                                    format!(
                                        "does not link to seq {p}: its prev_hash is not the hash of the stored seq {p} (inserted, replaced or rewritten history)"
                                    ),
                                ));
                            }
                        }
                    } else if e.seq <= p {
                        findings.push(at(
                            e.line,
                            Class::Chain,
                            e.seq,
                            e.seq,
                            if e.seq == p {
                                format!("seq {p} appears twice")
                            } else {
                                format!("out of order: seq {} is stored after seq {p}", e.seq)
                            },
                        ));
                    } else if present.range(p.saturating_add(1)..e.seq).next().is_some() {
                        findings.push(at(
                            e.line,
                            Class::Chain,
                            p.saturating_add(1),
                            e.seq,
                            format!(
                                "out of order: seq {} is stored before seq {} (reordered)",
                                e.seq,
                                p.saturating_add(1)
                            ),
                        ));
                    } else {
                        findings.push(at(
                            e.line,
                            Class::Chain,
                            p.saturating_add(1),
                            e.seq.saturating_sub(1),
                            format!("missing: seq {p} is followed by seq {} (deleted)", e.seq),
                        ));
                    }
                }
            }
            if let Some(h) = &hash {
                computed.entry(e.seq).or_insert((e.line, h.clone()));
            }
            // Continue from the highest seq seen so that one problem is reported once.
            if prev.as_ref().is_none_or(|(p, _)| e.seq > *p) {
                prev = Some((e.seq, hash.clone()));
            }

            // Inclusion in the checkpoint.
            let Some(h) = hash.as_deref().and_then(parse_hash) else {
                continue;
            };
            let checkpoint = e
                .checkpoint_size
                .and_then(|s| checkpoints.get(&s))
                .and_then(|(_, head, root)| root.map(|r| (head.tree_size, r)));
            match (e.log_index, e.proof, checkpoint) {
                (Some(index), Some(proof), Some((size, root))) => {
                    if let Some(other) = leaf_owner.insert(index, e.line) {
                        findings.push(at(
                            e.line,
                            Class::Inclusion,
                            e.seq,
                            e.seq,
                            format!("claims log position {index}, as does line {other}"),
                        ));
                    }
                    let proof: Option<Vec<Hash>> = proof.iter().map(|p| parse_hash(p)).collect();
                    let ok = proof.is_some_and(|proof| {
                        verify_inclusion(&leaf_hash(&h), index, size, &proof, &root)
                    });
                    if !ok {
                        findings.push(at(
                            e.line,
                            Class::Inclusion,
                            e.seq,
                            e.seq,
                            format!(
                                "not included at log position {index} of the signed checkpoint of size {size}: the proof does not lead to the signed root"
                            ),
                        ));
                    }
                }
                _ if checkpoint_used.is_some() => findings.push(at(
                    e.line,
                    Class::Inclusion,
                    e.seq,
                    e.seq,
                    "not covered by any signed checkpoint in the export".into(),
                )),
                _ => {}
            }
        }
        if let (Some(first), Some(last)) = (present.first(), present.last()) {
            report
                .summary
                .devices
                .insert((*device).to_string(), (*first, *last));
        }

        // ---- device batch signatures and coverage ---------------------------------------------
        let key = keys.get(device).cloned().flatten();
        let mut list_b: Vec<&BatchLine> = batches
            .get(device)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        list_b.sort_by_key(|b| (b.last_seq, b.line));
        let first_seq = present.first().copied().unwrap_or(1);
        let mut covered_to: u64 = first_seq.saturating_sub(1);
        for b in list_b {
            let Some((event_line, hash)) = computed.get(&b.last_seq) else {
                report.summary.batches_outside += 1;
                continue;
            };
            let from = covered_to.saturating_add(1);
            let Some(key) = &key else {
                findings.push(at(
                    b.line,
                    Class::Signature,
                    from,
                    b.last_seq,
                    "the export carries no public key for this device: its batch signatures cannot be checked".into(),
                ));
                break;
            };
            let message =
                batch_signing_bytes(&tenant, device, b.first_seq, b.last_seq, b.last_hash);
            if let Err(e) = key.verify(b.alg, &message, b.signature) {
                findings.push(at(
                    b.line,
                    Class::Signature,
                    from,
                    b.last_seq,
                    format!(
                        "batch seq {}..{}: {e} (batch record forged or altered)",
                        b.first_seq, b.last_seq
                    ),
                ));
                continue;
            }
            if hash != b.last_hash {
                findings.push(at(
                    *event_line,
                    Class::Signature,
                    from.min(b.last_seq),
                    b.last_seq,
                    format!(
                        "the stored events no longer lead to the hash the device signed for batch seq {}..{}: an event in seq {}..{} was altered after ingest (chain rewritten)",
                        b.first_seq, b.last_seq, from.min(b.last_seq), b.last_seq
                    ),
                ));
                continue;
            }
            report.summary.batches_verified += 1;
            covered_to = covered_to.max(b.last_seq);
        }
        let uncovered: Vec<&EventLine> = list.iter().filter(|e| e.seq > covered_to).collect();
        if let (Some(a), Some(b)) = (uncovered.first(), uncovered.last()) {
            if options.allow_unsigned {
                report.summary.unsigned_events += uncovered.len() as u64;
            } else {
                findings.push(at(
                    a.line,
                    Class::Coverage,
                    a.seq,
                    b.seq,
                    "not covered by any device-signed batch (forged, or uploaded by an edge that does not sign batches; see --allow-unsigned)".into(),
                ));
            }
        }
    }
    findings.sort_by_key(|f| (f.class, f.line));
    report.findings = findings;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use ed25519_dalek::SigningKey;
    use ring::signature::KeyPair as _;
    use sase_model::audit::{ChainWriter, Decision, EventKind, ALG_ECDSA_P256_SHA256};
    use sase_model::merkle::MerkleTree;
    use sase_model::Reason;

    struct Fixture {
        cp: SigningKey,
        records: Vec<ExportRecord>,
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// An export of one device with `n` events in batches of 4, all in one checkpoint.
    fn fixture(n: u64) -> Fixture {
        let cp = SigningKey::from_bytes(&[3u8; 32]);
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("keygen");
        let device =
            ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
        let mut writer = ChainWriter::resume(0, GENESIS_HASH.into());
        let events: Vec<(AuditEvent, String)> = (0..n)
            .map(|i| {
                let mut e = AuditEvent {
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
                    http: None,
                    detail: None,
                    waf: None,
                    quic: None,
                    tunnel: None,
                };
                let h = writer.link(&mut e);
                (e, h)
            })
            .collect();
        let leaves: Vec<Hash> = events
            .iter()
            .map(|(_, h)| leaf_hash(&parse_hash(h).expect("hex")))
            .collect();
        let tree = MerkleTree::from_leaf_hashes(leaves);
        let head = SignedTreeHead::sign("t", n, &tree.root(), 5_000, &cp);
        let mut records = vec![
            ExportRecord::Header {
                format: EXPORT_FORMAT.into(),
                tenant_id: "t".into(),
                generated_at_ms: 6_000,
                device: None,
                from_ms: None,
                to_ms: None,
            },
            ExportRecord::Device {
                device_id: "d".into(),
                tenant_id: "t".into(),
                name: "edge".into(),
                key_alg: Some(ALG_ECDSA_P256_SHA256.into()),
                public_key: Some(b64(device.public_key().as_ref())),
                certificate_pem: None,
            },
            ExportRecord::Checkpoint(head),
        ];
        let mut batches = 0;
        for chunk in events.chunks(4) {
            let (first, last) = (&chunk[0].0, &chunk[chunk.len() - 1]);
            let msg = batch_signing_bytes("t", "d", first.seq, last.0.seq, &last.1);
            let sig = device.sign(&rng, &msg).expect("sign");
            records.push(ExportRecord::Batch {
                device_id: "d".into(),
                first_seq: first.seq,
                last_seq: last.0.seq,
                last_hash: last.1.clone(),
                alg: ALG_ECDSA_P256_SHA256.into(),
                signature: b64(sig.as_ref()),
            });
            batches += 1;
        }
        for (i, (e, h)) in events.iter().enumerate() {
            records.push(ExportRecord::Event {
                device_id: "d".into(),
                seq: e.seq,
                hash: h.clone(),
                log_index: Some(i as u64),
                checkpoint_size: Some(n),
                proof: tree
                    .inclusion_proof(i as u64)
                    .map(|p| p.iter().map(hex::encode).collect()),
                event: serde_json::to_value(e).expect("json"),
            });
        }
        records.push(ExportRecord::End {
            events: n,
            batches,
            devices: 1,
            checkpoints: 1,
        });
        Fixture { cp, records }
    }

    fn run(f: &Fixture) -> Report {
        let lines: Vec<(usize, ExportRecord)> = f
            .records
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| (i + 1, r))
            .collect();
        verify(
            &lines,
            &Options {
                control_plane_key: f.cp.verifying_key(),
                allow_unsigned: false,
            },
        )
    }

    fn event_mut(f: &mut Fixture, seq: u64) -> &mut ExportRecord {
        f.records
            .iter_mut()
            .find(|r| matches!(r, ExportRecord::Event { seq: s, .. } if *s == seq))
            .expect("event")
    }

    fn first(report: &Report) -> &Finding {
        report.findings.first().expect("a finding")
    }

    #[test]
    fn intact_export_verifies() {
        let report = run(&fixture(10));
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.summary.batches_verified, 3);
        assert_eq!(report.summary.devices.get("d"), Some(&(1, 10)));
    }

    #[test]
    fn an_edited_field_is_named_by_seq() {
        let mut f = fixture(10);
        if let ExportRecord::Event { event, .. } = event_mut(&mut f, 5) {
            event["decision"] = "deny".into();
        }
        let report = run(&f);
        let bad = first(&report);
        assert_eq!((bad.class, bad.seq_from), (Class::Chain, Some(5)), "{bad}");
        assert!(bad.what.contains("content altered"), "{bad}");
    }

    #[test]
    fn a_deleted_event_is_named() {
        let mut f = fixture(10);
        f.records
            .retain(|r| !matches!(r, ExportRecord::Event { seq: 6, .. }));
        if let Some(ExportRecord::End { events, .. }) = f.records.last_mut() {
            *events = 9;
        }
        let bad = first(&run(&f)).clone();
        assert_eq!(bad.seq_from, Some(6), "{bad}");
        assert!(bad.what.contains("missing"), "{bad}");
    }

    #[test]
    fn reordered_events_are_named() {
        let mut f = fixture(10);
        let a = f
            .records
            .iter()
            .position(|r| matches!(r, ExportRecord::Event { seq: 3, .. }))
            .expect("3");
        f.records.swap(a, a + 1);
        let bad = first(&run(&f)).clone();
        assert_eq!(bad.seq_from, Some(3), "{bad}");
        assert!(bad.what.contains("out of order"), "{bad}");
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_the_device_signature() {
        let mut f = fixture(10);
        // Alter seq 6 and recompute every following hash and link, consistently.
        let mut events: Vec<AuditEvent> = f
            .records
            .iter()
            .filter_map(|r| match r {
                ExportRecord::Event { event, .. } => serde_json::from_value(event.clone()).ok(),
                _ => None,
            })
            .collect();
        events[5].decision = Decision::Deny;
        let mut prev = events[4].hash();
        for e in events.iter_mut().skip(5) {
            e.prev_hash = prev;
            prev = e.hash();
        }
        for e in &events {
            if let ExportRecord::Event { event, hash, .. } = event_mut(&mut f, e.seq) {
                *event = serde_json::to_value(e).expect("json");
                *hash = e.hash();
            }
        }
        let bad = first(&run(&f)).clone();
        assert_eq!(bad.class, Class::Signature, "{bad}");
        assert!(
            bad.seq_from <= Some(6) && bad.seq_to >= Some(6) && bad.seq_from > Some(4),
            "{bad}"
        );
    }

    #[test]
    fn a_forged_appended_event_is_not_covered_by_a_device_signature() {
        let mut f = fixture(8);
        let last: AuditEvent = match event_mut(&mut f, 8) {
            ExportRecord::Event { event, .. } => serde_json::from_value(event.clone()).expect("ev"),
            _ => unreachable!(),
        };
        let mut forged = last.clone();
        forged.seq = 9;
        forged.prev_hash = last.hash();
        forged.reference = "forged".into();
        let end = f.records.pop();
        f.records.push(ExportRecord::Event {
            device_id: "d".into(),
            seq: 9,
            hash: forged.hash(),
            log_index: None,
            checkpoint_size: None,
            proof: None,
            event: serde_json::to_value(&forged).expect("json"),
        });
        if let Some(ExportRecord::End {
            events,
            batches,
            devices,
            checkpoints,
        }) = end
        {
            f.records.push(ExportRecord::End {
                events: events + 1,
                batches,
                devices,
                checkpoints,
            });
        }
        let bad = first(&run(&f)).clone();
        assert_eq!(
            (bad.class, bad.seq_from),
            (Class::Coverage, Some(9)),
            "{bad}"
        );
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_and_truncation_are_reported() {
        let mut f = fixture(4);
        f.cp = SigningKey::from_bytes(&[4u8; 32]);
        let report = run(&f);
        assert_eq!(first(&report).class, Class::Structure);
        let mut f = fixture(4);
        f.records.pop();
        assert!(first(&run(&f)).what.contains("truncated"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(parse("").is_err());
        assert!(parse("{\"type\":\"nope\"}").is_err());
        let err = parse("{\"type\":\"end\",\"events\":0,\"batches\":0,\"devices\":0,\"checkpoints\":0}\nnot json")
            .expect_err("bad line");
        assert_eq!(err.line, 2);
        // Records in a senseless order still produce findings, never a panic.
        let lines = parse("{\"type\":\"end\",\"events\":1,\"batches\":0,\"devices\":0,\"checkpoints\":0}\n{\"type\":\"event\",\"device_id\":\"d\",\"seq\":1,\"hash\":\"zz\",\"event\":{}}").expect("parses");
        let report = verify(
            &lines,
            &Options {
                control_plane_key: SigningKey::from_bytes(&[1u8; 32]).verifying_key(),
                allow_unsigned: false,
            },
        );
        assert!(!report.findings.is_empty());
    }

    /// The fixture with events 1..=k removed as retention would, and (when `signed_by` is
    /// given) the retention record saying so.
    fn pruned(n: u64, k: u64, signed_by: Option<&SigningKey>, hash_of: Option<u64>) -> Fixture {
        let mut f = fixture(n);
        let hash = |f: &Fixture, seq: u64| {
            f.records
                .iter()
                .find_map(|r| match r {
                    ExportRecord::Event { seq: s, hash, .. } if *s == seq => Some(hash.clone()),
                    _ => None,
                })
                .expect("hash")
        };
        let through_hash = hash(&f, hash_of.unwrap_or(k));
        f.records
            .retain(|r| !matches!(r, ExportRecord::Event { seq, .. } if *seq <= k));
        if let Some(ExportRecord::End { events, .. }) = f.records.last_mut() {
            *events = n - k;
        }
        if let Some(key) = signed_by {
            let mut record = RetentionRecord {
                id: "ret-1".into(),
                tenant_id: "t".into(),
                months: 18,
                cutoff_ms: 1_000 + k as i64,
                executed_at_ms: 5_500,
                deleted_events: k,
                devices: vec![sase_model::retention::PrunedChain {
                    device_id: "d".into(),
                    through_seq: k,
                    through_hash,
                }],
                tree_size: n,
                root_hash: String::new(),
                signature: String::new(),
            };
            record.sign(key);
            f.records.insert(3, ExportRecord::Retention(record));
        }
        f
    }

    #[test]
    fn chains_may_start_after_a_signed_retention_record() {
        let f = pruned(12, 5, Some(&SigningKey::from_bytes(&[3u8; 32])), None);
        let report = run(&f);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.summary.retention_deleted, 5);
        assert_eq!(report.summary.events, 7);
    }

    #[test]
    fn a_missing_forged_or_mismatched_retention_record_is_reported() {
        // No record: the start is missing events.
        let report = run(&pruned(12, 5, None, None));
        assert_eq!(first(&report).seq_from, Some(1), "{}", first(&report));
        // Signed by another key: refused, and the start is missing events.
        let report = run(&pruned(
            12,
            5,
            Some(&SigningKey::from_bytes(&[4u8; 32])),
            None,
        ));
        assert!(report
            .findings
            .iter()
            .any(|f| f.what.contains("retention record ret-1")));
        // A record naming another hash: the first kept event does not link to it.
        let report = run(&pruned(
            12,
            5,
            Some(&SigningKey::from_bytes(&[3u8; 32])),
            Some(4),
        ));
        let finding = first(&report);
        assert_eq!(finding.seq_from, Some(6), "{finding}");
        assert!(finding.what.contains("deleted by retention"), "{finding}");
    }
}
