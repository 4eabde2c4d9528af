//! Continuous access evaluation: the SET push endpoint (RFC 8935) and the revocations it
//! pushes to edges.
//!
//! A tenant's admin configures the transmitter it trusts (`PUT
//! /api/tenants/{tenant_id}/caep/transmitter`: issuer, audience, public JWK set, how long edges
//! keep a revocation; recorded in the admin-action trail). The transmitter then `POST`s Security
//! Event Tokens (RFC 8417) to `/api/tenants/{tenant_id}/caep/events` with `Content-Type:
//! application/secevent+jwt`; the SET's signature is its authentication. A SET whose `typ` is
//! not `secevent+jwt`, whose algorithm does not suit the key, whose signature, issuer or
//! audience does not verify, or whose events are not CAEP `session-revoked` /
//! `credential-change` with a usable subject is refused with 400 and the RFC 8935 error JSON
//! (`{"err": ..., "description": ...}`) and raises an alert. An accepted SET answers 202; its
//! `jti` is remembered so a replay is acknowledged without effect; its revocations are stored
//! and pushed at once to every connected edge of the tenant, and to every edge that connects
//! later (after its `hello`) until they expire.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sase_model::caep::{revocations_from_set, Revocation, MAX_REVOCATIONS_PER_MESSAGE};
use sase_model::channel::ControlMessage;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::Row as _;
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{now_ms, SharedState};

/// Largest SET accepted, in bytes.
pub const MAX_SET_BYTES: usize = 64 * 1024;
/// Default of [`TransmitterSettings::revocation_ttl_seconds`] (one day: longer than the
/// lifetime of any access token the edges accept).
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;
/// Largest JWK set of a transmitter, in bytes.
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// How far in the future a SET's `iat` may be (clock skew), in seconds.
const MAX_IAT_SKEW_SECONDS: i64 = 300;

/// The SET transmitter a tenant trusts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransmitterSettings {
    /// The SETs' `iss`, exactly.
    pub issuer: String,
    /// The `aud` the SETs must name (this receiver).
    pub audience: String,
    /// Public keys of the transmitter (`{"keys": [...]}`: RSA, EC P-256 or Ed25519; no
    /// symmetric keys).
    #[schema(value_type = Object)]
    pub jwks: Value,
    /// How long edges keep a revocation after the event, in seconds (default 86400, 60 to
    /// 2592000): at least the lifetime of the access tokens of the tenant's issuers.
    #[serde(default)]
    pub revocation_ttl_seconds: Option<i64>,
}

/// At most one `caep_set_refused` alert per tenant in this many milliseconds: the push
/// endpoint is open to anyone, so refused SETs must not be able to flood the alert table.
const ALERT_INTERVAL_MS: i64 = 60_000;

/// Whether an alert for `key` may be raised at `now_ms` (and if so, remembers it); the number
/// of alerts suppressed since the last one.
fn alert_due(key: &str, now_ms: i64) -> Option<u64> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static LAST: OnceLock<Mutex<HashMap<String, (i64, u64)>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if last.len() > 10_000 {
        last.retain(|_, (at, _)| now_ms - *at < ALERT_INTERVAL_MS);
    }
    let entry = last.entry(key.to_string()).or_insert((i64::MIN, 0));
    if now_ms.saturating_sub(entry.0) >= ALERT_INTERVAL_MS {
        let suppressed = entry.1;
        *entry = (now_ms, 0);
        Some(suppressed)
    } else {
        entry.1 += 1;
        None
    }
}

/// RFC 8935 §2.4 error answer.
fn set_error(err: &'static str, description: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"err": err, "description": description.into()})),
    )
        .into_response()
}

/// The algorithms a transmitter key may sign with.
fn key_algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            vec![Algorithm::ES256]
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => Vec::new(),
    };
    match jwk.common.key_algorithm {
        Some(alg) => by_type
            .into_iter()
            .filter(|a| format!("{a:?}") == format!("{alg:?}"))
            .collect(),
        None => by_type,
    }
}

