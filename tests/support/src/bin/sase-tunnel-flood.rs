//! Handshake traffic against the edge's tunnel listener, made with boringtun's `Tunn` (the
//! same WireGuard messages a real peer sends), for `tests/e2e/ztna.sh` and
//! `tests/perf/tunnel.sh`:
//!
//! * `replay` — one handshake initiation from a known peer key must get a response; the very
//!   same datagram sent again (a replayed handshake) must get nothing; an initiation from an
//!   unknown key must get nothing. Exit status 0 only when all three hold.
//! * `flood` — new initiations from a known peer key as fast as one thread makes them, for
//!   `--seconds`; counts handshake responses and cookie replies. Prints
//!   `sent=<n> responses=<r> cookie_replies=<c> handshakes_per_s=<r/s> cookies_per_s=<c/s>`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// The edge's tunnel address.
    #[arg(long, global = true, default_value = "127.0.0.1:51820")]
    edge: SocketAddr,
    /// The edge's tunnel public key (base64).
    #[arg(long = "edge-public-key", global = true, default_value = "")]
    edge_public_key: String,
    /// The private key (base64) of a peer listed in the edge's policy.
    #[arg(long = "peer-private-key", global = true, default_value = "")]
    peer_private_key: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Known key answered, replay and unknown key not.
    Replay,
    /// Initiations as fast as possible.
    Flood {
        /// How long to flood.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

const MSG_RESPONSE: u8 = 2;
const MSG_COOKIE: u8 = 3;

fn key32(text: &str, what: &str) -> Result<[u8; 32]> {
    B64.decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| anyhow!("{what}: expected base64 of 32 bytes"))
}

fn initiation(tunn: &mut Tunn, buf: &mut [u8]) -> Result<Vec<u8>> {
    match tunn.format_handshake_initiation(buf, true) {
        TunnResult::WriteToNetwork(out) => Ok(out.to_vec()),
        _ => bail!("boringtun made no initiation"),
    }
}

/// The first datagram type received within `wait`, if any.
fn answer(socket: &UdpSocket, wait: Duration) -> Result<Option<u8>> {
    socket.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 2048];
    match socket.recv(&mut buf) {
        Ok(n) if n > 0 => Ok(buf.first().copied()),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let edge_pub = PublicKey::from(key32(&args.edge_public_key, "--edge-public-key")?);
    let peer = StaticSecret::from(key32(&args.peer_private_key, "--peer-private-key")?);
    let socket = UdpSocket::bind(if args.edge.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.connect(args.edge)?;
    let mut buf = vec![0u8; 2048];
    match args.mode {
        Mode::Replay => {
            let mut tunn = Tunn::new(peer, edge_pub, None, None, 1, None);
            let init = initiation(&mut tunn, &mut buf)?;
            socket.send(&init)?;
            let first = answer(&socket, Duration::from_secs(3))?;
            println!("known key: answer type {first:?}");
            socket.send(&init)?;
            let replay = answer(&socket, Duration::from_secs(1))?;
            println!("replayed initiation: answer type {replay:?}");
            let stranger = StaticSecret::from(rand::random::<[u8; 32]>());
            let mut tunn = Tunn::new(stranger, edge_pub, None, None, 2, None);
            let init = initiation(&mut tunn, &mut buf)?;
            socket.send(&init)?;
            let unknown = answer(&socket, Duration::from_secs(1))?;
            println!("unknown key: answer type {unknown:?}");
            if first != Some(MSG_RESPONSE) || replay.is_some() || unknown.is_some() {
                bail!("expected a response, then nothing for the replay and the unknown key");
            }
            println!("replay ok");
        }
        Mode::Flood { seconds } => {
            let responses = Arc::new(AtomicU64::new(0));
            let cookies = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let receiver = {
                let socket = socket.try_clone()?;
                let (responses, cookies, stop) = (responses.clone(), cookies.clone(), stop.clone());
                socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = socket.recv(&mut buf) {
                            match buf.get(..n).and_then(|b| b.first()) {
                                Some(&MSG_RESPONSE) => {
                                    responses.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(&MSG_COOKIE) => {
                                    cookies.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                        }
                    }
                })
            };
            let mut tunn = Tunn::new(peer, edge_pub, None, None, 1, None);
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < Duration::from_secs(seconds) {
                let init = initiation(&mut tunn, &mut buf)?;
                // A full socket buffer is not an error of the edge: count only what left.
                if socket.send(&init).is_ok() {
                    sent += 1;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            // Answers still in flight.
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            let _ = receiver.join();
            let r = responses.load(Ordering::Relaxed);
            let c = cookies.load(Ordering::Relaxed);
            println!(
                "sent={sent} responses={r} cookie_replies={c} handshakes_per_s={:.0} cookies_per_s={:.0} initiations_per_s={:.0}",
                r as f64 / elapsed,
                c as f64 / elapsed,
                sent as f64 / elapsed
            );
        }
    }
    Ok(())
}
