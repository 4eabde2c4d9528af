//! Integration tests of the control-plane API on a real database: the real axum router driven
//! in-process, a fresh database per test (SQLite file by default; PostgreSQL when
//! `SASE_TEST_DATABASE_URL` names a server, e.g. under `scripts/with-postgres.sh`).

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::{new_csr, TestApp};
use http::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier as _;
use sase_model::audit::{ChainWriter, Decision, EventKind, HttpDetails};
use sase_model::bundle::{verifying_key_to_b64, BundleError, SignedBundle};
use sase_model::fleet::Device;
use sase_model::{AuditEvent, ChainError, Reason, GENESIS_HASH};
use serde_json::{json, Value};
use sqlx::Row as _;

const POLICY_YAML: &str = r#"
issuers:
  - id: demo
    issuer: https://idp.example
    audiences: [orders]
    algorithms: [EdDSA, ES256]
    keys:
      jwks: {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"}]}
resources:
  - name: orders-api
    upstream: http://127.0.0.1:9000
    issuers: [demo]
    routes:
      - id: list
        methods: [GET]
        path: /orders
        scopes: [orders:read]
      - id: health
        methods: [GET]
        path: /health
        public: true
"#;

fn error_code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<no error code>")
}

// ---- sign-in, sessions, tokens ----------------------------------------------------------------

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_refuses_bad_credentials() {
    let app = TestApp::new().await;

    let reply = app
        .send_json(
            Method::POST,
            "/api/login",
            None,
            &json!({"username": "admin", "password": "pw"}),
        )
        .await;
    let body = reply.expect_status(StatusCode::OK);
    assert_eq!(body["username"], "admin");
    let session = body["session"].as_str().expect("session");
    assert!(session.len() >= 40, "session secret is long: {session}");
    assert!(body["expires_at_ms"].as_i64().expect("expiry") > sase_control::state::now_ms());
    let cookie = reply
        .headers
        .get(http::header::SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .expect("ascii");
    assert!(
        cookie.starts_with(&format!("sase_session={session};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Secure"), "{cookie}");

    // The cookie alone authenticates (the console's way).
    let with_cookie = http::Request::builder()
        .uri("/api/tenants")
        .header(
            http::header::COOKIE,
            format!("other=1; sase_session={session}"),
        )
        .body(axum::body::Body::empty())
        .expect("request");
    app.send(with_cookie).await.expect_status(StatusCode::OK);

    for (username, password) in [("admin", "wrong"), ("nobody", "pw"), ("admin", "")] {
        let reply = app
            .send_json(
                Method::POST,
                "/api/login",
                None,
                &json!({"username": username, "password": password}),
            )
            .await;
        let body = reply.expect_status(StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&body), "unauthorized", "{username}/{password}");
        assert!(
            reply.headers.get(http::header::SET_COOKIE).is_none(),
            "no session on failure"
        );
    }
}

#[tokio::test]
async fn api_needs_credentials_and_accepts_sessions_and_api_tokens_as_bearer() {
    let app = TestApp::new().await;

    let reply = app.call(Method::GET, "/api/tenants", None, None).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNAUTHORIZED)),
        "unauthorized"
    );
    let reply = app.get("/api/tenants", "not-a-real-token").await;
    reply.expect_status(StatusCode::UNAUTHORIZED);
    let reply = app
        .send_json(
            Method::POST,
            "/api/tenants",
            None,
            &json!({"name": "sneaky"}),
        )
        .await;
    reply.expect_status(StatusCode::UNAUTHORIZED);
    assert!(app.state.store.tenants().await.expect("tenants").is_empty());

    let session = app.login().await;
    let created = app
        .send_json(
            Method::POST,
            "/api/tokens",
            Some(&session),
            &json!({"name": "ci script", "ttl_hours": 2}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let token = created["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("sase_"), "{token}");
    let expires = created["expires_at_ms"].as_i64().expect("expiry");
    let now = sase_control::state::now_ms();
    assert!(
        (now + 2 * 3_600_000 - 60_000..=now + 2 * 3_600_000).contains(&expires),
        "token lives 2 h: {expires} vs now {now}"
    );

    // The token works as a bearer credential, also for writes.
    let tenant = app.create_tenant(&token, "acme").await;
    let listed = app
        .get("/api/tenants", &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(listed[0]["id"], tenant.as_str());

    // Invalid token requests are refused.
    app.send_json(
        Method::POST,
        "/api/tokens",
        Some(&session),
        &json!({"name": "x", "ttl_hours": 0}),
    )
    .await
    .expect_status(StatusCode::BAD_REQUEST);

    // Logging out ends the session but not the API token.
    let reply = app
        .call(Method::POST, "/api/logout", Some(&session), None)
        .await;
    reply.expect_status(StatusCode::NO_CONTENT);
    let cleared = reply
        .headers
        .get(http::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("clearing cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    app.get("/api/tenants", &session)
        .await
        .expect_status(StatusCode::UNAUTHORIZED);
    app.get("/api/tenants", &token)
        .await
        .expect_status(StatusCode::OK);
}

// ---- tenants and sites ------------------------------------------------------------------------

#[tokio::test]
async fn tenants_and_sites_are_created_listed_unique_and_scoped() {
    let app = TestApp::new().await;
    let token = app.login().await;

    let zeta = app.create_tenant(&token, "zeta").await;
    let acme = app.create_tenant(&token, "  acme ").await;
    let listed = app
        .get("/api/tenants", &token)
        .await
        .expect_status(StatusCode::OK);
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["acme", "zeta"], "sorted by name, trimmed");
    assert_eq!(listed[0]["id"], acme.as_str());

    let dup = app
        .send_json(
            Method::POST,
            "/api/tenants",
            Some(&token),
            &json!({"name": "acme"}),
        )
        .await;
    assert_eq!(
        error_code(&dup.expect_status(StatusCode::CONFLICT)),
        "conflict"
    );
    assert_eq!(app.state.store.tenants().await.expect("tenants").len(), 2);

    let bad_name = app
        .send_json(
            Method::POST,
            "/api/tenants",
            Some(&token),
            &json!({"name": "   "}),
        )
        .await;
    let body = bad_name.expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["path"], "name");

    // Each tenant got its own CA.
    let (ca_acme, _) = app
        .state
        .store
        .tenant_ca(&acme)
        .await
        .expect("ca")
        .expect("acme ca");
    let (ca_zeta, _) = app
        .state
        .store
        .tenant_ca(&zeta)
        .await
        .expect("ca")
        .expect("zeta ca");
    assert_ne!(ca_acme, ca_zeta);

    let paris = app.create_site(&token, &acme, "paris").await;
    app.create_site(&token, &acme, "berlin").await;
    // Same site name in another tenant is fine.
    app.create_site(&token, &zeta, "paris").await;
    let dup = app
        .send_json(
            Method::POST,
            &format!("/api/tenants/{acme}/sites"),
            Some(&token),
            &json!({"name": "paris"}),
        )
        .await;
    dup.expect_status(StatusCode::CONFLICT);

    let sites = app
        .get(&format!("/api/tenants/{acme}/sites"), &token)
        .await
        .expect_status(StatusCode::OK);
    let sites = sites.as_array().expect("array");
    assert_eq!(sites.len(), 2);
    assert_eq!(sites[0]["name"], "berlin");
    assert_eq!(sites[1]["name"], "paris");
    assert_eq!(sites[1]["id"], paris.as_str());
    assert!(sites.iter().all(|s| s["tenant_id"] == acme.as_str()));

    for uri in [
        "/api/tenants/ten_missing/sites".to_string(),
        "/api/tenants/ten_missing/devices".to_string(),
        "/api/tenants/ten_missing/policy".to_string(),
        "/api/tenants/ten_missing/policy/versions".to_string(),
    ] {
        let reply = app.get(&uri, &token).await;
        assert_eq!(
            error_code(&reply.expect_status(StatusCode::NOT_FOUND)),
            "not_found",
            "{uri}"
        );
    }
    app.send_json(
        Method::POST,
        "/api/tenants/ten_missing/sites",
        Some(&token),
        &json!({"name": "x"}),
    )
    .await
    .expect_status(StatusCode::NOT_FOUND);
    app.call(
        Method::POST,
        "/api/sites/site_missing/claim-codes",
        Some(&token),
        None,
    )
    .await
    .expect_status(StatusCode::NOT_FOUND);
    app.get("/api/no-such-endpoint", &token)
        .await
        .expect_status(StatusCode::NOT_FOUND);
}

// ---- claim codes and enrolment ----------------------------------------------------------------

#[tokio::test]
async fn enrolment_trades_a_single_use_claim_code_and_a_csr_for_a_device_certificate() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "acme").await;
    let site = app.create_site(&token, &tenant, "paris").await;

    let created = app
        .send_json(
            Method::POST,
            &format!("/api/sites/{site}/claim-codes"),
            Some(&token),
            &json!({"ttl_minutes": 30}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let code = created["code"].as_str().expect("code").to_string();
    assert_eq!(created["site_id"], site.as_str());
    let expires = created["expires_at_ms"].as_i64().expect("expiry");
    let now = sase_control::state::now_ms();
    assert!((now + 29 * 60_000..=now + 30 * 60_000).contains(&expires));
    app.send_json(
        Method::POST,
        &format!("/api/sites/{site}/claim-codes"),
        Some(&token),
        &json!({"ttl_minutes": 0}),
    )
    .await
    .expect_status(StatusCode::BAD_REQUEST);

    // A garbage CSR is a client error and does not use up the code.
    let reply = app
        .enroll(
            &code,
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "edge-1",
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::BAD_REQUEST)),
        "bad_request"
    );
    app.enroll(&code, "not even pem", "edge-1")
        .await
        .expect_status(StatusCode::BAD_REQUEST);

    let (device_key, csr) = new_csr();
    let body = app
        .enroll(&code, &csr, "edge-1")
        .await
        .expect_status(StatusCode::OK);
    let device_id = body["device_id"].as_str().expect("device id").to_string();
    assert!(device_id.starts_with("dev_"), "{device_id}");
    assert_eq!(body["tenant_id"], tenant.as_str());
    assert_eq!(body["site_id"], site.as_str());
    assert_eq!(
        body["policy_signing_key"],
        verifying_key_to_b64(&app.state.signing_key.verifying_key()).as_str()
    );
    assert_eq!(body["channel_url"], "wss://127.0.0.1:1/api/edge/channel");

    // The certificate is issued by the tenant CA, for the device's own key.
    let ca_pem = body["tenant_ca_pem"].as_str().expect("ca pem");
    let (stored_ca, _) = app
        .state
        .store
        .tenant_ca(&tenant)
        .await
        .expect("store")
        .expect("ca");
    assert_eq!(ca_pem, stored_ca);
    let cert_pem = body["certificate_pem"].as_str().expect("cert pem");
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).expect("ca pem");
    let ca = ca_block.parse_x509().expect("ca x509");
    let (_, cert_block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("pem");
    let cert = cert_block.parse_x509().expect("x509");
    assert!(ca.is_ca());
    assert!(!cert.is_ca());
    assert_eq!(cert.issuer(), ca.subject());
    assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
    assert_eq!(
        cert.public_key().raw,
        device_key.public_key_der().as_slice(),
        "certificate is for the key of the CSR"
    );
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    assert_eq!(cn, Some(device_id.as_str()));
    // The TLS layer's verifier was reloaded with the new tenant CA and accepts the
    // certificate as a client certificate (signature chain, validity, usage).
    app.state
        .device_verifier
        .verify_client_cert(
            &CertificateDer::from(cert_block.contents.clone()),
            &[],
            UnixTime::now(),
        )
        .expect("device certificate chains to a trusted tenant CA");

    // Single use.
    let (_, csr2) = new_csr();
    let reply = app.enroll(&code, &csr2, "edge-2").await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "forbidden"
    );
    app.enroll("no-such-code", &csr2, "edge-2")
        .await
        .expect_status(StatusCode::FORBIDDEN);

    // Expired.
    let expired = "expired-claim-code-for-test";
    let site_row = app
        .state
        .store
        .site(&site)
        .await
        .expect("store")
        .expect("site");
    let now = sase_control::state::now_ms();
    app.state
        .store
        .insert_claim_code(
            &sase_control::auth::secret_hash(expired),
            &site_row,
            now - 120_000,
            now - 1,
        )
        .await
        .expect("insert claim code");
    app.enroll(expired, &csr2, "edge-2")
        .await
        .expect_status(StatusCode::FORBIDDEN);

    // Exactly one device, listed under the tenant, with the certificate's fingerprint.
    let devices = app
        .get(&format!("/api/tenants/{tenant}/devices"), &token)
        .await
        .expect_status(StatusCode::OK);
    let devices = devices.as_array().expect("array");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["id"], device_id.as_str());
    assert_eq!(devices[0]["name"], "edge-1");
    assert_eq!(devices[0]["site_id"], site.as_str());
    assert_eq!(devices[0]["status"], "active");
    let fingerprint = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&cert_block.contents))
    };
    assert_eq!(devices[0]["cert_sha256"], fingerprint.as_str());
    let by_cert = app
        .state
        .store
        .device_by_cert(&fingerprint)
        .await
        .expect("store")
        .expect("device by certificate");
    assert_eq!(by_cert.id, device_id);
}

