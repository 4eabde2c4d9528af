//! The "sample protected app": a tiny upstream HTTP service that sits behind
//! the edge gateway in the demo and the end-to-end tests.
//!
//! It echoes what it received (method, path, query, the identity headers the
//! gateway injects, body length) so tests can check what the proxy forwarded,
//! and serves a few fixed "orders" endpoints for the demo. Served by the
//! `sase-demo-app` binary; [`serve`] can also be run in-process.
//!
//! It also serves a deliberately careless "users" API for the API contract tests
//! (`tests/e2e/contract.sh`, `tests/security/schemathesis.sh`): user records leak
//! `password_hash` and `is_admin`, `POST /users` and `PATCH /users/{id}` accept any property
//! (mass assignment), a non-numeric id or a non-object body crashes with a stack trace (500),
//! `/report` leaks a connection string, `/legacy` always crashes, and every answer allows any
//! origin (`Access-Control-Allow-Origin: *`). Each of these works directly against the app
//! and is stopped by the edge.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Value of the `app` field in echo responses.
pub const APP_NAME: &str = "demo-orders";
/// Maximum request body the app reads (8 MiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Request headers reported back under `headers_seen`.
pub const ECHOED_HEADERS: [&str; 3] = ["x-sase-reference", "x-sase-identity", "authorization"];

/// The fixed sample orders: `(id, item, qty)`.
pub const ORDERS: [(&str, &str, u32); 3] = [
    ("1001", "router", 2),
    ("1002", "switch", 1),
    ("1003", "access-point", 5),
];

fn order_json(id: &str, item: &str, qty: u32) -> Value {
    json!({ "id": id, "item": item, "qty": qty })
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert("x-demo-app", HeaderValue::from_static(APP_NAME));
    resp
}

/// Joins all values of header `name` with `", "`; `None` if absent or not
/// visible ASCII. Repeated headers are all shown so tests can detect a
/// client-supplied identity header that the gateway failed to strip.
fn header_joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Option<Vec<&str>> = values.map(|v| v.to_str().ok()).collect();
    parts.map(|p| p.join(", "))
}

