//! OpenAPI import: an arbitrary document put in a resource's `api.openapi` block, as an admin
//! imports one into a policy. The model's checks (`Policy::parse_json`: version, operations
//! mapped to routes, local `$ref`s), the control plane's contract check
//! (`sase_gateway::check_contracts`: every schema compiled with `jsonschema`) and, when both
//! accept, the edge's compilation and the request/response checks of the compiled operation
//! must never panic. What the control plane accepts the edge must compile (asserted).
//!
//! Input: the OpenAPI document (JSON) up to the first NUL byte; the rest is the request body
//! checked against the operation and the response body scrubbed and validated by it.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sase_gateway::{
    check_contracts, decide, CompiledPolicy, ContractRequest, JwksStore, RequestParts, Verdict,
};
use sase_model::{BundlePayload, Policy};
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let (doc, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(doc) = serde_json::from_slice::<Value>(doc) else {
        return;
    };
    let policy = json!({
        "resources": [{
            "name": "app",
            "upstream": "http://127.0.0.1:9000",
            "routes": [
                {"id": "list", "methods": ["GET", "POST"], "path": "/items", "public": true},
                {"id": "one", "methods": ["GET", "PUT", "DELETE"], "path": "/items/{id}", "public": true}
            ],
            "api": {"openapi": doc}
        }]
    });
    let Ok(policy) = Policy::parse_json(&policy.to_string()) else {
        return;
    };
    if check_contracts(&policy).is_err() {
        return;
    }
    let compiled = CompiledPolicy::compile(&BundlePayload {
        tenant_id: "t".into(),
        version: 1,
        issued_at_ms: 0,
        policy,
    })
    .expect("a policy whose contracts the control plane accepts compiles on the edge");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (method, path, query) in [
        ("POST", "/items", Some("limit=10&q=x")),
        ("GET", "/items", None),
        ("PUT", "/items/42", Some("force=true")),
        ("GET", "/items/abc", None),
    ] {
        let verdict = decide(
            &compiled,
            &JwksStore::new(),
            &RequestParts {
                method,
                host: None,
                path,
                authorization: None,
            },
            0,
        );
        let Verdict::Allow(allowed) = verdict else {
            continue;
        };
        let Some(api) = allowed.api.as_ref() else {
            continue;
        };
        let _ = api.check_request(&ContractRequest {
            path,
            query,
            headers: &headers,
            body,
        });
        for status in [200, 201, 404, 500] {
            let _ = api.scrub_response(status, body);
            let _ = api.validate_response(status, body);
        }
    }
});