#[tokio::test]
async fn a_claim_code_enrols_only_one_of_two_concurrent_devices() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "acme").await;
    let site = app.create_site(&token, &tenant, "paris").await;
    let code = app.claim_code(&token, &site).await;
    let (_, csr_a) = new_csr();
    let (_, csr_b) = new_csr();
    let (a, b) = tokio::join!(
        app.enroll(&code, &csr_a, "a"),
        app.enroll(&code, &csr_b, "b")
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::FORBIDDEN]);
    assert_eq!(
        app.state
            .store
            .devices(&tenant)
            .await
            .expect("devices")
            .len(),
        1
    );
}

// ---- policy -----------------------------------------------------------------------------------

#[tokio::test]
async fn policy_versions_are_validated_signed_and_stored() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "acme").await;
    let policy_uri = format!("/api/tenants/{tenant}/policy");

    let none = app.get(&policy_uri, &token).await;
    none.expect_status(StatusCode::NOT_FOUND);

    let put_yaml = |text: String| {
        let uri = policy_uri.clone();
        let token = token.clone();
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                &uri,
                Some(&token),
                Some(("application/yaml", text.into_bytes())),
            )
            .await
        }
    };

    let v1 = put_yaml(POLICY_YAML.to_string())
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["tenant_id"], tenant.as_str());
    assert_eq!(v1["created_by"], "admin");
    assert_eq!(v1["pushed_to"], 0, "no edge is connected");
    assert_eq!(v1["policy"]["resources"][0]["name"], "orders-api");
    assert_eq!(
        v1["policy"]["issuers"][0]["leeway_seconds"], 30,
        "defaults are filled in"
    );

    let second = POLICY_YAML.replace("http://127.0.0.1:9000", "http://127.0.0.1:9001");
    let v2 = put_yaml(second).await.expect_status(StatusCode::OK);
    assert_eq!(v2["version"], 2);

    let current = app
        .get(&policy_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(current["version"], 2);
    assert_eq!(
        current["policy"]["resources"][0]["upstream"],
        "http://127.0.0.1:9001"
    );
    assert!(current.get("pushed_to").is_none());

    let versions = app
        .get(&format!("{policy_uri}/versions"), &token)
        .await
        .expect_status(StatusCode::OK);
    let versions = versions.as_array().expect("array");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 2, "newest first");
    assert_eq!(versions[1]["version"], 1);
    assert_eq!(
        versions[1]["policy"]["resources"][0]["upstream"],
        "http://127.0.0.1:9000"
    );

    // Semantic error: 422 naming the field; nothing stored.
    let bad = POLICY_YAML.replace("http://127.0.0.1:9000", "ftp://127.0.0.1:9000");
    let body = put_yaml(bad)
        .await
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "policy_invalid");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["resources[0].upstream"]);

    // Several semantic errors are all reported.
    let bad = POLICY_YAML
        .replace("path: /orders\n", "path: orders\n")
        .replace("algorithms: [EdDSA, ES256]", "algorithms: []");
    let body = put_yaml(bad)
        .await
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert!(paths.contains(&"resources[0].routes[0].path"), "{paths:?}");
    assert!(paths.contains(&"issuers[0].algorithms"), "{paths:?}");

    // JSON with a type error: the exact path.
    let json_bad = r#"{"resources":[{"name":"a","upstream":"http://x:1","routes":[{"id":"r","methods":["GET"],"path":7}]}]}"#;
    let reply = app
        .call(
            Method::PUT,
            &policy_uri,
            Some(&token),
            Some(("application/json", json_bad.as_bytes().to_vec())),
        )
        .await;
    let body = reply.expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["path"], "resources[0].routes[0].path");
    assert_eq!(body["errors"].as_array().expect("errors").len(), 1);

    // Unknown field in YAML: its path.
    let typo = POLICY_YAML.replace("scopes: [orders:read]", "scopez: [orders:read]");
    let body = put_yaml(typo)
        .await
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["path"], "resources[0].routes[0].scopez");

    let reply = app
        .call(
            Method::PUT,
            &policy_uri,
            Some(&token),
            Some(("text/plain", POLICY_YAML.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)),
        "unsupported_media_type"
    );
    app.call(
        Method::PUT,
        "/api/tenants/ten_missing/policy",
        Some(&token),
        Some(("application/yaml", POLICY_YAML.as_bytes().to_vec())),
    )
    .await
    .expect_status(StatusCode::NOT_FOUND);

    // A valid JSON policy is accepted as version 3 (and the refused ones made no version).
    let as_json = serde_json::to_vec(&current["policy"]).expect("json");
    let v3 = app
        .call(
            Method::PUT,
            &policy_uri,
            Some(&token),
            Some(("application/json; charset=utf-8", as_json)),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v3["version"], 3);

    // The stored bundle verifies with the state's key, for this tenant, and says version 3.
    let stored = app
        .state
        .store
        .latest_policy(&tenant)
        .await
        .expect("store")
        .expect("latest");
    assert_eq!(stored.version, 3);
    let vk = app.state.signing_key.verifying_key();
    let bundle = SignedBundle::from_json(stored.bundle_json.as_bytes()).expect("bundle");
    let payload = bundle
        .verify_for_device(&vk, &tenant, None)
        .expect("bundle verifies");
    assert_eq!(payload.version, 3);
    assert_eq!(payload.tenant_id, tenant);
    assert_eq!(
        serde_json::to_value(&payload.policy).expect("json"),
        current["policy"]
    );
    assert!(matches!(
        bundle.verify_for_device(&vk, "ten_other", None),
        Err(BundleError::WrongTenant { .. })
    ));
    // An older bundle is refused by an edge that applied v3.
    let v2_bundle = {
        let rows = sqlx::query(
            "SELECT bundle_json FROM policy_versions WHERE tenant_id = $1 AND version = $2",
        )
        .bind(&tenant)
        .bind(2_i64)
        .fetch_one(&app.raw)
        .await
        .expect("v2 row");
        let text: String = rows.try_get("bundle_json").expect("text");
        SignedBundle::from_json(text.as_bytes()).expect("bundle")
    };
    assert_eq!(
        v2_bundle.verify_for_device(&vk, &tenant, Some((3, &bundle.digest()))),
        Err(BundleError::Stale { applied: 3, got: 2 })
    );

    // Any one changed byte of the signed payload, or of the signature, breaks it.
    let payload_bytes = B64.decode(&bundle.payload).expect("b64");
    for i in [0, payload_bytes.len() / 2, payload_bytes.len() - 1] {
        let mut changed = payload_bytes.clone();
        changed[i] ^= 0x01;
        let tampered = SignedBundle {
            payload: B64.encode(&changed),
            ..bundle.clone()
        };
        assert_eq!(
            tampered.verify_for_device(&vk, &tenant, None),
            Err(BundleError::BadSignature),
            "payload byte {i}"
        );
    }
    let mut signature = B64.decode(&bundle.signature).expect("b64");
    signature[10] ^= 0x80;
    let tampered = SignedBundle {
        signature: B64.encode(&signature),
        ..bundle.clone()
    };
    assert_eq!(
        tampered.verify_for_device(&vk, &tenant, None),
        Err(BundleError::BadSignature)
    );
    // A one-byte change anywhere in the stored text's payload or signature never yields an
    // accepted bundle (`key_id` is a hint that verification never uses, so it is left out).
    let text = stored.bundle_json.as_bytes();
    let key_id_at = stored
        .bundle_json
        .find("\"key_id\":")
        .expect("key_id field");
    let key_id_end = key_id_at
        + stored.bundle_json[key_id_at..]
            .find(['}', ','])
            .expect("end");
    let mut checked = 0;
    for i in (0..text.len()).filter(|i| !(key_id_at..key_id_end).contains(i)) {
        let mut changed = text.to_vec();
        changed[i] ^= 0x01;
        let verdict =
            SignedBundle::from_json(&changed).and_then(|b| b.verify_for_device(&vk, &tenant, None));
        assert!(verdict.is_err(), "byte {i} changed, still accepted");
        checked += 1;
    }
    assert!(checked > 100);
}

