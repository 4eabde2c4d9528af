//! `sase-audit verify <export> --control-plane-key <key>`: checks an audit export offline.
//!
//! Exit status: 0 when everything verifies, 1 when tampering (or an unverifiable record) is
//! found — the first bad record is named on the first line of the output — and 2 when the file
//! or the key cannot be read or is not an export.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand};
use sase_audit::verify::{parse, verify, Options};

#[derive(Parser)]
#[command(
    name = "sase-audit",
    version,
    about = "Offline checks of SASE audit exports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify an export: chain per device, each event's hash, device batch signatures,
    /// inclusion of every event in a checkpoint signed by the control plane.
    Verify {
        /// The export (JSON lines), `-` for standard input.
        export: PathBuf,
        /// The control plane's Ed25519 public key: base64 of the 32 raw bytes, or a file
        /// holding it (as served by `GET /api/audit/checkpoint` in `public_key`).
        #[arg(long)]
        control_plane_key: String,
        /// Accept events that no device signature covers (from edges that do not sign
        /// batches, or stored before batch signatures existed); they are counted in the
        /// summary instead of failing the check.
        #[arg(long)]
        allow_unsigned: bool,
        /// How many findings to print after the first.
        #[arg(long, default_value_t = 10)]
        max_findings: usize,
    },
    /// Check that the log grew without rewriting: the later signed head (in the answer of
    /// `GET /api/tenants/{id}/audit/consistency?first=<old size>`) extends the earlier head
    /// you kept, by its RFC 6962 consistency proof.
    Consistency {
        /// The earlier signed tree head you kept (JSON, as `checkpoint` in
        /// `GET …/audit/checkpoint`).
        #[arg(long)]
        old: PathBuf,
        /// The consistency answer (JSON with `second_checkpoint` and `proof`).
        #[arg(long)]
        proof: PathBuf,
        /// The control plane's Ed25519 public key (base64, or a file holding it).
        #[arg(long)]
        control_plane_key: String,
    },
}

/// The parts of a consistency answer the check needs.
#[derive(serde::Deserialize)]
struct ConsistencyAnswer {
    second_checkpoint: sase_model::merkle::SignedTreeHead,
    proof: Vec<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn run_consistency(
    old: &std::path::Path,
    proof: &std::path::Path,
    key: &str,
) -> anyhow::Result<bool> {
    let key = load_key(key)?;
    let old_head: sase_model::merkle::SignedTreeHead = read_json(old)?;
    let answer: ConsistencyAnswer = read_json(proof)?;
    let new_head = &answer.second_checkpoint;
    match sase_audit::consistency::check(&old_head, new_head, &answer.proof, &key) {
        Ok(()) => {
            println!(
                "audit_consistency ok=true tenant={} first={} second={}",
                new_head.tenant_id, old_head.tree_size, new_head.tree_size
            );
            Ok(true)
        }
        Err(err) => {
            println!("FAIL {err}");
            println!(
                "audit_consistency ok=false tenant={} first={} second={}",
                old_head.tenant_id, old_head.tree_size, new_head.tree_size
            );
            Ok(false)
        }
    }
}

fn load_key(arg: &str) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    let text = if std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    sase_model::bundle::verifying_key_from_b64(text.trim())
        .map_err(|e| anyhow!("--control-plane-key: {e}"))
}

fn run() -> anyhow::Result<bool> {
    let cli = Cli::parse();
    let (export, control_plane_key, allow_unsigned, max_findings) = match cli.command {
        Command::Verify {
            export,
            control_plane_key,
            allow_unsigned,
            max_findings,
        } => (export, control_plane_key, allow_unsigned, max_findings),
        Command::Consistency {
            old,
            proof,
            control_plane_key,
        } => return run_consistency(&old, &proof, &control_plane_key),
    };
    let key = load_key(&control_plane_key)?;
    let bytes = if export.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(&export).with_context(|| format!("reading {}", export.display()))?
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow!("{}: not UTF-8 text: {e}", export.display()))?;
    let records = parse(&text).map_err(|e| anyhow!("{}: {e}", export.display()))?;
    let report = verify(
        &records,
        &Options {
            control_plane_key: key,
            allow_unsigned,
        },
    );
    let s = &report.summary;
    if let Some(first) = report.findings.first() {
        println!("FAIL first bad record: {first}");
        for more in report.findings.iter().skip(1).take(max_findings) {
            println!("     also: {more}");
        }
        if report.findings.len() > max_findings + 1 {
            println!(
                "     … {} more findings",
                report.findings.len() - max_findings - 1
            );
        }
        println!(
            "audit_verify ok=false findings={} tenant={} events={}",
            report.findings.len(),
            s.tenant_id,
            s.events
        );
        return Ok(false);
    }
    println!("tenant {}", s.tenant_id);
    for (device, (first, last)) in &s.devices {
        println!("  device {device}: seq {first}..{last} chained and hashed");
    }
    if let Some((size, root, ts)) = &s.checkpoint {
        println!("  checkpoint: size {size} root {root} signed at {ts} (Unix ms)");
    }
    println!(
        "  {} batch signatures verified ({} outside the export's range); {} events accepted unsigned",
        s.batches_verified, s.batches_outside, s.unsigned_events
    );
    println!(
        "audit_verify ok=true events={} devices={} batches={} checkpoint_size={}",
        s.events,
        s.devices.len(),
        s.batches_verified,
        s.checkpoint.as_ref().map_or(0, |c| c.0)
    );
    Ok(true)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("sase-audit: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
