//! The egress allowlist of a resource (OWASP API7 SSRF, API10 unsafe consumption of APIs):
//! where the edge may connect on a request's behalf. It applies to the resource's upstream and
//! to every URL-valued request field its routes declare (`url_fields`, see
//! [`crate::ownership::UrlField`]), after DNS resolution: a destination is allowed when its
//! host is allowed and none of its addresses is in a refused class (loopback, private,
//! link-local, shared/CGNAT, unique-local, unspecified, multicast, documentation, cloud metadata
//! `169.254.169.254` / `fd00:ec2::254`) — unless an `allow_networks` entry covers that address.
//!
//! **Default for a resource without `egress`**: its upstream is trusted as written (so existing
//! policies with `http://127.0.0.1:…` upstreams keep working) and its URL fields, if any, are
//! checked with an empty allowlist (any host, public addresses only).
//!
//! ```yaml
//! egress:
//!   allow_hosts: [api.partner.example, "*.cdn.example"]
//!   allow_networks: [10.20.0.0/16]      # URL fields and the upstream may reach these
//!   upstream_networks: [127.0.0.1/32]   # only the upstream: it runs on this box
//!   third_party: true                   # validate responses against the `api` document
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Egress settings of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    /// Host names a destination may have: exact (`api.example.com`) or a suffix wildcard
    /// (`*.example.com`, which does not match `example.com` itself). Empty: any host name (its
    /// addresses still have to be allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
    /// Networks (CIDR, `10.1.0.0/16`, `::1/128`) whose addresses are allowed even when they are
    /// in a refused class; an IP-literal destination must be inside one of them when
    /// `allow_hosts` is not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_networks: Vec<String>,
    /// Networks allowed for the resource's upstream only (like `allow_networks`, but a
    /// URL-valued request field cannot point there): where the protected service itself runs,
    /// e.g. `127.0.0.1/32`, so that a webhook URL cannot reach its neighbours on loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_networks: Vec<String>,
    /// The upstream is a third-party API: its JSON responses must match the response schema of
    /// the resource's `api` document (refused with 502 `upstream_invalid` otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub third_party: bool,
}

/// An IP network parsed from CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address (host bits zeroed).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `addr/prefix` (a bare address is a host network).
    ///
    /// # Errors
    /// Why the text is not a network.
    pub fn parse(text: &str) -> Result<IpNet, &'static str> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| "must be an IP address or CIDR")?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or("prefix length out of range")?,
            None => max,
        };
        Ok(IpNet {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) addresses as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Whether a host pattern is well formed (`name`, `*.suffix`).
pub fn valid_host_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
}

/// Checks a resource's `egress` block (`at` is its field path).
pub fn check(at: &str, egress: &EgressPolicy, push: &mut dyn FnMut(String, &str)) {
    if egress.allow_hosts.len() > 256 {
        push(format!("{at}.allow_hosts"), "at most 256 entries");
    }
    for (i, host) in egress.allow_hosts.iter().enumerate() {
        if !valid_host_pattern(host) {
            push(
                format!("{at}.allow_hosts[{i}]"),
                "must be a lower-case DNS name or *.suffix",
            );
        }
    }
    if egress.allow_networks.len() > 256 {
        push(format!("{at}.allow_networks"), "at most 256 entries");
    }
    for (i, net) in egress.allow_networks.iter().enumerate() {
        if let Err(why) = IpNet::parse(net) {
            push(format!("{at}.allow_networks[{i}]"), why);
        }
    }
    if egress.upstream_networks.len() > 256 {
        push(format!("{at}.upstream_networks"), "at most 256 entries");
    }
    for (i, net) in egress.upstream_networks.iter().enumerate() {
        if let Err(why) = IpNet::parse(net) {
            push(format!("{at}.upstream_networks[{i}]"), why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_contain() {
        let net = IpNet::parse("10.1.2.3/16").expect("net");
        assert_eq!(net.addr, "10.1.0.0".parse::<IpAddr>().expect("ip"));
        assert!(net.contains("10.1.200.7".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let host = IpNet::parse("::1").expect("host");
        assert_eq!(host.prefix, 128);
        assert!(host.contains("::1".parse().expect("ip")));
        assert!(IpNet::parse("0.0.0.0/0")
            .expect("all")
            .contains("8.8.8.8".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn egress_block_is_validated_with_paths() {
        let mut push_paths = Vec::new();
        let egress = EgressPolicy {
            allow_hosts: vec![
                "api.example.com".into(),
                "*.Example.com".into(),
                "*.".into(),
            ],
            allow_networks: vec!["127.0.0.1/32".into(), "300.1.1.1".into()],
            upstream_networks: vec!["::1".into(), "x/1".into()],
            third_party: false,
        };
        check("resources[0].egress", &egress, &mut |p, _| {
            push_paths.push(p)
        });
        assert_eq!(
            push_paths,
            [
                "resources[0].egress.allow_hosts[1]",
                "resources[0].egress.allow_hosts[2]",
                "resources[0].egress.allow_networks[1]",
                "resources[0].egress.upstream_networks[1]"
            ]
        );
    }
}
