//! Identity (OWASP API2) checks with simulated time: `crit` refusal, per-issuer size caps,
//! duplicate claims, header key injection, the ES256 "psychic signature", the cache of verified
//! tokens (expiry at `exp`, invalidation on policy and key change) and JWKS rotation (refresh
//! schedule, outage allowance, URL change).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sase_gateway::{
    decide, decide_cached, CompiledPolicy, JwksStore, RequestParts, TokenCache, Verdict,
    REFETCH_INTERVAL_MS,
};
use sase_model::{BundlePayload, Policy, Reason};
use serde_json::{json, Value};

/// Test-only P-256 key (generated with openssl for these tests).
const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBtQb1MgWk8ud+qik
8JZk243fD+bytTvZf8SlzqP+ApyhRANCAAQbPlKJNSE74dIn4fiDKsWpqomx7EDh
ktcmllniUwp3J/QRmUDd3vHHJELuiyrboR65ZznmoO22RiRFSxnKnlkR
-----END PRIVATE KEY-----
";
const EC_X: &str = "Gz5SiTUhO-HSJ-H4gyrFqaqJsexA4ZLXJpZZ4lMKdyc";
const EC_Y: &str = "9BGZQN3e8cckQu6LKtuhHrlnOeag7bZGJEVLGcqeWRE";

const NOW: i64 = 1_700_000_000;
const NOW_MS: i64 = NOW * 1000;
const JWKS_URL: &str = "https://idp.example/jwks.json";

