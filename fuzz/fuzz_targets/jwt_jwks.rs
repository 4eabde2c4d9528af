//! Bearer tokens and JWK sets, the two identity inputs the edge reads from the network: a JWK
//! set as fetched from an issuer's `jwks_url` (installed into the `JwksStore`: key decoding,
//! usable-key filtering, size and count limits) and a token in the `Authorization` header
//! (header/payload base64url and JSON with duplicate-member refusal, `crit`, algorithm
//! allowlist, key selection by `kid`, signature, times, audience, issuer, scopes) through
//! `decide`. Never panics; a request without a token is never allowed on the protected route.
//!
//! Input: the JWK set up to the first NUL byte, the `Authorization` header value after it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sase_gateway::{decide, CompiledPolicy, JwksStore, RequestParts, Verdict};
use sase_model::{BundlePayload, Policy};

const JWKS_URL: &str = "https://idp.example/.well-known/jwks.json";

const POLICY: &str = r#"
issuers:
  - id: idp
    issuer: https://idp.example
    audiences: [orders]
    algorithms: [RS256, ES256, EdDSA]
    keys: {jwks_url: "https://idp.example/.well-known/jwks.json", refresh_seconds: 300, max_stale_seconds: 3600}
resources:
  - name: orders
    upstream: http://127.0.0.1:9000
    issuers: [idp]
    routes:
      - id: list
        methods: [GET]
        path: /orders
        scopes: [orders.read]
"#;

fn policy() -> &'static CompiledPolicy {
    static POLICY_COMPILED: OnceLock<CompiledPolicy> = OnceLock::new();
    POLICY_COMPILED.get_or_init(|| {
        CompiledPolicy::compile(&BundlePayload {
            tenant_id: "t".into(),
            version: 1,
            issued_at_ms: 0,
            policy: Policy::parse_yaml(POLICY).expect("fuzz policy"),
        })
        .expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let (jwks, auth) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut store = JwksStore::new();
    let _ = store.install_from("idp", JWKS_URL, jwks, 1_700_000_000_000);
    let auth = String::from_utf8_lossy(auth);
    let authorization = if auth.is_empty() { None } else { Some(auth.as_ref()) };
    let verdict = decide(
        policy(),
        &store,
        &RequestParts {
            method: "GET",
            host: None,
            path: "/orders",
            authorization,
        },
        1_700_000_000_000,
    );
    if authorization.is_none() {
        assert!(
            !matches!(verdict, Verdict::Allow(_)),
            "protected route allowed without a token"
        );
    }
});
