//! Firmware update bundles of the appliance image, and the update messages of the channel.
//!
//! A bundle is one file: the magic `SASEUPD1`, a 4-byte big-endian header length, the header
//! (JSON [`SignedManifest`]: the canonical JSON of an [`UpdateManifest`] signed with the
//! vendor's Ed25519 key) and the payload (a root filesystem image for an A/B slot). The
//! manifest names the payload's size and SHA-256, so one signature covers everything.
//!
//! Trust: the edge verifies with the vendor key baked into its image, never with a key from the
//! control plane: the control plane only stores and offers bundles, and cannot make a device
//! run firmware the vendor did not sign. Nothing in the header is trusted before the signature
//! is checked; the payload is hashed while it is read and written (by the caller, which owns
//! the I/O) and compared with [`UpdateManifest::check_payload`].

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bundle::key_id;
use crate::canonical::to_canonical_json;

/// First bytes of every update bundle.
pub const MAGIC: &[u8; 8] = b"SASEUPD1";
/// Largest header accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Bytes before the header: magic and length.
pub const PREFIX_BYTES: usize = 12;
/// The product every bundle for this image must name.
pub const PRODUCT: &str = "sase-edge-appliance";

/// What the vendor signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateManifest {
    /// Always [`PRODUCT`].
    pub product: String,
    /// CPU architecture of the payload (`x86_64`).
    pub arch: String,
    /// Monotonic image version (build number); a device never installs one that is not newer.
    pub version: u64,
    /// Human label (e.g. `2026.11-2`).
    pub label: String,
    /// The kernel release the root filesystem's modules belong to (the kernel itself is not
    /// slotted: it must stay the one the device boots).
    pub kernel_release: String,
    /// Payload size in bytes.
    pub payload_size: u64,
    /// SHA-256 of the payload, lowercase hex.
    pub payload_sha256: String,
    /// When the vendor built it (Unix milliseconds).
    pub created_at_ms: i64,
}

/// A manifest and the vendor's signature over its canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// Canonical JSON of the [`UpdateManifest`], base64.
    pub manifest: String,
    /// Ed25519 signature over the manifest bytes, base64.
    pub signature: String,
    /// Key id of the signer (diagnostics only; never used to choose a key).
    pub key_id: String,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// Not an update bundle (magic, lengths, JSON, base64).
    #[error("malformed update bundle: {0}")]
    Malformed(String),
    /// The signature does not verify with the vendor key.
    #[error("update signature does not verify with the vendor key")]
    BadSignature,
    /// The payload differs from what the manifest names (size or SHA-256).
    #[error("update payload does not match its signed manifest: {0}")]
    PayloadMismatch(String),
    /// Signed, but not installable on this device.
    #[error("update not applicable: {0}")]
    NotApplicable(String),
}

impl UpdateError {
    /// Whether this refusal means someone changed signed content (as opposed to a bundle that
    /// is merely unsuitable or unreadable).
    pub fn is_tampering(&self) -> bool {
        matches!(
            self,
            UpdateError::BadSignature | UpdateError::PayloadMismatch(_)
        )
    }
}

impl SignedManifest {
    /// Signs a manifest with the vendor key.
    ///
    /// # Errors
    /// Only if the manifest cannot be serialised.
    pub fn sign(
        manifest: &UpdateManifest,
        key: &SigningKey,
    ) -> Result<SignedManifest, UpdateError> {
        let bytes =
            to_canonical_json(manifest).map_err(|e| UpdateError::Malformed(e.to_string()))?;
        Ok(SignedManifest {
            manifest: B64.encode(&bytes),
            signature: B64.encode(key.sign(&bytes).to_bytes()),
            key_id: key_id(&key.verifying_key()),
        })
    }

