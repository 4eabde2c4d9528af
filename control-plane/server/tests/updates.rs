//! Firmware updates on the control plane: who may upload and offer, what is refused, how offers
//! follow the devices' reports (in-process router, real database).

mod common;

use common::TestApp;
use ed25519_dalek::SigningKey;
use http::{Method, StatusCode};
use sase_model::update::{SignedManifest, UpdateManifest, UpdateReport, UpdateState, PRODUCT};
use serde_json::json;

const PASSWORD: &str = "a long enough password 1";

fn bundle(version: u64) -> Vec<u8> {
    let payload = b"root filesystem".to_vec();
    let manifest = UpdateManifest {
        product: PRODUCT.into(),
        arch: "x86_64".into(),
        version,
        label: format!("v{version}"),
        kernel_release: "6.1.0-test".into(),
        payload_size: payload.len() as u64,
        payload_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload)),
        created_at_ms: 0,
    };
    let mut out = SignedManifest::sign(&manifest, &SigningKey::from_bytes(&[3; 32]))
        .expect("sign")
        .encode_prefix()
        .expect("prefix");
    out.extend_from_slice(&payload);
    out
}

#[tokio::test]
async fn upload_offer_and_reports_follow_roles_and_scope() {
    let dir = std::env::temp_dir().join(format!("sase-updates-test-{}", std::process::id()));
    sase_control::updates::init(&dir).expect("update store");
    let app = TestApp::new().await;
    let admin = app.login().await;
    let device = app.enrolled_device(&admin, "Acme").await;

    // A customer admin of that very tenant may not touch firmware.
    app.send_json(
        Method::POST,
        "/api/admins",
        Some(&admin),
        &json!({"username": "cust", "password": PASSWORD, "role": "customer_admin", "tenant_id": device.tenant_id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let cust = app
        .send_json(
            Method::POST,
            "/api/login",
            None,
            &json!({"username": "cust", "password": PASSWORD}),
        )
        .await
        .expect_status(StatusCode::OK)["session"]
        .as_str()
        .expect("session")
        .to_string();
    let upload = |bearer: String, body: Vec<u8>| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/updates",
                Some(&bearer),
                Some(("application/octet-stream", body)),
            )
            .await
        }
    };
    let refused = upload(cust.clone(), bundle(2))
        .await
        .expect_status(StatusCode::FORBIDDEN);
    assert_eq!(refused["error"], "forbidden_role");

    // Not a bundle: 400. A bundle: stored with its (unverified) version.
    upload(admin.clone(), b"not a bundle".to_vec())
        .await
        .expect_status(StatusCode::BAD_REQUEST);
    let record = upload(admin.clone(), bundle(2))
        .await
        .expect_status(StatusCode::CREATED);
    let id = record["id"].as_str().expect("id").to_string();
    assert_eq!(record["version"], 2);
    let list = app
        .get("/api/updates", &admin)
        .await
        .expect_status(StatusCode::OK);
    assert!(list
        .as_array()
        .is_some_and(|l| l.iter().any(|r| r["id"] == id.as_str())));

    // Offers: to a real device (not connected: sent at its next hello), never to an unknown one.
    let offered = app
        .send_json(
            Method::POST,
            &format!("/api/updates/{id}/offer"),
            Some(&admin),
            &json!({"devices": [device.id]}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(offered[0]["sent"], false);
    app.send_json(
        Method::POST,
        &format!("/api/updates/{id}/offer"),
        Some(&admin),
        &json!({"devices": ["dev_nope"]}),
    )
    .await
    .expect_status(StatusCode::NOT_FOUND);
    app.send_json(
        Method::POST,
        "/api/updates/upd_nope/offer",
        Some(&admin),
        &json!({"devices": [device.id]}),
    )
    .await
    .expect_status(StatusCode::NOT_FOUND);
    let pending = sase_control::updates::pending_offers(&device.id);
    assert_eq!(pending.len(), 1, "re-sent after hello while open");

    // The device refuses it (say, tampered): the offer closes and an alert is raised.
    let report = UpdateReport {
        update_id: Some(id.clone()),
        state: UpdateState::Refused,
        running_version: 1,
        slot: "a".into(),
        version: Some(2),
        detail: "update signature does not verify with the vendor key".into(),
    };
    sase_control::updates::on_report(&app.state, &device, report).await;
    let status = app
        .get(&format!("/api/updates/{id}/devices"), &admin)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(status[0]["state"], "refused");
    assert_eq!(status[0]["history"], json!(["offered", "refused"]));
    assert!(sase_control::updates::pending_offers(&device.id).is_empty());
    let alerts = app
        .get("/api/alerts", &admin)
        .await
        .expect_status(StatusCode::OK);
    assert!(alerts.to_string().contains("update_refused"), "{alerts}");
    let _ = std::fs::remove_dir_all(&dir);
}
