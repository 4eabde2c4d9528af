//! The published listener's request path: the thin shell around `sase-gateway`.
//!
//! For each request: snapshot the policy in force (fail closed without one), check header size,
//! ask [`sase_gateway::decide`] for a verdict (fetching JWKS when it asks for keys), read the
//! body within the resource's limit, forward to the upstream, and write one audit event to the
//! spool before answering — allowed or not. Refusals carry a JSON body with a stable reason code
//! and the reference id of their audit event.
//!
//! Seams for later stages: the WAF request phases run between the verdict and the upstream call
//! (on the buffered body), the response phase before the answer; a request from a ZTNA tunnel
//! carries a [`crate::tunnel::TunnelCaller`] extension (set by the tunnel HTTP listener) and is
//! decided with the tunnel peer as the principal instead of a bearer token (`unknown_peer`
//! when no peer of the policy in force holds the client address); an HTTP/3 listener feeds the
//! same [`handle`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use rand::RngCore;
use sase_gateway::{decide_with_client_cert, error_body, RequestParts, Verdict};
use sase_model::audit::{Decision, EventKind, HttpDetails};
use sase_model::{AuditEvent, Reason};

use crate::identity::DeviceIdentity;
use crate::policy::PolicyHolder;
use crate::spool::Spool;
use crate::waf::{PoolOutcome, WafStage};
use sase_model::audit::WafVerdict;
use sase_model::policy::OverloadAction;
use sase_waf::WafError;

/// Response body type of the listener.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Limits of the published listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest total size of request header names and values, in bytes.
    pub max_header_bytes: usize,
    /// Time allowed to receive the request body.
    pub body_timeout: Duration,
    /// Time allowed for the upstream to answer with headers.
    pub upstream_timeout: Duration,
    /// Address of the plain-HTTP listener (reported to the WAF as the server address).
    pub http_addr: Option<SocketAddr>,
    /// Address of the HTTPS listener.
    pub https_addr: Option<SocketAddr>,
}

impl Limits {
    fn local_addr(&self, tls: bool) -> SocketAddr {
        let addr = if tls { self.https_addr } else { self.http_addr };
        addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 32 * 1024,
            body_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(30),
            http_addr: None,
            https_addr: None,
        }
    }
}

/// Everything the request path needs.
pub struct Edge {
    /// Who this device is.
    pub identity: DeviceIdentity,
    /// The policy in force.
    pub policy: Arc<PolicyHolder>,
    /// Audit spool.
    pub spool: Arc<Spool>,
    /// Client for upstreams (connection pooling).
    pub upstream: reqwest::Client,
    /// Client for JWKS fetches.
    pub jwks_client: reqwest::Client,
    /// Listener limits.
    pub limits: Limits,
    /// The WAF engine and its bounded pool.
    pub waf: WafStage,
    /// Optional ModSecurity-style log of rule matches.
    pub waf_log: Option<crate::waf::MatchLog>,
    /// Revoked subjects and sessions (continuous access evaluation), checked after every
    /// token verdict.
    pub revocations: Arc<crate::revocation::Revocations>,
    /// Request counts for the API inventory (OWASP API9).
    pub inventory: crate::inventory::Inventory,
    /// Rate and flow limit counters, and the connection to the shared-budget store.
    pub limiter: crate::ratelimit::EdgeLimiter,
    /// Internal-token signer and per-resource upstream TLS clients (token translation, mTLS).
    pub trust: crate::translate::UpstreamTrust,
}

/// Wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new reference id (given to the client and recorded in the audit event).
pub fn new_reference() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    sase_model::audit::hex_lower(&bytes)
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn refusal(reason: Reason, reference: &str) -> Response<Body> {
    refusal_detail(reason, reference, None)
}

