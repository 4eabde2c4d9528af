//! The authorization guards of a route as the gateway decides them, from a policy through
//! `decide` to `Allowed::guards` (unit tests of each check live next to its module): and the
//! response validation of third-party APIs (OWASP API10) over the contract example's document.

use sase_gateway::{decide, CompiledPolicy, GuardRequest, JwksStore, RequestParts, Verdict};
use sase_model::{BundlePayload, Policy, Reason};

const CONTRACT: &str = include_str!("../../../tests/e2e/data/contract-policy.yaml");

fn compile(text: &str) -> CompiledPolicy {
    CompiledPolicy::compile(&BundlePayload {
        tenant_id: "t".into(),
        version: 1,
        issued_at_ms: 0,
        policy: Policy::parse_yaml(text).expect("valid policy"),
    })
    .expect("compiles")
}

fn allowed(policy: &CompiledPolicy, method: &str, path: &str) -> sase_gateway::Allowed {
    match decide(
        policy,
        &JwksStore::new(),
        &RequestParts {
            method,
            host: None,
            path,
            authorization: None,
        },
        0,
    ) {
        Verdict::Allow(allowed) => allowed,
        other => panic!("{method} {path}: {other:?}"),
    }
}

#[test]
fn third_party_responses_are_validated_against_the_document() {
    let text = CONTRACT.replace("UPSTREAM", "http://127.0.0.1:9").replace(
        "    waf: {mode: \"off\"}\n",
        "    waf: {mode: \"off\"}\n    egress: {upstream_networks: [127.0.0.1/32], third_party: true}\n",
    );
    let policy = compile(&text);
    let a = allowed(&policy, "GET", "/users/7");
    assert!(a.guards.as_ref().is_some_and(|g| g.third_party()));
    let api = a.api.expect("api");
    assert_eq!(
        api.validate_response(200, br#"{"id": 7, "name": "Ann", "email": "a@x"}"#),
        Ok(())
    );
    // A wrong type and a missing required property: named by pointer, never by value.
    let err = api
        .validate_response(
            200,
            br#"{"id": "7; DROP TABLE", "name": "Ann", "email": "a@x"}"#,
        )
        .expect_err("wrong type");
    assert_eq!(err, "/body/id does not match the response schema (type)");
    assert!(!err.contains("DROP"));
    assert!(api
        .validate_response(200, br#"{"id": 7, "name": "Ann"}"#)
        .is_err());
    assert_eq!(
        api.validate_response(200, b"<html>"),
        Err("the body is not JSON".into())
    );
    assert_eq!(
        api.validate_response(418, b"{}"),
        Err("status 418 is not declared".into())
    );
    // The guards also check the upstream against the egress allowlist.
    let dests = a
        .guards
        .as_ref()
        .expect("guards")
        .check_request(
            &GuardRequest {
                method: "GET",
                path: "/users/7",
                query: None,
                content_type: None,
                body: b"",
            },
            None,
        )
        .expect("no request-level rule");
    assert_eq!(dests.len(), 1);
    assert!(dests[0].upstream);
}

#[test]
fn ownership_refusal_comes_with_its_reason() {
    let text = r#"
issuers:
  - id: demo
    issuer: https://idp.example
    audiences: [api]
    algorithms: [EdDSA]
    keys:
      jwks: {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}
resources:
  - name: app
    upstream: http://127.0.0.1:9
    issuers: [demo]
    routes:
      - {id: open, methods: [GET], path: /open, public: true}
"#;
    let policy = compile(text);
    assert!(allowed(&policy, "GET", "/open").guards.is_none());
    let err = Policy::parse_yaml(&text.replace(
        "public: true}",
        "public: true, owner: [{path: x, claim: sub}]}",
    ))
    .expect_err("public route with an owner rule");
    assert_eq!(err.0[0].path, "resources[0].routes[0].owner");
    assert_eq!(Reason::ObjectNotOwned.http_status(), 403);
    assert_eq!(Reason::EgressRefused.as_str(), "egress_refused");
    assert_eq!(Reason::GraphqlRefused.http_status(), 400);
}

#[test]
fn certificates_that_do_not_parse_are_refused_before_publishing() {
    let text = r#"
resources:
  - name: app
    upstream: https://127.0.0.1:9
    client_certificates:
      ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
      mode: alternative
    upstream_tls:
      ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    routes:
      - {id: r, methods: [GET], path: /r}
"#;
    let policy = Policy::parse_yaml(text).expect("the model only checks the PEM's shape");
    let errors = sase_gateway::check_contracts(&policy).expect_err("the CAs do not parse");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "resources[0].client_certificates.ca_pem",
            "resources[0].upstream_tls.ca_pem"
        ]
    );
}
