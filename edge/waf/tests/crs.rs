//! `sase-waf` against the real libmodsecurity 3.0.9 and the real OWASP CRS 3.3.4 (Debian
//! packages `libmodsecurity-dev` and `modsecurity-crs`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sase_model::policy::{Method, RuleExclusion, WafMode, WafSettings};
use sase_waf::{CrsPaths, Findings, HttpRequest, HttpResponse, RuleSet, WafEngine, WafError};

const BROWSER: &[(&[u8], &[u8])] = &[
    (b"Host", b"shop.example.com"),
    (
        b"User-Agent",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        b"Accept",
        b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    (b"Accept-Language", b"en-US,en;q=0.9,nl;q=0.8"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
];

fn exclusion(rule_id: Option<u32>, tag: Option<&str>, target: Option<&str>) -> RuleExclusion {
    RuleExclusion {
        rule_id,
        tag: tag.map(str::to_string),
        target: target.map(str::to_string),
    }
}

fn scopes() -> Vec<(String, WafSettings)> {
    let block = WafSettings::default();
    let detect = WafSettings {
        mode: WafMode::Detect,
        ..WafSettings::default()
    };
    let pl2 = WafSettings {
        paranoia_level: 2,
        ..WafSettings::default()
    };
    let excl = WafSettings {
        exclusions: vec![
            exclusion(Some(942100), None, None),
            exclusion(None, Some("attack-xss"), None),
            exclusion(Some(932160), None, Some("ARGS:comment")),
        ],
        ..WafSettings::default()
    };
    let responses = WafSettings {
        inspect_responses: true,
        ..WafSettings::default()
    };
    let detect_responses = WafSettings {
        mode: WafMode::Detect,
        inspect_responses: true,
        ..WafSettings::default()
    };
    let off = WafSettings {
        mode: WafMode::Off,
        ..WafSettings::default()
    };
    let lenient = WafSettings {
        inbound_threshold: 20,
        ..WafSettings::default()
    };
    let rest = WafSettings {
        route_methods: vec![Method::Get, Method::Put, Method::Delete],
        ..WafSettings::default()
    };
    vec![
        ("block-pl1".into(), block),
        ("detect".into(), detect),
        ("block-pl2".into(), pl2),
        ("excl".into(), excl),
        ("responses".into(), responses),
        ("detect-responses".into(), detect_responses),
        ("off".into(), off),
        ("lenient".into(), lenient),
        ("rest".into(), rest),
    ]
}

/// One engine and one rule set shared by the tests of this file (as in the edge).
fn waf() -> &'static (WafEngine, RuleSet) {
    static WAF: OnceLock<(WafEngine, RuleSet)> = OnceLock::new();
    WAF.get_or_init(|| {
        let rules = RuleSet::compile(&CrsPaths::default(), &scopes()).expect("CRS compiles");
        (WafEngine::new(), rules)
    })
}

fn get(uri: &str) -> HttpRequest<'_> {
    HttpRequest {
        client_ip: "192.0.2.10",
        client_port: 51234,
        server_ip: "198.51.100.1",
        server_port: 443,
        method: "GET",
        uri,
        http_version: "1.1",
        headers: BROWSER,
        body: b"",
    }
}

fn inspect(scope: &str, req: &HttpRequest<'_>) -> Findings {
    let (engine, rules) = waf();
    engine
        .inspect_request(rules, scope, req)
        .expect("inspection runs")
}

fn ids(f: &Findings) -> Vec<u32> {
    f.matches.iter().map(|m| m.id).collect()
}

fn assert_blocked(f: &Findings, family: std::ops::RangeInclusive<u32>, what: &str) {
    assert!(f.blocked && f.would_block, "{what} not blocked: {f:?}");
    assert_eq!(f.status, Some(403), "{what}: {f:?}");
    assert!(f.anomaly_score >= 5, "{what}: {f:?}");
    assert!(
        f.matches.iter().any(|m| family.contains(&m.id)),
        "{what}: no rule in {family:?}: {:?}",
        ids(f)
    );
}

fn assert_clean(f: &Findings, what: &str) {
    assert!(f.matches.is_empty(), "{what}: {:?}", f.matches);
    assert_eq!(f.anomaly_score, 0, "{what}");
    assert!(!f.would_block && !f.blocked, "{what}");
    assert_eq!(f.status, None, "{what}");
}

