//! Strict security headers on every control-plane answer (API, health, the console's pages and
//! errors alike): a Content-Security-Policy fit for the Yew/wasm console (scripts and wasm only
//! from this origin, no plugins, no framing, no `<base>`, forms only to this origin), HSTS,
//! `nosniff`, no referrer, no framing, a closed Permissions-Policy, cross-origin isolation of
//! windows and resources, and `Cache-Control: no-store` unless a handler chose otherwise.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The headers set on every answer (overriding any a handler set).
pub const HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Adds the headers to an answer (the middleware, for `axum::middleware::map_response`).
pub async fn apply(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_header_is_set_and_cache_control_kept_when_chosen() {
        let response = apply(Response::new(axum::body::Body::empty())).await;
        for (name, value) in HEADERS {
            assert_eq!(
                response.headers().get(*name).map(|v| v.as_bytes()),
                Some(value.as_bytes())
            );
        }
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert!(CSP.contains("script-src 'self' 'wasm-unsafe-eval'"));
        assert!(CSP.contains("frame-ancestors 'none'"));

        let mut chosen = Response::new(axum::body::Body::empty());
        chosen.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        assert_eq!(
            apply(chosen).await.headers()[header::CACHE_CONTROL],
            "max-age=60"
        );
    }
}
