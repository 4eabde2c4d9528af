//! Prometheus metrics of the edge (`/metrics` on the ops listener, [`crate::ops`]).
//!
//! The request path only touches process-wide atomics here: [`request`] (one `fetch_add` per
//! request, indexed by the reason code — no lock, no allocation) and [`waf_evaluated`] (one
//! histogram observation per WAF inspection, on the WAF worker thread). Everything else —
//! spool depth, upload lag, the applied policy version — is read from the live objects when
//! Prometheus scrapes, and the exposition (OpenMetrics text, which Prometheus reads natively)
//! is encoded by `prometheus-client` from a registry built for that scrape.
//!
//! Series (all in the `sase_edge_` namespace; docs/OPERATIONS.md "Metrics reference"):
//! `requests_total{decision,reason}`, `waf_evaluation_seconds` (histogram),
//! `waf_blocks_total`, `waf_queue_depth`, `audit_spool_depth`,
//! `audit_upload_lag_seconds`, `policy_version`, `policy_applied`, `listeners_up`,
//! `tunnel_peers`, `tunnel_rx_bytes_total`, `tunnel_tx_bytes_total`,
//! `tunnel_handshakes_total`, `tunnel_drops_total{cause}` (fed by the tunnel shell once a
//! second through [`tunnel_peers`], [`tunnel_bytes`], [`tunnel_handshake`],
//! [`tunnel_drops`]; 0 without a tunnel), `build_info{version}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sase_model::reason::Reason;

/// Slots for reason codes (`Reason as usize`); the enum has fewer variants, and a reason past
/// the end is counted under the last slot's name rather than dropped.
const REASON_SLOTS: usize = 128;

struct Hot {
    requests: [AtomicU64; REASON_SLOTS],
    /// The reason seen in each slot (set once, on the first request with that reason).
    names: [OnceLock<Reason>; REASON_SLOTS],
    waf_blocks: AtomicU64,
}

static HOT: Hot = Hot {
    requests: [const { AtomicU64::new(0) }; REASON_SLOTS],
    names: [const { OnceLock::new() }; REASON_SLOTS],
    waf_blocks: AtomicU64::new(0),
};

/// WAF evaluation latency buckets: 0.25 ms … ~0.5 s (CRS costs 1-3 ms of CPU per request).
static WAF_LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
    Histogram::new([
        0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
    ])
});

/// Counts one request by its reason (the decision follows from it: `allowed` is `allow`,
/// every other reason `deny`) and, when the WAF refused it, one WAF block. Lock-free.
pub fn request(reason: Reason, waf_blocked: bool) {
    let slot = (reason as usize).min(REASON_SLOTS - 1);
    HOT.requests[slot].fetch_add(1, Ordering::Relaxed);
    if HOT.names[slot].get().is_none() {
        let _ = HOT.names[slot].set(reason);
    }
    if waf_blocked {
        HOT.waf_blocks.fetch_add(1, Ordering::Relaxed);
    }
}

/// ZTNA tunnel counters, fed by the tunnel shell (`tunnel_*` series; 0 until it calls these).
struct TunnelCounters {
    peers: AtomicU64,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    handshakes: AtomicU64,
}

static TUNNEL: TunnelCounters = TunnelCounters {
    peers: AtomicU64::new(0),
    rx_bytes: AtomicU64::new(0),
    tx_bytes: AtomicU64::new(0),
    handshakes: AtomicU64::new(0),
};

/// The number of tunnel peers with a live session.
pub fn tunnel_peers(n: u64) {
    TUNNEL.peers.store(n, Ordering::Relaxed);
}

/// Bytes received from and sent to tunnel peers (inner packets), more since the last call.
pub fn tunnel_bytes(rx: u64, tx: u64) {
    TUNNEL.rx_bytes.fetch_add(rx, Ordering::Relaxed);
    TUNNEL.tx_bytes.fetch_add(tx, Ordering::Relaxed);
}

/// Completed WireGuard handshakes (`n` since the last call).
pub fn tunnel_handshake(n: u64) {
    TUNNEL.handshakes.fetch_add(n, Ordering::Relaxed);
}

/// Tunnel datagrams and packets dropped, by cause (the core's stable snake_case names), `n`
/// more since the last call. Called by the tunnel shell once a second, not per packet.
pub fn tunnel_drops(cause: &str, n: u64) {
    let mut drops = TUNNEL_DROPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *drops.entry(cause.to_string()).or_default() += n;
}

static TUNNEL_DROPS: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Records how long one WAF inspection took (request or response phases).
pub fn waf_evaluated(took: Duration) {
    WAF_LATENCY.observe(took.as_secs_f64());
}

/// The requests counted so far for `reason` (tests and diagnostics).
pub fn requests_with(reason: Reason) -> u64 {
    HOT.requests[(reason as usize).min(REASON_SLOTS - 1)].load(Ordering::Relaxed)
}

/// What the scrape reads from the running edge besides the hot-path counters.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Version of the policy in force (0: none).
    pub policy_version: u64,
    /// Whether a verified policy is in force.
    pub policy_applied: bool,
    /// Whether the published listeners are accepting.
    pub listeners_up: bool,
    /// Audit events written but not yet acknowledged by the control plane.
    pub spool_depth: u64,
    /// Age of the oldest unacknowledged audit event, seconds (0 when none waits).
    pub upload_lag_seconds: f64,
    /// WAF jobs waiting for a worker.
    pub waf_queue_depth: u64,
}

