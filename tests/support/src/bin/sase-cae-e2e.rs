//! Continuous access evaluation (CAEP) and API inventory (API9) end to end, through the real
//! binaries (tests/e2e/cae.sh).
//!
//! A control plane with an enrolled edge ([`Stack`]) publishes the sample app with a token
//! issuer. The tenant's SET transmitter is configured through the admin API. Then:
//!
//! * **keep-alive revocation**: one HTTP/1.1 connection to the edge carries a request that is
//!   allowed; a CAEP `session-revoked` SET for that token's session is pushed to the control
//!   plane; requests keep going on the SAME connection (the token now served from the edge's
//!   cache) until one is refused with 401 `token_revoked` and a `WWW-Authenticate` claims
//!   challenge. The time from sending the SET to that refusal is printed
//!   (`caep_revocation_ms=<ms>`) and must be at most 1000 ms;
//! * other subjects and a token issued after the event still pass; a replayed SET is accepted
//!   without effect; bad SETs (signature, `typ`, content type, audience, issuer, no subject)
//!   get 400 with the RFC 8935 error codes; a `credential-change` revokes a subject;
//! * an edge that was down while a SET arrived gets it when it reconnects; an edge restarted
//!   without the control plane still refuses every revoked session (persisted);
//! * **inventory**: documented, undocumented, retired and deprecated routes and unknown paths
//!   are called; the control plane's inventory lists the unknown path template and the
//!   undocumented route as shadow endpoints and the retired and deprecated ones as zombies.
//!
//! Prints `ok`/`FAIL` per check and ends with `cae_e2e passed=<n> failed=<f>
//! caep_revocation_ms=<ms>`; exits non-zero on any failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use sase_testkit::issuer::{now_unix, IssuerKey};
use sase_testkit::process::spawn_logged;
use sase_testkit::stack::{Stack, READY};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "CAEP revocation and API inventory through the real edge")]
struct Args {
    /// Directory holding sase-control and sase-edge.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    work_dir: PathBuf,
    /// PostgreSQL URL for the control plane (default: SQLite in the work directory).
    #[arg(long, env = "SASE_E2E_DATABASE_URL")]
    database_url: Option<String>,
}

const ISS: &str = "https://idp.cae.test";
const AUD: &str = "orders-api";
const SET_ISS: &str = "https://idp.cae.test/caep";
const SET_AUD: &str = "https://sase.cae.test/receiver";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";

fn policy(issuer: &IssuerKey, upstream: &str) -> Value {
    json!({
        "issuers": [{
            "id": "idp", "issuer": ISS, "audiences": [AUD], "algorithms": ["EdDSA"],
            "keys": {"jwks": serde_json::to_value(issuer.jwks()).unwrap_or(Value::Null)}
        }],
        "resources": [{
            "name": "orders",
            "upstream": upstream,
            "issuers": ["idp"],
            "waf": {"mode": "off"},
            "routes": [
                {"id": "orders", "methods": ["GET"], "path": "/orders", "scopes": ["orders:read"]},
                {"id": "order", "methods": ["GET"], "path": "/orders/{id}", "scopes": ["orders:read"]},
                {"id": "export", "methods": ["GET"], "path": "/export", "scopes": ["orders:read"]},
                {"id": "v1-orders", "methods": ["GET"], "path": "/v1/orders", "scopes": ["orders:read"], "retired": true},
                {"id": "legacy", "methods": ["GET"], "path": "/legacy-report", "scopes": ["orders:read"]}
            ],
            "api": {
                "scrub_responses": false,
                "openapi": {
                    "openapi": "3.1.0",
                    "info": {"title": "orders", "version": "1"},
                    "paths": {
                        "/orders": {"get": {"responses": {"200": {"description": "orders"}}}},
                        "/orders/{orderId}": {"get": {"responses": {"200": {"description": "one"}}}},
                        "/export": {"get": {"deprecated": true, "responses": {"200": {"description": "csv"}}}},
                        "/v1/orders": {"get": {"responses": {"200": {"description": "old"}}}}
                    }
                }
            }
        }]
    })
}

