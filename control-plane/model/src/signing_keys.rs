//! Policy signing-key rotation with overlap.
//!
//! The control plane announces its next key with a [`KeyEndorsement`]: a statement signed by
//! the key edges already trust, naming the key that will sign bundles next. The edge keeps a
//! [`TrustedKeys`] list (oldest first; the first one is the key it pinned at enrolment or its
//! latest promotion): an endorsement by the newest trusted key appends the next key; a bundle
//! verifies with any key in the list (the overlap); once a bundle signed by a newer key is
//! accepted, every older key is dropped, so a bundle signed by a retired key is refused from
//! then on. Endorsements are re-sent after each `hello`, so an edge that was away during a
//! rollover (or several) follows the chain when it comes back.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bundle::{
    verifying_key_from_b64, verifying_key_to_b64, BundleError, BundlePayload, SignedBundle,
};
use crate::canonical::to_canonical_json;

/// Most keys an edge trusts at once (the pinned key plus announced successors).
pub const MAX_TRUSTED_KEYS: usize = 4;
/// What an endorsement signs, so its signature cannot be taken for a bundle's.
const ENDORSEMENT_PURPOSE: &str = "sase-policy-signing-key-endorsement";

/// "Bundles will next be signed by `next`", signed by `previous`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEndorsement {
    /// The endorsing key (base64 Ed25519 public key).
    pub previous: String,
    /// The endorsed next key (base64 Ed25519 public key).
    pub next: String,
    /// When it was made (Unix ms).
    pub issued_at_ms: i64,
    /// Ed25519 signature by `previous` over the canonical statement, base64.
    pub signature: String,
}

#[derive(Serialize)]
struct Statement<'a> {
    purpose: &'a str,
    previous: &'a str,
    next: &'a str,
    issued_at_ms: i64,
}

/// Why an endorsement or the trusted-key list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRotationError {
    /// Bad encoding.
    #[error("malformed signing-key endorsement: {0}")]
    Malformed(String),
    /// The signature does not verify with the endorsing key.
    #[error("signing-key endorsement signature does not verify")]
    BadSignature,
    /// The endorsing key is trusted but is not the newest one (a fork of the chain).
    #[error("signing-key endorsement by a key that already has a successor")]
    Fork,
    /// Too many keys would be trusted at once.
    #[error("more than {MAX_TRUSTED_KEYS} policy signing keys would be trusted")]
    TooMany,
}

fn statement_bytes(previous: &str, next: &str, issued_at_ms: i64) -> Vec<u8> {
    // A struct of strings and an integer always serialises.
    to_canonical_json(&Statement {
        purpose: ENDORSEMENT_PURPOSE,
        previous,
        next,
        issued_at_ms,
    })
    .unwrap_or_default()
}

impl KeyEndorsement {
    /// `previous` endorses `next`.
    pub fn sign(previous: &SigningKey, next: &VerifyingKey, issued_at_ms: i64) -> KeyEndorsement {
        let previous_b64 = verifying_key_to_b64(&previous.verifying_key());
        let next_b64 = verifying_key_to_b64(next);
        let signature = previous.sign(&statement_bytes(&previous_b64, &next_b64, issued_at_ms));
        KeyEndorsement {
            previous: previous_b64,
            next: next_b64,
            issued_at_ms,
            signature: B64.encode(signature.to_bytes()),
        }
    }

    /// Checks the signature with the endorsing key named in it; returns `(previous, next)`.
    ///
    /// # Errors
    /// Malformed keys or signature, or a signature that does not verify.
    pub fn verify(&self) -> Result<(VerifyingKey, VerifyingKey), KeyRotationError> {
        let previous = verifying_key_from_b64(&self.previous)
            .map_err(|e| KeyRotationError::Malformed(e.to_string()))?;
        let next = verifying_key_from_b64(&self.next)
            .map_err(|e| KeyRotationError::Malformed(e.to_string()))?;
        let sig: [u8; 64] = B64
            .decode(&self.signature)
            .map_err(|e| KeyRotationError::Malformed(format!("signature: {e}")))?
            .try_into()
            .map_err(|_| KeyRotationError::Malformed("signature must be 64 bytes".into()))?;
        previous
            .verify(
                &statement_bytes(&self.previous, &self.next, self.issued_at_ms),
                &Signature::from_bytes(&sig),
            )
            .map_err(|_| KeyRotationError::BadSignature)?;
        Ok((previous, next))
    }
}

