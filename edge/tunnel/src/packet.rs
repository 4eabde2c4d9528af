//! Safe parsing of the two kinds of bytes the core looks into: WireGuard message headers (to
//! route a datagram to its peer without trying every peer) and decrypted inner IP packets (for
//! the allowed-IP check and the ACL). Every read is bounds-checked; malformed input yields an
//! error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// WireGuard message type 1: handshake initiation (148 bytes).
pub const MSG_HANDSHAKE_INIT: u32 = 1;
/// WireGuard message type 2: handshake response (92 bytes).
pub const MSG_HANDSHAKE_RESP: u32 = 2;
/// WireGuard message type 3: cookie reply (64 bytes).
pub const MSG_COOKIE_REPLY: u32 = 3;
/// WireGuard message type 4: transport data (at least 32 bytes).
pub const MSG_DATA: u32 = 4;

/// The routing-relevant header of a WireGuard datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgHeader {
    /// A handshake initiation: the sender is identified only by decrypting its static key.
    HandshakeInit,
    /// A message addressed to one of our session indices (response, cookie reply, data).
    ToIndex {
        /// The message type (2, 3 or 4).
        kind: u32,
        /// Our receiver index as chosen by boringtun (`peer_index << 8 | session`).
        receiver_index: u32,
    },
}

/// Reads the type (with its three reserved zero bytes) and, where present, the receiver index
/// of a WireGuard datagram, checking the exact sizes of the fixed-size messages.
pub fn parse_wg_header(datagram: &[u8]) -> Option<WgHeader> {
    let kind = u32::from_le_bytes(datagram.get(0..4)?.try_into().ok()?);
    let index_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            datagram.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    match (kind, datagram.len()) {
        (MSG_HANDSHAKE_INIT, 148) => Some(WgHeader::HandshakeInit),
        (MSG_HANDSHAKE_RESP, 92) => Some(WgHeader::ToIndex {
            kind,
            receiver_index: index_at(8)?,
        }),
        (MSG_COOKIE_REPLY, 64) => Some(WgHeader::ToIndex {
            kind,
            receiver_index: index_at(4)?,
        }),
        (MSG_DATA, n) if n >= 32 => Some(WgHeader::ToIndex {
            kind,
            receiver_index: index_at(4)?,
        }),
        _ => None,
    }
}

/// The transport layer of an inner packet, as far as the ACL needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP with its ports.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// UDP with its ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (IPv4) or ICMPv6 with its type.
    Icmp {
        /// The ICMP type (e.g. 8 echo request, 0 echo reply; 128/129 for ICMPv6).
        icmp_type: u8,
    },
    /// Any other IP protocol (denied by the ACL, which only knows TCP, UDP and ICMP).
    Other {
        /// The IP protocol number.
        protocol: u8,
    },
}

/// The addresses and transport of an inner IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerPacket {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport header summary.
    pub transport: Transport,
}

/// Why an inner packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Empty, not IPv4/IPv6, or shorter than its headers claim.
    #[error("malformed IP packet")]
    Malformed,
    /// A fragment other than the first: it carries no transport header to check.
    #[error("non-initial fragment")]
    Fragment,
}

/// Parses an IPv4 or IPv6 packet and its TCP/UDP/ICMP header.
pub fn parse_ip(packet: &[u8]) -> Result<InnerPacket, PacketError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_v4(packet),
        Some(6) => parse_v6(packet),
        _ => Err(PacketError::Malformed),
    }
}

