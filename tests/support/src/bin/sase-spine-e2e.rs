//! End-to-end test of the spine against the real binaries: a control plane, a sample upstream
//! and an edge enrolled with a claim code. Sends allowed and refused requests through the edge,
//! changes policy and measures how fast the edge enforces it, kills the control plane and checks
//! that the edge keeps enforcing and that every request's audit event arrives exactly once with
//! an intact chain, tampers with the stored bundle, and sends garbage on the edge channel.
//!
//! Ends with `spine_e2e passed=<n> failed=<m> policy_propagation_ms=<x> audit_lost=<l>
//! audit_duplicated=<d>` and exits non-zero when anything failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use sase_model::bundle::{BundlePayload, SignedBundle};
use sase_testkit::issuer::{IssuerKey, MintOptions};
use sase_testkit::process::{spawn_logged, ManagedChild};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Spine end-to-end test against the real binaries")]
struct Args {
    /// Directory holding sase-control, sase-edge and sase-demo-app.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (wiped at start).
    #[arg(long)]
    work_dir: PathBuf,
    /// Control-plane database URL (default: SQLite in the work dir).
    #[arg(long, env = "SASE_E2E_DATABASE_URL")]
    database_url: Option<String>,
}

const ISS: &str = "https://idp.e2e.local";
const ROTATING_ISS: &str = "https://rotating.e2e.local";
const AUD: &str = "orders-api";
const READY: Duration = Duration::from_secs(30);

/// What the audit trail must show for one request.
struct Expected {
    decision: &'static str,
    reason: String,
}

struct Run {
    args: Args,
    passed: u32,
    failed: u32,
    expected: BTreeMap<String, Expected>,
    control: Option<ManagedChild>,
    control_addr: String,
    ca: PathBuf,
    api: reqwest::Client,
    http: reqwest::Client,
    session: String,
}