/// The policy signing keys an edge accepts, oldest first (as kept in its data dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeys {
    /// Base64 Ed25519 public keys; the first is the pinned one.
    keys: Vec<String>,
}

impl TrustedKeys {
    /// Only the key pinned at enrolment.
    pub fn pinned(key: &VerifyingKey) -> TrustedKeys {
        TrustedKeys {
            keys: vec![verifying_key_to_b64(key)],
        }
    }

    /// The keys, oldest first, as base64.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Checks a stored list (non-empty, bounded, every key valid).
    ///
    /// # Errors
    /// When it is not.
    pub fn validate(&self) -> Result<(), KeyRotationError> {
        if self.keys.is_empty() || self.keys.len() > MAX_TRUSTED_KEYS {
            return Err(KeyRotationError::Malformed(format!(
                "{} trusted keys",
                self.keys.len()
            )));
        }
        for k in &self.keys {
            verifying_key_from_b64(k).map_err(|e| KeyRotationError::Malformed(e.to_string()))?;
        }
        Ok(())
    }

    /// Applies an endorsement: `Ok(true)` when it added a key, `Ok(false)` when it was already
    /// known or is older than every trusted key (re-sent after a `hello`).
    ///
    /// # Errors
    /// A bad signature, a fork (endorsed by a trusted key that is not the newest), too many keys.
    pub fn endorse(&mut self, endorsement: &KeyEndorsement) -> Result<bool, KeyRotationError> {
        let (previous, next) = endorsement.verify()?;
        let previous = verifying_key_to_b64(&previous);
        let next = verifying_key_to_b64(&next);
        if self.keys.contains(&next) {
            return Ok(false);
        }
        match self.keys.iter().position(|k| *k == previous) {
            None => Ok(false),
            Some(i) if i + 1 != self.keys.len() => Err(KeyRotationError::Fork),
            Some(_) if self.keys.len() >= MAX_TRUSTED_KEYS => Err(KeyRotationError::TooMany),
            Some(_) => {
                self.keys.push(next);
                Ok(true)
            }
        }
    }

    /// Verifies a bundle with the trusted keys (newest first) and the device checks of
    /// [`SignedBundle::verify_for_device`]. Returns the payload and the index of the key that
    /// signed it (pass it to [`TrustedKeys::promote`] once the bundle is in force).
    ///
    /// # Errors
    /// [`BundleError::BadSignature`] when no trusted key verifies it, else the device checks.
    pub fn verify_bundle(
        &self,
        bundle: &SignedBundle,
        tenant_id: &str,
        applied: Option<(u64, &str)>,
    ) -> Result<(BundlePayload, usize), BundleError> {
        for (i, text) in self.keys.iter().enumerate().rev() {
            let Ok(key) = verifying_key_from_b64(text) else {
                continue;
            };
            match bundle.verify_for_device(&key, tenant_id, applied) {
                Err(BundleError::BadSignature) => continue,
                Err(e) => return Err(e),
                Ok(payload) => return Ok((payload, i)),
            }
        }
        Err(BundleError::BadSignature)
    }

