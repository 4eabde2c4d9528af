//! The decision for one HTTP request: route selection, bearer token, scopes and groups, ending
//! in a [`Verdict`]. A pure function of the compiled policy, the fetched keys, the request parts
//! and `now`; the shell does all I/O. Also the client-facing error body of a refusal.

use std::collections::BTreeSet;
use std::sync::Arc;

use sase_model::Reason;
use serde_json::{Map, Value};

use sase_model::policy::Method;
use sase_model::upstream_trust::ClientCertMode;

use crate::cache::TokenCache;
use crate::contract::ApiHandle;
use crate::jwks::JwksStore;
use crate::jwt::{self, TokenFailure, VerifiedToken};
use crate::policy::CompiledPolicy;

/// The parts of an HTTP request that decisions look at.
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    /// Method token, e.g. `GET` (case-sensitive, as HTTP says).
    pub method: &'a str,
    /// `Host` header value, possibly with a port.
    pub host: Option<&'a str>,
    /// Path only, without the query.
    pub path: &'a str,
    /// Raw `Authorization` header value.
    pub authorization: Option<&'a str>,
}

impl std::fmt::Debug for RequestParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("RequestParts")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("authorization", &self.authorization.map(|_| "<redacted>"))
            .finish()
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the request upstream.
    Allow(Allowed),
    /// Refuse the request.
    Deny(Denied),
    /// The token's `kid` is unknown for a `jwks_url` issuer (or no keys were fetched for it
    /// yet): the shell should fetch that issuer's JWK set (if [`JwksStore::may_refetch`]),
    /// install it and call [`decide`] again; if it cannot, treat as a refusal with
    /// [`Reason::TokenUnknownKey`].
    NeedKeys {
        /// Id of the issuer whose keys are needed.
        issuer_id: String,
    },
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Name of the matched resource.
    pub resource: String,
    /// Id of the matched route.
    pub route: String,
    /// Upstream base URL of the resource.
    pub upstream: String,
    /// `iss|sub` of the caller; `None` on public routes.
    pub identity: Option<String>,
    /// The caller's `sub` claim; `None` on public routes.
    pub subject: Option<String>,
    /// Largest request body the resource accepts, in bytes.
    pub max_body_bytes: u64,
    /// The resource's API contract and the route's operation, when the resource has an `api`
    /// block (`None` costs nothing further on the request path).
    pub api: Option<ApiHandle>,
    /// The verified token (claims, as served from the cache or just verified); `None` on
    /// public routes. The shell checks it against the revocation table (CAEP).
    pub token: Option<Arc<VerifiedToken>>,
    /// The route's ownership, GraphQL and egress checks, run by the shell once the body is
    /// read (`None`: the route has none).
    pub guards: Option<Arc<crate::guards::RouteGuards>>,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Why it was refused.
    pub reason: Reason,
    /// Name of the matched resource, `""` if none matched.
    pub resource: String,
    /// Id of the matched route, `""` if none matched.
    pub route: String,
    /// `iss|sub` of the caller when the token verified (scope or group refusals).
    pub identity: Option<String>,
    /// The verified token, for scope and group refusals (what it granted is audited).
    pub token: Option<Arc<VerifiedToken>>,
}

/// Decides one request at time `now_ms` (Unix milliseconds).
pub fn decide(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    req: &RequestParts<'_>,
    now_ms: i64,
) -> Verdict {
    decide_inner(policy, jwks, None, req, None, now_ms)
}

/// Like [`decide`], serving token verifications from `cache` when it holds a still valid one
/// for the token (see [`TokenCache`]) and remembering new ones.
pub fn decide_cached(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    cache: &TokenCache,
    req: &RequestParts<'_>,
    now_ms: i64,
) -> Verdict {
    decide_inner(policy, jwks, Some(cache), req, None, now_ms)
}

/// Like [`decide_cached`], with the client certificate chain the connection presented (end
/// entity first; `None` or empty: none). A resource with `client_certificates` verifies it
/// against its CA: with `mode: alternative` a valid certificate is the caller's identity
/// (from its SAN) and no token is needed; with `additional` both are required.
pub fn decide_with_client_cert(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    cache: &TokenCache,
    req: &RequestParts<'_>,
    client_chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    now_ms: i64,
) -> Verdict {
    decide_inner(policy, jwks, Some(cache), req, client_chain, now_ms)
}

