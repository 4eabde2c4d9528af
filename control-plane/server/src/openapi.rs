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
        crate::ztna::get_settings,
        crate::ztna::put_settings,
        crate::ztna::list_sites,
        crate::ztna::put_site,
        crate::ztna::list_users,
        crate::ztna::create_user,
        crate::ztna::put_groups,
        crate::ztna::enrol_totp,
        crate::ztna::disable_user,
        crate::ztna::enable_user,
        crate::ztna::list_rules,
        crate::ztna::create_rule,
        crate::ztna::delete_rule,
        crate::ztna::list_devices,
        crate::ztna::revoke_device,
        crate::ztna::list_sessions,
        crate::ztna::revoke_session,
        crate::ztna::client_login,
        crate::ztna::client_logout,
        crate::ztna::register_device,
        crate::ztna::report_posture,
        crate::ztna::get_config,
        crate::api::healthz,
        crate::channel::channel,
        crate::key_rotation::status,
        crate::key_rotation::announce,
        crate::key_rotation::activate,
        crate::updates::upload,
        crate::updates::list,
        crate::updates::offer,
        crate::updates::status,
        crate::updates::download,
        serve,
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

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json",
    responses((status = 200, content_type = "application/json", description = "the OpenAPI 3 document")))]
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::OpenApi as _;

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    /// Whether `args` calls the method router `method(` (not as part of a longer name or a
    /// path such as `ztna::delete_rule`).
    fn calls(args: &str, method: &str) -> bool {
        let call = format!("{method}(");
        args.match_indices(&call).any(|(i, _)| {
            args[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'))
        })
    }

    /// Every (method, path) the router in `lib.rs` serves, read from its source (so no list is
    /// kept by hand): the routes of the API router get the `/api` prefix it is nested under.
    fn routed() -> BTreeSet<(String, String)> {
        let src = include_str!("lib.rs");
        let start = src.find("let api = Router::new()").expect("the API router");
        let (api, root) = src[start..]
            .split_once(".nest(\"/api\", api)")
            .expect("the API router nested under /api");
        let root = root.split("\n}").next().unwrap_or_default();
        let mut out = BTreeSet::new();
        for (prefix, part) in [("/api", api), ("", root)] {
            let mut rest = part;
            while let Some(i) = rest.find(".route(") {
                rest = &rest[i + ".route(".len()..];
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(rest.len(), |(j, _)| j);
                let args = &rest[..end];
                let path = args.split('"').nth(1).expect("a path literal");
                let handler = args.split_once(',').map_or("", |(_, h)| h);
                let found: Vec<&str> = METHODS.into_iter().filter(|m| calls(handler, m)).collect();
                assert!(!found.is_empty(), "no method router in .route({args})");
                for m in found {
                    out.insert((m.to_string(), format!("{prefix}{path}")));
                }
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(super::ApiDoc::openapi()).expect("document as JSON");
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in METHODS {
                if item.get(m).is_some() {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_in_the_openapi_document_and_nothing_else() {
        let routed = routed();
        let documented = documented();
        // The parser itself: it found the routes it must find.
        assert!(
            routed.len() > 100,
            "{} routes read from lib.rs",
            routed.len()
        );
        assert!(routed.contains(&("post".into(), "/api/signing-keys/activate".into())));
        assert!(routed.contains(&("get".into(), "/healthz".into())));
        let missing: Vec<_> = routed.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&routed).collect();
        assert!(stale.is_empty(), "documented but not routed: {stale:?}");
    }

    #[test]
    fn the_route_reader_tells_methods_from_names() {
        assert!(calls("get(templates::get_source).put(x)", "get"));
        assert!(calls("get(templates::get_source).put(x)", "put"));
        assert!(!calls("delete(ztna::delete_rule)", "get"));
        assert!(!calls("post(ztna::delete_rule)", "delete"));
        assert!(!calls("post(a::get(x))", "get"));
    }
}
