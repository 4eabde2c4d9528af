//! `sase-waf`: the OWASP Core Rule Set (3.3) evaluated by libmodsecurity (3.0.9) — the only
//! crate of the workspace that links libmodsecurity.
//!
//! * [`RuleSet::compile`] turns the WAF settings of every scope (resource / route) of a policy
//!   into **one** libmodsecurity rule set: CRS is parsed once per policy change, and
//!   [`RuleSet::config_digest`] tells the edge when it can keep the previous rule set.
//! * [`WafEngine`] (one per process) runs the request phases ([`WafEngine::inspect_request`])
//!   and the response phases ([`WafEngine::inspect_response`]) of one scope and returns
//!   [`Findings`]: the rules that matched, the anomaly score, and whether the request was (or in
//!   detect mode would have been) blocked.
//! * [`base_config_text`] and [`crs_include_list`] are the exact configuration the rule set is
//!   built from, for the nginx + ModSecurity comparison; [`RuleSet::config_text`] is the whole
//!   text.
//!
//! How per-scope settings reach a shared rule set (scope rules guarded by the transaction id),
//! which CRS parts are left out (the shared `ip` / `global` collections race under threads in
//! libmodsecurity 3.0.9) and how body limits are split with the edge is described in the
//! [`config`] module. Inspection is CPU-bound (around a millisecond per request): call it from
//! a blocking pool, never from an async reactor thread.
//!
//! Binding constraints (`modsecurity` 0.1.4 on libmodsecurity 3.0.9):
//!
//! * keep the system allocator in every binary that links this crate: the binding frees
//!   strings that libmodsecurity `malloc`ed through Rust's global allocator;
//! * an `Intervention` is read and dropped, never cloned (a clone frees its strings twice);
//! * the binding's log callback panics (aborting, inside an `extern "C"` frame) on a non-UTF-8
//!   line; libmodsecurity 3.0.9 hex-escapes every non-printable or non-ASCII byte of its log
//!   lines, so this cannot happen, and the test suite feeds it such bytes to keep it that way;
//! * the request phases must be told the edge's own checks happened first: paths with an
//!   encoded `?` (`%3F`, CVE-2024-1019) are refused by the edge, NUL bytes are refused by both.

pub mod config;
mod engine;
mod error;
mod findings;
mod index;

pub use config::{
    base_config_text, crs_include_list, CrsPaths, MAX_REQUEST_BODY_BYTES, RESPONSE_BODY_LIMIT_BYTES,
};
pub use engine::{HttpRequest, HttpResponse, RuleSet, WafEngine};
pub use error::WafError;
pub use findings::{Findings, RuleMatch};
