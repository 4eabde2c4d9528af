//! End-to-end test of the edge's WAF (OWASP CRS 3.3.4 on libmodsecurity 3.0.9) against the real
//! binaries: a control plane, the sample upstream app and an edge enrolled with a claim code.
//!
//! `test` pushes a policy with two resources on different host names, one in `block` and one in
//! `detect` mode (paranoia level 1), then:
//!
//! * sends SQL injection, XSS, path traversal, remote command execution and protocol attacks,
//!   each in the query, a form body, a JSON body, a header and a cookie, to both resources: the
//!   blocking one must answer 403 `waf_blocked` with the reference of its audit event, the
//!   detecting one must let the request reach the upstream (200);
//! * finds each request's audit event in the control plane (`GET /api/audit?reference=`) and
//!   checks decision, reason and WAF verdict (rule ids, inbound score, mode, paranoia level), and
//!   that the event carries neither the payload nor the cookie / authorization values;
//! * replays the benign corpus (`tests/e2e/data/benign.jsonl`) against the blocking resource:
//!   every request must pass; a false positive is reported with the ids of the rules that fired;
//! * reads the edge's resident memory with the first policy in force, pushes 100 policy updates
//!   (most of them change the WAF settings so the rule set is compiled again), waits for each to
//!   be applied, and reads it again: growth beyond 1.5 times fails the test.
//!
//! Ends with `waf_e2e passed=<n> failed=<m> benign=<k> false_positives=<f>` and exits non-zero
//! when anything failed.
//!
//! `serve-edge` starts a control plane and an enrolled edge enforcing a given policy and keeps
//! them up until SIGTERM, for the WAF benchmark (`tests/perf/waf.sh`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use clap::{Parser, Subcommand};
use reqwest::StatusCode;
use sase_testkit::process::{spawn_logged, ManagedChild};
use sase_testkit::stack::Stack;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "WAF end-to-end test against the real binaries")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the WAF end-to-end test.
    Test(TestArgs),
    /// Starts a control plane and an enrolled edge enforcing a policy (JSON file) and keeps
    /// them running until SIGTERM; prints `ready edge_url=… edge_pid=…` once the policy is
    /// applied.
    ServeEdge(ServeArgs),
}

#[derive(clap::Args)]
struct TestArgs {
    /// Directory holding sase-control, sase-edge and sase-demo-app.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (wiped at start).
    #[arg(long)]
    work_dir: PathBuf,
    /// Benign corpus (JSON lines: method, path, headers, body).
    #[arg(long)]
    corpus: PathBuf,
    /// Realistic requests that CRS 3.3.4 refuses at paranoia level 1 without tuning (JSON
    /// lines, with `expected_rules`): replayed to check that they are still refused by exactly
    /// these rules, so that the documentation of known false positives stays true.
    #[arg(long)]
    known_false_positives: Option<PathBuf>,
    /// Policy updates pushed for the memory check.
    #[arg(long, default_value_t = 100)]
    reloads: u32,
    /// Control-plane database URL (default: SQLite in the work dir).
    #[arg(long, env = "SASE_E2E_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory holding sase-control and sase-edge.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (wiped at start).
    #[arg(long)]
    work_dir: PathBuf,
    /// The policy (JSON) the edge enforces.
    #[arg(long)]
    policy: PathBuf,
    /// The edge's plain-HTTP listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    http_listen: String,
    /// Keep the control plane running once the policy is applied (by default it is stopped:
    /// in production it runs on another machine, and its audit ingest would compete for the
    /// benchmark's CPU; the edge keeps enforcing the stored bundle and spools its events).
    #[arg(long)]
    keep_control: bool,
}

const READY: Duration = Duration::from_secs(60);
const BLOCK_HOST: &str = "block.example";
const DETECT_HOST: &str = "detect.example";
/// Sent with every attack; must never appear in an audit event.
const SECRET_COOKIE: &str = "s3ss10n-7f4c9a2e81d6b03c";
const SECRET_BEARER: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2VjcmV0LXNpZ25hdHVyZQ";

/// Resident set size of a process, in kB.
fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

// ---------------------------------------------------------------------------------------------
// The test policy
// ---------------------------------------------------------------------------------------------

