//! End-to-end check of rate limits (OWASP API4), flow limits (API6), route size limits and
//! timeouts, and a budget shared by two edges in a real Redis, through the real binaries: a
//! control plane, two edges of one tenant enrolled with it, a `redis-server` started here, the
//! demo app (in-process) as the upstream and a "black hole" upstream that never answers.
//!
//! Checks, each against the edge's answer and its audit event:
//! * a per-IP sliding window (4 per minute): the fifth request gets 429 `rate_limited` with
//!   `Retry-After` and `RateLimit-*` headers; the audit event names the limit;
//! * a per-client token bucket (5 per minute): alice is refused after five, bob is not;
//! * a flow (3 sign-ups per IP per hour over `POST /signup` and `POST /signup/confirm`);
//! * a route body limit (413), a route header limit (431), a route body timeout on a body that
//!   stops arriving (408 `request_timeout`), a route upstream timeout (504);
//! * two edges sharing a budget of N per minute (blocks of B): together they admit at most
//!   N + B (in fact at most N) — the figures are printed;
//! * Redis stopped: `fail_open` admits (local limits only, audited in the detail), then
//!   `fail_closed` refuses with 503 `rate_limit_store_unavailable`.
//!
//! Ends with `limits_e2e passed=<n> failed=<f> shared_admitted=<a> shared_budget=<N>
//! shared_block=<B>` and fails when `f > 0`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use sase_testkit::issuer::{IssuerKey, MintOptions};
use sase_testkit::process::{spawn_logged, wait_for_tcp, ManagedChild};
use sase_testkit::stack::{Stack, READY};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(about = "Rate limits, flow limits and shared budgets end-to-end test")]
struct Args {
    /// Directory holding the sase-control and sase-edge binaries.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (logs, data dirs, Redis).
    #[arg(long)]
    work_dir: PathBuf,
    /// The shared budget per minute.
    #[arg(long, default_value_t = 40)]
    budget: u32,
    /// Tokens per block.
    #[arg(long, default_value_t = 5)]
    block: u32,
}

const ISS: &str = "https://idp.limits.example";
const AUD: &str = "limits";

