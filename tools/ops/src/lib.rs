//! Operational helpers that `sase-edge` and `sase-control` share: how each process writes its
//! logs ([`logs`]) and the redaction and collection helpers of their `diag` support bundles
//! ([`diag`]). `sase-model` stays free of I/O, so these live in their own crate.

pub mod diag;
pub mod logs;
