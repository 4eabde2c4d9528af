//! JWT attack suite against the real binaries (tests/security/jwt-attacks.sh).
//!
//! Starts, all on loopback: a file server for the issuer's JWK set (and for the attacker's JWK
//! set and certificate, which only the attacks point at — it counts every fetch), a counting
//! upstream (the sample app's handler, recording the `x-sase-reference` of every request it
//! receives), and a control plane with an enrolled edge ([`sase_testkit::stack::Stack`])
//! enforcing a policy whose issuer takes its keys from that `jwks_url`.
//!
//! The tokens are minted by an independent library (PyJWT + cryptography, in a venv) by
//! `tests/security/jwt_attacks.py`: the valid ones must be accepted, every attack must be
//! refused by the edge (4xx/5xx, the expected reason in the error body), must not reach the
//! upstream, and must have an audit event with that reason in the control plane. The
//! attacker's files must never be fetched.
//!
//! Then (unless `--no-outage`) the JWKS endpoint goes down: a valid token must keep working
//! from the cached keys until `refresh_seconds + max_stale_seconds` after the last successful
//! fetch, then be refused with `token_keys_unavailable` (503), and work again once the endpoint
//! is back (the edge retries every 10 s).
//!
//! Prints `ok   <name>: <status> <reason>` or `FAIL <name>: …` per case and ends with
//! `jwt_attacks tried=<n> bypassed=<b>` (bypassed = attacks answered 2xx or seen upstream).
//! Exits non-zero on any bypass, any failed check or a set-up failure.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sase_testkit::stack::Stack;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "JWT attacks through the real edge")]
struct Args {
    /// Directory holding sase-control and sase-edge.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (wiped at start).
    #[arg(long)]
    work_dir: PathBuf,
    /// Python interpreter with PyJWT[crypto] installed.
    #[arg(long)]
    python: PathBuf,
    /// The minting script.
    #[arg(long)]
    minter: PathBuf,
    /// Skip the JWKS outage phase (about 45 s).
    #[arg(long)]
    no_outage: bool,
}

const ISSUER: &str = "https://idp.attack.test";
const AUDIENCE: &str = "orders-api";
const SCOPE: &str = "orders:read";
const MAX_TOKEN_BYTES: u32 = 4096;
/// The issuer's `refresh_seconds` and `max_stale_seconds`: keys serve at most this long after
/// the last successful fetch.
const REFRESH_SECONDS: u64 = 30;
const MAX_STALE_SECONDS: u64 = 5;

#[derive(Deserialize)]
struct Case {
    name: String,
    authorization: String,
    expect: String,
    reason: String,
}

/// Static files over loopback HTTP, counting fetches per path.
#[derive(Clone, Default)]
struct Files {
    bodies: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    fetches: Arc<Mutex<BTreeMap<String, u64>>>,
    /// While set, every path answers 503 (an identity provider outage).
    down: Arc<std::sync::atomic::AtomicBool>,
    /// When a body was last served (successfully).
    last_ok: Arc<Mutex<Option<Instant>>>,
}

impl Files {
    fn set(&self, path: &str, body: Vec<u8>) {
        if let Ok(mut bodies) = self.bodies.lock() {
            bodies.insert(path.to_string(), body);
        }
    }

