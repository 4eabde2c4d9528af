//! The API contract (OWASP API3 / API8) as the gateway decides it: requests checked against
//! the OpenAPI operation of their route, responses scrubbed, errors replaced, security headers
//! and CORS — over the policy of `tests/e2e/data/contract-policy.yaml`.

use http::{HeaderMap, HeaderValue};
use sase_gateway::{
    check_contracts, decide, preflight, ApiHandle, CompiledPolicy, ContractRequest, JwksStore,
    Preflight, RequestParts, ResponsePlan, Verdict,
};
use sase_model::{BundlePayload, Policy, Reason};
use serde_json::{json, Value};

const POLICY: &str = include_str!("../../../tests/e2e/data/contract-policy.yaml");

fn policy_text() -> String {
    POLICY.replace("UPSTREAM", "http://127.0.0.1:9")
}

fn compile(policy: Policy) -> CompiledPolicy {
    CompiledPolicy::compile(&BundlePayload {
        tenant_id: "t".into(),
        version: 1,
        issued_at_ms: 0,
        policy,
    })
    .expect("compiles")
}

fn compiled() -> CompiledPolicy {
    compile(Policy::parse_yaml(&policy_text()).expect("valid policy"))
}

fn api(policy: &CompiledPolicy, method: &str, path: &str) -> ApiHandle {
    let verdict = decide(
        policy,
        &JwksStore::new(),
        &RequestParts {
            method,
            host: None,
            path,
            authorization: None,
        },
        0,
    );
    match verdict {
        Verdict::Allow(allowed) => allowed.api.expect("resource has an api block"),
        other => panic!("{method} {path}: {other:?}"),
    }
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

fn req<'a>(method: &'a str, path: &'a str) -> Req<'a> {
    Req {
        method,
        path,
        query: None,
        headers: Vec::new(),
        body: "",
    }
}

impl<'a> Req<'a> {
    fn query(mut self, q: &'a str) -> Self {
        self.query = Some(q);
        self
    }
    fn header(mut self, n: &'a str, v: &'a str) -> Self {
        self.headers.push((n, v));
        self
    }
    fn json(mut self, body: &'a str) -> Self {
        self.headers.push(("content-type", "application/json"));
        self.body = body;
        self
    }
    fn raw_body(mut self, body: &'a str) -> Self {
        self.body = body;
        self
    }

    /// `Ok(())` or `(reason code, pointer)`.
    fn check(&self, policy: &CompiledPolicy) -> Result<(), (String, String, String)> {
        let handle = api(policy, self.method, self.path);
        let mut headers = HeaderMap::new();
        for (n, v) in &self.headers {
            headers.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        handle
            .check_request(&ContractRequest {
                path: self.path,
                query: self.query,
                headers: &headers,
                body: self.body.as_bytes(),
            })
            .map_err(|v| (v.reason.as_str().to_string(), v.pointer, v.message))
    }
}

const RID: &str = "0123abcd";

fn refused(r: Result<(), (String, String, String)>, reason: &str, pointer: &str) {
    match r {
        Err((got, ptr, _)) => assert_eq!((got.as_str(), ptr.as_str()), (reason, pointer)),
        Ok(()) => panic!("accepted; expected {reason} at {pointer}"),
    }
}

#[test]
fn valid_requests_pass() {
    let p = compiled();
    for r in [
        req("GET", "/users"),
        req("GET", "/users").query("limit=10&role=admin"),
        req("GET", "/users").query("limit=100&unknown=x"),
        req("GET", "/users/42"),
        req("POST", "/users")
            .header("x-request-id", RID)
            .json(r#"{"name": "Ann", "email": "ann@example.com"}"#),
        req("POST", "/users")
            .header("x-request-id", RID)
            .header("content-type", "application/json; charset=utf-8")
            .raw_body(r#"{"name": "Ann", "email": "a@b", "address": {"city": "Gent"}}"#),
        req("PATCH", "/users/7").json(r#"{"name": "Bo"}"#),
    ] {
        assert_eq!(r.check(&p), Ok(()), "{} {}", r.method, r.path);
    }
}

#[test]
fn mass_assignment_is_refused_at_every_depth() {
    let p = compiled();
    let post = |body: &'static str| {
        req("POST", "/users")
            .header("x-request-id", RID)
            .json(body)
            .check(&p)
    };
    refused(
        post(r#"{"name": "Ann", "email": "a@b", "is_admin": true}"#),
        "body_invalid",
        "/body/is_admin",
    );
    refused(
        post(r#"{"name": "Ann", "email": "a@b", "address": {"city": "x", "zip~/": 1}}"#),
        "body_invalid",
        "/body/address/zip~0~1",
    );
    refused(
        req("PATCH", "/users/1")
            .json(r#"{"name": "x", "role": "admin"}"#)
            .check(&p),
        "body_invalid",
        "/body/role",
    );
}

#[test]
fn wrong_types_missing_and_constraints_name_the_pointer() {
    let p = compiled();
    let post = |body: &'static str| {
        req("POST", "/users")
            .header("x-request-id", RID)
            .json(body)
            .check(&p)
    };
    refused(
        post(r#"{"name": 7, "email": "a@b"}"#),
        "body_invalid",
        "/body/name",
    );
    refused(post(r#"{"name": "Ann"}"#), "body_invalid", "/body/email");
    refused(
        post(r#"{"name": "Ann", "email": "no-at-sign"}"#),
        "body_invalid",
        "/body/email",
    );
    refused(
        post(r#"{"name": "", "email": "a@b"}"#),
        "body_invalid",
        "/body/name",
    );
    refused(post(r#"[1, 2]"#), "body_invalid", "/body");
    refused(
        post(r#"{"name": "Ann", "email": "a@b""#),
        "body_invalid",
        "/body",
    );
    // Duplicate members: the upstream might read the other one.
    refused(
        post(r#"{"name": "Ann", "email": "a@b", "name": "root"}"#),
        "body_invalid",
        "/body",
    );
    refused(
        req("PATCH", "/users/1").json("{}").check(&p),
        "body_invalid",
        "/body",
    );
}

#[test]
fn messages_never_echo_values() {
    let p = compiled();
    let secret = r#"{"name": "Ann", "email": "SECRET-VALUE-123"}"#;
    let err = req("POST", "/users")
        .header("x-request-id", RID)
        .json(secret)
        .check(&p)
        .expect_err("refused");
    assert!(
        !err.1.contains("SECRET") && !err.2.contains("SECRET"),
        "{err:?}"
    );
    let err = req("GET", "/users")
        .query("limit=SECRET")
        .check(&p)
        .expect_err("refused");
    assert!(!err.2.contains("SECRET"), "{err:?}");
}

#[test]
fn parameters_are_checked() {
    let p = compiled();
    for (query, pointer) in [
        ("limit=0", "/query/limit"),
        ("limit=101", "/query/limit"),
        ("limit=ten", "/query/limit"),
        ("limit=1.5", "/query/limit"),
        ("limit=", "/query/limit"),
        ("role=root", "/query/role"),
        ("limit=1&limit=2", "/query/limit"),
        ("limit=%zz", "/query"),
    ] {
        refused(
            req("GET", "/users").query(query).check(&p),
            "parameter_invalid",
            pointer,
        );
    }
    refused(
        req("GET", "/users/abc").check(&p),
        "parameter_invalid",
        "/path/id",
    );
    // Integers beyond 64 bits are still integers (here above the declared maximum).
    refused(
        req("GET", "/users/156324509680136337803687493632").check(&p),
        "parameter_invalid",
        "/path/id",
    );
    assert_eq!(req("GET", "/users/9223372036854775807").check(&p), Ok(()));
    refused(
        req("GET", "/users/0").check(&p),
        "parameter_invalid",
        "/path/id",
    );
    refused(
        req("POST", "/users")
            .json(r#"{"name": "A", "email": "a@b"}"#)
            .check(&p),
        "parameter_invalid",
        "/header/x-request-id",
    );
    refused(
        req("POST", "/users")
            .header("x-request-id", "not hex!")
            .json(r#"{"name": "A", "email": "a@b"}"#)
            .check(&p),
        "parameter_invalid",
        "/header/x-request-id",
    );
}

#[test]
fn content_types_are_checked() {
    let p = compiled();
    let body = r#"{"name": "A", "email": "a@b"}"#;
    for ct in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
    ] {
        refused(
            req("POST", "/users")
                .header("x-request-id", RID)
                .header("content-type", ct)
                .raw_body(body)
                .check(&p),
            "content_type_unsupported",
            "/header/content-type",
        );
    }
    refused(
        req("POST", "/users")
            .header("x-request-id", RID)
            .raw_body(body)
            .check(&p),
        "content_type_unsupported",
        "/header/content-type",
    );
    // A body where the operation declares none.
    refused(
        req("GET", "/users/1").json(body).check(&p),
        "content_type_unsupported",
        "/body",
    );
    // A required body that is missing.
    refused(
        req("POST", "/users").header("x-request-id", RID).check(&p),
        "body_invalid",
        "/body",
    );
}

#[test]
fn routes_without_an_operation_are_not_checked() {
    let p = compiled();
    let handle = api(&p, "GET", "/legacy");
    assert!(!handle.has_operation());
    assert_eq!(
        req("GET", "/legacy").json("not even json").check(&p),
        Ok(())
    );
}

#[test]
fn strict_properties_can_be_turned_off() {
    let text = policy_text().replace("strict_properties: true ", "strict_properties: false");
    let p = compile(Policy::parse_yaml(&text).expect("valid"));
    assert_eq!(
        req("POST", "/users")
            .header("x-request-id", RID)
            .json(r#"{"name": "A", "email": "a@b", "extra": 1}"#)
            .check(&p),
        Ok(())
    );
}

#[test]
fn responses_are_scrubbed_of_undeclared_properties() {
    let p = compiled();
    let handle = api(&p, "GET", "/users/1");
    assert_eq!(
        handle.response_plan(200, Some("application/json")),
        ResponsePlan::Scrub
    );
    let leaked = json!({"id": 1, "name": "Ann", "email": "a@b", "password_hash": "$2b$...",
        "is_admin": true, "address": {"city": "Gent", "geo": [1, 2]}});
    let (body, removed) = handle
        .scrub_response(200, leaked.to_string().as_bytes())
        .expect("scrubbed");
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        body,
        json!({"id": 1, "name": "Ann", "email": "a@b", "address": {"city": "Gent"}})
    );
    assert_eq!(removed, ["/address/geo", "/is_admin", "/password_hash"]);
    // Nothing to remove: nothing changes.
    assert!(handle
        .scrub_response(200, br#"{"id": 1, "name": "a", "email": "b"}"#)
        .is_none());
    // Arrays of objects.
    let list = api(&p, "GET", "/users");
    let (body, removed) = list
        .scrub_response(
            200,
            br#"[{"id": 1, "name": "a", "email": "b", "token": "t"}]"#,
        )
        .expect("scrubbed");
    assert_eq!(removed, ["/0/token"]);
    assert!(!String::from_utf8_lossy(&body).contains("token"));
    // A status without a schema, or a non-JSON body, passes.
    assert_eq!(
        handle.response_plan(404, Some("application/json")),
        ResponsePlan::Pass
    );
    assert_eq!(
        handle.response_plan(200, Some("text/html")),
        ResponsePlan::Pass
    );
}

#[test]
fn upstream_errors_are_replaced_and_headers_added() {
    let p = compiled();
    for (method, path) in [("GET", "/users/1"), ("GET", "/legacy")] {
        let handle = api(&p, method, path);
        assert_eq!(
            handle.response_plan(500, Some("text/plain")),
            ResponsePlan::Replace
        );
        assert_eq!(handle.response_plan(503, None), ResponsePlan::Replace);
        let plain: Vec<&str> = handle
            .security_headers(false)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            plain,
            [
                "content-security-policy",
                "x-frame-options",
                "x-content-type-options"
            ]
        );
        assert_eq!(handle.security_headers(true).len(), 4);
    }
}

#[test]
fn cors_allows_only_the_configured_origin() {
    let p = compiled();
    let handle = api(&p, "GET", "/users");
    let headers = handle.cors_headers(Some("https://app.example.com"));
    assert!(headers.contains(&(
        "access-control-allow-origin",
        "https://app.example.com".to_string()
    )));
    assert!(headers.contains(&("access-control-allow-credentials", "true".to_string())));
    assert!(handle.cors_headers(Some("https://evil.example")).is_empty());
    assert!(handle.cors_headers(None).is_empty());

    let pre = |origin, method, hdrs| preflight(&p, None, "/users", origin, method, hdrs);
    assert!(matches!(
        pre(
            "https://app.example.com",
            "POST",
            Some("Content-Type, X-Request-Id")
        ),
        Some(Preflight::Allow { .. })
    ));
    assert!(matches!(
        pre("https://evil.example", "POST", None),
        Some(Preflight::Refuse { .. })
    ));
    assert!(matches!(
        pre("https://app.example.com", "POST", Some("x-admin")),
        Some(Preflight::Refuse { .. })
    ));
    assert!(pre("https://app.example.com", "DELETE", None).is_none());
}

#[test]
fn openapi_30_documents_work_too() {
    let text = policy_text()
        .replace("openapi: 3.1.0", "openapi: 3.0.3")
        .replace(
            "name: {type: string}\n",
            "name: {type: string, nullable: true}\n",
        )
        .replace(
            "{type: integer, minimum: 1, maximum: 100}",
            "{type: integer, minimum: 0, exclusiveMinimum: true, maximum: 100}",
        );
    let p = compile(Policy::parse_yaml(&text).expect("valid"));
    refused(
        req("GET", "/users").query("limit=0").check(&p),
        "parameter_invalid",
        "/query/limit",
    );
    assert_eq!(req("GET", "/users").query("limit=1").check(&p), Ok(()));
    refused(
        req("POST", "/users")
            .header("x-request-id", RID)
            .json(r#"{"name": "A", "email": "a@b", "x": 1}"#)
            .check(&p),
        "body_invalid",
        "/body/x",
    );
}

#[test]
fn all_of_compositions_stay_usable_under_strictness() {
    let doc = json!({
        "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
        "paths": {"/pets": {"post": {
            "requestBody": {"required": true, "content": {"application/json": {"schema":
                {"allOf": [{"$ref": "#/components/schemas/Base"}, {"properties": {"kind": {"type": "string"}}}]}}}},
            "responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": {
            "Base": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Tree": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}}}
        }}
    });
    let policy = json!({"resources": [{"name": "pets", "upstream": "http://127.0.0.1:9",
        "routes": [{"id": "add", "methods": ["POST"], "path": "/pets", "public": true}],
        "api": {"openapi": doc}}]});
    let p = compile(Policy::parse_json(&policy.to_string()).expect("valid"));
    let ok = req("POST", "/pets").json(r#"{"name": "rex", "kind": "dog"}"#);
    assert_eq!(ok.check(&p), Ok(()));
    refused(
        req("POST", "/pets")
            .json(r#"{"name": "rex", "owner": "me"}"#)
            .check(&p),
        "body_invalid",
        "/body/owner",
    );
}

#[test]
fn documents_that_do_not_compile_are_refused_with_a_path() {
    let text = policy_text().replace("pattern: \"^[0-9a-f]{8,32}$\"", "pattern: \"([a-z\"");
    let policy = Policy::parse_yaml(&text).expect("model accepts it");
    let errors = check_contracts(&policy).expect_err("bad regex");
    assert!(
        errors[0]
            .path
            .starts_with("resources[0].api.openapi.paths./users.post.parameters"),
        "{errors:?}"
    );
    assert!(CompiledPolicy::compile(&BundlePayload {
        tenant_id: "t".into(),
        version: 1,
        issued_at_ms: 0,
        policy,
    })
    .is_err());
    assert!(check_contracts(&Policy::parse_yaml(&policy_text()).expect("valid")).is_ok());
    // Patterns run on a linear-time engine: look-around cannot be compiled.
    let text = policy_text().replace("pattern: \"^[0-9a-f]{8,32}$\"", "pattern: \"^(?=a)a$\"");
    let policy = Policy::parse_yaml(&text).expect("model accepts it");
    assert!(check_contracts(&policy).is_err());
    let _ = Reason::BodyInvalid;
}

#[test]
fn long_reference_chains_are_refused_not_overflowing() {
    let mut schemas = serde_json::Map::new();
    for i in 0..400 {
        schemas.insert(
            format!("S{i}"),
            json!({"$ref": format!("#/components/schemas/S{}", i + 1)}),
        );
    }
    schemas.insert("S400".into(), json!({"type": "object"}));
    let doc = json!({
        "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
        "paths": {"/pets": {"post": {
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}},
            "responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": schemas}
    });
    let policy = json!({"resources": [{"name": "pets", "upstream": "http://127.0.0.1:9",
        "routes": [{"id": "add", "methods": ["POST"], "path": "/pets", "public": true}],
        "api": {"openapi": doc}}]});
    let policy = Policy::parse_json(&policy.to_string()).expect("valid for the model");
    let errors = check_contracts(&policy).expect_err("too deep");
    assert!(
        errors[0].message.contains("too deeply nested"),
        "{errors:?}"
    );
}
