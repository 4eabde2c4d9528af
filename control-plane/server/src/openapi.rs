//! The OpenAPI 3 document of the REST API, generated from the handler annotations (`utoipa`)
//! and served at `/api/openapi.json`.

use utoipa::OpenApi;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "SASE control plane API",
        description = "Tenants, devices, policy and audit of SASE branch edges."
    ),
    paths(
        crate::api::login,
        crate::api::logout,
        crate::api::create_token,
        crate::api::list_tenants,
        crate::api::create_tenant,
        crate::api::list_sites,
        crate::api::create_site,
        crate::api::create_claim_code,
        crate::api::enroll,
        crate::api::list_devices,
        crate::api::get_policy,
        crate::api::put_policy,
        crate::api::list_policy_versions,
        crate::api::query_audit,
        crate::api::verify_device_chain,
        crate::api::get_audit_checkpoint,
        crate::api::sign_audit_checkpoint,
        crate::api::get_audit_proof,
        crate::api::export_audit,
        crate::api::list_alerts,
        crate::admins::me,
        crate::admins::enrol_mfa,
        crate::admins::confirm_mfa,
        crate::sessions::change_password,
        crate::admins::list_admins,
        crate::admins::create_admin,
        crate::admins::disable_admin,
        crate::admins::reset_mfa,
        crate::admins::list_actions,
        crate::audit_consistency::get_consistency,
        crate::rollouts::create,
        crate::fleet_health::get_health,
        crate::templates::create,
        crate::templates::list,
        crate::templates::update,
        crate::templates::put_source,
        crate::templates::get_source,
        crate::templates::delete_source,
        crate::provisioning::list_codes,
        crate::provisioning::bulk_codes,
        crate::provisioning::revoke_code,
        crate::provisioning::decommission,
        crate::provisioning::reenrol_code,
        crate::provisioning::policy_diff,
        crate::dryrun::dry_run,
        crate::drafts::create,
        crate::drafts::list,
        crate::drafts::get,
        crate::drafts::update,
        crate::drafts::discard,
        crate::drafts::dry_run,
        crate::drafts::publish,
        crate::rollouts::latest,
        crate::rollouts::promote_now,
        crate::rollouts::rollback,
        crate::retention::get_retention,
        crate::retention::put_retention,
        crate::retention::run_now,
        crate::siem::create_sink,
        crate::siem::list_sinks,
        crate::siem::delete_sink,
        crate::incidents::create,
        crate::incidents::list,
        crate::incidents::get,
        crate::incidents::link,
        crate::incidents::submit,
        crate::incidents::close,
        crate::incidents::report,
        crate::caep::put_transmitter,
        crate::caep::get_transmitter,
        crate::caep::receive_set,
        crate::caep::list_revocations,
        crate::inventory::list_inventory,
        crate::api::healthz,
        crate::channel::channel,
    ),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

/// The document as JSON text.
pub fn document_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
