//! End-to-end decisions over a realistic policy, with real RSA and Ed25519 tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sase_gateway::{
    decide, CompiledPolicy, JwksStore, KeyError, RequestParts, Verdict, MAX_TOKEN_BYTES,
};
use sase_model::{BundlePayload, Policy, Reason};
use serde_json::{json, Value};

/// Test-only RSA key (generated with `openssl genrsa 2048` for these tests).
const RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC5hFw9YkKz9Sbz
uPBaE/cvCKlzyWyg/VZWAWphiQmNPrNz/k6DTKtiltl93gxanln+smRHSXL4vh1E
VhGiTF7IHTrUhu52oel439+1DW7imwpn0j43bdB6880+Zu4ZtiB/xm2AIG50ZYEI
frZEHJ6w3AIKapX6AiMaoZIrlRqcbvhnqdxxGoFF3d1Z3Kf6Re7vlIokdcyDno7f
1CuvB51wtYKTq1GTDOY4Ggls7K4jYHsU9+Ik/Oz1Z+UBWnfsEQVPS2jddNDzLW3K
otCu7XnUugejxUQEEXuFzPzRzQefrpZYY9GQAgmpqToO7lVZvWel3YAsKXdEpNNe
xZPOFMbXAgMBAAECggEAWuYTShJsy39JzC6oOgLBYV7VpIGjw8gNtwtvhAXg07/O
rv2Cm8wDx8VRIN6dYANp5iWjg9hlyKJidbrUXhkcceH8kujgS+lum8bZ9nz0AX1l
HlTCHmekuLHftX06mgeGqgTgX2DEriyUCkUH6py5VsAeEduCy+KjL6fOFqOyy8Wu
0cTBQfuGq+YeGa+0cbR0PWhnLVLyDH3NO17OBJvViK425J6uQ96iPwYoAiUh6VX0
IIUZFNqDqqXfVU26huQNCGhChO0pqvJEqUZ+mHhnivfzy6VO4pz3Z8+lq8yDw0r8
Rhb6vjaqI8Kmp6CQ8xYPeo8J3IqpG2rHaMEemGB4HQKBgQD1DeZ4WDmub5ljfkr1
3ZNbEI3jFkotyi2xOuQ0lXlHyuWhqBfcmlD/d2ZIuvlGT1f9z0Z/VMWQJl7Q00y/
jbfrpzoZUkUjfNTjX0v0Hcz2ENJ6oUx5Lle3LOFiuiODCEr9p4C7W6TPU193hNJF
WQDRU1eQ5tR4tkskAYLCtmen9QKBgQDBzay94OIP4YGKC/5zpoSmbHS/jmDxd/RK
QqzqbsKim4CAqTPjCB8F6CxkYN09BYu0VipsZnvhL6mXeRd1qPepDJlXYP/xctKZ
OjOGlzvV3Tx8GYvu8heNUyjzyc/cHrMYTDhEbAXho4NBmj9kC3mk2Md8pD/FaBSh
ikq365PQGwKBgQCMOBP0MKdwxLLEV3OVE+BJb0OA+TQg11sl2kjSPeVTyylyQrjE
phhK1YtVeodAUA5NUNlJ6rvRK+N9Iir8QJ9I3DtGWejt0XQPVmwjlxm8gwus17bm
cDoIukmNMG05gPlIAxyKGHpJl688uGeI/tCU9ldYtnxFRingxGyJ9c2CMQKBgQCR
8RhMRLT30JGEK1QKMzNhP/sK5WULcZF8+ojMYWwgl4lFWiXAqbTy9cu4K1lvQmXZ
/6kiyGoxQXssnfuUlxEpNFuk+V7Dq/v7d2Cl0e01N8z8hyBhZ91kh2Mncqoc0OF9
Qqh8nfwv1rpZBJcH97w67yQKMIX1WlNu8n0h0z0UUQKBgDIjUll0uZupX0qtadto
A2MTDE7Sr+Ckey8j8b+1W8PPb2t0q6X1cK9yxd19yFiUOjRQn9SHhPdqE93Z4rCI
2pl4A1kou/QBAI18iBlFpqQh6k3gVlps89p0VEAMZxekaierAwNsgLTKOF358JTZ
k63dSMGTd1oPPD3nYL2oicSe
-----END PRIVATE KEY-----
";
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuYRcPWJCs/Um87jwWhP3
Lwipc8lsoP1WVgFqYYkJjT6zc/5Og0yrYpbZfd4MWp5Z/rJkR0ly+L4dRFYRokxe
yB061IbudqHpeN/ftQ1u4psKZ9I+N23QevPNPmbuGbYgf8ZtgCBudGWBCH62RBye
sNwCCmqV+gIjGqGSK5UanG74Z6nccRqBRd3dWdyn+kXu75SKJHXMg56O39Qrrwed
cLWCk6tRkwzmOBoJbOyuI2B7FPfiJPzs9WflAVp37BEFT0to3XTQ8y1tyqLQru15
1LoHo8VEBBF7hcz80c0Hn66WWGPRkAIJqak6Du5VWb1npd2ALCl3RKTTXsWTzhTG
1wIDAQAB
-----END PUBLIC KEY-----
";
/// Public modulus and exponent of `RSA_PRIVATE_PEM`, base64url.
const RSA_N: &str = "uYRcPWJCs_Um87jwWhP3Lwipc8lsoP1WVgFqYYkJjT6zc_5Og0yrYpbZfd4MWp5Z_rJkR0ly-L4dRFYRokxeyB061IbudqHpeN_ftQ1u4psKZ9I-N23QevPNPmbuGbYgf8ZtgCBudGWBCH62RByesNwCCmqV-gIjGqGSK5UanG74Z6nccRqBRd3dWdyn-kXu75SKJHXMg56O39QrrwedcLWCk6tRkwzmOBoJbOyuI2B7FPfiJPzs9WflAVp37BEFT0to3XTQ8y1tyqLQru151LoHo8VEBBF7hcz80c0Hn66WWGPRkAIJqak6Du5VWb1npd2ALCl3RKTTXsWTzhTG1w";
const RSA_E: &str = "AQAB";

