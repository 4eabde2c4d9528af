//! The client's tunnel core, without I/O: one WireGuard session to the edge over boringtun's
//! `Tunn`. The shell feeds it datagrams from the UDP socket, packets from the TUN device and a
//! timer tick, each with `now`, and carries out what it returns. It keeps the figures `status`
//! shows (handshake age, bytes) from the injected `now`; boringtun's own session timers read
//! its monotonic clock (see docs/ZTNA.md).

use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// How often the initiation is repeated until the first handshake completes.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest datagram or packet handled (MTU 1420 plus WireGuard overhead, with room).
pub const BUF: usize = 65_536;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this datagram to the edge.
    Send(Vec<u8>),
    /// Write this decrypted packet to the TUN device.
    Deliver(Vec<u8>),
}

/// Counters and times for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Figures {
    /// Seconds since the last completed handshake (none yet: `None`).
    pub handshake_age_secs: Option<u64>,
    /// Bytes received from the edge (decrypted payload).
    pub rx_bytes: u64,
    /// Bytes sent to the edge (payload before encryption).
    pub tx_bytes: u64,
    /// Datagrams from the edge that did not decrypt or were not data.
    pub dropped: u64,
}

/// The client's side of one tunnel.
pub struct ClientCore {
    tunn: Tunn,
    buf: Vec<u8>,
    last_handshake: Option<Instant>,
    last_initiation: Option<Instant>,
    rx_bytes: u64,
    tx_bytes: u64,
    dropped: u64,
}

impl ClientCore {
    /// A tunnel from `private` to the edge's `edge_public` (keepalive every `keepalive` s).
    pub fn new(private: [u8; 32], edge_public: [u8; 32], keepalive: Option<u16>) -> ClientCore {
        ClientCore {
            tunn: Tunn::new(
                StaticSecret::from(private),
                PublicKey::from(edge_public),
                None,
                keepalive,
                rand::random::<u32>() >> 8,
                None,
            ),
            buf: vec![0u8; BUF],
            last_handshake: None,
            last_initiation: None,
            rx_bytes: 0,
            tx_bytes: 0,
            dropped: 0,
        }
    }

    /// A datagram from the edge.
    pub fn on_udp(&mut self, datagram: &[u8], now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let mut input: &[u8] = datagram;
        loop {
            match self.tunn.decapsulate(None, input, &mut self.buf) {
                TunnResult::WriteToNetwork(d) => {
                    out.push(Action::Send(d.to_vec()));
                    // Flush what was queued during the handshake.
                    input = &[];
                    continue;
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    self.rx_bytes += p.len() as u64;
                    out.push(Action::Deliver(p.to_vec()));
                }
                TunnResult::Done => {}
                TunnResult::Err(_) => self.dropped += 1,
            }
            break;
        }
        self.note_handshake(now);
        out
    }

