//! The web console's assets, embedded at build time (see `build.rs`), served at `/`.
//!
//! * `/<file>` answers the embedded file (`sase_console.js`, `sase_console_bg.wasm`,
//!   `console.css`, …) with its content type and `Cache-Control: no-cache` (the names carry no
//!   hash, so browsers revalidate).
//! * The console's client-side routes (`/`, `/devices`, … — [`CLIENT_ROUTES`], the `#[at]` paths of
//!   `web-ui/src/routes.rs`) answer `index.html` with the control plane's default
//!   `Cache-Control: no-store`: the console's router picks the page.
//! * Any other path answers status 404 with the same `index.html` (the console shows its "No
//!   such page"): the API port is no catch-all (e.g. `/metrics` is served only on the loopback
//!   metrics listener, and a probe for it here must see 404).
//! * When the console was not built, the client routes answer a short page saying how to build
//!   it. `/api/*` never reaches this module (the API has its own fallback).

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The embedded files: (name, content type, bytes).
pub static ASSETS: &[(&str, &str, &[u8])] =
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>SASE console not built</title></head><body><h1>The web console was not built</h1>\
<p>This control plane was compiled without the console's assets. Build them with \
<code>scripts/build-console.sh</code> (it writes <code>web-ui/dist/</code>), then rebuild \
<code>sase-control</code>. The API is served under <code>/api</code>.</p></body></html>";

/// First path segments of the console's client-side routes (`web-ui/src/routes.rs`; a unit test
/// keeps the two lists equal).
pub const CLIENT_ROUTES: &[&str] = &[
    "",
    "sign-in",
    "tenants",
    "devices",
    "policy",
    "identities",
    "audit",
    "incidents",
    "charts",
    "404",
];

/// True when `path` is one of the console's pages (its first segment names a client route).
fn is_client_route(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    CLIENT_ROUTES.contains(&first)
}

/// The asset a request path names, if embedded.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let name = path.trim_start_matches('/');
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ct, bytes)| (*ct, *bytes))
}

/// True when the console's assets were embedded.
pub fn built() -> bool {
    asset("index.html").is_some()
}

/// The fallback handler for every path outside `/api` and `/healthz`.
pub async fn serve(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return crate::error::ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the console's pages are read with GET",
        )
        .into_response();
    }
    if let Some((content_type, body)) = asset(uri.path()) {
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return response;
    }
    // Any other path is answered with status 404 (a probe for `/metrics` or `/.env` on the API
    // port sees a 404); the body is still the console, whose router shows its "No such page".
    let status = if is_client_route(uri.path()) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let (content_type, body) =
        asset("index.html").unwrap_or(("text/html; charset=utf-8", NOT_BUILT.as_bytes()));
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_routes_fall_back_to_the_index_or_the_build_hint() {
        let page = serve(Method::GET, Uri::from_static("/devices")).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let body = axum::body::to_bytes(page.into_body(), usize::MAX)
            .await
            .expect("body");
        match asset("index.html") {
            Some((_, index)) => assert_eq!(&body[..], index),
            None => assert!(String::from_utf8_lossy(&body).contains("build-console.sh")),
        }
        let post = serve(Method::POST, Uri::from_static("/devices")).await;
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        for path in ["/metrics", "/.env", "/api-docs", "/wp-login.php"] {
            let unknown = serve(Method::GET, Uri::try_from(path).expect("uri")).await;
            assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn client_routes_are_the_consoles_own() {
        let routes = include_str!("../../../web-ui/src/routes.rs");
        let mut declared: Vec<&str> = routes
            .lines()
            .filter_map(|line| line.trim().strip_prefix("#[at(\"/"))
            .filter_map(|rest| rest.split(['"', '/']).next())
            .collect();
        declared.sort_unstable();
        let mut served = CLIENT_ROUTES.to_vec();
        served.sort_unstable();
        assert_eq!(declared, served);
    }

    #[test]
    fn assets_are_found_by_name_only() {
        for (name, content_type, bytes) in ASSETS {
            assert_eq!(asset(&format!("/{name}")), Some((*content_type, *bytes)));
        }
        assert_eq!(asset("/../Cargo.toml"), None);
        assert_eq!(asset("/no-such-file.js"), None);
    }
}
