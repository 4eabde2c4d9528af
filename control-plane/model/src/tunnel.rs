//! Typed rules for the per-identity packet ACL of ZTNA tunnels (`sase-tunnel`).
//!
//! A rule names one destination network ([`IpCidr`]), one protocol ([`TunnelProtocol`]) and,
//! for TCP and UDP, an optional destination [`PortRange`]. The text forms are parsed once here
//! (`"10.1.0.0/16"`, `"tcp"`, `"443"` or `"8000-8100"`), so the tunnel core only ever sees valid
//! values. Anything not allowed by some rule is denied.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a rule's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelAclError {
    /// Not `address/prefix` with a valid address.
    #[error("invalid CIDR {0:?}: expected address/prefix")]
    BadCidr(String),
    /// The prefix length exceeds the address width (32 for IPv4, 128 for IPv6).
    #[error("invalid prefix length in {0:?}")]
    BadPrefix(String),
    /// Host bits are set below the prefix (`10.0.0.1/8`): write the network address.
    #[error("CIDR {0:?} has host bits set below the prefix")]
    HostBitsSet(String),
    /// Not a port or `start-end` with `start <= end`.
    #[error("invalid port range {0:?}: expected N or N-M with 1 <= N <= M <= 65535")]
    BadPorts(String),
    /// Not one of `tcp`, `udp`, `icmp`.
    #[error("unknown protocol {0:?}: expected tcp, udp or icmp")]
    BadProtocol(String),
    /// A port range on an ICMP rule.
    #[error("an icmp rule cannot have ports")]
    PortsOnIcmp,
}

/// An IP network: an address with its host bits clear, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// The network `addr/prefix`; refuses a prefix wider than the address or host bits set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, TunnelAclError> {
        let text = format!("{addr}/{prefix}");
        let width = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > width {
            return Err(TunnelAclError::BadPrefix(text));
        }
        if mask_bits(addr, prefix) != bits(addr) {
            return Err(TunnelAclError::HostBitsSet(text));
        }
        Ok(IpCidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask_bits(ip, self.prefix) == bits(self.addr)
            }
            _ => false,
        }
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn mask_bits(addr: IpAddr, prefix: u8) -> u128 {
    let width: u32 = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = u32::from(prefix).min(width);
    let host = width - prefix;
    let mask = if host >= 128 { 0 } else { u128::MAX << host };
    bits(addr) & mask
}

impl FromStr for IpCidr {
    type Err = TunnelAclError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TunnelAclError::BadCidr(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| bad())?,
                p.parse::<u8>()
                    .map_err(|_| TunnelAclError::BadPrefix(s.to_string()))?,
            ),
            None => {
                let a = s.parse::<IpAddr>().map_err(|_| bad())?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        IpCidr::new(addr, prefix)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for IpCidr {
    type Error = TunnelAclError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpCidr> for String {
    fn from(c: IpCidr) -> String {
        c.to_string()
    }
}

/// The transport protocols a rule can allow. `Icmp` means ICMP for IPv4 and ICMPv6 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelProtocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// ICMP (1) or ICMPv6 (58).
    Icmp,
}

impl FromStr for TunnelProtocol {
    type Err = TunnelAclError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(TunnelProtocol::Tcp),
            "udp" => Ok(TunnelProtocol::Udp),
            "icmp" => Ok(TunnelProtocol::Icmp),
            _ => Err(TunnelAclError::BadProtocol(s.to_string())),
        }
    }
}

/// An inclusive range of destination ports, `start <= end`, port 0 excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// The ports `start..=end`.
    pub fn new(start: u16, end: u16) -> Result<Self, TunnelAclError> {
        if start == 0 || start > end {
            return Err(TunnelAclError::BadPorts(format!("{start}-{end}")));
        }
        Ok(PortRange { start, end })
    }

    /// First port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl FromStr for PortRange {
    type Err = TunnelAclError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TunnelAclError::BadPorts(s.to_string());
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let start = a.trim().parse::<u16>().map_err(|_| bad())?;
        let end = b.trim().parse::<u16>().map_err(|_| bad())?;
        PortRange::new(start, end).map_err(|_| bad())
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl TryFrom<String> for PortRange {
    type Error = TunnelAclError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(p: PortRange) -> String {
        p.to_string()
    }
}

