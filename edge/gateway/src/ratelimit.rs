//! Rate limits (OWASP API4) and flow limits (API6) without I/O: the policy's `limits` blocks
//! compiled once per bundle ([`CompiledLimits`]), and the counters ([`RateLimiter`]) that the
//! shell asks once per request, passing `now`.
//!
//! * **Token bucket** as GCRA (the "generic cell rate algorithm": one timestamp per key, the
//!   theoretical arrival time), in nanoseconds: `requests` per `window_seconds`, at most `burst`
//!   at once.
//! * **Sliding window** as per-key slot counters: the window is cut into [`SLOTS`] slots and a
//!   request counts every request of the current slot and of the [`SLOTS`] slots before it.
//!   That span always covers the last `window_seconds`, so no interval of that length ever holds
//!   more than `requests` admitted requests (no burst at a boundary, unlike a fixed window); the
//!   price is refusing up to one slot (1/20 of the window) early.
//! * **Bounded memory**: counters live in [`SHARDS`] mutex-protected maps of at most
//!   `max_keys / SHARDS` entries each. A full shard first drops the entries that have fully
//!   recovered (a full bucket or an empty window: forgetting them changes nothing); if none has,
//!   it evicts the least recently used eighth (counted in [`RateLimiter::evictions`]): an evicted
//!   client starts again with a full budget, which bounds what a flood of distinct keys can cost.
//! * **Shared budgets** (a limit marked `shared`): besides its local check, the request takes a
//!   token from a block the edge holds for the current clock-aligned window; when the block is
//!   used up, [`RateLimiter::check`] answers [`Outcome::NeedBlock`] *before counting anything*,
//!   the shell asks the store (Redis) for the next block and hands the grant to
//!   [`RateLimiter::install_block`], then asks again. The store grants at most the budget per
//!   window across all edges (see `BLOCK_SCRIPT`), so the fleet admits at most `requests`
//!   per window; one Redis round trip per block, none per request. When the store is
//!   unreachable the shell calls [`RateLimiter::store_failed`] and, for a short while, shared
//!   limits are enforced locally only (`fail_open`, reported in [`Verdict::degraded`]) or refused
//!   (`fail_closed`).
//!
//! Why not the `governor` crate: its GCRA is the same algorithm, but its clock is owned by the
//! limiter (a `now` per call would need a clock reading shared mutable state), its keyed store
//! grows without a bound (`retain_recent` must be called from outside, and nothing caps the
//! number of keys between calls), and it has neither a sliding window nor a way to hold shared
//! blocks. The algorithm is twenty lines; the bounded store is the part that matters.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sase_model::limits::{Algorithm, LimitKey, RateSpec, StoreFailure};
use sase_model::policy::Policy;
use sase_model::Reason;

/// Slots of a sliding window.
pub const SLOTS: usize = 20;
/// Shards of the counter maps.
pub const SHARDS: usize = 16;
/// Default cap on the number of counters held (all rules and keys together).
pub const DEFAULT_MAX_KEYS: usize = 200_000;
/// How long after a failed store call shared limits are handled as `on_unreachable` says
/// without trying the store again, in milliseconds.
pub const STORE_RETRY_MS: i64 = 1_000;

/// The Lua script that hands out one block of a shared budget: `KEYS[1]` is the budget's
/// counter for one window, `ARGV` = block, budget, expiry in ms. It adds the block to the
/// counter and grants what was still free of the budget before (at most the block), so the
/// grants of all edges together never exceed the budget.
pub const BLOCK_SCRIPT: &str = r"
local block = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
local used = redis.call('INCRBY', KEYS[1], block)
if used == block then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local before = used - block
if before >= budget then return 0 end
local grant = budget - before
if grant > block then grant = block end
return grant
";

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Name in audit events: `resource/limit`, `resource/route/limit` or `flow:id`.
    pub name: String,
    /// Identifies the counters of this rule: the name plus its parameters, so that a policy
    /// that changes a limit starts its counters afresh while an unchanged one keeps them.
    state_key: String,
    per: LimitKey,
    /// For `per: route` on a resource-level rule: count each route separately.
    route_scoped: Option<String>,
    algorithm: Algorithm,
    requests: u32,
    window_ns: i64,
    /// GCRA emission interval, ns.
    interval_ns: i64,
    burst: u32,
    shared: bool,
}

