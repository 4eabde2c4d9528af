//! `sase-gateway`'s route guards on arbitrary requests: ownership rules (path, query, JSON body
//! field), URL-valued fields (query and body, parsed for the egress check), the egress decision
//! on the destinations found, and GraphQL limits (apollo-parser with token and recursion limits,
//! fragment walking) must never panic, whatever the query string and body.
//!
//! Input: the bytes before the first newline are the query string, the rest the body; the
//! first byte also picks the method and content type. The whole input is also given to the URL
//! parser alone.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sase_gateway::{
    decide, CompiledPolicy, GuardRequest, JwksStore, RequestParts, RouteGuards, Verdict,
};
use sase_model::{BundlePayload, Policy};

const POLICY: &str = r#"
resources:
  - name: app
    upstream: http://127.0.0.1:9000
    egress: {upstream_networks: [127.0.0.1/32], allow_networks: [10.20.0.0/16], allow_hosts: ["*.example.com", api.partner.example]}
    graphql: {max_depth: 6, max_aliases: 4, max_root_fields: 4, max_complexity: 200, max_tokens: 2000, max_recursion: 32}
    routes:
      - id: r
        methods: [GET, POST]
        path: /accounts/{accountId}/items
        public: true
        url_fields: [{query: next}, {body: /callback}, {body: /hooks/0/url}]
"#;

fn guards() -> &'static RouteGuards {
    static GUARDS: OnceLock<RouteGuards> = OnceLock::new();
    GUARDS.get_or_init(|| {
        let policy = CompiledPolicy::compile(&BundlePayload {
            tenant_id: "t".into(),
            version: 1,
            issued_at_ms: 0,
            policy: Policy::parse_yaml(POLICY).expect("fuzz policy"),
        })
        .expect("compiles");
        let verdict = decide(
            &policy,
            &JwksStore::new(),
            &RequestParts {
                method: "GET",
                host: None,
                path: "/accounts/alice/items",
                authorization: None,
            },
            0,
        );
        match verdict {
            Verdict::Allow(allowed) => (*allowed.guards.expect("guards")).clone(),
            other => panic!("fuzz policy: {other:?}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = sase_gateway::parse_url(&text, "fuzz");
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let query = String::from_utf8_lossy(query);
    let selector = data.first().copied().unwrap_or(0);
    let method = if selector & 1 == 0 { "GET" } else { "POST" };
    let content_type = match selector & 6 {
        0 => Some("application/json"),
        2 => Some("application/graphql"),
        4 => Some("text/plain"),
        _ => None,
    };
    let request = GuardRequest {
        method,
        path: "/accounts/alice/items",
        query: Some(&query),
        content_type,
        body,
    };
    let claims = serde_json::json!({"sub": "alice", "tenant": ["acme", 7]});
    if let Ok(destinations) = guards().check_request(&request, claims.as_object()) {
        let addrs: [IpAddr; 3] = [
            [127, 0, 0, 1].into(),
            [10, 20, 1, 2].into(),
            "fd00:ec2::254".parse().expect("ip"),
        ];
        for dest in &destinations {
            let _ = guards().check_destination(dest, &addrs[..1]);
            let _ = guards().check_destination(dest, &addrs);
        }
    }
});
