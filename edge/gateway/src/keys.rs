//! Verification keys: turning JWKs into ready-to-use [`DecodingKey`]s once (when a policy is
//! compiled or a fetched JWK set is installed) rather than on every request.
//!
//! Only asymmetric signature keys are kept: RSA, EC P-256, EC P-384 and Ed25519. Symmetric
//! (`oct`) keys, encryption keys and unsupported curves are skipped, so a JWK set copied from an
//! identity provider that also publishes encryption keys still loads.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::DecodingKey;
use sase_model::policy::JwtAlgorithm;

use crate::error::KeyError;

/// Largest JWK set document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Most keys a JWK set may list.
pub const MAX_JWKS_KEYS: usize = 64;

/// The kind of a public key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// RSA (RS* and PS*).
    Rsa,
    /// EC on P-256 (ES256).
    P256,
    /// EC on P-384 (ES384).
    P384,
    /// Ed25519 (EdDSA).
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can verify `alg` signatures.
    pub(crate) fn fits(self, alg: JwtAlgorithm) -> bool {
        use JwtAlgorithm as A;
        match alg {
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => self == KeyKind::Rsa,
            A::ES256 => self == KeyKind::P256,
            A::ES384 => self == KeyKind::P384,
            A::EdDSA => self == KeyKind::Ed25519,
        }
    }
}

/// One usable public key.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    /// The JWK's `kid`, if any.
    pub(crate) kid: Option<String>,
    /// What kind of key it is.
    pub(crate) kind: KeyKind,
    /// The algorithm the JWK pins with its `alg` member, if any.
    pub(crate) alg: Option<JwtAlgorithm>,
    /// The key, ready for `jsonwebtoken::decode`.
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn usable_for(&self, alg: JwtAlgorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// Parses a JWK set (`{"keys": [...]}`), keeping the usable signature keys.
pub(crate) fn parse_key_set(set: &serde_json::Value) -> Result<Vec<VerificationKey>, KeyError> {
    let keys = set
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(KeyError::NotAKeySet)?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(KeyError::TooManyKeys { max: MAX_JWKS_KEYS });
    }
    let usable: Vec<VerificationKey> = keys.iter().filter_map(key_from_jwk).collect();
    if usable.is_empty() {
        return Err(KeyError::NoUsableKey {
            skipped: keys.len(),
        });
    }
    Ok(usable)
}

/// Parses the bytes of a fetched JWK set.
pub(crate) fn parse_key_set_bytes(bytes: &[u8]) -> Result<Vec<VerificationKey>, KeyError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(KeyError::TooLarge {
            max: MAX_JWKS_BYTES,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| KeyError::NotJson(e.to_string()))?;
    parse_key_set(&value)
}

/// One JWK as a usable signature key, or `None` when it cannot serve as one.
fn key_from_jwk(value: &serde_json::Value) -> Option<VerificationKey> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.iter().any(|op| matches!(op, KeyOperations::Verify)) {
            return None;
        }
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(pinned) => Some(model_algorithm(pinned)?),
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = decoded_len(&p.n)?;
            let e = decoded_len(&p.e)?;
            (n > 0 && e > 0).then_some(KeyKind::Rsa)?
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, size) = match p.curve {
                EllipticCurve::P256 => (KeyKind::P256, 32),
                EllipticCurve::P384 => (KeyKind::P384, 48),
                _ => return None,
            };
            (decoded_len(&p.x)? == size && decoded_len(&p.y)? == size).then_some(kind)?
        }
        AlgorithmParameters::OctetKeyPair(p) => (p.curve == EllipticCurve::Ed25519
            && decoded_len(&p.x)? == 32)
            .then_some(KeyKind::Ed25519)?,
        // Symmetric keys are never accepted: the token's signer would need the same secret.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerificationKey {
        kid: jwk.common.key_id,
        kind,
        alg,
        key,
    })
}

fn decoded_len(b64: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(b64).ok().map(|bytes| bytes.len())
}

/// The model algorithm for a JWK `alg`, `None` for algorithms the gateway never accepts.
fn model_algorithm(alg: KeyAlgorithm) -> Option<JwtAlgorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => JwtAlgorithm::RS256,
        KeyAlgorithm::RS384 => JwtAlgorithm::RS384,
        KeyAlgorithm::RS512 => JwtAlgorithm::RS512,
        KeyAlgorithm::PS256 => JwtAlgorithm::PS256,
        KeyAlgorithm::PS384 => JwtAlgorithm::PS384,
        KeyAlgorithm::PS512 => JwtAlgorithm::PS512,
        KeyAlgorithm::ES256 => JwtAlgorithm::ES256,
        KeyAlgorithm::ES384 => JwtAlgorithm::ES384,
        KeyAlgorithm::EdDSA => JwtAlgorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn unusable_keys_are_skipped_and_usable_ones_kept() {
        let set = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ops", "key_ops": ["encrypt"]},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "wrong-alg", "alg": "RS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "hs", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"},
            {"kty": "EC", "crv": "P-521", "x": ED_X, "y": ED_X, "kid": "p521"},
            {"kty": "weird", "kid": "weird"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "good", "use": "sig", "alg": "EdDSA"},
        ]});
        let keys = parse_key_set(&set).expect("one usable key");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("good"));
        assert!(keys[0].usable_for(JwtAlgorithm::EdDSA));
        assert!(!keys[0].usable_for(JwtAlgorithm::ES256));
    }

    #[test]
    fn sets_without_usable_keys_are_refused() {
        assert_eq!(
            parse_key_set(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).map(|k| k.len()),
            Err(KeyError::NoUsableKey { skipped: 1 })
        );
        assert_eq!(
            parse_key_set(&json!({"keys": []})).map(|k| k.len()),
            Err(KeyError::NoUsableKey { skipped: 0 })
        );
        assert_eq!(
            parse_key_set(&json!([1, 2])).map(|k| k.len()),
            Err(KeyError::NotAKeySet)
        );
        assert!(matches!(
            parse_key_set_bytes(b"{not json").map(|k| k.len()),
            Err(KeyError::NotJson(_))
        ));
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(
            parse_key_set_bytes(&huge).map(|k| k.len()),
            Err(KeyError::TooLarge {
                max: MAX_JWKS_BYTES
            })
        );
        let many = json!({"keys": vec![json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X}); MAX_JWKS_KEYS + 1]});
        assert_eq!(
            parse_key_set(&many).map(|k| k.len()),
            Err(KeyError::TooManyKeys { max: MAX_JWKS_KEYS })
        );
    }
}
