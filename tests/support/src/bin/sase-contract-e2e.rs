//! End-to-end check of the API contract stage (OWASP API3 / API8) through the real binaries:
//! a control plane and an enrolled edge enforce `tests/e2e/data/contract-policy.yaml` in front
//! of the careless "users" API of `sase_testkit::demo_app` (served in-process). Each attack is
//! sent directly to the app — where it must work — and through the edge — where it must be
//! stopped with the expected status, reason and JSON pointer, and audited with them. Also: the
//! control plane refuses documents with an external `$ref` or a schema that does not compile.
//! Ends with `contract_e2e passed=<n> failed=<f>` and fails when `f > 0`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use clap::Parser;
use reqwest::header::HeaderMap;
use reqwest::Method;
use sase_model::Policy;
use sase_testkit::stack::Stack;
use serde_json::Value;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(about = "API contract end-to-end test")]
struct Args {
    /// Directory holding the sase-control and sase-edge binaries.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (logs, data dirs).
    #[arg(long)]
    work_dir: PathBuf,
    /// The policy (with `UPSTREAM` where the app's URL goes).
    #[arg(long, default_value = "tests/e2e/data/contract-policy.yaml")]
    policy: PathBuf,
    /// Instead of the checks: write the resource's OpenAPI document (with the edge as its
    /// server) to `<work-dir>/openapi.json`, run this command with `EDGE_URL`, `APP_URL` and `OPENAPI`
    /// set, stop everything and exit with the command's status (used by
    /// tests/security/schemathesis.sh).
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    exec: Vec<String>,
}

/// One HTTP answer, read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request of a case.
#[derive(Clone)]
struct Call {
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<&'static str>,
}

fn call(method: Method, path: &'static str) -> Call {
    Call {
        method,
        path,
        headers: Vec::new(),
        body: None,
    }
}

impl Call {
    fn header(mut self, n: &'static str, v: &'static str) -> Call {
        self.headers.push((n, v));
        self
    }
    fn json(self, body: &'static str) -> Call {
        let mut c = self.header("content-type", "application/json");
        c.body = Some(body);
        c
    }
    fn body(mut self, content_type: &'static str, body: &'static str) -> Call {
        self.headers.push(("content-type", content_type));
        self.body = Some(body);
        self
    }
    async fn send(&self, http: &reqwest::Client, base: &str) -> Result<Answer> {
        let mut req = http.request(self.method.clone(), format!("{base}{}", self.path));
        for (n, v) in &self.headers {
            req = req.header(*n, *v);
        }
        if let Some(body) = self.body {
            req = req.body(body);
        }
        let resp = req.send().await?;
        Ok(Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await?,
        })
    }
}

/// What the edge must answer to a refused attack.
struct Refusal {
    status: u16,
    reason: &'static str,
    /// The JSON pointer the message and the audit detail must name.
    pointer: Option<&'static str>,
}

type Check = Box<dyn Fn(&Answer) -> Result<(), String>>;

struct Case {
    name: &'static str,
    call: Call,
    /// The attack works against the app.
    direct: Check,
    /// The edge's answer.
    edge: EdgeExpect,
}

enum EdgeExpect {
    Refused(Refusal),
    Answer(Check),
}

const RID: &str = "0123abcd";

fn check(f: impl Fn(&Answer) -> Result<(), String> + 'static) -> Check {
    Box::new(f)
}

fn status_is(want: u16) -> Check {
    check(move |a| {
        (a.status == want)
            .then_some(())
            .ok_or(format!("status {} (want {want})", a.status))
    })
}

fn contains(want: &'static str) -> Check {
    check(move |a| {
        a.text
            .contains(want)
            .then_some(())
            .ok_or(format!("body lacks {want:?}: {}", a.status))
    })
}

fn field_is_true(field: &'static str) -> Check {
    check(move |a| {
        (a.json()[field] == Value::Bool(true))
            .then_some(())
            .ok_or(format!("{field} not true in {}", a.text))
    })
}

fn refused(status: u16, reason: &'static str, pointer: Option<&'static str>) -> EdgeExpect {
    EdgeExpect::Refused(Refusal {
        status,
        reason,
        pointer,
    })
}

