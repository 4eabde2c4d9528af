//! Stable reason codes. Every decision the edge takes carries one; it lands in the audit event
//! and in the client-facing error body. Codes are part of the public contract: add new ones, never
//! rename old ones.

use serde::{Deserialize, Serialize};

/// Why a request was allowed or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The request passed every check.
    Allowed,
    /// The edge holds no verified policy bundle (fail closed).
    NoPolicy,
    /// No resource or route matches the host, method and path.
    RouteNotFound,
    /// The route needs a bearer token and none was sent.
    TokenMissing,
    /// The token is malformed or its signature does not verify.
    TokenInvalid,
    /// The token's `exp` is in the past (beyond the leeway).
    TokenExpired,
    /// The token's `nbf` is in the future (beyond the leeway).
    TokenNotYetValid,
    /// The token's `aud` names none of the issuer's audiences.
    TokenBadAudience,
    /// The token's `iss` is not an issuer trusted by the resource.
    TokenBadIssuer,
    /// The token's `kid` names no key known for the issuer.
    TokenUnknownKey,
    /// The token's `alg` is not in the issuer's allowlist (`none` never is).
    TokenAlgorithmNotAllowed,
    /// The token lacks a scope that the route requires.
    ScopeMissing,
    /// The token lacks a group membership that the route requires.
    GroupMissing,
    /// The request headers exceed the configured limit.
    HeadersTooLarge,
    /// The request body exceeds the configured limit.
    BodyTooLarge,
    /// The request could not be parsed or is otherwise malformed.
    BadRequest,
    /// The upstream could not be reached.
    UpstreamUnavailable,
    /// The audit spool is full and the edge is configured to fail closed (also the reason of
    /// the spool's logging-health events).
    AuditSpoolFull,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The path is not in a form the edge inspects safely (e.g. an encoded `?`, which
    /// libmodsecurity 3.0.9 would not decode: CVE-2024-1019).
    PathRefused,
    /// The web application firewall found an attack (anomaly score over the threshold).
    WafBlocked,
    /// The web application firewall is overloaded and the resource fails closed.
    WafOverloaded,
    /// The method is never served by the edge (e.g. `CONNECT`: it is not a forward proxy).
    MethodNotAllowed,
    /// The token's JOSE header has a `crit` member: the edge understands no header extension,
    /// so it cannot honour any that is critical (RFC 7515 §4.1.11).
    TokenCritUnsupported,
    /// The token is longer than its issuer's `max_token_bytes` (or the edge's absolute limit).
    TokenTooLarge,
    /// The issuer's JWK set could not be fetched for longer than its `max_stale_seconds`: the
    /// keys held are too old to be trusted, so no token of that issuer is accepted.
    TokenKeysUnavailable,
    /// A path, query or header parameter is missing or does not match the operation's
    /// OpenAPI schema.
    ParameterInvalid,
    /// The request body is missing, not JSON, or does not match the operation's schema
    /// (wrong type, missing required property, undocumented property).
    BodyInvalid,
    /// The request's content type is not one the operation declares.
    ContentTypeUnsupported,
    /// A CORS preflight from an origin, or for a method or header, the API does not allow.
    CorsRefused,
    /// The upstream failed (5xx); its body was replaced by the generic error.
    UpstreamError,
    /// A firmware update bundle's signature does not verify with the vendor key, or its
    /// payload differs from the signed manifest (tampering): it is not installed.
    UpdateSignatureInvalid,
    /// A signed firmware update is not installable here (not newer, other kernel or
    /// architecture, too big for a slot) or could not be read.
    UpdateNotApplicable,
    /// A firmware update was installed but its slot did not confirm healthy in time: the
    /// device went back to the previous slot.
    UpdateUnhealthy,
    /// A rate limit or flow limit of the route is exhausted (API4 / API6); the answer carries
    /// `Retry-After`.
    RateLimited,
    /// A shared rate-limit budget cannot be checked (its store is unreachable) and the policy
    /// says `fail_closed`.
    RateLimitStoreUnavailable,
    /// The request body did not arrive within the route's (or the listener's) body timeout
    /// (a slow body: slowloris).
    RequestTimeout,
    /// The token's subject or session was revoked (continuous access evaluation: a CAEP
    /// `session-revoked` or `credential-change` event) after the token was issued.
    TokenRevoked,
    /// The request names an object (path, query or body field) that an ownership rule says the
    /// caller does not own (OWASP API1): the field does not equal the rule's claim.
    ObjectNotOwned,
    /// The upstream or a URL-valued request field points where the egress allowlist does not
    /// allow the edge to connect (OWASP API7 SSRF: loopback, private, link-local, metadata).
    EgressRefused,
    /// A GraphQL request exceeds a limit of the API (depth, aliases, root fields, complexity,
    /// parser limits) or uses introspection while it is off, or cannot be parsed.
    GraphqlRefused,
    /// A third-party upstream's response does not match the API's response schema (OWASP
    /// API10): it is not passed on.
    UpstreamInvalid,
    /// The resource requires a client certificate and none was presented.
    ClientCertMissing,
    /// The presented client certificate does not chain to the resource's CA, is not valid now,
    /// or carries no identity of the configured kind.
    ClientCertInvalid,
    /// A QUIC flow refused by the `block` mode (clients fall back to TCP at once).
    QuicBlocked,
    /// A QUIC flow whose server name is not allowed by the `sni_filter` mode (or that sent no
    /// readable ClientHello).
    QuicSniRefused,
    /// A QUIC flow silently discarded by the `drop` mode.
    QuicDropped,
    /// Control plane: too many failed sign-ins for this account; it is locked for a while
    /// (the answer carries `Retry-After`), whatever the password.
    AccountLocked,
    /// Control plane: too many failed sign-ins from this client address, across accounts.
    LoginThrottled,
    /// Control plane: a state-changing request authenticated by the session cookie without a
    /// matching CSRF token or from another origin.
    CsrfRefused,
    /// Control plane: the console session ended (idle timeout, absolute lifetime, sign-out,
    /// password or MFA change).
    SessionExpired,
    /// A request to the edge's tunnel listener from a tunnel address that no peer of the
    /// policy in force holds (the peer was removed, or the address is not a tunnel's).
    UnknownPeer,
    /// Tunnel packets dropped by the per-identity ACL (or as spoofed or malformed) during one
    /// summary interval (`tunnel_denied` events; never an HTTP answer).
    TunnelFlowDenied,
}