    fn fetches(&self, path: &str) -> u64 {
        self.fetches
            .lock()
            .map(|f| f.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        if let Ok(mut fetches) = self.fetches.lock() {
            *fetches.entry(path.to_string()).or_default() += 1;
        }
        if self.down.load(Ordering::SeqCst) {
            let mut response = Response::new(Full::new(Bytes::from_static(b"down")));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
        let body = self.bodies.lock().ok().and_then(|b| b.get(path).cloned());
        if body.is_some() {
            if let Ok(mut last) = self.last_ok.lock() {
                *last = Some(Instant::now());
            }
        }
        let mut response = Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
        if body.is_none() {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        response
    }
}

/// What the upstream saw.
#[derive(Clone, Default)]
struct Seen {
    references: Arc<Mutex<BTreeSet<String>>>,
    requests: Arc<AtomicU64>,
}

impl Seen {
    fn saw(&self, reference: &str) -> bool {
        self.references
            .lock()
            .map(|r| r.contains(reference))
            .unwrap_or(true)
    }
}

/// Serves `handler` on a fresh loopback port (HTTP/1.1); returns the address.
async fn serve<F, Fut>(handler: F) -> Result<std::net::SocketAddr>
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn policy(jwks_url: &str, upstream: &str) -> Value {
    json!({
        "issuers": [{
            "id": "attack-idp", "issuer": ISSUER, "audiences": [AUDIENCE],
            "algorithms": ["RS256", "ES256", "EdDSA"],
            "max_token_bytes": MAX_TOKEN_BYTES,
            "keys": {"jwks_url": jwks_url, "refresh_seconds": REFRESH_SECONDS,
                     "max_stale_seconds": MAX_STALE_SECONDS},
        }],
        "resources": [{
            "name": "orders", "upstream": upstream, "issuers": ["attack-idp"],
            "waf": {"mode": "off"},
            "routes": [
                {"id": "list", "methods": ["GET"], "path": "/orders", "scopes": [SCOPE]},
            ],
        }],
    })
}

struct Outcome {
    case: Case,
    status: u16,
    error: String,
    reference: String,
}

/// The JWKS endpoint goes down; returns a summary of what the edge did.
async fn outage(
    files: &Files,
    http: &reqwest::Client,
    edge: &str,
    authorization: &str,
) -> Result<String> {
    let call = || async {
        let response = http
            .get(edge)
            .header("authorization", authorization)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::Ok((status, body["error"].as_str().unwrap_or("").to_string()))
    };
    files.down.store(true, Ordering::SeqCst);
    let last_ok = files
        .last_ok
        .lock()
        .ok()
        .and_then(|l| *l)
        .context("the JWK set was never served")?;
    let allowance = Duration::from_secs(REFRESH_SECONDS + MAX_STALE_SECONDS);
    // Served from the cached keys until the allowance ends, refused (503) after.
    let mut last_accepted = None;
    let refused_at = loop {
        let (status, error) = call().await?;
        let age = last_ok.elapsed();
        match (status, error.as_str()) {
            (200, _) => last_accepted = Some(age),
            (503, "token_keys_unavailable") => break age,
            _ => bail!("during the outage, after {age:.1?}: {status} {error}"),
        }
        if age > allowance + Duration::from_secs(5) {
            bail!("still accepted {age:.1?} after the last fetch (allowance {allowance:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let served = last_accepted.context("refused at once, cached keys not used")?;
    if refused_at + Duration::from_secs(1) < allowance {
        bail!("refused after {refused_at:.1?}, before the allowance of {allowance:?}");
    }
    // The endpoint is back: the edge retries every 10 s.
    files.down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    loop {
        let (status, error) = call().await?;
        if status == 200 {
            break;
        }
        if back.elapsed() > Duration::from_secs(15) {
            bail!("not recovered 15 s after the JWKS endpoint came back: {status} {error}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(format!(
        "cached keys served for {:.1} s after the last fetch, refused from {:.1} s (503 token_keys_unavailable; allowance {} s), recovered {:.1} s after the endpoint came back",
        served.as_secs_f64(),
        refused_at.as_secs_f64(),
        allowance.as_secs(),
        back.elapsed().as_secs_f64()
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;

    // The issuer's (and the attacker's) files.
    let files = Files::default();
    let served = files.clone();
    let files_addr = serve(move |req: Request<hyper::body::Incoming>| {
        let served = served.clone();
        async move { served.answer(req.uri().path()) }
    })
    .await?;
    let base = format!("http://{files_addr}");

    // Tokens, minted by PyJWT.
    let tokens_dir = args.work_dir.join("tokens");
    let out = Command::new(&args.python)
        .arg(&args.minter)
        .arg("--out")
        .arg(&tokens_dir)
        .args(["--iss", ISSUER, "--aud", AUDIENCE, "--scope", SCOPE])
        .args(["--evil-base", &base])
        .args(["--max-token-bytes", &MAX_TOKEN_BYTES.to_string()])
        .output()
        .context("running the minter")?;
    if !out.status.success() {
        bail!("minting failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    for file in ["jwks.json", "evil-jwks.json", "evil-cert.pem"] {
        files.set(&format!("/{file}"), std::fs::read(tokens_dir.join(file))?);
    }
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(tokens_dir.join("cases.json"))?)?;

    // The upstream, counting what reaches it.
    let seen = Seen::default();
    let recorder = seen.clone();
    let upstream_addr = serve(move |req: Request<hyper::body::Incoming>| {
        let recorder = recorder.clone();
        async move {
            recorder.requests.fetch_add(1, Ordering::SeqCst);
            if let Some(reference) = req
                .headers()
                .get("x-sase-reference")
                .and_then(|v| v.to_str().ok())
            {
                if let Ok(mut refs) = recorder.references.lock() {
                    refs.insert(reference.to_string());
                }
            }
            match sase_testkit::demo_app::handle(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
    .await?;

    let policy = policy(
        &format!("{base}/jwks.json"),
        &format!("http://{upstream_addr}"),
    );
    let mut stack =
        Stack::start(&args.bin_dir, &args.work_dir, None, &policy, "127.0.0.1:0").await?;
    let edge = format!("http://{}/orders", stack.edge_addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // Ready when the edge has installed the issuer's keys (its background refresher fetches
    // them as soon as the policy is in force).
    stack
        .edge
        .as_mut()
        .context("edge not running")?
        .wait_for_log_line("JWKS installed", Duration::from_secs(30))?;
    if files.fetches("/jwks.json") == 0 {
        bail!("the edge reports keys installed but never fetched the JWK set");
    }

    let mut outcomes = Vec::new();
    for case in cases {
        let response = http
            .get(&edge)
            .header("authorization", &case.authorization)
            .send()
            .await
            .with_context(|| format!("sending {}", case.name))?;
        let status = response.status().as_u16();
        let reference = response
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let error = body["error"].as_str().unwrap_or("allowed").to_string();
        outcomes.push(Outcome {
            case,
            status,
            error,
            reference,
        });
    }

    let mut tried = 0;
    let mut bypassed = 0;
    let mut failed = 0;
    let mut accepted = 0;
    for o in &outcomes {
        let reached = !o.reference.is_empty() && seen.saw(&o.reference);
        let event = if o.reference.is_empty() {
            None
        } else {
            stack
                .audit_event(&o.reference, Duration::from_secs(30))
                .await?
        };
        let audited = event
            .as_ref()
            .and_then(|e| e["reason"].as_str())
            .unwrap_or("<no audit event>")
            .to_string();
        let problem = if o.case.expect == "accept" {
            accepted += 1;
            if o.status != 200 || !reached {
                Some(format!(
                    "valid token refused: {} {} (upstream saw it: {reached})",
                    o.status, o.error
                ))
            } else if audited != "allowed" {
                Some(format!("audit reason {audited}"))
            } else {
                None
            }
        } else {
            tried += 1;
            if (200..300).contains(&o.status) || reached {
                bypassed += 1;
                Some(format!(
                    "BYPASS {} {} (upstream saw it: {reached})",
                    o.status, o.error
                ))
            } else if o.status < 400 {
                Some(format!("unexpected status {}", o.status))
            } else if o.error != o.case.reason {
                Some(format!(
                    "refused {} {} but expected reason {}",
                    o.status, o.error, o.case.reason
                ))
            } else if audited != o.error {
                Some(format!("audit event reason {audited}, answer {}", o.error))
            } else {
                None
            }
        };
        match problem {
            None => println!("ok   {}: {} {}", o.case.name, o.status, o.error),
            Some(problem) => {
                failed += 1;
                println!("FAIL {}: {problem}", o.case.name);
            }
        }
    }

    let upstream_requests = seen.requests.load(Ordering::SeqCst);
    if upstream_requests != accepted {
        failed += 1;
        println!("FAIL upstream received {upstream_requests} requests, expected {accepted} (the valid tokens)");
    } else {
        println!("ok   upstream received only the {accepted} valid requests");
    }
    for path in ["/evil-jwks.json", "/evil-cert.pem"] {
        let n = files.fetches(path);
        if n == 0 {
            println!("ok   attacker's {path} never fetched");
        } else {
            failed += 1;
            bypassed += 1;
            println!("FAIL attacker's {path} fetched {n} times");
        }
    }
    if !args.no_outage {
        let valid = outcomes
            .iter()
            .find(|o| o.case.expect == "accept")
            .map(|o| o.case.authorization.clone())
            .unwrap_or_default();
        match outage(&files, &http, &edge, &valid).await {
            Ok(line) => println!("ok   jwks-outage: {line}"),
            Err(err) => {
                failed += 1;
                println!("FAIL jwks-outage: {err:#}");
            }
        }
    }
    if tried < 25 {
        failed += 1;
        println!("FAIL only {tried} attacks minted (at least 25 expected)");
    }
    println!(
        "jwt_attacks: {} valid tokens accepted, {failed} failed checks, {:.1} s",
        accepted,
        started.elapsed().as_secs_f64()
    );
    drop(stack);
    println!("jwt_attacks tried={tried} bypassed={bypassed}");
    if failed > 0 || bypassed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
