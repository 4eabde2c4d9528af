//! The I/O half of rate and flow limits (API4, API6): asks `sase_gateway::ratelimit` for a
//! decision right after the gateway verdict (before the body is read), fetches blocks of shared
//! budgets from Redis when the core asks for one, answers refusals with 429 and `Retry-After`
//! (and `RateLimit-*` headers), and applies the route's size limits and timeouts.
//!
//! Redis is called once per block of tokens (see `sase_gateway::ratelimit::BLOCK_SCRIPT`),
//! never per request; block fetches of one edge are serialised so that concurrent requests do
//! not each take a block. A Redis error or timeout marks the store unreachable for a second
//! (`STORE_RETRY_MS`): shared limits are then enforced locally only (`fail_open`, noted in the
//! audit event's detail) or refused with 503 `rate_limit_store_unavailable` (`fail_closed`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response};
use sase_gateway::ratelimit::{
    BlockRequest, Caller, CompiledLimits, Outcome, Quota, RateLimiter, StoreSettings, BLOCK_SCRIPT,
};
use sase_gateway::Allowed;
use sha2::{Digest as _, Sha256};

use crate::proxy::{now_ms, Audit, Body, Edge};

/// The counters of this edge and its connection to the shared-budget store.
pub struct EdgeLimiter {
    /// The counters (kept across policy changes).
    pub core: RateLimiter,
    /// Open connections per client address and in total (slowloris).
    pub connections: Arc<crate::ratelimit_conn::ConnectionLimits>,
    connection: Mutex<Option<(String, redis::aio::MultiplexedConnection)>>,
    fetch: tokio::sync::Mutex<()>,
    script: redis::Script,
}

impl Default for EdgeLimiter {
    fn default() -> EdgeLimiter {
        EdgeLimiter::with_connection_caps(
            crate::ratelimit_conn::DEFAULT_MAX_CONNECTIONS_PER_IP,
            crate::ratelimit_conn::DEFAULT_MAX_CONNECTIONS,
        )
    }
}

impl EdgeLimiter {
    /// A limiter whose listeners hold at most `per_ip` connections per client address and
    /// `total` in all.
    pub fn with_connection_caps(per_ip: usize, total: usize) -> EdgeLimiter {
        let fds = crate::ratelimit_conn::descriptor_limit();
        let total = crate::ratelimit_conn::total_within(total, fds);
        tracing::info!(per_ip, total, descriptor_limit = ?fds, "connection caps");
        EdgeLimiter {
            core: RateLimiter::default(),
            connections: Arc::new(crate::ratelimit_conn::ConnectionLimits::new(per_ip, total)),
            connection: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(()),
            script: redis::Script::new(BLOCK_SCRIPT),
        }
    }
}

impl std::fmt::Debug for EdgeLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeLimiter")
            .field("counters", &self.core.len())
            .finish()
    }
}

