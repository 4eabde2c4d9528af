//! The checks a route runs once the request body is read, compiled once per policy: object
//! ownership (API1, [`crate::ownership`]), GraphQL limits ([`crate::graphql`]) and the egress
//! allowlist of URL-valued fields and of the upstream (API7/API10, [`crate::egress`]). The
//! shell calls [`RouteGuards::check_request`], resolves the destinations it returns and calls
//! [`RouteGuards::check_destination`] with their addresses.

use std::net::IpAddr;

use serde_json::{Map, Value};

use sase_model::ownership::{FieldLocation, UrlField};
use sase_model::policy::{HttpResource, PathTemplate, Route};
use sase_model::upstream_trust::{TokenTranslation, UpstreamTls};
use sase_model::Reason;

use crate::egress::{parse_url, Destination, EgressCheck};
use crate::graphql::GraphqlCheck;
use crate::ownership::{percent_decode, OwnershipRules};

/// A refusal by a guard: the reason and a detail naming what broke (field and claim names,
/// the limit, the class of address — never request values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardViolation {
    /// `object_not_owned`, `graphql_refused` or `egress_refused`.
    pub reason: Reason,
    /// What broke.
    pub detail: String,
}

/// What the guards look at in a request.
#[derive(Debug, Clone, Copy)]
pub struct GuardRequest<'a> {
    /// Method token.
    pub method: &'a str,
    /// Path (no query).
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// `Content-Type` header value.
    pub content_type: Option<&'a str>,
    /// The whole body.
    pub body: &'a [u8],
}

/// The compiled guards of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteGuards {
    ownership: Option<OwnershipRules>,
    url_fields: Vec<UrlField>,
    egress: EgressCheck,
    /// The upstream's destination, when the resource's egress block checks it.
    upstream: Option<Destination>,
    graphql: Option<GraphqlCheck>,
    /// Internal token settings of the resource (the client's token is replaced).
    translation: Option<TokenTranslation>,
    /// TLS towards the resource's upstream.
    upstream_tls: Option<UpstreamTls>,
}

impl RouteGuards {
    /// Compiles the guards of `route` of `resource`; `None` when there is nothing to check.
    pub(crate) fn compile(
        resource: &HttpResource,
        route: &Route,
        template: &PathTemplate,
    ) -> Option<RouteGuards> {
        let egress = EgressCheck::compile(resource.egress.as_ref());
        let upstream = if egress.checks_upstream {
            // Validation checked the URL's form; one this parser refuses cannot be reached
            // safely, so it is refused at request time (an unreachable destination).
            let mut dest = parse_url(&resource.upstream, "upstream").unwrap_or(Destination {
                host: String::new(),
                port: 0,
                field: "upstream".into(),
                upstream: true,
            });
            dest.upstream = true;
            Some(dest)
        } else {
            None
        };
        let graphql = resource
            .graphql
            .as_ref()
            .map(GraphqlCheck::new)
            .filter(|g| g.covers(&route.id));
        let guards = RouteGuards {
            ownership: OwnershipRules::compile(&route.owner, template),
            url_fields: route.url_fields.clone(),
            egress,
            upstream,
            graphql,
            translation: resource.token_translation.clone(),
            upstream_tls: resource.upstream_tls.clone(),
        };
        let empty = guards.ownership.is_none()
            && guards.translation.is_none()
            && guards.upstream_tls.is_none()
            && guards.url_fields.is_empty()
            && guards.upstream.is_none()
            && guards.graphql.is_none()
            && !guards.egress.third_party;
        (!empty).then_some(guards)
    }

    /// The resource's token translation settings: when set, the shell replaces the client's
    /// `Authorization` with an internal token ([`crate::InternalSigner::mint`]).
    pub fn translation(&self) -> Option<&TokenTranslation> {
        self.translation.as_ref()
    }

    /// The resource's TLS settings towards its upstream (CA, client certificate).
    pub fn upstream_tls(&self) -> Option<&UpstreamTls> {
        self.upstream_tls.as_ref()
    }