/// One allow rule: traffic from the tunnel to `destination` over `protocol`, and for TCP/UDP
/// to a port in `ports` (all ports when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRule")]
pub struct TunnelAclRule {
    /// Destination network.
    pub destination: IpCidr,
    /// Transport protocol.
    pub protocol: TunnelProtocol,
    /// Destination ports (TCP/UDP only); `None` allows every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    destination: IpCidr,
    protocol: TunnelProtocol,
    #[serde(default)]
    ports: Option<PortRange>,
}

impl TryFrom<RawRule> for TunnelAclRule {
    type Error = TunnelAclError;
    fn try_from(r: RawRule) -> Result<Self, Self::Error> {
        TunnelAclRule::new(r.destination, r.protocol, r.ports)
    }
}

impl TunnelAclRule {
    /// A rule; refuses ports on an ICMP rule.
    pub fn new(
        destination: IpCidr,
        protocol: TunnelProtocol,
        ports: Option<PortRange>,
    ) -> Result<Self, TunnelAclError> {
        if protocol == TunnelProtocol::Icmp && ports.is_some() {
            return Err(TunnelAclError::PortsOnIcmp);
        }
        Ok(TunnelAclRule {
            destination,
            protocol,
            ports,
        })
    }
}

impl FromStr for TunnelAclRule {
    type Err = TunnelAclError;
    /// The compact form `proto:cidr[:ports]`, e.g. `tcp:10.1.0.0/16:443` or `icmp:10.1.2.3/32`
    /// (IPv6 networks are written in brackets: `udp:[fd00::/64]:53`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, rest) = s
            .split_once(':')
            .ok_or_else(|| TunnelAclError::BadProtocol(s.to_string()))?;
        let protocol: TunnelProtocol = proto.parse()?;
        let (cidr, ports) = if let Some(rest) = rest.strip_prefix('[') {
            let (cidr, tail) = rest
                .split_once(']')
                .ok_or_else(|| TunnelAclError::BadCidr(rest.to_string()))?;
            (cidr, tail.strip_prefix(':'))
        } else {
            match rest.split_once(':') {
                Some((c, p)) => (c, Some(p)),
                None => (rest, None),
            }
        };
        let ports = ports.map(str::parse::<PortRange>).transpose()?;
        TunnelAclRule::new(cidr.parse()?, protocol, ports)
    }
}

/// Most peers one policy may list (each becomes a boringtun session on every edge).
pub const MAX_TUNNEL_PEERS: usize = 10_000;
/// Most rules one peer may carry.
pub const MAX_RULES_PER_PEER: usize = 256;

/// The `tunnel` block of a policy: the WireGuard peers the edges accept and what each may
/// reach. An edge runs its tunnel listener only when it is started with `--tunnel-listen`; a
/// peer missing from the block (or a policy without one) has no tunnel at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TunnelPolicy {
    /// The peers, each bound to one identity.
    #[serde(default)]
    pub peers: Vec<TunnelPeer>,
}

/// One tunnel peer: a device key bound to an identity, its tunnel address and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelPeer {
    /// The identity the peer stands for (user or device name; audit events carry it).
    pub name: String,
    /// The peer's WireGuard public key (X25519, standard base64 as `wg` prints it).
    pub public_key: String,
    /// The one inner source address the peer may use (its assigned tunnel address).
    pub address: IpAddr,
    /// What the identity may reach through the tunnel (default deny).
    #[serde(default)]
    pub rules: Vec<TunnelAclRule>,
    /// Keepalive interval in seconds that the edge sends (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
    /// The signed-in user the tunnel belongs to (the gateway's principal subject for HTTP
    /// from this tunnel; audit events carry it). `None` for a peer without identity binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The user's groups at the time the policy was compiled (gateway routes judge them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The registered device the key belongs to (an id or name of the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The sign-in session the tunnel was granted under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Longest `subject`, `device`, `session` or group name of a tunnel peer.
pub const MAX_IDENTITY_LEN: usize = 256;
/// Most groups one tunnel peer may carry.
pub const MAX_GROUPS_PER_PEER: usize = 64;

fn bad_identity_text(s: &str) -> bool {
    s.trim().is_empty() || s.len() > MAX_IDENTITY_LEN || s.chars().any(char::is_control)
}

impl TunnelPeer {
    /// The public key's 32 bytes, or `None` when it is not base64 of 32 bytes (refused by
    /// [`check`], so a validated policy always yields `Some`).
    pub fn public_key_bytes(&self) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.public_key.trim())
            .ok()?;
        bytes.try_into().ok()
    }
}

