//! Connection caps of the published listeners: at most `max_per_ip` open connections per client
//! address (IPv6 by /64) and `max_total` in all. Slowloris clients hold connections open by
//! sending their headers or body a byte at a time; hyper's header read timeout (15 s) and the
//! body timeout end each such connection, and these caps stop one address from holding so many
//! meanwhile that the edge runs out of descriptors (or memory) for everybody else. A connection
//! over a cap is closed at once, before any byte is read; refusals are counted (and logged at
//! most once a second), not audited one by one: a flood of them must not flood the audit trail.
//!
//! [`SharedTcp`] lets the listener keep its own handle on a connection's socket while hyper
//! serves it (for the lingering close) without a second file descriptor: at 10,000 open
//! connections a duplicated descriptor per connection doubled the edge's descriptor use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Default of [`ConnectionLimits::max_per_ip`].
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// Default of [`ConnectionLimits::max_total`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;

/// Open connections per client address and in total.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_per_ip: usize,
    max_total: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    refused: AtomicU64,
    last_warning_ms: AtomicI64,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits::new(DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_CONNECTIONS)
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Length of the published listeners' accept queues (tokio's `TcpListener::bind` asks for
/// 1024). While attackers open and reopen connections faster than the caps close them, a short
/// queue overflows and the kernel drops SYNs of legitimate clients too, who retry only after
/// one second (then three): measured as a 2 s p99 for the legitimate client of
/// `tests/perf/slowloris.sh`. The kernel still caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a published listener (address reuse on, [`LISTEN_BACKLOG`]).
///
/// # Errors
/// When the address cannot be bound.
pub fn bind_published(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    bind_published_socket(addr)?.listen(LISTEN_BACKLOG)
}

/// The bind step of [`bind_published`] alone (address reuse on), which needs no tokio runtime:
/// `sase-edge run` binds its published ports with it before dropping its capabilities
/// (`crate::privs`), then listens with [`LISTEN_BACKLOG`] inside the runtime.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind_published_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// The soft limit on open file descriptors of this process (`/proc/self/limits`), if known.
pub fn descriptor_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The total cap that leaves room below the descriptor limit for everything else the edge opens
/// (upstream connections, the spool, the channel): a tenth of it, at least 64. Accepting past
/// the limit would fail with `EMFILE` for every client alike; refusing at the cap keeps
/// serving those already connected.
pub fn total_within(configured: usize, descriptor_limit: Option<usize>) -> usize {
    match descriptor_limit {
        Some(limit) => configured.min(limit.saturating_sub((limit / 10).max(64))),
        None => configured,
    }
}

/// The address a cap counts: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl ConnectionLimits {
    /// Caps of `max_per_ip` per address and `max_total` in all (each at least 1).
    pub fn new(max_per_ip: usize, max_total: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_per_ip: max_per_ip.max(1),
            max_total: max_total.max(1),
            per_ip: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            last_warning_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Admits a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now_ms: i64) -> Option<ConnectionSlot> {
        let key = key(ip);
        let admitted = {
            let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let open = map.entry(key).or_insert(0);
            if *open >= self.max_per_ip || self.total.load(Ordering::Relaxed) >= self.max_total {
                if *open == 0 {
                    map.remove(&key);
                }
                false
            } else {
                *open += 1;
                self.total.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        if admitted {
            return Some(ConnectionSlot {
                limits: self.clone(),
                key,
            });
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self
                .last_warning_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                client = %key,
                refused,
                max_per_ip = self.max_per_ip,
                max_total = self.max_total,
                "connection refused: connection cap reached"
            );
        }
        None
    }

    /// The caps in force: (per address, total).
    pub fn caps(&self) -> (usize, usize) {
        (self.max_per_ip, self.max_total)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// A TCP connection shared between hyper (through this handle) and the listener (through the
/// other `Arc`), one descriptor for both. Reads and writes go through tokio's readiness API;
/// `poll_shutdown` does nothing: the listener half-closes the socket itself once hyper is done
/// (`lingering_close`).
#[derive(Debug, Clone)]
pub struct SharedTcp(pub Arc<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for SharedTcp {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            let room = buf.remaining();
            let mut drained = false;
            // A short read drained the socket: its readiness is forgotten at once, as tokio's
            // own `TcpStream` does, so that the next read waits for the next event instead of
            // costing a `recvfrom` that fails with EAGAIN (one per request on a keep-alive
            // connection). The outer `try_io` clears only the readiness it saw before the read
            // (its closure answers WouldBlock for that): data arriving after it raise a new
            // event that is kept.
            let read = self.0.try_io(tokio::io::Interest::READABLE, || {
                // Into the unfilled part as it is (`ReadBuf` is a `BufMut`): zeroing hyper's
                // whole read buffer before every read cost more instructions than parsing the
                // request.
                match self.0.try_read_buf(buf) {
                    Ok(n) if n > 0 && n < room => {
                        drained = true;
                        Err(std::io::ErrorKind::WouldBlock.into())
                    }
                    other => other,
                }
            });
            match read {
                _ if drained => return std::task::Poll::Ready(Ok(())),
                Ok(_) => return std::task::Poll::Ready(Ok(())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for SharedTcp {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return std::task::Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return std::task::Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_total_and_frees_on_drop() {
        let limits = Arc::new(ConnectionLimits::new(2, 3));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = limits.admit(a, 0).expect("first");
        let a2 = limits.admit(a, 0).expect("second");
        assert!(limits.admit(a, 0).is_none(), "third from one address");
        assert_eq!(total_within(50_000, Some(20_000)), 18_000);
        assert_eq!(total_within(50_000, Some(1024)), 922);
        assert_eq!(total_within(500, Some(20_000)), 500);
        let b1 = limits.admit(b, 0).expect("another address");
        assert!(limits.admit(b, 0).is_none(), "total cap");
        assert_eq!((limits.open(), limits.refused()), (3, 2));
        drop(a1);
        assert!(limits.admit(b, 0).is_some());
        drop((a2, b1));
        // The IPv6 cap counts a /64.
        let limits = Arc::new(ConnectionLimits::new(1, 10));
        let x: IpAddr = "2001:db8::1".parse().expect("ip");
        let y: IpAddr = "2001:db8::2".parse().expect("ip");
        let z: IpAddr = "2001:db8:0:1::1".parse().expect("ip");
        let _x = limits.admit(x, 0).expect("x");
        assert!(limits.admit(y, 0).is_none());
        assert!(limits.admit(z, 0).is_some());
    }
}