    /// A packet from the TUN device (to be encrypted for the edge).
    pub fn on_tun(&mut self, packet: &[u8], now: Instant) -> Vec<Action> {
        let out = match self.tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => {
                self.tx_bytes += packet.len() as u64;
                vec![Action::Send(d.to_vec())]
            }
            _ => Vec::new(),
        };
        self.note_handshake(now);
        out
    }

    /// The timer tick (every 100-250 ms): handshakes, rekeys, keepalives. Until the first
    /// handshake completes, the initiation is sent again every [`RETRY`] by this core's own
    /// `now` (the edge may apply the new peer a moment after registration answers, and
    /// boringtun's retransmission follows its own clock).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = match self.tunn.update_timers(&mut self.buf) {
            TunnResult::WriteToNetwork(d) => vec![Action::Send(d.to_vec())],
            _ => Vec::new(),
        };
        self.note_handshake(now);
        let due = self
            .last_initiation
            .is_none_or(|t| now.saturating_duration_since(t) >= RETRY);
        if self.last_handshake.is_none() && due {
            out.extend(self.initiate(now));
        }
        out
    }

    /// Starts (or restarts) a handshake now.
    pub fn initiate(&mut self, now: Instant) -> Vec<Action> {
        self.last_initiation = Some(now);
        match self.tunn.format_handshake_initiation(&mut self.buf, true) {
            TunnResult::WriteToNetwork(d) => vec![Action::Send(d.to_vec())],
            _ => Vec::new(),
        }
    }

    fn note_handshake(&mut self, now: Instant) {
        if let (Some(age), _, _, _, _) = self.tunn.stats() {
            self.last_handshake = now.checked_sub(age).or(Some(now));
        }
    }

    /// The figures at `now`.
    pub fn figures(&self, now: Instant) -> Figures {
        Figures {
            handshake_age_secs: self
                .last_handshake
                .map(|t| now.saturating_duration_since(t).as_secs()),
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> ([u8; 32], [u8; 32]) {
        let private = [seed; 32];
        let public = PublicKey::from(&StaticSecret::from(private)).to_bytes();
        (private, public)
    }

    /// A minimal IPv4/ICMP packet from `src` to `dst`.
    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn an_unanswered_initiation_is_repeated_by_the_injected_clock() {
        let (client_priv, _) = key(1);
        let (_, edge_pub) = key(2);
        let mut client = ClientCore::new(client_priv, edge_pub, None);
        let t0 = Instant::now();
        assert_eq!(client.initiate(t0).len(), 1);
        let sends = |a: Vec<Action>| {
            a.iter()
                .filter(|x| matches!(x, Action::Send(d) if d.len() == 148))
                .count()
        };
        assert_eq!(
            sends(client.on_timer(t0 + std::time::Duration::from_millis(500))),
            0
        );
        assert_eq!(
            sends(client.on_timer(t0 + RETRY)),
            1,
            "repeated after RETRY"
        );
        assert_eq!(
            sends(client.on_timer(t0 + RETRY + std::time::Duration::from_millis(100))),
            0
        );
    }

    #[test]
    fn handshake_and_data_both_ways_against_a_plain_tunn() {
        let (client_priv, client_pub) = key(1);
        let (edge_priv, edge_pub) = key(2);
        let mut client = ClientCore::new(client_priv, edge_pub, None);
        let mut edge = Tunn::new(
            StaticSecret::from(edge_priv),
            PublicKey::from(client_pub),
            None,
            None,
            7,
            None,
        );
        let now = Instant::now();
        let mut buf = vec![0u8; BUF];
        let init = client.initiate(now);
        let [Action::Send(init)] = init.as_slice() else {
            panic!("no initiation: {init:?}");
        };
        let response = match edge.decapsulate(None, init, &mut buf) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("edge did not answer the initiation"),
        };
        let after = client.on_udp(&response, now);
        assert!(client.figures(now).handshake_age_secs.is_some());
        // The client sends a keepalive or nothing; now data to the edge.
        drop(after);
        let out = client.on_tun(&packet([100, 96, 1, 2], [10, 77, 0, 10]), now);
        let [Action::Send(data)] = out.as_slice() else {
            panic!("no data datagram: {out:?}");
        };
        match edge.decapsulate(None, data, &mut buf) {
            TunnResult::WriteToTunnelV4(p, src) => {
                assert_eq!(src.octets(), [100, 96, 1, 2]);
                assert_eq!(p.len(), 28);
            }
            _ => panic!("edge did not decrypt the data"),
        }
        let reply = match edge.encapsulate(&packet([10, 77, 0, 10], [100, 96, 1, 2]), &mut buf) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("edge did not encrypt"),
        };
        let got = client.on_udp(&reply, now);
        assert!(matches!(got.as_slice(), [Action::Deliver(p)] if p.len() == 28));
        let f = client.figures(now);
        assert_eq!((f.tx_bytes, f.rx_bytes, f.dropped), (28, 28, 0));
        // Garbage is dropped and counted, never a panic.
        assert!(client.on_udp(&[4, 0, 0, 0, 1, 2, 3], now).is_empty());
        assert!(client.on_udp(&[1, 0, 0, 0], now).is_empty());
        assert_eq!(client.figures(now).dropped, 2);
    }
}