    /// A bundle signed by key `index` is in force: every older key is retired. Returns whether
    /// anything was dropped.
    pub fn promote(&mut self, index: usize) -> bool {
        if index == 0 || index >= self.keys.len() {
            return false;
        }
        self.keys.drain(..index);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn bundle(version: u64, signer: &SigningKey) -> SignedBundle {
        let policy = Policy::parse_yaml(
            "resources:\n  - name: app\n    upstream: http://127.0.0.1:1\n    routes:\n      - {id: h, methods: [GET], path: /health, public: true}\n",
        )
        .expect("policy");
        SignedBundle::sign(
            &BundlePayload {
                tenant_id: "t".into(),
                version,
                issued_at_ms: 0,
                policy,
            },
            signer,
        )
        .expect("sign")
    }

    #[test]
    fn overlap_then_retirement() {
        let (k1, k2) = (key(1), key(2));
        let mut trusted = TrustedKeys::pinned(&k1.verifying_key());
        // Before the announcement only k1 works.
        assert_eq!(
            trusted.verify_bundle(&bundle(1, &k2), "t", None).err(),
            Some(BundleError::BadSignature)
        );
        let endorsement = KeyEndorsement::sign(&k1, &k2.verifying_key(), 5);
        assert_eq!(trusted.endorse(&endorsement), Ok(true));
        assert_eq!(trusted.endorse(&endorsement), Ok(false), "re-sent: no-op");
        // Overlap: both verify.
        let (_, i1) = trusted
            .verify_bundle(&bundle(1, &k1), "t", None)
            .expect("k1 during overlap");
        assert_eq!(i1, 0);
        let (_, i2) = trusted
            .verify_bundle(&bundle(2, &k2), "t", None)
            .expect("k2 during overlap");
        assert_eq!(i2, 1);
        assert!(trusted.promote(i2));
        // Retired: k1 refused from now on, even for a newer version.
        assert_eq!(
            trusted.verify_bundle(&bundle(9, &k1), "t", None).err(),
            Some(BundleError::BadSignature)
        );
        assert_eq!(trusted.keys().len(), 1);
        // The old endorsement re-sent after a hello changes nothing.
        assert_eq!(trusted.endorse(&endorsement), Ok(false));
    }

    #[test]
    fn forged_forked_and_chained_endorsements() {
        let (k1, k2, k3, evil) = (key(1), key(2), key(3), key(66));
        let mut trusted = TrustedKeys::pinned(&k1.verifying_key());
        // Signed by an untrusted key naming itself previous: ignored (not in the list).
        let forged = KeyEndorsement::sign(&evil, &evil.verifying_key(), 1);
        assert_eq!(trusted.endorse(&forged), Ok(false));
        // Claims k1 endorsed evil but is signed by evil: bad signature.
        let mut lie = KeyEndorsement::sign(&evil, &evil.verifying_key(), 1);
        lie.previous = verifying_key_to_b64(&k1.verifying_key());
        assert_eq!(trusted.endorse(&lie), Err(KeyRotationError::BadSignature));
        // A chain k1 -> k2 -> k3 (edge away during two rollovers).
        assert_eq!(
            trusted.endorse(&KeyEndorsement::sign(&k1, &k2.verifying_key(), 1)),
            Ok(true)
        );
        assert_eq!(
            trusted.endorse(&KeyEndorsement::sign(&k2, &k3.verifying_key(), 2)),
            Ok(true)
        );
        // k1 endorsing another key now: a fork.
        assert_eq!(
            trusted.endorse(&KeyEndorsement::sign(&k1, &evil.verifying_key(), 3)),
            Err(KeyRotationError::Fork)
        );
        let (_, i) = trusted
            .verify_bundle(&bundle(3, &k3), "t", None)
            .expect("k3");
        assert!(trusted.promote(i));
        assert_eq!(trusted.keys(), &[verifying_key_to_b64(&k3.verifying_key())]);
        // Device checks still apply after the signature: wrong tenant is not "bad signature".
        let json = serde_json::to_string(&trusted).expect("json");
        let back: TrustedKeys = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.validate(), Ok(()));
        assert!(serde_json::from_str::<TrustedKeys>("{\"keys\":[],\"x\":1}").is_err());
    }
}
