//! Admin authentication: argon2 password hashes, session cookies for the console, bearer API
//! tokens for scripts, and the first-admin bootstrap (the owner of the default MSP).
//!
//! Secrets (session ids, API tokens) are 32 random bytes shown once; only their SHA-256 is
//! stored, so a leaked database does not hand out live credentials.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use std::collections::BTreeSet;

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::rbac::{Permission, Principal, Role, Scope};
use crate::state::{now_ms, SharedState};
use crate::store::{AdminRecord, CredentialRecord, DEFAULT_MSP};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sase_session";
/// Prefix of API tokens, so they are recognisable in logs and secret scanners.
pub const API_TOKEN_PREFIX: &str = "sase_";
/// Default lifetime of a console session (the configured one is `sessions::settings()`).
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// Hashes a password with argon2id (default parameters, random salt).
///
/// # Errors
/// Only on an internal argon2 failure.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("argon2: {e}")))
}

/// Checks a password against a stored hash; a malformed stored hash never verifies.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new random secret (URL-safe), for sessions, tokens and claim codes.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, buf)
}

/// A new claim code: 20 characters from an alphabet without look-alikes (no 0/O, 1/I),
/// grouped by four (`K7QM-…`), about 100 bits. Easy to read out over the phone to whoever
/// installs the box, and never starts with `-` (which command lines would take for an option).
pub fn claim_code() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    let mut code = String::with_capacity(24);
    for i in 0..20 {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    code
}

/// SHA-256 of a secret, hex: what the store keeps.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The authenticated admin behind a request (extractor): a [`Principal`] with role, scope
/// and token scopes. Accepts `Authorization: Bearer <api token or session id>` or the session
/// cookie.
pub type Admin = Principal;

fn credential_from(parts: &Parts) -> Option<String> {
    if let Some(value) = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            return Some(token.trim().to_string());
        }
        return None;
    }
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

impl FromRequestParts<SharedState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let secret = credential_from(parts).ok_or_else(|| {
            ApiError::unauthorized("sign in first: send a session cookie or a bearer API token")
        })?;
        if secret.len() > 256 {
            return Err(ApiError::unauthorized("credential is not valid"));
        }
        let hash = secret_hash(&secret);
        let record = state
            .store
            .credential_record(&hash)
            .await?
            .ok_or_else(|| ApiError::unauthorized("credential is not valid or has expired"))?;
        let now = now_ms();
        let is_session = record.kind == "session";
        let principal = principal_from(record, now)?;
        if is_session {
            // Idle timeout and absolute lifetime (crate::sessions).
            crate::sessions::check_session(state, &hash, now).await?;
        }
        Ok(principal)
    }
}

/// Builds the principal of a stored credential, refusing expired credentials
/// (`401 token_expired`) and disabled admins (`401 admin_disabled`).
///
/// # Errors
/// As above, and `500` for a stored role or scope that does not parse.
pub fn principal_from(record: CredentialRecord, now_ms: i64) -> Result<Principal, ApiError> {
    if record.expires_at_ms <= now_ms {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "this credential has expired",
        ));
    }
    let admin = record.admin;
    if admin.disabled_at_ms.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_disabled",
            "this admin has been disabled",
        ));
    }
    let role: Role = admin
        .role
        .parse()
        .map_err(|_| ApiError::internal(format!("stored role {:?}", admin.role)))?;
    let scope = match (role.is_msp(), admin.tenant_id) {
        (true, _) => Scope::Msp {
            msp_id: admin.msp_id,
        },
        (false, Some(tenant_id)) => Scope::Customer {
            msp_id: admin.msp_id,
            tenant_id,
        },
        (false, None) => return Err(ApiError::internal("customer admin without a tenant")),
    };
    let token_scopes = record
        .scopes
        .map(|s| {
            s.split_whitespace()
                .map(|name| {
                    Permission::parse(name)
                        .ok_or_else(|| ApiError::internal(format!("stored scope {name:?}")))
                })
                .collect::<Result<BTreeSet<_>, _>>()
        })
        .transpose()?;
    Ok(Principal {
        id: admin.id,
        username: admin.username,
        role,
        scope,
        token_scopes,
    })
}

/// Creates the first admin when there is none. Returns the generated password when one was
/// generated (the caller prints it once), `None` when the password came from the environment
/// or an admin already exists.
///
/// # Errors
/// Store failures.
pub async fn bootstrap_admin(
    state: &SharedState,
    username: &str,
    password_from_env: Option<String>,
) -> Result<Option<String>, ApiError> {
    if state.store.admin_count().await? > 0 {
        return Ok(None);
    }
    let (password, generated) = match password_from_env {
        Some(p) if !p.is_empty() => (p, false),
        _ => (random_secret(18), true),
    };
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??
    };
    // The first admin owns the default MSP (created by migration 0003).
    state
        .store
        .insert_admin(&AdminRecord {
            id: crate::state::new_id("adm"),
            username: username.to_string(),
            password_hash: hash,
            role: Role::MspOwner.as_str().to_string(),
            msp_id: DEFAULT_MSP.to_string(),
            tenant_id: None,
            created_by: None,
            created_at_ms: now_ms(),
            disabled_at_ms: None,
            totp_secret: None,
            totp_enabled_at_ms: None,
            totp_last_step: None,
        })
        .await?;
    Ok(generated.then_some(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_codes_are_grouped_unambiguous_and_never_start_with_a_dash() {
        for _ in 0..200 {
            let code = claim_code();
            assert_eq!(code.len(), 24);
            assert!(!code.starts_with('-'));
            assert!(code.split('-').all(|g| g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())));
            assert!(!code.contains(['0', 'O', '1', 'I']));
        }
    }

    #[test]
    fn password_hash_verifies_only_the_right_password() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("correct horse", "not-a-hash"));
    }

    #[test]
    fn bearer_wins_over_cookie_and_bad_schemes_are_ignored() {
        let req = axum::http::Request::builder()
            .header("authorization", "Bearer abc")
            .header("cookie", "x=1; sase_session=zzz")
            .body(())
            .expect("req");
        let (parts, _) = req.into_parts();
        assert_eq!(credential_from(&parts).as_deref(), Some("abc"));

        let req = axum::http::Request::builder()
            .header("cookie", "x=1; sase_session=zzz")
            .body(())
            .expect("req");
        let (parts, _) = req.into_parts();
        assert_eq!(credential_from(&parts).as_deref(), Some("zzz"));

        let req = axum::http::Request::builder()
            .header("authorization", "Basic abc")
            .body(())
            .expect("req");
        let (parts, _) = req.into_parts();
        assert_eq!(credential_from(&parts), None);
    }
}
