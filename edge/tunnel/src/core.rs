//! The tunnel core: a peer table over boringtun `Tunn`s, datagrams in, actions out.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use sase_model::tunnel::TunnelAclRule;
use serde::Serialize;

use crate::acl::Acl;
use crate::packet::{self, PacketError, WgHeader, MSG_DATA, MSG_HANDSHAKE_RESP};

/// Largest inner packet handled, plus WireGuard's data overhead (and never below the 148
/// bytes of a handshake initiation).
const BUF_LEN: usize = 65_535 + 32;
/// boringtun uses `index << 8` as a peer's session-index base, so peer indices have 24 bits.
const MAX_PEER_INDEX: u32 = (1 << 24) - 1;

/// Identifies a peer in the table: its boringtun index, which is also the upper 24 bits of
/// every receiver index its sessions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PeerId(pub u32);

/// Settings of the core itself.
#[derive(Clone)]
pub struct TunnelConfig {
    /// The edge's static private key (X25519).
    pub private_key: [u8; 32],
    /// Handshake messages per second (all peers together) above which handshakes must carry
    /// a valid cookie (mac2): beyond it, initiations get cookie replies instead of responses.
    /// The shared limiter is built with twice this budget because a handshake from a known
    /// peer is checked twice (front check, then inside its `Tunn`); initiations from unknown
    /// keys are checked once, so they meet the cookie requirement at up to twice this rate.
    pub handshake_rate_limit: u64,
}

/// One remote peer: its key, its tunnel address and the rules of its identity.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's static public key.
    pub public_key: [u8; 32],
    /// Optional preshared key.
    pub preshared_key: Option<[u8; 32]>,
    /// The one inner source address the peer may use (its assigned tunnel address).
    pub tunnel_addr: IpAddr,
    /// What the peer's identity may reach (default deny).
    pub rules: Vec<TunnelAclRule>,
    /// Keepalive interval in seconds, if the edge should send them.
    pub persistent_keepalive: Option<u16>,
    /// A known endpoint (normally learned from the peer's first authenticated datagram).
    pub endpoint: Option<SocketAddr>,
}

/// Why a datagram or packet was dropped; counted per peer (or globally when no peer is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCause {
    /// Not a WireGuard message (bad type, reserved bits, size).
    Malformed,
    /// A handshake whose mac1 is not keyed to our public key.
    BadMac,
    /// A handshake initiation that does not decrypt with our key.
    BadHandshake,
    /// A valid handshake from a public key not in the peer table.
    UnknownPeer,
    /// A message for a receiver index that belongs to no peer.
    UnknownIndex,
    /// A handshake initiation whose timestamp is not newer than the last one (replay).
    HandshakeReplay,
    /// A handshake refused while under load and without an address to send a cookie to.
    UnderLoad,
    /// A data message that does not authenticate.
    DecryptFailed,
    /// A data message with a counter already seen or too old (replay).
    DataReplay,
    /// A data message for a session that no longer exists.
    NoSession,
    /// A response or cookie reply we did not expect.
    Unexpected,
    /// The decrypted packet's source is not the peer's tunnel address.
    SpoofedSource,
    /// The ACL of the peer's identity does not allow the packet.
    AclDenied,
    /// The decrypted (or TUN) packet is not a well-formed IPv4/IPv6 packet.
    BadInnerPacket,
    /// A non-initial IP fragment (no transport header to check).
    Fragment,
    /// A packet from the TUN side whose destination is no peer's tunnel address.
    NoRoute,
    /// A packet for a peer whose endpoint is not known yet.
    NoEndpoint,
    /// The peer's session expired (no handshake for too long).
    Expired,
    /// Any other error reported by boringtun.
    Other,
}

impl DropCause {
    fn from_wg(e: &WireGuardError) -> DropCause {
        match e {
            WireGuardError::InvalidMac => DropCause::BadMac,
            WireGuardError::WrongTai64nTimestamp => DropCause::HandshakeReplay,
            WireGuardError::InvalidTai64nTimestamp
            | WireGuardError::WrongKey
            | WireGuardError::WrongIndex => DropCause::BadHandshake,
            WireGuardError::InvalidAeadTag => DropCause::DecryptFailed,
            WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => {
                DropCause::DataReplay
            }
            WireGuardError::NoCurrentSession => DropCause::NoSession,
            WireGuardError::UnexpectedPacket => DropCause::Unexpected,
            WireGuardError::InvalidPacket
            | WireGuardError::IncorrectPacketLength
            | WireGuardError::WrongPacketType => DropCause::Malformed,
            WireGuardError::UnderLoad => DropCause::UnderLoad,
            WireGuardError::ConnectionExpired => DropCause::Expired,
            WireGuardError::DestinationBufferTooSmall | WireGuardError::LockFailed => {
                DropCause::Other
            }
        }
    }
}

