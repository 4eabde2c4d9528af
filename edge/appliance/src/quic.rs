//! QUIC on the published listener: HTTP/3 termination (`inspect`), the `block` and `drop`
//! modes of the published UDP port, `Alt-Svc` on the TCP path, and QUIC audit events.
//!
//! The UDP port of the published listener follows the policy in force
//! ([`QuicPlan::published_state`]), re-evaluated on every bundle:
//!
//! * **inspect** (the site's mode, or any rule, is `inspect`) — a quinn endpoint with the
//!   listener certificate and ALPN `h3`. Every request on every connection goes through
//!   [`crate::proxy::handle`], the same function as HTTPS over TCP (decision, WAF, contract,
//!   upstream, audit). A connection whose server name resolves to another mode is closed at
//!   once with `H3_REQUEST_REJECTED` (and audited).
//! * **block** — no socket is bound: the kernel answers every datagram with ICMP port
//!   unreachable, which QUIC clients take as an immediate failure and fall back to TCP.
//! * **drop** — a socket is bound and every datagram is read and discarded (comparison only).
//!
//! A policy without a `quic` block binds nothing and leaves `Alt-Svc` alone, as before. With a
//! `quic` block, answers on the TCP path carry `Alt-Svc: h3=":<port>"` when the request's host
//! resolves to `inspect` and the HTTP/3 endpoint is up; otherwise `h3` entries of the upstream's
//! `Alt-Svc` are removed so clients stop trying QUIC.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use sase_model::audit::{Decision, EventKind};
use sase_model::policy::Policy;
use sase_model::quic::{QuicDetails, QuicMode, QuicPolicy};
use sase_model::{AuditEvent, Reason};

use crate::proxy::{new_reference, now_ms, Edge};

/// UDP port of the HTTP/3 endpoint while it serves (0 when it does not).
static H3_PORT: AtomicU16 = AtomicU16::new(0);

/// HTTP/3 error code `H3_REQUEST_REJECTED` (RFC 9114 §8.1), used to close refused connections.
const H3_REQUEST_REJECTED: u32 = 0x010b;

/// The QUIC part of a policy, compiled once per bundle.
#[derive(Debug, Clone, Default)]
pub struct QuicPlan {
    /// The policy's `quic` block (`None`: QUIC untouched, no UDP listener).
    pub policy: Option<QuicPolicy>,
    /// Resource names with their host names (empty: any host).
    resources: Vec<(String, Vec<String>)>,
}

/// What the published UDP port does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedState {
    /// No socket: ICMP port unreachable (`block`, or no `quic` block at all).
    Closed,
    /// HTTP/3 termination.
    Inspect,
    /// A socket that discards everything.
    Drop,
}

impl QuicPlan {
    /// Compiles the QUIC part of `policy`.
    pub fn compile(policy: &Policy) -> QuicPlan {
        QuicPlan {
            policy: policy.quic.clone(),
            resources: policy
                .resources
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    )
                })
                .collect(),
        }
    }

    /// The resource that answers `host` (without port), as the router would pick it.
    pub fn resource_for(&self, host: &str) -> Option<&str> {
        let host = host.to_ascii_lowercase();
        self.resources
            .iter()
            .find(|(_, hosts)| hosts.contains(&host))
            .or_else(|| self.resources.iter().find(|(_, hosts)| hosts.is_empty()))
            .map(|(name, _)| name.as_str())
    }

    /// The mode of a flow to `sni` on `site`; `None` without a `quic` block.
    pub fn mode(&self, site: &str, sni: Option<&str>) -> Option<QuicMode> {
        let policy = self.policy.as_ref()?;
        let resource = sni.and_then(|s| self.resource_for(s));
        Some(policy.mode_for(site, sni, resource).0)
    }

    /// What the published UDP port does on `site`.
    pub fn published_state(&self, site: &str) -> PublishedState {
        let Some(policy) = &self.policy else {
            return PublishedState::Closed;
        };
        if policy.inspects_on(site) {
            return PublishedState::Inspect;
        }
        match policy.mode_for(site, None, None).0 {
            QuicMode::Drop => PublishedState::Drop,
            _ => PublishedState::Closed,
        }
    }
}

