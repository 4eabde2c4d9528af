//! `sase-model`: everything that crosses a boundary between the control plane, the edges and
//! the console.
//!
//! * [`policy`] — the typed policy language (resources, routes, JWT issuers) and its validation
//!   with precise field paths. Policy text is parsed here once; the rest of the system only sees
//!   valid [`policy::Policy`] values.
//! * [`canonical`] — canonical JSON serialisation, the byte form that is signed and hashed.
//! * [`bundle`] — Ed25519-signed policy bundles and their verification on the edge.
//! * [`audit`] — audit events, their per-device hash chain and the chain verifier; the bytes a
//!   device signs for an uploaded batch.
//! * [`merkle`] — RFC 6962 Merkle trees over stored events, inclusion proofs, signed tree heads.
//! * [`audit_export`] — the JSON-lines audit export checked offline by `sase-audit verify`.
//! * [`ocsf`] — the OCSF 1.1 form of audit events, for SIEM export.
//! * [`incident`] — NIS2 Art. 23 reporting deadlines of an incident (24 h, 72 h, one month).
//! * [`fleet`] — tenants, sites, devices and enrolment messages.
//! * [`channel`] — the messages carried on the edge <-> control-plane channel.
//! * [`caep`] — revocations from CAEP Security Event Tokens, pushed to edges.
//! * [`inventory`] — the API inventory edges report (shadow and zombie endpoints).
//! * [`limits`] — rate limits, size limits and timeouts (API4), flow limits (API6), the
//!   store of shared budgets.
//! * [`retention`] — expired whole months, and the signed record of what retention deleted.
//! * [`signing_keys`] — policy signing-key rotation: endorsements of the next key, the
//!   keys an edge trusts during the overlap.
//! * [`reason`] — stable reason codes carried by every decision.
//! * [`tunnel`] — typed rules of the per-identity packet ACL of ZTNA tunnels.
//! * [`ztna`] — identity binding for tunnels: access rules, posture, peer compilation.
//! * [`quic`] — QUIC modes (`inspect`, `sni_filter`, `block`, `drop`) per site, resource or
//!   server name, and the QUIC part of audit events.
//! * [`update`] — vendor-signed firmware update bundles of the appliance image, update offers
//!   and reports.
//! * [`ownership`], [`egress`], [`graphql`], [`upstream_trust`] — object ownership rules
//!   (API1), the egress allowlist (API7/API10), GraphQL limits, token translation and mTLS.
//!
//! The crate is pure Rust with no I/O, no clock and no async runtime, so it also builds for
//! `wasm32-unknown-unknown` (the console reuses the validation).

pub mod api_contract;
pub mod audit;
pub mod audit_export;
pub mod bundle;
pub mod caep;
pub mod canonical;
pub mod channel;
pub mod egress;
pub mod fleet;
pub mod graphql;
pub mod incident;
pub mod inventory;
pub mod limits;
pub mod merkle;
pub mod ocsf;
pub mod ownership;
pub mod policy;
pub mod quic;
pub mod reason;
pub mod retention;
pub mod signing_keys;
pub mod tunnel;
pub mod update;
pub mod upstream_trust;
pub mod ztna;

pub use audit::{AuditEvent, ChainError, ChainVerifier, GENESIS_HASH};
pub use bundle::{BundleError, BundlePayload, SignedBundle};
pub use policy::{Policy, PolicyError, ValidationError};
pub use reason::Reason;
