//! The `sni_filter` relay: a UDP listener that reads the server name of each new QUIC flow
//! from its client Initial packets ([`sase_quic::InitialFlow`]: decryption of the Initial
//! only, CRYPTO frames reassembled across packets and out of order) and then either forwards
//! the flow untouched to the `upstream` of the `sni_filter` rule that allows the name, or
//! refuses it.
//!
//! This is the shell `sni_filter` runs in until the tunnel/egress data path exists: traffic
//! reaches the relay on its own UDP port (`--quic-relay-listen`), and an allowed flow's
//! destination is the rule's `upstream` (the tunnel shell will instead forward to the flow's
//! original destination). Nothing is decrypted beyond the Initial packets; the relay never
//! holds TLS keys of the connection.
//!
//! Refusals follow the mode that applies to the name: `drop` discards silently; anything else
//! (`block`, a name without an `sni_filter` rule, an unreadable ClientHello) is answered with a
//! server Initial carrying `CONNECTION_CLOSE` (`CONNECTION_REFUSED`), sealed with the flow's
//! Initial keys, so the client gives up at once. Every decision is an audit event (`quic_flow`).
//!
//! Bounds: at most [`MAX_FLOWS`] flows, of which [`MAX_PENDING`] still reading their
//! ClientHello, each buffering at most [`MAX_PENDING_DATAGRAMS`] datagrams (about 24 MiB in
//! all); a flow's ClientHello within [`sase_quic::FlowLimits`] (16 KiB, 16 packets) and
//! [`PENDING_TIMEOUT`]; forwarded flows are forgotten after [`IDLE_TIMEOUT`] without traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore as _;
use sase_model::quic::{ModeSource, QuicDetails, QuicMode};
use sase_model::Reason;
use sase_quic::{FlowLimits, InitialFlow, Progress};
use tokio::net::UdpSocket;

use crate::proxy::Edge;

/// Most flows tracked at once (new flows beyond it are ignored until some expire).
pub const MAX_FLOWS: usize = 4096;
/// Most flows still reading their ClientHello (each buffers at most [`MAX_PENDING_DATAGRAMS`]).
pub const MAX_PENDING: usize = 1024;
/// Most datagrams buffered for one flow before its decision (the flow's Initial packet bound).
pub const MAX_PENDING_DATAGRAMS: usize = 16;
/// Time a flow has to complete its ClientHello.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a forwarded or refused flow is remembered without traffic.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// QUIC transport error `CONNECTION_REFUSED`.
const CONNECTION_REFUSED: u64 = 0x02;

enum Flow {
    Pending {
        flow: Box<InitialFlow>,
        buffered: Vec<Vec<u8>>,
        started: Instant,
    },
    Forwarding {
        upstream: Arc<UdpSocket>,
        task: tokio::task::AbortHandle,
        last: Instant,
    },
    Refused {
        close: Option<Vec<u8>>,
        last: Instant,
    },
}

/// Runs the relay on `socket` until the process ends.
pub async fn run(edge: Arc<Edge>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (len, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(err) => {
                    tracing::debug!(%err, "relay receive failed");
                    continue;
                }
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                flows.retain(|_, f| match f {
                    Flow::Pending { started, .. } => now.duration_since(*started) < PENDING_TIMEOUT,
                    Flow::Forwarding { last, task, .. } => {
                        let keep = now.duration_since(*last) < IDLE_TIMEOUT;
                        if !keep {
                            task.abort();
                        }
                        keep
                    }
                    Flow::Refused { last, .. } => now.duration_since(*last) < IDLE_TIMEOUT,
                });
                continue;
            }
        };
        let datagram = &buf[..len];
        match flows.get_mut(&client) {
            Some(Flow::Forwarding { upstream, last, .. }) => {
                *last = Instant::now();
                let _ = upstream.send(datagram).await;
            }
            Some(Flow::Refused { close, last }) => {
                *last = Instant::now();
                if let Some(close) = close {
                    let _ = socket.send_to(close, client).await;
                }
            }
            Some(Flow::Pending { flow, buffered, .. }) => {
                if buffered.len() >= MAX_PENDING_DATAGRAMS {
                    // Not Initials (those are bounded by the flow itself): not worth keeping.
                    continue;
                }
                buffered.push(datagram.to_vec());
                let progress = flow.push_datagram(datagram);
                let version = flow.version();
                settle(&edge, &socket, &mut flows, client, progress, version).await;
            }
            None => {
                if flows.len() >= MAX_FLOWS
                    || !sase_quic::starts_with_initial(datagram)
                    || flows
                        .values()
                        .filter(|f| matches!(f, Flow::Pending { .. }))
                        .count()
                        >= MAX_PENDING
                {
                    continue;
                }
                let mut flow = Box::new(InitialFlow::new(FlowLimits::default()));
                let progress = flow.push_datagram(datagram);
                let version = flow.version();
                flows.insert(
                    client,
                    Flow::Pending {
                        flow,
                        buffered: vec![datagram.to_vec()],
                        started: Instant::now(),
                    },
                );
                settle(&edge, &socket, &mut flows, client, progress, version).await;
            }
        }
    }
}

