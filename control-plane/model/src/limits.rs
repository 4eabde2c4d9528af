//! Resource consumption (OWASP API4) and sensitive business flows (API6): the typed settings.
//!
//! * A resource or a route may carry a `limits` block ([`Limits`]): size limits and timeouts
//!   (a route's values override the resource's) and rate limits ([`RateLimit`]) counted per
//!   client (the verified principal: token `iss|sub`, or the tunnel / mTLS identity), per client
//!   IP address or per route, as a token bucket (bursts up to `burst`) or a sliding window (never
//!   more than `requests` in any window of `window_seconds`, also across a window boundary).
//! * The policy's top-level `limits` block ([`PolicyLimits`]) holds the flow limits
//!   ([`FlowLimit`]: one budget over a set of routes, e.g. 5 sign-ups per IP per hour) and the
//!   store of shared budgets ([`RateLimitStore`]: a Redis server through which several edges
//!   share a limit marked `shared`, taking tokens from it in blocks).
//!
//! Enforcement (without I/O) is `sase-gateway::ratelimit`; the Redis calls are the edge's.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// Size limits, timeouts and rate limits of a resource or a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, in bytes (routes only; a resource sets its `max_body_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Largest total size of the request's header names and values, in bytes (between
    /// [`MIN_HEADER_BYTES`] and [`MAX_HEADER_BYTES`]). It can only lower the listener's own
    /// limit (32 KiB), which is checked before any route is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u32>,
    /// Time allowed to receive the request body, in milliseconds (default: the listener's, 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_timeout_ms: Option<u32>,
    /// Time allowed for the upstream to answer with its headers, in milliseconds (default: the
    /// edge's `--upstream-timeout-secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u32>,
    /// Rate limits. On a resource they apply to every route of it (a `per: client` limit then
    /// counts the client's calls to all routes together); on a route, to that route. A request
    /// must pass all of the resource's and the route's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate: Vec<RateLimit>,
}

/// Smallest value of [`Limits::max_header_bytes`].
pub const MIN_HEADER_BYTES: u32 = 512;
/// Largest value of [`Limits::max_header_bytes`].
pub const MAX_HEADER_BYTES: u32 = 65_536;
/// Bounds of the timeouts, in milliseconds.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=600_000;
/// Largest `requests` (and `burst`) of a limit.
pub const MAX_REQUESTS: u32 = 1_000_000;
/// Largest `window_seconds` of a limit (one day).
pub const MAX_WINDOW_SECONDS: u32 = 86_400;

/// What a rate limit counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The verified principal: the token's `iss|sub` (or the tunnel / mTLS identity). On a
    /// public route, where there is none, the client IP address stands in.
    Client,
    /// The client IP address (IPv6 clients by their /64 prefix).
    Ip,
    /// All callers together: one budget for the route (or, for a flow, for the flow).
    Route,
}

/// How a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Refills `requests` tokens per `window_seconds`, holding at most `burst`: bursts allowed.
    #[default]
    TokenBucket,
    /// At most `requests` in any interval of `window_seconds` (no burst at a window boundary).
    SlidingWindow,
}

/// One rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Identifier unique among the limits of a resource and its routes; named in audit events.
    pub id: String,
    /// What is counted separately (`client`, `ip` or `route`).
    pub per: LimitKey,
    /// `token_bucket` (default) or `sliding_window`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Requests allowed per window (1 to [`MAX_REQUESTS`]).
    pub requests: u32,
    /// The window, in seconds (1 to [`MAX_WINDOW_SECONDS`]).
    pub window_seconds: u32,
    /// Token bucket only: the most requests accepted at once (default `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Count against a budget shared by every edge of the tenant, held in the policy's
    /// [`RateLimitStore`]: at most `requests` per clock-aligned window of `window_seconds` in
    /// total (each edge also applies the limit locally).
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The policy-wide limits: flows and the shared-budget store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyLimits {
    /// Sensitive business flows (API6): budgets over sets of routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<FlowLimit>,
    /// Where shared budgets are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<RateLimitStore>,
}

