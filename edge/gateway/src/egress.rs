//! The egress allowlist (OWASP API7 SSRF, API10): where the edge lets a request make it or its
//! upstream connect. The shell resolves a destination's host name (the system resolver, which
//! also turns `2130706433`, `0x7f.1` and friends into the addresses a client library would
//! reach) and gives this module the host and every address; a destination passes when its host
//! is allowed and each address is either inside an `allow_networks` entry or in no refused
//! class (loopback, private, link-local, shared, unique-local, unspecified, multicast,
//! documentation, reserved; cloud metadata named as such). URLs that different parsers could
//! read differently (credentials, backslashes, spaces, control or non-ASCII characters) and
//! schemes other than `http`/`https` are refused before any lookup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sase_model::egress::{canonical, EgressPolicy, IpNet};

/// A refused destination: what was refused and why (no address or value of a request field
/// beyond the class of address it resolved to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressViolation {
    /// `upstream` or the request field, e.g. ``body field `/callback` ``.
    pub field: String,
    /// Why.
    pub why: String,
}

impl std::fmt::Display for EgressViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

/// A destination named by a URL: host (lower case, no trailing dot; IPv6 without brackets)
/// and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Host name or IP literal.
    pub host: String,
    /// Port (scheme default when the URL names none).
    pub port: u16,
    /// What names it (`upstream` or the request field).
    pub field: String,
    /// It is the resource's upstream (`upstream_networks` apply too).
    pub upstream: bool,
}

/// The compiled egress allowlist of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EgressCheck {
    hosts: Vec<String>,
    networks: Vec<IpNet>,
    upstream_networks: Vec<IpNet>,
    /// The resource has an `egress` block: its upstream is checked too.
    pub(crate) checks_upstream: bool,
    /// Responses must match the API's response schemas (API10).
    pub(crate) third_party: bool,
}

impl EgressCheck {
    /// Compiles a resource's `egress` block (`None`: upstream unchecked, URL fields checked
    /// with an empty allowlist).
    pub(crate) fn compile(egress: Option<&EgressPolicy>) -> EgressCheck {
        let Some(egress) = egress else {
            return EgressCheck::default();
        };
        EgressCheck {
            hosts: egress.allow_hosts.clone(),
            // Validation refused malformed networks; skip rather than panic on one.
            networks: egress
                .allow_networks
                .iter()
                .filter_map(|n| IpNet::parse(n).ok())
                .collect(),
            upstream_networks: egress
                .upstream_networks
                .iter()
                .filter_map(|n| IpNet::parse(n).ok())
                .collect(),
            checks_upstream: true,
            third_party: egress.third_party,
        }
    }

    /// Whether a destination whose host resolved to `addrs` may be reached.
    ///
    /// # Errors
    /// The refusal, naming the destination's field and the reason.
    pub fn check(&self, dest: &Destination, addrs: &[IpAddr]) -> Result<(), EgressViolation> {
        let refuse = |why: String| EgressViolation {
            field: dest.field.clone(),
            why,
        };
        let literal = dest.host.parse::<IpAddr>().ok();
        let upstream_nets: &[IpNet] = if dest.upstream {
            &self.upstream_networks
        } else {
            &[]
        };
        let allowed = |ip: IpAddr| {
            self.networks
                .iter()
                .chain(upstream_nets)
                .any(|n| n.contains(ip))
        };
        if !self.hosts.is_empty() {
            let host_ok = match literal {
                Some(ip) => allowed(ip),
                None => self.hosts.iter().any(|p| host_matches(p, &dest.host)),
            };
            if !host_ok {
                return Err(refuse("host is not in the egress allowlist".into()));
            }
        }
        if addrs.is_empty() {
            return Err(refuse("host does not resolve".into()));
        }
        for &addr in addrs {
            if allowed(addr) {
                continue;
            }
            if let Some(class) = refused_class(addr) {
                return Err(refuse(format!("resolves to a {class} address")));
            }
        }
        Ok(())
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => pattern == host,
    }
}

/// The class of a refused address, or `None` for a public one.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [169, 254, 169, 254] | [169, 254, 170, 2] | [100, 100, 100, 200] => "cloud metadata",
        [0, ..] => "unspecified",
        [127, ..] => "loopback",
        [10, ..] | [192, 168, ..] => "private",
        [172, b, ..] if (16..32).contains(&b) => "private",
        [169, 254, ..] => "link-local",
        [100, b, ..] if (64..128).contains(&b) => "shared (CGNAT)",
        [192, 0, 0, _] => "reserved",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, b, ..] if b == 18 || b == 19 => "reserved",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip
        == "fd00:ec2::254"
            .parse::<Ipv6Addr>()
            .unwrap_or(Ipv6Addr::UNSPECIFIED)
    {
        return Some("cloud metadata");
    }
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        // NAT64 and 6to4 embed an IPv4 address: judge that one.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] | [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            return v4_class(v4);
        }
        // IPv4-compatible (deprecated) `::a.b.c.d`.
        [0, 0, 0, 0, 0, 0, _, _] => "reserved",
        [a, ..] if a & 0xffc0 == 0xfe80 => "link-local",
        [a, ..] if a & 0xffc0 == 0xfec0 => "site-local",
        [a, ..] if a & 0xfe00 == 0xfc00 => "unique-local (private)",
        [a, ..] if a & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x0100, 0, 0, 0, ..] => "discard",
        _ => return None,
    })
}

