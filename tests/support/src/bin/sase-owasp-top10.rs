//! The OWASP API Security Top 10 (2023) end-to-end suite (tests/security/owasp-top10.sh).
//!
//! Starts the deliberately vulnerable API (`sase-vuln-api`, a real HTTP server; see
//! [`sase_testkit::vuln_api`]), an "internal" metadata server on loopback (what SSRF reaches),
//! and a control plane with an enrolled edge ([`Stack`]) publishing the API with one policy
//! that uses a control per risk. For each of API1..API10 the attack is sent straight to the API
//! — it must work, else the row is a set-up failure — and through the edge — where it must be
//! stopped by the control named in the row (the expected status and reason, and no trace of
//! the attack's payoff in the answer). Prints one row per risk and ends with
//! `owasp_api_top10 stopped=<k> of=10`; exits non-zero unless all ten are stopped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use reqwest::Method;
use sase_testkit::issuer::{now_unix, sign_claims, IssuerKey};
use sase_testkit::process::spawn_logged;
use sase_testkit::stack::{Stack, READY};
use serde_json::{json, Value};

#[derive(clap::Parser)]
#[command(about = "OWASP API Top 10 through the real edge")]
struct Args {
    /// Directory holding sase-control, sase-edge and sase-vuln-api.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    work_dir: PathBuf,
}

const ISS: &str = "https://idp.owasp.test";
const AUD: &str = "vuln-api";