/// Host of a request without the port (IPv6 literals keep their brackets).
fn host_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// Sets or strips `Alt-Svc` on an answer of the TCP path (see the module docs).
pub fn apply_alt_svc(edge: &Edge, host: Option<&str>, response: &mut Response<crate::proxy::Body>) {
    let Some(policy) = edge.policy.snapshot() else {
        return;
    };
    let plan = &policy.quic;
    let Some(mode) = plan.mode(&edge.identity.site_id, host.map(host_only)) else {
        return;
    };
    let port = H3_PORT.load(Ordering::Relaxed);
    let headers = response.headers_mut();
    if mode == QuicMode::Inspect && port != 0 {
        if let Ok(v) = HeaderValue::from_str(&format!("h3=\":{port}\"; ma=3600")) {
            headers.insert(header::ALT_SVC, v);
        }
        return;
    }
    // Not inspected here: no client may be told to use HTTP/3 (whoever said so).
    strip_h3(headers);
}

/// Removes the HTTP/3 entries (`h3`, `h3-29`, …) of `Alt-Svc`, keeping any others.
pub fn strip_h3(headers: &mut http::HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::ALT_SVC)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|entry| {
            let proto = entry.split('=').next().unwrap_or("").trim();
            !proto.starts_with("h3") && !entry.is_empty()
        })
        .map(str::to_string)
        .collect();
    headers.remove(header::ALT_SVC);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
            headers.insert(header::ALT_SVC, v);
        }
    }
}

/// Writes the audit event of a QUIC flow decision. Returns whether it was written.
pub fn audit_flow(edge: &Edge, reason: Reason, details: QuicDetails) -> bool {
    let event = AuditEvent {
        seq: 0,
        prev_hash: String::new(),
        ts_ms: now_ms(),
        tenant_id: edge.identity.tenant_id.clone(),
        device_id: edge.identity.device_id.clone(),
        kind: EventKind::QuicFlow,
        decision: if reason == Reason::Allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reason,
        reference: new_reference(),
        policy_version: edge.policy.snapshot().map_or(0, |p| p.version),
        identity: None,
        http: None,
        detail: None,
        waf: None,
        quic: Some(details),
        tunnel: None,
    };
    match edge.spool.append(event) {
        Ok(_) => true,
        Err(err) => {
            tracing::error!(%err, "audit spool write failed (QUIC flow)");
            false
        }
    }
}

/// The TLS configuration of the HTTP/3 endpoint: the listener certificate with ALPN `h3`.
///
/// # Errors
/// The configuration cannot be used for QUIC (no TLS 1.3 suite).
pub fn server_config(mut tls: rustls::ServerConfig) -> anyhow::Result<quinn::ServerConfig> {
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(16u32.into())
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            30_000,
        ))));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Runs the published UDP port for the life of the process: binds, serves, discards or
/// closes it as the policy in force says. `addr` with port 0 gets a port at start, kept for
/// every later bind. Returns the port at once through `port_tx`.
pub async fn run_published(
    edge: Arc<Edge>,
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    port_tx: tokio::sync::oneshot::Sender<u16>,
) {
    let config = match server_config(tls) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(%err, "HTTP/3 listener configuration refused");
            return;
        }
    };
    let mut addr = addr;
    if addr.port() == 0 {
        match std::net::UdpSocket::bind(addr).and_then(|s| s.local_addr()) {
            Ok(a) => addr = a,
            Err(err) => {
                tracing::error!(%err, %addr, "cannot reserve a UDP port");
                return;
            }
        }
    }
    let _ = port_tx.send(addr.port());
    let mut rx = edge.policy.subscribe();
    let mut current: Option<(PublishedState, tokio::task::JoinHandle<()>)> = None;
    loop {
        let wanted = edge.policy.snapshot().map_or(PublishedState::Closed, |p| {
            p.quic.published_state(&edge.identity.site_id)
        });
        if current.as_ref().map(|(s, _)| *s) != Some(wanted) {
            if let Some((_, task)) = current.take() {
                task.abort();
                let _ = task.await;
            }
            H3_PORT.store(0, Ordering::Relaxed);
            let task = match wanted {
                PublishedState::Closed => None,
                PublishedState::Drop => bind_udp(addr).await.map(|s| tokio::spawn(discard(s))),
                PublishedState::Inspect => match bind_endpoint(&config, addr).await {
                    Some(endpoint) => {
                        H3_PORT.store(addr.port(), Ordering::Relaxed);
                        Some(tokio::spawn(serve_h3(edge.clone(), endpoint)))
                    }
                    None => None,
                },
            };
            tracing::info!(state = ?wanted, %addr, "published QUIC port");
            current = task.map(|t| (wanted, t));
            if current.is_none() && wanted != PublishedState::Closed {
                // The bind failed (port taken for a moment): try again shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn bind_udp(addr: SocketAddr) -> Option<tokio::net::UdpSocket> {
    match tokio::net::UdpSocket::bind(addr).await {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(%err, %addr, "binding the QUIC port");
            None
        }
    }
}

async fn bind_endpoint(config: &quinn::ServerConfig, addr: SocketAddr) -> Option<quinn::Endpoint> {
    match quinn::Endpoint::server(config.clone(), addr) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!(%err, %addr, "binding the HTTP/3 endpoint");
            None
        }
    }
}

