//! Console sessions: idle timeout and absolute lifetime, server-side revocation, and the
//! password change that ends an admin's other sessions.
//!
//! * A session ends [`Settings::idle_ms`] after its last use and [`Settings::absolute_ms`]
//!   after sign-in, whichever comes first (`401 session_expired`; the row is deleted). Its last
//!   use is written at most once per [`Settings::touch_ms`] so that reads stay reads.
//! * Sign-out deletes the session row (`POST /api/logout`); changing one's password
//!   (`POST /api/me/password`) or confirming MFA enrolment ends every *other* session of the
//!   admin; an MFA reset by a higher role ends all of the target's sessions. API tokens are
//!   explicit, scoped, expiring credentials for scripts and are kept (an admin who fears a
//!   token leaked lets it expire or has the admin disabled, which deletes every credential).
//!   Only a session (not an API token) may change the password.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sqlx::Row as _;
use utoipa::ToSchema;

use crate::auth::{self, Admin, SESSION_COOKIE};
use crate::error::ApiError;
use crate::state::{now_ms, SharedState};
use crate::store::StoreError;

/// Session lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A session unused this long ends (ms).
    pub idle_ms: i64,
    /// A session ends this long after sign-in whatever its use (ms).
    pub absolute_ms: i64,
}

impl Default for Settings {
    /// 30 minutes idle, 12 hours absolute.
    fn default() -> Settings {
        Settings {
            idle_ms: 30 * 60_000,
            absolute_ms: 12 * 3_600_000,
        }
    }
}

impl Settings {
    /// How stale the recorded last use may get before it is written again: a tenth of the
    /// idle timeout, at most a minute.
    pub fn touch_ms(&self) -> i64 {
        (self.idle_ms / 10).clamp(1, 60_000)
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the lifetimes for this process (once, at start).
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// The lifetimes in force.
pub fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// What to do with a session used at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Valid; nothing to write.
    Fresh,
    /// Valid; record `now` as its last use.
    Touch,
    /// Ended by the idle timeout.
    Idle,
    /// Ended by the absolute lifetime.
    TooOld,
}

/// The core: a session created at `created_ms`, last used at `last_used_ms` (if recorded), used
/// again at `now_ms`.
pub fn activity(
    settings: &Settings,
    created_ms: i64,
    last_used_ms: Option<i64>,
    now_ms: i64,
) -> Activity {
    if now_ms.saturating_sub(created_ms) >= settings.absolute_ms {
        return Activity::TooOld;
    }
    let last = last_used_ms.unwrap_or(created_ms).max(created_ms);
    let idle = now_ms.saturating_sub(last);
    if idle >= settings.idle_ms {
        Activity::Idle
    } else if idle >= settings.touch_ms() {
        Activity::Touch
    } else {
        Activity::Fresh
    }
}

fn expired(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        sase_model::reason::Reason::SessionExpired.as_str(),
        format!("the session has ended ({why}); sign in again"),
    )
}

/// Checks a session's idle time and age at `now` and records its use (called by the
/// credential extractor for sessions only).
///
/// # Errors
/// `401 session_expired` (the session is deleted), or a database failure.
pub async fn check_session(
    state: &SharedState,
    token_hash: &str,
    now_ms: i64,
) -> Result<(), ApiError> {
    let pool = state.store.pool();
    let Some(row) =
        sqlx::query("SELECT created_at_ms, last_used_at_ms FROM credentials WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from)?
    else {
        return Err(expired("signed out"));
    };
    let created: i64 = row.try_get("created_at_ms").map_err(StoreError::from)?;
    let last: Option<i64> = row.try_get("last_used_at_ms").map_err(StoreError::from)?;
    match activity(&settings(), created, last, now_ms) {
        Activity::Fresh => Ok(()),
        Activity::Touch => {
            sqlx::query("UPDATE credentials SET last_used_at_ms = $1 WHERE token_hash = $2")
                .bind(now_ms)
                .bind(token_hash)
                .execute(pool)
                .await
                .map_err(StoreError::from)?;
            Ok(())
        }
        ended => {
            state.store.delete_credential(token_hash).await?;
            Err(expired(if ended == Activity::Idle {
                "idle timeout"
            } else {
                "maximum session lifetime"
            }))
        }
    }
}

/// Deletes an admin's sessions (all, or all but `keep`); how many.
///
/// # Errors
/// Database failure.
pub async fn revoke_sessions(
    state: &SharedState,
    admin_id: &str,
    keep: Option<&str>,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM credentials WHERE admin_id = $1 AND kind = 'session' AND token_hash <> $2",
    )
    .bind(admin_id)
    .bind(keep.unwrap_or(""))
    .execute(state.store.pool())
    .await?;
    Ok(done.rows_affected())
}

