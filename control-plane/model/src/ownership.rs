//! Object-level authorization (OWASP API1, BOLA): per-route ownership rules. A rule names one
//! field of the request — a path template parameter (`{accountId}`), a query parameter or a
//! JSON body field (a JSON pointer) — and the claim of the caller's token that it must equal
//! (`sub`, `tenant`, any string claim; when the claim is an array, the field must be one of its
//! members). The gateway refuses a request that breaks a rule with 403 `object_not_owned`,
//! naming the field and the claim (never their values).
//!
//! Also [`UrlField`], a query parameter or body field that carries a URL the upstream will
//! fetch (OWASP API7, SSRF): those are checked against the resource's egress allowlist (see
//! [`crate::egress`]).
//!
//! ```yaml
//! routes:
//!   - id: account
//!     methods: [GET, PATCH]
//!     path: /accounts/{accountId}
//!     scopes: [accounts:read]
//!     owner:
//!       - {path: accountId, claim: sub}
//!       - {body: /tenant, claim: tenant, optional: true}
//! ```

use serde::{Deserialize, Serialize};

use crate::policy::{PathTemplate, Route, Segment};

/// Most ownership rules one route may carry.
pub const MAX_OWNERSHIP_RULES: usize = 16;
/// Most URL-valued fields one route may declare.
pub const MAX_URL_FIELDS: usize = 16;

/// One ownership rule: exactly one of `path`, `query` or `body` names the request field, and
/// `claim` the token claim it must equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipRule {
    /// Name of a parameter of the route's path template (`accountId` for `{accountId}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Name of a query parameter; every occurrence must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// JSON pointer (RFC 6901) into the JSON request body, e.g. `/owner/id`; the value must be
    /// a string or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Claim of the caller's token the field must equal (a string or number claim), or belong
    /// to (an array claim).
    pub claim: String,
    /// When true a request without the field passes this rule (default false: a missing query
    /// parameter or body field is refused like a wrong one). Path parameters are always there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// Where a field of a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldLocation<'a> {
    /// A path template parameter.
    Path(&'a str),
    /// A query parameter.
    Query(&'a str),
    /// A JSON pointer into the body.
    Body(&'a str),
}

impl std::fmt::Display for FieldLocation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldLocation::Path(name) => write!(f, "path parameter `{name}`"),
            FieldLocation::Query(name) => write!(f, "query parameter `{name}`"),
            FieldLocation::Body(pointer) => write!(f, "body field `{pointer}`"),
        }
    }
}

impl OwnershipRule {
    /// The field the rule reads (validation guarantees exactly one is set; `path` wins
    /// otherwise).
    pub fn location(&self) -> FieldLocation<'_> {
        match (&self.path, &self.query, &self.body) {
            (Some(p), _, _) => FieldLocation::Path(p),
            (None, Some(q), _) => FieldLocation::Query(q),
            (None, None, Some(b)) => FieldLocation::Body(b),
            (None, None, None) => FieldLocation::Path(""),
        }
    }
}

/// A request field holding a URL that the upstream will fetch: exactly one of `query` or
/// `body`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlField {
    /// Name of a query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// JSON pointer into the JSON request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl UrlField {
    /// The field (validation guarantees exactly one is set).
    pub fn location(&self) -> FieldLocation<'_> {
        match (&self.query, &self.body) {
            (Some(q), _) => FieldLocation::Query(q),
            (None, Some(b)) => FieldLocation::Body(b),
            (None, None) => FieldLocation::Query(""),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'#' | b'?'))
}

fn valid_pointer(pointer: &str) -> bool {
    if !pointer.starts_with('/') || pointer.len() > 256 {
        return false;
    }
    // `~` must be followed by 0 or 1 (RFC 6901).
    let bytes = pointer.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'~' || matches!(bytes.get(i + 1), Some(b'0') | Some(b'1')))
        && !pointer.contains(char::is_control)
}

