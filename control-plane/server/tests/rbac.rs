//! MSP tenancy, roles, TOTP MFA, scoped and expiring API tokens and the admin-action trail,
//! through the real router on a real database (SQLite, or PostgreSQL under
//! `scripts/with-postgres.sh`).

mod common;

use common::TestApp;
use http::{Method, StatusCode};
use sase_control::totp;
use serde_json::{json, Value};

const PASSWORD: &str = "a-long-enough-password";

fn error_code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<no error code>")
}

async fn create_admin(
    app: &TestApp,
    bearer: &str,
    username: &str,
    role: &str,
    tenant: Option<&str>,
) -> Value {
    app.send_json(
        Method::POST,
        "/api/admins",
        Some(bearer),
        &json!({"username": username, "password": PASSWORD, "role": role, "tenant_id": tenant}),
    )
    .await
    .expect_status(StatusCode::CREATED)
}

async fn login(app: &TestApp, username: &str, totp: Option<&str>) -> common::Reply {
    app.send_json(
        Method::POST,
        "/api/login",
        None,
        &json!({"username": username, "password": PASSWORD, "totp": totp}),
    )
    .await
}

async fn session(app: &TestApp, username: &str) -> String {
    login(app, username, None)
        .await
        .expect_status(StatusCode::OK)["session"]
        .as_str()
        .expect("session")
        .to_string()
}

fn code_at_step(secret: &str, step: u64) -> String {
    let key = totp::base32_decode(secret).expect("base32");
    format!("{:06}", totp::code_at(&key, step))
}

fn now_step() -> u64 {
    u64::try_from(sase_control::state::now_ms()).expect("time") / 1000 / totp::STEP_SECONDS
}

