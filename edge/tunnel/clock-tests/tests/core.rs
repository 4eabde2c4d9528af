//! The tunnel core against a plain boringtun `Tunn` as the client, entirely in memory, with
//! boringtun's clock mocked (thread-local `MockClock`) and advanced together with `now`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use mock_instant::MockClock;
use rand::{Rng, RngCore, SeedableRng};
use sase_tunnel::{Action, DropCause, PeerConfig, PeerId, Tunnel, TunnelConfig};

const CLIENT_ADDR: &str = "192.0.2.10:40000";
const CLIENT_TUN: &str = "100.64.0.2";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn secret(seed: u8) -> StaticSecret {
    StaticSecret::from([seed; 32])
}

fn ipv4(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
        panic!("v4 only")
    };
    let total = u16::try_from(20 + payload.len()).expect("small");
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(payload);
    p
}

fn icmp_echo(src: &str, dst: &str, seq: u16) -> Vec<u8> {
    let mut payload = vec![8, 0, 0, 0, 0, 1];
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(b"sase-tunnel");
    ipv4(src, dst, 1, &payload)
}

fn icmp_reply(src: &str, dst: &str, seq: u16) -> Vec<u8> {
    let mut payload = vec![0, 0, 0, 0, 0, 1];
    payload.extend_from_slice(&seq.to_be_bytes());
    ipv4(src, dst, 1, &payload)
}

fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&sport.to_be_bytes());
    payload.extend_from_slice(&dport.to_be_bytes());
    payload.extend_from_slice(&[0, 12, 0, 0, b'h', b'i', b'!', b'!']);
    ipv4(src, dst, 17, &payload)
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut payload = vec![0u8; 20];
    payload[0..2].copy_from_slice(&sport.to_be_bytes());
    payload[2..4].copy_from_slice(&dport.to_be_bytes());
    payload[12] = 0x50;
    ipv4(src, dst, 6, &payload)
}

/// The edge core, one boringtun client, simulated time and the datagrams in flight.
struct Net {
    edge: Tunnel,
    client: Tunn,
    peer: PeerId,
    now: Instant,
    /// Packets the client's TUN side received.
    client_rx: Vec<Vec<u8>>,
    /// Packets the edge delivered to the LAN side.
    delivered: Vec<Vec<u8>>,
    /// Drops the edge reported.
    drops: Vec<(Option<PeerId>, DropCause)>,
    /// Every datagram the client sent (for replays).
    client_sent: Vec<Vec<u8>>,
}

fn rules() -> Vec<sase_model::tunnel::TunnelAclRule> {
    [
        "icmp:10.10.1.0/24",
        "udp:10.10.1.10/32:7",
        "tcp:10.10.1.0/24:443",
    ]
    .iter()
    .map(|r| r.parse().expect("rule"))
    .collect()
}

impl Net {
    fn new(rate_limit: u64) -> Net {
        Net::with_peer(rate_limit, ip(CLIENT_TUN), rules())
    }

    fn with_peer(
        rate_limit: u64,
        tunnel_addr: IpAddr,
        rules: Vec<sase_model::tunnel::TunnelAclRule>,
    ) -> Net {
        MockClock::set_time(Duration::ZERO);
        let mut edge = Tunnel::new(TunnelConfig {
            private_key: [1; 32],
            handshake_rate_limit: rate_limit,
        });
        let client_secret = secret(2);
        let peer = edge
            .add_peer(PeerConfig {
                public_key: PublicKey::from(&client_secret).to_bytes(),
                preshared_key: None,
                tunnel_addr,
                rules,
                persistent_keepalive: None,
                endpoint: None,
            })
            .expect("peer");
        let client = Tunn::new(
            client_secret,
            PublicKey::from(edge.public_key()),
            None,
            None,
            7,
            None,
        );
        Net {
            edge,
            client,
            peer,
            now: Instant::now(),
            client_rx: Vec::new(),
            delivered: Vec::new(),
            drops: Vec::new(),
            client_sent: Vec::new(),
        }
    }