    /// Verifies the signature with the vendor key, then parses the manifest.
    ///
    /// # Errors
    /// [`UpdateError::Malformed`] or [`UpdateError::BadSignature`].
    pub fn verify(&self, key: &VerifyingKey) -> Result<UpdateManifest, UpdateError> {
        let bytes = B64
            .decode(&self.manifest)
            .map_err(|e| UpdateError::Malformed(format!("manifest: {e}")))?;
        let sig: [u8; 64] = B64
            .decode(&self.signature)
            .map_err(|e| UpdateError::Malformed(format!("signature: {e}")))?
            .try_into()
            .map_err(|_| UpdateError::Malformed("signature must be 64 bytes".into()))?;
        key.verify(&bytes, &Signature::from_bytes(&sig))
            .map_err(|_| UpdateError::BadSignature)?;
        serde_json::from_slice(&bytes).map_err(|e| UpdateError::Malformed(format!("manifest: {e}")))
    }

    /// The manifest without checking the signature: for display by the control plane and
    /// tools only, never for a decision on a device.
    ///
    /// # Errors
    /// When it does not parse.
    pub fn unverified(&self) -> Result<UpdateManifest, UpdateError> {
        let bytes = B64
            .decode(&self.manifest)
            .map_err(|e| UpdateError::Malformed(format!("manifest: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| UpdateError::Malformed(format!("manifest: {e}")))
    }

    /// The bytes that precede the payload in a bundle file: magic, length, header JSON.
    ///
    /// # Errors
    /// When the header would exceed [`MAX_HEADER_BYTES`].
    pub fn encode_prefix(&self) -> Result<Vec<u8>, UpdateError> {
        let json = serde_json::to_vec(self).map_err(|e| UpdateError::Malformed(e.to_string()))?;
        if json.len() > MAX_HEADER_BYTES {
            return Err(UpdateError::Malformed("header too large".into()));
        }
        let len = u32::try_from(json.len())
            .map_err(|_| UpdateError::Malformed("header too large".into()))?;
        let mut out = Vec::with_capacity(PREFIX_BYTES + json.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&json);
        Ok(out)
    }
}

/// The header length announced by the first [`PREFIX_BYTES`] bytes of a bundle.
///
/// # Errors
/// Wrong magic, or a length over [`MAX_HEADER_BYTES`].
pub fn header_len(prefix: &[u8]) -> Result<usize, UpdateError> {
    if prefix.len() < PREFIX_BYTES || &prefix[..8] != MAGIC {
        return Err(UpdateError::Malformed(
            "not an update bundle (magic)".into(),
        ));
    }
    let len = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize;
    if len == 0 || len > MAX_HEADER_BYTES {
        return Err(UpdateError::Malformed(format!(
            "header length {len} out of range"
        )));
    }
    Ok(len)
}

/// Decodes the header of a bundle from its first bytes (at least the prefix and the header);
/// returns it and the offset where the payload starts.
///
/// # Errors
/// [`UpdateError::Malformed`].
pub fn decode_header(bytes: &[u8]) -> Result<(SignedManifest, usize), UpdateError> {
    let len = header_len(bytes)?;
    let end = PREFIX_BYTES + len;
    let json = bytes
        .get(PREFIX_BYTES..end)
        .ok_or_else(|| UpdateError::Malformed("truncated header".into()))?;
    let header: SignedManifest =
        serde_json::from_slice(json).map_err(|e| UpdateError::Malformed(format!("header: {e}")))?;
    Ok((header, end))
}

/// What a device runs, to decide whether a verified manifest is installable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningImage {
    /// Image version running now.
    pub version: u64,
    /// CPU architecture.
    pub arch: String,
    /// Kernel release booted.
    pub kernel_release: String,
    /// Largest payload a slot holds, in bytes.
    pub slot_bytes: u64,
}

impl UpdateManifest {
    /// Whether this (verified) manifest may be installed on `running`.
    ///
    /// # Errors
    /// [`UpdateError::NotApplicable`] naming the first mismatch.
    pub fn check_applicable(&self, running: &RunningImage) -> Result<(), UpdateError> {
        let no = |why: String| Err(UpdateError::NotApplicable(why));
        if self.product != PRODUCT {
            return no(format!("product {:?} is not {PRODUCT}", self.product));
        }
        if self.arch != running.arch {
            return no(format!(
                "architecture {} is not {}",
                self.arch, running.arch
            ));
        }
        if self.version <= running.version {
            return no(format!(
                "version {} is not newer than the running version {}",
                self.version, running.version
            ));
        }
        if self.kernel_release != running.kernel_release {
            return no(format!(
                "built for kernel {}, the device boots {}",
                self.kernel_release, running.kernel_release
            ));
        }
        if self.payload_size > running.slot_bytes {
            return no(format!(
                "payload of {} bytes does not fit a slot of {} bytes",
                self.payload_size, running.slot_bytes
            ));
        }
        Ok(())
    }

    /// Compares what was read with what was signed.
    ///
    /// # Errors
    /// [`UpdateError::PayloadMismatch`].
    pub fn check_payload(&self, size: u64, sha256_hex: &str) -> Result<(), UpdateError> {
        if size != self.payload_size {
            return Err(UpdateError::PayloadMismatch(format!(
                "{size} bytes, the manifest says {}",
                self.payload_size
            )));
        }
        if !sha256_hex.eq_ignore_ascii_case(&self.payload_sha256) {
            return Err(UpdateError::PayloadMismatch(format!(
                "SHA-256 {sha256_hex}, the manifest says {}",
                self.payload_sha256
            )));
        }
        Ok(())
    }
}

/// An update the control plane offers to a device (down the channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateOffer {
    /// Id of the uploaded bundle; the device downloads `/api/edge/updates/{id}` with its
    /// certificate.
    pub id: String,
    /// Image version named by the manifest (unverified: for display and de-duplication).
    pub version: u64,
    /// Size of the bundle file.
    pub size: u64,
}

/// Where a device is with updates (up the channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// The image running now (sent after each connect).
    Running,
    /// Downloading and verifying an offered bundle.
    Downloading,
    /// Written to the inactive slot; rebooting into it on trial.
    Installed,
    /// The new slot came up, reached the control plane and was confirmed.
    Confirmed,
    /// The new slot did not confirm in time; the device went back to the previous slot.
    RolledBack,
    /// The bundle was refused (bad signature, changed payload, not applicable).
    Refused,
    /// Installation failed for a local reason (I/O).
    Failed,
}

