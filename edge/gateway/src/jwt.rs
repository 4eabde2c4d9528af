//! Bearer token checks: from the `Authorization` header to a verified identity.
//!
//! Order of checks, each ending in a stable [`Reason`]:
//! 1. the header must carry `Bearer <token>` of at most [`MAX_TOKEN_BYTES`], and the token may
//!    be no longer than the largest `max_token_bytes` of the resource's issuers
//!    (`token_too_large`) — before anything in it is decoded;
//! 2. the JOSE header must parse (duplicate members refused) and its `alg` must be an
//!    asymmetric algorithm the policy language can express (`none` and HMAC never are); a
//!    `crit` member is refused (`token_crit_unsupported`): no extension is understood;
//! 3. the payload must parse (duplicate claims refused: `serde_json` would silently keep the
//!    last one); the unverified `iss` claim only selects which of the resource's trusted
//!    issuers to check against; the token must fit that issuer's size cap and the algorithm
//!    must be in its allowlist;
//! 4. the key is chosen by `kid` (an opaque string compared for equality, never used as a path
//!    or a URL) — or, without `kid`, the single key fitting the algorithm — from the issuer's
//!    keys; keys and key locations in the token (`jwk`, `jku`, `x5u`, `x5c`) are ignored, never
//!    fetched; keys of a `jwks_url` issuer too long unrefreshed are refused
//!    (`token_keys_unavailable`);
//! 5. `jsonwebtoken` (ring) verifies the signature with exactly that algorithm and checks
//!    `iss`, `aud` and the presence of `exp` and `sub`; ECDSA signatures with `r` or `s` zero
//!    (the "psychic signature") fail there;
//! 6. `exp` and `nbf` are checked here against the injected clock (never the system clock).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use sase_model::policy::JwtAlgorithm;
use sase_model::Reason;
use serde_json::{Map, Value};

use crate::jwks::{HeldKeys, JwksStore};
use crate::keys::VerificationKey;
use crate::policy::{CompiledIssuer, CompiledPolicy, CompiledResource, IssuerKeySource};
use crate::strict_json;

/// Longest bearer token accepted whatever the issuer, in bytes (the largest value an issuer's
/// `max_token_bytes` may take). Each issuer's own cap (8 KiB by default) applies below it.
pub const MAX_TOKEN_BYTES: usize = sase_model::policy::MAX_TOKEN_BYTES_LIMIT as usize;

/// Why a token did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenFailure {
    /// Refuse with this reason.
    Refuse(Reason),
    /// The token names a key the store does not hold for this `jwks_url` issuer.
    NeedKeys(String),
}

impl From<Reason> for TokenFailure {
    fn from(reason: Reason) -> Self {
        TokenFailure::Refuse(reason)
    }
}

/// A token whose signature and claims checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The `iss` claim (equal to the trusted issuer's).
    pub(crate) iss: String,
    /// The `sub` claim.
    pub(crate) sub: String,
    /// All claims.
    pub(crate) claims: Map<String, Value>,
    /// Id of the policy issuer that verified it.
    pub(crate) issuer_id: String,
    /// Generation of the fetched keys that verified it (0 for keys written in the policy).
    pub(crate) key_generation: u64,
    /// Leeway of that issuer, in seconds.
    pub(crate) leeway_seconds: u32,
}

impl VerifiedToken {
    /// The `iss` claim.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// The `sub` claim.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// All claims of the token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub(crate) fn bearer_token(authorization: Option<&str>) -> Result<&str, Reason> {
    let value = authorization.ok_or(Reason::TokenMissing)?.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::TokenMissing);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(Reason::TokenMissing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::TokenTooLarge);
    }
    Ok(token)
}

