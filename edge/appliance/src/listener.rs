//! The published listeners: plain HTTP and HTTPS (rustls), HTTP/1.1 and HTTP/2, each connection
//! served by hyper with [`crate::proxy::handle`]. The HTTPS certificate is the operator's, or one
//! generated under a local CA in the data dir at first start.
//!
//! Connections are accepted (and admitted, see [`crate::ratelimit_conn`]) on the daemon's
//! runtime, then served on [`ConnectionThreads`]: one single-threaded runtime per core, handed
//! connections in turn, so that a request, its upstream exchange and its answer stay on one
//! thread (nginx's model). On the multi-threaded runtime every exchange woke the other worker
//! and moved tasks between threads: on the two-core benchmark machine the same bare hyper proxy
//! served 0.81 of nginx's requests per second that way and 0.98 with a runtime per core
//! (`tests/perf/gateway.sh`, `GATEWAY_PERF_BARE=1`; docs/PERFORMANCE.md).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use tokio::net::TcpListener;

use crate::identity::write_atomic;
use crate::proxy::{audit_refused_by_parser, handle, Edge};

/// Loads (or creates on first start) the listener certificate in `dir`: `ca.pem` (trust this in
/// clients), `listener.pem` (chain) and `listener.key`.
///
/// # Errors
/// File or generation failures.
pub fn load_or_create_listener_tls(
    dir: &Path,
    names: &[String],
) -> anyhow::Result<rustls::ServerConfig> {
    std::fs::create_dir_all(dir)?;
    let cert_path = dir.join("listener.pem");
    let key_path = dir.join("listener.key");
    if !cert_path.exists() || !key_path.exists() {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "SASE edge local CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for name in names {
            params
                .subject_alt_names
                .push(match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(name.clone().try_into()?),
                });
        }
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write_atomic(&dir.join("ca.pem"), ca.pem().as_bytes(), 0o644)?;
        write_atomic(
            &cert_path,
            format!("{}{}", cert.pem(), ca.pem()).as_bytes(),
            0o644,
        )?;
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    }
    load_tls(&cert_path, &key_path)
}

/// Builds the listener TLS configuration from PEM files.
///
/// # Errors
/// Unreadable files or a key that does not match.
pub fn load_tls(cert_path: &Path, key_path: &Path) -> anyhow::Result<rustls::ServerConfig> {
    // TLS 1.2+ with modern suites; the files are watched and reloaded (`crate::tls_reload`).
    crate::tls_reload::server_config(cert_path, key_path)
}

fn builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(15))
        .max_buf_size(128 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    builder
}

/// Single-threaded runtimes, one per thread, that serve the published listeners' connections.
pub struct ConnectionThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
}

impl ConnectionThreads {
    /// Starts `threads` runtimes, each on a thread of its own (named `sase-conn-<n>`) that runs
    /// for the rest of the process.
    ///
    /// # Errors
    /// A runtime or thread that cannot be created.
    pub fn start(threads: usize) -> std::io::Result<Arc<ConnectionThreads>> {
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("sase-conn-{index}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        }
        Ok(Arc::new(ConnectionThreads {
            handles,
            next: AtomicUsize::new(0),
        }))
    }

    /// The runtime of the next connection (in turn).
    fn next(&self) -> Option<&tokio::runtime::Handle> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.get(turn.checked_rem(self.handles.len())?)
    }
}

/// Serves the published listener; `tls` turns it into HTTPS. Connections are served on
/// `threads` when given (and it has any), else on the calling runtime.
pub async fn serve(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    edge: Arc<Edge>,
    threads: Option<Arc<ConnectionThreads>>,
) {
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Connection caps (slowloris): over a cap, closed before anything is read.
        let Some(slot) = edge
            .limiter
            .connections
            .admit(peer.ip(), crate::proxy::now_ms())
        else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let edge = edge.clone();
        let acceptor = acceptor.clone();
        match threads.as_deref().and_then(ConnectionThreads::next) {
            Some(runtime) => {
                // Registered again with the reactor of the runtime that serves it.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(err) => {
                        tracing::warn!(%peer, %err, "cannot hand a connection over");
                        continue;
                    }
                };
                runtime.spawn(async move {
                    let _slot = slot;
                    match tokio::net::TcpStream::from_std(tcp) {
                        Ok(tcp) => serve_accepted(tcp, peer, acceptor, edge).await,
                        Err(err) => tracing::warn!(%peer, %err, "cannot take a connection over"),
                    }
                });
            }
            None => {
                tokio::spawn(async move {
                    let _slot = slot;
                    serve_accepted(tcp, peer, acceptor, edge).await;
                });
            }
        }
    }
}

/// One admitted connection, from the TLS handshake (HTTPS) to its lingering close.
async fn serve_accepted(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    edge: Arc<Edge>,
) {
    // A second handle on the socket, so that it outlives hyper's (see `lingering_close`),
    // sharing its one descriptor.
    let linger = Arc::new(tcp);
    let tcp = crate::ratelimit_conn::SharedTcp(linger.clone());
    match acceptor {
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let certs = crate::mtls::peer_certificates(stream.get_ref().1);
                    serve_connection(TokioIo::new(stream), peer, true, edge, certs).await
                }
                Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => serve_connection(TokioIo::new(tcp), peer, false, edge, None).await,
    }
    // hyper has dropped its handle by now, so this one is the last.
    if let Ok(linger) = Arc::try_unwrap(linger) {
        lingering_close(linger).await;
    }
}

/// Longest time a closed connection keeps reading what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes read (and discarded) while lingering (a bound on the CPU spent; the time bound is
/// what matters).
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// Closes a connection that hyper has finished with the way nginx's `lingering_close` does
/// (RFC 9112 section 9.6): send FIN, then read and discard until the client closes (or
/// [`LINGER_TIME`] / [`LINGER_BYTES`]). Closing a socket with unread request bytes (a request
/// refused before its body was read, or one hyper could not parse) makes the kernel send RST,
/// which can destroy the answer in the client's receive buffer before the client reads it.
async fn lingering_close(mut socket: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = socket.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = [0u8; 8192];
    let mut read = 0usize;
    while read < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    tls: bool,
    edge: Arc<Edge>,
    client_certs: Option<crate::mtls::PeerCertificates>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let for_audit = edge.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            // The client certificate chain of the connection, for resources that take one.
            if let Some(certs) = &client_certs {
                req.extensions_mut().insert(certs.clone());
            }
            handle(edge.clone(), peer, tls, req)
        });
    if let Err(err) = builder().serve_connection(io, service).await {
        // A request hyper could not parse never reached `handle`: audit it here.
        let audited = audit_refused_by_parser(&for_audit, peer, err.as_ref());
        tracing::debug!(%peer, %err, audited, "connection ended with error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a task handed to the next runtime runs.
    fn thread_of_next(threads: &ConnectionThreads) -> String {
        let runtime = threads.next().expect("a runtime");
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_string));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the task ran")
            .expect("the thread is named")
    }

    #[test]
    fn connections_go_to_each_thread_in_turn() {
        let threads = ConnectionThreads::start(2).expect("threads");
        let seen: Vec<String> = (0..4).map(|_| thread_of_next(&threads)).collect();
        assert_eq!(
            seen,
            ["sase-conn-0", "sase-conn-1", "sase-conn-0", "sase-conn-1"]
        );
    }

    #[test]
    fn without_threads_connections_stay_on_the_calling_runtime() {
        let threads = ConnectionThreads::start(0).expect("no threads");
        assert!(threads.next().is_none());
    }
}
