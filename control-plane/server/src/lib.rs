//! `sase-control`: the control plane.
//!
//! * [`api`] — the REST API (admins, tenants, sites, claim codes, enrolment, policy, audit).
//! * [`channel`] — the WebSocket edge channel (mTLS) and audit ingest (chain and device batch
//!   signature checks).
//! * [`audit_consistency`] — RFC 6962 consistency proofs between signed checkpoints.
//! * [`audit_health`] — logging-health alerts: full edge spools, silent edges.
//! * [`audit_log`] — tamper evidence: per-tenant Merkle log, signed checkpoints, inclusion
//!   proofs, the JSON-lines export.
//! * [`store`] — all database access (sqlx `Any`: SQLite by default, PostgreSQL).
//! * [`auth`] — passwords, sessions, API tokens, first-admin bootstrap.
//! * [`rbac`] — MSP → customer tenancy, roles, permissions and the one `authorize` check.
//! * [`admins`] — admin management, TOTP MFA, the admin-action trail query.
//! * [`admin_audit`] — recording admin actions (hash-chained, with before/after diffs).
//! * [`retention`] — per-tenant audit retention: whole expired months deleted (integrity
//!   skeleton kept), signed retention records.
//! * [`provisioning`] — claim codes listed, created in bulk from CSV, revoked; devices
//!   decommissioned; policy version diffs.
//! * [`rollouts`] — staged policy rollouts: canaries first, health-decided promotion or
//!   automatic rollback, manual promote and rollback.
//! * [`siem`] — forwarding each tenant's audit trail to its SIEMs (syslog RFC 5424 over
//!   TCP/TLS, JSON lines, OCSF), at least once, with a persisted cursor.
//! * [`console`] — the web console's embedded assets, served at `/` (client routes fall back
//!   to its `index.html`).
//! * [`caep`] — continuous access evaluation: the SET push endpoint (RFC 8935), transmitter
//!   settings, revocations pushed to edges.
//! * [`inventory`] — the API inventory edges report: shadow and zombie endpoints (API9).
//! * [`drafts`] — stored policy drafts: validated, diffed, dry-run, published or rolled out.
//! * [`dryrun`] — dry runs: recorded requests replayed against a draft policy, changed
//!   decisions reported.
//! * [`fanout`] — replicas on PostgreSQL: changes announced with NOTIFY, every replica
//!   pushes them to the edges connected to it.
//! * [`fleet_health`] — per-device health (heartbeat figures, expected vs applied version),
//!   version-lag alerts.
//! * [`incidents`] — incidents from audit events, NIS2 Art. 23 deadlines with alerts, reports.
//! * [`backup`] — `sase-control backup` / `restore`: consistent SQLite copy, TLS identity,
//!   firmware store, manifest with checksums.
//! * [`key_rotation`] — policy signing-key rotation: announce (endorsed by the current key),
//!   activate (republish signed with the new key).
//! * [`secrets`] — secrets at rest: CA keys, signing keys and TOTP seeds sealed (AES-256-GCM)
//!   with the operator's key.
//! * [`templates`] — MSP policy templates inherited by tenants with merge-patch overrides.
//! * [`totp`] — RFC 6238 codes.
//! * [`login_throttle`] — sign-in throttling and lockout per account and per address (shared
//!   by replicas through the database), audited.
//! * [`csrf`] — CSRF token and origin checks for cookie-authenticated state changes.
//! * [`security_headers`] — CSP, HSTS and the other strict headers on every answer.
//! * [`sessions`] — session idle timeout and lifetime, revocation, password change.
//! * [`tls_reload`] — TLS 1.2/1.3 with modern suites only, certificate reload without restart.
//! * [`pki`] — tenant CAs, device certificates, the server's TLS identity.
//! * [`tls`] — rustls configuration, the dynamic device-certificate verifier, the accept loop.
//! * [`openapi`] — the OpenAPI document.
//! * [`state`] — shared state and the hub of connected edges.
//! * [`updates`] — firmware updates of the appliance image: upload, offers, device download,
//!   reports.
//! * [`ztna`] — remote users, groups, TOTP, client sessions, registered devices, address pools,
//!   posture and access rules compiled into the tenant's tunnel peers; revocation.

pub mod admin_audit;
pub mod admins;
pub mod api;
pub mod audit_consistency;
pub mod audit_health;
pub mod audit_log;
pub mod auth;
pub mod backup;
pub mod caep;
pub mod channel;
pub mod console;
pub mod csrf;
pub mod diag;
pub mod drafts;
pub mod dryrun;
pub mod error;
pub mod fanout;
pub mod fleet_health;
pub mod incidents;
pub mod inventory;
pub mod key_rotation;
pub mod login_throttle;
pub mod metrics;
pub mod migrations;
pub mod openapi;
pub mod pki;
pub mod provisioning;
pub mod rbac;
pub mod retention;
pub mod rollouts;
pub mod secrets;
pub mod security_headers;
pub mod sessions;
pub mod siem;
pub mod state;
pub mod store;
pub mod templates;
pub mod tls;
pub mod tls_reload;
pub mod totp;
pub mod updates;
pub mod ztna;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::state::SharedState;

