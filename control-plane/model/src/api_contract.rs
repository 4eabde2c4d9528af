//! The contract of an API (OWASP API3, API8): an OpenAPI 3.0 or 3.1 document per resource,
//! written inline in the policy (YAML or JSON — it is signed with the rest of the bundle, so
//! the edge never fetches a document), plus response hardening: undeclared response properties
//! scrubbed, upstream 5xx bodies replaced, security headers and a CORS policy.
//!
//! This module only types the settings and checks what can be checked without a JSON Schema
//! engine (so `sase-model` stays light and builds for wasm32): the document's version, that
//! every operation maps to a route of the resource (same method, same path shape), and that
//! every `$ref` is local (`#/…`) and resolves. Compiling the schemas (and refusing those that
//! do not compile) is `sase-gateway`'s job; the control plane calls it on PUT.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{HttpResource, Method, PathTemplate};

/// Contract and response-hardening settings of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// The OpenAPI 3.0.x or 3.1.x document, inline. Requests to a route with an operation in it
    /// are checked against it; routes without an operation are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<Value>,
    /// Treat every object schema that does not say otherwise as `additionalProperties: false`
    /// (refuse undocumented properties: mass assignment). Default true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub strict_properties: bool,
    /// Remove from JSON responses the properties the operation's response schema does not
    /// declare. Default true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub scrub_responses: bool,
    /// Replace the body of upstream 5xx answers (stack traces) with the generic JSON error
    /// carrying the reference id. Default true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub rewrite_upstream_errors: bool,
    /// Security headers added to responses (unless the upstream sets them).
    #[serde(default, skip_serializing_if = "SecurityHeaders::is_default")]
    pub security_headers: SecurityHeaders,
    /// Cross-origin policy; without one the edge answers no preflight and adds no CORS header
    /// (and removes those the upstream sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

/// Security headers; each `None` takes the default, an empty string adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security`, on HTTPS only (default [`DEFAULT_HSTS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_transport_security: Option<String>,
    /// `Content-Security-Policy` (default [`DEFAULT_CSP`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_security_policy: Option<String>,
    /// `X-Frame-Options` (default `DENY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_frame_options: Option<String>,
    /// `X-Content-Type-Options` (default `nosniff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_content_type_options: Option<String>,
}

/// Default `Strict-Transport-Security` value.
pub const DEFAULT_HSTS: &str = "max-age=31536000; includeSubDomains";
/// Default `Content-Security-Policy` value for API responses.
pub const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

impl SecurityHeaders {
    fn is_default(&self) -> bool {
        self == &SecurityHeaders::default()
    }

    /// `(header name, value)` pairs in force: defaults overridden, empty values dropped. HSTS
    /// only when `tls`.
    pub fn effective(&self, tls: bool) -> Vec<(&'static str, String)> {
        let pick = |v: &Option<String>, default: &str| v.clone().unwrap_or(default.to_string());
        let mut out = Vec::with_capacity(4);
        if tls {
            out.push((
                "strict-transport-security",
                pick(&self.strict_transport_security, DEFAULT_HSTS),
            ));
        }
        out.push((
            "content-security-policy",
            pick(&self.content_security_policy, DEFAULT_CSP),
        ));
        out.push(("x-frame-options", pick(&self.x_frame_options, "DENY")));
        out.push((
            "x-content-type-options",
            pick(&self.x_content_type_options, "nosniff"),
        ));
        out.retain(|(_, v)| !v.is_empty());
        out
    }
}

/// A CORS policy. Preflights are answered by the edge; a disallowed origin gets no CORS header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins allowed, exactly (`https://app.example.com`); `*` allows any origin but cannot
    /// be combined with `allow_credentials`.
    pub allowed_origins: Vec<String>,
    /// Methods allowed cross-origin (default: those of the routes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_methods: Vec<Method>,
    /// Request headers allowed cross-origin (lower-cased on use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers exposed to the calling script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` of preflight answers (default 600, at most 86400).
    #[serde(default = "default_max_age")]
    pub max_age_seconds: u32,
}

fn default_max_age() -> u32 {
    600
}

/// The HTTP methods an OpenAPI path item may hold, with the policy's method for each.
pub const OPERATION_METHODS: [(&str, Method); 7] = [
    ("get", Method::Get),
    ("put", Method::Put),
    ("post", Method::Post),
    ("delete", Method::Delete),
    ("options", Method::Options),
    ("head", Method::Head),
    ("patch", Method::Patch),
];

/// Path-item members that are not operations.
const PATH_ITEM_FIELDS: [&str; 4] = ["summary", "description", "servers", "parameters"];