async fn discard(socket: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    while socket.recv_from(&mut buf).await.is_ok() {}
}

/// Closes the endpoint when the serving task is aborted (policy change).
struct CloseOnDrop(quinn::Endpoint);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(quinn::VarInt::from_u32(0), b"policy changed");
    }
}

async fn serve_h3(edge: Arc<Edge>, endpoint: quinn::Endpoint) {
    let guard = CloseOnDrop(endpoint);
    while let Some(incoming) = guard.0.accept().await {
        let edge = edge.clone();
        tokio::spawn(async move {
            let client = incoming.remote_address();
            let mut connecting = match incoming.accept() {
                Ok(c) => c,
                Err(err) => {
                    tracing::debug!(%client, %err, "QUIC accept failed");
                    return;
                }
            };
            let (sni, alpn) = match connecting.handshake_data().await {
                Ok(data) => match data.downcast::<quinn::crypto::rustls::HandshakeData>() {
                    Ok(hd) => (
                        hd.server_name.map(|s| s.to_ascii_lowercase()),
                        hd.protocol
                            .map(|p| String::from_utf8_lossy(&p).into_owned())
                            .into_iter()
                            .collect::<Vec<_>>(),
                    ),
                    Err(_) => (None, Vec::new()),
                },
                Err(err) => {
                    tracing::debug!(%client, %err, "QUIC handshake failed");
                    return;
                }
            };
            let mode = edge
                .policy
                .snapshot()
                .and_then(|p| p.quic.mode(&edge.identity.site_id, sni.as_deref()))
                .unwrap_or(QuicMode::Block);
            let mut details = QuicDetails {
                sni: sni.clone().unwrap_or_default(),
                alpn,
                // quinn speaks QUIC v1 only.
                version: "v1".into(),
                mode: mode.as_str().into(),
                verdict: "inspected".into(),
                client_ip: client.ip().to_string(),
            };
            let Ok(connection) = connecting.await else {
                return;
            };
            if mode != QuicMode::Inspect {
                details.verdict = "refused".into();
                let reason = match mode {
                    QuicMode::Drop => Reason::QuicDropped,
                    QuicMode::SniFilter => Reason::QuicSniRefused,
                    _ => Reason::QuicBlocked,
                };
                audit_flow(&edge, reason, details);
                connection.close(
                    quinn::VarInt::from_u32(H3_REQUEST_REJECTED),
                    b"not inspected here",
                );
                return;
            }
            audit_flow(&edge, Reason::Allowed, details);
            serve_connection(edge, connection, client).await;
        });
    }
}

async fn serve_connection(edge: Arc<Edge>, connection: quinn::Connection, client: SocketAddr) {
    let mut h3 = match h3::server::builder()
        .max_field_section_size(64 * 1024)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    {
        Ok(h3) => h3,
        Err(err) => {
            tracing::debug!(%client, %err, "HTTP/3 connection setup failed");
            return;
        }
    };
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let edge = edge.clone();
                tokio::spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => serve_request(edge, client, req, stream).await,
                        Err(err) => tracing::debug!(%client, %err, "HTTP/3 request refused"),
                    }
                });
            }
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(%client, %err, "HTTP/3 connection ended");
                return;
            }
        }
    }
}