fn parse_v4(p: &[u8]) -> Result<InnerPacket, PacketError> {
    let header = p.get(0..20).ok_or(PacketError::Malformed)?;
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if ihl < 20 || total < ihl || total > p.len() {
        return Err(PacketError::Malformed);
    }
    let flags_frag = u16::from_be_bytes([header[6], header[7]]);
    let src = IpAddr::V4(Ipv4Addr::new(
        header[12], header[13], header[14], header[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        header[16], header[17], header[18], header[19],
    ));
    if flags_frag & 0x1fff != 0 {
        return Err(PacketError::Fragment);
    }
    let payload = p.get(ihl..total).ok_or(PacketError::Malformed)?;
    let transport = transport(header[9], payload, 1)?;
    Ok(InnerPacket {
        src,
        dst,
        transport,
    })
}

fn parse_v6(p: &[u8]) -> Result<InnerPacket, PacketError> {
    let header = p.get(0..40).ok_or(PacketError::Malformed)?;
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let end = 40 + payload_len;
    if end > p.len() {
        return Err(PacketError::Malformed);
    }
    let addr = |at: usize| -> Result<IpAddr, PacketError> {
        let b: [u8; 16] = p
            .get(at..at + 16)
            .and_then(|s| s.try_into().ok())
            .ok_or(PacketError::Malformed)?;
        Ok(IpAddr::V6(Ipv6Addr::from(b)))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let mut next = header[6];
    let mut at = 40;
    // Walk a bounded number of extension headers.
    for _ in 0..8 {
        match next {
            // Hop-by-hop, routing, destination options: (next, len in 8-octet units - 1).
            0 | 43 | 60 => {
                let ext = p.get(at..at + 2).ok_or(PacketError::Malformed)?;
                next = ext[0];
                at += (usize::from(ext[1]) + 1) * 8;
            }
            // Fragment header: 8 bytes; offset in the upper 13 bits of bytes 2..4.
            44 => {
                let ext = p.get(at..at + 8).ok_or(PacketError::Malformed)?;
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    return Err(PacketError::Fragment);
                }
                next = ext[0];
                at += 8;
            }
            _ => break,
        }
        if at > end {
            return Err(PacketError::Malformed);
        }
    }
    if matches!(next, 0 | 43 | 60 | 44) {
        return Err(PacketError::Malformed);
    }
    let payload = p.get(at..end).ok_or(PacketError::Malformed)?;
    let transport = transport(next, payload, 58)?;
    Ok(InnerPacket {
        src,
        dst,
        transport,
    })
}

fn transport(protocol: u8, payload: &[u8], icmp_proto: u8) -> Result<Transport, PacketError> {
    let ports = |min: usize| -> Result<(u16, u16), PacketError> {
        let h = payload.get(0..min).ok_or(PacketError::Malformed)?;
        Ok((
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
        ))
    };
    Ok(match protocol {
        6 => {
            let (src_port, dst_port) = ports(20)?;
            Transport::Tcp { src_port, dst_port }
        }
        17 => {
            let (src_port, dst_port) = ports(8)?;
            Transport::Udp { src_port, dst_port }
        }
        p if p == icmp_proto => Transport::Icmp {
            icmp_type: *payload.first().ok_or(PacketError::Malformed)?,
        },
        protocol => Transport::Other { protocol },
    })
}

/// The destination address of an IP packet (for choosing the peer of a packet from the TUN
/// side), checking only the fixed header.
pub fn dst_address(packet: &[u8]) -> Option<IpAddr> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        Some(6) => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            proto,
            0,
            0,
        ];
        p.extend_from_slice(&[100, 64, 0, 2, 10, 1, 0, 5]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_v4_transports() {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        let p = parse_ip(&v4(6, &tcp)).expect("tcp");
        assert_eq!(
            p.transport,
            Transport::Tcp {
                src_port: 40000,
                dst_port: 443
            }
        );
        assert_eq!(p.src, IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)));
        assert_eq!(
            parse_ip(&v4(1, &[8, 0, 0, 0])).expect("icmp").transport,
            Transport::Icmp { icmp_type: 8 }
        );
        // TCP header cut short, UDP without ports, ICMP without type.
        assert_eq!(parse_ip(&v4(6, &[0; 10])), Err(PacketError::Malformed));
        assert_eq!(parse_ip(&v4(17, &[0; 4])), Err(PacketError::Malformed));
        assert_eq!(parse_ip(&v4(1, &[])), Err(PacketError::Malformed));
        // Total length larger than the buffer.
        let mut p = v4(17, &[0; 8]);
        p[3] = 200;
        assert_eq!(parse_ip(&p), Err(PacketError::Malformed));
        // Non-initial fragment.
        let mut p = v4(17, &[0; 8]);
        p[7] = 1;
        assert_eq!(parse_ip(&p), Err(PacketError::Fragment));
    }

    #[test]
    fn parses_v6_with_extension_headers() {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&[0xfd; 16]);
        p.extend_from_slice(&[0xfe; 16]);
        // Hop-by-hop (8 bytes) then UDP.
        let mut payload = vec![17, 0, 0, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
        p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        p[6] = 0;
        p.extend_from_slice(&payload);
        assert_eq!(
            parse_ip(&p).expect("udp").transport,
            Transport::Udp {
                src_port: 53,
                dst_port: 53
            }
        );
        // Extension header length running past the payload.
        let mut bad = p.clone();
        bad[41] = 200;
        assert_eq!(parse_ip(&bad), Err(PacketError::Malformed));
    }

    #[test]
    fn wg_headers() {
        let mut init = vec![0u8; 148];
        init[0] = 1;
        assert_eq!(parse_wg_header(&init), Some(WgHeader::HandshakeInit));
        init.push(0);
        assert_eq!(parse_wg_header(&init), None);
        let mut data = vec![0u8; 32];
        data[0] = 4;
        data[4..8].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        assert_eq!(
            parse_wg_header(&data),
            Some(WgHeader::ToIndex {
                kind: 4,
                receiver_index: 0x1234_5678
            })
        );
        data[1] = 1; // reserved bytes must be zero
        assert_eq!(parse_wg_header(&data), None);
        assert_eq!(parse_wg_header(&[4, 0]), None);
    }
}
