//! The tunnel HTTP listener: where the shell's NAT ([`sase_tunnel::nat`]) sends tunnel flows to
//! plain-HTTP resources. Bound to the edge's tunnel address (`--tunnel-http-port`), it serves
//! HTTP/1.1 with the same pipeline as the published listener ([`crate::proxy::handle`]: WAF,
//! gateway, upstream, audit). For every request it looks the client address up in the peer
//! table of the policy in force (none: refused as `unknown_peer`) and the connection's original
//! destination in the NAT table (which resource), and hands both to the proxy as a
//! [`TunnelCaller`] request extension — the peer's identity is the principal, no token needed.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};

use super::{TunnelCaller, TunnelShell};
use crate::proxy::Edge;

impl TunnelShell {
    /// Who sent a request from `client`, looked up now (a peer removed from the policy is
    /// refused on its next request, even on an open connection).
    pub fn caller(&self, client: SocketAddr) -> TunnelCaller {
        let peer = super::lock(&self.peers).by_address(client.ip());
        let resource = match client {
            SocketAddr::V4(v4) => {
                let nat = super::lock(&self.nat);
                nat.original_destination(v4)
                    .and_then(|dst| nat.resource_of(dst).map(str::to_string))
            }
            SocketAddr::V6(_) => None,
        };
        TunnelCaller { peer, resource }
    }
}

/// Binds the tunnel HTTP listener on the tunnel address and serves it. Called once the edge's
/// request pipeline exists; also hands the shell the spool for its audit events.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(shell: Arc<TunnelShell>, edge: Arc<Edge>) -> anyhow::Result<SocketAddrV4> {
    use anyhow::Context as _;
    let _ = shell.edge.set(edge.clone());
    let addr = super::lock(&shell.nat).listener();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the tunnel HTTP listener {addr}"))?;
    tokio::spawn(async move {
        loop {
            let (tcp, client) = match listener.accept().await {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "tunnel HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (edge, shell) = (edge.clone(), shell.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(shell.caller(client));
                        crate::proxy::handle(edge.clone(), client, false, req)
                    },
                );
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(15))
                    .max_buf_size(128 * 1024);
                if let Err(err) = builder.serve_connection(TokioIo::new(tcp), service).await {
                    tracing::debug!(%client, %err, "tunnel HTTP connection ended with error");
                }
            });
        }
    });
    Ok(addr)
}
