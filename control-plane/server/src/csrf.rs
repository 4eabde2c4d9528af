//! CSRF protection for cookie-authenticated calls (the console's way of signing in).
//!
//! A state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`) that carries the session cookie
//! and no `Authorization` header must
//!
//! 1. carry `X-CSRF-Token` equal to the session's CSRF token — SHA-256 over a fixed label and
//!    the session secret, handed out at sign-in in the body and in the readable `sase_csrf`
//!    cookie (a "signed double submit": another site can neither read the cookie nor compute the
//!    token without the HttpOnly session secret), compared in constant time; and
//! 2. come from this origin: `Origin`, when sent, must be `https://<Host>` or the configured
//!    public URL's origin; `Sec-Fetch-Site`, when sent, must be `same-origin` (or `none`, typed
//!    by the user); a request with neither header is refused too (every browser sends at least
//!    one on a state-changing request; scripts authenticate with a bearer token instead).
//!
//! Bearer-token calls are exempt (a browser never adds that header by itself). `POST
//! /api/login` needs no token (there is no session yet) but gets the origin check when it
//! carries a cookie or an `Origin` (no sign-in CSRF from another site). Refusals answer `403
//! csrf_refused` and are recorded as `admin.csrf_refused` for the admin whose live session was
//! used (others are only logged: they could not have acted anyway).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::SESSION_COOKIE;
use crate::error::ApiError;
use crate::state::SharedState;

/// Name of the readable cookie that carries the CSRF token for the console's scripts.
pub const CSRF_COOKIE: &str = "sase_csrf";
/// Header the console sends the token back in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session secret.
pub fn token_for(session: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sase-csrf-v1\0");
    h.update(session.as_bytes());
    hex::encode(h.finalize())
}

/// The `Set-Cookie` value of the CSRF cookie (readable by scripts: no `HttpOnly`).
pub fn cookie_for(session: &str, max_age_s: i64) -> String {
    format!(
        "{CSRF_COOKIE}={}; Secure; SameSite=Strict; Path=/; Max-Age={max_age_s}",
        token_for(session)
    )
}

/// Equality in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| {
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        )
    })
}

/// Why a request is refused, or `None` when it passes. Pure: headers, method, path and the
/// public URL in, verdict out.
pub fn verdict(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    public_url: &str,
) -> Option<&'static str> {
    if !is_state_changing(method) || headers.contains_key(header::AUTHORIZATION) {
        return None;
    }
    let session = cookie(headers, SESSION_COOKIE);
    let login = path == "/api/login";
    if session.is_none() && !(login && headers.contains_key(header::ORIGIN)) {
        return None;
    }
    // Origin / Sec-Fetch-Site.
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if let Some(site) = &site {
        if site != "same-origin" && site != "none" {
            return Some("the request comes from another site (Sec-Fetch-Site)");
        }
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        Some(Ok(origin)) => {
            let origin = origin.to_ascii_lowercase();
            let from_host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(|h| format!("https://{}", h.to_ascii_lowercase()));
            let public = origin_of(public_url);
            if Some(&origin) != from_host.as_ref() && Some(&origin) != public.as_ref() {
                return Some("the request comes from another origin");
            }
        }
        Some(Err(_)) => return Some("the Origin header is not readable"),
        None if site.is_none() => {
            return Some("a cookie-authenticated request must say where it comes from (Origin)")
        }
        None => {}
    }
    if login {
        return None;
    }
    let session = session?;
    let sent = headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    if sent.is_empty() {
        return Some("the X-CSRF-Token header is missing");
    }
    if !constant_time_eq(&sent, token_for(&session).as_bytes()) {
        return Some("the X-CSRF-Token header does not match the session");
    }
    None
}

