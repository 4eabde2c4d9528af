//! Rate and flow limits in simulated time: token bucket bursts and refill, the sliding window's
//! bound over every interval, keys, flows across routes, bounded memory, shared blocks and the
//! store-unreachable behaviours.

use std::net::IpAddr;

use sase_gateway::ratelimit::{
    Caller, CompiledLimits, Outcome, RateLimiter, RouteLimits, StoreSettings,
};
use sase_model::{Policy, Reason};

const POLICY: &str = r#"
limits:
  store: {redis_url: "redis://127.0.0.1:1", block: 4, on_unreachable: fail_open}
  flows:
    - {id: signups, routes: [shop/signup, shop/confirm], per: ip, algorithm: sliding_window, requests: 3, window_seconds: 3600}
resources:
  - name: shop
    upstream: http://127.0.0.1:9000
    limits:
      rate:
        - {id: per-client, per: client, requests: 10, window_seconds: 10, burst: 5}
    routes:
      - {id: list, methods: [GET], path: /items, public: true}
      - id: search
        methods: [GET]
        path: /search
        public: true
        limits:
          upstream_timeout_ms: 700
          rate:
            - {id: window, per: ip, algorithm: sliding_window, requests: 10, window_seconds: 60}
      - {id: signup, methods: [POST], path: /signup, public: true}
      - {id: confirm, methods: [POST], path: /signup/confirm, public: true}
      - id: report
        methods: [POST]
        path: /report
        public: true
        limits:
          rate:
            - {id: shared, per: route, requests: 10, window_seconds: 60, shared: true}
"#;

