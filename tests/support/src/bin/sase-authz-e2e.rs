//! End-to-end check of the authorization guards through the real binaries (issue 4): a control
//! plane and an enrolled edge in front of the careless authz API of `sase_testkit::demo_app`.
//! Each attack is sent directly to the app — where it works — and through the edge — where it
//! is refused with the expected status, reason and detail, and audited with them:
//!
//! * API1 (BOLA): another caller's account by path, another tenant by query parameter, an owner
//!   field in the body; the owner's own requests pass.
//! * API7 (SSRF): a webhook URL pointing at an internal service on loopback (also written as a
//!   decimal IPv4, an IPv4-mapped IPv6 and `localhost`), at the cloud metadata address, with a
//!   `file:` scheme; an upstream outside the resource's egress allowlist; a public URL passes.
//! * GraphQL: depth, aliases, root fields, complexity and introspection over the limits.
//! * API10: a third-party API whose answer breaks its declared response schema is not passed
//!   on (502 `upstream_invalid`, the pointer named).
//!
//! * Token translation + upstream mTLS: a real HTTPS upstream that requires a client
//!   certificate from the tenant CA receives the edge's internal ES256 token (verified here with
//!   the JWK set the edge publishes) instead of the client's, with only the configured claims;
//!   a resource that does not present the device certificate cannot reach it.
//!
//! * mTLS client certificates on the HTTPS listener: a certificate from the resource's CA as
//!   the alternative to a token (identity from its DNS SAN, ownership rules reading it as
//!   `sub`), or required in addition to the token; other CAs and missing certificates refused.
//!
//! Ends with `authz_e2e passed=<n> failed=<f>` and fails when `f > 0`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Parser;
use reqwest::Method;
use sase_testkit::issuer::{now_unix, sign_claims, IssuerKey};
use sase_testkit::stack::Stack;
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(about = "Authorization guards end-to-end test")]
struct Args {
    /// Directory holding the sase-control and sase-edge binaries.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (logs, data dirs).
    #[arg(long)]
    work_dir: PathBuf,
}

const ISS: &str = "https://idp.authz.test";
const AUD: &str = "accounts";

