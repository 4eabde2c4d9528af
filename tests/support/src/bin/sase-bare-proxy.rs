//! A bare reverse proxy with nothing to enforce, for `tests/perf/gateway.sh`
//! (`GATEWAY_PERF_BARE=1`): what the Rust stack the edge is built on costs per request on this
//! machine, measured in the same run as nginx and the edge. It tells how much of the edge's gap
//! to nginx is the stack (hyper, tokio) and its threading, and how much is the edge's own work
//! per request (audit record, checks, logging context).
//!
//! Not a product: it forwards every request to one upstream, collects both bodies in memory (as
//! the edge does) and ends a connection on anything it does not handle. Modes:
//! * `hyper`: the edge's structure — one multi-thread runtime, hyper-util's `auto` server
//!   (HTTP/1.1 and HTTP/2) and its pooled client;
//! * `hyper-per-core`: one current-thread runtime per thread, each with its own `SO_REUSEPORT`
//!   listener and pooled client, hyper's HTTP/1.1 server (nginx's process model);
//! * `httparse-per-core`: the same threads, HTTP/1.1 framing written here on `httparse` with one
//!   upstream connection per client connection: bodies with `Content-Length` only (answers
//!   must carry one), no chunked encoding, no interim answers, no upgrades — the floor a
//!   hand-written HTTP/1.1 path could reach.

use std::net::SocketAddr;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Hyper,
    HyperPerCore,
    HttparsePerCore,
}

#[derive(Parser)]
#[command(about = "A bare reverse proxy (nothing enforced), the baseline of tests/perf/gateway.sh")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream (plain HTTP/1.1).
    #[arg(long)]
    upstream: SocketAddr,
    /// Threads (runtime workers, or runtimes per core); default: the number of CPUs.
    #[arg(long)]
    threads: Option<usize>,
}

type PooledClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

fn main() -> Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    match args.mode {
        Mode::Hyper => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
            .block_on(async {
                let listener = TcpListener::bind(args.listen).await?;
                println!("listening {}", listener.local_addr()?);
                serve_hyper(listener, args.upstream, true).await
            }),
        Mode::HyperPerCore | Mode::HttparsePerCore => {
            // Each thread's runtime and listener are made here, before the threads start, so
            // that the ready line means every listener accepts.
            let mut per_thread = Vec::new();
            for _ in 0..threads {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let listener = runtime.block_on(async { reuseport_listener(args.listen) })?;
                per_thread.push((runtime, listener));
            }
            println!("listening {}", args.listen);
            let handles: Vec<_> = per_thread
                .into_iter()
                .map(|(runtime, listener)| {
                    let (mode, upstream) = (args.mode, args.upstream);
                    std::thread::spawn(move || -> Result<()> {
                        runtime.block_on(async move {
                            if mode == Mode::HyperPerCore {
                                serve_hyper(listener, upstream, false).await
                            } else {
                                serve_httparse(listener, upstream).await
                            }
                        })
                    })
                })
                .collect();
            for handle in handles {
                match handle.join() {
                    Ok(result) => result?,
                    Err(_) => bail!("a proxy thread panicked"),
                }
            }
            Ok(())
        }
    }
}

/// A listener with `SO_REUSEPORT`, so that several threads each accept on their own (call it
/// inside the runtime that will poll it).
fn reuseport_listener(addr: SocketAddr) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}

async fn serve_hyper(listener: TcpListener, upstream: SocketAddr, auto: bool) -> Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: PooledClient =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let base = format!("http://{upstream}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                forward_pooled(client.clone(), base.clone(), req)
            });
            let io = TokioIo::new(tcp);
            // A connection error only ends that connection.
            let _ = if auto {
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                    .map_err(Into::into)
            };
        });
    }
}

async fn forward_pooled(
    client: PooledClient,
    base: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut upstream_req = Request::builder()
        .method(parts.method)
        .uri(format!("{base}{target}"))
        .body(Full::new(body))?;
    *upstream_req.headers_mut() = parts.headers;
    let answer = client.request(upstream_req).await?;
    let (head, body) = answer.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(head, Full::new(body)))
}

async fn serve_httparse(listener: TcpListener, upstream: SocketAddr) -> Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            // A connection error only ends that connection.
            let _ = relay_httparse(tcp, upstream).await;
        });
    }
}

/// Headers read per message at most.
const MAX_HEADERS: usize = 64;
/// Largest message head or body accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// One client connection: each request is passed to the upstream connection as it came, and
/// each answer back as it came (keep-alive on both sides).
async fn relay_httparse(mut client: TcpStream, upstream: SocketAddr) -> Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let mut from_client = Vec::with_capacity(16 * 1024);
    let mut from_server = Vec::with_capacity(16 * 1024);
    loop {
        let Some(len) = read_message(&mut client, &mut from_client, Side::Request).await? else {
            return Ok(());
        };
        server.write_all(&from_client[..len]).await?;
        from_client.drain(..len);
        let Some(len) = read_message(&mut server, &mut from_server, Side::Response).await? else {
            return Ok(());
        };
        client.write_all(&from_server[..len]).await?;
        from_server.drain(..len);
    }
}

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// Reads until `buf` starts with one whole message; returns its length, or `None` when the
/// peer closed cleanly before a message began.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    side: Side,
) -> Result<Option<usize>> {
    loop {
        if let Some((head, body)) = parse_head(buf, side)? {
            let total = head + body;
            if total > MAX_MESSAGE {
                bail!("message of {total} bytes");
            }
            while buf.len() < total {
                if stream.read_buf(buf).await? == 0 {
                    bail!("closed inside a message");
                }
            }
            return Ok(Some(total));
        }
        if buf.len() > MAX_MESSAGE {
            bail!("message head over {MAX_MESSAGE} bytes");
        }
        buf.reserve(8 * 1024);
        if stream.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("closed inside a message head");
        }
    }
}

/// The head's length and the body's (`Content-Length`), once the head is complete.
fn parse_head(buf: &[u8], side: Side) -> Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (status, headers) = match side {
        Side::Request => {
            let mut req = httparse::Request::new(&mut headers);
            (req.parse(buf)?, req.headers)
        }
        Side::Response => {
            let mut res = httparse::Response::new(&mut headers);
            (res.parse(buf)?, res.headers)
        }
    };
    let httparse::Status::Complete(head) = status else {
        return Ok(None);
    };
    let mut body = None;
    for header in headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("transfer-encoding is not handled here");
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            body = Some(std::str::from_utf8(header.value)?.trim().parse()?);
        }
    }
    match (side, body) {
        (_, Some(body)) => Ok(Some((head, body))),
        // A request without a length has no body.
        (Side::Request, None) => Ok(Some((head, 0))),
        // An answer delimited by the connection's close is not handled here.
        (Side::Response, None) => bail!("answer without content-length"),
    }
}