impl Reason {
    /// The stable code, as written in audit events and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::NoPolicy => "no_policy",
            Reason::RouteNotFound => "route_not_found",
            Reason::TokenMissing => "token_missing",
            Reason::TokenInvalid => "token_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenBadAudience => "token_bad_audience",
            Reason::TokenBadIssuer => "token_bad_issuer",
            Reason::TokenUnknownKey => "token_unknown_key",
            Reason::TokenAlgorithmNotAllowed => "token_algorithm_not_allowed",
            Reason::ScopeMissing => "scope_missing",
            Reason::GroupMissing => "group_missing",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::BodyTooLarge => "body_too_large",
            Reason::BadRequest => "bad_request",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::AuditSpoolFull => "audit_spool_full",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::PathRefused => "path_refused",
            Reason::WafBlocked => "waf_blocked",
            Reason::WafOverloaded => "waf_overloaded",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::TokenCritUnsupported => "token_crit_unsupported",
            Reason::TokenTooLarge => "token_too_large",
            Reason::TokenKeysUnavailable => "token_keys_unavailable",
            Reason::ParameterInvalid => "parameter_invalid",
            Reason::BodyInvalid => "body_invalid",
            Reason::ContentTypeUnsupported => "content_type_unsupported",
            Reason::CorsRefused => "cors_refused",
            Reason::UpstreamError => "upstream_error",
            Reason::UpdateSignatureInvalid => "update_signature_invalid",
            Reason::UpdateNotApplicable => "update_not_applicable",
            Reason::UpdateUnhealthy => "update_unhealthy",
            Reason::RateLimited => "rate_limited",
            Reason::RateLimitStoreUnavailable => "rate_limit_store_unavailable",
            Reason::RequestTimeout => "request_timeout",
            Reason::TokenRevoked => "token_revoked",
            Reason::ObjectNotOwned => "object_not_owned",
            Reason::EgressRefused => "egress_refused",
            Reason::GraphqlRefused => "graphql_refused",
            Reason::UpstreamInvalid => "upstream_invalid",
            Reason::ClientCertMissing => "client_cert_missing",
            Reason::ClientCertInvalid => "client_cert_invalid",
            Reason::QuicBlocked => "quic_blocked",
            Reason::QuicSniRefused => "quic_sni_refused",
            Reason::QuicDropped => "quic_dropped",
            Reason::AccountLocked => "account_locked",
            Reason::LoginThrottled => "login_throttled",
            Reason::CsrfRefused => "csrf_refused",
            Reason::SessionExpired => "session_expired",
            Reason::UnknownPeer => "unknown_peer",
            Reason::TunnelFlowDenied => "tunnel_flow_denied",
        }
    }

    /// The HTTP status the edge answers with for this reason.
    pub fn http_status(self) -> u16 {
        match self {
            Reason::Allowed => 200,
            Reason::NoPolicy => 503,
            Reason::RouteNotFound => 404,
            Reason::TokenMissing
            | Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::TokenBadAudience
            | Reason::TokenBadIssuer
            | Reason::TokenUnknownKey
            | Reason::TokenAlgorithmNotAllowed
            | Reason::TokenCritUnsupported
            | Reason::TokenTooLarge
            | Reason::TokenRevoked => 401,
            // The caller's token may be fine; the edge cannot check it until the issuer's
            // JWK set can be fetched again.
            Reason::TokenKeysUnavailable => 503,
            Reason::ScopeMissing | Reason::GroupMissing => 403,
            Reason::HeadersTooLarge => 431,
            Reason::BodyTooLarge => 413,
            Reason::BadRequest => 400,
            Reason::UpstreamUnavailable => 502,
            Reason::AuditSpoolFull => 503,
            Reason::UpstreamTimeout => 504,
            Reason::PathRefused => 400,
            Reason::WafBlocked => 403,
            Reason::WafOverloaded => 503,
            Reason::MethodNotAllowed => 405,
            Reason::ParameterInvalid | Reason::BodyInvalid => 400,
            Reason::ContentTypeUnsupported => 415,
            Reason::CorsRefused => 403,
            Reason::UpstreamError => 502,
            // Not HTTP answers: the status the control plane would give the same refusal.
            Reason::UpdateSignatureInvalid => 422,
            Reason::UpdateNotApplicable => 409,
            Reason::UpdateUnhealthy => 503,
            Reason::RateLimited => 429,
            Reason::RateLimitStoreUnavailable => 503,
            Reason::RequestTimeout => 408,
            Reason::ObjectNotOwned | Reason::EgressRefused => 403,
            Reason::GraphqlRefused => 400,
            Reason::UpstreamInvalid => 502,
            Reason::ClientCertMissing | Reason::ClientCertInvalid => 401,
            // Not HTTP answers (a QUIC flow is refused before any request): the status an
            // HTTP request to the same resource would get for a refusal by policy.
            Reason::QuicBlocked | Reason::QuicSniRefused | Reason::QuicDropped => 403,
            Reason::AccountLocked | Reason::LoginThrottled => 429,
            Reason::CsrfRefused => 403,
            Reason::SessionExpired => 401,
            Reason::UnknownPeer | Reason::TunnelFlowDenied => 403,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_equals_stable_code() {
        for reason in [
            Reason::Allowed,
            Reason::TokenAlgorithmNotAllowed,
            Reason::ScopeMissing,
            Reason::TokenCritUnsupported,
            Reason::TokenTooLarge,
            Reason::TokenKeysUnavailable,
            Reason::ParameterInvalid,
            Reason::BodyInvalid,
            Reason::ContentTypeUnsupported,
            Reason::CorsRefused,
            Reason::UpstreamError,
            Reason::UpdateSignatureInvalid,
            Reason::UpdateNotApplicable,
            Reason::UpdateUnhealthy,
            Reason::RateLimited,
            Reason::RateLimitStoreUnavailable,
            Reason::RequestTimeout,
            Reason::TokenRevoked,
            Reason::ObjectNotOwned,
            Reason::EgressRefused,
            Reason::GraphqlRefused,
            Reason::UpstreamInvalid,
            Reason::ClientCertMissing,
            Reason::ClientCertInvalid,
            Reason::QuicBlocked,
            Reason::QuicSniRefused,
            Reason::QuicDropped,
            Reason::AccountLocked,
            Reason::LoginThrottled,
            Reason::CsrfRefused,
            Reason::SessionExpired,
            Reason::UnknownPeer,
            Reason::TunnelFlowDenied,
        ] {
            let json = serde_json::to_string(&reason).expect("json");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }
}