/// Follows a local reference (`#/a/b`) inside `doc`.
pub fn resolve_local<'d>(doc: &'d Value, reference: &str) -> Option<&'d Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(doc);
    }
    if !pointer.starts_with('/') {
        return None;
    }
    // JSON pointer tokens are percent-encoded inside a URI fragment.
    let decoded = percent_decode(pointer)?;
    doc.pointer(&decoded)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks the `api` settings of resource `resource` at field path `at` (`resources[i]`).
pub(crate) fn check(at: &str, resource: &HttpResource, push: &mut dyn FnMut(String, &str)) {
    let Some(api) = &resource.api else {
        return;
    };
    let at = format!("{at}.api");
    if let Some(cors) = &api.cors {
        let at = format!("{at}.cors");
        if cors.allowed_origins.is_empty() {
            push(
                format!("{at}.allowed_origins"),
                "must name at least one origin",
            );
        }
        for (i, origin) in cors.allowed_origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && origin.bytes().all(|b| b.is_ascii_graphic()));
            if !ok {
                push(
                    format!("{at}.allowed_origins[{i}]"),
                    "must be `*` or an origin such as https://app.example.com (scheme, host, optional port)",
                );
            }
            if origin == "*" && cors.allow_credentials {
                push(
                    format!("{at}.allowed_origins[{i}]"),
                    "`*` cannot be combined with allow_credentials",
                );
            }
        }
        for (i, h) in cors
            .allowed_headers
            .iter()
            .chain(cors.expose_headers.iter())
            .enumerate()
        {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                push(format!("{at}.headers[{i}]"), "must be a header name");
            }
        }
        if cors.max_age_seconds > 86_400 {
            push(format!("{at}.max_age_seconds"), "must be at most 86400");
        }
    }
    let sh = &api.security_headers;
    for (name, value) in [
        ("strict_transport_security", &sh.strict_transport_security),
        ("content_security_policy", &sh.content_security_policy),
        ("x_frame_options", &sh.x_frame_options),
        ("x_content_type_options", &sh.x_content_type_options),
    ] {
        if value.as_ref().is_some_and(|v| {
            !v.bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        }) {
            push(
                format!("{at}.security_headers.{name}"),
                "must be visible ASCII",
            );
        }
    }
    let Some(doc) = &api.openapi else {
        return;
    };
    let at = format!("{at}.openapi");
    let Some(obj) = doc.as_object() else {
        push(at, "must be an OpenAPI document (an object)");
        return;
    };
    match obj.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0.") || v.starts_with("3.1.") => {}
        _ => push(
            format!("{at}.openapi"),
            "must be an OpenAPI version 3.0.x or 3.1.x",
        ),
    }
    check_refs(doc, doc, &at, push);
    let Some(paths) = obj.get("paths").and_then(Value::as_object) else {
        push(format!("{at}.paths"), "must be an object of path items");
        return;
    };
    for (path, item) in paths {
        let at = format!("{at}.paths.{path}");
        let template = match PathTemplate::parse(path) {
            Ok(t) => t,
            Err(why) => {
                push(at, why);
                continue;
            }
        };
        let Some(item) = item.as_object() else {
            push(at, "must be a path item object");
            continue;
        };
        for (key, op) in item {
            if PATH_ITEM_FIELDS.contains(&key.as_str()) {
                continue;
            }
            let Some(&(_, method)) = OPERATION_METHODS.iter().find(|(m, _)| m == key) else {
                push(
                    format!("{at}.{key}"),
                    "unsupported path item member (operations: get, put, post, delete, options, head, patch; no path item $ref)",
                );
                continue;
            };
            if !op.is_object() {
                push(format!("{at}.{key}"), "must be an operation object");
                continue;
            }
            let mapped = resource.routes.iter().any(|route| {
                route.methods.contains(&method)
                    && PathTemplate::parse(&route.path).is_ok_and(|t| t.shape() == template.shape())
            });
            if !mapped {
                push(
                    format!("{at}.{key}"),
                    "operation matches no route of this resource (same method and path shape)",
                );
            }
        }
    }
}

