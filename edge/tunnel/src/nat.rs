//! Destination NAT of tunnel TCP flows to `http` resources onto the edge's tunnel listener, so
//! that HTTP from a tunnel passes the WAF + gateway pipeline with the tunnel identity as the
//! principal — without nftables, so the edge needs no privilege at run time.
//!
//! The tunnel shell calls [`Nat::inbound`] on every decrypted packet that passed the peer's
//! ACL, before it is written to the TUN device, and [`Nat::outbound`] on every packet read from
//! the TUN device, before it is encrypted:
//!
//! * inbound, a TCP/IPv4 packet to one of the [`Nat::set_targets`] addresses (the `ip:port` of
//!   a plain-HTTP resource upstream) gets its destination rewritten to the listener
//!   (`tunnel address:port` of the edge) and a mapping `(client address, client port) →
//!   original destination` is recorded (or refreshed);
//! * outbound, a TCP/IPv4 packet from the listener to a mapped `(address, port)` gets its
//!   source rewritten back to the original destination, so the client sees the resource
//!   answer;
//! * the listener asks [`Nat::original_destination`] which resource a connection was meant for.
//!
//! Checksums (IPv4 header and TCP, whose pseudo-header covers the addresses) are updated
//! incrementally (RFC 1624), never recomputed over the payload. The table is bounded
//! ([`NatConfig::max_entries`]; a new flow beyond it is refused and counted); an entry ends on
//! RST, a short linger after FINs from both sides, or when idle. Nothing here does I/O or reads
//! a clock (`now` is passed in); malformed packets are left untouched, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Settings of the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatConfig {
    /// The tunnel listener flows are redirected to (an address of the edge on the TUN device).
    pub listener: SocketAddrV4,
    /// Most flows tracked at once; a new flow beyond this is refused.
    pub max_entries: usize,
    /// A flow with no packet for this long is forgotten.
    pub idle: Duration,
    /// How long a flow is kept after FINs from both sides (its last ACKs still need
    /// translating).
    pub linger: Duration,
}

impl NatConfig {
    /// Defaults for `listener`: 65,536 flows, 5 minutes idle, 10 s linger.
    pub fn new(listener: SocketAddrV4) -> NatConfig {
        NatConfig {
            listener,
            max_entries: 65_536,
            idle: Duration::from_secs(300),
            linger: Duration::from_secs(10),
        }
    }
}

/// What [`Nat::inbound`] / [`Nat::outbound`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatOutcome {
    /// Not a packet of a redirected flow: pass it on as it is.
    Untouched,
    /// Addresses rewritten in place: pass it on.
    Rewritten,
    /// A new flow while the table is full: drop the packet.
    TableFull,
}

/// Counters of the NAT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NatCounters {
    /// Packets from tunnels rewritten to the listener.
    pub inbound: u64,
    /// Packets from the listener rewritten back.
    pub outbound: u64,
    /// Flows recorded.
    pub flows: u64,
    /// New flows refused because the table was full.
    pub table_full: u64,
    /// Flows forgotten (RST, FIN linger over, idle).
    pub expired: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    original: SocketAddrV4,
    last: Instant,
    client_fin: bool,
    server_fin: bool,
    /// Set once the flow is over (RST, or FINs both ways): forgotten after the linger.
    closing_since: Option<Instant>,
}

/// The mapping table. See the module documentation.
#[derive(Debug)]
pub struct Nat {
    config: NatConfig,
    /// Redirected destinations and the resource each belongs to.
    targets: BTreeMap<SocketAddrV4, String>,
    entries: HashMap<SocketAddrV4, Entry>,
    counters: NatCounters,
}

const TCP: u8 = 6;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const SYN: u8 = 0x02;

/// The offsets of one TCP/IPv4 packet, checked against its length.
struct Tcp4 {
    ihl: usize,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
}