/// Checks transmitter settings; the parsed key set.
fn check_settings(settings: &TransmitterSettings) -> Result<JwkSet, ApiError> {
    let mut problems = Vec::new();
    let mut push = |path: &str, message: &str| {
        problems.push(sase_model::ValidationError {
            path: path.to_string(),
            message: message.to_string(),
        });
    };
    if settings.issuer.is_empty() || settings.issuer.len() > 512 {
        push("issuer", "must be 1 to 512 characters");
    }
    if settings.audience.is_empty() || settings.audience.len() > 512 {
        push("audience", "must be 1 to 512 characters");
    }
    if let Some(ttl) = settings.revocation_ttl_seconds {
        if !(60..=2_592_000).contains(&ttl) {
            push("revocation_ttl_seconds", "must be between 60 and 2592000");
        }
    }
    let text = settings.jwks.to_string();
    let set = if text.len() > MAX_JWKS_BYTES {
        push("jwks", "must be at most 64 KiB");
        None
    } else {
        match serde_json::from_value::<JwkSet>(settings.jwks.clone()) {
            Ok(set) => Some(set),
            Err(e) => {
                push("jwks", &format!("not a JWK set: {e}"));
                None
            }
        }
    };
    if let Some(set) = &set {
        if set.keys.is_empty() || set.keys.len() > 16 {
            push("jwks.keys", "must hold 1 to 16 keys");
        }
        for (i, key) in set.keys.iter().enumerate() {
            if key_algorithms(key).is_empty() || DecodingKey::from_jwk(key).is_err() {
                push(
                    &format!("jwks.keys[{i}]"),
                    "must be an RSA, EC P-256 or Ed25519 public key (symmetric keys are refused)",
                );
            }
        }
    }
    match set {
        Some(set) if problems.is_empty() => Ok(set),
        _ => Err(ApiError::invalid(
            "transmitter_invalid",
            "the transmitter settings are not valid; see `errors`",
            problems,
        )),
    }
}

async fn load_settings(
    state: &SharedState,
    tenant_id: &str,
) -> Result<Option<TransmitterSettings>, ApiError> {
    let row = sqlx::query(
        "SELECT issuer, audience, jwks_json, ttl_seconds FROM caep_transmitters WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(ApiError::internal)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let jwks: String = row.try_get("jwks_json").map_err(ApiError::internal)?;
    Ok(Some(TransmitterSettings {
        issuer: row.try_get("issuer").map_err(ApiError::internal)?,
        audience: row.try_get("audience").map_err(ApiError::internal)?,
        jwks: serde_json::from_str(&jwks).map_err(ApiError::internal)?,
        revocation_ttl_seconds: Some(row.try_get("ttl_seconds").map_err(ApiError::internal)?),
    }))
}

/// Sets the SET transmitter the tenant trusts (recorded in the admin-action trail).
#[utoipa::path(put, path = "/api/tenants/{tenant_id}/caep/transmitter", request_body = TransmitterSettings,
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TransmitterSettings), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_transmitter(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TransmitterSettings>, ApiError> {
    // Authorized before the body is read: another tenant's admin learns nothing from it.
    rbac::authorize_tenant(&state, &admin, Permission::PolicyWrite, &tenant_id).await?;
    let mut settings: TransmitterSettings = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "transmitter_invalid",
            format!("the transmitter settings are not valid: {e}"),
        )
    })?;
    check_settings(&settings)?;
    let ttl = settings
        .revocation_ttl_seconds
        .unwrap_or(DEFAULT_TTL_SECONDS);
    settings.revocation_ttl_seconds = Some(ttl);
    let before = load_settings(&state, &tenant_id).await?;
    sqlx::query("DELETE FROM caep_transmitters WHERE tenant_id = $1")
        .bind(&tenant_id)
        .execute(state.store.pool())
        .await
        .map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO caep_transmitters (tenant_id, issuer, audience, jwks_json, ttl_seconds, updated_by, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&tenant_id)
    .bind(&settings.issuer)
    .bind(&settings.audience)
    .bind(settings.jwks.to_string())
    .bind(ttl)
    .bind(&admin.username)
    .bind(now_ms())
    .execute(state.store.pool())
    .await
    .map_err(ApiError::internal)?;
    crate::admin_audit::record(
        &state,
        &admin,
        "caep.transmitter.update",
        Some(&tenant_id),
        &tenant_id,
        serde_json::to_value(&before).unwrap_or(Value::Null),
        serde_json::to_value(&settings).unwrap_or(Value::Null),
    )
    .await?;
    Ok(Json(settings))
}