/// Checks the `owner` and `url_fields` of a route (`at` is the route's field path).
pub fn check_route(at: &str, route: &Route, push: &mut dyn FnMut(String, &str)) {
    if route.owner.len() > MAX_OWNERSHIP_RULES {
        push(
            format!("{at}.owner"),
            "at most 16 ownership rules per route",
        );
    }
    if !route.owner.is_empty() && route.public {
        push(
            format!("{at}.owner"),
            "a public route has no caller whose claims could own the object",
        );
    }
    let template = PathTemplate::parse(&route.path).ok();
    for (i, rule) in route.owner.iter().enumerate() {
        let at = format!("{at}.owner[{i}]");
        let set = [
            rule.path.is_some(),
            rule.query.is_some(),
            rule.body.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            push(at.clone(), "set exactly one of `path`, `query` or `body`");
            continue;
        }
        if rule.claim.is_empty()
            || rule.claim.len() > 128
            || !rule.claim.bytes().all(|b| b.is_ascii_graphic())
        {
            push(
                format!("{at}.claim"),
                "must be a claim name (1-128 visible ASCII characters)",
            );
        }
        match rule.location() {
            FieldLocation::Path(name) => {
                let known = template.as_ref().is_some_and(|t| {
                    t.segments()
                        .iter()
                        .any(|s| matches!(s, Segment::Param(p) if p == name))
                });
                if !known {
                    push(
                        format!("{at}.path"),
                        "names no parameter of the route's path template",
                    );
                }
                if rule.optional {
                    push(
                        format!("{at}.optional"),
                        "a path parameter is always present",
                    );
                }
            }
            FieldLocation::Query(name) => {
                if !valid_name(name) {
                    push(format!("{at}.query"), "must be a query parameter name");
                }
            }
            FieldLocation::Body(pointer) => {
                if !valid_pointer(pointer) {
                    push(
                        format!("{at}.body"),
                        "must be a JSON pointer such as /owner/id",
                    );
                }
            }
        }
    }
    if route.url_fields.len() > MAX_URL_FIELDS {
        push(
            format!("{at}.url_fields"),
            "at most 16 URL fields per route",
        );
    }
    for (i, field) in route.url_fields.iter().enumerate() {
        let at = format!("{at}.url_fields[{i}]");
        match (&field.query, &field.body) {
            (Some(q), None) => {
                if !valid_name(q) {
                    push(format!("{at}.query"), "must be a query parameter name");
                }
            }
            (None, Some(b)) => {
                if !valid_pointer(b) {
                    push(
                        format!("{at}.body"),
                        "must be a JSON pointer such as /callback",
                    );
                }
            }
            _ => push(at, "set exactly one of `query` or `body`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Policy;

    const BASE: &str = r#"
issuers:
  - id: demo
    issuer: https://idp.example
    audiences: [api]
    algorithms: [EdDSA]
    keys:
      jwks: {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}
resources:
  - name: accounts
    upstream: http://127.0.0.1:9000
    issuers: [demo]
    routes:
      - id: account
        methods: [GET, PATCH]
        path: /accounts/{accountId}
        OWNER
"#;

    fn with(owner: &str) -> String {
        BASE.replace("OWNER", owner)
    }

    #[test]
    fn rules_parse_and_round_trip() {
        let text = with(
            "owner:\n          - {path: accountId, claim: sub}\n          - {query: tenant, claim: tenant}\n          - {body: /owner/id, claim: sub, optional: true}\n        url_fields:\n          - {body: /callback}\n          - {query: next}",
        );
        let policy = Policy::parse_yaml(&text).expect("valid");
        let route = &policy.resources[0].routes[0];
        assert_eq!(route.owner.len(), 3);
        assert!(route.owner[2].optional);
        assert_eq!(route.url_fields.len(), 2);
        let json = serde_json::to_string(&policy).expect("json");
        assert_eq!(Policy::parse_json(&json).expect("again"), policy);
        // A policy without rules serialises as before (no new keys).
        let plain = Policy::parse_yaml(&with("")).expect("valid");
        let json = serde_json::to_string(&plain).expect("json");
        assert!(
            !json.contains("owner") && !json.contains("url_fields"),
            "{json}"
        );
    }

    #[test]
    fn bad_rules_are_reported_with_their_paths() {
        let text = with(
            "owner:\n          - {path: userId, claim: sub}\n          - {query: a, body: /b, claim: sub}\n          - {body: owner, claim: sub}\n          - {query: t, claim: \"\"}\n          - {path: accountId, claim: sub, optional: true}\n          - {claim: sub}\n        url_fields:\n          - {}\n          - {body: \"/a~2\"}",
        );
        let err = Policy::parse_yaml(&text).expect_err("invalid");
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        let r = "resources[0].routes[0]";
        for want in [
            format!("{r}.owner[0].path"),
            format!("{r}.owner[1]"),
            format!("{r}.owner[2].body"),
            format!("{r}.owner[3].claim"),
            format!("{r}.owner[4].optional"),
            format!("{r}.owner[5]"),
            format!("{r}.url_fields[0]"),
            format!("{r}.url_fields[1].body"),
        ] {
            assert!(paths.contains(&want.as_str()), "{want} not in {paths:?}");
        }
        let unknown = with("owner:\n          - {path: accountId, claim: sub, value: x}");
        let err = Policy::parse_yaml(&unknown).expect_err("unknown field");
        assert_eq!(err.0[0].path, "resources[0].routes[0].owner[0].value");
    }

    #[test]
    fn public_routes_cannot_have_owners() {
        let text = with("public: true\n        owner: [{path: accountId, claim: sub}]")
            .replace("    issuers: [demo]\n", "");
        let err = Policy::parse_yaml(&text).expect_err("public owner");
        assert_eq!(err.0[0].path, "resources[0].routes[0].owner");
    }
}