/// What the shell must do after feeding the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this datagram to the network.
    Send {
        /// Destination (the peer's endpoint, or the sender of a handshake).
        to: SocketAddr,
        /// The WireGuard message.
        datagram: Vec<u8>,
    },
    /// Deliver this decrypted inner packet to the LAN/TUN side: it passed the allowed-IP check
    /// and the peer's ACL.
    Deliver {
        /// The peer it came from.
        peer: PeerId,
        /// The inner IP packet.
        packet: Vec<u8>,
    },
    /// Nothing goes anywhere, for this reason.
    Drop {
        /// The peer concerned, when known.
        peer: Option<PeerId>,
        /// Why.
        cause: DropCause,
    },
}

/// Counters of one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// Inner bytes delivered from the peer.
    pub rx_bytes: u64,
    /// Inner packets delivered from the peer.
    pub rx_packets: u64,
    /// Inner bytes sent to the peer.
    pub tx_bytes: u64,
    /// Inner packets sent to the peer.
    pub tx_packets: u64,
    /// Completed handshakes (as responder or initiator).
    pub handshakes: u64,
    /// Dropped datagrams or packets, by cause.
    pub drops: BTreeMap<DropCause, u64>,
}

/// Counters not attributable to a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GlobalCounters {
    /// Cookie replies sent because handshakes came faster than the rate limit.
    pub cookie_replies: u64,
    /// Dropped datagrams with no known peer, by cause.
    pub drops: BTreeMap<DropCause, u64>,
}

/// Why a peer could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The public key is already in the table.
    #[error("a peer with this public key exists")]
    DuplicateKey,
    /// The tunnel address is already assigned to another peer.
    #[error("tunnel address {0} is already assigned")]
    DuplicateAddress(IpAddr),
    /// All 2^24 - 1 peer indices are in use.
    #[error("no free peer index")]
    NoFreeIndex,
}

struct Peer {
    tunn: Box<Tunn>,
    public_key: [u8; 32],
    tunnel_addr: IpAddr,
    acl: Acl,
    endpoint: Option<SocketAddr>,
    last_handshake: Option<Instant>,
    counters: PeerCounters,
}

/// The tunnel core: every peer of one edge listener. See the crate documentation.
pub struct Tunnel {
    private: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    peers: BTreeMap<u32, Peer>,
    by_key: HashMap<[u8; 32], u32>,
    by_addr: HashMap<IpAddr, u32>,
    next_index: u32,
    counters: GlobalCounters,
    last_limiter_reset: Option<Instant>,
    buf: Vec<u8>,
}

impl Tunnel {
    /// A core with no peers.
    pub fn new(config: TunnelConfig) -> Tunnel {
        let private = StaticSecret::from(config.private_key);
        let public = PublicKey::from(&private);
        // Every handshake message that reaches a `Tunn` is checked twice against this shared
        // limiter (once here to find the peer, once inside `Tunn::decapsulate`), so it counts
        // twice: double the configured limit.
        let limiter = Arc::new(RateLimiter::new(
            &public,
            config.handshake_rate_limit.saturating_mul(2),
        ));
        Tunnel {
            private,
            public,
            limiter,
            peers: BTreeMap::new(),
            by_key: HashMap::new(),
            by_addr: HashMap::new(),
            next_index: 1,
            counters: GlobalCounters::default(),
            last_limiter_reset: None,
            buf: vec![0; BUF_LEN],
        }
    }

