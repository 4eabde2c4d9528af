//! Decisions for requests from ZTNA tunnels: the peer's identity and groups are the principal,
//! no token is read, and the resource is the one whose upstream the client connected to.

use sase_gateway::{decide_tunnel, CompiledPolicy, RequestParts, TunnelPrincipal, Verdict};
use sase_model::{BundlePayload, Policy, Reason};
use serde_json::json;

fn policy() -> CompiledPolicy {
    let policy = json!({
        "issuers": [{"id": "ed", "issuer": "https://ed.example", "audiences": ["app"],
                     "algorithms": ["EdDSA"], "keys": {"jwks_url": "https://ed.example/jwks.json"}}],
        "groups": {"auditors": {"members": ["carol@example.com"]}},
        "resources": [
            {"name": "app", "hosts": ["app.example"], "upstream": "http://10.77.0.10:8080",
             "issuers": ["ed"], "routes": [
                {"id": "home", "methods": ["GET"], "path": "/"},
                {"id": "eng", "methods": ["GET"], "path": "/eng", "groups": ["eng"]},
                {"id": "admin", "methods": ["GET", "POST"], "path": "/admin", "groups": ["admins"]},
                {"id": "audit", "methods": ["GET"], "path": "/audit", "groups": ["auditors"]},
                {"id": "scoped", "methods": ["GET"], "path": "/scoped", "scopes": ["app:read"]},
                {"id": "health", "methods": ["GET"], "path": "/health", "public": true},
             ]},
            {"name": "other", "upstream": "http://10.77.0.11:8080", "issuers": ["ed"],
             "routes": [{"id": "x", "methods": ["GET"], "path": "/x"}]},
        ],
    });
    let policy = Policy::parse_json(&policy.to_string()).expect("valid policy");
    CompiledPolicy::compile(&BundlePayload {
        tenant_id: "t1".into(),
        version: 1,
        issued_at_ms: 0,
        policy,
    })
    .expect("compiles")
}

fn run(policy: &CompiledPolicy, resource: &str, method: &str, path: &str, who: &str) -> Verdict {
    let groups = vec!["eng".to_string()];
    let identity = format!("tunnel|{who}");
    let principal = TunnelPrincipal {
        identity: &identity,
        subject: who,
        groups: &groups,
    };
    let req = RequestParts {
        method,
        // The client connected to the upstream's address: the Host header names no resource.
        host: Some("10.77.0.10:8080"),
        path,
        // A token, even a forged one, is never read for tunnel requests.
        authorization: Some("Bearer not-a-token"),
    };
    decide_tunnel(policy, resource, &req, &principal)
}

fn reason(v: &Verdict) -> Reason {
    match v {
        Verdict::Allow(_) => Reason::Allowed,
        Verdict::Deny(d) => d.reason,
        Verdict::NeedKeys { .. } => Reason::TokenUnknownKey,
    }
}

#[test]
fn the_tunnel_identity_is_the_principal() {
    let p = policy();
    let v = run(&p, "app", "GET", "/eng", "alice@example.com");
    let Verdict::Allow(a) = &v else {
        panic!("expected allow, got {v:?}");
    };
    assert_eq!((a.resource.as_str(), a.route.as_str()), ("app", "eng"));
    assert_eq!(a.identity.as_deref(), Some("tunnel|alice@example.com"));
    assert_eq!(a.subject.as_deref(), Some("alice@example.com"));
    assert_eq!(a.upstream, "http://10.77.0.10:8080");
    assert!(a.token.is_none());
    assert_eq!(
        reason(&run(&p, "app", "GET", "/", "alice@example.com")),
        Reason::Allowed
    );
    assert_eq!(
        reason(&run(&p, "app", "GET", "/health", "x")),
        Reason::Allowed
    );
}

#[test]
fn routes_are_judged_by_the_peer_groups_and_the_policy_groups() {
    let p = policy();
    let denied = run(&p, "app", "GET", "/admin", "alice@example.com");
    let Verdict::Deny(d) = &denied else {
        panic!("expected deny, got {denied:?}");
    };
    assert_eq!(d.reason, Reason::GroupMissing);
    assert_eq!(d.reason.http_status(), 403);
    assert_eq!(d.identity.as_deref(), Some("tunnel|alice@example.com"));
    assert_eq!(d.route, "admin");
    // Membership by the policy's `groups` block counts too.
    assert_eq!(
        reason(&run(&p, "app", "GET", "/audit", "carol@example.com")),
        Reason::Allowed
    );
    assert_eq!(
        reason(&run(&p, "app", "GET", "/audit", "alice@example.com")),
        Reason::GroupMissing
    );
    // A tunnel grants no token scopes.
    assert_eq!(
        reason(&run(&p, "app", "GET", "/scoped", "alice@example.com")),
        Reason::ScopeMissing
    );
}

#[test]
fn routes_are_looked_up_in_the_connected_resource_only() {
    let p = policy();
    assert_eq!(
        reason(&run(&p, "app", "GET", "/x", "alice@example.com")),
        Reason::RouteNotFound
    );
    assert_eq!(
        reason(&run(&p, "other", "GET", "/x", "alice@example.com")),
        Reason::Allowed
    );
    assert_eq!(
        reason(&run(&p, "gone", "GET", "/", "alice@example.com")),
        Reason::RouteNotFound
    );
    assert_eq!(
        reason(&run(&p, "app", "DELETE", "/", "alice@example.com")),
        Reason::RouteNotFound
    );
    assert_eq!(
        reason(&run(&p, "app", "GET", "/../admin", "alice@example.com")),
        Reason::RouteNotFound
    );
}