/// Largest request body the API accepts (policy documents are the largest).
pub const MAX_API_BODY: usize = 2 * 1024 * 1024;

/// The HTTP application: the API under `/api`, health at `/healthz`, the web console at `/`.
pub fn router(state: SharedState) -> Router {
    let api = Router::new()
        .route("/login", post(api::login))
        .route("/logout", post(api::logout))
        .route("/tokens", post(api::create_token))
        .route("/tenants", get(api::list_tenants).post(api::create_tenant))
        .route(
            "/tenants/{tenant_id}/sites",
            get(api::list_sites).post(api::create_site),
        )
        .route("/tenants/{tenant_id}/devices", get(api::list_devices))
        .route(
            "/tenants/{tenant_id}/policy",
            get(api::get_policy).put(api::put_policy),
        )
        .route(
            "/tenants/{tenant_id}/policy/rollouts",
            post(rollouts::create),
        )
        .route("/tenants/{tenant_id}/policy/dry-run", post(dryrun::dry_run))
        .route(
            "/tenants/{tenant_id}/policy/drafts",
            get(drafts::list).post(drafts::create),
        )
        .route(
            "/tenants/{tenant_id}/policy/drafts/{draft_id}",
            get(drafts::get).put(drafts::update).delete(drafts::discard),
        )
        .route(
            "/tenants/{tenant_id}/policy/drafts/{draft_id}/dry-run",
            post(drafts::dry_run),
        )
        .route(
            "/tenants/{tenant_id}/policy/drafts/{draft_id}/publish",
            post(drafts::publish),
        )
        .route(
            "/tenants/{tenant_id}/policy/rollouts/latest",
            get(rollouts::latest),
        )
        .route(
            "/tenants/{tenant_id}/policy/rollouts/promote",
            post(rollouts::promote_now),
        )
        .route(
            "/tenants/{tenant_id}/policy/rollback",
            post(rollouts::rollback),
        )
        .route(
            "/tenants/{tenant_id}/policy/versions",
            get(api::list_policy_versions),
        )
        .route(
            "/sites/{site_id}/claim-codes",
            get(provisioning::list_codes).post(api::create_claim_code),
        )
        .route(
            "/sites/{site_id}/claim-codes/bulk",
            post(provisioning::bulk_codes),
        )
        .route(
            "/sites/{site_id}/claim-codes/{code_id}",
            delete(provisioning::revoke_code),
        )
        .route(
            "/devices/{device_id}/decommission",
            post(provisioning::decommission),
        )
        .route(
            "/devices/{device_id}/reenroll",
            post(provisioning::reenrol_code),
        )
        .route(
            "/policy-templates",
            get(templates::list).post(templates::create),
        )
        .route("/policy-templates/{template_id}", put(templates::update))
        .route(
            "/tenants/{tenant_id}/policy/source",
            get(templates::get_source)
                .put(templates::put_source)
                .delete(templates::delete_source),
        )
        .route(
            "/tenants/{tenant_id}/fleet/health",
            get(fleet_health::get_health),
        )
        .route(
            "/tenants/{tenant_id}/policy/diff",
            get(provisioning::policy_diff),
        )
        .route("/enroll", post(api::enroll))
        .route("/audit", get(api::query_audit))
        .route(
            "/tenants/{tenant_id}/audit/checkpoint",
            get(api::get_audit_checkpoint).post(api::sign_audit_checkpoint),
        )
        .route(
            "/tenants/{tenant_id}/audit/proof",
            get(api::get_audit_proof),
        )
        .route("/tenants/{tenant_id}/audit/export", get(api::export_audit))
        .route(
            "/tenants/{tenant_id}/audit/consistency",
            get(audit_consistency::get_consistency),
        )
        .route(
            "/tenants/{tenant_id}/audit/retention",
            get(retention::get_retention).put(retention::put_retention),
        )
        .route(
            "/tenants/{tenant_id}/audit/retention/run",
            post(retention::run_now),
        )
        .route(
            "/devices/{device_id}/audit/verify",
            get(api::verify_device_chain),
        )
        .route(
            "/tenants/{tenant_id}/siem/sinks",
            get(siem::list_sinks).post(siem::create_sink),
        )
        .route(
            "/tenants/{tenant_id}/siem/sinks/{sink_id}",
            delete(siem::delete_sink),
        )
        .route(
            "/tenants/{tenant_id}/caep/transmitter",
            get(caep::get_transmitter).put(caep::put_transmitter),
        )
        .route("/tenants/{tenant_id}/caep/events", post(caep::receive_set))
        .route(
            "/tenants/{tenant_id}/caep/revocations",
            get(caep::list_revocations),
        )
        .route(
            "/tenants/{tenant_id}/inventory",
            get(inventory::list_inventory),
        )
        .route(
            "/tenants/{tenant_id}/incidents",
            get(incidents::list).post(incidents::create),
        )
        .route(
            "/tenants/{tenant_id}/incidents/{incident_id}",
            get(incidents::get),
        )
        .route(
            "/tenants/{tenant_id}/incidents/{incident_id}/events",
            post(incidents::link),
        )
        .route(
            "/tenants/{tenant_id}/incidents/{incident_id}/submissions",
            post(incidents::submit),
        )
        .route(
            "/tenants/{tenant_id}/incidents/{incident_id}/close",
            post(incidents::close),
        )
        .route(
            "/tenants/{tenant_id}/incidents/{incident_id}/report",
            get(incidents::report),
        )
        .route(
            "/tenants/{tenant_id}/ztna/settings",
            get(ztna::get_settings).put(ztna::put_settings),
        )
        .route("/tenants/{tenant_id}/ztna/sites", get(ztna::list_sites))
        .route(
            "/tenants/{tenant_id}/ztna/sites/{site_id}",
            put(ztna::put_site),
        )
        .route(
            "/tenants/{tenant_id}/ztna/users",
            get(ztna::list_users).post(ztna::create_user),
        )
        .route(
            "/tenants/{tenant_id}/ztna/users/{user_id}/groups",
            put(ztna::put_groups),
        )
        .route(
            "/tenants/{tenant_id}/ztna/users/{user_id}/totp",
            post(ztna::enrol_totp),
        )
        .route(
            "/tenants/{tenant_id}/ztna/users/{user_id}/disable",
            post(ztna::disable_user),
        )
        .route(
            "/tenants/{tenant_id}/ztna/users/{user_id}/enable",
            post(ztna::enable_user),
        )
        .route(
            "/tenants/{tenant_id}/ztna/rules",
            get(ztna::list_rules).post(ztna::create_rule),
        )
        .route(
            "/tenants/{tenant_id}/ztna/rules/{rule_id}",
            delete(ztna::delete_rule),
        )
        .route("/tenants/{tenant_id}/ztna/devices", get(ztna::list_devices))
        .route(
            "/tenants/{tenant_id}/ztna/devices/{device_id}/revoke",
            post(ztna::revoke_device),
        )
        .route(
            "/tenants/{tenant_id}/ztna/sessions",
            get(ztna::list_sessions),
        )
        .route(
            "/tenants/{tenant_id}/ztna/sessions/{session_id}/revoke",
            post(ztna::revoke_session),
        )
        .route("/ztna/login", post(ztna::client_login))
        .route("/ztna/logout", post(ztna::client_logout))
        .route("/ztna/devices", post(ztna::register_device))
        .route(
            "/ztna/devices/{device_id}/posture",
            put(ztna::report_posture),
        )
        .route("/ztna/devices/{device_id}/config", get(ztna::get_config))
        .route("/alerts", get(api::list_alerts))
        .route("/me", get(admins::me))
        .route("/me/password", post(sessions::change_password))
        .route("/me/mfa", post(admins::enrol_mfa))
        .route("/me/mfa/confirm", post(admins::confirm_mfa))
        .route(
            "/admins",
            get(admins::list_admins).post(admins::create_admin),
        )
        .route("/admins/{admin_id}/disable", post(admins::disable_admin))
        .route("/admins/{admin_id}/mfa", delete(admins::reset_mfa))
        .route("/admin-actions", get(admins::list_actions))
        .route("/signing-keys", get(key_rotation::status))
        .route("/signing-keys/next", post(key_rotation::announce))
        .route("/signing-keys/activate", post(key_rotation::activate))
        .route("/edge/channel", get(channel::channel))
        .route(
            "/updates",
            get(updates::list)
                .post(updates::upload)
                .layer(DefaultBodyLimit::max(updates::MAX_UPDATE_BYTES)),
        )
        .route("/updates/{update_id}/offer", post(updates::offer))
        .route("/updates/{update_id}/devices", get(updates::status))
        .route("/edge/updates/{update_id}", get(updates::download))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { error::ApiError::not_found("no such API endpoint") });
    Router::new()
        .nest("/api", api)
        .route("/healthz", get(api::healthz))
        .fallback(console::serve)
        // Requests by route template and status for /metrics (served on the ops listener).
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::guard,
        ))
        .layer(axum::middleware::map_response(security_headers::apply))
        .with_state(state)
}

/// Convenience for tests: wraps state.
pub fn shared(state: state::AppState) -> SharedState {
    Arc::new(state)
}
