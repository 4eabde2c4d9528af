//! Policy signing-key rotation through the API (in-process router, real database): only an
//! owner of the operator's MSP may rotate; announce gives edges an endorsement that the key they
//! pinned verifies; activate republishes every tenant signed with the new key only; both steps
//! are in the admin-action trail. Runs on SQLite, and on PostgreSQL when
//! `SASE_TEST_DATABASE_URL` is set.

mod common;

use common::TestApp;
use http::{Method, StatusCode};
use sase_model::bundle::{key_id, SignedBundle};
use sase_model::channel::ControlMessage;
use sase_model::signing_keys::TrustedKeys;
use serde_json::json;

#[tokio::test]
async fn rotation_announces_then_activates_and_republishes_with_the_new_key() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "rotate-co").await;
    app.send_json(
        Method::PUT,
        &format!("/api/tenants/{tenant}/policy"),
        Some(&token),
        &json!({"resources": [{"name": "app", "upstream": "http://127.0.0.1:9",
            "routes": [{"id": "h", "methods": ["GET"], "path": "/h", "public": true}]}]}),
    )
    .await
    .expect_status(StatusCode::OK);
    let old = app.state.policy_keys.current().verifying_key();
    let status = app
        .get("/api/signing-keys", &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(status["current_key_id"], key_id(&old).as_str());
    assert!(status["next_key_id"].is_null());

    // A customer admin may not rotate (outside its scope: 404, never 2xx).
    app.send_json(
        Method::POST,
        "/api/admins",
        Some(&token),
        &json!({"username": "cust", "password": "a long enough password 1",
            "role": "customer_admin", "tenant_id": tenant}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let cust = app
        .send_json(
            Method::POST,
            "/api/login",
            None,
            &json!({"username": "cust", "password": "a long enough password 1"}),
        )
        .await
        .expect_status(StatusCode::OK)["session"]
        .as_str()
        .expect("session")
        .to_string();
    let refused = app
        .call(Method::POST, "/api/signing-keys/next", Some(&cust), None)
        .await;
    assert!(
        refused.status == StatusCode::FORBIDDEN || refused.status == StatusCode::NOT_FOUND,
        "{}",
        refused.status
    );
    app.call(
        Method::POST,
        "/api/signing-keys/activate",
        Some(&token),
        None,
    )
    .await
    .expect_status(StatusCode::CONFLICT);

    // Announce: an endorsement the pinned key verifies; bundles still signed with the old key.
    let announced = app
        .call(Method::POST, "/api/signing-keys/next", Some(&token), None)
        .await
        .expect_status(StatusCode::CREATED);
    let next_id = announced["next_key_id"].as_str().expect("next").to_string();
    app.call(Method::POST, "/api/signing-keys/next", Some(&token), None)
        .await
        .expect_status(StatusCode::CONFLICT);
    let hello = sase_control::key_rotation::hello_messages(&app.state);
    let [ControlMessage::SigningKeys { endorsements }] = hello.as_slice() else {
        panic!("expected one signing_keys message, got {hello:?}");
    };
    let mut trusted = TrustedKeys::pinned(&old);
    assert_eq!(trusted.endorse(&endorsements[0]), Ok(true));
    assert_eq!(app.state.policy_keys.current().verifying_key(), old);

    // Activate: every tenant republished, signed with the new key only.
    let activated = app
        .call(
            Method::POST,
            "/api/signing-keys/activate",
            Some(&token),
            None,
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(activated["current_key_id"], next_id.as_str());
    let new = app.state.policy_keys.current().verifying_key();
    assert_ne!(new, old);
    let latest = app
        .state
        .store
        .latest_policy(&tenant)
        .await
        .expect("store")
        .expect("a policy");
    assert_eq!(latest.version, 2);
    assert_eq!(
        latest.created_by,
        sase_control::key_rotation::REPUBLISH_AUTHOR
    );
    let bundle = SignedBundle::from_json(latest.bundle_json.as_bytes()).expect("bundle");
    assert!(bundle.verify(&new).is_ok());
    assert!(bundle.verify(&old).is_err());
    let (_, index) = trusted
        .verify_bundle(&bundle, &tenant, Some((1, "x")))
        .expect("an edge that took the endorsement accepts it");
    assert_eq!(index, 1);

    let actions = app
        .get("/api/admin-actions?limit=100", &token)
        .await
        .expect_status(StatusCode::OK);
    let text = actions.to_string();
    assert!(text.contains("signing_key.announce") && text.contains("signing_key.activate"));
}