    fn advance(&mut self, d: Duration) {
        MockClock::advance(d);
        self.now += d;
    }

    /// Feeds datagrams from the client to the edge and back until nothing is in flight.
    fn pump(&mut self, mut to_edge: Vec<Vec<u8>>) {
        let mut buf = vec![0u8; 65_600];
        for _ in 0..64 {
            if to_edge.is_empty() {
                return;
            }
            let mut to_client = Vec::new();
            for d in to_edge.drain(..) {
                self.client_sent.push(d.clone());
                for a in self.edge.on_udp(addr(CLIENT_ADDR), &d, self.now) {
                    self.record(a, &mut to_client);
                }
            }
            for d in to_client {
                let mut first = true;
                loop {
                    let input: &[u8] = if first { &d } else { &[] };
                    let src = if first { Some(ip("192.0.2.1")) } else { None };
                    match self.client.decapsulate(src, input, &mut buf) {
                        TunnResult::WriteToNetwork(out) => to_edge.push(out.to_vec()),
                        TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                            self.client_rx.push(p.to_vec());
                            break;
                        }
                        TunnResult::Done | TunnResult::Err(_) => break,
                    }
                    first = false;
                }
            }
        }
        panic!("datagrams kept bouncing");
    }

    fn record(&mut self, a: Action, to_client: &mut Vec<Vec<u8>>) {
        match a {
            Action::Send { to, datagram } => {
                assert_eq!(to, addr(CLIENT_ADDR));
                to_client.push(datagram);
            }
            Action::Deliver { peer, packet } => {
                assert_eq!(peer, self.peer);
                self.delivered.push(packet);
            }
            Action::Drop { peer, cause } => self.drops.push((peer, cause)),
        }
    }

    /// The client sends an inner packet (starting a handshake if needed).
    fn client_send(&mut self, inner: &[u8]) {
        let mut buf = vec![0u8; 65_600];
        let out = match self.client.encapsulate(inner, &mut buf) {
            TunnResult::WriteToNetwork(out) => vec![out.to_vec()],
            _ => Vec::new(),
        };
        self.pump(out);
    }

    /// The LAN side answers through the edge.
    fn edge_send(&mut self, inner: &[u8]) {
        let mut to_client = Vec::new();
        for a in self.edge.on_tun(inner, self.now) {
            self.record(a, &mut to_client);
        }
        self.deliver_to_client(to_client);
    }

    fn deliver_to_client(&mut self, to_client: Vec<Vec<u8>>) {
        let mut buf = vec![0u8; 65_600];
        let mut to_edge = Vec::new();
        for d in to_client {
            match self.client.decapsulate(Some(ip("192.0.2.1")), &d, &mut buf) {
                TunnResult::WriteToNetwork(out) => to_edge.push(out.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    self.client_rx.push(p.to_vec())
                }
                _ => {}
            }
        }
        self.pump(to_edge);
    }

    /// Both sides' timers.
    fn tick(&mut self) {
        let mut to_client = Vec::new();
        for a in self.edge.on_timer(self.now) {
            self.record(a, &mut to_client);
        }
        self.deliver_to_client(to_client);
        let mut buf = vec![0u8; 65_600];
        if let TunnResult::WriteToNetwork(out) = self.client.update_timers(&mut buf) {
            let out = out.to_vec();
            self.pump(vec![out]);
        }
    }

    fn counters(&self) -> sase_tunnel::PeerCounters {
        self.edge.peer_counters(self.peer).expect("peer").clone()
    }

    fn connected() -> Net {
        let mut net = Net::new(100);
        net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", 0));
        assert_eq!(net.delivered.len(), 1, "drops: {:?}", net.drops);
        net.delivered.clear();
        net
    }
}