impl EdgeLimiter {
    async fn connect(&self, url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
        if let Some((held, conn)) = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if held == url {
                return Ok(conn.clone());
            }
        }
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((url.to_string(), conn.clone()));
        Ok(conn)
    }

    /// Takes one block from the store: the number of tokens granted.
    async fn fetch_block(
        &self,
        store: &StoreSettings,
        tenant: &str,
        request: &BlockRequest,
    ) -> Result<u32, String> {
        let key = format!(
            "sase:rl:{tenant}:{}",
            hex::encode(&Sha256::digest(request.key.as_bytes())[..16])
        );
        let call = async {
            let mut conn = self.connect(&store.redis_url).await?;
            let granted: i64 = self
                .script
                .key(key)
                .arg(request.block)
                .arg(request.budget)
                .arg(request.expire_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u32, String>(u32::try_from(granted.max(0)).unwrap_or(0))
        };
        match tokio::time::timeout(store.timeout, call).await {
            Ok(Ok(granted)) => Ok(granted),
            Ok(Err(err)) => {
                self.drop_connection();
                Err(err)
            }
            Err(_) => {
                self.drop_connection();
                Err(format!("no answer within {} ms", store.timeout.as_millis()))
            }
        }
    }

    fn drop_connection(&self) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What the limits stage settled for an admitted request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Applied {
    /// Largest body accepted.
    pub(crate) max_body_bytes: u64,
    /// Time allowed to receive the body.
    pub(crate) body_timeout: Duration,
    /// Time allowed for the upstream's answer.
    pub(crate) upstream_timeout: Duration,
    /// Figures for the `RateLimit-*` headers of the answer.
    pub(crate) quota: Option<Quota>,
}

/// Checks the route's header limit and rate and flow limits; on a refusal, returns the audited
/// answer.
pub(crate) async fn enforce(
    edge: &Edge,
    limits: &CompiledLimits,
    allowed: &Allowed,
    headers: &HeaderMap,
    client: SocketAddr,
    audit: &mut Audit<'_>,
) -> Result<Applied, Response<Body>> {
    let mut applied = Applied {
        max_body_bytes: allowed.max_body_bytes,
        body_timeout: edge.limits.body_timeout,
        upstream_timeout: edge.limits.upstream_timeout,
        quota: None,
    };
    let (resource, route) = (allowed.resource.as_str(), allowed.route.as_str());
    let Some(route_limits) = limits.route(resource, route) else {
        return Ok(applied);
    };
    if let Some(n) = route_limits.max_body_bytes {
        applied.max_body_bytes = n;
    }
    if let Some(t) = route_limits.body_timeout {
        applied.body_timeout = t;
    }
    if let Some(t) = route_limits.upstream_timeout {
        applied.upstream_timeout = t;
    }
    let identity = allowed.identity.clone();
    if let Some(max) = route_limits.max_header_bytes {
        let size: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if size > max {
            return Err(audit.deny(
                sase_model::Reason::HeadersTooLarge,
                resource,
                route,
                identity,
            ));
        }
    }
    if !route_limits.has_rules() {
        return Ok(applied);
    }
    let caller = Caller {
        identity: allowed.identity.as_deref(),
        ip: client.ip(),
    };
    let limiter = &edge.limiter;
    let store = limits.store();
    let mut attempts = 0;
    let outcome = loop {
        let outcome = limiter
            .core
            .check(route_limits, store, route, &caller, now_ms());
        let Outcome::NeedBlock(_) = &outcome else {
            break outcome;
        };
        attempts += 1;
        let Some(store) = store.filter(|_| attempts <= 4) else {
            // Other requests took every block fetched for us: the budget is that contended.
            break Outcome::Deny(sase_gateway::ratelimit::Refusal {
                reason: sase_model::Reason::RateLimited,
                rule: "shared budget".into(),
                retry_after_seconds: 1,
                quota: None,
            });
        };
        // One fetch at a time; a request that waited finds the block another one fetched.
        let _guard = limiter.fetch.lock().await;
        let request = match limiter
            .core
            .check(route_limits, Some(store), route, &caller, now_ms())
        {
            Outcome::NeedBlock(request) => request,
            decided => break decided,
        };
        match limiter
            .fetch_block(store, &edge.identity.tenant_id, &request)
            .await
        {
            Ok(granted) => limiter.core.install_block(&request, granted, now_ms()),
            Err(err) => {
                tracing::warn!(%err, url = %store.redis_url, "rate-limit store unreachable");
                limiter.core.store_failed(now_ms());
            }
        }
    };
    match outcome {
        Outcome::Allow(verdict) => {
            if verdict.degraded {
                audit.detail = Some(
                    "rate-limit store unreachable: shared limits enforced on this edge only (fail_open)"
                        .into(),
                );
            }
            applied.quota = verdict.quota;
            Ok(applied)
        }
        Outcome::Deny(refusal) => {
            audit.detail = Some(format!("limit {}", refusal.rule));
            let mut response = audit.deny(refusal.reason, resource, route, identity);
            let headers = response.headers_mut();
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(refusal.retry_after_seconds),
            );
            add_headers(headers, refusal.quota);
            Err(response)
        }
        Outcome::NeedBlock(_) => Err(audit.deny(
            sase_model::Reason::RateLimitStoreUnavailable,
            resource,
            route,
            identity,
        )),
    }
}

/// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (the IETF httpapi
/// draft's fields) for the tightest rule.
pub(crate) fn add_headers(headers: &mut HeaderMap, quota: Option<Quota>) {
    let Some(q) = quota else { return };
    headers.insert(
        HeaderName::from_static("ratelimit-limit"),
        HeaderValue::from(q.limit),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-remaining"),
        HeaderValue::from(q.remaining),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-reset"),
        HeaderValue::from(q.reset_seconds),
    );
}

/// The compiled limits of a policy (kept next to the compiled policy).
pub fn compile(policy: &sase_model::Policy) -> Arc<CompiledLimits> {
    Arc::new(CompiledLimits::compile(policy))
}