const NOW_MS: i64 = 1_700_000_000_123;
const NOW: i64 = 1_700_000_000;
const HOST: &str = "api.example.com";

fn ed_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn ed_jwk(seed: u8, kid: &str) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(ed_key(seed).verifying_key().as_bytes()),
    })
}

fn rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "n": RSA_N, "e": RSA_E, "kid": kid, "alg": "RS256", "use": "sig"})
}

fn policy() -> CompiledPolicy {
    let policy = json!({
        "issuers": [
            {"id": "rsa", "issuer": "https://rsa.example", "audiences": ["orders"],
             "algorithms": ["RS256"], "keys": {"jwks": {"keys": [rsa_jwk("rsa-1")]}}},
            {"id": "ed", "issuer": "https://ed.example", "audiences": ["orders", "other"],
             "algorithms": ["EdDSA"], "leeway_seconds": 0,
             "keys": {"jwks": {"keys": [ed_jwk(1, "ed-1")]}}},
            {"id": "remote", "issuer": "https://remote.example", "audiences": ["orders"],
             "algorithms": ["EdDSA"], "keys": {"jwks_url": "https://remote.example/jwks.json"}},
            {"id": "mixed", "issuer": "https://mixed.example", "audiences": ["orders"],
             "algorithms": ["EdDSA"], "keys": {"jwks": {"keys": [rsa_jwk("rsa-1")]}}},
        ],
        "groups": {"admins": {"members": ["alice"]}},
        "resources": [
            {"name": "orders", "hosts": [HOST], "upstream": "http://127.0.0.1:9000",
             "issuers": ["rsa", "ed", "remote", "mixed"], "max_body_bytes": 4096,
             "routes": [
                {"id": "list", "methods": ["GET"], "path": "/orders", "scopes": ["orders:read"]},
                {"id": "one", "methods": ["GET", "DELETE"], "path": "/orders/{id}",
                 "scopes": ["orders:read"]},
                {"id": "admin", "methods": ["POST"], "path": "/admin", "groups": ["admins"]},
                {"id": "health", "methods": ["GET"], "path": "/health", "public": true},
             ]},
            {"name": "fallback", "upstream": "http://127.0.0.1:9001", "issuers": ["rsa"],
             "routes": [
                {"id": "status", "methods": ["GET"], "path": "/status", "public": true},
                {"id": "health", "methods": ["GET"], "path": "/health"},
             ]},
        ],
    });
    let policy = Policy::parse_json(&policy.to_string()).expect("valid policy");
    CompiledPolicy::compile(&BundlePayload {
        tenant_id: "t1".into(),
        version: 7,
        issued_at_ms: 0,
        policy,
    })
    .expect("compiles")
}

fn claims(iss: &str) -> Value {
    json!({"iss": iss, "sub": "alice", "aud": "orders", "exp": NOW + 300, "iat": NOW,
           "scope": "orders:read profile"})
}

