//! Device batch signatures: checking a signature with a device's public key.
//!
//! Devices sign audit batches with the key of their TLS identity (ECDSA P-256 with SHA-256,
//! ASN.1 DER signatures), whose public half the tenant CA certified at enrolment; Ed25519 keys
//! are accepted too. Keys are carried raw: the uncompressed P-256 point (65 bytes) or the
//! 32-byte Ed25519 key.

use base64::Engine as _;
use sase_model::audit::{ALG_ECDSA_P256_SHA256, ALG_ED25519};

/// Why a device signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The algorithm is not one devices use.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The signature or key is not valid base64.
    #[error("signature or key is not base64")]
    Encoding,
    /// The signature does not verify.
    #[error("signature does not verify with the device key")]
    Invalid,
}

/// A device's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    /// Algorithm ([`ALG_ECDSA_P256_SHA256`] or [`ALG_ED25519`]).
    pub alg: String,
    /// Raw public key bytes.
    pub public_key: Vec<u8>,
}

impl DeviceKey {
    /// A key from its algorithm and base64 raw bytes.
    ///
    /// # Errors
    /// Unknown algorithm or bad base64.
    pub fn from_b64(alg: &str, public_key: &str) -> Result<DeviceKey, SignatureError> {
        if alg != ALG_ECDSA_P256_SHA256 && alg != ALG_ED25519 {
            return Err(SignatureError::UnsupportedAlgorithm(alg.to_string()));
        }
        let public_key = base64::engine::general_purpose::STANDARD
            .decode(public_key)
            .map_err(|_| SignatureError::Encoding)?;
        Ok(DeviceKey {
            alg: alg.to_string(),
            public_key,
        })
    }

    /// Base64 of the raw key.
    pub fn public_key_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.public_key)
    }

    /// Checks `signature_b64` (made with `alg`) over `message`.
    ///
    /// # Errors
    /// Algorithm mismatch, bad encoding, or a signature that does not verify.
    pub fn verify(
        &self,
        alg: &str,
        message: &[u8],
        signature_b64: &str,
    ) -> Result<(), SignatureError> {
        if alg != self.alg {
            return Err(SignatureError::UnsupportedAlgorithm(alg.to_string()));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature_b64)
            .map_err(|_| SignatureError::Encoding)?;
        let algorithm: &dyn ring::signature::VerificationAlgorithm = if alg == ALG_ED25519 {
            &ring::signature::ED25519
        } else {
            &ring::signature::ECDSA_P256_SHA256_ASN1
        };
        ring::signature::UnparsedPublicKey::new(algorithm, &self.public_key)
            .verify(message, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    #[test]
    fn p256_signatures_verify_and_changes_are_refused() {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("keygen");
        let pair =
            ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
        let sig = pair.sign(&rng, b"batch").expect("sign");
        let key = DeviceKey {
            alg: ALG_ECDSA_P256_SHA256.into(),
            public_key: pair.public_key().as_ref().to_vec(),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        assert_eq!(key.verify(ALG_ECDSA_P256_SHA256, b"batch", &b64), Ok(()));
        assert_eq!(
            key.verify(ALG_ECDSA_P256_SHA256, b"batcH", &b64),
            Err(SignatureError::Invalid)
        );
        assert!(key.verify(ALG_ED25519, b"batch", &b64).is_err());
        assert_eq!(
            key.verify(ALG_ECDSA_P256_SHA256, b"batch", "%%"),
            Err(SignatureError::Encoding)
        );
    }
}
