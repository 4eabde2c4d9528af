//! `sase-tunnel-interop`: the tunnel core behind a plain UDP socket, for the wireguard-go
//! interop test (`tests/e2e/tunnel-interop.sh`). Not the edge's shell: there is no TUN device.
//! Inner packets that pass the allowed-IP check and the ACL are answered by a tiny userspace
//! responder (IPv4 ICMP echo and UDP echo on any address/port), and the answers go back through
//! [`Tunnel::on_tun`], so they pass the reply check of the ACL too.
//!
//! ```text
//! sase-tunnel-interop --listen 172.31.254.1:51820 --private-key-file edge.key \
//!     --peer-public-key <base64> --peer-tunnel-addr 100.64.0.2 \
//!     --rule icmp:10.10.1.0/24 --rule udp:10.10.1.10/32:7 --stats stats.json
//! ```
//!
//! Prints `ready <addr> <edge public key>` once listening; rewrites the stats file (JSON:
//! peer and global counters) every 100 ms. Runs until killed.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use sase_model::tunnel::TunnelAclRule;
use sase_tunnel::{Action, PeerConfig, Tunnel, TunnelConfig};

struct Args {
    listen: SocketAddr,
    private_key: [u8; 32],
    peer_public_key: [u8; 32],
    peer_tunnel_addr: std::net::IpAddr,
    rules: Vec<TunnelAclRule>,
    stats: Option<PathBuf>,
    rate_limit: u64,
}

fn key(text: &str) -> Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("key is not base64")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a key has 32 bytes"))
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut listen, mut private_key, mut peer, mut addr, mut stats) =
        (None, None, None, None, None);
    let mut rules = Vec::new();
    let mut rate_limit = 20;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse().context("--listen")?),
            "--private-key-file" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
                private_key = Some(key(&text)?);
            }
            "--peer-public-key" => peer = Some(key(&value()?)?),
            "--peer-tunnel-addr" => addr = Some(value()?.parse().context("--peer-tunnel-addr")?),
            "--rule" => rules.push(value()?.parse().context("--rule")?),
            "--stats" => stats = Some(PathBuf::from(value()?)),
            "--handshake-rate-limit" => rate_limit = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        listen: listen.context("--listen is required")?,
        private_key: private_key.context("--private-key-file is required")?,
        peer_public_key: peer.context("--peer-public-key is required")?,
        peer_tunnel_addr: addr.context("--peer-tunnel-addr is required")?,
        rules,
        stats,
        rate_limit,
    })
}

/// RFC 1071 checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Answers an IPv4 ICMP echo request or UDP datagram (echo); anything else gets no answer.
fn respond(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let mut p = packet.get(..total)?.to_vec();
    if ihl < 20 || total < ihl + 8 {
        return None;
    }
    // Swap addresses, fresh TTL.
    let (src, dst) = (p[12..16].to_vec(), p[16..20].to_vec());
    p[12..16].copy_from_slice(&dst);
    p[16..20].copy_from_slice(&src);
    p[8] = 64;
    match p[9] {
        1 if p[ihl] == 8 => {
            p[ihl] = 0;
            p[ihl + 2..ihl + 4].fill(0);
            let c = checksum(&p[ihl..]);
            p[ihl + 2..ihl + 4].copy_from_slice(&c.to_be_bytes());
        }
        17 => {
            let (sport, dport) = (p[ihl..ihl + 2].to_vec(), p[ihl + 2..ihl + 4].to_vec());
            p[ihl..ihl + 2].copy_from_slice(&dport);
            p[ihl + 2..ihl + 4].copy_from_slice(&sport);
            p[ihl + 6..ihl + 8].fill(0); // no UDP checksum (allowed over IPv4)
        }
        _ => return None,
    }
    p[10..12].fill(0);
    let c = checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    Some(p)
}

fn write_stats(path: &PathBuf, tunnel: &Tunnel, peer: sase_tunnel::PeerId) -> Result<()> {
    let stats = serde_json::json!({
        "peer": tunnel.peer_counters(peer),
        "global": tunnel.counters(),
        "endpoint": tunnel.peer_endpoint(peer).map(|e| e.to_string()),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&stats)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut tunnel = Tunnel::new(TunnelConfig {
        private_key: args.private_key,
        handshake_rate_limit: args.rate_limit,
    });
    let peer = tunnel.add_peer(PeerConfig {
        public_key: args.peer_public_key,
        preshared_key: None,
        tunnel_addr: args.peer_tunnel_addr,
        rules: args.rules,
        persistent_keepalive: None,
        endpoint: None,
    })?;
    let socket = UdpSocket::bind(args.listen).with_context(|| format!("bind {}", args.listen))?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let public = base64::engine::general_purpose::STANDARD.encode(tunnel.public_key());
    println!("ready {} {public}", socket.local_addr()?);
    std::io::stdout().flush()?;

    let mut buf = vec![0u8; 65_535];
    let mut last_tick = Instant::now();
    loop {
        let actions = match socket.recv_from(&mut buf) {
            Ok((n, from)) => tunnel.on_udp(from, buf.get(..n).unwrap_or_default(), Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Vec::new(),
            Err(e) => return Err(e).context("recv"),
        };
        let mut pending = actions;
        while !pending.is_empty() {
            let mut next = Vec::new();
            for action in pending {
                match action {
                    Action::Send { to, datagram } => {
                        if let Err(e) = socket.send_to(&datagram, to) {
                            eprintln!("send to {to}: {e}");
                        }
                    }
                    Action::Deliver { packet, .. } => {
                        if let Some(answer) = respond(&packet) {
                            next.extend(tunnel.on_tun(&answer, Instant::now()));
                        }
                    }
                    Action::Drop { .. } => {}
                }
            }
            pending = next;
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_millis(100) {
            last_tick = now;
            for action in tunnel.on_timer(now) {
                if let Action::Send { to, datagram } = action {
                    if let Err(e) = socket.send_to(&datagram, to) {
                        eprintln!("send to {to}: {e}");
                    }
                }
            }
            if let Some(path) = &args.stats {
                write_stats(path, &tunnel, peer)?;
            }
        }
    }
}
