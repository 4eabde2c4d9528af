//! The control-plane side of `tests/e2e/ztna.sh` and `tests/perf/tunnel.sh`: starts a real
//! control plane and an enrolled `sase-edge` with its tunnel listener (through
//! [`sase_testkit::stack::Stack`], so the peers reach the edge in a signed bundle), then takes
//! commands on standard input, one per line, and answers on standard output:
//!
//! * `put <policy.json>` — publishes the policy; prints `pushed unix_ms=<ms before the PUT>
//!   version=<v>`, then `applied version=<v> ms=<from the PUT to the device's report>`;
//! * `api <METHOD> <path> [<body.json>]` — an admin API call (identity binding: users, rules,
//!   revocations); prints `api sent_unix_ms=<ms before the call> status=<code> body=<JSON on
//!   one line>`;
//! * `info` — prints `info tenant=<id> cp=<control-plane URL>`;
//! * `quit` (or end of input, or SIGTERM) — stops the edge and the control plane.
//!
//! Run it inside the edge's network namespace (`ip netns exec`): the control plane listens on
//! that namespace's loopback and the edge's tunnel socket and TUN device live there too.
//! Prints `ready tunnel_public_key=<b64> edge_http=<addr>` once the first policy is in force.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use sase_testkit::stack::Stack;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// Directory with sase-control and sase-edge.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Work directory (logs, data dirs).
    #[arg(long)]
    work_dir: PathBuf,
    /// The first policy (JSON).
    #[arg(long)]
    policy: PathBuf,
    /// More arguments for `sase-edge run` (e.g. `--tunnel-listen=10.0.0.1:51820`).
    #[arg(long = "edge-arg", allow_hyphen_values = true)]
    edge_args: Vec<String>,
}

fn read_policy(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Registered first, so that a SIGTERM during start-up too ends in the stack being stopped
    // (it is seen by the command loop below) instead of killing this process mid-way.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    std::fs::create_dir_all(&args.work_dir)?;
    let policy = read_policy(&args.policy)?;
    let stack = Stack::start_with_edge_args(
        &args.bin_dir,
        &args.work_dir,
        None,
        &policy,
        "127.0.0.1:0",
        &args.edge_args,
    )
    .await?;
    // The tunnel writes its status (with its public key) at start.
    let status_path = args.work_dir.join("edge").join("tunnel-status.json");
    let started = Instant::now();
    let key = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if let Some(k) = v["public_key"].as_str() {
                    break k.to_string();
                }
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("no tunnel status at {}", status_path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "ready tunnel_public_key={key} edge_http={}",
        stack.edge_addr
    );
    // Standard input is read on a thread of its own, so that SIGTERM can end the loop too and
    // the stack is still stopped (a SIGTERM's default action would kill this process and leave
    // its edge and control plane running).
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        let line = tokio::select! {
            line = lines.recv() => match line {
                Some(line) => line?,
                None => break,
            },
            _ = terminate.recv() => break,
        };
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("put"), Some(file)) => {
                let policy = read_policy(std::path::Path::new(file))?;
                let pushed = unix_ms();
                let t = Instant::now();
                let version = stack.put_policy(&policy).await?;
                println!("pushed unix_ms={pushed} version={version}");
                stack
                    .wait_applied(version, Duration::from_secs(30))
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                println!("applied version={version} ms={}", t.elapsed().as_millis());
            }
            (Some("api"), Some(method)) => {
                let path = words.next().unwrap_or("/");
                let body = words
                    .next()
                    .map(|f| read_policy(std::path::Path::new(f)))
                    .transpose()?;
                let method = reqwest::Method::from_bytes(method.as_bytes())?;
                let sent = unix_ms();
                let (status, answer) = stack.api_json(method, path, body).await?;
                println!(
                    "api sent_unix_ms={sent} status={} body={}",
                    status.as_u16(),
                    serde_json::to_string(&answer)?
                );
            }
            (Some("info"), _) => println!("info tenant={} cp={}", stack.tenant_id, stack.cp),
            (Some("quit"), _) => break,
            (None, _) => {}
            _ => println!("error unknown command {line:?}"),
        }
    }
    drop(stack);
    Ok(())
}
