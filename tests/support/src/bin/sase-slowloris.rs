//! Keep-alive capacity and slowloris resistance of the edge (issue 4, "under load"), against the
//! real binaries: a control plane and an enrolled edge (WAF off: this measures connection
//! handling, the WAF is measured by tests/perf/waf.sh) in front of the demo app.
//!
//! 1. Opens `--keepalive` HTTP/1.1 keep-alive connections from `--keepalive-ips` loopback
//!    addresses (127.0.1.x); each sends a request at once and then one every
//!    `--interval-secs` (jittered) on the same connection until the end. A connection counts as
//!    held when every one of its requests got 200 on that one connection.
//! 2. Once they are all open, slowloris attackers from `--attack-ips` other addresses
//!    (127.0.2.x) each keep `--attackers-per-ip` connections busy: half send a request head one
//!    header line every 5 s and never finish it (slow headers), half send a complete head with
//!    `Content-Length: 1000000` and then one body byte every 2 s (slow body); whenever the edge
//!    closes one, it is opened again.
//! 3. Meanwhile a legitimate client (127.0.0.1) opens a fresh connection `--legit-rps` times a
//!    second and sends one request (5 s timeout): its success rate and latency are the figures.
//!
//! Ends with `keepalive_conns=<held> slowloris_legit_ok=<pct>` and fails when fewer than
//! `--keepalive` connections were held or the legitimate success rate is under `--min-ok-pct`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use sase_testkit::stack::Stack;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[derive(Debug, Parser)]
#[command(about = "10,000 keep-alive connections and slowloris against the edge")]
struct Args {
    /// Directory holding the sase-control and sase-edge binaries.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    work_dir: PathBuf,
    /// Keep-alive connections to hold.
    #[arg(long, default_value_t = 10_000)]
    keepalive: usize,
    /// Source addresses the keep-alive connections come from.
    #[arg(long, default_value_t = 20)]
    keepalive_ips: usize,
    /// Seconds between two requests of one keep-alive connection.
    #[arg(long, default_value_t = 10)]
    interval_secs: u64,
    /// Seconds of attack (and of legitimate measurement).
    #[arg(long, default_value_t = 40)]
    duration_secs: u64,
    /// Attacking source addresses.
    #[arg(long, default_value_t = 4)]
    attack_ips: usize,
    /// Slow connections each attacking address keeps open (or tries to).
    #[arg(long, default_value_t = 1500)]
    attackers_per_ip: usize,
    /// Requests per second of the legitimate client.
    #[arg(long, default_value_t = 20)]
    legit_rps: u64,
    /// Smallest acceptable success rate of the legitimate client, in percent.
    #[arg(long, default_value_t = 99.0)]
    min_ok_pct: f64,
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body); returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            bail!("head too large");
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body = buf.split_off(head_end);
    match (length, chunked) {
        (Some(n), _) => {
            while body.len() < n {
                let r = stream.read(&mut chunk).await?;
                if r == 0 {
                    bail!("closed in body");
                }
                body.extend_from_slice(&chunk[..r]);
            }
        }
        (None, true) => {
            while !body.windows(5).any(|w| w == b"0\r\n\r\n") {
                let r = stream.read(&mut chunk).await?;
                if r == 0 {
                    bail!("closed in chunked body");
                }
                body.extend_from_slice(&chunk[..r]);
            }
        }
        (None, false) => {}
    }
    Ok(status)
}

async fn connect_from(source: Ipv4Addr, edge: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(edge).await
}

const REQUEST: &[u8] =
    b"GET /health HTTP/1.1\r\nHost: app.example\r\nUser-Agent: keepalive\r\n\r\n";

#[derive(Default)]
struct Counters {
    keepalive_open: AtomicU64,
    keepalive_open_failed: AtomicU64,
    keepalive_requests: AtomicU64,
    keepalive_failed_conns: AtomicU64,
    attack_opened: AtomicU64,
    attack_closed_early: AtomicU64,
    attack_connect_failed: AtomicU64,
}

async fn one_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    if stream.write_all(REQUEST).await.is_err() {
        return false;
    }
    matches!(read_response(stream, buf).await, Ok(200))
}