#[tokio::test]
async fn customers_see_only_their_tenant_and_roles_are_not_above_the_creators() {
    let app = TestApp::new().await;
    let owner = app.login().await;
    let me = app
        .get("/api/me", &owner)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        me["role"], "msp_owner",
        "the bootstrap admin owns the default MSP"
    );
    assert_eq!(me["msp_id"], "msp_default");

    let a = app.create_tenant(&owner, "alpha").await;
    let b = app.create_tenant(&owner, "beta").await;
    create_admin(&app, &owner, "alice", "customer_admin", Some(&a)).await;
    let alice = session(&app, "alice").await;

    let listed = app
        .get("/api/tenants", &alice)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["id"], a.as_str());
    // Another customer's objects do not exist for her; her own do.
    let reply = app.get(&format!("/api/tenants/{b}/sites"), &alice).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::NOT_FOUND)),
        "not_found"
    );
    app.get(&format!("/api/tenants/{a}/sites"), &alice)
        .await
        .expect_status(StatusCode::OK);
    // Creating customers is the MSP's.
    app.send_json(
        Method::POST,
        "/api/tenants",
        Some(&alice),
        &json!({"name": "x"}),
    )
    .await
    .expect_status(StatusCode::NOT_FOUND);

    // Roles above one's own, and tenants outside one's scope, are refused.
    let reply = app
        .send_json(
            Method::POST,
            "/api/admins",
            Some(&alice),
            &json!({"username": "mallory", "password": PASSWORD, "role": "msp_owner"}),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "role_above_own"
    );
    let reply = app
        .send_json(
            Method::POST,
            "/api/admins",
            Some(&alice),
            &json!({"username": "mallory", "password": PASSWORD, "role": "customer_auditor", "tenant_id": b}),
        )
        .await;
    reply.expect_status(StatusCode::NOT_FOUND);
    let aud = create_admin(&app, &alice, "audrey", "customer_auditor", None).await;
    assert_eq!(
        aud["tenant_id"],
        a.as_str(),
        "a customer admin's own tenant by default"
    );

    // The auditor reads but never writes.
    let audrey = session(&app, "audrey").await;
    app.get(&format!("/api/tenants/{a}/devices"), &audrey)
        .await
        .expect_status(StatusCode::OK);
    let reply = app
        .send_json(
            Method::POST,
            &format!("/api/tenants/{a}/sites"),
            Some(&audrey),
            &json!({"name": "hq"}),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "forbidden_role"
    );
    let reply = app
        .send_json(
            Method::POST,
            "/api/tokens",
            Some(&audrey),
            &json!({"name": "t"}),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "forbidden_role"
    );

    // Alerts are scoped; alerts about no tenant are the operator's (the default MSP).
    for (id, tenant) in [
        ("al-a", Some(a.clone())),
        ("al-b", Some(b.clone())),
        ("al-0", None),
    ] {
        app.state
            .store
            .insert_alert(&sase_control::store::Alert {
                id: id.to_string(),
                tenant_id: tenant,
                device_id: None,
                kind: "test".into(),
                detail: "d".into(),
                created_at_ms: 1,
            })
            .await
            .expect("alert");
    }
    let ids = |v: Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .expect("array")
            .iter()
            .map(|a| a["id"].as_str().expect("id").to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(app
            .get("/api/alerts", &alice)
            .await
            .expect_status(StatusCode::OK)),
        ["al-a"]
    );
    assert_eq!(
        ids(app
            .get("/api/alerts", &owner)
            .await
            .expect_status(StatusCode::OK)),
        ["al-0", "al-a", "al-b"]
    );

    // Admin lists are scoped.
    let admins = app
        .get("/api/admins", &alice)
        .await
        .expect_status(StatusCode::OK);
    let names: Vec<&str> = admins
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["username"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alice", "audrey"]);
    let all = app
        .get("/api/admins", &owner)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(all.as_array().map(Vec::len), Some(3));

    // Disabling ends the admin's sessions; sign-in is refused with a stable code.
    let disabled = app
        .call(
            Method::POST,
            &format!("/api/admins/{}/disable", aud["id"].as_str().expect("id")),
            Some(&alice),
            None,
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(disabled["disabled"], true);
    app.get("/api/me", &audrey)
        .await
        .expect_status(StatusCode::UNAUTHORIZED);
    let reply = login(&app, "audrey", None).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNAUTHORIZED)),
        "admin_disabled"
    );
    // A customer admin cannot disable an MSP admin (not in scope) nor herself.
    let me = app
        .get("/api/me", &owner)
        .await
        .expect_status(StatusCode::OK);
    app.call(
        Method::POST,
        &format!("/api/admins/{}/disable", me["id"].as_str().expect("id")),
        Some(&alice),
        None,
    )
    .await
    .expect_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn totp_enrolment_sign_in_replay_and_reset_by_a_higher_role() {
    let app = TestApp::new().await;
    let owner = app.login().await;
    let a = app.create_tenant(&owner, "alpha").await;
    let alice = create_admin(&app, &owner, "alice", "customer_admin", Some(&a)).await;
    create_admin(&app, &owner, "carol", "customer_admin", Some(&a)).await;
    let s = session(&app, "alice").await;

    let enrol = app
        .call(Method::POST, "/api/me/mfa", Some(&s), None)
        .await
        .expect_status(StatusCode::CREATED);
    let secret = enrol["secret"].as_str().expect("secret").to_string();
    let uri = enrol["otpauth_uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains(&secret),
        "{uri}"
    );
    // Not enforced until confirmed.
    session(&app, "alice").await;
    let wrong = if code_at_step(&secret, now_step()) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let reply = app
        .send_json(
            Method::POST,
            "/api/me/mfa/confirm",
            Some(&s),
            &json!({"code": wrong}),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNPROCESSABLE_ENTITY)),
        "mfa_invalid"
    );
    let step = now_step();
    let code = code_at_step(&secret, step);
    app.send_json(
        Method::POST,
        "/api/me/mfa/confirm",
        Some(&s),
        &json!({"code": code}),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);

    // From now on sign-in needs a fresh code.
    let reply = login(&app, "alice", None).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNAUTHORIZED)),
        "mfa_required"
    );
    let reply = login(&app, "alice", Some(wrong)).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNAUTHORIZED)),
        "mfa_invalid"
    );
    let reply = login(&app, "alice", Some(&code)).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNAUTHORIZED)),
        "mfa_invalid",
        "a used code is not accepted again"
    );
    let next = code_at_step(&secret, step + 1);
    login(&app, "alice", Some(&next))
        .await
        .expect_status(StatusCode::OK);
    let reply = app.call(Method::POST, "/api/me/mfa", Some(&s), None).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::CONFLICT)),
        "mfa_already_enrolled"
    );

    // Guessing: the fifth wrong code in a row locks MFA sign-in, even for the right code.
    for attempt in 1..=5 {
        let reply = login(&app, "alice", Some(wrong)).await;
        let expected = if attempt < 5 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        let body = reply.expect_status(expected);
        if attempt == 5 {
            assert_eq!(error_code(&body), "mfa_locked");
        }
    }
    let reply = login(&app, "alice", Some(&code_at_step(&secret, now_step()))).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::TOO_MANY_REQUESTS)),
        "mfa_locked"
    );

    // Reset: not by a peer, by a higher role.
    let carol = session(&app, "carol").await;
    let alice_id = alice["id"].as_str().expect("id");
    let reply = app
        .call(
            Method::DELETE,
            &format!("/api/admins/{alice_id}/mfa"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "mfa_reset_needs_higher_role"
    );
    let reset = app
        .call(
            Method::DELETE,
            &format!("/api/admins/{alice_id}/mfa"),
            Some(&owner),
            None,
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(reset["mfa_enabled"], false);
    session(&app, "alice").await;
}

#[tokio::test]
async fn token_scopes_are_a_subset_and_expired_or_out_of_scope_tokens_are_refused() {
    let app = TestApp::new().await;
    let owner = app.login().await;
    let a = app.create_tenant(&owner, "alpha").await;
    create_admin(&app, &owner, "eng", "msp_engineer", None).await;
    let eng = session(&app, "eng").await;

    let made = app
        .send_json(
            Method::POST,
            "/api/tokens",
            Some(&eng),
            &json!({"name": "reader", "scopes": ["policy.read", "audit.read"]}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(made["scopes"], json!(["policy.read", "audit.read"]));
    let reader = made["token"].as_str().expect("token").to_string();
    app.get(&format!("/api/audit?tenant={a}"), &reader)
        .await
        .expect_status(StatusCode::OK);
    let reply = app.get(&format!("/api/tenants/{a}/devices"), &reader).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "token_scope"
    );

    // Never more than the creator has (an engineer cannot create tenants), nor unknown names.
    let reply = app
        .send_json(
            Method::POST,
            "/api/tokens",
            Some(&eng),
            &json!({"name": "x", "scopes": ["tenants.create"]}),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "scope_not_allowed"
    );
    let reply = app
        .send_json(
            Method::POST,
            "/api/tokens",
            Some(&eng),
            &json!({"name": "x", "scopes": ["root"]}),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNPROCESSABLE_ENTITY)),
        "scope_invalid"
    );
    // A scoped token cannot mint a wider one.
    let reply = app
        .send_json(
            Method::POST,
            "/api/tokens",
            Some(&reader),
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::FORBIDDEN)),
        "token_scope"
    );

    // Expiry: a stored token past its end is refused with its own code.
    let me = app.get("/api/me", &eng).await.expect_status(StatusCode::OK);
    let expired = "sase_expired-token-for-the-test";
    let now = sase_control::state::now_ms();
    app.state
        .store
        .insert_scoped_credential(
            &sase_control::auth::secret_hash(expired),
            me["id"].as_str().expect("id"),
            "api",
            "old",
            Some("policy.read"),
            now - 7_200_000,
            now - 1,
        )
        .await
        .expect("insert");
    let reply = app.get(&format!("/api/tenants/{a}/policy"), expired).await;
    assert_eq!(
        error_code(&reply.expect_status(StatusCode::UNAUTHORIZED)),
        "token_expired"
    );
}