/// Every `$ref` in the document must be local and resolve.
fn check_refs(doc: &Value, node: &Value, at: &str, push: &mut dyn FnMut(String, &str)) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    match value.as_str() {
                        Some(r) if !r.starts_with('#') => push(
                            format!("{at}.$ref"),
                            "external $ref is not supported: only local references (#/components/...)",
                        ),
                        Some(r) if resolve_local(doc, r).is_none() => {
                            push(format!("{at}.$ref"), "$ref does not resolve in this document")
                        }
                        Some(_) => {}
                        None => push(format!("{at}.$ref"), "must be a string"),
                    }
                } else if key == "$id" || key == "$dynamicRef" || key == "$schema" {
                    push(
                        format!("{at}.{key}"),
                        "not supported in an inline document (use local $ref only)",
                    );
                } else {
                    check_refs(doc, value, &format!("{at}.{key}"), push);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_refs(doc, item, &format!("{at}[{i}]"), push);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::Policy;

    const BASE: &str = r##"
resources:
  - name: shop
    upstream: http://127.0.0.1:9000
    routes:
      - {id: list, methods: [GET, POST], path: /users, public: true}
      - {id: one, methods: [GET], path: "/users/{id}", public: true}
    api:
      cors:
        allowed_origins: [https://app.example]
      openapi:
        openapi: 3.1.0
        info: {title: shop, version: "1"}
        paths:
          /users:
            get:
              responses:
                200:
                  description: ok
            post:
              requestBody:
                content:
                  application/json:
                    schema: {$ref: "#/components/schemas/User"}
              responses: {201: {description: created}}
          /users/{userId}:
            get:
              parameters:
                - {name: userId, in: path, required: true, schema: {type: integer}}
              responses: {200: {description: ok}}
        components:
          schemas:
            User:
              type: object
              properties: {name: {type: string}}
"##;

    #[test]
    fn a_document_mapping_to_routes_parses_and_round_trips() {
        let policy = Policy::parse_yaml(BASE).expect("valid");
        let api = policy.resources[0].api.as_ref().expect("api");
        assert!(api.strict_properties);
        let doc = api.openapi.as_ref().expect("doc");
        // YAML integer keys (response codes) arrive as strings.
        assert!(doc["paths"]["/users"]["get"]["responses"]["200"].is_object());
        let json = serde_json::to_string(&policy).expect("json");
        assert!(!json.contains("strict_properties"), "{json}");
        assert_eq!(Policy::parse_json(&json).expect("again"), policy);
    }

    fn paths(text: &str) -> Vec<String> {
        Policy::parse_yaml(text)
            .expect_err("invalid")
            .0
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn unmapped_operations_are_refused_with_their_path() {
        let text = BASE.replace(
            "          /users/{userId}:\n            get:",
            "          /users/{userId}:\n            delete:",
        );
        assert_eq!(
            paths(&text),
            ["resources[0].api.openapi.paths./users/{userId}.delete"]
        );
        let text = BASE.replace("/users/{userId}:", "/accounts/{userId}:");
        assert_eq!(
            paths(&text),
            ["resources[0].api.openapi.paths./accounts/{userId}.get"]
        );
    }

    #[test]
    fn external_and_dangling_refs_are_refused() {
        let text = BASE.replace(
            "#/components/schemas/User",
            "https://evil.example/user.json",
        );
        let p = paths(&text);
        assert_eq!(p.len(), 1);
        assert!(p[0].ends_with("application/json.schema.$ref"), "{p:?}");
        let text = BASE.replace("#/components/schemas/User", "#/components/schemas/Nope");
        assert_eq!(paths(&text).len(), 1);
        let text = BASE.replace("#/components/schemas/User", "other.yaml#/User");
        assert_eq!(paths(&text).len(), 1);
    }

    #[test]
    fn version_and_cors_are_checked() {
        let text = BASE.replace("openapi: 3.1.0", "openapi: 2.0.0");
        assert_eq!(paths(&text), ["resources[0].api.openapi.openapi"]);
        let text = BASE.replace(
            "allowed_origins: [https://app.example]",
            "allowed_origins: [\"*\"]\n        allow_credentials: true",
        );
        assert_eq!(paths(&text), ["resources[0].api.cors.allowed_origins[0]"]);
    }

    #[test]
    fn security_headers_default_and_override() {
        let policy = Policy::parse_yaml(BASE).expect("valid");
        let api = policy.resources[0].api.as_ref().expect("api");
        let plain = api.security_headers.effective(false);
        assert_eq!(plain.len(), 3);
        assert_eq!(api.security_headers.effective(true).len(), 4);
        let text = BASE.replace(
            "      cors:",
            "      security_headers: {x_frame_options: \"\", content_security_policy: \"default-src 'self'\"}\n      cors:",
        );
        let policy = Policy::parse_yaml(&text).expect("valid");
        let api = policy.resources[0].api.as_ref().expect("api");
        let eff = api.security_headers.effective(false);
        assert!(eff.iter().all(|(n, _)| *n != "x-frame-options"));
        assert!(eff.contains(&("content-security-policy", "default-src 'self'".to_string())));
    }
}
