//! ZTNA identity binding through the API (in-process router, real database): remote users,
//! TOTP, client sign-in refusals with stable codes, device registration with an address from
//! the site's pool, the compiled tunnel peers in the published policy (identity filled, rules
//! from groups, posture and MFA freshness), the admin's own peers kept, revocation of a user, a
//! device and a session, expiry republished by the watch, and the admin-action trail. Runs on
//! SQLite, and on PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use common::TestApp;
use http::{Method, StatusCode};
use sase_control::state::now_ms;
use serde_json::{json, Value};

const EDGE_KEY: &str = "YUjJBhJJSc1XDWciyNQ9L+vBT6afvbvdV7tYPQ+2Tw0=";
const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
const STATIC_KEY: &str = "U1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1M=";

fn current_step() -> u64 {
    u64::try_from(now_ms()).expect("time") / 1000 / sase_control::totp::STEP_SECONDS
}

fn code_at(secret: &str, step: u64) -> String {
    let key = sase_control::totp::base32_decode(secret).expect("base32");
    format!("{:06}", sase_control::totp::code_at(&key, step))
}

/// The current code: for sign-ins refused before the code is looked at.
fn code(secret: &str) -> String {
    code_at(secret, current_step())
}

/// Codes of one seed for successful sign-ins, as an authenticator app's user gets them: each of
/// a later step than the last one used (the control plane takes a step once). The control
/// plane accepts the previous, current and next step, so three sign-ins fit without waiting; a
/// fourth waits for the clock to reach the step it needs.
struct Codes {
    secret: String,
    next_step: u64,
}

impl Codes {
    fn new(secret: &str) -> Self {
        Self {
            secret: secret.to_string(),
            next_step: current_step().saturating_sub(1),
        }
    }

    async fn next(&mut self) -> String {
        let step = self.next_step.max(current_step().saturating_sub(1));
        while step > current_step() + 1 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        self.next_step = step + 1;
        code_at(&self.secret, step)
    }
}

fn posture(disk: bool) -> Value {
    json!({"os": "linux", "os_version": "6.1", "disk_encryption": disk, "screen_lock": true,
        "firewall": true, "client_version": "0.1.0"})
}