/// Route templates covering the corpus and the attacks: every path depth from `/` to eight
/// segments, for every method (CRS 3.3 itself allows only GET, HEAD, POST and OPTIONS: see the
/// known false positives).
///
/// `/graphql` comes first, with the exclusion a deployment needs for GraphQL at paranoia level
/// 1: CRS 932100 (Unix command injection) reads `{ id …` in a query document as a shell
/// command, so the rule is removed for the `query` member of the JSON body only
/// (`tests/e2e/data/README.md`).
fn generic_routes() -> Value {
    let mut routes = vec![json!({
        "id": "graphql",
        "methods": ["POST"],
        "path": "/graphql",
        "public": true,
        "waf": {"exclusions": [{"rule_id": 932100, "target": "ARGS:json.query"}]}
    })];
    let mut path = String::new();
    for depth in 0..=8 {
        let template = if depth == 0 {
            "/".to_string()
        } else {
            path.push_str(&format!("/{{s{depth}}}"));
            path.clone()
        };
        routes.push(json!({
            "id": format!("depth-{depth}"),
            "methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            "path": template,
            "public": true
        }));
    }
    Value::Array(routes)
}

fn waf_policy(upstream: &str, block_waf: &Value, block_body_limit: u64) -> Value {
    json!({
        "resources": [
            {
                "name": "block-app", "hosts": [BLOCK_HOST], "upstream": upstream,
                "max_body_bytes": block_body_limit,
                "routes": generic_routes(),
                "waf": block_waf
            },
            {
                "name": "detect-app", "hosts": [DETECT_HOST], "upstream": upstream,
                "routes": generic_routes(),
                "waf": {"mode": "detect", "paranoia_level": 1}
            }
        ]
    })
}

fn block_waf_default() -> Value {
    json!({"mode": "block", "paranoia_level": 1})
}

// ---------------------------------------------------------------------------------------------
// Attacks
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Query,
    Form,
    Json,
    Header,
    Cookie,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Query => "query",
            Place::Form => "form body",
            Place::Json => "JSON body",
            Place::Header => "header",
            Place::Cookie => "cookie",
        }
    }
}

struct Attack {
    class: &'static str,
    place: Place,
    /// Header name (for [`Place::Header`]) or argument / cookie name.
    field: &'static str,
    /// The value as the application would see it (decoded).
    payload: &'static str,
    /// Distinctive parts of the payload that must not appear in the audit event.
    needles: &'static [&'static str],
}

#[rustfmt::skip]
fn attacks() -> Vec<Attack> {
    use Place::*;
    let a = |class, place, field, payload, needles| Attack {
        class,
        place,
        field,
        payload,
        needles,
    };
    const SQLI: &[&str] = &["UNION SELECT", "FROM users"];
    const XSS: &[&str] = &["<script>", "alert(document.cookie)"];
    const LFI: &[&str] = &["../../", "etc/passwd"];
    const RCE: &[&str] = &["cat /etc/passwd", "/bin/bash"];
    const PROTO: &[&str] = &["Set-Cookie", "evil.example", "attacker"];
    vec![
        // SQL injection (942xxx)
        a("sqli", Query, "q", "1' UNION SELECT username, password FROM users--", SQLI),
        a("sqli", Form, "email", "admin@shop.example' OR 1=1 UNION SELECT password FROM users--", SQLI),
        a("sqli", Json, "customer_id", "7 UNION SELECT card_number, cvv FROM users", SQLI),
        a("sqli", Header, "user-agent", "Mozilla/5.0' UNION SELECT password FROM users--", SQLI),
        a("sqli", Cookie, "cart", "1' UNION SELECT password FROM users--", SQLI),
        // Cross-site scripting (941xxx)
        a("xss", Query, "q", "<script>alert(document.cookie)</script>", XSS),
        a("xss", Form, "comment", "Nice post <script>alert(document.cookie)</script>", XSS),
        a("xss", Json, "display_name", "<script>alert(document.cookie)</script>", XSS),
        a("xss", Header, "referer", "https://shop.example/?q=<script>alert(document.cookie)</script>", XSS),
        a("xss", Cookie, "last_search", "<script>alert(document.cookie)</script>", XSS),
        // Path traversal / local file inclusion (930xxx)
        a("path-traversal", Query, "file", "../../../../etc/passwd", LFI),
        a("path-traversal", Form, "template", "../../../../etc/passwd", LFI),
        a("path-traversal", Json, "attachment", "../../../../etc/passwd", LFI),
        a("path-traversal", Header, "x-file-name", "../../../../etc/passwd", LFI),
        a("path-traversal", Cookie, "theme", "../../../../etc/passwd", LFI),
        // Remote command execution (932xxx)
        a("rce", Query, "host", "8.8.8.8; cat /etc/passwd", RCE),
        a("rce", Form, "ping_host", "8.8.8.8 && cat /etc/passwd", RCE),
        a("rce", Json, "hostname", "$(cat /etc/passwd)", RCE),
        a("rce", Header, "user-agent", "() { :; }; /bin/bash -c 'cat /etc/passwd'", RCE),
        a("rce", Cookie, "locale", "$(cat /etc/passwd)", RCE),
        // Protocol attacks (921xxx response splitting / header injection, 920450 httpoxy)
        a("protocol", Query, "lang", "en\r\nSet-Cookie: session=attacker", PROTO),
        a("protocol", Form, "next", "/account\r\nLocation: http://evil.example/phish", PROTO),
        a("protocol", Json, "return_to", "/cart\r\nSet-Cookie: session=attacker", PROTO),
        a("protocol", Header, "proxy", "http://evil.example:3128", PROTO),
        a("protocol", Cookie, "pref", "en%0d%0aSet-Cookie:%20session=attacker", PROTO),
    ]
}

