//! Refused sign-ins of existing admins are recorded in the admin-action trail (and so reach
//! the SIEM as Authentication failures); unknown user names are not attributable and are not.
//! Runs on SQLite, and on PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use common::TestApp;
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn refused_sign_ins_are_in_the_admin_action_trail() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let admin = app
        .get("/api/me", &token)
        .await
        .expect_status(StatusCode::OK);
    let username = admin["username"].as_str().expect("username").to_string();
    for (user, password) in [(username.as_str(), "not the password"), ("nobody", "x")] {
        let reply = app
            .send_json(
                http::Method::POST,
                "/api/login",
                None,
                &json!({"username": user, "password": password}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let trail = app
        .get("/api/admin-actions", &token)
        .await
        .expect_status(StatusCode::OK);
    let failed: Vec<&serde_json::Value> = trail["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "admin.sign_in_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{trail}");
    assert_eq!(failed[0]["actor"], username.as_str());
    assert!(failed[0]["diff"].to_string().contains("wrong_password"));
}
