//! The OCSF (Open Cybersecurity Schema Framework, schema 1.1.0) form of audit events, for
//! SIEMs that ingest OCSF (Amazon Security Lake, Splunk, Sentinel through their OCSF mappings).
//!
//! The mapping is a pure function of one event, so the control plane's SIEM forwarder, the
//! export and the console show the same classes:
//!
//! | event kind | OCSF class | category |
//! |---|---|---|
//! | `http_request` | HTTP Activity (4002), activity from the method | Network Activity (4) |
//! | `http_request` on which the WAF matched rules | Detection Finding (2004), activity Create, the request as evidence | Findings (2) |
//! | `quic_flow` | Network Activity (4001), activity Other | Network Activity (4) |
//! | `tunnel_connect`, `tunnel_disconnect`, `tunnel_traffic`, `tunnel_denied` | Network Activity (4001), activity Open 1, Close 2, Traffic 6, Refuse 5; the peer's identity as `actor`, its endpoint as `src_endpoint`, bytes as `traffic` | Network Activity (4) |
//! | `policy_applied`, `policy_rejected`, `update_*` | Device Config State Change (5019), activity Other | Discovery (5) |
//! | `spool_full`, `spool_recovered` (logging health) | Event Log Activity (1008), activity Other | System Activity (1) |
//! | anything newer | Base Event (0), activity Other | Uncategorized (0) |
//!
//! Control-plane admin actions (the admin-action trail) map with [`admin_action_to_ocsf`]:
//! `admin.sign_in` to Authentication (3002, Logon), account actions (`admin.create`,
//! `admin.disable`, `admin.mfa_*`, `token.create`) to Account Change (3001), and every other
//! change (policy, sites, claim codes, SIEM sinks, incidents, retention, updates) to API
//! Activity (6003) with Create / Update / Delete / Other from the action's verb.
//!
//! Decisions use the Security Control profile: `action_id` 1 Allowed / 2 Denied and
//! `disposition_id` 1 Allowed / 2 Blocked; the stable reason code goes to `status_detail`.
//! Fields OCSF has no place for (chain position and hashes, policy version, WAF rule ids) go to
//! `unmapped`, so nothing the trail records is dropped on the way to a SIEM. Request values are
//! never part of an event, so none reach OCSF either.

use serde_json::{json, Map, Value};

use crate::audit::{AuditEvent, Decision, EventKind};

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// Product name in `metadata.product`.
pub const PRODUCT_NAME: &str = "sase-edge";

/// Vendor name in `metadata.product`.
pub const VENDOR_NAME: &str = "SASE branch edge";

/// The OCSF class an event kind maps to: `(class_uid, class_name, category_uid, category_name)`.
pub fn class_of(kind: EventKind) -> (u32, &'static str, u32, &'static str) {
    match kind {
        EventKind::HttpRequest => (4002, "HTTP Activity", 4, "Network Activity"),
        EventKind::QuicFlow
        | EventKind::TunnelConnect
        | EventKind::TunnelDisconnect
        | EventKind::TunnelTraffic
        | EventKind::TunnelDenied => (4001, "Network Activity", 4, "Network Activity"),
        EventKind::PolicyApplied
        | EventKind::PolicyRejected
        | EventKind::UpdateInstalled
        | EventKind::UpdateRefused
        | EventKind::UpdateConfirmed
        | EventKind::UpdateRolledBack => (5019, "Device Config State Change", 5, "Discovery"),
        EventKind::SpoolFull | EventKind::SpoolRecovered => {
            (1008, "Event Log Activity", 1, "System Activity")
        }
        #[allow(unreachable_patterns)]
        _ => (0, "Base Event", 0, "Uncategorized"),
    }
}

