//! Signed policy bundles: how policy travels from the control plane to the edges.
//!
//! The control plane serialises a [`BundlePayload`] to canonical JSON, signs those exact bytes
//! with its Ed25519 policy signing key and ships a [`SignedBundle`] (payload bytes in base64 plus
//! the signature). The edge verifies with the key it pinned at enrolment, *then* parses the
//! payload, checks the tenant and refuses a version older than the one it applied. Nothing in
//! the payload is trusted before the signature is checked.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::to_canonical_json;
use crate::policy::Policy;

/// What is signed: one version of one tenant's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePayload {
    /// Tenant the policy belongs to.
    pub tenant_id: String,
    /// Monotonic version, starting at 1 for a tenant's first policy.
    pub version: u64,
    /// When the control plane signed it (Unix milliseconds).
    pub issued_at_ms: i64,
    /// The validated policy.
    pub policy: Policy,
}

/// A bundle as stored and sent: payload bytes and a detached signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    /// Canonical JSON of the [`BundlePayload`], base64.
    pub payload: String,
    /// Ed25519 signature over the payload bytes, base64.
    pub signature: String,
    /// Key id of the signer (hex SHA-256 prefix of the public key), for diagnostics and
    /// rollover; verification never trusts it to choose a key.
    pub key_id: String,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The container is not a bundle (bad JSON, bad base64, wrong sizes).
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// The signature does not verify with the pinned key (another key, or changed bytes).
    #[error("bundle signature does not verify with the pinned control-plane key")]
    BadSignature,
    /// The payload is not a valid policy.
    #[error("bundle payload is invalid: {0}")]
    InvalidPayload(String),
    /// The bundle belongs to another tenant.
    #[error("bundle is for tenant {got}, this device belongs to {expected}")]
    WrongTenant {
        /// Tenant of the device.
        expected: String,
        /// Tenant named in the bundle.
        got: String,
    },
    /// The bundle is older than the one applied (replay or rollback attack).
    #[error("bundle version {got} is older than the applied version {applied}")]
    Stale {
        /// Version currently applied.
        applied: u64,
        /// Version offered.
        got: u64,
    },
    /// Same version as applied but different content.
    #[error("bundle version {0} conflicts with the applied bundle of the same version")]
    Conflict(u64),
}

/// Largest encoded bundle accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024;

/// Key id of a verifying key: first 16 hex digits of SHA-256 of its bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl SignedBundle {
    /// Signs a payload.
    ///
    /// # Errors
    /// Only if the payload cannot be serialised (never for valid policies).
    pub fn sign(payload: &BundlePayload, key: &SigningKey) -> Result<SignedBundle, BundleError> {
        let bytes =
            to_canonical_json(payload).map_err(|e| BundleError::InvalidPayload(e.to_string()))?;
        let signature = key.sign(&bytes);
        Ok(SignedBundle {
            payload: B64.encode(&bytes),
            signature: B64.encode(signature.to_bytes()),
            key_id: key_id(&key.verifying_key()),
        })
    }

    /// Decodes a bundle from its JSON text form (as stored on disk or sent on the channel).
    ///
    /// # Errors
    /// [`BundleError::Malformed`] when the text is not a bundle.
    pub fn from_json(text: &[u8]) -> Result<SignedBundle, BundleError> {
        if text.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::Malformed("bundle too large".into()));
        }
        serde_json::from_slice(text).map_err(|e| BundleError::Malformed(e.to_string()))
    }

    /// Encodes the bundle as JSON text.
    pub fn to_json(&self) -> String {
        // A struct of three strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// SHA-256 of the signed payload bytes, hex; identifies the exact content.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.payload.as_bytes()))
    }

    /// Verifies the signature with `key` and returns the payload, without version checks.
    ///
    /// # Errors
    /// Malformed encoding, a signature that does not verify, or an invalid policy.
    pub fn verify(&self, key: &VerifyingKey) -> Result<BundlePayload, BundleError> {
        let bytes = B64
            .decode(&self.payload)
            .map_err(|e| BundleError::Malformed(format!("payload: {e}")))?;
        let sig_bytes: [u8; 64] = B64
            .decode(&self.signature)
            .map_err(|e| BundleError::Malformed(format!("signature: {e}")))?
            .try_into()
            .map_err(|_| BundleError::Malformed("signature must be 64 bytes".into()))?;
        key.verify(&bytes, &Signature::from_bytes(&sig_bytes))
            .map_err(|_| BundleError::BadSignature)?;
        let payload: BundlePayload = serde_json::from_slice(&bytes)
            .map_err(|e| BundleError::InvalidPayload(e.to_string()))?;
        payload
            .policy
            .validate()
            .map_err(|e| BundleError::InvalidPayload(e.to_string()))?;
        Ok(payload)
    }

    /// Full edge-side acceptance: signature, tenant, and no going back in version.
    /// `applied` is the version and digest of the bundle currently enforced, if any.
    ///
    /// # Errors
    /// See [`BundleError`].
    pub fn verify_for_device(
        &self,
        key: &VerifyingKey,
        tenant_id: &str,
        applied: Option<(u64, &str)>,
    ) -> Result<BundlePayload, BundleError> {
        let payload = self.verify(key)?;
        if payload.tenant_id != tenant_id {
            return Err(BundleError::WrongTenant {
                expected: tenant_id.to_string(),
                got: payload.tenant_id,
            });
        }
        if let Some((applied_version, applied_digest)) = applied {
            if payload.version < applied_version {
                return Err(BundleError::Stale {
                    applied: applied_version,
                    got: payload.version,
                });
            }
            if payload.version == applied_version && self.digest() != applied_digest {
                return Err(BundleError::Conflict(payload.version));
            }
        }
        Ok(payload)
    }
}