#[test]
fn a_benign_browser_request_matches_nothing_in_any_scope() {
    for scope in ["block-pl1", "detect", "block-pl2", "excl", "responses"] {
        assert_clean(&inspect(scope, &get("/")), scope);
        assert_clean(
            &inspect(scope, &get("/orders/list?page=2&sort=date")),
            scope,
        );
        let json_headers: Vec<(&[u8], &[u8])> = BROWSER
            .iter()
            .copied()
            .chain([
                (&b"Content-Type"[..], &b"application/json"[..]),
                (&b"Content-Length"[..], &b"29"[..]),
            ])
            .collect();
        let req = HttpRequest {
            method: "POST",
            headers: &json_headers,
            body: br#"{"name":"Widget","quantity":2}"#,
            ..get("/orders")
        };
        assert_clean(&inspect(scope, &req), scope);
    }
}

#[test]
fn sql_injection_in_the_query_is_blocked_at_paranoia_level_one() {
    let f = inspect("block-pl1", &get("/orders/list?id=1'%20OR%20'1'='1"));
    assert_blocked(&f, 942000..=942999, "SQLi");
    let m = f.matches.iter().find(|m| m.id == 942100).expect("942100");
    assert_eq!(m.message, "SQL Injection Attack Detected via libinjection");
    assert_eq!(m.severity, Some(2));
    assert_eq!(m.paranoia_level, Some(1));
    assert!(m.tags.iter().any(|t| t == "attack-sqli"), "{m:?}");
    assert!(
        !ids(&f).contains(&949110),
        "evaluation rules are not matches"
    );
}

#[test]
fn detect_mode_reports_what_block_mode_would_do() {
    let f = inspect("detect", &get("/orders/list?id=1'%20OR%20'1'='1"));
    assert!(ids(&f).contains(&942100), "{f:?}");
    assert!(f.anomaly_score >= 5);
    assert!(f.would_block && !f.blocked, "{f:?}");
    assert_eq!(f.status, None);
    // Below the threshold nothing would block.
    let f = inspect("detect", &get("/x?q=cmd.exe"));
    assert!(!f.would_block);
}

#[test]
fn xss_is_blocked_in_a_form_body_a_json_body_and_a_cookie() {
    let form: Vec<(&[u8], &[u8])> = BROWSER
        .iter()
        .copied()
        .chain([
            (
                &b"Content-Type"[..],
                &b"application/x-www-form-urlencoded"[..],
            ),
            (&b"Content-Length"[..], &b"48"[..]),
        ])
        .collect();
    let req = HttpRequest {
        method: "POST",
        headers: &form,
        body: b"comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E&ok=1",
        ..get("/comments")
    };
    assert_blocked(&inspect("block-pl1", &req), 941000..=941999, "XSS in form");

    let json: Vec<(&[u8], &[u8])> = BROWSER
        .iter()
        .copied()
        .chain([
            (&b"Content-Type"[..], &b"application/json"[..]),
            (&b"Content-Length"[..], &b"60"[..]),
        ])
        .collect();
    let req = HttpRequest {
        method: "POST",
        headers: &json,
        body: br#"{"post": {"comment": "<script>alert(1)</script>"}, "n": 1}"#,
        ..get("/comments")
    };
    assert_blocked(&inspect("block-pl1", &req), 941000..=941999, "XSS in JSON");
    // Only the JSON processor turns \u003c into '<': the raw body has no markup at all.
    let req = HttpRequest {
        body: br#"{"comment": "\u003cscript\u003ealert(1)\u003c/script\u003e"}"#,
        ..req
    };
    assert_blocked(
        &inspect("block-pl1", &req),
        941000..=941999,
        "escaped XSS in JSON",
    );

    let cookie: Vec<(&[u8], &[u8])> = BROWSER
        .iter()
        .copied()
        .chain([(
            &b"Cookie"[..],
            &b"theme=dark; session=<script>alert(1)</script>"[..],
        )])
        .collect();
    let req = HttpRequest {
        headers: &cookie,
        ..get("/comments")
    };
    assert_blocked(
        &inspect("block-pl1", &req),
        941000..=941999,
        "XSS in cookie",
    );
}

#[test]
fn path_traversal_and_command_injection_are_blocked() {
    assert_blocked(
        &inspect("block-pl1", &get("/files?name=../../etc/passwd")),
        930000..=930999,
        "traversal",
    );
    assert_blocked(
        &inspect("block-pl1", &get("/ping?host=127.0.0.1;cat%20/etc/passwd")),
        932000..=932999,
        "RCE",
    );
}

