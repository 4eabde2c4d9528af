//! One module per page. Part A: sign-in, tenants, devices, audit. Part B: policy, identities,
//! incidents, charts.

pub mod audit;
pub mod charts;
pub mod devices;
pub mod identities;
pub mod incidents;
pub mod not_found;
pub mod policy;
pub mod sign_in;
pub mod tenants;
