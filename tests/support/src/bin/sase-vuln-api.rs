//! `sase-vuln-api`: the deliberately vulnerable API of the OWASP API Top 10 suite (see
//! [`sase_testkit::vuln_api`]). Prints one `sase-vuln-api listening on http://ADDR` line once
//! bound and exits on SIGTERM or ctrl-c. Never expose it.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// Deliberately vulnerable API (OWASP API Top 10 test target).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut sigterm = signal(SignalKind::terminate())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "sase-vuln-api listening on http://{addr}")?;
        out.flush()?;
    }
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    sase_testkit::vuln_api::serve(listener, shutdown).await?;
    Ok(())
}