#[test]
fn handshake_then_allowed_traffic_both_ways() {
    let mut net = Net::new(100);
    let ping = icmp_echo(CLIENT_TUN, "10.10.1.1", 1);
    net.client_send(&ping);
    assert_eq!(net.delivered, vec![ping.clone()]);
    let c = net.counters();
    assert_eq!(c.handshakes, 1);
    assert_eq!(c.rx_packets, 1);
    assert_eq!(c.rx_bytes, ping.len() as u64);
    assert_eq!(net.edge.peer_endpoint(net.peer), Some(addr(CLIENT_ADDR)));
    assert!(net.edge.has_session(net.peer));
    assert_eq!(net.edge.last_handshake(net.peer), Some(net.now));

    let reply = icmp_reply("10.10.1.1", CLIENT_TUN, 1);
    net.edge_send(&reply);
    assert_eq!(net.client_rx, vec![reply.clone()]);
    assert_eq!(net.counters().tx_packets, 1);

    // UDP echo port and TCP 443 are allowed too, and their replies pass.
    let u = udp(CLIENT_TUN, "10.10.1.10", 5555, 7);
    net.client_send(&u);
    let t = tcp(CLIENT_TUN, "10.10.1.20", 40000, 443);
    net.client_send(&t);
    assert_eq!(net.delivered, vec![ping, u, t]);
    net.edge_send(&udp("10.10.1.10", CLIENT_TUN, 7, 5555));
    net.edge_send(&tcp("10.10.1.20", CLIENT_TUN, 443, 40000));
    assert_eq!(net.client_rx.len(), 3);
    assert!(net.drops.is_empty(), "{:?}", net.drops);
}

#[test]
fn acl_denies_what_no_rule_allows() {
    let mut net = Net::connected();
    let denied = [
        icmp_echo(CLIENT_TUN, "10.10.2.1", 1), // network not in any rule
        udp(CLIENT_TUN, "10.10.1.10", 5555, 9), // port not allowed
        udp(CLIENT_TUN, "10.10.1.11", 5555, 7), // host not in the UDP rule
        tcp(CLIENT_TUN, "10.10.1.20", 40000, 22), // TCP port not allowed
        ipv4(CLIENT_TUN, "10.10.1.1", 47, &[0; 8]), // GRE: protocol unknown to the ACL
    ];
    for p in &denied {
        net.client_send(p);
    }
    assert!(net.delivered.is_empty());
    assert_eq!(
        net.drops,
        vec![(Some(net.peer), DropCause::AclDenied); denied.len()]
    );
    assert_eq!(
        net.counters().drops.get(&DropCause::AclDenied),
        Some(&(denied.len() as u64))
    );
    // From the LAN side: a packet from a resource/port the ACL does not allow is not sent.
    net.drops.clear();
    net.edge_send(&tcp("10.10.1.20", CLIENT_TUN, 22, 40000));
    net.edge_send(&icmp_echo("10.10.9.9", CLIENT_TUN, 1));
    assert!(net.client_rx.is_empty());
    assert_eq!(net.drops.len(), 2);
    // A packet for an address no peer holds has no route.
    net.drops.clear();
    net.edge_send(&icmp_reply("10.10.1.1", "100.64.0.77", 1));
    assert_eq!(net.drops, vec![(None, DropCause::NoRoute)]);
}

#[test]
fn spoofed_inner_source_is_dropped() {
    let mut net = Net::connected();
    net.client_send(&icmp_echo("100.64.0.3", "10.10.1.1", 1));
    net.client_send(&icmp_echo("10.10.1.5", "10.10.1.1", 2));
    assert!(net.delivered.is_empty());
    assert_eq!(
        net.drops,
        vec![(Some(net.peer), DropCause::SpoofedSource); 2]
    );
    // A decrypted payload that is not an IP packet at all.
    net.drops.clear();
    net.client_send(&[0x45, 0, 0]);
    assert_eq!(net.drops, vec![(Some(net.peer), DropCause::BadInnerPacket)]);
}