/// HTTP Activity `activity_id` for a request method (99 = Other).
fn http_activity(method: &str) -> (u32, &'static str) {
    match method {
        "CONNECT" => (1, "Connect"),
        "DELETE" => (2, "Delete"),
        "GET" => (3, "Get"),
        "HEAD" => (4, "Head"),
        "OPTIONS" => (5, "Options"),
        "POST" => (6, "Post"),
        "PUT" => (7, "Put"),
        "TRACE" => (8, "Trace"),
        _ => (99, "Other"),
    }
}

/// The OCSF JSON object for one audit event. `event_hash` is the event's chain hash (stored
/// alongside it; passed in so that callers holding it do not recompute it).
pub fn to_ocsf(event: &AuditEvent, event_hash: &str) -> Value {
    let denied = event.decision == Decision::Deny;
    let waf_finding = event.waf.as_ref().is_some_and(|w| !w.rule_ids.is_empty());
    // A request the WAF matched rules on is a finding first: Detection Finding, with the
    // request as its evidence.
    let finding = event.kind == EventKind::HttpRequest && waf_finding;
    let (class_uid, class_name, category_uid, category_name) = if finding {
        (2004, "Detection Finding", 2, "Findings")
    } else {
        class_of(event.kind)
    };
    let (activity_id, activity_name) = match (&event.kind, &event.http) {
        _ if finding => (1, "Create"),
        (EventKind::HttpRequest, Some(http)) => http_activity(&http.method),
        (EventKind::TunnelConnect, _) => (1, "Open"),
        (EventKind::TunnelDisconnect, _) => (2, "Close"),
        (EventKind::TunnelDenied, _) => (5, "Refuse"),
        (EventKind::TunnelTraffic, _) => (6, "Traffic"),
        _ => (99, "Other"),
    };
    // Informational for allowed traffic; Medium for a refusal; High when the WAF refused it.
    let (severity_id, severity) = match (denied, event.waf.as_ref().is_some_and(|w| w.blocked)) {
        (true, true) => (4, "High"),
        (true, false) => (3, "Medium"),
        (false, _) if waf_finding => (2, "Low"),
        (false, _) => (1, "Informational"),
    };
    let mut object = Map::new();
    object.insert("class_uid".into(), json!(class_uid));
    object.insert("class_name".into(), json!(class_name));
    object.insert("category_uid".into(), json!(category_uid));
    object.insert("category_name".into(), json!(category_name));
    object.insert("activity_id".into(), json!(activity_id));
    object.insert("activity_name".into(), json!(activity_name));
    object.insert(
        "type_uid".into(),
        json!(u64::from(class_uid) * 100 + u64::from(activity_id)),
    );
    object.insert("time".into(), json!(event.ts_ms));
    object.insert("severity_id".into(), json!(severity_id));
    object.insert("severity".into(), json!(severity));
    let (status_id, status) = if denied {
        (2, "Failure")
    } else {
        (1, "Success")
    };
    object.insert("status_id".into(), json!(status_id));
    object.insert("status".into(), json!(status));
    object.insert("status_detail".into(), json!(event.reason.as_str()));
    let (action_id, action, disposition_id, disposition) = if denied {
        (2, "Denied", 2, "Blocked")
    } else {
        (1, "Allowed", 1, "Allowed")
    };
    object.insert("action_id".into(), json!(action_id));
    object.insert("action".into(), json!(action));
    object.insert("disposition_id".into(), json!(disposition_id));
    object.insert("disposition".into(), json!(disposition));
    object.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": event.reference,
            "tenant_uid": event.tenant_id,
            "log_name": "sase-audit",
            "sequence": event.seq,
            "profiles": ["security_control"],
            "product": { "name": PRODUCT_NAME, "vendor_name": VENDOR_NAME },
        }),
    );
    object.insert("device".into(), json!({ "uid": event.device_id }));
    if let Some(identity) = &event.identity {
        object.insert("actor".into(), json!({ "user": { "uid": identity } }));
    }
    if let Some(t) = &event.tunnel {
        let mut user = Map::new();
        user.insert(
            "uid".into(),
            json!(event.identity.clone().unwrap_or_else(|| t.peer.clone())),
        );
        if let Some(subject) = &t.subject {
            user.insert("name".into(), json!(subject));
        }
        let mut actor = Map::new();
        actor.insert("user".into(), Value::Object(user));
        if let Some(session) = &t.session {
            actor.insert("session".into(), json!({ "uid": session }));
        }
        object.insert("actor".into(), Value::Object(actor));
        if event.kind != EventKind::HttpRequest {
            if let Some(endpoint) = &t.endpoint {
                let ip = endpoint
                    .parse::<std::net::SocketAddr>()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|_| endpoint.clone());
                object.insert("src_endpoint".into(), json!({ "ip": ip }));
            }
            object.insert(
                "traffic".into(),
                json!({ "bytes_in": t.rx_bytes, "bytes_out": t.tx_bytes,
                        "bytes": t.rx_bytes.saturating_add(t.tx_bytes) }),
            );
        }
    }
    if let Some(http) = &event.http {
        object.insert(
            "http_request".into(),
            json!({
                "http_method": http.method,
                "url": { "path": http.path },
            }),
        );
        if http.status != 0 {
            object.insert("http_response".into(), json!({ "code": http.status }));
        }
        if !http.client_ip.is_empty() {
            object.insert("src_endpoint".into(), json!({ "ip": http.client_ip }));
        }
        object.insert("duration".into(), json!(http.latency_us / 1000));
    }
    if let Some(detail) = &event.detail {
        object.insert("message".into(), json!(detail));
    }
    let mut unmapped = Map::new();
    unmapped.insert("kind".into(), json!(event.kind.as_str()));
    unmapped.insert("reason".into(), json!(event.reason.as_str()));
    unmapped.insert("policy_version".into(), json!(event.policy_version));
    unmapped.insert("prev_hash".into(), json!(event.prev_hash));
    unmapped.insert("hash".into(), json!(event_hash));
    if let Some(http) = &event.http {
        unmapped.insert("resource".into(), json!(http.resource));
        unmapped.insert("route".into(), json!(http.route));
    }
    if let Some(t) = &event.tunnel {
        unmapped.insert(
            "tunnel".into(),
            serde_json::to_value(t).unwrap_or(Value::Null),
        );
    }
    if let Some(waf) = &event.waf {
        unmapped.insert(
            "waf".into(),
            serde_json::to_value(waf).unwrap_or(Value::Null),
        );
    }
    object.insert("unmapped".into(), Value::Object(unmapped));
    if finding {
        // Detection Finding has no request attributes of its own: they become its evidence.
        let mut evidence = Map::new();
        for key in ["http_request", "http_response", "src_endpoint"] {
            if let Some(v) = object.remove(key) {
                evidence.insert(key.into(), v);
            }
        }
        let waf = event.waf.as_ref();
        let messages: Vec<&str> = waf
            .map(|w| w.messages.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let rules: Vec<String> = waf
            .map(|w| w.rule_ids.iter().map(u32::to_string).collect())
            .unwrap_or_default();
        object.insert(
            "finding_info".into(),
            json!({
                "uid": event.reference,
                "title": messages.first().copied().unwrap_or("WAF rule match"),
                "desc": messages.join("; "),
                "types": ["WAF"],
                "analytic": {
                    "uid": rules.first().cloned().unwrap_or_default(),
                    "name": "OWASP CRS",
                    "type_id": 1,
                    "type": "Rule",
                },
                "related_analytics": rules.iter().map(|r| json!({"uid": r, "type_id": 1, "type": "Rule"})).collect::<Vec<_>>(),
            }),
        );
        object.insert("evidences".into(), json!([Value::Object(evidence)]));
    }
    Value::Object(object)
}