fn decide_inner(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    cache: Option<&TokenCache>,
    req: &RequestParts<'_>,
    client_chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    now_ms: i64,
) -> Verdict {
    let Some((resource, route)) = policy.find_route(req.method, req.host, req.path) else {
        return deny(Reason::RouteNotFound, "", "", None);
    };
    let refuse = |reason: Reason, identity: Option<String>| {
        deny(reason, &resource.name, &route.id, identity)
    };
    let allow =
        |identity: Option<String>, subject: Option<String>, token: Option<Arc<VerifiedToken>>| {
            Verdict::Allow(Allowed {
                resource: resource.name.clone(),
                route: route.id.clone(),
                upstream: resource.upstream.clone(),
                identity,
                subject,
                max_body_bytes: resource.max_body_bytes,
                api: resource.contract.as_ref().map(|c| {
                    ApiHandle::new(
                        c.clone(),
                        Method::from_http(req.method).and_then(|m| route.operation(m)),
                    )
                }),
                token,
                guards: route.guards.clone(),
            })
        };

    // mTLS client certificate (resources with `client_certificates`, non-public routes).
    if let (Some(check), false) = (resource.client_certs.as_deref(), route.public) {
        match client_chain.filter(|c| !c.is_empty()) {
            Some(chain) => match check.verify(chain, now_ms) {
                Ok(id) if check.mode == ClientCertMode::Alternative => {
                    return allow(Some(format!("cert|{id}")), Some(id), None);
                }
                // `additional`: the certificate is a second factor; the token names the caller.
                Ok(_) => {}
                Err(reason) => return refuse(reason, None),
            },
            None if check.mode == ClientCertMode::Additional => {
                return refuse(Reason::ClientCertMissing, None);
            }
            // `alternative` without a certificate: the token decides.
            None => {}
        }
    }

    if route.public {
        return allow(None, None, None);
    }

    let token = match jwt::bearer_token(req.authorization) {
        Ok(token) => token,
        Err(reason) => return refuse(reason, None),
    };
    let hash = cache.map(|_| TokenCache::hash(token));
    let cached = match (cache, &hash) {
        (Some(cache), Some(hash)) => cache.get(hash, policy.generation(), now_ms, |t| {
            jwt::still_valid(policy, jwks, resource, t, now_ms)
        }),
        _ => None,
    };
    let verified = match cached {
        Some(verified) => verified,
        None => match jwt::verify(policy, jwks, resource, token, now_ms) {
            Ok(verified) => {
                let verified = Arc::new(verified);
                if let (Some(cache), Some(hash)) = (cache, hash) {
                    cache.insert(hash, verified.clone(), policy.generation(), now_ms);
                }
                verified
            }
            Err(TokenFailure::Refuse(reason)) => return refuse(reason, None),
            Err(TokenFailure::NeedKeys(issuer_id)) => return Verdict::NeedKeys { issuer_id },
        },
    };
    let identity = format!("{}|{}", verified.iss, verified.sub);

    let scopes = token_scopes(&verified.claims);
    let refuse_with_token = |reason: Reason, identity: String| {
        Verdict::Deny(Denied {
            reason,
            resource: resource.name.clone(),
            route: route.id.clone(),
            identity: Some(identity),
            token: Some(verified.clone()),
        })
    };
    if !route.scopes.iter().all(|s| scopes.contains(s.as_str())) {
        return refuse_with_token(Reason::ScopeMissing, identity);
    }

    let token_groups = string_array(verified.claims.get("groups"));
    let in_group = |group: &String| {
        token_groups.contains(group.as_str())
            || policy
                .groups
                .get(group)
                .is_some_and(|members| members.contains(&verified.sub))
    };
    if !route.groups.iter().all(in_group) {
        return refuse_with_token(Reason::GroupMissing, identity);
    }

    let subject = Some(verified.sub.clone());
    allow(Some(identity), subject, Some(verified))
}

/// A caller identified by the ZTNA tunnel its packets came through (the peer of the policy in
/// force that holds the client's tunnel address), instead of a bearer token.
#[derive(Debug, Clone, Copy)]
pub struct TunnelPrincipal<'a> {
    /// The audited identity, e.g. `tunnel|alice@example.com`.
    pub identity: &'a str,
    /// The subject that group membership (`groups` of the policy) is checked against.
    pub subject: &'a str,
    /// The groups the control plane bound to the peer.
    pub groups: &'a [String],
}