#[test]
fn unknown_key_and_wrong_server_key_are_dropped() {
    let mut net = Net::new(100);
    let mut buf = vec![0u8; 2048];
    // A client whose key is not in the table (mac1 is right: it knows the edge's key).
    let mut stranger = Tunn::new(
        secret(9),
        PublicKey::from(net.edge.public_key()),
        None,
        None,
        1,
        None,
    );
    let TunnResult::WriteToNetwork(init) = stranger.format_handshake_initiation(&mut buf, false)
    else {
        panic!("initiation")
    };
    let actions = net.edge.on_udp(addr(CLIENT_ADDR), init, net.now);
    assert_eq!(
        actions,
        vec![Action::Drop {
            peer: None,
            cause: DropCause::UnknownPeer
        }]
    );
    // A client that has the wrong edge key: mac1 does not verify.
    let mut lost = Tunn::new(secret(2), PublicKey::from(&secret(5)), None, None, 1, None);
    let TunnResult::WriteToNetwork(init) = lost.format_handshake_initiation(&mut buf, false) else {
        panic!("initiation")
    };
    let actions = net.edge.on_udp(addr(CLIENT_ADDR), init, net.now);
    assert_eq!(
        actions,
        vec![Action::Drop {
            peer: None,
            cause: DropCause::BadMac
        }]
    );
    assert_eq!(net.edge.counters().drops.len(), 2);
    // After a peer is removed (revocation), its data is for an unknown index.
    let mut net = Net::connected();
    let key = net.edge.peer_public_key(net.peer).expect("key");
    net.edge.remove_peer(&key);
    net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", 3));
    assert!(net.delivered.is_empty());
    assert_eq!(net.drops, vec![(None, DropCause::UnknownIndex)]);
}

#[test]
fn replayed_handshake_and_data_are_dropped() {
    let mut net = Net::connected();
    let init = net.client_sent[0].clone();
    assert_eq!(init.len(), 148);
    let data = net
        .client_sent
        .iter()
        .rev()
        .find(|d| d.len() > 32)
        .expect("data datagram")
        .clone();
    let actions = net.edge.on_udp(addr(CLIENT_ADDR), &init, net.now);
    assert_eq!(
        actions,
        vec![Action::Drop {
            peer: Some(net.peer),
            cause: DropCause::HandshakeReplay
        }]
    );
    let actions = net.edge.on_udp(addr(CLIENT_ADDR), &data, net.now);
    assert_eq!(
        actions,
        vec![Action::Drop {
            peer: Some(net.peer),
            cause: DropCause::DataReplay
        }]
    );
    // Replays from another address do not move the peer's endpoint.
    let _ = net.edge.on_udp(addr("198.51.100.1:1"), &init, net.now);
    assert_eq!(net.edge.peer_endpoint(net.peer), Some(addr(CLIENT_ADDR)));
    assert_eq!(net.counters().handshakes, 1);
    // The session still works.
    net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", 9));
    assert_eq!(net.delivered.len(), 1);
}

#[test]
fn random_datagrams_are_dropped_and_never_delivered() {
    let mut net = Net::connected();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5a5e);
    let real_index = {
        // The receiver index the client's data carries (last data datagram the client sent).
        let d = net.client_sent.last().expect("sent").clone();
        u32::from_le_bytes([d[4], d[5], d[6], d[7]])
    };
    for i in 0..20_000u32 {
        let len = match i % 4 {
            0 => rng.gen_range(0..200),
            1 => 148,
            2 => rng.gen_range(32..1500),
            _ => [92usize, 64][(i as usize / 4) % 2],
        };
        let mut d = vec![0u8; len];
        rng.fill_bytes(&mut d);
        if len >= 8 && i % 3 != 0 {
            // Plausible headers: a valid type with zero reserved bytes, often our own index.
            d[0] = rng.gen_range(1..=4);
            d[1..4].fill(0);
            if i % 2 == 0 {
                d[4..8].copy_from_slice(&real_index.to_le_bytes());
            }
        }
        for a in net.edge.on_udp(addr("203.0.113.7:999"), &d, net.now) {
            assert!(
                matches!(a, Action::Drop { .. }),
                "random datagram {i} produced {a:?}"
            );
        }
    }
    let global: u64 = net.edge.counters().drops.values().sum();
    let peer: u64 = net.counters().drops.values().sum();
    assert_eq!(global + peer, 20_000);
    assert_eq!(net.edge.peer_endpoint(net.peer), Some(addr(CLIENT_ADDR)));
    // The edge keeps serving the real client.
    net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", 5));
    assert_eq!(net.delivered.len(), 1);
}