fn gauge_u(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, gauge),
        None => registry.register(name, help, gauge),
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, c),
        None => registry.register(name, help, c),
    }
}

/// Encodes every series (OpenMetrics text).
pub fn encode(snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("sase_edge");
    let requests = Family::<[(&'static str, &'static str); 2], Counter>::default();
    for (slot, count) in HOT.requests.iter().enumerate() {
        let n = count.load(Ordering::Relaxed);
        let Some(reason) = HOT.names[slot].get() else {
            continue;
        };
        let decision = if *reason == Reason::Allowed {
            "allow"
        } else {
            "deny"
        };
        requests
            .get_or_create(&[("decision", decision), ("reason", reason.as_str())])
            .inc_by(n);
    }
    registry.register(
        "requests",
        "Requests decided by the edge, by decision and reason code (one per audit event)",
        requests,
    );
    registry.register_with_unit(
        "waf_evaluation",
        "Time spent in WAF inspections (CRS via libmodsecurity) on the WAF workers",
        Unit::Seconds,
        WAF_LATENCY.clone(),
    );
    counter(
        &mut registry,
        "waf_blocks",
        "Requests the WAF refused",
        None,
        HOT.waf_blocks.load(Ordering::Relaxed),
    );
    gauge_u(
        &mut registry,
        "waf_queue_depth",
        "WAF inspections waiting for a worker",
        None,
        snapshot.waf_queue_depth,
    );
    gauge_u(
        &mut registry,
        "audit_spool_depth",
        "Audit events spooled and not yet acknowledged by the control plane",
        None,
        snapshot.spool_depth,
    );
    let lag: Gauge<f64, AtomicU64> = Gauge::default();
    lag.set(snapshot.upload_lag_seconds);
    registry.register_with_unit(
        "audit_upload_lag",
        "Age of the oldest audit event not yet acknowledged by the control plane",
        Unit::Seconds,
        lag,
    );
    gauge_u(
        &mut registry,
        "policy_version",
        "Version of the policy bundle in force (0: none)",
        None,
        snapshot.policy_version,
    );
    gauge_u(
        &mut registry,
        "policy_applied",
        "1 when a verified policy bundle is in force",
        None,
        u64::from(snapshot.policy_applied),
    );
    gauge_u(
        &mut registry,
        "listeners_up",
        "1 when the published listeners accept connections",
        None,
        u64::from(snapshot.listeners_up),
    );
    // Fed by the tunnel shell through `tunnel_*` above (0 when the edge runs no tunnel).
    gauge_u(
        &mut registry,
        "tunnel_peers",
        "ZTNA tunnel peers with a live session",
        None,
        TUNNEL.peers.load(Ordering::Relaxed),
    );
    counter(
        &mut registry,
        "tunnel_rx",
        "Bytes received through ZTNA tunnels",
        Some(Unit::Bytes),
        TUNNEL.rx_bytes.load(Ordering::Relaxed),
    );
    counter(
        &mut registry,
        "tunnel_tx",
        "Bytes sent through ZTNA tunnels",
        Some(Unit::Bytes),
        TUNNEL.tx_bytes.load(Ordering::Relaxed),
    );
    counter(
        &mut registry,
        "tunnel_handshakes",
        "Completed WireGuard handshakes",
        None,
        TUNNEL.handshakes.load(Ordering::Relaxed),
    );
    let drops = Family::<[(&'static str, String); 1], Counter>::default();
    for (cause, n) in TUNNEL_DROPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        drops.get_or_create(&[("cause", cause.clone())]).inc_by(*n);
    }
    registry.register(
        "tunnel_drops",
        "Tunnel datagrams and inner packets dropped, by cause (acl_denied, unknown_peer, ...)",
        drops,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_exposes_named_series() {
        let before = requests_with(Reason::RouteNotFound);
        request(Reason::RouteNotFound, false);
        request(Reason::WafBlocked, true);
        request(Reason::Allowed, false);
        waf_evaluated(Duration::from_millis(3));
        assert_eq!(requests_with(Reason::RouteNotFound), before + 1);
        let text = encode(&Snapshot {
            policy_version: 7,
            policy_applied: true,
            spool_depth: 3,
            upload_lag_seconds: 1.5,
            ..Snapshot::default()
        });
        assert!(
            text.contains("sase_edge_requests_total{decision=\"deny\",reason=\"route_not_found\"}")
        );
        assert!(text.contains("sase_edge_requests_total{decision=\"allow\",reason=\"allowed\"}"));
        assert!(text.contains("sase_edge_waf_blocks_total "));
        assert!(text.contains("sase_edge_waf_evaluation_seconds_bucket{le=\"0.004\"}"));
        assert!(text.contains("sase_edge_policy_version 7"));
        assert!(text.contains("sase_edge_audit_spool_depth 3"));
        assert!(text.contains("sase_edge_audit_upload_lag_seconds 1.5"));
        assert!(text.contains("sase_edge_tunnel_peers 0"));
        assert!(text.contains("sase_edge_tunnel_rx_bytes_total 0"));
        tunnel_drops("acl_denied", 2);
        tunnel_drops("acl_denied", 3);
        let text = encode(&Snapshot::default());
        assert!(
            text.contains("sase_edge_tunnel_drops_total{cause=\"acl_denied\"} 5"),
            "{text}"
        );
        assert!(text.contains("sase_edge_build_info{version=\""));
        assert!(text.ends_with("# EOF\n"));
    }
}