/// Builds the request for an attack against `host` (resolved to the edge by the client).
fn attack_request(http: &reqwest::Client, host: &str, attack: &Attack) -> reqwest::RequestBuilder {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let base = format!("http://{host}");
    let session_cookie = format!("sessionid={SECRET_COOKIE}");
    let cookie = if attack.place == Place::Cookie {
        format!("{session_cookie}; {}={}", attack.field, attack.payload)
    } else {
        session_cookie
    };
    // A browser's headers, plus a session cookie and a bearer token that must never reach the
    // audit trail.
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".to_string(),
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".to_string(),
        ),
        ("accept-language", "en-GB,en;q=0.7".to_string()),
        ("authorization", format!("Bearer {SECRET_BEARER}")),
        ("cookie", cookie),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if attack.place == Place::Header {
        // Replaces the browser's value when the attacked header is one of them.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(attack.field.as_bytes()),
            HeaderValue::from_str(attack.payload),
        ) {
            headers.insert(name, value);
        }
    }
    let request = match attack.place {
        Place::Query => http
            .get(format!("{base}/search"))
            .query(&[(attack.field, attack.payload), ("page", "1")]),
        Place::Form => http.post(format!("{base}/account/contact")).form(&[
            ("name", "Jane Doe"),
            (attack.field, attack.payload),
            ("subscribe", "on"),
        ]),
        Place::Json => http
            .post(format!("{base}/api/v1/profile"))
            .json(&json!({"locale": "en-GB", attack.field: attack.payload, "items": [1, 2]})),
        Place::Header | Place::Cookie => http.get(format!("{base}/products/4711")),
    };
    request.headers(headers)
}

// ---------------------------------------------------------------------------------------------
// Benign corpus
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct CorpusEntry {
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    note: Option<String>,
    /// Known false positives only: the rules that refuse the request.
    #[serde(default)]
    expected_rules: Vec<u32>,
}

fn load_corpus(path: &Path) -> Result<Vec<CorpusEntry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), n + 1))
        })
        .collect()
}

