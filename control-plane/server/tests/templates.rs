//! MSP policy templates through the API: a tenant inherits a template with merge-patch
//! overrides, a template change republishes it (overrides kept), a change that would break a
//! tenant is refused whole, a direct policy ends inheritance. Runs on SQLite, and on
//! PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use common::TestApp;
use http::StatusCode;
use serde_json::{json, Value};

fn template(upstream: &str) -> Value {
    json!({
        "issuers": [{"id": "idp", "issuer": "https://idp.example", "audiences": ["api"],
            "algorithms": ["ES256"], "keys": {"jwks_url": "https://idp.example/jwks"}}],
        "groups": {"ops": {"members": ["alice"]}},
        "resources": [{"name": "app", "upstream": upstream,
            "routes": [{"id": "h", "methods": ["GET"], "path": "/h", "public": true}]}]
    })
}

#[tokio::test]
async fn tenants_inherit_templates_with_overrides() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let a = app.create_tenant(&token, "tpl-a").await;
    let b = app.create_tenant(&token, "tpl-b").await;

    let created = app
        .send_json(
            http::Method::POST,
            "/api/policy-templates",
            Some(&token),
            &json!({"name": "branch-default", "policy": template("http://127.0.0.1:9001")}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let id = created["id"].as_str().expect("id").to_string();
    let dup = app
        .send_json(
            http::Method::POST,
            "/api/policy-templates",
            Some(&token),
            &json!({"name": "branch-default", "policy": {}}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    // A inherits with an explicit override of the group members; B inherits as is.
    let src = app
        .send_json(
            http::Method::PUT,
            &format!("/api/tenants/{a}/policy/source"),
            Some(&token),
            &json!({"template_id": id, "overrides": {"groups": {"ops": {"members": ["bob"]}}}}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(src["template_version"], 1);
    app.send_json(
        http::Method::PUT,
        &format!("/api/tenants/{b}/policy/source"),
        Some(&token),
        &json!({"template_id": id}),
    )
    .await
    .expect_status(StatusCode::OK);
    let pa = app
        .get(&format!("/api/tenants/{a}/policy"), &token)
        .await
        .expect_status(StatusCode::OK);
    let pa_text = pa.to_string();
    assert!(
        pa_text.contains("bob") && !pa_text.contains("alice"),
        "{pa}"
    );
    assert!(pa_text.contains("9001"));

    // Overrides that make an invalid policy are refused.
    let bad = app
        .send_json(
            http::Method::PUT,
            &format!("/api/tenants/{a}/policy/source"),
            Some(&token),
            &json!({"template_id": id, "overrides": {"resources": [{"name": "x"}]}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A template change republishes both, keeping A's override.
    let updated = app
        .send_json(
            http::Method::PUT,
            &format!("/api/policy-templates/{id}"),
            Some(&token),
            &json!({"name": "branch-default", "policy": template("http://127.0.0.1:9002")}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["tenants"].as_array().map(Vec::len), Some(2));
    for (tenant, member) in [(&a, "bob"), (&b, "alice")] {
        let p = app
            .get(&format!("/api/tenants/{tenant}/policy"), &token)
            .await
            .expect_status(StatusCode::OK)
            .to_string();
        assert!(p.contains("9002") && p.contains(member), "{tenant}: {p}");
        let s = app
            .get(&format!("/api/tenants/{tenant}/policy/source"), &token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(s["template_version"], 2);
    }

    // A change that breaks a tenant (A's own resources need the template's issuer; the new
    // template drops it) is refused whole, naming the tenant; nothing changes.
    app.send_json(
        http::Method::PUT,
        &format!("/api/tenants/{a}/policy/source"),
        Some(&token),
        &json!({"template_id": id, "overrides": {"resources": [{"name": "app",
            "upstream": "http://127.0.0.1:9003", "issuers": ["idp"],
            "routes": [{"id": "h", "methods": ["GET"], "path": "/h", "groups": ["ops"]}]}]}}),
    )
    .await
    .expect_status(StatusCode::OK);
    let breaking = app
        .send_json(
            http::Method::PUT,
            &format!("/api/policy-templates/{id}"),
            Some(&token),
            &json!({"name": "branch-default", "policy": {
                "resources": template("http://127.0.0.1:9004")["resources"].clone()}}),
        )
        .await;
    assert_eq!(breaking.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        breaking.json().to_string().contains(&a),
        "{}",
        breaking.json()
    );
    let t = app
        .get("/api/policy-templates", &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(t[0]["version"], 2, "unchanged");

    // Renaming onto another template's name is a conflict, not a server error.
    app.send_json(
        http::Method::POST,
        "/api/policy-templates",
        Some(&token),
        &json!({"name": "other", "policy": {}}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let clash = app
        .send_json(
            http::Method::PUT,
            &format!("/api/policy-templates/{id}"),
            Some(&token),
            &json!({"name": "other", "policy": template("http://127.0.0.1:9002")}),
        )
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT);

    // A direct policy ends inheritance.
    app.send_json(
        http::Method::PUT,
        &format!("/api/tenants/{b}/policy"),
        Some(&token),
        &template("http://127.0.0.1:9005"),
    )
    .await
    .expect_status(StatusCode::OK);
    let s = app
        .get(&format!("/api/tenants/{b}/policy/source"), &token)
        .await;
    assert_eq!(s.status, StatusCode::NOT_FOUND);
    let actions = app
        .get("/api/admin-actions", &token)
        .await
        .json()
        .to_string();
    assert!(actions.contains("policy_template.update") && actions.contains("policy.source_set"));
}