/// The limits in force for one route.
#[derive(Debug, Default)]
pub struct RouteLimits {
    /// Route override of the resource's body limit.
    pub max_body_bytes: Option<u64>,
    /// Header size limit (route's, else resource's).
    pub max_header_bytes: Option<usize>,
    /// Body timeout (route's, else resource's).
    pub body_timeout: Option<Duration>,
    /// Upstream timeout (route's, else resource's).
    pub upstream_timeout: Option<Duration>,
    rules: Vec<Arc<Rule>>,
}

impl RouteLimits {
    /// Whether any rate or flow limit applies.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// Settings of the shared-budget store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `redis://…`.
    pub redis_url: String,
    /// Tokens per block.
    pub block: u32,
    /// What to do when it is unreachable.
    pub on_unreachable: StoreFailure,
    /// Call timeout.
    pub timeout: Duration,
}

/// The `limits` of a policy, compiled once per bundle.
#[derive(Debug, Default)]
pub struct CompiledLimits {
    routes: HashMap<(String, String), RouteLimits>,
    store: Option<StoreSettings>,
}

fn ms(v: Option<u32>) -> Option<Duration> {
    v.map(|v| Duration::from_millis(u64::from(v)))
}

fn rule(name: String, spec: &RateSpec, route_scoped: Option<String>) -> Arc<Rule> {
    let window_ns = i64::from(spec.window_seconds.max(1)) * 1_000_000_000;
    let requests = spec.requests.max(1);
    let burst = match spec.algorithm {
        Algorithm::TokenBucket => spec.burst.unwrap_or(requests).max(1),
        Algorithm::SlidingWindow => requests,
    };
    let state_key = format!(
        "{name}|{:?}|{:?}|{}|{}|{}|{}",
        spec.per, spec.algorithm, requests, spec.window_seconds, burst, spec.shared
    );
    Arc::new(Rule {
        name,
        state_key,
        per: spec.per,
        route_scoped,
        algorithm: spec.algorithm,
        requests,
        window_ns,
        interval_ns: (window_ns / i64::from(requests)).max(1),
        burst,
        shared: spec.shared,
    })
}

impl CompiledLimits {
    /// Compiles the `limits` blocks of a (validated) policy.
    pub fn compile(policy: &Policy) -> CompiledLimits {
        let mut routes = HashMap::new();
        let flows = policy
            .limits
            .as_ref()
            .map(|l| l.flows.as_slice())
            .unwrap_or(&[]);
        let flow_rules: Vec<(Vec<String>, Arc<Rule>)> = flows
            .iter()
            .map(|f| {
                (
                    f.routes.clone(),
                    rule(format!("flow:{}", f.id), &f.spec(), None),
                )
            })
            .collect();
        for resource in &policy.resources {
            let res = resource.limits.as_ref();
            let res_rules: Vec<(String, RateSpec)> = res
                .map(|l| {
                    l.rate
                        .iter()
                        .map(|r| (format!("{}/{}", resource.name, r.id), r.spec()))
                        .collect()
                })
                .unwrap_or_default();
            for route in &resource.routes {
                let own = route.limits.as_ref();
                let mut rules: Vec<Arc<Rule>> = res_rules
                    .iter()
                    .map(|(name, spec)| {
                        let scoped = (spec.per == LimitKey::Route).then(|| route.id.clone());
                        rule(name.clone(), spec, scoped)
                    })
                    .collect();
                if let Some(own) = own {
                    for r in &own.rate {
                        rules.push(rule(
                            format!("{}/{}/{}", resource.name, route.id, r.id),
                            &r.spec(),
                            None,
                        ));
                    }
                }
                let full = format!("{}/{}", resource.name, route.id);
                for (members, flow) in &flow_rules {
                    if members.contains(&full) {
                        rules.push(flow.clone());
                    }
                }
                let pick = |f: fn(&sase_model::limits::Limits) -> Option<u32>| {
                    own.and_then(f).or_else(|| res.and_then(f))
                };
                let limits = RouteLimits {
                    max_body_bytes: own.and_then(|l| l.max_body_bytes),
                    max_header_bytes: pick(|l| l.max_header_bytes)
                        .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                    body_timeout: ms(pick(|l| l.body_timeout_ms)),
                    upstream_timeout: ms(pick(|l| l.upstream_timeout_ms)),
                    rules,
                };
                routes.insert((resource.name.clone(), route.id.clone()), limits);
            }
        }
        let store = policy
            .limits
            .as_ref()
            .and_then(|l| l.store.as_ref())
            .map(|s| StoreSettings {
                redis_url: s.redis_url.clone(),
                block: s.block.max(1),
                on_unreachable: s.on_unreachable,
                timeout: Duration::from_millis(u64::from(s.timeout_ms)),
            });
        CompiledLimits { routes, store }
    }