fn cases() -> Vec<Case> {
    let post = || call(Method::POST, "/users").header("x-request-id", RID);
    vec![
        Case {
            name: "mass assignment on create (is_admin)",
            call: post().json(r#"{"name": "Eve", "email": "eve@example.com", "is_admin": true}"#),
            direct: field_is_true("is_admin"),
            edge: refused(400, "body_invalid", Some("/body/is_admin")),
        },
        Case {
            name: "mass assignment on update (is_admin)",
            call: call(Method::PATCH, "/users/1").json(r#"{"is_admin": true}"#),
            direct: field_is_true("is_admin"),
            edge: refused(400, "body_invalid", Some("/body/is_admin")),
        },
        Case {
            name: "mass assignment in a nested object",
            call: post().json(
                r#"{"name": "Eve", "email": "e@x", "address": {"city": "Gent", "owner_id": 1}}"#,
            ),
            direct: status_is(201),
            edge: refused(400, "body_invalid", Some("/body/address/owner_id")),
        },
        Case {
            name: "wrong type in the body",
            call: post().json(r#"{"name": 7, "email": "e@x"}"#),
            direct: status_is(201),
            edge: refused(400, "body_invalid", Some("/body/name")),
        },
        Case {
            name: "missing required property",
            call: post().json(r#"{"name": "Eve"}"#),
            direct: status_is(201),
            edge: refused(400, "body_invalid", Some("/body/email")),
        },
        Case {
            name: "pattern violation (email)",
            call: post().json(r#"{"name": "Eve", "email": "not-an-email"}"#),
            direct: status_is(201),
            edge: refused(400, "body_invalid", Some("/body/email")),
        },
        Case {
            name: "body not an object crashes the app",
            call: post().json(r#"[1, 2, 3]"#),
            direct: contains("Traceback"),
            edge: refused(400, "body_invalid", Some("/body")),
        },
        Case {
            name: "duplicate member names",
            call: post().json(r#"{"name": "Eve", "email": "e@x", "name": "root"}"#),
            direct: status_is(201),
            edge: refused(400, "body_invalid", Some("/body")),
        },
        Case {
            name: "path parameter of the wrong type crashes the app",
            call: call(Method::GET, "/users/abc"),
            direct: contains("Traceback"),
            edge: refused(400, "parameter_invalid", Some("/path/id")),
        },
        Case {
            name: "query parameter out of range",
            call: call(Method::GET, "/users?limit=100000"),
            direct: status_is(200),
            edge: refused(400, "parameter_invalid", Some("/query/limit")),
        },
        Case {
            name: "query parameter not in the enum",
            call: call(Method::GET, "/users?role=root"),
            direct: status_is(200),
            edge: refused(400, "parameter_invalid", Some("/query/role")),
        },
        Case {
            name: "query parameter given twice (pollution)",
            call: call(Method::GET, "/users?limit=1&limit=100000"),
            direct: status_is(200),
            edge: refused(400, "parameter_invalid", Some("/query/limit")),
        },
        Case {
            name: "required header missing",
            call: call(Method::POST, "/users").json(r#"{"name": "Eve", "email": "e@x"}"#),
            direct: status_is(201),
            edge: refused(400, "parameter_invalid", Some("/header/x-request-id")),
        },
        Case {
            name: "undeclared content type (text/plain)",
            call: post().body("text/plain", r#"{"name": "Eve", "email": "e@x"}"#),
            direct: status_is(201),
            edge: refused(
                415,
                "content_type_unsupported",
                Some("/header/content-type"),
            ),
        },
        Case {
            name: "undeclared content type (XML) crashes the app",
            call: post().body("application/xml", "<user><is_admin>true</is_admin></user>"),
            direct: contains("Traceback"),
            edge: refused(
                415,
                "content_type_unsupported",
                Some("/header/content-type"),
            ),
        },
        Case {
            name: "response leaks password_hash and is_admin",
            call: call(Method::GET, "/users/1"),
            direct: contains("password_hash"),
            edge: EdgeExpect::Answer(check(|a| {
                let v = a.json();
                if a.status != 200 || v["id"] != 1 || v["email"].is_null() {
                    return Err(format!("not the user: {} {}", a.status, a.text));
                }
                if a.text.contains("password_hash") || a.text.contains("is_admin") {
                    return Err(format!("leaked: {}", a.text));
                }
                Ok(())
            })),
        },
        Case {
            name: "list response leaks password_hash",
            call: call(Method::GET, "/users"),
            direct: contains("password_hash"),
            edge: EdgeExpect::Answer(check(|a| {
                if a.status != 200 || a.json().as_array().map(Vec::len) != Some(2) {
                    return Err(format!("not the list: {} {}", a.status, a.text));
                }
                (!a.text.contains("password_hash"))
                    .then_some(())
                    .ok_or(format!("leaked: {}", a.text))
            })),
        },
        Case {
            name: "response leaks a connection string",
            call: call(Method::GET, "/report"),
            direct: contains("hunter2"),
            edge: EdgeExpect::Answer(check(|a| {
                if a.status != 200 || a.json()["total"] != 2 {
                    return Err(format!("not the report: {} {}", a.status, a.text));
                }
                (!a.text.contains("hunter2"))
                    .then_some(())
                    .ok_or(format!("leaked: {}", a.text))
            })),
        },
        Case {
            name: "upstream 500 stack trace (route without an operation)",
            call: call(Method::GET, "/legacy"),
            direct: contains("Traceback"),
            edge: EdgeExpect::Answer(check(|a| {
                let v = a.json();
                if a.status != 500 || v["error"] != "upstream_error" {
                    return Err(format!("not the generic error: {} {}", a.status, a.text));
                }
                if a.text.contains("Traceback") || a.text.contains("hunter2") {
                    return Err(format!("leaked: {}", a.text));
                }
                if v["reference"].as_str() != a.header("x-sase-reference") {
                    return Err("reference id missing from the body".into());
                }
                Ok(())
            })),
        },
        Case {
            name: "security headers missing upstream",
            call: call(Method::GET, "/users/1"),
            direct: check(|a| {
                a.header("x-frame-options")
                    .is_none()
                    .then_some(())
                    .ok_or("app sets X-Frame-Options".into())
            }),
            edge: EdgeExpect::Answer(check(|a| {
                let want = [
                    ("x-frame-options", "DENY"),
                    ("x-content-type-options", "nosniff"),
                    (
                        "content-security-policy",
                        "default-src 'none'; frame-ancestors 'none'",
                    ),
                ];
                for (n, v) in want {
                    if a.header(n) != Some(v) {
                        return Err(format!("{n}: {:?}", a.header(n)));
                    }
                }
                Ok(())
            })),
        },
        Case {
            name: "CORS: the app allows any origin",
            call: call(Method::GET, "/users").header("origin", "https://evil.example"),
            direct: check(|a| {
                (a.header("access-control-allow-origin") == Some("*"))
                    .then_some(())
                    .ok_or("app does not allow *".into())
            }),
            edge: EdgeExpect::Answer(check(|a| {
                if a.status != 200 {
                    return Err(format!("status {}", a.status));
                }
                let cors: Vec<_> = a
                    .headers
                    .keys()
                    .filter(|k| k.as_str().starts_with("access-control-"))
                    .collect();
                cors.is_empty()
                    .then_some(())
                    .ok_or(format!("CORS headers for a disallowed origin: {cors:?}"))
            })),
        },
        Case {
            name: "CORS preflight from a disallowed origin",
            call: call(Method::OPTIONS, "/users")
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "POST"),
            direct: check(|a| {
                (a.header("access-control-allow-origin") == Some("*"))
                    .then_some(())
                    .ok_or("app does not allow *".into())
            }),
            edge: refused(403, "cors_refused", None),
        },
    ]
}

/// Requests that must pass (so that a broken set-up cannot look like protection).
fn allowed_cases() -> Vec<(&'static str, Call, Check)> {
    vec![
        (
            "valid create",
            call(Method::POST, "/users")
                .header("x-request-id", RID)
                .json(
                    r#"{"name": "Ann", "email": "ann@example.com", "address": {"city": "Gent"}}"#,
                ),
            check(|a| {
                let v = a.json();
                if a.status != 201 || v["name"] != "Ann" || v["address"]["city"] != "Gent" {
                    return Err(format!("{} {}", a.status, a.text));
                }
                (!a.text.contains("password_hash"))
                    .then_some(())
                    .ok_or(format!("leaked: {}", a.text))
            }),
        ),
        (
            "valid update",
            call(Method::PATCH, "/users/2").json(r#"{"name": "Bo"}"#),
            check(|a| {
                (a.status == 200 && a.json()["name"] == "Bo")
                    .then_some(())
                    .ok_or(format!("{} {}", a.status, a.text))
            }),
        ),
        (
            "valid query",
            call(Method::GET, "/users?limit=10&role=admin"),
            status_is(200),
        ),
        (
            "CORS from the allowed origin",
            call(Method::GET, "/users").header("origin", "https://app.example.com"),
            check(|a| {
                let ok = a.status == 200
                    && a.header("access-control-allow-origin") == Some("https://app.example.com")
                    && a.header("access-control-allow-credentials") == Some("true");
                ok.then_some(())
                    .ok_or(format!("{} {:?}", a.status, a.headers))
            }),
        ),
        (
            "CORS preflight from the allowed origin",
            call(Method::OPTIONS, "/users")
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type, x-request-id",
                ),
            check(|a| {
                let ok = a.status == 204
                    && a.header("access-control-allow-origin") == Some("https://app.example.com")
                    && a.header("access-control-allow-methods")
                        .is_some_and(|m| m.contains("POST"));
                ok.then_some(())
                    .ok_or(format!("{} {:?}", a.status, a.headers))
            }),
        ),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = listener.local_addr()?;
    tokio::spawn(sase_testkit::demo_app::serve(
        listener,
        std::future::pending::<()>(),
    ));
    let app = format!("http://{app_addr}");
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?
        .replace("UPSTREAM", &app);
    let policy = Policy::parse_yaml(&text).map_err(|e| anyhow!("{e}"))?;
    let policy = serde_json::to_value(&policy)?;
    let stack = Stack::start(&args.bin_dir, &args.work_dir, None, &policy, "127.0.0.1:0").await?;
    let edge = format!("http://{}", stack.edge_addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    if let Some((program, rest)) = args.exec.split_first() {
        let mut doc = policy["resources"][0]["api"]["openapi"].clone();
        doc["servers"] = serde_json::json!([{ "url": edge }]);
        // The contract as the edge enforces it: with `strict_properties` (the example's
        // setting) undeclared properties are refused, so say so in the document the fuzzer
        // reads, or it would count such bodies as valid.
        if policy["resources"][0]["api"]["strict_properties"] != Value::Bool(false) {
            close_objects(&mut doc);
        }
        let doc_path = args.work_dir.join("openapi.json");
        std::fs::write(&doc_path, serde_json::to_vec_pretty(&doc)?)?;
        let status = tokio::process::Command::new(program)
            .args(rest)
            .env("EDGE_URL", &edge)
            .env("APP_URL", &app)
            .env("OPENAPI", &doc_path)
            .status()
            .await
            .with_context(|| format!("running {program}"))?;
        drop(stack);
        std::process::exit(status.code().unwrap_or(1));
    }

    let mut passed = 0usize;
    let mut failed = 0usize;
    let mut report = |name: &str, outcome: Result<(), String>| match outcome {
        Ok(()) => {
            passed += 1;
            println!("ok   {name}");
        }
        Err(why) => {
            failed += 1;
            println!("FAIL {name}: {why}");
        }
    };

    for case in cases() {
        let direct = case.call.send(&http, &app).await?;
        report(
            &format!("{} — works directly", case.name),
            (case.direct)(&direct),
        );
        let answer = case.call.send(&http, &edge).await?;
        let outcome = match &case.edge {
            EdgeExpect::Answer(f) => f(&answer),
            EdgeExpect::Refused(want) => {
                let sent = format!("{} {}", case.call.path, case.call.body.unwrap_or_default());
                check_refusal(&stack, &answer, want, Some(&sent)).await
            }
        };
        report(&format!("{} — stopped by the edge", case.name), outcome);
    }
    for (name, c, f) in allowed_cases() {
        let answer = c.send(&http, &edge).await?;
        report(&format!("{name} — allowed by the edge"), f(&answer));
    }

    // The scrubbed response is audited with the pointers removed.
    let answer = call(Method::GET, "/users/1").send(&http, &edge).await?;
    let outcome = match answer.header("x-sase-reference") {
        Some(reference) => match stack
            .audit_event(reference, Duration::from_secs(20))
            .await?
        {
            Some(event) => {
                let detail = event["detail"].as_str().unwrap_or_default();
                (event["reason"] == "allowed" && detail.contains("/password_hash"))
                    .then_some(())
                    .ok_or(format!("audit event: {event}"))
            }
            None => Err("no audit event".into()),
        },
        None => Err("no reference".into()),
    };
    report("scrubbing is audited with the removed pointers", outcome);

    // The control plane refuses contracts that cannot be enforced.
    for (name, from, to, code) in [
        (
            "external $ref refused on PUT (422)",
            "#/components/schemas/NewUser",
            "https://evil.example/user.json",
            "policy_invalid",
        ),
        (
            "operation without a route refused on PUT (422)",
            "          /report:\n",
            "          /admin:\n",
            "policy_invalid",
        ),
        (
            "schema that does not compile refused on PUT (422)",
            "pattern: \"^[0-9a-f]{8,32}$\"",
            "pattern: \"([a-z\"",
            "contract_invalid",
        ),
    ] {
        let bad = text.replacen(from, to, 1);
        let outcome = match serde_yaml_to_json(&bad) {
            Ok(body) => {
                let (status, answer) = stack
                    .api_json(
                        Method::PUT,
                        &format!("/api/tenants/{}/policy", stack.tenant_id),
                        Some(body),
                    )
                    .await?;
                let first_path = answer["errors"][0]["path"].as_str().unwrap_or_default();
                (status.as_u16() == 422
                    && answer["error"] == code
                    && first_path.starts_with("resources[0].api.openapi"))
                .then_some(())
                .ok_or(format!("{status} {answer}"))
            }
            Err(e) => Err(e.to_string()),
        };
        report(name, outcome);
    }

    println!("contract_e2e passed={passed} failed={failed}");
    drop(stack);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Adds `additionalProperties: false` to every schema that lists `properties` and says
/// nothing about other properties (what `strict_properties` enforces; the example document
/// has no `allOf`).
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let open_said = [
                "additionalProperties",
                "unevaluatedProperties",
                "patternProperties",
            ]
            .iter()
            .any(|k| map.contains_key(*k));
            if map.get("properties").is_some_and(Value::is_object) && !open_said {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for child in map.values_mut() {
                close_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Policy YAML as a JSON value, without validating it (the control plane must refuse it).
fn serde_yaml_to_json(text: &str) -> Result<Value> {
    Ok(serde_yaml::from_str(text)?)
}

async fn check_refusal(
    stack: &Stack,
    answer: &Answer,
    want: &Refusal,
    sent_body: Option<&str>,
) -> Result<(), String> {
    let body = answer.json();
    if answer.status != want.status || body["error"] != want.reason {
        return Err(format!("got {} {}", answer.status, answer.text));
    }
    let message = body["message"].as_str().unwrap_or_default();
    if let Some(pointer) = want.pointer {
        if !message.ends_with(&format!(" at {pointer}")) {
            return Err(format!("message does not name {pointer}: {message}"));
        }
    }
    // Never echo a value back.
    for secret in ["eve@example.com", "not-an-email", "100000", "root"] {
        if sent_body.is_some_and(|b| b.contains(secret)) && answer.text.contains(secret) {
            return Err(format!("value {secret:?} echoed: {}", answer.text));
        }
    }
    let reference = answer
        .header("x-sase-reference")
        .ok_or("no x-sase-reference")?;
    let event = stack
        .audit_event(reference, Duration::from_secs(20))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no audit event")?;
    if event["reason"] != want.reason {
        return Err(format!("audit reason {}", event["reason"]));
    }
    if let Some(pointer) = want.pointer {
        let detail = event["detail"].as_str().unwrap_or_default();
        if !detail.contains(pointer) {
            return Err(format!("audit detail {detail:?} lacks {pointer}"));
        }
    }
    Ok(())
}