/// A user token (EdDSA) with a session id, issued at `iat`.
fn user_token(key: &IssuerKey, sub: &str, sid: &str, iat: i64) -> Result<String> {
    let claims = json!({
        "iss": ISS, "aud": AUD, "sub": sub, "sid": sid, "iat": iat, "exp": iat + 3600,
        "scope": "orders:read", "email": format!("{sub}@cae.test"),
    });
    sase_testkit::issuer::sign_claims(key, None, &claims)
}

/// A SET signed by the transmitter key, with JOSE `typ` `typ`.
fn sign_set(key: &IssuerKey, typ: &str, claims: &Value) -> Result<String> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(typ.to_string());
    header.kid = Some(key.kid());
    let encoding = EncodingKey::from_ed_pem(key.to_pkcs8_pem()?.as_bytes())?;
    Ok(jsonwebtoken::encode(&header, claims, &encoding)?)
}

fn set_claims(jti: &str, event: &str, sub_id: Value) -> Value {
    let now = now_unix();
    json!({
        "iss": SET_ISS, "aud": SET_AUD, "iat": now, "jti": jti, "sub_id": sub_id,
        "events": {event: {"event_timestamp": now}},
    })
}

fn session_subject(sub: &str, sid: &str) -> Value {
    json!({"format": "complex",
           "user": {"format": "iss_sub", "iss": ISS, "sub": sub},
           "session": {"format": "opaque", "id": sid}})
}

/// One HTTP/1.1 connection to the edge, kept alive across requests.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    /// GET `path` with the bearer token on this very connection: (status, www-authenticate,
    /// body).
    async fn get(&mut self, path: &str, token: &str) -> Result<(u16, String, Value)> {
        self.sender
            .ready()
            .await
            .context("the keep-alive connection closed")?;
        let req = Request::get(path)
            .header("host", "edge.cae.test")
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            challenge,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ))
    }
}

struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok   {name}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
}