fn policy(
    key: &IssuerKey,
    app: &str,
    tls_upstream: &str,
    upstream_ca: &str,
    client_ca: &str,
) -> Result<Value> {
    Ok(json!({
        "issuers": [{
            "id": "idp", "issuer": ISS, "audiences": [AUD], "algorithms": ["EdDSA"],
            "keys": {"jwks": serde_json::to_value(key.jwks())?}
        }],
        "resources": [
            {
                "name": "accounts", "upstream": app, "issuers": ["idp"],
                "waf": {"mode": "off"},
                // The app runs on loopback: allowed for the upstream only.
                // Webhooks may reach the partner's hook service (127.0.0.3) and public hosts.
                "egress": {"upstream_networks": ["127.0.0.1/32"],
                           "allow_networks": ["127.0.0.3/32"]},
                "graphql": {"routes": ["graphql"], "max_depth": 3, "max_aliases": 2,
                            "max_root_fields": 3, "max_complexity": 40},
                "routes": [
                    {"id": "account", "methods": ["GET"], "path": "/accounts/{accountId}",
                     "scopes": ["accounts:read"],
                     "owner": [{"path": "accountId", "claim": "sub"}]},
                    {"id": "orders", "methods": ["GET"], "path": "/orders",
                     "owner": [{"query": "tenant", "claim": "tenant"}]},
                    {"id": "webhooks", "methods": ["POST"], "path": "/webhooks",
                     "owner": [{"body": "/owner", "claim": "sub", "optional": true}],
                     "url_fields": [{"body": "/url"}]},
                    {"id": "graphql", "methods": ["POST"], "path": "/graphql"}
                ]
            },
            {
                // Its upstream (loopback) is outside its egress allowlist.
                "name": "partner", "hosts": ["partner.test"], "upstream": app,
                "issuers": ["idp"], "waf": {"mode": "off"},
                "egress": {"allow_hosts": ["api.partner.example"]},
                "routes": [{"id": "any", "methods": ["GET"], "path": "/health"}]
            },
            {
                // mTLS as the alternative to a token; ownership reads the certificate's SAN.
                "name": "mtls-alt", "hosts": ["alt.test"], "upstream": app,
                "waf": {"mode": "off"},
                "client_certificates": {"ca_pem": client_ca, "identity": "dns",
                                        "mode": "alternative"},
                "routes": [{"id": "account", "methods": ["GET"], "path": "/accounts/{id}",
                            "owner": [{"path": "id", "claim": "sub"}]}]
            },
            {
                // mTLS in addition to the token.
                "name": "mtls-add", "hosts": ["add.test"], "upstream": app, "issuers": ["idp"],
                "waf": {"mode": "off"},
                "client_certificates": {"ca_pem": client_ca, "mode": "additional",
                                        "identity": "dns"},
                "routes": [{"id": "health", "methods": ["GET"], "path": "/health",
                            "scopes": ["accounts:read"]}]
            },
            {
                // A third-party API (API10): its answers must match the document.
                "name": "thirdparty", "hosts": ["thirdparty.test"], "upstream": app,
                "waf": {"mode": "off"},
                "egress": {"upstream_networks": ["127.0.0.1/32"], "third_party": true},
                "routes": [
                    {"id": "health", "methods": ["GET"], "path": "/health", "public": true},
                    {"id": "account", "methods": ["GET"], "path": "/accounts/{id}", "public": true}
                ],
                "api": {"openapi": {
                    "openapi": "3.1.0", "info": {"title": "partner", "version": "1"},
                    "paths": {
                        "/health": {"get": {"responses": {"200": {"description": "ok",
                            "content": {"application/json": {"schema": {
                                "type": "object", "required": ["status"],
                                "properties": {"status": {"type": "string"}}}}}}}}},
                        "/accounts/{id}": {"get": {
                            "parameters": [{"name": "id", "in": "path", "required": true,
                                            "schema": {"type": "string"}}],
                            "responses": {"200": {"description": "an account",
                                "content": {"application/json": {"schema": {
                                    "type": "object", "required": ["id", "balance"],
                                    "properties": {"id": {"type": "string"},
                                                   "balance": {"type": "string"}}}}}}}}}
                    }
                }}
            },
            {
                // Token translation + mTLS to an upstream requiring the device certificate.
                "name": "backend", "hosts": ["backend.test"], "upstream": tls_upstream,
                "issuers": ["idp"], "waf": {"mode": "off"},
                "token_translation": {"audience": "backend",
                                      "claims": ["sub", "tenant", "scopes"], "ttl_seconds": 60},
                "upstream_tls": {"ca_pem": upstream_ca, "client_certificate": "device"},
                "routes": [{"id": "echo", "methods": ["GET"], "path": "/echo"}]
            },
            {
                // The same upstream without the device certificate: refused by it.
                "name": "nocert", "hosts": ["nocert.test"], "upstream": tls_upstream,
                "issuers": ["idp"], "waf": {"mode": "off"},
                "upstream_tls": {"ca_pem": upstream_ca},
                "routes": [{"id": "echo", "methods": ["GET"], "path": "/echo"}]
            },
            {
                // No egress block: the upstream is trusted as written (the default).
                "name": "legacy", "hosts": ["legacy.test"], "upstream": app,
                "waf": {"mode": "off"},
                "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": true}]
            }
        ]
    }))
}

fn token(key: &IssuerKey, sub: &str, tenant: &str) -> Result<String> {
    let now = now_unix();
    sign_claims(
        key,
        None,
        &json!({"iss": ISS, "aud": AUD, "sub": sub, "tenant": tenant, "iat": now,
                "exp": now + 600, "scope": "accounts:read", "email": format!("{sub}@example.com")}),
    )
}

