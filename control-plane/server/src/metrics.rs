//! Prometheus metrics, health and readiness of the control plane, served on their own listener
//! (`--metrics-listen`, default `127.0.0.1:9465`, loopback): never on the public API port, so
//! neither edges nor admins' browsers reach it and it needs no authentication of its own.
//!
//! * `GET /metrics` — OpenMetrics text (`prometheus-client`): `sase_control_connected_edges`,
//!   `sase_control_audit_ingest_events_total` (events stored from edges' batches since start;
//!   Prometheus' `rate()` of it is the ingest rate), `sase_control_policy_version{tenant}`
//!   (latest version per tenant), `sase_control_policy_version_latest`,
//!   `sase_control_http_requests_total{route,method,status}` (route = the matched route
//!   template, never the raw path, so the label set stays bounded), `sase_control_db_up`,
//!   `sase_control_build_info{version}`.
//! * `GET /healthz` — the process answers (200).
//! * `GET /readyz` — the database answers a query (200, else 503).
//!
//! The API router counts requests through [`track`] (a `route_layer`, so the matched route
//! template is known).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::Row as _;

use crate::state::SharedState;

/// Default address of the ops listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

static INGESTED: AtomicU64 = AtomicU64::new(0);

type HttpLabels = [(&'static str, String); 3];

static HTTP: LazyLock<Family<HttpLabels, Counter>> = LazyLock::new(Family::default);

/// Counts audit events newly stored from an edge's batch.
pub fn ingested(events: usize) {
    INGESTED.fetch_add(u64::try_from(events).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Audit events stored since start.
pub fn ingested_total() -> u64 {
    INGESTED.load(Ordering::Relaxed)
}

/// Middleware: counts each API request by route template, method and status.
pub async fn track(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    HTTP.get_or_create(&[
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ])
    .inc();
    response
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// Latest policy version per tenant.
async fn policy_versions(state: &SharedState) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant_id, MAX(version) AS version FROM policy_versions GROUP BY tenant_id",
    )
    .fetch_all(state.store.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("version")?)))
        .collect()
}

/// Encodes every series (OpenMetrics text).
pub async fn encode(state: &SharedState) -> String {
    let mut registry = Registry::with_prefix("sase_control");
    gauge(
        &mut registry,
        "connected_edges",
        "Edges with an open channel to this replica",
        i64::try_from(state.hub.connected().len()).unwrap_or(i64::MAX),
    );
    let ingest: Counter = Counter::default();
    ingest.inc_by(ingested_total());
    registry.register(
        "audit_ingest_events",
        "Audit events stored from edges' batches since start (rate() gives the ingest rate)",
        ingest,
    );
    let db_up = state.store.ping().await.is_ok();
    gauge(
        &mut registry,
        "db_up",
        "1 when the database answered the scrape's query",
        i64::from(db_up),
    );
    let versions = Family::<[(&'static str, String); 1], Gauge>::default();
    let mut latest = 0;
    if let Ok(rows) = policy_versions(state).await {
        for (tenant, version) in rows {
            latest = latest.max(version);
            versions.get_or_create(&[("tenant", tenant)]).set(version);
        }
    }
    registry.register(
        "policy_version",
        "Newest policy version per tenant",
        versions,
    );
    gauge(
        &mut registry,
        "policy_version_latest",
        "Newest policy version of any tenant",
        latest,
    );
    registry.register(
        "http_requests",
        "API requests by route template, method and status",
        HTTP.clone(),
    );
    let info = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    registry.register("build_info", "The running build (always 1)", info);
    let mut out = String::with_capacity(8192);
    // Writing into a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

async fn metrics(State(state): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        encode(&state).await,
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
        .into_response()
}

async fn readyz(State(state): State<SharedState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"ready": true, "database": "ok"})).into_response(),
        Err(err) => {
            tracing::warn!(%err, "readiness: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"ready": false, "database": "unreachable"})),
            )
                .into_response()
        }
    }
}

/// The ops listener's application.
pub fn ops_router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the ops listener (plain HTTP: keep it on loopback or a management network).
pub async fn serve(listener: tokio::net::TcpListener, state: SharedState) {
    if let Err(err) = axum::serve(listener, ops_router(state)).await {
        tracing::error!(%err, "ops listener stopped");
    }
}