/// Verifies `token` for `resource` at `now_ms`.
pub(crate) fn verify(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    resource: &CompiledResource,
    token: &str,
    now_ms: i64,
) -> Result<VerifiedToken, TokenFailure> {
    if token.len() > policy.largest_token_limit(resource) {
        return Err(Reason::TokenTooLarge.into());
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::TokenInvalid.into());
    };

    // The algorithm the token claims, read from our own parse of the header so that `none`,
    // HMAC and unknown names are told apart from malformed headers.
    let header = decode_json_object(header_b64).ok_or(Reason::TokenInvalid)?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Reason::TokenInvalid)?;
    let alg = parse_algorithm(alg_name).ok_or(Reason::TokenAlgorithmNotAllowed)?;
    if header.contains_key("crit") {
        // No header extension is understood, so none can be critical (RFC 7515 §4.1.11).
        return Err(Reason::TokenCritUnsupported.into());
    }
    let parsed_header = jsonwebtoken::decode_header(token).map_err(|_| Reason::TokenInvalid)?;
    let jwt_alg = library_algorithm(alg);
    if parsed_header.alg != jwt_alg {
        return Err(Reason::TokenInvalid.into());
    }

    // The unverified issuer only chooses which trusted issuer to check against.
    let payload = decode_json_object(payload_b64).ok_or(Reason::TokenInvalid)?;
    let iss = payload
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(Reason::TokenBadIssuer)?;
    let issuer = resource
        .issuers
        .iter()
        .filter_map(|&i| policy.issuers.get(i))
        .find(|issuer| issuer.issuer == iss)
        .ok_or(Reason::TokenBadIssuer)?;
    if token.len() > issuer.max_token_bytes {
        return Err(Reason::TokenTooLarge.into());
    }
    if !issuer.algorithms.contains(&alg) {
        return Err(Reason::TokenAlgorithmNotAllowed.into());
    }

    let (key, key_generation) =
        select_key(issuer, jwks, parsed_header.kid.as_deref(), alg, now_ms)?;

    let mut validation = Validation::new(jwt_alg);
    validation.algorithms = vec![jwt_alg];
    validation.set_issuer(&[&issuer.issuer]);
    validation.set_audience(&issuer.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = u64::from(issuer.leeway_seconds);
    // jsonwebtoken would read the system clock for these; they are checked below with `now_ms`.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = true;
    // The library parses the claims again (keeping the last of duplicates); the claims used
    // below are our own parse, which refused duplicates, and equal the library's otherwise.
    jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| map_library_error(e.kind()))?;
    let claims = payload;

    check_times(&claims, issuer.leeway_seconds, now_ms)?;

    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Reason::TokenInvalid)?
        .to_string();
    Ok(VerifiedToken {
        iss: issuer.issuer.clone(),
        sub,
        claims,
        issuer_id: issuer.id.clone(),
        key_generation,
        leeway_seconds: issuer.leeway_seconds,
    })
}

/// Whether a verification made earlier (and cached) still holds for `resource` at `now_ms`: its
/// issuer is trusted by the resource and, for a `jwks_url` issuer, the keys held are the same
/// install as the ones that verified it and are still usable. (The caller checks the policy
/// generation and the token's times.)
pub(crate) fn still_valid(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    resource: &CompiledResource,
    token: &VerifiedToken,
    now_ms: i64,
) -> bool {
    let Some(issuer) = resource
        .issuers
        .iter()
        .filter_map(|&i| policy.issuers.get(i))
        .find(|issuer| issuer.id == token.issuer_id)
    else {
        return false;
    };
    match &issuer.keys {
        IssuerKeySource::Static(_) => true,
        IssuerKeySource::Url(remote) => matches!(
            jwks.held(&issuer.id, remote, now_ms),
            HeldKeys::Usable(_, generation) if generation == token.key_generation
        ),
    }
}

/// Chooses the verification key for a token; also returns the key generation (0 for keys
/// written in the policy).
fn select_key<'k>(
    issuer: &'k CompiledIssuer,
    jwks: &'k JwksStore,
    kid: Option<&str>,
    alg: JwtAlgorithm,
    now_ms: i64,
) -> Result<(&'k VerificationKey, u64), TokenFailure> {
    let (keys, fetched, generation) = match &issuer.keys {
        IssuerKeySource::Static(keys) => (keys.as_slice(), false, 0),
        IssuerKeySource::Url(remote) => match jwks.held(&issuer.id, remote, now_ms) {
            HeldKeys::Usable(keys, generation) => (keys, true, generation),
            HeldKeys::None => return Err(TokenFailure::NeedKeys(issuer.id.clone())),
            HeldKeys::Stale => return Err(Reason::TokenKeysUnavailable.into()),
        },
    };
    match kid {
        Some(kid) => {
            let mut named = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .peekable();
            if named.peek().is_none() {
                return Err(if fetched {
                    TokenFailure::NeedKeys(issuer.id.clone())
                } else {
                    Reason::TokenUnknownKey.into()
                });
            }
            // The named key must be able to verify this algorithm.
            named
                .find(|k| k.usable_for(alg))
                .map(|k| (k, generation))
                .ok_or(Reason::TokenInvalid.into())
        }
        None => {
            let mut usable = keys.iter().filter(|k| k.usable_for(alg));
            match (usable.next(), usable.next()) {
                (Some(key), None) => Ok((key, generation)),
                _ => Err(Reason::TokenUnknownKey.into()),
            }
        }
    }
}

