//! The ZTNA tunnel core (`sase-tunnel`) on arbitrary input: its UDP port takes datagrams from
//! anyone, and what a peer sends inside its session is parsed (IP header, ports) and checked
//! against the peer's ACL before it reaches the LAN. Never panics; a delivered packet always
//! comes from the peer's own tunnel address.
//!
//! Input: the first byte picks the path.
//! * 0 mod 3: the rest is one raw datagram from an unknown address (handshake parsing, cookie
//!   replies, unknown indexes).
//! * 1 mod 3: a real boringtun client completes a handshake with the core, then sends the rest
//!   as an inner packet through the session (reaches the packet parser and the ACL behind the
//!   decryption).
//! * 2 mod 3: the rest is a packet from the LAN side (`on_tun`), after the same handshake.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use libfuzzer_sys::fuzz_target;
use sase_tunnel::{Action, PeerConfig, Tunnel, TunnelConfig};

const CLIENT_TUN: [u8; 4] = [100, 96, 0, 2];

fn client_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 40000))
}

/// The core with one peer, and that peer as a boringtun client with an established session.
fn connected() -> (Tunnel, Tunn, Instant) {
    let now = Instant::now();
    let mut edge = Tunnel::new(TunnelConfig {
        private_key: [1; 32],
        handshake_rate_limit: 1_000_000,
    });
    let secret = StaticSecret::from([2; 32]);
    let rules = [
        "icmp:10.10.1.0/24",
        "tcp:10.10.1.0/24:443",
        "udp:10.10.1.10/32:53",
    ]
    .iter()
    .filter_map(|r| r.parse().ok())
    .collect();
    edge.add_peer(PeerConfig {
        public_key: PublicKey::from(&secret).to_bytes(),
        preshared_key: None,
        tunnel_addr: IpAddr::from(CLIENT_TUN),
        rules,
        persistent_keepalive: None,
        endpoint: None,
    })
    .expect("peer");
    let mut client = Tunn::new(
        secret,
        PublicKey::from(edge.public_key()),
        None,
        None,
        7,
        None,
    );
    let mut buf = vec![0u8; 2048];
    // Initiation -> response -> (keepalive): the session is up on both sides.
    let mut to_edge = match client.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(d) => vec![d.to_vec()],
        _ => Vec::new(),
    };
    for _ in 0..4 {
        let mut to_client = Vec::new();
        for d in to_edge.drain(..) {
            for a in edge.on_udp(client_addr(), &d, now) {
                if let Action::Send { datagram, .. } = a {
                    to_client.push(datagram);
                }
            }
        }
        for d in to_client {
            if let TunnResult::WriteToNetwork(out) =
                client.decapsulate(Some(client_addr().ip()), &d, &mut buf)
            {
                to_edge.push(out.to_vec());
            }
        }
    }
    (edge, client, now)
}

fn check(actions: &[Action]) {
    for a in actions {
        if let Action::Deliver { packet, .. } = a {
            // Only IPv4 peers here: the source of anything delivered is the peer's address.
            assert_eq!(
                packet.get(12..16),
                Some(&CLIENT_TUN[..]),
                "a delivered packet carries the peer's tunnel address as source"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let mut edge = Tunnel::new(TunnelConfig {
                private_key: [1; 32],
                handshake_rate_limit: 5,
            });
            let now = Instant::now();
            for _ in 0..2 {
                let actions = edge.on_udp(client_addr(), rest, now);
                check(&actions);
            }
            let _ = edge.on_timer(now);
        }
        1 => {
            let (mut edge, mut client, now) = connected();
            let mut buf = vec![0u8; rest.len() + 256];
            if let TunnResult::WriteToNetwork(d) = client.encapsulate(rest, &mut buf) {
                let d = d.to_vec();
                let actions = edge.on_udp(client_addr(), &d, now);
                check(&actions);
            }
        }
        _ => {
            let (mut edge, _client, now) = connected();
            let actions = edge.on_tun(rest, now);
            check(&actions);
        }
    }
});