#[test]
fn a_body_that_does_not_parse_is_refused_with_400() {
    let json: Vec<(&[u8], &[u8])> = BROWSER
        .iter()
        .copied()
        .chain([
            (&b"Content-Type"[..], &b"application/json"[..]),
            (&b"Content-Length"[..], &b"16"[..]),
        ])
        .collect();
    let req = HttpRequest {
        method: "POST",
        headers: &json,
        body: br#"{"comment": "<sc"#,
        ..get("/comments")
    };
    let f = inspect("block-pl1", &req);
    assert!(f.blocked, "{f:?}");
    assert_eq!(f.status, Some(400));
    assert!(ids(&f).contains(&200002), "{f:?}");
    let f = inspect("detect", &req);
    assert!(f.would_block && !f.blocked && f.status.is_none(), "{f:?}");
}

#[test]
fn exclusions_by_id_tag_and_target_each_let_their_request_through() {
    let sqli = get("/orders/list?id=1'%20OR%20'1'='1");
    let xss = get("/comments?q=%3Cscript%3Ealert(1)%3C/script%3E");
    let shell_in_comment = get("/notes?comment=/bin/bash");
    let shell_elsewhere = get("/notes?other=/bin/bash");
    for (req, what) in [
        (&sqli, "SQLi"),
        (&xss, "XSS"),
        (&shell_in_comment, "shell in comment"),
    ] {
        assert!(
            inspect("block-pl1", req).blocked,
            "{what} blocked without exclusions"
        );
        let f = inspect("excl", req);
        assert!(
            !f.blocked && !f.would_block,
            "{what} passes with exclusions: {f:?}"
        );
    }
    // The target exclusion removes one variable, not the rule; other attacks still block.
    assert_blocked(
        &inspect("excl", &shell_elsewhere),
        932160..=932160,
        "shell in another argument",
    );
    assert_blocked(
        &inspect("excl", &get("/files?name=../../etc/passwd")),
        930000..=930999,
        "traversal with exclusions",
    );
}

#[test]
fn the_method_rule_allows_exactly_the_route_methods() {
    for method in ["PUT", "DELETE", "GET"] {
        let req = HttpRequest {
            method,
            ..get("/api/v1/cart/items/8412")
        };
        assert_clean(
            &inspect("rest", &req),
            &format!("{method} on a route that allows it"),
        );
    }
    // PATCH is not among the route's methods (the gateway refuses it first; the WAF agrees).
    let patch = HttpRequest {
        method: "PATCH",
        ..get("/api/v1/cart/items/8412")
    };
    assert!(ids(&inspect("rest", &patch)).contains(&911100));
    // Without route methods the CRS default applies: PUT is refused by 911100.
    let put = HttpRequest {
        method: "PUT",
        ..get("/api/v1/cart/items/8412")
    };
    let findings = inspect("block-pl1", &put);
    assert!(findings.blocked && ids(&findings).contains(&911100));
}

#[test]
fn paranoia_level_two_applies_only_to_its_scope() {
    let req = get("/search?q=a'b'c'd'e'f'g'h'i'j'k'l'm'");
    assert_clean(&inspect("block-pl1", &req), "PL1");
    let f = inspect("block-pl2", &req);
    assert!(f.blocked, "{f:?}");
    assert!(
        f.matches.iter().any(|m| m.paranoia_level == Some(2)),
        "{f:?}"
    );
}

#[test]
fn the_scope_threshold_is_the_one_libmodsecurity_enforces() {
    let req = get("/orders/list?id=1'%20OR%20'1'='1");
    let f = inspect("lenient", &req);
    assert!(ids(&f).contains(&942100), "{f:?}");
    assert_eq!(f.anomaly_score, 5);
    assert!(!f.would_block && !f.blocked && f.status.is_none(), "{f:?}");
    let f = inspect(
        "lenient",
        &get("/orders/list?id=1%20union%20select%20password%20from%20users"),
    );
    assert!(f.anomaly_score >= 20 && f.blocked, "{f:?}");
}

#[test]
fn nul_bytes_are_refused_before_the_waf() {
    let (engine, rules) = waf();
    let headers: Vec<(&[u8], &[u8])> = BROWSER
        .iter()
        .copied()
        .chain([(&b"X-Note"[..], &b"a\0b"[..])])
        .collect();
    let req = HttpRequest {
        headers: &headers,
        ..get("/")
    };
    assert!(matches!(
        engine.inspect_request(rules, "block-pl1", &req),
        Err(WafError::InvalidInput(_))
    ));
    assert!(matches!(
        engine.inspect_request(rules, "block-pl1", &get("/a\0b")),
        Err(WafError::InvalidInput(_))
    ));
    // Other non-UTF-8 header bytes are passed lossily and inspected.
    let headers: Vec<(&[u8], &[u8])> = BROWSER
        .iter()
        .copied()
        .chain([(&b"X-Note"[..], &b"caf\xe9"[..])])
        .collect();
    let req = HttpRequest {
        headers: &headers,
        ..get("/")
    };
    assert!(!inspect("block-pl1", &req).blocked);
}