// ---- audit ingest, query and verification -----------------------------------------------------

const BASE_TS: i64 = 1_700_000_000_000;

/// Event `i` (0-based) of a test device: every third is a denial (token missing for the first
/// two of them, scope missing after), one second apart.
fn event(device: &Device, i: u64) -> AuditEvent {
    let deny = i.is_multiple_of(3);
    let reason = match (deny, i < 5) {
        (false, _) => Reason::Allowed,
        (true, true) => Reason::TokenMissing,
        (true, false) => Reason::ScopeMissing,
    };
    AuditEvent {
        seq: 0,
        prev_hash: String::new(),
        ts_ms: BASE_TS + i64::try_from(i).expect("small") * 1_000,
        tenant_id: device.tenant_id.clone(),
        device_id: device.id.clone(),
        kind: EventKind::HttpRequest,
        decision: if deny {
            Decision::Deny
        } else {
            Decision::Allow
        },
        reason,
        reference: format!("ref-{}-{i}", device.id),
        policy_version: 1,
        identity: (!deny).then(|| "https://idp.example|alice".to_string()),
        http: Some(HttpDetails {
            resource: "orders-api".into(),
            route: "list".into(),
            method: "GET".into(),
            path: "/orders".into(),
            status: if deny { 401 } else { 200 },
            latency_us: 1_500,
            client_ip: "192.0.2.10".into(),
            scopes: Vec::new(),
            groups: Vec::new(),
        }),
        detail: None,
        waf: None,
        quic: None,
        tunnel: None,
    }
}

