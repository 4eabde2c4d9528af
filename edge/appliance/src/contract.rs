//! The I/O half of the API contract stage (the decisions are `sase_gateway::ApiHandle`'s):
//! CORS preflights answered by the edge, and upstream responses hardened — JSON bodies
//! buffered (up to the WAF response limit, reusing a body the WAF already buffered) and
//! scrubbed of undeclared properties, 5xx bodies replaced by the generic error with the
//! reference id, security headers added, the upstream's own CORS headers replaced by the
//! policy's.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use sase_gateway::{error_body, ApiHandle, Preflight, ResponsePlan};
use sase_model::Reason;

use crate::policy::ActivePolicy;
use crate::proxy::{full, Audit, Body, Edge, MAX_INSPECTED_RESPONSE};

/// An upstream response body: still streaming, or already buffered (by the WAF response
/// phase or the contract stage).
pub(crate) enum UpstreamBody {
    /// Not read yet.
    Streaming(reqwest::Body),
    /// Read whole.
    Buffered(Bytes),
}

/// Answers a CORS preflight when the request is one (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) for a route whose resource has a CORS policy; `None`
/// otherwise (the ordinary decision follows).
pub(crate) fn preflight(
    audit: &Audit<'_>,
    policy: &ActivePolicy,
    headers: &HeaderMap,
    host: Option<&str>,
    path: &str,
) -> Option<Response<Body>> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)?
        .to_str()
        .ok()?;
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok());
    match sase_gateway::preflight(&policy.compiled, host, path, origin, method, requested)? {
        Preflight::Allow {
            resource,
            route,
            headers: cors,
        } => {
            audit.record(Reason::Allowed, 204, &resource, &route, None);
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            let out = response.headers_mut();
            for (name, value) in cors {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    out.append(HeaderName::from_static(name), v);
                }
            }
            if let Ok(v) = HeaderValue::from_str(&audit.reference) {
                out.insert(HeaderName::from_static("x-sase-reference"), v);
            }
            Some(response)
        }
        Preflight::Refuse { resource, route } => {
            Some(audit.deny(Reason::CorsRefused, &resource, &route, None))
        }
    }
}

/// Applies the response side of the contract. `Err` is a refusal reason (the upstream's JSON
/// body could not be read within the limit).
pub(crate) async fn harden_response(
    edge: &Edge,
    api: &ApiHandle,
    head: &mut http::response::Parts,
    body: UpstreamBody,
    origin: Option<&HeaderValue>,
    tls: bool,
    audit: &mut Audit<'_>,
) -> Result<UpstreamBody, Reason> {
    let status = head.status.as_u16();
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut body = body;
    match api.response_plan(status, content_type) {
        ResponsePlan::Pass => {}
        ResponsePlan::Replace => {
            // The upstream's error body (stack traces, SQL, paths) never reaches the client.
            body = UpstreamBody::Buffered(Bytes::from(error_body(
                Reason::UpstreamError,
                &audit.reference,
            )));
            for name in [
                header::CONTENT_ENCODING,
                header::CONTENT_LENGTH,
                header::ETAG,
            ] {
                head.headers.remove(name);
            }
            head.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            audit.detail = Some(format!("upstream {status} body replaced"));
        }
        ResponsePlan::Scrub => {
            let bytes = match body {
                UpstreamBody::Buffered(bytes) => bytes,
                UpstreamBody::Streaming(stream) => match tokio::time::timeout(
                    edge.limits.upstream_timeout,
                    Limited::new(stream, MAX_INSPECTED_RESPONSE).collect(),
                )
                .await
                {
                    Ok(Ok(collected)) => collected.to_bytes(),
                    _ => return Err(Reason::UpstreamUnavailable),
                },
            };
            body = match head.headers.contains_key(header::CONTENT_ENCODING) {
                // Encoded bodies cannot be read: the edge asks for none, so refuse one.
                true => return Err(Reason::UpstreamUnavailable),
                false => match api.scrub_response(status, &bytes) {
                    Some((scrubbed, removed)) => {
                        let mut detail = format!("response scrubbed: {}", removed.join(", "));
                        if detail.len() > 512 {
                            detail.truncate(509);
                            detail.push_str("...");
                        }
                        audit.detail = Some(detail);
                        head.headers.remove(header::ETAG);
                        UpstreamBody::Buffered(Bytes::from(scrubbed))
                    }
                    None => UpstreamBody::Buffered(bytes),
                },
            };
        }
    }
    for (name, value) in api.security_headers(tls) {
        if !head.headers.contains_key(*name) {
            if let Ok(v) = HeaderValue::from_str(value) {
                head.headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
    if api.has_cors() {
        let upstream_cors: Vec<HeaderName> = head
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in upstream_cors {
            head.headers.remove(name);
        }
        let origin = origin.and_then(|o| o.to_str().ok());
        for (name, value) in api.cors_headers(origin) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                head.headers.append(HeaderName::from_static(name), v);
            }
        }
    }
    Ok(body)
}