/// The middleware (on the whole application).
pub async fn guard(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let Some(why) = verdict(
        request.method(),
        request.uri().path(),
        request.headers(),
        &state.public_url,
    ) else {
        return next.run(request).await;
    };
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    tracing::warn!(%method, %path, why, "CSRF refusal");
    if let Some(session) = cookie(request.headers(), SESSION_COOKIE) {
        if session.len() <= 256 {
            if let Ok(Some(record)) = state
                .store
                .credential_record(&crate::auth::secret_hash(&session))
                .await
            {
                if let Ok(principal) = crate::auth::principal_from(record, crate::state::now_ms()) {
                    let tenant = principal.scope.tenant_id().map(str::to_string);
                    if let Err(err) = crate::admin_audit::record(
                        &state,
                        &principal,
                        "admin.csrf_refused",
                        tenant.as_deref(),
                        &principal.id,
                        serde_json::Value::Null,
                        serde_json::json!({"reason": "csrf_refused", "method": method,
                            "path": path, "why": why}),
                    )
                    .await
                    {
                        tracing::warn!(?err, "cannot record a CSRF refusal");
                    }
                }
            }
        }
    }
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        sase_model::reason::Reason::CsrfRefused.as_str(),
        format!("{why}; the console sends X-CSRF-Token (scripts use a bearer token)"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "https://cp.example:8443";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn cookie_posts_need_the_token_and_the_origin() {
        let token = token_for("s3cret");
        let cookie = "sase_session=s3cret; sase_csrf=whatever";
        let good = [
            ("cookie", cookie),
            ("host", "cp.example:8443"),
            ("origin", "https://cp.example:8443"),
            ("x-csrf-token", token.as_str()),
        ];
        assert_eq!(
            verdict(&Method::POST, "/api/tenants", &headers(&good), PUBLIC),
            None
        );
        // Without the token, with a wrong one, with another session's.
        assert!(verdict(&Method::POST, "/api/tenants", &headers(&good[..3]), PUBLIC).is_some());
        let other = token_for("other");
        let mut wrong = good;
        wrong[3] = ("x-csrf-token", other.as_str());
        assert!(verdict(&Method::DELETE, "/api/x", &headers(&wrong), PUBLIC).is_some());
        // From another origin, or another site, or saying nothing about where from.
        let mut foreign = good;
        foreign[2] = ("origin", "https://evil.example");
        assert!(verdict(&Method::PUT, "/api/x", &headers(&foreign), PUBLIC).is_some());
        let mut cross = good;
        cross[2] = ("sec-fetch-site", "cross-site");
        assert!(verdict(&Method::PATCH, "/api/x", &headers(&cross), PUBLIC).is_some());
        let silent = [good[0], good[1], good[3]];
        assert!(verdict(&Method::POST, "/api/x", &headers(&silent), PUBLIC).is_some());
        // Sec-Fetch-Site alone is enough for the origin part.
        let fetch = [good[0], good[1], ("sec-fetch-site", "same-origin"), good[3]];
        assert_eq!(
            verdict(&Method::POST, "/api/x", &headers(&fetch), PUBLIC),
            None
        );
        // The public URL's origin is accepted behind a proxy that rewrites Host.
        let proxied = [
            good[0],
            ("host", "10.0.0.5:8443"),
            ("origin", "https://CP.example:8443"),
            good[3],
        ];
        assert_eq!(
            verdict(&Method::POST, "/api/x", &headers(&proxied), PUBLIC),
            None
        );
    }

    #[test]
    fn reads_bearer_calls_and_cookie_less_calls_are_exempt() {
        let cookie = ("cookie", "sase_session=s3cret");
        assert_eq!(
            verdict(&Method::GET, "/api/x", &headers(&[cookie]), PUBLIC),
            None
        );
        let bearer = [cookie, ("authorization", "Bearer abc")];
        assert_eq!(
            verdict(&Method::POST, "/api/x", &headers(&bearer), PUBLIC),
            None
        );
        assert_eq!(
            verdict(&Method::POST, "/api/x", &HeaderMap::new(), PUBLIC),
            None
        );
    }

    #[test]
    fn sign_in_from_another_origin_is_refused() {
        let foreign = [
            ("origin", "https://evil.example"),
            ("host", "cp.example:8443"),
        ];
        assert!(verdict(&Method::POST, "/api/login", &headers(&foreign), PUBLIC).is_some());
        let own = [
            ("origin", "https://cp.example:8443"),
            ("host", "cp.example:8443"),
        ];
        assert_eq!(
            verdict(&Method::POST, "/api/login", &headers(&own), PUBLIC),
            None
        );
        assert_eq!(
            verdict(&Method::POST, "/api/login", &HeaderMap::new(), PUBLIC),
            None
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert_ne!(token_for("a"), token_for("b"));
        assert_eq!(token_for("a").len(), 64);
    }
}