async fn post_set(stack: &Stack, content_type: &str, body: &str) -> Result<(u16, Value)> {
    let resp = stack
        .api
        .post(format!(
            "{}/api/tenants/{}/caep/events",
            stack.cp, stack.tenant_id
        ))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Starts the edge of `stack` again (after it was stopped); its listener address.
fn start_edge(stack: &mut Stack, tag: &str) -> Result<SocketAddr> {
    let mut cmd = Command::new(stack.work.join("bin/sase-edge"));
    cmd.arg("run")
        .arg("--data-dir")
        .arg(stack.work.join("edge"))
        .arg("--http-listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info");
    let mut edge = spawn_logged(
        &mut cmd,
        "sase-edge",
        &stack.work.join(format!("edge-{tag}.log")),
    )?;
    let line = edge.wait_for_log_line("sase-edge running", READY)?;
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .ok_or_else(|| anyhow!("no URL in {line:?}"))?;
    let addr: SocketAddr = url.parse()?;
    stack.edge = Some(edge);
    stack.edge_addr = addr;
    Ok(addr)
}

/// Polls a fresh connection until `token` gets `want` (or `timeout`).
async fn wait_status(addr: SocketAddr, token: &str, want: u16, timeout: Duration) -> Result<u16> {
    let started = Instant::now();
    loop {
        let got = match Conn::open(addr).await {
            Ok(mut c) => c.get("/orders", token).await.map(|r| r.0).unwrap_or(0),
            Err(_) => 0,
        };
        if got == want || started.elapsed() > timeout {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    // The edge is restarted by this driver: keep the binary path next to the logs.
    let bin_link = args.work_dir.join("bin");
    if !bin_link.exists() {
        std::os::unix::fs::symlink(std::fs::canonicalize(&args.bin_dir)?, &bin_link)?;
    }
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(sase_testkit::demo_app::serve(
        upstream,
        std::future::pending::<()>(),
    ));

    let users = IssuerKey::generate();
    let transmitter = IssuerKey::generate();
    let mut stack = Stack::start(
        &args.bin_dir,
        &args.work_dir,
        args.database_url.as_deref(),
        &policy(&users, &format!("http://{upstream_addr}")),
        "127.0.0.1:0",
    )
    .await?;
    let mut report = Report {
        passed: 0,
        failed: 0,
    };

    // The transmitter, through the admin API (audited).
    let settings = json!({
        "issuer": SET_ISS, "audience": SET_AUD,
        "jwks": serde_json::to_value(transmitter.jwks())?, "revocation_ttl_seconds": 7200,
    });
    let (status, body) = stack
        .api_json(
            Method::PUT,
            &format!("/api/tenants/{}/caep/transmitter", stack.tenant_id),
            Some(settings),
        )
        .await?;
    if status != 200 {
        bail!("transmitter refused: {status} {body}");
    }
    let (_, actions) = stack
        .api_json(Method::GET, "/api/admin-actions?limit=50", None)
        .await?;
    report.check(
        "transmitter change recorded in the admin-action trail",
        actions
            .to_string()
            .contains("caep.transmitter.update")
            .then_some(())
            .ok_or_else(|| format!("no caep.transmitter.update in {actions}")),
    );
    let (status, _) = stack
        .api_json(
            Method::PUT,
            &format!("/api/tenants/{}/caep/transmitter", stack.tenant_id),
            Some(json!({"issuer": SET_ISS, "audience": SET_AUD,
                        "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}})),
        )
        .await?;
    report.check(
        "a symmetric transmitter key is refused (422)",
        (status == 422)
            .then_some(())
            .ok_or(format!("status {status}")),
    );

    let now = now_unix();
    let alice = user_token(&users, "alice", "sess-alice-1", now - 5)?;
    let bob = user_token(&users, "bob", "sess-bob-1", now - 5)?;
    let carol = user_token(&users, "carol", "sess-carol-1", now - 5)?;
    let dave = user_token(&users, "dave", "sess-dave-1", now - 5)?;

    // Keep-alive revocation.
    let mut conn = Conn::open(stack.edge_addr).await?;
    let (first, _, _) = conn.get("/orders", &alice).await?;
    let (second, _, _) = conn.get("/orders", &alice).await?;
    if first != 200 || second != 200 {
        bail!("alice's token is not accepted before the revocation: {first} {second}");
    }
    let set = sign_set(
        &transmitter,
        "secevent+jwt",
        &set_claims(
            "set-alice-1",
            SESSION_REVOKED,
            session_subject("alice", "sess-alice-1"),
        ),
    )?;
    let sent = Instant::now();
    let (status, body) = post_set(&stack, "application/secevent+jwt", &set).await?;
    if status != 202 {
        bail!("the SET was refused: {status} {body}");
    }
    let mut refused = None;
    let mut requests = 0u32;
    while sent.elapsed() < Duration::from_secs(5) {
        requests += 1;
        let answer = conn.get("/orders", &alice).await?;
        if answer.0 != 200 {
            refused = Some((sent.elapsed(), answer));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let revocation_ms = refused.as_ref().map_or(u128::MAX, |(d, _)| d.as_millis());
    println!(
        "caep: revoked session refused on the same keep-alive connection after {revocation_ms} ms ({requests} requests on it since the SET)"
    );
    report.check(
        "revocation reaches the open keep-alive connection within 1000 ms",
        match &refused {
            Some((elapsed, (401, challenge, body)))
                if elapsed.as_millis() <= 1000
                    && body["error"] == "token_revoked"
                    && challenge.starts_with("Bearer error=\"invalid_token\"")
                    && challenge.contains("claims=\"") =>
            {
                Ok(())
            }
            Some((elapsed, answer)) => Err(format!("after {elapsed:?}: {answer:?}")),
            None => Err("never refused within 5 s".into()),
        },
    );
    if let Some((_, (_, _, body))) = &refused {
        let reference = body["reference"].as_str().unwrap_or_default();
        let event = stack
            .audit_event(reference, Duration::from_secs(10))
            .await?;
        report.check(
            "the refusal is audited with reason token_revoked",
            match event {
                Some(e) if e["reason"] == "token_revoked" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    let mut other = Conn::open(stack.edge_addr).await?;
    let (status, _, _) = other.get("/orders", &bob).await?;
    report.check(
        "another user's session is not affected",
        (status == 200).then_some(()).ok_or(format!("{status}")),
    );
    let fresh = user_token(&users, "alice", "sess-alice-1", now_unix() + 2)?;
    let (status, _, _) = other.get("/orders", &fresh).await?;
    report.check(
        "a token issued after the event (the claims challenge met) passes",
        (status == 200).then_some(()).ok_or(format!("{status}")),
    );

    // Replay and refusals (RFC 8935 error codes).
    let (status, _) = post_set(&stack, "application/secevent+jwt", &set).await?;
    let (_, listed) = stack
        .api_json(
            Method::GET,
            &format!("/api/tenants/{}/caep/revocations", stack.tenant_id),
            None,
        )
        .await?;
    let count = listed["revocations"].as_array().map_or(0, Vec::len);
    report.check(
        "a replayed SET (same jti) is acknowledged without effect",
        (status == 202 && count == 1)
            .then_some(())
            .ok_or(format!("{status}, {count} revocations")),
    );
    let attacker = IssuerKey::from_seed(&[7; 32]);
    let forged = {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("secevent+jwt".into());
        header.kid = Some(transmitter.kid());
        let encoding = EncodingKey::from_ed_pem(attacker.to_pkcs8_pem()?.as_bytes())?;
        jsonwebtoken::encode(
            &header,
            &set_claims(
                "set-forged",
                SESSION_REVOKED,
                session_subject("bob", "sess-bob-1"),
            ),
            &encoding,
        )?
    };
    let mut wrong_aud = set_claims("set-aud", SESSION_REVOKED, session_subject("bob", "x"));
    wrong_aud["aud"] = json!("https://someone-else");
    let mut wrong_iss = set_claims("set-iss", SESSION_REVOKED, session_subject("bob", "x"));
    wrong_iss["iss"] = json!("https://evil");
    let mut no_subject = set_claims("set-nosub", SESSION_REVOKED, json!(null));
    no_subject.as_object_mut().map(|o| o.remove("sub_id"));
    let bad_sets = [
        (
            "forged signature (attacker key, transmitter kid)",
            "application/secevent+jwt",
            forged,
            "authentication_failed",
        ),
        (
            "typ JWT (an access token is not a SET)",
            "application/secevent+jwt",
            sign_set(
                &transmitter,
                "JWT",
                &set_claims("set-typ", SESSION_REVOKED, session_subject("bob", "x")),
            )?,
            "invalid_request",
        ),
        (
            "wrong content type",
            "application/jwt",
            set.clone(),
            "invalid_request",
        ),
        (
            "wrong audience",
            "application/secevent+jwt",
            sign_set(&transmitter, "secevent+jwt", &wrong_aud)?,
            "invalid_audience",
        ),
        (
            "wrong issuer",
            "application/secevent+jwt",
            sign_set(&transmitter, "secevent+jwt", &wrong_iss)?,
            "invalid_issuer",
        ),
        (
            "no subject",
            "application/secevent+jwt",
            sign_set(&transmitter, "secevent+jwt", &no_subject)?,
            "invalid_request",
        ),
        (
            "not a JWT",
            "application/secevent+jwt",
            "garbage".to_string(),
            "invalid_request",
        ),
    ];
    for (name, content_type, body, err) in bad_sets {
        let (status, answer) = post_set(&stack, content_type, &body).await?;
        report.check(
            &format!("bad SET refused: {name}"),
            (status == 400 && answer["err"] == err)
                .then_some(())
                .ok_or(format!("{status} {answer}")),
        );
    }
    let (status, _, _) = other.get("/orders", &bob).await?;
    report.check(
        "no refused SET revoked anything",
        (status == 200).then_some(()).ok_or(format!("{status}")),
    );

    // credential-change for a subject (all its sessions).
    let set = sign_set(
        &transmitter,
        "secevent+jwt",
        &set_claims(
            "set-carol",
            CREDENTIAL_CHANGE,
            json!({"format": "iss_sub", "iss": ISS, "sub": "carol"}),
        ),
    )?;
    let (status, _) = post_set(&stack, "application/secevent+jwt", &set).await?;
    let got = wait_status(stack.edge_addr, &carol, 401, Duration::from_secs(2)).await?;
    report.check(
        "credential-change revokes every token of the subject",
        (status == 202 && got == 401)
            .then_some(())
            .ok_or(format!("SET {status}, request {got}")),
    );

    // Inventory: documented, undocumented, retired, deprecated and unknown endpoints.
    for path in [
        "/orders",
        "/orders/1001",
        "/export",
        "/v1/orders",
        "/legacy-report",
        "/api/v1/users/17",
        "/api/v1/users/18",
        "/admin/debug",
    ] {
        let _ = other.get(path, &bob).await?;
    }
    let started = Instant::now();
    let inventory = loop {
        let (_, view) = stack
            .api_json(
                Method::GET,
                &format!("/api/tenants/{}/inventory", stack.tenant_id),
                None,
            )
            .await?;
        let endpoints = view["endpoints"].as_array().cloned().unwrap_or_default();
        let has = |template: &str| endpoints.iter().any(|e| e["template"] == template);
        if (has("/api/v1/users/{id}")
            && has("/export")
            && has("/v1/orders")
            && has("/legacy-report"))
            || started.elapsed() > Duration::from_secs(15)
        {
            break endpoints;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status_of = |template: &str| -> (String, i64) {
        inventory.iter().find(|e| e["template"] == template).map_or(
            (String::from("absent"), 0),
            |e| {
                (
                    e["status"].as_str().unwrap_or("?").to_string(),
                    e["count"].as_i64().unwrap_or(0),
                )
            },
        )
    };
    for (template, want, min) in [
        ("/api/v1/users/{id}", "shadow", 2),
        ("/admin/debug", "shadow", 1),
        ("/legacy-report", "shadow", 1),
        ("/v1/orders", "zombie", 1),
        ("/export", "zombie", 1),
        ("/orders/{id}", "documented", 1),
        ("/orders", "documented", 1),
    ] {
        let (got, count) = status_of(template);
        report.check(
            &format!("inventory: {template} is {want}"),
            (got == want && count >= min)
                .then_some(())
                .ok_or(format!("{got} (count {count})")),
        );
    }
    let (status, view) = stack
        .api_json(
            Method::GET,
            &format!("/api/tenants/{}/inventory?status=zombie", stack.tenant_id),
            None,
        )
        .await?;
    report.check(
        "inventory filtered by status",
        (status == 200
            && view["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 2 && e.iter().all(|x| x["status"] == "zombie")))
        .then_some(())
        .ok_or(format!("{status} {view}")),
    );

    // An edge that was away when a SET arrived gets it on reconnecting.
    if let Some(mut edge) = stack.edge.take() {
        edge.terminate()?;
    }
    let set = sign_set(
        &transmitter,
        "secevent+jwt",
        &set_claims(
            "set-dave",
            SESSION_REVOKED,
            session_subject("dave", "sess-dave-1"),
        ),
    )?;
    let (status, _) = post_set(&stack, "application/secevent+jwt", &set).await?;
    let addr = start_edge(&mut stack, "reconnect")?;
    let got = wait_status(addr, &dave, 401, Duration::from_secs(15)).await?;
    report.check(
        "a SET sent while the edge was down is enforced after it reconnects",
        (status == 202 && got == 401)
            .then_some(())
            .ok_or(format!("SET {status}, request {got}")),
    );

    // Restart without the control plane: revocations come from the edge's disk.
    if let Some(mut control) = stack.control.take() {
        control.terminate()?;
    }
    if let Some(mut edge) = stack.edge.take() {
        edge.terminate()?;
    }
    let addr = start_edge(&mut stack, "offline")?;
    let mut conn = Conn::open(addr).await?;
    let alice_after = conn.get("/orders", &alice).await?;
    let dave_after = conn.get("/orders", &dave).await?;
    let carol_after = conn.get("/orders", &carol).await?;
    let bob_after = conn.get("/orders", &bob).await?;
    report.check(
        "an edge restarted without the control plane still refuses revoked sessions",
        (alice_after.0 == 401
            && dave_after.0 == 401
            && carol_after.0 == 401
            && bob_after.0 == 200
            && alice_after.2["error"] == "token_revoked")
            .then_some(())
            .ok_or(format!(
                "alice {} dave {} carol {} bob {}",
                alice_after.0, dave_after.0, carol_after.0, bob_after.0
            )),
    );

    println!(
        "cae_e2e passed={} failed={} caep_revocation_ms={revocation_ms}",
        report.passed, report.failed
    );
    if report.failed > 0 {
        bail!("{} check(s) failed", report.failed);
    }
    Ok(())
}