#[test]
fn odd_bytes_in_arguments_and_long_paths_do_not_break_log_parsing() {
    // libmodsecurity hex-escapes non-ASCII in its log lines; the callback must never see
    // invalid UTF-8 (modsecurity 0.1.4 would panic inside an extern "C" frame).
    let f = inspect(
        "block-pl1",
        &get("/x?q=%ff%c3'%20or%201=1--&%ff%fe=%3cscript%3e"),
    );
    assert!(f.blocked, "{f:?}");
    let long = format!("/{}?x=1'%20or%201=1--", "%e4%b8%ad".repeat(120));
    assert!(inspect("block-pl1", &get(&long)).blocked);
}

#[test]
fn cve_2024_1019_shapes_as_libmodsecurity_3_0_9_sees_them() {
    // `/path%3F?x=<script>`: the real query is still parsed, so ARGS:x is inspected.
    let f = inspect("block-pl1", &get("/path%3F?x=<script>alert(1)</script>"));
    eprintln!(
        "/path%3F?x=<script>…: blocked={} ids={:?}",
        f.blocked,
        ids(&f)
    );
    assert!(f.blocked);
    // A payload after an encoded '?' in the path is not seen as path: 3.0.9 decodes %3F before
    // splitting path from query (CVE-2024-1019). The edge refuses such paths itself.
    let bypass = inspect("block-pl1", &get("/foo%3F<script>alert(1)</script>"));
    let direct = inspect("block-pl1", &get("/foo/<script>alert(1)</script>"));
    eprintln!(
        "/foo%3F<script>…: blocked={} ids={:?}; /foo/<script>…: blocked={} ids={:?}",
        bypass.blocked,
        ids(&bypass),
        direct.blocked,
        ids(&direct)
    );
    assert!(direct.blocked);
    assert!(
        !bypass.blocked,
        "libmodsecurity no longer misses this: revisit the CVE-2024-1019 notes"
    );
}

#[test]
fn unknown_and_off_scopes() {
    let (engine, rules) = waf();
    assert!(matches!(
        engine.inspect_request(rules, "nope", &get("/")),
        Err(WafError::UnknownScope(k)) if k == "nope"
    ));
    let f = inspect("off", &get("/orders/list?id=1'%20OR%20'1'='1"));
    assert_eq!(f, Findings::default());
}

#[test]
fn a_target_libmodsecurity_refuses_fails_to_load_with_its_message() {
    for (target, expect) in [
        ("ARGS:", "Expecting an action"),
        ("FOO:bar", "Expecting a variable"),
    ] {
        let settings = WafSettings {
            exclusions: vec![exclusion(Some(932160), None, Some(target))],
            ..WafSettings::default()
        };
        let err = RuleSet::compile(&CrsPaths::default(), &[("s".into(), settings)])
            .expect_err("bad target");
        let WafError::Load(msg) = &err else {
            panic!("{err:?}")
        };
        eprintln!("{target}: {msg}");
        assert!(msg.contains("Rules error") && msg.contains(expect), "{msg}");
        assert!(msg.contains(target), "{msg}");
    }
    let settings = WafSettings {
        paranoia_level: 7,
        ..WafSettings::default()
    };
    assert!(matches!(
        RuleSet::compile(&CrsPaths::default(), &[("s".into(), settings)]),
        Err(WafError::Load(_))
    ));
    let missing = CrsPaths {
        setup: "/nonexistent/crs-setup.conf".into(),
        rules_dir: "/nonexistent/rules".into(),
    };
    assert!(matches!(
        RuleSet::compile(&missing, &scopes()),
        Err(WafError::Load(_))
    ));
}

#[test]
fn config_digest_is_stable_and_follows_the_settings() {
    let base = scopes();
    let digest = RuleSet::config_digest(&base);
    assert_eq!(digest, RuleSet::config_digest(&base));
    assert_eq!(digest, waf().1.digest());
    let mut reversed = base.clone();
    reversed.reverse();
    assert_eq!(digest, RuleSet::config_digest(&reversed), "order");
    let mut limits = base.clone();
    limits[0].1.request_body_limit = 12;
    assert_eq!(digest, RuleSet::config_digest(&limits), "unused settings");
    let mut pl = base.clone();
    pl[0].1.paranoia_level = 3;
    assert_ne!(digest, RuleSet::config_digest(&pl), "paranoia level");
    let mut excl = base.clone();
    excl[0]
        .1
        .exclusions
        .push(exclusion(Some(920350), None, None));
    assert_ne!(digest, RuleSet::config_digest(&excl), "exclusions");
    let mut renamed = base.clone();
    renamed[0].0 = "other".into();
    assert_ne!(digest, RuleSet::config_digest(&renamed), "scope keys");
    let mut threshold = base;
    threshold[1].1.inbound_threshold = 10;
    assert_ne!(digest, RuleSet::config_digest(&threshold), "threshold");
}