    /// The limits of a route (`None` when the route has no `limits` and no rule applies).
    pub fn route(&self, resource: &str, route: &str) -> Option<&RouteLimits> {
        self.routes
            .get(&(resource.to_string(), route.to_string()))
            .filter(|l| {
                l.has_rules()
                    || l.max_body_bytes.is_some()
                    || l.max_header_bytes.is_some()
                    || l.body_timeout.is_some()
                    || l.upstream_timeout.is_some()
            })
    }

    /// The shared-budget store, if the policy has one.
    pub fn store(&self) -> Option<&StoreSettings> {
        self.store.as_ref()
    }
}

/// Who is asking, for the keys of `per: client` and `per: ip` limits.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The verified principal (`iss|sub`, a tunnel or mTLS identity); `None` on public routes.
    pub identity: Option<&'a str>,
    /// The client's address.
    pub ip: IpAddr,
}

/// Rate-limit figures of the most constraining rule, for `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per window.
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the budget is whole again (token bucket) or the window moves enough.
    pub reset_seconds: u64,
}

/// A refusal by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `rate_limited` or `rate_limit_store_unavailable`.
    pub reason: Reason,
    /// The rule that refused (`resource/route/limit`, `flow:id`).
    pub rule: String,
    /// Seconds after which a retry may pass (at least 1).
    pub retry_after_seconds: u64,
    /// Figures for the `RateLimit-*` headers.
    pub quota: Option<Quota>,
}

/// A block of a shared budget the shell must fetch from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    /// Identifies the local holder of the block (give it back to `install_block`).
    pub holder: u64,
    /// The window the block is for (clock-aligned index).
    pub window: i64,
    /// Redis key of the budget counter for that window (without the tenant prefix).
    pub key: String,
    /// Tokens asked for.
    pub block: u32,
    /// The budget per window.
    pub budget: u32,
    /// Expiry of the counter, ms (two windows).
    pub expire_ms: i64,
}

/// Result of [`RateLimiter::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Within every limit; counted.
    Allow(Verdict),
    /// Refused; nothing else was counted after the refusing rule.
    Deny(Refusal),
    /// A shared budget needs a new block first; nothing was counted.
    NeedBlock(BlockRequest),
}

/// Details of an admitted request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The tightest rule's figures (for `RateLimit-*` headers), if any rule applied.
    pub quota: Option<Quota>,
    /// Shared limits were enforced locally only: the store is unreachable and the policy says
    /// `fail_open`. The audit event says so.
    pub degraded: bool,
}

