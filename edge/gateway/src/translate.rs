//! Token translation: the upstream of a resource with `token_translation` never sees the
//! client's token. It receives a short-lived internal JWT signed by the edge (ES256) with only
//! the configured claims (`sub`, `tenant`, `scope`, `sid`), its `aud`, `iss` =
//! `sase-edge:<device id>`, `iat`, `exp` (`iat` + the resource's `ttl_seconds`) and a unique
//! `jti`. The edge generates the signing key at start (it never leaves the process) and
//! publishes the public key as a JWK set at [`INTERNAL_JWKS_PATH`] on its listeners; the key id
//! is derived from the public key, so an upstream that meets an unknown `kid` (after a restart)
//! fetches the set again.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use sase_model::upstream_trust::{ForwardedClaim, TokenTranslation};

/// Where the edge serves the public key of its internal tokens.
pub const INTERNAL_JWKS_PATH: &str = "/.well-known/sase-edge/jwks.json";

/// Why an internal signing key was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The private key is not a PKCS#8 P-256 key.
    #[error("the internal signing key is not a PKCS#8 ECDSA P-256 key: {0}")]
    Key(String),
    /// The public key is not an uncompressed P-256 point.
    #[error("the public key is not an uncompressed P-256 point")]
    PublicKey,
    /// Signing failed.
    #[error("signing the internal token failed: {0}")]
    Sign(String),
}

/// Who called, as far as the internal token is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The caller's subject (token `sub`, or the client certificate's identity).
    pub sub: Option<&'a str>,
    /// The caller's token claims, when there is a token.
    pub claims: Option<&'a Map<String, Value>>,
}

/// The edge's signer of internal tokens.
pub struct InternalSigner {
    key: EncodingKey,
    kid: String,
    issuer: String,
    jwks: String,
}

impl std::fmt::Debug for InternalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl InternalSigner {
    /// A signer from a PKCS#8 PEM P-256 private key and its public key as an uncompressed
    /// point (`04 || x || y`, 65 bytes); `issuer` goes into `iss`.
    ///
    /// # Errors
    /// When either key is not of that form.
    pub fn new(
        private_pkcs8_pem: &[u8],
        public_point: &[u8],
        issuer: &str,
    ) -> Result<InternalSigner, SignerError> {
        let key = EncodingKey::from_ec_pem(private_pkcs8_pem)
            .map_err(|e| SignerError::Key(e.to_string()))?;
        if public_point.len() != 65 || public_point[0] != 4 {
            return Err(SignerError::PublicKey);
        }
        let kid = hex::encode(&Sha256::digest(public_point)[..8]);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&public_point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public_point[33..65]),
        }]})
        .to_string();
        let signer = InternalSigner {
            key,
            kid,
            issuer: issuer.to_string(),
            jwks,
        };
        // A key pair that does not match would only show at the upstream: sign once now.
        signer.sign(&Map::new())?;
        Ok(signer)
    }

    /// The JWK set (JSON) an upstream verifies internal tokens with.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The key id of the signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The internal token for `caller` under `settings`, at `now_ms`, with id `jti`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn mint(
        &self,
        settings: &TokenTranslation,
        caller: Caller<'_>,
        now_ms: i64,
        jti: &str,
    ) -> Result<String, SignerError> {
        self.sign(&internal_claims(
            settings,
            &self.issuer,
            caller,
            now_ms,
            jti,
        ))
    }

    fn sign(&self, claims: &Map<String, Value>) -> Result<String, SignerError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| SignerError::Sign(e.to_string()))
    }
}

