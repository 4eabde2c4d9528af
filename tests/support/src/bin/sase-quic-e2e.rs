//! The stack under test for the QUIC evidence scripts (`tests/e2e/quic.sh`,
//! `tests/perf/quic-fallback.sh`, `tests/perf/h3.sh`): the sample upstream app, a control plane
//! and an edge enrolled with a claim code ([`sase_testkit::stack::Stack`]), the edge listening
//! on HTTP, HTTPS, the published QUIC port and the `sni_filter` relay (all on ephemeral ports).
//!
//! `serve` prints one line
//! `ready https=<addr> udp=<addr> relay=<addr> upstream=<url> ca=<pem> work_dir=<dir>` once the
//! first policy is applied, then reads commands on stdin, one per line, and answers each with
//! one line on stdout:
//!
//! * `policy <file>` — PUTs the policy (JSON; the string `$UPSTREAM` is replaced by the demo
//!   app's URL), waits until the edge applied it: `applied <version>`;
//! * `events` — every audit event of the tenant received so far: `events <json array>`;
//! * `quit` — stops everything.
//!
//! The drivers are Python scripts (they need `aioquic`, a real HTTP/3 client).

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use sase_testkit::process::spawn_logged;
use sase_testkit::stack::{Stack, READY};
use serde_json::Value;

#[derive(Parser)]
#[command(about = "QUIC test stack: control plane + enrolled edge + sample app, driven on stdin")]
enum Cli {
    /// Starts the stack and serves commands on stdin.
    Serve {
        /// Directory holding sase-control, sase-edge and sase-demo-app.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Scratch directory (wiped at start).
        #[arg(long)]
        work_dir: PathBuf,
        /// First policy (JSON; `$UPSTREAM` is replaced by the demo app's URL).
        #[arg(long)]
        policy: PathBuf,
    },
}

fn load_policy(path: &std::path::Path, upstream: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text.replace("$UPSTREAM", upstream))
        .with_context(|| format!("parsing {}", path.display()))
}

fn url_of<'a>(line: &'a str, scheme: &str) -> Result<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(scheme))
        .ok_or_else(|| anyhow!("no {scheme} address in {line:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let Cli::Serve {
        bin_dir,
        work_dir,
        policy,
    } = Cli::parse();
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)?;
    let mut app = spawn_logged(
        Command::new(bin_dir.join("sase-demo-app")).args(["--listen", "127.0.0.1:0"]),
        "sase-demo-app",
        &work_dir.join("app.log"),
    )?;
    let line = app.wait_for_log_line("listening on http://", READY)?;
    let upstream = line
        .split_whitespace()
        .last()
        .ok_or_else(|| anyhow!("no upstream URL"))?
        .to_string();
    let first = load_policy(&policy, &upstream)?;
    let args: Vec<String> = [
        "--https-listen",
        "127.0.0.1:0",
        "--quic-listen",
        "127.0.0.1:0",
        "--quic-relay-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stack =
        Stack::start_with_edge_args(&bin_dir, &work_dir, None, &first, "127.0.0.1:0", &args)
            .await?;
    let line = stack.edge_line.clone();
    println!(
        "ready https={} udp={} relay={} upstream={} ca={} work_dir={}",
        url_of(&line, "https://")?,
        url_of(&line, "udp://")?,
        url_of(&line, "quic-relay://")?,
        upstream,
        work_dir.join("edge/tls/ca.pem").display(),
        work_dir.display()
    );
    std::io::stdout().flush()?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(command) = rx.recv().await {
        let command = command.trim();
        let answer = match command.split_once(' ') {
            Some(("policy", file)) => {
                let policy = load_policy(std::path::Path::new(file), &upstream)?;
                let version = stack.put_policy(&policy).await?;
                stack.wait_applied(version, Duration::from_secs(60)).await?;
                format!("applied {version}")
            }
            None if command == "events" => {
                let events = stack.tenant_events().await?;
                format!("events {}", Value::Array(events))
            }
            None if command == "quit" || command.is_empty() => break,
            _ => bail!("unknown command {command:?}"),
        };
        println!("{answer}");
        std::io::stdout().flush()?;
    }
    drop(stack);
    drop(app);
    Ok(())
}
