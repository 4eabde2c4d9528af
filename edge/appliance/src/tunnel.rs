//! The tunnel shell: the I/O around the `sase-tunnel` core (WireGuard over boringtun).
//!
//! Off unless `--tunnel-listen` is given. Then the edge
//!
//! * binds the UDP listener and creates the TUN device (`--tunnel-device`, default `sase-tun0`)
//!   with the edge's tunnel address (`--tunnel-address`, default `100.96.0.1/16`): the kernel
//!   routes that prefix into the TUN device, so replies from the branch LAN reach the core, and
//!   routes what the core writes to the TUN device onward to the LAN (IP forwarding on);
//! * loads or creates its tunnel key (`tunnel.key` in the data dir, mode 0600; the public key is
//!   printed at start and written to `tunnel-status.json`);
//! * runs three threads: UDP datagrams → [`Tunnel::on_udp`] (decrypted packets that pass the
//!   allowed-IP check and the identity's ACL are written to the TUN device); TUN packets →
//!   [`Tunnel::on_tun`] (encrypted to the peer whose tunnel address is the destination); a
//!   100 ms timer → [`Tunnel::on_timer`] plus the status file once a second;
//! * takes its peers (public key, tunnel address, rules, and the identity bound to them:
//!   subject, groups, device, session) from the `tunnel` block of the signed policy in force
//!   and follows every new bundle at once: a removed peer's sessions are gone when the bundle
//!   is swapped in, its next datagram is dropped (`unknown_index`);
//! * sends HTTP from tunnels through the WAF + gateway pipeline without privileges at run
//!   time: decrypted TCP packets to the address and port of a plain-HTTP resource upstream are
//!   rewritten to the tunnel HTTP listener (`http`, on the tunnel address, `--tunnel-http-port`)
//!   and its answers rewritten back ([`sase_tunnel::nat`], userspace destination NAT — no
//!   nftables redirect, so no CAP_NET_ADMIN after the TUN device exists); the listener looks
//!   the client address up in the peer table (`unknown_peer` otherwise) and the proxy decides
//!   with the peer as the principal ([`sase_gateway::decide_tunnel`]);
//! * once a second feeds `/metrics` (peers with a session, bytes, handshakes, drops by cause)
//!   and writes tunnel audit events to the spool (`events`: connect, disconnect, and every
//!   `--tunnel-audit-interval` traffic and denied-flow summaries per peer).
//!
//! The core sits behind one mutex: one datagram or packet is processed at a time (see the
//! Tunnel section of docs/PERFORMANCE.md for the measurements; more queues would not help
//! before the core is sharded). Nothing here panics on network input; the core drops and
//! counts bad datagrams.
//!
//! TUN device crate: `tun-rs` (maintained, Apache-2.0, Linux multi-queue and offload, no
//! `unsafe` needed here) rather than `tun` (slower release pace, no multi-queue/offload);
//! default features off except address management.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sase_model::tunnel::{TunnelAclRule, TunnelPeer, TunnelPolicy};
use sase_tunnel::{
    Action, GlobalCounters, Nat, NatConfig, NatCounters, NatOutcome, PeerConfig, PeerCounters,
    PeerId, Tunnel, TunnelConfig,
};
use serde::Serialize;

use crate::identity::write_atomic;
use crate::policy::{ActivePolicy, PolicyHolder};
use crate::proxy::Edge;

mod events;
mod http;
pub use http::serve as serve_http;

/// Name of the edge's tunnel private key in the data dir.
pub const KEY_FILE: &str = "tunnel.key";
/// Name of the status file (counters, peers) in the data dir, rewritten once a second.
pub const STATUS_FILE: &str = "tunnel-status.json";