/// Links events `range` with `writer` (which must be at the range's start).
fn link(device: &Device, writer: &mut ChainWriter, range: std::ops::Range<u64>) -> Vec<AuditEvent> {
    range
        .map(|i| {
            let mut e = event(device, i);
            writer.link(&mut e);
            e
        })
        .collect()
}

async fn ingest(
    app: &TestApp,
    device: &Device,
    events: &[AuditEvent],
) -> Result<sase_control::store::IngestOutcome, (u64, ChainError)> {
    sase_control::channel::ingest(&app.state, device, events)
        .await
        .expect("no store failure")
}

async fn stored_count(app: &TestApp, device: &Device) -> i64 {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_events WHERE device_id = $1")
        .bind(&device.id)
        .fetch_one(&app.raw)
        .await
        .expect("count");
    row.try_get("n").expect("n")
}

#[tokio::test]
async fn audit_ingest_is_idempotent_and_refuses_gaps_and_forks() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let device = app.enrolled_device(&token, "acme").await;

    // A batch starting with a gap on a new device stores nothing.
    let mut ahead = ChainWriter::resume(1, "f".repeat(64));
    let gapped = link(&device, &mut ahead, 1..4);
    assert_eq!(gapped[0].seq, 2);
    assert_eq!(
        ingest(&app, &device, &gapped).await,
        Err((
            0,
            ChainError::Gap {
                expected: 1,
                got: 2
            }
        ))
    );
    assert_eq!(stored_count(&app, &device).await, 0);
    assert_eq!(
        app.state.store.audit_head(&device.id).await.expect("head"),
        None
    );

    let mut writer = ChainWriter::resume(0, GENESIS_HASH.to_string());
    let batch = link(&device, &mut writer, 0..10);
    let outcome = ingest(&app, &device, &batch).await.expect("intact batch");
    assert_eq!(
        (outcome.stored, outcome.duplicates, outcome.head_seq),
        (10, 0, 10)
    );
    assert_eq!(stored_count(&app, &device).await, 10);
    let head = app
        .state
        .store
        .audit_head(&device.id)
        .await
        .expect("head")
        .expect("some head");
    assert_eq!(head, (10, batch[9].hash()));

    // Re-delivery of the same batch: nothing new, all counted as duplicates.
    let again = ingest(&app, &device, &batch).await.expect("re-delivery");
    assert_eq!(
        (again.stored, again.duplicates, again.head_seq),
        (0, 10, 10)
    );
    assert_eq!(stored_count(&app, &device).await, 10);

    // A "re-delivery" whose content differs from what is stored under that seq is a rewritten
    // history, not a duplicate: refused as a fork, nothing changes.
    let mut rewritten_old = batch[4].clone();
    rewritten_old.reason = Reason::ScopeMissing;
    assert_eq!(
        ingest(&app, &device, std::slice::from_ref(&rewritten_old)).await,
        Err((10, ChainError::Fork { seq: 5 }))
    );
    assert_eq!(stored_count(&app, &device).await, 10);

    // A batch that overlaps the head stores only the new part.
    let next = link(&device, &mut writer, 10..12);
    let mut overlapping = batch[8..].to_vec();
    overlapping.extend(next.iter().cloned());
    let outcome = ingest(&app, &device, &overlapping).await.expect("overlap");
    assert_eq!(
        (outcome.stored, outcome.duplicates, outcome.head_seq),
        (2, 2, 12)
    );
    assert_eq!(stored_count(&app, &device).await, 12);

    // A batch starting with a gap (seq 13 missing): refused, nothing beyond the head stored.
    let lost = link(&device, &mut writer, 12..13);
    let after_gap = link(&device, &mut writer, 13..16);
    assert_eq!(
        ingest(&app, &device, &after_gap).await,
        Err((
            12,
            ChainError::Gap {
                expected: 13,
                got: 14
            }
        ))
    );
    assert_eq!(stored_count(&app, &device).await, 12);
    assert_eq!(
        app.state.store.audit_head(&device.id).await.expect("head"),
        Some((12, next[1].hash()))
    );

    // A forked event (does not link to the stored head): refused, nothing stored.
    let mut forked = lost[0].clone();
    forked.prev_hash = batch[9].hash();
    assert_eq!(
        ingest(&app, &device, std::slice::from_ref(&forked)).await,
        Err((12, ChainError::Fork { seq: 13 }))
    );
    let mut rewritten = lost[0].clone();
    rewritten.decision = Decision::Allow;
    // Content edits do not change the link to the previous event, so this one is accepted as
    // seq 13 — and then the edge's real seq 14 no longer links to it: a fork at 14.
    let outcome = ingest(&app, &device, std::slice::from_ref(&rewritten))
        .await
        .expect("rewritten 13 links to the head");
    assert_eq!(outcome.head_seq, 13);
    assert_eq!(
        ingest(&app, &device, &after_gap).await,
        Err((13, ChainError::Fork { seq: 14 }))
    );
    assert_eq!(stored_count(&app, &device).await, 13);

    // A valid prefix is stored even when a later event of the batch breaks the chain.
    let mut writer = ChainWriter::resume(13, rewritten.hash());
    let mut mixed = link(&device, &mut writer, 13..15);
    mixed[1].prev_hash = GENESIS_HASH.to_string();
    assert_eq!(
        ingest(&app, &device, &mixed).await,
        Err((14, ChainError::Fork { seq: 15 }))
    );
    assert_eq!(stored_count(&app, &device).await, 14);

    // Events of another tenant are never stored under this device.
    let mut stray = event(&device, 20);
    stray.tenant_id = "ten_other".into();
    let mut w = ChainWriter::resume(14, mixed[0].hash());
    w.link(&mut stray);
    assert_eq!(
        ingest(&app, &device, &[stray]).await,
        Err((14, ChainError::WrongDevice { seq: 15 }))
    );
    assert_eq!(stored_count(&app, &device).await, 14);
}