#[derive(Debug, Clone)]
enum State {
    Bucket {
        /// Theoretical arrival time, ns.
        tat: i64,
    },
    Window {
        /// Slot index of `counts[SLOTS]` (the newest slot).
        newest: i64,
        counts: [u32; SLOTS + 1],
    },
    Shared {
        window: i64,
        tokens: u32,
        exhausted: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    last_seen: i64,
}

impl Entry {
    fn recovered(&self, now: i64) -> bool {
        match &self.state {
            State::Bucket { tat } => *tat <= now,
            State::Window { counts, .. } => counts.iter().all(|c| *c == 0),
            // Unused tokens of a block still held must not be forgotten before the window
            // ends, but an expired window is worth nothing.
            State::Shared { .. } => false,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Entry>,
}

/// The counters of every rule and key. One per edge process, kept across policy changes (an
/// unchanged rule keeps its counters).
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    evictions: AtomicU64,
    store_down_until: AtomicI64,
}

impl Default for RateLimiter {
    fn default() -> RateLimiter {
        RateLimiter::new(DEFAULT_MAX_KEYS)
    }
}

/// The IP key of a client: IPv4 as is, IPv6 by its /64 (one customer's whole prefix).
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl RateLimiter {
    /// A limiter holding at most about `max_keys` counters.
    pub fn new(max_keys: usize) -> RateLimiter {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_keys / SHARDS).max(8),
            hasher: std::collections::hash_map::RandomState::new(),
            evictions: AtomicU64::new(0),
            store_down_until: AtomicI64::new(i64::MIN),
        }
    }

    /// Counters evicted while not yet recovered (a full map under a flood of keys).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Counters held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store could not be reached at `now_ms`: for [`STORE_RETRY_MS`], shared limits are
    /// handled as the store's `on_unreachable` says, without calling it.
    pub fn store_failed(&self, now_ms: i64) {
        self.store_down_until
            .store(now_ms.saturating_add(STORE_RETRY_MS), Ordering::Relaxed);
    }

    fn store_down(&self, now_ms: i64) -> bool {
        now_ms < self.store_down_until.load(Ordering::Relaxed)
    }

    /// The subject a rule counts for this request; `None` when the rule does not apply.
    fn subject(rule: &Rule, route: &str, caller: &Caller<'_>) -> String {
        match rule.per {
            LimitKey::Client => match caller.identity {
                Some(id) => format!("c:{id}"),
                None => format!("i:{}", ip_key(caller.ip)),
            },
            LimitKey::Ip => format!("i:{}", ip_key(caller.ip)),
            LimitKey::Route => match &rule.route_scoped {
                Some(_) => format!("r:{route}"),
                None => "r".to_string(),
            },
        }
    }

    fn hash(&self, parts: &[&str]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for p in parts {
            p.hash(&mut h);
        }
        h.finish()
    }