/// Acts on a pending flow's progress: nothing yet, forward, or refuse.
async fn settle(
    edge: &Arc<Edge>,
    socket: &Arc<UdpSocket>,
    flows: &mut HashMap<SocketAddr, Flow>,
    client: SocketAddr,
    progress: Result<Progress, sase_quic::Error>,
    version: Option<sase_quic::Version>,
) {
    let hello = match progress {
        Ok(Progress::NeedMore) => return,
        Ok(Progress::Complete(hello)) => hello,
        Err(err) => {
            // No readable ClientHello: refused like a name that is not allowed; nothing to
            // seal a CONNECTION_CLOSE with when not even the first Initial was readable.
            tracing::debug!(%client, %err, "QUIC flow without a readable ClientHello");
            crate::quic::audit_flow(
                edge,
                Reason::QuicSniRefused,
                QuicDetails {
                    sni: String::new(),
                    alpn: Vec::new(),
                    version: version.map_or_else(|| "unknown".into(), |v| v.name().into()),
                    mode: QuicMode::SniFilter.as_str().into(),
                    verdict: "refused".into(),
                    client_ip: client.ip().to_string(),
                },
            );
            flows.insert(
                client,
                Flow::Refused {
                    close: None,
                    last: Instant::now(),
                },
            );
            return;
        }
    };
    let sni = hello.client_hello.sni.clone();
    let policy = edge.policy.snapshot();
    let (mode, upstream) = match policy.as_ref().and_then(|p| p.quic.policy.as_ref()) {
        Some(q) => {
            let resource = sni
                .as_deref()
                .and_then(|s| policy.as_ref().and_then(|p| p.quic.resource_for(s)));
            let (mode, source) = q.mode_for(&edge.identity.site_id, sni.as_deref(), resource);
            let upstream = match source {
                ModeSource::Rule(_, rule) if mode == QuicMode::SniFilter => rule.upstream.clone(),
                _ => None,
            };
            (mode, upstream)
        }
        None => (QuicMode::Block, None),
    };
    let mut details = QuicDetails {
        sni: sni.clone().unwrap_or_default(),
        alpn: hello.client_hello.alpn.clone(),
        version: hello.version.name().into(),
        mode: mode.as_str().into(),
        verdict: String::new(),
        client_ip: client.ip().to_string(),
    };
    let buffered = match flows.remove(&client) {
        Some(Flow::Pending { buffered, .. }) => buffered,
        _ => Vec::new(),
    };
    if let Some(upstream) = upstream {
        match forward(socket.clone(), client, &upstream).await {
            Ok((up, task)) => {
                for d in &buffered {
                    let _ = up.send(d).await;
                }
                details.verdict = "forwarded".into();
                crate::quic::audit_flow(edge, Reason::Allowed, details);
                flows.insert(
                    client,
                    Flow::Forwarding {
                        upstream: up,
                        task,
                        last: Instant::now(),
                    },
                );
                return;
            }
            Err(err) => {
                tracing::warn!(%err, %upstream, "QUIC relay upstream unreachable");
            }
        }
    }
    let (reason, close) = match mode {
        QuicMode::Drop => (Reason::QuicDropped, None),
        QuicMode::Block => (Reason::QuicBlocked, refusal(&hello)),
        _ => (Reason::QuicSniRefused, refusal(&hello)),
    };
    details.verdict = if close.is_some() {
        "refused"
    } else {
        "dropped"
    }
    .into();
    crate::quic::audit_flow(edge, reason, details);
    if let Some(close) = &close {
        let _ = socket.send_to(close, client).await;
    }
    flows.insert(
        client,
        Flow::Refused {
            close,
            last: Instant::now(),
        },
    );
}

fn refusal(hello: &sase_quic::Hello) -> Option<Vec<u8>> {
    let mut scid = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut scid);
    sase_quic::packet::connection_close(
        hello.version,
        &hello.dcid,
        &hello.scid,
        &scid,
        CONNECTION_REFUSED,
    )
    .ok()
}

/// Opens the upstream side of a forwarded flow and copies its answers back to the client.
async fn forward(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    upstream: &str,
) -> std::io::Result<(Arc<UdpSocket>, tokio::task::AbortHandle)> {
    let target = tokio::net::lookup_host(upstream)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("upstream has no address"))?;
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let up = Arc::new(UdpSocket::bind(bind).await?);
    up.connect(target).await?;
    let reader = up.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match tokio::time::timeout(IDLE_TIMEOUT, reader.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let _ = socket.send_to(&buf[..n], client).await;
                }
                _ => return,
            }
        }
    });
    Ok((up, task.abort_handle()))
}
