//! Test and demo support for the SASE edge appliance.
//!
//! - [`issuer`]: Ed25519 issuer keys, JWK sets and EdDSA JWT minting (behind
//!   the `sase-token` binary).
//! - [`demo_app`]: the sample protected upstream app (behind the
//!   `sase-demo-app` binary).
//! - [`process`]: child-process and readiness helpers for end-to-end drivers.
//! - [`stack`]: a control plane with an enrolled edge, started for end-to-end drivers.
//! - [`vuln_api`]: a deliberately vulnerable API, one flaw per OWASP API Top 10 risk (behind
//!   the `sase-vuln-api` binary).
//! - [`checks`]: the ok/FAIL tally of end-to-end drivers.
//! - [`control`]: a control plane alone, with devices enrolled through `sase-edge enroll`
//!   (for drivers that speak the device channel themselves).

pub mod checks;
pub mod control;
pub mod demo_app;
pub mod issuer;
pub mod process;
pub mod stack;
pub mod vuln_api;
