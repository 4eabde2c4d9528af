//! Audit retention: which events have expired, and the signed record of what a retention run
//! deleted.
//!
//! A tenant keeps its trail for `months` calendar months (default [`DEFAULT_MONTHS`], 18). The
//! unit of deletion is a whole calendar month (UTC): a month has expired once `months` further
//! months have fully passed, so the [`cutoff_ms`] is the start of the month `months` before
//! the current one, and only events strictly older than it may go.
//!
//! A run deletes, per device, the longest prefix of the device's chain older than the cutoff
//! (an event that is older but follows a newer one — a clock step — waits for its neighbours:
//! retention never opens a hole in a chain). What stays of a deleted event is its chain hash
//! and log position: the Merkle log and the signed checkpoints are unchanged, and the next
//! kept event still links to it. The run is recorded in a [`RetentionRecord`] signed with the
//! control plane's key: per device, the chain is deleted through `through_seq`, whose hash is
//! `through_hash`. `sase-audit verify` accepts an export whose chains start after that point
//! only with such a record.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::to_canonical_json;

/// Default retention: 18 months.
pub const DEFAULT_MONTHS: u32 = 18;

/// Shortest and longest retention a tenant may set (months).
pub const MONTHS_RANGE: std::ops::RangeInclusive<u32> = 1..=120;

/// Domain separator of a signed retention record.
pub const RETENTION_DOMAIN: &str = "sase-audit-retention-v1";

/// Start (Unix ms) of the calendar month (UTC) `months` before the month of `now_ms`: events
/// older than this lie in months whose retention has fully passed.
pub fn cutoff_ms(now_ms: i64, months: u32) -> i64 {
    let Ok(now) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
    else {
        return i64::MIN;
    };
    let index =
        i64::from(now.year()) * 12 + i64::from(u8::from(now.month())) - 1 - i64::from(months);
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(i32::MIN);
    let month = u8::try_from(index.rem_euclid(12) + 1).unwrap_or(1);
    let Ok(month) = time::Month::try_from(month) else {
        return i64::MIN;
    };
    match time::Date::from_calendar_date(year, month, 1) {
        Ok(date) => {
            let start = date.midnight().assume_utc();
            i64::try_from(start.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MIN)
        }
        Err(_) => i64::MIN,
    }
}

/// How far a device's chain has been deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunedChain {
    /// Device.
    pub device_id: String,
    /// Events with `seq <= through_seq` are deleted.
    pub through_seq: u64,
    /// Chain hash of event `through_seq` (the next kept event's `prev_hash`).
    pub through_hash: String,
}

/// What a retention run deleted, signed by the control plane. Cumulative: `devices` holds the
/// state of every device of the tenant with deleted events after this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRecord {
    /// Record id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Retention in force (months).
    pub months: u32,
    /// Events older than this (Unix ms, a month boundary) were eligible.
    pub cutoff_ms: i64,
    /// When the run happened (Unix ms).
    pub executed_at_ms: i64,
    /// Events deleted by this run.
    pub deleted_events: u64,
    /// Per device, how far its chain is deleted (all runs so far).
    pub devices: Vec<PrunedChain>,
    /// Size of the tenant's log when the run happened (unchanged by it: hashes stay).
    pub tree_size: u64,
    /// Root of that log, hex (equal to the signed checkpoint of that size).
    pub root_hash: String,
    /// Ed25519 signature over [`RetentionRecord::signing_bytes`], base64.
    pub signature: String,
}

#[derive(Serialize)]
struct Body<'a> {
    domain: &'a str,
    id: &'a str,
    tenant_id: &'a str,
    months: u32,
    cutoff_ms: i64,
    executed_at_ms: i64,
    deleted_events: u64,
    devices: &'a [PrunedChain],
    tree_size: u64,
    root_hash: &'a str,
}

/// Why a retention record does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// Not base64 of 64 bytes.
    #[error("the retention record signature is malformed")]
    MalformedSignature,
    /// Does not verify.
    #[error("the retention record signature does not verify with the control-plane key")]
    BadSignature,
}

impl RetentionRecord {
    /// The bytes that are signed: canonical JSON of every field but the signature, with
    /// [`RETENTION_DOMAIN`].
    pub fn signing_bytes(&self) -> Vec<u8> {
        let body = Body {
            domain: RETENTION_DOMAIN,
            id: &self.id,
            tenant_id: &self.tenant_id,
            months: self.months,
            cutoff_ms: self.cutoff_ms,
            executed_at_ms: self.executed_at_ms,
            deleted_events: self.deleted_events,
            devices: &self.devices,
            tree_size: self.tree_size,
            root_hash: &self.root_hash,
        };
        // Strings, numbers and a list of plain structs always serialise.
        to_canonical_json(&body).unwrap_or_default()
    }

    /// Signs (sets `signature`).
    pub fn sign(&mut self, key: &SigningKey) {
        let signature = key.sign(&self.signing_bytes());
        self.signature = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
    }

    /// Checks the signature.
    ///
    /// # Errors
    /// Malformed or not matching `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), RetentionError> {
        let bytes: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| RetentionError::MalformedSignature)?
            .try_into()
            .map_err(|_| RetentionError::MalformedSignature)?;
        key.verify(&self.signing_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| RetentionError::BadSignature)
    }

    /// How far `device_id`'s chain is deleted, if at all.
    pub fn device(&self, device_id: &str) -> Option<&PrunedChain> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, m: u8, d: u8) -> i64 {
        let date = time::Date::from_calendar_date(y, time::Month::try_from(m).expect("month"), d)
            .expect("date");
        i64::try_from(date.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000)
            .expect("range")
    }

    #[test]
    fn the_cutoff_is_a_month_boundary_months_back() {
        // 23 Nov 2026, 18 months: April 2025 is the last whole expired month.
        assert_eq!(cutoff_ms(ms(2026, 11, 23) + 3_600_000, 18), ms(2025, 5, 1));
        // Across a year boundary, and at the very start of a month.
        assert_eq!(cutoff_ms(ms(2026, 2, 1), 3), ms(2025, 11, 1));
        assert_eq!(cutoff_ms(ms(2026, 1, 31), 1), ms(2025, 12, 1));
        assert_eq!(cutoff_ms(ms(2026, 1, 1), 12), ms(2025, 1, 1));
    }

    #[test]
    fn records_verify_and_any_change_breaks_them() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let mut r = RetentionRecord {
            id: "r1".into(),
            tenant_id: "t".into(),
            months: 18,
            cutoff_ms: 5,
            executed_at_ms: 9,
            deleted_events: 2,
            devices: vec![PrunedChain {
                device_id: "d".into(),
                through_seq: 2,
                through_hash: "ab".repeat(32),
            }],
            tree_size: 4,
            root_hash: "cd".repeat(32),
            signature: String::new(),
        };
        r.sign(&key);
        assert_eq!(r.verify(&key.verifying_key()), Ok(()));
        assert_eq!(r.device("d").map(|d| d.through_seq), Some(2));
        let mut changed = r.clone();
        changed.devices[0].through_seq = 3;
        assert_eq!(
            changed.verify(&key.verifying_key()),
            Err(RetentionError::BadSignature)
        );
        changed.signature = "x".into();
        assert_eq!(
            changed.verify(&key.verifying_key()),
            Err(RetentionError::MalformedSignature)
        );
    }
}