#[test]
fn handshake_flood_gets_cookie_replies_and_a_real_client_still_connects() {
    let mut net = Net::new(5);
    let mut buf = vec![0u8; 2048];
    let flood = |net: &mut Net, n: u8| -> (usize, usize) {
        let mut cookies = 0;
        let mut other = 0;
        for i in 0..n {
            let mut bot = Tunn::new(
                secret(100 + i),
                PublicKey::from(net.edge.public_key()),
                None,
                None,
                u32::from(i),
                None,
            );
            let mut b = vec![0u8; 2048];
            let TunnResult::WriteToNetwork(init) = bot.format_handshake_initiation(&mut b, false)
            else {
                panic!("initiation")
            };
            for a in net.edge.on_udp(addr("203.0.113.9:4444"), init, net.now) {
                match a {
                    Action::Send { to, datagram } => {
                        assert_eq!(to, addr("203.0.113.9:4444"));
                        assert_eq!((datagram.len(), datagram[0]), (64, 3));
                        cookies += 1;
                    }
                    _ => other += 1,
                }
            }
        }
        (cookies, other)
    };
    let (cookies, unknown) = flood(&mut net, 40);
    assert!(cookies >= 25, "cookies={cookies}");
    assert!(
        unknown >= 5,
        "the first initiations are processed (unknown peer)"
    );
    assert_eq!(net.edge.counters().cookie_replies, cookies as u64);

    // The real client, still under load: its first initiation gets a cookie reply ...
    net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", 1));
    assert!(net.delivered.is_empty());
    assert_eq!(net.edge.counters().cookie_replies, cookies as u64 + 1);
    // ... and its retry after REKEY_TIMEOUT carries mac2, which passes while the flood goes on.
    net.advance(Duration::from_secs(6));
    let _ = net.edge.on_timer(net.now);
    let _ = flood(&mut net, 30);
    let TunnResult::WriteToNetwork(retry) = net.client.update_timers(&mut buf) else {
        panic!("retry expected")
    };
    let retry = retry.to_vec();
    net.pump(vec![retry]);
    assert_eq!(net.counters().handshakes, 1, "drops: {:?}", net.drops);
    assert_eq!(net.delivered.len(), 1, "the queued ping went through");
}

/// Runs a session for `minutes` of simulated time, one step per second, the client pinging
/// every `every` seconds and the LAN answering each delivered ping. Returns (pings, answered,
/// edge handshakes).
fn run_session(minutes: u64, every: u64) -> (u64, u64, u64) {
    let mut net = Net::connected();
    let mut sent = 0u64;
    let mut answered = 0u64;
    for second in 1..=minutes * 60 {
        net.advance(Duration::from_secs(1));
        net.tick();
        if second % every == 0 {
            sent += 1;
            let seq = u16::try_from(sent % 65_536).unwrap_or(0);
            let before_rx = net.client_rx.len();
            net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", seq));
            let delivered: Vec<Vec<u8>> = net.delivered.drain(..).collect();
            for _ in delivered {
                net.edge_send(&icmp_reply("10.10.1.1", CLIENT_TUN, seq));
            }
            if net.client_rx.len() > before_rx {
                answered += 1;
            } else {
                eprintln!(
                    "second {second}: ping {seq} not answered; drops {:?}",
                    net.drops
                );
            }
        }
    }
    let handshakes = net.counters().handshakes;
    eprintln!(
        "session {minutes} min, ping every {every} s: sent={sent} answered={answered} handshakes={handshakes}"
    );
    (sent, answered, handshakes)
}

