//! Control-plane security through the real router and database: sign-in throttling and
//! lockout (per account, per address, audited, no oracle), CSRF for cookie-authenticated
//! calls, security headers, session idle timeout / lifetime / revocation. Runs on SQLite, and on
//! PostgreSQL when `SASE_TEST_DATABASE_URL` is set.

mod common;

use axum::body::Body;
use common::{TestApp, ADMIN_PASSWORD};
use http::{Method, Request, StatusCode};
use sase_control::login_throttle;
use serde_json::{json, Value};

/// Every test of this binary runs with these budgets (set once per process): accounts lock
/// after 5 failures, addresses after 8.
fn setup() {
    let defaults = login_throttle::Settings::default();
    login_throttle::configure(login_throttle::Settings {
        account: defaults.account,
        address: login_throttle::Policy {
            max_failures: 8,
            ..defaults.address
        },
    });
}

fn login_request(username: &str, password: &str, from: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/api/login")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .expect("request");
    if let Some(ip) = from {
        request
            .extensions_mut()
            .insert(sase_control::tls::ConnInfo {
                peer: format!("{ip}:40000").parse().expect("addr"),
                client_cert: None,
            });
    }
    request
}

async fn actions(app: &TestApp, token: &str, action: &str) -> Vec<Value> {
    let trail = app
        .get("/api/admin-actions?limit=1000", token)
        .await
        .expect_status(StatusCode::OK);
    trail["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == action)
        .cloned()
        .collect()
}

#[tokio::test]
async fn brute_force_locks_the_account_and_the_right_password_is_refused_during_the_lock() {
    setup();
    let app = TestApp::new().await;
    let token = app.login().await;
    for i in 0..5 {
        let reply = app.send(login_request("admin", "wrong", None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Locked: the right password gets the same 429 as a wrong one.
    for password in [ADMIN_PASSWORD, "wrong"] {
        let reply = app.send(login_request("admin", password, None)).await;
        let body = reply.expect_status(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"], "account_locked");
        let retry: i64 = reply.headers[http::header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((890..=900).contains(&retry), "{retry}");
    }
    // Audited: one lockout, two refused attempts, attributed to the admin.
    let lockouts = actions(&app, &token, "admin.lockout").await;
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    assert_eq!(lockouts[0]["actor"], "admin");
    assert_eq!(lockouts[0]["diff"]["after"]["reason"], "account_locked");
    assert_eq!(
        actions(&app, &token, "admin.sign_in_throttled").await.len(),
        2
    );
    // Names that do not exist lock the same way (a lock says nothing about existence).
    for _ in 0..5 {
        let reply = app.send(login_request("nobody", "x", None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = app.send(login_request("nobody", "x", None)).await;
    assert_eq!(
        reply.expect_status(StatusCode::TOO_MANY_REQUESTS)["error"],
        "account_locked"
    );
    // The lock is in the database: it ends when its time is over (moved back here).
    sqlx::query(
        "UPDATE login_throttle SET locked_until_ms = 1 WHERE throttle_key = 'account:admin'",
    )
    .execute(&app.raw)
    .await
    .expect("update");
    let reply = app.send(login_request("admin", ADMIN_PASSWORD, None)).await;
    reply.expect_status(StatusCode::OK);
}

#[tokio::test]
async fn a_successful_sign_in_resets_the_account_counter() {
    setup();
    let app = TestApp::new().await;
    for round in 0..3 {
        for _ in 0..4 {
            let reply = app.send(login_request("admin", "wrong", None)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "round {round}");
        }
        let reply = app.send(login_request("admin", ADMIN_PASSWORD, None)).await;
        reply.expect_status(StatusCode::OK);
    }
}

#[tokio::test]
async fn many_accounts_from_one_address_get_that_address_throttled() {
    setup();
    let app = TestApp::new().await;
    for i in 0..8 {
        let reply = app
            .send(login_request(&format!("user{i}"), "x", Some("192.0.2.7")))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{i}");
    }
    // The address is throttled, whatever account it tries, the real admin included.
    let reply = app
        .send(login_request("admin", ADMIN_PASSWORD, Some("192.0.2.7")))
        .await;
    assert_eq!(
        reply.expect_status(StatusCode::TOO_MANY_REQUESTS)["error"],
        "login_throttled"
    );
    assert!(reply.headers.contains_key(http::header::RETRY_AFTER));
    // Another address is not.
    let reply = app
        .send(login_request("admin", ADMIN_PASSWORD, Some("198.51.100.1")))
        .await;
    let token = reply.expect_status(StatusCode::OK)["session"]
        .as_str()
        .expect("session")
        .to_string();
    let lockouts = actions(&app, &token, "admin.lockout").await;
    assert!(
        lockouts
            .iter()
            .any(|a| a["target"] == "address:192.0.2.7" && a["actor"] == "anonymous"),
        "{lockouts:?}"
    );
}

fn cookie_request(
    method: Method,
    uri: &str,
    session: &str,
    extra: &[(&str, &str)],
    body: Value,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, "127.0.0.1:1")
        .header(http::header::COOKIE, format!("sase_session={session}"))
        .header(http::header::CONTENT_TYPE, "application/json");
    for (k, v) in extra {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::from(body.to_string())).expect("request")
}

#[tokio::test]
async fn cookie_state_changes_need_the_csrf_token_and_the_origin_bearer_calls_do_not() {
    setup();
    let app = TestApp::new().await;
    let reply = app.send(login_request("admin", ADMIN_PASSWORD, None)).await;
    let body = reply.expect_status(StatusCode::OK);
    let session = body["session"].as_str().expect("session").to_string();
    let csrf = body["csrf_token"].as_str().expect("csrf").to_string();
    let cookies: Vec<String> = reply
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect();
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("sase_csrf="))
        .expect("csrf cookie");
    assert!(csrf_cookie.starts_with(&format!("sase_csrf={csrf};")));
    assert!(!csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("sase_session="))
        .expect("session cookie next to it");
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"));

    let origin = ("origin", "https://127.0.0.1:1");
    for (what, extra) in [
        ("no token", vec![origin]),
        ("wrong token", vec![origin, ("x-csrf-token", "0000")]),
        (
            "other origin",
            vec![
                ("origin", "https://evil.example"),
                ("x-csrf-token", csrf.as_str()),
            ],
        ),
        (
            "cross-site fetch",
            vec![
                ("sec-fetch-site", "cross-site"),
                ("x-csrf-token", csrf.as_str()),
            ],
        ),
        ("no origin", vec![("x-csrf-token", csrf.as_str())]),
    ] {
        let reply = app
            .send(cookie_request(
                Method::POST,
                "/api/tenants",
                &session,
                &extra,
                json!({"name": "t"}),
            ))
            .await;
        assert_eq!(
            reply.expect_status(StatusCode::FORBIDDEN)["error"],
            "csrf_refused",
            "{what}"
        );
    }
    // With the token and from this origin: done.
    let reply = app
        .send(cookie_request(
            Method::POST,
            "/api/tenants",
            &session,
            &[origin, ("x-csrf-token", &csrf)],
            json!({"name": "csrf ok"}),
        ))
        .await;
    reply.expect_status(StatusCode::CREATED);
    // Reads need no token; bearer calls need none either.
    let reply = app
        .send(
            Request::builder()
                .uri("/api/tenants")
                .header(http::header::COOKIE, format!("sase_session={session}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    reply.expect_status(StatusCode::OK);
    let reply = app
        .send_json(
            Method::POST,
            "/api/tenants",
            Some(&session),
            &json!({"name": "bearer"}),
        )
        .await;
    reply.expect_status(StatusCode::CREATED);
    // Refusals are audited for the session's admin.
    let refused = actions(&app, &session, "admin.csrf_refused").await;
    assert_eq!(refused.len(), 5, "{refused:?}");
    assert_eq!(refused[0]["actor"], "admin");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    setup();
    let app = TestApp::new().await;
    let token = app.login().await;
    for reply in [
        app.call(Method::GET, "/healthz", None, None).await,
        app.call(Method::GET, "/", None, None).await,
        app.get("/api/tenants", &token).await,
        app.call(Method::GET, "/api/tenants", None, None).await,
    ] {
        let h = &reply.headers;
        let csp = h["content-security-policy"].to_str().expect("ascii");
        for part in [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(h["strict-transport-security"]
            .to_str()
            .expect("ascii")
            .starts_with("max-age="));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cache-control"], "no-store");
        assert!(h.contains_key("permissions-policy"));
    }
}

async fn signed_in(app: &TestApp) -> String {
    app.login().await
}

async fn works(app: &TestApp, session: &str) -> bool {
    let reply = app.get("/api/me", session).await;
    match reply.status {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn sessions_end_after_idle_time_and_lifetime_and_on_sign_out() {
    setup();
    let app = TestApp::new().await;
    let idle = signed_in(&app).await;
    let old = signed_in(&app).await;
    let out = signed_in(&app).await;
    assert!(works(&app, &idle).await && works(&app, &old).await && works(&app, &out).await);
    let hash = |s: &str| sase_control::auth::secret_hash(s);
    let now = sase_control::state::now_ms();
    // Signed in 40 minutes ago, last used 31 minutes ago.
    sqlx::query(
        "UPDATE credentials SET created_at_ms = $1, last_used_at_ms = $2 WHERE token_hash = $3",
    )
    .bind(now - 40 * 60_000)
    .bind(now - 31 * 60_000)
    .bind(hash(&idle))
    .execute(&app.raw)
    .await
    .expect("update");
    sqlx::query(
        "UPDATE credentials SET created_at_ms = $1, last_used_at_ms = $2 WHERE token_hash = $3",
    )
    .bind(now - 12 * 3_600_000 - 1)
    .bind(now)
    .bind(hash(&old))
    .execute(&app.raw)
    .await
    .expect("update");
    let reply = app.get("/api/me", &idle).await;
    assert_eq!(
        reply.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "session_expired"
    );
    assert!(!works(&app, &old).await);
    // Ended sessions are gone from the database.
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM credentials WHERE token_hash IN ($1, $2)")
            .bind(hash(&idle))
            .bind(hash(&old))
            .fetch_one(&app.raw)
            .await
            .expect("count");
    assert_eq!(left, 0);
    // Sign-out ends the session server-side (a copy of the secret is worthless after).
    app.call(Method::POST, "/api/logout", Some(&out), None)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    assert!(!works(&app, &out).await);
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_keeps_api_tokens() {
    setup();
    let app = TestApp::new().await;
    let mine = signed_in(&app).await;
    let other = signed_in(&app).await;
    let token = app
        .send_json(
            Method::POST,
            "/api/tokens",
            Some(&mine),
            &json!({"name": "script"}),
        )
        .await
        .expect_status(StatusCode::CREATED)["token"]
        .as_str()
        .expect("token")
        .to_string();
    let new_password = "a much better password";
    // An API token cannot change the password; a wrong current password is refused.
    let body = json!({"current_password": ADMIN_PASSWORD, "new_password": new_password});
    let reply = app
        .send_json(Method::POST, "/api/me/password", Some(&token), &body)
        .await;
    assert_eq!(
        reply.expect_status(StatusCode::FORBIDDEN)["error"],
        "password_change_needs_session"
    );
    let reply = app
        .send_json(
            Method::POST,
            "/api/me/password",
            Some(&mine),
            &json!({"current_password": "nope", "new_password": new_password}),
        )
        .await;
    assert_eq!(
        reply.expect_status(StatusCode::UNAUTHORIZED)["error"],
        "wrong_password"
    );
    app.send_json(Method::POST, "/api/me/password", Some(&mine), &body)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    assert!(
        works(&app, &mine).await,
        "the session that changed it stays"
    );
    assert!(!works(&app, &other).await, "other sessions end");
    assert!(works(&app, &token).await, "API tokens are kept");
    let changes = actions(&app, &mine, "admin.password_change").await;
    assert_eq!(changes[0]["diff"]["after"]["other_sessions_revoked"], 1);
    // The old password no longer signs in, the new one does.
    let reply = app.send(login_request("admin", ADMIN_PASSWORD, None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = app.send(login_request("admin", new_password, None)).await;
    reply.expect_status(StatusCode::OK);
}

#[tokio::test]
async fn an_mfa_reset_ends_the_targets_sessions() {
    setup();
    let app = TestApp::new().await;
    let owner = signed_in(&app).await;
    app.send_json(
        Method::POST,
        "/api/admins",
        Some(&owner),
        &json!({"username": "eng", "password": "engineer password 1", "role": "msp_engineer"}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let eng = app
        .send(login_request("eng", "engineer password 1", None))
        .await
        .expect_status(StatusCode::OK)["session"]
        .as_str()
        .expect("session")
        .to_string();
    let eng_id = app.get("/api/me", &eng).await.expect_status(StatusCode::OK)["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(works(&app, &eng).await);
    app.call(
        Method::DELETE,
        &format!("/api/admins/{eng_id}/mfa"),
        Some(&owner),
        None,
    )
    .await
    .expect_status(StatusCode::OK);
    assert!(!works(&app, &eng).await);
    assert!(works(&app, &owner).await);
}