#[tokio::test]
async fn audit_events_are_queryable_and_the_stored_chain_is_verifiable() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let device = app.enrolled_device(&token, "acme").await;
    let other = app.enrolled_device(&token, "globex").await;

    let mut writer = ChainWriter::resume(0, GENESIS_HASH.to_string());
    let events = link(&device, &mut writer, 0..10);
    ingest(&app, &device, &events).await.expect("ingest");
    let mut other_writer = ChainWriter::resume(0, GENESIS_HASH.to_string());
    let other_events = link(&other, &mut other_writer, 0..3);
    ingest(&app, &other, &other_events).await.expect("ingest");

    let count = |query: String| {
        let app = &app;
        let token = token.clone();
        async move {
            let body = app
                .get(&format!("/api/audit{query}"), &token)
                .await
                .expect_status(StatusCode::OK);
            let n = body["count"].as_u64().expect("count");
            assert_eq!(
                n as usize,
                body["events"].as_array().expect("events").len(),
                "{query}"
            );
            (n, body)
        }
    };
    let (d, t) = (&device.id, &device.tenant_id);

    assert_eq!(count(String::new()).await.0, 13);
    assert_eq!(count(format!("?tenant={t}")).await.0, 10);
    assert_eq!(count(format!("?tenant={}", other.tenant_id)).await.0, 3);
    assert_eq!(count("?tenant=ten_nobody".to_string()).await.0, 0);
    let (n, body) = count(format!("?device={d}")).await;
    assert_eq!(n, 10);
    let seqs: Vec<u64> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=10).rev().collect::<Vec<_>>(), "newest first");
    assert_eq!(
        serde_json::from_value::<AuditEvent>(body["events"][9].clone()).expect("event"),
        events[0],
        "events come back exactly as ingested"
    );
    // Decisions: seq 1, 4, 7, 10 are denials.
    assert_eq!(count(format!("?device={d}&decision=deny")).await.0, 4);
    assert_eq!(count(format!("?device={d}&decision=allow")).await.0, 6);
    assert_eq!(count("?decision=deny".to_string()).await.0, 4 + 1);
    assert_eq!(
        count(format!("?tenant={t}&reason=token_missing")).await.0,
        2
    );
    assert_eq!(
        count(format!("?tenant={t}&reason=scope_missing&decision=deny"))
            .await
            .0,
        2
    );
    assert_eq!(
        count(format!("?tenant={t}&reason=scope_missing&decision=allow"))
            .await
            .0,
        0
    );
    let (n, body) = count(format!("?reference=ref-{d}-4")).await;
    assert_eq!(n, 1);
    assert_eq!(body["events"][0]["seq"], 5);
    assert_eq!(
        count(format!("?identity=https://idp.example%7Calice&device={d}"))
            .await
            .0,
        6
    );
    assert_eq!(
        count(format!("?resource=orders-api&device={d}")).await.0,
        10
    );
    // Time window: [from, to) — events 2, 3 and 4.
    let (n, body) = count(format!(
        "?device={d}&from_ms={}&to_ms={}",
        BASE_TS + 2_000,
        BASE_TS + 5_000
    ))
    .await;
    assert_eq!(n, 3);
    assert_eq!(body["events"][0]["seq"], 5);
    assert_eq!(body["events"][2]["seq"], 3);
    assert_eq!(
        count(format!("?device={d}&from_ms={}", BASE_TS + 9_000))
            .await
            .0,
        1
    );
    assert_eq!(count(format!("?to_ms={BASE_TS}")).await.0, 0);
    let (n, body) = count(format!("?device={d}&limit=3")).await;
    assert_eq!(n, 3);
    assert_eq!(body["events"][0]["seq"], 10);
    for bad in ["?limit=0", "?limit=10001", "?decision=maybe"] {
        app.get(&format!("/api/audit{bad}"), &token)
            .await
            .expect_status(StatusCode::BAD_REQUEST);
    }
    app.call(Method::GET, "/api/audit", None, None)
        .await
        .expect_status(StatusCode::UNAUTHORIZED);

    // The stored chain verifies.
    let verify_uri = format!("/api/devices/{d}/audit/verify");
    let report = app
        .get(&verify_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(report["device_id"], d.as_str());
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["head_seq"], 10);
    assert_eq!(report["events"], 10);
    assert!(report.get("first_error").is_none());

    // Someone edits event 5 in the database: detected, and named.
    let original: String =
        sqlx::query("SELECT event_json FROM audit_events WHERE device_id = $1 AND seq = $2")
            .bind(d)
            .bind(5_i64)
            .fetch_one(&app.raw)
            .await
            .expect("row")
            .try_get("event_json")
            .expect("text");
    let mut edited: Value = serde_json::from_str(&original).expect("json");
    assert_eq!(edited["decision"], "allow");
    edited["decision"] = json!("deny");
    edited["reason"] = json!("scope_missing");
    let update = |text: String| {
        let app = &app;
        let d = d.clone();
        async move {
            let done = sqlx::query(
                "UPDATE audit_events SET event_json = $1 WHERE device_id = $2 AND seq = $3",
            )
            .bind(text)
            .bind(d)
            .bind(5_i64)
            .execute(&app.raw)
            .await
            .expect("update");
            assert_eq!(done.rows_affected(), 1);
        }
    };
    update(edited.to_string()).await;
    let report = app
        .get(&verify_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(report["intact"], false, "{report}");
    let first_error = report["first_error"].as_str().expect("first_error");
    assert!(first_error.contains("seq 5"), "{first_error}");
    assert_eq!(report["head_seq"], 10);

    // Put it back: intact again (the check is on content, not on a flag).
    update(original).await;
    let report = app
        .get(&verify_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(report["intact"], true, "{report}");

    // Someone deletes the newest event: the chain no longer reaches the recorded head.
    sqlx::query("DELETE FROM audit_events WHERE device_id = $1 AND seq = $2")
        .bind(d)
        .bind(10_i64)
        .execute(&app.raw)
        .await
        .expect("delete");
    let report = app
        .get(&verify_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(report["intact"], false, "{report}");
    let first_error = report["first_error"].as_str().expect("first_error");
    assert!(first_error.contains("seq 9"), "{first_error}");
    assert!(first_error.contains("seq 10"), "{first_error}");

    // The other device's chain is untouched.
    let report = app
        .get(&format!("/api/devices/{}/audit/verify", other.id), &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["head_seq"], 3);
}

// ---- OpenAPI and health -----------------------------------------------------------------------

#[tokio::test]
async fn openapi_document_and_health_are_served() {
    let app = TestApp::new().await;
    let reply = app.call(Method::GET, "/api/openapi.json", None, None).await;
    let doc = reply.expect_status(StatusCode::OK);
    assert_eq!(
        reply
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/audit",
        "/api/tenants/{tenant_id}/policy",
        "/api/login",
        "/api/enroll",
        "/api/devices/{device_id}/audit/verify",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }
    assert!(paths["/api/tenants/{tenant_id}/policy"]
        .get("put")
        .is_some());

    let health = app
        .call(Method::GET, "/healthz", None, None)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connected_edges"], 0);
}

#[tokio::test]
async fn policy_whose_waf_settings_do_not_load_is_refused_with_libmodsecurity_message() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "acme").await;
    let uri = format!("/api/tenants/{tenant}/policy");
    // Passes the model's checks (the target has a valid shape) but names no ModSecurity
    // variable, so the rule set does not load.
    let bad = POLICY_YAML.replace(
        "        path: /health\n",
        "        path: /health\n        waf:\n          exclusions: [{rule_id: 942100, target: \"FOO:bar\"}]\n",
    );
    let refused = app
        .call(
            Method::PUT,
            &uri,
            Some(&token),
            Some(("application/yaml", bad.into_bytes())),
        )
        .await
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&refused), "waf_invalid");
    assert_eq!(refused["errors"][0]["path"], "resources[0].routes[1].waf");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("variable"),
        "libmodsecurity's message: {message}"
    );
    app.get(&uri, &token)
        .await
        .expect_status(StatusCode::NOT_FOUND);

    // The same policy with a real target loads and is accepted.
    let good = POLICY_YAML.replace(
        "        path: /health\n",
        "        path: /health\n        waf:\n          exclusions: [{rule_id: 942100, target: \"ARGS:q\"}]\n",
    );
    app.call(
        Method::PUT,
        &uri,
        Some(&token),
        Some(("application/yaml", good.into_bytes())),
    )
    .await
    .expect_status(StatusCode::OK);
}