/// One keep-alive client: opens, requests, then a request every `interval` until `stop`.
async fn keepalive_client(
    source: Ipv4Addr,
    edge: SocketAddr,
    interval: Duration,
    first_delay: Duration,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> bool {
    let Ok(mut stream) = connect_from(source, edge).await else {
        counters
            .keepalive_open_failed
            .fetch_add(1, Ordering::Relaxed);
        return false;
    };
    let mut buf = Vec::with_capacity(1024);
    if !one_request(&mut stream, &mut buf).await {
        counters
            .keepalive_open_failed
            .fetch_add(1, Ordering::Relaxed);
        return false;
    }
    counters.keepalive_open.fetch_add(1, Ordering::Relaxed);
    counters.keepalive_requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(first_delay).await;
    while !stop.load(Ordering::Relaxed) {
        if !one_request(&mut stream, &mut buf).await {
            counters
                .keepalive_failed_conns
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        counters.keepalive_requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(interval).await;
    }
    true
}

/// One slowloris attacker slot: keeps one slow connection open, reopening it when closed.
async fn attacker(
    source: Ipv4Addr,
    edge: SocketAddr,
    slow_body: bool,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match connect_from(source, edge).await {
            Ok(s) => s,
            Err(_) => {
                counters
                    .attack_connect_failed
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        counters.attack_opened.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let head: &[u8] = if slow_body {
            b"POST /submit HTTP/1.1\r\nHost: app.example\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
        } else {
            b"GET /health HTTP/1.1\r\nHost: app.example\r\n"
        };
        if stream.write_all(head).await.is_err() {
            continue;
        }
        let mut i = 0u64;
        let mut probe = [0u8; 512];
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let wait = if slow_body { 2 } else { 5 };
            // Watch for the edge closing (or answering) while waiting.
            match tokio::time::timeout(Duration::from_secs(wait), stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => break, // an answer (timeout refusal): the edge is done with it
                Err(_) => {}
            }
            let piece: Vec<u8> = if slow_body {
                b"a".to_vec()
            } else {
                format!("X-Slow-{i}: {i}\r\n").into_bytes()
            };
            if stream.write_all(&piece).await.is_err() {
                break;
            }
            i += 1;
        }
        if opened.elapsed() < Duration::from_millis(100) {
            counters.attack_closed_early.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = format!("http://{}", listener.local_addr()?);
    tokio::spawn(sase_testkit::demo_app::serve(
        listener,
        std::future::pending::<()>(),
    ));
    let policy = json!({
        "resources": [{
            "name": "app", "upstream": app, "waf": {"mode": "off"},
            "routes": [
                {"id": "health", "methods": ["GET"], "path": "/health", "public": true},
                {"id": "submit", "methods": ["POST"], "path": "/submit", "public": true}
            ]
        }]
    });
    let stack = Stack::start(&args.bin_dir, &args.work_dir, None, &policy, "127.0.0.1:0").await?;
    let edge = stack.edge_addr;
    let edge_pid = stack.edge_pid()?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));

    // 1. Keep-alive connections, opened in waves.
    let started = Instant::now();
    let interval = Duration::from_secs(args.interval_secs);
    let mut keepalive = tokio::task::JoinSet::new();
    for i in 0..args.keepalive {
        let ip = Ipv4Addr::new(
            127,
            0,
            1,
            u8::try_from(1 + i % args.keepalive_ips).unwrap_or(1),
        );
        let jitter = Duration::from_millis((i as u64 * 7919) % (args.interval_secs * 1000).max(1));
        keepalive.spawn(keepalive_client(
            ip,
            edge,
            interval,
            jitter,
            stop.clone(),
            counters.clone(),
        ));
        if i % 500 == 499 {
            // Let the edge accept a wave before the next.
            while counters.keepalive_open.load(Ordering::Relaxed)
                + counters.keepalive_open_failed.load(Ordering::Relaxed)
                + 200
                < i as u64
                && started.elapsed() < Duration::from_secs(120)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ((counters.keepalive_open.load(Ordering::Relaxed)
        + counters.keepalive_open_failed.load(Ordering::Relaxed)) as usize)
        < args.keepalive
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = counters.keepalive_open.load(Ordering::Relaxed);
    let fds = std::fs::read_dir(format!("/proc/{edge_pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let open_failed = counters.keepalive_open_failed.load(Ordering::Relaxed);
    println!(
        "keep-alive: {opened} of {} connections open ({open_failed} failed to open) after {:.1} s (edge holds {fds} descriptors)",
        args.keepalive,
        started.elapsed().as_secs_f64()
    );

    // 2. Attackers.
    let mut attackers = tokio::task::JoinSet::new();
    for a in 0..args.attack_ips {
        let ip = Ipv4Addr::new(127, 0, 2, u8::try_from(1 + a).unwrap_or(1));
        for j in 0..args.attackers_per_ip {
            attackers.spawn(attacker(
                ip,
                edge,
                j % 2 == 1,
                stop.clone(),
                counters.clone(),
            ));
        }
    }
    // Let the attack build up before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fds_attack = std::fs::read_dir(format!("/proc/{edge_pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);

    // 3. The legitimate client.
    let mut latencies = Vec::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let measure_until = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.legit_rps.max(1)));
    let mut legit = tokio::task::JoinSet::new();
    while Instant::now() < measure_until {
        tick.tick().await;
        legit.spawn(async move {
            let t = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(5), async {
                let mut s = connect_from(Ipv4Addr::LOCALHOST, edge).await?;
                s.write_all(
                    b"GET /health HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
                )
                .await?;
                let mut buf = Vec::new();
                read_response(&mut s, &mut buf).await
            })
            .await;
            (
                matches!(result, Ok(Ok(200))),
                t.elapsed().as_secs_f64() * 1000.0,
            )
        });
        while let Some(done) = legit.try_join_next() {
            if let Ok((good, ms)) = done {
                if good {
                    ok += 1;
                    latencies.push(ms);
                } else {
                    failed += 1;
                }
            }
        }
    }
    while let Some(done) = legit.join_next().await {
        if let Ok((good, ms)) = done {
            if good {
                ok += 1;
                latencies.push(ms);
            } else {
                failed += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut held = 0usize;
    let wind_down = Instant::now() + interval + Duration::from_secs(15);
    while let Ok(Some(done)) =
        tokio::time::timeout_at(wind_down.into(), keepalive.join_next()).await
    {
        if matches!(done, Ok(true)) {
            held += 1;
        }
    }
    attackers.abort_all();

    latencies.sort_by(f64::total_cmp);
    let total = ok + failed;
    let pct = if total == 0 {
        0.0
    } else {
        ok as f64 * 100.0 / total as f64
    };
    let edge_log = std::fs::read_to_string(args.work_dir.join("edge.log")).unwrap_or_default();
    let cap_warnings = edge_log.matches("connection cap reached").count();
    println!(
        "attack: {} addresses x {} slow connections (half slow headers, half slow body): {} opened, {} closed by the edge within 100 ms (connection cap), {} connects failed; edge descriptors under attack {fds_attack}; cap warnings logged {cap_warnings}",
        args.attack_ips,
        args.attackers_per_ip,
        counters.attack_opened.load(Ordering::Relaxed),
        counters.attack_closed_early.load(Ordering::Relaxed),
        counters.attack_connect_failed.load(Ordering::Relaxed),
    );
    println!(
        "keep-alive: {held} of {} connections held to the end, {} requests on them, {} connections failed",
        args.keepalive,
        counters.keepalive_requests.load(Ordering::Relaxed),
        counters.keepalive_failed_conns.load(Ordering::Relaxed)
    );
    println!(
        "legitimate client: {ok} ok, {failed} failed ({pct:.2} %), latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    drop(stack);
    println!("keepalive_conns={held} slowloris_legit_ok={pct:.2}");
    if held < args.keepalive {
        bail!(
            "only {held} of {} keep-alive connections held",
            args.keepalive
        );
    }
    if pct < args.min_ok_pct {
        bail!("legitimate success {pct:.2} % < {} %", args.min_ok_pct);
    }
    Ok(())
}