fn rsa_token(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("rsa key");
    encode(&header, claims, &key).expect("sign")
}

fn ed_token(seed: u8, claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_string);
    let der = ed_key(seed).to_pkcs8_der().expect("pkcs8");
    encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign")
}

fn run(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> Verdict {
    let req = RequestParts {
        method,
        host: Some(HOST),
        path,
        authorization: auth,
    };
    decide(policy, jwks, &req, NOW_MS)
}

fn get_orders(token: &str) -> Verdict {
    let auth = format!("Bearer {token}");
    run(&policy(), &JwksStore::new(), "GET", "/orders", Some(&auth))
}

#[track_caller]
fn assert_denied(verdict: Verdict, reason: Reason) {
    match verdict {
        Verdict::Deny(denied) => assert_eq!(denied.reason, reason, "{denied:?}"),
        other => panic!("expected {reason}, got {other:?}"),
    }
}

#[track_caller]
fn assert_allowed(verdict: Verdict) -> sase_gateway::Allowed {
    match verdict {
        Verdict::Allow(allowed) => allowed,
        other => panic!("expected Allow, got {other:?}"),
    }
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[test]
fn compiled_policy_is_shareable_and_describes_itself() {
    fn shareable<T: Send + Sync>() {}
    shareable::<CompiledPolicy>();
    shareable::<JwksStore>();
    let policy = policy();
    assert_eq!(policy.version(), 7);
    assert_eq!(policy.tenant_id(), "t1");
    assert_eq!(
        policy.jwks_urls(),
        vec![(
            "remote".to_string(),
            "https://remote.example/jwks.json".to_string()
        )]
    );
}

#[test]
fn valid_token_with_scopes_is_allowed() {
    let allowed = assert_allowed(get_orders(&rsa_token(
        &claims("https://rsa.example"),
        Some("rsa-1"),
    )));
    assert_eq!(allowed.resource, "orders");
    assert_eq!(allowed.route, "list");
    assert_eq!(allowed.upstream, "http://127.0.0.1:9000");
    assert_eq!(
        allowed.identity.as_deref(),
        Some("https://rsa.example|alice")
    );
    assert_eq!(allowed.subject.as_deref(), Some("alice"));
    assert_eq!(allowed.max_body_bytes, 4096);
}

#[test]
fn valid_eddsa_token_without_kid_uses_the_single_fitting_key() {
    let mut c = claims("https://ed.example");
    c["scope"] = Value::Null;
    c["scp"] = json!(["orders:read"]);
    c["aud"] = json!(["nobody", "other"]);
    assert_allowed(get_orders(&ed_token(1, &c, None)));
}

#[test]
fn alg_none_is_refused() {
    let header = b64_json(&json!({"alg": "none", "typ": "JWT"}));
    let payload = b64_json(&claims("https://rsa.example"));
    assert_denied(
        get_orders(&format!("{header}.{payload}.")),
        Reason::TokenAlgorithmNotAllowed,
    );
    let header = b64_json(&json!({"alg": "None", "kid": "rsa-1"}));
    assert_denied(
        get_orders(&format!("{header}.{payload}.")),
        Reason::TokenAlgorithmNotAllowed,
    );
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let token = encode(
        &Header {
            kid: Some("rsa-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("https://rsa.example"),
        &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
    )
    .expect("sign");
    assert_denied(get_orders(&token), Reason::TokenAlgorithmNotAllowed);
}

#[test]
fn algorithm_outside_the_issuer_allowlist_is_refused() {
    // A valid RS256 signature by a key the issuer holds, but the issuer only allows EdDSA.
    let token = rsa_token(&claims("https://mixed.example"), Some("rsa-1"));
    assert_denied(get_orders(&token), Reason::TokenAlgorithmNotAllowed);
}

#[test]
fn expired_token_is_refused() {
    let mut c = claims("https://rsa.example");
    c["exp"] = json!(NOW - 3600);
    assert_denied(
        get_orders(&rsa_token(&c, Some("rsa-1"))),
        Reason::TokenExpired,
    );
}

#[test]
fn token_expired_by_less_than_the_leeway_is_allowed() {
    let mut c = claims("https://rsa.example");
    c["exp"] = json!(NOW - 10); // default leeway is 30 s
    assert_allowed(get_orders(&rsa_token(&c, Some("rsa-1"))));
    c["exp"] = json!(NOW - 30);
    assert_denied(
        get_orders(&rsa_token(&c, Some("rsa-1"))),
        Reason::TokenExpired,
    );
}

#[test]
fn token_not_yet_valid_is_refused() {
    let mut c = claims("https://rsa.example");
    c["nbf"] = json!(NOW + 3600);
    assert_denied(
        get_orders(&rsa_token(&c, Some("rsa-1"))),
        Reason::TokenNotYetValid,
    );
    c["nbf"] = json!(NOW + 10);
    assert_allowed(get_orders(&rsa_token(&c, Some("rsa-1"))));
}

#[test]
fn wrong_audience_is_refused() {
    let mut c = claims("https://rsa.example");
    c["aud"] = json!("billing");
    assert_denied(
        get_orders(&rsa_token(&c, Some("rsa-1"))),
        Reason::TokenBadAudience,
    );
    c.as_object_mut().expect("object").remove("aud");
    assert_denied(
        get_orders(&rsa_token(&c, Some("rsa-1"))),
        Reason::TokenBadAudience,
    );
}

#[test]
fn untrusted_issuer_is_refused() {
    let c = claims("https://evil.example");
    assert_denied(
        get_orders(&rsa_token(&c, Some("rsa-1"))),
        Reason::TokenBadIssuer,
    );
    // An issuer trusted by another resource is not trusted by this one.
    let auth = format!(
        "Bearer {}",
        ed_token(1, &claims("https://ed.example"), None)
    );
    let req = RequestParts {
        method: "GET",
        host: Some("other.example"),
        path: "/health",
        authorization: Some(&auth),
    };
    assert_denied(
        decide(&policy(), &JwksStore::new(), &req, NOW_MS),
        Reason::TokenBadIssuer,
    );
}

#[test]
fn missing_subject_or_expiry_is_invalid() {
    for claim in ["sub", "exp"] {
        let mut c = claims("https://rsa.example");
        c.as_object_mut().expect("object").remove(claim);
        assert_denied(
            get_orders(&rsa_token(&c, Some("rsa-1"))),
            Reason::TokenInvalid,
        );
    }
}

#[test]
fn unknown_kid_of_static_issuer_is_refused() {
    let token = rsa_token(&claims("https://rsa.example"), Some("rsa-2"));
    assert_denied(get_orders(&token), Reason::TokenUnknownKey);
}

#[test]
fn unknown_kid_of_jwks_url_issuer_asks_for_keys_then_allows() {
    let policy = policy();
    let mut jwks = JwksStore::new();
    let token = ed_token(9, &claims("https://remote.example"), Some("r-2"));
    let auth = format!("Bearer {token}");
    let need = Verdict::NeedKeys {
        issuer_id: "remote".into(),
    };

    // Nothing fetched yet.
    assert_eq!(run(&policy, &jwks, "GET", "/orders", Some(&auth)), need);
    assert!(jwks.may_refetch("remote", NOW_MS));

    // A set without the token's kid: still unknown.
    let old = json!({"keys": [ed_jwk(8, "r-1")]}).to_string();
    assert_eq!(jwks.install("remote", old.as_bytes(), NOW_MS), Ok(1));
    assert_eq!(run(&policy, &jwks, "GET", "/orders", Some(&auth)), need);
    assert!(!jwks.may_refetch("remote", NOW_MS + 1_000));

    // Rotated set containing the new key.
    let rotated = json!({"keys": [ed_jwk(8, "r-1"), ed_jwk(9, "r-2")]}).to_string();
    assert_eq!(
        jwks.install("remote", rotated.as_bytes(), NOW_MS + 10_000),
        Ok(2)
    );
    let allowed = assert_allowed(run(&policy, &jwks, "GET", "/orders", Some(&auth)));
    assert_eq!(
        allowed.identity.as_deref(),
        Some("https://remote.example|alice")
    );

    // A token naming a known kid but signed by another key does not verify.
    let forged = ed_token(8, &claims("https://remote.example"), Some("r-2"));
    assert_denied(
        run(
            &policy,
            &jwks,
            "GET",
            "/orders",
            Some(&format!("Bearer {forged}")),
        ),
        Reason::TokenInvalid,
    );
}

#[test]
fn installing_garbage_keys_is_an_error() {
    let mut jwks = JwksStore::new();
    assert!(matches!(
        jwks.install("remote", b"<html>", 0),
        Err(KeyError::NotJson(_))
    ));
    assert_eq!(
        jwks.install("remote", br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, 0),
        Err(KeyError::NoUsableKey { skipped: 1 })
    );
}

#[test]
fn may_refetch_is_rate_limited_with_simulated_time() {
    let mut jwks = JwksStore::new();
    assert!(jwks.may_refetch("remote", NOW_MS));
    jwks.note_fetch_attempt("remote", NOW_MS);
    assert!(!jwks.may_refetch("remote", NOW_MS + 1));
    assert!(!jwks.may_refetch("remote", NOW_MS + 9_999));
    assert!(jwks.may_refetch("remote", NOW_MS + 10_000));
    assert!(jwks.may_refetch("ed", NOW_MS + 1));
}

#[test]
fn one_changed_signature_byte_is_invalid() {
    let token = rsa_token(&claims("https://rsa.example"), Some("rsa-1"));
    let (message, signature) = token.rsplit_once('.').expect("three parts");
    let bytes = URL_SAFE_NO_PAD.decode(signature).expect("b64");
    for index in [0, bytes.len() / 2, bytes.len() - 1] {
        let mut changed = bytes.clone();
        changed[index] ^= 0x01;
        let tampered = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&changed));
        assert_denied(get_orders(&tampered), Reason::TokenInvalid);
    }
    assert_denied(get_orders(&format!("{message}.")), Reason::TokenInvalid);
}

#[test]
fn changed_claims_are_invalid() {
    let token = rsa_token(&claims("https://rsa.example"), Some("rsa-1"));
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims("https://rsa.example");
    c["sub"] = json!("mallory");
    let tampered = format!("{}.{}.{}", parts[0], b64_json(&c), parts[2]);
    assert_denied(get_orders(&tampered), Reason::TokenInvalid);
}

#[test]
fn missing_scope_is_forbidden() {
    let mut c = claims("https://rsa.example");
    c["scope"] = json!("profile orders:write");
    match get_orders(&rsa_token(&c, Some("rsa-1"))) {
        Verdict::Deny(denied) => {
            assert_eq!(denied.reason, Reason::ScopeMissing);
            assert_eq!(denied.resource, "orders");
            assert_eq!(denied.route, "list");
            assert_eq!(
                denied.identity.as_deref(),
                Some("https://rsa.example|alice")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn groups_come_from_the_policy_or_the_token() {
    let policy = policy();
    let jwks = JwksStore::new();
    let post = |c: &Value| {
        let auth = format!("Bearer {}", rsa_token(c, Some("rsa-1")));
        run(&policy, &jwks, "POST", "/admin", Some(&auth))
    };
    let mut c = claims("https://rsa.example");
    assert_allowed(post(&c));
    c["sub"] = json!("bob");
    assert_denied(post(&c), Reason::GroupMissing);
    c["groups"] = json!(["staff", "admins"]);
    assert_allowed(post(&c));
    c["groups"] = json!("admins");
    assert_denied(post(&c), Reason::GroupMissing);
}

#[test]
fn unknown_route_and_wrong_method_are_not_found() {
    let policy = policy();
    let jwks = JwksStore::new();
    let auth = format!(
        "Bearer {}",
        rsa_token(&claims("https://rsa.example"), Some("rsa-1"))
    );
    for (method, path) in [
        ("GET", "/nope"),
        ("DELETE", "/orders"),
        ("get", "/orders"),
        ("BREW", "/orders"),
        ("GET", "/orders/"),
        ("GET", "/orders/.."),
        ("GET", "/orders/%2e%2e"),
        ("GET", "/orders/a%2Fb"),
        ("GET", "/orders/a\0b"),
        ("GET", ""),
        ("GET", "*"),
    ] {
        let verdict = run(&policy, &jwks, method, path, Some(&auth));
        match verdict {
            Verdict::Deny(denied) => {
                assert_eq!(denied.reason, Reason::RouteNotFound, "{method} {path:?}");
                assert_eq!((denied.resource.as_str(), denied.route.as_str()), ("", ""));
            }
            other => panic!("{method} {path:?}: {other:?}"),
        }
    }
    assert_allowed(run(&policy, &jwks, "DELETE", "/orders/42", Some(&auth)));
}

#[test]
fn host_selects_the_resource() {
    let policy = policy();
    let jwks = JwksStore::new();
    let at = |host: Option<&str>, path: &str| {
        decide(
            &policy,
            &jwks,
            &RequestParts {
                method: "GET",
                host,
                path,
                authorization: None,
            },
            NOW_MS,
        )
    };
    // Host-specific resource first, case-insensitive, port stripped.
    let allowed = assert_allowed(at(Some("API.Example.COM:8443"), "/health"));
    assert_eq!(
        (allowed.resource.as_str(), allowed.identity),
        ("orders", None)
    );
    // Other hosts only reach host-less resources.
    assert_denied(at(Some("other.example"), "/health"), Reason::TokenMissing);
    assert_denied(at(Some("other.example"), "/orders"), Reason::RouteNotFound);
    assert_eq!(assert_allowed(at(None, "/status")).resource, "fallback");
    // Host-less resources also serve named hosts.
    assert_eq!(
        assert_allowed(at(Some(HOST), "/status")).resource,
        "fallback"
    );
}

#[test]
fn public_route_needs_no_token() {
    let allowed = assert_allowed(run(&policy(), &JwksStore::new(), "GET", "/health", None));
    assert_eq!(allowed.route, "health");
    assert_eq!(allowed.identity, None);
    assert_eq!(allowed.subject, None);
}

#[test]
fn missing_token_is_refused() {
    let verdict = run(&policy(), &JwksStore::new(), "GET", "/orders", None);
    match verdict {
        Verdict::Deny(denied) => {
            assert_eq!(denied.reason, Reason::TokenMissing);
            assert_eq!(
                (denied.resource.as_str(), denied.route.as_str()),
                ("orders", "list")
            );
            assert_eq!(denied.identity, None);
        }
        other => panic!("{other:?}"),
    }
    let token = rsa_token(&claims("https://rsa.example"), Some("rsa-1"));
    let basic = format!("Basic {token}");
    assert_denied(
        run(&policy(), &JwksStore::new(), "GET", "/orders", Some(&basic)),
        Reason::TokenMissing,
    );
    let lower = format!("bearer {token}");
    assert_allowed(run(
        &policy(),
        &JwksStore::new(),
        "GET",
        "/orders",
        Some(&lower),
    ));
}

#[test]
fn garbage_authorization_values_never_panic_and_are_401() {
    let policy = policy();
    let jwks = JwksStore::new();
    let valid = rsa_token(&claims("https://rsa.example"), Some("rsa-1"));
    let parts: Vec<&str> = valid.split('.').collect();
    let header_json = |h: Value| b64_json(&h);

    let mut values: Vec<String> = vec![
        "".into(),
        "Bearer".into(),
        "Bearer ".into(),
        "Bearer a.b".into(),
        "Bearer ....".into(),
        "Bearer ..".into(),
        "Bearer a.b.c".into(),
        "Bearer a.b.c.d.e".into(),
        "Bearer !!!.@@@.###".into(),
        "Bearer \u{0}\u{1}\u{7f}".into(),
        "Bearer ü.ö.ä".into(),
        format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1)),
        format!("Bearer {}", ".".repeat(100_000)),
        format!("Bearer {}.{}", parts[0], parts[1]),
        format!("Bearer {}.{}.{}.", parts[0], parts[1], parts[2]),
        format!("Bearer {}.{}.{}", parts[1], parts[0], parts[2]),
        format!("Bearer {}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("Bearer {} {}", valid, valid),
        format!(
            "Bearer {}.{}.{}",
            header_json(json!([1, 2])),
            parts[1],
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            header_json(json!({"alg": 7})),
            parts[1],
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            header_json(json!({"typ": "JWT"})),
            parts[1],
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            header_json(json!({"alg": "RS256", "kid": 5})),
            parts[1],
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            header_json(json!({"alg": "RS256", "crit": ["exp"]})),
            parts[1],
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            header_json(json!({"alg": "HS512"})),
            parts[1],
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            parts[0],
            b64_json(&json!("just a string")),
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            parts[0],
            b64_json(&json!({"iss": 42})),
            parts[2]
        ),
        format!(
            "Bearer {}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode("not json"),
            parts[2]
        ),
    ];
    // Deterministic pseudo-random bytes.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1, 7, 64, 300, 5000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        values.push(format!("Bearer {text}"));
        values.push(text);
        values.push(format!(
            "Bearer {}",
            URL_SAFE_NO_PAD.encode(&bytes).replacen('A', ".", 2)
        ));
    }

    for value in &values {
        let verdict = run(&policy, &jwks, "GET", "/orders", Some(value));
        match verdict {
            Verdict::Deny(denied) => assert_eq!(
                denied.reason.http_status(),
                401,
                "{:?} -> {:?}",
                value.chars().take(80).collect::<String>(),
                denied.reason
            ),
            other => panic!(
                "{:?} -> {other:?}",
                value.chars().take(80).collect::<String>()
            ),
        }
    }
}
