//! Load generator for `tests/perf/h3.sh`: the same client shape over HTTP/3 (quinn + h3) and
//! over HTTPS/TCP (hyper HTTP/1.1 on tokio-rustls), so that their requests per second through
//! the edge compare the transports and not two different clients.
//!
//! Shape: `--connections` connections opened up front (TLS/QUIC handshakes not timed), each
//! sending one `GET` at a time for `--seconds`, reading every response body to the end. Prints
//! `mode=<h3|tcp> connections=<n> seconds=<s> requests=<n> errors=<n> rps=<x>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::{Buf as _, Bytes};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt as _, Empty};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    H3,
    Tcp,
}

#[derive(Parser)]
#[command(about = "HTTP/3 vs HTTPS/TCP load through the edge, same client shape")]
struct Args {
    /// Transport.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Address to connect to (the edge's UDP port for h3, its HTTPS listener for tcp).
    #[arg(long)]
    addr: SocketAddr,
    /// CA certificate (PEM) the edge's listener certificate chains to.
    #[arg(long)]
    ca: PathBuf,
    /// Server name (SNI and :authority / Host).
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Request path.
    #[arg(long, default_value = "/health")]
    path: String,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured duration.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

fn tls_config(ca: &PathBuf, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(ca)?.as_slice()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

async fn run_h3(args: &Args, counters: Arc<Counters>, deadline: Instant) -> Result<()> {
    let tls = tls_config(&args.ca, b"h3")?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let uri: http::Uri = format!("https://{}{}", args.host, args.path).parse()?;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let conn = endpoint
            .connect(args.addr, &args.host)?
            .await
            .context("QUIC handshake")?;
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let counters = counters.clone();
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let result: Result<()> = async {
                    let req = http::Request::get(uri.clone()).body(())?;
                    let mut stream = send.send_request(req).await?;
                    stream.finish().await?;
                    let resp = stream.recv_response().await?;
                    while let Some(mut chunk) = stream.recv_data().await? {
                        chunk.advance(chunk.remaining());
                    }
                    if resp.status() != http::StatusCode::OK {
                        bail!("status {}", resp.status());
                    }
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => counters.ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counters.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    endpoint.close(0u32.into(), b"done");
    Ok(())
}

async fn run_tcp(args: &Args, counters: Arc<Counters>, deadline: Instant) -> Result<()> {
    let tls = Arc::new(tls_config(&args.ca, b"http/1.1")?);
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls::pki_types::ServerName::try_from(args.host.clone())?;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let tcp = tokio::net::TcpStream::connect(args.addr).await?;
        tcp.set_nodelay(true)?;
        let stream = connector.connect(name.clone(), tcp).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(conn);
        let counters = counters.clone();
        let host = args.host.clone();
        let path = args.path.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let result: Result<()> = async {
                    send.ready().await?;
                    let req = http::Request::get(path.as_str())
                        .header(http::header::HOST, host.as_str())
                        .body(Empty::new())?;
                    let resp = send.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    if status != http::StatusCode::OK {
                        bail!("status {status}");
                    }
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => counters.ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        // A broken HTTP/1.1 connection does not recover: stop this worker.
                        if send.is_closed() {
                            return;
                        }
                        0
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.seconds <= 0.0 {
        return Err(anyhow!("connections and seconds must be positive"));
    }
    let counters = Arc::new(Counters {
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    // Connections are opened before the clock starts; the deadline covers requests only.
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds) + Duration::from_secs(2);
    let measured_from = Arc::new(std::sync::Mutex::new(None::<(Instant, u64)>));
    {
        // Sample the counter once every connection is up (2 s grace for handshakes).
        let counters = counters.clone();
        let measured_from = measured_from.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((started + Duration::from_secs(2)).into()).await;
            if let Ok(mut m) = measured_from.lock() {
                *m = Some((Instant::now(), counters.ok.load(Ordering::Relaxed)));
            }
        });
    }
    match args.mode {
        Mode::H3 => run_h3(&args, counters.clone(), deadline).await?,
        Mode::Tcp => run_tcp(&args, counters.clone(), deadline).await?,
    }
    let end = Instant::now();
    let ok = counters.ok.load(Ordering::Relaxed);
    let (from, base) = measured_from
        .lock()
        .ok()
        .and_then(|m| *m)
        .ok_or_else(|| anyhow!("run ended before the measurement started"))?;
    let secs = end.duration_since(from).as_secs_f64();
    let requests = ok - base;
    println!(
        "mode={} connections={} seconds={:.1} requests={} errors={} rps={:.1}",
        match args.mode {
            Mode::H3 => "h3",
            Mode::Tcp => "tcp",
        },
        args.connections,
        secs,
        requests,
        counters.errors.load(Ordering::Relaxed),
        requests as f64 / secs
    );
    Ok(())
}
