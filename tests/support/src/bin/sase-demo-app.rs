//! `sase-demo-app`: the sample protected upstream app used by the demo and the
//! end-to-end tests. See [`sase_testkit::demo_app`] for its behaviour.
//!
//! Prints exactly one `sase-demo-app listening on http://ADDR` line to stdout
//! once bound (tests wait for it), and exits with status 0 on SIGTERM or
//! ctrl-c.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Sample protected upstream app ("demo-orders").
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:9000", env = "SASE_DEMO_APP_LISTEN")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading bound address")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "sase-demo-app listening on http://{addr}").context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }

    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            r = tokio::signal::ctrl_c() => {
                if let Err(e) = r {
                    eprintln!("sase-demo-app: ctrl-c handler failed: {e}");
                }
            }
        }
        eprintln!("sase-demo-app: shutting down");
    };
    sase_testkit::demo_app::serve(listener, shutdown)
        .await
        .context("serving")?;
    Ok(())
}