    /// Whether the upstream's responses must match the API's response schemas (API10).
    pub fn third_party(&self) -> bool {
        self.egress.third_party
    }

    /// Checks ownership and GraphQL limits; returns the destinations (URL fields, then the
    /// upstream when the egress allowlist covers it) the shell must resolve and pass to
    /// [`RouteGuards::check_destination`]. `claims` are the caller's token claims.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check_request(
        &self,
        req: &GuardRequest<'_>,
        claims: Option<&Map<String, Value>>,
    ) -> Result<Vec<Destination>, GuardViolation> {
        let reads_body = self
            .ownership
            .as_ref()
            .is_some_and(OwnershipRules::reads_body)
            || self.url_fields.iter().any(|f| f.body.is_some());
        let json = if reads_body && !req.body.is_empty() {
            match crate::strict_json::parse(req.body) {
                Some(value) => Some(value),
                // Valid JSON the strict parser refuses: a repeated member name (another
                // parser upstream may read the other value) or too deep a nesting.
                None if serde_json::from_slice::<serde::de::IgnoredAny>(req.body).is_ok() => {
                    return Err(GuardViolation {
                        reason: Reason::BadRequest,
                        detail: "the JSON body repeats a member name or nests too deeply".into(),
                    })
                }
                None => None,
            }
        } else {
            None
        };
        if let Some(ownership) = &self.ownership {
            ownership
                .check(req.path, req.query, json.as_ref(), claims)
                .map_err(|v| GuardViolation {
                    reason: Reason::ObjectNotOwned,
                    detail: v.to_string(),
                })?;
        }
        if let Some(graphql) = &self.graphql {
            graphql
                .check_http(req.method, req.query, req.content_type, req.body)
                .map_err(|v| GuardViolation {
                    reason: Reason::GraphqlRefused,
                    detail: v.to_string(),
                })?;
        }
        let egress = |v: crate::egress::EgressViolation| GuardViolation {
            reason: Reason::EgressRefused,
            detail: v.to_string(),
        };
        let mut destinations = Vec::new();
        for field in &self.url_fields {
            let location = field.location();
            let name = location.to_string();
            match location {
                FieldLocation::Query(param) => {
                    for pair in req.query.unwrap_or("").split('&') {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        if percent_decode(k, true).as_deref() == Some(param) {
                            let url = percent_decode(v, true).ok_or_else(|| {
                                egress(crate::egress::EgressViolation {
                                    field: name.clone(),
                                    why: "malformed escape".into(),
                                })
                            })?;
                            destinations.push(parse_url(&url, &name).map_err(egress)?);
                        }
                    }
                }
                FieldLocation::Body(pointer) => {
                    match json.as_ref().and_then(|j| j.pointer(pointer)) {
                        None | Some(Value::Null) => {}
                        Some(Value::String(url)) => {
                            destinations.push(parse_url(url, &name).map_err(egress)?)
                        }
                        Some(_) => {
                            return Err(egress(crate::egress::EgressViolation {
                                field: name,
                                why: "not a URL string".into(),
                            }))
                        }
                    }
                }
                FieldLocation::Path(_) => {}
            }
        }
        if let Some(upstream) = &self.upstream {
            destinations.push(upstream.clone());
        }
        Ok(destinations)
    }

    /// Checks a destination returned by [`RouteGuards::check_request`] once resolved.
    ///
    /// # Errors
    /// `egress_refused` with the field and the reason.
    pub fn check_destination(
        &self,
        dest: &Destination,
        addrs: &[IpAddr],
    ) -> Result<(), GuardViolation> {
        self.egress.check(dest, addrs).map_err(|v| GuardViolation {
            reason: Reason::EgressRefused,
            detail: v.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sase_model::Policy;
    use serde_json::json;

    fn guards(resource_extra: &str, route_extra: &str) -> Option<RouteGuards> {
        let text = format!(
            r#"
issuers:
  - id: demo
    issuer: https://idp.example
    audiences: [api]
    algorithms: [EdDSA]
    keys:
      jwks: {{"keys": [{{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}]}}
resources:
  - name: app
    upstream: http://127.0.0.1:9000
    issuers: [demo]
{resource_extra}
    routes:
      - id: r
        methods: [GET, POST]
        path: /accounts/{{accountId}}/hooks
{route_extra}
"#
        );
        let policy = Policy::parse_yaml(&text).expect("policy");
        let resource = &policy.resources[0];
        let route = &resource.routes[0];
        let template = PathTemplate::parse(&route.path).expect("template");
        RouteGuards::compile(resource, route, &template)
    }

    fn req<'a>(method: &'a str, query: Option<&'a str>, body: &'a [u8]) -> GuardRequest<'a> {
        GuardRequest {
            method,
            path: "/accounts/alice/hooks",
            query,
            content_type: Some("application/json"),
            body,
        }
    }

    #[test]
    fn nothing_configured_compiles_to_nothing() {
        assert!(guards("", "").is_none());
    }

    #[test]
    fn ownership_then_url_fields_then_upstream() {
        let g = guards(
            "    egress:\n      upstream_networks: [127.0.0.1/32]",
            "        owner: [{path: accountId, claim: sub}]\n        url_fields: [{body: /callback}, {query: next}]",
        )
        .expect("guards");
        let alice = json!({"sub": "alice"});
        let claims = alice.as_object();
        let body = br#"{"callback": "https://hooks.example.com/x"}"#;
        let dests = g
            .check_request(
                &req("POST", Some("next=http%3A%2F%2F10.0.0.1%2F"), body),
                claims,
            )
            .expect("passes the request-level checks");
        let hosts: Vec<(&str, &str)> = dests
            .iter()
            .map(|d| (d.field.as_str(), d.host.as_str()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("body field `/callback`", "hooks.example.com"),
                ("query parameter `next`", "10.0.0.1"),
                ("upstream", "127.0.0.1")
            ]
        );
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        let private: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(g.check_destination(&dests[2], &[loopback]), Ok(()));
        let err = g
            .check_destination(&dests[1], &[private])
            .expect_err("private");
        assert_eq!(err.reason, Reason::EgressRefused);
        assert_eq!(
            err.detail,
            "query parameter `next`: resolves to a private address"
        );

        let bob = json!({"sub": "bob"});
        let err = g
            .check_request(&req("POST", None, body), bob.as_object())
            .expect_err("not owned");
        assert_eq!(err.reason, Reason::ObjectNotOwned);
        assert_eq!(
            err.detail,
            "path parameter `accountId` does not match claim `sub`"
        );
        let err = g
            .check_request(
                &req("POST", None, br#"{"callback": "file:///etc/passwd"}"#),
                claims,
            )
            .expect_err("scheme");
        assert_eq!(err.reason, Reason::EgressRefused);
        // A repeated member: this parser and the upstream's could disagree on the owner.
        let err = g
            .check_request(
                &req(
                    "POST",
                    None,
                    br#"{"callback": "https://a.example", "callback": "http://10.0.0.1"}"#,
                ),
                claims,
            )
            .expect_err("duplicate");
        assert_eq!(err.reason, Reason::BadRequest);
        let err = g
            .check_request(&req("POST", None, br#"{"callback": 7}"#), claims)
            .expect_err("type");
        assert_eq!(err.detail, "body field `/callback`: not a URL string");
    }

    #[test]
    fn graphql_applies_to_listed_routes() {
        let g = guards("    graphql: {max_depth: 2}", "").expect("guards");
        let err = g
            .check_request(
                &req("POST", None, br#"{"query": "{ a { b { c } } }"}"#),
                None,
            )
            .expect_err("deep");
        assert_eq!(err.reason, Reason::GraphqlRefused);
        assert_eq!(err.detail, "depth 3 exceeds max_depth 2");
        assert!(guards("    graphql: {routes: [r], max_depth: 2}", "").is_some());
    }
}