impl UpdateState {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Running => "running",
            UpdateState::Downloading => "downloading",
            UpdateState::Installed => "installed",
            UpdateState::Confirmed => "confirmed",
            UpdateState::RolledBack => "rolled_back",
            UpdateState::Refused => "refused",
            UpdateState::Failed => "failed",
        }
    }
}

/// A device's update report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateReport {
    /// The offer this is about (none for [`UpdateState::Running`] reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_id: Option<String>,
    /// What happened.
    pub state: UpdateState,
    /// Image version running now.
    pub running_version: u64,
    /// Slot booted now (`a` or `b`).
    pub slot: String,
    /// Version concerned by the report (offered, installed or rolled back), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Details (why refused, ...), at most a few hundred characters.
    #[serde(default)]
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn manifest(payload: &[u8], version: u64) -> UpdateManifest {
        UpdateManifest {
            product: PRODUCT.into(),
            arch: "x86_64".into(),
            version,
            label: format!("v{version}"),
            kernel_release: "6.1.0-test".into(),
            payload_size: payload.len() as u64,
            payload_sha256: hex::encode(Sha256::digest(payload)),
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn running(version: u64) -> RunningImage {
        RunningImage {
            version,
            arch: "x86_64".into(),
            kernel_release: "6.1.0-test".into(),
            slot_bytes: 1024,
        }
    }

    fn vendor() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn bundle(payload: &[u8], version: u64) -> Vec<u8> {
        let signed = SignedManifest::sign(&manifest(payload, version), &vendor()).expect("sign");
        let mut out = signed.encode_prefix().expect("prefix");
        out.extend_from_slice(payload);
        out
    }

    /// What the edge does with a whole bundle in memory.
    fn verify_all(
        bytes: &[u8],
        key: &VerifyingKey,
        run: &RunningImage,
    ) -> Result<u64, UpdateError> {
        let (header, offset) = decode_header(bytes)?;
        let m = header.verify(key)?;
        m.check_applicable(run)?;
        let payload = &bytes[offset..];
        m.check_payload(payload.len() as u64, &hex::encode(Sha256::digest(payload)))?;
        Ok(m.version)
    }

    #[test]
    fn a_signed_bundle_verifies_and_is_applicable() {
        let b = bundle(b"root filesystem", 2);
        assert_eq!(
            verify_all(&b, &vendor().verifying_key(), &running(1)),
            Ok(2)
        );
    }

    #[test]
    fn a_changed_payload_byte_is_refused_as_tampering() {
        let mut b = bundle(b"root filesystem", 2);
        let last = b.len() - 1;
        b[last] ^= 1;
        let err = verify_all(&b, &vendor().verifying_key(), &running(1)).expect_err("tampered");
        assert!(matches!(err, UpdateError::PayloadMismatch(_)), "{err}");
        assert!(err.is_tampering());
    }

    #[test]
    fn a_changed_manifest_or_another_key_fails_the_signature() {
        let payload = b"root filesystem";
        let signed = SignedManifest::sign(&manifest(payload, 2), &vendor()).expect("sign");
        // Re-encode the manifest with a bigger version but keep the signature.
        let mut forged = signed.clone();
        forged.manifest = B64.encode(to_canonical_json(&manifest(payload, 9)).expect("json"));
        assert_eq!(
            forged.verify(&vendor().verifying_key()),
            Err(UpdateError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            signed.verify(&other.verifying_key()),
            Err(UpdateError::BadSignature)
        );
        assert!(UpdateError::BadSignature.is_tampering());
    }

    #[test]
    fn not_newer_other_kernel_or_too_big_is_not_applicable() {
        let b = bundle(b"root filesystem", 2);
        let key = vendor().verifying_key();
        for run in [
            running(2),
            running(3),
            RunningImage {
                kernel_release: "6.1.0-other".into(),
                ..running(1)
            },
            RunningImage {
                slot_bytes: 4,
                ..running(1)
            },
            RunningImage {
                arch: "aarch64".into(),
                ..running(1)
            },
        ] {
            let err = verify_all(&b, &key, &run).expect_err("not applicable");
            assert!(matches!(err, UpdateError::NotApplicable(_)), "{err}");
            assert!(!err.is_tampering());
        }
    }

    #[test]
    fn garbage_prefixes_are_malformed_not_panics() {
        for bytes in [
            &b""[..],
            b"SASEUPD1",
            b"SASEUPD1\0\0\0\0",
            b"SASEUPD1\xff\xff\xff\xff",
            b"SASEUPD1\0\0\0\x05{}",
            b"SASEUPD1\0\0\0\x02{}",
            b"NOTABUNDLE\0\0\0\0\0",
        ] {
            assert!(matches!(
                decode_header(bytes),
                Err(UpdateError::Malformed(_))
            ));
        }
    }

    #[test]
    fn report_and_offer_round_trip_and_refuse_unknown_fields() {
        let report = UpdateReport {
            update_id: Some("upd_1".into()),
            state: UpdateState::RolledBack,
            running_version: 1,
            slot: "a".into(),
            version: Some(3),
            detail: "trial slot b did not confirm".into(),
        };
        let json = serde_json::to_string(&report).expect("json");
        assert!(json.contains("\"rolled_back\""));
        assert_eq!(
            serde_json::from_str::<UpdateReport>(&json).expect("parse"),
            report
        );
        assert!(
            serde_json::from_str::<UpdateOffer>(r#"{"id":"u","version":1,"size":1,"x":1}"#)
                .is_err()
        );
    }
}