/// The hash of the credential a request was authenticated with (bearer first, as the
/// extractor does, else the session cookie).
pub fn current_credential_hash(headers: &HeaderMap) -> Option<String> {
    let secret = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => value.split_once(' ').map(|(_, t)| t.trim().to_string()),
        None => crate::csrf::cookie(headers, SESSION_COOKIE),
    }?;
    Some(auth::secret_hash(&secret))
}

/// Request to change one's password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password.
    pub current_password: String,
    /// The new password (12-1024 characters).
    pub new_password: String,
}

/// Changes the caller's password (a session, not an API token, must be used) and ends the
/// caller's other sessions. A wrong current password counts as a failed sign-in.
#[utoipa::path(post, path = "/api/me/password", request_body = PasswordChange,
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody)))]
pub async fn change_password(
    State(state): State<SharedState>,
    admin: Admin,
    headers: HeaderMap,
    conn: Option<axum::Extension<crate::tls::ConnInfo>>,
    Json(req): Json<PasswordChange>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    if admin.token_scopes.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "password_change_needs_session",
            "sign in to change your password (API tokens cannot)",
        ));
    }
    if !(12..=1024).contains(&req.new_password.chars().count()) || req.current_password.len() > 1024
    {
        return Err(ApiError::invalid(
            "password_weak",
            "password must be 12-1024 characters",
            vec![sase_model::ValidationError {
                path: "new_password".into(),
                message: "must be 12-1024 characters".into(),
            }],
        ));
    }
    let now = now_ms();
    let address = conn.map(|c| c.0.peer.ip());
    if let Err(refusal) =
        crate::login_throttle::before_sign_in(&state, &admin.username, address, now).await
    {
        return Ok(refusal);
    }
    let record = state
        .store
        .admin(&admin.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("credential is not valid"))?;
    let (current, stored) = (req.current_password.clone(), record.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&current, &stored))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        crate::admin_audit::record_failed_sign_in(&state, &record, "wrong_password").await;
        crate::login_throttle::after_failed_sign_in(
            &state,
            &admin.username,
            Some(&record),
            address,
            now,
        )
        .await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_password",
            "the current password is wrong",
        ));
    }
    let new = req.new_password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&new))
        .await
        .map_err(ApiError::internal)??;
    sqlx::query("UPDATE admins SET password_hash = $1 WHERE id = $2")
        .bind(&hash)
        .bind(&admin.id)
        .execute(state.store.pool())
        .await
        .map_err(StoreError::from)?;
    let keep = current_credential_hash(&headers);
    let revoked = revoke_sessions(&state, &admin.id, keep.as_deref()).await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "admin.password_change",
        admin.scope.tenant_id(),
        &admin.id,
        serde_json::Value::Null,
        json!({"other_sessions_revoked": revoked}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_absolute_limits_with_sparse_touches() {
        let s = Settings {
            idle_ms: 30 * 60_000,
            absolute_ms: 12 * 3_600_000,
        };
        assert_eq!(s.touch_ms(), 60_000);
        let t0 = 1_000_000_000;
        assert_eq!(activity(&s, t0, None, t0 + 1_000), Activity::Fresh);
        assert_eq!(activity(&s, t0, None, t0 + 60_000), Activity::Touch);
        assert_eq!(
            activity(&s, t0, None, t0 + 30 * 60_000 - 1),
            Activity::Touch
        );
        assert_eq!(activity(&s, t0, None, t0 + 30 * 60_000), Activity::Idle);
        // Used every 20 minutes: alive until the absolute lifetime.
        let mut last = t0;
        let mut t = t0;
        while t + 20 * 60_000 < t0 + s.absolute_ms {
            t += 20 * 60_000;
            assert_eq!(activity(&s, t0, Some(last), t), Activity::Touch, "at {t}");
            last = t;
        }
        assert_eq!(
            activity(&s, t0, Some(last), t0 + s.absolute_ms),
            Activity::TooOld
        );
    }

    #[test]
    fn the_credential_of_a_request_is_bearer_first_then_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "sase_session=c".parse().expect("v"));
        assert_eq!(current_credential_hash(&h), Some(auth::secret_hash("c")));
        h.insert(header::AUTHORIZATION, "Bearer b".parse().expect("v"));
        assert_eq!(current_credential_hash(&h), Some(auth::secret_hash("b")));
    }
}
