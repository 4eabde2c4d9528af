//! Staged policy rollouts end to end, against the real binaries: a control plane, two enrolled
//! edges (A and B) and the sample app.
//!
//! 1. A rollout whose policy points at an upstream nobody listens on, canary = A: A applies it,
//!    its health check fails, the control plane rolls it back (the stable policy republished as
//!    a newer version) — and B never receives the failed version (checked in B's own audit
//!    trail of applied versions).
//! 2. A good rollout, canary = A, short window: promoted, B gets it.
//! 3. A 50 % rollout over two edges: one canary; a second rollout meanwhile is refused (409);
//!    a manual rollback restores the previous policy everywhere.
//!
//! Ends with `rollout_e2e passed=<n> failed=<k> rollback_ms=<ms>`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Parser;
use sase_testkit::checks::Checks;
use sase_testkit::process::{spawn_logged, ManagedChild};
use sase_testkit::stack::{start_demo_app, Stack, READY};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Directory with sase-control, sase-edge and sase-demo-app.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Work directory (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
}

fn policy(upstream: &str, extra_route: bool) -> Value {
    let mut routes =
        vec![json!({"id": "health", "methods": ["GET"], "path": "/health", "public": true})];
    if extra_route {
        routes.push(json!({"id": "echo", "methods": ["GET"], "path": "/echo", "public": true}));
    }
    json!({"resources": [{"name": "app", "upstream": upstream, "routes": routes}]})
}