/// A sensitive business flow (API6): one budget counted over every request to any of its
/// routes, e.g. at most 5 sign-ups (`POST /signup` and `POST /signup/confirm`) per IP per hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowLimit {
    /// Identifier unique among the flows; named in audit events as `flow:<id>`.
    pub id: String,
    /// The routes of the flow, as `resource/route`.
    pub routes: Vec<String>,
    /// What is counted separately (`client`, `ip` or `route` = all callers together).
    pub per: LimitKey,
    /// `token_bucket` (default) or `sliding_window`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Requests allowed per window.
    pub requests: u32,
    /// The window, in seconds.
    pub window_seconds: u32,
    /// Token bucket only: the most requests accepted at once (default `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Count against a budget shared by every edge (see [`RateLimit::shared`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared: bool,
}

/// What an edge does when the store of shared budgets cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Enforce shared limits locally only (each edge alone applies the limit); the audit event
    /// of each request says so.
    #[default]
    FailOpen,
    /// Refuse requests that count against a shared budget (503 `rate_limit_store_unavailable`).
    FailClosed,
}

/// A Redis server holding shared budgets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitStore {
    /// `redis://host:port[/db]`.
    pub redis_url: String,
    /// Tokens an edge takes from a shared budget at once (default [`DEFAULT_BLOCK`]): one Redis
    /// round trip per block, none per request. Tokens an edge holds unused when the window ends
    /// are lost, so the fleet may admit less than the budget, never more.
    #[serde(default = "default_block")]
    pub block: u32,
    /// `fail_open` (default) or `fail_closed`.
    #[serde(default)]
    pub on_unreachable: StoreFailure,
    /// How long a Redis call may take before the store counts as unreachable, in milliseconds
    /// (default 200, between 10 and 5000).
    #[serde(default = "default_store_timeout")]
    pub timeout_ms: u32,
}

/// Default of [`RateLimitStore::block`].
pub const DEFAULT_BLOCK: u32 = 10;

fn default_block() -> u32 {
    DEFAULT_BLOCK
}

fn default_store_timeout() -> u32 {
    200
}

/// The fields a [`RateLimit`] and a [`FlowLimit`] share, for validation and compilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// What is counted separately.
    pub per: LimitKey,
    /// How.
    pub algorithm: Algorithm,
    /// Requests per window.
    pub requests: u32,
    /// Window, in seconds.
    pub window_seconds: u32,
    /// Bucket capacity (token bucket).
    pub burst: Option<u32>,
    /// Counted in the shared store too.
    pub shared: bool,
}

impl RateLimit {
    /// The counting fields.
    pub fn spec(&self) -> RateSpec {
        RateSpec {
            per: self.per,
            algorithm: self.algorithm,
            requests: self.requests,
            window_seconds: self.window_seconds,
            burst: self.burst,
            shared: self.shared,
        }
    }
}

impl FlowLimit {
    /// The counting fields.
    pub fn spec(&self) -> RateSpec {
        RateSpec {
            per: self.per,
            algorithm: self.algorithm,
            requests: self.requests,
            window_seconds: self.window_seconds,
            burst: self.burst,
            shared: self.shared,
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b':')
        })
}

fn check_spec(at: &str, spec: &RateSpec, has_store: bool, push: &mut dyn FnMut(String, &str)) {
    if spec.requests == 0 || spec.requests > MAX_REQUESTS {
        push(format!("{at}.requests"), "must be between 1 and 1000000");
    }
    if spec.window_seconds == 0 || spec.window_seconds > MAX_WINDOW_SECONDS {
        push(
            format!("{at}.window_seconds"),
            "must be between 1 and 86400",
        );
    }
    match (spec.algorithm, spec.burst) {
        (Algorithm::SlidingWindow, Some(_)) => push(
            format!("{at}.burst"),
            "only a token_bucket has a burst (a sliding window never exceeds `requests`)",
        ),
        (Algorithm::TokenBucket, Some(b)) if b == 0 || b > MAX_REQUESTS => {
            push(format!("{at}.burst"), "must be between 1 and 1000000")
        }
        _ => {}
    }
    if spec.shared && !has_store {
        push(
            format!("{at}.shared"),
            "a shared limit needs a store in the policy's `limits.store`",
        );
    }
}

