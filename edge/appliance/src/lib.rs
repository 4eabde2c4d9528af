//! `sase-edge`: the edge appliance daemon.
//!
//! * [`identity`] — the device's identity on disk and enrolment (CSR + claim code).
//! * [`policy`] — the verified bundle in force, persisted, swapped atomically; fail closed.
//! * [`proxy`] — the request path around `sase-gateway`, forwarding to upstreams, auditing.
//! * [`listener`] — the published HTTP/HTTPS listeners.
//! * [`spool`] — the on-disk audit spool (hash-chained, deleted only when acknowledged).
//! * [`channel`] — the management channel to the control plane.
//! * [`health`] — the health check after a policy change (upstreams reachable), reported for
//!   canary rollouts.
//! * [`jwks`] — fetching keys of `jwks_url` issuers.
//! * [`ratelimit`] — rate and flow limits (API4, API6), blocks of shared budgets from Redis;
//!   [`ratelimit_conn`] — connection caps per client address and in total (slowloris).
//! * [`waf`] — the CRS rule set of a policy and the bounded pool that runs inspections.
//! * [`quic`] — HTTP/3 termination (`inspect`), `block`/`drop` of the published UDP port,
//!   `Alt-Svc`, QUIC audit events; [`quic_relay`] — the `sni_filter` relay.
//! * [`update`] — firmware updates of the appliance image (A/B slots, trial boots, rollback).
//! * [`tunnel`] — the ZTNA tunnel shell: UDP listener and TUN device around `sase-tunnel`,
//!   peers from the policy in force.
//! * [`revocation`] — revoked subjects and sessions (CAEP), persisted, checked per request.
//! * [`inventory`] — request counts by endpoint, reported for the API inventory (API9).
//! * [`translate`] — token translation (internal ES256 tokens, their JWK set) and upstream
//!   TLS clients per resource (CA, device certificate for mTLS).
//! * [`mtls`] — client certificates on the HTTPS listener (asked for, chain handed to requests).
//! * [`authz`] — the route guards once the body is read: object ownership (API1), GraphQL
//!   limits, egress allowlist after DNS resolution (API7).
//! * [`ops`] — the local ops listener: `/metrics` ([`metrics`]), `/healthz`, `/readyz`;
//!   `sase_ops::logs` — JSON or text logs with the request id of each request's span; [`diag`] — the
//!   support bundle; [`perms`] — modes of the data dir and key files at start; [`privs`] —
//!   capabilities dropped and `no_new_privs` set once the privileged set-up is done;
//!   [`tls_reload`] — the published listener's TLS settings and certificate reload.

pub mod authz;
pub mod channel;
pub mod contract;
pub mod diag;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod jwks;
pub mod listener;
pub mod metrics;
pub mod mtls;
pub mod ops;
pub mod perms;
pub mod policy;
pub mod privs;
pub mod proxy;
pub mod quic;
pub mod quic_relay;
pub mod ratelimit;
pub mod ratelimit_conn;
pub mod revocation;
#[cfg(test)]
mod scratch;
pub mod spool;
pub mod tls_reload;
pub mod translate;
pub mod tunnel;
pub mod update;
pub mod upstream;
pub mod waf;
