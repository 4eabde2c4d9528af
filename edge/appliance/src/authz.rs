//! The shell of the route guards of `sase-gateway` ([`sase_gateway::RouteGuards`]): once the
//! body is read, object ownership (API1) and GraphQL limits are checked against the caller's
//! claims, and every destination the request names (URL-valued fields, and the upstream when
//! the resource has an egress allowlist) is resolved here and judged by the gateway after DNS
//! resolution (API7 SSRF). A refusal is audited with the guard's detail (field and claim names,
//! the limit, the class of address — never values). For a third-party upstream (API10) the
//! response is read and validated against the API document before anything reaches the client.

use std::net::IpAddr;
use std::time::Duration;

use http::{header, Response};
use http_body_util::{BodyExt as _, Limited};
use sase_gateway::{Allowed, Destination, GuardRequest};
use sase_model::Reason;

use crate::contract::UpstreamBody;
use crate::proxy::{Audit, Body, Edge, MAX_INSPECTED_RESPONSE};

/// Longest time a destination's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves a destination's host (an IP literal is its own address). An error or a timeout
/// gives no address, which the gateway refuses.
pub(crate) async fn resolve(dest: &Destination) -> Vec<IpAddr> {
    if let Ok(ip) = dest.host.parse::<IpAddr>() {
        return vec![ip];
    }
    match tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((dest.host.as_str(), dest.port)),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => Vec::new(),
    }
}

/// Runs the route's guards; `Err` is the refusal to send (already audited).
pub(crate) async fn check(
    allowed: &Allowed,
    parts: &http::request::Parts,
    body: &[u8],
    audit: &mut Audit<'_>,
) -> Result<(), Response<Body>> {
    let Some(guards) = allowed.guards.as_ref() else {
        return Ok(());
    };
    let request = GuardRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        body,
    };
    // Without a token (a client certificate as the `alternative` identity), rules read the
    // certificate's identity as `sub`.
    let from_certificate: Option<serde_json::Map<String, serde_json::Value>> =
        match (&allowed.token, &allowed.subject) {
            (None, Some(sub)) => {
                Some(std::iter::once(("sub".to_string(), sub.clone().into())).collect())
            }
            _ => None,
        };
    let claims = match allowed.token.as_deref() {
        Some(t) => Some(t.claims()),
        None => from_certificate.as_ref(),
    };
    let refuse = |audit: &mut Audit<'_>, reason: Reason, detail: String| {
        audit.detail = Some(detail);
        audit.deny(
            reason,
            &allowed.resource,
            &allowed.route,
            allowed.identity.clone(),
        )
    };
    let destinations = match guards.check_request(&request, claims) {
        Ok(d) => d,
        Err(v) => return Err(refuse(audit, v.reason, v.detail)),
    };
    for dest in &destinations {
        let addrs = resolve(dest).await;
        if let Err(v) = guards.check_destination(dest, &addrs) {
            return Err(refuse(audit, v.reason, v.detail));
        }
    }
    Ok(())
}

/// Validates the response of a third-party upstream (`egress.third_party`) against the
/// schema its operation declares (OWASP API10): the body is read (up to the inspection limit)
/// and refused with 502 `upstream_invalid` when it does not match. Upstream 5xx answers are
/// left to the contract's error rewriting. `Err` is the refusal to send (already audited).
pub(crate) async fn check_third_party(
    edge: &Edge,
    allowed: &Allowed,
    head: &http::response::Parts,
    body: UpstreamBody,
    audit: &mut Audit<'_>,
) -> Result<UpstreamBody, Response<Body>> {
    let third_party = allowed.guards.as_ref().is_some_and(|g| g.third_party());
    let (Some(api), true) = (allowed.api.as_ref(), third_party) else {
        return Ok(body);
    };
    let status = head.status.as_u16();
    if status >= 500 || !api.has_operation() {
        return Ok(body);
    }
    let refuse = |audit: &mut Audit<'_>, reason: Reason, detail: String| {
        audit.detail = Some(detail);
        audit.deny(
            reason,
            &allowed.resource,
            &allowed.route,
            allowed.identity.clone(),
        )
    };
    if head.headers.contains_key(header::CONTENT_ENCODING) {
        return Err(refuse(
            audit,
            Reason::UpstreamInvalid,
            "the response is encoded and cannot be validated".into(),
        ));
    }
    let bytes = match body {
        UpstreamBody::Buffered(bytes) => bytes,
        UpstreamBody::Streaming(stream) => match tokio::time::timeout(
            edge.limits.upstream_timeout,
            Limited::new(stream, MAX_INSPECTED_RESPONSE).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            _ => {
                return Err(refuse(
                    audit,
                    Reason::UpstreamInvalid,
                    "the response could not be read whole".into(),
                ))
            }
        },
    };
    match api.validate_response(status, &bytes) {
        Ok(()) => Ok(UpstreamBody::Buffered(bytes)),
        Err(why) => Err(refuse(audit, Reason::UpstreamInvalid, why)),
    }
}
