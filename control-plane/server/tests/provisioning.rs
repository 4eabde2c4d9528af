//! Provisioning through the API: claim codes created in bulk from CSV, listed with their
//! state, revoked (enrolment then refuses them), a device decommissioned, and the diff between
//! two policy versions. Runs on SQLite, and on PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use common::{new_csr, TestApp};
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn bulk_codes_revocation_decommissioning_and_policy_diff() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "fleet-co").await;
    let site = app.create_site(&token, &tenant, "branch").await;

    // Bulk creation: one code per CSV row, shown once as CSV.
    let csv = "label,notes\nbox-1,rack a\n\"box, 2\",rack b\nbox-3,\n";
    let reply = app
        .call(
            http::Method::POST,
            &format!("/api/sites/{site}/claim-codes/bulk?ttl_minutes=60"),
            Some(&token),
            Some(("text/csv", csv.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let text = String::from_utf8(reply.body).expect("utf-8");
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "label,code,expires_at_ms");
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[2].starts_with("\"box, 2\","), "{text}");
    let code_of = |row: &str| -> String {
        let fields: Vec<&str> = row.rsplitn(3, ',').collect();
        fields[1].to_string()
    };
    let (code1, code2) = (code_of(rows[1]), code_of(rows[2]));

    // Bad CSV and a wrong content type are refused clearly.
    let reply = app
        .call(
            http::Method::POST,
            &format!("/api/sites/{site}/claim-codes/bulk"),
            Some(&token),
            Some(("text/csv", b"serial\nX1\n".to_vec())),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = app
        .send_json(
            http::Method::POST,
            &format!("/api/sites/{site}/claim-codes/bulk"),
            Some(&token),
            &json!({"label": "x"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let list = app
        .get(&format!("/api/sites/{site}/claim-codes"), &token)
        .await
        .expect_status(StatusCode::OK);
    let codes = list.as_array().expect("list");
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| c["status"] == "pending"));
    assert!(!list.to_string().contains(&code1), "codes are never listed");

    // Revoke box-2's code: enrolment refuses it.
    let id2 = codes
        .iter()
        .find(|c| c["label"] == "box, 2")
        .and_then(|c| c["id"].as_str())
        .expect("box 2")
        .to_string();
    let reply = app
        .call(
            http::Method::DELETE,
            &format!("/api/sites/{site}/claim-codes/{id2}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let (_key, csr) = new_csr();
    assert!(app
        .enroll(&code2, &csr, "box-2")
        .await
        .status
        .is_client_error());
    let reply = app
        .call(
            http::Method::DELETE,
            &format!("/api/sites/{site}/claim-codes/{id2}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);

    // box-1 enrols; its code shows as used.
    let (_key, csr) = new_csr();
    let enrolled = app
        .enroll(&code1, &csr, "box-1")
        .await
        .expect_status(StatusCode::OK);
    let device = enrolled["device_id"].as_str().expect("device").to_string();
    let list = app
        .get(&format!("/api/sites/{site}/claim-codes"), &token)
        .await
        .expect_status(StatusCode::OK);
    let status_of = |label: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|c| c["label"] == label))
            .map(|c| c["status"].clone())
    };
    assert_eq!(status_of("box-1"), Some(json!("used")));
    assert_eq!(status_of("box, 2"), Some(json!("revoked")));
    assert_eq!(status_of("box-3"), Some(json!("pending")));

    // Decommission: revoked, once.
    let reply = app
        .send_json(
            http::Method::POST,
            &format!("/api/devices/{device}/decommission"),
            Some(&token),
            &json!({"reason": "replaced after water damage"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let devices = app
        .get(&format!("/api/tenants/{tenant}/devices"), &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(devices[0]["status"], "revoked", "{devices}");
    let reply = app
        .send_json(
            http::Method::POST,
            &format!("/api/devices/{device}/decommission"),
            Some(&token),
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);

    // Policy diff between two versions.
    for upstream in ["http://127.0.0.1:9001", "http://127.0.0.1:9002"] {
        app.send_json(
            http::Method::PUT,
            &format!("/api/tenants/{tenant}/policy"),
            Some(&token),
            &json!({"resources": [{"name": "app", "upstream": upstream,
                "routes": [{"id": "h", "methods": ["GET"], "path": "/h", "public": true}]}]}),
        )
        .await
        .expect_status(StatusCode::OK);
    }
    let diff = app
        .get(
            &format!("/api/tenants/{tenant}/policy/diff?from=1&to=2"),
            &token,
        )
        .await
        .expect_status(StatusCode::OK);
    let changes = diff["changes"].to_string();
    assert!(
        changes.contains("9001") && changes.contains("9002"),
        "{diff}"
    );
    assert!(changes.contains("upstream"), "{diff}");
    let reply = app
        .get(
            &format!("/api/tenants/{tenant}/policy/diff?from=1&to=9"),
            &token,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let actions = app
        .get("/api/admin-actions", &token)
        .await
        .json()
        .to_string();
    assert!(actions.contains("claim_code.bulk_create"));
    assert!(actions.contains("claim_code.revoke"));
    assert!(actions.contains("device.decommission"));
}

#[tokio::test]
async fn fleet_health_shows_heartbeats_and_alerts_lagging_devices() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "health-co").await;
    let site = app.create_site(&token, &tenant, "branch").await;
    let code = app.claim_code(&token, &site).await;
    let (_key, csr) = new_csr();
    let enrolled = app
        .enroll(&code, &csr, "box")
        .await
        .expect_status(StatusCode::OK);
    let device = enrolled["device_id"].as_str().expect("device").to_string();
    let health_uri = format!("/api/tenants/{tenant}/fleet/health");
    let h = app
        .get(&health_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(h[0]["state"], "pending", "{h}");

    for upstream in ["http://127.0.0.1:9001", "http://127.0.0.1:9002"] {
        app.send_json(
            http::Method::PUT,
            &format!("/api/tenants/{tenant}/policy"),
            Some(&token),
            &json!({"resources": [{"name": "app", "upstream": upstream,
                "routes": [{"id": "h", "methods": ["GET"], "path": "/h", "public": true}]}]}),
        )
        .await
        .expect_status(StatusCode::OK);
    }
    // The device heard from (in simulated time, three minutes on) still running version 1.
    let now = sase_control::state::now_ms();
    app.state
        .store
        .device_seen(&device, now + 180_000, Some(1), Some("0.1.0"))
        .await
        .expect("seen");
    sase_control::fleet_health::record(
        &app.state,
        &device,
        5,
        Some(sase_model::channel::SystemLoad {
            load1_milli: 1500,
            cpus: 2,
            mem_total_kib: 1000,
            mem_available_kib: 250,
        }),
        now,
    )
    .await
    .expect("record");
    let h = app
        .get(&health_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(h[0]["state"], "lagging", "{h}");
    assert_eq!(h[0]["expected_version"], 2);
    assert_eq!(h[0]["applied_version"], 1);
    assert_eq!(h[0]["load1"], 1.5);
    assert_eq!(h[0]["mem_used_percent"], 75.0);
    assert_eq!(h[0]["spooled_events"], 5);

    let later = now + 190_000;
    assert_eq!(
        sase_control::fleet_health::check_lag(&app.state, later)
            .await
            .expect("watch"),
        1
    );
    assert_eq!(
        sase_control::fleet_health::check_lag(&app.state, later + 30_000)
            .await
            .expect("watch"),
        0,
        "once per expected version"
    );
    let alerts = app.get("/api/alerts", &token).await.json().to_string();
    assert!(alerts.contains("device_lagging"), "{alerts}");
    app.state
        .store
        .device_seen(&device, now + 200_000, Some(2), None)
        .await
        .expect("seen");
    let h = app
        .get(&health_uri, &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(h[0]["state"], "ok", "{h}");
}

#[tokio::test]
async fn reenrolment_replaces_the_certificate_of_the_same_device() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "reenrol-co").await;
    let site = app.create_site(&token, &tenant, "branch").await;
    let code = app.claim_code(&token, &site).await;
    let (_key, csr) = new_csr();
    let first = app
        .enroll(&code, &csr, "box")
        .await
        .expect_status(StatusCode::OK);
    let device = first["device_id"].as_str().expect("device").to_string();
    let old_sha = app.state.store.devices(&tenant).await.expect("devices")[0]
        .cert_sha256
        .clone();

    let reply = app
        .send_json(
            http::Method::POST,
            &format!("/api/devices/{device}/reenroll"),
            Some(&token),
            &json!({}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let code = reply["code"].as_str().expect("code").to_string();
    let (_key, csr) = new_csr();
    let again = app
        .enroll(&code, &csr, "box")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(again["device_id"], device.as_str(), "same device");
    let devices = app.state.store.devices(&tenant).await.expect("devices");
    assert_eq!(devices.len(), 1);
    assert_ne!(devices[0].cert_sha256, old_sha, "new certificate");
    assert!(app
        .state
        .store
        .device_by_cert(&old_sha)
        .await
        .expect("lookup")
        .is_none());
    // The code is single use; a decommissioned device cannot be re-enrolled.
    let (_key, csr) = new_csr();
    assert!(app
        .enroll(&code, &csr, "box")
        .await
        .status
        .is_client_error());
    app.send_json(
        http::Method::POST,
        &format!("/api/devices/{device}/decommission"),
        Some(&token),
        &json!({"reason": "gone"}),
    )
    .await;
    let reply = app
        .send_json(
            http::Method::POST,
            &format!("/api/devices/{device}/reenroll"),
            Some(&token),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}