/// Command-line settings of the tunnel listener.
#[derive(clap::Args, Debug, Clone)]
pub struct TunnelArgs {
    /// UDP address of the WireGuard tunnel listener, e.g. 0.0.0.0:51820. The tunnel is off
    /// when this is absent.
    #[arg(long = "tunnel-listen", env = "SASE_EDGE_TUNNEL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Name of the TUN device the tunnel creates (needs root or CAP_NET_ADMIN).
    #[arg(long = "tunnel-device", default_value = "sase-tun0")]
    pub device: String,
    /// The edge's IPv4 address on the tunnel network, with the prefix the peers' addresses
    /// come from; the kernel routes that prefix into the TUN device.
    #[arg(long = "tunnel-address", default_value = "100.96.0.1/16")]
    pub address: String,
    /// MTU of the TUN device (1420 leaves room for WireGuard over IPv6).
    #[arg(long = "tunnel-mtu", default_value_t = 1420)]
    pub mtu: u16,
    /// Handshake messages per second above which initiations get cookie replies (mac2
    /// required), for all peers together.
    #[arg(long = "tunnel-handshake-rate", default_value_t = 1000)]
    pub handshake_rate: u64,
    /// TCP port of the tunnel HTTP listener, bound to the edge's tunnel address: tunnel flows
    /// to the address and port of a plain-HTTP resource upstream are redirected to it (in the
    /// shell, no nftables) and pass the WAF + gateway pipeline with the peer's identity.
    #[arg(long = "tunnel-http-port", default_value_t = 8480)]
    pub http_port: u16,
    /// Seconds between the tunnel's traffic and denied-flow audit summaries.
    #[arg(long = "tunnel-audit-interval", default_value_t = 60)]
    pub audit_interval: u64,
}

/// Who a tunnel peer is, as the policy in force says: what the tunnel HTTP listener hands to
/// the gateway as the principal and what tunnel audit events carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `tunnel|<subject>` (or `tunnel|<peer name>` for a peer without a subject).
    pub identity: String,
    /// The subject group membership is checked against (the peer name when none is bound).
    pub subject: String,
    /// Groups bound to the peer.
    pub groups: Vec<String>,
    /// The audited tunnel part (peer, address, subject, device, session).
    pub details: sase_model::audit::TunnelDetails,
}

impl PeerIdentity {
    fn of(peer: &TunnelPeer) -> PeerIdentity {
        let subject = peer.subject.clone().unwrap_or_else(|| peer.name.clone());
        PeerIdentity {
            identity: format!("tunnel|{subject}"),
            subject,
            groups: peer.groups.clone(),
            details: sase_model::audit::TunnelDetails {
                peer: peer.name.clone(),
                address: peer.address.to_string(),
                subject: peer.subject.clone(),
                device: peer.device.clone(),
                session: peer.session.clone(),
                ..Default::default()
            },
        }
    }

    /// The gateway principal.
    pub fn principal(&self) -> sase_gateway::TunnelPrincipal<'_> {
        sase_gateway::TunnelPrincipal {
            identity: &self.identity,
            subject: &self.subject,
            groups: &self.groups,
        }
    }
}

/// Set by the tunnel HTTP listener on every request (a request extension read by
/// `crate::proxy`): the peer holding the client's tunnel address in the policy in force
/// (`None`: refused as `unknown_peer`) and the resource whose upstream the client connected to.
#[derive(Debug, Clone)]
pub struct TunnelCaller {
    /// The peer, looked up for each request.
    pub peer: Option<Arc<PeerIdentity>>,
    /// The resource, from the NAT mapping of the connection.
    pub resource: Option<String>,
}

/// One peer as applied to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    id: PeerId,
    name: String,
    address: IpAddr,
    keepalive: Option<u16>,
    rules: Vec<TunnelAclRule>,
    who: Arc<PeerIdentity>,
}

/// What one policy change did to the peer table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerChanges {
    /// Peers added.
    pub added: usize,
    /// Peers removed (their sessions are gone).
    pub removed: usize,
    /// Peers whose rules changed on their live sessions.
    pub updated: usize,
    /// Peers refused by the core (duplicate key or address).
    pub refused: usize,
}

/// The core's peer table following a policy: kept apart from the I/O so it can be tested.
#[derive(Default)]
pub struct PeerTable {
    applied: BTreeMap<[u8; 32], Applied>,
    by_address: BTreeMap<IpAddr, [u8; 32]>,
}