fn parse_tcp4(p: &[u8]) -> Option<Tcp4> {
    let h = p.get(0..20)?;
    if h[0] >> 4 != 4 || h[9] != TCP {
        return None;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if ihl < 20 || total > p.len() || total < ihl + 20 {
        return None;
    }
    // Fragments (offset or more-fragments set) are not rewritten.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    let t = p.get(ihl..ihl + 20)?;
    let ip = |o: usize| Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]);
    Some(Tcp4 {
        ihl,
        src: SocketAddrV4::new(ip(12), u16::from_be_bytes([t[0], t[1]])),
        dst: SocketAddrV4::new(ip(16), u16::from_be_bytes([t[2], t[3]])),
        flags: t[13],
    })
}

/// One's complement sum of 16-bit words (odd trailing byte padded with zero).
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum `check` after the words `old` were replaced by `new` (RFC 1624, eqn. 3:
/// `HC' = ~(~HC + ~m + m')`).
fn adjust(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let not_old: u32 = old
        .chunks(2)
        .map(|c| u32::from(!u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    !fold(u32::from(!check) + not_old + sum16(new))
}

fn read16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn write16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites the source (`dst_side == false`) or destination address and port of a parsed
/// TCP/IPv4 packet, adjusting both checksums.
fn rewrite(p: &mut [u8], t: &Tcp4, dst_side: bool, to: SocketAddrV4) {
    let (ip_at, port_at) = if dst_side {
        (16, t.ihl + 2)
    } else {
        (12, t.ihl)
    };
    let old_ip: [u8; 4] = [p[ip_at], p[ip_at + 1], p[ip_at + 2], p[ip_at + 3]];
    let new_ip = to.ip().octets();
    let old_port = read16(p, port_at).to_be_bytes();
    let new_port = to.port().to_be_bytes();
    p[ip_at..ip_at + 4].copy_from_slice(&new_ip);
    write16(p, port_at, to.port());
    let ip_check = adjust(read16(p, 10), &old_ip, &new_ip);
    write16(p, 10, ip_check);
    let tcp_check_at = t.ihl + 16;
    let mut old = [0u8; 6];
    old[..4].copy_from_slice(&old_ip);
    old[4..].copy_from_slice(&old_port);
    let mut new = [0u8; 6];
    new[..4].copy_from_slice(&new_ip);
    new[4..].copy_from_slice(&new_port);
    let tcp_check = adjust(read16(p, tcp_check_at), &old, &new);
    write16(p, tcp_check_at, tcp_check);
}

impl Nat {
    /// An empty table redirecting to `config.listener`, with no targets yet.
    pub fn new(config: NatConfig) -> Nat {
        Nat {
            config,
            targets: BTreeMap::new(),
            entries: HashMap::new(),
            counters: NatCounters::default(),
        }
    }

    /// The listener flows are redirected to.
    pub fn listener(&self) -> SocketAddrV4 {
        self.config.listener
    }

    /// Sets the redirected destinations (`ip:port` → resource name). Flows already mapped keep
    /// their mapping until they end (the listener refuses requests to a resource that is gone).
    pub fn set_targets(&mut self, targets: BTreeMap<SocketAddrV4, String>) {
        self.targets = targets;
    }

    /// Whether `addr` is a redirected destination.
    pub fn is_target(&self, addr: SocketAddrV4) -> bool {
        self.targets.contains_key(&addr)
    }

    /// The resource a redirected destination belongs to.
    pub fn resource_of(&self, addr: SocketAddrV4) -> Option<&str> {
        self.targets.get(&addr).map(String::as_str)
    }

    /// The destination the client `client` (tunnel address and port) connected to, while its
    /// flow is mapped.
    pub fn original_destination(&self, client: SocketAddrV4) -> Option<SocketAddrV4> {
        self.entries.get(&client).map(|e| e.original)
    }

    /// Flows mapped now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no flow is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counters.
    pub fn counters(&self) -> NatCounters {
        self.counters
    }

    /// A decrypted packet from a tunnel, on its way to the TUN device: rewritten to the
    /// listener when it belongs to a redirected flow.
    pub fn inbound(&mut self, packet: &mut [u8], now: Instant) -> NatOutcome {
        let Some(t) = parse_tcp4(packet) else {
            return NatOutcome::Untouched;
        };
        let key = t.src;
        let known = self.entries.get(&key).is_some_and(|e| {
            e.original == t.dst && e.closing_since.is_none_or(|_| t.flags & SYN == 0)
        });
        if !known {
            if !self.targets.contains_key(&t.dst) {
                return NatOutcome::Untouched;
            }
            if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_entries {
                self.expire(now);
                if self.entries.len() >= self.config.max_entries {
                    self.counters.table_full += 1;
                    return NatOutcome::TableFull;
                }
            }
            self.entries.insert(
                key,
                Entry {
                    original: t.dst,
                    last: now,
                    client_fin: false,
                    server_fin: false,
                    closing_since: None,
                },
            );
            self.counters.flows += 1;
        }
        if let Some(e) = self.entries.get_mut(&key) {
            e.last = now;
            e.client_fin |= t.flags & FIN != 0;
            if (t.flags & RST != 0 || (e.client_fin && e.server_fin)) && e.closing_since.is_none() {
                e.closing_since = Some(now);
            }
        }
        rewrite(packet, &t, true, self.config.listener);
        self.counters.inbound += 1;
        NatOutcome::Rewritten
    }

    /// A packet read from the TUN device, on its way into a tunnel: the listener's answers on
    /// a mapped flow get the original destination back as their source.
    pub fn outbound(&mut self, packet: &mut [u8], now: Instant) -> NatOutcome {
        let Some(t) = parse_tcp4(packet) else {
            return NatOutcome::Untouched;
        };
        if t.src != self.config.listener {
            return NatOutcome::Untouched;
        }
        let Some(e) = self.entries.get_mut(&t.dst) else {
            return NatOutcome::Untouched;
        };
        e.last = now;
        e.server_fin |= t.flags & FIN != 0;
        if (t.flags & RST != 0 || (e.client_fin && e.server_fin)) && e.closing_since.is_none() {
            e.closing_since = Some(now);
        }
        let original = e.original;
        rewrite(packet, &t, false, original);
        self.counters.outbound += 1;
        NatOutcome::Rewritten
    }

    /// Forgets flows that ended (RST or FINs both ways, after the linger) or went idle.
    pub fn expire(&mut self, now: Instant) {
        let (idle, linger) = (self.config.idle, self.config.linger);
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            let ended = e
                .closing_since
                .is_some_and(|t| now.saturating_duration_since(t) >= linger);
            !ended && now.saturating_duration_since(e.last) < idle
        });
        self.counters.expired += (before - self.entries.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng as _};

    const LISTENER: &str = "100.96.0.1:8443";
    const CLIENT: &str = "100.96.0.2:40000";
    const TARGET: &str = "10.77.0.10:8080";

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("address")
    }

    /// A TCP/IPv4 packet with correct checksums, computed in full.
    fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, payload: &[u8]) -> Vec<u8> {
        let total = 40 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&src.ip().octets());
        p[16..20].copy_from_slice(&dst.ip().octets());
        p[20..22].copy_from_slice(&src.port().to_be_bytes());
        p[22..24].copy_from_slice(&dst.port().to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&1024u16.to_be_bytes());
        p[40..].copy_from_slice(payload);
        fix_checksums(&mut p);
        p
    }

    fn full_checksums(p: &[u8]) -> (u16, u16) {
        let ip = !fold(sum16(&p[0..10]) + sum16(&p[12..20]));
        let tcp_len = p.len() - 20;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, TCP]);
        pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        let tcp = !fold(sum16(&pseudo) + sum16(&p[20..36]) + sum16(&p[38..]));
        (ip, tcp)
    }

    fn fix_checksums(p: &mut [u8]) {
        let (ip, tcp) = full_checksums(p);
        write16(p, 10, ip);
        write16(p, 36, tcp);
    }

    fn checksums_valid(p: &[u8]) -> bool {
        full_checksums(p) == (read16(p, 10), read16(p, 36))
    }

    fn nat() -> Nat {
        let mut nat = Nat::new(NatConfig::new(sa(LISTENER)));
        nat.set_targets([(sa(TARGET), "app".to_string())].into_iter().collect());
        nat
    }

    #[test]
    fn a_flow_to_a_target_goes_to_the_listener_and_answers_come_back_from_the_target() {
        let now = Instant::now();
        let mut nat = nat();
        let mut syn = tcp(sa(CLIENT), sa(TARGET), SYN, b"");
        assert_eq!(nat.inbound(&mut syn, now), NatOutcome::Rewritten);
        let t = parse_tcp4(&syn).expect("tcp");
        assert_eq!((t.src, t.dst), (sa(CLIENT), sa(LISTENER)));
        assert!(
            checksums_valid(&syn),
            "incremental checksums must equal full ones"
        );
        assert_eq!(nat.original_destination(sa(CLIENT)), Some(sa(TARGET)));
        assert_eq!(nat.resource_of(sa(TARGET)), Some("app"));

        let mut answer = tcp(sa(LISTENER), sa(CLIENT), SYN | 0x10, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(nat.outbound(&mut answer, now), NatOutcome::Rewritten);
        let t = parse_tcp4(&answer).expect("tcp");
        assert_eq!((t.src, t.dst), (sa(TARGET), sa(CLIENT)));
        assert!(checksums_valid(&answer));

        // Odd payload lengths keep the checksums right too.
        let mut data = tcp(
            sa(CLIENT),
            sa(TARGET),
            0x18,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n!",
        );
        assert_eq!(nat.inbound(&mut data, now), NatOutcome::Rewritten);
        assert!(checksums_valid(&data));
        assert_eq!(nat.counters().flows, 1);
        assert_eq!((nat.counters().inbound, nat.counters().outbound), (2, 1));
    }

    #[test]
    fn other_traffic_is_untouched() {
        let now = Instant::now();
        let mut nat = nat();
        for (src, dst) in [
            (CLIENT, "10.77.0.10:9090"),
            (CLIENT, "10.77.0.11:8080"),
            ("100.96.0.9:1", "100.96.0.2:40000"),
        ] {
            let mut p = tcp(sa(src), sa(dst), SYN, b"");
            let before = p.clone();
            assert_eq!(nat.inbound(&mut p, now), NatOutcome::Untouched);
            assert_eq!(p, before);
        }
        // The listener answering an unmapped client, UDP and ICMP: untouched.
        let mut p = tcp(sa(LISTENER), sa("100.96.0.3:5000"), 0x10, b"");
        assert_eq!(nat.outbound(&mut p, now), NatOutcome::Untouched);
        let mut udp = tcp(sa(CLIENT), sa(TARGET), 0, b"");
        udp[9] = 17;
        assert_eq!(nat.inbound(&mut udp, now), NatOutcome::Untouched);
        // A fragment of a flow to the target is not rewritten.
        let mut frag = tcp(sa(CLIENT), sa(TARGET), SYN, b"");
        frag[6] = 0x20;
        assert_eq!(nat.inbound(&mut frag, now), NatOutcome::Untouched);
        assert!(nat.is_empty());
    }

    #[test]
    fn flows_end_on_rst_on_fins_after_the_linger_and_when_idle() {
        let t0 = Instant::now();
        let mut nat = nat();
        let s = |n: u64| t0 + Duration::from_secs(n);
        // RST from the client: forgotten after the linger.
        let mut p = tcp(sa(CLIENT), sa(TARGET), SYN, b"");
        nat.inbound(&mut p, s(0));
        let mut p = tcp(sa(CLIENT), sa(TARGET), RST, b"");
        nat.inbound(&mut p, s(1));
        nat.expire(s(5));
        assert_eq!(nat.len(), 1, "the linger lets late packets through");
        nat.expire(s(11));
        assert!(nat.is_empty());
        // FIN both ways.
        let c2 = sa("100.96.0.2:40001");
        let mut p = tcp(c2, sa(TARGET), SYN, b"");
        nat.inbound(&mut p, s(20));
        let mut p = tcp(c2, sa(TARGET), FIN | 0x10, b"");
        nat.inbound(&mut p, s(21));
        nat.expire(s(40));
        assert_eq!(nat.len(), 1, "half-closed flows stay");
        let mut p = tcp(sa(LISTENER), c2, FIN | 0x10, b"");
        assert_eq!(nat.outbound(&mut p, s(41)), NatOutcome::Rewritten);
        nat.expire(s(52));
        assert!(nat.is_empty());
        // Idle.
        let c3 = sa("100.96.0.2:40002");
        let mut p = tcp(c3, sa(TARGET), SYN, b"");
        nat.inbound(&mut p, s(100));
        nat.expire(s(399));
        assert_eq!(nat.len(), 1);
        nat.expire(s(400));
        assert!(nat.is_empty());
        assert_eq!(nat.counters().expired, 3);
        // A new SYN on a port whose flow is closing starts a fresh flow.
        let mut p = tcp(c3, sa(TARGET), SYN, b"");
        nat.inbound(&mut p, s(500));
        let mut p = tcp(c3, sa(TARGET), RST, b"");
        nat.inbound(&mut p, s(501));
        let mut p = tcp(c3, sa(TARGET), SYN, b"");
        nat.inbound(&mut p, s(502));
        nat.expire(s(520));
        assert_eq!(nat.len(), 1, "the new flow is not closing");
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut nat = Nat::new(NatConfig {
            max_entries: 2,
            ..NatConfig::new(sa(LISTENER))
        });
        nat.set_targets([(sa(TARGET), "app".to_string())].into_iter().collect());
        for port in [1000, 1001] {
            let mut p = tcp(
                SocketAddrV4::new(*sa(CLIENT).ip(), port),
                sa(TARGET),
                SYN,
                b"",
            );
            assert_eq!(nat.inbound(&mut p, now), NatOutcome::Rewritten);
        }
        let mut p = tcp(sa(CLIENT), sa(TARGET), SYN, b"");
        assert_eq!(nat.inbound(&mut p, now), NatOutcome::TableFull);
        assert_eq!(nat.counters().table_full, 1);
        // Known flows still pass; once idle flows expire there is room again.
        let mut p = tcp(
            SocketAddrV4::new(*sa(CLIENT).ip(), 1000),
            sa(TARGET),
            0x10,
            b"",
        );
        assert_eq!(nat.inbound(&mut p, now), NatOutcome::Rewritten);
        let later = now + Duration::from_secs(301);
        let mut p = tcp(sa(CLIENT), sa(TARGET), SYN, b"");
        assert_eq!(nat.inbound(&mut p, later), NatOutcome::Rewritten);
        assert_eq!(nat.len(), 1);
    }

    #[test]
    fn malformed_packets_never_panic_and_stay_untouched() {
        let now = Instant::now();
        let mut nat = nat();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let good = tcp(sa(CLIENT), sa(TARGET), SYN, b"abc");
        for i in 0..20_000 {
            let mut p: Vec<u8> = if i % 2 == 0 {
                let n = rng.gen_range(0..80);
                (0..n).map(|_| rng.gen()).collect()
            } else {
                // Mutations of a good packet: truncated, bad lengths, bad IHL.
                let mut p = good.clone();
                let at = rng.gen_range(0..p.len());
                p[at] = rng.gen();
                p.truncate(rng.gen_range(0..=p.len()));
                p
            };
            let _ = nat.inbound(&mut p, now);
            let _ = nat.outbound(&mut p, now);
        }
        for p in [&[][..], &[0x45][..], &good[..39]] {
            let mut p = p.to_vec();
            assert_eq!(nat.inbound(&mut p, now), NatOutcome::Untouched);
        }
    }
}