/// Enrols and starts a second edge on the stack's tenant and site.
async fn second_edge(stack: &Stack, bins: &Path, work: &Path) -> Result<(ManagedChild, String)> {
    let (_, sites) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/tenants/{}/sites", stack.tenant_id),
            None,
        )
        .await?;
    let site = sites
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s["id"].as_str())
        .ok_or_else(|| anyhow!("no site: {sites}"))?
        .to_string();
    let (_, claim) = stack
        .api_json(
            reqwest::Method::POST,
            &format!("/api/sites/{site}/claim-codes"),
            Some(json!({"ttl_minutes": 10})),
        )
        .await?;
    let code = claim["code"]
        .as_str()
        .ok_or_else(|| anyhow!("claim: {claim}"))?;
    let dir = work.join("edge-b");
    let out = Command::new(bins.join("sase-edge"))
        .args([
            "enroll",
            "--control-plane",
            &stack.cp,
            "--claim",
            code,
            "--name",
            "edge-b",
        ])
        .arg("--ca-cert")
        .arg(work.join("control/tls/ca.pem"))
        .arg("--data-dir")
        .arg(&dir)
        .output()?;
    if !out.status.success() {
        bail!("enrolment of B: {}", String::from_utf8_lossy(&out.stderr));
    }
    let identity: Value = serde_json::from_slice(&std::fs::read(dir.join("device.json"))?)?;
    let id = identity["device_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no device id"))?
        .to_string();
    let mut child = spawn_logged(
        Command::new(bins.join("sase-edge"))
            .args(["run", "--http-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .env("RUST_LOG", "info"),
        "sase-edge-b",
        &work.join("edge-b.log"),
    )?;
    child.wait_for_log_line("policy applied", READY)?;
    Ok((child, id))
}

/// Versions a device reported applied, from its own audit trail.
async fn applied_versions(stack: &Stack, device: &str) -> Result<Vec<u64>> {
    let (_, page) = stack
        .api_json(
            reqwest::Method::GET,
            &format!(
                "/api/audit?tenant={}&device={device}&limit=10000",
                stack.tenant_id
            ),
            None,
        )
        .await?;
    let mut versions: Vec<u64> = page["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["kind"] == "policy_applied")
                .filter_map(|e| e["policy_version"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_unstable();
    versions.dedup();
    Ok(versions)
}

async fn wait_applied_by(stack: &Stack, device: &str, version: u64) -> Result<()> {
    let started = Instant::now();
    while !applied_versions(stack, device).await?.contains(&version) {
        if started.elapsed() > READY {
            bail!("device {device} did not apply version {version}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn latest_rollout(stack: &Stack) -> Result<Value> {
    let (_, r) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/tenants/{}/policy/rollouts/latest", stack.tenant_id),
            None,
        )
        .await?;
    Ok(r)
}

async fn wait_status(stack: &Stack, status: &str, timeout: Duration) -> Result<Value> {
    let started = Instant::now();
    loop {
        let r = latest_rollout(stack).await?;
        if r["status"] == status {
            return Ok(r);
        }
        if started.elapsed() > timeout {
            bail!("rollout not {status} within {timeout:?}: {r}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(args: &Args, checks: &mut Checks) -> Result<u128> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    let (_app, upstream) = start_demo_app(bins, work)?;
    let stack = Stack::start(bins, work, None, &policy(&upstream, false), "127.0.0.1:0").await?;
    let a = stack.device_id.clone();
    let (_edge_b, b) = second_edge(&stack, bins, work).await?;
    let rollouts = format!("/api/tenants/{}/policy/rollouts", stack.tenant_id);

    // 1. A rollout that breaks the canary.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", l.local_addr()?)
    };
    let started = Instant::now();
    let (status, r) = stack
        .api_json(
            reqwest::Method::POST,
            &rollouts,
            Some(json!({"policy": policy(&dead, false), "canary": {"devices": [a]}, "window_secs": 60})),
        )
        .await?;
    checks.check(
        status == reqwest::StatusCode::CREATED,
        &format!("bad rollout started on canary A: {status}"),
    );
    let bad = r["version"]
        .as_u64()
        .ok_or_else(|| anyhow!("rollout: {r}"))?;
    let rolled = wait_status(&stack, "rolled_back", Duration::from_secs(30)).await?;
    let rollback_ms = started.elapsed().as_millis();
    let restored = rolled["rollback_version"].as_u64().unwrap_or(0);
    checks.check(
        rolled["reason"]
            .as_str()
            .is_some_and(|r| r.contains("canary unhealthy") && r.contains(&a) && r.contains(&dead)),
        &format!(
            "rolled back automatically in {rollback_ms} ms: {}",
            rolled["reason"]
        ),
    );
    checks.check(
        restored == bad + 1,
        &format!("stable policy restored as version {restored}"),
    );
    wait_applied_by(&stack, &b, restored).await?;
    wait_applied_by(&stack, &a, restored).await?;
    let b_versions = applied_versions(&stack, &b).await?;
    let a_versions = applied_versions(&stack, &a).await?;
    checks.check(
        a_versions.contains(&bad),
        &format!("canary A applied the bad version {bad} (A applied {a_versions:?})"),
    );
    checks.check(
        !b_versions.contains(&bad),
        &format!("B never received the bad version {bad} (B applied {b_versions:?})"),
    );
    let (_, alerts) = stack
        .api_json(reqwest::Method::GET, "/api/alerts", None)
        .await?;
    checks.check(
        alerts.to_string().contains("policy_rollout_rolled_back"),
        "policy_rollout_rolled_back alert raised",
    );
    let through_a = reqwest::get(format!("http://{}/health", stack.edge_addr))
        .await?
        .status();
    checks.check(
        through_a.is_success(),
        &format!("A serves again after the rollback: {through_a}"),
    );

    // 2. A good rollout: promoted after the window, B gets it.
    let (status, r) = stack
        .api_json(
            reqwest::Method::POST,
            &rollouts,
            Some(json!({"policy": policy(&upstream, true), "canary": {"devices": [a]}, "window_secs": 2})),
        )
        .await?;
    checks.check(
        status == reqwest::StatusCode::CREATED,
        &format!("good rollout started: {status}"),
    );
    let good = r["version"].as_u64().unwrap_or(0);
    let promoted = wait_status(&stack, "promoted", Duration::from_secs(30)).await?;
    checks.check(
        promoted["canaries"][0]["healthy"] == true,
        &format!(
            "promoted after the window with canary A healthy: {}",
            promoted["reason"]
        ),
    );
    wait_applied_by(&stack, &b, good).await?;
    checks.check(true, &format!("B applied the promoted version {good}"));

    let (status, _) = stack
        .api_json(
            reqwest::Method::POST,
            &rollouts,
            Some(json!({"policy": policy(&upstream, true), "canary": {"devices": ["dev_nope"]}})),
        )
        .await?;
    checks.check(
        status == reqwest::StatusCode::BAD_REQUEST,
        &format!("unknown canary device refused: {status}"),
    );

    // 3. Percentage canary, a refused concurrent rollout, a manual rollback.
    let (status, r) = stack
        .api_json(
            reqwest::Method::POST,
            &rollouts,
            Some(json!({"policy": policy(&upstream, false), "canary": {"percent": 50}, "window_secs": 3600})),
        )
        .await?;
    let canaries = r["canaries"].as_array().map_or(0, Vec::len);
    checks.check(
        status == reqwest::StatusCode::CREATED && canaries == 1,
        &format!("50 % of two edges is one canary: {canaries}"),
    );
    let third = r["version"].as_u64().unwrap_or(0);
    let (status, _) = stack
        .api_json(
            reqwest::Method::POST,
            &rollouts,
            Some(json!({"policy": policy(&upstream, true), "canary": {"percent": 50}})),
        )
        .await?;
    checks.check(
        status == reqwest::StatusCode::CONFLICT,
        &format!("a second rollout meanwhile is refused: {status}"),
    );
    let (status, back) = stack
        .api_json(
            reqwest::Method::POST,
            &format!("/api/tenants/{}/policy/rollback", stack.tenant_id),
            Some(json!({})),
        )
        .await?;
    let back_version = back["version"].as_u64().unwrap_or(0);
    checks.check(
        status.is_success() && back["policy_of_version"] == good,
        &format!("manual rollback to the policy of version {good} as version {back_version}"),
    );
    wait_applied_by(&stack, &a, back_version).await?;
    wait_applied_by(&stack, &b, back_version).await?;
    let r = latest_rollout(&stack).await?;
    checks.check(
        r["status"] == "rolled_back",
        &format!("the 50 % rollout of version {third} ended rolled back"),
    );
    Ok(rollback_ms)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let mut checks = Checks::default();
    let rollback_ms = match run(&args, &mut checks).await {
        Ok(ms) => ms,
        Err(err) => {
            checks.check(false, &format!("scenario: {err:#}"));
            0
        }
    };
    println!(
        "rollout_e2e passed={} failed={} rollback_ms={rollback_ms}",
        checks.passed, checks.failed
    );
    if checks.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