/// One record of the control plane's admin-action trail, as the OCSF mapping needs it.
#[derive(Debug, Clone, Copy)]
pub struct AdminActionRef<'a> {
    /// Position in the trail.
    pub seq: i64,
    /// When (Unix ms).
    pub ts_ms: i64,
    /// Admin id.
    pub actor_id: &'a str,
    /// Admin user name.
    pub actor: &'a str,
    /// Admin role.
    pub actor_role: &'a str,
    /// Tenant concerned, if any.
    pub tenant_id: Option<&'a str>,
    /// What (`policy.update`, `admin.disable`, …).
    pub action: &'a str,
    /// Object acted on.
    pub target: &'a str,
    /// Hash of the record in the admin-action chain.
    pub hash: &'a str,
}

/// The OCSF class and activity of an admin action: `(class_uid, class_name, category_uid,
/// category_name, activity_id, activity_name)`.
pub fn admin_action_class(
    action: &str,
) -> (u32, &'static str, u32, &'static str, u32, &'static str) {
    const IAM: (u32, &str) = (3, "Identity & Access Management");
    const APP: (u32, &str) = (6, "Application Activity");
    let account = |id, name| (3001, "Account Change", IAM.0, IAM.1, id, name);
    match action {
        "admin.sign_in"
        | "admin.sign_in_failed"
        | "admin.sign_in_throttled"
        | "admin.lockout"
        | "ztna.sign_in_throttled"
        | "ztna.lockout" => (3002, "Authentication", IAM.0, IAM.1, 1, "Logon"),
        "admin.create" => account(1, "Create"),
        "admin.disable" => account(5, "Disable"),
        "admin.mfa_confirm" => account(10, "MFA Factor Enable"),
        "admin.mfa_reset" => account(11, "MFA Factor Disable"),
        a if a.starts_with("admin.") || a.starts_with("token.") => account(99, "Other"),
        a => {
            let verb = a.rsplit('.').next().unwrap_or(a);
            let (id, name) = if verb.contains("create") || verb == "open" || verb == "upload" {
                (1, "Create")
            } else if verb.contains("delete") {
                (4, "Delete")
            } else if verb.contains("update")
                || verb.contains("set")
                || verb.contains("sign")
                || matches!(verb, "submit" | "close" | "link_events" | "offer" | "run")
            {
                (3, "Update")
            } else {
                (99, "Other")
            };
            (6003, "API Activity", APP.0, APP.1, id, name)
        }
    }
}