/// Decides a request that arrived through a ZTNA tunnel for `resource` (the resource whose
/// upstream address the client connected to): the route by method and path within that
/// resource, then the route's requirements judged against the tunnel principal — its groups
/// (or the policy's group members) must cover the route's groups; a route that requires
/// scopes is refused (`scope_missing`: a tunnel grants no token scopes). No token is read.
pub fn decide_tunnel(
    policy: &CompiledPolicy,
    resource: &str,
    req: &RequestParts<'_>,
    principal: &TunnelPrincipal<'_>,
) -> Verdict {
    let Some((resource, route)) = policy.find_route_by_resource(resource, req.method, req.path)
    else {
        return deny(Reason::RouteNotFound, resource, "", None);
    };
    let identity = Some(principal.identity.to_string());
    if !route.public {
        if !route.scopes.is_empty() {
            return deny(Reason::ScopeMissing, &resource.name, &route.id, identity);
        }
        let in_group = |group: &String| {
            principal.groups.contains(group)
                || policy
                    .groups
                    .get(group)
                    .is_some_and(|members| members.contains(principal.subject))
        };
        if !route.groups.iter().all(in_group) {
            return deny(Reason::GroupMissing, &resource.name, &route.id, identity);
        }
    }
    Verdict::Allow(Allowed {
        resource: resource.name.clone(),
        route: route.id.clone(),
        upstream: resource.upstream.clone(),
        identity,
        subject: Some(principal.subject.to_string()),
        max_body_bytes: resource.max_body_bytes,
        api: resource.contract.as_ref().map(|c| {
            ApiHandle::new(
                c.clone(),
                Method::from_http(req.method).and_then(|m| route.operation(m)),
            )
        }),
        token: None,
        guards: route.guards.clone(),
    })
}

fn deny(reason: Reason, resource: &str, route: &str, identity: Option<String>) -> Verdict {
    Verdict::Deny(Denied {
        reason,
        resource: resource.to_string(),
        route: route.to_string(),
        identity,
        token: None,
    })
}

/// What a verified token granted, as audited: its scopes (`scope` / `scp`) and its `groups`
/// claim, sorted, at most 64 of each.
pub fn token_grants(token: &VerifiedToken) -> (Vec<String>, Vec<String>) {
    let scopes = token_scopes(&token.claims)
        .into_iter()
        .take(64)
        .map(str::to_string)
        .collect();
    let groups = string_array(token.claims.get("groups"))
        .into_iter()
        .take(64)
        .map(str::to_string)
        .collect();
    (scopes, groups)
}

/// Scopes granted by the `scope` claim (space-separated) and the `scp` claim (array of
/// strings, or a space-separated string as some providers send).
fn token_scopes(claims: &Map<String, Value>) -> BTreeSet<&str> {
    let mut scopes = BTreeSet::new();
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace()),
            Some(Value::Array(items)) => scopes.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    scopes
}

/// The strings of an array claim; anything else counts as empty.
fn string_array(value: Option<&Value>) -> BTreeSet<&str> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => BTreeSet::new(),
    }
}

/// The JSON body of a refusal:
/// `{"error": "<reason code>", "message": "<short text>", "reference": "<reference>"}`.
/// The message is stable, human and reveals nothing about internals.
pub fn error_body(reason: Reason, reference: &str) -> String {
    serde_json::json!({
        "error": reason.as_str(),
        "message": message(reason),
        "reference": reference,
    })
    .to_string()
}

/// Like [`error_body`], the message followed by `detail` (for an API contract violation, what
/// is wrong and the JSON pointer of the field: never the field's value).
pub fn error_body_detail(reason: Reason, reference: &str, detail: &str) -> String {
    serde_json::json!({
        "error": reason.as_str(),
        "message": format!("{}: {detail}", message(reason)),
        "reference": reference,
    })
    .to_string()
}