impl Run {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("ok   {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }

    fn cp(&self) -> String {
        format!("https://{}", self.control_addr)
    }

    fn start_control(&mut self, listen: &str) -> Result<()> {
        let mut cmd = Command::new(self.args.bin_dir.join("sase-control"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.args.work_dir.join("control"))
            .arg("--listen")
            .arg(listen)
            .env("SASE_ADMIN_PASSWORD", "e2e-admin-password")
            .env("RUST_LOG", "info,sqlx=warn");
        if let Some(url) = &self.args.database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = spawn_logged(
            &mut cmd,
            "sase-control",
            &self.args.work_dir.join("control.log"),
        )?;
        let line = child.wait_for_log_line("sase-control listening on https://", READY)?;
        let addr = line
            .split("https://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| anyhow!("no address in {line:?}"))?;
        self.control_addr = addr.to_string();
        self.control = Some(child);
        Ok(())
    }

    async fn api_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self
            .api
            .request(method, format!("{}{path}", self.cp()))
            .bearer_auth(&self.session);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn put_policy(&self, tenant: &str, policy: &Value) -> Result<(StatusCode, Value)> {
        self.api_json(
            reqwest::Method::PUT,
            &format!("/api/tenants/{tenant}/policy"),
            Some(policy.clone()),
        )
        .await
    }

    /// Sends a request through the edge and checks status and reason; records the expectation.
    async fn through_edge(
        &mut self,
        name: &str,
        request: reqwest::RequestBuilder,
        status: u16,
        reason: &str,
    ) -> Result<Value> {
        let resp = request
            .send()
            .await
            .with_context(|| format!("request {name}"))?;
        let got = resp.status().as_u16();
        let reference = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let body_reason = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("allowed");
        let ok = got == status
            && body_reason == reason
            && reference.is_some()
            && (reason == "allowed"
                || body.get("reference").and_then(Value::as_str) == reference.as_deref());
        self.check(
            name,
            ok,
            format!("status {got} body {body} (wanted {status} {reason})"),
        );
        if let Some(reference) = reference {
            self.expected.insert(
                reference,
                Expected {
                    decision: if reason == "allowed" { "allow" } else { "deny" },
                    reason: reason.to_string(),
                },
            );
        }
        Ok(body)
    }
}

fn policy(jwks: &Value, jwks_url: &str, upstream: &str, list_scope: &str) -> Value {
    json!({
        "issuers": [{
            "id": "e2e-idp", "issuer": ISS, "audiences": [AUD],
            "algorithms": ["EdDSA"], "keys": {"jwks": jwks}
        }, {
            "id": "rotating-idp", "issuer": ROTATING_ISS, "audiences": [AUD],
            "algorithms": ["EdDSA"], "keys": {"jwks_url": jwks_url}
        }],
        "resources": [{
            "name": "orders", "upstream": upstream, "issuers": ["e2e-idp", "rotating-idp"],
            "max_body_bytes": 65536,
            "routes": [
                {"id": "health", "methods": ["GET"], "path": "/health", "public": true},
                {"id": "list-orders", "methods": ["GET"], "path": "/orders", "scopes": [list_scope]},
                {"id": "get-order", "methods": ["GET"], "path": "/orders/{orderId}", "scopes": ["orders:read"]},
                {"id": "create-order", "methods": ["POST"], "path": "/orders", "scopes": ["orders:write"]}
            ]
        }]
    })
}

fn start_edge(bin_dir: &Path, work: &Path) -> Result<(ManagedChild, String)> {
    let mut cmd = Command::new(bin_dir.join("sase-edge"));
    cmd.arg("run")
        .arg("--data-dir")
        .arg(work.join("edge"))
        .arg("--http-listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info");
    let mut child = spawn_logged(&mut cmd, "sase-edge", &work.join("edge.log"))?;
    let line = child.wait_for_log_line("sase-edge running", READY)?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or_else(|| anyhow!("no URL in {line:?}"))?
        .to_string();
    Ok((child, url))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let work = args.work_dir.clone();
    let bins = args.bin_dir.clone();
    let mut run = Run {
        args,
        passed: 0,
        failed: 0,
        expected: BTreeMap::new(),
        control: None,
        control_addr: String::new(),
        ca: work.join("control/tls/ca.pem"),
        api: reqwest::Client::new(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        session: String::new(),
    };
    let result = scenario(&mut run, &bins, &work).await;
    let (propagation_ms, lost, duplicated) = match result {
        Ok(figures) => figures,
        Err(err) => {
            run.check("scenario completed", false, format!("{err:#}"));
            (0, run.expected.len() as u64, 0)
        }
    };
    println!(
        "spine_e2e passed={} failed={} policy_propagation_ms={propagation_ms} audit_lost={lost} audit_duplicated={duplicated}",
        run.passed, run.failed
    );
    if run.failed > 0 || lost > 0 || duplicated > 0 {
        // `exit` skips destructors: stop the control plane first (the scenario's other children
        // were dropped when it returned).
        drop(run.control.take());
        std::process::exit(1);
    }
    Ok(())
}

async fn scenario(run: &mut Run, bins: &Path, work: &Path) -> Result<(u64, u64, u64)> {
    // --- control plane, admin, tenant, site, claim code -------------------------------------
    run.start_control("127.0.0.1:0")?;
    let ca_pem = std::fs::read(&run.ca)?;
    run.api = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
        .timeout(Duration::from_secs(20))
        .build()?;
    let login = run
        .api
        .post(format!("{}/api/login", run.cp()))
        .json(&json!({"username": "admin", "password": "e2e-admin-password"}))
        .send()
        .await?;
    run.check(
        "admin signs in",
        login.status() == StatusCode::OK,
        login.status(),
    );
    run.session = login.json::<Value>().await?["session"]
        .as_str()
        .ok_or_else(|| anyhow!("no session"))?
        .to_string();
    let (_, tenant) = run
        .api_json(
            reqwest::Method::POST,
            "/api/tenants",
            Some(json!({"name": "E2E Customer"})),
        )
        .await?;
    let tenant_id = tenant["id"]
        .as_str()
        .ok_or_else(|| anyhow!("tenant: {tenant}"))?
        .to_string();
    let (_, site) = run
        .api_json(
            reqwest::Method::POST,
            &format!("/api/tenants/{tenant_id}/sites"),
            Some(json!({"name": "Branch"})),
        )
        .await?;
    let site_id = site["id"]
        .as_str()
        .ok_or_else(|| anyhow!("site: {site}"))?
        .to_string();
    let (_, claim) = run
        .api_json(
            reqwest::Method::POST,
            &format!("/api/sites/{site_id}/claim-codes"),
            Some(json!({"ttl_minutes": 10})),
        )
        .await?;
    let code = claim["code"]
        .as_str()
        .ok_or_else(|| anyhow!("claim: {claim}"))?
        .to_string();

    // --- upstream ----------------------------------------------------------------------------
    let mut app = spawn_logged(
        Command::new(bins.join("sase-demo-app")).args(["--listen", "127.0.0.1:0"]),
        "sase-demo-app",
        &work.join("app.log"),
    )?;
    let line = app.wait_for_log_line("listening on http://", READY)?;
    let upstream = line
        .split_whitespace()
        .last()
        .ok_or_else(|| anyhow!("no upstream URL"))?
        .to_string();

    // --- enrolment -----------------------------------------------------------------------------
    let cp_url = run.cp();
    let ca_path = run.ca.clone();
    let enroll = |dir: &str| {
        Command::new(bins.join("sase-edge"))
            .args([
                "enroll",
                "--control-plane",
                &cp_url,
                "--claim",
                &code,
                "--name",
                "e2e-edge",
            ])
            .arg("--ca-cert")
            .arg(&ca_path)
            .arg("--data-dir")
            .arg(work.join(dir))
            .output()
    };
    let out = enroll("edge")?;
    run.check(
        "edge enrols with the claim code",
        out.status.success(),
        String::from_utf8_lossy(&out.stderr),
    );
    let out = enroll("edge-second")?;
    run.check(
        "a used claim code is refused",
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("refused"),
        String::from_utf8_lossy(&out.stderr),
    );
    let identity: Value = serde_json::from_slice(&std::fs::read(work.join("edge/device.json"))?)?;
    let device_id = identity["device_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // --- policy v1, then the edge starts and receives it --------------------------------------
    let issuer = IssuerKey::generate();
    let jwks = serde_json::to_value(issuer.jwks())?;
    let rotating_a = IssuerKey::generate();
    let rotating_b = IssuerKey::generate();
    let jwks_server = JwksServer::start(serde_json::to_string(&rotating_a.jwks())?).await?;
    let (status, body) = run
        .put_policy(
            &tenant_id,
            &policy(&jwks, &jwks_server.url, &upstream, "orders:read"),
        )
        .await?;
    run.check(
        "policy v1 accepted",
        status == StatusCode::OK && body["version"] == 1,
        &body,
    );
    let (mut edge, edge_url) = start_edge(bins, work)?;
    edge.wait_for_log_line("policy applied", READY)?;

    let mint = |scope: &str, f: &dyn Fn(&mut MintOptions)| -> Result<String> {
        let mut opts = MintOptions::new(ISS, AUD, "alice");
        opts.scope = Some(scope.to_string());
        f(&mut opts);
        issuer.mint(&opts)
    };
    let reader = mint("orders:read", &|_| {})?;
    let writer = mint("orders:read orders:write", &|_| {})?;
    let expired = mint("orders:read", &|o| o.exp_offset = Some(-600))?;
    let wrong_aud = mint("orders:read", &|o| o.aud = "other-api".into())?;
    let forged = {
        let other = IssuerKey::generate();
        let mut opts = MintOptions::new(ISS, AUD, "alice");
        opts.scope = Some("orders:read".into());
        opts.kid = Some(issuer.kid());
        other.mint(&opts)?
    };

    // --- decisions through the edge -------------------------------------------------------------
    let e = |path: &str| format!("{edge_url}{path}");
    let http = run.http.clone();
    run.through_edge(
        "public route without token is allowed",
        http.get(e("/health")),
        200,
        "allowed",
    )
    .await?;
    let body = run
        .through_edge(
            "reader lists orders",
            http.get(e("/orders")).bearer_auth(&reader),
            200,
            "allowed",
        )
        .await?;
    run.check(
        "upstream answered through the edge",
        body["orders"].is_array(),
        &body,
    );
    run.through_edge(
        "reader may not create orders",
        http.post(e("/orders")).bearer_auth(&reader),
        403,
        "scope_missing",
    )
    .await?;
    run.through_edge(
        "writer creates an order",
        http.post(e("/orders"))
            .bearer_auth(&writer)
            .header("content-type", "application/json")
            .body("{\"item\":\"router\",\"qty\":1}"),
        200,
        "allowed",
    )
    .await?;
    run.through_edge(
        "missing token",
        http.get(e("/orders")),
        401,
        "token_missing",
    )
    .await?;
    run.through_edge(
        "expired token",
        http.get(e("/orders")).bearer_auth(&expired),
        401,
        "token_expired",
    )
    .await?;
    run.through_edge(
        "token for another audience",
        http.get(e("/orders")).bearer_auth(&wrong_aud),
        401,
        "token_bad_audience",
    )
    .await?;
    run.through_edge(
        "token signed by another key",
        http.get(e("/orders")).bearer_auth(&forged),
        401,
        "token_invalid",
    )
    .await?;
    run.through_edge(
        "unknown route",
        http.get(e("/admin")),
        404,
        "route_not_found",
    )
    .await?;
    run.through_edge(
        "unknown method",
        http.delete(e("/orders")).bearer_auth(&writer),
        404,
        "route_not_found",
    )
    .await?;
    run.through_edge(
        "oversized body",
        http.post(e("/orders"))
            .bearer_auth(&writer)
            .body(vec![b'x'; 70_000]),
        413,
        "body_too_large",
    )
    .await?;
    run.through_edge(
        "oversized headers",
        http.get(e("/health"))
            .header("x-filler", "y".repeat(40 * 1024)),
        431,
        "headers_too_large",
    )
    .await?;

    // --- malformed policy --------------------------------------------------------------------------
    let mut bad = policy(&jwks, &jwks_server.url, &upstream, "orders:read");
    bad["resources"][0]["routes"][1]["path"] = json!("orders");
    let (status, body) = run.put_policy(&tenant_id, &bad).await?;
    run.check(
        "malformed policy answered 422 with the field path",
        status == StatusCode::UNPROCESSABLE_ENTITY
            && body["errors"][0]["path"] == "resources[0].routes[1].path",
        &body,
    );

    // --- policy propagation ------------------------------------------------------------------------
    let started = Instant::now();
    let (status, body) = run
        .put_policy(
            &tenant_id,
            &policy(&jwks, &jwks_server.url, &upstream, "orders:list"),
        )
        .await?;
    run.check(
        "policy v2 accepted",
        status == StatusCode::OK && body["version"] == 2,
        &body,
    );
    let mut propagation_ms = None;
    while started.elapsed() < Duration::from_secs(10) {
        let resp = http.get(e("/orders")).bearer_auth(&reader).send().await?;
        let status = resp.status().as_u16();
        let reference = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_default();
        let reason = if status == 403 {
            "scope_missing"
        } else {
            "allowed"
        };
        run.expected.insert(
            reference,
            Expected {
                decision: if status == 403 { "deny" } else { "allow" },
                reason: reason.to_string(),
            },
        );
        if status == 403 {
            propagation_ms = Some(started.elapsed().as_millis() as u64);
            break;
        }
    }
    let propagation_ms = propagation_ms.unwrap_or(u64::MAX);
    run.check(
        "new required scope enforced within 1000 ms of the admin call",
        propagation_ms < 1000,
        format!("{propagation_ms} ms"),
    );

    // --- JWKS from a URL: keys fetched, rotation picked up, refetch rate-limited ---------------
    let rotating = |key: &IssuerKey, kid: Option<String>| -> Result<String> {
        let mut opts = MintOptions::new(ROTATING_ISS, AUD, "carol");
        opts.scope = Some("orders:read orders:list".into());
        opts.kid = kid;
        key.mint(&opts)
    };
    run.through_edge(
        "token of a jwks_url issuer is verified with the fetched keys",
        http.get(e("/orders/1001"))
            .bearer_auth(rotating(&rotating_a, None)?),
        200,
        "allowed",
    )
    .await?;
    jwks_server.set(serde_json::to_string(&rotating_b.jwks())?);
    let rotated_at = Instant::now();
    let token_b = rotating(&rotating_b, None)?;
    let mut rotated_ms = None;
    while rotated_at.elapsed() < Duration::from_secs(15) {
        let resp = http
            .get(e("/orders/1001"))
            .bearer_auth(&token_b)
            .send()
            .await?;
        let status = resp.status().as_u16();
        if let Some(reference) = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
        {
            let (decision, reason) = if status == 200 {
                ("allow", "allowed")
            } else {
                ("deny", "token_unknown_key")
            };
            run.expected.insert(
                reference.to_string(),
                Expected {
                    decision,
                    reason: reason.into(),
                },
            );
        }
        if status == 200 {
            rotated_ms = Some(rotated_at.elapsed().as_millis() as u64);
            break;
        }
        run.check(
            "before the refetch, a new kid is refused as unknown",
            status == 401,
            status,
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    run.check(
        "rotated key accepted once the rate-limited refetch is due (<= 12 s)",
        rotated_ms.is_some_and(|ms| ms <= 12_000),
        format!("{rotated_ms:?} ms"),
    );
    let fetches_before = jwks_server.fetches();
    let unknown = rotating(&rotating_b, Some("no-such-kid".into()))?;
    for _ in 0..30 {
        run.through_edge(
            "unknown kid refused",
            http.get(e("/orders/1001")).bearer_auth(&unknown),
            401,
            "token_unknown_key",
        )
        .await?;
    }
    let extra = jwks_server.fetches() - fetches_before;
    run.check(
        "30 tokens with an unknown kid cause at most one JWKS refetch",
        extra <= 1,
        format!("{extra} fetches"),
    );
    run.through_edge(
        "token signed with the retired key is refused",
        http.get(e("/orders/1001"))
            .bearer_auth(rotating(&rotating_a, None)?),
        401,
        "token_unknown_key",
    )
    .await?;

    // --- control plane killed: the edge keeps enforcing, events wait in the spool -----------------
    let listen = run.control_addr.clone();
    if let Some(mut control) = run.control.take() {
        if let Some(child) = control.child_mut() {
            child.kill()?; // SIGKILL
            child.wait()?;
        }
    }
    for i in 0..40 {
        if i % 2 == 0 {
            run.through_edge(
                "offline: public route still served",
                http.get(e("/health")),
                200,
                "allowed",
            )
            .await?;
        } else {
            run.through_edge(
                "offline: last bundle still enforced",
                http.get(e("/orders")).bearer_auth(&reader),
                403,
                "scope_missing",
            )
            .await?;
        }
    }
    run.start_control(&listen)?;

    // --- every request's event arrives exactly once, chain intact ----------------------------------
    let (lost, duplicated) = wait_for_audit(run, &tenant_id).await?;
    run.check("no audit event lost", lost == 0, format!("{lost} missing"));
    run.check(
        "no audit event duplicated",
        duplicated == 0,
        format!("{duplicated} duplicated"),
    );
    let (_, report) = run
        .api_json(
            reqwest::Method::GET,
            &format!("/api/devices/{device_id}/audit/verify"),
            None,
        )
        .await?;
    run.check("stored chain verifies", report["intact"] == true, &report);

    // --- a tampered or foreign bundle on disk is refused and reported ------------------------------
    let bundle_path = work.join("edge/bundle.json");
    for (case, bundle_text) in [
        ("one changed byte", {
            let mut bundle: SignedBundle = serde_json::from_slice(&std::fs::read(&bundle_path)?)?;
            let mut bytes = base64::engine::general_purpose::STANDARD.decode(&bundle.payload)?;
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
            bundle.payload = base64::engine::general_purpose::STANDARD.encode(bytes);
            bundle.to_json()
        }),
        ("signed by another key", {
            let bundle: SignedBundle = serde_json::from_slice(&std::fs::read(&bundle_path)?)?;
            let payload: BundlePayload = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD.decode(&bundle.payload)?,
            )?;
            SignedBundle::sign(&payload, &ed25519_dalek::SigningKey::from_bytes(&[9; 32]))?
                .to_json()
        }),
    ] {
        edge.terminate()?;
        std::fs::write(&bundle_path, bundle_text)?;
        let (mut restarted, url) = start_edge(bins, work)?;
        let refused = restarted
            .wait_for_log_line("stored policy bundle refused", READY)
            .is_ok();
        run.check(
            &format!("edge refuses a stored bundle with {case}"),
            refused,
            "no refusal logged",
        );
        restarted.wait_for_log_line("policy applied", READY)?;
        let resp = http.get(format!("{url}/health")).send().await?;
        run.check(
            &format!("edge re-fetches the good bundle after refusing one with {case}"),
            resp.status() == StatusCode::OK,
            resp.status(),
        );
        if let Some(reference) = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
        {
            run.expected.insert(
                reference.to_string(),
                Expected {
                    decision: "allow",
                    reason: "allowed".into(),
                },
            );
        }
        edge = restarted;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rejected = 0;
    while Instant::now() < deadline {
        let (_, page) = run
            .api_json(
                reqwest::Method::GET,
                &format!("/api/audit?device={device_id}&limit=10000"),
                None,
            )
            .await?;
        rejected = page["events"].as_array().map_or(0, |e| {
            e.iter().filter(|e| e["kind"] == "policy_rejected").count()
        });
        if rejected >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.check(
        "both bundle refusals reported in the audit trail",
        rejected >= 2,
        format!("{rejected} found"),
    );

    // --- garbage on the edge channel -----------------------------------------------------------
    garbage_on_channel(run, work).await?;

    // Final accounting, now including the requests made after the restart.
    let (lost, duplicated) = wait_for_audit(run, &tenant_id).await?;
    let (_, report) = run
        .api_json(
            reqwest::Method::GET,
            &format!("/api/devices/{device_id}/audit/verify"),
            None,
        )
        .await?;
    run.check(
        "chain still intact after edge restarts",
        report["intact"] == true,
        &report,
    );
    drop(edge);
    drop(app);
    Ok((propagation_ms, lost, duplicated))
}

/// A JWK set served over HTTP on loopback, replaceable at run time, counting fetches.
struct JwksServer {
    url: String,
    body: Arc<std::sync::Mutex<String>>,
    fetches: Arc<std::sync::atomic::AtomicU64>,
}

impl JwksServer {
    async fn start(initial: String) -> Result<JwksServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/jwks.json", listener.local_addr()?);
        let body = Arc::new(std::sync::Mutex::new(initial));
        let fetches = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (b, f) = (b.clone(), f.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let text = b.lock().map(|t| t.clone()).unwrap_or_default();
                        async move {
                            anyhow::Ok(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(text),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(JwksServer { url, body, fetches })
    }

    fn set(&self, text: String) {
        if let Ok(mut body) = self.body.lock() {
            *body = text;
        }
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Waits until every expected reference is in the audit trail (or 30 s pass), then counts
/// missing and duplicated ones and checks each event's decision and reason.
async fn wait_for_audit(run: &mut Run, tenant_id: &str) -> Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, page) = run
            .api_json(
                reqwest::Method::GET,
                &format!("/api/audit?tenant={tenant_id}&limit=10000"),
                None,
            )
            .await?;
        if status != StatusCode::OK {
            bail!("audit query failed: {status} {page}");
        }
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let mut seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for event in events {
            if let Some(reference) = event["reference"].as_str() {
                seen.entry(reference.to_string())
                    .or_default()
                    .push(event.clone());
            }
        }
        let missing = run
            .expected
            .keys()
            .filter(|r| !seen.contains_key(*r))
            .count() as u64;
        if missing == 0 || Instant::now() > deadline {
            let duplicated = seen.values().filter(|v| v.len() > 1).count() as u64;
            let mut mismatched = Vec::new();
            for (reference, want) in &run.expected {
                if let Some(event) = seen.get(reference).and_then(|v| v.first()) {
                    if event["decision"] != want.decision || event["reason"] != want.reason.as_str()
                    {
                        mismatched.push(format!(
                            "{reference}: {} {}",
                            event["decision"], event["reason"]
                        ));
                    }
                }
            }
            let count = run.expected.len();
            run.check(
                &format!("audit events of {count} requests carry the decision and reason answered"),
                mismatched.is_empty(),
                mismatched.join("; "),
            );
            return Ok((missing, duplicated));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects to the edge channel with the device's own certificate and sends garbage: the
/// control plane must close the connection with a policy-violation code, raise an alert and keep
/// serving. A connection without a client certificate is refused.
async fn garbage_on_channel(run: &mut Run, work: &Path) -> Result<()> {
    let dir = work.join("edge");
    let certs = rustls_pemfile::certs(&mut std::fs::read(dir.join("device.pem"))?.as_slice())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(dir.join("device.key"))?.as_slice())?
        .ok_or_else(|| anyhow!("no device key"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(&run.ca)?.as_slice()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let with_cert = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(certs, key)?;
    let without_cert = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://{}/api/edge/channel", run.control_addr);

    let control_addr = run.control_addr.clone();
    let connect = |config: rustls::ClientConfig| {
        let url = url.clone();
        let addr = control_addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(
                    rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned(),
                    tcp,
                )
                .await?;
            anyhow::Ok(tokio_tungstenite::client_async(url, tls).await)
        }
    };

    let refused = matches!(connect(without_cert).await?, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401);
    run.check(
        "channel without a device certificate is refused with 401",
        refused,
        "not refused",
    );

    let (mut ws, _) = connect(with_cert)
        .await?
        .context("channel with the device certificate")?;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "this is not a message {".into(),
    ))
    .await?;
    let mut close_code = None;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match frame {
            Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) => {
                close_code = Some(u16::from(frame.code));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    run.check(
        "garbage on the channel closes it with code 1008",
        close_code == Some(1008),
        format!("{close_code:?}"),
    );
    let (_, alerts) = run
        .api_json(reqwest::Method::GET, "/api/alerts", None)
        .await?;
    let audited = alerts
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["kind"] == "channel_protocol_error"));
    run.check(
        "garbage on the channel is recorded as an alert",
        audited,
        &alerts,
    );
    let health = run.api.get(format!("{}/healthz", run.cp())).send().await?;
    run.check(
        "control plane keeps serving after garbage",
        health.status() == StatusCode::OK,
        health.status(),
    );
    Ok(())
}