#[tokio::test]
async fn admin_actions_are_recorded_with_diffs_scoped_and_hash_chained() {
    let app = TestApp::new().await;
    let owner = app.login().await;
    let a = app.create_tenant(&owner, "alpha").await;
    let b = app.create_tenant(&owner, "beta").await;
    app.create_site(&owner, &a, "hq").await;
    app.create_site(&owner, &b, "hq").await;
    let policy = |upstream: &str| {
        format!(
            "resources:\n  - name: r\n    upstream: {upstream}\n    routes:\n      - id: h\n        methods: [GET]\n        path: /h\n        public: true\n"
        )
    };
    for upstream in ["http://127.0.0.1:9000", "http://127.0.0.1:9001"] {
        app.call(
            Method::PUT,
            &format!("/api/tenants/{a}/policy"),
            Some(&owner),
            Some(("application/yaml", policy(upstream).into_bytes())),
        )
        .await
        .expect_status(StatusCode::OK);
    }
    create_admin(&app, &owner, "alice", "customer_auditor", Some(&a)).await;

    let all = app
        .get("/api/admin-actions?limit=100", &owner)
        .await
        .expect_status(StatusCode::OK);
    let actions: Vec<&str> = all["actions"]
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "admin.create",
            "policy.update",
            "policy.update",
            "site.create",
            "site.create",
            "tenant.create",
            "tenant.create",
            "admin.sign_in"
        ]
    );
    let update = &all["actions"][1];
    assert_eq!(update["actor"], "admin");
    assert_eq!(update["actor_role"], "msp_owner");
    assert_eq!(update["tenant_id"], a.as_str());
    let changes = update["diff"]["changes"].as_array().expect("changes");
    assert!(
        changes
            .iter()
            .any(|c| c["path"] == "policy.resources[0].upstream"
                && c["before"] == "http://127.0.0.1:9000"
                && c["after"] == "http://127.0.0.1:9001"),
        "{changes:?}"
    );

    // The auditor of A sees A's actions only.
    let alice = session(&app, "alice").await;
    let seen = app
        .get("/api/admin-actions", &alice)
        .await
        .expect_status(StatusCode::OK);
    let seen = seen["actions"].as_array().expect("array");
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|x| x["tenant_id"] == a.as_str()),
        "{seen:?}"
    );
    app.get(&format!("/api/admin-actions?tenant={b}"), &alice)
        .await
        .expect_status(StatusCode::NOT_FOUND);

    // The chain verifies, and an edit is found.
    assert_eq!(
        app.state
            .store
            .verify_admin_actions()
            .await
            .expect("verify"),
        Ok(9),
        "8 above and alice's sign-in"
    );
    sqlx::query("UPDATE admin_actions SET target = 'forged' WHERE seq = 3")
        .execute(&app.raw)
        .await
        .expect("edit");
    assert_eq!(
        app.state
            .store
            .verify_admin_actions()
            .await
            .expect("verify"),
        Err(3)
    );
}