/// `exp` (required) and `nbf` (optional) against `now_ms`, with the issuer's leeway.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    leeway_seconds: u32,
    now_ms: i64,
) -> Result<(), Reason> {
    let now = now_ms.div_euclid(1000);
    let leeway = i64::from(leeway_seconds);
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(Reason::TokenInvalid)?;
    if now >= exp.saturating_add(leeway) {
        return Err(Reason::TokenExpired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(Reason::TokenInvalid)?;
        if now < nbf.saturating_sub(leeway) {
            return Err(Reason::TokenNotYetValid);
        }
    }
    Ok(())
}

/// A JSON number as whole seconds (fractions dropped, out-of-range values saturated).
fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(i) = value.as_i64() {
        return Some(i);
    }
    if value.as_u64().is_some() {
        return Some(i64::MAX);
    }
    // `as` saturates; JSON numbers are always finite.
    value.as_f64().map(|f| f.floor() as i64)
}

fn map_library_error(kind: &ErrorKind) -> Reason {
    match kind {
        ErrorKind::ExpiredSignature => Reason::TokenExpired,
        ErrorKind::ImmatureSignature => Reason::TokenNotYetValid,
        ErrorKind::InvalidAudience => Reason::TokenBadAudience,
        ErrorKind::InvalidIssuer => Reason::TokenBadIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Reason::TokenBadAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Reason::TokenBadIssuer,
        _ => Reason::TokenInvalid,
    }
}

/// Base64url (no padding) JSON object, as JWS header and payload are; duplicate members are
/// refused.
fn decode_json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    strict_json::parse_object(&bytes)
}

/// The `exp` claim as whole seconds (for the cache of verified tokens).
pub(crate) fn expiry_seconds(claims: &Map<String, Value>) -> Option<i64> {
    claims.get("exp").and_then(numeric_date)
}

/// The algorithms the policy language can express; anything else (`none`, `HS256`, …) is
/// never allowed.
fn parse_algorithm(name: &str) -> Option<JwtAlgorithm> {
    Some(match name {
        "RS256" => JwtAlgorithm::RS256,
        "RS384" => JwtAlgorithm::RS384,
        "RS512" => JwtAlgorithm::RS512,
        "PS256" => JwtAlgorithm::PS256,
        "PS384" => JwtAlgorithm::PS384,
        "PS512" => JwtAlgorithm::PS512,
        "ES256" => JwtAlgorithm::ES256,
        "ES384" => JwtAlgorithm::ES384,
        "EdDSA" => JwtAlgorithm::EdDSA,
        _ => return None,
    })
}

fn library_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bEaReR \t abc  ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(Reason::TokenMissing));
        assert_eq!(bearer_token(Some("Bearer")), Err(Reason::TokenMissing));
        assert_eq!(bearer_token(Some("Bearer   ")), Err(Reason::TokenMissing));
        assert_eq!(bearer_token(Some("Basic abc")), Err(Reason::TokenMissing));
        assert_eq!(bearer_token(Some("Bearerabc")), Err(Reason::TokenMissing));
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer_token(Some(&huge)), Err(Reason::TokenTooLarge));
        let max = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
        assert!(bearer_token(Some(&max)).is_ok());
    }

    #[test]
    fn times_use_the_injected_clock_and_leeway() {
        let now_ms = 1_000_000_000;
        let claims = |v: Value| v.as_object().cloned().expect("object");
        assert_eq!(
            check_times(&claims(json!({"exp": 1_000_001})), 0, now_ms),
            Ok(())
        );
        assert_eq!(
            check_times(&claims(json!({"exp": 1_000_000})), 0, now_ms),
            Err(Reason::TokenExpired)
        );
        assert_eq!(
            check_times(&claims(json!({"exp": 999_990})), 30, now_ms),
            Ok(())
        );
        assert_eq!(
            check_times(
                &claims(json!({"exp": 1_000_100, "nbf": 1_000_010})),
                0,
                now_ms
            ),
            Err(Reason::TokenNotYetValid)
        );
        assert_eq!(
            check_times(
                &claims(json!({"exp": 1_000_100, "nbf": 1_000_010})),
                30,
                now_ms
            ),
            Ok(())
        );
        assert_eq!(
            check_times(&claims(json!({"exp": "soon"})), 0, now_ms),
            Err(Reason::TokenInvalid)
        );
        assert_eq!(
            check_times(&claims(json!({"exp": 1_000_100, "nbf": "x"})), 0, now_ms),
            Err(Reason::TokenInvalid)
        );
        assert_eq!(
            check_times(&claims(json!({"exp": 1e300})), 0, now_ms),
            Ok(())
        );
        assert_eq!(
            check_times(
                &claims(json!({"exp": 18446744073709551615_u64})),
                300,
                now_ms
            ),
            Ok(())
        );
    }
}
