//! The edge's local ops listener (`--metrics-listen`, default `127.0.0.1:9464`, loopback):
//! `GET /metrics` (Prometheus, [`crate::metrics`]), `GET /healthz` (the process answers) and
//! `GET /readyz` (a verified policy is in force and the published listeners accept: 200, else
//! 503 with what is missing). It is separate from the published listeners so that neither
//! clients of protected resources nor the policy ever see it, and it never touches the request
//! path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::{self, Snapshot};
use crate::proxy::Edge;

/// Default address of the ops listener (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

static LISTENERS_UP: AtomicBool = AtomicBool::new(false);

/// Called once every published listener has been bound and its accept loop started.
pub fn mark_listeners_up() {
    LISTENERS_UP.store(true, Ordering::Release);
}

/// Reads what a scrape or a readiness probe reports from the running edge. `with_lag` also
/// reads the oldest unacknowledged event from the spool (a segment read: scrapes only, not the
/// frequent readiness probes).
pub async fn snapshot(edge: &Arc<Edge>, with_lag: bool) -> Snapshot {
    let policy = edge.policy.snapshot();
    let spool = edge.spool.clone();
    let (depth, lag) = tokio::task::spawn_blocking(move || {
        let pending = spool.pending();
        if pending == 0 || !with_lag {
            return (pending, 0.0);
        }
        let acked = spool.head_seq().saturating_sub(pending);
        let oldest = spool
            .read_after(acked, 1)
            .ok()
            .and_then(|events| events.first().map(|e| e.ts_ms));
        let lag = oldest.map_or(0.0, |ts| {
            let ms = crate::proxy::now_ms().saturating_sub(ts).max(0);
            // Milliseconds to seconds; precision beyond 2^53 ms is irrelevant here.
            #[allow(clippy::cast_precision_loss)]
            let secs = ms as f64 / 1000.0;
            secs
        });
        (pending, lag)
    })
    .await
    .unwrap_or((0, 0.0));
    Snapshot {
        policy_version: policy.as_ref().map_or(0, |p| p.version),
        policy_applied: policy.is_some(),
        listeners_up: LISTENERS_UP.load(Ordering::Acquire),
        spool_depth: depth,
        upload_lag_seconds: lag,
        waf_queue_depth: u64::try_from(edge.waf.queued()).unwrap_or(u64::MAX),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Answers one ops request.
pub async fn answer(edge: &Arc<Edge>, method: &hyper::Method, path: &str) -> Response<Full<Bytes>> {
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match path {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::encode(&snapshot(edge, true).await),
        ),
        "/healthz" => text(
            StatusCode::OK,
            "application/json",
            serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}).to_string(),
        ),
        "/readyz" => {
            let s = snapshot(edge, false).await;
            let ready = s.policy_applied && s.listeners_up;
            let body = serde_json::json!({
                "ready": ready,
                "policy_applied": s.policy_applied,
                "policy_version": s.policy_version,
                "listeners_up": s.listeners_up,
            });
            text(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                "application/json",
                body.to_string(),
            )
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Binds the ops listener. A failure is reported and the edge runs on without it (enforcement
/// does not depend on being observed).
pub async fn bind(addr: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Some(l),
        Err(err) => {
            tracing::error!(%addr, %err, "cannot bind the ops listener (/metrics, /healthz, /readyz); running without it");
            None
        }
    }
}

/// Serves the ops listener (HTTP/1.1, small answers, no keep-alive limits needed on loopback).
pub async fn serve(listener: TcpListener, edge: Arc<Edge>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "ops listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let edge = edge.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(answer(&edge, req.method(), req.uri().path()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