/// Values a request carried that must never reach an audit event: the whole Cookie header, each
/// cookie value of 8 characters or more, and the Authorization credentials.
fn secrets_of(headers: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        match name.to_ascii_lowercase().as_str() {
            "cookie" => {
                out.push(value.clone());
                for pair in value.split(';') {
                    if let Some((_, v)) = pair.split_once('=') {
                        if v.trim().len() >= 8 {
                            out.push(v.trim().to_string());
                        }
                    }
                }
            }
            "authorization" => {
                out.push(value.clone());
                if let Some((_, credentials)) = value.split_once(' ') {
                    out.push(credentials.trim().to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// Every string in a JSON value (keys too), and its serialisation.
fn strings_of(value: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(o) => {
                for (k, v) in o {
                    out.push(k.clone());
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = vec![value.to_string()];
    walk(value, &mut out);
    out
}

/// The needles found in an event (case-insensitive).
fn leaks(event: &Value, needles: &[String]) -> Vec<String> {
    let haystack: Vec<String> = strings_of(event)
        .into_iter()
        .map(|s| s.to_lowercase())
        .collect();
    needles
        .iter()
        .filter(|n| !n.is_empty())
        .filter(|n| {
            let n = n.to_lowercase();
            haystack.iter().any(|h| h.contains(&n))
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) -> bool {
        if ok {
            self.passed += 1;
            println!("ok   {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
        ok
    }
}

struct Sent {
    name: String,
    reference: String,
    blocked: bool,
    needles: Vec<String>,
}

async fn run_test(args: &TestArgs) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let work = args.work_dir.as_path();
    let bins = args.bin_dir.as_path();
    let corpus = load_corpus(&args.corpus)?;
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };
    let mut false_positives = 0u32;
    let outcome = scenario(args, bins, work, &corpus, &mut checks, &mut false_positives).await;
    if let Err(err) = outcome {
        checks.check("scenario completed", false, format!("{err:#}"));
    }
    println!(
        "waf_e2e passed={} failed={} benign={} false_positives={false_positives}",
        checks.passed,
        checks.failed,
        corpus.len()
    );
    if checks.failed > 0 || false_positives > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn scenario(
    args: &TestArgs,
    bins: &Path,
    work: &Path,
    corpus: &[CorpusEntry],
    checks: &mut Checks,
    false_positives: &mut u32,
) -> Result<()> {
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

    let body_limit = 1024 * 1024;
    let first_policy = waf_policy(&upstream, &block_waf_default(), body_limit);
    let stack = Stack::start(
        bins,
        work,
        args.database_url.as_deref(),
        &first_policy,
        "127.0.0.1:0",
    )
    .await?;
    let edge_pid = stack.edge_pid()?;
    let rss_applied = rss_kb(edge_pid)?;
    println!("info edge RSS with the first policy applied, before traffic: {rss_applied} kB");
    let http = reqwest::Client::builder()
        .resolve(BLOCK_HOST, stack.edge_addr)
        .resolve(DETECT_HOST, stack.edge_addr)
        .timeout(Duration::from_secs(30))
        .build()?;

    // --- attacks, in both modes ---------------------------------------------------------------
    let mut sent = Vec::new();
    for attack in attacks() {
        for (host, blocked) in [(BLOCK_HOST, true), (DETECT_HOST, false)] {
            let name = format!(
                "{} in {} ({}) {}",
                attack.class,
                attack.place.name(),
                attack.field,
                if blocked {
                    "blocked"
                } else {
                    "detected, passed"
                }
            );
            let resp = attack_request(&http, host, &attack)
                .send()
                .await
                .with_context(|| format!("sending {name}"))?;
            let status = resp.status().as_u16();
            let reference = resp
                .headers()
                .get("x-sase-reference")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let ok = if blocked {
                status == 403
                    && body["error"] == "waf_blocked"
                    && !reference.is_empty()
                    && body["reference"] == reference.as_str()
            } else {
                status == 200 && body["app"] == "demo-orders" && !reference.is_empty()
            };
            checks.check(&name, ok, format!("status {status} body {body}"));
            let mut needles: Vec<String> = attack.needles.iter().map(|s| s.to_string()).collect();
            needles.push(attack.payload.to_string());
            needles.push(SECRET_COOKIE.to_string());
            needles.push(SECRET_BEARER.to_string());
            if !reference.is_empty() {
                sent.push(Sent {
                    name,
                    reference,
                    blocked,
                    needles,
                });
            }
        }
    }

    // --- their audit events ------------------------------------------------------------------
    for s in &sent {
        let Some(event) = stack
            .audit_event(&s.reference, Duration::from_secs(30))
            .await?
        else {
            checks.check(
                &format!("audit event of {}", s.name),
                false,
                "not found within 30 s",
            );
            continue;
        };
        let waf = &event["waf"];
        let (decision, reason, mode) = if s.blocked {
            ("deny", "waf_blocked", "block")
        } else {
            ("allow", "allowed", "detect")
        };
        let mut problems = Vec::new();
        if event["decision"] != decision || event["reason"] != reason {
            problems.push(format!(
                "decision/reason {} {}",
                event["decision"], event["reason"]
            ));
        }
        if waf["rule_ids"].as_array().is_none_or(Vec::is_empty) {
            problems.push("no rule ids".into());
        }
        if waf["inbound_score"].as_u64().is_none_or(|s| s < 5) {
            problems.push(format!("inbound score {}", waf["inbound_score"]));
        }
        if waf["mode"] != mode || waf["paranoia_level"] != 1 || waf["blocked"] != s.blocked {
            problems.push(format!(
                "mode {} paranoia {} blocked {}",
                waf["mode"], waf["paranoia_level"], waf["blocked"]
            ));
        }
        let leaked = leaks(&event, &s.needles);
        if !leaked.is_empty() {
            problems.push(format!("event contains {leaked:?}"));
        }
        checks.check(
            &format!(
                "audit event of {}: {decision}/{reason}, rules {}, score {}",
                s.name, waf["rule_ids"], waf["inbound_score"]
            ),
            problems.is_empty(),
            format!("{}; event {event}", problems.join("; ")),
        );
    }

    // --- benign corpus --------------------------------------------------------------------------
    let benign = replay_corpus(&stack, &http, corpus, checks, false_positives, "").await?;
    checks.check(
        &format!(
            "{} benign requests pass the blocking resource at PL1",
            corpus.len()
        ),
        benign == corpus.len(),
        format!("{} passed", benign),
    );

    if let Some(path) = &args.known_false_positives {
        known_false_positives(&stack, &http, &load_corpus(path)?, checks).await?;
    }
    requests_the_parser_refuses(&stack, checks).await?;

    // --- memory across 100 policy updates -----------------------------------------------------
    let first = rss_kb(edge_pid)?;
    let compiled_before = count_lines(&work.join("edge.log"), "WAF rule set compiled");
    let started = Instant::now();
    let mut changed_waf = 0;
    let exclusions = [
        json!([]),
        json!([{"rule_id": 920350}]),
        json!([{"rule_id": 942100, "target": "ARGS:comment"}]),
        json!([{"tag": "attack-php"}]),
    ];
    let mut waf = block_waf_default();
    for i in 1..=args.reloads {
        let limit = if i == args.reloads {
            changed_waf += 1;
            waf = block_waf_default(); // back to the first settings
            body_limit
        } else if i % 5 == 0 {
            // Not a WAF change (the resource's body limit): the edge keeps its rule set.
            body_limit + u64::from(i)
        } else {
            changed_waf += 1;
            waf = json!({
                "mode": "block",
                "paranoia_level": 1 + i % 4,
                "exclusions": exclusions[(i as usize / 4) % exclusions.len()]
            });
            body_limit
        };
        let version = stack
            .put_policy(&waf_policy(&upstream, &waf, limit))
            .await?;
        stack
            .wait_applied(version, Duration::from_secs(120))
            .await?;
        if i % 10 == 0 {
            println!(
                "info edge RSS after {i} policy updates: {} kB",
                rss_kb(edge_pid)?
            );
        }
    }
    let reload_secs = started.elapsed().as_secs_f64();
    let compiled = count_lines(&work.join("edge.log"), "WAF rule set compiled") - compiled_before;
    println!(
        "info {} policy updates applied in {reload_secs:.1} s; the edge compiled its rule set {compiled} times",
        args.reloads
    );
    checks.check(
        "policy updates compile a new rule set exactly when they change the WAF settings",
        compiled == changed_waf,
        format!("{compiled} compilations for {changed_waf} WAF changes"),
    );
    // The same traffic as before the first reading.
    let replayed = replay_corpus(
        &stack,
        &http,
        corpus,
        checks,
        false_positives,
        " (after reloads)",
    )
    .await?;
    checks.check(
        "benign corpus still passes after the reloads",
        replayed == corpus.len(),
        format!("{replayed} passed"),
    );
    let resp = attack_request(&http, BLOCK_HOST, &attacks()[0])
        .send()
        .await?;
    checks.check(
        "SQL injection still blocked after the reloads",
        resp.status() == StatusCode::FORBIDDEN,
        resp.status(),
    );
    let after = rss_kb(edge_pid)?;
    let ratio = after as f64 / first.max(1) as f64;
    println!(
        "waf_rss_kb first={first} after_{}_reloads={after} ratio={ratio:.2}",
        args.reloads
    );
    checks.check(
        "edge memory after the reloads is at most 1.5 times the first reading",
        (after as f64) <= 1.5 * first as f64,
        format!("{first} kB -> {after} kB"),
    );
    drop(stack);
    drop(app);
    Ok(())
}

/// Requests whose head hyper cannot parse (or finds too large) never reach the proxy; the
/// listener must still audit them, and the edge must keep serving.
async fn requests_the_parser_refuses(stack: &Stack, checks: &mut Checks) -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let count = |events: &[Value], reason: &str| {
        events
            .iter()
            .filter(|e| {
                e["reason"] == reason && e["http"]["path"] == "" && e["http"]["method"] == ""
            })
            .count()
    };
    let before = stack.tenant_events().await?;
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: {BLOCK_HOST}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let cases: [(&str, Vec<u8>, &str, &str); 3] = [
        (
            "a space inside the request target",
            format!("GET /a b HTTP/1.1\r\nHost: {BLOCK_HOST}\r\n\r\n").into_bytes(),
            "400",
            "bad_request",
        ),
        (
            "a header line without a colon",
            format!("GET / HTTP/1.1\r\nHost: {BLOCK_HOST}\r\nNoColonHere\r\n\r\n").into_bytes(),
            "400",
            "bad_request",
        ),
        (
            "a 200 KiB header",
            huge_header.into_bytes(),
            "431",
            "headers_too_large",
        ),
    ];
    for (name, raw, want_status, _) in &cases {
        let mut tcp = tokio::net::TcpStream::connect(stack.edge_addr).await?;
        // The edge may answer before reading all of a too-large head.
        let _ = tcp.write_all(raw).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        let status_line = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        checks.check(
            &format!("request with {name} is answered {want_status} by the edge"),
            status_line.split_whitespace().nth(1) == Some(*want_status),
            format!("{status_line:?}"),
        );
    }
    let want =
        |reason: &str| count(&before, reason) + cases.iter().filter(|c| c.3 == reason).count();
    let started = Instant::now();
    let mut after = stack.tenant_events().await?;
    while (count(&after, "bad_request") < want("bad_request")
        || count(&after, "headers_too_large") < want("headers_too_large"))
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = stack.tenant_events().await?;
    }
    checks.check(
        "requests the HTTP parser refuses are audited (bad_request / headers_too_large, no method or path)",
        count(&after, "bad_request") == want("bad_request")
            && count(&after, "headers_too_large") == want("headers_too_large"),
        format!(
            "bad_request {} -> {}, headers_too_large {} -> {}",
            count(&before, "bad_request"),
            count(&after, "bad_request"),
            count(&before, "headers_too_large"),
            count(&after, "headers_too_large")
        ),
    );
    Ok(())
}

/// Replays the documented false positives: each must still be refused by its listed rules.
async fn known_false_positives(
    stack: &Stack,
    http: &reqwest::Client,
    entries: &[CorpusEntry],
    checks: &mut Checks,
) -> Result<()> {
    let mut problems = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        let resp = corpus_request(http, entry)?.send().await?;
        let status = resp.status().as_u16();
        let reference = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let rules: Vec<u32> = match stack
            .audit_event(&reference, Duration::from_secs(30))
            .await?
        {
            Some(event) => event["waf"]["rule_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as u32)
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        println!(
            "info known CRS PL1 false positive #{} {} {} ({}): status {status}, rules {rules:?}",
            n + 1,
            entry.method,
            entry.path,
            entry.note.as_deref().unwrap_or_default()
        );
        if status != 403 || rules != entry.expected_rules {
            problems.push(format!(
                "#{}: status {status} rules {rules:?}, documented {:?}",
                n + 1,
                entry.expected_rules
            ));
        }
    }
    checks.check(
        &format!(
            "{} documented false positives are still refused by the documented rules",
            entries.len()
        ),
        problems.is_empty(),
        format!(
            "{} (update tests/e2e/data/known-false-positives.jsonl and its README)",
            problems.join("; ")
        ),
    );
    Ok(())
}

fn corpus_request(http: &reqwest::Client, entry: &CorpusEntry) -> Result<reqwest::RequestBuilder> {
    let method = reqwest::Method::from_bytes(entry.method.as_bytes())?;
    let mut req = http.request(method, format!("http://{BLOCK_HOST}{}", entry.path));
    for (name, value) in &entry.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &entry.body {
        req = req.body(body.clone());
    }
    Ok(req)
}

fn count_lines(path: &Path, needle: &str) -> u32 {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| l.contains(needle)).count() as u32)
        .unwrap_or(0)
}

/// Sends the corpus to the blocking resource; returns how many passed. Each false positive is
/// reported with the rules that fired (from its audit event). Afterwards checks that the events
/// carry the WAF verdict and none of the cookie / authorization values.
async fn replay_corpus(
    stack: &Stack,
    http: &reqwest::Client,
    corpus: &[CorpusEntry],
    checks: &mut Checks,
    false_positives: &mut u32,
    label: &str,
) -> Result<usize> {
    let mut passed = 0;
    let mut references = BTreeMap::new();
    for (n, entry) in corpus.iter().enumerate() {
        let resp = corpus_request(http, entry)?
            .send()
            .await
            .with_context(|| format!("corpus #{}", n + 1))?;
        let status = resp.status().as_u16();
        let reference = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.text().await.unwrap_or_default();
        let what = format!(
            "benign #{} {} {}{}",
            n + 1,
            entry.method,
            entry.path.chars().take(100).collect::<String>(),
            entry
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        if status == 200 || (entry.method == "HEAD" && status < 300) {
            passed += 1;
            references.insert(reference, n);
            continue;
        }
        *false_positives += 1;
        let rules = match stack
            .audit_event(&reference, Duration::from_secs(30))
            .await?
        {
            Some(event) => format!(
                "rules {} messages {} score {}",
                event["waf"]["rule_ids"], event["waf"]["messages"], event["waf"]["inbound_score"]
            ),
            None => "no audit event".into(),
        };
        checks.check(
            &format!("{what}{label}"),
            false,
            format!(
                "status {status} {}; {rules}",
                body.chars().take(200).collect::<String>()
            ),
        );
    }
    // Their events: allowed, inspected in block mode below the threshold, no secrets.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = BTreeMap::new();
    while Instant::now() < deadline {
        found = stack
            .tenant_events()
            .await?
            .into_iter()
            .filter_map(|e| {
                let r = e["reference"].as_str()?.to_string();
                references.contains_key(&r).then_some((r, e))
            })
            .collect();
        if found.len() == references.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut problems = Vec::new();
    for (reference, n) in &references {
        let Some(event) = found.get(reference) else {
            problems.push(format!("#{}: no audit event", n + 1));
            continue;
        };
        let waf = &event["waf"];
        if event["decision"] != "allow"
            || waf["mode"] != "block"
            || waf["inbound_score"].as_u64().is_none_or(|s| s >= 5)
        {
            problems.push(format!("#{}: {} waf {}", n + 1, event["decision"], waf));
        }
        let leaked = leaks(event, &secrets_of(&corpus[*n].headers));
        if !leaked.is_empty() {
            problems.push(format!("#{}: event carries {leaked:?}", n + 1));
        }
    }
    checks.check(
        &format!(
            "audit events of {} benign requests{label}: allowed, inspected (block, score < 5), no cookie or authorization values",
            references.len()
        ),
        problems.is_empty(),
        problems.join("; "),
    );
    Ok(passed)
}

// ---------------------------------------------------------------------------------------------
// serve-edge
// ---------------------------------------------------------------------------------------------

async fn serve_edge(args: &ServeArgs) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let policy: Value = serde_json::from_slice(&std::fs::read(&args.policy)?)
        .with_context(|| format!("parsing {}", args.policy.display()))?;
    let mut stack = Stack::start(
        &args.bin_dir,
        &args.work_dir,
        None,
        &policy,
        &args.http_listen,
    )
    .await?;
    let control_pid = stack
        .control
        .as_ref()
        .and_then(ManagedChild::id)
        .unwrap_or(0);
    if !args.keep_control {
        if let Some(mut control) = stack.control.take() {
            control.terminate()?;
        }
    }
    println!(
        "ready edge_url=http://{} edge_pid={} control_pid={} control_running={} work_dir={}",
        stack.edge_addr,
        stack.edge_pid()?,
        control_pid,
        args.keep_control,
        stack.work.display()
    );
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(stack);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Test(args) => run_test(&args).await,
        Cmd::ServeEdge(args) => serve_edge(&args).await,
    }
}