/// Parses an absolute `http`/`https` URL into its destination; `field` names where it came
/// from.
///
/// # Errors
/// A refusal when the URL is not one the edge can judge unambiguously.
pub fn parse_url(url: &str, field: &str) -> Result<Destination, EgressViolation> {
    let refuse = |why: &str| EgressViolation {
        field: field.to_string(),
        why: why.to_string(),
    };
    if url.len() > 4096 {
        return Err(refuse("URL is too long"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(
            "URL contains spaces, control or non-ASCII characters",
        ));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| refuse("not an absolute URL"))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(refuse("only http and https URLs are allowed")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains(['@', '\\', '%']) || rest.contains('\\') {
        return Err(refuse(
            "URL carries credentials, escapes or backslashes in its authority",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| refuse("malformed IPv6 host"))?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| refuse("malformed IPv6 host"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| refuse("malformed port"))?,
            ),
        };
        (host.to_string(), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| refuse("malformed port"))?,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err(refuse("URL names no host"));
    }
    Ok(Destination {
        host,
        port,
        field: field.to_string(),
        upstream: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn dest(url: &str) -> Destination {
        parse_url(url, "body field `/callback`").expect("url")
    }

    #[test]
    fn refused_classes() {
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.0.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fd12::1", "unique-local (private)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("2002:7f00:1::", "loopback"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(refused_class(ip(addr)), Some(class), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "1.1.1.1",
        ] {
            assert_eq!(refused_class(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn urls_are_parsed_conservatively() {
        assert_eq!(
            dest("https://API.Example.com./x?y"),
            Destination {
                host: "api.example.com".into(),
                port: 443,
                field: "body field `/callback`".into(),
                upstream: false,
            }
        );
        assert_eq!(dest("http://[::1]:8080/").host, "::1");
        assert_eq!(dest("http://[::1]:8080/").port, 8080);
        assert_eq!(dest("HTTP://10.0.0.1").port, 80);
        for bad in [
            "file:///etc/passwd",
            "gopher://127.0.0.1:6379/_",
            "http://user@evil.example",
            "http://good.example\\@127.0.0.1/",
            "http://127.0.0.1%2f@x/",
            "http://a b/",
            "http://exämple/",
            "//no-scheme",
            "http://:80/",
            "http://host:99999/",
            "http://[::1/",
        ] {
            assert!(parse_url(bad, "f").is_err(), "{bad}");
        }
    }

    #[test]
    fn default_allowlist_lets_public_addresses_through_only() {
        let check = EgressCheck::compile(None);
        assert!(!check.checks_upstream);
        let d = dest("https://hooks.example.com/cb");
        assert_eq!(check.check(&d, &[ip("93.184.216.34")]), Ok(()));
        let err = check
            .check(&d, &[ip("93.184.216.34"), ip("169.254.169.254")])
            .expect_err("one bad address is enough");
        assert_eq!(
            err.to_string(),
            "body field `/callback`: resolves to a cloud metadata address"
        );
        assert!(check.check(&d, &[]).is_err(), "unresolvable");
        // A decimal IPv4 host resolves to loopback: refused after resolution.
        let d = dest("http://2130706433/");
        assert!(check.check(&d, &[ip("127.0.0.1")]).is_err());
    }

    #[test]
    fn allowlists_of_hosts_and_networks() {
        let check = EgressCheck::compile(Some(&EgressPolicy {
            allow_hosts: vec!["api.partner.example".into(), "*.cdn.example".into()],
            allow_networks: vec!["10.20.0.0/16".into()],
            upstream_networks: vec!["127.0.0.1/32".into()],
            third_party: false,
        }));
        assert!(check.checks_upstream);
        let ok = |url: &str, addrs: &[&str]| {
            let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
            check.check(&dest(url), &addrs)
        };
        assert_eq!(
            ok("https://api.partner.example", &["93.184.216.34"]),
            Ok(())
        );
        assert_eq!(ok("https://img.cdn.example", &["93.184.216.34"]), Ok(()));
        assert!(
            ok("https://cdn.example", &["93.184.216.34"]).is_err(),
            "suffix only"
        );
        assert!(ok("https://evil.example", &["93.184.216.34"]).is_err());
        // An allowed host that resolves to a private address outside the networks: refused.
        assert!(ok("https://api.partner.example", &["10.0.0.5"]).is_err());
        // Inside an allowed network: fine, by literal or by name.
        assert_eq!(ok("http://10.20.0.9:9000", &["10.20.0.9"]), Ok(()));
        // The upstream's own network is for the upstream only.
        assert!(ok("http://127.0.0.1:9000", &["127.0.0.1"]).is_err());
        let mut upstream = dest("http://127.0.0.1:9000");
        upstream.upstream = true;
        assert_eq!(check.check(&upstream, &[ip("127.0.0.1")]), Ok(()));
        assert_eq!(ok("https://api.partner.example", &["10.20.3.4"]), Ok(()));
        assert!(ok("http://127.0.0.2:9000", &["127.0.0.2"]).is_err());
        assert!(ok("http://[::1]:9000", &["::1"]).is_err());
    }
}
