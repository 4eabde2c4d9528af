//! `sase-gateway`: the HTTP enforcement decisions of the edge, as plain functions over request
//! parts and `now`. No I/O, no async runtime, no clock reads: the edge daemon (the shell)
//! receives requests, fetches JWK sets and forwards to upstreams; this crate only decides.
//!
//! * [`CompiledPolicy`] — a verified policy bundle compiled once for enforcement.
//! * [`JwksStore`] — keys of `jwks_url` issuers, fetched by the shell: refetch limit,
//!   background refresh schedule, bounded use of cached keys during a JWKS outage.
//! * [`TokenCache`] — verified tokens by SHA-256, until `exp`, never across a policy or key
//!   change.
//! * [`decide`] / [`decide_cached`] — the verdict for one request: route, bearer token, scopes
//!   and groups; [`decide_tunnel`] — the same for a request from a ZTNA tunnel, whose peer's
//!   identity and groups are the principal (no token).
//! * [`replay`] — recorded requests replayed against a draft policy (the control plane's dry
//!   run); [`token_grants`] — the scopes and groups a token granted, as audited.
//! * [`error_body`] — the JSON body the shell sends with a refusal.
//! * [`RouteGuards`] — checks run once the body is read: object ownership (API1), GraphQL
//!   limits, the egress allowlist of URL fields and of the upstream (API7/API10).
//! * [`revocation`] — continuous access evaluation: the table of revoked subjects and sessions
//!   checked after every token verdict, and the claims challenge of its refusals.
//! * [`inventory`] — request counts by endpoint for the API inventory (OWASP API9).
//! * [`ApiHandle`] — the API contract (OpenAPI operations compiled once per policy):
//!   request checks, response scrubbing, security headers, CORS; [`preflight`] answers CORS
//!   preflights; [`check_contracts`] lets the control plane refuse a document that does not
//!   compile.
//! * [`ratelimit`] — rate limits (API4) and flow limits (API6): token bucket and sliding
//!   window counters with bounded memory, blocks of shared budgets; `now` passed in.
//!
//! Deny by default: a request that matches no route is refused, and a token is only accepted
//! when signed with an algorithm from its issuer's allowlist by one of that issuer's keys.

mod cache;
mod client_cert;
mod contract;
mod decision;
mod egress;
mod error;
mod graphql;
mod guards;
pub mod inventory;
mod jwks;
mod jwt;
mod keys;
mod ownership;
mod policy;
pub mod ratelimit;
pub mod replay;
pub mod revocation;
mod strict_json;
mod translate;

pub use cache::{TokenCache, DEFAULT_TOKEN_CACHE_ENTRIES};
pub use contract::{
    check_contracts, preflight, ApiHandle, CompiledContract, ContractError, ContractRequest,
    ContractViolation, Preflight, ResponsePlan,
};
pub use decision::{
    decide, decide_cached, decide_tunnel, decide_with_client_cert, error_body, error_body_detail,
    token_grants, Allowed, Denied, RequestParts, TunnelPrincipal, Verdict,
};
pub use egress::{parse_url, refused_class, Destination, EgressViolation};
pub use error::{CompileError, KeyError};
pub use graphql::{GraphqlCost, GraphqlViolation};
pub use guards::{GuardRequest, GuardViolation, RouteGuards};
pub use jwks::{JwksStore, REFETCH_INTERVAL_MS};
pub use jwt::VerifiedToken;
pub use jwt::MAX_TOKEN_BYTES;
pub use keys::{MAX_JWKS_BYTES, MAX_JWKS_KEYS};
pub use ownership::OwnershipViolation;
pub use policy::{CompiledPolicy, RemoteKeys};
pub use translate::{internal_claims, Caller, InternalSigner, SignerError, INTERNAL_JWKS_PATH};