fn check_limits(
    at: &str,
    limits: &Limits,
    on_route: bool,
    has_store: bool,
    ids: &mut BTreeSet<String>,
    push: &mut dyn FnMut(String, &str),
) {
    match limits.max_body_bytes {
        Some(_) if !on_route => push(
            format!("{at}.max_body_bytes"),
            "set the resource's own `max_body_bytes` (this field is for routes)",
        ),
        Some(n) if n == 0 || n > 64 * 1024 * 1024 => push(
            format!("{at}.max_body_bytes"),
            "must be between 1 and 67108864",
        ),
        _ => {}
    }
    if limits
        .max_header_bytes
        .is_some_and(|n| !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n))
    {
        push(
            format!("{at}.max_header_bytes"),
            "must be between 512 and 65536",
        );
    }
    for (name, value) in [
        ("body_timeout_ms", limits.body_timeout_ms),
        ("upstream_timeout_ms", limits.upstream_timeout_ms),
    ] {
        if value.is_some_and(|v| !TIMEOUT_MS_RANGE.contains(&v)) {
            push(format!("{at}.{name}"), "must be between 100 and 600000");
        }
    }
    for (i, rate) in limits.rate.iter().enumerate() {
        let at = format!("{at}.rate[{i}]");
        if !is_identifier(&rate.id) {
            push(
                format!("{at}.id"),
                "must be 1-64 characters of a-z, 0-9, '-', '_', '.'",
            );
        } else if !ids.insert(rate.id.clone()) {
            push(
                format!("{at}.id"),
                "duplicate limit id in this resource and its routes",
            );
        }
        check_spec(&at, &rate.spec(), has_store, push);
    }
}