/// A refusal whose message adds `detail` (an API contract violation names the JSON pointer of
/// the offending field, never its value).
fn refusal_detail(reason: Reason, reference: &str, detail: Option<&str>) -> Response<Body> {
    let status = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let body = match detail {
        Some(detail) => sase_gateway::error_body_detail(reason, reference, detail),
        None => error_body(reason, reference),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(reference) {
        headers.insert(HeaderName::from_static("x-sase-reference"), v);
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        let challenge = match reason {
            Reason::TokenMissing => "Bearer",
            _ => "Bearer error=\"invalid_token\"",
        };
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// True when the path carries an encoded `?` (`%3F`). libmodsecurity 3.0.9 does not decode it
/// before the rules see the path, so the rest of the URL would escape inspection
/// (CVE-2024-1019); such paths are refused rather than guessed at.
fn path_hides_query(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'3' && (w[2] == b'F' || w[2] == b'f'))
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1); names
/// built once, not parsed from text on every request and response.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names the Connection header lists are hop-by-hop too.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // One look at the handful of names present, instead of a hashed removal per hop-by-hop
    // name on every request and every answer (most carry none).
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

pub(crate) struct Audit<'a> {
    edge: &'a Edge,
    started: Instant,
    pub(crate) reference: String,
    method: String,
    path: String,
    client: SocketAddr,
    policy_version: u64,
    waf: Option<WafVerdict>,
    /// What the API contract stage found or changed (pointer of a violation, scrubbed
    /// properties, a replaced error body).
    pub(crate) detail: Option<String>,
    /// Scopes and groups the caller's verified token granted (for dry runs of drafts).
    pub(crate) grants: (Vec<String>, Vec<String>),
    /// The tunnel identity of a request from a ZTNA tunnel (the principal).
    pub(crate) tunnel: Option<sase_model::audit::TunnelDetails>,
}

impl Audit<'_> {
    pub(crate) fn record(
        &self,
        reason: Reason,
        status: u16,
        resource: &str,
        route: &str,
        identity: Option<String>,
    ) -> bool {
        let ts_ms = now_ms();
        self.edge.inventory.record(
            resource,
            route,
            &self.method,
            &self.path,
            reason != Reason::Allowed,
            ts_ms,
        );
        let event = AuditEvent {
            seq: 0,
            prev_hash: String::new(),
            ts_ms,
            tenant_id: self.edge.identity.tenant_id.clone(),
            device_id: self.edge.identity.device_id.clone(),
            kind: EventKind::HttpRequest,
            decision: if reason == Reason::Allowed {
                Decision::Allow
            } else {
                Decision::Deny
            },
            reason,
            reference: self.reference.clone(),
            policy_version: self.policy_version,
            identity,
            http: Some(HttpDetails {
                resource: resource.to_string(),
                route: route.to_string(),
                method: self.method.clone(),
                path: self.path.clone(),
                status,
                latency_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
                client_ip: self.client.ip().to_string(),
                scopes: self.grants.0.clone(),
                groups: self.grants.1.clone(),
            }),
            detail: self.detail.clone(),
            waf: self.waf.clone(),
            quic: None,
            tunnel: self.tunnel.clone(),
        };
        crate::metrics::request(reason, self.waf.as_ref().is_some_and(|w| w.blocked));
        match self.edge.spool.append(event) {
            Ok(_) => true,
            // Full, configured to keep serving: the spool counts it and says so in the chain.
            Err(crate::spool::SpoolError::Full {
                fail_closed: false, ..
            }) => true,
            Err(err) => {
                tracing::error!(%err, reference = %self.reference, "audit spool write failed");
                false
            }
        }
    }

    /// Records a refusal and builds its answer.
    pub(crate) fn deny(
        &self,
        reason: Reason,
        resource: &str,
        route: &str,
        identity: Option<String>,
    ) -> Response<Body> {
        self.record(reason, reason.http_status(), resource, route, identity);
        refusal_detail(reason, &self.reference, self.detail.as_deref())
    }
}

