//! Replaying recorded requests against a draft policy (the control plane's dry run): the
//! gateway's route, scope and group decisions, from what an audit event recorded — resource
//! name, method, path, the caller's identity and the scopes and groups its token granted — not
//! from a live request. Token verification itself is not replayed (the recorded request either
//! carried a verified token or it did not); a draft's route changes, scope and group
//! requirements, public flags and group memberships are.

use sase_model::Reason;

use crate::policy::CompiledPolicy;

/// A recorded request, as the audit trail has it.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// Resource name the request went to.
    pub resource: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path (no query).
    pub path: &'a str,
    /// `iss|sub` when the request carried a verified token (or client certificate).
    pub identity: Option<&'a str>,
    /// Scopes its token granted.
    pub scopes: &'a [String],
    /// Groups its token's `groups` claim listed.
    pub groups: &'a [String],
}

/// What the draft would decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Allowed on this route.
    Allow {
        /// Route id.
        route: String,
    },
    /// Refused.
    Deny {
        /// Why.
        reason: Reason,
        /// Route id (`""` when no route matched).
        route: String,
    },
}

/// The draft's decision for a recorded request.
pub fn replay(policy: &CompiledPolicy, rec: &Recorded<'_>) -> Replayed {
    let Some((_, route)) = policy.find_route_by_resource(rec.resource, rec.method, rec.path) else {
        return Replayed::Deny {
            reason: Reason::RouteNotFound,
            route: String::new(),
        };
    };
    let deny = |reason| Replayed::Deny {
        reason,
        route: route.id.clone(),
    };
    if route.public {
        return Replayed::Allow {
            route: route.id.clone(),
        };
    }
    let Some(identity) = rec.identity else {
        return deny(Reason::TokenMissing);
    };
    if !route.scopes.iter().all(|s| rec.scopes.contains(s)) {
        return deny(Reason::ScopeMissing);
    }
    let subject = identity.split_once('|').map_or(identity, |(_, sub)| sub);
    let in_group = |group: &String| {
        rec.groups.contains(group)
            || policy
                .groups
                .get(group)
                .is_some_and(|members| members.contains(subject))
    };
    if !route.groups.iter().all(in_group) {
        return deny(Reason::GroupMissing);
    }
    Replayed::Allow {
        route: route.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sase_model::{BundlePayload, Policy};

    fn compile(yaml: &str) -> CompiledPolicy {
        let policy = Policy::parse_yaml(yaml).expect("valid policy");
        CompiledPolicy::compile(&BundlePayload {
            tenant_id: "t".into(),
            version: 1,
            issued_at_ms: 0,
            policy,
        })
        .expect("compiles")
    }

    const BASE: &str = r#"
issuers:
  - id: idp
    issuer: https://idp.example
    audiences: [api]
    algorithms: [ES256]
    keys: {jwks_url: "https://idp.example/jwks"}
groups:
  ops: {members: [carol]}
resources:
  - name: app
    upstream: http://127.0.0.1:9
    issuers: [idp]
    routes:
      - {id: health, methods: [GET], path: /health, public: true}
      - {id: users, methods: [GET], path: "/users/{id}", scopes: [users:read]}
      - {id: admin, methods: [POST], path: /admin, groups: [ops]}
"#;

    fn rec<'a>(
        method: &'a str,
        path: &'a str,
        identity: Option<&'a str>,
        scopes: &'a [String],
    ) -> Recorded<'a> {
        Recorded {
            resource: "app",
            method,
            path,
            identity,
            scopes,
            groups: &[],
        }
    }

    #[test]
    fn replays_routes_scopes_groups_and_public_flags() {
        let p = compile(BASE);
        let read = vec!["users:read".to_string()];
        let none: Vec<String> = Vec::new();
        let allow = |r: &str| Replayed::Allow { route: r.into() };
        assert_eq!(
            replay(&p, &rec("GET", "/health", None, &none)),
            allow("health")
        );
        assert_eq!(
            replay(
                &p,
                &rec("GET", "/users/7", Some("https://idp.example|alice"), &read)
            ),
            allow("users")
        );
        assert_eq!(
            replay(
                &p,
                &rec("GET", "/users/7", Some("https://idp.example|bob"), &none)
            ),
            Replayed::Deny {
                reason: Reason::ScopeMissing,
                route: "users".into()
            }
        );
        assert_eq!(
            replay(&p, &rec("GET", "/users/7", None, &read)),
            Replayed::Deny {
                reason: Reason::TokenMissing,
                route: "users".into()
            }
        );
        assert_eq!(
            replay(
                &p,
                &rec("POST", "/admin", Some("https://idp.example|carol"), &none)
            ),
            allow("admin")
        );
        assert_eq!(
            replay(
                &p,
                &rec("POST", "/admin", Some("https://idp.example|alice"), &read)
            ),
            Replayed::Deny {
                reason: Reason::GroupMissing,
                route: "admin".into()
            }
        );
        assert_eq!(
            replay(
                &p,
                &rec(
                    "DELETE",
                    "/users/7",
                    Some("https://idp.example|alice"),
                    &read
                )
            ),
            Replayed::Deny {
                reason: Reason::RouteNotFound,
                route: String::new()
            }
        );
        // A draft that requires one more scope refuses who lacks it.
        let draft =
            compile(&BASE.replace("scopes: [users:read]", "scopes: [users:read, users:admin]"));
        assert_eq!(
            replay(
                &draft,
                &rec("GET", "/users/7", Some("https://idp.example|alice"), &read)
            ),
            Replayed::Deny {
                reason: Reason::ScopeMissing,
                route: "users".into()
            }
        );
    }
}