impl PeerTable {
    /// Makes the core's peers exactly the policy's: removes peers no longer listed (or whose
    /// address or keepalive changed, which are then added again), changes rules in place, adds
    /// new peers.
    pub fn sync(&mut self, core: &mut Tunnel, policy: Option<&TunnelPolicy>) -> PeerChanges {
        let mut changes = PeerChanges::default();
        let mut wanted: BTreeMap<[u8; 32], &TunnelPeer> = BTreeMap::new();
        for peer in policy.map(|p| p.peers.as_slice()).unwrap_or_default() {
            // A validated policy always has a valid key; skip anything else defensively.
            if let Some(key) = peer.public_key_bytes() {
                wanted.insert(key, peer);
            }
        }
        let stale: Vec<[u8; 32]> = self
            .applied
            .iter()
            .filter(|(key, a)| {
                wanted
                    .get(*key)
                    .is_none_or(|w| w.address != a.address || w.persistent_keepalive != a.keepalive)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            core.remove_peer(&key);
            self.applied.remove(&key);
            changes.removed += 1;
        }
        for (key, peer) in wanted {
            if let Some(a) = self.applied.get_mut(&key) {
                if a.rules != peer.rules {
                    core.set_rules(a.id, &peer.rules);
                    a.rules = peer.rules.clone();
                    changes.updated += 1;
                }
                a.name = peer.name.clone();
                let who = PeerIdentity::of(peer);
                if *a.who != who {
                    a.who = Arc::new(who);
                }
                continue;
            }
            let config = PeerConfig {
                public_key: key,
                preshared_key: None,
                tunnel_addr: peer.address,
                rules: peer.rules.clone(),
                persistent_keepalive: peer.persistent_keepalive,
                endpoint: None,
            };
            match core.add_peer(config) {
                Ok(id) => {
                    self.applied.insert(
                        key,
                        Applied {
                            id,
                            name: peer.name.clone(),
                            address: peer.address,
                            keepalive: peer.persistent_keepalive,
                            rules: peer.rules.clone(),
                            who: Arc::new(PeerIdentity::of(peer)),
                        },
                    );
                    changes.added += 1;
                }
                Err(err) => {
                    tracing::warn!(peer = %peer.name, %err, "tunnel peer refused");
                    changes.refused += 1;
                }
            }
        }
        self.by_address = self
            .applied
            .iter()
            .map(|(key, a)| (a.address, *key))
            .collect();
        changes
    }

    /// The identity of the peer in force holding the tunnel address `addr`.
    pub fn by_address(&self, addr: IpAddr) -> Option<Arc<PeerIdentity>> {
        let key = self.by_address.get(&addr)?;
        self.applied.get(key).map(|a| a.who.clone())
    }

    /// Number of peers in force.
    pub fn len(&self) -> usize {
        self.applied.len()
    }

    /// Whether no peer is in force.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

/// The running tunnel: core, peer table, socket and TUN device.
pub struct TunnelShell {
    core: Mutex<Tunnel>,
    peers: Mutex<PeerTable>,
    socket: UdpSocket,
    tun: tun_rs::SyncDevice,
    local: SocketAddr,
    device: String,
    public_key: String,
    status_path: PathBuf,
    /// Redirection of tunnel flows to plain-HTTP resources into the tunnel HTTP listener.
    nat: Mutex<Nat>,
    /// The request pipeline and spool, once [`serve_http`] ran (tunnel audit events wait
    /// for it).
    edge: OnceLock<Arc<Edge>>,
    /// Connect/disconnect and summaries (`events`).
    tracker: Mutex<events::Tracker>,
    audit_interval: Duration,
    /// Counters already fed to `/metrics`, per peer key (the metrics take increments).
    metered: Mutex<BTreeMap<[u8; 32], PeerCounters>>,
    metered_global: Mutex<GlobalCounters>,
}

/// The status file's content.
#[derive(Serialize)]
struct Status<'a> {
    listen: String,
    device: &'a str,
    public_key: &'a str,
    peers_in_force: usize,
    global: &'a GlobalCounters,
    nat: NatCounters,
    nat_flows: usize,
    peers: BTreeMap<String, PeerStatus<'a>>,
}

#[derive(Serialize)]
struct PeerStatus<'a> {
    address: IpAddr,
    endpoint: Option<String>,
    session: bool,
    last_handshake_secs_ago: Option<u64>,
    counters: &'a PeerCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `a.b.c.d/len` → address and prefix.
fn parse_address(text: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (a, p) = text
        .split_once('/')
        .ok_or_else(|| anyhow!("--tunnel-address {text:?}: expected IPv4/prefix"))?;
    let addr = a
        .parse()
        .with_context(|| format!("--tunnel-address {text:?}: not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(|| anyhow!("--tunnel-address {text:?}: prefix must be 8-30"))?;
    Ok((addr, prefix))
}

/// Feeds `/metrics` with what a peer's counters gained since `before`.
fn meter(before: &PeerCounters, now: &PeerCounters) {
    crate::metrics::tunnel_bytes(
        now.rx_bytes.saturating_sub(before.rx_bytes),
        now.tx_bytes.saturating_sub(before.tx_bytes),
    );
    crate::metrics::tunnel_handshake(now.handshakes.saturating_sub(before.handshakes));
    for (cause, n) in &now.drops {
        let was = before.drops.get(cause).copied().unwrap_or(0);
        if *n > was {
            crate::metrics::tunnel_drops(&cause_name(*cause), n - was);
        }
    }
}

fn cause_name(cause: sase_tunnel::DropCause) -> String {
    serde_json::to_value(cause)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{cause:?}"))
}

/// The NAT's redirected destinations: each resource whose upstream is `http://` with an IPv4
/// address (first resource wins when several share one).
fn http_targets(active: &ActivePolicy) -> BTreeMap<SocketAddrV4, String> {
    let mut targets = BTreeMap::new();
    for (name, upstream) in active.compiled.resource_upstreams() {
        let Ok(uri) = upstream.parse::<::http::Uri>() else {
            continue;
        };
        if uri.scheme_str() != Some("http") {
            continue;
        }
        let Some(ip) = uri
            .host()
            .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
        else {
            continue;
        };
        let addr = SocketAddrV4::new(ip, uri.port_u16().unwrap_or(80));
        targets.entry(addr).or_insert_with(|| name.to_string());
    }
    targets
}

/// Loads the tunnel private key, creating it (mode 0600) on first use.
fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => B64
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| anyhow!("{}: not a base64 32-byte key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            write_atomic(path, B64.encode(key).as_bytes(), 0o600)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn open_tun(
    args: &TunnelArgs,
    addr: std::net::Ipv4Addr,
    prefix: u8,
) -> anyhow::Result<tun_rs::SyncDevice> {
    if !Path::new("/dev/net/tun").exists() {
        bail!("the tunnel needs /dev/net/tun (the tun kernel module), which this system lacks");
    }
    let built = tun_rs::DeviceBuilder::new()
        .name(args.device.clone())
        .ipv4(addr, prefix, None)
        .mtu(args.mtu)
        .build_sync();
    match built {
        Ok(dev) => Ok(dev),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "creating the TUN device {:?} was refused: the tunnel needs root or the \
             CAP_NET_ADMIN capability (run as root, or grant it: AmbientCapabilities=\
             CAP_NET_ADMIN in the systemd unit, or `setcap cap_net_admin+ep` on the binary); \
             or start without --tunnel-listen ({e})",
            args.device
        ),
        Err(e) => Err(e).with_context(|| format!("creating the TUN device {:?}", args.device)),
    }
}

impl TunnelShell {
    fn core(&self) -> MutexGuard<'_, Tunnel> {
        lock(&self.core)
    }

    /// The UDP address the tunnel listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The edge's tunnel public key (base64, as `wg` prints keys).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Applies a policy: its `tunnel` block to the peer table, its plain-HTTP resource
    /// upstreams (`http://a.b.c.d:port`) to the NAT's redirected destinations.
    pub fn apply(&self, active: Option<&ActivePolicy>) -> PeerChanges {
        lock(&self.nat).set_targets(active.map(http_targets).unwrap_or_default());
        let mut peers = lock(&self.peers);
        let mut core = self.core();
        peers.sync(&mut core, active.and_then(|p| p.tunnel.as_deref()))
    }

    fn perform(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, datagram } => {
                    if let Err(e) = self.socket.send_to(&datagram, to) {
                        tracing::trace!(%to, error = %e, "tunnel: send failed");
                    }
                }
                Action::Deliver { mut packet, .. } => {
                    if lock(&self.nat).inbound(&mut packet, Instant::now()) == NatOutcome::TableFull
                    {
                        continue;
                    }
                    if let Err(e) = self.tun.send(&packet) {
                        tracing::trace!(error = %e, "tunnel: TUN write failed");
                    }
                }
                Action::Drop { .. } => {}
            }
        }
    }

    fn udp_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let datagram = buf.get(..n).unwrap_or_default();
                    let actions = self.core().on_udp(from, datagram, Instant::now());
                    self.perform(actions);
                }
                Err(e) => {
                    // ICMP errors surface as ECONNREFUSED on Linux UDP sockets; nothing to do.
                    tracing::trace!(error = %e, "tunnel: UDP receive error");
                }
            }
        }
    }

    fn tun_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.tun.recv(&mut buf) {
                Ok(n) => {
                    let packet = buf.get_mut(..n).unwrap_or_default();
                    let now = Instant::now();
                    lock(&self.nat).outbound(packet, now);
                    let actions = self.core().on_tun(packet, now);
                    self.perform(actions);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "tunnel: TUN read failed");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn timer_loop(self: Arc<Self>) {
        let mut last_status = Instant::now() - Duration::from_secs(2);
        let mut last_summary = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            let actions = self.core().on_timer(now);
            self.perform(actions);
            if now.duration_since(last_status) >= Duration::from_secs(1) {
                last_status = now;
                lock(&self.nat).expire(now);
                let summary = now.duration_since(last_summary) >= self.audit_interval;
                if summary {
                    last_summary = now;
                }
                self.observe(
                    summary.then(|| u64::try_from(self.audit_interval.as_millis()).unwrap_or(0)),
                );
                if let Err(e) = self.write_status(now) {
                    tracing::warn!(error = %e, "tunnel: status file not written");
                }
            }
        }
    }

    /// Once a second: feeds `/metrics` with the counters' increments and writes the tunnel
    /// audit events (connect, disconnect, and on summary ticks traffic and denied flows).
    fn observe(&self, summary_ms: Option<u64>) {
        let samples: Vec<events::Sample> = {
            let peers = lock(&self.peers);
            let core = self.core();
            let global = core.counters().clone();
            let mut metered = lock(&self.metered);
            let mut live = 0;
            let mut next = BTreeMap::new();
            let mut samples = Vec::with_capacity(peers.len());
            for (key, a) in &peers.applied {
                let Some(counters) = core.peer_counters(a.id) else {
                    continue;
                };
                let session = core.has_session(a.id);
                live += u64::from(session);
                let before = metered.remove(key).unwrap_or_default();
                meter(&before, counters);
                next.insert(*key, counters.clone());
                samples.push(events::Sample {
                    key: *key,
                    who: a.who.clone(),
                    session,
                    endpoint: core.peer_endpoint(a.id).map(|e| e.to_string()),
                    counters: counters.clone(),
                });
            }
            *metered = next;
            let mut metered_global = lock(&self.metered_global);
            for (cause, n) in &global.drops {
                let was = metered_global.drops.get(cause).copied().unwrap_or(0);
                if *n > was {
                    crate::metrics::tunnel_drops(&cause_name(*cause), n - was);
                }
            }
            *metered_global = global;
            crate::metrics::tunnel_peers(live);
            samples
        };
        let events = lock(&self.tracker).observe(samples, summary_ms);
        let Some(edge) = self.edge.get() else {
            return;
        };
        let policy_version = edge.policy.snapshot().map_or(0, |p| p.version);
        for e in events {
            let event = sase_model::AuditEvent {
                seq: 0,
                prev_hash: String::new(),
                ts_ms: crate::proxy::now_ms(),
                tenant_id: edge.identity.tenant_id.clone(),
                device_id: edge.identity.device_id.clone(),
                kind: e.kind,
                decision: e.decision,
                reason: e.reason,
                reference: crate::proxy::new_reference(),
                policy_version,
                identity: Some(e.identity),
                http: None,
                detail: None,
                waf: None,
                quic: None,
                tunnel: Some(e.details),
            };
            if let Err(err) = edge.spool.append(event) {
                tracing::warn!(%err, "tunnel audit event not spooled");
            }
        }
    }

    /// The status as JSON (counters of the core and of every peer in force).
    pub fn status_json(&self, now: Instant) -> String {
        let peers = lock(&self.peers);
        let core = self.core();
        let mut by_name = BTreeMap::new();
        for a in peers.applied.values() {
            let Some(counters) = core.peer_counters(a.id) else {
                continue;
            };
            by_name.insert(
                a.name.clone(),
                PeerStatus {
                    address: a.address,
                    endpoint: core.peer_endpoint(a.id).map(|e| e.to_string()),
                    session: core.has_session(a.id),
                    last_handshake_secs_ago: core
                        .last_handshake(a.id)
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                    counters,
                },
            );
        }
        let (nat, nat_flows) = {
            let nat = lock(&self.nat);
            (nat.counters(), nat.len())
        };
        let status = Status {
            listen: self.local.to_string(),
            device: &self.device,
            public_key: &self.public_key,
            peers_in_force: peers.len(),
            global: core.counters(),
            nat,
            nat_flows,
            peers: by_name,
        };
        serde_json::to_string(&status).unwrap_or_default()
    }

    fn write_status(&self, now: Instant) -> anyhow::Result<()> {
        let json = self.status_json(now);
        write_atomic(&self.status_path, json.as_bytes(), 0o600)
    }
}