    /// The edge's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// Adds a peer; its ACL is compiled now.
    pub fn add_peer(&mut self, config: PeerConfig) -> Result<PeerId, TunnelError> {
        if self.by_key.contains_key(&config.public_key) {
            return Err(TunnelError::DuplicateKey);
        }
        if self.by_addr.contains_key(&config.tunnel_addr) {
            return Err(TunnelError::DuplicateAddress(config.tunnel_addr));
        }
        let index = self.free_index()?;
        let tunn = Tunn::new(
            self.private.clone(),
            PublicKey::from(config.public_key),
            config.preshared_key,
            config.persistent_keepalive,
            index,
            Some(Arc::clone(&self.limiter)),
        );
        self.peers.insert(
            index,
            Peer {
                tunn: Box::new(tunn),
                public_key: config.public_key,
                tunnel_addr: config.tunnel_addr,
                acl: Acl::compile(&config.rules),
                endpoint: config.endpoint,
                last_handshake: None,
                counters: PeerCounters::default(),
            },
        );
        self.by_key.insert(config.public_key, index);
        self.by_addr.insert(config.tunnel_addr, index);
        Ok(PeerId(index))
    }

    fn free_index(&mut self) -> Result<u32, TunnelError> {
        for _ in 0..MAX_PEER_INDEX {
            let candidate = self.next_index;
            self.next_index = if candidate >= MAX_PEER_INDEX {
                1
            } else {
                candidate + 1
            };
            if !self.peers.contains_key(&candidate) {
                return Ok(candidate);
            }
        }
        Err(TunnelError::NoFreeIndex)
    }

    /// Removes a peer and all its session state; its datagrams are dropped from now on.
    pub fn remove_peer(&mut self, public_key: &[u8; 32]) -> Option<PeerId> {
        let index = self.by_key.remove(public_key)?;
        if let Some(peer) = self.peers.remove(&index) {
            self.by_addr.remove(&peer.tunnel_addr);
        }
        Some(PeerId(index))
    }

    /// Replaces the ACL of a peer (e.g. after a policy change). Returns false if unknown.
    pub fn set_rules(&mut self, peer: PeerId, rules: &[TunnelAclRule]) -> bool {
        match self.peers.get_mut(&peer.0) {
            Some(p) => {
                p.acl = Acl::compile(rules);
                true
            }
            None => false,
        }
    }

    /// The peer holding a public key.
    pub fn peer_by_key(&self, public_key: &[u8; 32]) -> Option<PeerId> {
        self.by_key.get(public_key).map(|i| PeerId(*i))
    }

    /// The counters of a peer.
    pub fn peer_counters(&self, peer: PeerId) -> Option<&PeerCounters> {
        self.peers.get(&peer.0).map(|p| &p.counters)
    }

    /// The endpoint last authenticated for a peer.
    pub fn peer_endpoint(&self, peer: PeerId) -> Option<SocketAddr> {
        self.peers.get(&peer.0).and_then(|p| p.endpoint)
    }

    /// When the last handshake with a peer completed (by the injected clock).
    pub fn last_handshake(&self, peer: PeerId) -> Option<Instant> {
        self.peers.get(&peer.0).and_then(|p| p.last_handshake)
    }

    /// The public key of a peer.
    pub fn peer_public_key(&self, peer: PeerId) -> Option<[u8; 32]> {
        self.peers.get(&peer.0).map(|p| p.public_key)
    }

    /// Counters of datagrams no peer could be found for.
    pub fn counters(&self) -> &GlobalCounters {
        &self.counters
    }

    fn drop_global(&mut self, cause: DropCause) -> Vec<Action> {
        *self.counters.drops.entry(cause).or_default() += 1;
        tracing::trace!(?cause, "tunnel: datagram dropped");
        vec![Action::Drop { peer: None, cause }]
    }

    /// A UDP datagram arrived from `from`.
    pub fn on_udp(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) -> Vec<Action> {
        match packet::parse_wg_header(datagram) {
            None => self.drop_global(DropCause::Malformed),
            Some(WgHeader::HandshakeInit) => self.on_handshake_init(from, datagram, now),
            Some(WgHeader::ToIndex { receiver_index, .. }) => {
                let index = receiver_index >> 8;
                if self.peers.contains_key(&index) {
                    self.decapsulate(index, from, datagram, now)
                } else {
                    self.drop_global(DropCause::UnknownIndex)
                }
            }
        }
    }