fn policy(app: &str, hole: &str, redis: &str, jwks: &Value, args: &Args, on: &str) -> Value {
    json!({
        "issuers": [{
            "id": "demo", "issuer": ISS, "audiences": [AUD], "algorithms": ["EdDSA"],
            "keys": {"jwks": jwks}
        }],
        "limits": {
            "store": {"redis_url": redis, "block": args.block, "on_unreachable": on, "timeout_ms": 300},
            "flows": [{
                "id": "signups", "routes": ["app/signup", "app/signup-confirm"], "per": "ip",
                "algorithm": "sliding_window", "requests": 3, "window_seconds": 3600
            }]
        },
        "resources": [
            {
                "name": "app", "upstream": app, "issuers": ["demo"], "waf": {"mode": "off"},
                "routes": [
                    {"id": "health", "methods": ["GET"], "path": "/health", "public": true,
                     "limits": {"rate": [{"id": "per-ip", "per": "ip", "algorithm": "sliding_window",
                                          "requests": 4, "window_seconds": 60}]}},
                    {"id": "orders", "methods": ["GET"], "path": "/orders", "scopes": ["orders:read"],
                     "limits": {"rate": [{"id": "per-client", "per": "client", "requests": 5,
                                          "window_seconds": 60}]}},
                    {"id": "signup", "methods": ["POST"], "path": "/signup", "public": true},
                    {"id": "signup-confirm", "methods": ["POST"], "path": "/signup/confirm", "public": true},
                    {"id": "upload", "methods": ["PUT"], "path": "/upload", "public": true,
                     "limits": {"max_body_bytes": 1024}},
                    {"id": "slow-body", "methods": ["POST"], "path": "/slowbody", "public": true,
                     "limits": {"body_timeout_ms": 300}},
                    {"id": "small", "methods": ["GET"], "path": "/small", "public": true,
                     "limits": {"max_header_bytes": 1024}},
                    {"id": "fleet", "methods": ["GET"], "path": "/orders/{id}", "public": true,
                     "limits": {"rate": [{"id": "budget", "per": "route", "requests": args.budget,
                                          "window_seconds": 60, "shared": true}]}},
                    {"id": "stock", "methods": ["GET"], "path": "/stock/{id}", "public": true,
                     "limits": {"rate": [{"id": "budget", "per": "route", "requests": args.budget,
                                          "window_seconds": 60, "shared": true}]}}
                ]
            },
            {
                "name": "hole", "upstream": hole, "waf": {"mode": "off"},
                "routes": [{"id": "slow", "methods": ["GET"], "path": "/slow", "public": true,
                            "limits": {"upstream_timeout_ms": 500}}]
            }
        ]
    })
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn reference(&self) -> String {
        self.header("x-sase-reference")
            .unwrap_or_default()
            .to_string()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Answer> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let _ = resp.bytes().await;
    Ok(Answer { status, headers })
}

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(note) => {
                self.passed += 1;
                println!("PASS {name}: {note}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
}

async fn audited(
    stack: &Stack,
    reference: &str,
    reason: &str,
    detail: Option<&str>,
) -> Result<(), String> {
    let event = stack
        .audit_event(reference, Duration::from_secs(20))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no audit event {reference}"))?;
    if event["reason"] != reason {
        return Err(format!("audit reason {} (want {reason})", event["reason"]));
    }
    if let Some(want) = detail {
        let got = event["detail"].as_str().unwrap_or_default();
        if !got.contains(want) {
            return Err(format!("audit detail {got:?} lacks {want:?}"));
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Starts `redis-server` on a free loopback port, without persistence.
fn start_redis(work: &Path) -> Result<(ManagedChild, u16)> {
    let port = free_port()?;
    let dir = work.join("redis");
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(&dir);
    let child = spawn_logged(&mut cmd, "redis-server", &work.join("redis.log"))?;
    wait_for_tcp(("127.0.0.1", port), READY)?;
    Ok((child, port))
}

/// Enrols a second edge in the stack's tenant (a new site) and runs it.
async fn second_edge(stack: &Stack, bins: &Path) -> Result<(ManagedChild, SocketAddr)> {
    let (_, site) = stack
        .api_json(
            reqwest::Method::POST,
            &format!("/api/tenants/{}/sites", stack.tenant_id),
            Some(json!({"name": "Second branch"})),
        )
        .await?;
    let site_id = site["id"].as_str().ok_or_else(|| anyhow!("site: {site}"))?;
    let (_, claim) = stack
        .api_json(
            reqwest::Method::POST,
            &format!("/api/sites/{site_id}/claim-codes"),
            Some(json!({"ttl_minutes": 10})),
        )
        .await?;
    let code = claim["code"]
        .as_str()
        .ok_or_else(|| anyhow!("claim: {claim}"))?;
    let data = stack.work.join("edge2");
    let out = Command::new(bins.join("sase-edge"))
        .args([
            "enroll",
            "--control-plane",
            &stack.cp,
            "--claim",
            code,
            "--name",
            "e2e-edge-2",
        ])
        .arg("--ca-cert")
        .arg(stack.work.join("control/tls/ca.pem"))
        .arg("--data-dir")
        .arg(&data)
        .output()?;
    if !out.status.success() {
        bail!("enrolment failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut cmd = Command::new(bins.join("sase-edge"));
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&data)
        .arg("--http-listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info");
    let mut edge = spawn_logged(&mut cmd, "sase-edge-2", &stack.work.join("edge2.log"))?;
    let line = edge.wait_for_log_line("sase-edge running", READY)?;
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .ok_or_else(|| anyhow!("no URL in {line:?}"))?;
    let addr: SocketAddr = url.parse().with_context(|| format!("edge address {url}"))?;
    edge.wait_for_log_line("policy applied", READY)?;
    Ok((edge, addr))
}

/// Waits until at least `margin` remains in the current clock minute (shared budgets are
/// counted per clock-aligned minute; a run across a boundary would see two budgets).
async fn within_one_minute(margin: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_millis(u64::try_from(now.as_millis() % 60_000).unwrap_or(0));
    let left = Duration::from_secs(60).saturating_sub(into);
    if left < margin {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    let (mut redis, redis_port) = start_redis(&args.work_dir)?;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = format!("http://{}", listener.local_addr()?);
    tokio::spawn(sase_testkit::demo_app::serve(
        listener,
        std::future::pending::<()>(),
    ));
    // An upstream that accepts and reads but never answers.
    let hole_listener = TcpListener::bind("127.0.0.1:0").await?;
    let hole = format!("http://{}", hole_listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = hole_listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });

    let key = IssuerKey::generate();
    let jwks = serde_json::to_value(key.jwks())?;
    let mint = |sub: &str| {
        let mut opts = MintOptions::new(ISS, AUD, sub);
        opts.scope = Some("orders:read".into());
        key.mint(&opts)
    };
    let (alice, bob) = (mint("alice")?, mint("bob")?);

    let text = policy(&app, &hole, &redis_url, &jwks, &args, "fail_open");
    let stack = Stack::start(&args.bin_dir, &args.work_dir, None, &text, "127.0.0.1:0").await?;
    let (mut edge2, edge2_addr) = second_edge(&stack, &args.bin_dir).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let e1 = format!("http://{}", stack.edge_addr);
    let e2 = format!("http://{edge2_addr}");
    let mut tally = Tally {
        passed: 0,
        failed: 0,
    };

    // Per-IP sliding window: 4 per minute.
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let a = send(http.get(format!("{e1}/health"))).await?;
        statuses.push(a.status);
        last = Some(a);
    }
    let last = last.ok_or_else(|| anyhow!("no answer"))?;
    let result = if statuses == [200, 200, 200, 200, 429] {
        let retry = last
            .header("retry-after")
            .and_then(|v| v.parse::<u64>().ok());
        match (
            retry,
            last.header("ratelimit-remaining"),
            last.header("ratelimit-limit"),
        ) {
            (Some(r), Some("0"), Some("4")) if (1..=63).contains(&r) => audited(
                &stack,
                &last.reference(),
                "rate_limited",
                Some("app/health/per-ip"),
            )
            .await
            .map(|()| format!("statuses {statuses:?}, Retry-After {r}")),
            other => Err(format!("headers {other:?}")),
        }
    } else {
        Err(format!("statuses {statuses:?}"))
    };
    tally.check("per-ip sliding window", result);

    // Per-client token bucket: alice 5, then refused; bob unaffected.
    let mut alice_statuses = Vec::new();
    let mut refused_ref = String::new();
    for _ in 0..6 {
        let a = send(http.get(format!("{e1}/orders")).bearer_auth(&alice)).await?;
        alice_statuses.push(a.status);
        refused_ref = a.reference();
    }
    let bob_status = send(http.get(format!("{e1}/orders")).bearer_auth(&bob))
        .await?
        .status;
    let result = if alice_statuses == [200, 200, 200, 200, 200, 429] && bob_status == 200 {
        audited(
            &stack,
            &refused_ref,
            "rate_limited",
            Some("app/orders/per-client"),
        )
        .await
        .map(|()| format!("alice {alice_statuses:?}, bob {bob_status}"))
    } else {
        Err(format!("alice {alice_statuses:?}, bob {bob_status}"))
    };
    tally.check("per-client token bucket", result);

    // Flow: 3 sign-ups per IP per hour across two routes.
    let mut flow = Vec::new();
    let mut flow_ref = String::new();
    for path in [
        "/signup",
        "/signup/confirm",
        "/signup",
        "/signup/confirm",
        "/signup",
    ] {
        let a = send(http.post(format!("{e1}{path}")).body("{}")).await?;
        flow.push(a.status);
        flow_ref = a.reference();
    }
    let result = if flow == [200, 200, 200, 429, 429] {
        audited(&stack, &flow_ref, "rate_limited", Some("flow:signups"))
            .await
            .map(|()| format!("statuses {flow:?}"))
    } else {
        Err(format!("statuses {flow:?}"))
    };
    tally.check("flow limit across routes (API6)", result);

    // Route body limit, header limit, upstream timeout.
    let small = send(http.put(format!("{e1}/upload")).body(vec![b'a'; 1000])).await?;
    let big = send(http.put(format!("{e1}/upload")).body(vec![b'a'; 2000])).await?;
    let result = if (small.status, big.status) == (200, 413) {
        audited(&stack, &big.reference(), "body_too_large", None)
            .await
            .map(|()| "1000 bytes 200, 2000 bytes 413".into())
    } else {
        Err(format!("{} / {}", small.status, big.status))
    };
    tally.check("route body limit", result);
    let short = send(
        http.get(format!("{e1}/small"))
            .header("x-pad", "a".repeat(100)),
    )
    .await?;
    let long = send(
        http.get(format!("{e1}/small"))
            .header("x-pad", "a".repeat(2000)),
    )
    .await?;
    let other_route = send(
        http.get(format!("{e1}/orders/1001"))
            .header("x-pad", "a".repeat(2000)),
    )
    .await?;
    let result = if (short.status, long.status) == (200, 431) && other_route.status != 431 {
        audited(&stack, &long.reference(), "headers_too_large", None)
            .await
            .map(|()| {
                format!(
                    "100-byte header 200, 2000-byte header 431 (another route: {})",
                    other_route.status
                )
            })
    } else {
        Err(format!(
            "{} / {} / {}",
            short.status, long.status, other_route.status
        ))
    };
    tally.check("route header limit", result);
    // A body that stops arriving: the route's 300 ms body timeout.
    let started = Instant::now();
    let answer = async {
        let mut s = tokio::net::TcpStream::connect(stack.edge_addr).await?;
        s.write_all(b"POST /slowbody HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\nabc")
            .await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<String, anyhow::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let head = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .map_err(|_| anyhow!("no answer to the slow body"))??;
    let took = started.elapsed();
    let reference = head
        .lines()
        .find_map(|l| l.strip_prefix("x-sase-reference: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    let result = if head.starts_with("HTTP/1.1 408") && took < Duration::from_secs(3) {
        audited(&stack, &reference, "request_timeout", None)
            .await
            .map(|()| {
                format!(
                    "408 after {} ms (route body timeout 300 ms)",
                    took.as_millis()
                )
            })
    } else {
        Err(format!("{:?} after {took:?}", head.lines().next()))
    };
    tally.check("route body timeout (slow body)", result);

    let started = Instant::now();
    let slow = send(http.get(format!("{e1}/slow"))).await?;
    let took = started.elapsed();
    let result = if slow.status == 504 && took < Duration::from_secs(5) {
        audited(&stack, &slow.reference(), "upstream_timeout", None)
            .await
            .map(|()| format!("504 after {} ms (route timeout 500 ms)", took.as_millis()))
    } else {
        Err(format!("{} after {took:?}", slow.status))
    };
    tally.check("route upstream timeout", result);

    // Shared budget over two edges.
    within_one_minute(Duration::from_secs(20)).await;
    let total = args.budget * 2;
    let (mut admitted, mut refused, mut other) = ([0u32; 2], [0u32; 2], Vec::new());
    for i in 0..total {
        let which = usize::from(i % 3 == 0);
        let base = if which == 0 { &e1 } else { &e2 };
        let a = send(http.get(format!("{base}/orders/1001"))).await?;
        match a.status {
            200 => admitted[which] += 1,
            429 => refused[which] += 1,
            s => other.push(s),
        }
    }
    let sum = admitted[0] + admitted[1];
    println!(
        "shared budget: N={} per minute, block={}, {} requests over 2 edges: edge1 admitted {} refused {}, edge2 admitted {} refused {}; total admitted {} (bound N + block = {})",
        args.budget, args.block, total, admitted[0], refused[0], admitted[1], refused[1], sum,
        args.budget + args.block
    );
    let redis_count = Command::new("redis-cli")
        .args([
            "-p",
            &redis_port.to_string(),
            "--scan",
            "--pattern",
            "sase:rl:*",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    let result = if other.is_empty()
        && sum <= args.budget + args.block
        && sum >= args.budget.saturating_sub(2 * args.block)
        && admitted[1] > 0
        && redis_count > 0
    {
        Ok(format!(
            "admitted {sum} of {total} (N={}, block={}), {redis_count} budget key(s) in Redis",
            args.budget, args.block
        ))
    } else {
        Err(format!(
            "admitted {admitted:?}, refused {refused:?}, other {other:?}, redis keys {redis_count}"
        ))
    };
    tally.check("two edges share a Redis budget", result);

    // Redis unreachable: fail_open, then fail_closed.
    redis.terminate()?;
    // A route whose budget this edge holds no block of: it must ask Redis.
    let a = send(http.get(format!("{e1}/stock/1"))).await?;
    let result = if a.status == 200 || a.status == 429 {
        if a.status == 200 {
            audited(&stack, &a.reference(), "allowed", Some("fail_open"))
                .await
                .map(|()| "Redis down: 200, audited as fail_open".into())
        } else {
            Err("Redis down, fail_open: 429 (the local limit should still have room)".into())
        }
    } else {
        Err(format!("status {}", a.status))
    };
    tally.check("Redis unreachable, fail_open", result);
    let version = stack
        .put_policy(&policy(
            &app,
            &hole,
            &redis_url,
            &jwks,
            &args,
            "fail_closed",
        ))
        .await?;
    stack.wait_applied(version, READY).await?;
    let a = send(http.get(format!("{e1}/stock/2"))).await?;
    let result = if a.status == 503 {
        audited(&stack, &a.reference(), "rate_limit_store_unavailable", None)
            .await
            .map(|()| "Redis down, fail_closed: 503 rate_limit_store_unavailable".into())
    } else {
        Err(format!("status {}", a.status))
    };
    tally.check("Redis unreachable, fail_closed", result);

    edge2.terminate()?;
    drop(stack);
    println!(
        "limits_e2e passed={} failed={} shared_admitted={sum} shared_budget={} shared_block={}",
        tally.passed, tally.failed, args.budget, args.block
    );
    if tally.failed > 0 {
        bail!("{} check(s) failed", tally.failed);
    }
    Ok(())
}