/// Semantic checks of the `tunnel` block, reported with field paths.
pub fn check(policy: &crate::policy::Policy, push: &mut dyn FnMut(String, &str)) {
    let Some(tunnel) = &policy.tunnel else {
        return;
    };
    if tunnel.peers.len() > MAX_TUNNEL_PEERS {
        push("tunnel.peers".into(), "at most 10000 peers");
    }
    let mut names = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    let mut addresses = std::collections::BTreeSet::new();
    for (i, peer) in tunnel.peers.iter().enumerate() {
        let at = format!("tunnel.peers[{i}]");
        if peer.name.trim().is_empty()
            || peer.name.len() > 128
            || peer.name.chars().any(char::is_control)
        {
            push(
                format!("{at}.name"),
                "names are 1-128 characters, no control characters",
            );
        } else if !names.insert(peer.name.as_str()) {
            push(format!("{at}.name"), "another peer has this name");
        }
        match peer.public_key_bytes() {
            None => push(
                format!("{at}.public_key"),
                "expected a WireGuard public key: base64 of 32 bytes",
            ),
            Some(k) => {
                if !keys.insert(k) {
                    push(format!("{at}.public_key"), "another peer has this key");
                }
            }
        }
        let addr = peer.address;
        if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
            push(
                format!("{at}.address"),
                "a tunnel address must be a unicast, non-loopback address",
            );
        } else if !addresses.insert(addr) {
            push(format!("{at}.address"), "another peer has this address");
        }
        if peer.rules.len() > MAX_RULES_PER_PEER {
            push(format!("{at}.rules"), "at most 256 rules per peer");
        }
        if peer.persistent_keepalive == Some(0) {
            push(
                format!("{at}.persistent_keepalive"),
                "1-65535 seconds, or leave it out",
            );
        }
        for (field, value) in [
            ("subject", &peer.subject),
            ("device", &peer.device),
            ("session", &peer.session),
        ] {
            if value.as_deref().is_some_and(bad_identity_text) {
                push(
                    format!("{at}.{field}"),
                    "1-256 characters, no control characters, or leave it out",
                );
            }
        }
        if peer.groups.len() > MAX_GROUPS_PER_PEER {
            push(format!("{at}.groups"), "at most 64 groups per peer");
        }
        for (g, group) in peer.groups.iter().enumerate() {
            if bad_identity_text(group) {
                push(
                    format!("{at}.groups[{g}]"),
                    "group names are 1-256 characters, no control characters",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_containment() {
        let c: IpCidr = "10.1.0.0/16".parse().expect("valid");
        assert!(c.contains("10.1.200.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(!c.contains("::1".parse().expect("ip")));
        assert_eq!(
            "10.1.0.1/16".parse::<IpCidr>(),
            Err(TunnelAclError::HostBitsSet("10.1.0.1/16".into()))
        );
        assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
        assert!("fd00::/129".parse::<IpCidr>().is_err());
        assert!("nonsense".parse::<IpCidr>().is_err());
        let all: IpCidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let v6: IpCidr = "fd00:1::/32".parse().expect("valid");
        assert!(v6.contains("fd00:1:ffff::1".parse().expect("ip")));
        assert_eq!(
            "10.1.2.3".parse::<IpCidr>().expect("host").to_string(),
            "10.1.2.3/32"
        );
    }

    #[test]
    fn ports_and_rules() {
        assert_eq!("443".parse::<PortRange>(), PortRange::new(443, 443));
        assert!("0".parse::<PortRange>().is_err());
        assert!("90-80".parse::<PortRange>().is_err());
        assert!("65536".parse::<PortRange>().is_err());
        let r: TunnelAclRule = "tcp:10.0.0.0/8:8000-8100".parse().expect("rule");
        assert_eq!(r.ports, PortRange::new(8000, 8100).ok());
        let r: TunnelAclRule = "udp:[fd00::/64]:53".parse().expect("rule");
        assert_eq!(r.protocol, TunnelProtocol::Udp);
        assert!("icmp:10.0.0.0/8:1".parse::<TunnelAclRule>().is_err());
        assert!("sctp:10.0.0.0/8".parse::<TunnelAclRule>().is_err());
    }

    #[test]
    fn tunnel_block_is_validated_with_field_paths() {
        let key = "YUjJBhJJSc1XDWciyNQ9L+vBT6afvbvdV7tYPQ+2Tw0=";
        let ok = format!(
            r#"{{"tunnel":{{"peers":[{{"name":"alice","public_key":"{key}","address":"100.96.0.2",
            "rules":[{{"destination":"10.0.0.0/8","protocol":"tcp","ports":"443"}}]}}]}}}}"#
        );
        let policy = crate::policy::Policy::parse_json(&ok).expect("valid");
        let peers = policy.tunnel.expect("tunnel").peers;
        assert_eq!(peers[0].public_key_bytes().map(|k| k.len()), Some(32));
        let bad = format!(
            r#"{{"tunnel":{{"peers":[{{"name":"a","public_key":"{key}","address":"100.96.0.2"}},
            {{"name":"a","public_key":"{key}","address":"100.96.0.2"}},
            {{"name":"c","public_key":"short","address":"127.0.0.1","persistent_keepalive":0}}]}}}}"#
        );
        let errors = crate::policy::Policy::parse_json(&bad)
            .expect_err("invalid")
            .0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "tunnel.peers[1].name",
            "tunnel.peers[1].public_key",
            "tunnel.peers[1].address",
            "tunnel.peers[2].public_key",
            "tunnel.peers[2].address",
            "tunnel.peers[2].persistent_keepalive",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        let unknown = r#"{"tunnel":{"peers":[],"extra":1}}"#;
        assert!(crate::policy::Policy::parse_json(unknown).is_err());
    }

    #[test]
    fn peer_identity_fields_are_optional_validated_and_skipped_when_empty() {
        let key = "YUjJBhJJSc1XDWciyNQ9L+vBT6afvbvdV7tYPQ+2Tw0=";
        let bare =
            format!(r#"{{"name":"a","public_key":"{key}","address":"100.96.0.2","rules":[]}}"#);
        let peer: TunnelPeer = serde_json::from_str(&bare).expect("peer without identity");
        assert_eq!((peer.subject.as_deref(), peer.groups.len()), (None, 0));
        assert_eq!(serde_json::to_string(&peer).expect("json"), bare);
        let full = format!(
            r#"{{"name":"a","public_key":"{key}","address":"100.96.0.2","rules":[],"subject":"alice@example.com","groups":["eng","ops"],"device":"dev-7","session":"s-1"}}"#
        );
        let peer: TunnelPeer = serde_json::from_str(&full).expect("peer with identity");
        assert_eq!(peer.subject.as_deref(), Some("alice@example.com"));
        assert_eq!(peer.groups, vec!["eng".to_string(), "ops".to_string()]);
        assert_eq!(
            (peer.device.as_deref(), peer.session.as_deref()),
            (Some("dev-7"), Some("s-1"))
        );
        assert_eq!(serde_json::to_string(&peer).expect("json"), full);
        let long = "x".repeat(MAX_IDENTITY_LEN + 1);
        let many: Vec<String> = (0..=MAX_GROUPS_PER_PEER)
            .map(|i| format!("\"g{i}\""))
            .collect();
        let bad = format!(
            r#"{{"tunnel":{{"peers":[{{"name":"a","public_key":"{key}","address":"100.96.0.2",
            "subject":"al\nice","groups":["ok",""],"device":"{long}","session":" "}},
            {{"name":"b","public_key":"mYpKp8Gy4UfCkUYk1nB5NMrwbXUWMmmLiwmMU/B51Fs=","address":"100.96.0.3",
            "groups":[{}]}}]}}}}"#,
            many.join(",")
        );
        let errors = crate::policy::Policy::parse_json(&bad)
            .expect_err("invalid")
            .0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "tunnel.peers[0].subject",
            "tunnel.peers[0].groups[1]",
            "tunnel.peers[0].device",
            "tunnel.peers[0].session",
            "tunnel.peers[1].groups",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        assert!(!paths.contains(&"tunnel.peers[0].groups[0]"), "{paths:?}");
    }

    #[test]
    fn serde_round_trip_validates() {
        let r: TunnelAclRule =
            serde_json::from_str(r#"{"destination":"10.1.0.0/16","protocol":"tcp","ports":"443"}"#)
                .expect("rule");
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(
            text,
            r#"{"destination":"10.1.0.0/16","protocol":"tcp","ports":"443"}"#
        );
        assert!(serde_json::from_str::<TunnelAclRule>(
            r#"{"destination":"10.1.0.0/16","protocol":"icmp","ports":"1"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<TunnelAclRule>(
            r#"{"destination":"10.1.0.1/16","protocol":"tcp"}"#
        )
        .is_err());
    }
}