fn compiled(text: &str) -> CompiledLimits {
    CompiledLimits::compile(&Policy::parse_yaml(text).expect("valid policy"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn check(
    limiter: &RateLimiter,
    limits: &CompiledLimits,
    route: &str,
    caller: Caller<'_>,
    now_ms: i64,
) -> Outcome {
    let l: &RouteLimits = limits.route("shop", route).expect("route limits");
    limiter.check(l, limits.store(), route, &caller, now_ms)
}

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allow(_))
}

#[test]
fn token_bucket_allows_a_burst_then_refills_at_the_rate() {
    let limits = compiled(POLICY);
    let limiter = RateLimiter::default();
    let alice = Caller {
        identity: Some("idp|alice"),
        ip: ip("10.0.0.1"),
    };
    let t0 = 1_700_000_000_000;
    for i in 0..5 {
        assert!(
            allowed(&check(&limiter, &limits, "list", alice, t0)),
            "burst {i}"
        );
    }
    match check(&limiter, &limits, "list", alice, t0) {
        Outcome::Deny(r) => {
            assert_eq!(r.reason, Reason::RateLimited);
            assert_eq!(r.rule, "shop/per-client");
            // 10 per 10 s: one token per second.
            assert_eq!(r.retry_after_seconds, 1);
        }
        other => panic!("sixth request of the burst: {other:?}"),
    }
    // The limit is per client, across every route of the resource.
    assert!(!allowed(&check(&limiter, &limits, "search", alice, t0)));
    let bob = Caller {
        identity: Some("idp|bob"),
        ip: ip("10.0.0.1"),
    };
    assert!(allowed(&check(&limiter, &limits, "list", bob, t0)));
    // One token per second comes back, never more than the burst.
    assert!(allowed(&check(&limiter, &limits, "list", alice, t0 + 1000)));
    assert!(!allowed(&check(
        &limiter,
        &limits,
        "list",
        alice,
        t0 + 1500
    )));
    let later = t0 + 60_000;
    let admitted = (0..20)
        .filter(|_| allowed(&check(&limiter, &limits, "list", alice, later)))
        .count();
    assert_eq!(admitted, 5, "an idle client gets its burst back, no more");
}

#[test]
fn sliding_window_never_admits_more_than_the_limit_in_any_interval() {
    let limits = compiled(POLICY);
    let limiter = RateLimiter::default();
    // Distinct identities per request so the per-client bucket does not interfere.
    let names: Vec<String> = (0..4000).map(|i| format!("idp|u{i}")).collect();
    let t0: i64 = 1_700_000_000_000;
    // A pseudo-random arrival process, denser around window boundaries.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut t = t0;
    let mut admitted = Vec::new();
    for name in &names {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        t += i64::try_from(seed % 1500).expect("small");
        let caller = Caller {
            identity: Some(name),
            ip: ip("192.0.2.7"),
        };
        if allowed(&check(&limiter, &limits, "search", caller, t)) {
            admitted.push(t);
        }
    }
    assert!(admitted.len() > 100, "admitted {}", admitted.len());
    for (i, end) in admitted.iter().enumerate() {
        let within = admitted[..=i].iter().filter(|s| **s > end - 60_000).count();
        assert!(within <= 10, "{within} admitted in the minute before {end}");
    }

    // The classic fixed-window burst: 10 at the end of one minute, 10 at the start of the
    // next. The sliding window refuses the second ten.
    let limiter = RateLimiter::default();
    // 1_700_000_040_000 is a multiple of 60 000: a minute boundary.
    let edge = 1_700_000_040_000 + 60_000;
    let mut ok = 0;
    for (i, at) in (0..10)
        .map(|_| edge - 100)
        .chain((0..10).map(|_| edge + 100))
        .enumerate()
    {
        let caller = Caller {
            identity: Some(&names[i]),
            ip: ip("192.0.2.8"),
        };
        if allowed(&check(&limiter, &limits, "search", caller, at)) {
            ok += 1;
        }
    }
    assert_eq!(ok, 10);
    let caller = Caller {
        identity: Some(&names[3000]),
        ip: ip("192.0.2.8"),
    };
    match check(&limiter, &limits, "search", caller, edge + 100) {
        Outcome::Deny(r) => {
            assert_eq!(r.rule, "shop/search/window");
            assert!(
                (57..=63).contains(&r.retry_after_seconds),
                "{}",
                r.retry_after_seconds
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn flows_count_across_their_routes_per_ip() {
    let limits = compiled(POLICY);
    let limiter = RateLimiter::default();
    let t0 = 1_700_000_000_000;
    let anon = |addr: &'static str| Caller {
        identity: None,
        ip: ip(addr),
    };
    assert!(allowed(&check(
        &limiter,
        &limits,
        "signup",
        anon("198.51.100.1"),
        t0
    )));
    assert!(allowed(&check(
        &limiter,
        &limits,
        "confirm",
        anon("198.51.100.1"),
        t0 + 1
    )));
    assert!(allowed(&check(
        &limiter,
        &limits,
        "signup",
        anon("198.51.100.1"),
        t0 + 2
    )));
    for route in ["signup", "confirm"] {
        match check(&limiter, &limits, route, anon("198.51.100.1"), t0 + 3) {
            Outcome::Deny(r) => assert_eq!(r.rule, "flow:signups"),
            other => panic!("{route}: {other:?}"),
        }
    }
    assert!(allowed(&check(
        &limiter,
        &limits,
        "signup",
        anon("198.51.100.2"),
        t0 + 4
    )));
    // IPv6 clients are counted by their /64.
    for (i, addr) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"]
        .into_iter()
        .enumerate()
    {
        assert!(allowed(&check(
            &limiter,
            &limits,
            "signup",
            anon(addr),
            t0 + 10 + i as i64
        )));
    }
    assert!(!allowed(&check(
        &limiter,
        &limits,
        "signup",
        anon("2001:db8:1:2::99"),
        t0 + 20
    )));
    assert!(allowed(&check(
        &limiter,
        &limits,
        "signup",
        anon("2001:db8:1:3::1"),
        t0 + 21
    )));
    // After the hour, the first IP may sign up again.
    assert!(allowed(&check(
        &limiter,
        &limits,
        "signup",
        anon("198.51.100.1"),
        t0 + 3_600_000 + 200_000
    )));
}

#[test]
fn memory_stays_bounded_under_a_flood_of_keys() {
    let limits = compiled(POLICY);
    let limiter = RateLimiter::new(1600);
    let t0 = 1_700_000_000_000;
    for i in 0..50_000u32 {
        let addr = IpAddr::from(i.to_be_bytes());
        let id = format!("idp|flood{i}");
        let caller = Caller {
            identity: Some(&id),
            ip: addr,
        };
        let _ = check(
            &limiter,
            &limits,
            "search",
            caller,
            t0 + i64::from(i % 1000),
        );
    }
    assert!(limiter.len() <= 1600 + 16, "held {}", limiter.len());
    assert!(limiter.evictions() > 0);

    // Recovered counters are dropped before anything is evicted.
    let limiter = RateLimiter::new(1600);
    for i in 0..20_000u32 {
        let id = format!("idp|calm{i}");
        let caller = Caller {
            identity: Some(&id),
            ip: ip("203.0.113.9"),
        };
        // Each client calls once, a minute apart from the previous batch: all recovered.
        let _ = check(
            &limiter,
            &limits,
            "list",
            caller,
            t0 + i64::from(i) * 60_000,
        );
    }
    assert_eq!(limiter.evictions(), 0);
}

/// The store's side of a shared budget, as `BLOCK_SCRIPT` computes it.
struct FakeStore {
    counters: std::collections::HashMap<String, u64>,
}

impl FakeStore {
    fn grant(&mut self, key: &str, block: u32, budget: u32) -> u32 {
        let used = self.counters.entry(key.to_string()).or_insert(0);
        *used += u64::from(block);
        let before = *used - u64::from(block);
        if before >= u64::from(budget) {
            0
        } else {
            u32::try_from((u64::from(budget) - before).min(u64::from(block))).expect("small")
        }
    }
}

fn shared_call(
    limiter: &RateLimiter,
    limits: &CompiledLimits,
    store: Option<&mut FakeStore>,
    now: i64,
) -> Outcome {
    // A new client each time, so that the resource's per-client bucket stays out of the way.
    let id = format!("idp|r{now}");
    let caller = Caller {
        identity: Some(&id),
        ip: ip("10.9.9.9"),
    };
    let mut store = store;
    for _ in 0..3 {
        match check(limiter, limits, "report", caller, now) {
            Outcome::NeedBlock(request) => match store.as_deref_mut() {
                Some(store) => {
                    let granted = store.grant(&request.key, request.block, request.budget);
                    limiter.install_block(&request, granted, now);
                }
                None => {
                    limiter.store_failed(now);
                }
            },
            other => return other,
        }
    }
    panic!("no decision after three blocks")
}

#[test]
fn two_edges_sharing_a_budget_admit_at_most_the_budget_per_window() {
    let limits = compiled(POLICY);
    let (a, b) = (RateLimiter::default(), RateLimiter::default());
    let mut store = FakeStore {
        counters: Default::default(),
    };
    let window_start = 1_700_000_040_000; // a minute boundary
    let mut admitted = 0;
    for i in 0..40 {
        let edge = if i % 3 == 0 { &b } else { &a };
        if allowed(&shared_call(
            edge,
            &limits,
            Some(&mut store),
            window_start + i,
        )) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "budget 10 per minute over two edges");
    match shared_call(&a, &limits, Some(&mut store), window_start + 50) {
        Outcome::Deny(r) => {
            assert_eq!(r.reason, Reason::RateLimited);
            assert!((59..=60).contains(&r.retry_after_seconds), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    // The next window has a fresh budget.
    assert!(allowed(&shared_call(
        &a,
        &limits,
        Some(&mut store),
        window_start + 60_000
    )));
}

#[test]
fn unreachable_store_fails_open_with_local_limits_or_closed() {
    let limits = compiled(POLICY);
    let limiter = RateLimiter::default();
    let t0 = 1_700_000_040_000;
    match shared_call(&limiter, &limits, None, t0) {
        Outcome::Allow(v) => assert!(v.degraded, "fail_open is reported"),
        other => panic!("{other:?}"),
    }
    // Local limits still hold: 10 per minute on this edge alone.
    let admitted = 1
        + (0..20)
            .filter(|i| allowed(&shared_call(&limiter, &limits, None, t0 + 1 + i)))
            .count();
    assert_eq!(admitted, 10);

    let closed = compiled(&POLICY.replace("fail_open", "fail_closed"));
    let limiter = RateLimiter::default();
    match shared_call(&limiter, &closed, None, t0) {
        Outcome::Deny(r) => assert_eq!(r.reason, Reason::RateLimitStoreUnavailable),
        other => panic!("{other:?}"),
    }
    // Once the retry delay passes, the store is asked again.
    let settings: &StoreSettings = closed.store().expect("store");
    assert_eq!(settings.block, 4);
    let l = closed.route("shop", "report").expect("limits");
    let caller = Caller {
        identity: None,
        ip: ip("10.9.9.9"),
    };
    assert!(matches!(
        limiter.check(l, closed.store(), "report", &caller, t0 + 1500),
        Outcome::NeedBlock(_)
    ));
}

#[test]
fn route_settings_inherit_and_override() {
    let limits = compiled(POLICY);
    let search = limits.route("shop", "search").expect("search");
    assert_eq!(
        search.upstream_timeout,
        Some(std::time::Duration::from_millis(700))
    );
    assert_eq!(search.max_body_bytes, None);
    let plain = compiled(
        "resources:\n  - name: a\n    upstream: http://127.0.0.1:1\n    routes:\n      - {id: h, methods: [GET], path: /h, public: true}\n",
    );
    assert!(plain.route("a", "h").is_none(), "no limits, nothing to do");
}