fn message(reason: Reason) -> &'static str {
    match reason {
        Reason::Allowed => "the request was allowed",
        Reason::NoPolicy => "the gateway has no policy to enforce yet",
        Reason::RouteNotFound => "no such route",
        Reason::TokenMissing => "a bearer token is required",
        Reason::TokenInvalid => "the bearer token is invalid",
        Reason::TokenExpired => "the bearer token has expired",
        Reason::TokenNotYetValid => "the bearer token is not valid yet",
        Reason::TokenBadAudience => "the bearer token is not meant for this service",
        Reason::TokenBadIssuer => "the bearer token comes from an untrusted issuer",
        Reason::TokenUnknownKey => "the bearer token is signed with an unknown key",
        Reason::TokenAlgorithmNotAllowed => {
            "the bearer token uses a signature algorithm that is not allowed"
        }
        Reason::ScopeMissing => "the token lacks a required scope",
        Reason::GroupMissing => "the caller is not in a required group",
        Reason::HeadersTooLarge => "the request headers are too large",
        Reason::BodyTooLarge => "the request body is too large",
        Reason::BadRequest => "the request is malformed",
        Reason::UpstreamUnavailable => "the service is unavailable",
        Reason::AuditSpoolFull => "the service cannot record requests right now; try again later",
        Reason::UpstreamTimeout => "the service did not answer in time",
        Reason::PathRefused => "the request path is not in a form the gateway accepts",
        Reason::WafBlocked => "the request was blocked by the web application firewall",
        Reason::WafOverloaded => "the service is busy; try again shortly",
        Reason::MethodNotAllowed => "this method is not served here",
        Reason::TokenCritUnsupported => {
            "the bearer token requires a header extension the gateway does not support"
        }
        Reason::TokenTooLarge => "the bearer token is too large",
        Reason::TokenKeysUnavailable => {
            "the keys of the token's issuer cannot be refreshed; try again later"
        }
        Reason::ParameterInvalid => "a request parameter does not match the API contract",
        Reason::BodyInvalid => "the request body does not match the API contract",
        Reason::ContentTypeUnsupported => "this content type is not accepted here",
        Reason::CorsRefused => "this cross-origin request is not allowed",
        Reason::UpstreamError => "the service failed to handle the request",
        // Firmware update outcomes: audit only, never an HTTP answer.
        Reason::UpdateSignatureInvalid => "the firmware update's signature does not verify",
        Reason::UpdateNotApplicable => "the firmware update does not apply to this device",
        Reason::UpdateUnhealthy => "the firmware update did not come up healthy",
        Reason::RateLimited => "too many requests; retry after the time in Retry-After",
        Reason::RateLimitStoreUnavailable => "the request budget cannot be checked now",
        Reason::RequestTimeout => "the request body did not arrive in time",
        Reason::TokenRevoked => {
            "the session or credentials behind the bearer token were revoked; sign in again"
        }
        Reason::ObjectNotOwned => "the caller does not own the object named in the request",
        Reason::EgressRefused => "the request points to a destination that is not allowed",
        Reason::GraphqlRefused => "the GraphQL request is not allowed",
        Reason::UpstreamInvalid => "the service answered with a response that breaks its contract",
        Reason::ClientCertMissing => "a client certificate is required",
        Reason::ClientCertInvalid => "the client certificate is not accepted",
        // QUIC flow decisions: audit only, never an HTTP answer.
        Reason::QuicBlocked => "QUIC is blocked here; use HTTPS over TCP",
        Reason::QuicSniRefused => "QUIC to this server name is not allowed",
        Reason::QuicDropped => "QUIC is dropped here",
        // Control-plane refusals: never answered by the edge.
        Reason::AccountLocked => "too many failed sign-ins for this account; try again later",
        Reason::LoginThrottled => "too many failed sign-ins; try again later",
        Reason::CsrfRefused => "the request lacks a valid CSRF token or comes from another origin",
        Reason::SessionExpired => "the session has ended; sign in again",
        Reason::UnknownPeer => "this tunnel address belongs to no peer in force",
        Reason::TunnelFlowDenied => "the tunnel's rules do not allow this flow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_come_from_scope_and_scp() {
        let claims = json!({"scope": "a b", "scp": ["c", 7], "groups": ["g", null]});
        let claims = claims.as_object().expect("object");
        assert_eq!(
            token_scopes(claims),
            ["a", "b", "c"].into_iter().collect::<BTreeSet<_>>()
        );
        assert_eq!(
            string_array(claims.get("groups")),
            ["g"].into_iter().collect::<BTreeSet<_>>()
        );
        assert!(string_array(claims.get("scope")).is_empty());
    }

    #[test]
    fn error_body_is_json_with_code_message_and_reference() {
        let body = error_body(Reason::RouteNotFound, "req-\"1\"");
        let value: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            value,
            json!({"error": "route_not_found", "message": "no such route", "reference": "req-\"1\""})
        );
        let body: Value =
            serde_json::from_str(&error_body(Reason::ScopeMissing, "r")).expect("json");
        assert_eq!(body["message"], "the token lacks a required scope");
    }

    #[test]
    fn request_parts_debug_hides_credentials() {
        let parts = RequestParts {
            method: "GET",
            host: None,
            path: "/",
            authorization: Some("Bearer secret-token"),
        };
        let text = format!("{parts:?}");
        assert!(!text.contains("secret-token"), "{text}");
    }
}