#[test]
fn the_config_text_is_base_then_scopes_then_crs() {
    let text = waf().1.config_text();
    assert!(text.starts_with(&sase_waf::base_config_text()));
    let includes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Include "))
        .collect();
    let expected = sase_waf::crs_include_list(&CrsPaths::default());
    assert_eq!(includes.len(), expected.len());
    assert!(includes[0].ends_with("crs-setup.conf"));
    assert!(!text.contains("REQUEST-910-") && !text.contains("REQUEST-912-"));
    assert!(!text.contains("owasp-crs.load"));
}

#[test]
fn sql_errors_in_responses_are_found_when_the_scope_inspects_responses() {
    let (engine, rules) = waf();
    let headers: &[(&[u8], &[u8])] = &[
        (b"Content-Type", b"text/html; charset=utf-8"),
        (b"Content-Length", b"130"),
    ];
    let leak = HttpResponse {
        status: 500,
        http_version: "1.1",
        headers,
        body: b"<html><body>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version</body></html>",
    };
    let req = get("/orders/list?page=2");
    let f = engine
        .inspect_response(rules, "responses", &req, &leak)
        .expect("response inspection");
    assert!(
        f.matches.iter().any(|m| (951000..=951999).contains(&m.id)),
        "{f:?}"
    );
    assert!(f.anomaly_score >= 4 && f.blocked, "{f:?}");
    assert_eq!(f.status, Some(403));
    let f = engine
        .inspect_response(rules, "detect-responses", &req, &leak)
        .expect("response inspection");
    assert!(f.would_block && !f.blocked, "{f:?}");
    // Request rules do not run again in the response transaction.
    let attack = get("/orders/list?id=1'%20OR%20'1'='1");
    let fine = HttpResponse {
        body: b"<html><body>2 orders</body></html>",
        ..leak
    };
    let f = engine
        .inspect_response(rules, "responses", &attack, &fine)
        .expect("response inspection");
    assert_clean(&f, "benign response to a malicious request");
    // A scope without inspect_responses does nothing.
    let f = engine
        .inspect_response(rules, "block-pl1", &req, &leak)
        .expect("response inspection");
    assert_eq!(f, Findings::default());
}

#[test]
fn four_threads_share_one_rule_set() {
    let (engine, rules) = waf();
    let benign = get("/orders/list?page=2");
    let sqli = get("/orders/list?id=1'%20OR%20'1'='1");
    let expected = (inspect("block-pl1", &benign), inspect("block-pl1", &sqli));
    let detect = inspect("detect", &sqli);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (expected, detect) = (&expected, &detect);
            s.spawn(move || {
                for i in 0..200 {
                    let (scope, req, want) = match (i + t) % 3 {
                        0 => ("block-pl1", &benign, &expected.0),
                        1 => ("block-pl1", &sqli, &expected.1),
                        _ => ("detect", &sqli, detect),
                    };
                    let got = engine.inspect_request(rules, scope, req).expect("inspects");
                    assert_eq!(&got, want, "thread {t} iteration {i}");
                }
            });
        }
    });
}

#[test]
fn timings() {
    let started = Instant::now();
    let rules = RuleSet::compile(&CrsPaths::default(), &scopes()).expect("compiles");
    let compile = started.elapsed();
    let engine = WafEngine::new();
    let time = |req: &HttpRequest<'_>| -> Duration {
        for _ in 0..20 {
            let _ = engine.inspect_request(&rules, "block-pl1", req);
        }
        let n = 200;
        let started = Instant::now();
        for _ in 0..n {
            let _ = engine.inspect_request(&rules, "block-pl1", req);
        }
        started.elapsed() / n
    };
    let benign = time(&get("/orders/list?page=2&sort=date"));
    let malicious = time(&get("/orders/list?id=1'%20OR%20'1'='1"));
    eprintln!(
        "{}: compile() {compile:?}; inspect_request benign {benign:?}, malicious {malicious:?} (mean of 200)",
        engine.version()
    );
}

#[test]
fn engine_and_rule_set_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<WafEngine>();
    shared::<RuleSet>();
}