/// What the tunnel needs privileges for, opened by [`open`] before `main` drops them
/// (`crate::privs`): the TUN device with its address (CAP_NET_ADMIN) and the UDP socket.
pub struct Opened {
    tun: tun_rs::SyncDevice,
    socket: UdpSocket,
}

/// Opens the TUN device and binds the UDP socket when `--tunnel-listen` is given (`Ok(None)`
/// when the tunnel is off); on the main thread, before the capabilities are dropped.
///
/// # Errors
/// A bad setting, no TUN support or no CAP_NET_ADMIN (the message says which), or the UDP
/// address cannot be bound.
pub fn open(args: &TunnelArgs) -> anyhow::Result<Option<Opened>> {
    let Some(listen) = args.listen else {
        return Ok(None);
    };
    let (addr, prefix) = parse_address(&args.address)?;
    let tun = open_tun(args, addr, prefix)?;
    let socket =
        UdpSocket::bind(listen).with_context(|| format!("binding the tunnel listener {listen}"))?;
    Ok(Some(Opened { tun, socket }))
}

/// Starts the tunnel opened by [`open`]: key, threads, and a task that follows the policy.
/// `Ok(None)` when the tunnel is off. Needs no privileges.
///
/// # Errors
/// A key that cannot be read or written.
pub fn start(
    opened: Option<Opened>,
    args: &TunnelArgs,
    data_dir: &Path,
    policy: &Arc<PolicyHolder>,
) -> anyhow::Result<Option<Arc<TunnelShell>>> {
    let Some(Opened { tun, socket }) = opened else {
        return Ok(None);
    };
    let key = load_or_create_key(&data_dir.join(KEY_FILE))?;
    let (tunnel_ip, _) = parse_address(&args.address)?;
    let local = socket.local_addr()?;
    let core = Tunnel::new(TunnelConfig {
        private_key: key,
        handshake_rate_limit: args.handshake_rate,
    });
    let public_key = B64.encode(core.public_key());
    let shell = Arc::new(TunnelShell {
        core: Mutex::new(core),
        peers: Mutex::new(PeerTable::default()),
        socket,
        tun,
        local,
        device: args.device.clone(),
        public_key,
        status_path: data_dir.join(STATUS_FILE),
        nat: Mutex::new(Nat::new(NatConfig::new(SocketAddrV4::new(
            tunnel_ip,
            args.http_port,
        )))),
        edge: OnceLock::new(),
        tracker: Mutex::new(events::Tracker::default()),
        audit_interval: Duration::from_secs(args.audit_interval.max(1)),
        metered: Mutex::new(BTreeMap::new()),
        metered_global: Mutex::new(GlobalCounters::default()),
    });
    let mut rx = policy.subscribe();
    let first = rx.borrow_and_update().clone();
    let changes = shell.apply(first.as_deref());
    tracing::info!(
        added = changes.added,
        "tunnel peers from the policy in force"
    );
    for (name, f) in [
        ("tunnel-udp", TunnelShell::udp_loop as fn(Arc<TunnelShell>)),
        ("tunnel-tun", TunnelShell::tun_loop),
        ("tunnel-timer", TunnelShell::timer_loop),
    ] {
        let s = shell.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(s))
            .with_context(|| format!("starting thread {name}"))?;
    }
    {
        let shell = shell.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let snapshot = rx.borrow_and_update().clone();
                let changes = shell.apply(snapshot.as_deref());
                tracing::info!(
                    version = snapshot.as_ref().map(|p| p.version),
                    added = changes.added,
                    removed = changes.removed,
                    updated = changes.updated,
                    refused = changes.refused,
                    "tunnel peers follow the new policy"
                );
            }
        });
    }
    shell.write_status(Instant::now())?;
    println!(
        "sase-edge tunnel: udp://{local} device={} address={} public_key={}",
        args.device, args.address, shell.public_key
    );
    Ok(Some(shell))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, key: [u8; 32], addr: &str, rules: &[&str]) -> TunnelPeer {
        TunnelPeer {
            name: name.into(),
            public_key: B64.encode(key),
            address: addr.parse().expect("address"),
            rules: rules.iter().map(|r| r.parse().expect("rule")).collect(),
            persistent_keepalive: None,
            subject: None,
            groups: Vec::new(),
            device: None,
            session: None,
        }
    }

    #[test]
    fn peer_table_follows_the_policy() {
        let mut core = Tunnel::new(TunnelConfig {
            private_key: [7; 32],
            handshake_rate_limit: 10,
        });
        let mut table = PeerTable::default();
        let a = peer("alice", [1; 32], "100.96.0.2", &["icmp:10.0.0.0/8"]);
        let b = peer("bob", [2; 32], "100.96.0.3", &[]);
        let policy = TunnelPolicy {
            peers: vec![a.clone(), b.clone()],
        };
        let c = table.sync(&mut core, Some(&policy));
        assert_eq!((c.added, c.removed, c.updated), (2, 0, 0));
        assert!(core.peer_by_key(&[1; 32]).is_some());
        let alice = core.peer_by_key(&[1; 32]);
        // Same policy: nothing changes, the peer keeps its id (and sessions).
        assert_eq!(table.sync(&mut core, Some(&policy)), PeerChanges::default());
        // The tunnel HTTP listener finds the identity by tunnel address.
        let who = table
            .by_address("100.96.0.2".parse().expect("ip"))
            .expect("alice");
        assert_eq!(
            (who.identity.as_str(), who.subject.as_str()),
            ("tunnel|alice", "alice")
        );
        assert!(table
            .by_address("100.96.0.9".parse().expect("ip"))
            .is_none());
        let mut bound = a.clone();
        bound.subject = Some("alice@example.com".into());
        bound.groups = vec!["eng".into()];
        bound.device = Some("dev-1".into());
        let policy_bound = TunnelPolicy {
            peers: vec![bound, b.clone()],
        };
        // An identity change is taken in place (same session), not as a new peer.
        assert_eq!(
            table.sync(&mut core, Some(&policy_bound)),
            PeerChanges::default()
        );
        let who = table
            .by_address("100.96.0.2".parse().expect("ip"))
            .expect("alice");
        assert_eq!(who.identity, "tunnel|alice@example.com");
        assert_eq!(who.groups, vec!["eng".to_string()]);
        assert_eq!(who.details.device.as_deref(), Some("dev-1"));
        assert_eq!(core.peer_by_key(&[1; 32]), alice);
        // Rules change in place.
        let mut a2 = a.clone();
        a2.rules = vec!["tcp:10.0.0.0/8:22".parse().expect("rule")];
        let c = table.sync(
            &mut core,
            Some(&TunnelPolicy {
                peers: vec![a2, b.clone()],
            }),
        );
        assert_eq!((c.added, c.removed, c.updated), (0, 0, 1));
        assert_eq!(core.peer_by_key(&[1; 32]), alice);
        // A new address means a new peer; a missing peer is removed.
        let mut a3 = a.clone();
        a3.address = "100.96.0.9".parse().expect("ip");
        let c = table.sync(&mut core, Some(&TunnelPolicy { peers: vec![a3] }));
        assert_eq!((c.added, c.removed), (1, 2));
        assert!(core.peer_by_key(&[2; 32]).is_none());
        assert_ne!(core.peer_by_key(&[1; 32]), alice);
        // No tunnel block: no peers.
        let c = table.sync(&mut core, None);
        assert_eq!(c.removed, 1);
        assert!(table.is_empty() && core.peer_by_key(&[1; 32]).is_none());
    }

    #[test]
    fn duplicate_address_is_refused_not_fatal() {
        let mut core = Tunnel::new(TunnelConfig {
            private_key: [7; 32],
            handshake_rate_limit: 10,
        });
        let mut table = PeerTable::default();
        let policy = TunnelPolicy {
            peers: vec![
                peer("a", [1; 32], "100.96.0.2", &[]),
                peer("b", [2; 32], "100.96.0.2", &[]),
            ],
        };
        let c = table.sync(&mut core, Some(&policy));
        assert_eq!((c.added, c.refused), (1, 1));
    }

    #[test]
    fn address_setting_is_checked() {
        assert!(parse_address("100.96.0.1/16").is_ok());
        assert!(parse_address("100.96.0.1").is_err());
        assert!(parse_address("100.96.0.1/31").is_err());
        assert!(parse_address("fd00::1/64").is_err());
    }
}