/// A request body read from an HTTP/3 stream by a task, handed over through a channel (so the
/// proxy's body limits and timeouts apply unchanged).
pub struct H3Body {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl HttpBody for H3Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type H3Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn serve_request(edge: Arc<Edge>, client: SocketAddr, req: Request<()>, stream: H3Stream) {
    let (mut send, mut recv) = stream.split();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let reader = tokio::spawn(async move {
        loop {
            match recv.recv_data().await {
                Ok(Some(mut chunk)) => {
                    let bytes = chunk.copy_to_bytes(chunk.remaining());
                    if tx.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
                    return;
                }
            }
        }
    });
    let (parts, ()) = req.into_parts();
    let req = Request::from_parts(parts, H3Body { rx });
    let Ok(response) = crate::proxy::handle(edge, client, true, req).await;
    reader.abort();
    let (mut head, mut body) = response.into_parts();
    // Connection-specific fields are not allowed in HTTP/3 (RFC 9114 §4.2).
    for name in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
        head.headers.remove(name);
    }
    if let Err(err) = send.send_response(Response::from_parts(head, ())).await {
        tracing::debug!(%client, %err, "HTTP/3 response head not sent");
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => {
                    if send.send_data(data).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers).await;
                    }
                }
            },
            Err(err) => {
                tracing::debug!(%client, %err, "upstream body failed");
                return;
            }
        }
    }
    let _ = send.finish().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn plan(quic: &str) -> QuicPlan {
        let policy = Policy::parse_yaml(&format!(
            "resources:\n  - name: app\n    hosts: [app.example]\n    upstream: http://127.0.0.1:9\n    routes:\n      - {{id: r, methods: [GET], path: /, public: true}}\n  - name: rest\n    upstream: http://127.0.0.1:9\n    routes:\n      - {{id: r, methods: [GET], path: /, public: true}}\n{quic}"
        ))
        .unwrap();
        QuicPlan::compile(&policy)
    }

    #[test]
    fn no_quic_block_keeps_the_port_closed_and_alt_svc_alone() {
        let p = plan("");
        assert_eq!(p.published_state("s"), PublishedState::Closed);
        assert_eq!(p.mode("s", Some("app.example")), None);
    }

    #[test]
    fn published_state_follows_site_and_rules() {
        assert_eq!(
            plan("quic: {mode: inspect}\n").published_state("s"),
            PublishedState::Inspect
        );
        assert_eq!(
            plan("quic: {mode: block}\n").published_state("s"),
            PublishedState::Closed
        );
        assert_eq!(
            plan("quic: {mode: block, sites: {s: drop}}\n").published_state("s"),
            PublishedState::Drop
        );
        let p = plan("quic:\n  rules: [{resource: app, mode: inspect}]\n");
        assert_eq!(p.published_state("s"), PublishedState::Inspect);
        assert_eq!(p.mode("s", Some("APP.example")), Some(QuicMode::Inspect));
        assert_eq!(p.mode("s", Some("other.example")), Some(QuicMode::Block));
        assert_eq!(p.resource_for("other.example"), Some("rest"));
    }

    #[test]
    fn alt_svc_h3_entries_are_stripped() {
        let mut h = http::HeaderMap::new();
        h.append(
            header::ALT_SVC,
            HeaderValue::from_static("h3=\":443\"; ma=86400, h3-29=\":443\""),
        );
        strip_h3(&mut h);
        assert!(h.get(header::ALT_SVC).is_none());
        let mut h = http::HeaderMap::new();
        h.append(
            header::ALT_SVC,
            HeaderValue::from_static("h3=\":443\", h2=\"alt.example:443\""),
        );
        h.append(header::ALT_SVC, HeaderValue::from_static("h3-29=\":8443\""));
        strip_h3(&mut h);
        assert_eq!(
            h.get_all(header::ALT_SVC).iter().collect::<Vec<_>>(),
            vec![HeaderValue::from_static("h2=\"alt.example:443\"")]
        );
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_only("app.example:8443"), "app.example");
        assert_eq!(host_only("[::1]:443"), "[::1]");
        assert_eq!(host_only("app.example"), "app.example");
    }
}