fn ed_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn ed_jwks(seeds: &[(u8, &str)]) -> String {
    let keys: Vec<Value> = seeds
        .iter()
        .map(|(seed, kid)| {
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                   "x": URL_SAFE_NO_PAD.encode(ed_key(*seed).verifying_key().as_bytes())})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn compile(policy: Value, version: u64) -> CompiledPolicy {
    let policy = Policy::parse_json(&policy.to_string()).expect("valid policy");
    CompiledPolicy::compile(&BundlePayload {
        tenant_id: "t".into(),
        version,
        issued_at_ms: 0,
        policy,
    })
    .expect("compiles")
}

fn policy_with(remote: Value) -> Value {
    json!({
        "issuers": [
            {"id": "remote", "issuer": "https://idp.example", "audiences": ["api"],
             "algorithms": ["EdDSA"], "leeway_seconds": 0, "keys": remote},
            {"id": "ec", "issuer": "https://ec.example", "audiences": ["api"],
             "algorithms": ["ES256"], "leeway_seconds": 0, "max_token_bytes": 600,
             "keys": {"jwks": {"keys": [
                {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "ec-1"}]}}},
        ],
        "resources": [
            {"name": "api", "upstream": "http://127.0.0.1:9", "issuers": ["remote", "ec"],
             "routes": [{"id": "get", "methods": ["GET"], "path": "/x"}]},
        ],
    })
}

fn remote_policy(version: u64) -> CompiledPolicy {
    compile(
        policy_with(json!({"jwks_url": JWKS_URL, "refresh_seconds": 60, "max_stale_seconds": 600})),
        version,
    )
}

fn claims(iss: &str, exp: i64) -> Value {
    json!({"iss": iss, "sub": "alice", "aud": "api", "exp": exp, "iat": NOW})
}

fn ed_token(seed: u8, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    let der = ed_key(seed).to_pkcs8_der().expect("pkcs8");
    encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign")
}

fn ec_token(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("ec key");
    encode(&header, claims, &key).expect("sign")
}

fn b64(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(value)
}

/// Signs `header.payload` (given as raw JSON text) with Ed25519 seed `seed`.
fn ed_raw(seed: u8, header: &str, payload: &str) -> String {
    use ed25519_dalek::Signer as _;
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = ed_key(seed).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn verdict(
    policy: &CompiledPolicy,
    jwks: &JwksStore,
    cache: Option<&TokenCache>,
    token: &str,
    now_ms: i64,
) -> Result<String, Reason> {
    let auth = format!("Bearer {token}");
    let req = RequestParts {
        method: "GET",
        host: None,
        path: "/x",
        authorization: Some(&auth),
    };
    let verdict = match cache {
        Some(cache) => decide_cached(policy, jwks, cache, &req, now_ms),
        None => decide(policy, jwks, &req, now_ms),
    };
    match verdict {
        Verdict::Allow(allowed) => Ok(allowed.subject.unwrap_or_default()),
        Verdict::Deny(denied) => Err(denied.reason),
        Verdict::NeedKeys { .. } => Err(Reason::TokenUnknownKey),
    }
}

fn store_with(seeds: &[(u8, &str)], at_ms: i64) -> JwksStore {
    let mut store = JwksStore::new();
    store
        .install_from("remote", JWKS_URL, ed_jwks(seeds).as_bytes(), at_ms)
        .expect("install");
    store
}

#[test]
fn crit_header_is_refused_even_when_signed() {
    let policy = remote_policy(1);
    let jwks = store_with(&[(1, "k1")], NOW_MS);
    let payload = claims("https://idp.example", NOW + 60).to_string();
    let good = ed_raw(1, r#"{"alg":"EdDSA","kid":"k1"}"#, &payload);
    assert_eq!(
        verdict(&policy, &jwks, None, &good, NOW_MS),
        Ok("alice".into())
    );
    for header in [
        r#"{"alg":"EdDSA","kid":"k1","crit":["exp"],"exp":1}"#,
        r#"{"alg":"EdDSA","kid":"k1","crit":[]}"#,
        r#"{"alg":"EdDSA","kid":"k1","crit":"b64","b64":false}"#,
    ] {
        let token = ed_raw(1, header, &payload);
        assert_eq!(
            verdict(&policy, &jwks, None, &token, NOW_MS),
            Err(Reason::TokenCritUnsupported),
            "{header}"
        );
    }
}

#[test]
fn duplicate_claims_and_header_members_are_refused() {
    let policy = remote_policy(1);
    let jwks = store_with(&[(1, "k1")], NOW_MS);
    let exp = NOW + 60;
    let dup_sub = format!(
        r#"{{"iss":"https://idp.example","sub":"alice","aud":"api","exp":{exp},"sub":"admin"}}"#
    );
    let token = ed_raw(1, r#"{"alg":"EdDSA","kid":"k1"}"#, &dup_sub);
    assert_eq!(
        verdict(&policy, &jwks, None, &token, NOW_MS),
        Err(Reason::TokenInvalid)
    );
    let dup_exp =
        format!(r#"{{"iss":"https://idp.example","sub":"alice","aud":"api","exp":1,"exp":{exp}}}"#);
    let token = ed_raw(1, r#"{"alg":"EdDSA","kid":"k1"}"#, &dup_exp);
    assert_eq!(
        verdict(&policy, &jwks, None, &token, NOW_MS),
        Err(Reason::TokenInvalid)
    );
    let payload = claims("https://idp.example", exp).to_string();
    let token = ed_raw(1, r#"{"alg":"EdDSA","kid":"k1","alg":"EdDSA"}"#, &payload);
    assert_eq!(
        verdict(&policy, &jwks, None, &token, NOW_MS),
        Err(Reason::TokenInvalid)
    );
}

#[test]
fn token_size_cap_is_per_issuer() {
    let policy = remote_policy(1);
    let jwks = store_with(&[(1, "k1")], NOW_MS);
    // The EC issuer allows 600 bytes: a small token passes, one padded with a long claim not.
    let small = ec_token(&claims("https://ec.example", NOW + 60));
    assert!(small.len() < 600);
    assert_eq!(
        verdict(&policy, &jwks, None, &small, NOW_MS),
        Ok("alice".into())
    );
    let mut big = claims("https://ec.example", NOW + 60);
    big["pad"] = json!("p".repeat(600));
    let big = ec_token(&big);
    assert_eq!(
        verdict(&policy, &jwks, None, &big, NOW_MS),
        Err(Reason::TokenTooLarge)
    );
    // The same size is fine for the remote issuer (default 8 KiB)...
    let mut mid = claims("https://idp.example", NOW + 60);
    mid["pad"] = json!("p".repeat(600));
    let mid = ed_token(1, "k1", &mid);
    assert_eq!(
        verdict(&policy, &jwks, None, &mid, NOW_MS),
        Ok("alice".into())
    );
    // ...but nothing beyond the largest cap of the resource's issuers is even decoded.
    let mut huge = claims("https://idp.example", NOW + 60);
    huge["pad"] = json!("p".repeat(9000));
    let huge = ed_token(1, "k1", &huge);
    assert_eq!(
        verdict(&policy, &jwks, None, &huge, NOW_MS),
        Err(Reason::TokenTooLarge)
    );
    assert_eq!(
        verdict(&policy, &jwks, None, &"a".repeat(70_000), NOW_MS),
        Err(Reason::TokenTooLarge)
    );
}

#[test]
fn es256_psychic_signature_is_refused() {
    let policy = remote_policy(1);
    let jwks = JwksStore::new();
    let good = ec_token(&claims("https://ec.example", NOW + 60));
    assert_eq!(
        verdict(&policy, &jwks, None, &good, NOW_MS),
        Ok("alice".into())
    );
    let (input, _) = good.rsplit_once('.').expect("three parts");
    // r = s = 0, as raw JWS (64 bytes) and in other lengths / DER-ish forms.
    for sig in [vec![0u8; 64], vec![0u8; 0], vec![0u8; 32], vec![0u8; 8]] {
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(
            verdict(&policy, &jwks, None, &forged, NOW_MS),
            Err(Reason::TokenInvalid),
            "{} zero bytes",
            sig.len()
        );
    }
    // r = s = n (the group order) is just as invalid.
    let n = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
    let n = hex::decode(n).expect("hex");
    let forged = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode([n.clone(), n].concat())
    );
    assert_eq!(
        verdict(&policy, &jwks, None, &forged, NOW_MS),
        Err(Reason::TokenInvalid)
    );
}

#[test]
fn keys_in_the_header_are_ignored_and_kid_is_opaque() {
    let policy = remote_policy(1);
    let jwks = store_with(&[(1, "k1")], NOW_MS);
    let payload = claims("https://idp.example", NOW + 60).to_string();
    let attacker_x = URL_SAFE_NO_PAD.encode(ed_key(9).verifying_key().as_bytes());
    // Signed by the attacker's key, which the header offers in every way JOSE allows.
    for header in [
        json!({"alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": attacker_x}}),
        json!({"alg": "EdDSA", "kid": "k1",
               "jwk": {"kty": "OKP", "crv": "Ed25519", "x": attacker_x, "kid": "k1"}}),
        json!({"alg": "EdDSA", "kid": "k1", "jku": "http://127.0.0.1:1/evil.json"}),
        json!({"alg": "EdDSA", "kid": "k1", "x5u": "http://127.0.0.1:1/evil.pem"}),
        json!({"alg": "EdDSA", "kid": "k1", "x5c": ["MIIB"]}),
    ] {
        let token = ed_raw(9, &header.to_string(), &payload);
        let got = verdict(&policy, &jwks, None, &token, NOW_MS);
        assert!(
            matches!(got, Err(Reason::TokenInvalid | Reason::TokenUnknownKey)),
            "{header}: {got:?}"
        );
    }
    // `kid` values that would mean something to a file system or a database are just names
    // that no key has.
    for kid in [
        "../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "k1\u{0}",
        "k1' UNION SELECT 'k1",
    ] {
        let header = json!({"alg": "EdDSA", "kid": kid}).to_string();
        let token = ed_raw(1, &header, &payload);
        assert!(
            matches!(
                verdict(&policy, &jwks, None, &token, NOW_MS),
                Err(Reason::TokenUnknownKey)
            ),
            "{kid:?}"
        );
    }
}

#[test]
fn cached_verification_ends_at_exp() {
    let policy = remote_policy(1);
    let jwks = store_with(&[(1, "k1")], NOW_MS);
    let cache = TokenCache::new();
    let token = ed_token(1, "k1", &claims("https://idp.example", NOW + 30));
    assert_eq!(
        verdict(&policy, &jwks, Some(&cache), &token, NOW_MS),
        Ok("alice".into())
    );
    assert_eq!(cache.len(), 1);
    assert_eq!(
        verdict(&policy, &jwks, Some(&cache), &token, NOW_MS + 29_999),
        Ok("alice".into())
    );
    assert_eq!(cache.len(), 1, "served from the cache, not added twice");
    assert_eq!(
        verdict(&policy, &jwks, Some(&cache), &token, NOW_MS + 30_000),
        Err(Reason::TokenExpired)
    );
    assert!(cache.is_empty(), "the expired entry is dropped");
    // Refused tokens are never cached.
    let stranger = ed_token(9, "k1", &claims("https://idp.example", NOW + 30));
    assert_eq!(
        verdict(&policy, &jwks, Some(&cache), &stranger, NOW_MS),
        Err(Reason::TokenInvalid)
    );
    assert!(cache.is_empty());
}

#[test]
fn cache_is_invalidated_by_key_rotation_and_policy_change() {
    let policy = remote_policy(1);
    let mut jwks = store_with(&[(1, "k1")], NOW_MS);
    let cache = TokenCache::new();
    let token = ed_token(1, "k1", &claims("https://idp.example", NOW + 3600));
    assert!(verdict(&policy, &jwks, Some(&cache), &token, NOW_MS).is_ok());
    assert_eq!(cache.len(), 1);

    // The identity provider rotates k1 out: the cached verification must not outlive it.
    jwks.install_from(
        "remote",
        JWKS_URL,
        ed_jwks(&[(2, "k2")]).as_bytes(),
        NOW_MS + 1_000,
    )
    .expect("rotate");
    assert_eq!(
        verdict(&policy, &jwks, Some(&cache), &token, NOW_MS + 2_000),
        Err(Reason::TokenUnknownKey)
    );
    assert!(cache.is_empty());

    // Re-verified under the new keys (k1 back), then the policy changes to one that no longer
    // trusts the issuer: a new compilation never serves the old entry.
    jwks.install_from(
        "remote",
        JWKS_URL,
        ed_jwks(&[(1, "k1"), (2, "k2")]).as_bytes(),
        NOW_MS + 20_000,
    )
    .expect("rotate back");
    assert!(verdict(&policy, &jwks, Some(&cache), &token, NOW_MS + 21_000).is_ok());
    assert_eq!(cache.len(), 1);
    let mut narrower = policy_with(json!({"jwks_url": JWKS_URL}));
    narrower["resources"][0]["issuers"] = json!(["ec"]);
    let narrower = compile(narrower, 2);
    assert_eq!(
        verdict(&narrower, &jwks, Some(&cache), &token, NOW_MS + 22_000),
        Err(Reason::TokenBadIssuer)
    );
    // Even the same policy text compiled again is a new policy for the cache.
    let again = remote_policy(1);
    let fresh = TokenCache::new();
    assert!(verdict(&policy, &jwks, Some(&fresh), &token, NOW_MS + 23_000).is_ok());
    assert!(verdict(&again, &jwks, Some(&fresh), &token, NOW_MS + 23_000).is_ok());
    assert_eq!(fresh.len(), 1, "the entry was replaced, not served");
}

#[test]
fn cache_is_bounded_and_drops_what_expires_first() {
    let policy = remote_policy(1);
    let jwks = store_with(&[(1, "k1")], NOW_MS);
    let cache = TokenCache::with_capacity(3);
    let tokens: Vec<String> = (0..5)
        .map(|i| ed_token(1, "k1", &claims("https://idp.example", NOW + 100 + i)))
        .collect();
    for token in &tokens {
        assert!(verdict(&policy, &jwks, Some(&cache), token, NOW_MS).is_ok());
    }
    assert_eq!(cache.len(), 3);
    let disabled = TokenCache::with_capacity(0);
    assert!(verdict(&policy, &jwks, Some(&disabled), &tokens[0], NOW_MS).is_ok());
    assert!(disabled.is_empty());
}

#[test]
fn background_refresh_is_scheduled_and_retried_every_ten_seconds() {
    let policy = remote_policy(1);
    let mut jwks = JwksStore::new();
    let due = |jwks: &JwksStore, t: i64| !policy.refreshes_due(jwks, t).is_empty();
    assert_eq!(
        policy.refreshes_due(&jwks, NOW_MS),
        vec![("remote".to_string(), JWKS_URL.to_string())]
    );
    jwks.install_from("remote", JWKS_URL, ed_jwks(&[(1, "k1")]).as_bytes(), NOW_MS)
        .expect("install");
    assert!(!due(&jwks, NOW_MS + 59_999), "refresh_seconds is 60");
    assert!(due(&jwks, NOW_MS + 60_000));
    // The refresh fails: retried once per REFETCH_INTERVAL_MS, not on every tick.
    jwks.note_fetch_attempt("remote", NOW_MS + 60_000);
    assert!(!due(&jwks, NOW_MS + 60_000 + REFETCH_INTERVAL_MS - 1));
    assert!(due(&jwks, NOW_MS + 60_000 + REFETCH_INTERVAL_MS));
}

#[test]
fn cached_keys_serve_through_an_outage_for_the_allowed_time_only() {
    // refresh 60 s + max_stale 600 s: keys fetched at NOW verify until NOW + 660 s.
    let policy = remote_policy(1);
    let mut jwks = store_with(&[(1, "k1")], NOW_MS);
    let cache = TokenCache::new();
    let token = ed_token(1, "k1", &claims("https://idp.example", NOW + 7200));
    let at = |s: i64| NOW_MS + s * 1000;
    assert!(verdict(&policy, &jwks, Some(&cache), &token, at(0)).is_ok());
    // Every refresh from 60 s on fails (attempts recorded, nothing installed).
    for t in (60..700).step_by(10) {
        jwks.note_fetch_attempt("remote", at(t));
    }
    assert!(verdict(&policy, &jwks, None, &token, at(659)).is_ok());
    assert!(verdict(&policy, &jwks, Some(&cache), &token, at(659)).is_ok());
    assert_eq!(
        verdict(&policy, &jwks, None, &token, at(660)),
        Err(Reason::TokenKeysUnavailable)
    );
    assert_eq!(
        verdict(&policy, &jwks, Some(&cache), &token, at(660)),
        Err(Reason::TokenKeysUnavailable),
        "the cache does not outlive the keys either"
    );
    assert_eq!(Reason::TokenKeysUnavailable.http_status(), 503);
    // The endpoint is back: the next successful fetch restores service.
    jwks.install_from(
        "remote",
        JWKS_URL,
        ed_jwks(&[(1, "k1")]).as_bytes(),
        at(700),
    )
    .expect("install");
    assert!(verdict(&policy, &jwks, Some(&cache), &token, at(701)).is_ok());
}

#[test]
fn keys_from_a_previous_url_are_not_used() {
    let jwks = store_with(&[(1, "k1")], NOW_MS);
    let token = ed_token(1, "k1", &claims("https://idp.example", NOW + 60));
    assert!(verdict(&remote_policy(1), &jwks, None, &token, NOW_MS).is_ok());
    let moved = compile(
        policy_with(json!({"jwks_url": "https://other.example/jwks.json"})),
        2,
    );
    assert_eq!(
        verdict(&moved, &jwks, None, &token, NOW_MS),
        Err(Reason::TokenUnknownKey),
        "NeedKeys: the shell must fetch from the new URL"
    );
    assert_eq!(
        moved.refreshes_due(&jwks, NOW_MS + REFETCH_INTERVAL_MS),
        vec![(
            "remote".to_string(),
            "https://other.example/jwks.json".to_string()
        )]
    );
}