/// The SET transmitter the tenant trusts (404 when none is set).
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/caep/transmitter",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TransmitterSettings), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_transmitter(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<TransmitterSettings>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    load_settings(&state, &tenant_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no SET transmitter is configured for this tenant"))
}

/// Revocations in force for the tenant.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/caep/revocations",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = Object)))]
pub async fn list_revocations(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::PolicyRead, &tenant_id).await?;
    let revocations = active_revocations(&state, &tenant_id).await?;
    Ok(Json(json!({"revocations": revocations})))
}

/// The revocations of a tenant still in force (newest last), at most
/// [`MAX_REVOCATIONS_PER_MESSAGE`] times ten.
///
/// # Errors
/// Store failures.
pub async fn active_revocations(
    state: &SharedState,
    tenant_id: &str,
) -> Result<Vec<Revocation>, ApiError> {
    let rows = sqlx::query(
        "SELECT revocation_json FROM caep_revocations WHERE tenant_id = $1 AND expires_at_ms > $2 ORDER BY expires_at_ms LIMIT $3",
    )
    .bind(tenant_id)
    .bind(now_ms())
    .bind(i64::try_from(MAX_REVOCATIONS_PER_MESSAGE * 10).unwrap_or(i64::MAX))
    .fetch_all(state.store.pool())
    .await
    .map_err(ApiError::internal)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let text: String = row.try_get("revocation_json").map_err(ApiError::internal)?;
        if let Ok(r) = serde_json::from_str::<Revocation>(&text) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The messages an edge of `tenant_id` gets after its `hello`: every revocation in force.
///
/// # Errors
/// Store failures.
pub async fn hello_messages(
    state: &SharedState,
    tenant_id: &str,
) -> Result<Vec<ControlMessage>, ApiError> {
    let all = active_revocations(state, tenant_id).await?;
    Ok(all
        .chunks(MAX_REVOCATIONS_PER_MESSAGE)
        .map(|chunk| ControlMessage::Revocations {
            revocations: chunk.to_vec(),
        })
        .collect())
}

/// What went wrong with a SET, as RFC 8935 names it.
struct Refusal(&'static str, String);

/// Verifies a SET against the transmitter's settings; its claims.
fn verify_set(
    token: &str,
    settings: &TransmitterSettings,
    now_ms: i64,
) -> Result<Map<String, Value>, Refusal> {
    let invalid = |why: String| Refusal("invalid_request", why);
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| invalid(format!("not a signed JWT: {e}")))?;
    match header
        .typ
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("secevent+jwt") | Some("application/secevent+jwt") => {}
        Some(other) => {
            return Err(invalid(format!(
                "the JOSE `typ` is `{other}`, not secevent+jwt (an access or ID token is not a SET)"
            )))
        }
    }
    let set: JwkSet = serde_json::from_value(settings.jwks.clone())
        .map_err(|_| Refusal("invalid_key", "the configured key set is unusable".into()))?;
    let candidates: Vec<&Jwk> = set
        .keys
        .iter()
        .filter(|k| match (&header.kid, &k.common.key_id) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .filter(|k| key_algorithms(k).contains(&header.alg))
        .collect();
    if candidates.is_empty() {
        return Err(Refusal(
            "invalid_key",
            "no configured key of the transmitter matches the SET's `kid` and `alg`".into(),
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = HashSet::from(["iss".to_string(), "aud".to_string()]);
    validation.set_issuer(&[settings.issuer.as_str()]);
    validation.set_audience(&[settings.audience.as_str()]);
    let mut last = Refusal(
        "authentication_failed",
        "the SET's signature does not verify".into(),
    );
    for key in candidates {
        let Ok(decoding) = DecodingKey::from_jwk(key) else {
            continue;
        };
        match jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation) {
            Ok(data) => {
                let iat = data.claims.get("iat").and_then(Value::as_i64);
                if iat.is_some_and(|iat| iat > now_ms / 1000 + MAX_IAT_SKEW_SECONDS) {
                    return Err(invalid("the SET's `iat` is in the future".into()));
                }
                return Ok(data.claims);
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                last = match e.kind() {
                    ErrorKind::InvalidIssuer => Refusal(
                        "invalid_issuer",
                        "the SET's `iss` is not the transmitter's".into(),
                    ),
                    ErrorKind::InvalidAudience => Refusal(
                        "invalid_audience",
                        "the SET's `aud` does not name this receiver".into(),
                    ),
                    ErrorKind::MissingRequiredClaim(c) => {
                        invalid(format!("the SET's `{c}` claim is missing"))
                    }
                    ErrorKind::InvalidSignature => last,
                    ErrorKind::Json(_) | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                        invalid("the SET's claims are not a JSON object".into())
                    }
                    _ => Refusal(
                        "authentication_failed",
                        "the SET's signature does not verify".into(),
                    ),
                };
            }
        }
    }
    Err(last)
}

/// Receives a Security Event Token (RFC 8935 push delivery).
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/caep/events",
    request_body(content = String, content_type = "application/secevent+jwt"),
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 202, description = "accepted"), (status = 400, description = "RFC 8935 error: {err, description}")))]
pub async fn receive_set(
    State(state): State<SharedState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match receive(&state, &tenant_id, &headers, &body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(Ok(Refusal(err, description))) => {
            if err != "access_denied" {
                if let Some(suppressed) = alert_due(&tenant_id, now_ms()) {
                    let more = if suppressed > 0 {
                        format!(" ({suppressed} more refused since the last alert)")
                    } else {
                        String::new()
                    };
                    state
                        .alert(
                            Some(&tenant_id),
                            None,
                            "caep_set_refused",
                            format!("{err}: {description}{more}"),
                        )
                        .await;
                }
            }
            set_error(err, description)
        }
        Err(Err(api)) => api.into_response(),
    }
}

