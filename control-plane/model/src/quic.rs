//! What the edge does with QUIC (HTTP/3 on UDP), per site and per resource or server name.
//!
//! A policy without a `quic` block keeps the behaviour from before QUIC support: the edge binds
//! no UDP socket for the published listener (the kernel answers UDP with ICMP port
//! unreachable) and leaves `Alt-Svc` alone. With a `quic` block, each QUIC flow gets one
//! [`QuicMode`]:
//!
//! * `inspect` — HTTP/3 is terminated on the edge with the resource's certificate and every
//!   request runs the same pipeline as HTTPS over TCP; the TCP listener advertises
//!   `Alt-Svc: h3=":<port>"`.
//! * `sni_filter` — the flow is not decrypted: the server name is read from the client's
//!   Initial packets, a name with an `sni_filter` rule is forwarded untouched to the rule's
//!   `upstream`, any other name is refused.
//! * `block` (the default mode) — refused at once (ICMP port unreachable when nothing on the
//!   port inspects, else a QUIC `CONNECTION_CLOSE`), and `Alt-Svc: h3` is stripped from
//!   responses on the TCP path so clients stop trying.
//! * `drop` — silently discarded; exists to compare fallback times with `block`.
//!
//! The mode of a flow is the first [`QuicRule`] matching its server name (or the resource
//! whose hosts contain it), else the site's entry in `sites`, else `mode`
//! ([`QuicPolicy::mode_for`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// What happens to a QUIC flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuicMode {
    /// Terminate HTTP/3 and inspect every request like HTTPS.
    Inspect,
    /// Forward flows with an allowed server name untouched; refuse the rest.
    SniFilter,
    /// Refuse at once so that clients fall back to TCP without waiting.
    #[default]
    Block,
    /// Discard silently (for comparison only: clients wait for their QUIC timeout).
    Drop,
}

impl QuicMode {
    /// Stable text form (audit events).
    pub fn as_str(self) -> &'static str {
        match self {
            QuicMode::Inspect => "inspect",
            QuicMode::SniFilter => "sni_filter",
            QuicMode::Block => "block",
            QuicMode::Drop => "drop",
        }
    }
}

/// The `quic` block of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicPolicy {
    /// Mode of flows that no rule and no site entry covers (default `block`).
    #[serde(default)]
    pub mode: QuicMode,
    /// Per-site mode, by site id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sites: BTreeMap<String, QuicMode>,
    /// Per-resource or per-server-name modes; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<QuicRule>,
}

/// A mode for one resource or one server name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicRule {
    /// A resource by name: applies to flows whose server name is one of its hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// A server name (`app.example.com`) or a suffix pattern (`*.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// What happens to matching flows.
    pub mode: QuicMode,
    /// Where an allowed `sni_filter` flow is forwarded (`host:port`, UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// How a flow's mode was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSource<'a> {
    /// Rule number `n` matched.
    Rule(usize, &'a QuicRule),
    /// The site's entry.
    Site,
    /// The policy-wide `mode`.
    Default,
}

impl QuicPolicy {
    /// The mode of a flow on `site_id` with server name `sni` (lower case), where `resource`
    /// is the resource whose hosts contain that name, if any.
    pub fn mode_for<'a>(
        &'a self,
        site_id: &str,
        sni: Option<&str>,
        resource: Option<&str>,
    ) -> (QuicMode, ModeSource<'a>) {
        for (i, rule) in self.rules.iter().enumerate() {
            let by_sni = match (&rule.sni, sni) {
                (Some(pattern), Some(name)) => sni_matches(pattern, name),
                _ => false,
            };
            let by_resource = match (&rule.resource, resource) {
                (Some(want), Some(have)) => want == have,
                _ => false,
            };
            if by_sni || by_resource {
                return (rule.mode, ModeSource::Rule(i, rule));
            }
        }
        match self.sites.get(site_id) {
            Some(mode) => (*mode, ModeSource::Site),
            None => (self.mode, ModeSource::Default),
        }
    }

    /// Whether any flow on `site_id` can be inspected (the HTTP/3 listener is needed).
    pub fn inspects_on(&self, site_id: &str) -> bool {
        self.mode_for(site_id, None, None).0 == QuicMode::Inspect
            || self.rules.iter().any(|r| r.mode == QuicMode::Inspect)
    }
}

/// Whether `name` matches `pattern`: equal (case-insensitive), or `*.suffix` and `name` ends
/// with `.suffix` (one or more labels).
pub fn sni_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    port.parse::<u16>().is_ok_and(|p| p != 0)
        && (host.parse::<std::net::IpAddr>().is_ok() || is_dns_name(host))
}