/// Records a request that hyper refused before it reached [`handle`]: its head could not be
/// parsed (hyper answered 400) or was too large (431), and hyper closed the connection. Other
/// connection errors (the client went away, a timeout, an HTTP/2 protocol error) are not
/// requests and are not recorded. Returns whether an event was written.
pub fn audit_refused_by_parser(
    edge: &Edge,
    client: SocketAddr,
    err: &(dyn std::error::Error + 'static),
) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let hyper_error = loop {
        match source {
            Some(e) => match e.downcast_ref::<hyper::Error>() {
                Some(h) => break h,
                None => source = e.source(),
            },
            None => return false,
        }
    };
    let reason = if hyper_error.is_parse_too_large() {
        Reason::HeadersTooLarge
    } else if hyper_error.is_parse() || hyper_error.is_parse_status() {
        Reason::BadRequest
    } else {
        return false;
    };
    let audit = Audit {
        edge,
        started: Instant::now(),
        reference: new_reference(),
        method: String::new(),
        path: String::new(),
        client,
        policy_version: edge.policy.snapshot().map_or(0, |p| p.version),
        waf: None,
        detail: None,
        grants: Default::default(),
        tunnel: None,
    };
    audit.record(reason, reason.http_status(), "", "", None)
}

/// Handles one request from the published listener: HTTP/1.1 and HTTP/2 (hyper's
/// [`hyper::body::Incoming`]) or HTTP/3 ([`crate::quic::H3Body`]) — one pipeline for all.
pub async fn handle<B>(
    edge: Arc<Edge>,
    client: SocketAddr,
    tls: bool,
    req: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let http1 = req.version() < http::Version::HTTP_2;
    let h3 = req.version() == http::Version::HTTP_3;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map(str::to_string);
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut body_read = false;
    // The request's span carries its audit reference id, so log lines join audit events.
    let reference = new_reference();
    let span = tracing::info_span!("request", request_id = %reference);
    let mut response = tracing::Instrument::instrument(
        handle_inner(&edge, client, tls, req, &mut body_read, reference),
        span,
    )
    .await;
    if http1 && has_body && !body_read {
        // The unread body is still on the wire: this connection cannot carry another request,
        // so say so instead of letting the client reuse it and race the close.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !h3 {
        // QUIC modes: advertise HTTP/3 where it is inspected, strip `Alt-Svc: h3` elsewhere.
        crate::quic::apply_alt_svc(&edge, host.as_deref(), &mut response);
    }
    Ok(response)
}