struct Answer {
    status: u16,
    reference: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

#[derive(Clone)]
struct Call {
    method: Method,
    path: String,
    host: Option<&'static str>,
    body: Option<String>,
    token: Option<String>,
}

impl Call {
    fn new(method: Method, path: impl Into<String>) -> Call {
        Call {
            method,
            path: path.into(),
            host: None,
            body: None,
            token: None,
        }
    }
    fn json(mut self, body: Value) -> Call {
        self.body = Some(body.to_string());
        self
    }
    fn raw_json(mut self, body: &str) -> Call {
        self.body = Some(body.to_string());
        self
    }
    fn bearer(mut self, token: &str) -> Call {
        self.token = Some(token.to_string());
        self
    }
    fn host(mut self, host: &'static str) -> Call {
        self.host = Some(host);
        self
    }
    async fn send(&self, http: &reqwest::Client, base: &str) -> Result<Answer> {
        let mut req = http.request(self.method.clone(), format!("{base}{}", self.path));
        if let Some(body) = &self.body {
            req = req
                .header("content-type", "application/json")
                .body(body.clone());
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(host) = self.host {
            req = req.header("host", host);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let reference = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Answer {
            status,
            reference,
            text: resp.text().await?,
        })
    }
}

/// One attack: the direct answer must show it working (`direct` returns `Ok`), the edge must
/// refuse with `status` / `reason` and a detail containing `detail`.
struct Attack {
    name: &'static str,
    call: Call,
    direct: Option<fn(&Answer) -> bool>,
    status: u16,
    reason: &'static str,
    detail: String,
}

fn fetched_secret(a: &Answer) -> bool {
    a.text.contains("metadata-credentials")
}

fn served_other_account(a: &Answer) -> bool {
    a.status == 200 && a.json()["owner"] == "bob"
}

fn answered(a: &Answer) -> bool {
    a.status == 200 && a.json()["data"].is_object()
}

fn gql(query: &str) -> Call {
    Call::new(Method::POST, "/graphql").json(json!({ "query": query }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    // The protected app, and an "internal" service on another loopback address that only an
    // SSRF could reach (it serves /internal/secret like a metadata endpoint).
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = listener.local_addr()?;
    tokio::spawn(sase_testkit::demo_app::serve(
        listener,
        std::future::pending::<()>(),
    ));
    let internal = TcpListener::bind("127.0.0.2:0").await?;
    let internal_port = internal.local_addr()?.port();
    tokio::spawn(sase_testkit::demo_app::serve(
        internal,
        std::future::pending::<()>(),
    ));
    // A partner's hook service on a loopback address the allowlist names explicitly.
    let hooks = TcpListener::bind("127.0.0.3:0").await?;
    let hooks_port = hooks.local_addr()?.port();
    tokio::spawn(sase_testkit::demo_app::serve(
        hooks,
        std::future::pending::<()>(),
    ));
    let app = format!("http://{app_addr}");

    // An HTTPS upstream (its own CA) that will require a client certificate of the tenant CA
    // (known once the edge is enrolled).
    let upstream_tls = TlsUpstream::new().await?;
    let tls_upstream = format!("https://localhost:{}", upstream_tls.port);

    // Client certificates: one CA the mTLS resources trust, one they do not.
    let client_ca = TestCa::new()?;
    let other_ca = TestCa::new()?;

    let key = IssuerKey::generate();
    let alice = token(&key, "alice", "acme")?;
    let stack = Stack::start_with_edge_args(
        &args.bin_dir,
        &args.work_dir,
        None,
        &policy(
            &key,
            &app,
            &tls_upstream,
            &upstream_tls.ca_pem,
            &client_ca.cert.pem(),
        )?,
        "127.0.0.1:0",
        &["--https-listen".to_string(), "127.0.0.1:0".to_string()],
    )
    .await?;
    let edge_https = stack
        .edge_line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .map(|w| w.trim_end_matches(',').to_string())
        .ok_or_else(|| anyhow!("no HTTPS listener in {:?}", stack.edge_line))?;
    let edge_ca = std::fs::read(args.work_dir.join("edge/tls/ca.pem"))?;
    let tenant_ca = std::fs::read(args.work_dir.join("edge/tenant-ca.pem"))?;
    let upstream_ca_pem = upstream_tls.ca_pem.clone();
    upstream_tls.serve(&tenant_ca)?;
    let edge = format!("http://{}", stack.edge_addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;

    let secret = |host: &str| format!("http://{host}:{internal_port}/internal/secret");
    let webhook = |url: String| Call::new(Method::POST, "/webhooks").json(json!({ "url": url }));
    let attacks = vec![
        Attack {
            name: "API1: another user's account by path",
            call: Call::new(Method::GET, "/accounts/bob"),
            direct: Some(served_other_account),
            status: 403,
            reason: "object_not_owned",
            detail: "path parameter `accountId` does not match claim `sub`".into(),
        },
        Attack {
            name: "API1: another tenant by query parameter",
            call: Call::new(Method::GET, "/orders?tenant=globex"),
            direct: Some(|a| a.status == 200),
            status: 403,
            reason: "object_not_owned",
            detail: "query parameter `tenant` does not match claim `tenant`".into(),
        },
        Attack {
            name: "API1: tenant parameter polluted with a second value",
            call: Call::new(Method::GET, "/orders?tenant=acme&tenant=globex"),
            direct: Some(|a| a.status == 200),
            status: 403,
            reason: "object_not_owned",
            detail: "query parameter `tenant` does not match claim `tenant`".into(),
        },
        Attack {
            name: "API1: owner field in the body",
            call: Call::new(Method::POST, "/webhooks")
                .json(json!({"owner": "bob", "url": "http://203.0.113.9/"})),
            direct: None,
            status: 403,
            reason: "object_not_owned",
            detail: "body field `/owner` does not match claim `sub`".into(),
        },
        Attack {
            name: "API1: owner repeated in the body (parsers keep different ones)",
            call: Call::new(Method::POST, "/webhooks")
                .raw_json(r#"{"owner": "bob", "owner": "alice", "url": "http://127.0.0.3:1/"}"#),
            direct: None,
            status: 400,
            reason: "bad_request",
            detail: "the JSON body repeats a member name".into(),
        },
        Attack {
            name: "API7: webhook to an internal service on loopback",
            call: webhook(secret("127.0.0.2")),
            direct: Some(fetched_secret),
            status: 403,
            reason: "egress_refused",
            detail: "body field `/url`: resolves to a loopback address".into(),
        },
        Attack {
            name: "API7: loopback written as a decimal IPv4",
            call: webhook(secret("2130706434")),
            direct: Some(fetched_secret),
            status: 403,
            reason: "egress_refused",
            detail: "resolves to a loopback address".into(),
        },
        Attack {
            name: "API7: loopback written as an IPv4-mapped IPv6 address",
            call: webhook(secret("[::ffff:127.0.0.2]")),
            direct: None,
            status: 403,
            reason: "egress_refused",
            detail: "resolves to a loopback address".into(),
        },
        Attack {
            name: "API7: localhost",
            call: webhook(format!(
                "http://localhost:{}/internal/secret",
                app_addr.port()
            )),
            direct: Some(fetched_secret),
            status: 403,
            reason: "egress_refused",
            detail: "body field `/url`".into(),
        },
        Attack {
            name: "API7: cloud metadata address",
            call: webhook("http://169.254.169.254/latest/meta-data/".into()),
            direct: None,
            status: 403,
            reason: "egress_refused",
            detail: "resolves to a cloud metadata address".into(),
        },
        Attack {
            name: "API7: file scheme",
            call: webhook("file:///etc/passwd".into()),
            direct: None,
            status: 403,
            reason: "egress_refused",
            detail: "only http and https URLs are allowed".into(),
        },
        Attack {
            name: "API7: upstream outside the resource's egress allowlist",
            call: Call::new(Method::GET, "/health").host("partner.test"),
            direct: Some(|a| a.status == 200),
            status: 403,
            reason: "egress_refused",
            detail: "upstream: host is not in the egress allowlist".into(),
        },
        Attack {
            name: "API10: a third-party answer that breaks its schema",
            call: Call::new(Method::GET, "/accounts/7").host("thirdparty.test"),
            direct: Some(|a| a.status == 200 && a.json()["balance"].is_number()),
            status: 502,
            reason: "upstream_invalid",
            detail: "/body/balance does not match the response schema (type)".into(),
        },
        Attack {
            name: "GraphQL: depth",
            call: gql("{ a { b { c { d } } } }"),
            direct: Some(answered),
            status: 400,
            reason: "graphql_refused",
            detail: "depth 4 exceeds max_depth 3".into(),
        },
        Attack {
            name: "GraphQL: aliases",
            call: gql("{ x: me { id } y: me { id } z: me { id } }"),
            direct: Some(answered),
            status: 400,
            reason: "graphql_refused",
            detail: "3 aliases exceed max_aliases 2".into(),
        },
        Attack {
            name: "GraphQL: root fields",
            call: gql("{ a b c d }"),
            direct: Some(answered),
            status: 400,
            reason: "graphql_refused",
            detail: "4 root fields exceed max_root_fields 3".into(),
        },
        Attack {
            name: "GraphQL: complexity",
            call: gql("{ users(first: 100) { id } }"),
            direct: Some(answered),
            status: 400,
            reason: "graphql_refused",
            detail: "exceeds max_complexity 40".into(),
        },
        Attack {
            name: "GraphQL: introspection",
            call: gql("{ __schema { types { name } } }"),
            direct: Some(answered),
            status: 400,
            reason: "graphql_refused",
            detail: "introspection is disabled".into(),
        },
        Attack {
            name: "GraphQL: batched request",
            call: Call::new(Method::POST, "/graphql")
                .json(json!([{"query": "{ a }"}, {"query": "{ b }"}])),
            direct: Some(answered),
            status: 400,
            reason: "graphql_refused",
            detail: "batched requests are not allowed".into(),
        },
    ];

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

    for attack in attacks {
        let call = attack.call.clone().bearer(&alice);
        if let Some(works) = attack.direct {
            let direct = call.send(&http, &app).await?;
            if !works(&direct) {
                report(
                    attack.name,
                    Err(format!(
                        "the attack does not work directly: {} {}",
                        direct.status, direct.text
                    )),
                );
                continue;
            }
        }
        let answer = call.send(&http, &edge).await?;
        let outcome = check_refusal(&stack, &answer, &attack).await;
        report(attack.name, outcome);
    }

    // What the owner may do still works.
    let allowed = [
        (
            "API1: own account",
            Call::new(Method::GET, "/accounts/alice"),
        ),
        (
            "API1: own tenant",
            Call::new(Method::GET, "/orders?tenant=acme"),
        ),
        (
            // (Public addresses pass too: unit tests; no traffic leaves loopback here.)
            "API7: webhook to a network the allowlist names",
            Call::new(Method::POST, "/webhooks").json(json!({
                "owner": "alice",
                "url": format!("http://127.0.0.3:{hooks_port}/health")
            })),
        ),
        (
            "GraphQL: a query within the limits",
            Call::new(Method::POST, "/graphql").json(json!({"query": "{ me { id name } }"})),
        ),
        (
            "API10: a third-party answer that matches its schema",
            Call::new(Method::GET, "/health").host("thirdparty.test"),
        ),
        (
            "default egress: an upstream on loopback without an egress block",
            Call::new(Method::GET, "/health").host("legacy.test"),
        ),
    ];
    for (name, call) in allowed {
        let answer = call.bearer(&alice).send(&http, &edge).await?;
        // A webhook that went through must also have been fetched by the app.
        let fetched = answer.json().get("fetched").is_none_or(|f| f == 200);
        report(
            name,
            (answer.status == 200 && fetched)
                .then_some(())
                .ok_or(format!("{} {}", answer.status, answer.text)),
        );
    }

    // Token translation and upstream mTLS.
    let direct = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(upstream_ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("{tls_upstream}/echo"))
        .send()
        .await;
    report(
        "mTLS: the upstream refuses a client without a certificate",
        match direct {
            Err(_) => Ok(()),
            Ok(r) => Err(format!(
                "upstream answered {} without a client certificate",
                r.status()
            )),
        },
    );
    let through = Call::new(Method::GET, "/echo")
        .host("backend.test")
        .bearer(&alice)
        .send(&http, &edge)
        .await?;
    let jwks: Value = http
        .get(format!("{edge}/.well-known/sase-edge/jwks.json"))
        .send()
        .await?
        .json()
        .await?;
    report(
        "token translation: the upstream gets the edge's internal token over mTLS",
        check_internal_token(&through, &alice, &jwks, &stack.device_id),
    );
    let nocert = Call::new(Method::GET, "/echo")
        .host("nocert.test")
        .bearer(&alice)
        .send(&http, &edge)
        .await?;
    report(
        "mTLS: without the device certificate the edge cannot reach the upstream",
        (nocert.status == 502 && nocert.json()["error"] == "upstream_unavailable")
            .then_some(())
            .ok_or(format!("{} {}", nocert.status, nocert.text)),
    );

    // mTLS client certificates on the HTTPS listener.
    let https = |identity: Option<reqwest::Identity>| -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&edge_ca)?)
            .timeout(Duration::from_secs(15));
        if let Some(identity) = identity {
            b = b.identity(identity);
        }
        Ok(b.build()?)
    };
    let with_alice_cert = https(Some(client_ca.identity("alice.clients.test")?))?;
    let with_foreign_cert = https(Some(other_ca.identity("alice.clients.test")?))?;
    let without_cert = https(None)?;
    let mtls_cases: Vec<(&str, &reqwest::Client, Call, u16, &str)> = vec![
        (
            "mTLS alternative: the certificate alone is the identity",
            &with_alice_cert,
            Call::new(Method::GET, "/accounts/alice.clients.test").host("alt.test"),
            200,
            "",
        ),
        (
            "mTLS alternative: ownership rules read the certificate's identity",
            &with_alice_cert,
            Call::new(Method::GET, "/accounts/bob.clients.test").host("alt.test"),
            403,
            "object_not_owned",
        ),
        (
            "mTLS alternative: neither certificate nor token",
            &without_cert,
            Call::new(Method::GET, "/accounts/alice.clients.test").host("alt.test"),
            401,
            "token_missing",
        ),
        (
            "mTLS: a certificate from another CA",
            &with_foreign_cert,
            Call::new(Method::GET, "/accounts/alice.clients.test").host("alt.test"),
            401,
            "client_cert_invalid",
        ),
        (
            "mTLS additional: a token without a certificate",
            &without_cert,
            Call::new(Method::GET, "/health")
                .host("add.test")
                .bearer(&alice),
            401,
            "client_cert_missing",
        ),
        (
            "mTLS additional: a certificate without a token",
            &with_alice_cert,
            Call::new(Method::GET, "/health").host("add.test"),
            401,
            "token_missing",
        ),
        (
            "mTLS additional: certificate and token",
            &with_alice_cert,
            Call::new(Method::GET, "/health")
                .host("add.test")
                .bearer(&alice),
            200,
            "",
        ),
    ];
    for (name, client, call, status, reason) in mtls_cases {
        let answer = call.send(client, &edge_https).await?;
        let ok = answer.status == status && (reason.is_empty() || answer.json()["error"] == reason);
        report(
            name,
            ok.then_some(()).ok_or(format!(
                "{} {} (want {status} {reason})",
                answer.status, answer.text
            )),
        );
    }

    println!("authz_e2e passed={passed} failed={failed}");
    drop(stack);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn check_refusal(stack: &Stack, answer: &Answer, attack: &Attack) -> Result<(), String> {
    let body = answer.json();
    if answer.status != attack.status || body["error"] != attack.reason {
        return Err(format!(
            "edge answered {} {} (want {} {})",
            answer.status, answer.text, attack.status, attack.reason
        ));
    }
    let message = body["message"].as_str().unwrap_or("");
    if !message.contains(&attack.detail) {
        return Err(format!("message {message:?} lacks {:?}", attack.detail));
    }
    let reference = answer
        .reference
        .as_deref()
        .ok_or_else(|| "no reference".to_string())?;
    let event = stack
        .audit_event(reference, Duration::from_secs(20))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| anyhow!("no audit event for {reference}"))
        .map_err(|e| e.to_string())?;
    if event["reason"] != attack.reason {
        return Err(format!("audit reason {}", event["reason"]));
    }
    let detail = event["detail"].as_str().unwrap_or("");
    if !detail.contains(&attack.detail) {
        return Err(format!("audit detail {detail:?} lacks {:?}", attack.detail));
    }
    // Names only: the values the attacker sent never reach the audit trail.
    for value in ["bob", "globex", "169.254.169.254", "2130706434"] {
        if detail.contains(value) {
            return Err(format!(
                "audit detail {detail:?} carries the value {value:?}"
            ));
        }
    }
    Ok(())
}

/// The internal token the upstream echoed: not the client's, signed by the edge's published
/// key, with only the configured claims.
fn check_internal_token(
    answer: &Answer,
    client_token: &str,
    jwks: &Value,
    device_id: &str,
) -> Result<(), String> {
    if answer.status != 200 {
        return Err(format!("{} {}", answer.status, answer.text));
    }
    let seen = answer.json()["headers_seen"]["authorization"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let internal = seen
        .strip_prefix("Bearer ")
        .ok_or(format!("upstream saw authorization {seen:?}"))?;
    if internal == client_token || seen.contains(client_token) {
        return Err("the client's token reached the upstream".into());
    }
    let header = jsonwebtoken::decode_header(internal).map_err(|e| e.to_string())?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| {
            keys.iter()
                .find(|k| k["kid"].as_str() == header.kid.as_deref())
        })
        .ok_or("no published key with the token's kid")?;
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or(""),
    )
    .map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["backend"]);
    validation.set_issuer(&[format!("sase-edge:{device_id}")]);
    let data = jsonwebtoken::decode::<Value>(internal, &key, &validation)
        .map_err(|e| format!("internal token does not verify: {e}"))?;
    let c = &data.claims;
    let mut names: Vec<&str> = c
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    names.sort_unstable();
    if names != ["aud", "exp", "iat", "iss", "jti", "scope", "sub", "tenant"] {
        return Err(format!("claims {names:?}"));
    }
    if c["sub"] != "alice" || c["tenant"] != "acme" || c["scope"] != "accounts:read" {
        return Err(format!("claims {c}"));
    }
    if c["exp"].as_i64().unwrap_or(0) - c["iat"].as_i64().unwrap_or(0) != 60 {
        return Err(format!("lifetime {c}"));
    }
    Ok(())
}

/// An HTTPS upstream with its own CA and a `localhost` certificate, serving the demo app and
/// requiring a client certificate (the roots given to [`TlsUpstream::serve`]).
struct TlsUpstream {
    listener: TcpListener,
    port: u16,
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TlsUpstream {
    async fn new() -> Result<TlsUpstream> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let cert =
            CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca, &ca_key)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(TlsUpstream {
            port: listener.local_addr()?.port(),
            listener,
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    fn serve(self, client_ca_pem: &[u8]) -> Result<()> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &client_ca_pem[..]) {
            roots.add(cert?)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain, self.key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = self.listener;
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(sase_testkit::demo_app::handle);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Ok(())
    }
}

/// A CA issuing client certificates with a DNS SAN (and client-auth usage).
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> Result<TestCa> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(TestCa {
            cert: params.self_signed(&key)?,
            key,
        })
    }

    /// A client identity (certificate + key) named `dns`.
    fn identity(&self, dns: &str) -> Result<reqwest::Identity> {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![dns.to_string()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        Ok(reqwest::Identity::from_pem(pem.as_bytes())?)
    }
}