/// The OCSF JSON object for one admin action.
pub fn admin_action_to_ocsf(a: &AdminActionRef<'_>) -> Value {
    let (class_uid, class_name, category_uid, category_name, activity_id, activity_name) =
        admin_action_class(a.action);
    let failed = matches!(
        a.action,
        "admin.sign_in_failed"
            | "admin.sign_in_throttled"
            | "admin.lockout"
            | "admin.csrf_refused"
            | "ztna.sign_in_throttled"
            | "ztna.lockout"
    );
    json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": u64::from(class_uid) * 100 + u64::from(activity_id),
        "time": a.ts_ms,
        "severity_id": if failed { 3 } else { 1 },
        "severity": if failed { "Medium" } else { "Informational" },
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "metadata": {
            "version": OCSF_VERSION,
            "uid": format!("admin-action-{}", a.seq),
            "tenant_uid": a.tenant_id,
            "log_name": "sase-admin-actions",
            "sequence": a.seq,
            "product": { "name": "sase-control", "vendor_name": VENDOR_NAME },
        },
        "actor": { "user": { "uid": a.actor_id, "name": a.actor, "type": a.actor_role } },
        "api": { "operation": a.action },
        "resources": [{ "uid": a.target }],
        "unmapped": { "action": a.action, "hash": a.hash },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{HttpDetails, WafVerdict};
    use crate::reason::Reason;

    fn event(decision: Decision, reason: Reason, method: &str) -> AuditEvent {
        AuditEvent {
            seq: 7,
            prev_hash: "ab".repeat(32),
            ts_ms: 1_700_000_000_123,
            tenant_id: "t1".into(),
            device_id: "d1".into(),
            kind: EventKind::HttpRequest,
            decision,
            reason,
            reference: "ref-1".into(),
            policy_version: 3,
            identity: Some("https://issuer|alice".into()),
            http: Some(HttpDetails {
                resource: "app".into(),
                route: "r1".into(),
                method: method.into(),
                path: "/x".into(),
                status: 403,
                latency_us: 2500,
                client_ip: "10.0.0.9".into(),
                scopes: Vec::new(),
                groups: Vec::new(),
            }),
            detail: None,
            waf: None,
            quic: None,
            tunnel: None,
        }
    }

    #[test]
    fn http_events_are_http_activity_with_the_method_as_activity() {
        let o = to_ocsf(&event(Decision::Allow, Reason::Allowed, "POST"), "h");
        assert_eq!(o["class_uid"], 4002);
        assert_eq!(o["activity_id"], 6);
        assert_eq!(o["type_uid"], 400206);
        assert_eq!(o["action_id"], 1);
        assert_eq!(o["disposition_id"], 1);
        assert_eq!(o["severity_id"], 1);
        assert_eq!(o["time"], 1_700_000_000_123_i64);
        assert_eq!(o["metadata"]["uid"], "ref-1");
        assert_eq!(o["metadata"]["tenant_uid"], "t1");
        assert_eq!(o["src_endpoint"]["ip"], "10.0.0.9");
        assert_eq!(o["actor"]["user"]["uid"], "https://issuer|alice");
        assert_eq!(o["unmapped"]["hash"], "h");
        assert_eq!(o["unmapped"]["route"], "r1");
        assert_eq!(o["duration"], 2);
    }

    #[test]
    fn refusals_are_denied_and_blocked_with_the_reason() {
        let mut e = event(Decision::Deny, Reason::WafBlocked, "PATCH");
        e.waf = Some(WafVerdict {
            mode: "block".into(),
            paranoia_level: 1,
            inbound_score: 10,
            outbound_score: 0,
            rule_ids: vec![942100],
            messages: vec!["SQL Injection".into()],
            blocked: true,
            skipped: None,
        });
        let o = to_ocsf(&e, "h");
        // A WAF match is a Detection Finding with the request as evidence.
        assert_eq!(o["class_uid"], 2004);
        assert_eq!(o["type_uid"], 200401);
        assert_eq!(o["finding_info"]["analytic"]["uid"], "942100");
        assert_eq!(o["finding_info"]["title"], "SQL Injection");
        assert_eq!(o["evidences"][0]["http_request"]["http_method"], "PATCH");
        assert!(o.get("http_request").is_none());
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["action_id"], 2);
        assert_eq!(o["disposition_id"], 2);
        assert_eq!(o["severity_id"], 4);
        assert_eq!(o["status_detail"], "waf_blocked");
        assert_eq!(o["unmapped"]["waf"]["rule_ids"][0], 942100);
    }

    #[test]
    fn tunnel_events_are_network_activity_with_the_tunnel_identity() {
        let mut e = event(Decision::Deny, Reason::TunnelFlowDenied, "");
        e.kind = EventKind::TunnelDenied;
        e.http = None;
        e.identity = Some("tunnel|alice@example.com".into());
        e.tunnel = Some(crate::audit::TunnelDetails {
            peer: "alice-laptop".into(),
            address: "100.96.0.2".into(),
            subject: Some("alice@example.com".into()),
            device: Some("dev-7".into()),
            session: Some("s-1".into()),
            endpoint: Some("192.0.2.7:40000".into()),
            interval_ms: 10_000,
            rx_bytes: 300,
            tx_bytes: 0,
            denied: [("acl_denied".to_string(), 3)].into_iter().collect(),
        });
        let o = to_ocsf(&e, "h");
        assert_eq!(
            (o["class_uid"].clone(), o["activity_id"].clone()),
            (json!(4001), json!(5))
        );
        assert_eq!(o["action_id"], 2);
        assert_eq!(o["status_detail"], "tunnel_flow_denied");
        assert_eq!(o["actor"]["user"]["uid"], "tunnel|alice@example.com");
        assert_eq!(o["actor"]["user"]["name"], "alice@example.com");
        assert_eq!(o["actor"]["session"]["uid"], "s-1");
        assert_eq!(o["src_endpoint"]["ip"], "192.0.2.7");
        assert_eq!(o["traffic"]["bytes_in"], 300);
        assert_eq!(o["unmapped"]["tunnel"]["device"], "dev-7");
        assert_eq!(o["unmapped"]["tunnel"]["denied"]["acl_denied"], 3);
        e.kind = EventKind::TunnelConnect;
        assert_eq!(to_ocsf(&e, "h")["activity_name"], "Open");
        // An HTTP request through a tunnel keeps its HTTP class and client address.
        let mut r = event(Decision::Allow, Reason::Allowed, "GET");
        r.tunnel = e.tunnel.clone();
        let o = to_ocsf(&r, "h");
        assert_eq!(o["class_uid"], 4002);
        assert_eq!(o["src_endpoint"]["ip"], "10.0.0.9");
        assert_eq!(o["actor"]["session"]["uid"], "s-1");
    }

    #[test]
    fn policy_events_are_config_state_changes() {
        let mut e = event(Decision::Allow, Reason::Allowed, "GET");
        e.kind = EventKind::PolicyApplied;
        e.http = None;
        let o = to_ocsf(&e, "h");
        assert_eq!(o["class_uid"], 5019);
        assert_eq!(o["category_uid"], 5);
        assert_eq!(o["type_uid"], 501999);
        assert!(o.get("http_request").is_none());
    }

    #[test]
    fn admin_actions_map_to_authentication_account_change_and_api_activity() {
        let a = |action| AdminActionRef {
            seq: 4,
            ts_ms: 9,
            actor_id: "adm_1",
            actor: "alice",
            actor_role: "customer_admin",
            tenant_id: Some("t1"),
            action,
            target: "x",
            hash: "h",
        };
        let o = admin_action_to_ocsf(&a("admin.sign_in"));
        assert_eq!(
            (o["class_uid"].clone(), o["activity_id"].clone()),
            (json!(3002), json!(1))
        );
        assert_eq!(o["actor"]["user"]["name"], "alice");
        assert_eq!(
            admin_action_to_ocsf(&a("admin.disable"))["type_uid"],
            300105
        );
        let failed = admin_action_to_ocsf(&a("admin.sign_in_failed"));
        assert_eq!(failed["class_uid"], 3002);
        assert_eq!(failed["status"], "Failure");
        for throttled in [
            "admin.lockout",
            "admin.sign_in_throttled",
            "ztna.lockout",
            "ztna.sign_in_throttled",
        ] {
            let o = admin_action_to_ocsf(&a(throttled));
            assert_eq!(
                (o["class_uid"].clone(), o["status"].clone()),
                (json!(3002), json!("Failure"))
            );
        }
        assert_eq!(
            admin_action_to_ocsf(&a("admin.csrf_refused"))["status"],
            "Failure"
        );
        assert_eq!(
            admin_action_to_ocsf(&a("policy.update"))["type_uid"],
            600303
        );
        assert_eq!(
            admin_action_to_ocsf(&a("siem.sink_delete"))["activity_id"],
            4
        );
        assert_eq!(admin_action_to_ocsf(&a("incident.open"))["activity_id"], 1);
        assert_eq!(
            admin_action_to_ocsf(&a("tenant.create"))["metadata"]["tenant_uid"],
            "t1"
        );
    }
}
