//! The per-identity L3/L4 packet ACL, compiled from typed [`TunnelAclRule`]s.
//!
//! Semantics (default deny):
//! * a packet **from the tunnel** is allowed when some rule has its destination network
//!   containing the packet's destination address, its protocol equal to the packet's
//!   (TCP, UDP, or ICMP/ICMPv6), and — for TCP/UDP — the destination port in the rule's
//!   range (any port when the rule has none);
//! * a packet **to the tunnel** (from the LAN side) is allowed when it could be a reply to such
//!   a flow: its *source* matches a rule as a destination would (address, protocol, and for
//!   TCP/UDP its source port). This is stateless; connection tracking comes with the edge shell;
//! * every other IP protocol, and every packet no rule matches, is denied.

use sase_model::tunnel::{IpCidr, PortRange, TunnelAclRule, TunnelProtocol};

use crate::packet::{InnerPacket, Transport};

/// A compiled ACL: rules grouped by protocol. Empty means deny everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    tcp: Vec<(IpCidr, Option<PortRange>)>,
    udp: Vec<(IpCidr, Option<PortRange>)>,
    icmp: Vec<IpCidr>,
}

impl Acl {
    /// Compiles typed rules (already validated by `sase-model`).
    pub fn compile(rules: &[TunnelAclRule]) -> Acl {
        let mut acl = Acl::default();
        for r in rules {
            match r.protocol {
                TunnelProtocol::Tcp => acl.tcp.push((r.destination, r.ports)),
                TunnelProtocol::Udp => acl.udp.push((r.destination, r.ports)),
                TunnelProtocol::Icmp => acl.icmp.push(r.destination),
            }
        }
        acl
    }

    /// Whether a packet sent from the tunnel may go to its destination.
    pub fn allows_outbound(&self, p: &InnerPacket) -> bool {
        self.matches(p.dst, p.transport, true)
    }

    /// Whether a packet going into the tunnel may pass (a reply from an allowed resource).
    pub fn allows_reply(&self, p: &InnerPacket) -> bool {
        self.matches(p.src, p.transport, false)
    }

    fn matches(&self, resource: std::net::IpAddr, t: Transport, outbound: bool) -> bool {
        let ports_ok = |rules: &[(IpCidr, Option<PortRange>)], port: u16| {
            rules.iter().any(|(cidr, ports)| {
                cidr.contains(resource) && ports.is_none_or(|r| r.contains(port))
            })
        };
        match t {
            Transport::Tcp { src_port, dst_port } => {
                ports_ok(&self.tcp, if outbound { dst_port } else { src_port })
            }
            Transport::Udp { src_port, dst_port } => {
                ports_ok(&self.udp, if outbound { dst_port } else { src_port })
            }
            Transport::Icmp { .. } => self.icmp.iter().any(|c| c.contains(resource)),
            Transport::Other { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(dst: &str, transport: Transport) -> InnerPacket {
        InnerPacket {
            src: "100.64.0.2".parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            transport,
        }
    }

    fn acl(rules: &[&str]) -> Acl {
        let rules: Vec<TunnelAclRule> = rules
            .iter()
            .map(|r| r.parse().expect("valid rule"))
            .collect();
        Acl::compile(&rules)
    }

    #[test]
    fn default_deny() {
        let a = acl(&[]);
        assert!(!a.allows_outbound(&pkt("10.0.0.1", Transport::Icmp { icmp_type: 8 })));
    }

    #[test]
    fn protocol_cidr_and_ports() {
        let a = acl(&["tcp:10.1.0.0/16:443", "udp:10.2.0.5/32", "icmp:10.1.2.0/24"]);
        let tcp = |p| Transport::Tcp {
            src_port: 50000,
            dst_port: p,
        };
        assert!(a.allows_outbound(&pkt("10.1.9.9", tcp(443))));
        assert!(!a.allows_outbound(&pkt("10.1.9.9", tcp(444))));
        assert!(!a.allows_outbound(&pkt("10.3.0.1", tcp(443))));
        let udp = Transport::Udp {
            src_port: 1,
            dst_port: 9999,
        };
        assert!(a.allows_outbound(&pkt("10.2.0.5", udp)));
        assert!(!a.allows_outbound(&pkt("10.2.0.6", udp)));
        assert!(a.allows_outbound(&pkt("10.1.2.3", Transport::Icmp { icmp_type: 8 })));
        assert!(!a.allows_outbound(&pkt("10.1.3.3", Transport::Icmp { icmp_type: 8 })));
        // Protocols the ACL does not know (e.g. GRE) are denied.
        assert!(!a.allows_outbound(&pkt("10.1.2.3", Transport::Other { protocol: 47 })));
        // A reply from 10.1.9.9:443 to the client passes; one from another port does not.
        let reply = InnerPacket {
            src: "10.1.9.9".parse().expect("ip"),
            dst: "100.64.0.2".parse().expect("ip"),
            transport: Transport::Tcp {
                src_port: 443,
                dst_port: 50000,
            },
        };
        assert!(a.allows_reply(&reply));
        let other = InnerPacket {
            transport: Transport::Tcp {
                src_port: 22,
                dst_port: 50000,
            },
            ..reply
        };
        assert!(!a.allows_reply(&other));
    }
}