/// Parses a base64 Ed25519 public key (as returned at enrolment).
///
/// # Errors
/// When the text is not 32 base64-encoded bytes of a valid point.
pub fn verifying_key_from_b64(text: &str) -> Result<VerifyingKey, BundleError> {
    let bytes: [u8; 32] = B64
        .decode(text.trim())
        .map_err(|e| BundleError::Malformed(format!("key: {e}")))?
        .try_into()
        .map_err(|_| BundleError::Malformed("key must be 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| BundleError::Malformed(format!("key: {e}")))
}

/// Encodes a verifying key as base64.
pub fn verifying_key_to_b64(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(version: u64) -> BundlePayload {
        BundlePayload {
            tenant_id: "t1".into(),
            version,
            issued_at_ms: 1_700_000_000_000,
            policy: Policy::default(),
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signed_bundle_verifies_with_the_signing_key() {
        let bundle = SignedBundle::sign(&payload(3), &key(1)).expect("sign");
        let decoded = SignedBundle::from_json(bundle.to_json().as_bytes()).expect("decode");
        let got = decoded
            .verify_for_device(&key(1).verifying_key(), "t1", Some((2, "x")))
            .expect("verify");
        assert_eq!(got, payload(3));
    }

    #[test]
    fn another_key_is_refused() {
        let bundle = SignedBundle::sign(&payload(1), &key(1)).expect("sign");
        assert_eq!(
            bundle.verify(&key(2).verifying_key()),
            Err(BundleError::BadSignature)
        );
    }

    #[test]
    fn every_single_changed_byte_of_the_payload_is_refused() {
        let bundle = SignedBundle::sign(&payload(1), &key(1)).expect("sign");
        let bytes = B64.decode(&bundle.payload).expect("b64");
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            let tampered = SignedBundle {
                payload: B64.encode(&changed),
                ..bundle.clone()
            };
            assert_eq!(
                tampered.verify(&key(1).verifying_key()),
                Err(BundleError::BadSignature),
                "byte {i}"
            );
        }
    }

    #[test]
    fn older_version_and_same_version_other_content_are_refused() {
        let vk = key(1).verifying_key();
        let old = SignedBundle::sign(&payload(4), &key(1)).expect("sign");
        assert_eq!(
            old.verify_for_device(&vk, "t1", Some((5, "d"))),
            Err(BundleError::Stale { applied: 5, got: 4 })
        );
        let same = SignedBundle::sign(&payload(5), &key(1)).expect("sign");
        assert!(same
            .verify_for_device(&vk, "t1", Some((5, &same.digest())))
            .is_ok());
        assert_eq!(
            same.verify_for_device(&vk, "t1", Some((5, "other"))),
            Err(BundleError::Conflict(5))
        );
    }

    #[test]
    fn other_tenant_is_refused() {
        let bundle = SignedBundle::sign(&payload(1), &key(1)).expect("sign");
        assert!(matches!(
            bundle.verify_for_device(&key(1).verifying_key(), "t2", None),
            Err(BundleError::WrongTenant { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for text in [
            &b"not json"[..],
            b"{}",
            b"{\"payload\":\"!!\",\"signature\":\"\",\"key_id\":\"\"}",
        ] {
            let result =
                SignedBundle::from_json(text).and_then(|b| b.verify(&key(1).verifying_key()));
            assert!(
                matches!(result, Err(BundleError::Malformed(_))),
                "{result:?}"
            );
        }
    }
}