/// The claims of an internal token (see the module docs).
pub fn internal_claims(
    settings: &TokenTranslation,
    issuer: &str,
    caller: Caller<'_>,
    now_ms: i64,
    jti: &str,
) -> Map<String, Value> {
    let iat = now_ms.div_euclid(1000);
    let mut claims = Map::new();
    claims.insert("iss".into(), issuer.into());
    claims.insert("aud".into(), settings.audience.clone().into());
    claims.insert("iat".into(), iat.into());
    claims.insert(
        "exp".into(),
        iat.saturating_add(i64::from(settings.ttl_seconds)).into(),
    );
    claims.insert("jti".into(), jti.into());
    let string_claim = |name: &str| {
        caller
            .claims
            .and_then(|c| c.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    for claim in &settings.claims {
        match claim {
            ForwardedClaim::Sub => {
                if let Some(sub) = caller.sub {
                    claims.insert("sub".into(), sub.into());
                }
            }
            ForwardedClaim::Tenant => {
                if let Some(t) = string_claim("tenant") {
                    claims.insert("tenant".into(), t.into());
                }
            }
            ForwardedClaim::SessionId => {
                if let Some(s) = string_claim("sid") {
                    claims.insert("sid".into(), s.into());
                }
            }
            ForwardedClaim::Scopes => {
                let mut scopes: Vec<&str> = Vec::new();
                if let Some(c) = caller.claims {
                    for name in ["scope", "scp"] {
                        match c.get(name) {
                            Some(Value::String(s)) => scopes.extend(s.split_whitespace()),
                            Some(Value::Array(items)) => {
                                scopes.extend(items.iter().filter_map(Value::as_str))
                            }
                            _ => {}
                        }
                    }
                }
                scopes.sort_unstable();
                scopes.dedup();
                if !scopes.is_empty() {
                    claims.insert("scope".into(), scopes.join(" ").into());
                }
            }
        }
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg22vMYAKj8ZmVrzbm
vNYFguF4DEcOQTo6ft0nJDYEfE+hRANCAASgE3XLqlo1s5idg+A3v9SNrELv60AV
4it+ETiClrO3oQabZVFmmbdDXB2kJ5yOY8OE4EbRoUmPNtx9V5193SzV
-----END PRIVATE KEY-----
";
    const PUBLIC: &str = "04a01375cbaa5a35b3989d83e037bfd48dac42efeb4015e22b7e11388296b3b7a1069b65516699b7435c1da4279c8e63c384e046d1a1498f36dc7d579d7ddd2cd5";

    fn settings(claims: Vec<ForwardedClaim>) -> TokenTranslation {
        TokenTranslation {
            audience: "backend".into(),
            claims,
            ttl_seconds: 60,
        }
    }

    #[test]
    fn only_configured_claims_are_forwarded() {
        let caller_claims = json!({"sub": "alice", "tenant": "acme", "sid": "s-1",
            "scope": "b a", "scp": ["a", "c"], "email": "alice@example.com", "groups": ["x"]});
        let caller = Caller {
            sub: Some("alice"),
            claims: caller_claims.as_object(),
        };
        let claims = internal_claims(
            &settings(vec![ForwardedClaim::Sub, ForwardedClaim::Scopes]),
            "sase-edge:d1",
            caller,
            1_700_000_000_999,
            "j1",
        );
        assert_eq!(
            Value::Object(claims),
            json!({"iss": "sase-edge:d1", "aud": "backend", "iat": 1_700_000_000,
                   "exp": 1_700_000_060, "jti": "j1", "sub": "alice", "scope": "a b c"})
        );
        let all = internal_claims(
            &settings(vec![ForwardedClaim::Tenant, ForwardedClaim::SessionId]),
            "i",
            caller,
            0,
            "j",
        );
        assert_eq!(all.get("tenant"), Some(&json!("acme")));
        assert_eq!(all.get("sid"), Some(&json!("s-1")));
        assert!(all.get("sub").is_none() && all.get("email").is_none());
    }

    #[test]
    fn minted_tokens_verify_with_the_published_jwk() {
        let public = hex::decode(PUBLIC).expect("hex");
        let signer = InternalSigner::new(KEY.as_bytes(), &public, "sase-edge:d1").expect("signer");
        let jwks: Value = serde_json::from_str(signer.jwks_json()).expect("jwks");
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kid"], signer.kid());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as i64;
        let token = signer
            .mint(
                &settings(vec![ForwardedClaim::Sub]),
                Caller {
                    sub: Some("alice"),
                    claims: None,
                },
                now_ms,
                "j1",
            )
            .expect("mint");
        let key = DecodingKey::from_ec_components(
            jwk["x"].as_str().expect("x"),
            jwk["y"].as_str().expect("y"),
        )
        .expect("key");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["backend"]);
        validation.set_issuer(&["sase-edge:d1"]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("verifies");
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.header.kid.as_deref(), Some(signer.kid()));
        // A public key that is not the private key's is refused... at verification time by
        // the upstream: the signer only checks the point's form.
        assert!(InternalSigner::new(KEY.as_bytes(), &public[..64], "x").is_err());
        assert!(InternalSigner::new(b"not a key", &public, "x").is_err());
    }
}