async fn handle_inner<B>(
    edge: &Arc<Edge>,
    client: SocketAddr,
    tls: bool,
    req: Request<B>,
    body_read: &mut bool,
    reference: String,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path: String = parts.uri.path().chars().take(2048).collect();
    let policy = edge.policy.snapshot();
    let mut audit = Audit {
        edge,
        started,
        reference,
        method: parts.method.as_str().chars().take(32).collect(),
        path,
        client,
        policy_version: policy.as_ref().map_or(0, |p| p.version),
        waf: None,
        detail: None,
        grants: Default::default(),
        tunnel: None,
    };
    // A request through a ZTNA tunnel (the tunnel listener set who sent it).
    let tunnel = parts
        .extensions
        .get::<crate::tunnel::TunnelCaller>()
        .cloned();
    if let Some(caller) = &tunnel {
        audit.tunnel = caller.peer.as_ref().map(|p| p.details.clone());
        if caller.peer.is_none() {
            return audit.deny(Reason::UnknownPeer, "", "", None);
        }
    }
    if parts.method == http::Method::GET && parts.uri.path() == sase_gateway::INTERNAL_JWKS_PATH {
        // The public key of the edge's internal tokens (token translation): not a resource.
        return edge.trust.jwks_response();
    }
    let Some(policy) = policy else {
        return audit.deny(Reason::NoPolicy, "", "", None);
    };
    if edge.spool.refusing() {
        // The spool is full and configured to fail closed: nothing unrecorded may happen.
        return audit.deny(Reason::AuditSpoolFull, "", "", None);
    }
    if path_hides_query(parts.uri.path()) {
        return audit.deny(Reason::PathRefused, "", "", None);
    }
    if parts.method == http::Method::CONNECT {
        // The edge is a reverse proxy, never a tunnel: a well-formed CONNECT (authority-form
        // `host:port`, RFC 9110 §9.3.6) gets 405, a malformed one 400. The WAF still looks at
        // it (detect only) so the attempt shows in the audit trail.
        let well_formed = parts
            .uri
            .authority()
            .is_some_and(|a| a.port_u16().is_some_and(|p| p != 0))
            && parts
                .uri
                .path_and_query()
                .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/");
        audit.waf = inspect_unrouted(edge, &policy, &parts, client, tls, &audit).await;
        let reason = if well_formed {
            Reason::MethodNotAllowed
        } else {
            Reason::BadRequest
        };
        return audit.deny(reason, "", "", None);
    }
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > edge.limits.max_header_bytes {
        return audit.deny(Reason::HeadersTooLarge, "", "", None);
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if parts.method == http::Method::OPTIONS {
        if let Some(response) =
            crate::contract::preflight(&audit, &policy, &parts.headers, host, parts.uri.path())
        {
            return response;
        }
    }
    let request_parts = RequestParts {
        method: parts.method.as_str(),
        host,
        path: parts.uri.path(),
        authorization,
    };

    // The connection's client certificate chain (mTLS), for resources that take one.
    let client_chain = parts
        .extensions
        .get::<crate::mtls::PeerCertificates>()
        .map(|c| c.0.clone());
    let mut verdict = if let Some(caller) = &tunnel {
        // The tunnel peer is the principal: no token is read. The resource is the one whose
        // upstream address the client connected to.
        match &caller.peer {
            Some(peer) => sase_gateway::decide_tunnel(
                &policy.compiled,
                caller.resource.as_deref().unwrap_or_default(),
                &request_parts,
                &peer.principal(),
            ),
            None => return audit.deny(Reason::UnknownPeer, "", "", None),
        }
    } else {
        let jwks = edge.policy.jwks.read().unwrap_or_else(|p| p.into_inner());
        decide_with_client_cert(
            &policy.compiled,
            &jwks,
            &edge.policy.tokens,
            &request_parts,
            client_chain.as_deref().map(Vec::as_slice),
            now_ms(),
        )
    };
    if let Verdict::NeedKeys { issuer_id } = &verdict {
        let issuer_id = issuer_id.clone();
        crate::jwks::refresh(edge, &policy, &issuer_id).await;
        let jwks = edge.policy.jwks.read().unwrap_or_else(|p| p.into_inner());
        verdict = decide_with_client_cert(
            &policy.compiled,
            &jwks,
            &edge.policy.tokens,
            &request_parts,
            client_chain.as_deref().map(Vec::as_slice),
            now_ms(),
        );
    }
    let allowed = match verdict {
        Verdict::Allow(allowed) => allowed,
        Verdict::Deny(denied) => {
            if let Some(token) = &denied.token {
                audit.grants = sase_gateway::token_grants(token);
            }
            if denied.reason == Reason::RouteNotFound {
                // Requests that match no route are refused anyway; the WAF still looks at them
                // (detect only, headers and URI) so that probing shows up in the audit trail.
                audit.waf = inspect_unrouted(edge, &policy, &parts, client, tls, &audit).await;
            }
            return audit.deny(
                denied.reason,
                &denied.resource,
                &denied.route,
                denied.identity,
            );
        }
        Verdict::NeedKeys { .. } => {
            return audit.deny(Reason::TokenUnknownKey, "", "", None);
        }
    };
    let resource = allowed.resource.as_str();
    let route = allowed.route.as_str();
    let identity = allowed.identity.clone();
    if let Some(token) = &allowed.token {
        audit.grants = sase_gateway::token_grants(token);
    }

    // Continuous access evaluation: a revoked subject or session is refused on every request,
    // whether its token was just verified or served from the cache, on any connection.
    if let Some(token) = allowed.token.as_deref() {
        if let Some(revoked) = edge.revocations.check(token, now_ms()) {
            audit.detail = Some(format!("revocation {}", revoked.id));
            audit.record(
                Reason::TokenRevoked,
                Reason::TokenRevoked.http_status(),
                resource,
                route,
                identity,
            );
            let mut response = refusal(Reason::TokenRevoked, &audit.reference);
            let challenge = sase_gateway::revocation::claims_challenge(&revoked);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return response;
        }
    }

    // Rate and flow limits (API4, API6) before the body is read; the route's size limits and
    // timeouts.
    let applied = match crate::ratelimit::enforce(
        edge,
        &policy.limits,
        &allowed,
        &parts.headers,
        client,
        &mut audit,
    )
    .await
    {
        Ok(applied) => applied,
        Err(response) => return response,
    };

    // Body, within the resource's (or route's) limit.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > applied.max_body_bytes) {
        return audit.deny(Reason::BodyTooLarge, resource, route, identity);
    }
    let limit = usize::try_from(applied.max_body_bytes).unwrap_or(usize::MAX);
    let body = match tokio::time::timeout(applied.body_timeout, Limited::new(body, limit).collect())
        .await
    {
        Ok(Ok(collected)) => {
            *body_read = true;
            collected.to_bytes()
        }
        Ok(Err(err))
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return audit.deny(Reason::BodyTooLarge, resource, route, identity);
        }
        Ok(Err(_)) => return audit.deny(Reason::BadRequest, resource, route, identity),
        // The body did not arrive in time (a slow body).
        Err(_) => return audit.deny(Reason::RequestTimeout, resource, route, identity),
    };

    // Object ownership (API1), GraphQL limits, egress allowlist (API7) on the read body.
    if let Err(response) = crate::authz::check(&allowed, &parts, &body, &mut audit).await {
        return response;
    }

    // WAF request phases.
    // (The scope's key is only built when the policy has WAF rules at all.)
    let waf_scope = policy.waf.rules.as_ref().and_then(|rules| {
        let scope = crate::waf::scope_key(resource, route);
        let settings = policy.waf.settings.get(&scope)?.clone();
        Some((scope, settings, rules.clone()))
    });
    let inspected = match &waf_scope {
        Some((scope, settings, rules)) => {
            if body.len() as u64 > settings.request_body_limit {
                return audit.deny(Reason::BodyTooLarge, resource, route, identity);
            }
            let request = OwnedRequest::new(&parts, client, edge.limits.local_addr(tls), &body);
            let rules = rules.clone();
            let scope_for_job = scope.clone();
            let job_request = request.clone();
            let outcome = edge
                .waf
                .run(move |engine| {
                    job_request.with_view(|r| engine.inspect_request(&rules, &scope_for_job, r))
                })
                .await;
            match outcome {
                PoolOutcome::Done(findings) => {
                    audit.waf = Some(crate::waf::verdict(settings, &findings, None));
                    if let Some(log) = &edge.waf_log {
                        log.write(&audit.reference, &request.client_ip, &audit.path, &findings);
                    }
                    if findings.blocked {
                        // libmodsecurity asks for 400 when it cannot parse the body (rules
                        // 200002/200007): that is a malformed request, not an attack.
                        let reason = if findings.status == Some(400) {
                            Reason::BadRequest
                        } else {
                            Reason::WafBlocked
                        };
                        return audit.deny(reason, resource, route, identity);
                    }
                    Some(request)
                }
                PoolOutcome::Failed(WafError::InvalidInput(why)) => {
                    audit.waf = Some(crate::waf::skipped(settings, &why));
                    return audit.deny(Reason::BadRequest, resource, route, identity);
                }
                PoolOutcome::Overloaded | PoolOutcome::Failed(_) => {
                    let why = match &outcome {
                        PoolOutcome::Failed(err) => format!("engine error: {err}"),
                        _ => "overloaded".to_string(),
                    };
                    audit.waf = Some(crate::waf::skipped(settings, &why));
                    if settings.on_overload == OverloadAction::FailClosed {
                        return audit.deny(Reason::WafOverloaded, resource, route, identity);
                    }
                    tracing::warn!(%why, %scope, "WAF skipped; resource fails open");
                    None
                }
            }
        }
        None => None,
    };

    // API contract (OpenAPI operation of the route, if any): parameters, content type, body.
    let api = allowed.api.as_ref();
    if let Some(api) = api.filter(|a| a.has_operation()) {
        let request = sase_gateway::ContractRequest {
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body: &body,
        };
        if let Err(violation) = api.check_request(&request) {
            audit.detail = Some(violation.to_string());
            return audit.deny(violation.reason, resource, route, identity);
        }
    }

    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!(
        "{}{}{}",
        allowed.upstream.trim_end_matches('/'),
        parts.uri.path(),
        query
    );
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    if api.is_some_and(|a| a.has_operation()) {
        // Response scrubbing needs a body it can read: no compression from the upstream.
        headers.remove(header::ACCEPT_ENCODING);
    }
    let sase_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-sase-"))
        .cloned()
        .collect();
    for name in sase_headers {
        headers.remove(name);
    }
    if let Ok(v) = HeaderValue::from_str(&audit.reference) {
        headers.insert(HeaderName::from_static("x-sase-reference"), v);
    }
    if let Some(identity) = allowed.identity.as_deref() {
        if let Ok(v) = HeaderValue::from_str(identity) {
            headers.insert(HeaderName::from_static("x-sase-identity"), v);
        }
    }
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h);
    }
    if let Ok(v) = HeaderValue::from_str(&client.ip().to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    // Token translation and upstream TLS (the resource's CA, the device certificate).
    let upstream_client = match edge.trust.prepare(
        &allowed,
        &mut headers,
        &edge.upstream,
        now_ms(),
        &audit.reference,
    ) {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(%why, %resource, "upstream trust");
            return audit.deny(Reason::UpstreamUnavailable, resource, route, identity);
        }
    };
    // Plain-HTTP upstreams without TLS settings: the lean pooled hyper client
    // (`crate::upstream`); upstreams with TLS settings: their reqwest client.
    let tls_settings = allowed
        .guards
        .as_ref()
        .is_some_and(|g| g.upstream_tls().is_some());
    let upstream = if !tls_settings && crate::upstream::PlainHttp::serves(&url) {
        edge.trust
            .plain
            .send(
                parts.method.clone(),
                &url,
                headers,
                body,
                applied.upstream_timeout,
            )
            .await
    } else {
        match upstream_client
            .request(parts.method.clone(), &url)
            .headers(headers)
            .body(body)
            .timeout(applied.upstream_timeout)
            .send()
            .await
        {
            Ok(response) => Ok(response.into()),
            Err(err) if err.is_timeout() => Err(crate::upstream::UpstreamFailure::Timeout),
            Err(err) => Err(crate::upstream::UpstreamFailure::Unavailable(
                err.to_string(),
            )),
        }
    };
    let response: Response<reqwest::Body> = match upstream {
        Ok(response) => response,
        Err(err) => {
            let reason = match err {
                crate::upstream::UpstreamFailure::Timeout => Reason::UpstreamTimeout,
                crate::upstream::UpstreamFailure::Unavailable(_) => Reason::UpstreamUnavailable,
            };
            tracing::warn!(%err, %resource, "upstream request failed");
            return audit.deny(reason, resource, route, identity);
        }
    };
    let (mut head, upstream_body) = response.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if let Ok(v) = HeaderValue::from_str(&audit.reference) {
        head.headers
            .insert(HeaderName::from_static("x-sase-reference"), v);
    }

    // WAF response phases, when the route asks for them: the body is buffered (up to a limit)
    // so that it can be refused before any of it reaches the client.
    let body: crate::contract::UpstreamBody = match (&waf_scope, inspected) {
        (Some((scope, settings, rules)), Some(request)) if settings.inspect_responses => {
            let collected = match tokio::time::timeout(
                edge.limits.upstream_timeout,
                Limited::new(upstream_body, MAX_INSPECTED_RESPONSE).collect(),
            )
            .await
            {
                Ok(Ok(collected)) => collected.to_bytes(),
                _ => return audit.deny(Reason::UpstreamUnavailable, resource, route, identity),
            };
            let response_headers: Vec<(Vec<u8>, Vec<u8>)> = head
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            let status = head.status.as_u16();
            let rules = rules.clone();
            let scope_for_job = scope.clone();
            let response_body = collected.clone();
            let outcome = edge
                .waf
                .run(move |engine| {
                    let headers: Vec<(&[u8], &[u8])> = response_headers
                        .iter()
                        .map(|(n, v)| (n.as_slice(), v.as_slice()))
                        .collect();
                    let response = sase_waf::HttpResponse {
                        status,
                        http_version: "1.1",
                        headers: &headers,
                        body: &response_body,
                    };
                    request.with_view(|r| {
                        engine.inspect_response(&rules, &scope_for_job, r, &response)
                    })
                })
                .await;
            match outcome {
                PoolOutcome::Done(findings) => {
                    if let Some(log) = &edge.waf_log {
                        log.write(
                            &audit.reference,
                            &client.ip().to_string(),
                            &audit.path,
                            &findings,
                        );
                    }
                    let request_findings = audit.waf.take();
                    let mut verdict = crate::waf::verdict(
                        settings,
                        &sase_waf::Findings::default(),
                        Some(&findings),
                    );
                    if let Some(req) = request_findings {
                        verdict.inbound_score = req.inbound_score;
                        let mut ids = req.rule_ids;
                        let mut messages = req.messages;
                        for (id, message) in verdict.rule_ids.iter().zip(verdict.messages.iter()) {
                            if !ids.contains(id) {
                                ids.push(*id);
                                messages.push(message.clone());
                            }
                        }
                        verdict.rule_ids = ids;
                        verdict.messages = messages;
                    }
                    audit.waf = Some(verdict);
                    if findings.blocked {
                        return audit.deny(Reason::WafBlocked, resource, route, identity);
                    }
                }
                PoolOutcome::Overloaded | PoolOutcome::Failed(_) => {
                    if settings.on_overload == OverloadAction::FailClosed {
                        audit.waf =
                            Some(crate::waf::skipped(settings, "response inspection failed"));
                        return audit.deny(Reason::WafOverloaded, resource, route, identity);
                    }
                }
            }
            crate::contract::UpstreamBody::Buffered(collected)
        }
        _ => crate::contract::UpstreamBody::Streaming(upstream_body),
    };
    // A third-party upstream's answer must match its declared schema (API10).
    let body = match crate::authz::check_third_party(edge, &allowed, &head, body, &mut audit).await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    let body = match api {
        Some(api) => {
            let origin = parts.headers.get(header::ORIGIN);
            match crate::contract::harden_response(
                edge, api, &mut head, body, origin, tls, &mut audit,
            )
            .await
            {
                Ok(body) => body,
                Err(reason) => return audit.deny(reason, resource, route, identity),
            }
        }
        None => body,
    };
    let body: Body = match body {
        crate::contract::UpstreamBody::Buffered(collected) => {
            head.headers.remove(header::CONTENT_LENGTH);
            full(collected)
        }
        crate::contract::UpstreamBody::Streaming(upstream_body) => {
            upstream_body.map_err(std::io::Error::other).boxed()
        }
    };
    if !audit.record(
        Reason::Allowed,
        head.status.as_u16(),
        resource,
        route,
        identity,
    ) {
        // No audit, no service: an unrecorded request must not happen.
        let reason = if edge.spool.refusing() {
            Reason::AuditSpoolFull
        } else {
            Reason::UpstreamUnavailable
        };
        return refusal(reason, &audit.reference);
    }
    crate::ratelimit::add_headers(&mut head.headers, applied.quota);
    Response::from_parts(head, body)
}