#[test]
fn session_survives_ten_rekeys_in_simulated_time() {
    // REKEY_AFTER_TIME is 120 s: 20 minutes is about ten rekeys initiated by the client.
    let (sent, answered, handshakes) = run_session(20, 1);
    assert_eq!(answered, sent, "every ping answered");
    assert!(handshakes >= 10, "handshakes={handshakes}");
}

#[test]
fn sparse_traffic_survives_rekeys_without_deaf_windows() {
    // A ping every 7 s: the pattern of upstream issue 495 (deaf 15-30 s after a handshake)
    // would show as unanswered pings.
    let (sent, answered, handshakes) = run_session(20, 7);
    assert_eq!(answered, sent, "every ping answered");
    assert!(handshakes >= 9, "handshakes={handshakes}");
}

#[test]
fn rule_changes_apply_to_a_live_session() {
    let mut net = Net::connected();
    assert!(net.edge.set_rules(net.peer, &[]));
    net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", 1));
    assert!(net.delivered.is_empty());
    assert_eq!(net.drops, vec![(Some(net.peer), DropCause::AclDenied)]);
    assert!(net.edge.set_rules(net.peer, &rules()));
    net.client_send(&icmp_echo(CLIENT_TUN, "10.10.1.1", 2));
    assert_eq!(net.delivered.len(), 1);
}

fn ipv6_packet(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (ip(src), ip(dst)) else {
        panic!("v6 only")
    };
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(payload.len()).expect("small").to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(payload);
    p
}

#[test]
fn ipv6_inner_traffic_is_checked_the_same_way() {
    let rules = vec![
        "icmp:[fd10::/64]".parse().expect("rule"),
        "tcp:[fd10::/64]:443".parse().expect("rule"),
    ];
    let mut net = Net::with_peer(100, ip("fd00::2"), rules);
    let echo = ipv6_packet("fd00::2", "fd10::1", 58, &[128, 0, 0, 0, 0, 1, 0, 1]);
    net.client_send(&echo);
    assert_eq!(net.delivered, vec![echo]);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&22u16.to_be_bytes());
    net.client_send(&ipv6_packet("fd00::2", "fd10::1", 6, &tcp)); // port 22: denied
    net.client_send(&ipv6_packet("fd00::2", "fd20::1", 58, &[128, 0, 0, 0])); // network
    net.client_send(&ipv6_packet("fd00::3", "fd10::1", 58, &[128, 0, 0, 0])); // spoofed
    assert_eq!(
        net.drops,
        vec![
            (Some(net.peer), DropCause::AclDenied),
            (Some(net.peer), DropCause::AclDenied),
            (Some(net.peer), DropCause::SpoofedSource),
        ]
    );
    net.edge_send(&ipv6_packet(
        "fd10::1",
        "fd00::2",
        58,
        &[129, 0, 0, 0, 0, 1, 0, 1],
    ));
    assert_eq!(net.client_rx.len(), 1);
}

#[test]
fn edge_initiates_a_handshake_when_the_session_expired() {
    let mut net = Net::connected();
    // Quiet for longer than REJECT_AFTER_TIME (180 s): both sides drop the session keys.
    for _ in 0..200 {
        net.advance(Duration::from_secs(1));
        net.tick();
    }
    let handshakes = net.counters().handshakes;
    // A reply from the LAN now needs a new session: the edge initiates towards the last
    // endpoint, queues the packet, and sends it once the client has responded.
    let reply = icmp_reply("10.10.1.1", CLIENT_TUN, 7);
    net.edge_send(&reply);
    assert_eq!(net.client_rx, vec![reply], "drops: {:?}", net.drops);
    assert_eq!(net.counters().handshakes, handshakes + 1);
}