/// The checks of the `quic` block that types cannot express (called by
/// [`Policy::validate`]).
pub fn check(policy: &Policy, push: &mut dyn FnMut(String, &str)) {
    let Some(quic) = &policy.quic else {
        return;
    };
    for site in quic.sites.keys() {
        if site.trim().is_empty() || site.len() > 128 {
            push(
                format!("quic.sites.{site}"),
                "site ids are 1-128 characters",
            );
        }
    }
    if quic.rules.len() > 1024 {
        push("quic.rules".into(), "at most 1024 rules");
    }
    for (i, rule) in quic.rules.iter().enumerate() {
        let at = format!("quic.rules[{i}]");
        match (&rule.resource, &rule.sni) {
            (Some(_), Some(_)) | (None, None) => {
                push(at.clone(), "set exactly one of `resource` or `sni`");
            }
            (Some(name), None) => {
                if !policy.resources.iter().any(|r| &r.name == name) {
                    push(format!("{at}.resource"), "no resource has this name");
                }
            }
            (None, Some(sni)) => {
                let name = sni.strip_prefix("*.").unwrap_or(sni);
                if !is_dns_name(name) {
                    push(
                        format!("{at}.sni"),
                        "must be a DNS name or `*.` followed by one",
                    );
                }
            }
        }
        match (rule.mode, &rule.upstream) {
            (QuicMode::SniFilter, None) if rule.sni.is_some() => push(
                format!("{at}.upstream"),
                "an `sni_filter` rule names the `host:port` its flows are forwarded to",
            ),
            (QuicMode::SniFilter, Some(up)) => {
                if rule.sni.is_none() {
                    push(
                        format!("{at}.upstream"),
                        "only `sni` rules forward flows (a resource is reached by inspection)",
                    );
                } else if !is_host_port(up) {
                    push(format!("{at}.upstream"), "must be `host:port`");
                }
            }
            (QuicMode::SniFilter, None) => push(
                format!("{at}.mode"),
                "`sni_filter` applies to server names: use an `sni` rule with an `upstream`",
            ),
            (_, Some(_)) => push(
                format!("{at}.upstream"),
                "only `sni_filter` rules forward flows",
            ),
            (_, None) => {}
        }
    }
}

/// The QUIC part of an audit event: what was read from the flow and what was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicDetails {
    /// Server name from the ClientHello (empty when none was sent).
    pub sni: String,
    /// ALPN protocols offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    /// QUIC version (`v1`, `v2`, or the hex value of an unknown one).
    pub version: String,
    /// The mode applied (`inspect`, `sni_filter`, `block`, `drop`).
    pub mode: String,
    /// `inspected`, `forwarded`, `refused` or `dropped`.
    pub verdict: String,
    /// Client address.
    pub client_ip: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(quic: &str) -> Result<Policy, crate::PolicyError> {
        Policy::parse_yaml(&format!(
            "resources:\n  - name: app\n    hosts: [app.example.com]\n    upstream: http://127.0.0.1:9\n    routes:\n      - {{id: r, methods: [GET], path: /, public: true}}\n{quic}"
        ))
    }

    #[test]
    fn absent_block_keeps_the_old_behaviour() {
        let p = policy("").unwrap();
        assert!(p.quic.is_none());
        let text = String::from_utf8(crate::canonical::to_canonical_json(&p).unwrap()).unwrap();
        assert!(!text.contains("quic"), "{text}");
    }

    #[test]
    fn defaults_and_precedence() {
        let p = policy(
            "quic:\n  sites: {branch-2: drop}\n  rules:\n    - {resource: app, mode: inspect}\n    - {sni: '*.corp.example', mode: sni_filter, upstream: '10.0.0.5:443'}\n    - {sni: video.example, mode: block}\n",
        )
        .unwrap();
        let q = p.quic.unwrap();
        assert_eq!(q.mode, QuicMode::Block);
        assert_eq!(
            q.mode_for("s", Some("app.example.com"), Some("app")).0,
            QuicMode::Inspect
        );
        assert_eq!(
            q.mode_for("s", Some("git.corp.example"), None).0,
            QuicMode::SniFilter
        );
        assert_eq!(
            q.mode_for("s", Some("corp.example"), None).0,
            QuicMode::Block
        );
        assert_eq!(
            q.mode_for("branch-2", Some("x.org"), None).0,
            QuicMode::Drop
        );
        assert_eq!(
            q.mode_for("other", Some("x.org"), None).1,
            ModeSource::Default
        );
        assert!(q.inspects_on("other"));
    }

    #[test]
    fn errors_name_their_fields() {
        let err = policy(
            "quic:\n  rules:\n    - {resource: nope, mode: inspect}\n    - {sni: 'bad name', mode: block}\n    - {sni: a.example, mode: sni_filter}\n    - {sni: b.example, mode: block, upstream: 'x:1'}\n    - {resource: app, sni: a.example, mode: drop}\n    - {sni: c.example, mode: sni_filter, upstream: 'nope'}\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "quic.rules[0].resource",
                "quic.rules[1].sni",
                "quic.rules[2].upstream",
                "quic.rules[3].upstream",
                "quic.rules[4]",
                "quic.rules[5].upstream",
            ]
        );
        let err = policy("quic:\n  mode: inspekt\n").unwrap_err();
        assert_eq!(err.0[0].path, "quic.mode");
        let err = policy("quic:\n  port: 443\n").unwrap_err();
        assert_eq!(err.0[0].path, "quic.port");
    }

    #[test]
    fn sni_patterns() {
        assert!(sni_matches("*.example.com", "a.example.com"));
        assert!(sni_matches("*.example.com", "a.b.EXAMPLE.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(!sni_matches("*.example.com", "aexample.com"));
        assert!(sni_matches("App.Example.com", "app.example.com"));
    }
}
