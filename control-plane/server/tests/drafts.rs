//! Policy drafts through the API: saved valid or not (errors with field paths), diffed against
//! the deployed version, dry-run, published (then gone), discarded. Runs on SQLite, and on
//! PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use common::TestApp;
use http::StatusCode;
use serde_json::{json, Value};

fn policy(upstream: &str) -> Value {
    json!({"resources": [{"name": "app", "upstream": upstream,
        "routes": [{"id": "h", "methods": ["GET"], "path": "/h", "public": true}]}]})
}

#[tokio::test]
async fn drafts_are_saved_diffed_dry_run_published_and_discarded() {
    let app = TestApp::new().await;
    let token = app.login().await;
    let tenant = app.create_tenant(&token, "draft-co").await;
    let base = format!("/api/tenants/{tenant}/policy/drafts");
    app.send_json(
        http::Method::PUT,
        &format!("/api/tenants/{tenant}/policy"),
        Some(&token),
        &policy("http://127.0.0.1:9001"),
    )
    .await
    .expect_status(StatusCode::OK);

    // An invalid draft is kept, with its errors.
    let bad = app
        .send_json(
            http::Method::POST,
            &base,
            Some(&token),
            &json!({"policy": {"resources": [{"name": "x"}]}, "note": "wip"}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(bad["valid"], false);
    assert!(bad["errors"].to_string().contains("resources[0]"), "{bad}");
    let bad_id = bad["id"].as_str().expect("id").to_string();

    // A valid one shows its diff against version 1.
    let good = app
        .send_json(
            http::Method::POST,
            &base,
            Some(&token),
            &json!({"policy": policy("http://127.0.0.1:9002"), "note": "move upstream"}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(good["valid"], true);
    assert_eq!(good["deployed_version"], 1);
    assert!(good["changes"].to_string().contains("9002"), "{good}");
    let id = good["id"].as_str().expect("id").to_string();
    let list = app.get(&base, &token).await.expect_status(StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(2));

    // Dry run (nothing recorded: nothing changes), then publish: version 2, draft gone.
    let report = app
        .send_json(
            http::Method::POST,
            &format!("{base}/{id}/dry-run"),
            Some(&token),
            &json!({}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(report["newly_refused_count"], 0);
    let published = app
        .send_json(
            http::Method::POST,
            &format!("{base}/{id}/publish"),
            Some(&token),
            &json!({}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(published["policy"]["version"], 2, "{published}");
    assert_eq!(
        app.get(&format!("{base}/{id}"), &token).await.status,
        StatusCode::NOT_FOUND
    );
    // Publishing the invalid draft is refused; it can be fixed and discarded.
    let refused = app
        .send_json(
            http::Method::POST,
            &format!("{base}/{bad_id}/publish"),
            Some(&token),
            &json!({}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fixed = app
        .send_json(
            http::Method::PUT,
            &format!("{base}/{bad_id}"),
            Some(&token),
            &json!({"policy": policy("http://127.0.0.1:9003"), "note": "fixed"}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(fixed["valid"], true);
    assert_eq!(fixed["deployed_version"], 2);
    assert_eq!(
        app.call(
            http::Method::DELETE,
            &format!("{base}/{bad_id}"),
            Some(&token),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
}