#[tokio::test]
async fn a_second_msp_sees_nothing_of_the_first() {
    let app = TestApp::new().await;
    let owner = app.login().await;
    let a = app.create_tenant(&owner, "alpha").await;
    // No API creates MSPs yet: the second one is made in the database.
    sqlx::query("INSERT INTO msps (id, name, created_at_ms) VALUES ('msp_two', 'Two', 1)")
        .execute(&app.raw)
        .await
        .expect("msp");
    let hash = sase_control::auth::hash_password(PASSWORD).expect("hash");
    app.state
        .store
        .insert_admin(&sase_control::store::AdminRecord {
            id: "adm_two".into(),
            username: "two".into(),
            password_hash: hash,
            role: "msp_owner".into(),
            msp_id: "msp_two".into(),
            tenant_id: None,
            created_by: None,
            created_at_ms: 1,
            disabled_at_ms: None,
            totp_secret: None,
            totp_enabled_at_ms: None,
            totp_last_step: None,
        })
        .await
        .expect("admin");
    let two = session(&app, "two").await;
    let listed = app
        .get("/api/tenants", &two)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(listed, json!([]));
    app.get(&format!("/api/tenants/{a}/sites"), &two)
        .await
        .expect_status(StatusCode::NOT_FOUND);
    let admins = app
        .get("/api/admins", &two)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(admins.as_array().map(Vec::len), Some(1), "only itself");
    let actions = app
        .get("/api/admin-actions", &two)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(actions["count"], 1, "its own sign-in only: {actions}");
    assert_eq!(actions["actions"][0]["action"], "admin.sign_in");
    assert_eq!(actions["actions"][0]["msp_id"], "msp_two");
    // Its own customer is its own.
    let c = app.create_tenant(&two, "gamma").await;
    let listed = app
        .get("/api/tenants", &two)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(listed[0]["id"], c.as_str());
    let listed = app
        .get("/api/tenants", &owner)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "the first MSP sees only alpha"
    );
}