/// Runs the detect-only inspection of a request that matched no route.
async fn inspect_unrouted(
    edge: &Edge,
    policy: &crate::policy::ActivePolicy,
    parts: &http::request::Parts,
    client: SocketAddr,
    tls: bool,
    audit: &Audit<'_>,
) -> Option<WafVerdict> {
    let scope = crate::waf::UNROUTED_SCOPE;
    let settings = policy.waf.settings.get(scope)?.clone();
    let rules = policy.waf.rules.clone()?;
    let request = OwnedRequest::new(parts, client, edge.limits.local_addr(tls), &Bytes::new());
    let job_request = request.clone();
    match edge
        .waf
        .run(move |engine| job_request.with_view(|r| engine.inspect_request(&rules, scope, r)))
        .await
    {
        PoolOutcome::Done(findings) => {
            if let Some(log) = &edge.waf_log {
                log.write(&audit.reference, &request.client_ip, &audit.path, &findings);
            }
            Some(crate::waf::verdict(&settings, &findings, None))
        }
        PoolOutcome::Overloaded => Some(crate::waf::skipped(&settings, "overloaded")),
        PoolOutcome::Failed(err) => Some(crate::waf::skipped(&settings, &err.to_string())),
    }
}

/// Largest response body buffered for WAF inspection.
pub(crate) const MAX_INSPECTED_RESPONSE: usize = 4 * 1024 * 1024;