/// A route of the policy (ids are referred to by the flow limit).
fn policy(users: &IssuerKey, upstream: &str) -> Value {
    json!({
        "issuers": [{
            "id": "idp", "issuer": ISS, "audiences": [AUD], "algorithms": ["EdDSA"],
            "keys": {"jwks": serde_json::to_value(users.jwks()).unwrap_or(Value::Null)}
        }],
        // API6: at most 3 sign-ups per client IP per hour.
        "limits": {"flows": [{"id": "signups", "routes": ["vuln/signup"], "per": "ip",
                              "requests": 3, "window_seconds": 3600}]},
        "resources": [
            {
                "name": "vuln",
                "upstream": upstream,
                "issuers": ["idp"],
                // The suite checks the API controls; CRS would stop some payloads on its own.
                "waf": {"mode": "off"},
                // API7: URL fields may not reach loopback; only the upstream runs there.
                "egress": {"upstream_networks": ["127.0.0.1/32"]},
                "routes": [
                    // API1: the account id must be the caller's `sub`.
                    {"id": "account", "methods": ["GET"], "path": "/accounts/{id}",
                     "scopes": ["accounts:read"], "owner": [{"path": "id", "claim": "sub"}]},
                    // API2: a verified token is needed.
                    {"id": "me", "methods": ["GET"], "path": "/me"},
                    // API3: the contract (below) closes the body.
                    {"id": "users", "methods": ["POST"], "path": "/users", "scopes": ["users:write"]},
                    // API5: deleting users is an admin function.
                    {"id": "user-delete", "methods": ["DELETE"], "path": "/users/{id}",
                     "scopes": ["users:admin"]},
                    // API4: 10 searches per client per minute.
                    {"id": "search", "methods": ["GET"], "path": "/search", "scopes": ["search"],
                     "limits": {"rate": [{"id": "search-per-client", "per": "client",
                                          "requests": 10, "window_seconds": 60}]}},
                    {"id": "signup", "methods": ["POST"], "path": "/signup", "public": true},
                    // API7: the body's `url` is fetched by the API.
                    {"id": "fetch", "methods": ["POST"], "path": "/fetch", "scopes": ["fetch"],
                     "url_fields": [{"body": "/url"}]},
                    {"id": "crash", "methods": ["GET"], "path": "/debug/crash", "public": true}
                ],
                // API3 and API8: the contract and response hardening.
                "api": {
                    "openapi": {
                        "openapi": "3.1.0",
                        "info": {"title": "vuln", "version": "2"},
                        "paths": {"/users": {"post": {
                            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                                "type": "object", "required": ["name", "email"],
                                "properties": {"name": {"type": "string"}, "email": {"type": "string"}}}}}},
                            "responses": {"201": {"description": "created"}}}}}
                    }
                }
            },
            {
                // API10: the partner is a third-party API; its answers must match its schema.
                "name": "partner",
                "upstream": upstream,
                "waf": {"mode": "off"},
                "egress": {"upstream_networks": ["127.0.0.1/32"], "third_party": true},
                "routes": [{"id": "rates", "methods": ["GET"], "path": "/partner/rates", "public": true}],
                "api": {"openapi": {
                    "openapi": "3.1.0",
                    "info": {"title": "partner rates", "version": "1"},
                    "paths": {"/partner/rates": {"get": {"responses": {"200": {
                        "description": "exchange rates",
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["base", "rates"],
                            "additionalProperties": false,
                            "properties": {
                                "base": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                "rates": {"type": "object", "additionalProperties": {"type": "number"}}
                            }}}}}}}}}
                }}
            }
        ]
    })
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn reason(&self) -> String {
        serde_json::from_str::<Value>(&self.text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
    fn short(&self) -> String {
        match self.reason().as_str() {
            "" => format!("{}", self.status),
            r => format!("{} {r}", self.status),
        }
    }
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn send(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer> {
        let mut req = self.http.request(method.clone(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = format!("{method} {url}");
        let resp = req.send().await.with_context(|| what.clone())?;
        Ok(Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.with_context(|| what.clone())?,
        })
    }
}

/// The outcome of one side of a row.
struct Side {
    ok: bool,
    what: String,
}

fn side(ok: bool, what: impl Into<String>) -> Side {
    Side {
        ok,
        what: what.into(),
    }
}

fn user_token(key: &IssuerKey, sub: &str, scope: &str) -> Result<String> {
    let now = now_unix();
    sign_claims(
        key,
        None,
        &json!({"iss": ISS, "aud": AUD, "sub": sub, "iat": now, "exp": now + 3600, "scope": scope}),
    )
}

fn unsigned_token(sub: &str) -> String {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = now_unix();
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(
            json!({"iss": ISS, "aud": AUD, "sub": sub, "iat": now, "exp": now + 3600, "scope": "accounts:read users:admin"})
        )
    )
}

/// Starts a loopback server answering every request with `body` (the "internal" metadata
/// service that SSRF should never reach).
async fn internal_server(body: &'static str) -> Result<std::net::SocketAddr> {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

const METADATA_SECRET: &str = "AKIA-INTERNAL-METADATA-CREDENTIALS";

#[tokio::main]
async fn main() -> Result<()> {
    use clap::Parser as _;
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    let mut cmd = Command::new(args.bin_dir.join("sase-vuln-api"));
    cmd.arg("--listen").arg("127.0.0.1:0");
    let mut vuln = spawn_logged(
        &mut cmd,
        "sase-vuln-api",
        &args.work_dir.join("vuln-api.log"),
    )?;
    let line = vuln.wait_for_log_line("sase-vuln-api listening on http://", READY)?;
    let api = line
        .split("http://")
        .nth(1)
        .map(|a| format!("http://{}", a.trim()))
        .ok_or_else(|| anyhow!("no address in {line:?}"))?;
    let metadata = internal_server(METADATA_SECRET).await?;

    let users = IssuerKey::generate();
    let stack = Stack::start(
        &args.bin_dir,
        &args.work_dir,
        None,
        &policy(&users, &api),
        "127.0.0.1:0",
    )
    .await?;
    let edge = format!("http://{}", stack.edge_addr);
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
    };
    let alice = user_token(&users, "alice", "accounts:read users:write search fetch")?;
    let mut rows: Vec<(&str, &str, Side, Side)> = Vec::new();

    // API1: alice reads bob's account.
    {
        let attack = |base: String| {
            let c = &client;
            let t = alice.clone();
            async move {
                c.send(Method::GET, &format!("{base}/accounts/bob"), Some(&t), None)
                    .await
            }
        };
        let d = attack(api.clone()).await?;
        let e = attack(edge.clone()).await?;
        rows.push((
            "API1",
            "broken object level authorization: alice reads /accounts/bob",
            side(
                d.status == 200 && d.text.contains("\"owner\":\"bob\""),
                d.short(),
            ),
            side(
                e.status == 403 && e.reason() == "object_not_owned" && !e.text.contains("BE71"),
                e.short(),
            ),
        ));
    }
    // API2: an unsigned (alg none) token claiming to be admin.
    {
        let forged = unsigned_token("admin");
        let d = client
            .send(Method::GET, &format!("{api}/me"), Some(&forged), None)
            .await?;
        let e = client
            .send(Method::GET, &format!("{edge}/me"), Some(&forged), None)
            .await?;
        rows.push((
            "API2",
            "broken authentication: alg=none token as admin on /me",
            side(
                d.status == 200 && d.text.contains("\"role\":\"admin\""),
                d.short(),
            ),
            side(
                e.status == 401 && e.reason().starts_with("token_") && !e.text.contains("admin"),
                e.short(),
            ),
        ));
    }
    // API3: mass assignment of is_admin.
    {
        let body = json!({"name": "Eve", "email": "eve@vuln.test", "is_admin": true});
        let d = client
            .send(
                Method::POST,
                &format!("{api}/users"),
                Some(&alice),
                Some(&body),
            )
            .await?;
        let e = client
            .send(
                Method::POST,
                &format!("{edge}/users"),
                Some(&alice),
                Some(&body),
            )
            .await?;
        rows.push((
            "API3",
            "broken object property level authorization: POST /users with is_admin=true",
            side(
                d.status == 201 && d.text.contains("\"is_admin\":true"),
                d.short(),
            ),
            side(
                e.status == 400
                    && e.reason() == "body_invalid"
                    && e.text.contains("/body/is_admin"),
                e.short(),
            ),
        ));
    }
    // API4: 30 searches in a burst.
    {
        let mut direct_ok = 0;
        let mut edge_ok = 0;
        let mut edge_limited = 0;
        for _ in 0..30 {
            if client
                .send(
                    Method::GET,
                    &format!("{api}/search?q=a"),
                    Some(&alice),
                    None,
                )
                .await?
                .status
                == 200
            {
                direct_ok += 1;
            }
            let e = client
                .send(
                    Method::GET,
                    &format!("{edge}/search?q=a"),
                    Some(&alice),
                    None,
                )
                .await?;
            match (e.status, e.reason().as_str()) {
                (200, _) => edge_ok += 1,
                (429, "rate_limited") => edge_limited += 1,
                _ => {}
            }
        }
        rows.push((
            "API4",
            "unrestricted resource consumption: 30 searches at once",
            side(direct_ok == 30, format!("{direct_ok}/30 answered")),
            side(
                edge_ok <= 10 && edge_limited >= 20,
                format!("{edge_ok} answered, {edge_limited} x 429 rate_limited"),
            ),
        ));
    }
    // API5: a user calls the admin-only DELETE.
    {
        let d = client
            .send(
                Method::DELETE,
                &format!("{api}/users/bob"),
                Some(&alice),
                None,
            )
            .await?;
        let e = client
            .send(
                Method::DELETE,
                &format!("{edge}/users/alice"),
                Some(&alice),
                None,
            )
            .await?;
        rows.push((
            "API5",
            "broken function level authorization: a user calls DELETE /users/{id}",
            side(d.status == 200 && d.text.contains("\"deleted\""), d.short()),
            side(e.status == 403 && e.reason() == "scope_missing", e.short()),
        ));
    }
    // API6: 8 sign-ups from one address.
    {
        let mut direct_ok = 0;
        let mut edge_ok = 0;
        let mut edge_limited = 0;
        for i in 0..8 {
            let body = json!({"email": format!("bot{i}@spam.test")});
            if client
                .send(Method::POST, &format!("{api}/signup"), None, Some(&body))
                .await?
                .status
                == 201
            {
                direct_ok += 1;
            }
            let e = client
                .send(Method::POST, &format!("{edge}/signup"), None, Some(&body))
                .await?;
            match (e.status, e.reason().as_str()) {
                (201, _) => edge_ok += 1,
                (429, "rate_limited") => edge_limited += 1,
                _ => {}
            }
        }
        rows.push((
            "API6",
            "unrestricted access to a sensitive business flow: 8 sign-ups from one IP",
            side(direct_ok == 8, format!("{direct_ok}/8 accounts created")),
            side(
                edge_ok <= 3 && edge_limited >= 5,
                format!("{edge_ok} created, {edge_limited} x 429 rate_limited"),
            ),
        ));
    }
    // API7: SSRF to the internal metadata service.
    {
        let body =
            json!({"url": format!("http://{metadata}/latest/meta-data/iam/security-credentials/")});
        let d = client
            .send(
                Method::POST,
                &format!("{api}/fetch"),
                Some(&alice),
                Some(&body),
            )
            .await?;
        let e = client
            .send(
                Method::POST,
                &format!("{edge}/fetch"),
                Some(&alice),
                Some(&body),
            )
            .await?;
        rows.push((
            "API7",
            "server side request forgery: POST /fetch {url: http://127.0.0.1:<internal>/...}",
            side(
                d.status == 200 && d.text.contains(METADATA_SECRET),
                d.short(),
            ),
            side(
                e.status == 403
                    && e.reason() == "egress_refused"
                    && !e.text.contains(METADATA_SECRET),
                e.short(),
            ),
        ));
    }
    // API8: a stack trace and a connection string in an error, no security headers.
    {
        let d = client
            .send(Method::GET, &format!("{api}/debug/crash"), None, None)
            .await?;
        let e = client
            .send(Method::GET, &format!("{edge}/debug/crash"), None, None)
            .await?;
        let leaks = |a: &Answer| a.text.contains("Traceback") || a.text.contains("postgres://");
        let hardened = |a: &Answer| {
            a.headers
                .get("x-content-type-options")
                .is_some_and(|v| v == "nosniff")
                && a.headers.contains_key("x-frame-options")
                && a.headers.contains_key("content-security-policy")
        };
        rows.push((
            "API8",
            "security misconfiguration: GET /debug/crash (stack trace, DSN, no headers)",
            side(
                d.status == 500 && leaks(&d) && !hardened(&d),
                format!("{} with a stack trace", d.status),
            ),
            side(
                !leaks(&e) && e.reason() == "upstream_error" && hardened(&e),
                format!("{} + security headers", e.short()),
            ),
        ));
    }
    // API9: the forgotten v1 endpoint.
    {
        let d = client
            .send(
                Method::GET,
                &format!("{api}/api/v1/users"),
                Some(&alice),
                None,
            )
            .await?;
        let e = client
            .send(
                Method::GET,
                &format!("{edge}/api/v1/users"),
                Some(&alice),
                None,
            )
            .await?;
        let started = Instant::now();
        let reported = loop {
            let (_, view) = stack
                .api_json(
                    Method::GET,
                    &format!("/api/tenants/{}/inventory?status=shadow", stack.tenant_id),
                    None,
                )
                .await?;
            let found = view["endpoints"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|x| x["template"] == "/api/v1/users" && x["method"] == "GET")
            });
            if found || started.elapsed() > Duration::from_secs(15) {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        rows.push((
            "API9",
            "improper inventory management: GET /api/v1/users (old undocumented version)",
            side(
                d.status == 200 && d.text.contains("password_hash"),
                d.short(),
            ),
            side(
                e.status == 404 && e.reason() == "route_not_found" && reported,
                format!(
                    "{}{}",
                    e.short(),
                    if reported {
                        ", listed as shadow"
                    } else {
                        ", NOT in the inventory"
                    }
                ),
            ),
        ));
    }
    // API10: a compromised third-party answer relayed to clients.
    {
        let d = client
            .send(Method::GET, &format!("{api}/partner/rates"), None, None)
            .await?;
        let e = client
            .send(Method::GET, &format!("{edge}/partner/rates"), None, None)
            .await?;
        rows.push((
            "API10",
            "unsafe consumption of APIs: partner answer with a script and an extra redirect",
            side(d.status == 200 && d.text.contains("<script>"), d.short()),
            side(
                e.status == 502 && e.reason() == "upstream_invalid" && !e.text.contains("<script>"),
                e.short(),
            ),
        ));
    }

    let mut stopped = 0;
    let mut setup_failures = 0;
    println!("{:<6} {:<8} {:<12} risk / attack", "risk", "direct", "edge");
    for (id, name, direct, edge) in &rows {
        if edge.ok && direct.ok {
            stopped += 1;
        }
        if !direct.ok {
            setup_failures += 1;
        }
        println!(
            "{id:<6} {:<8} {:<12} {name}\n       direct: {}; edge: {}",
            if direct.ok { "works" } else { "NO-ATTACK" },
            if edge.ok { "stopped" } else { "NOT-stopped" },
            direct.what,
            edge.what
        );
    }
    drop(stack);
    let _ = vuln.terminate();
    println!("owasp_api_top10 stopped={stopped} of=10");
    if setup_failures > 0 {
        bail!(
            "{setup_failures} attack(s) did not work against the API itself: the suite is broken"
        );
    }
    if stopped < 10 {
        bail!("{} risk(s) not stopped by the edge", 10 - stopped);
    }
    Ok(())
}