    fn with_entry<T>(
        &self,
        key: u64,
        now: i64,
        fresh: impl FnOnce() -> State,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> T {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !shard.map.contains_key(&key) && shard.map.len() >= self.per_shard {
            shard.map.retain(|_, e| !e.recovered(now));
            if shard.map.len() >= self.per_shard {
                let mut seen: Vec<i64> = shard.map.values().map(|e| e.last_seen).collect();
                let cut = (seen.len() / 8).max(1);
                let (_, nth, _) = seen.select_nth_unstable(cut - 1);
                let threshold = *nth;
                let before = shard.map.len();
                let mut left = cut;
                shard.map.retain(|_, e| {
                    if left > 0 && e.last_seen <= threshold {
                        left -= 1;
                        false
                    } else {
                        true
                    }
                });
                self.evictions
                    .fetch_add((before - shard.map.len()) as u64, Ordering::Relaxed);
            }
        }
        let entry = shard.map.entry(key).or_insert_with(|| Entry {
            state: fresh(),
            last_seen: now,
        });
        entry.last_seen = now;
        f(entry)
    }

    /// Checks (and counts) one request to `route` of `limits` at `now_ms`.
    pub fn check(
        &self,
        limits: &RouteLimits,
        store: Option<&StoreSettings>,
        route: &str,
        caller: &Caller<'_>,
        now_ms: i64,
    ) -> Outcome {
        let now = now_ms.saturating_mul(1_000_000);
        let mut verdict = Verdict::default();
        let subjects: Vec<String> = limits
            .rules
            .iter()
            .map(|r| RateLimiter::subject(r, route, caller))
            .collect();

        // Shared budgets first: without a token in hand, nothing is counted.
        let mut shared_keys = Vec::new();
        for (rule, subject) in limits.rules.iter().zip(&subjects) {
            if !rule.shared {
                continue;
            }
            let Some(store) = store else { continue };
            if self.store_down(now_ms) {
                match store.on_unreachable {
                    StoreFailure::FailOpen => {
                        verdict.degraded = true;
                        continue;
                    }
                    StoreFailure::FailClosed => {
                        self.refund(&shared_keys, now);
                        return Outcome::Deny(Refusal {
                            reason: Reason::RateLimitStoreUnavailable,
                            rule: rule.name.clone(),
                            retry_after_seconds: 1,
                            quota: None,
                        });
                    }
                }
            }
            let window = now / rule.window_ns;
            let key = self.hash(&["shared", &rule.state_key, subject]);
            let status = self.with_entry(
                key,
                now,
                || State::Shared {
                    window,
                    tokens: 0,
                    exhausted: false,
                },
                |e| {
                    if let State::Shared {
                        window: w,
                        tokens,
                        exhausted,
                    } = &mut e.state
                    {
                        if *w != window {
                            *w = window;
                            *tokens = 0;
                            *exhausted = false;
                        }
                        if *tokens > 0 {
                            // Reserved now, given back if a later rule refuses.
                            *tokens -= 1;
                            Ok(())
                        } else if *exhausted {
                            Err(true)
                        } else {
                            Err(false)
                        }
                    } else {
                        e.state = State::Shared {
                            window,
                            tokens: 0,
                            exhausted: false,
                        };
                        Err(false)
                    }
                },
            );
            match status {
                Ok(()) => shared_keys.push(key),
                Err(true) => {
                    self.refund(&shared_keys, now);
                    let end = (window + 1).saturating_mul(rule.window_ns);
                    return Outcome::Deny(Refusal {
                        reason: Reason::RateLimited,
                        rule: rule.name.clone(),
                        retry_after_seconds: ceil_seconds(end - now),
                        quota: Some(Quota {
                            limit: rule.requests,
                            remaining: 0,
                            reset_seconds: ceil_seconds(end - now),
                        }),
                    });
                }
                Err(false) => {
                    self.refund(&shared_keys, now);
                    return Outcome::NeedBlock(BlockRequest {
                        holder: key,
                        window,
                        key: format!("{}:{}:{window}", rule.state_key, subject),
                        block: store.block.min(rule.requests),
                        budget: rule.requests,
                        expire_ms: (rule.window_ns / 1_000_000).saturating_mul(2),
                    });
                }
            }
        }

        // Local counters.
        for (rule, subject) in limits.rules.iter().zip(&subjects) {
            let key = self.hash(&["local", &rule.state_key, subject]);
            let result = match rule.algorithm {
                Algorithm::TokenBucket => self.with_entry(
                    key,
                    now,
                    || State::Bucket { tat: now },
                    |e| bucket(rule, &mut e.state, now),
                ),
                Algorithm::SlidingWindow => self.with_entry(
                    key,
                    now,
                    || State::Window {
                        newest: now / (rule.window_ns / SLOTS as i64).max(1),
                        counts: [0; SLOTS + 1],
                    },
                    |e| window(rule, &mut e.state, now),
                ),
            };
            match result {
                Ok(quota) => {
                    let tighter = verdict.quota.is_none_or(|q| quota.remaining < q.remaining);
                    if tighter {
                        verdict.quota = Some(quota);
                    }
                }
                Err(retry_ns) => {
                    self.refund(&shared_keys, now);
                    return Outcome::Deny(Refusal {
                        reason: Reason::RateLimited,
                        rule: rule.name.clone(),
                        retry_after_seconds: ceil_seconds(retry_ns),
                        quota: Some(Quota {
                            limit: rule.requests,
                            remaining: 0,
                            reset_seconds: ceil_seconds(retry_ns),
                        }),
                    });
                }
            }
        }

        Outcome::Allow(verdict)
    }

    /// Gives back shared tokens reserved for a request that was refused after all.
    fn refund(&self, keys: &[u64], now: i64) {
        for key in keys {
            let shard = &self.shards[(*key as usize) % SHARDS];
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(Entry {
                state: State::Shared { tokens, .. },
                last_seen,
            }) = shard.map.get_mut(key)
            {
                *tokens = tokens.saturating_add(1);
                *last_seen = now;
            }
        }
    }

    /// Hands a block granted by the store to its holder (`granted` may be 0: the budget of that
    /// window is used up).
    pub fn install_block(&self, request: &BlockRequest, granted: u32, now_ms: i64) {
        let now = now_ms.saturating_mul(1_000_000);
        self.with_entry(
            request.holder,
            now,
            || State::Shared {
                window: request.window,
                tokens: 0,
                exhausted: false,
            },
            |e| match &mut e.state {
                State::Shared {
                    window,
                    tokens,
                    exhausted,
                } if *window == request.window => {
                    *tokens = tokens.saturating_add(granted);
                    if granted == 0 {
                        *exhausted = true;
                    }
                }
                _ => {
                    e.state = State::Shared {
                        window: request.window,
                        tokens: granted,
                        exhausted: granted == 0,
                    }
                }
            },
        );
    }
}

fn ceil_seconds(ns: i64) -> u64 {
    let ns = u64::try_from(ns.max(0)).unwrap_or(0);
    ns.div_ceil(1_000_000_000).max(1)
}

/// GCRA: Ok(quota) if admitted (and counted), Err(ns until a retry may pass).
fn bucket(rule: &Rule, state: &mut State, now: i64) -> Result<Quota, i64> {
    let tat = match state {
        State::Bucket { tat } => *tat,
        _ => now,
    };
    let capacity = rule.interval_ns.saturating_mul(i64::from(rule.burst));
    let next = tat.max(now).saturating_add(rule.interval_ns);
    if next - now > capacity {
        return Err(next - now - capacity);
    }
    *state = State::Bucket { tat: next };
    let remaining = (capacity - (next - now)) / rule.interval_ns;
    Ok(Quota {
        limit: rule.burst,
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset_seconds: ceil_seconds(next - now),
    })
}

/// Sliding window over slot counters.
fn window(rule: &Rule, state: &mut State, now: i64) -> Result<Quota, i64> {
    let width = (rule.window_ns / SLOTS as i64).max(1);
    let slot = now / width;
    let (mut newest, mut counts) = match state {
        State::Window { newest, counts } => (*newest, *counts),
        _ => (slot, [0; SLOTS + 1]),
    };
    if slot > newest {
        let shift = usize::try_from(slot - newest).unwrap_or(usize::MAX);
        if shift > SLOTS {
            counts = [0; SLOTS + 1];
        } else {
            counts.rotate_left(shift);
            for c in counts.iter_mut().skip(SLOTS + 1 - shift) {
                *c = 0;
            }
        }
        newest = slot;
    }
    // A clock that went backwards counts into the newest slot.
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    if total >= u64::from(rule.requests) {
        // Slot `newest - SLOTS + i` leaves the count at (its index + SLOTS + 1) * width.
        let mut left = total;
        let mut retry = width;
        for (i, c) in counts.iter().enumerate() {
            left -= u64::from(*c);
            if left < u64::from(rule.requests) {
                let leaves = (newest - SLOTS as i64 + i as i64 + SLOTS as i64 + 1) * width;
                retry = (leaves - now).max(1);
                break;
            }
        }
        *state = State::Window { newest, counts };
        return Err(retry);
    }
    counts[SLOTS] = counts[SLOTS].saturating_add(1);
    *state = State::Window { newest, counts };
    let remaining = u64::from(rule.requests) - total - 1;
    Ok(Quota {
        limit: rule.requests,
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset_seconds: ceil_seconds(rule.window_ns),
    })
}