async fn peers(app: &TestApp, token: &str, tenant: &str) -> Vec<Value> {
    let p = app
        .get(&format!("/api/tenants/{tenant}/policy"), token)
        .await
        .expect_status(StatusCode::OK);
    p["policy"]["tunnel"]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Enrols (or replaces) a remote user's TOTP seed as the admin; the answer holds the secret.
async fn enrol_totp(app: &TestApp, admin: &str, t: &str, user_id: &str) -> Value {
    app.call(
        Method::POST,
        &format!("{t}/users/{user_id}/totp"),
        Some(admin),
        None,
    )
    .await
    .expect_status(StatusCode::OK)
}

async fn login(app: &TestApp, tenant: &str, user: &str, totp: Option<String>) -> common::Reply {
    app.send_json(
        Method::POST,
        "/api/ztna/login",
        None,
        &json!({"tenant_id": tenant, "username": user, "password": "remote-user-password",
            "totp": totp}),
    )
    .await
}

#[tokio::test]
async fn users_devices_rules_compile_into_peers_and_revocation_removes_them() {
    let app = TestApp::new().await;
    let admin = app.login().await;
    let tenant = app.create_tenant(&admin, "ztna-co").await;
    let site = app.create_site(&admin, &tenant, "branch").await;
    let t = format!("/api/tenants/{tenant}/ztna");

    // The admin's own peer, kept across every republication.
    app.send_json(
        Method::PUT,
        &format!("/api/tenants/{tenant}/policy"),
        Some(&admin),
        &json!({"tunnel": {"peers": [{"name": "static", "public_key": STATIC_KEY,
            "address": "100.96.9.9", "rules": [],
            "subject": "svc", "device": "dev-static", "session": "sess-static"}]}}),
    )
    .await
    .expect_status(StatusCode::OK);

    app.send_json(
        Method::PUT,
        &format!("{t}/sites/{site}"),
        Some(&admin),
        &json!({"pool": "100.96.0.0/24", "endpoint": "192.0.2.1:51820", "edge_public_key": EDGE_KEY}),
    )
    .await
    .expect_status(StatusCode::OK);
    let bad_pool = app.send_json(
        Method::PUT,
        &format!("{t}/sites/{site}"),
        Some(&admin),
        &json!({"pool": "100.96.0.1/24", "endpoint": "192.0.2.1:51820", "edge_public_key": EDGE_KEY}),
    )
    .await;
    assert_eq!(
        bad_pool.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "host bits set"
    );

    let user = app
        .send_json(
            Method::POST,
            &format!("{t}/users"),
            Some(&admin),
            &json!({"username": "alice", "password": "remote-user-password", "groups": ["staff"]}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let user_id = user["id"].as_str().expect("id").to_string();
    assert_eq!(user["totp_enrolled"], false);
    app.send_json(
        Method::POST,
        &format!("{t}/users"),
        Some(&admin),
        &json!({"username": "alice", "password": "remote-user-password"}),
    )
    .await
    .expect_status(StatusCode::CONFLICT);
    for (rule, status) in [
        (
            json!({"name": "web", "group": "staff", "resources": [
                {"destination": "10.77.0.10/32", "protocol": "tcp", "ports": "8080"}]}),
            StatusCode::CREATED,
        ),
        (
            json!({"name": "secure", "group": "staff", "resources": [
                {"destination": "10.77.0.11/32", "protocol": "icmp"}],
                "posture": {"disk_encryption": true}}),
            StatusCode::CREATED,
        ),
        (
            json!({"name": "dba", "group": "dba", "resources": [
                {"destination": "10.77.0.12/32", "protocol": "tcp", "ports": "5432"}]}),
            StatusCode::CREATED,
        ),
        (
            json!({"name": "bad", "group": "staff", "resources": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        app.send_json(Method::POST, &format!("{t}/rules"), Some(&admin), &rule)
            .await
            .expect_status(status);
    }

    // Sign-in refusals, each with its stable code.
    let r = login(&app, &tenant, "alice", None).await;
    assert_eq!(
        r.expect_status(StatusCode::FORBIDDEN)["error"],
        "totp_not_enrolled"
    );
    let enrol = enrol_totp(&app, &admin, &t, &user_id).await;
    let secret = enrol["secret"].as_str().expect("secret").to_string();
    assert!(enrol["otpauth_uri"]
        .as_str()
        .expect("uri")
        .starts_with("otpauth://totp/"));
    let r = login(&app, &tenant, "alice", None).await;
    assert_eq!(
        r.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "totp_required"
    );
    let step = current_step();
    let accepted: Vec<String> = (step - 1..=step + 1).map(|s| code_at(&secret, s)).collect();
    let wrong = ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !accepted.iter().any(|a| a == c))
        .expect("a code no step in the window has");
    let r = login(&app, &tenant, "alice", Some(wrong.into())).await;
    assert_eq!(
        r.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "totp_invalid"
    );
    let r = login(&app, &tenant, "nobody", Some(code(&secret))).await;
    assert_eq!(
        r.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "invalid_credentials"
    );
    let mut codes = Codes::new(&secret);
    let first_code = codes.next().await;
    let session = login(&app, &tenant, "alice", Some(first_code.clone()))
        .await
        .expect_status(StatusCode::OK);
    let token = session["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("zt_"));
    // A code opens one session: the same code again, still inside its window, is refused.
    let r = login(&app, &tenant, "alice", Some(first_code)).await;
    assert_eq!(
        r.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "totp_invalid"
    );

    // Client endpoints refuse admin credentials; admin endpoints refuse client tokens.
    let r = app
        .send_json(Method::POST, "/api/ztna/devices", Some(&admin), &json!({}))
        .await;
    assert_eq!(
        r.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "client_token_required"
    );
    app.get(&format!("{t}/users"), &token)
        .await
        .expect_status(StatusCode::UNAUTHORIZED);

    // Register a device with a failing posture: the rule needing disk encryption is withheld.
    let reg = app
        .send_json(
            Method::POST,
            "/api/ztna/devices",
            Some(&token),
            &json!({"site_id": site, "name": "laptop", "public_key": KEY_A, "posture": posture(false)}),
        )
        .await
        .expect_status(StatusCode::OK);
    let device_id = reg["device_id"].as_str().expect("device").to_string();
    assert_eq!(reg["address"], "100.96.0.2");
    assert_eq!(reg["endpoint"], "192.0.2.1:51820");
    assert_eq!(reg["edge_public_key"], EDGE_KEY);
    assert_eq!(reg["allowed_ips"], json!(["10.77.0.10/32"]));
    assert_eq!(
        reg["rules"][1]["refused"],
        json!(["posture:disk_encryption"])
    );
    let p = peers(&app, &admin, &tenant).await;
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0]["name"], "static");
    assert_eq!(p[1]["subject"], "alice");
    assert_eq!(p[1]["groups"], json!(["staff"]));
    assert_eq!(p[1]["device"], device_id.as_str());
    assert_eq!(p[1]["session"], session["session_id"]);
    assert_eq!(p[1]["address"], "100.96.0.2");
    assert_eq!(p[1]["rules"].as_array().expect("rules").len(), 1);

    // A passing posture report adds the rule at once.
    let cfg = app
        .send_json(
            Method::PUT,
            &format!("/api/ztna/devices/{device_id}/posture"),
            Some(&token),
            &json!({"posture": posture(true)}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        cfg["allowed_ips"],
        json!(["10.77.0.10/32", "10.77.0.11/32"])
    );
    assert_eq!(
        peers(&app, &admin, &tenant).await[1]["rules"]
            .as_array()
            .expect("r")
            .len(),
        2
    );

    // A group change follows at once; an admin policy write keeps the compiled peers.
    app.send_json(
        Method::PUT,
        &format!("{t}/users/{user_id}/groups"),
        Some(&admin),
        &json!({"groups": ["staff", "dba"]}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(
        peers(&app, &admin, &tenant).await[1]["rules"]
            .as_array()
            .expect("r")
            .len(),
        3
    );
    app.send_json(
        Method::PUT,
        &format!("/api/tenants/{tenant}/policy"),
        Some(&admin),
        &json!({"tunnel": {"peers": [{"name": "static", "public_key": STATIC_KEY,
            "address": "100.96.9.9", "rules": [],
            "subject": "svc", "device": "dev-static", "session": "sess-static"}]}}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(peers(&app, &admin, &tenant).await.len(), 2);

    // The same key under another user is refused; a second device gets the next address.
    let reg_b = app
        .send_json(
            Method::POST,
            "/api/ztna/devices",
            Some(&token),
            &json!({"site_id": site, "name": "phone", "public_key": KEY_B}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(reg_b["address"], "100.96.0.3");
    let phone = reg_b["device_id"].as_str().expect("id").to_string();

    // Revoke the phone: its peer goes, its key cannot register again.
    let rev = app
        .call(
            Method::POST,
            &format!("{t}/devices/{phone}/revoke"),
            Some(&admin),
            None,
        )
        .await
        .expect_status(StatusCode::OK);
    assert!(rev["version"].as_u64().expect("version") > 1);
    assert_eq!(peers(&app, &admin, &tenant).await.len(), 2);
    let r = app
        .send_json(
            Method::POST,
            "/api/ztna/devices",
            Some(&token),
            &json!({"site_id": site, "name": "phone", "public_key": KEY_B}),
        )
        .await;
    assert_eq!(
        r.expect_status(StatusCode::FORBIDDEN)["error"],
        "device_revoked"
    );

    // Disable the user: the peer goes, the token and sign-in are refused.
    app.call(
        Method::POST,
        &format!("{t}/users/{user_id}/disable"),
        Some(&admin),
        None,
    )
    .await
    .expect_status(StatusCode::OK);
    let p = peers(&app, &admin, &tenant).await;
    assert_eq!(p.len(), 1, "only the static peer is left: {p:?}");
    let r = app
        .get(&format!("/api/ztna/devices/{device_id}/config"), &token)
        .await;
    assert_eq!(
        r.expect_status(StatusCode::FORBIDDEN)["error"],
        "user_disabled"
    );
    let r = login(&app, &tenant, "alice", Some(code(&secret))).await;
    assert_eq!(
        r.expect_status(StatusCode::FORBIDDEN)["error"],
        "user_disabled"
    );

    // Enable again, sign in again: the device comes back on re-registration only.
    app.call(
        Method::POST,
        &format!("{t}/users/{user_id}/enable"),
        Some(&admin),
        None,
    )
    .await
    .expect_status(StatusCode::OK);
    let r = app
        .get(&format!("/api/ztna/devices/{device_id}/config"), &token)
        .await;
    assert_eq!(
        r.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "session_revoked"
    );
    assert_eq!(peers(&app, &admin, &tenant).await.len(), 1);
    let session2 = login(&app, &tenant, "alice", Some(codes.next().await))
        .await
        .expect_status(StatusCode::OK);
    let token2 = session2["token"].as_str().expect("token").to_string();
    app.send_json(
        Method::POST,
        "/api/ztna/devices",
        Some(&token2),
        &json!({"site_id": site, "name": "laptop", "public_key": KEY_A}),
    )
    .await
    .expect_status(StatusCode::OK);
    let p = peers(&app, &admin, &tenant).await;
    assert_eq!(p.len(), 2);
    assert_eq!(p[1]["address"], "100.96.0.2", "same key, same address");

    // Session revocation removes it again.
    let sid = session2["session_id"].as_str().expect("sid");
    app.call(
        Method::POST,
        &format!("{t}/sessions/{sid}/revoke"),
        Some(&admin),
        None,
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(peers(&app, &admin, &tenant).await.len(), 1);

    // Expiry: a session whose end passed is taken out by the watch.
    let session3 = login(&app, &tenant, "alice", Some(codes.next().await))
        .await
        .expect_status(StatusCode::OK);
    let token3 = session3["token"].as_str().expect("token").to_string();
    app.send_json(
        Method::POST,
        "/api/ztna/devices",
        Some(&token3),
        &json!({"site_id": site, "name": "laptop", "public_key": KEY_A}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(peers(&app, &admin, &tenant).await.len(), 2);
    let past = now_ms() - 1;
    sqlx::query("UPDATE ztna_sessions SET expires_at_ms = $1 WHERE id = $2")
        .bind(past)
        .bind(session3["session_id"].as_str().expect("sid"))
        .execute(&app.raw)
        .await
        .expect("expire");
    sqlx::query("UPDATE ztna_settings SET next_recompile_ms = $1 WHERE tenant_id = $2")
        .bind(past)
        .bind(&tenant)
        .execute(&app.raw)
        .await
        .expect("due");
    let done = sase_control::ztna::check_expiries(&app.state, now_ms())
        .await
        .expect("watch");
    assert_eq!(done, 1);
    assert_eq!(peers(&app, &admin, &tenant).await.len(), 1);
    let r = app
        .get(&format!("/api/ztna/devices/{device_id}/config"), &token3)
        .await;
    assert_eq!(
        r.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "session_expired"
    );

    // A new seed starts afresh: its code for the step the old seed's last code had is accepted.
    let reenrol = enrol_totp(&app, &admin, &t, &user_id).await;
    let new_secret = reenrol["secret"].as_str().expect("secret");
    let old_last_step = codes.next_step - 1;
    let step = old_last_step.max(current_step() - 1);
    login(&app, &tenant, "alice", Some(code_at(new_secret, step)))
        .await
        .expect_status(StatusCode::OK);

    // Every admin change is in the trail.
    let actions = app
        .get(&format!("/api/admin-actions?tenant={tenant}"), &admin)
        .await
        .expect_status(StatusCode::OK);
    let text = actions.to_string();
    for action in [
        "ztna.site.update",
        "ztna.user.create",
        "ztna.rule.create",
        "ztna.user.totp_enrol",
        "ztna.user.groups",
        "ztna.device.revoke",
        "ztna.user.disable",
        "ztna.user.enable",
        "ztna.session.revoke",
    ] {
        assert!(text.contains(action), "{action} missing from the trail");
    }
}

#[tokio::test]
async fn another_tenants_admin_sees_and_changes_nothing() {
    let app = TestApp::new().await;
    let admin = app.login().await;
    let a = app.create_tenant(&admin, "ztna-a").await;
    let b = app.create_tenant(&admin, "ztna-b").await;
    app.send_json(
        Method::POST,
        "/api/admins",
        Some(&admin),
        &json!({"username": "b-admin", "password": "a long enough password 1",
            "role": "customer_admin", "tenant_id": b}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let b_admin = app
        .send_json(
            Method::POST,
            "/api/login",
            None,
            &json!({"username": "b-admin", "password": "a long enough password 1"}),
        )
        .await
        .expect_status(StatusCode::OK)["session"]
        .as_str()
        .expect("session")
        .to_string();
    let user = app
        .send_json(
            Method::POST,
            &format!("/api/tenants/{a}/ztna/users"),
            Some(&admin),
            &json!({"username": "carol", "password": "remote-user-password"}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let uid = user["id"].as_str().expect("id");
    let r = app
        .call(
            Method::POST,
            &format!("/api/tenants/{a}/ztna/users/{uid}/disable"),
            Some(&b_admin),
            None,
        )
        .await;
    assert!(matches!(
        r.status,
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN
    ));
    // Tenant B's path with tenant A's user id: not found.
    let r = app
        .call(
            Method::POST,
            &format!("/api/tenants/{b}/ztna/users/{uid}/disable"),
            Some(&b_admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let users = app
        .get(&format!("/api/tenants/{a}/ztna/users"), &admin)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(users[0]["disabled"], false);
}

/// Remote users are throttled like admins, under their own key: five failed sign-ins lock the
/// account (the right password and code then get 429 `account_locked` too), the lock is in the
/// admin trail as `ztna.lockout`, and a namesake in another tenant is not locked with it.
#[tokio::test]
async fn remote_user_sign_ins_are_throttled_per_tenant_and_user() {
    let app = TestApp::new().await;
    let admin = app.login().await;
    let mut secrets = Vec::new();
    let mut tenants = Vec::new();
    for name in ["lock-co", "other-co"] {
        let tenant = app.create_tenant(&admin, name).await;
        let t = format!("/api/tenants/{tenant}/ztna");
        let user = app
            .send_json(
                Method::POST,
                &format!("{t}/users"),
                Some(&admin),
                &json!({"username": "carol", "password": "remote-user-password"}),
            )
            .await
            .expect_status(StatusCode::CREATED);
        let user_id = user["id"].as_str().expect("id");
        let enrol = enrol_totp(&app, &admin, &t, user_id).await;
        secrets.push(enrol["secret"].as_str().expect("secret").to_string());
        tenants.push(tenant);
    }
    for _ in 0..5 {
        let r = app
            .send_json(
                Method::POST,
                "/api/ztna/login",
                None,
                &json!({"tenant_id": tenants[0], "username": "carol",
                    "password": "not-the-password", "totp": code(&secrets[0])}),
            )
            .await;
        assert_eq!(
            r.expect_status(StatusCode::UNAUTHORIZED)["error"],
            "invalid_credentials"
        );
    }
    let locked = login(&app, &tenants[0], "carol", Some(code(&secrets[0]))).await;
    assert_eq!(
        locked.expect_status(StatusCode::TOO_MANY_REQUESTS)["error"],
        "account_locked"
    );
    let trail = app
        .get("/api/admin-actions?limit=1000", &admin)
        .await
        .expect_status(StatusCode::OK);
    let lockouts: Vec<&Value> = trail["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "ztna.lockout")
        .collect();
    assert_eq!(lockouts.len(), 1, "one lock started");
    assert_eq!(
        lockouts[0]["target"],
        format!("ztna:{}/carol", tenants[0]).as_str()
    );
    let other = login(&app, &tenants[1], "carol", Some(code(&secrets[1]))).await;
    assert!(other.expect_status(StatusCode::OK)["token"]
        .as_str()
        .expect("token")
        .starts_with("zt_"));
}