    fn on_handshake_init(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Vec<Action> {
        // mac1 (keyed to our public key) and, under load, mac2 or a cookie reply.
        let verified = self
            .limiter
            .verify_packet(Some(from.ip()), datagram, &mut self.buf);
        let init = match verified {
            Ok(Packet::HandshakeInit(init)) => init,
            Ok(_) => return self.drop_global(DropCause::Malformed),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let datagram = cookie.to_vec();
                self.counters.cookie_replies += 1;
                return vec![Action::Send { to: from, datagram }];
            }
            Err(TunnResult::Err(e)) => return self.drop_global(DropCause::from_wg(&e)),
            Err(_) => return self.drop_global(DropCause::Other),
        };
        let half = match parse_handshake_anon(&self.private, &self.public, &init) {
            Ok(half) => half,
            Err(_) => return self.drop_global(DropCause::BadHandshake),
        };
        match self.by_key.get(&half.peer_static_public) {
            Some(&index) => self.decapsulate(index, from, datagram, now),
            None => self.drop_global(DropCause::UnknownPeer),
        }
    }

    fn decapsulate(
        &mut self,
        index: u32,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Vec<Action> {
        let Some(peer) = self.peers.get_mut(&index) else {
            return self.drop_global(DropCause::UnknownIndex);
        };
        let id = PeerId(index);
        let kind = packet::parse_wg_header(datagram);
        let is_handshake = matches!(
            kind,
            Some(WgHeader::HandshakeInit)
                | Some(WgHeader::ToIndex {
                    kind: MSG_HANDSHAKE_RESP,
                    ..
                })
        );
        let mut actions = Vec::new();
        match peer
            .tunn
            .decapsulate(Some(from.ip()), datagram, &mut self.buf)
        {
            TunnResult::Done => {
                if matches!(kind, Some(WgHeader::ToIndex { kind: MSG_DATA, .. })) {
                    // An authenticated keepalive.
                    peer.endpoint = Some(from);
                }
                if is_handshake {
                    peer.endpoint = Some(from);
                    peer.last_handshake = Some(now);
                    peer.counters.handshakes += 1;
                }
            }
            TunnResult::Err(e) => {
                let cause = match (&e, kind) {
                    // boringtun's own check of a decrypted packet (not IPv4/IPv6, bad length).
                    (
                        WireGuardError::InvalidPacket,
                        Some(WgHeader::ToIndex { kind: MSG_DATA, .. }),
                    ) => DropCause::BadInnerPacket,
                    _ => DropCause::from_wg(&e),
                };
                *peer.counters.drops.entry(cause).or_default() += 1;
                tracing::trace!(peer = index, ?cause, "tunnel: datagram dropped");
                return vec![Action::Drop {
                    peer: Some(id),
                    cause,
                }];
            }
            TunnResult::WriteToNetwork(out) => {
                let out_kind = out.first().copied().map(u32::from);
                if is_handshake && matches!(out_kind, Some(MSG_HANDSHAKE_RESP) | Some(MSG_DATA)) {
                    // Our response to an initiation, or the keepalive that confirms a
                    // response to our initiation: a new session exists.
                    peer.endpoint = Some(from);
                    peer.last_handshake = Some(now);
                    peer.counters.handshakes += 1;
                } else if out_kind == Some(packet::MSG_COOKIE_REPLY) {
                    // The `Tunn`'s own look at the shared limiter found us under load.
                    self.counters.cookie_replies += 1;
                } else {
                    peer.endpoint = Some(from);
                }
                actions.push(Action::Send {
                    to: from,
                    datagram: out.to_vec(),
                });
                // Packets queued while there was no session go out now.
                while let TunnResult::WriteToNetwork(out) =
                    peer.tunn.decapsulate(None, &[], &mut self.buf)
                {
                    actions.push(Action::Send {
                        to: from,
                        datagram: out.to_vec(),
                    });
                }
            }
            TunnResult::WriteToTunnelV4(inner, _) | TunnResult::WriteToTunnelV6(inner, _) => {
                peer.endpoint = Some(from);
                let verdict = check_from_peer(peer, inner);
                actions.push(match verdict {
                    Ok(()) => {
                        peer.counters.rx_packets += 1;
                        peer.counters.rx_bytes += inner.len() as u64;
                        Action::Deliver {
                            peer: id,
                            packet: inner.to_vec(),
                        }
                    }
                    Err(cause) => {
                        *peer.counters.drops.entry(cause).or_default() += 1;
                        tracing::trace!(peer = index, ?cause, "tunnel: inner packet dropped");
                        Action::Drop {
                            peer: Some(id),
                            cause,
                        }
                    }
                });
            }
        }
        actions
    }

    /// An inner packet from the LAN/TUN side, to be sent to the peer whose tunnel address is its
    /// destination (if the peer's ACL allows it as a reply from an allowed resource).
    pub fn on_tun(&mut self, inner: &[u8], _now: Instant) -> Vec<Action> {
        let Some(dst) = packet::dst_address(inner) else {
            return self.drop_global(DropCause::BadInnerPacket);
        };
        let Some(&index) = self.by_addr.get(&dst) else {
            return self.drop_global(DropCause::NoRoute);
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            return self.drop_global(DropCause::NoRoute);
        };
        let id = PeerId(index);
        let verdict = match packet::parse_ip(inner) {
            Ok(p) if peer.acl.allows_reply(&p) => Ok(()),
            Ok(_) => Err(DropCause::AclDenied),
            Err(PacketError::Fragment) => Err(DropCause::Fragment),
            Err(PacketError::Malformed) => Err(DropCause::BadInnerPacket),
        };
        let verdict = verdict.and_then(|()| peer.endpoint.ok_or(DropCause::NoEndpoint));
        let to = match verdict {
            Ok(to) => to,
            Err(cause) => {
                *peer.counters.drops.entry(cause).or_default() += 1;
                return vec![Action::Drop {
                    peer: Some(id),
                    cause,
                }];
            }
        };
        if inner.len() + 32 > self.buf.len() {
            *peer
                .counters
                .drops
                .entry(DropCause::BadInnerPacket)
                .or_default() += 1;
            return vec![Action::Drop {
                peer: Some(id),
                cause: DropCause::BadInnerPacket,
            }];
        }
        match peer.tunn.encapsulate(inner, &mut self.buf) {
            TunnResult::WriteToNetwork(out) => {
                if out.first().copied().map(u32::from) == Some(MSG_DATA) {
                    peer.counters.tx_packets += 1;
                    peer.counters.tx_bytes += inner.len() as u64;
                }
                vec![Action::Send {
                    to,
                    datagram: out.to_vec(),
                }]
            }
            TunnResult::Err(e) => {
                let cause = DropCause::from_wg(&e);
                *peer.counters.drops.entry(cause).or_default() += 1;
                vec![Action::Drop {
                    peer: Some(id),
                    cause,
                }]
            }
            // Queued until a handshake completes.
            _ => Vec::new(),
        }
    }

    /// Drives timers: rekeys, keepalives, handshake retries, session expiry, and the rate
    /// limiter's per-second budget. Call it often (every 100-250 ms).
    ///
    /// boringtun reads its own monotonic clock for its timers (see the crate docs); `now` is
    /// used for the core's own bookkeeping.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        if self
            .last_limiter_reset
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.limiter.reset_count();
            self.last_limiter_reset = Some(now);
        }
        let mut actions = Vec::new();
        for (&index, peer) in self.peers.iter_mut() {
            match peer.tunn.update_timers(&mut self.buf) {
                TunnResult::WriteToNetwork(out) => match peer.endpoint {
                    Some(to) => actions.push(Action::Send {
                        to,
                        datagram: out.to_vec(),
                    }),
                    None => {
                        *peer
                            .counters
                            .drops
                            .entry(DropCause::NoEndpoint)
                            .or_default() += 1;
                    }
                },
                TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
                TunnResult::Err(e) => {
                    tracing::debug!(peer = index, error = ?e, "tunnel: timer error");
                }
                TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
            }
        }
        actions
    }

    /// Whether the peer has a live session (boringtun's view).
    pub fn has_session(&self, peer: PeerId) -> bool {
        self.peers
            .get(&peer.0)
            .is_some_and(|p| p.tunn.stats().0.is_some())
    }
}

/// The allowed-IP check and the ACL for a packet decrypted from `peer`.
fn check_from_peer(peer: &Peer, inner: &[u8]) -> Result<(), DropCause> {
    let p = match packet::parse_ip(inner) {
        Ok(p) => p,
        Err(PacketError::Fragment) => return Err(DropCause::Fragment),
        Err(PacketError::Malformed) => return Err(DropCause::BadInnerPacket),
    };
    if p.src != peer.tunnel_addr {
        return Err(DropCause::SpoofedSource);
    }
    if !peer.acl.allows_outbound(&p) {
        return Err(DropCause::AclDenied);
    }
    Ok(())
}