/// Handles one request (the whole application logic).
pub async fn handle<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    // Always drain the body so keep-alive connections stay usable.
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, msg) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("error reading request body: {e}"),
                )
            };
            return Ok(json_response(status, &json!({ "error": msg })));
        }
    };

    let body_bytes = body.len();
    let path = parts.uri.path();
    if let Some(response) = users_api(&parts.method, path, &body) {
        return Ok(response);
    }
    if let Some(response) = authz_api(&parts.method, path, &body).await {
        return Ok(response);
    }
    if parts.method == Method::GET {
        if path == "/health" {
            return Ok(json_response(StatusCode::OK, &json!({ "status": "ok" })));
        }
        if path == "/orders" || path == "/orders/" {
            let orders: Vec<Value> = ORDERS
                .iter()
                .map(|(id, item, qty)| order_json(id, item, *qty))
                .collect();
            return Ok(json_response(StatusCode::OK, &json!({ "orders": orders })));
        }
        if let Some(id) = path.strip_prefix("/orders/") {
            if !id.is_empty() && !id.contains('/') {
                return Ok(match ORDERS.iter().find(|(oid, _, _)| *oid == id) {
                    Some((oid, item, qty)) => {
                        json_response(StatusCode::OK, &order_json(oid, item, *qty))
                    }
                    None => json_response(
                        StatusCode::NOT_FOUND,
                        &json!({ "error": "order not found", "id": id }),
                    ),
                });
            }
        }
    }

    let mut seen = serde_json::Map::new();
    for name in ECHOED_HEADERS {
        let v = header_joined(&parts.headers, name).map_or(Value::Null, Value::String);
        seen.insert(name.to_owned(), v);
    }
    let body = json!({
        "app": APP_NAME,
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers_seen": seen,
        "body_bytes": body_bytes,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// A user record as the careless "users" API stores it: with the fields it should never show.
fn stored_user(id: u64) -> Value {
    json!({
        "id": id,
        "name": "Ann",
        "email": "ann@example.com",
        "password_hash": "$2b$12$KIXQJf1r0nZ9Yx1u4b3m8u",
        "is_admin": false,
    })
}

fn stack_trace(what: &str) -> Response<Full<Bytes>> {
    let text = format!(
        "Traceback (most recent call last):\n  File \"/srv/users/app.py\", line 42, in handler\n    \
         row = db.execute(\"SELECT * FROM users WHERE id = \" + {what})\n\
         psycopg2.errors.InvalidTextRepresentation: invalid input syntax for type integer\n\
         DATABASE_URL=postgres://admin:hunter2@db.internal/users\n"
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// The careless "users" API (see the module docs); `None` for other paths.
fn users_api(method: &Method, path: &str, body: &Bytes) -> Option<Response<Full<Bytes>>> {
    let merged = |base: Value| -> Option<Value> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let mut user = base;
        if let Value::Object(u) = &mut user {
            // Mass assignment: whatever the client sends is stored.
            u.extend(fields);
        }
        Some(user)
    };
    let mut response = match (method, path) {
        (&Method::GET, "/users") => {
            json_response(StatusCode::OK, &json!([stored_user(1), stored_user(2)]))
        }
        (&Method::POST, "/users") => match merged(stored_user(3)) {
            Some(user) => json_response(StatusCode::CREATED, &user),
            None => stack_trace("body"),
        },
        (&Method::GET, "/report") => json_response(
            StatusCode::OK,
            &json!({"total": 2, "debug": {"dsn": "postgres://admin:hunter2@db.internal/users"}}),
        ),
        (&Method::GET, "/legacy") => stack_trace("legacy"),
        (&Method::OPTIONS, p) if p == "/users" || p.starts_with("/users/") => {
            // A preflight answer that allows anything from anywhere.
            let mut resp = json_response(StatusCode::NO_CONTENT, &Value::Null);
            *resp.body_mut() = Full::new(Bytes::new());
            for (name, value) in [
                ("access-control-allow-methods", "*"),
                ("access-control-allow-headers", "*"),
            ] {
                resp.headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            resp
        }
        (m, p) if p.starts_with("/users/") && (m == Method::GET || m == Method::PATCH) => {
            let id = &p["/users/".len()..];
            match id.parse::<u64>() {
                Ok(id) if m == Method::GET => json_response(StatusCode::OK, &stored_user(id)),
                Ok(id) => match merged(stored_user(id)) {
                    Some(user) => json_response(StatusCode::OK, &user),
                    None => stack_trace("body"),
                },
                Err(_) => stack_trace("id"),
            }
        }
        _ => return None,
    };
    response
        .headers_mut()
        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
    Some(response)
}

/// The careless authorization API of the authz tests (`tests/e2e/authz.sh`): any account is
/// served to anyone (`GET /accounts/{id}`: BOLA), `POST /webhooks` fetches whatever URL the
/// body's `url` names and returns what it got (SSRF), `GET /internal/secret` is what such a
/// fetch should never reach, and `POST /graphql` answers any query however deep (the echo
/// reports the `Authorization` header received, for the token translation checks). `None` for
/// other paths.
async fn authz_api(method: &Method, path: &str, body: &Bytes) -> Option<Response<Full<Bytes>>> {
    match (method, path) {
        (&Method::GET, p) if p.starts_with("/accounts/") => {
            let id = &p["/accounts/".len()..];
            Some(json_response(
                StatusCode::OK,
                &json!({"id": id, "owner": id, "iban": "BE71 0961 2345 6769", "balance": 1000}),
            ))
        }
        (&Method::GET, "/internal/secret") => Some(json_response(
            StatusCode::OK,
            &json!({"secret": "metadata-credentials-AKIA0000"}),
        )),
        (&Method::POST, "/webhooks") => {
            let url = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["url"].as_str().map(str::to_string))?;
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .ok()?;
            let answer = match client.get(&url).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    json!({"fetched": status, "body": text.chars().take(512).collect::<String>()})
                }
                Err(e) => json!({"fetched": null, "error": e.to_string()}),
            };
            Some(json_response(StatusCode::OK, &answer))
        }
        (&Method::POST, "/graphql") => Some(json_response(
            StatusCode::OK,
            &json!({"data": {"answered_bytes": body.len()}}),
        )),
        _ => None,
    }
}

/// Accepts connections on `listener` (HTTP/1.1 and h2c) until `shutdown`
/// resolves, then stops accepting and aborts open connections.
pub async fn serve<F>(listener: TcpListener, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow forever.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Transient (e.g. EMFILE): log and keep serving.
                    eprintln!("sase-demo-app: accept error: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        conns.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let svc = service_fn(|req: Request<Incoming>| handle(req));
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                eprintln!("sase-demo-app: connection from {peer}: {e}");
            }
        });
    }
    conns.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let resp = handle(req).await.expect("infallible");
        let status = resp.status();
        assert_eq!(
            resp.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("full body")
            .to_bytes();
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    fn req(method: &str, uri: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("x-sase-identity", "alice")
            .header("x-sase-identity", "mallory")
            .body(Full::new(Bytes::from_static(body)))
            .expect("request")
    }

    #[tokio::test]
    async fn echo() {
        let (status, v) = call(req("POST", "/api/x?a=1&b=2", b"hello")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["app"], APP_NAME);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/api/x");
        assert_eq!(v["query"], "a=1&b=2");
        assert_eq!(v["body_bytes"], 5);
        assert_eq!(v["headers_seen"]["x-sase-identity"], "alice, mallory");
        assert_eq!(v["headers_seen"]["x-sase-reference"], Value::Null);

        let (_, v) = call(req("GET", "/", b"")).await;
        assert_eq!(v["query"], Value::Null);
    }

    #[tokio::test]
    async fn orders_and_health() {
        let (status, v) = call(req("GET", "/orders", b"")).await;
        assert_eq!(status, StatusCode::OK);
        let orders = v["orders"].as_array().expect("array");
        assert_eq!(orders.len(), 3);
        assert_eq!(orders[0], json!({"id":"1001","item":"router","qty":2}));

        let (status, v) = call(req("GET", "/orders/1002", b"")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["id"], "1002");

        let (status, _) = call(req("GET", "/orders/9999", b"")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, v) = call(req("GET", "/health", b"")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v, json!({"status":"ok"}));

        // Non-GET on /orders falls through to the echo.
        let (_, v) = call(req("POST", "/orders", b"{}")).await;
        assert_eq!(v["method"], "POST");
        assert_eq!(v["body_bytes"], 2);
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let big: &'static [u8] = Vec::leak(vec![0u8; MAX_BODY_BYTES + 1]);
        let (status, v) = call(req("PUT", "/upload", big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(v["error"].is_string());

        let exact: &'static [u8] = Vec::leak(vec![0u8; MAX_BODY_BYTES]);
        let (status, v) = call(req("PUT", "/upload", exact)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["body_bytes"], MAX_BODY_BYTES);
    }
}