/// Checks the `limits` blocks of a policy (called by [`Policy::validate`]).
pub fn check(policy: &Policy, push: &mut dyn FnMut(String, &str)) {
    let store = policy.limits.as_ref().and_then(|l| l.store.as_ref());
    let has_store = store.is_some();
    for (r, resource) in policy.resources.iter().enumerate() {
        let at = format!("resources[{r}]");
        let mut resource_ids = BTreeSet::new();
        if let Some(limits) = &resource.limits {
            check_limits(
                &format!("{at}.limits"),
                limits,
                false,
                has_store,
                &mut resource_ids,
                push,
            );
        }
        for (o, route) in resource.routes.iter().enumerate() {
            if let Some(limits) = &route.limits {
                // Route limits share the resource's id space (both name their audit events).
                let mut ids = resource_ids.clone();
                check_limits(
                    &format!("{at}.routes[{o}].limits"),
                    limits,
                    true,
                    has_store,
                    &mut ids,
                    push,
                );
            }
        }
    }
    let Some(limits) = &policy.limits else {
        return;
    };
    if let Some(store) = store {
        let url_ok = store
            .redis_url
            .strip_prefix("redis://")
            .is_some_and(|rest| {
                let authority = rest.split('/').next().unwrap_or("");
                !authority.is_empty() && !rest.contains(['?', '#', ' '])
            });
        if !url_ok {
            push(
                "limits.store.redis_url".into(),
                "must be redis://host:port[/db]",
            );
        }
        if store.block == 0 || store.block > 100_000 {
            push("limits.store.block".into(), "must be between 1 and 100000");
        }
        if !(10..=5000).contains(&store.timeout_ms) {
            push(
                "limits.store.timeout_ms".into(),
                "must be between 10 and 5000",
            );
        }
    }
    let mut flow_ids = BTreeSet::new();
    for (f, flow) in limits.flows.iter().enumerate() {
        let at = format!("limits.flows[{f}]");
        if !is_identifier(&flow.id) {
            push(
                format!("{at}.id"),
                "must be 1-64 characters of a-z, 0-9, '-', '_', '.'",
            );
        } else if !flow_ids.insert(flow.id.as_str()) {
            push(format!("{at}.id"), "duplicate flow id");
        }
        if flow.routes.is_empty() {
            push(format!("{at}.routes"), "must name at least one route");
        }
        let mut seen = BTreeSet::new();
        for (i, name) in flow.routes.iter().enumerate() {
            let found = name.split_once('/').is_some_and(|(res, route)| {
                policy
                    .resources
                    .iter()
                    .find(|r| r.name == res)
                    .is_some_and(|r| r.routes.iter().any(|o| o.id == route))
            });
            if !found {
                push(
                    format!("{at}.routes[{i}]"),
                    "names no route (write `resource/route`)",
                );
            } else if !seen.insert(name.as_str()) {
                push(format!("{at}.routes[{i}]"), "route listed twice");
            }
        }
        check_spec(&at, &flow.spec(), has_store, push);
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::Policy;

    const BASE: &str = r#"
limits:
  store: {redis_url: "redis://127.0.0.1:6379", block: 20, on_unreachable: fail_closed}
  flows:
    - {id: signups, routes: [shop/signup, shop/confirm], per: ip, algorithm: sliding_window, requests: 5, window_seconds: 3600}
resources:
  - name: shop
    upstream: http://127.0.0.1:9000
    limits:
      upstream_timeout_ms: 5000
      rate:
        - {id: per-ip, per: ip, requests: 100, window_seconds: 60, burst: 20}
    routes:
      - id: signup
        methods: [POST]
        path: /signup
        public: true
        limits:
          max_body_bytes: 4096
          max_header_bytes: 4096
          body_timeout_ms: 2000
          rate:
            - {id: all, per: route, algorithm: sliding_window, requests: 50, window_seconds: 1, shared: true}
      - {id: confirm, methods: [POST], path: /signup/confirm, public: true}
"#;

    #[test]
    fn limits_parse_and_round_trip() {
        let policy = Policy::parse_yaml(BASE).expect("valid");
        let limits = policy.limits.as_ref().expect("limits");
        assert_eq!(limits.flows[0].routes.len(), 2);
        assert_eq!(limits.store.as_ref().map(|s| s.block), Some(20));
        let route = policy.resources[0].routes[0]
            .limits
            .as_ref()
            .expect("route");
        assert_eq!(route.max_body_bytes, Some(4096));
        assert!(route.rate[0].shared);
        let json = serde_json::to_string(&policy).expect("json");
        assert_eq!(Policy::parse_json(&json).expect("again"), policy);
        // A policy without limits serializes as before (bundles stay byte-identical).
        let plain = Policy::parse_yaml(
            "resources:\n  - name: a\n    upstream: http://127.0.0.1:1\n    routes:\n      - {id: h, methods: [GET], path: /h, public: true}\n",
        )
        .expect("plain");
        assert!(!serde_json::to_string(&plain)
            .expect("json")
            .contains("limits"));
    }

    #[test]
    fn bad_limits_are_reported_with_their_paths() {
        let text = BASE
            .replace(
                "requests: 100, window_seconds: 60",
                "requests: 0, window_seconds: 90000",
            )
            .replace("burst: 20", "burst: 0")
            .replace("max_header_bytes: 4096", "max_header_bytes: 10")
            .replace("body_timeout_ms: 2000", "body_timeout_ms: 5")
            .replace(
                "[shop/signup, shop/confirm]",
                "[shop/signup, shop/nope, shop/signup]",
            )
            .replace(
                "algorithm: sliding_window, requests: 5",
                "algorithm: sliding_window, burst: 3, requests: 5",
            )
            .replace("redis://127.0.0.1:6379", "http://x")
            .replace(
                "upstream_timeout_ms: 5000",
                "upstream_timeout_ms: 5000\n      max_body_bytes: 9",
            );
        let err = Policy::parse_yaml(&text).expect_err("invalid");
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "resources[0].limits.max_body_bytes",
            "resources[0].limits.rate[0].requests",
            "resources[0].limits.rate[0].window_seconds",
            "resources[0].limits.rate[0].burst",
            "resources[0].routes[0].limits.max_header_bytes",
            "resources[0].routes[0].limits.body_timeout_ms",
            "limits.store.redis_url",
            "limits.flows[0].routes[1]",
            "limits.flows[0].routes[2]",
            "limits.flows[0].burst",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }

    #[test]
    fn shared_limits_need_a_store_and_ids_are_unique() {
        let text = BASE
            .replace(
                "  store: {redis_url: \"redis://127.0.0.1:6379\", block: 20, on_unreachable: fail_closed}\n",
                "",
            )
            .replace("{id: all,", "{id: per-ip,");
        let err = Policy::parse_yaml(&text).expect_err("invalid");
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"resources[0].routes[0].limits.rate[0].shared"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"resources[0].routes[0].limits.rate[0].id"),
            "{paths:?}"
        );
        let text = BASE.replace("per: ip, requests: 100", "per: ipaddr, requests: 100");
        let err = Policy::parse_yaml(&text).expect_err("unknown key kind");
        assert_eq!(err.0[0].path, "resources[0].limits.rate[0].per");
        let text = BASE.replace("burst: 20}", "burst: 20, bursts: 1}");
        let err = Policy::parse_yaml(&text).expect_err("unknown field");
        assert_eq!(err.0[0].path, "resources[0].limits.rate[0].bursts");
    }
}
