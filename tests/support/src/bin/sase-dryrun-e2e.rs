//! Dry runs end to end, against the real binaries: requests with tokens of different scopes go
//! through a real edge and are recorded; drafts are then replayed against the recorded trail
//! through the control plane's API, and each report must name exactly the recorded requests
//! whose decision the draft changes (by reference id):
//!
//! * the list route's `orders:read` requirement replaced by `orders:admin` → exactly bob's
//!   requests (read-only token) newly refused, alice (admin) still allowed;
//! * the requirement removed → exactly carol's refused request (no scope) newly allowed;
//! * the create route removed → exactly dave's requests newly refused;
//! * the current policy as draft → nothing changes; an invalid draft → 422.
//!
//! Ends with `dryrun_e2e passed=<n> failed=<k>`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Parser;
use sase_testkit::checks::Checks;
use sase_testkit::issuer::{IssuerKey, MintOptions};
use sase_testkit::stack::{start_demo_app, Stack};
use serde_json::{json, Value};

const ISS: &str = "https://idp.dryrun.test";
const AUD: &str = "orders-api";

#[derive(Parser)]
struct Args {
    /// Directory with sase-control, sase-edge and sase-demo-app.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Work directory (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
}

fn policy(jwks: &Value, upstream: &str, list_scopes: &[&str], with_create: bool) -> Value {
    let mut routes = vec![
        json!({"id": "health", "methods": ["GET"], "path": "/health", "public": true}),
        json!({"id": "list-orders", "methods": ["GET"], "path": "/orders", "scopes": list_scopes}),
    ];
    if with_create {
        routes.push(json!({"id": "create-order", "methods": ["POST"], "path": "/orders", "scopes": ["orders:write"]}));
    }
    json!({
        "issuers": [{"id": "idp", "issuer": ISS, "audiences": [AUD], "algorithms": ["EdDSA"], "keys": {"jwks": jwks}}],
        "resources": [{"name": "orders", "upstream": upstream, "issuers": ["idp"], "routes": routes}]
    })
}

async fn dry_run(stack: &Stack, draft: &Value) -> Result<(reqwest::StatusCode, Value)> {
    stack
        .api_json(
            reqwest::Method::POST,
            &format!("/api/tenants/{}/policy/dry-run", stack.tenant_id),
            Some(json!({"policy": draft, "hours": 1})),
        )
        .await
}

fn refs(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|c| c["reference"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn run(args: &Args, checks: &mut Checks) -> Result<()> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    let (_app, upstream) = start_demo_app(bins, work)?;
    let issuer = IssuerKey::generate();
    let jwks = serde_json::to_value(issuer.jwks())?;
    let current = policy(&jwks, &upstream, &["orders:read"], true);
    let stack = Stack::start(bins, work, None, &current, "127.0.0.1:0").await?;

    // Recorded traffic: (who, scope, method, path, times, expected status).
    let http = reqwest::Client::new();
    let traffic = [
        (
            "alice",
            Some("orders:read orders:admin"),
            "GET",
            "/orders",
            2,
            200,
        ),
        ("bob", Some("orders:read"), "GET", "/orders", 3, 200),
        ("carol", None, "GET", "/orders", 1, 403),
        ("dave", Some("orders:write"), "POST", "/orders", 2, 0),
        ("anon", None, "GET", "/health", 2, 200),
    ];
    let mut by_who: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
    for (who, scope, method, path, times, expected) in traffic {
        for _ in 0..times {
            let mut req = http.request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                format!("http://{}{path}", stack.edge_addr),
            );
            if who != "anon" {
                let mut opts = MintOptions::new(ISS, AUD, who);
                opts.scope = scope.map(str::to_string);
                req = req.bearer_auth(issuer.mint(&opts)?);
            }
            if method == "POST" {
                req = req.json(&json!({"item": "book"}));
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let reference = resp
                .headers()
                .get("x-sase-reference")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!("no reference from the edge"))?
                .to_string();
            if expected != 0 && status != expected {
                checks.check(
                    false,
                    &format!("{who} {method} {path}: expected {expected}, got {status}"),
                );
            }
            by_who.entry(who).or_default().insert(reference);
        }
    }
    // Everything recorded before the dry runs.
    for reference in by_who.values().flatten() {
        if stack
            .audit_event(reference, Duration::from_secs(30))
            .await?
            .is_none()
        {
            return Err(anyhow!("request {reference} was not recorded"));
        }
    }
    checks.check(
        true,
        "10 requests recorded (alice, bob, carol, dave, anonymous)",
    );

    // 1. The list route requires orders:admin instead of orders:read.
    let (status, r) = dry_run(&stack, &policy(&jwks, &upstream, &["orders:admin"], true)).await?;
    checks.check(
        status.is_success() && refs(&r["newly_refused"]) == by_who["bob"] && r["newly_allowed_count"] == 0,
        &format!(
            "orders:read replaced by orders:admin: exactly bob's {} requests newly refused ({} refused, {} allowed, {} unchanged)",
            by_who["bob"].len(), r["newly_refused_count"], r["newly_allowed_count"], r["unchanged"]
        ),
    );
    checks.check(
        r["newly_refused"][0]["after"] == "scope_missing"
            && r["newly_refused"][0]["before"] == "allowed",
        "refusals say why (scope_missing)",
    );
    // 2. The requirement removed.
    let (status, r) = dry_run(&stack, &policy(&jwks, &upstream, &[], true)).await?;
    checks.check(
        status.is_success()
            && refs(&r["newly_allowed"]) == by_who["carol"]
            && r["newly_refused_count"] == 0,
        &format!(
            "requirement removed: exactly carol's request newly allowed ({})",
            r["newly_allowed_count"]
        ),
    );
    // 3. The create route removed.
    let (status, r) = dry_run(&stack, &policy(&jwks, &upstream, &["orders:read"], false)).await?;
    checks.check(
        status.is_success()
            && refs(&r["newly_refused"]) == by_who["dave"]
            && r["newly_allowed_count"] == 0,
        &format!(
            "create route removed: exactly dave's {} requests newly refused",
            by_who["dave"].len()
        ),
    );
    checks.check(
        r["newly_refused"][0]["after"] == "route_not_found",
        "…as route_not_found",
    );
    // 4. No change.
    let (status, r) = dry_run(&stack, &current).await?;
    checks.check(
        status.is_success()
            && r["newly_refused_count"] == 0
            && r["newly_allowed_count"] == 0
            && r["replayed"] == 10,
        &format!(
            "the current policy as draft changes nothing ({} replayed)",
            r["replayed"]
        ),
    );
    // 5. Bad drafts.
    let (status, _) = dry_run(&stack, &json!({"resources": [{"name": "x"}]})).await?;
    checks.check(
        status == reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        &format!("an invalid draft is refused: {status}"),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let mut checks = Checks::default();
    if let Err(err) = run(&args, &mut checks).await {
        checks.check(false, &format!("scenario: {err:#}"));
    }
    println!(
        "dryrun_e2e passed={} failed={}",
        checks.passed, checks.failed
    );
    if checks.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