/// An owned copy of what the WAF needs from a request (moved into the inspection pool).
#[derive(Clone)]
struct OwnedRequest {
    client_ip: String,
    client_port: u16,
    server_ip: String,
    server_port: u16,
    method: String,
    uri: String,
    http_version: &'static str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Bytes,
}

impl OwnedRequest {
    fn new(
        parts: &http::request::Parts,
        client: SocketAddr,
        local: SocketAddr,
        body: &Bytes,
    ) -> OwnedRequest {
        OwnedRequest {
            client_ip: client.ip().to_string(),
            client_port: client.port(),
            server_ip: local.ip().to_string(),
            server_port: local.port(),
            method: parts.method.as_str().to_string(),
            uri: parts.uri.path_and_query().map_or_else(
                || parts.uri.path().to_string(),
                |pq| pq.as_str().to_string(),
            ),
            http_version: match parts.version {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            body: body.clone(),
        }
    }

    /// Calls `f` with the borrowed form `sase_waf` takes.
    fn with_view<T>(&self, f: impl FnOnce(&sase_waf::HttpRequest<'_>) -> T) -> T {
        let headers: Vec<(&[u8], &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let request = sase_waf::HttpRequest {
            client_ip: &self.client_ip,
            client_port: self.client_port,
            server_ip: &self.server_ip,
            server_port: self.server_port,
            method: &self.method,
            uri: &self.uri,
            http_version: self.http_version,
            headers: &headers,
            body: &self.body,
        };
        f(&request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("close, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("transfer-encoding").is_none());
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-keep").is_some());
    }

    #[test]
    fn encoded_question_mark_in_the_path_is_detected() {
        assert!(path_hides_query("/a%3F/b"));
        assert!(path_hides_query("/a%3f"));
        assert!(!path_hides_query("/a%2F3F"));
        assert!(!path_hides_query("/orders/1001"));
    }

    #[test]
    fn refusal_carries_reason_reference_and_challenge() {
        let response = refusal(Reason::TokenExpired, "ref123");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response
                .headers()
                .get("x-sase-reference")
                .map(|v| v.as_bytes()),
            Some(&b"ref123"[..])
        );
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