async fn receive(
    state: &SharedState,
    tenant_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Result<Refusal, ApiError>> {
    let refuse = |err: &'static str, why: &str| Err(Ok(Refusal(err, why.to_string())));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/secevent+jwt") {
        return refuse(
            "invalid_request",
            "send the SET as Content-Type: application/secevent+jwt",
        );
    }
    if body.len() > MAX_SET_BYTES {
        return refuse("invalid_request", "the SET is larger than 64 KiB");
    }
    let Ok(token) = std::str::from_utf8(body) else {
        return refuse("invalid_request", "the SET is not text");
    };
    // No tenant and no transmitter answer alike: nothing tells which tenants exist.
    let settings = load_settings(state, tenant_id).await.map_err(Err)?;
    let Some(settings) = settings else {
        return refuse(
            "access_denied",
            "this receiver accepts no SETs for that tenant",
        );
    };
    let now = now_ms();
    let claims = verify_set(token.trim(), &settings, now).map_err(Ok)?;
    let ttl_ms = settings
        .revocation_ttl_seconds
        .unwrap_or(DEFAULT_TTL_SECONDS)
        .saturating_mul(1000);
    let revocations = revocations_from_set(&claims, now, ttl_ms)
        .map_err(|e| Ok(Refusal("invalid_request", e.to_string())))?;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let inserted = sqlx::query(
        "INSERT INTO caep_events (tenant_id, jti, received_at_ms) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, jti) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&jti)
    .bind(now)
    .execute(state.store.pool())
    .await
    .map_err(|e| Err(ApiError::internal(e)))?;
    if inserted.rows_affected() == 0 {
        tracing::info!(tenant = %tenant_id, %jti, "SET already received; not applied again");
        return Ok(());
    }
    for r in &revocations {
        let text = serde_json::to_string(r).map_err(|e| Err(ApiError::internal(e)))?;
        sqlx::query(
            "INSERT INTO caep_revocations (tenant_id, id, revocation_json, expires_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(&r.id)
        .bind(text)
        .bind(r.expires_at_ms)
        .execute(state.store.pool())
        .await
        .map_err(|e| Err(ApiError::internal(e)))?;
    }
    let pushed = state.hub.broadcast(
        tenant_id,
        &ControlMessage::Revocations {
            revocations: revocations.clone(),
        },
    );
    tracing::info!(tenant = %tenant_id, %jti, revocations = revocations.len(), pushed, "SET accepted; revocations pushed");
    crate::fanout::announce(
        state,
        crate::fanout::Change::Revocations {
            tenant_id: tenant_id.to_string(),
        },
    )
    .await;
    // Forget what can no longer matter.
    let _ =
        sqlx::query("DELETE FROM caep_revocations WHERE tenant_id = $1 AND expires_at_ms <= $2")
            .bind(tenant_id)
            .bind(now)
            .execute(state.store.pool())
            .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_set_alerts_are_throttled_per_tenant() {
        assert_eq!(alert_due("t-throttle", 1_000), Some(0));
        assert_eq!(alert_due("t-throttle", 2_000), None);
        assert_eq!(alert_due("t-throttle", 3_000), None);
        assert_eq!(alert_due("t-other", 3_000), Some(0));
        assert_eq!(alert_due("t-throttle", 61_000), Some(2));
    }

    #[test]
    fn transmitter_keys_must_be_asymmetric_and_suit_an_algorithm() {
        let settings = |jwks: Value| TransmitterSettings {
            issuer: "https://idp".into(),
            audience: "rcv".into(),
            jwks,
            revocation_ttl_seconds: None,
        };
        let ed = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k",
                                  "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]});
        assert!(check_settings(&settings(ed)).is_ok());
        let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(check_settings(&settings(oct)).is_err());
        assert!(check_settings(&settings(json!({"keys": []}))).is_err());
        let mut bad_ttl = settings(json!({"keys": []}));
        bad_ttl.revocation_ttl_seconds = Some(1);
        assert!(check_settings(&bad_ttl).is_err());
    }

    #[test]
    fn sets_are_verified_against_the_transmitter() {
        let settings = TransmitterSettings {
            issuer: "https://idp".into(),
            audience: "rcv".into(),
            jwks: json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k",
                                   "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}),
            revocation_ttl_seconds: None,
        };
        // Not a JWT; an HMAC "SET" (no key suits HS256); alg none.
        for token in [
            "garbage",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6InNlY2V2ZW50K2p3dCJ9.e30.c2ln",
            "eyJhbGciOiJub25lIn0.e30.",
        ] {
            assert!(verify_set(token, &settings, 0).is_err(), "{token}");
        }
        // A SET whose signature does not verify with the configured key.
        let forged = "eyJhbGciOiJFZERTQSIsInR5cCI6InNlY2V2ZW50K2p3dCIsImtpZCI6ImsifQ.eyJpc3MiOiJodHRwczovL2lkcCIsImF1ZCI6InJjdiJ9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        match verify_set(forged, &settings, 0) {
            Err(Refusal(err, _)) => assert_eq!(err, "authentication_failed"),
            Ok(_) => panic!("a forged SET verified"),
        }
    }
}
